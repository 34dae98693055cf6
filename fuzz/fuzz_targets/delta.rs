//! The delta applier: any memory size, pages and globals either apply exactly (copied, or XORed
//! into what was agreed) or are refused with the instance untouched.
//! The property lives in fuzz/checks/delta.rs, which `cargo test` also replays the kept corpus through.
#![no_main]

#[path = "../checks/delta.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
