//! File handles across functions: `main` holds a file open and passes it to `count_lines`;
//! `open_own` opens and closes a file of its own and reports the descriptor number it got.
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;

#[inline(never)]
fn count_lines(f: &mut File) -> usize {
    let mut s = String::new();
    f.read_to_string(&mut s).expect("input.txt is text");
    s.lines().count()
}

#[inline(never)]
fn open_own(path: &str) -> (i32, u64) {
    let f = File::open(path).expect("the file exists");
    (f.as_raw_fd(), f.metadata().expect("metadata").len())
}

fn main() {
    let mut held = File::open("/data/input.txt").expect("input.txt exists");
    println!("held descriptor {}", held.as_raw_fd());
    let (fd, len) = open_own("/data/log.txt");
    println!("own descriptor {fd}, {len} bytes");
    println!("{} lines through the held handle", count_lines(&mut held));
}
