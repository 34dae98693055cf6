//! `clonecloud profile` through the binary: the profile tree adds up (hooks taken out), the
//! Pulley device engine stands for a slower device, bytes are measured for long calls, and bad
//! input is one clear line.

#[path = "../../../tests/support/corpus.rs"]
mod corpus;

use std::process::{Command, Output};

fn profile(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clonecloud")).arg("profile").args(args).env_remove("CLONECLOUD_LOG").output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_profile_tree_adds_up() {
    let g = corpus::guest("compute");
    let p = json(&profile(&["--json", g.path.to_str().unwrap(), "1"]));
    let inv = p["invocations"].as_array().unwrap();
    let calls: u64 = p["functions"].as_array().unwrap().iter().map(|f| f["calls"].as_u64().unwrap()).sum();
    assert!(calls > 1000 && !inv.is_empty(), "{calls} calls, {} kept", inv.len());
    let names = p["names"].as_array().unwrap();
    let name = |i: &serde_json::Value| names[i["function"].as_u64().unwrap() as usize].as_str().unwrap().to_string();
    assert_eq!(name(&inv[0]), "_start");
    assert!(inv[0]["parent"].is_null());
    // Children never take longer, together, than their parent (the hooks are taken out).
    let mut children = vec![(0u64, 0u64); inv.len()];
    for (i, v) in inv.iter().enumerate() {
        if let Some(parent) = v["parent"].as_u64() {
            assert!((parent as usize) < i, "a parent comes before its children");
            let c = &mut children[parent as usize];
            c.0 += v["device_ns"].as_u64().unwrap();
            c.1 += v["clone_ns"].as_u64().unwrap();
        }
    }
    for (i, v) in inv.iter().enumerate() {
        let (d, c) = (v["device_ns"].as_u64().unwrap(), v["clone_ns"].as_u64().unwrap());
        assert!(children[i].0 <= d + d / 10 + 200_000, "{}: children {} ns > {d} ns", name(v), children[i].0);
        assert!(children[i].1 <= c + c / 10 + 200_000, "{}: children {} ns > {c} ns (clone)", name(v), children[i].1);
    }
    // The whole program took over a millisecond: what migrating it would move was measured.
    assert!(inv[0]["bytes_up"].as_u64().unwrap() > 0, "{}", inv[0]);
    assert!(inv[0]["bytes_down"].is_u64());
    assert!(p["device_hooks_ns"].as_u64().unwrap() > 0);
}

#[test]
fn pulley_stands_for_a_slower_device() {
    let g = corpus::guest("compute");
    let p = json(&profile(&["--json", "--device-engine", "pulley", g.path.to_str().unwrap(), "1"]));
    assert_eq!(p["device_engine"], "pulley");
    let (d, c) = (p["device_total_ns"].as_u64().unwrap(), p["clone_total_ns"].as_u64().unwrap());
    assert!(d > 2 * c, "the interpreter is several times slower than Cranelift: {d} vs {c} ns");
    // The summary shows the same run for people.
    let out = profile(&["--device-engine", "pulley", g.path.to_str().unwrap(), "1"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("on pulley") && text.contains("compute::main"), "{text}");
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.wasm");
    // Every function reaches a device-only import: nothing to profile.
    std::fs::write(&bare, wat::parse_str(r#"(module (import "env" "sensor" (func $s)) (func (export "_start") call $s))"#).unwrap()).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "pure = 3").unwrap();
    let g = corpus::guest("compute");
    for (args, expect) in [
        (vec!["/nonexistent/app.wasm"], "cannot read module"),
        (vec![bare.to_str().unwrap()], "no function of this module can migrate"),
        (vec!["--policy", bad.to_str().unwrap(), g.path.to_str().unwrap()], "is not valid"),
    ] {
        let out = profile(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains(expect), "{args:?}: {err}");
    }
}
