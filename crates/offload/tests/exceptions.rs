//! A wasm exception that escapes a migrated function crosses back: the clone sends it with the
//! state as it was when it left the function, and the device, after the merge, throws it from
//! the point, where the caller's `try_table` catches it, as in a plain run. An exception the
//! device could not throw (a tag the module lacks) is a lie the device does not believe.

mod support;

use clonecloud_replica::Limits;

/// `risky(n)` stores `n` at address 0, then throws `$oops(2n)` when `n` is odd, else returns
/// `n + 1`; `guarded(n)` calls it in a `try_table` and, when it caught `$oops(c)`, returns
/// `c` plus what `risky` stored (so the store before the throw must have been merged).
/// `deep(n)` calls `risky(n)` (the exception passes through one more frame). `_start` exits with
/// `guarded(3) + guarded(4) + guarded(deep 5)` = (6 + 3) + 5 + (10 + 5) = 29.
const WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (tag $oops (param i32))
  (func $risky (export "risky") (param $n i32) (result i32)
    (i32.store (i32.const 0) (local.get $n))
    (if (i32.and (local.get $n) (i32.const 1))
      (then (throw $oops (i32.mul (local.get $n) (i32.const 2)))))
    (i32.add (local.get $n) (i32.const 1)))
  (func $deep (export "deep") (param $n i32) (result i32)
    (i32.add (call $risky (local.get $n)) (i32.const 1000)))
  (func $guarded (param $n i32) (param $deep i32) (result i32)
    (block $caught (result i32)
      (try_table (result i32) (catch $oops $caught)
        (if (result i32) (local.get $deep)
          (then (call $deep (local.get $n)))
          (else (call $risky (local.get $n)))))
      (return))
    (i32.add (i32.load (i32.const 0))))
  (func (export "_start")
    (call $exit
      (i32.add (i32.add (call $guarded (i32.const 3) (i32.const 0)) (call $guarded (i32.const 4) (i32.const 0)))
               (call $guarded (i32.const 5) (i32.const 1))))))"#;

#[test]
fn an_exception_thrown_on_the_clone_is_caught_on_the_device() {
    // The plain run (no points) and the arithmetic in the module's doc agree.
    assert_eq!(support::run(WAT, &[], None).0, 29);
    // Each point's calls from the device (a point called on the clone runs there).
    for (points, calls) in [(&["risky"][..], 3), (&["deep"], 1), (&["risky", "deep"], 3)] {
        let (got, s) = support::run(WAT, points, Some(Limits::default()));
        assert_eq!(got, 29, "{points:?}: the plain run's exit code");
        assert_eq!(s.fallbacks.count, 0, "{points:?}: no fallback: {s:?}");
        assert_eq!(s.migrations, calls, "{points:?}: every call ran on the clone: {s:?}");
    }
}
