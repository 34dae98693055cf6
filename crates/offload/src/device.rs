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
use clonecloud_stats::{Cause, Stats};
use clonecloud_exec::state::{PAGE_SIZE, PageTable};
use clonecloud_exec::{Guest, Layout, Migrator};
use clonecloud_net::{Connection, Identity, NetError, PublicKey};
use clonecloud_files::{Root, Scanner};
use clonecloud_wire::{Clocks, Compression, ConnEvent, Descriptors, DeviceConfig, DeviceConn, Environment, Kind, State};
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
    /// For the whole of one migration, from its start to the clone's answer, whatever the
    /// clone sends meanwhile (a migrated function must return within it).
    pub timeout: Duration,
    /// How page deltas and file contents travel.
    pub compression: CompressionPolicy,
    /// The run's arguments and environment, for the clone to serve.
    pub environment: Environment,
    /// The preopened directories, replicated to the clone.
    pub dirs: Vec<Root>,
    /// Other clones, in the order to try them, when this one cannot be reached (`--clone
    /// A,B,...`): a dial that fails moves on to the next (see [`Target::fail_over`]), and the
    /// one that answers serves from then on, its replica rebuilt from the zero baseline.
    pub others: Vec<Endpoint>,
}

/// One clone: where it is, its key, and the key this device shows it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: String,
    pub server_key: PublicKey,
    pub identity: Identity,
}

impl Target {
    /// Makes the next of [`Target::others`] the clone, and drops this one for the run (false
    /// when there is no other): a clone left may still hold a session waiting to be resumed,
    /// whose migration ids a later session would reuse, so the device never goes back to it.
    pub fn fail_over(&mut self) -> bool {
        if self.others.is_empty() {
            return false;
        }
        let next = self.others.remove(0);
        self.addr = next.addr;
        self.server_key = next.server_key;
        self.identity = next.identity;
        true
    }
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

/// Why a remote attempt was abandoned: the cause, for counting and deciding, and the detail.
#[derive(Debug)]
pub(crate) struct Abort {
    pub(crate) cause: Cause,
    pub(crate) detail: String,
}

pub(crate) fn abort(cause: Cause, detail: impl std::fmt::Display) -> Abort {
    Abort { cause, detail: detail.to_string() }
}

pub(crate) fn net(e: NetError) -> Abort {
    let cause = match &e {
        NetError::Timeout(_) => Cause::Timeout,
        NetError::Tls(_) => Cause::Tls,
        NetError::Decode(_) => Cause::Protocol,
        NetError::Closed | NetError::Io { .. } => Cause::Link,
        NetError::Key(_) => Cause::Key,
        NetError::Resolve { .. } => Cause::Resolve,
    };
    abort(cause, e)
}

/// After a failed connection, remote attempts are skipped for this long.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The first pause before dialling again (doubling while reconnecting).
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// How long a device whose link broke mid-migration keeps trying to reach the clone again (at
/// least; the connect timeout when longer) before it runs the function itself.
const RESUME_TRIES: Duration = Duration::from_secs(3);

/// Times the link may break during one migration before the device runs the function itself.
const MAX_BREAKS: u32 = 8;

/// The most calls a clone may make to the device during one migration (a clone that keeps
/// calling is also stopped by the migration's deadline, `Target::timeout`).
const MAX_PROXIED: u32 = 1 << 20;

/// The device's offloading runtime for one app run (one thread).
#[derive(Debug)]
pub struct Offloader {
    target: Target,
    layout: Arc<Layout>,
    /// The protocol: every rule of sessions, migrations and broken links is the core's.
    core: DeviceConn,
    /// The connection the core's messages go on.
    conn: Option<Connection>,
    table: PageTable,
    stats: Arc<Mutex<Stats>>,
    /// Display names of the points, by ordinal.
    names: Vec<String>,
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
    /// The session being opened in the background ([`Offloader::send_ahead`]).
    ahead: Option<Ahead>,
    /// The clone the background session reached (one of the target's others, maybe).
    answered: Arc<Mutex<Option<Target>>>,
    /// Offloaders to other clones that every migration is asked of too (`--redundant`): an
    /// answer is merged only when each of them gave the same one.
    witnesses: Vec<Offloader>,
    /// Whether this offloader is a witness: it must not serve a call its clone makes back into
    /// the device (the first clone made none, and the call would run twice).
    witness: bool,
    /// A witness asked the migration under way.
    asked: bool,
    /// Per point, the device API functions its calls can reach (see
    /// [`Offloader::allow_device_calls`]).
    device_reach: Vec<Vec<String>>,
    /// Per point (by ordinal), calls that ended on the clone with an uncaught exception that
    /// cannot cross (a reference field, a tag the rewriter did not export): after
    /// [`MAX_ESCAPES`] the point runs locally (each such call runs twice: there, then here).
    escapes: std::collections::HashMap<usize, u32>,
    /// A thread's migration under way: memory as its state was taken (the other threads ran
    /// on), which the answer is checked against and merged onto (see `clonecloud_exec::merge`).
    snapshot: Option<Vec<u8>>,
    /// A witness of a thread's migration: the first clone's snapshot, which it is asked about
    /// too (the same state, however memory changed since).
    given: Option<Vec<u8>>,
    /// How often the program's other threads had taken the WASI context when the migration
    /// began (before the directories were listed).
    wasi_mark: u64,
    /// The last migration conflicted with the clone's replica known (see
    /// `Offloader::merge_thread`): its session goes on.
    conflicted: bool,
    /// In a multi-threaded program, what the pool's offloaders share to send a point's
    /// migrations one at a time after they conflicted with each other (see
    /// [`crate::pool::OneAtATime`]).
    one_at_a_time: Option<Arc<crate::pool::OneAtATime>>,
    /// How many threads' migrations had merged when this one's state was taken.
    merges_mark: u64,
}

/// How many times a thread's call that conflicted is sent again before it runs here (see
/// [`crate::pool::OneAtATime`]). Threads that end meanwhile free their stacks (the heap's state
/// changes under a call that allocates), so a call may conflict several times in a row; a run
/// on the clone costs far less than one on a slow device, and a thread that keeps writing what
/// the call reads wastes at most this many.
const MAX_SENT_AGAIN: u32 = 6;

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
        let core = DeviceConn::new(DeviceConfig {
            module: layout.hash,
            run,
            thread: 0,
            environment: target.environment.clone(),
            max_breaks: MAX_BREAKS,
            reconnect_window: target.connect_timeout.max(RESUME_TRIES),
            first_pause: FIRST_PAUSE,
            retry_after: RETRY_AFTER,
            answer_within: target.timeout,
            max_proxied: MAX_PROXIED,
        });
        Offloader {
            target,
            layout,
            core,
            conn: None,
            table: PageTable::new(),
            stats,
            names,
            scanner,
            replicate: true,
            rate: None,
            proxying: Default::default(),
            watch: Vec::new(),
            ahead: None,
            answered: Default::default(),
            witnesses: Vec::new(),
            witness: false,
            device_reach: Vec::new(),
            asked: false,
            escapes: Default::default(),
            snapshot: None,
            given: None,
            wasi_mark: 0,
            conflicted: false,
            one_at_a_time: None,
            merges_mark: 0,
        }
    }

    /// Shares `one` with the other offloaders of a multi-threaded program's pool (see
    /// [`crate::pool::OneAtATime`]).
    pub(crate) fn take_turns_with(&mut self, one: Arc<crate::pool::OneAtATime>) {
        self.one_at_a_time = Some(one);
    }

    /// Starts getting the clone ready now, in the background, rather than at the first
    /// migration point: a session is opened, the module uploaded (when the clone lacks it) and
    /// compiled there, and the directories replicated. A migration point reached before that
    /// ends waits for it or runs its call here, whichever is expected to end sooner.
    pub fn send_ahead(&mut self) {
        if self.core.has_session() || self.ahead.is_some() {
            return;
        }
        let mut target = self.target.clone();
        let compression = self.compression();
        let scanner = Scanner::new(self.target.dirs.clone());
        let memory = self.layout.memory_max_pages;
        // The clone that answered, for the migrations to go on with.
        let answered = self.answered.clone();
        let dial = move || {
            let c = dial_any(&mut target, compression, memory)?;
            *answered.lock().unwrap_or_else(|e| e.into_inner()) = Some(target.clone());
            Ok(c)
        };
        self.ahead = Some(Ahead::start(dial, self.core.config().clone(), self.layout.clone(), scanner, self.target.timeout));
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
        let answered = self.answered.lock().unwrap_or_else(|e| e.into_inner()).take();
        match ahead.join() {
            Ok(opened) => {
                let crate::ahead::Opened { conn, session, scanner, replicate, uploaded, sync } = opened;
                if let Some(t) = answered
                    && t.addr != self.target.addr
                {
                    let was = std::mem::replace(&mut self.target, t).addr;
                    self.failed_over(&was);
                }
                self.table.reset();
                self.conn = Some(conn);
                self.core.adopt(session);
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
                true
            }
            Err(a) => {
                // As when a session cannot be opened at a migration point: the normal path
                // tries again (and falls back if that fails too).
                info!("getting the clone ready in the background failed ({}): {}", a.cause, a.detail);
                self.stats().ready.failed = Some((a.cause, a.detail.clone()));
                if a.cause.never_connected() {
                    // Not dialled again at once: the first point tries once more after a pause
                    // (when the link broke) or falls back with this cause.
                    self.core.handle_unreachable(Instant::now(), a.cause, a.detail);
                }
                true
            }
        }
    }

    /// Says, per point (by ordinal), which functions of the device API (camera, position,
    /// screen) its calls can reach ([`device_reach`]): a clone's proxied call of any other is
    /// refused, so a clone cannot take the device's frames or fixes for a function that never
    /// asks for them. Without it, no device API call is served to a clone.
    pub fn allow_device_calls(&mut self, reach: Vec<Vec<String>>) {
        self.device_reach = reach;
    }

    /// Watches the points against what the partition expected of them (by ordinal; `None`: not
    /// watched): a point whose link has degraded so far that it no longer pays runs locally.
    pub fn watch(&mut self, expectations: Vec<Option<Expectation>>) {
        self.watch = expectations.into_iter().map(|e| e.map(|expect| Watch { expect, overhead_s: None, migrations: 0, local: false })).collect();
    }

    /// The clone `was` could not be reached and the target's next one answered: it serves from
    /// now on (what was agreed with `was` is gone, so the core's next session starts from the
    /// zero baseline, as after a clone's restart).
    fn failed_over(&mut self, was: &str) {
        info!("the clone at {was} cannot be reached: the clone at {} serves from now on", self.target.addr);
        let mut st = self.stats();
        st.failovers += 1;
        st.clone.clone_from(&self.target.addr);
    }

    /// Asks every migration of `witnesses` (offloaders to other clones, each with stats of its
    /// own) too, one after the other once this clone has answered, and merges an answer only
    /// when all of them gave the same (results, exit or exception, the memory and globals it
    /// leaves, output, file changes). Any difference, or a witness that cannot answer, is a
    /// [`Cause::Mismatch`]: nothing is merged, and the call runs here. A migration that called
    /// back into the device is not asked of the witnesses (the calls would run twice): it runs
    /// here, with [`Cause::Unsupported`].
    pub fn witnessed_by(&mut self, witnesses: Vec<Offloader>) {
        self.witnesses = witnesses;
        for w in &mut self.witnesses {
            w.witness = true;
            w.send_ahead();
        }
    }

    /// Asks the witnesses the migration `event` answered (point `j`, `args`), before it is
    /// merged.
    fn check_with_witnesses(&mut self, guest: &mut Guest<'_, '_>, j: usize, args: &[clonecloud_wire::Value], event: &ConnEvent, proxied: u64) -> Result<(), Abort> {
        if proxied > 0 {
            return Err(abort(Cause::Unsupported, "a migration that called back into the device cannot be checked by a second clone (its calls would run twice)"));
        }
        let mut witnesses = std::mem::take(&mut self.witnesses);
        let mut result = Ok(());
        for w in &mut witnesses {
            // From here its clone may run the call: its replica is then ahead of the device
            // until the answer is merged, or its session goes (`witnesses_give_up`).
            w.asked = true;
            if !w.await_ahead(j) {
                result = Err(abort(Cause::Mismatch, format!("the clone at {} was not ready to answer too", w.target.addr)));
                break;
            }
            w.given.clone_from(&self.snapshot);
            let driven = w.drive(guest, j, args);
            w.given = None;
            let other = match driven {
                Ok((other, _)) => other,
                Err(a) => {
                    result = Err(abort(Cause::Mismatch, format!("the clone at {} could not answer too ({}: {})", w.target.addr, a.cause, a.detail)));
                    break;
                }
            };
            // A thread's answers are of its snapshot; the others', of memory as it is.
            w.snapshot = None;
            let base = self.snapshot.as_deref().unwrap_or_else(|| guest.memory());
            if let Err(why) = same_answer(event, &other, base) {
                warn!(point = %self.names[j], "the clones at {} and {} answered the same migration differently ({why}): running it here", self.target.addr, w.target.addr);
                result = Err(abort(Cause::Mismatch, format!("the clones at {} and {} disagree: {why}", self.target.addr, w.target.addr)));
                break;
            }
        }
        self.witnesses = witnesses;
        result
    }

    /// The witnesses after a migration was given up: what their clones did is not agreed, so
    /// their sessions go.
    fn witnesses_give_up(&mut self, cause: Cause) {
        // Those not asked (the call failed before) still hold what the device held.
        for w in &mut self.witnesses {
            if !std::mem::take(&mut w.asked) {
                continue;
            }
            w.core.give_up(cause);
            w.farewell();
            if !w.core.has_session() {
                w.conn = None;
                w.table.reset();
            }
        }
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

    /// The state the clone must see now, against the agreed baseline: memory pages, globals and
    /// the descriptor table.
    fn capture(&mut self, guest: &mut Guest<'_, '_>) -> Result<Captured, Abort> {
        let t0 = Instant::now();
        let (pages, wasm_pages) = if guest.is_thread() {
            // The other threads run on: the state is a copy, kept for the merge (a witness is
            // given the first clone's).
            // (Kept for the whole drive: a retried capture is of the same state.)
            let (snapshot, wasm_pages) = match self.given.clone() {
                Some(s) => {
                    let pages = (s.len() / 65536) as u32;
                    (s, pages)
                }
                None => guest.snapshot(),
            };
            let pages = self.table.diff(&snapshot);
            self.snapshot = Some(snapshot);
            (pages, wasm_pages)
        } else {
            (self.table.diff(guest.memory()), guest.wasm_pages())
        };
        let globals = guest.globals();
        let state = convert::state(wasm_pages, pages, &globals).ok_or_else(|| abort(Cause::Unsupported, "a reference-typed global cannot migrate"))?;
        // The descriptor table is part of the thread's state as the clone must see it.
        // Probes that leave the table as it was: not WASI calls another thread's migration must
        // worry about.
        let descriptors = guest.uncounted(|guest| match guest.open_descriptors() {
            Some(open) => {
                let (free, free_exact) = guest.free_descriptors(&open);
                let files = guest.open_files(&open);
                Descriptors { open, free, complete: true, free_exact, files }
            }
            None => Descriptors::default(),
        });
        // Where the device's free descriptor numbers are not all known, the number above the
        // highest open one is checked before a commit that opens descriptors.
        let unsure_above = (!descriptors.free_exact && descriptors.complete)
            .then(|| (descriptors.open.iter().copied().max().unwrap_or(0) + 1, descriptors.open.iter().copied().find(|fd| (3..3 + self.target.dirs.len() as u32).contains(fd))));
        let took = t0.elapsed();
        let (realtime, monotonic) = guest.clocks();
        Ok(Captured { pages_up: state.memory.pages.len() as u64, raw_up: convert::state_bytes(&state), state, descriptors, clocks: Clocks { realtime, monotonic }, unsure_above, took })
    }

    /// Lists the directories for the clone when they changed since they were last sent.
    fn list_files(&mut self, sync: &mut Option<Sync>) -> Result<(), Abort> {
        if !self.replicate {
            self.core.files_unchanged();
            return Ok(());
        }
        match self.scanner.scan() {
            Ok(Some(trees)) => {
                let compression = self.compression();
                let conn = self.conn.as_mut().expect("a session has a connection");
                conn.set_compression(compression);
                *sync = Some(Sync { t0: Instant::now(), sent0: conn.sent, received0: conn.received, entries: trees.iter().map(|t| t.entries.len() as u64).sum(), files: 0, bytes: 0 });
                self.core.files(trees);
                Ok(())
            }
            Ok(None) => {
                self.core.files_unchanged();
                Ok(())
            }
            Err(e) => {
                info!("the preopened directories are not replicated to the clone: {e}");
                self.replicate = false;
                // The clone may hold an older copy: start a session that has none.
                Err(abort(Cause::Files, e))
            }
        }
    }

    /// Records a finished replication of the directories.
    fn synced(&mut self, sync: Sync) {
        let (sent, received) = self.conn.as_ref().map_or((0, 0), |c| (c.sent.saturating_sub(sync.sent0), c.received.saturating_sub(sync.received0)));
        let mut st = self.stats();
        let f = &mut st.file_sync;
        f.syncs += 1;
        f.entries += sync.entries;
        f.files_sent += sync.files;
        f.bytes += sync.bytes;
        f.bytes_on_wire += sent + received;
        f.ms += sync.t0.elapsed().as_secs_f64() * 1e3;
        debug!(files = sync.files, bytes = sync.bytes, "directories replicated");
    }

    /// Drives the protocol core through one migration of point `j`: the connection, the
    /// session, the directories, the migration and the calls it proxies here, and whatever the
    /// link does meanwhile. Returns the clone's answer with what the migration took.
    fn drive(&mut self, guest: &mut Guest<'_, '_>, j: usize, args: &[clonecloud_wire::Value]) -> Result<(ConnEvent, Figures), Abort> {
        let function = guest.point(j).function;
        let name = self.names[j].clone();
        let mut fig = Figures::default();
        let mut sync = None;
        // The module was given for the session being opened (counted once that session is).
        let mut uploading = false;
        self.core.start_migration(Instant::now());
        loop {
            while let Some(m) = self.core.poll_transmit() {
                let counted = matches!(m.kind_of(), Kind::Migrate | Kind::ImportReturn);
                let Some(conn) = self.conn.as_mut() else {
                    self.core.handle_broken(Instant::now(), Cause::Link, "no connection".into());
                    break;
                };
                let sent = conn.sent;
                let result = conn.send(&m);
                if counted {
                    fig.io.sent += conn.sent - sent;
                }
                if let Err(e) = result {
                    let a = net(e);
                    if counted {
                        info!(point = %name, "the link broke during the migration ({}): reconnecting", a.detail);
                    }
                    self.core.handle_broken(Instant::now(), a.cause, a.detail);
                }
            }
            if let Some(event) = self.core.poll_event() {
                let r: Result<(), Abort> = match event {
                    ConnEvent::Dial => {
                        self.conn = None;
                        uploading = false;
                        let (compression, was) = (self.compression(), self.target.addr.clone());
                        match dial_any(&mut self.target, compression, self.layout.memory_max_pages) {
                            Ok(c) => {
                                self.conn = Some(c);
                                if self.target.addr != was {
                                    self.failed_over(&was);
                                }
                                self.core.handle_connected(Instant::now());
                            }
                            Err(a) => {
                                debug!("connecting: {}", a.detail);
                                self.core.handle_dial_failed(Instant::now(), a.cause, a.detail);
                            }
                        }
                        Ok(())
                    }
                    ConnEvent::ModuleWanted => {
                        self.core.module(self.layout.wasm.clone());
                        uploading = true;
                        Ok(())
                    }
                    ConnEvent::NewSession => {
                        // The zero baseline: nothing is agreed with a new session.
                        self.table.reset();
                        self.scanner.forget_sent();
                        let mut st = self.stats();
                        st.connections += 1;
                        if std::mem::take(&mut uploading) {
                            st.module_upload_bytes += self.layout.wasm.len() as u64;
                        }
                        Ok(())
                    }
                    ConnEvent::ListFiles => self.list_files(&mut sync),
                    ConnEvent::NeedFiles { hashes } => {
                        let s = sync.as_mut().expect("files were listed");
                        let mut r = Ok(());
                        for h in &hashes {
                            let Some(content) = self.scanner.content(h) else {
                                r = Err(abort(Cause::Files, "a file changed while it was being replicated"));
                                break;
                            };
                            s.files += 1;
                            s.bytes += content.len() as u64;
                            self.core.file_data(*h, content);
                        }
                        if r.is_ok() {
                            self.core.files_sent();
                        }
                        r
                    }
                    ConnEvent::Capture => {
                        if let Some(s) = sync.take() {
                            self.synced(s);
                        }
                        fig.started.get_or_insert_with(Instant::now);
                        let captured = self.capture(guest)?;
                        let compression = self.compression();
                        if let Some(conn) = self.conn.as_mut() {
                            conn.set_compression(compression);
                        }
                        let Captured { state, descriptors, clocks, pages_up, raw_up, unsure_above, took } = captured;
                        (fig.pages_up, fig.raw_up, fig.capture, fig.unsure_above) = (pages_up, raw_up, took, unsure_above);
                        fig.descriptors = descriptors.clone();
                        self.core.migrate(function, args.to_vec(), state, clocks, descriptors);
                        Ok(())
                    }
                    ConnEvent::ImportCall { .. } if self.witness => {
                        Err(abort(Cause::Mismatch, "it called back into the device, where the first clone did not"))
                    }
                    ConnEvent::ImportCall { import, args, state } => {
                        let reach = self.device_reach.get(j).map_or(&[][..], Vec::as_slice);
                        crate::proxy::serve(guest, &mut self.proxying, import, &args, state, reach).map(|(results, back)| {
                            fig.io.proxied += 1;
                            self.core.import_return(results, back);
                        })
                    }
                    ConnEvent::Resumed => {
                        let mut st = self.stats();
                        st.connections += 1;
                        st.resumes += 1;
                        Ok(())
                    }
                    ConnEvent::Retried => {
                        info!(point = %name, "the session to the clone broke: the migration goes on a new one");
                        self.stats().retries += 1;
                        // The proxied imports run again, from the same stdin.
                        self.proxying.end(guest, false);
                        Ok(())
                    }
                    // Only a core asked to open a session ahead says it is ready.
                    ConnEvent::Ready => Err(abort(Cause::Internal, "the protocol core opened a session ahead during a migration")),
                    answer @ ConnEvent::Returned { .. } => return Ok((answer, fig)),
                    ConnEvent::Abandoned { cause, detail } => return Err(abort(cause, detail)),
                };
                if let Err(a) = r {
                    self.core.give_up(a.cause);
                    return Err(a);
                }
                continue;
            }
            if self.core.awaits_message() {
                let Some(conn) = self.conn.as_mut() else {
                    self.core.handle_broken(Instant::now(), Cause::Link, "no connection".into());
                    continue;
                };
                let received = conn.received;
                let answer = self.core.awaits_answer();
                conn.set_deadline(self.core.poll_timeout());
                match conn.recv() {
                    Ok(m) => {
                        if answer {
                            fig.io.received += conn.received - received;
                        }
                        self.core.handle_message(Instant::now(), m);
                    }
                    Err(e) => {
                        if answer {
                            fig.io.received += conn.received - received;
                        }
                        let now = Instant::now();
                        if self.core.poll_timeout().is_some_and(|t| now >= t) {
                            // The migration's deadline, not a broken link.
                            self.core.handle_timeout(now);
                        } else {
                            let a = net(e);
                            self.core.handle_broken(now, a.cause, a.detail);
                        }
                    }
                }
            } else if let Some(t) = self.core.poll_timeout() {
                std::thread::sleep(t.saturating_duration_since(Instant::now()));
                self.core.handle_timeout(Instant::now());
            } else {
                self.core.give_up(Cause::Internal);
                return Err(abort(Cause::Internal, "the protocol core waits for nothing"));
            }
        }
    }

    /// One remote attempt; on success the guest holds the clone's state (and files), and
    /// `results` the clone's results if the function returned.
    fn remote(&mut self, guest: &mut Guest<'_, '_>, j: usize, params: &[Val], results: &mut [Val]) -> Result<Answered, Abort> {
        let args = convert::values_to_wire(params).ok_or_else(|| abort(Cause::Unsupported, "a reference-typed argument cannot migrate"))?;
        let name = self.names[j].clone();
        // Before the directories are listed and the descriptors asked: WASI calls of the other
        // threads from here on may have changed what the call sees of files.
        self.wasi_mark = guest.others_wasi_takes();
        self.merges_mark = self.one_at_a_time.as_ref().map_or(0, |o| o.merges());
        let (event, fig) = self.drive(guest, j, &args)?;
        // This clone's round trip, without the witnesses' (the link's rate and the point's
        // overhead are this link's).
        let round_trip = fig.started.map_or(Duration::ZERO, |t| t.elapsed());
        let checked = !self.witnesses.is_empty();
        if checked {
            self.check_with_witnesses(guest, j, &args, &event, fig.io.proxied)?;
        }
        let Figures { io, pages_up, raw_up, capture, unsure_above, descriptors, started: _ } = fig;
        let (sent, received, proxied) = (io.sent, io.received, io.proxied);
        match event {
            ConnEvent::Returned { results: rs, state, micros, output, files, exit, freed, thrown, access } => {
                if state.memory.page_size as usize != PAGE_SIZE && !state.memory.pages.is_empty() {
                    return Err(abort(Cause::Protocol, format!("pages of {} bytes", state.memory.page_size)));
                }
                let vals = convert::values_from_wire(&rs);
                let returned = exit.is_none() && thrown.is_none();
                if returned && (vals.len() != results.len() || !guest.results_match(j, &vals)) {
                    return Err(abort(Cause::Protocol, format!("results {vals:?} do not match the function's type")));
                }
                // An exception is thrown again here after the merge: it must be one this module
                // can throw, with no results beside it.
                let thrown = match thrown {
                    Some(_) if exit.is_some() || !vals.is_empty() => {
                        return Err(abort(Cause::Protocol, "an exception with results or an exit".to_string()));
                    }
                    Some(t) => Some(guest.make_exception(t.tag, &convert::values_from_wire(&t.fields)).map_err(|e| abort(Cause::Protocol, e))?),
                    None => None,
                };
                let t2 = Instant::now();
                if guest.is_thread() {
                    let access = access.ok_or_else(|| abort(Cause::Protocol, "a thread's answer without the bytes it read and wrote"))?;
                    self.merge_thread(guest, &state, access, &files, &output, unsure_above, &descriptors)?;
                    if let Some(o) = &self.one_at_a_time {
                        o.merged();
                    }
                } else {
                    // All or nothing: the memory and globals are checked, then the files changed
                    // (undone if one change fails), then the memory and globals set (the files
                    // undone if that fails). On any failure the device is as it was and the
                    // function runs locally.
                    // After proxied imports the agreed state is the scratch memory's: the final pages go
                    // there, and every page the migration touched comes over from it.
                    let merged = if self.proxying.active() { Some(self.proxying.final_pages(guest, &state.memory)?) } else { None };
                    if let Some((next, dirfd)) = unsure_above
                        && files.iter().any(|op| matches!(op, clonecloud_wire::FileOp::Fd(clonecloud_wire::FdOp::Open { .. })))
                    {
                        // The clone handed out `next` first; the device must hand out the same.
                        let got = dirfd.and_then(|d| guest.next_descriptor(d));
                        if got != Some(next) {
                            return Err(abort(Cause::Merge, format!("the clone numbered a new descriptor {next}, but the device would give {got:?}")));
                        }
                    }
                    let globals = convert::globals(&state);
                    let (wasm_pages, pages, xor) = match &merged {
                        Some((wasm_pages, pages)) => (*wasm_pages, pages, false),
                        None => (state.memory.wasm_pages, &state.memory.pages, state.memory.xor),
                    };
                    guest.check_apply(wasm_pages, pages, &globals).map_err(|e| abort(Cause::Merge, e))?;
                    // A close or a renumbering cannot be undone: the journal's descriptor changes
                    // must fit the device's table before the first change (proxied calls only
                    // query, so the table is still the one the clone was given).
                    descriptors.check_journal(&files).map_err(|e| abort(Cause::Merge, e))?;
                    let changed = clonecloud_files::apply(&self.target.dirs, &files, &mut |op| guest.replay_fd(op).map_err(Into::into)).map_err(|e| abort(Cause::Merge, e))?;
                    if let Err(e) = guest.apply(wasm_pages, pages, xor, &globals) {
                        let failed = changed.undo(&mut |op| guest.replay_fd(op).map_err(Into::into));
                        if failed > 0 {
                            warn!(failed, "the files of a failed merge could not all be put back");
                        }
                        return Err(abort(Cause::Merge, e));
                    }
                    let indices: Vec<u32> = merged.as_ref().map_or(&state.memory.pages, |(_, pages)| pages).iter().map(|(i, _)| *i).collect();
                    for w in &mut self.witnesses {
                        w.table.record(guest.memory(), indices.clone());
                        w.asked = false;
                    }
                    self.table.record(guest.memory(), indices);
                    commit_output(guest, &output, changed);
                }
                if returned {
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
                st.checked += u64::from(checked);
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
                Ok(match (exit, thrown) {
                    (Some(code), _) => Answered::Exited(code),
                    (None, Some(exception)) => Answered::Threw(exception),
                    (None, None) => Answered::Returned,
                })
            }
            other => Err(abort(Cause::Protocol, format!("unexpected {other:?}"))),
        }
    }
}

/// Committed: what the function wrote goes out now, in order; then the closes and renumberings
/// held back to the commit (after the output the function wrote before them, as to a stdout it
/// then closed or replaced; checked against the table before, so only the device's own system
/// can fail one).
fn commit_output(guest: &mut Guest<'_, '_>, output: &[(u32, Vec<u8>)], changed: clonecloud_files::Applied<'_>) {
    for (fd, bytes) in output {
        if let Err(e) = guest.write_output(*fd, bytes) {
            warn!("cannot write the migrated function's output: {e}");
        }
    }
    if let Err(e) = changed.commit(&mut |op| guest.replay_fd(op).map_err(Into::into)) {
        warn!("a descriptor change of the migrated function could not be carried out: {e}");
    }
}

impl Offloader {
    /// Merges a thread's answer while the program's other threads are stopped: what the call
    /// read must be as it was when its state was taken (else [`Cause::Conflict`], and it runs
    /// here), then its file changes, its writes byte by byte, its globals; threads waiting on a
    /// word it wrote are woken. Memory grown both by the call and by another thread meanwhile is
    /// a conflict too, and so is any WASI call of another thread while the call was away (from
    /// before the directories were listed: the clone does not say what the call read of files).
    /// (A call that only asks memory's size, `memory.size`, is not checked against a growth
    /// meanwhile.)
    #[allow(clippy::too_many_arguments)]
    fn merge_thread(
        &mut self,
        guest: &mut Guest<'_, '_>,
        state: &clonecloud_wire::State,
        access: clonecloud_wire::Access,
        files: &[clonecloud_wire::FileOp],
        output: &[(u32, Vec<u8>)],
        unsure_above: Option<(u32, Option<u32>)>,
        descriptors: &Descriptors,
    ) -> Result<(), Abort> {
        let snapshot = self.snapshot.take().ok_or_else(|| abort(Cause::Internal, "a thread's migration without its snapshot"))?;
        if self.proxying.active() {
            return Err(abort(Cause::Unsupported, "a thread's migrated call called back into the device"));
        }
        // The pages as the call left them (XORed with what was agreed: the snapshot).
        let pages: Vec<(u32, Vec<u8>)> = state
            .memory
            .pages
            .iter()
            .map(|(i, p)| {
                let mut page = p.clone();
                if state.memory.xor {
                    let at = *i as usize * PAGE_SIZE;
                    for (k, b) in page.iter_mut().enumerate() {
                        *b ^= snapshot.get(at + k).copied().unwrap_or(0);
                    }
                }
                (*i, page)
            })
            .collect();
        let globals = convert::globals(state);
        let wasm_pages = state.memory.wasm_pages.max((snapshot.len() / 65536) as u32);
        if self.layout.memory_max_pages.is_some_and(|max| wasm_pages > max) {
            return Err(abort(Cause::Merge, format!("memory of {wasm_pages} pages, past the module's maximum")));
        }
        let dirs = self.target.dirs.clone();
        let grew = state.memory.wasm_pages as usize * 65536 > snapshot.len();
        let mark = self.wasi_mark;
        let check = |guest: &mut Guest<'_, '_>, memory: &[u8]| -> Result<(), Abort> {
            // What the call saw of files and descriptors was the device's when it left: another
            // thread's WASI call since may have changed it (the clone does not say what the call
            // read of them), so the answer is not believed.
            if guest.others_wasi_takes() != mark {
                return Err(abort(Cause::Conflict, "other threads made WASI calls while the call was away"));
            }
            // Memory another thread grew meanwhile matters to a call that grew it too (its
            // `memory.grow` answered the old size); the bytes past the snapshot it never saw.
            if memory.len() != snapshot.len() && grew {
                return Err(abort(Cause::Conflict, "the call grew memory, and so did another thread while it was away"));
            }
            clonecloud_exec::merge::first_conflict(memory, &snapshot, &access.reads).map_err(|e| match e {
                clonecloud_exec::merge::MergeError::Conflict { .. } => abort(Cause::Conflict, e),
                other => abort(Cause::Protocol, other),
            })
        };
        let merged = guest.merge_stopped(wasm_pages, check, |guest, memory| -> Result<(), Abort> {
            if let Some((next, dirfd)) = unsure_above
                && files.iter().any(|op| matches!(op, clonecloud_wire::FileOp::Fd(clonecloud_wire::FdOp::Open { .. })))
            {
                let got = dirfd.and_then(|d| guest.next_descriptor(d));
                if got != Some(next) {
                    return Err(abort(Cause::Merge, format!("the clone numbered a new descriptor {next}, but the device would give {got:?}")));
                }
            }
            descriptors.check_journal(files).map_err(|e| abort(Cause::Merge, e))?;
            let changed = clonecloud_files::apply(&dirs, files, &mut |op| guest.replay_fd(op).map_err(Into::into)).map_err(|e| abort(Cause::Merge, e))?;
            let sent: Vec<(u32, &[u8])> = pages.iter().map(|(i, p)| (*i, p.as_slice())).collect();
            let written = guest.set_globals(&globals).map_err(|e| abort(Cause::Merge, e)).and_then(|()| {
                clonecloud_exec::merge::write_masked(memory, &sent, &access.writes).map_err(|e| abort(Cause::Protocol, e))
            });
            match written {
                Ok(()) => {}
                Err(a) => {
                    let failed = changed.undo(&mut |op| guest.replay_fd(op).map_err(Into::into));
                    if failed > 0 {
                        warn!(failed, "the files of a failed merge could not all be put back");
                    }
                    return Err(a);
                }
            }
            commit_output(guest, output, changed);
            Ok(())
        });
        match merged.ok_or_else(|| abort(Cause::Internal, "a thread's merge in a program without threads"))? {
            Ok(()) => {}
            Err(a) if a.cause == Cause::Conflict && files.is_empty() => {
                // The clone's replica is known all the same (the snapshot and the call's pages):
                // the session goes on from it, and the call runs here.
                self.agreed(wasm_pages as usize * 65536, &pages);
                self.conflicted = true;
                return Err(a);
            }
            Err(a) => return Err(a),
        };
        let written = clonecloud_exec::merge::Written::new(&access.writes);
        guest.notify_written(|at, len| written.any(at, len));
        // What the clone's replica holds now: the snapshot, and the pages as the call left them.
        self.agreed(wasm_pages as usize * 65536, &pages);
        Ok(())
    }
}

impl Offloader {
    /// A thread's answer left the clone's replica (and each witness's, which gave the same) at
    /// the snapshot with `pages` as the call left them, `len` bytes of memory.
    fn agreed(&mut self, len: usize, pages: &[(u32, Vec<u8>)]) {
        self.table.applied(len, pages);
        for w in &mut self.witnesses {
            if std::mem::take(&mut w.asked) {
                w.table.applied(len, pages);
            }
        }
    }
}

impl From<clonecloud_exec::GrowFailure> for Abort {
    fn from(g: clonecloud_exec::GrowFailure) -> Abort {
        match g {
            clonecloud_exec::GrowFailure::Raced => abort(Cause::Conflict, "another thread grew memory while the call's merge grew it"),
            clonecloud_exec::GrowFailure::Refused(why) => abort(Cause::Merge, format!("memory cannot grow for the call's answer: {why}")),
        }
    }
}

/// How a migrated call ended on the clone, its state merged here.
#[derive(Debug)]
enum Answered {
    Returned,
    Exited(u32),
    /// It threw this exception (made here), which nothing in it caught.
    Threw(clonecloud_exec::Exception),
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
        let mut sent_again = 0;
        loop {
            let one = self.one_at_a_time.clone();
            let gate = one.as_ref().and_then(|o| o.turn(j));
            let turn = gate.as_ref().map(|g| g.wait());
            let answered = self.remote(guest, j, params, results);
            drop(turn);
            // A conflict (typically: another thread, or another thread's migration that merged
            // meanwhile, allocated from the one heap the call allocated from too): the point's
            // migrations go one at a time from now on, and this call goes again, in turn, on the
            // session it kept (or a new one when the call had changed files), up to
            // MAX_SENT_AGAIN times (a thread that keeps writing what the call reads makes it
            // conflict every time; one that allocated while starting soon stops); then it runs
            // here.
            if let (Err(a), Some(o)) = (&answered, &one)
                && a.cause == Cause::Conflict
                && sent_again < MAX_SENT_AGAIN
            {
                info!(point = %self.names[j], merged_meanwhile = o.merges() != self.merges_mark, "the call conflicted with another thread: this point's migrations go one at a time, and the call goes again");
                self.stats().conflict_sent_again(&self.names[j]);
                o.one_at_a_time(j);
                self.abandon(guest, Cause::Conflict);
                sent_again += 1;
                continue;
            }
            return self.answered(guest, j, params, results, answered);
        }
    }
}

impl Offloader {
    /// What a migration's answer does to the guest: merged (its results, exit or exception), or
    /// the call runs here.
    fn answered(&mut self, guest: &mut Guest<'_, '_>, j: usize, params: &[Val], results: &mut [Val], answered: Result<Answered, Abort>) -> wasmtime::Result<()> {
        match answered {
            Ok(Answered::Returned) => Ok(()),
            Ok(Answered::Exited(code)) => Err(guest.exit(code as i32)),
            // Merged: the exception goes on from the point, to whatever catches it here.
            Ok(Answered::Threw(exception)) => Err(guest.throw(exception)),
            Err(a) => {
                // Nothing of the guest changed: run it here, from the same entry state.
                info!(point = %self.names[j], cause = %a.cause, "offloading failed, running locally: {}", a.detail);
                let name = self.names[j].clone();
                self.stats().fallback(&name, a.cause, &a.detail);
                // Under --redundant, a point whose calls call back into the device cannot be
                // checked: after MAX_ESCAPES such calls it runs here, as one whose exceptions escape.
                let unchecked = a.cause == Cause::Unsupported && !self.witnesses.is_empty();
                if a.cause == Cause::Exception || unchecked {
                    let n = self.escapes.entry(j).or_insert(0);
                    *n += 1;
                    if *n == MAX_ESCAPES {
                        info!(point = %name, "calls of this point end in exceptions it does not catch: they run locally from now on");
                        self.stats().switched_local.push(name.clone());
                    }
                }
                self.abandon(guest, a.cause);
                guest.call_local(j, params, results)
            }
        }
    }

    /// After a migration failed: nothing of the guest changed, and the session ends unless the
    /// clone's replica is known.
    fn abandon(&mut self, guest: &mut Guest<'_, '_>, cause: Cause) {
        // Stdin gets back what proxied reads took (the guest's memory never changed).
        self.proxying.end(guest, false);
        // The core dropped the session (a failed migration leaves nothing agreed), telling the
        // clone: a cancel of a call still running there, a goodbye. Not after a thread's
        // conflict, whose answer left the replica in a known state.
        if !std::mem::take(&mut self.conflicted) {
            self.core.give_up(cause);
            self.farewell();
            if !self.core.has_session() {
                self.conn = None;
                self.table.reset();
            }
        }
        self.witnesses_give_up(cause);
        self.snapshot = None;
    }
}

impl Offloader {
    /// Sends what the core has left to tell the clone after giving a migration up; a send that
    /// fails is of no consequence (the connection is dropped next).
    fn farewell(&mut self) {
        while let Some(m) = self.core.poll_transmit() {
            if let Some(conn) = self.conn.as_mut()
                && let Err(e) = conn.send(&m)
            {
                debug!("telling the clone the session is over: {e}");
                break;
            }
        }
    }
}

impl Drop for Offloader {
    fn drop(&mut self) {
        if let (Some(goodbye), Some(conn)) = (self.core.close(), self.conn.as_mut()) {
            let _ = conn.send(&goodbye);
        }
        if let Some(conn) = self.conn.take() {
            conn.close();
        }
    }
}

/// Per point function of the original module `model` (with its call graph), the device API
/// functions its calls can reach: what [`Offloader::allow_device_calls`] takes.
pub fn device_reach(model: &clonecloud_model::Module, points: &[u32]) -> Vec<Vec<String>> {
    let imports: std::collections::HashMap<u32, String> = model
        .functions
        .iter()
        .filter_map(|f| match f.kind {
            clonecloud_model::FunctionKind::Imported { import } => {
                let i = &model.imports[import];
                clonecloud_model::device_api::is_device_api(&i.module, &i.name).then(|| (f.index, i.name.clone()))
            }
            clonecloud_model::FunctionKind::Defined { .. } => None,
        })
        .collect();
    points
        .iter()
        .map(|&p| if imports.is_empty() { Vec::new() } else { model.call_graph.reachable(p).into_iter().filter_map(|f| imports.get(&f).cloned()).collect() })
        .collect()
}

/// Whether two clones' answers to one migration leave the device in the same state: the same
/// results, exit and exception, globals, memory size and final contents of every page either
/// changed (a page's final contents: `memory` XOR the delta, or the page sent whole; `memory`
/// is the device's, or a thread's snapshot), output and file changes, and for a thread's call
/// the bytes it read and wrote (a clone that under-reports what the call read would hide a
/// conflict); what differs, when not.
fn same_answer(a: &ConnEvent, b: &ConnEvent, memory: &[u8]) -> Result<(), String> {
    let (
        ConnEvent::Returned { results: ra, state: sa, output: oa, files: fa, exit: ea, thrown: ta, access: xa, .. },
        ConnEvent::Returned { results: rb, state: sb, output: ob, files: fb, exit: eb, thrown: tb, access: xb, .. },
    ) = (a, b)
    else {
        return Err("not both answers".into());
    };
    let differ = |what: &str| Err(format!("{what} differ"));
    if ra != rb {
        return differ("the results");
    }
    if (ea, ta) != (eb, tb) {
        return differ("the exit or exception");
    }
    if sa.globals != sb.globals {
        return differ("the globals");
    }
    if sa.memory.wasm_pages != sb.memory.wasm_pages {
        return differ("the memory sizes");
    }
    let (Some(pa), Some(pb)) = (final_pages(&sa.memory, memory), final_pages(&sb.memory, memory)) else {
        return Err("a page comes twice in one answer".into());
    };
    if pa != pb {
        let pages: Vec<u32> = pa.keys().chain(pb.keys()).copied().filter(|i| pa.get(i) != pb.get(i)).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        return Err(format!("the memory contents differ (pages {pages:?}; xor {} {}, {} and {} pages sent)", sa.memory.xor, sb.memory.xor, sa.memory.pages.len(), sb.memory.pages.len()));
    }
    if oa != ob {
        return differ("the output");
    }
    if fa != fb {
        return differ("the file changes");
    }
    if xa != xb {
        return differ("the bytes the call read and wrote");
    }
    Ok(())
}

/// The pages `delta` changes, with their contents after it applies to `memory` (beyond its end,
/// zeros), leaving out those it leaves as they are; `None` when it gives a page twice.
fn final_pages(delta: &clonecloud_wire::PageDelta, memory: &[u8]) -> Option<std::collections::BTreeMap<u32, Vec<u8>>> {
    let size = delta.page_size as usize;
    let mut out = std::collections::BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, bytes) in &delta.pages {
        // A page given twice is refused by the merge too (it would not end as read here).
        if !seen.insert(*i) {
            return None;
        }
        let at = (*i as usize).saturating_mul(size);
        let mut now = memory.get(at..at.saturating_add(size)).map_or_else(|| vec![0; size], <[u8]>::to_vec);
        now.resize(size, 0);
        let after: Vec<u8> = if delta.xor { now.iter().zip(bytes).map(|(x, y)| x ^ y).collect() } else { bytes.clone() };
        if after != now {
            out.insert(*i, after);
        }
    }
    Some(out)
}

/// [`dial_clone`] to the clone of `t`, or, when it cannot be reached, to each of its others in
/// turn (each failure logged, those that fail dropped, the one that answers made the clone:
/// [`Target::fail_over`]); the first failure when none answers.
fn dial_any(t: &mut Target, compression: Compression, memory: Option<u32>) -> Result<Connection, Abort> {
    let first = match dial_clone(t, compression, memory) {
        Ok(c) => return Ok(c),
        Err(a) => a,
    };
    let mut why = first.detail.clone();
    while !t.others.is_empty() {
        let from = t.addr.clone();
        t.fail_over();
        info!("the clone at {from} cannot be reached ({why}): trying the clone at {}", t.addr);
        match dial_clone(t, compression, memory) {
            Ok(c) => return Ok(c),
            Err(a) => why = a.detail,
        }
    }
    // None answered: the last one tried stays the clone.
    Err(first)
}

/// A new authenticated connection to the clone of `t`, with its reply timeout and `compression`;
/// answers may describe a memory of at most `memory` wasm pages (the module's maximum), which
/// also bounds what one answer may decompress to.
fn dial_clone(t: &Target, compression: Compression, memory: Option<u32>) -> Result<Connection, Abort> {
    let mut conn = Connection::connect(t.addr.as_str(), Some(&t.identity), &t.server_key, t.connect_timeout).map_err(|e| {
        let mut a = net(e);
        if a.cause == Cause::Link {
            a.cause = Cause::Connect;
        }
        a
    })?;
    conn.set_timeout(Some(t.timeout));
    conn.set_compression(compression);
    if let Some(pages) = memory {
        conn.set_memory_maximum(pages, PAGE_SIZE as u32);
    }
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

/// The guest's state as captured for a migration.
struct Captured {
    state: State,
    descriptors: Descriptors,
    clocks: Clocks,
    pages_up: u64,
    raw_up: u64,
    /// The first descriptor number above the open ones, when the free ones are not all known,
    /// and a preopen to probe it with.
    unsure_above: Option<(u32, Option<u32>)>,
    took: Duration,
}

/// A replication of the directories under way.
struct Sync {
    t0: Instant,
    sent0: u64,
    received0: u64,
    entries: u64,
    files: u64,
    bytes: u64,
}

/// What one migration took, gathered while the core is driven.
#[derive(Debug, Default)]
struct Figures {
    io: Io,
    pages_up: u64,
    raw_up: u64,
    capture: Duration,
    unsure_above: Option<(u32, Option<u32>)>,
    /// The descriptor table the clone was given: its journal is checked against it.
    descriptors: Descriptors,
    /// The first capture: the round trip counts from there.
    started: Option<Instant>,
}

/// What a migration's messages took on the wire, over all its connections.
#[derive(Debug, Default)]
struct Io {
    sent: u64,
    received: u64,
    /// Imports run for the clone.
    proxied: u64,
}

/// Why the link could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Probe(#[from] clonecloud_wire::ProbeError),
}

/// A link as measured: round-trip time and throughput.
pub use clonecloud_wire::Link;

/// Measures the link to the clone with probes before any hello (the rules are
/// [`clonecloud_wire::LinkProbe`]'s; this moves its messages and tells it the time).
pub fn measure_link(t: &Target) -> Result<Link, ProbeError> {
    let mut conn = Connection::connect(t.addr.as_str(), Some(&t.identity), &t.server_key, t.connect_timeout)?;
    conn.set_timeout(Some(t.timeout));
    let mut probe = clonecloud_wire::LinkProbe::new(Instant::now());
    loop {
        while let Some(m) = probe.poll_transmit(Instant::now()) {
            conn.send(&m?)?;
        }
        if let Some(link) = probe.result() {
            return Ok(link);
        }
        let m = conn.recv()?;
        probe.handle_message(Instant::now(), m)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(pages: Vec<(u32, Vec<u8>)>, xor: bool) -> ConnEvent {
        ConnEvent::Returned {
            results: vec![clonecloud_wire::Value::I32(1)],
            state: State { globals: vec![], memory: clonecloud_wire::PageDelta { wasm_pages: 1, page_size: PAGE_SIZE as u32, pages, xor } },
            micros: 0,
            output: vec![],
            files: vec![],
            exit: None,
            freed: 0,
            thrown: None,
            access: None,
        }
    }

    #[test]
    fn answers_are_compared_by_what_they_leave_in_memory() {
        let memory: Vec<u8> = (0..2 * PAGE_SIZE).map(|i| i as u8).collect();
        let mut new = memory[..PAGE_SIZE].to_vec();
        new[7] = 0xEE;
        let xor: Vec<u8> = new.iter().zip(&memory).map(|(a, b)| a ^ b).collect();
        // The same page as an XOR delta and whole: equal; a page sent unchanged counts as none.
        assert_eq!(same_answer(&answer(vec![(0, xor.clone())], true), &answer(vec![(0, new.clone())], false), &memory), Ok(()));
        assert_eq!(same_answer(&answer(vec![(0, new.clone()), (1, memory[PAGE_SIZE..].to_vec())], false), &answer(vec![(0, new.clone())], false), &memory), Ok(()));
        // A page given twice (garbage, then the honest delta) is refused, not read as its last.
        let garbage = vec![0x55; PAGE_SIZE];
        let twice = answer(vec![(0, garbage), (0, xor.clone())], true);
        assert!(same_answer(&twice, &answer(vec![(0, xor)], true), &memory).unwrap_err().contains("twice"));
        // One byte apart.
        let mut other = new.clone();
        other[8] ^= 1;
        assert!(same_answer(&answer(vec![(0, new)], false), &answer(vec![(0, other)], false), &memory).unwrap_err().contains("pages [0]"));
    }

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
