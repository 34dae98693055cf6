//! Offloading end to end, through the `clonecloud` binary: the workloads' heavy functions and the
//! functions that read their input directories run on a clone (in-process, and a separately
//! started `clonecloud serve` on loopback) with output identical to a plain run; a function that
//! reads stdin (through the device, once), an unreachable clone, an unknown device key and a wrong server key all fall back
//! to a local run with identical output and the cause in `--stats`.

#[path = "../../../tests/support/apps.rs"]
mod apps;
#[path = "../../../tests/support/clone.rs"]
mod clone;
#[path = "../../../tests/support/corpus.rs"]
mod corpus;

use clonecloud_stats::{Cause, Stats};
use std::path::Path;
use std::process::{Command, Output};

const CLONECLOUD: &str = env!("CARGO_BIN_EXE_clonecloud");

fn run(app: &str, input: &Path, extra: &[&str]) -> Output {
    apps::run_wasm(CLONECLOUD.as_ref(), app, input, extra)
}

fn stats(path: &Path) -> Stats {
    Stats::read(path).expect("stats written, as this version writes them")
}

/// Both runs: same stdout, stderr and exit code.
fn assert_same(plain: &Output, offloaded: &Output, what: &str) {
    assert_eq!(offloaded.status.code(), plain.status.code(), "{what}: exit code");
    assert!(plain.stdout == offloaded.stdout, "{what}: stdout differs");
    assert_eq!(String::from_utf8_lossy(&plain.stderr), String::from_utf8_lossy(&offloaded.stderr), "{what}: stderr");
}

/// Offloading `function` of `app` on its small input, with `extra` options: returns the stats.
fn offload(app: &str, function: &str, extra: &[&str]) -> Stats {
    let home = tempfile::tempdir().unwrap();
    offload_in(home.path(), app, function, extra)
}

/// [`offload`] with `home` as `CLONECLOUD_HOME` (the local clone keeps replicated files there).
fn offload_in(home: &Path, app: &str, function: &str, extra: &[&str]) -> Stats {
    let input = tempfile::tempdir().unwrap();
    apps::generate(app, "small", input.path());
    let plain = run(app, input.path(), &[]);
    assert_eq!(plain.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.json");
    let mut args = vec!["--offload", function, "--stats", stats_file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let offloaded = Command::new(CLONECLOUD)
        .arg("run")
        .args(&args)
        .arg("--dir")
        .arg(format!("{}::/input", input.path().display()))
        .arg(apps::wasm(app))
        .arg("/input")
        .env("CLONECLOUD_HOME", home)
        .env_remove("CLONECLOUD_LOG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_same(&plain, &offloaded, &format!("{app} offloading {function} {extra:?}"));
    stats(&stats_file)
}

#[test]
fn the_workloads_heavy_functions_run_on_a_local_clone() {
    for (app, function) in [
        ("virus-scan", "virus_scan::db::Database::scan"),
        ("image-search", "image_search::cascade::Cascade::detect"),
        ("behavior-profile", "behavior_profile::Classifier::train"),
    ] {
        let s = offload(app, function, &[]);
        assert!(s.migrations > 0, "{app}: {s:?}");
        assert_eq!(s.fallbacks.count, 0, "{app}: {s:?}");
        let p = s.points.get(function).unwrap_or_else(|| panic!("{app}: no stats for {function}: {s:?}"));
        assert!(p.bytes_up > 0 && p.pages_up > 0, "{app}: {p:?}");
        assert!(s.module_upload_bytes > 0, "the clone asked for the module");
    }
}

#[test]
fn whole_mains_that_print_and_read_their_arguments_run_remotely() {
    // The clone serves the run's arguments and environment (sent in the hello) and journals
    // writes to stdout and stderr, which the device writes out when it merges the return.
    for (name, function) in [("hello", "hello::main"), ("args_env", "args_env::main"), ("compute", "compute::main")] {
        let guest = corpus::guest(name);
        let run = |extra: &[&str]| {
            let mut cmd = Command::new(CLONECLOUD);
            cmd.arg("run").args(extra);
            for (k, v) in &guest.env {
                cmd.arg("--env").arg(format!("{k}={v}"));
            }
            cmd.arg(&guest.path).args(&guest.args).env("CLONECLOUD_LOG", "off").output().unwrap()
        };
        let plain = run(&[]);
        let dir = tempfile::tempdir().unwrap();
        let stats_file = dir.path().join("stats.json");
        let offloaded = run(&["--offload", function, "--stats", stats_file.to_str().unwrap()]);
        assert_same(&plain, &offloaded, &format!("{function} offloaded"));
        let s = stats(&stats_file);
        assert_eq!(s.migrations, 1, "{function}: {s:?}");
        assert_eq!(s.fallbacks.count, 0, "{function}: {s:?}");
    }
}

#[test]
fn main_s_first_callee_that_does_io_runs_on_the_clone_with_its_files() {
    // `run` reads the input directory (signatures and files, a cascade and images, a corpus and a
    // log): the directory is replicated to the clone, which serves the reads itself.
    let home = tempfile::tempdir().unwrap();
    for app in ["virus-scan", "image-search", "behavior-profile"] {
        let f = format!("{}::run", app.replace('-', "_"));
        let s = offload_in(home.path(), app, &f, &[]);
        assert!(s.migrations > 0, "{app}: {s:?}");
        assert_eq!(s.fallbacks.count, 0, "{app}: {s:?}");
        let sync = &s.file_sync;
        assert!(sync.files_sent > 0 && sync.bytes > 0, "{app}: {sync:?}");
        // A second run finds every file on the clone already: only the listing travels (at
        // launch, and again at the point when the launch's reads changed access times).
        let s = offload_in(home.path(), app, &f, &[]);
        assert!(s.migrations > 0, "{app}: {s:?}");
        assert_eq!(s.file_sync.files_sent, 0, "{app}: reused across runs: {s:?}");
        assert!((1..=2).contains(&s.file_sync.syncs), "{app}: {s:?}");
    }
}

#[test]
fn stdin_is_read_once_through_the_device_even_when_the_migration_is_abandoned() {
    let guest = corpus::guest("stdin_echo");
    let run = |extra: &[&str], input: &str| {
        let mut child = Command::new(CLONECLOUD)
            .arg("run")
            .args(extra)
            .arg(&guest.path)
            .env_remove("CLONECLOUD_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.json");
    let stats_path = stats_file.to_str().unwrap();

    // `main` reads stdin on the clone through proxied calls: the device reads its own stdin.
    let input = "Hello, clone.\nSecond line: ünï.\n".repeat(5000);
    let plain = run(&[], &input);
    assert!(String::from_utf8_lossy(&plain.stdout).contains("SECOND LINE: ÜNÏ."));
    let offloaded = run(&["--offload", "stdin_echo::main", "--stats", stats_path], &input);
    assert_same(&plain, &offloaded, "stdin_echo::main");
    let s = stats(&stats_file);
    assert_eq!((s.migrations, s.fallbacks.count), (1, 0), "{s:?}");
    let main = s.points.get("stdin_echo::main").unwrap_or_else(|| panic!("no stats for stdin_echo::main: {s:?}"));
    assert!(main.proxied_calls >= 2, "reads until end of input: {s:?}");

    // After reading, a sleep: served on the clone too (poll_oneoff on a clock).
    let input = format!("nap{input}");
    let plain = run(&[], &input);
    let offloaded = run(&["--offload", "stdin_echo::main", "--stats", stats_path], &input);
    assert_same(&plain, &offloaded, "stdin_echo::main sleeping after reading");
    let s = stats(&stats_file);
    assert_eq!((s.migrations, s.fallbacks.count), (1, 0), "{s:?}");

    // After reading, a trap: the migration is abandoned, the device puts back what the proxied
    // reads took, and the local run reads it again (and traps as the plain run does).
    let crash = format!("crash{input}");
    let plain_crash = run(&[], &crash);
    assert_eq!(plain_crash.status.code(), Some(134), "a panic is a trap");
    let offloaded = run(&["--offload", "stdin_echo::main", "--stats", stats_path], &crash);
    assert_same(&plain_crash, &offloaded, "stdin_echo::main abandoned after reading");
    let s = stats(&stats_file);
    assert_eq!(s.migrations, 0, "{s:?}");
    assert_eq!(s.fallbacks.causes.get(&Cause::Trap).copied(), Some(1), "{s:?}");

    // What it calls after reading runs on the clone.
    let offloaded = run(&["--offload", "stdin_echo::shout", "--stats", stats_path], &input);
    assert_same(&plain, &offloaded, "stdin_echo::shout");
    let s = stats(&stats_file);
    assert_eq!(s.migrations, 1, "{s:?}");
}

#[test]
fn descriptors_cross_the_migration_both_ways_at_the_device_s_numbers() {
    let guest = corpus::guest("handles");
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.json");
    let run = |name: &str, extra: &[&str]| {
        let data = dir.path().join(name);
        corpus::copy_dir(&corpus::fixture_dir(), &data);
        let out = Command::new(CLONECLOUD)
            .arg("run")
            .args(extra)
            .arg("--dir")
            .arg(format!("{}::/data", data.display()))
            .arg(&guest.path)
            .env_remove("CLONECLOUD_LOG")
            .output()
            .unwrap();
        (out, std::fs::read(data.join("log.txt")).unwrap())
    };
    let (plain, plain_log) = run("plain", &[]);
    let text = String::from_utf8_lossy(&plain.stdout).to_string();
    // Checked against wasmtime-wasi's numbering (the differential test runs this program on
    // plain wasmtime too): 3 is the preopen, 4 the held file.
    for line in ["own descriptor 5", "kept descriptor 5 at offset 3", "closed descriptor 4", "reopened as descriptor 4"] {
        assert!(text.contains(line), "{line}: {text}");
    }
    let stats_path = stats_file.to_str().unwrap();
    for (k, function) in ["handles::open_own", "handles::count_lines", "handles::open_for_caller", "handles::close_it"].iter().enumerate() {
        // open_own: a descriptor opened and closed on the clone gets the device's number.
        // count_lines: a descriptor the device opened is read on the clone from its offset.
        // open_for_caller: one the clone opened and left open is the device's after the
        // commit, at the same number, offset and flags (append).
        // close_it: one the device opened is closed on the clone, and its number is reused.
        let (offloaded, log) = run(&format!("offloaded{k}"), &["--offload", function, "--stats", stats_path]);
        assert_same(&plain, &offloaded, function);
        assert_eq!(log, plain_log, "{function}: log.txt afterwards");
        let s = stats(&stats_file);
        assert_eq!((s.migrations, s.fallbacks.count), (1, 0), "{function}: {s:?}");
    }
}

#[test]
fn a_separate_server_serves_allowed_devices_only() {
    let keys = tempfile::tempdir().unwrap();
    let keygen = |name| clone::keygen(CLONECLOUD, keys.path(), name);
    let (server_key, server_pub) = keygen("server");
    let (device_key, device_pub) = keygen("device");
    let (stranger_key, _) = keygen("stranger");
    let (_, other_pub) = keygen("other");
    let allow = keys.path().join("allow");
    std::fs::write(&allow, std::fs::read_to_string(&device_pub).unwrap()).unwrap();
    let server = clone::serve(CLONECLOUD, &server_key, &allow, "127.0.0.1:0");
    let f = "virus_scan::db::Database::scan";
    let remote = |key: &str, pinned: &str| offload("virus-scan", f, &["--clone", &server.addr, "--key", key, "--clone-key", pinned]);

    let s = remote(&device_key, &server_pub);
    assert!(s.migrations > 0, "{s:?}");
    assert_eq!(s.fallbacks.count, 0, "{s:?}");

    // An unknown device: refused by the server; the run is local and identical.
    let s = remote(&stranger_key, &server_pub);
    assert_eq!(s.migrations, 0, "{s:?}");
    assert!(s.fallbacks.count > 0, "{s:?}");

    // A device pinning another server key refuses this server.
    let s = remote(&device_key, &other_pub);
    assert_eq!(s.migrations, 0, "{s:?}");
    assert!(s.fallbacks.causes.get(&Cause::Tls).copied().unwrap_or(0) > 0, "{s:?}");

    // The server goes on serving the allowed device, files included.
    let s = remote(&device_key, &server_pub);
    assert!(s.migrations > 0, "{s:?}");
    let s = offload("virus-scan", "virus_scan::run", &["--clone", &server.addr, "--key", &device_key, "--clone-key", &server_pub]);
    // (The earlier runs of this device left the files on the server: only the listing travels.)
    assert!(s.migrations > 0 && s.file_sync.entries > 0, "{s:?}");
    assert_eq!(s.fallbacks.count, 0, "{s:?}");

    // Gone: every call runs locally, identical, after one failed connection attempt.
    let addr = server.addr.clone();
    drop(server);
    let s = offload("virus-scan", f, &["--clone", &addr, "--key", &device_key, "--clone-key", &server_pub]);
    assert_eq!(s.migrations, 0, "{s:?}");
    assert!(s.fallbacks.causes.get(&Cause::Connect).copied().unwrap_or(0) >= 1, "{s:?}");
}

/// A server key pair and a device key pair, and an allow list of the device, in a temporary
/// directory (kept while the first value lives): `(dir, server.key, server.pub, device.key,
/// allow)`.
fn server_keys() -> (tempfile::TempDir, String, String, String, std::path::PathBuf) {
    let keys = tempfile::tempdir().unwrap();
    let (server_key, server_pub) = clone::keygen(CLONECLOUD, keys.path(), "server");
    let (device_key, device_pub) = clone::keygen(CLONECLOUD, keys.path(), "device");
    let allow = keys.path().join("allow");
    std::fs::copy(&device_pub, &allow).unwrap();
    (keys, server_key, server_pub, device_key, allow)
}

#[test]
fn a_clone_that_cannot_be_reached_hands_over_to_the_next() {
    let (_keys, server_key, server_pub, device_key, allow) = server_keys();
    let remote = |app: &str, f: &str, list: &str| offload(app, f, &["--clone", list, "--key", &device_key, "--clone-key", &server_pub]);

    // Nothing listens at the first address: the second clone serves every migration.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let b = clone::serve(CLONECLOUD, &server_key, &allow, "127.0.0.1:0");
    let s = remote("virus-scan", "virus_scan::db::Database::scan", &format!("{dead},{}", b.addr));
    assert!(s.migrations > 0, "{s:?}");
    assert_eq!((s.fallbacks.count, s.failovers, s.clone.as_str()), (0, 1, b.addr.as_str()), "{s:?}");

    // The first clone dies under the migration (killed half-way through the turn that carries
    // the thread's state to it, found on a clean run): the migration moves to the second, which
    // rebuilds the replica from nothing; the output is the plain run's (`offload` checks).
    let (app, f) = ("image-search", "image_search::cascade::Cascade::detect");
    let a = std::sync::Arc::new(std::sync::Mutex::new(Some(clone::serve(CLONECLOUD, &server_key, &allow, "127.0.0.1:0"))));
    let a_addr = a.lock().unwrap().as_ref().unwrap().addr.clone();
    // The turns of a clean run, measured right before the run with the fault: the first run
    // uploads the module and files, the later ones find them there, as the run with the fault
    // does. Which turn carries the state can differ from run to run when the background session
    // and the first migration race (a loaded machine): when the fault's run did not reach the
    // byte, the clone is alive and served it; measure again and retry (at most 4 times).
    let mut served = None;
    for attempt in 0..5 {
        let clean = clonecloud_harness::FaultProxy::start(&a_addr, None, None).unwrap();
        let s = remote(app, f, &format!("{},{}", clean.addr, b.addr));
        assert_eq!((s.migrations, s.failovers), (1, 0), "{s:?}");
        if attempt == 0 {
            continue;
        }
        let turns = clean.turns();
        let (turn, state) = turns.iter().enumerate().filter(|(_, t)| t.dir == clonecloud_harness::Dir::Up).max_by_key(|(_, t)| t.end - t.start).unwrap();
        let killed = a.clone();
        let hook = clonecloud_harness::Hook { turn, offset: (state.end - state.start) / 2, delay: std::time::Duration::ZERO, call: Box::new(move || drop(killed.lock().unwrap().take())) };
        let p = clonecloud_harness::FaultProxy::start(&a_addr, None, Some(hook)).unwrap();
        let s = remote(app, f, &format!("{},{}", p.addr, b.addr));
        if a.lock().unwrap().is_none() {
            served = Some(s);
            break;
        }
    }
    let s = served.expect("the first clone was never killed under the migration");
    assert_eq!((s.migrations, s.fallbacks.count, s.failovers, s.clone.as_str()), (1, 0, 1, b.addr.as_str()), "{s:?}");
}

#[test]
fn redundant_migrations_are_asked_of_two_clones_and_merged_when_they_agree() {
    // The embedded clone and a separate server: every migration asked of both, both agree, and
    // the output is the plain run's (`offload` checks). A lying clone is caught in
    // crates/offload/tests/redundant.rs.
    let (_keys, server_key, server_pub, device_key, allow) = server_keys();
    let b = clone::serve(CLONECLOUD, &server_key, &allow, "127.0.0.1:0");
    let list = format!("local,{}", b.addr);
    let s = offload("image-search", "image_search::cascade::Cascade::detect", &["--redundant", "2", "--clone", &list, "--key", &device_key, "--clone-key", &server_pub]);
    assert!(s.migrations > 0, "{s:?}");
    assert_eq!((s.checked, s.fallbacks.count), (s.migrations, 0), "{s:?}");

    // Two clones in this process: no server to start.
    let s = offload("image-search", "image_search::cascade::Cascade::detect", &["--redundant", "2", "--clone", "local:2"]);
    assert!(s.migrations > 0, "{s:?}");
    assert_eq!((s.checked, s.fallbacks.count), (s.migrations, 0), "{s:?}");

    let out = Command::new(CLONECLOUD).args(["run", "--offload", "virus_scan::run", "--redundant", "2"]).arg(apps::wasm("virus-scan")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--redundant 2 asks each migration of 2 clones, and --clone names 1"), "{err}");
}

#[test]
fn a_list_of_clones_is_checked() {
    for (list, why) in [
        ("local,local", "`local` more than once"),
        ("local:2,local", "`local` more than once"),
        ("local:0", "from 1 to 16"),
        ("local:x", "from 1 to 16"),
        ("local,", "an empty name"),
        ("127.0.0.1:9,127.0.0.1:9", "named twice"),
    ] {
        let out = Command::new(CLONECLOUD).args(["run", "--offload", "virus_scan::run", "--clone", list]).arg(apps::wasm("virus-scan")).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{list}: {err}");
    }
}

#[test]
fn remote_clone_options_are_checked() {
    let out = Command::new(CLONECLOUD)
        .args(["run", "--offload", "virus_scan::run", "--clone", "127.0.0.1:9"])
        .arg(apps::wasm("virus-scan"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--key") && err.contains("keygen"), "{err}");
}

/// The guest's own closes count: it opens three files and closes the last two, leaving numbers
/// above its highest open descriptor free; the offloaded function then opens a file, which must
/// get on the clone the number wasmtime-wasi gives on the device (the device knows the freed
/// numbers only from the closes it sees), so the call merges rather than falling back.
#[test]
fn descriptors_the_guest_closed_above_its_highest_are_known_to_the_clone() {
    let wasm = wat::parse_str(
        r#"(module
          (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (data (i32.const 100) "a")
          (func $open_a (result i32)
            (drop (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 0) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 200)))
            (i32.load (i32.const 200)))
          (func $reopen (export "reopen") (result i32) (call $open_a))
          (func (export "_start")
            (local $a i32) (local $b i32) (local $c i32)
            (local.set $a (call $open_a))
            (local.set $b (call $open_a))
            (local.set $c (call $open_a))
            (drop (call $close (local.get $c)))
            (drop (call $close (local.get $b)))
            (call $exit (i32.add (i32.mul (local.get $a) (i32.const 10)) (call $reopen)))))"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("closes.wasm");
    std::fs::write(&module, wasm).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a"), "a").unwrap();
    let stats_file = dir.path().join("stats.json");
    let run = |extra: &[&str]| {
        Command::new(CLONECLOUD)
            .arg("run")
            .args(extra)
            .arg("--dir")
            .arg(format!("{}::/d", data.display()))
            .arg(&module)
            .output()
            .unwrap()
    };
    let plain = run(&[]);
    let offloaded = run(&["--offload", "reopen", "--stats", stats_file.to_str().unwrap()]);
    assert_eq!(offloaded.status.code(), plain.status.code(), "{}", String::from_utf8_lossy(&offloaded.stderr));
    let s = stats(&stats_file);
    assert_eq!((s.migrations, s.fallbacks.count), (1, 0), "{s:?}");
}

#[test]
fn memory_a_migrated_call_freed_and_the_device_zeroed_again_reads_as_zero_on_the_clone() {
    // The pages `dirty` filled and freed are left out of its return as free heap; `main` then
    // gets the same memory zeroed, unchanged on the device and so not sent: the clone must hold
    // zeros there too when `checksum` reads it (it had kept `dirty`'s bytes).
    corpus::corpus();
    let module = corpus::repo_root().join("target/corpus/wasm32-wasip1/release/reuse.wasm");
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.json");
    let run = |extra: &[&str]| Command::new(CLONECLOUD).arg("run").args(extra).arg(&module).env_remove("CLONECLOUD_LOG").output().unwrap();
    let plain = run(&[]);
    assert_eq!(String::from_utf8_lossy(&plain.stdout), format!("dirty {}\nzeroed 0\n", 0xA5u64 * (4 << 20)));
    let offloaded = run(&["--offload", "dirty,checksum", "--stats", stats_file.to_str().unwrap()]);
    assert_same(&plain, &offloaded, "reuse offloading dirty and checksum");
    let s = stats(&stats_file);
    assert_eq!((s.migrations, s.fallbacks.count), (2, 0), "{s:?}");
    // The freed pages were left out (else this test would not test the case).
    assert!(s.points["dirty"].pages_freed > 0, "{s:?}");
}
