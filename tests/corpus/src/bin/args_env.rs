//! Prints its arguments and environment.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    println!("argc={}", args.len());
    for (i, a) in args.iter().enumerate() {
        println!("arg[{i}]={a:?}");
    }
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (k, v) in &vars {
        println!("env {k}={v:?}");
    }
    match std::env::var("CC_MISSING") {
        Ok(v) => println!("CC_MISSING set to {v}"),
        Err(e) => println!("CC_MISSING: {e}"),
    }
    let n: i64 = std::env::var("CC_NUMBER").ok().and_then(|v| v.parse().ok()).unwrap_or(-1);
    println!("CC_NUMBER squared: {}", n * n);
}
