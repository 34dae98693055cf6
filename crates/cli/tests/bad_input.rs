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
    let path = write(dir.path(), "empty.wasm", b"");
    for cmd in ["run", "inspect"] {
        let err = fails(&[cmd, &path]);
        assert!(err.contains("empty"), "{err}");
    }
}

#[test]
fn text_files() {
    let dir = tempfile::tempdir().unwrap();
    let wat = write(dir.path(), "app.wat", b"(module (func))\n");
    let err = fails(&["run", &wat]);
    assert!(err.contains("WebAssembly text format"), "{err}");
    let txt = write(dir.path(), "notes.wasm", b"hello, these are notes\n");
    let err = fails(&["run", &txt]);
    assert!(
        err.contains("not a WebAssembly module") && err.contains("hello, these are notes"),
        "{err}"
    );
    let bin = write(
        dir.path(),
        "random.wasm",
        &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0],
    );
    let err = fails(&["inspect", &bin]);
    assert!(
        err.contains("not a WebAssembly module") && err.contains("7f 45 4c 46"),
        "{err}"
    );
}

#[test]
fn truncated_module() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = hello_module();
    for cut in [6, wasm.len() / 2, wasm.len() - 1] {
        let path = write(dir.path(), "cut.wasm", &wasm[..cut]);
        for cmd in ["run", "inspect"] {
            let err = fails(&[cmd, &path]);
            assert!(err.contains("truncated"), "cut at {cut}: {err}");
        }
    }
}

#[test]
fn component() {
    let dir = tempfile::tempdir().unwrap();
    let component = wat::parse_str("(component)").unwrap();
    let path = write(dir.path(), "c.wasm", &component);
    for cmd in ["run", "inspect"] {
        let err = fails(&[cmd, &path]);
        assert!(err.contains("component"), "{err}");
    }
}

#[test]
fn unknown_point_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hello.wasm", &hello_module());
    let err = fails(&["run", "--points", "no_such_function", &path]);
    assert!(
        err.contains("no function named `no_such_function`"),
        "{err}"
    );
    let err = fails(&["run", "--points", "#99", &path]);
    assert!(err.contains("#99"), "{err}");
    let err = fails(&["run", "--points", "#0", &path]);
    assert!(err.contains("import"), "{err}");
    let err = fails(&["run", "--points", "w", &path]);
    assert!(
        err.contains("it is the import `wasi_snapshot_preview1`.`fd_write`"),
        "{err}"
    );
}

#[test]
fn missing_file() {
    let err = fails(&["run", "/no/such/dir/app.wasm"]);
    assert!(
        err.contains("cannot read module `/no/such/dir/app.wasm`"),
        "{err}"
    );
    let err = fails(&["inspect", "/no/such/dir/app.wasm"]);
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn non_wasi_import() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wat::parse_str(
        r#"(module (import "env" "camera_frame" (func)) (func (export "_start") call 0))"#,
    )
    .unwrap();
    let path = write(dir.path(), "camera.wasm", &wasm);
    let err = fails(&["run", &path]);
    assert!(
        err.contains("`env`.`camera_frame`") && err.contains("not a WASI preview 1"),
        "{err}"
    );
}

#[test]
fn missing_preopen_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hello.wasm", &hello_module());
    let err = fails(&["run", "--dir", "/no/such/dir::/data", &path]);
    assert!(
        err.contains("cannot preopen directory `/no/such/dir`"),
        "{err}"
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
