//! Past the clone's limits (run time, memory) a migrated call is abandoned there and run on the
//! device, with the result a plain run gives.

mod support;

use clonecloud_offload::Stats;
use clonecloud_replica::Limits;
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
    support::run(WAT, &["spin", "grow"], offload)
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
