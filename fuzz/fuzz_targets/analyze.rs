//! The analyzer: any valid module (wasm-smith) is analyzed under the built-in policy and under a
//! policy parsed from the input (or refused with an error), never a panic; candidates are never
//! pinned, and every pinned function's path ends at a device-only import.
//! The property lives in fuzz/checks/analyze.rs, which `cargo test` also replays the kept corpus through.
#![no_main]

#[path = "../checks/analyze.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
