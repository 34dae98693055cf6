//! A thread traps while the main thread waits: with no argument an unreachable instruction (as a
//! Rust `abort` is), with `deep` a recursion that exhausts the thread's stack. The run ends with
//! an error.
fn down(n: u64, v: &mut Vec<u64>) -> u64 {
    if n == u64::MAX {
        return 0;
    }
    v.push(n);
    let r = down(n + 1, v) + std::hint::black_box(n);
    v.pop();
    r
}

fn main() {
    let deep = std::env::args().nth(1).as_deref() == Some("deep");
    println!("main: started");
    std::thread::spawn(move || if deep { down(0, &mut Vec::new()); } else { std::process::abort() });
    loop {
        std::thread::park();
    }
}
