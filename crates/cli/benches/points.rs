//! Benchmark of the foundation, measured side by side in one run (this machine is shared and
//! noisy, so only ratios taken in the same run mean anything):
//!
//! 1. run time of the compute-heavy guest rewritten with every function a migration point (flag
//!    mode) divided by the original's (goal: <= 1.02), rounds interleaved;
//! 2. rewrite time (parse + rewrite + validate) of the largest guest (over 1 MB), all points.
//!
//! `cargo bench -p clonecloud --bench points [-- ROUNDS [SCALE]]`

#[path = "../../../tests/support/corpus.rs"]
mod corpus;

use std::time::{Duration, Instant};

use clonecloud_exec::{ModuleCache, PointMode, Points, Program, Stdio, WasiConfig};
use clonecloud_model::{Module, rewrite};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(11);
    let scale: String = args.next().unwrap_or_else(|| "4".into());

    let compute = corpus::guest("compute");
    let wasm = std::fs::read(&compute.path).unwrap();
    let engine = clonecloud_exec::new_engine(PointMode::Flag).unwrap();
    let cache = ModuleCache::disabled();
    let original =
        Program::prepare(&engine, &cache, &wasm, &Points::None, PointMode::Flag).unwrap();
    let rewritten =
        Program::prepare(&engine, &cache, &wasm, &Points::All, PointMode::Flag).unwrap();
    let wasi = WasiConfig {
        args: vec!["compute".into(), scale.clone()],
        stdio: Stdio::Null,
        ..Default::default()
    };
    let time = |p: &Program| {
        let t = Instant::now();
        p.run(&wasi).unwrap();
        t.elapsed()
    };
    // Warm up both, then interleave so drift in machine load hits both alike.
    time(&original);
    time(&rewritten);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            a.push(time(&original));
            b.push(time(&rewritten));
        } else {
            b.push(time(&rewritten));
            a.push(time(&original));
        }
    }
    let (ma, mb) = (median(a), median(b));
    println!(
        "run time, compute.wasm (scale {scale}, {} points, flag mode), median of {rounds}: original {:.1} ms, rewritten {:.1} ms, ratio {:.4}",
        rewritten.points().len(),
        ma.as_secs_f64() * 1e3,
        mb.as_secs_f64() * 1e3,
        mb.as_secs_f64() / ma.as_secs_f64()
    );

    let largest = corpus::corpus()
        .iter()
        .max_by_key(|g| std::fs::metadata(&g.path).unwrap().len())
        .unwrap();
    let big = std::fs::read(&largest.path).unwrap();
    let mut parse_times = Vec::new();
    let mut rewrite_times = Vec::new();
    let mut points = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let module = Module::parse(&big).unwrap();
        parse_times.push(t.elapsed());
        let all = module.all_points();
        points = all.len();
        let t = Instant::now();
        let out = rewrite(&module, &big, &all).unwrap();
        rewrite_times.push(t.elapsed());
        std::hint::black_box(out);
    }
    let (mp, mr) = (median(parse_times), median(rewrite_times));
    println!(
        "rewrite, {}.wasm ({:.2} MB, {points} points), median of {rounds}: parse+validate {:.1} ms, rewrite+validate {:.1} ms ({:.0} MB/s)",
        largest.name,
        big.len() as f64 / 1e6,
        mp.as_secs_f64() * 1e3,
        mr.as_secs_f64() * 1e3,
        big.len() as f64 / 1e6 / mr.as_secs_f64()
    );
}
