//! Properties of the rewriter over the whole test corpus: for random sets of points the output
//! validates (checked by wasmparser's validator, independently of the rewriter's own check),
//! keeps every original import, export and body (operator for operator, indices remapped), and
//! lays the added functions, imports and exports out as documented.

#[path = "../../../tests/support/corpus.rs"]
mod corpus;

use clonecloud_model::{
    BYPASS_EXPORT, FLAGS_EXPORT, FunctionKind, LOCALS_EXPORT, Module, Rewritten, rewrite, rewritten_points,
};
use wasmparser::{Operator, Validator, WasmFeatures};

fn operators(wasm: &[u8], module: &Module, f: u32, remap: impl Fn(u32) -> u32) -> Vec<String> {
    let FunctionKind::Defined {
        body_offset,
        body_size,
    } = module.functions[f as usize].kind
    else {
        panic!("#{f} is an import")
    };
    let body = wasmparser::FunctionBody::new(wasmparser::BinaryReader::new(
        &wasm[body_offset..body_offset + body_size],
        body_offset,
    ));
    let mut out = Vec::new();
    let mut locals = body.get_locals_reader().unwrap();
    for _ in 0..locals.get_count() {
        out.push(format!("{:?}", locals.read().unwrap()));
    }
    let mut ops = body.get_operators_reader().unwrap();
    while !ops.eof() {
        let op = match ops.read().unwrap() {
            Operator::Call { function_index } => Operator::Call {
                function_index: remap(function_index),
            },
            Operator::ReturnCall { function_index } => Operator::ReturnCall {
                function_index: remap(function_index),
            },
            Operator::RefFunc { function_index } => Operator::RefFunc {
                function_index: remap(function_index),
            },
            op => op,
        };
        out.push(format!("{op:?}"));
    }
    out
}

/// Everything the rewrite promises, checked from the outside.
fn check(name: &str, wasm: &[u8], module: &Module, points: &[u32]) -> Rewritten {
    let out = rewrite(module, wasm, points).unwrap_or_else(|e| panic!("{name} {points:?}: {e}"));
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(&out.wasm)
        .unwrap_or_else(|e| panic!("{name} {points:?}: rewritten module does not validate: {e}"));
    let new = Module::parse(&out.wasm).unwrap();
    let (n, k) = (module.imported_functions, out.points.len() as u32);
    let t = out.migrate_imports.len() as u32;
    // Shifted by the migration imports.
    let sorted: Vec<u32> = out.points.iter().map(|p| p.function).collect();
    let remap = |f: u32| if f < n { f } else { f + t };

    // Imports: the originals in order, then one migration import per type of the points, each
    // taking the point's parameters and its ordinal.
    assert_eq!(
        new.imports[..module.imports.len()],
        module.imports[..],
        "{name}"
    );
    let added: Vec<String> = new.imports[module.imports.len()..]
        .iter()
        .map(|i| format!("{}.{}", i.module, i.name))
        .collect();
    let mut types: Vec<u32> = points
        .iter()
        .map(|&p| module.functions[p as usize].type_index)
        .collect();
    types.sort_unstable();
    types.dedup();
    let want: Vec<String> = types
        .iter()
        .map(|t| format!("clonecloud.migrate.t{t}"))
        .collect();
    assert_eq!(added, want, "{name}");
    for (u, &ty) in types.iter().enumerate() {
        let import = &new.functions[(n + u as u32) as usize];
        let (old, new_ty) = (&module.types[ty as usize], &new.types[import.type_index as usize]);
        assert_eq!(new_ty.params[..old.params.len()], old.params[..], "{name}");
        assert_eq!(new_ty.params[old.params.len()..], [wasmparser::ValType::I32], "{name}");
        assert_eq!(new_ty.results, old.results, "{name}");
    }
    assert_eq!(
        new.functions.len(),
        module.functions.len() + (t + n) as usize,
        "{name}"
    );

    // Exports: the originals (functions shifted), then the reserved ones.
    for (old, new_e) in module.exports.iter().zip(&new.exports) {
        assert_eq!(old.name, new_e.name);
        let idx = if old.kind == clonecloud_model::ExportKind::Func {
            remap(old.index)
        } else {
            old.index
        };
        assert_eq!(
            (old.kind, idx),
            (new_e.kind, new_e.index),
            "{name}: export {}",
            old.name
        );
    }
    assert!(
        new.exports[module.exports.len()..]
            .iter()
            .all(|e| e.name.starts_with("__cc_"))
    );
    // Per point, nothing is exported: the bodies are the elements of one table added after the
    // module's own, the flags the bytes of one memory added after the module's own.
    let export = |name: &str| new.exports.iter().find(|e| e.name == name);
    if k == 0 {
        assert!(export(LOCALS_EXPORT).is_none() && export(FLAGS_EXPORT).is_none());
        assert_eq!(new.tables.len(), module.tables.len());
        assert_eq!(new.memories.len(), module.memories.len());
    } else {
        let table = export(LOCALS_EXPORT).expect("the table of bodies");
        assert_eq!(table.index as usize, module.tables.len(), "{name}");
        assert_eq!(new.tables.len(), module.tables.len() + 1);
        let memory = export(FLAGS_EXPORT).expect("the memory of flags");
        assert_eq!(memory.index as usize, module.memories.len(), "{name}");
        assert_eq!(new.memories.len(), module.memories.len() + 1);
        let segment = new.elements.last().expect("the bodies' segment");
        assert_eq!(segment.table, Some(table.index));
        let bodies: Vec<u32> = out.points.iter().map(|p| p.index).collect();
        assert_eq!(segment.functions, bodies, "{name}");
        let bypass = export(BYPASS_EXPORT).expect("the bypass global");
        assert_eq!(bypass.index as usize, module.globals.len(), "{name}");
        assert_eq!(new.globals.len(), module.globals.len() + 1);
    }
    assert_eq!(new.elements.len(), module.elements.len() + usize::from(k > 0));
    assert_eq!(rewritten_points(&out.wasm), Some(sorted.clone()), "{name}");
    for (j, p) in out.points.iter().enumerate() {
        assert_eq!(p.ordinal as usize, j);
        assert_eq!(
            new.imports[module.imports.len() + (p.import - n) as usize].name,
            format!("migrate.t{}", p.type_index)
        );
        // The point keeps its place, type and locals; its code is the check of its flag (which
        // calls its migration import) and then the original code.
        assert_eq!(p.index, remap(p.function));
        assert_eq!(
            new.functions[p.index as usize].type_index,
            module.functions[p.function as usize].type_index
        );
        let old = operators(wasm, module, p.function, remap);
        let new_ops = operators(&out.wasm, &new, p.index, |f| f);
        let params = module.types[p.type_index as usize].params.len();
        let check = 14 + params;
        let locals = old.iter().take_while(|o| o.starts_with('(')).count();
        assert_eq!(new_ops.len(), old.len() + check, "{name}: #{}", p.function);
        assert_eq!(new_ops[..locals], old[..locals], "{name}: locals of #{}", p.function);
        assert_eq!(new_ops[locals + check..], old[locals..], "{name}: code of #{}", p.function);
        let prologue = &new_ops[locals..locals + check];
        assert_eq!(prologue[0], format!("I32Const {{ value: {} }}", p.ordinal));
        assert!(prologue[1].starts_with("I32Load8U"), "{name}: {prologue:?}");
        assert!(
            prologue.contains(&format!("Call {{ function_index: {} }}", p.import)),
            "{name}: {prologue:?}"
        );
    }
    for g in module.globals.iter().filter(|g| g.mutable) {
        assert!(
            new.exports
                .iter()
                .any(|e| e.name == format!("__cc_global.{}", g.index)),
            "{name}: global {}",
            g.index
        );
    }
    // Functions that are not points keep their code.
    for f in module
        .defined_functions()
        .filter(|f| !points.contains(&f.index))
    {
        assert_eq!(
            operators(&out.wasm, &new, remap(f.index), |f| f),
            operators(wasm, module, f.index, remap),
            "{name}: #{}",
            f.index
        );
    }
    // Names survive.
    for p in &out.points {
        let original = &module.functions[p.function as usize].name;
        assert_eq!(&new.functions[p.index as usize].name, original);
    }
    out
}

fn modules() -> Vec<(&'static str, Vec<u8>, Module)> {
    corpus::corpus()
        .iter()
        .map(|g| {
            let wasm = std::fs::read(&g.path).unwrap();
            let module = Module::parse(&wasm).unwrap();
            (g.name, wasm, module)
        })
        .collect()
}

/// xorshift64*: a seeded generator, so a failure names a set of points that can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn random_subsets_of_every_corpus_module_validate() {
    let modules = modules();
    let mut rng = Rng(0x00C1_0DEC_10D5);
    for (name, wasm, module) in &modules {
        let candidates = module.all_points();
        for case in 0..32 {
            // Densities from empty to every function, so sparse and dense sets both occur.
            let per_mille = [0, 5, 50, 250, 500, 900, 1000][case % 7];
            let points: Vec<u32> = candidates
                .iter()
                .copied()
                .filter(|_| rng.next() % 1000 < per_mille)
                .collect();
            check(name, wasm, module, &points);
        }
    }
}

#[test]
fn every_function_of_the_largest_module() {
    let modules = modules();
    let (name, wasm, module) = modules.iter().max_by_key(|(_, w, _)| w.len()).unwrap();
    assert!(
        wasm.len() >= 1_000_000,
        "{name} is the largest module but only {} bytes",
        wasm.len()
    );
    let all = module.all_points();
    assert_eq!(
        all.len(),
        module.defined_functions().count(),
        "Rust code has no reference-typed functions"
    );
    let out = check(name, wasm, module, &all);
    assert_eq!(out.points.len(), all.len());
    // No debug sections survive; the name section does.
    let customs: Vec<String> = wasmparser::Parser::new(0)
        .parse_all(&out.wasm)
        .filter_map(|p| match p.unwrap() {
            wasmparser::Payload::CustomSection(c) => Some(c.name().to_string()),
            _ => None,
        })
        .collect();
    assert!(
        customs.iter().any(|c| c == "name") && !customs.iter().any(|c| c.starts_with(".debug")),
        "{customs:?}"
    );
}

/// A module whose memory 0 is shared (a wasi-threads module): its waits on that memory become
/// calls to the two wait imports, added after the migration imports; everything else is as for
/// any module, shifted by two more imports.
#[test]
fn waits_on_a_shared_memory_become_host_calls() {
    let wasm = wat::parse_str(
        r#"(module
          (import "env" "memory" (memory 1 4 shared))
          (import "wasi_snapshot_preview1" "sched_yield" (func $yield (result i32)))
          (memory $other 1 1 shared)
          (func $park (export "park") (param $a i32) (result i32)
            (memory.atomic.wait32 offset=8 (local.get $a) (i32.const 0) (i64.const -1))
            (memory.atomic.wait64 (local.get $a) (i64.const 0) (i64.const 5))
            i32.add
            (memory.atomic.wait32 $other (local.get $a) (i32.const 0) (i64.const 0))
            i32.add
            (drop (call $yield)))
          (func $work (export "work") (param i32) (result i32) (call $park (local.get 0))))"#,
    )
    .unwrap();
    let module = Module::parse(&wasm).unwrap();
    assert!(clonecloud_model::host_waits(&module));
    let work = module.exports.iter().find(|e| e.name == "work").unwrap().index;
    let park = module.exports.iter().find(|e| e.name == "park").unwrap().index;
    let out = rewrite(&module, &wasm, &[work]).unwrap();
    Validator::new_with_features(WasmFeatures::default()).validate_all(&out.wasm).unwrap();
    let new = Module::parse(&out.wasm).unwrap();
    let added: Vec<String> = new.imports[module.imports.len()..].iter().map(|i| format!("{}.{}", i.module, i.name)).collect();
    let t = module.functions[work as usize].type_index;
    assert_eq!(added, [format!("clonecloud.migrate.t{t}"), "clonecloud.wait32".into(), "clonecloud.wait64".into()]);
    let n = module.imported_functions;
    let (wait32, wait64) = (n + 1, n + 2);
    let ty = |f: u32| &new.types[new.functions[f as usize].type_index as usize];
    use wasmparser::ValType::{I32, I64};
    assert_eq!((ty(wait32).params.as_slice(), ty(wait32).results.as_slice()), (&[I32, I32, I64, I32][..], &[I32][..]));
    assert_eq!((ty(wait64).params.as_slice(), ty(wait64).results.as_slice()), (&[I32, I64, I64, I32][..], &[I32][..]));
    // Defined functions moved past the three imports, the point included.
    assert_eq!(out.points[0].index, work + 3);
    let ops = operators(&out.wasm, &new, park + 3, |f| f);
    let at = |needle: &str| ops.iter().position(|o| o == needle).unwrap_or_else(|| panic!("{needle} not in {ops:?}"));
    // The offset goes as the last argument; the call replaces the instruction.
    let call32 = at(&format!("Call {{ function_index: {wait32} }}"));
    assert_eq!(ops[call32 - 1], "I32Const { value: 8 }");
    let call64 = at(&format!("Call {{ function_index: {wait64} }}"));
    assert_eq!(ops[call64 - 1], "I32Const { value: 0 }");
    // A wait on another memory stays an instruction; the call to the WASI import is unchanged.
    assert_eq!(ops.iter().filter(|o| o.starts_with("MemoryAtomicWait")).count(), 1, "{ops:?}");
    assert!(ops.iter().any(|o| o.starts_with("MemoryAtomicWait32") && o.contains("memory: 1")), "{ops:?}");
    assert!(ops.contains(&"Call { function_index: 0 }".to_string()), "{ops:?}");

    // A module whose memory is not shared keeps its waits (and gets no wait imports).
    let plain = wat::parse_str(
        r#"(module (memory 1 1)
          (func (export "f") (result i32) (memory.atomic.wait32 (i32.const 0) (i32.const 1) (i64.const 0))))"#,
    )
    .unwrap();
    let module = Module::parse(&plain).unwrap();
    assert!(!clonecloud_model::host_waits(&module));
    let out = rewrite(&module, &plain, &[0]).unwrap();
    let new = Module::parse(&out.wasm).unwrap();
    assert_eq!(new.imports.len(), 1);
    assert!(operators(&out.wasm, &new, 1, |f| f).iter().any(|o| o.starts_with("MemoryAtomicWait32")));
}
