//! The access-tracking pass (`instrument_accesses`), checked from the outside with wasmparser:
//! the output validates (wasmparser's validator, independently of the pass's own check); a
//! module with every kind of access instruments; the marks are the instructions the
//! documentation promises (against hand-written expected code); over the whole test corpus, plain
//! and rewritten, taking out what the pass adds (what touches its temporaries or its maps) gives
//! back every original function operator for operator, with one mark per access of memory 0;
//! and the refusals say why.

#[path = "../../../tests/support/corpus.rs"]
mod corpus;

use clonecloud_model::{
    FunctionKind, Module, ModelError, POINTS_SECTION, READS_EXPORT, RewriteConfig, WRITES_EXPORT,
    instrument_accesses, rewrite_with, rewritten_points,
};
use wasmparser::{Operator, Parser, Payload, Validator, WasmFeatures};

fn validate(wasm: &[u8]) {
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(wasm)
        .unwrap_or_else(|e| panic!("the instrumented module does not validate: {e}"));
}

/// The locals (flattened) and operators of function `f` of `module` (which models `wasm`).
fn body(wasm: &[u8], module: &Module, f: u32) -> (Vec<wasmparser::ValType>, Vec<Operator<'static>>) {
    let FunctionKind::Defined { body_offset, body_size } = module.functions[f as usize].kind else {
        panic!("#{f} is an import")
    };
    // Leaked so the operators (which borrow the bytes) can outlive the call: tests only.
    let bytes: &'static [u8] = Box::leak(wasm[body_offset..body_offset + body_size].to_vec().into_boxed_slice());
    let body = wasmparser::FunctionBody::new(wasmparser::BinaryReader::new(bytes, 0));
    let mut locals = module.func_type(f).params.clone();
    for group in body.get_locals_reader().unwrap() {
        let (n, t) = group.unwrap();
        locals.extend(std::iter::repeat_n(t, n as usize));
    }
    let mut ops = Vec::new();
    let mut reader = body.get_operators_reader().unwrap();
    while !reader.eof() {
        ops.push(reader.read().unwrap());
    }
    (locals, ops)
}

/// The raw bytes of function `f`'s body.
fn body_bytes<'a>(wasm: &'a [u8], module: &Module, f: u32) -> &'a [u8] {
    let FunctionKind::Defined { body_offset, body_size } = module.functions[f as usize].kind else {
        panic!("#{f} is an import")
    };
    &wasm[body_offset..body_offset + body_size]
}

/// Every custom section, in order, byte for byte.
fn customs(wasm: &[u8]) -> Vec<(String, Vec<u8>)> {
    Parser::new(0)
        .parse_all(wasm)
        .filter_map(|p| match p.unwrap() {
            Payload::CustomSection(c) => Some((c.name().to_string(), c.data().to_vec())),
            _ => None,
        })
        .collect()
}

/// The memory a memory instruction names, if any (from wasmparser's own description of it).
fn memory_of(op: &Operator<'_>) -> Option<(u32, Option<u32>)> {
    match op {
        Operator::MemoryCopy { dst_mem, src_mem } => Some((*dst_mem, Some(*src_mem))),
        Operator::MemoryFill { mem }
        | Operator::MemoryInit { mem, .. }
        | Operator::MemoryGrow { mem }
        | Operator::MemorySize { mem } => Some((*mem, None)),
        other => {
            // Every other memory instruction carries a memarg: its Debug form says which memory.
            let text = format!("{other:?}");
            let at = text.find("memory: ")?;
            let digits: String = text[at + 8..].chars().take_while(|c| c.is_ascii_digit()).collect();
            Some((digits.parse().unwrap(), None))
        }
    }
}

/// How many marks of each map an original function's accesses of memory 0 call for, by the
/// instructions' names: `(reads, writes)`.
fn marks_wanted(ops: &[Operator<'_>]) -> (usize, usize) {
    let (mut reads, mut writes) = (0, 0);
    for op in ops {
        let name = format!("{op:?}");
        let name = name.split([' ', '{']).next().unwrap();
        match (op, memory_of(op)) {
            (Operator::MemoryCopy { dst_mem, src_mem }, _) => {
                reads += usize::from(*src_mem == 0);
                writes += usize::from(*dst_mem == 0);
            }
            (Operator::MemoryFill { mem: 0 } | Operator::MemoryInit { mem: 0, .. }, _) => writes += 1,
            (_, Some((0, None))) => {
                let rmw = name.contains("Rmw");
                reads += usize::from(rmw || name.contains("Load") || name.starts_with("MemoryAtomicWait"));
                writes += usize::from(rmw || name.contains("Store"));
            }
            _ => {}
        }
    }
    (reads, writes)
}

/// Checks that `out` is `wasm` instrumented: the same functions, each the original with marks
/// added (and nothing else), one per access of memory 0, and the grow epilogues; the same
/// imports but memory 0's sharing; the original exports, then the maps'; custom sections
/// untouched.
fn check(name: &str, wasm: &[u8], out: &[u8]) {
    validate(out);
    let module = Module::parse(wasm).unwrap();
    let new = Module::parse(out).unwrap();
    let m = module.memories.len() as u32;
    let (reads, writes) = (m, m + 1);

    assert_eq!(new.functions.len(), module.functions.len(), "{name}");
    assert_eq!(new.memories.len(), module.memories.len() + 2, "{name}");
    let mem0 = &module.memories[0];
    for (i, (a, b)) in module.memories.iter().zip(&new.memories).enumerate() {
        let shared = if i == 0 && mem0.imported { false } else { a.shared };
        assert_eq!((a.initial, a.maximum, a.memory64, a.imported, shared), (b.initial, b.maximum, b.memory64, b.imported, b.shared), "{name}: memory {i}");
    }
    for map in &new.memories[m as usize..] {
        assert_eq!((map.initial, map.maximum, map.memory64, map.shared, map.imported), (mem0.initial, mem0.maximum, false, false, false), "{name}");
    }
    assert_eq!(new.imports.len(), module.imports.len(), "{name}");
    for (a, b) in module.imports.iter().zip(&new.imports) {
        assert_eq!((&a.module, &a.name), (&b.module, &b.name), "{name}");
    }
    assert_eq!(new.exports[..module.exports.len()], module.exports[..], "{name}");
    let added: Vec<(&str, u32)> = new.exports[module.exports.len()..].iter().map(|e| (e.name.as_str(), e.index)).collect();
    assert_eq!(added, [(READS_EXPORT, reads), (WRITES_EXPORT, writes)], "{name}");
    assert_eq!(new.globals, module.globals, "{name}");
    assert_eq!(new.tables, module.tables, "{name}");
    assert_eq!(new.elements, module.elements, "{name}");
    assert_eq!(new.start, module.start, "{name}");
    assert_eq!(customs(out), customs(wasm), "{name}");

    for f in module.defined_functions().map(|f| f.index) {
        assert_eq!(new.functions[f as usize].type_index, module.functions[f as usize].type_index);
        let (old_locals, old) = body(wasm, &module, f);
        let (new_locals, ops) = body(out, &new, f);
        let want = marks_wanted(&old);
        if want == (0, 0) && !old.iter().any(|o| matches!(o, Operator::MemoryGrow { mem: 0 })) {
            assert_eq!(body_bytes(out, &new, f), body_bytes(wasm, &module, f), "{name}: #{f} has no access and is copied");
            continue;
        }
        let l = old_locals.len() as u32;
        assert_eq!(new_locals[..old_locals.len()], old_locals[..], "{name}: #{f}: the temporaries come last");
        assert!(new_locals.len() - old_locals.len() <= 8, "{name}: #{f}: {:?}", &new_locals[old_locals.len()..]);
        let temp = |op: &Operator<'_>| match op {
            Operator::LocalGet { local_index } | Operator::LocalSet { local_index } | Operator::LocalTee { local_index } => *local_index >= l,
            _ => false,
        };
        let map = |op: &Operator<'_>| memory_of(op).is_some_and(|(d, s)| d >= m || s.is_some_and(|s| s >= m));
        let (mut kept, mut marks) = (Vec::new(), (0, 0));
        let mut i = 0;
        while i < ops.len() {
            let op = &ops[i];
            if matches!(op, Operator::MemoryGrow { mem: 0 }) {
                // The epilogue: each map grown to memory 0's size, or a trap.
                kept.push(op.clone());
                for (k, r) in [(0, reads), (14, writes)] {
                    let e = &ops[i + 1 + k..i + 15 + k];
                    assert_eq!(e[0], Operator::MemorySize { mem: 0 }, "{name}: #{f}");
                    assert_eq!(e[1], Operator::MemorySize { mem: r }, "{name}: #{f}");
                    assert_eq!(e[7], Operator::MemoryGrow { mem: r }, "{name}: #{f}");
                    assert_eq!(e[11], Operator::Unreachable, "{name}: #{f}");
                    assert_eq!(e[13], Operator::End, "{name}: #{f}");
                }
                i += 29;
                continue;
            }
            let feeds_mark = matches!(op, Operator::I32Const { .. } | Operator::I64Const { .. } | Operator::V128Const { .. })
                && (ops.get(i + 1).is_some_and(map) || (ops.get(i + 1).is_some_and(temp) && ops.get(i + 2).is_some_and(map)));
            if map(op) {
                match memory_of(op) {
                    Some((d, _)) if d == reads => marks.0 += 1,
                    Some((d, _)) if d == writes => marks.1 += 1,
                    other => panic!("{name}: #{f}: {op:?} names {other:?}"),
                }
            } else if !temp(op) && !feeds_mark {
                kept.push(op.clone());
            }
            i += 1;
        }
        assert_eq!(kept, old, "{name}: #{f}: the original code, with the marks taken out");
        assert_eq!(marks, want, "{name}: #{f}: marks of (reads, writes)");
    }
}

/// One function per kind of access of memory 0, and accesses of another memory.
const EVERY_ACCESS: &str = r#"(module
  (import "env" "memory" (memory 1 4 shared))
  (memory $other 1 1)
  (data $d "hello")
  (func (param i32) (result i32) (i32.load8_s offset=3 (local.get 0)))
  (func (param i32) (result i32) (i32.load8_u (local.get 0)))
  (func (param i32) (result i32) (i32.load16_s (local.get 0)))
  (func (param i32) (result i32) (i32.load16_u (local.get 0)))
  (func (param i32) (result i32) (i32.load (local.get 0)))
  (func (param i32) (result i64) (i64.load8_s (local.get 0)))
  (func (param i32) (result i64) (i64.load8_u (local.get 0)))
  (func (param i32) (result i64) (i64.load16_s (local.get 0)))
  (func (param i32) (result i64) (i64.load16_u (local.get 0)))
  (func (param i32) (result i64) (i64.load32_s (local.get 0)))
  (func (param i32) (result i64) (i64.load32_u (local.get 0)))
  (func (param i32) (result i64) (i64.load (local.get 0)))
  (func (param i32) (result f32) (f32.load (local.get 0)))
  (func (param i32) (result f64) (f64.load (local.get 0)))
  (func (param i32 i32) (i32.store8 (local.get 0) (local.get 1)))
  (func (param i32 i32) (i32.store16 (local.get 0) (local.get 1)))
  (func (param i32 i32) (i32.store offset=7 (local.get 0) (local.get 1)))
  (func (param i32 i64) (i64.store8 (local.get 0) (local.get 1)))
  (func (param i32 i64) (i64.store16 (local.get 0) (local.get 1)))
  (func (param i32 i64) (i64.store32 (local.get 0) (local.get 1)))
  (func (param i32 i64) (i64.store (local.get 0) (local.get 1)))
  (func (param i32 f32) (f32.store (local.get 0) (local.get 1)))
  (func (param i32 f64) (f64.store (local.get 0) (local.get 1)))
  (func (param i32) (result i32) (i32.atomic.load (local.get 0)))
  (func (param i32) (result i32) (i32.atomic.load8_u (local.get 0)))
  (func (param i32) (result i32) (i32.atomic.load16_u (local.get 0)))
  (func (param i32) (result i64) (i64.atomic.load (local.get 0)))
  (func (param i32) (result i64) (i64.atomic.load8_u (local.get 0)))
  (func (param i32) (result i64) (i64.atomic.load16_u (local.get 0)))
  (func (param i32) (result i64) (i64.atomic.load32_u (local.get 0)))
  (func (param i32 i32) (i32.atomic.store (local.get 0) (local.get 1)))
  (func (param i32 i32) (i32.atomic.store8 (local.get 0) (local.get 1)))
  (func (param i32 i32) (i32.atomic.store16 (local.get 0) (local.get 1)))
  (func (param i32 i64) (i64.atomic.store (local.get 0) (local.get 1)))
  (func (param i32 i64) (i64.atomic.store8 (local.get 0) (local.get 1)))
  (func (param i32 i64) (i64.atomic.store16 (local.get 0) (local.get 1)))
  (func (param i32 i64) (i64.atomic.store32 (local.get 0) (local.get 1)))
  (func (param i32 i32) (result i32) (i32.atomic.rmw.add (local.get 0) (local.get 1)))
  (func (param i32 i32) (result i32) (i32.atomic.rmw8.sub_u (local.get 0) (local.get 1)))
  (func (param i32 i32) (result i32) (i32.atomic.rmw16.and_u (local.get 0) (local.get 1)))
  (func (param i32 i64) (result i64) (i64.atomic.rmw.or (local.get 0) (local.get 1)))
  (func (param i32 i64) (result i64) (i64.atomic.rmw8.xor_u (local.get 0) (local.get 1)))
  (func (param i32 i64) (result i64) (i64.atomic.rmw16.xchg_u (local.get 0) (local.get 1)))
  (func (param i32 i64) (result i64) (i64.atomic.rmw32.add_u (local.get 0) (local.get 1)))
  (func (param i32 i32 i32) (result i32) (i32.atomic.rmw.cmpxchg (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32 i32 i32) (result i32) (i32.atomic.rmw8.cmpxchg_u (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32 i32 i32) (result i32) (i32.atomic.rmw16.cmpxchg_u (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32 i64 i64) (result i64) (i64.atomic.rmw.cmpxchg (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32 i64 i64) (result i64) (i64.atomic.rmw8.cmpxchg_u (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32 i64 i64) (result i64) (i64.atomic.rmw16.cmpxchg_u (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32 i64 i64) (result i64) (i64.atomic.rmw32.cmpxchg_u (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32) (result i32) (memory.atomic.wait32 (local.get 0) (i32.const 0) (i64.const 0)))
  (func (param i32) (result i32) (memory.atomic.wait64 (local.get 0) (i64.const 0) (i64.const 0)))
  (func (param i32) (result i32) (memory.atomic.notify (local.get 0) (i32.const 1)))
  (func (param i32) (result v128) (v128.load (local.get 0)))
  (func (param i32) (result v128) (v128.load8x8_s (local.get 0)))
  (func (param i32) (result v128) (v128.load8x8_u (local.get 0)))
  (func (param i32) (result v128) (v128.load16x4_s (local.get 0)))
  (func (param i32) (result v128) (v128.load16x4_u (local.get 0)))
  (func (param i32) (result v128) (v128.load32x2_s (local.get 0)))
  (func (param i32) (result v128) (v128.load32x2_u (local.get 0)))
  (func (param i32) (result v128) (v128.load8_splat (local.get 0)))
  (func (param i32) (result v128) (v128.load16_splat (local.get 0)))
  (func (param i32) (result v128) (v128.load32_splat (local.get 0)))
  (func (param i32) (result v128) (v128.load64_splat (local.get 0)))
  (func (param i32) (result v128) (v128.load32_zero (local.get 0)))
  (func (param i32) (result v128) (v128.load64_zero (local.get 0)))
  (func (param i32 v128) (result v128) (v128.load8_lane 1 (local.get 0) (local.get 1)))
  (func (param i32 v128) (result v128) (v128.load16_lane 1 (local.get 0) (local.get 1)))
  (func (param i32 v128) (result v128) (v128.load32_lane 1 (local.get 0) (local.get 1)))
  (func (param i32 v128) (result v128) (v128.load64_lane 1 (local.get 0) (local.get 1)))
  (func (param i32 v128) (v128.store (local.get 0) (local.get 1)))
  (func (param i32 v128) (v128.store8_lane 1 (local.get 0) (local.get 1)))
  (func (param i32 v128) (v128.store16_lane 1 (local.get 0) (local.get 1)))
  (func (param i32 v128) (v128.store32_lane 1 (local.get 0) (local.get 1)))
  (func (param i32 v128) (v128.store64_lane 1 (local.get 0) (local.get 1)))
  (func (param i32 i32 i32) (memory.copy (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32 i32 i32) (memory.copy 0 $other (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32 i32 i32) (memory.copy $other 0 (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32 i32 i32) (memory.copy $other $other (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32 i32 i32) (memory.fill (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32 i32 i32) (memory.init $d (local.get 0) (local.get 1) (local.get 2)))
  (func (param i32) (result i32) (memory.grow (local.get 0)))
  (func (result i32) (memory.size))
  (func (param i32) (result i32) (i32.load $other (local.get 0)))
  (func (param i32 i64) (i64.store $other (local.get 0) (local.get 1)))
  (func (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
  ;; Several accesses in one function share its temporaries.
  (func (param i32 i64) (result i64)
    (local f64)
    (i64.store (local.get 0) (local.get 1))
    (i64.store offset=8 (local.get 0) (i64.load (local.get 0)))
    (f64.store offset=16 (local.get 0) (local.get 2))
    (i64.atomic.rmw.cmpxchg (local.get 0) (local.get 1) (local.get 1)))
  (@custom "extra" "some bytes"))"#;

#[test]
fn a_module_with_every_kind_of_access_instruments_and_validates() {
    let wasm = wat::parse_str(EVERY_ACCESS).unwrap();
    let out = instrument_accesses(&wasm).unwrap();
    check("every access", &wasm, &out);
    // The shared memory 0 is imported unshared, with the same limits.
    let new = Module::parse(&out).unwrap();
    let m = &new.memories[0];
    assert!(m.imported && !m.shared && m.initial == 1 && m.maximum == Some(4));
    assert!(new.memories[1].maximum == Some(1), "memory $other is as it was");
    // One mark per access of memory 0: each of the functions above with one (all but notify,
    // size, the two of $other, the add and the copy between $other and $other) got a mark.
    let module = Module::parse(&wasm).unwrap();
    let unmarked: Vec<u32> = module
        .defined_functions()
        .map(|f| f.index)
        .filter(|&f| body_bytes(&out, &new, f) == body_bytes(&wasm, &module, f))
        .collect();
    assert_eq!(unmarked, [53, 79, 83, 84, 85, 86], "notify, copy $other→$other, size, two of $other, add");
}

/// The marks are the code the documentation shows, written out by hand for a store, a
/// compare-exchange, a load, a copy, a fill and a grow: the operators of each instrumented
/// function equal those of the expected one.
#[test]
fn the_marks_are_the_documented_code() {
    let original = r#"(module
      (memory 1 8)
      (memory $flags 1 1)
      (func (param i32 i32) (i32.store offset=8 (local.get 0) (local.get 1)))
      (func (param i32 i64 i64) (result i64) (i64.atomic.rmw.cmpxchg offset=16 (local.get 0) (local.get 1) (local.get 2)))
      (func (param i32) (result i64) (local f32) (i64.load8_s offset=3 (local.get 0)))
      (func (param i32 i32 i32) (memory.copy (local.get 0) (local.get 1) (local.get 2)))
      (func (param i32 i32) (memory.fill (local.get 0) (local.get 1) (i32.const 9)))
      (func (param i32) (result i32) (memory.grow (local.get 0)))
      (func (param i32) (result v128) (v128.load offset=5 (local.get 0))))"#;
    // Memories: 0, $flags = 1, then the reads map 2 and the writes map 3.
    let expected = r#"(module
      (memory 1 8)
      (memory $flags 1 1)
      (memory 1 8)
      (memory 1 8)
      (func (param i32 i32) (local i32 i32)
        local.get 0 local.get 1
        local.set 3 local.tee 2
        i32.const 0x01010101 i32.store 3 offset=8 align=1
        local.get 2 local.get 3
        i32.store offset=8)
      (func (param i32 i64 i64) (result i64) (local i32 i64 i64)
        local.get 0 local.get 1 local.get 2
        local.set 5 local.set 4 local.tee 3
        i64.const 0x0101010101010101 i64.store 2 offset=16 align=1
        local.get 3
        i64.const 0x0101010101010101 i64.store 3 offset=16 align=1
        local.get 3 local.get 4 local.get 5
        i64.atomic.rmw.cmpxchg offset=16)
      (func (param i32) (result i64) (local f32 i32)
        local.get 0
        local.tee 2
        i32.const 1 i32.store8 2 offset=3 align=1
        local.get 2
        i64.load8_s offset=3)
      (func (param i32 i32 i32) (local i32 i32 i32)
        local.get 0 local.get 1 local.get 2
        local.set 5 local.set 4 local.set 3
        local.get 4 i32.const 1 local.get 5 memory.fill 2
        local.get 3 i32.const 1 local.get 5 memory.fill 3
        local.get 3 local.get 4 local.get 5
        memory.copy)
      (func (param i32 i32) (local i32 i32 i32)
        local.get 0 local.get 1 i32.const 9
        local.set 4 local.set 3 local.tee 2
        i32.const 1 local.get 4 memory.fill 3
        local.get 2 local.get 3 local.get 4
        memory.fill)
      (func (param i32) (result i32)
        local.get 0
        memory.grow
        memory.size 0 memory.size 2 i32.gt_u
        if
          memory.size 0 memory.size 2 i32.sub memory.grow 2 i32.const -1 i32.eq
          if unreachable end
        end
        memory.size 0 memory.size 3 i32.gt_u
        if
          memory.size 0 memory.size 3 i32.sub memory.grow 3 i32.const -1 i32.eq
          if unreachable end
        end)
      (func (param i32) (result v128) (local i32)
        local.get 0
        local.tee 1
        v128.const i8x16 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 v128.store 2 offset=5 align=1
        local.get 1
        v128.load offset=5))"#;
    let wasm = wat::parse_str(original).unwrap();
    let out = instrument_accesses(&wasm).unwrap();
    check("documented", &wasm, &out);
    let want = wat::parse_str(expected).unwrap();
    let (got_module, want_module) = (Module::parse(&out).unwrap(), Module::parse(&want).unwrap());
    assert_eq!(got_module.memories, want_module.memories);
    for f in 0..7 {
        assert_eq!(body(&out, &got_module, f), body(&want, &want_module, f), "function #{f}");
    }
}

#[test]
fn every_corpus_module_plain_and_rewritten_instruments_to_the_original_plus_marks() {
    for guest in corpus::corpus() {
        let wasm = std::fs::read(&guest.path).unwrap();
        let out = instrument_accesses(&wasm).unwrap_or_else(|e| panic!("{}: {e}", guest.name));
        check(guest.name, &wasm, &out);
        // A module the rewriter made (every function a point, so it has the flag memory too):
        // its flags memory keeps its index, the maps come after it, the points section survives.
        let module = Module::parse(&wasm).unwrap();
        let rewritten = rewrite_with(&module, &wasm, &module.all_points(), &RewriteConfig::default()).unwrap();
        let out = instrument_accesses(&rewritten.wasm).unwrap_or_else(|e| panic!("{} rewritten: {e}", guest.name));
        check(guest.name, &rewritten.wasm, &out);
        assert_eq!(rewritten_points(&out), rewritten_points(&rewritten.wasm), "{}", guest.name);
        assert!(customs(&out).iter().any(|(n, _)| n == POINTS_SECTION));
    }
}

#[test]
fn a_module_without_sections_to_extend_gets_them() {
    // Memory 0 imported, no memory section, no export section, no code: the pass writes both
    // sections where they belong.
    for src in [
        r#"(module (import "env" "memory" (memory 2 3 shared)))"#,
        r#"(module (import "env" "memory" (memory 2)) (global i32 (i32.const 0)) (start 0) (func))"#,
        r#"(module (memory 2) (data (i32.const 0) "x"))"#,
    ] {
        let wasm = wat::parse_str(src).unwrap();
        let out = instrument_accesses(&wasm).unwrap();
        check(src, &wasm, &out);
    }
}

#[test]
fn refusals_say_why() {
    let refuse = |src: &str| instrument_accesses(&wat::parse_str(src).unwrap()).unwrap_err();
    let e = refuse(r#"(module (func (export "f")))"#);
    assert!(matches!(e, ModelError::NoMemoryToTrack), "{e}");
    assert!(e.to_string().contains("no linear memory"), "{e}");
    let e = refuse(r#"(module (memory i64 1) (func (export "f")))"#);
    assert!(matches!(e, ModelError::UntrackableMemory { .. }), "{e}");
    assert!(e.to_string().contains("memory 0 is 64-bit"), "{e}");
    // Memory 1 may be 64-bit: only memory 0 is tracked.
    let wasm = wat::parse_str(
        r#"(module (memory 1) (memory $wide i64 1)
             (func (param i32 i64 i32) (memory.copy 0 $wide (local.get 0) (local.get 1) (local.get 2)))
             (func (param i64 i32 i32) (memory.copy $wide 0 (local.get 0) (local.get 1) (local.get 2))))"#,
    )
    .unwrap();
    check("memory64 as memory 1", &wasm, &instrument_accesses(&wasm).unwrap());
    // A custom page size does not even validate with the default features; either way, refused.
    let e = refuse(r#"(module (memory 1 (pagesize 1)))"#);
    assert!(e.to_string().contains("page size"), "{e}");
    // Twice: the second would export the maps' names again.
    let once = instrument_accesses(&wat::parse_str("(module (memory 1))").unwrap()).unwrap();
    let e = instrument_accesses(&once).unwrap_err();
    assert!(matches!(&e, ModelError::AlreadyInstrumented { name } if name == READS_EXPORT), "{e}");
    // Not a module at all.
    assert!(matches!(instrument_accesses(b"").unwrap_err(), ModelError::Empty));
    assert!(matches!(instrument_accesses(b"\0asm\x01\0\0\0\x05").unwrap_err(), ModelError::Truncated { .. }));
}

/// A function at wasm's limit of locals cannot take the temporaries: refused, naming it.
#[test]
fn a_function_without_room_for_temporaries_is_refused() {
    let src = r#"(module (memory 1) (func (param i32) (result i32) (local i64 i64) (i32.load (local.get 0))))"#
        .replace("(local i64 i64)", &format!("(local {})", "i64 ".repeat(49_999)));
    let e = instrument_accesses(&wat::parse_str(&src).unwrap()).unwrap_err();
    assert!(matches!(e, ModelError::TooManyLocals { function: 0, locals: 50_000, added: 1, .. }), "{e}");
}

/// A module of the size of a large C++ program (46,000 functions, 70 MB of code, most of it
/// loads and stores of memory 0) instruments in time linear in its size: seconds, where a pass
/// quadratic in anything would take hours. The bound is generous (a loaded machine, a debug
/// build); the figure is printed.
#[test]
fn a_large_module_instruments_in_seconds() {
    use wasm_encoder::{
        CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction as I, MemArg,
        MemorySection, MemoryType, TypeSection, ValType,
    };
    const FUNCTIONS: u32 = 46_000;
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32, ValType::I64], [ValType::I64]);
    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    let m = |offset: u64, align: u32| MemArg { offset, align, memory_index: 0 };
    for f in 0..FUNCTIONS {
        functions.function(0);
        let mut body = Function::new([(2, ValType::I32)]);
        // ~1.6 KB: a run of loads, arithmetic and stores, one in twenty functions a copy and a
        // grow, one in ten none at all.
        if f % 10 != 9 {
            for k in 0..64u64 {
                body.instruction(&I::LocalGet(0))
                    .instruction(&I::LocalGet(0))
                    .instruction(&I::I64Load(m(k * 8, 3)))
                    .instruction(&I::LocalGet(1))
                    .instruction(&I::I64Add)
                    .instruction(&I::I64Store(m(k * 8 + 4096, 3)))
                    .instruction(&I::LocalGet(0))
                    .instruction(&I::I32Load8U(m(k, 0)))
                    .instruction(&I::LocalSet(2));
            }
            if f % 20 == 0 {
                body.instruction(&I::LocalGet(0))
                    .instruction(&I::LocalGet(2))
                    .instruction(&I::I32Const(16))
                    .instruction(&I::MemoryCopy { src_mem: 0, dst_mem: 0 })
                    .instruction(&I::I32Const(0))
                    .instruction(&I::MemoryGrow(0))
                    .instruction(&I::Drop);
            }
        } else {
            for _ in 0..400 {
                body.instruction(&I::LocalGet(1)).instruction(&I::I64Const(12_345)).instruction(&I::I64Mul).instruction(&I::LocalSet(1));
            }
        }
        body.instruction(&I::LocalGet(1)).instruction(&I::End);
        code.function(&body);
    }
    let mut memories = MemorySection::new();
    memories.memory(MemoryType { minimum: 1, maximum: None, memory64: false, shared: false, page_size_log2: None });
    let mut exports = ExportSection::new();
    exports.export("f0", ExportKind::Func, 0);
    let mut module = wasm_encoder::Module::new();
    module.section(&types).section(&functions).section(&memories).section(&exports).section(&code);
    let wasm = module.finish();
    assert!(wasm.len() > 60 << 20, "{} bytes", wasm.len());
    let start = std::time::Instant::now();
    let out = instrument_accesses(&wasm).unwrap();
    let took = start.elapsed();
    println!("{} MB, {FUNCTIONS} functions: instrumented in {took:?} ({} MB out)", wasm.len() >> 20, out.len() >> 20);
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
}
