//! `run --device-memory MIB` (issue 19): the device's memory budget for the guest. The program
//! (tests/corpus bigmem) has a function that fills and frees 1 GiB and returns a checksum. Run
//! plainly with a 64 MiB budget it goes over and says so; offloaded to a `clonecloud serve` on
//! loopback, by name or by the partition chosen at launch (its first run learns the function's
//! peak and live memory), the device process's peak resident memory (`/usr/bin/time -v`, the
//! kernel's count) stays under 200 MiB and the output is the plain run's.

#[path = "../../../tests/support/clone.rs"]
mod clone;
#[path = "../../../tests/support/corpus.rs"]
mod corpus;

use std::process::{Command, Output};

const CLONECLOUD: &str = env!("CARGO_BIN_EXE_clonecloud");

/// Runs `clonecloud ARGS` under `/usr/bin/time -v`: its output (time's report removed from
/// stderr) and its peak resident set, KiB.
fn timed(home: &std::path::Path, args: &[&str]) -> (Output, u64) {
    let mut out = Command::new("/usr/bin/time").arg("-v").arg(CLONECLOUD).args(args).env("CLONECLOUD_HOME", home).env_remove("CLONECLOUD_LOG").output().expect("/usr/bin/time (Debian's `time` package)");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let (own, report) = err.split_once("\tCommand being timed").expect("time -v's report");
    let peak = report.lines().find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): ")).and_then(|v| v.trim().parse().ok()).expect("the peak resident set");
    out.stderr = own.as_bytes().to_vec();
    (out, peak)
}

#[test]
fn a_function_that_needs_a_gigabyte_runs_on_the_clone_and_the_device_stays_small() {
    corpus::corpus();
    let module = corpus::repo_root().join("target/corpus/wasm32-wasip1/release/bigmem.wasm");
    let module = module.to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (server_key, server_pub) = clone::keygen(CLONECLOUD, keys.path(), "server");
    let (device_key, device_pub) = clone::keygen(CLONECLOUD, keys.path(), "device");
    let allow = keys.path().join("allow");
    std::fs::copy(&device_pub, &allow).unwrap();
    let server = clone::serve(CLONECLOUD, &server_key, &allow, "127.0.0.1:0");
    let remote = ["--clone", server.addr.as_str(), "--key", device_key.as_str(), "--clone-key", server_pub.as_str()];

    // Here: over the budget, said once on stderr; the output is the program's.
    let (plain, plain_peak) = timed(home.path(), &["run", "--device-memory", "64", module]);
    assert_eq!(plain.status.code(), Some(0));
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(err.contains("went past the device's budget") && err.contains("of 64 MiB"), "{err}");
    assert!(plain_peak > 1 << 20, "the plain run holds the gigabyte: {plain_peak} KiB");

    // Offloaded by name: the gigabyte stays on the clone (freed heap does not come back).
    let mut args = vec!["run", "--device-memory", "64", "--offload", "big"];
    args.extend(remote);
    args.push(module);
    let (offloaded, peak) = timed(home.path(), &args);
    assert_eq!((offloaded.status.code(), &offloaded.stdout), (Some(0), &plain.stdout));
    assert!(offloaded.stderr.is_empty(), "{}", String::from_utf8_lossy(&offloaded.stderr));
    assert!(peak < 200 << 10, "the device's peak resident set: {peak} KiB");

    // Chosen at launch: the first run learns (here, over the budget), the next offloads what
    // the budget needs.
    let mut args = vec!["run", "--device-memory", "64", "--explain"];
    args.extend(remote);
    args.push(module);
    let (first, _) = timed(home.path(), &args);
    assert_eq!(first.stdout, plain.stdout);
    assert!(String::from_utf8_lossy(&first.stderr).contains("no profile of this module yet"));
    let (second, peak) = timed(home.path(), &args);
    assert_eq!((second.status.code(), &second.stdout), (Some(0), &plain.stdout));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("offloading") && !err.contains("went past"), "{err}");
    assert!(peak < 200 << 10, "the device's peak resident set: {peak} KiB; {err}");
}
