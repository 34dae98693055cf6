//! What the offload tests share: a module run to its exit with some of its functions as points,
//! offloaded to an embedded clone with given limits or not at all; a lying clone.
#![allow(dead_code)]

use clonecloud_exec::{ModuleCache, Outcome, PointMode, Points, Program, Stdio, WasiConfig, new_engine};
use clonecloud_offload::{CompressionPolicy, Offloader, Stats, Target, spawn_local_with};
use clonecloud_replica::Limits;
use clonecloud_wire::Compression;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs `wat` (which must exit through `proc_exit`) with `points` as migration points (host
/// mode), offloaded to a fresh embedded clone with `limits` when given (otherwise the points
/// run here): its exit code and the offloading stats.
pub fn run(wat: &str, points: &[&str], clone: Option<Limits>) -> (i32, Stats) {
    let wasm = wat::parse_str(wat).unwrap();
    let engine = new_engine(PointMode::Host).unwrap();
    let names: Vec<String> = points.iter().map(|p| p.to_string()).collect();
    let program = Program::prepare(&engine, &ModuleCache::disabled(), &wasm, &Points::Named(names.clone()), PointMode::Host).unwrap();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let migrator = clone.map(|limits| {
        let (addr, identity, server_key) = spawn_local_with(ModuleCache::disabled(), Duration::from_secs(30), limits, None).unwrap();
        let target = Target { addr, server_key, identity, connect_timeout: Duration::from_secs(5), timeout: Duration::from_secs(30), compression: CompressionPolicy::Fixed(Compression::Lz4), dirs: Vec::new(), environment: Default::default(), others: Vec::new() };
        Box::new(Offloader::new(target, program.layout().clone(), names, stats.clone())) as Box<dyn clonecloud_exec::Migrator>
    });
    let wasi = WasiConfig { stdio: Stdio::Null, ..WasiConfig::default() };
    let report = program.run_with(&wasi, migrator).unwrap();
    let code = match report.outcome {
        Outcome::Exited(c) => c,
        other => panic!("{other:?}"),
    };
    let s = stats.lock().unwrap().clone();
    (code, s)
}

/// A server that speaks the protocol but answers every migration with `answer`: its address,
/// the device identity it admits, and its public key.
pub fn liar(answer: clonecloud_wire::Message) -> (String, clonecloud_net::Identity, clonecloud_net::PublicKey) {
    use clonecloud_net::{AllowList, Identity, Listener};
    use clonecloud_wire::Message;
    let server = Identity::generate().unwrap();
    let device = Identity::generate().unwrap();
    let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([device.public().clone()]), Duration::from_secs(10)).unwrap();
    let addr = listener.local_addr().to_string();
    std::thread::spawn(move || {
        let mut c = listener.incoming().unwrap().accept().unwrap();
        while let Ok(m) = c.recv() {
            let reply = match m {
                Message::Hello { .. } => Message::Welcome { need_module: false, concurrency: 1 },
                Message::Files { .. } => Message::NeedFiles { hashes: vec![] },
                Message::Migrate { .. } => answer.clone(),
                _ => continue,
            };
            if c.send(&reply).is_err() {
                return;
            }
        }
    });
    (addr, device, server.public().clone())
}
