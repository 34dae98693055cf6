//! Prints to stdout and stderr, through direct calls, recursion, closures and trait objects
//! (which compile to `call_indirect`).
use std::collections::BTreeMap;
use std::io::Write;

trait Shape {
    fn area(&self) -> f64;
    fn name(&self) -> String;
}
struct Circle(f64);
struct Rect(f64, f64);
impl Shape for Circle {
    fn area(&self) -> f64 {
        std::f64::consts::PI * self.0 * self.0
    }
    fn name(&self) -> String {
        format!("circle r={}", self.0)
    }
}
impl Shape for Rect {
    fn area(&self) -> f64 {
        self.0 * self.1
    }
    fn name(&self) -> String {
        format!("rect {}x{}", self.0, self.1)
    }
}

fn fib(n: u32) -> u64 {
    if n < 2 { n as u64 } else { fib(n - 1) + fib(n - 2) }
}

fn main() {
    println!("hello from wasm");
    let shapes: Vec<Box<dyn Shape>> = vec![Box::new(Circle(1.5)), Box::new(Rect(2.0, 3.5)), Box::new(Circle(0.25))];
    for s in &shapes {
        println!("{:<14} area {:.6}", s.name(), s.area());
    }
    let fibs: Vec<u64> = (0..25).map(fib).collect();
    println!("fib: {fibs:?}");
    let mut words = BTreeMap::new();
    for w in "the quick brown fox jumps over the lazy dog the end".split(' ') {
        *words.entry(w).or_insert(0) += 1;
    }
    println!("words: {words:?}");
    let apply = |f: &dyn Fn(i64) -> i64, x| f(x);
    println!("closures: {} {}", apply(&|x| x * 3, 14), apply(&|x| x - 100, 1));
    eprintln!("a line on stderr");
    let mut err = std::io::stderr();
    write!(err, "stderr without newline").unwrap();
    print!("stdout without newline");
}
