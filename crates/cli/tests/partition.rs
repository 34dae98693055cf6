//! Partitioning end to end through the binary, on the three workloads profiled with the Pulley
//! device engine: a fast link offloads work, a very slow one nothing; `run --clone` with no --offload
//! measures the link, chooses and runs with identical output; the partitions are stored; bad
//! input is one clear line.

#[path = "../../../tests/support/apps.rs"]
mod apps;

use std::path::Path;
use std::process::{Command, Output};

const CLONECLOUD: &str = env!("CARGO_BIN_EXE_clonecloud");

fn cc(home: &Path, args: &[&str]) -> Output {
    Command::new(CLONECLOUD).args(args).env("CLONECLOUD_HOME", home).env_remove("CLONECLOUD_LOG").output().unwrap()
}

fn ok(out: Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn profiles_give_partitions_per_network_and_run_chooses_at_launch() {
    for app in ["image-search", "behavior-profile", "virus-scan"] {
        partition_app(app);
    }
}

fn partition_app(app: &str) {
    let home = tempfile::tempdir().unwrap();
    let input = tempfile::tempdir().unwrap();
    apps::generate(app, "small", input.path());
    let wasm = apps::wasm(app);
    let (wasm, dir) = (wasm.to_str().unwrap(), format!("{}::/input", input.path().display()));
    ok(cc(home.path(), &["profile", "--device-engine", "pulley", "--dir", &dir, wasm, "/input"]));

    let partition = |network: &str| -> serde_json::Value {
        // (The one stored profile is Pulley's: no --device-engine needed.)
        serde_json::from_str(&ok(cc(home.path(), &["partition", "--network", network, "--json", wasm]))).unwrap()
    };
    let fast = partition("1000,1");
    assert!(!fast["offload"].as_array().unwrap().is_empty(), "{app}: a fast link offloads: {fast}");
    let slow = partition("0.1,1000");
    assert!(slow["offload"].as_array().unwrap().is_empty(), "{app}: 0.1 Mbit/s with a 1 s round trip offloads nothing: {slow}");
    let listed: serde_json::Value = serde_json::from_str(&ok(cc(home.path(), &["partitions", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // No --offload: the link to the (in-process) clone is measured and the stored profile solved.
    let plain = apps::run_wasm(CLONECLOUD.as_ref(), app, input.path(), &[]);
    let stats = home.path().join("stats.json");
    let out = cc(home.path(), &["run", "--device-engine", "pulley", "--clone", "local", "--explain", "--stats", stats.to_str().unwrap(), "--dir", &dir, wasm, "/input"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == plain.stdout, "{app}: output differs");
    let explained = String::from_utf8_lossy(&out.stderr);
    assert!(explained.contains("round trip") && explained.contains("offloading"), "{app}: {explained}");
    let s = clonecloud_stats::Stats::read(&stats).expect("the run wrote its --stats");
    assert!(s.migrations > 0, "{app}: {s:?}");
    eprintln!("{app}: fast link {}, chosen at launch: {}", fast["names"], explained.trim());
}

#[test]
fn a_first_run_learns_and_the_second_offloads() {
    let home = tempfile::tempdir().unwrap();
    let input = tempfile::tempdir().unwrap();
    apps::generate("behavior-profile", "small", input.path());
    let wasm = apps::wasm("behavior-profile");
    let (wasm, dir) = (wasm.to_str().unwrap(), format!("{}::/input", input.path().display()));
    let plain = apps::run_wasm(CLONECLOUD.as_ref(), "behavior-profile", input.path(), &[]);
    let stats = home.path().join("stats.json");
    let run = || cc(home.path(), &["run", "--device-engine", "pulley", "--clone", "local", "--explain", "--stats", stats.to_str().unwrap(), "--dir", &dir, wasm, "/input"]);
    // Nothing known of the module: it runs here, timed, and stores what it learned.
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(first.stdout == plain.stdout, "the learning run's output differs");
    let explained = String::from_utf8_lossy(&first.stderr);
    assert!(explained.contains("no profile of this module yet") && !explained.contains("offloading"), "{explained}");
    let listed = ok(cc(home.path(), &["partitions", "--json"]));
    assert_eq!(listed.trim(), "[]", "learning stores a profile, not yet a partition");
    // The second run chooses from it: the emulated phone is many times slower than the clone
    // on a loopback link, so the work goes to the clone, and the output is the same.
    let second = run();
    assert_eq!(second.status.code(), Some(0), "{}", String::from_utf8_lossy(&second.stderr));
    assert!(second.stdout == plain.stdout, "the offloaded run's output differs");
    let explained = String::from_utf8_lossy(&second.stderr);
    assert!(explained.contains("offloading") && explained.contains("faster"), "{explained}");
    let s = clonecloud_stats::Stats::read(&stats).expect("the offloaded run wrote its --stats");
    assert!(s.migrations > 0 && s.fallbacks.count == 0, "{s:?}");
}

#[test]
fn bad_input_is_one_clear_line() {
    let home = tempfile::tempdir().unwrap();
    let wasm = apps::wasm("behavior-profile");
    let wasm = wasm.to_str().unwrap();
    for (args, expect) in [
        (vec!["partition", "--network", "wifi", wasm], "no stored profile"),
        (vec!["partition", "--network", "5g", wasm], "BW_MBIT,RTT_MS"),
        (vec!["partition", "--network", "wifi", "--objective", "speed", wasm], "time or energy"),
        (vec!["partition", "--network", "wifi", "/nonexistent.wasm"], "cannot read module"),
    ] {
        let out = cc(home.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains(expect), "{args:?}: {err}");
    }
}
