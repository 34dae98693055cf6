//! `poll_oneoff` in a threaded module: the relative sleep clonecloud answers itself (without the
//! shared WASI context) and the polls it hands to wasmtime-wasi through a forwarder instance
//! must leave the guest's memory exactly as wasmtime-wasi leaves it in a plain module (the
//! oracle: the same code run by `Program`, where wasmtime-wasi answers every call).

use clonecloud_exec::threads::{ThreadEnd, ThreadedProgram, is_threaded, new_threads_engine, uses_threads};
use clonecloud_exec::{ModuleCache, Outcome, PointMode, Points, Program, Stdio, WasiConfig};

/// The probe: polls with one relative clock (1 ms), two relative clocks (1 ms, 10 s), none, an
/// absolute monotonic time of 0, and a relative realtime clock;
/// folds each call's errno, the count written and the 64 bytes of events (pre-filled with 0xAA,
/// so the bytes a poll leaves alone count too) into an FNV hash, and exits with it (modulo 126, what `proc_exit` allows).
fn probe(memory: &str) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  {memory}
  (global $h (mut i32) (i32.const -2128831035))
  (func $mix (param $v i32)
    (global.set $h (i32.mul (i32.xor (global.get $h) (local.get $v)) (i32.const 16777619))))
  (func $sub (param $at i32) (param $ud i64) (param $clock i32) (param $timeout i64) (param $flags i32)
    (i64.store (local.get $at) (local.get $ud))
    (i32.store8 offset=8 (local.get $at) (i32.const 0))
    (i32.store offset=16 (local.get $at) (local.get $clock))
    (i64.store offset=24 (local.get $at) (local.get $timeout))
    (i64.store offset=32 (local.get $at) (i64.const 0))
    (i32.store16 offset=40 (local.get $at) (local.get $flags)))
  (func $check (param $at i32) (param $n i32)
    (local $i i32)
    (memory.fill (i32.const 256) (i32.const 0xAA) (i32.const 64))
    (i32.store (i32.const 512) (i32.const 99))
    (call $mix (call $poll (local.get $at) (i32.const 256) (local.get $n) (i32.const 512)))
    (call $mix (i32.load (i32.const 512)))
    (block $done (loop $bytes
      (br_if $done (i32.ge_u (local.get $i) (i32.const 64)))
      (call $mix (i32.load8_u offset=256 (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $bytes))))
  (func (export "_start")
    (call $sub (i32.const 0) (i64.const 5) (i32.const 1) (i64.const 1000000) (i32.const 0))
    (call $check (i32.const 0) (i32.const 1))
    (call $sub (i32.const 48) (i64.const 8) (i32.const 1) (i64.const 10000000000) (i32.const 0))
    (call $check (i32.const 0) (i32.const 2))
    (call $check (i32.const 0) (i32.const 0))
    (call $sub (i32.const 0) (i64.const 10) (i32.const 1) (i64.const 0) (i32.const 1))
    (call $check (i32.const 0) (i32.const 1))
    (call $sub (i32.const 0) (i64.const 11) (i32.const 0) (i64.const 1000) (i32.const 0))
    (call $check (i32.const 0) (i32.const 1))
    (call $exit (i32.rem_u (global.get $h) (i32.const 126)))))"#
    )
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
    let Outcome::Exited(want) = program.run(&wasi()).unwrap().outcome else { panic!("the plain probe trapped") };

    let threaded = wat::parse_str(probe(r#"(import "env" "memory" (memory 1 1 shared)) (export "memory" (memory 0))"#)).unwrap();
    assert!(uses_threads(&threaded) && !uses_threads(&plain));
    assert!(is_threaded(&clonecloud_model::Module::parse_without_call_graph(&threaded).unwrap()));
    let engine = new_threads_engine().unwrap();
    let program = ThreadedProgram::prepare(&engine, &cache, &threaded).unwrap();
    for _ in 0..3 {
        match program.run(&wasi(), never).unwrap() {
            Outcome::Exited(got) => assert_eq!(got, want, "the threaded probe's polls differ from wasmtime-wasi's"),
            other => panic!("the threaded probe ended with {other:?}"),
        }
    }
}

#[test]
fn a_threaded_module_is_refused_where_points_would_go_and_told_apart_from_a_plain_one() {
    let threaded = wat::parse_str(
        r#"(module (import "wasi" "thread-spawn" (func (param i32) (result i32)))
             (import "env" "memory" (memory 1 1 shared)) (func (export "_start")))"#,
    )
    .unwrap();
    let engine = clonecloud_exec::new_engine(PointMode::Flag).unwrap();
    let e = Program::prepare(&engine, &ModuleCache::disabled(), &threaded, &Points::None, PointMode::Flag).unwrap_err();
    assert!(e.to_string().contains("multi-threaded (wasi-threads)"), "{e}");
    // A module that imports a memory that is not shared is not wasi-threads.
    let other = wat::parse_str(r#"(module (import "env" "memory" (memory 1)) (func (export "_start")))"#).unwrap();
    assert!(!uses_threads(&other));
    let e = ThreadedProgram::prepare(&new_threads_engine().unwrap(), &ModuleCache::disabled(), &other).unwrap_err();
    assert!(e.to_string().contains("`env`.`memory` (a memory)"), "{e}");
}
