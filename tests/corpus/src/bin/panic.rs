//! Prints, then panics: the panic message goes to stderr and the module traps.
fn checked_div(a: i32, b: i32) -> i32 {
    if b == 0 {
        panic!("division of {a} by zero");
    }
    a / b
}

fn main() {
    println!("10 / 2 = {}", checked_div(10, 2));
    let zero = std::env::args().count() as i32 - 1;
    println!("10 / {zero} = {}", checked_div(10, zero));
}
