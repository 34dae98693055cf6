//! Multi-threaded modules (`wasm32-wasip1-threads`: std::thread, Mutex, Condvar, channels,
//! atomics) under `clonecloud run`, against the oracle of the same programs built natively
//! (tests/threads): the same output and exit code, every run. Outputs are schedule-independent
//! by construction (each program combines its threads' results in a fixed order). Threads
//! migrate with `--offload` (workers, conflict): the same output, with migrations, and the
//! conflicts a program built to conflict has.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Builds tests/threads for `target` (None: this machine) once per process; the directory of
/// the built programs.
fn build(target: Option<&str>) -> PathBuf {
    let dir = root().join("target/threads");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(root().join("tests/threads/Cargo.toml"))
        .arg("--target-dir")
        .arg(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS");
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    let status = cmd.status().expect("cannot start cargo to build tests/threads");
    assert!(status.success(), "building tests/threads for {target:?} failed");
    match target {
        Some(t) => dir.join(t).join("release"),
        None => dir.join("release"),
    }
}

fn wasm(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build(Some("wasm32-wasip1-threads"))).join(format!("{name}.wasm"))
}

fn native(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build(None)).join(name)
}

fn clonecloud(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clonecloud"));
    cmd.args(args).env("CLONECLOUD_HOME", home());
    within(cmd)
}

/// Runs `cmd` to its end, or kills it after two minutes and fails: a program whose main thread
/// waits forever for a thread's exit must not hang the tests when that exit is lost.
fn within(mut cmd: Command) -> Output {
    use std::process::Stdio;
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cannot start the program");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(std::time::Duration::from_secs(120)) {
        Ok(out) => out.expect("waiting for the program"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{cmd:?} did not end within two minutes");
        }
    }
}

/// A home (and compiled-module cache) of this test process's own.
fn home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `name ARGS` natively and under `clonecloud run` (with `extra` options first), and
/// asserts the same stdout and exit code; returns clonecloud's output.
fn same_as_native(name: &str, args: &[&str], extra: &[&str]) -> Output {
    let mut cmd = Command::new(native(name));
    cmd.args(args);
    let want = within(cmd);
    let module = wasm(name);
    let mut all: Vec<&str> = vec!["run"];
    all.extend_from_slice(extra);
    all.push(module.to_str().unwrap());
    all.extend_from_slice(args);
    let got = clonecloud(&all);
    assert_eq!(text(&got.stdout), text(&want.stdout), "{name} {args:?}: stdout differs from the native build's; stderr: {}", text(&got.stderr));
    assert_eq!(got.status.code(), want.status.code(), "{name} {args:?}: exit code; stderr: {}", text(&got.stderr));
    got
}

#[test]
fn threaded_programs_give_the_native_output() {
    for (name, args) in [
        ("reduce", &["4", "2000000"][..]),
        ("reduce", &["7", "100001"][..]),
        ("prodcons", &["20000", "3"][..]),
        ("neighbours", &["4", "500"][..]),
        ("nested", &["6"][..]),
    ] {
        for _ in 0..3 {
            same_as_native(name, args, &[]);
        }
    }
}

#[test]
fn threads_share_the_descriptor_table_and_the_preopens() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cmd = Command::new(native("files"));
    cmd.arg(a.path());
    let want = within(cmd);
    assert!(want.status.success(), "native: {}", text(&want.stderr));
    let dir = format!("{}::/data", b.path().display());
    let got = clonecloud(&["run", "--dir", &dir, wasm("files").to_str().unwrap(), "/data"]);
    assert_eq!(text(&got.stdout), text(&want.stdout), "stderr: {}", text(&got.stderr));
    assert!(got.status.success());
    assert_eq!(clonecloud_harness::dirs::snapshot(a.path()), clonecloud_harness::dirs::snapshot(b.path()), "the files the threads wrote");
}

#[test]
fn a_thread_that_exits_ends_the_program_with_its_code() {
    for code in ["7", "0", "42"] {
        let got = same_as_native("exit_in_thread", &[code], &[]);
        assert!(text(&got.stdout).contains("worker: exiting"), "{}", text(&got.stdout));
    }
}

#[test]
fn a_thread_that_traps_ends_the_program_with_an_error() {
    let got = clonecloud(&["run", wasm("trap_in_thread").to_str().unwrap()]);
    assert_eq!(got.status.code(), Some(1), "stderr: {}", text(&got.stderr));
    assert_eq!(text(&got.stdout), "main: started\n");
    let err = text(&got.stderr);
    assert!(err.contains("wasi-thread-1 exited unsuccessfully") && err.contains("unreachable"), "{err}");
    // A thread's runaway recursion meets wasmtime's stack limit, not the native stack's end.
    let got = clonecloud(&["run", wasm("trap_in_thread").to_str().unwrap(), "deep"]);
    assert_eq!(got.status.code(), Some(1), "stderr: {}", text(&got.stderr));
    let err = text(&got.stderr);
    assert!(err.contains("wasi-thread-1 exited unsuccessfully") && err.contains("call stack exhausted"), "{err}");
}

#[test]
fn a_sleeping_thread_does_not_hold_up_the_others() {
    // The worker sleeps for a minute; the main thread prints and ends the run meanwhile. Were
    // the sleep holding the shared WASI context, the main thread's print would wait for it.
    let started = std::time::Instant::now();
    let got = same_as_native("sleeper", &[], &[]);
    assert_eq!(text(&got.stdout), "main: done while the worker sleeps\n");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
}

/// `--stats` of a run, as JSON.
fn stats(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_thread_migrates_while_the_others_run_on() {
    // Workers crunch on the clone(s) while the main thread counts; their bytes sit side by side
    // in one word; with `nested` each worker's crunching is on a thread it spawned; with
    // `pipeline` the items come through a queue under a mutex and a condition variable.
    let dir = tempfile::tempdir().unwrap();
    for clone in ["local", "local:2"] {
        for mode in ["", "nested", "pipeline"] {
            let file = dir.path().join("stats.json");
            let args: Vec<&str> = ["4", "20000", "1000", mode].into_iter().filter(|a| !a.is_empty()).collect();
            let got = same_as_native("workers", &args, &["--offload", "crunch", "--clone", clone, "--stats", file.to_str().unwrap()]);
            let s = stats(&file);
            let case = format!("{clone} {mode}: {s}");
            assert!(s["migrations"].as_u64().unwrap() > 0, "{case}");
            assert_eq!(s["conflicts"].as_u64(), Some(0), "{case}");
            assert_eq!(s["fallbacks"]["count"].as_u64(), Some(0), "{case}");
            // The main thread went on while calls were away: each worker says how far it got
            // during its longest call (blocked, it would not have moved).
            let err = text(&got.stderr);
            let rounds: Vec<u64> = err.lines().filter_map(|l| l.split("went round ").nth(1)).map(|r| r.split(' ').next().unwrap().parse().unwrap()).collect();
            assert_eq!(rounds.len(), 4, "{case}: {err}");
            assert!(rounds.iter().any(|&r| r >= 10), "{case}: the main thread made no progress while calls were away: {err}");
        }
    }
}

#[test]
fn a_migrated_call_that_reads_what_another_thread_changed_conflicts_and_goes_again() {
    // The main thread changes what the call reads while it is away: the clone's answer read the
    // old value, so it conflicts, and the call is sent again (the main thread changes nothing
    // more), giving the local result.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stats.json");
    let flags = ["--offload", "late_reader", "--stats", file.to_str().unwrap()];
    same_as_native("conflict", &["200000000"], &flags);
    let s = stats(&file);
    // The short calls before and after migrate (the one after on the session the conflict
    // left, where it must see the change: the native output says what it computes).
    let counts = |s: &serde_json::Value| ["conflicts", "conflicts_sent_again", "migrations"].map(|k| s[k].as_u64().unwrap());
    assert_eq!(counts(&s), [1, 1, 3], "{s}");
    assert_eq!(s["fallbacks"]["count"].as_u64(), Some(0), "{s}");
    // Nothing changed: no conflict, all three calls migrate.
    same_as_native("conflict", &["200000000", "quiet"], &flags);
    let s = stats(&file);
    assert_eq!(counts(&s), [0, 0, 3], "{s}");
    // WASI calls that change nothing of files and descriptors (the time, the arguments, the
    // environment, random bytes) while the call is away: no conflict either.
    same_as_native("conflict", &["200000000", "queries"], &flags);
    let s = stats(&file);
    assert_eq!(counts(&s), [0, 0, 3], "{s}");
}

#[test]
fn a_threaded_modules_first_run_learns_and_the_next_chooses_what_to_offload() {
    // A home of its own: no profile of `workers` yet. The device is paced to a tenth of this
    // machine (the profile is that device's), the clones are two embedded ones.
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stats.json");
    let args = ["4", "20000", "1500"];
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(native("workers"));
        cmd.args(args);
        let want = within(cmd);
        let mut all = vec!["run", "--clone", "local:2", "--device-speed", "0.1", "--explain", "--stats", file.to_str().unwrap()];
        all.extend_from_slice(extra);
        let module = wasm("workers");
        all.push(module.to_str().unwrap());
        all.extend_from_slice(&args);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clonecloud"));
        cmd.args(&all).env("CLONECLOUD_HOME", home.path());
        let got = within(cmd);
        assert_eq!((text(&got.stdout), got.status.code()), (text(&want.stdout), want.status.code()), "stderr: {}", text(&got.stderr));
        got
    };
    let first = run(&[]);
    let err = text(&first.stderr);
    assert!(err.contains("no profile of this module yet") && err.contains("cranelift@0.1"), "{err}");
    assert_eq!(stats(&file)["migrations"].as_u64(), Some(0));
    // The next run measures the link, solves the profile for two clones and offloads the
    // workers' crunching while the main thread counts on.
    let second = run(&[]);
    let err = text(&second.stderr);
    // (Other functions may be chosen beside it when their tiny saving is positive on a loaded
    // machine: what matters is the workers' crunching.)
    let chosen = err.lines().find(|l| l.contains("offloading")).unwrap_or_default();
    assert!(chosen.contains("crunch"), "{err}");
    let s = stats(&file);
    assert!(s["points"]["crunch"]["migrations"].as_u64().unwrap_or(0) > 0, "{s}");
}

#[test]
fn redundant_threaded_migrations_are_asked_of_two_clones_and_merged_when_they_agree() {
    // Each worker's call is asked of both clones (each session's witness is the other clone),
    // about the same snapshot although the main thread runs on: they agree (the bytes read and
    // written too), so every answer is checked and merged. A lying clone is caught in
    // crates/offload/tests/redundant.rs.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stats.json");
    same_as_native("workers", &["4", "20000", "1000"], &["--offload", "crunch", "--redundant", "2", "--clone", "local:2", "--stats", file.to_str().unwrap()]);
    let s = stats(&file);
    let n = |k: &str| s[k].as_u64().unwrap();
    assert!(n("migrations") > 0, "{s}");
    assert_eq!(n("checked"), n("migrations"), "{s}");
    assert_eq!(s["fallbacks"]["causes"]["mismatch"].as_u64(), None, "{s}");
    // Two clones cannot each be asked by three.
    let got = clonecloud(&["run", "--offload", "crunch", "--redundant", "3", "--clone", "local:2", wasm("workers").to_str().unwrap()]);
    assert_eq!(got.status.code(), Some(1));
    assert!(text(&got.stderr).contains("--redundant 3 asks each migration of 3 clones"), "{}", text(&got.stderr));
}
