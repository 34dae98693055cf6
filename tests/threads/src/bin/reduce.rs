//! A parallel reduction with a join: N threads each sum the squares of their slice of 0..LEN
//! (mod a prime), the main thread joins them and combines. Output: the per-thread partial sums
//! in thread order and the total, the same whatever the schedule.
fn main() {
    let threads: u64 = std::env::args().nth(1).map_or(4, |a| a.parse().expect("threads"));
    let len: u64 = std::env::args().nth(2).map_or(2_000_000, |a| a.parse().expect("len"));
    const P: u64 = 1_000_000_007;
    let chunk = len.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let (lo, hi) = (t * chunk, ((t + 1) * chunk).min(len));
                (lo..hi).fold(0u64, |acc, i| (acc + i % P * (i % P)) % P)
            })
        })
        .collect();
    let mut total = 0;
    for (t, h) in handles.into_iter().enumerate() {
        let part = h.join().expect("worker panicked");
        println!("thread {t}: {part}");
        total = (total + part) % P;
    }
    println!("total {total}");
}
