//! What the offload tests share: a module run to its exit with some of its functions as points,
//! offloaded to an embedded clone with given limits or not at all.

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
