//! A thread ends the process: `std::process::exit(CODE)` from a spawned thread while the main
//! thread waits forever. The process's exit code is CODE, and what main printed before is there.
fn main() {
    let code: i32 = std::env::args().nth(1).map_or(7, |a| a.parse().expect("code"));
    println!("main: started");
    std::thread::spawn(move || {
        println!("worker: exiting with {code}");
        std::process::exit(code);
    });
    loop {
        std::thread::park();
    }
}
