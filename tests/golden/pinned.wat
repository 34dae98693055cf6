;; RUN: inspect %
;; RUN: analyze %
;; RUN: analyze --json %
;; A small app: `main` reads a file (WASI: may run on the clone), `work` only computes, and
;; `send` reaches an import only the device has (`env`.`vibrate`: neither WASI nor a device
;; capability the clone can proxy): what pins it shows its path.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "env" "vibrate" (func $vibrate (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (global $counter (mut i32) (i32.const 0))
  (func $work (param $n i32) (result i32)
    (local $i i32) (local $acc i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $acc (i32.add (local.get $acc) (i32.mul (local.get $i) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $acc))
  (func $send (param $fd i32) (result i32)
    (call $vibrate (local.get $fd)))
  (func $main (export "_start")
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
    (global.set $counter (call $work (i32.const 1000)))
    (drop (call $send (i32.const 3)))
    (call $proc_exit (i32.const 0))))
