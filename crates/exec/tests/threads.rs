//! `poll_oneoff` in a threaded module: the relative sleep clonecloud answers itself (without the
//! shared WASI context) and the polls it hands to wasmtime-wasi through a forwarder instance
//! must leave the guest's memory exactly as wasmtime-wasi leaves it in a plain module (the
//! oracle: the same code run by `Program`, where wasmtime-wasi answers every call).

use clonecloud_exec::threads::{ThreadEnd, is_threaded, new_threads_engine, uses_threads};
use clonecloud_exec::{ModuleCache, Outcome, PointMode, Points, Program, Stdio, WasiConfig};

/// The probe: polls with one relative clock (1 ms), two relative clocks (1 ms, 10 s), none, an
/// absolute monotonic time of 0, a relative realtime clock, a clock with an undefined flag bit,
/// a process-time clock, and a subscription that is not a clock (fd_read of descriptor 99; a
/// pointer out of bounds is no errno but a host error, in both); for each, records the errno, the count written and the
/// 64 bytes of events (pre-filled with 0xAA, so the bytes a poll leaves alone count too), and
/// writes the records to `out` in the directory preopened as descriptor 3.
fn probe(memory: &str) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  {memory}
  (data (i32.const 3000) "out")
  (global $rec (mut i32) (i32.const 8192))
  (func $sub (param $at i32) (param $ud i64) (param $tag i32) (param $clock i32) (param $timeout i64) (param $flags i32)
    (i64.store (local.get $at) (local.get $ud))
    (i32.store8 offset=8 (local.get $at) (local.get $tag))
    (i32.store offset=16 (local.get $at) (local.get $clock))
    (i64.store offset=24 (local.get $at) (local.get $timeout))
    (i64.store offset=32 (local.get $at) (i64.const 0))
    (i32.store16 offset=40 (local.get $at) (local.get $flags)))
  (func $check (param $at i32) (param $n i32) (param $events i32)
    (memory.fill (i32.const 256) (i32.const 0xAA) (i32.const 64))
    (i32.store (i32.const 512) (i32.const 99))
    (i32.store (global.get $rec) (call $poll (local.get $at) (local.get $events) (local.get $n) (i32.const 512)))
    (i32.store offset=4 (global.get $rec) (i32.load (i32.const 512)))
    (memory.copy (i32.add (global.get $rec) (i32.const 8)) (i32.const 256) (i32.const 64))
    (global.set $rec (i32.add (global.get $rec) (i32.const 72))))
  (func (export "_start")
    (call $sub (i32.const 0) (i64.const 5) (i32.const 0) (i32.const 1) (i64.const 1000000) (i32.const 0))
    (call $check (i32.const 0) (i32.const 1) (i32.const 256))
    (call $sub (i32.const 48) (i64.const 8) (i32.const 0) (i32.const 1) (i64.const 10000000000) (i32.const 0))
    (call $check (i32.const 0) (i32.const 2) (i32.const 256))
    (call $check (i32.const 0) (i32.const 0) (i32.const 256))
    (call $sub (i32.const 0) (i64.const 10) (i32.const 0) (i32.const 1) (i64.const 0) (i32.const 1))
    (call $check (i32.const 0) (i32.const 1) (i32.const 256))
    (call $sub (i32.const 0) (i64.const 11) (i32.const 0) (i32.const 0) (i64.const 1000) (i32.const 0))
    (call $check (i32.const 0) (i32.const 1) (i32.const 256))
    (call $sub (i32.const 0) (i64.const 12) (i32.const 0) (i32.const 1) (i64.const 1000) (i32.const 4))
    (call $check (i32.const 0) (i32.const 1) (i32.const 256))
    (call $sub (i32.const 0) (i64.const 13) (i32.const 0) (i32.const 2) (i64.const 1000) (i32.const 0))
    (call $check (i32.const 0) (i32.const 1) (i32.const 256))
    (call $sub (i32.const 0) (i64.const 14) (i32.const 1) (i32.const 99) (i64.const 0) (i32.const 0))
    (call $check (i32.const 0) (i32.const 1) (i32.const 256))
    (drop (call $open (i32.const 3) (i32.const 0) (i32.const 3000) (i32.const 3) (i32.const 9) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 4000)))
    (i32.store (i32.const 4100) (i32.const 8192))
    (i32.store (i32.const 4104) (i32.sub (global.get $rec) (i32.const 8192)))
    (drop (call $write (i32.load (i32.const 4000)) (i32.const 4100) (i32.const 1) (i32.const 4200)))))"#
    )
}

/// Runs the probe with `dir` preopened, by `run`; the records it wrote.
fn records(dir: &std::path::Path, run: impl FnOnce(&WasiConfig) -> Outcome) -> Vec<u8> {
    let wasi = WasiConfig {
        args: vec!["probe".into()],
        stdio: Stdio::Null,
        dirs: vec![clonecloud_exec::DirMapping { host: dir.to_path_buf(), guest: "/d".into() }],
        ..Default::default()
    };
    match run(&wasi) {
        Outcome::Exited(0) => {}
        other => panic!("the probe ended with {other:?}"),
    }
    std::fs::read(dir.join("out")).unwrap()
}

fn wasi() -> WasiConfig {
    WasiConfig { args: vec!["probe".into()], stdio: Stdio::Null, ..Default::default() }
}

fn never(end: ThreadEnd) -> ! {
    panic!("the probe has no threads, yet one ended the run: {end:?}")
}

#[test]
fn polls_in_a_threaded_module_leave_memory_as_wasmtime_wasi_does() {
    let cache = ModuleCache::disabled();
    let plain = wat::parse_str(probe(r#"(memory (export "memory") 1)"#)).unwrap();
    let engine = clonecloud_exec::new_engine(PointMode::Flag).unwrap();
    let program = Program::prepare(&engine, &cache, &plain, &Points::None, PointMode::Flag).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let want = records(dir.path(), |w| program.run(w).unwrap().outcome);
    assert_eq!(want.len(), 8 * 72);

    let threaded = wat::parse_str(probe(r#"(import "env" "memory" (memory 1 1 shared)) (export "memory" (memory 0))"#)).unwrap();
    assert!(uses_threads(&threaded) && !uses_threads(&plain));
    assert!(is_threaded(&clonecloud_model::Module::parse_without_call_graph(&threaded).unwrap()));
    let engine = new_threads_engine().unwrap();
    let program = Program::prepare(&engine, &cache, &threaded, &Points::None, PointMode::Flag).unwrap();
    assert!(program.is_threaded());
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let got = records(dir.path(), |w| program.run_threads(w, None, never).unwrap().outcome);
        for (case, (g, w)) in got.chunks(72).zip(want.chunks(72)).enumerate() {
            assert_eq!(g, w, "case {case}: errno, count and event bytes differ from wasmtime-wasi's");
        }
        assert_eq!(got.len(), want.len());
    }
}

#[test]
fn a_module_without_a_thread_entry_is_told_no_thread_started() {
    // wasi-threads asks for `wasi_thread_start`; without it `thread-spawn` answers -1 (as
    // wasmtime did) and no thread starts. The module exits with 3 when told so.
    let wasm = wat::parse_str(
        r#"(module (import "wasi" "thread-spawn" (func $spawn (param i32) (result i32)))
             (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (import "env" "memory" (memory 1 1 shared)) (export "memory" (memory 0))
             (func (export "_start") (call $exit (select (i32.const 3) (i32.const 4) (i32.eq (call $spawn (i32.const 0)) (i32.const -1))))))"#,
    )
    .unwrap();
    let program = threaded(&wasm);
    assert!(matches!(program.run_threads(&wasi(), None, never).unwrap().outcome, Outcome::Exited(3)));
    // Its memory must be the one WASI calls see.
    let hidden = wat::parse_str(r#"(module (import "env" "memory" (memory 1 1 shared)) (func (export "_start")))"#).unwrap();
    let e = Program::prepare(&new_threads_engine().unwrap(), &ModuleCache::disabled(), &hidden, &Points::None, PointMode::Flag).unwrap_err();
    assert!(e.to_string().contains("does not export its shared memory as `memory`"), "{e}");
}

#[test]
fn a_threaded_module_is_told_apart_from_a_plain_one() {
    let threaded = wat::parse_str(
        r#"(module (import "wasi" "thread-spawn" (func (param i32) (result i32)))
             (import "env" "memory" (memory 1 1 shared)) (export "memory" (memory 0)) (func (export "_start")))"#,
    )
    .unwrap();
    let engine = new_threads_engine().unwrap();
    let program = Program::prepare(&engine, &ModuleCache::disabled(), &threaded, &Points::None, PointMode::Flag).unwrap();
    assert!(program.is_threaded());
    // A module that imports a memory that is not shared is not wasi-threads, and WASI does not
    // give it a memory.
    let other = wat::parse_str(r#"(module (import "env" "memory" (memory 1)) (func (export "_start")))"#).unwrap();
    assert!(!uses_threads(&other));
    let e = Program::prepare(&engine, &ModuleCache::disabled(), &other, &Points::None, PointMode::Flag).unwrap_err();
    assert!(e.to_string().contains("`env`.`memory` (a memory)"), "{e}");
}

fn threaded(wasm: &[u8]) -> Program {
    Program::prepare(&new_threads_engine().unwrap(), &ModuleCache::disabled(), wasm, &Points::None, PointMode::Flag).unwrap()
}
