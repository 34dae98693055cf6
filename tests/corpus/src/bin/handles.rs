//! File handles across functions: `main` holds a file open and passes it to `count_lines`;
//! `open_own` opens and closes a file of its own and reports the descriptor number it got;
//! `open_for_caller` opens a file, reads into it and returns it still open (the caller goes on
//! reading and appending through it); `close_it` closes a handle its caller opened. The
//! descriptor numbers printed show that each side hands out the numbers the other would.
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
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

#[inline(never)]
fn open_for_caller(path: &str) -> File {
    let mut f = OpenOptions::new().read(true).append(true).open(path).expect("the file exists");
    let mut head = [0u8; 3];
    f.read_exact(&mut head).expect("three bytes");
    f
}

#[inline(never)]
fn close_it(f: File) -> i32 {
    let fd = f.as_raw_fd();
    drop(f);
    fd
}

fn main() {
    let mut held = File::open("/data/input.txt").expect("input.txt exists");
    println!("held descriptor {}", held.as_raw_fd());
    let (fd, len) = open_own("/data/log.txt");
    println!("own descriptor {fd}, {len} bytes");
    println!("{} lines through the held handle", count_lines(&mut held));
    let mut kept = open_for_caller("/data/log.txt");
    println!("kept descriptor {} at offset {}", kept.as_raw_fd(), kept.stream_position().expect("position"));
    let mut rest = Vec::new();
    kept.read_to_end(&mut rest).expect("the rest");
    println!("{} more bytes through the kept handle", rest.len());
    kept.write_all(b"appended through a handle\n").expect("append");
    println!("offset after the append {}", kept.stream_position().expect("position"));
    println!("closed descriptor {}", close_it(held));
    let again = File::open("/data/input.txt").expect("input.txt exists");
    println!("reopened as descriptor {}", again.as_raw_fd());
}
