//! The device side: at a migration point, ship the thread's state to the clone, let it run the
//! function, merge what comes back; on any failure run the function here instead.
//!
//! Offloading is a transaction. Nothing on the device changes until the clone's return is merged
//! (capturing only reads memory), and the merge is checked before it writes. So whatever goes
//! wrong before that (no clone, a refused key, a cut link, a timeout, a trap or a WASI call on
//! the clone, a protocol error), the function runs locally from the very state it was entered
//! with, and the program behaves exactly as without clonecloud. After a failure the session is
//! dropped, and the next migration starts a fresh one from the zero baseline.

use crate::convert;
use crate::stats::Stats;
use clonecloud_exec::state::{PAGE_SIZE, PageTable};
use clonecloud_exec::{Guest, Layout, Migrator};
use clonecloud_net::{Connection, Identity, NetError, PublicKey};
use clonecloud_files::{Root, Scanner};
use clonecloud_wire::{Clocks, Compression, Descriptors, DeviceEvent, DeviceSession, Environment, FailKind};
use crate::ahead::{Ahead, Choice};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use wasmtime::Val;

/// Where the clone is and how to trust it.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: String,
    pub server_key: PublicKey,
    pub identity: Identity,
    /// For connecting and the handshake.
    pub connect_timeout: Duration,
    /// For each reply (a migrated function must return within it).
    pub timeout: Duration,
    /// How page deltas and file contents travel.
    pub compression: CompressionPolicy,
    /// The run's arguments and environment, for the clone to serve.
    pub environment: Environment,
    /// The preopened directories, replicated to the clone.
    pub dirs: Vec<Root>,
}

/// How to compress what travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionPolicy {
    /// Always this way.
    Fixed(Compression),
    /// By the link's measured throughput: LZ4 while it is fast (or not measured yet), zstd
    /// below [`ZSTD_BELOW`] bytes per second, where its smaller output saves more time on the
    /// link than it costs to make.
    ByLink,
}

/// The link throughput (bytes per second) under which zstd pays: at level 1 it costs about
/// 1.5 ms more CPU per MiB of delta than LZ4 and saves a third or more of the bytes (measured on
/// the workloads' deltas), so it wins below roughly 50 MB/s: Wi-Fi and cellular links, not
/// loopback.
pub const ZSTD_BELOW: f64 = 50e6;

/// Transfers smaller than this say more about latency than throughput and are not measured.
const RATE_MIN_BYTES: u64 = 64 << 10;

/// Why a remote attempt was abandoned: a short cause for counting, and the detail.
#[derive(Debug)]
pub(crate) struct Abort {
    cause: &'static str,
    detail: String,
}

pub(crate) fn abort(cause: &'static str, detail: impl std::fmt::Display) -> Abort {
    Abort { cause, detail: detail.to_string() }
}

pub(crate) fn net(e: NetError) -> Abort {
    let cause = match &e {
        NetError::Timeout(_) => "timeout",
        NetError::Tls(_) => "tls",
        NetError::Decode(_) => "protocol",
        NetError::Closed | NetError::Io { .. } => "link",
        NetError::Key(_) => "key",
    };
    abort(cause, e)
}

/// After a failed connection, remote attempts are skipped for this long.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// How long a device whose link broke mid-migration keeps trying to reach the clone again (at
/// least; the connect timeout when longer) before it runs the function itself.
const RESUME_TRIES: Duration = Duration::from_secs(3);

/// Times the link may break during one migration before the device runs the function itself.
const MAX_BREAKS: u32 = 8;

/// The device's offloading runtime for one app run (one thread).
#[derive(Debug)]
pub struct Offloader {
    target: Target,
    layout: Arc<Layout>,
    run: u64,
    session: Option<(Connection, DeviceSession)>,
    table: PageTable,
    stats: Arc<Mutex<Stats>>,
    /// Display names of the points, by ordinal.
    names: Vec<String>,
    unreachable_until: Option<Instant>,
    scanner: Scanner,
    /// False once the directories could not be scanned: the clone then gets none, and serves
    /// no file calls.
    replicate: bool,
    /// The link's throughput as last measured, bytes per second.
    rate: Option<f64>,
    /// The proxied imports of the migration under way.
    proxying: crate::proxy::Proxying,
    /// Per point (by ordinal), what the partition expected of it, and how its link has been.
    watch: Vec<Option<Watch>>,
    /// Migrations sent in the current session (a resume names the one it awaits).
    migrations_sent: u64,
    /// The session being opened in the background ([`Offloader::send_ahead`]).
    ahead: Option<Ahead>,
    /// Why the background session could not connect, for the first fallback it causes.
    unreachable_cause: Option<Abort>,
    /// Per point (by ordinal), calls that ended on the clone with an uncaught exception: after
    /// [`MAX_ESCAPES`] the point runs locally (each such call runs twice: there, then here).
    escapes: std::collections::HashMap<usize, u32>,
}

/// Calls of one point that may end in an uncaught exception on the clone before its calls run
/// locally for the rest of the run.
const MAX_ESCAPES: u32 = 2;

/// What a partition chosen at launch expects of one point: its time per call on the device and
/// on the clone (from the profile).
#[derive(Debug, Clone, Copy)]
pub struct Expectation {
    pub device_s: f64,
    pub clone_s: f64,
}

/// A point under watch: its expectation and the link's cost per migration as seen so far.
#[derive(Debug, Clone, Copy)]
struct Watch {
    expect: Expectation,
    /// Exponentially weighted mean of (round trip − clone execution) per migration, seconds.
    overhead_s: Option<f64>,
    migrations: u64,
    local: bool,
}

/// The rule for switching a point back to local during a run: once it has migrated at least
/// twice, if the device's time per call is below the clone's plus the link's observed cost per
/// migration (a running mean giving the latest half the weight), the link has degraded so far
/// that migrating no longer pays, and the point's calls run locally for the rest of the run.
pub fn still_pays(expect: Expectation, overhead_s: f64, migrations: u64) -> bool {
    migrations < 2 || expect.device_s > expect.clone_s + overhead_s
}

impl Offloader {
    pub fn new(target: Target, layout: Arc<Layout>, names: Vec<String>, stats: Arc<Mutex<Stats>>) -> Offloader {
        stats.lock().expect("stats lock").clone.clone_from(&target.addr);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let run = now ^ u64::from(std::process::id());
        let scanner = Scanner::new(target.dirs.clone());
        Offloader {
            target,
            layout,
            run,
            session: None,
            table: PageTable::new(),
            stats,
            names,
            unreachable_until: None,
            scanner,
            replicate: true,
            rate: None,
            proxying: Default::default(),
            watch: Vec::new(),
            migrations_sent: 0,
            ahead: None,
            unreachable_cause: None,
            escapes: Default::default(),
        }
    }

    /// Starts getting the clone ready now, in the background, rather than at the first
    /// migration point: a session is opened, the module uploaded (when the clone lacks it) and
    /// compiled there, and the directories replicated. A migration point reached before that
    /// ends waits for it or runs its call here, whichever is expected to end sooner.
    pub fn send_ahead(&mut self) {
        if self.session.is_some() || self.ahead.is_some() {
            return;
        }
        let target = self.target.clone();
        let compression = self.compression();
        let session = DeviceSession::new(self.layout.hash, self.run, 0, self.target.environment.clone());
        let scanner = Scanner::new(self.target.dirs.clone());
        let dial = move || dial_clone(&target, compression);
        self.ahead = Some(Ahead::start(dial, session, self.layout.clone(), scanner, self.target.timeout));
        self.stats().ready.module_bytes = self.layout.wasm.len() as u64;
    }

    /// When a session is being opened in the background: take it once it is ready, or, while
    /// it is not, choose between waiting and running point `j`'s call here. `Ok(false)`: run it
    /// here (nothing failed).
    fn await_ahead(&mut self, j: usize) -> bool {
        let Some(ahead) = self.ahead.take() else { return true };
        if !ahead.finished() {
            let remaining = ahead.progress.remaining(self.layout.wasm.len(), self.rate);
            let expect = self.watch.get(j).copied().flatten().map(|w| w.expect);
            let phase = ahead.progress.phase();
            match crate::ahead::choose(expect.map(|e| e.device_s), remaining, expect.map_or(0.0, |e| e.clone_s)) {
                Choice::Local => {
                    info!(point = %self.names[j], "the clone is not ready ({}, about {:.1} s more): this call runs here", phase.describe(), remaining.as_secs_f64());
                    self.stats().ready.local_calls += 1;
                    self.ahead = Some(ahead);
                    return false;
                }
                Choice::Wait => {
                    info!(point = %self.names[j], "the clone is not ready ({}, about {:.1} s more): waiting for it", phase.describe(), remaining.as_secs_f64());
                    let t0 = Instant::now();
                    let bar = waiting_display(&ahead.progress);
                    while !ahead.finished() {
                        bar.set_message(ahead.progress.phase().describe());
                        bar.tick();
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    bar.finish_and_clear();
                    let mut st = self.stats();
                    st.ready.waits += 1;
                    st.ready.waited_ms += t0.elapsed().as_secs_f64() * 1e3;
                }
            }
        }
        let ready_ms = ahead.progress.elapsed().as_secs_f64() * 1e3;
        match ahead.join() {
            Ok(opened) => {
                let crate::ahead::Opened { conn, session, scanner, replicate, uploaded, sync } = opened;
                self.table.reset();
                self.migrations_sent = 0;
                self.scanner = scanner;
                self.replicate = replicate;
                let mut st = self.stats();
                st.connections += 1;
                st.ready.ready_ms = Some(ready_ms);
                if uploaded {
                    st.module_upload_bytes += self.layout.wasm.len() as u64;
                }
                let f = &mut st.file_sync;
                f.syncs += sync.syncs;
                f.entries += sync.entries;
                f.files_sent += sync.files_sent;
                f.bytes += sync.bytes;
                f.bytes_on_wire += sync.bytes_on_wire;
                f.ms += sync.ms;
                drop(st);
                self.session = Some((conn, session));
                true
            }
            Err(a) => {
                // As when a session cannot be opened at a migration point: the normal path
                // tries again (and falls back if that fails too).
                info!("getting the clone ready in the background failed ({}): {}", a.cause, a.detail);
                self.stats().ready.failed = Some(format!("{}: {}", a.cause, a.detail));
                if a.cause == "connect" {
                    // Not dialled again at once: the first point falls back with this cause.
                    self.unreachable_until = Some(Instant::now() + RETRY_AFTER);
                    self.unreachable_cause = Some(a);
                }
                true
            }
        }
    }

    /// Watches the points against what the partition expected of them (by ordinal; `None`: not
    /// watched): a point whose link has degraded so far that it no longer pays runs locally.
    pub fn watch(&mut self, expectations: Vec<Option<Expectation>>) {
        self.watch = expectations.into_iter().map(|e| e.map(|expect| Watch { expect, overhead_s: None, migrations: 0, local: false })).collect();
    }

    /// The compression for the next transfer.
    fn compression(&self) -> Compression {
        match self.target.compression {
            CompressionPolicy::Fixed(c) => c,
            CompressionPolicy::ByLink => match self.rate {
                Some(r) if r < ZSTD_BELOW => Compression::Zstd,
                _ => Compression::Lz4,
            },
        }
    }

    /// Takes note of `bytes` crossing the link in `time` (a migration's round trip less the
    /// clone's execution: file syncs are not timed, as they wait for the clone to compile).
    fn measured(&mut self, bytes: u64, time: Duration) {
        if bytes >= RATE_MIN_BYTES && !time.is_zero() {
            self.rate = Some(bytes as f64 / time.as_secs_f64());
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connect(&mut self) -> Result<(), Abort> {
        if self.unreachable_until.is_some_and(|t| Instant::now() < t) {
            // The first time, why (when the background session found it unreachable).
            return Err(self.unreachable_cause.take().unwrap_or_else(|| abort("unreachable", "the clone could not be reached moments ago; not retrying yet")));
        }
        let conn = self.dial()?;
        let session = DeviceSession::new(self.layout.hash, self.run, 0, self.target.environment.clone());
        self.open(conn, session)
    }

    /// A new authenticated connection to the clone.
    fn dial(&mut self) -> Result<Connection, Abort> {
        let conn = dial_clone(&self.target, self.compression());
        self.unreachable_until = if conn.is_err() { Some(Instant::now() + RETRY_AFTER) } else { None };
        conn
    }

    /// Starts a new session on `conn`: hello, welcome, the module if the clone lacks it.
    fn open(&mut self, mut conn: Connection, mut session: DeviceSession) -> Result<(), Abort> {
        conn.send(&session.hello().map_err(|e| abort("protocol", e))?).map_err(net)?;
        match session.on_message(conn.recv().map_err(net)?).map_err(|e| abort("protocol", e))? {
            DeviceEvent::Welcomed { need_module } => {
                if need_module {
                    let m = session.module(self.layout.wasm.clone()).map_err(|e| abort("protocol", e))?;
                    conn.send(&m).map_err(net)?;
                    self.stats().module_upload_bytes += self.layout.wasm.len() as u64;
                }
            }
            other => return Err(abort("protocol", format!("expected a welcome, got {other:?}"))),
        }
        self.table.reset();
        self.migrations_sent = 0;
        // A new session's clone knows none of the directories yet.
        self.scanner.forget_sent();
        self.stats().connections += 1;
        self.session = Some((conn, session));
        Ok(())
    }

    /// After the link broke awaiting the answer to this session's latest migration: a new
    /// connection, and a resume. `Ok(true)`: the session goes on and the answer comes on the
    /// new connection; `Ok(false)`: the clone no longer holds the session, a new one is open
    /// (the migration must be sent again).
    fn reconnect(&mut self) -> Result<bool, Abort> {
        self.session = None;
        // The link may be down for a moment (a flapping radio): a few tries, a little apart.
        let deadline = Instant::now() + self.target.connect_timeout.max(RESUME_TRIES);
        let mut pause = Duration::from_millis(50);
        let conn = loop {
            match self.dial() {
                Ok(c) => break c,
                Err(a) if Instant::now() + pause < deadline => {
                    debug!("reconnecting: {}", a.detail);
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(a) => return Err(a),
            }
        };
        let mut conn = conn;
        let mut session = DeviceSession::new(self.layout.hash, self.run, 0, self.target.environment.clone());
        conn.send(&session.resume(self.migrations_sent).map_err(|e| abort("protocol", e))?).map_err(net)?;
        match session.on_message(conn.recv().map_err(net)?).map_err(|e| abort("protocol", e))? {
            DeviceEvent::Resumed { ok: true } => {
                self.stats().connections += 1;
                self.session = Some((conn, session));
                Ok(true)
            }
            DeviceEvent::Resumed { ok: false } => self.open(conn, session).map(|()| false),
            other => Err(abort("protocol", format!("expected the answer to a resume, got {other:?}"))),
        }
    }

    /// Brings the clone's replica of the preopened directories up to date: the trees when they
    /// changed since the last sync, then the contents the clone asks for.
    fn sync_files(&mut self) -> Result<(), Abort> {
        if !self.replicate {
            return Ok(());
        }
        let trees = match self.scanner.scan() {
            Ok(Some(trees)) => trees,
            Ok(None) => return Ok(()),
            Err(e) => {
                info!("the preopened directories are not replicated to the clone: {e}");
                self.replicate = false;
                // The clone may hold an older copy: start a session that has none.
                return Err(abort("files", e));
            }
        };
        let t0 = Instant::now();
        let compression = self.compression();
        let (conn, session) = self.session.as_mut().expect("connected");
        conn.set_compression(compression);
        let (sent0, received0) = (conn.sent, conn.received);
        let entries = trees.iter().map(|t| t.entries.len() as u64).sum::<u64>();
        conn.send(&session.files(trees).map_err(|e| abort("protocol", e))?).map_err(net)?;
        let hashes = match session.on_message(conn.recv().map_err(net)?).map_err(|e| abort("protocol", e))? {
            DeviceEvent::NeedFiles { hashes } => hashes,
            other => return Err(abort("protocol", format!("expected the files the clone needs, got {other:?}"))),
        };
        let mut bytes = 0u64;
        for h in &hashes {
            let content = self.scanner.content(h).ok_or_else(|| abort("files", "a file changed while it was being replicated"))?;
            bytes += content.len() as u64;
            conn.send(&session.file_data(*h, content).map_err(|e| abort("protocol", e))?).map_err(net)?;
        }
        let (sent, received) = (conn.sent - sent0, conn.received - received0);
        let mut st = self.stats();
        let f = &mut st.file_sync;
        f.syncs += 1;
        f.entries += entries;
        f.files_sent += hashes.len() as u64;
        f.bytes += bytes;
        f.bytes_on_wire += sent + received;
        f.ms += t0.elapsed().as_secs_f64() * 1e3;
        debug!(files = hashes.len(), bytes, "directories replicated");
        Ok(())
    }

    /// A session, with the clone's replica of the directories up to date.
    fn prepare(&mut self) -> Result<(), Abort> {
        if self.session.is_none() {
            self.connect()?;
        }
        self.sync_files()
    }

    /// One remote attempt; on success `results` hold the clone's results and the guest holds
    /// the clone's state (and files). `Some(code)`: the function exited with `code`.
    fn remote(&mut self, guest: &mut Guest<'_, '_>, j: usize, params: &[Val], results: &mut [Val]) -> Result<Option<u32>, Abort> {
        let args = convert::values_to_wire(params).ok_or_else(|| abort("unsupported", "a reference-typed argument cannot migrate"))?;
        if let Err(a) = self.prepare() {
            if !matches!(a.cause, "link" | "tls" | "connect") {
                return Err(a);
            }
            // The link broke on the way (or the session had gone stale: the clone restarted
            // since the last migration): once more, on a new session.
            info!("the session to the clone broke ({}): a new one", a.detail);
            self.drop_session();
            self.unreachable_until = None;
            std::thread::sleep(Duration::from_millis(50));
            self.prepare()?;
            self.stats().retries += 1;
        }
        let name = self.names[j].clone();
        let function = guest.point(j).function;

        let t1 = Instant::now();
        let mut io = Io::default();
        let mut breaks = 0;
        let (event, pages_up, raw_up, capture, unsure_above) = 'attempt: loop {
            let t0 = Instant::now();
            let pages = self.table.diff(guest.memory());
            let wasm_pages = guest.wasm_pages();
            let globals = guest.globals();
            let state = convert::state(wasm_pages, pages, &globals).ok_or_else(|| abort("unsupported", "a reference-typed global cannot migrate"))?;
            // The descriptor table is part of the thread's state as the clone must see it.
            let descriptors = match guest.open_descriptors() {
                Some(open) => {
                    let (free, free_exact) = guest.free_descriptors(&open);
                    let files = guest.open_files(&open);
                    Descriptors { open, free, complete: true, free_exact, files }
                }
                None => Descriptors::default(),
            };
            // Where the device's free descriptor numbers are not all known, the number above the
            // highest open one is checked before a commit that opens descriptors.
            let unsure_above = (!descriptors.free_exact && descriptors.complete)
                .then(|| (descriptors.open.iter().copied().max().unwrap_or(0) + 1, descriptors.open.iter().copied().find(|fd| (3..3 + self.target.dirs.len() as u32).contains(fd))));
            let capture = t0.elapsed();
            let pages_up = state.memory.pages.len() as u64;
            let raw_up = convert::state_bytes(&state);
            let compression = self.compression();
            let (conn, session) = self.session.as_mut().expect("connected above");
            conn.set_compression(compression);
            let (realtime, monotonic) = guest.clocks();
            let m = session.migrate(function, args.clone(), state, Clocks { realtime, monotonic }, descriptors).map_err(|e| abort("protocol", e))?;
            self.migrations_sent += 1;
            let sent = conn.sent;
            let result = conn.send(&m).map_err(net);
            io.sent += conn.sent - sent;
            drop(m);
            let mut answer = match result {
                Ok(()) => self.await_answer(guest, &mut io),
                Err(a) => Err(a),
            };
            // When the link breaks: a new connection, and the session resumed if the clone still
            // holds it (the answer comes there), else the migration sent again on a new session.
            loop {
                match answer {
                    Ok(event) => break 'attempt (event, pages_up, raw_up, capture, unsure_above),
                    Err(a) if breaks < MAX_BREAKS && (a.cause == "link" || a.cause == "tls") => {
                        breaks += 1;
                        info!(point = %name, "the link broke during the migration ({}): reconnecting", a.detail);
                        match self.reconnect() {
                            Ok(true) => {
                                self.stats().resumes += 1;
                                answer = self.await_answer(guest, &mut io);
                            }
                            Ok(false) => {
                                self.stats().retries += 1;
                                // The proxied imports run again, from the same stdin.
                                self.proxying.end(guest, false);
                                self.sync_files()?;
                                continue 'attempt;
                            }
                            Err(e) => return Err(abort(a.cause, format!("{}; reconnecting: {}", a.detail, e.detail))),
                        }
                    }
                    Err(a) => return Err(a),
                }
            }
        };
        let (sent, received, proxied) = (io.sent, io.received, io.proxied);
        let round_trip = t1.elapsed();
        match event {
            DeviceEvent::Returned { results: rs, state, micros, output, files, exit, freed } => {
                if state.memory.page_size as usize != PAGE_SIZE && !state.memory.pages.is_empty() {
                    return Err(abort("protocol", format!("pages of {} bytes", state.memory.page_size)));
                }
                let vals = convert::values_from_wire(&rs);
                if exit.is_none() && (vals.len() != results.len() || !guest.results_match(j, &vals)) {
                    return Err(abort("protocol", format!("results {vals:?} do not match the function's type")));
                }
                let t2 = Instant::now();
                // Files first: if the disk refuses a change, nothing in memory has changed yet
                // and the function runs locally.
                // After proxied imports the agreed state is the scratch memory's: the final pages go
                // there, and every page the migration touched comes over from it.
                let merged = if self.proxying.active() { Some(self.proxying.final_pages(guest, &state.memory)?) } else { None };
                if let Some((next, dirfd)) = unsure_above
                    && files.iter().any(|op| matches!(op, clonecloud_wire::FileOp::Fd(clonecloud_wire::FdOp::Open { .. })))
                {
                    // The clone handed out `next` first; the device must hand out the same.
                    let got = dirfd.and_then(|d| guest.next_descriptor(d));
                    if got != Some(next) {
                        return Err(abort("merge", format!("the clone numbered a new descriptor {next}, but the device would give {got:?}")));
                    }
                }
                clonecloud_files::apply(&self.target.dirs, &files, &mut |op| guest.replay_fd(op)).map_err(|e| abort("merge", e))?;
                let globals = convert::globals(&state);
                let applied = match &merged {
                    Some((wasm_pages, pages)) => guest.apply(*wasm_pages, pages, false, &globals),
                    None => guest.apply(state.memory.wasm_pages, &state.memory.pages, state.memory.xor, &globals),
                };
                applied.map_err(|e| abort("merge", e))?;
                let indices: Vec<u32> = merged.as_ref().map_or(&state.memory.pages, |(_, pages)| pages).iter().map(|(i, _)| *i).collect();
                self.table.record(guest.memory(), indices);
                // Committed: what the function wrote goes out now, in order.
                for (fd, bytes) in &output {
                    if let Err(e) = guest.write_output(*fd, bytes) {
                        warn!("cannot write the migrated function's output: {e}");
                    }
                }
                if exit.is_none() {
                    results.copy_from_slice(&vals);
                }
                self.proxying.end(guest, true);
                let merge = t2.elapsed();
                let remote = Duration::from_micros(micros);
                self.measured(sent + received, round_trip.saturating_sub(remote));
                if let Some(Some(w)) = self.watch.get_mut(j) {
                    let cost = round_trip.saturating_sub(remote).as_secs_f64();
                    w.overhead_s = Some(w.overhead_s.map_or(cost, |m| (m + cost) / 2.0));
                    w.migrations += 1;
                    if !still_pays(w.expect, w.overhead_s.unwrap_or(0.0), w.migrations) {
                        w.local = true;
                        info!(point = %name, overhead_ms = w.overhead_s.unwrap_or(0.0) * 1e3, "the link no longer pays for this point: its calls run locally from now on");
                        self.stats().switched_local.push(name.clone());
                    }
                }
                let mut st = self.stats();
                st.migrations += 1;
                let p = st.point(&name);
                p.migrations += 1;
                p.pages_up += pages_up;
                p.pages_down += state.memory.pages.len() as u64;
                p.bytes_up += raw_up;
                p.bytes_down += convert::state_bytes(&state);
                p.bytes_up_compressed += sent;
                p.bytes_down_compressed += received;
                p.capture_ms += capture.as_secs_f64() * 1e3;
                p.transfer_ms += round_trip.saturating_sub(remote).as_secs_f64() * 1e3;
                p.remote_ms += remote.as_secs_f64() * 1e3;
                p.merge_ms += merge.as_secs_f64() * 1e3;
                p.file_changes += files.len() as u64;
                p.pages_freed += u64::from(freed);
                p.proxied_calls += proxied;
                debug!(point = %name, pages_up, pages_down = state.memory.pages.len(), "migration returned");
                Ok(exit)
            }
            DeviceEvent::Failed { kind, message } => Err(abort(
                match kind {
                    FailKind::Trap => "trap",
                    FailKind::ResourceLimit => "resource-limit",
                    FailKind::Unavailable => "unavailable",
                    FailKind::Exception => "exception",
                },
                message,
            )),
            other => Err(abort("protocol", format!("unexpected {other:?}"))),
        }
    }

    /// Waits for the clone's answer to the migration under way, running the imports it asks
    /// the device to run.
    fn await_answer(&mut self, guest: &mut Guest<'_, '_>, io: &mut Io) -> Result<DeviceEvent, Abort> {
        let (conn, session) = self.session.as_mut().expect("connected");
        loop {
            let (sent, received) = (conn.sent, conn.received);
            let reply = conn.recv().map_err(net);
            io.received += conn.received - received;
            match session.on_message(reply?).map_err(|e| abort("protocol", e))? {
                DeviceEvent::ImportCall { import, args, state } => {
                    let (results, back) = crate::proxy::serve(guest, &mut self.proxying, import, &args, state)?;
                    let result = conn.send(&session.import_return(results, back).map_err(|e| abort("protocol", e))?).map_err(net);
                    io.sent += conn.sent - sent;
                    io.proxied += 1;
                    result?;
                }
                other => return Ok(other),
            }
        }
    }

    fn drop_session(&mut self) {
        if let Some((conn, mut session)) = self.session.take() {
            session.close();
            drop(conn);
        }
        self.table.reset();
    }
}

impl Migrator for Offloader {
    fn migrate(&mut self, guest: &mut Guest<'_, '_>, j: usize, params: &[Val], results: &mut [Val]) -> wasmtime::Result<()> {
        if let Some(Some(w)) = self.watch.get(j)
            && w.local
        {
            return guest.call_local(j, params, results);
        }
        if self.escapes.get(&j).is_some_and(|&n| n >= MAX_ESCAPES) {
            return guest.call_local(j, params, results);
        }
        if !self.await_ahead(j) {
            return guest.call_local(j, params, results);
        }
        match self.remote(guest, j, params, results) {
            Ok(None) => Ok(()),
            Ok(Some(code)) => Err(guest.exit(code as i32)),
            Err(a) => {
                // Nothing of the guest changed: run it here, from the same entry state.
                info!(point = %self.names[j], cause = a.cause, "offloading failed, running locally: {}", a.detail);
                let name = self.names[j].clone();
                self.stats().fallback(&name, a.cause, &a.detail);
                if a.cause == "exception" {
                    let n = self.escapes.entry(j).or_insert(0);
                    *n += 1;
                    if *n == MAX_ESCAPES {
                        info!(point = %name, "calls of this point end in exceptions it does not catch: they run locally from now on");
                        self.stats().switched_local.push(name.clone());
                    }
                }
                // Stdin gets back what proxied reads took (the guest's memory never changed).
                self.proxying.end(guest, false);
                if a.cause != "unreachable" && a.cause != "connect" {
                    self.drop_session();
                }
                guest.call_local(j, params, results)
            }
        }
    }
}

impl Drop for Offloader {
    fn drop(&mut self) {
        if let Some((mut conn, mut session)) = self.session.take() {
            let _ = conn.send(&session.goodbye());
            conn.close();
        }
    }
}

/// A new authenticated connection to the clone of `t`, with its reply timeout and `compression`.
fn dial_clone(t: &Target, compression: Compression) -> Result<Connection, Abort> {
    let mut conn = Connection::connect(t.addr.as_str(), Some(&t.identity), &t.server_key, t.connect_timeout).map_err(|e| {
        let mut a = net(e);
        if a.cause == "link" {
            a.cause = "connect";
        }
        a
    })?;
    conn.set_timeout(Some(t.timeout));
    conn.set_compression(compression);
    Ok(conn)
}

/// A spinner on stderr while a migration point waits for the clone (hidden when stderr is not
/// a terminal, so the guest's own stderr is untouched).
fn waiting_display(progress: &crate::ahead::Progress) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(indicatif::ProgressStyle::with_template("clonecloud: waiting for the clone: {msg} ({elapsed})").expect("a valid template"));
    bar.set_message(progress.phase().describe());
    bar
}

/// What a migration's messages took on the wire, over all its connections.
#[derive(Debug, Default)]
struct Io {
    sent: u64,
    received: u64,
    /// Imports run for the clone.
    proxied: u64,
}

/// A link as measured: round-trip time and throughput.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Link {
    pub rtt_ms: f64,
    pub mbit: f64,
    /// What the measurement took.
    pub ms: f64,
}

/// Measures the link to the clone with probes before any hello: the round-trip time (the best
/// of three small probes), then probes growing from 4 KiB each way until they take 20 ms more
/// than the round trip, reach 1 MiB or the measurement has taken 300 ms.
pub fn measure_link(t: &Target) -> Result<Link, String> {
    let started = Instant::now();
    let mut conn = Connection::connect(t.addr.as_str(), Some(&t.identity), &t.server_key, t.connect_timeout).map_err(|e| e.to_string())?;
    conn.set_timeout(Some(t.timeout));
    let mut session = DeviceSession::new([0; 16], 0, 0, Environment::default());
    let mut probe = |up: usize, down: u32| -> Result<Duration, String> {
        let t0 = Instant::now();
        conn.send(&session.probe(vec![0xa5; up], down).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        match session.on_message(conn.recv().map_err(|e| e.to_string())?).map_err(|e| e.to_string())? {
            DeviceEvent::ProbeReply { size } if size == down as usize => Ok(t0.elapsed()),
            other => Err(format!("expected a probe reply, got {other:?}")),
        }
    };
    let mut rtt = Duration::MAX;
    for _ in 0..3 {
        rtt = rtt.min(probe(16, 16)?);
    }
    let mut size = 4096usize;
    let mbit = loop {
        let took = probe(size, 16)? + probe(16, size as u32)?;
        let extra = took.saturating_sub(2 * rtt);
        if extra >= Duration::from_millis(20) || size >= 1 << 20 || started.elapsed() >= Duration::from_millis(300) {
            let secs = extra.as_secs_f64().max(1e-6);
            break (2.0 * size as f64 * 8.0 / secs / 1e6).min(100_000.0);
        }
        size *= 4;
    };
    Ok(Link { rtt_ms: rtt.as_secs_f64() * 1e3, mbit, ms: started.elapsed().as_secs_f64() * 1e3 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_goes_local_once_its_link_costs_more_than_it_saves() {
        // 2 s on the device, 0.2 s on the clone: pays while the link costs under 1.8 s.
        let e = Expectation { device_s: 2.0, clone_s: 0.2 };
        assert!(still_pays(e, 0.05, 5));
        assert!(still_pays(e, 5.0, 1), "one slow migration is not yet a trend");
        assert!(!still_pays(e, 1.9, 2));
        assert!(still_pays(e, 1.7, 10));
    }
}
