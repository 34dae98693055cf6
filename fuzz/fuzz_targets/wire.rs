//! The wire decoder and both session state machines: any bytes, fed in two pieces, decode to
//! messages or a clean error, never a panic; a decoded message re-encodes (under every
//! compression) to bytes that decode to the same message; the state machines take any message
//! in any state with an answer, never a panic; and the device's protocol core, driven through
//! migrations as a driver would, takes every decoded message with no panic and never waits for
//! nothing; so does the clone's protocol core, whose session ends (never panics) on anything out
//! of place.
//! The property lives in fuzz/checks/wire.rs, which `cargo test` also replays the kept corpus through.
#![no_main]

#[path = "../checks/wire.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
