//! Reads all of stdin and prints it upper-cased with a byte count: input with a side effect (it
//! is consumed), which must be read exactly once however the program runs. Input starting with
//! `nap` makes it sleep a moment after reading; input starting with `crash` makes it panic after
//! reading (a trap, which abandons a migration: the device runs the call again itself).
use std::io::Read;

#[inline(never)]
fn shout(text: &str) -> String {
    text.to_uppercase()
}

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin is text");
    if input.starts_with("nap") {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if input.starts_with("crash") {
        panic!("crash requested after reading {} bytes", input.len());
    }
    println!("read {} bytes", input.len());
    print!("{}", shout(&input));
}
