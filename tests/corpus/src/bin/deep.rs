//! Deep recursion: a recursive-descent parser over nested brackets and a non-tail recursive
//! sum. `deep [DEPTH]` (default 3000). Every level is a call, so with every function a
//! migration point answered by the host, every level also crosses the host.
#[inline(never)]
fn sum_to(n: u64) -> u64 {
    if n == 0 { 0 } else { n + sum_to(n - 1) }
}

/// Parses `[[[...]]]` with numbers inside, returning (depth, sum of numbers) or an error.
#[inline(never)]
fn parse(input: &[u8], pos: &mut usize, depth: usize) -> Result<(usize, u64), String> {
    let mut max_depth = depth;
    let mut sum = 0;
    while *pos < input.len() {
        match input[*pos] {
            b'[' => {
                *pos += 1;
                let (d, s) = parse(input, pos, depth + 1)?;
                max_depth = max_depth.max(d);
                sum += s;
            }
            b']' => {
                *pos += 1;
                return Ok((max_depth, sum));
            }
            c if c.is_ascii_digit() => {
                sum += (c - b'0') as u64;
                *pos += 1;
            }
            c => return Err(format!("unexpected byte {c:#x} at {pos}")),
        }
    }
    if depth == 0 { Ok((max_depth, sum)) } else { Err("unclosed bracket".into()) }
}

fn main() {
    let depth: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3000);
    println!("sum_to({depth}) = {}", sum_to(depth as u64));
    let mut text = Vec::new();
    for i in 0..depth {
        text.push(b'[');
        text.push(b'0' + (i % 10) as u8);
    }
    text.extend(std::iter::repeat_n(b']', depth));
    let mut pos = 0;
    match parse(&text, &mut pos, 0) {
        Ok((d, s)) => println!("parsed depth {d}, digit sum {s}"),
        Err(e) => println!("parse error: {e}"),
    }
}
