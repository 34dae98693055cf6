//! Memory a migrated call used and freed, handed out again zeroed on the device: `dirty` fills a
//! large buffer and frees it (on a clone, its pages are then free heap, and stay there); `main`
//! asks for a zeroed buffer of the same size (the same memory, zeroed: unchanged from what the
//! device held, so nothing to send) and `checksum` reads it, which must find zeros wherever it
//! runs. Offload `dirty,checksum`.

/// Fills `n` bytes, sums them, frees them.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn dirty(n: usize) -> u64 {
    let v = vec![0xA5u8; n];
    std::hint::black_box(&v).iter().map(|&b| u64::from(b)).sum()
}

/// A position-weighted sum of `n` bytes at `p`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn checksum(p: *const u8, n: usize) -> u64 {
    // SAFETY: `main` passes a live buffer of `n` bytes.
    let s = unsafe { std::slice::from_raw_parts(p, n) };
    s.iter().enumerate().map(|(i, &b)| u64::from(b) * (i as u64 + 1)).sum()
}

fn main() {
    let n = 4 << 20;
    let d = dirty(n);
    let z = vec![0u8; n];
    let c = checksum(z.as_ptr(), z.len());
    println!("dirty {d}\nzeroed {c}");
}
