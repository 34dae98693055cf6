//! A thread that spawns a thread, which spawns another, DEPTH deep; each level sends its result
//! back over a channel and joins its child. Also: a scoped set of threads borrowing the stack.
//! Output is schedule-independent. (No panic in a thread: wasm targets abort on panic.)
use std::sync::mpsc;

fn level(depth: u32, tx: mpsc::Sender<String>) -> u64 {
    let mine = (1..=depth as u64 * 1000).map(|x| x * x % 7919).sum::<u64>();
    let child = if depth > 1 {
        let tx2 = tx.clone();
        std::thread::spawn(move || level(depth - 1, tx2)).join().unwrap()
    } else {
        0
    };
    tx.send(format!("level {depth}: {mine}")).unwrap();
    mine + child
}

fn main() {
    let depth: u32 = std::env::args().nth(1).map_or(5, |a| a.parse().expect("depth"));
    let (tx, rx) = mpsc::channel();
    let total = std::thread::spawn(move || level(depth, tx)).join().unwrap();
    let mut lines: Vec<String> = rx.iter().collect();
    lines.sort();
    for l in &lines {
        println!("{l}");
    }
    println!("total {total}");
    let data: Vec<u32> = (0..1000).collect();
    let sums: Vec<u32> = std::thread::scope(|s| {
        let hs: Vec<_> = data.chunks(250).map(|c| s.spawn(move || c.iter().sum::<u32>())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!("scoped sums {sums:?}");
}
