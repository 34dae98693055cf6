//! A sleeping thread does not stop the others: a worker says it is going to sleep for a minute
//! and sleeps; the main thread, once told, waits a moment, prints, and exits, ending the run
//! (and the sleeper) at once.
use std::sync::mpsc;
use std::time::Duration;

fn main() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(60));
        println!("the sleeper woke up");
    });
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    println!("main: done while the worker sleeps");
}
