//! Past the clone's limits (run time, memory) a migrated call is abandoned there and run on the
//! device, with the result a plain run gives.

use clonecloud_replica::Limits;
use clonecloud_exec::{ModuleCache, Outcome, PointMode, Points, Program, Stdio, WasiConfig, new_engine};
use clonecloud_offload::{CompressionPolicy, Offloader, Stats, Target, spawn_local_with};
use clonecloud_wire::Compression;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `spin` counts to 300 million; `grow` adds 100 pages (6.4 MB) of memory and returns the size;
/// `_start` exits with `(spin + grow) & 0xff`.
const WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func $spin (export "spin") (result i32) (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 300000000))))
    (local.get $i))
  (func $grow (export "grow") (result i32)
    (drop (memory.grow (i32.const 100)))
    (memory.size))
  (func (export "_start")
    (call $exit (i32.and (i32.add (call $spin) (call $grow)) (i32.const 255)))))"#;

fn run(offload: Option<Limits>) -> (i32, Stats) {
    let wasm = wat::parse_str(WAT).unwrap();
    let engine = new_engine(PointMode::Host).unwrap();
    let points = Points::Named(vec!["spin".into(), "grow".into()]);
    let program = Program::prepare(&engine, &ModuleCache::disabled(), &wasm, &points, PointMode::Host).unwrap();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let migrator: Option<Box<dyn clonecloud_exec::Migrator>> = if let Some(limits) = offload {
        let (addr, identity, server_key) = spawn_local_with(ModuleCache::disabled(), Duration::from_secs(30), limits, None).unwrap();
        let target = Target { addr, server_key, identity, connect_timeout: Duration::from_secs(5), timeout: Duration::from_secs(30), compression: CompressionPolicy::Fixed(Compression::Lz4), dirs: Vec::new(), environment: Default::default() };
        Some(Box::new(Offloader::new(target, program.layout().clone(), vec!["spin".into(), "grow".into()], stats.clone())))
    } else {
        None
    };
    let wasi = WasiConfig { stdio: Stdio::Null, ..WasiConfig::default() };
    let report = program.run_with(&wasi, migrator).unwrap();
    let code = match report.outcome {
        Outcome::Exited(c) => c,
        other => panic!("{other:?}"),
    };
    let s = stats.lock().unwrap().clone();
    (code, s)
}

#[test]
fn calls_past_the_clones_limits_run_on_the_device() {
    let (want, _) = run(None);
    let (got, s) = run(Some(Limits { memory: 2 << 20, run_time: Duration::from_millis(50), ..Limits::default() }));
    assert_eq!(got, want, "the same result as a plain run");
    assert_eq!(s.migrations, 0, "{s:?}");
    assert_eq!(s.fallbacks.causes.get(&clonecloud_offload::Cause::ResourceLimit), Some(&2), "{s:?}");
    let details: Vec<&str> = s.fallbacks.events.iter().map(|e| e.detail.as_str()).collect();
    assert!(details[0].contains("ran past"), "{details:?}");
    assert!(details[1].contains("more memory"), "{details:?}");
}

#[test]
fn a_module_over_the_clones_size_limit_is_refused_and_runs_on_the_device() {
    let (want, _) = run(None);
    let (got, s) = run(Some(Limits { module: 64, ..Limits::default() }));
    assert_eq!(got, want, "the same result as a plain run");
    assert_eq!(s.migrations, 0, "{s:?}");
    let detail = &s.fallbacks.events[0].detail;
    assert!(detail.contains("over this clone's limit of 64"), "{detail}");
}
