//! A load generator: N simulated devices, each with its own key and session, migrating a small
//! function with a 4-page delta each way as fast as the clone answers, against one clone server
//! in this process on loopback (the real TLS transport and protocol). Each answer is checked.

use crate::server::{Clone, DEFAULT_MAX_RUNS};
use clonecloud_exec::ModuleCache;
use clonecloud_net::{AllowList, Connection, Identity, Listener};
use clonecloud_wire::{Cause, Compression, ConnEvent, DeviceConfig, DeviceConn, PageDelta, State, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The migrated function: adds the seed to the first word of pages 0-3 and returns their sum.
const WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func $work (export "work") (param $seed i32) (result i32)
    (local $p i32) (local $sum i32)
    (loop $pages
      (i32.store (i32.mul (local.get $p) (i32.const 4096))
        (i32.add (i32.load (i32.mul (local.get $p) (i32.const 4096))) (local.get $seed)))
      (local.set $sum (i32.add (local.get $sum) (i32.load (i32.mul (local.get $p) (i32.const 4096)))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br_if $pages (i32.lt_u (local.get $p) (i32.const 4))))
    (local.get $sum)))"#;

/// The function a hostile device migrates: it grows its memory a MiB at a time, writing every
/// page, until the clone refuses, then grows its table until the clone refuses, then writes the
/// first MiB of its memory to stdout over and over (output the clone buffers) until the clone
/// stops it. Each device's budget is all it can make the server hold.
const EXHAUST_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func $exhaust (export "exhaust") (param $seed i32) (result i32)
    (local $page i32) (local $at i32) (local $end i32) (local $grown i32)
    (block $full
      (loop $grow
        (local.set $page (memory.grow (i32.const 16)))
        (br_if $full (i32.eq (local.get $page) (i32.const -1)))
        (local.set $grown (i32.add (local.get $grown) (i32.const 16)))
        (local.set $at (i32.mul (local.get $page) (i32.const 65536)))
        (local.set $end (i32.add (local.get $at) (i32.const 1048576)))
        (loop $touch
          (i32.store (local.get $at) (local.get $seed))
          (local.set $at (i32.add (local.get $at) (i32.const 4096)))
          (br_if $touch (i32.lt_u (local.get $at) (local.get $end))))
        (br $grow)))
    (block $table_full
      (loop $grow_table
        (br_if $table_full (i32.eq (table.grow $t (ref.null func) (i32.const 65536)) (i32.const -1)))
        (br $grow_table)))
    ;; One iovec at 0: the first MiB of memory.
    (i32.store (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (i32.const 1048576))
    (loop $out
      (br_if $out (i32.eqz (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
    (local.get $grown)))"#;

/// Devices that try to exhaust the clone while the honest ones migrate.
#[derive(Debug, Clone)]
pub struct Hostile {
    /// How many.
    pub devices: usize,
    /// What the clone allows each migrated call.
    pub limits: clonecloud_replica::Limits,
}

/// What a load run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub devices: usize,
    pub seconds: f64,
    pub migrations: u64,
    pub migrations_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Resident memory of this process (server and devices) at the end, KiB.
    pub rss_kib: u64,
    pub failures: u64,
    /// The first failures, in words.
    pub errors: Vec<String>,
    /// Hostile devices (each trying to exhaust its budget, see [`Hostile`]).
    pub hostile: usize,
    /// Their migrations, and how many of them the clone refused.
    pub hostile_migrations: u64,
    pub hostile_refused: u64,
    /// Peak resident memory of this process (server and devices), KiB.
    pub peak_rss_kib: u64,
    /// What the hostile devices' calls were allowed to hold in all (each one's memory and host
    /// limits), KiB: the server's peak should stay under this plus what the honest run needs.
    pub budget_kib: u64,
}

/// A `/proc/self/status` line in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// One device's loop, driving the device's protocol core as the `Offloader` does (with no
/// files, no proxied calls and no reconnecting): returns its latencies, or why it stopped.
///
/// A hostile device (`hostile`) migrates [`EXHAUST_WAT`]'s function instead: each migration
/// must end with the clone refusing it (a resource limit or a trap, reported to the device) or
/// with its answer; anything else (a broken link, a clone that stops answering) is a failure.
/// Its "latencies" are the migrations the clone refused.
fn device(addr: std::net::SocketAddr, id: &Identity, server: &clonecloud_net::PublicKey, wasm: &[u8], until: Instant, k: u32, hostile: bool) -> Result<Vec<u32>, DeviceStopped> {
    let t = Duration::from_secs(30);
    let mut core = DeviceConn::new(DeviceConfig {
        module: clonecloud_wire::content_hash(wasm),
        run: u64::from(k),
        thread: 0,
        environment: Default::default(),
        max_breaks: 0,
        reconnect_window: Duration::ZERO,
        first_pause: Duration::from_millis(50),
        retry_after: Duration::from_secs(5),
        answer_within: Duration::from_secs(60),
        max_proxied: 1000,
    });
    let mut conn: Option<Connection> = None;
    // The device's copy of the 4 pages, kept in step with the clone's.
    let mut words = [0u32; 4];
    let mut latencies = Vec::new();
    let mut round = 0u32;
    while Instant::now() < until {
        round += 1;
        // The device changes its pages too (a 4-page delta up), then the clone adds the seed.
        for w in &mut words {
            *w = w.wrapping_add(k ^ round);
        }
        let seed = round as i32;
        let mut started = Instant::now();
        core.start_migration(Instant::now());
        let results = loop {
            while let Some(m) = core.poll_transmit() {
                let sent = conn.as_mut().map(|c| c.send(&m));
                if let Some(Err(e)) = sent {
                    core.handle_broken(Instant::now(), Cause::Link, e.to_string());
                }
            }
            match core.poll_event() {
                Some(ConnEvent::Dial) => match Connection::connect(addr, Some(id), server, t) {
                    Ok(mut c) => {
                        c.set_compression(Compression::Lz4);
                        conn = Some(c);
                        core.handle_connected(Instant::now());
                    }
                    Err(e) => core.handle_dial_failed(Instant::now(), Cause::Connect, e.to_string()),
                },
                Some(ConnEvent::ModuleWanted) => core.module(wasm.to_vec()),
                Some(ConnEvent::ListFiles) => core.files_unchanged(),
                Some(ConnEvent::NeedFiles { .. }) => core.files_sent(),
                Some(ConnEvent::Capture) if hostile => {
                    let state = State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![], xor: false } };
                    // The exhaust function follows its one import.
                    core.migrate(1, vec![Value::I32(seed)], state, Default::default(), Default::default());
                }
                Some(ConnEvent::Capture) => {
                    let pages = words
                        .iter()
                        .enumerate()
                        .map(|(p, w)| {
                            let mut page = vec![0u8; 4096];
                            page[..4].copy_from_slice(&w.to_le_bytes());
                            (p as u32, page)
                        })
                        .collect();
                    let state = State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages, xor: false } };
                    started = Instant::now();
                    core.migrate(0, vec![Value::I32(seed)], state, Default::default(), Default::default());
                }
                Some(ConnEvent::Returned { results, .. }) => break results,
                Some(ConnEvent::Abandoned { cause: Cause::ResourceLimit | Cause::Trap, .. }) if hostile => break vec![],
                Some(ConnEvent::Abandoned { cause, detail }) => return Err(DeviceStopped::Abandoned { round, cause, detail }),
                Some(ConnEvent::ImportCall { .. }) => return Err(DeviceStopped::Proxied { round }),
                Some(ConnEvent::NewSession | ConnEvent::Resumed | ConnEvent::Retried | ConnEvent::Ready) => {}
                None if core.awaits_message() => match conn.as_mut().map(|c| c.recv()) {
                    Some(Ok(m)) => core.handle_message(Instant::now(), m),
                    Some(Err(e)) => core.handle_broken(Instant::now(), Cause::Link, e.to_string()),
                    None => core.handle_broken(Instant::now(), Cause::Link, "no connection".into()),
                },
                None => match core.poll_timeout() {
                    Some(at) => {
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        core.handle_timeout(Instant::now());
                    }
                    None => return Err(DeviceStopped::Idle { round }),
                },
            }
        };
        if hostile {
            // Refused, or answered having grown as far as the clone let it: either way, nothing
            // of the device's to check.
            latencies.push(u32::from(results.is_empty()));
            continue;
        }
        latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        for w in &mut words {
            *w = w.wrapping_add(seed as u32);
        }
        let want = words.iter().fold(0u32, |a, w| a.wrapping_add(*w)) as i32;
        if results != [Value::I32(want)] {
            return Err(DeviceStopped::WrongAnswer { round, got: results, want });
        }
    }
    if let (Some(goodbye), Some(c)) = (core.close(), conn.as_mut()) {
        let _ = c.send(&goodbye);
    }
    Ok(latencies)
}

/// Why a simulated device stopped before its time was up.
#[derive(Debug, thiserror::Error)]
enum DeviceStopped {
    #[error("round {round}: the migration was abandoned ({cause}): {detail}")]
    Abandoned { round: u32, cause: Cause, detail: String },
    #[error("round {round}: the clone proxied a call, which the load's function makes none of")]
    Proxied { round: u32 },
    #[error("round {round}: the protocol core waits for nothing")]
    Idle { round: u32 },
    #[error("round {round}: the clone answered {got:?}, not {want}")]
    WrongAnswer { round: u32, got: Vec<Value>, want: i32 },
}

/// A module with its first function as its one point.
fn rewritten(wat: &str) -> Result<Arc<Vec<u8>>, LoadError> {
    let model_wasm = wat::parse_str(wat)?;
    let model = clonecloud_model::Module::parse(&model_wasm)?;
    let index = model.defined_functions().next().map(|f| f.index).ok_or(LoadError::NoFunction)?;
    Ok(Arc::new(clonecloud_model::rewrite(&model, &model_wasm, &[index])?.wasm))
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the load's guest does not parse: {0}")]
    Wat(#[from] wat::Error),
    #[error("the load's guest cannot be rewritten: {0}")]
    Model(#[from] clonecloud_model::ModelError),
    #[error("the load's guest has no function to migrate")]
    NoFunction,
    #[error(transparent)]
    Net(#[from] clonecloud_net::NetError),
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
    #[error("cannot start the clone's thread: {0}")]
    Thread(std::io::Error),
}

/// Runs `devices` simulated devices for `duration` against a clone in this process.
pub fn run(devices: usize, duration: Duration) -> Result<LoadReport, LoadError> {
    run_with(devices, duration, None)
}

/// [`run`], with `hostile` devices trying to exhaust the clone at the same time (the clone
/// then has their limits).
pub fn run_with(devices: usize, duration: Duration, hostile: Option<Hostile>) -> Result<LoadReport, LoadError> {
    let wasm = rewritten(WAT)?;
    let exhaust = rewritten(EXHAUST_WAT)?;
    let (n_hostile, limits) = hostile.map_or((0, clonecloud_replica::Limits::default()), |h| (h.devices, h.limits));
    let server = Identity::generate()?;
    let ids: Vec<Identity> = (0..devices + n_hostile).map(|_| Identity::generate()).collect::<Result<_, _>>()?;
    let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new(ids.iter().map(|i| i.public().clone())), Duration::from_secs(30))?;
    let addr = listener.local_addr();
    let clone = Clone::with_limits(ModuleCache::disabled(), Duration::from_secs(60), limits)?;
    clone.set_max_runs(DEFAULT_MAX_RUNS);
    // All the devices connect at once and each holds a session: none is dropped as a flood.
    clone.set_max_pending(devices.max(crate::server::DEFAULT_MAX_PENDING));
    clone.set_max_sessions(devices.max(crate::server::DEFAULT_MAX_SESSIONS));
    std::thread::Builder::new().name("load-clone".into()).spawn(move || clone.serve(listener)).map_err(LoadError::Thread)?;
    let server_key = server.public().clone();
    let started = Instant::now();
    let until = started + duration;
    let handles: Vec<_> = ids
        .into_iter()
        .enumerate()
        .map(|(k, id)| {
            let hostile = k >= devices;
            let (wasm, server_key) = (if hostile { exhaust.clone() } else { wasm.clone() }, server_key.clone());
            std::thread::spawn(move || device(addr, &id, &server_key, &wasm, until, k as u32 + 1, hostile))
        })
        .collect();
    let (mut all, mut failures, mut errors) = (Vec::new(), 0u64, Vec::new());
    let (mut hostile_migrations, mut hostile_refused) = (0u64, 0u64);
    for (k, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(l)) if k >= devices => {
                hostile_migrations += l.len() as u64;
                hostile_refused += l.iter().map(|&r| u64::from(r)).sum::<u64>();
            }
            Ok(Ok(l)) => all.extend(l),
            Ok(Err(e)) => {
                failures += 1;
                if errors.len() < 10 {
                    errors.push(e.to_string());
                }
            }
            Err(_) => {
                failures += 1;
                errors.push("a device thread panicked".into());
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |q: f64| all.get(((all.len() as f64 - 1.0) * q).round() as usize).map_or(0.0, |&v| f64::from(v));
    Ok(LoadReport {
        devices,
        seconds,
        migrations: all.len() as u64,
        migrations_per_s: all.len() as f64 / seconds,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        max_us: all.last().map_or(0.0, |&v| f64::from(v)),
        rss_kib: status_kib("VmRSS:"),
        failures,
        errors,
        hostile: n_hostile,
        hostile_migrations,
        hostile_refused,
        peak_rss_kib: status_kib("VmHWM:"),
        budget_kib: (n_hostile as u64).saturating_mul((limits.memory as u64 + limits.host as u64) >> 10),
    })
}
