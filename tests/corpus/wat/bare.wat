;; No imports, no globals, no exports: all the work happens in the start function, which traps
;; (`unreachable`) if any computed value is wrong. A rewriter that breaks a call shows up as a
;; trap and a different exit code.
(module
  (memory 1)
  (func $gcd (param i32 i32) (result i32)
    (if (i32.eqz (local.get 1)) (then (return (local.get 0))))
    (call $gcd (local.get 1) (i32.rem_u (local.get 0) (local.get 1))))
  (func $fill (param $n i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store (i32.shl (local.get $i) (i32.const 2)) (i32.mul (local.get $i) (local.get $i)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))
  (func $sum (param $n i32) (result i64)
    (local $i i32) (local $acc i64)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $acc (i64.add (local.get $acc)
          (i64.extend_i32_u (i32.load (i32.shl (local.get $i) (i32.const 2))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $acc))
  (func $check (param i32)
    (if (i32.eqz (local.get 0)) (then unreachable)))
  (func $main
    (call $check (i32.eq (call $gcd (i32.const 1071) (i32.const 462)) (i32.const 21)))
    (call $fill (i32.const 1000))
    ;; sum of i^2 for i < 1000 = 332833500
    (call $check (i64.eq (call $sum (i32.const 1000)) (i64.const 332833500))))
  (start $main))
