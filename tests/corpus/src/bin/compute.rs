//! A compute-heavy program made of many small functions: primes, sorting, hashing, matrices.
//! `compute [SCALE]` (default 1) multiplies the work.

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c
}

fn collatz_len(mut n: u64) -> u32 {
    let mut steps = 0;
    while n != 1 {
        n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
        steps += 1;
    }
    steps
}

fn main() {
    let scale: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let primes = (0..20_000 * scale).filter(|&n| is_prime(n)).count();
    println!("primes below {}: {primes}", 20_000 * scale);

    let mut state = 0x2545F4914F6CDD1D;
    let mut v: Vec<u64> = (0..200_000 * scale).map(|_| next_random(&mut state) % 1_000_000).collect();
    v.sort_unstable();
    v.dedup();
    println!("distinct randoms: {} checksum {:016x}", v.len(), fnv1a(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()));

    let n = 60 + 10 * scale as usize;
    let a: Vec<f64> = (0..n * n).map(|i| ((i * 7) % 13) as f64 / 13.0).collect();
    let b: Vec<f64> = (0..n * n).map(|i| ((i * 5) % 11) as f64 / 11.0).collect();
    let c = matmul(&a, &b, n);
    println!("matrix {n}x{n} trace {:.9}", (0..n).map(|i| c[i * n + i]).sum::<f64>());

    let (best, len) = (1..100_000 * scale).map(|n| (n, collatz_len(n))).max_by_key(|&(_, l)| l).unwrap();
    println!("longest collatz below {}: {best} ({len} steps)", 100_000 * scale);
}
