;; Multi-value returns: functions returning two and three values, a block with params and
;; results, printed in decimal through fd_write; the exit code comes from the results too.
(module
  (type $wr (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (type $wr)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (global $out (mut i32) (i32.const 1024))

  (func $divmod (param i32 i32) (result i32 i32)
    (i32.div_u (local.get 0) (local.get 1))
    (i32.rem_u (local.get 0) (local.get 1)))

  (func $rotate (param i64 f64 i32) (result i32 i64 f64)
    (local.get 2) (local.get 0) (local.get 1))

  (func $minmax (param i32 i32) (result i32 i32)
    (if (result i32 i32) (i32.lt_s (local.get 0) (local.get 1))
      (then (local.get 0) (local.get 1))
      (else (local.get 1) (local.get 0))))

  ;; Appends a byte to the output buffer.
  (func $putc (param i32)
    (i32.store8 (global.get $out) (local.get 0))
    (global.set $out (i32.add (global.get $out) (i32.const 1))))

  ;; Appends an unsigned decimal number.
  (func $putu (param i64)
    (if (i64.ge_u (local.get 0) (i64.const 10))
      (then (call $putu (i64.div_u (local.get 0) (i64.const 10)))))
    (call $putc (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get 0) (i64.const 10))))))

  (func $flush
    ;; iovec at 0: base 1024, len out-1024
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.sub (global.get $out) (i32.const 1024)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (global.set $out (i32.const 1024)))

  (func $main (export "_start")
    (local $q i32) (local $r i32) (local $a i32) (local $b i64) (local $c f64)
    (call $divmod (i32.const 1000003) (i32.const 97))
    (local.set $r) (local.set $q)
    (call $putu (i64.extend_i32_u (local.get $q))) (call $putc (i32.const 32))
    (call $putu (i64.extend_i32_u (local.get $r))) (call $putc (i32.const 10))
    (call $rotate (i64.const 1234567890123) (f64.const 2.75) (i32.const 7))
    (local.set $c) (local.set $b) (local.set $a)
    (call $putu (i64.extend_i32_u (local.get $a))) (call $putc (i32.const 32))
    (call $putu (local.get $b)) (call $putc (i32.const 32))
    (call $putu (i64.trunc_f64_u (f64.mul (local.get $c) (f64.const 1000)))) (call $putc (i32.const 10))
    ;; a block that takes two values and gives two back
    (call $minmax (i32.const 50) (i32.const 8))
    (block (param i32 i32) (result i32 i32)
      (local.set $a) (i32.add (local.get $a) (i32.const 1)))
    (i32.add)
    (local.set $a)
    (call $putu (i64.extend_i32_u (local.get $a))) (call $putc (i32.const 10))
    (call $flush)
    ;; exit code: r mod 7 (1000003 mod 97 = 30, so 2)
    (call $proc_exit (i32.rem_u (local.get $r) (i32.const 7)))))
