//! Per-migration overhead on loopback, against a plain request/response of the same size over
//! the same transport (TLS 1.3 on loopback TCP), measured side by side in one run.
//!
//! The migrated function writes 4 pages (4 KiB each) and the caller writes 4 other pages before
//! each call, so every migration carries a 4-page delta each way. The echo sends and receives a
//! frame of the same size. Rounds of each alternate, and the medians are compared: on a shared
//! 2-core machine one round trip costs 30 to 110 us depending on where the scheduler puts the two
//! threads. Goal: migration / echo <= 2.
//!
//! `cargo bench -p clonecloud-offload --bench migration`

use clonecloud_exec::{ModuleCache, PointMode, Points, Program, Stdio, WasiConfig, new_engine};
use clonecloud_net::{AllowList, Connection, Identity, Listener};
use clonecloud_offload::{CompressionPolicy, Offloader, Stats, Target, spawn_local};
use clonecloud_wire::{Compression, Message};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CALLS: u32 = 300;
const ROUNDS: usize = 9;

fn module() -> Vec<u8> {
    let store4 = |base: u32| (0..4).map(|k| format!("(i32.store (i32.const {}) (local.get $x))", base + k * 4096)).collect::<Vec<_>>().join(" ");
    wat::parse_str(format!(
        r#"(module
          (memory (export "memory") 1)
          (func $f (export "f") (param $x i32) (result i32) {} (local.get $x))
          (func (export "_start") (local $x i32)
            (loop $l
              {}
              (drop (call $f (local.get $x)))
              (local.set $x (i32.add (local.get $x) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get $x) (i32.const {CALLS})))))
        )"#,
        store4(16384),
        store4(0)
    ))
    .expect("valid WAT")
}

fn migrations() -> (Duration, Stats) {
    let engine = new_engine(PointMode::Host).unwrap();
    let cache = ModuleCache::disabled();
    let program = Program::prepare(&engine, &cache, &module(), &Points::Named(vec!["f".into()]), PointMode::Host).unwrap();
    let (addr, identity, server_key) = spawn_local(ModuleCache::disabled(), Duration::from_secs(60)).unwrap();
    let target = Target {
        addr,
        server_key,
        identity,
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
        compression: CompressionPolicy::Fixed(Compression::None),
        environment: Default::default(),
        dirs: Vec::new(),
        others: Vec::new(),
    };
    let stats = Arc::new(Mutex::new(Stats::default()));
    let offloader = Offloader::new(target, program.layout().clone(), vec!["f".into()], stats.clone());
    let wasi = WasiConfig { stdio: Stdio::Null, ..WasiConfig::default() };
    let started = Instant::now();
    program.run_with(&wasi, Some(Box::new(offloader))).unwrap();
    let elapsed = started.elapsed();
    let s = stats.lock().unwrap().clone();
    (elapsed, s)
}

/// Round trips of `up` bytes out and `down` back over a fresh TLS connection.
fn echoes(up: usize, down: usize) -> Duration {
    let server = Identity::generate().unwrap();
    let device = Identity::generate().unwrap();
    let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([device.public().clone()]), Duration::from_secs(10)).unwrap();
    let addr = listener.local_addr();
    std::thread::spawn(move || {
        let mut c = listener.incoming().unwrap().accept().unwrap();
        let answer = Message::Module { bytes: vec![7; down] };
        while c.recv().is_ok() {
            c.send(&answer).unwrap();
        }
    });
    let mut c = Connection::connect(addr, Some(&device), server.public(), Duration::from_secs(5)).unwrap();
    let request = Message::Module { bytes: vec![3; up] };
    // One warm-up exchange, as the migrations' first one carries the module.
    c.send(&request).unwrap();
    c.recv().unwrap();
    let started = Instant::now();
    for _ in 0..CALLS {
        c.send(&request).unwrap();
        c.recv().unwrap();
    }
    started.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (mut migration_us, mut echo_us, mut whole_us) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..ROUNDS {
        let (elapsed, s) = migrations();
        let p = s.points["f"].clone();
        assert_eq!(s.migrations, u64::from(CALLS), "every call migrated: {s:?}");
        assert_eq!(s.fallbacks.count, 0);
        // A migration as the device sees it: capture, round trip, merge (the connection and the
        // module upload happen before the first one and are not counted).
        let n = p.migrations as f64;
        migration_us.push((p.capture_ms + p.transfer_ms + p.remote_ms + p.merge_ms) * 1e3 / n);
        whole_us.push(elapsed.as_secs_f64() * 1e6 / n);
        // Wire bytes per migration, each way, from the statistics.
        let up = (p.bytes_up_compressed / p.migrations) as usize;
        let down = (p.bytes_down_compressed / p.migrations) as usize;
        echo_us.push(echoes(up, down).as_secs_f64() * 1e6 / f64::from(CALLS));
        last = Some((p, up, down));
    }
    let (p, up, down) = last.expect("at least one round");
    let per_migration = median(migration_us.clone()) / 1e6;
    let per_echo = median(echo_us.clone()) / 1e6;
    println!("rounds of {CALLS}: migration {migration_us:.0?} us, echo {echo_us:.0?} us, whole run per call {whole_us:.0?} us");
    let per = |n: u64| n as f64 / p.migrations as f64;
    println!(
        "migration with a 4-page delta each way: {:.1} us ({:.2} pages up, {:.2} down per call)",
        per_migration * 1e6,
        per(p.pages_up),
        per(p.pages_down)
    );
    println!("  capture {:.1} us, transfer {:.1} us, remote {:.1} us, merge {:.1} us per call",
        p.capture_ms * 1e3 / f64::from(CALLS), p.transfer_ms * 1e3 / f64::from(CALLS), p.remote_ms * 1e3 / f64::from(CALLS), p.merge_ms * 1e3 / f64::from(CALLS));
    println!("echo of {up} bytes out, {down} back: {:.1} us", per_echo * 1e6);
    println!("ratio migration / echo: {:.2} (goal <= 2)", per_migration / per_echo);
}
