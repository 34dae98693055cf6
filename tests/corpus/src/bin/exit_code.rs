//! Prints, then exits with a non-zero code without returning from main.
fn main() {
    print!("about to exit with 42");
    eprintln!("exiting");
    std::process::exit(42);
}
