//! The wire decoder and both session state machines: any bytes, fed in two pieces, decode to
//! messages or a clean error, never a panic; a decoded message re-encodes (under every
//! compression) to bytes that decode to the same message; the state machines take any message
//! in any state with an answer, never a panic.
#![no_main]

use clonecloud_wire::{CloneSession, Compression, Decoder, DeviceSession, Environment, from_bytes, to_bytes_with};
use libfuzzer_sys::fuzz_target;

const MAX_FRAME: usize = 1 << 22;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let cut = (split as usize * data.len()) / 255;
    let mut decoder = Decoder::new(MAX_FRAME);
    let mut clone = CloneSession::new();
    let mut device = DeviceSession::new([7; 16], 1, 0, Environment::default());
    let _ = device.hello();
    for piece in [&data[..cut], &data[cut..]] {
        decoder.feed(piece);
        loop {
            match decoder.next_message() {
                Ok(Some(m)) => {
                    for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
                        let again = from_bytes(&to_bytes_with(&m, c), usize::MAX).expect("a re-encoded message decodes");
                        assert_eq!(again, m, "re-encoded under {c:?}");
                    }
                    let _ = clone.on_message(m.clone());
                    let _ = device.on_message(m);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
});
