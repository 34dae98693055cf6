//! Threads share the descriptor table: the main thread opens a file and hands it to a worker,
//! which reads it; each of N workers writes a file of its own; then the main thread lists the
//! directory (sorted) with sizes. The directory is the first argument.
use std::io::{Read, Write};

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: files DIR"));
    std::fs::write(dir.join("input.txt"), "the quick brown fox\n".repeat(100)).unwrap();
    let mut f = std::fs::File::open(dir.join("input.txt")).unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        (s.len(), s.lines().count())
    });
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut out = std::fs::File::create(dir.join(format!("out_{t}.txt"))).unwrap();
                for i in 0..(t + 1) * 50 {
                    writeln!(out, "thread {t} line {i}").unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let (bytes, lines) = reader.join().unwrap();
    println!("read {bytes} bytes, {lines} lines in another thread");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap()).map(|e| (e.file_name().into_string().unwrap(), e.metadata().unwrap().len())).collect();
    names.sort();
    for (n, len) in names {
        println!("{n} {len}");
    }
}
