//! A producer and consumers over a Mutex and a Condvar: the producer pushes ITEMS numbers into a
//! bounded queue, CONSUMERS threads pop and hash them. Output: how many items and the sum of
//! their hashes (order-independent), and per consumer nothing (which consumer got what depends on
//! the schedule).
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

struct Queue {
    items: Mutex<(VecDeque<u64>, bool)>,
    changed: Condvar,
}

fn hash(x: u64) -> u64 {
    let mut h = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

fn main() {
    let items: u64 = std::env::args().nth(1).map_or(20_000, |a| a.parse().expect("items"));
    let consumers: usize = std::env::args().nth(2).map_or(3, |a| a.parse().expect("consumers"));
    let q = Arc::new(Queue { items: Mutex::new((VecDeque::new(), false)), changed: Condvar::new() });
    let workers: Vec<_> = (0..consumers)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let (mut n, mut sum) = (0u64, 0u64);
                loop {
                    let mut g = q.items.lock().unwrap();
                    while g.0.is_empty() && !g.1 {
                        g = q.changed.wait(g).unwrap();
                    }
                    match g.0.pop_front() {
                        Some(x) => {
                            drop(g);
                            q.changed.notify_all();
                            n += 1;
                            sum = sum.wrapping_add(hash(x));
                        }
                        None => return (n, sum),
                    }
                }
            })
        })
        .collect();
    for x in 0..items {
        let mut g = q.items.lock().unwrap();
        while g.0.len() >= 64 {
            g = q.changed.wait(g).unwrap();
        }
        g.0.push_back(x);
        drop(g);
        q.changed.notify_all();
    }
    q.items.lock().unwrap().1 = true;
    q.changed.notify_all();
    let (mut n, mut sum) = (0u64, 0u64);
    for w in workers {
        let (a, b) = w.join().unwrap();
        n += a;
        sum = sum.wrapping_add(b);
    }
    println!("consumed {n} items, hash sum {sum:016x}");
}
