//! Benchmark of `--points all` on a module the size of a large C++ program: generated, 50,000
//! functions by default (see `bigmodule.rs`), or any module given. Everything is measured side
//! by side in one run (this machine is shared and noisy, so only ratios taken in the same run
//! mean anything):
//!
//! 1. the rewrite: parse + validate, the layout alone, and the whole rewrite (+ validation of the
//!    output), in ms per MB of input;
//! 2. `clonecloud run` (the binary, its own process each time, cache warm) plain and with
//!    `--points all` in flag mode, rounds interleaved: wall time and peak RSS (from `wait4`),
//!    and their ratios (goals: at most 1.02 and 1.2);
//! 3. in this process: `Program::prepare` from the warm cache (the launch) and a run, plain and
//!    with every point.
//!
//! The generated module is measured twice: with calls that go anywhere among the 50,000
//! functions (every call far away: the worst case for caches, and for the points' flags, which
//! are read on every call) and with calls that stay near each other, as in real code.
//!
//! `cargo bench -p clonecloud --bench big [-- ROUNDS [FUNCTIONS]]`
//! `cargo bench -p clonecloud --bench big -- module ROUNDS PATH [ARGS...]` (e.g. sqlite3.wasm)
//! `cargo bench -p clonecloud --bench big -- emit PATH [FUNCTIONS [DEPTH [SPREAD]]]`
//! (`CLONECLOUD_BIN=PATH` runs another `clonecloud` binary.)

#[path = "bigmodule.rs"]
mod bigmodule;

use std::path::Path;
use std::process::{Command, Stdio as PStdio};
use std::time::{Duration, Instant};

use clonecloud_exec::{ModuleCache, PointMode, Points, Program, Stdio, WasiConfig};
use clonecloud_model::{Module, rewrite, rewrite_layout};

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `clonecloud` binary: this build's, or `CLONECLOUD_BIN`.
fn binary() -> String {
    std::env::var("CLONECLOUD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_clonecloud").to_string())
}

/// Runs the binary to its end: wall time and the child's peak RSS in KiB. Through a fresh
/// process of this bench (`spawn`): a child's `ru_maxrss` counts the memory of the process it was
/// spawned from before its `exec`, and this one is large.
fn run_child(home: &Path, args: &[&str]) -> (Duration, u64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("spawn")
        .arg(home)
        .args(args)
        .output()
        .expect("cannot start the bench again");
    assert!(out.status.success(), "spawn {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (ns, kib) = text.trim().split_once(' ').expect("two numbers");
    (Duration::from_nanos(ns.parse().unwrap()), kib.parse().unwrap())
}

/// `spawn HOME ARGS...`: runs the binary with ARGS and prints its wall time (ns) and peak RSS
/// (KiB).
#[allow(clippy::zombie_processes)] // reaped by `wait4`, which also gives its usage
fn spawn(home: &str, args: &[String]) {
    let t = Instant::now();
    let child = Command::new(binary())
        .args(args)
        .env("CLONECLOUD_HOME", home)
        .stdout(PStdio::null())
        .stderr(PStdio::null())
        .spawn()
        .expect("cannot start clonecloud");
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it for the child we started and reaps it
    // (the `Child` is not waited on again).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let elapsed = t.elapsed();
    assert_eq!(pid, child.id() as i32, "wait4 failed");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "clonecloud {args:?} failed: {status}");
    println!("{} {}", elapsed.as_nanos(), usage.ru_maxrss);
}

fn stdout_of(home: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .env("CLONECLOUD_HOME", home)
        .output()
        .expect("cannot start clonecloud");
    assert!(out.status.success(), "clonecloud {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// 1: the rewrite of every function of `wasm`.
fn rewrite_times(wasm: &[u8], rounds: usize) {
    let mb = wasm.len() as f64 / 1e6;
    let (mut parse, mut plan, mut rw) = (Vec::new(), Vec::new(), Vec::new());
    let (mut points, mut out_mb) = (0, 0.0);
    for _ in 0..rounds.clamp(1, 3) {
        let t = Instant::now();
        let module = Module::parse(wasm).unwrap();
        parse.push(t.elapsed());
        let all = module.all_points();
        points = all.len();
        let t = Instant::now();
        std::hint::black_box(rewrite_layout(&module, &all).unwrap());
        plan.push(t.elapsed());
        let t = Instant::now();
        let out = rewrite(&module, wasm, &all).unwrap();
        rw.push(t.elapsed());
        out_mb = out.wasm.len() as f64 / 1e6;
    }
    let (parse, plan, rw) = (median(parse), median(plan), median(rw));
    println!(
        "  rewrite of {mb:.1} MB, {points} points (every defined function) into {out_mb:.1} MB: parse+validate {:.0} ms ({:.1} ms/MB), layout only {:.1} ms, rewrite+validate {:.0} ms ({:.1} ms/MB, {:.0} MB/s)",
        ms(parse),
        ms(parse) / mb,
        ms(plan),
        ms(rw),
        ms(rw) / mb,
        mb / rw.as_secs_f64()
    );
}

/// 2 and 3: plain against `--points all` (flag mode), cached.
fn compare(dir: &Path, path: &Path, args: &[String], rounds: usize) {
    let wasm = std::fs::read(path).unwrap();
    let home = dir.join("home");
    let file = path.to_str().unwrap();
    let mut plain_args = vec!["run", file];
    let mut all_args = vec!["run", "--points", "all", file];
    for a in args {
        plain_args.push(a);
        all_args.push(a);
    }
    let t = Instant::now();
    let expected = stdout_of(&home, &plain_args);
    let plain_first = t.elapsed();
    let t = Instant::now();
    assert_eq!(stdout_of(&home, &all_args), expected, "--points all changed the output");
    let all_first = t.elapsed();
    println!(
        "  first runs (compile and store): plain {:.0} ms, --points all {:.0} ms (rewrite, compile about twice the functions)",
        ms(plain_first),
        ms(all_first)
    );
    let (mut pt, mut pm, mut at, mut am) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let order: [(&[&str], bool); 2] =
            if round % 2 == 0 { [(&plain_args, false), (&all_args, true)] } else { [(&all_args, true), (&plain_args, false)] };
        for (a, all) in order {
            let (t, rss) = run_child(&home, a);
            if all {
                at.push(t);
                am.push(rss);
            } else {
                pt.push(t);
                pm.push(rss);
            }
        }
    }
    let (pt, pm, at, am) = (median(pt), median(pm), median(at), median(am));
    println!(
        "  clonecloud run, cached, median of {rounds}: plain {:.0} ms, {:.0} MB peak; --points all (flag mode) {:.0} ms, {:.0} MB peak; ratios: time {:.3}, peak RSS {:.3}",
        ms(pt),
        pm as f64 / 1024.0,
        ms(at),
        am as f64 / 1024.0,
        at.as_secs_f64() / pt.as_secs_f64(),
        am as f64 / pm as f64
    );

    let engine = clonecloud_exec::new_engine(PointMode::Flag).unwrap();
    let cache = ModuleCache::new(home.join("modules"));
    let mut argv = vec![file.to_string()];
    argv.extend(args.iter().cloned());
    let wasi = WasiConfig { args: argv, stdio: Stdio::Null, ..Default::default() };
    let (mut pp, mut pr, mut ap, mut ar) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut points = 0;
    for _ in 0..rounds.clamp(1, 5) {
        for (which, prep, run) in [(&Points::None, &mut pp, &mut pr), (&Points::All, &mut ap, &mut ar)] {
            let t = Instant::now();
            let program = Program::prepare(&engine, &cache, &wasm, which, PointMode::Flag).unwrap();
            prep.push(t.elapsed());
            points = points.max(program.points().len());
            let t = Instant::now();
            program.run(&wasi).unwrap();
            run.push(t.elapsed());
        }
    }
    let (pp, ap, pr, ar) = (median(pp), median(ap), median(pr), median(ar));
    println!(
        "  in process, median: launch (Program::prepare, cached) plain {:.0} ms, all {:.0} ms (+{:.2} us per point); instantiate and run plain {:.0} ms, all {:.0} ms (ratio {:.3})",
        ms(pp),
        ms(ap),
        (ap.as_secs_f64() - pp.as_secs_f64()) * 1e6 / points.max(1) as f64,
        ms(pr),
        ms(ar),
        ar.as_secs_f64() / pr.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut shape = bigmodule::Shape::default();
    let dir = || tempfile::tempdir().unwrap();
    match args.first().map(String::as_str) {
        Some("spawn") => spawn(&args[1], &args[2..]),
        Some("emit") => {
            let path = args.get(1).expect("emit PATH [FUNCTIONS [DEPTH [SPREAD]]]");
            let num = |i: usize, d: u32| args.get(i).map_or(d, |a| a.parse().expect("a number"));
            shape.functions = num(2, shape.functions);
            shape.depth = num(3, shape.depth);
            shape.spread = num(4, shape.spread);
            let wasm = bigmodule::generate(&shape);
            std::fs::write(path, &wasm).unwrap();
            println!("{path}: {} bytes, {} functions", wasm.len(), shape.functions + 1);
        }
        Some("module") => {
            let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).expect("module ROUNDS PATH [ARGS...]");
            let path = Path::new(args.get(2).expect("module ROUNDS PATH [ARGS...]"));
            println!("{}:", path.display());
            rewrite_times(&std::fs::read(path).unwrap(), rounds);
            compare(dir().path(), path, &args[3..], rounds);
        }
        _ => {
            let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(7);
            if let Some(n) = args.get(1) {
                shape.functions = n.parse().expect("FUNCTIONS");
            }
            let dir = dir();
            for (label, spread) in [("calls anywhere (worst case)", 0), ("calls nearby", 64)] {
                shape.spread = spread;
                let wasm = bigmodule::generate(&shape);
                let path = dir.path().join(format!("big-{spread}.wasm"));
                std::fs::write(&path, &wasm).unwrap();
                println!("generated module, {} functions, {label}:", shape.functions + 1);
                if spread == 0 {
                    rewrite_times(&wasm, rounds);
                }
                compare(dir.path(), &path, &[], rounds);
            }
        }
    }
}
