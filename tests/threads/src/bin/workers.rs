//! Workers whose one heavy function, `crunch`, is what a user offloads: N threads each crunch a
//! slice of one input the main thread made before starting them, and store a byte of their
//! result in a shared array (neighbouring bytes of one word, written by different threads),
//! while the main thread goes on counting until all are done. Output: each worker's result and
//! byte in worker order, and a total: the same whatever the schedule. On stderr, how often the
//! main thread went round its loop while the workers were busy (its progress).
//!
//! `workers THREADS LEN ROUNDS [nested|pipeline]`: with `nested`, each worker starts a thread of
//! its own that does the crunching (a thread that spawns a thread); with `pipeline`, the main
//! thread hands out 3 items per worker through a queue under a mutex and a condition variable,
//! and the workers take them until the queue says it is done (a producer and consumers).
//! Each worker also says on stderr how far the main thread got while its calls were away.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// One byte per worker, side by side.
static BYTES: [AtomicU8; 16] = [const { AtomicU8::new(0) }; 16];
static DONE: AtomicUsize = AtomicUsize::new(0);
/// How often the main thread went round its loop.
static PROGRESS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `crunch`, and how far the main thread got meanwhile.
fn timed(data: &[u32], rounds: u32, slot: usize, seen: &mut u64) -> u64 {
    let before = PROGRESS.load(Ordering::SeqCst);
    let h = crunch(data.as_ptr(), data.len(), rounds, slot);
    *seen = (*seen).max(PROGRESS.load(Ordering::SeqCst) - before);
    h
}

/// The queue of the pipeline: item numbers, and whether more will come.
struct Queue {
    items: std::sync::Mutex<(std::collections::VecDeque<usize>, bool)>,
    ready: std::sync::Condvar,
}

/// The heavy part: `rounds` passes of a mixing function over `data`; the result's low byte goes
/// to `BYTES[slot]`. Reads only its slice, writes only its byte; no allocation.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn crunch(data: *const u32, len: usize, rounds: u32, slot: usize) -> u64 {
    let data = unsafe { std::slice::from_raw_parts(data, len) };
    let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ slot as u64;
    for r in 0..rounds {
        for &x in data {
            h = (h ^ u64::from(x) ^ u64::from(r)).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(7);
        }
    }
    BYTES[slot].store(h as u8, Ordering::Relaxed);
    h
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(4, |a| a.parse().expect("threads"));
    let len: usize = args.next().map_or(100_000, |a| a.parse().expect("len"));
    let rounds: u32 = args.next().map_or(20, |a| a.parse().expect("rounds"));
    let mode = args.next();
    let args_mode = mode.as_deref();
    let nested = args_mode == Some("nested");
    assert!(threads <= BYTES.len(), "at most {} workers", BYTES.len());
    let input: Arc<Vec<u32>> = Arc::new((0..len as u32 * threads as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect());
    let pipeline = args_mode == Some("pipeline");
    let queue = Arc::new(Queue { items: std::sync::Mutex::new((Default::default(), false)), ready: std::sync::Condvar::new() });
    let results = Arc::new(std::sync::Mutex::new(vec![0u64; threads * 3]));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (input, queue, results) = (input.clone(), queue.clone(), results.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                let h = if pipeline {
                    // Items until the queue is empty and closed.
                    loop {
                        let item = {
                            let mut q = queue.items.lock().unwrap();
                            loop {
                                if let Some(i) = q.0.pop_front() {
                                    break Some(i);
                                }
                                if q.1 {
                                    break None;
                                }
                                q = queue.ready.wait(q).unwrap();
                            }
                        };
                        let Some(i) = item else { break 0 };
                        let w = i % threads;
                        let r = timed(&input[w * len..(w + 1) * len], rounds + i as u32, i % BYTES.len(), &mut seen);
                        results.lock().unwrap()[i] = r;
                    }
                } else {
                    let work = move || {
                        let mut seen = 0;
                        let h = timed(&input[t * len..(t + 1) * len], rounds, t, &mut seen);
                        (h, seen)
                    };
                    let (h, s) = if nested { std::thread::spawn(work).join().expect("inner worker") } else { work() };
                    seen = s;
                    h
                };
                eprintln!("worker {t}: the main thread went round {seen} times while a call was away");
                DONE.fetch_add(1, Ordering::SeqCst);
                h
            })
        })
        .collect();
    if pipeline {
        for i in 0..threads * 3 {
            queue.items.lock().unwrap().0.push_back(i);
            queue.ready.notify_one();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        queue.items.lock().unwrap().1 = true;
        queue.ready.notify_all();
    }
    // The main thread keeps running while the workers are away.
    let mut progress = 0u64;
    while DONE.load(Ordering::SeqCst) < threads {
        progress += 1;
        PROGRESS.store(progress, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut total = 0u64;
    for (t, h) in handles.into_iter().enumerate() {
        let r = h.join().expect("worker panicked");
        if !pipeline {
            println!("worker {t}: {r:016x} byte {:02x}", BYTES[t].load(Ordering::Relaxed));
        }
        total ^= r;
    }
    if pipeline {
        for (i, r) in results.lock().unwrap().iter().enumerate() {
            println!("item {i}: {r:016x}");
            total ^= r;
        }
    }
    println!("total {total:016x}");
    eprintln!("main progress {progress}");
}
