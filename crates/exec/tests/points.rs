//! The two point modes really take different paths, and neither changes what the guest computes.

use clonecloud_exec::{ModuleCache, Outcome, PointMode, Points, Program, Stdio, WasiConfig};

/// A start function that traps unless three calls give the right answers, and an `_start` that
/// exits with a code computed through a point.
const GUEST: &str = r#"(module
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 1)
    (func $square (param i32) (result i32) (i32.mul (local.get 0) (local.get 0)))
    (func $pair (param i32) (result i32 i64) (local.get 0) (i64.extend_i32_u (call $square (local.get 0))))
    (func $init
        (if (i32.ne (call $square (i32.const 12)) (i32.const 144)) (then unreachable))
        (if (i64.ne (call $pair (i32.const 5)) (i64.const 25)) (then unreachable))
        (drop))
    (start $init)
    (func (export "_start")
        (call $exit (i32.rem_u (call $square (i32.const 7)) (i32.const 40)))))"#;

fn run(points: Points, mode: PointMode) -> (i32, u64) {
    let wasm = wat::parse_str(GUEST).unwrap();
    let engine = clonecloud_exec::new_engine(mode).unwrap();
    let program =
        Program::prepare(&engine, &ModuleCache::disabled(), &wasm, &points, mode).unwrap();
    let report = program
        .run(&WasiConfig {
            stdio: Stdio::Null,
            ..WasiConfig::default()
        })
        .unwrap();
    match report.outcome {
        Outcome::Exited(code) => (code, report.host_calls),
        other => panic!("{other:?}"),
    }
}

#[test]
fn host_mode_sends_every_call_through_the_host() {
    // init: square, pair (which calls square); _start: square; and init and _start themselves.
    assert_eq!(run(Points::All, PointMode::Host), (9, 6));
}

#[test]
fn flag_mode_stays_in_wasm() {
    assert_eq!(run(Points::All, PointMode::Flag), (9, 0));
    assert_eq!(run(Points::None, PointMode::Flag), (9, 0));
}

#[test]
fn named_points_only() {
    assert_eq!(
        run(Points::Named(vec!["square".into()]), PointMode::Host),
        (9, 3)
    );
    assert_eq!(
        run(
            Points::Named(vec!["pair".into(), "#4".into()]),
            PointMode::Host
        ),
        (9, 2)
    );
}

#[test]
fn the_cache_serves_the_second_compile() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModuleCache::new(dir.path());
    let wasm = wat::parse_str(GUEST).unwrap();
    let engine = clonecloud_exec::new_engine(PointMode::Flag).unwrap();
    let path = cache.path_for(&engine, &wasm).unwrap();
    assert!(!path.exists());
    Program::prepare(&engine, &cache, &wasm, &Points::None, PointMode::Flag).unwrap();
    assert!(path.exists());
    // A corrupt entry is ignored and replaced, never fatal.
    std::fs::write(&path, b"garbage").unwrap();
    let p = Program::prepare(&engine, &cache, &wasm, &Points::None, PointMode::Flag).unwrap();
    assert!(matches!(
        p.run(&WasiConfig {
            stdio: Stdio::Null,
            ..Default::default()
        })
        .unwrap()
        .outcome,
        Outcome::Exited(9)
    ));
    assert_ne!(std::fs::read(&path).unwrap(), b"garbage");
}
