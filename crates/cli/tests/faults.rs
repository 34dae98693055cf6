//! The guarantee under faults: whatever happens to the link or the clone, an offloaded run prints
//! exactly what a plain run prints. A loopback proxy between device and `clonecloud serve` cuts
//! the connection at points spread over the whole conversation in both directions (so before and
//! after every message kind: hello, welcome, module, migrate, return, goodbye), flips a byte,
//! stalls past the timeout; and the server process is killed mid-migration and restarted. The
//! same cuts hit a whole program that writes files on the clone (its journal must land whole or
//! not at all) and one that reads stdin through the device (what it read must be read again).

#[path = "../../../tests/support/apps.rs"]
mod apps;
#[path = "../../../tests/support/clone.rs"]
mod clone;
#[path = "../../../tests/support/corpus.rs"]
mod corpus;

use clonecloud_stats::{Cause, Stats, StatsError};
use clonecloud_harness::{Action, Dir, FaultProxy, Injection};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const CLONECLOUD: &str = env!("CARGO_BIN_EXE_clonecloud");
const APP: &str = "behavior-profile";
const FUNCTION: &str = "behavior_profile::Classifier::train";

struct Keys {
    _dir: tempfile::TempDir,
    server_key: String,
    server_pub: String,
    device_key: String,
    allow: std::path::PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let (server_key, server_pub) = clone::keygen(CLONECLOUD, dir.path(), "server");
    let (device_key, device_pub) = clone::keygen(CLONECLOUD, dir.path(), "device");
    let allow = dir.path().join("allow");
    std::fs::copy(&device_pub, &allow).unwrap();
    Keys { _dir: dir, server_key, server_pub, device_key, allow }
}

fn serve(k: &Keys, listen: &str) -> clone::Server {
    clone::serve(CLONECLOUD, &k.server_key, &k.allow, listen)
}

/// A proxy to `target` that applies `fault` to every connection (a link that breaks each time).
fn proxy(target: &str, fault: Option<Injection>) -> FaultProxy {
    FaultProxy::start(target, fault, None).unwrap()
}

fn plain(input: &Path) -> Output {
    apps::run_wasm(CLONECLOUD.as_ref(), APP, input, &[])
}

/// An offloaded run through `addr`; returns its output and stats.
fn offloaded(k: &Keys, addr: &str, input: &Path, timeout: &str) -> (Output, Stats) {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let out = Command::new(CLONECLOUD)
        .args(["run", "--offload", FUNCTION, "--clone", addr, "--key", &k.device_key, "--clone-key", &k.server_pub])
        .args(["--clone-timeout", timeout, "--stats"])
        .arg(&stats)
        .arg("--dir")
        .arg(format!("{}::/input", input.display()))
        .arg(apps::wasm(APP))
        .arg("/input")
        .env("CLONECLOUD_LOG", "off")
        .output()
        .unwrap();
    let s = Stats::read(&stats).expect("the offloaded run wrote its --stats");
    eprintln!("{:.2} s {:?}", started.elapsed().as_secs_f64(), s.fallbacks.causes);
    (out, s)
}

fn assert_same(want: &Output, got: &Output, case: &str) {
    assert_eq!(got.status.code(), want.status.code(), "{case}: exit code");
    assert!(got.stdout == want.stdout, "{case}: stdout differs");
    assert!(got.stderr == want.stderr, "{case}: stderr differs: {}", String::from_utf8_lossy(&got.stderr));
}

#[test]
fn cut_corrupted_or_stalled_links_never_change_the_output() {
    let input = tempfile::tempdir().unwrap();
    apps::generate(APP, "small", input.path());
    let want = plain(input.path());
    let k = keys();
    let server = serve(&k, "127.0.0.1:0");

    // Clean runs through the proxy measure the conversation: the second, as every case after
    // it, finds the module and the files on the clone (the first uploads them, and its clone
    // asks for the files by hash: its stream is longer both ways).
    let (mut up, mut down) = (0, 0);
    for _ in 0..2 {
        let clean = proxy(&server.addr, None);
        let (out, s) = offloaded(&k, &clean.addr, input.path(), "30");
        assert_same(&want, &out, "clean");
        assert_eq!(s.migrations, 1, "{s:?}");
        (up, down) = (clean.forwarded(Dir::Up), clean.forwarded(Dir::Down));
    }

    let mut cases = 0;
    // Cuts at the first bytes (inside the TLS handshake), then spread over the whole stream.
    let mut offsets = vec![1, 100, 1000];
    offsets.extend((1..=8).map(|i| i * up / 9));
    for at in offsets.iter().copied().filter(|&o| o < up) {
        let p = proxy(&server.addr, Some(Injection::in_stream(Dir::Up, at, Action::Cut)));
        let (out, s) = offloaded(&k, &p.addr, input.path(), "30");
        assert_same(&want, &out, &format!("cut after {at} bytes up"));
        let tries = s.fallbacks.count + s.migrations;
        assert_eq!(tries, 1, "cut up at {at}: one call, remote or local: {s:?}");
        cases += 1;
    }
    let mut offsets = vec![1, 100, 1000];
    offsets.extend((1..=8).map(|i| i * down / 9));
    for at in offsets.iter().copied().filter(|&o| o < down) {
        let p = proxy(&server.addr, Some(Injection::in_stream(Dir::Down, at, Action::Cut)));
        let (out, _) = offloaded(&k, &p.addr, input.path(), "30");
        assert_same(&want, &out, &format!("cut after {at} bytes down"));
        cases += 1;
    }
    // A flipped byte in the clone's answer: TLS rejects the record, the device runs it locally.
    for at in [down / 3, down - 100] {
        let p = proxy(&server.addr, Some(Injection::in_stream(Dir::Down, at, Action::Corrupt)));
        let (out, s) = offloaded(&k, &p.addr, input.path(), "30");
        assert_same(&want, &out, &format!("byte {at} down corrupted"));
        assert_eq!(s.migrations, 0, "{s:?}");
        cases += 1;
    }
    // The answer stalls: past the timeout the device gives up and runs it locally.
    let p = proxy(&server.addr, Some(Injection::in_stream(Dir::Down, down / 2, Action::Stall)));
    let (out, s) = offloaded(&k, &p.addr, input.path(), "1");
    assert_same(&want, &out, "stalled answer");
    assert_eq!(s.fallbacks.causes.get(&Cause::Timeout).copied(), Some(1), "{s:?}");
    cases += 1;
    eprintln!("{cases} link fault cases, each identical to the plain run");
}

#[test]
fn a_server_killed_mid_migration_and_restarted_changes_nothing() {
    let input = tempfile::tempdir().unwrap();
    apps::generate("image-search", "large", input.path());
    let want = apps::run_wasm(CLONECLOUD.as_ref(), "image-search", input.path(), &[]);
    let k = keys();
    let server = serve(&k, "127.0.0.1:0");
    let addr = server.addr.clone();
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let device = Command::new(CLONECLOUD)
        .args(["run", "--offload", "image_search::cascade::Cascade::detect", "--clone", &addr])
        .args(["--key", &k.device_key, "--clone-key", &k.server_pub, "--stats"])
        .arg(&stats)
        .arg("--dir")
        .arg(format!("{}::/input", input.path().display()))
        .arg(apps::wasm("image-search"))
        .arg("/input")
        .env("CLONECLOUD_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server while migrations are under way, then bring it back on the same address:
    // its replicas are gone.
    std::thread::sleep(std::time::Duration::from_millis(400));
    drop(server);
    let _restarted = serve(&k, &addr);
    let out = device.wait_with_output().unwrap();
    assert_same(&want, &out, "server killed and restarted");
    let s = Stats::read(&stats).expect("the offloaded run wrote its --stats");
    eprintln!("killed server: {} migrations, fallbacks {:?}", s.migrations, s.fallbacks.causes);
}

/// Runs `guest` offloaded (`--offload all`, the whole program on the clone) through `addr`, with
/// `input` on stdin and a fresh copy of the corpus fixture as /data; returns its output and the
/// directory afterwards, and its stats (`None` when it wrote none: when not offloaded).
fn offloaded_guest(k: &Keys, addr: &str, guest: &corpus::Guest, input: &[u8]) -> (Output, std::collections::BTreeMap<String, Vec<u8>>, Option<Stats>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    corpus::copy_dir(&corpus::fixture_dir(), &data);
    let stats = dir.path().join("stats.json");
    let mut cmd = Command::new(CLONECLOUD);
    cmd.arg("run");
    if !addr.is_empty() {
        cmd.args(["--offload", "all", "--clone", addr, "--key", &k.device_key, "--clone-key", &k.server_pub, "--clone-timeout", "30", "--stats"]);
        cmd.arg(&stats);
    }
    let mut child = cmd
        .arg("--dir")
        .arg(format!("{}::/data", data.display()))
        .arg(&guest.path)
        .env("CLONECLOUD_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    // (A guest that does not read stdin may exit before taking it all.)
    let _ = child.stdin.take().unwrap().write_all(input);
    let out = child.wait_with_output().unwrap();
    let s = match Stats::read(&stats) {
        Ok(s) => Some(s),
        Err(StatsError::Read { .. }) => None,
        Err(e) => panic!("{e}"),
    };
    (out, corpus::snapshot_dir(&data), s)
}

#[test]
fn cuts_during_file_writes_and_proxied_stdin_reads_change_nothing() {
    let k = keys();
    let server = serve(&k, "127.0.0.1:0");
    let input = "line of input for the device to read\n".repeat(4000).into_bytes();
    let mut cases = 0;
    for name in ["files", "stdin_echo"] {
        let guest = corpus::guest(name);
        let (want, want_files, _) = offloaded_guest(&k, "", guest, &input);
        assert_eq!(want.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&want.stderr));
        let clean = proxy(&server.addr, None);
        let (out, files, s) = offloaded_guest(&k, &clean.addr, guest, &input);
        assert_same(&want, &out, &format!("{name} clean"));
        assert!(files == want_files, "{name} clean: files differ");
        let s = s.unwrap_or_else(|| panic!("{name} clean: no --stats written"));
        assert_eq!(s.migrations, 1, "{name}: {s:?}");
        let (up, down) = (clean.forwarded(Dir::Up), clean.forwarded(Dir::Down));
        drop(clean);
        for (dir, total) in [(Dir::Up, up), (Dir::Down, down)] {
            for at in (1..=7).map(|i| i * total / 8) {
                let p = proxy(&server.addr, Some(Injection::in_stream(dir, at, Action::Cut)));
                let (out, files, s) = offloaded_guest(&k, &p.addr, guest, &input);
                let case = format!("{name}: cut after {at} of {total} bytes {}", dir.arrow());
                assert_same(&want, &out, &case);
                assert!(files == want_files, "{case}: files differ");
                let s = s.unwrap_or_else(|| panic!("{case}: no --stats written"));
                let tries = s.fallbacks.count + s.migrations;
                assert_eq!(tries, 1, "{case}: one call, remote or local: {s:?}");
                cases += 1;
            }
        }
    }
    eprintln!("{cases} cuts during file journals and proxied reads, each identical to the plain run");
}

/// The reduced fault matrix (`clonecloud faults --quick`): every case ends as the local run did,
/// and the runtime took each of its three paths somewhere.
#[test]
fn the_quick_fault_matrix_is_identical_to_local_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // The programs, built as `cargo xtask build` builds them.
    let modules = apps::wasm("behavior-profile").parent().unwrap().to_path_buf();
    let corpus = corpus::guest("files").path.parent().unwrap().to_path_buf();
    let out = Command::new(CLONECLOUD)
        .args(["faults", "--quick", "--json", "--modules"])
        .arg(&modules)
        .arg("--gen-data")
        .arg(apps::native("gen-data"))
        .arg("--corpus")
        .arg(&corpus)
        .current_dir(&root)
        .env("CLONECLOUD_LOG", "off")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let failed: Vec<&serde_json::Value> = report["cases"].as_array().unwrap().iter().filter(|c| c["passed"] != true).collect();
    assert!(failed.is_empty(), "cases that differ from the local run: {failed:#?}");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tried = report["tried"].as_u64().unwrap();
    assert!(tried >= 60, "{tried} cases");
    let paths = report["paths"].as_object().unwrap();
    for path in ["resume", "retry", "fallback"] {
        assert!(paths.keys().any(|p| p.split('+').any(|q| q == path)), "no case took the {path} path: {paths:?}");
    }
    // Each kind of fault was tried.
    for fault in ["cut", "corrupt", "duplicate", "reorder", "stall", "kill", "restart", "oom", "deadline", "flapping"] {
        assert!(report["cases"].as_array().unwrap().iter().any(|c| c["fault"] == fault), "no {fault} case");
    }
    eprintln!("fault matrix: {tried} cases, paths {paths:?}");
}

/// `faults --simulated`: the protocol cores against each other under a few thousand seeded
/// fault schedules, through the command a user runs; none diverges from the run with no clone,
/// and a schedule replays by its seed.
#[test]
fn simulated_schedules_end_as_runs_with_no_clone() {
    let out = Command::new(CLONECLOUD).args(["faults", "--simulated", "--schedules", "4000", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["schedules"], 4000);
    assert_eq!(r["divergent"], 0, "{r}");
    let t = &r["tally"];
    for path in ["remote", "fallbacks", "resumes", "retries"] {
        assert!(t[path].as_u64().unwrap() > 0, "no schedule took the {path} path: {t}");
    }
    let one = Command::new(CLONECLOUD).args(["faults", "--simulated", "--schedules", "1", "--seed", "3999", "--json"]).output().unwrap();
    let r: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!((r["first_seed"].as_u64(), r["schedules"].as_u64()), (Some(3999), Some(1)));
}
