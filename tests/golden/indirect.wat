;; RUN: inspect %
;; RUN: analyze %
;; call_indirect through a table filled by an element segment, including a function that is
;; only ever called indirectly and a second table.
(module
  (type $bin (func (param i32 i32) (result i32)))
  (type $un (func (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (table $ops 4 funcref)
  (table $uns 2 funcref)
  (elem (table $ops) (i32.const 0) func $add $sub $mul $max)
  (elem (table $uns) (i32.const 0) func $neg $double)

  (func $add (type $bin) (i32.add (local.get 0) (local.get 1)))
  (func $sub (type $bin) (i32.sub (local.get 0) (local.get 1)))
  (func $mul (type $bin) (i32.mul (local.get 0) (local.get 1)))
  (func $max (type $bin)
    (select (local.get 0) (local.get 1) (i32.gt_s (local.get 0) (local.get 1))))
  (func $neg (type $un) (i32.sub (i32.const 0) (local.get 0)))
  (func $double (type $un) (i32.shl (local.get 0) (i32.const 1)))

  (func $apply (param $op i32) (param i32 i32) (result i32)
    (call_indirect $ops (type $bin) (local.get 1) (local.get 2) (local.get $op)))

  (func $fold (param $n i32) (result i32)
    (local $i i32) (local $acc i32)
    (local.set $acc (i32.const 1))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $acc
          (call $apply (i32.rem_u (local.get $i) (i32.const 4)) (local.get $acc) (i32.add (local.get $i) (i32.const 3))))
        (local.set $acc
          (call_indirect $uns (type $un) (local.get $acc) (i32.and (local.get $i) (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $acc))

  ;; Writes the 8 hex digits of a value and a newline.
  (func $print_hex (param $v i32)
    (local $i i32) (local $d i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const 8)))
        (local.set $d (i32.and (i32.shr_u (local.get $v) (i32.sub (i32.const 28) (i32.shl (local.get $i) (i32.const 2)))) (i32.const 15)))
        (i32.store8 (i32.add (i32.const 100) (local.get $i))
          (i32.add (local.get $d) (select (i32.const 48) (i32.const 87) (i32.lt_u (local.get $d) (i32.const 10)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store8 (i32.const 108) (i32.const 10))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 9))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func (export "_start")
    (call $print_hex (call $fold (i32.const 10)))
    (call $print_hex (call $fold (i32.const 1000)))
    (call $print_hex (call $apply (i32.const 3) (i32.const -5) (i32.const 17)))))
