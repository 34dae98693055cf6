//! The module parser and the rewriter: any bytes (raw, or a valid module wasm-smith makes from
//! them) parse or fail with an error; a parsed module rewritten with every possible point
//! validates (the rewriter's promise) or fails with an error, never a panic.
//! The property lives in fuzz/checks/rewrite.rs, which `cargo test` also replays the kept corpus through.
#![no_main]

#[path = "../checks/rewrite.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
