//! A module the size of a large program (a generated one of 20,000 functions, about 6 MB): it runs
//! with every function a migration point, from the rewrite and from the cache, like plain; and
//! offloaded to a cold embedded clone whose compile of the upload takes longer than the reply
//! timeout, it still runs on the clone, because the device sends the module ahead and the first
//! migration point waits for the clone to be ready instead of timing out.

#[path = "../benches/bigmodule.rs"]
mod bigmodule;
#[path = "../../../tests/support/oracle.rs"]
#[allow(dead_code)]
mod oracle;

use std::path::Path;
use std::process::{Command, Output};

const CLONECLOUD: &str = env!("CARGO_BIN_EXE_clonecloud");

fn run(home: &Path, args: &[&str]) -> Output {
    Command::new(CLONECLOUD)
        .arg("run")
        .args(args)
        .env("CLONECLOUD_HOME", home)
        .env_remove("CLONECLOUD_LOG")
        .output()
        .unwrap()
}

fn assert_same(plain: &Output, got: &Output, what: &str) {
    assert_eq!(got.status.code(), plain.status.code(), "{what}: exit code; stderr {}", String::from_utf8_lossy(&got.stderr));
    assert_eq!(String::from_utf8_lossy(&got.stdout), String::from_utf8_lossy(&plain.stdout), "{what}: stdout");
    assert_eq!(String::from_utf8_lossy(&got.stderr), String::from_utf8_lossy(&plain.stderr), "{what}: stderr");
}

#[test]
fn a_large_module_runs_with_every_point_and_its_first_offload_waits_for_the_clone() {
    let dir = tempfile::tempdir().unwrap();
    let shape = bigmodule::Shape { functions: 20_000, depth: 8, roots: 8, padding: 24, spread: 64 };
    let module = dir.path().join("big.wasm");
    std::fs::write(&module, bigmodule::generate(&shape)).unwrap();
    let module = module.to_str().unwrap();
    let home = dir.path().join("home");

    let plain = run(&home, &[module]);
    assert_eq!(plain.status.code(), Some(0), "{}", String::from_utf8_lossy(&plain.stderr));
    assert!(!plain.stdout.is_empty());
    // The oracle: the module on plain wasmtime prints the same.
    let wasmtime = oracle::run_with_dirs(std::path::Path::new(module), &[module.to_string()], &[], &[]);
    assert_eq!((wasmtime.stdout, wasmtime.exit), (plain.stdout.clone(), 0), "plain wasmtime and clonecloud run");
    for round in ["rewritten", "cached"] {
        let all = run(&home, &["--points", "all", module]);
        assert_same(&plain, &all, &format!("--points all, {round}"));
    }

    // A reply timeout of 0.2 s, far below what compiling the upload takes the clone.
    for clone in ["cold", "warm"] {
        let stats = dir.path().join(format!("stats-{clone}.json"));
        let off = run(&home, &["--offload", "all", "--clone", "local", "--clone-timeout", "0.2", "--stats", stats.to_str().unwrap(), module]);
        assert_same(&plain, &off, &format!("offloaded to a {clone} clone"));
        let s = clonecloud_stats::Stats::read(&stats).expect("the offloaded run wrote its --stats");
        assert_eq!(s.fallbacks.count, 0, "{clone}: {s:?}");
        assert!(s.migrations >= 1, "{clone}: {s:?}");
        let ready = &s.ready;
        assert_eq!(ready.waits, 1, "{clone}: `_start` is reached before the clone is ready: {s:?}");
        assert!(ready.failed.is_none(), "{clone}: {s:?}");
        let ready_ms = ready.ready_ms.unwrap_or_else(|| panic!("{clone}: the clone never got ready: {s:?}"));
        if clone == "cold" {
            assert!(ready_ms > 200.0, "the compile took longer than the reply timeout: {s:?}");
            assert!(s.module_upload_bytes > 1 << 20, "{s:?}");
        }
    }
}
