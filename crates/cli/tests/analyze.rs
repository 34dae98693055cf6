//! `clonecloud analyze` through the binary: a policy that makes an import device-only pins every
//! function that reaches it, with the path shown; JSON for scripts; clear errors on bad input.

#[path = "../../../tests/support/corpus.rs"]
mod corpus;

use std::process::{Command, Output};

fn analyze(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clonecloud")).arg("analyze").args(args).output().unwrap()
}

#[test]
fn a_device_only_import_pins_its_callers_with_the_path() {
    let files = corpus::guest("files");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "device-only = [\"wasi_snapshot_preview1.path_rename\"]\n").unwrap();
    let out = analyze(&["--policy", policy.to_str().unwrap(), files.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("files::main: pinned to the device: it can reach `wasi_snapshot_preview1`.`path_rename`"), "{text}");
    let path_line = text.lines().skip_while(|l| !l.starts_with("  files::main:")).nth(1).unwrap();
    assert!(path_line.trim_start().starts_with("files::main -> ") && path_line.contains("path_rename"), "{path_line}");

    // The same through JSON: every function reaching the import is pinned, none is a candidate.
    let out = analyze(&["--json", "--policy", policy.to_str().unwrap(), files.path.to_str().unwrap()]);
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pinned: Vec<&serde_json::Value> = a["functions"].as_array().unwrap().iter().filter(|f| f["placement"] == "device").collect();
    assert!(!pinned.is_empty());
    for f in &pinned {
        assert_eq!(f["candidate"], false, "{f}");
        assert!(f["path"].as_array().unwrap().last().unwrap().as_str().unwrap().contains("path_rename"), "{f}");
    }
    // Without the policy, WASI file calls are proxiable: main may migrate.
    let out = analyze(&["--json", files.path.to_str().unwrap()]);
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let main = a["functions"].as_array().unwrap().iter().find(|f| f["name"] == "files::main").unwrap();
    assert_eq!(main["candidate"], true, "{main}");
}

#[test]
fn bad_input_is_one_clear_line() {
    let files = corpus::guest("files");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "device_only = 3\n").unwrap();
    let nodot = dir.path().join("nodot.toml");
    std::fs::write(&nodot, "pure = [\"camera\"]\n").unwrap();
    let module = files.path.to_str().unwrap();
    for (args, expect) in [
        (vec!["--policy", bad.to_str().unwrap(), module], "is not valid"),
        (vec!["--policy", nodot.to_str().unwrap(), module], "is not `module.name`"),
        (vec!["--policy", "/nonexistent/policy.toml", module], "cannot read the policy"),
        (vec!["/nonexistent/app.wasm"], "cannot read module"),
    ] {
        let out = analyze(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains(expect), "{args:?}: {err}");
    }
}
