//! Threads writing neighbouring bytes of the same page: thread t owns bytes t, t+N, t+2N, ... of
//! one 4 KiB buffer and writes each ROUNDS times; no byte is shared, every page is. Output: the
//! buffer's checksum, which any schedule gives.
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

fn main() {
    let threads: usize = std::env::args().nth(1).map_or(4, |a| a.parse().expect("threads"));
    let rounds: u32 = std::env::args().nth(2).map_or(2_000, |a| a.parse().expect("rounds"));
    let buf: Arc<Vec<AtomicU8>> = Arc::new((0..4096).map(|_| AtomicU8::new(0)).collect());
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let buf = buf.clone();
            std::thread::spawn(move || {
                for r in 0..rounds {
                    for i in (t..buf.len()).step_by(threads) {
                        let v = buf[i].load(Ordering::Relaxed);
                        buf[i].store(v.wrapping_mul(31).wrapping_add((r as u8) ^ (i as u8)), Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let sum = buf.iter().enumerate().fold(0u64, |acc, (i, b)| acc.wrapping_mul(1_000_003).wrapping_add(b.load(Ordering::Relaxed) as u64 ^ i as u64));
    println!("{threads} threads x {rounds} rounds: checksum {sum:016x}");
}
