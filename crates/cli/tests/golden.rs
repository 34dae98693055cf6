//! Tests as data: each `tests/golden/NAME.wat` starts with `;; RUN: ARGS` lines, each a
//! `clonecloud` command run on it, and `tests/golden/NAME.out` holds what each printed (its exit
//! status, stdout and stderr), in order. In ARGS, `%` is the module compiled to `NAME.wasm` and
//! `%wat` the text itself, both in a scratch directory that is the command's working
//! directory (so the outputs name them by those relative names).
//!
//! A change that alters what a user reads (`inspect`, `analyze`, the errors of bad input) fails
//! here with the case and the first line that differs; when the change is meant, `BLESS=1 cargo
//! test --release -p clonecloud --test golden` writes the new outputs, to review in the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

/// Runs every RUN line of `wat` and returns the transcript.
fn transcript(wat: &Path) -> String {
    let text = std::fs::read_to_string(wat).unwrap();
    let name = wat.file_stem().unwrap().to_str().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join(format!("{name}.wat")), &text).unwrap();
    std::fs::write(scratch.path().join(format!("{name}.wasm")), wat::parse_str(&text).unwrap_or_else(|e| panic!("{}: {e}", wat.display()))).unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut out = String::new();
    for line in text.lines().filter_map(|l| l.strip_prefix(";; RUN:")) {
        let args: Vec<String> = line
            .split_whitespace()
            .map(|a| a.replace("%wat", &format!("{name}.wat")).replace('%', &format!("{name}.wasm")))
            .collect();
        let o = Command::new(env!("CARGO_BIN_EXE_clonecloud"))
            .args(&args)
            .current_dir(scratch.path())
            .env("CLONECLOUD_HOME", home.path())
            .env_remove("CLONECLOUD_LOG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        out.push_str(&format!("$ clonecloud {}\nstatus: {}\n", args.join(" "), o.status.code().map_or("signal".into(), |c| c.to_string())));
        out.push_str(&format!("--- stdout\n{}", String::from_utf8_lossy(&o.stdout)));
        out.push_str(&format!("--- stderr\n{}", String::from_utf8_lossy(&o.stderr)));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[test]
fn outputs_are_as_blessed() {
    let bless = std::env::var_os("BLESS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "wat")).collect();
    cases.sort();
    assert!(cases.len() >= 3, "the golden cases are missing");
    let mut failed = Vec::new();
    for wat in &cases {
        let got = transcript(wat);
        let expected = wat.with_extension("out");
        if bless {
            std::fs::write(&expected, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected).unwrap_or_default();
        if got != want {
            let (n, (w, g)) = want
                .lines()
                .chain(std::iter::repeat("<end>"))
                .zip(got.lines().chain(std::iter::repeat("<end>")))
                .enumerate()
                .find(|(_, (w, g))| w != g)
                .unwrap_or((0, ("", "")));
            failed.push(format!("{}: line {}:\n  want: {w}\n  got:  {g}", expected.display(), n + 1));
        }
    }
    assert!(failed.is_empty(), "outputs changed (BLESS=1 to accept them):\n{}", failed.join("\n"));
}
