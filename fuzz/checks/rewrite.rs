//! The module parser and the rewriter: any bytes (raw, or a valid module wasm-smith makes from
//! them) parse or fail with an error; a parsed module rewritten with every possible point
//! validates (the rewriter's promise) or fails with an error, never a panic.
//!
//! Shared by the fuzz target of the same name (fuzz/fuzz_targets/) and by the replay of its kept
//! corpus under `cargo test` (crates/cli/tests/fuzz_corpus.rs).

use arbitrary::Unstructured;

/// One input: panics (the fuzzer's crash) when the property does not hold.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let wasm = if mode % 4 == 0 {
        rest.to_vec()
    } else {
        let mut u = Unstructured::new(rest);
        match wasm_smith::Module::new(config(), &mut u) {
            Ok(m) => m.to_bytes(),
            Err(_) => return,
        }
    };
    let Ok(module) = clonecloud_model::Module::parse(&wasm) else { return };
    let points = module.all_points();
    if let Ok(out) = clonecloud_model::rewrite(&module, &wasm, &points) {
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::default())
            .validate_all(&out.wasm)
            .expect("a rewritten module validates");
        assert_eq!(out.points.len(), points.len());
        let functions: Vec<u32> = out.points.iter().map(|p| p.function).collect();
        assert_eq!(clonecloud_model::rewritten_points(&out.wasm), Some(functions), "the points section");
    }
}

fn config() -> wasm_smith::Config {
    wasm_smith::Config { max_memories: 2, max_tables: 2, max_funcs: 40, max_imports: 10, ..Default::default() }
}
