//! Bad input gets a clear one-line error on stderr and a non-zero exit, never a panic.

use std::path::Path;
use std::process::Command;

/// Runs `clonecloud ARGS` and returns (exit code, stderr), checking the error contract.
fn fails(args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clonecloud"))
        .args(args)
        .env("CLONECLOUD_HOME", home.path())
        .env_remove("CLONECLOUD_LOG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: not one line: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    stderr
}

/// `fails`, and the message names what was wrong: it contains every one of `needles`.
fn refused(args: &[&str], needles: &[&str]) {
    let err = fails(args);
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: `{needle}` not in: {err}");
    }
}

/// `refused` for both commands that read a module.
fn both_refuse(path: &str, needles: &[&str]) {
    for cmd in ["run", "inspect"] {
        refused(&[cmd, path], needles);
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_string_lossy().into_owned()
}

fn hello_module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "hi\n")
            (func $main (export "_start")
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const 3))
                (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .unwrap()
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    both_refuse(&write(dir.path(), "empty.wasm", b""), &["empty"]);
}

#[test]
fn text_files() {
    let dir = tempfile::tempdir().unwrap();
    let wat = write(dir.path(), "app.wat", b"(module (func))\n");
    refused(&["run", &wat], &["WebAssembly text format"]);
    let txt = write(dir.path(), "notes.wasm", b"hello, these are notes\n");
    refused(
        &["run", &txt],
        &["not a WebAssembly module", "hello, these are notes"],
    );
    let elf = [0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0];
    let bin = write(dir.path(), "random.wasm", &elf);
    refused(
        &["inspect", &bin],
        &["not a WebAssembly module", "7f 45 4c 46"],
    );
}

#[test]
fn truncated_module() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = hello_module();
    for cut in [6, wasm.len() / 2, wasm.len() - 1] {
        both_refuse(&write(dir.path(), "cut.wasm", &wasm[..cut]), &["truncated"]);
    }
}

#[test]
fn component() {
    let dir = tempfile::tempdir().unwrap();
    let component = wat::parse_str("(component)").unwrap();
    both_refuse(&write(dir.path(), "c.wasm", &component), &["component"]);
}

#[test]
fn unknown_point_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hello.wasm", &hello_module());
    let run =
        |points: &str, needles: &[&str]| refused(&["run", "--points", points, &path], needles);
    run(
        "no_such_function",
        &["no function named `no_such_function`"],
    );
    run("#99", &["#99"]);
    run("#0", &["import"]);
    run(
        "w",
        &["it is the import `wasi_snapshot_preview1`.`fd_write`"],
    );
}

#[test]
fn missing_file() {
    refused(
        &["run", "/no/such/dir/app.wasm"],
        &["cannot read module `/no/such/dir/app.wasm`"],
    );
    refused(&["inspect", "/no/such/dir/app.wasm"], &["No such file"]);
}

#[test]
fn non_wasi_import() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wat::parse_str(
        r#"(module (import "env" "camera_frame" (func)) (func (export "_start") call 0))"#,
    )
    .unwrap();
    let path = write(dir.path(), "camera.wasm", &wasm);
    refused(
        &["run", &path],
        &["`env`.`camera_frame`", "not a WASI preview 1"],
    );
}

#[test]
fn missing_preopen_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hello.wasm", &hello_module());
    refused(
        &["run", "--dir", "/no/such/dir::/data", &path],
        &["cannot preopen directory `/no/such/dir`"],
    );
}

#[test]
fn good_module_runs() {
    // The contract above is about bad input: the same module, well-formed, runs fine.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hello.wasm", &hello_module());
    let out = Command::new(env!("CARGO_BIN_EXE_clonecloud"))
        .args(["run", "--points", "main", "--point-mode", "host", &path])
        .env("CLONECLOUD_HOME", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hi\n");
}

/// The data directory holds keys, compiled modules and replicated files: it is made private
/// (0700) before anything goes in, and one that belongs to another user is refused with the fix.
#[test]
fn the_data_directory_is_made_private_and_another_users_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let module = write(scratch.path(), "hello.wasm", &hello_module());
    let run = || Command::new(env!("CARGO_BIN_EXE_clonecloud")).args(["run", &module]).env("CLONECLOUD_HOME", &data).env_remove("CLONECLOUD_LOG").env_remove("RUST_LOG").output().unwrap();
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o777, 0o700, "the data directory was left open to others");

    // Only root can give the directory away to test the refusal.
    if std::fs::metadata(scratch.path()).unwrap().uid() != 0 {
        eprintln!("not root: the refusal of another user's data directory is not tested here");
        return;
    }
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("belongs to another user") && stderr.contains("CLONECLOUD_HOME"), "{stderr}");
}

/// Several runs on the embedded clone started at once on a fresh data directory all make or
/// find the same keys: none fails on another's half-made key.
#[test]
fn runs_started_at_once_on_a_fresh_home_share_the_local_keys() {
    let dir = tempfile::tempdir().unwrap();
    let module = write(dir.path(), "hello.wasm", &hello_module());
    let home = dir.path().join("home");
    let runs: Vec<_> = (0..8)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_clonecloud"))
                .args(["run", "--offload", "all", "--clone", "local", &module])
                .env("CLONECLOUD_HOME", &home)
                .env_remove("CLONECLOUD_LOG")
                .env_remove("RUST_LOG")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, b"hi\n");
    }
    let keys: Vec<_> = std::fs::read_dir(home.join("keys")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(keys.iter().all(|k| !k.ends_with(".new")), "no temporary key is left: {keys:?}");
}
