//! A function that needs far more memory than a phone has, and returns little: `big(mib)` fills
//! `mib` MiB with a pattern, reads it back into a checksum and frees it. For `run --device-memory`
//! (issue 19): offloaded, the pages stay on the clone (freed heap does not come back), so the
//! device's resident memory stays small. `bigmem [MIB]` (default 1024) prints the checksum.

/// Fills `mib` MiB, checksums them, frees them.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn big(mib: usize) -> u64 {
    let n = mib << 20;
    let mut v = vec![0u8; n];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) as u8;
    }
    // Every 4 KiB page's first byte, weighted: each page is read once.
    std::hint::black_box(&v).iter().step_by(4096).enumerate().map(|(k, &b)| u64::from(b) * (k as u64 + 1)).sum()
}

fn main() {
    let mib: usize = std::env::args().nth(1).map_or(1024, |a| a.parse().expect("MIB"));
    println!("big {mib} MiB: checksum {}", big(mib));
}
