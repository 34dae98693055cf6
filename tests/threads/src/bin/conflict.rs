//! A migrated call that reads what another thread writes while it is away: the worker announces
//! it is about to call `late_reader` and calls it; the main thread waits for the announcement,
//! waits a while longer (the call is long: it is away), and changes `CONFIG`, which the call
//! reads only at its end. Run locally, the call reads the new value (its computation takes far
//! longer than the wait); offloaded, the clone read the old one, so the device must find the
//! conflict and run the call again here. Output: the call's result, which depends on the value
//! (after a short call's, which finds the clone ready).
//!
//! `conflict ROUNDS [quiet|queries]`: with `quiet` the main thread changes nothing (no
//! conflict); with `queries` it changes nothing either, but meanwhile asks the time, its
//! arguments, its environment and random bytes (WASI calls that change nothing the call sees:
//! no conflict).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static CONFIG: AtomicU64 = AtomicU64::new(1);
static CALLING: AtomicBool = AtomicBool::new(false);

/// Mixes for `rounds`, then reads `CONFIG`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn late_reader(rounds: u64) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64;
    for i in 0..rounds {
        h = (h ^ i).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(11);
    }
    h ^ CONFIG.load(Ordering::SeqCst).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u64 = args.next().map_or(200_000_000, |a| a.parse().expect("rounds"));
    let mode = args.next();
    let quiet = matches!(mode.as_deref(), Some("quiet" | "queries"));
    let worker = std::thread::spawn(move || {
        // A short call first: offloaded, it finds the clone ready, so the long one leaves at
        // once (its state taken before the main thread's change).
        let warm = late_reader(1);
        CALLING.store(true, Ordering::SeqCst);
        let result = late_reader(rounds);
        // And a short call after it, on the session the conflict left (it must see the change).
        (warm, result, late_reader(1))
    });
    while !CALLING.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    if !quiet {
        CONFIG.store(7, Ordering::SeqCst);
    }
    if mode.as_deref() == Some("queries") {
        let now = std::time::SystemTime::now();
        let args = std::env::args().count();
        let home = std::env::var_os("HOME");
        // A HashMap's hasher asks for random bytes.
        let seeded: std::collections::HashMap<u8, u8> = [(1, 2)].into_iter().collect();
        std::hint::black_box((now, args, home, seeded));
    }
    let (warm, result, after) = worker.join().expect("worker");
    println!("warm-up {warm:016x}\nresult {result:016x}\nafter {after:016x}");
}
