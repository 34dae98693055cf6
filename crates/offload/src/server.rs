//! The clone server: accepts devices on its allow list, keeps the modules they sent (by content
//! hash, so a module travels once), and per session one replica of the device's thread in which
//! migrated functions run. A replica lives as long as its session: it is dropped when the run
//! says goodbye, when the link goes quiet past the idle timeout, or after a failed migration
//! (the device then starts over from the zero baseline).

use crate::convert;
use clonecloud_exec::state::PAGE_SIZE;
use clonecloud_exec::heap::HeapHint;
use clonecloud_exec::{ExecError, ModuleCache, new_clone_engine};
use clonecloud_replica::{CallError, Delta, DeviceBudget, Ended, ImportProxy, Limits, OverDeviceLimit, OverLimit, Replica};
use clonecloud_net::{Connection, Identity, Listener, NetError, AllowList};
use clonecloud_files::{Fs, Store};
use clonecloud_wire::{Clocks, CloneConfig, CloneConn, CloneConnEvent, Compression, ContentHash, Descriptors, Ending, FailKind, Returned, Thrown};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use wasmtime::{Engine, Module, Val};

/// The native stack of a session thread: migrated functions run on it.
const SESSION_STACK: usize = 64 << 20;

/// What every session of a server shares.
#[derive(Debug)]
pub struct Clone {
    engine: Engine,
    cache: ModuleCache,
    /// Per device key: the modules it uploaded itself, compiled, with where their allocator
    /// keeps its state and their points, the most recently used first (a device never learns
    /// which modules other devices ran, nor can it put its own module in another's place: it is
    /// asked for the bytes of any module it has not sent).
    modules: Mutex<HashMap<String, Vec<(ContentHash, Loaded)>>>,
    idle: Duration,
    limits: Limits,
    /// Where replicated files are kept, a directory per device.
    files: std::path::PathBuf,
    stores: Mutex<HashMap<String, Arc<Store>>>,
    /// The secret each device's file store is sealed with is derived from.
    secret: [u8; 32],
    /// Bytes each device's file store may hold on disk.
    max_store: std::sync::atomic::AtomicU64,
    /// Per device key (the whole key, [`clonecloud_net::PublicKey::id`]): sessions open now,
    /// those waiting to be resumed included, and the most allowed at once.
    running: Mutex<HashMap<String, usize>>,
    /// Per device key: what all its replicas may hold together in memories and tables.
    budgets: Mutex<HashMap<String, Arc<DeviceBudget>>>,
    max_device_memory: AtomicUsize,
    /// Signalled when a session gives its slot back.
    run_freed: Condvar,
    max_runs: AtomicUsize,
    /// Sessions that a new connection may resume, by device key and run.
    resumable: Mutex<HashMap<(String, u64), Arc<Handoff>>>,
    /// Connections not yet authenticated, oldest first.
    pending: Admission,
    max_pending: AtomicUsize,
    /// Milliseconds from `accept` to the device's first message, TLS handshake included.
    handshake_timeout: AtomicU64,
    /// Sessions open now (all devices, waiting ones included), and the most allowed at once.
    sessions: AtomicUsize,
    max_sessions: AtomicUsize,
    /// Migrated calls stopped because the device no longer awaited them.
    stopped: AtomicU64,
}

/// Connections that have not authenticated yet, by the order they arrived. Each has a thread
/// doing its handshake; at most `max_pending` are live, and a new one past that breaks the
/// oldest (whose thread then ends at once, its socket shut down).
#[derive(Debug, Default)]
struct Admission {
    state: Mutex<PendingConns>,
    /// Signalled when a pending connection's thread is done with it.
    left: Condvar,
}

#[derive(Debug, Default)]
struct PendingConns {
    next: u64,
    /// Ticket, and the breaker while the connection has not been broken yet.
    conns: VecDeque<(u64, Option<clonecloud_net::Breaker>)>,
}

/// A connection's place among the pending ones, given up when dropped.
struct Pending<'a> {
    admission: &'a Admission,
    ticket: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut p = self.admission.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = p.conns.iter().position(|(t, _)| *t == self.ticket) {
            p.conns.remove(k);
        }
        drop(p);
        self.admission.left.notify_all();
    }
}

impl Admission {
    /// Admits a new connection (broken by `breaker`) with `max` live pending ones at most:
    /// past that the oldest live one is broken. Waits only while the threads of broken
    /// connections (which end at once) would make more than twice `max`. Returns the new
    /// connection's ticket, for its [`Pending`].
    fn admit(&self, breaker: clonecloud_net::Breaker, max: usize) -> u64 {
        let mut p = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let live = p.conns.iter().filter(|(_, b)| b.is_some()).count();
        if live >= max {
            for (t, b) in p.conns.iter_mut().filter(|(_, b)| b.is_some()).take(live + 1 - max) {
                debug!(ticket = *t, "too many connections pending: the oldest is dropped");
                if let Some(b) = b.take() {
                    b.break_now();
                }
            }
        }
        while p.conns.len() >= 2 * max {
            p = self.left.wait_timeout(p, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
        }
        let ticket = p.next;
        p.next += 1;
        p.conns.push_back((ticket, Some(breaker)));
        ticket
    }
}

/// Connections not yet authenticated, by default (see [`Clone::set_max_pending`]).
pub const DEFAULT_MAX_PENDING: usize = 64;
/// From `accept` to the device's first message, by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions open at once, all devices together, by default.
pub const DEFAULT_MAX_SESSIONS: usize = 256;

/// A session counted among the server's, while it lives.
struct SessionSlot<'a> {
    clone: &'a Clone,
}

impl Drop for SessionSlot<'_> {
    fn drop(&mut self) {
        self.clone.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A new directory under the system's temporary one that only this user can enter, with a
/// name nobody can guess ahead (made with `mkdir`, which follows no link and fails on a name
/// that exists, so another user cannot plant one).
fn private_temp_dir() -> Result<std::path::PathBuf, ServeError> {
    use std::hash::{BuildHasher, Hasher};
    use std::os::unix::fs::DirBuilderExt;
    let mut last = None;
    for _ in 0..16 {
        // RandomState is seeded from the OS's randomness.
        let n = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let dir = std::env::temp_dir().join(format!("clonecloud-clone-files-{n:016x}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = Some((dir, e)),
        }
    }
    let (dir, e) = last.expect("tried");
    Err(ServeError::Data { path: dir, source: e })
}

/// The purpose a server's file-store secret is derived from its identity for.
pub const STORE_SECRET: &str = "clonecloud file store v1";

/// Bytes of file contents kept on disk per device, by default.
pub const DEFAULT_MAX_STORE: u64 = 1 << 30;

/// Compiled modules kept in memory per device (besides those its runs are using).
const MODULES_PER_DEVICE: usize = 4;

/// A device's replicas together may hold this many times what one replica may (its memory,
/// counted twice with the copy it agrees with the device, and its host limit), by default.
pub const DEVICE_MEMORY_FACTOR: usize = 2;

/// Sessions of one device open at once, by default.
pub const DEFAULT_MAX_RUNS: usize = 16;

/// A device's open session, counted while it lives.
struct RunSlot<'a> {
    clone: &'a Clone,
    device: String,
}

impl Drop for RunSlot<'_> {
    fn drop(&mut self) {
        let mut running = self.clone.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.device) {
            *n = n.saturating_sub(1);
        }
        self.clone.run_freed.notify_all();
    }
}

/// How long a new session of a device at its limit waits for a session of it that waits to be
/// resumed to give way.
const RUN_SLOT_WAIT: Duration = Duration::from_secs(1);

impl Clone {
    pub fn new(cache: ModuleCache, idle: Duration) -> Result<Arc<Clone>, ServeError> {
        Clone::with_limits(cache, idle, Limits::default())
    }

    /// A server whose migrated calls may use at most `limits` each (past them the device runs
    /// the call itself).
    /// Replicated files go to a new private directory under the system's temporary one.
    pub fn with_limits(cache: ModuleCache, idle: Duration, limits: Limits) -> Result<Arc<Clone>, ServeError> {
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| ServeError::Data { path: std::env::temp_dir(), source: std::io::Error::other("no randomness for the store's key") })?;
        Clone::with_files(cache, idle, limits, private_temp_dir()?, secret)
    }

    /// A server that keeps replicated files under `files` (a directory per device key, sealed
    /// with a key derived from `secret` and the device's key), so they travel once and serve
    /// later runs too. Pass the same secret on every start (see `Identity::derive_secret`) for
    /// the files to be found again.
    pub fn with_files(cache: ModuleCache, idle: Duration, limits: Limits, files: std::path::PathBuf, secret: [u8; 32]) -> Result<Arc<Clone>, ServeError> {
        Ok(Arc::new(Clone {
            engine: new_clone_engine()?,
            cache,
            modules: Mutex::new(HashMap::new()),
            idle,
            limits,
            files,
            stores: Mutex::new(HashMap::new()),
            secret,
            max_store: std::sync::atomic::AtomicU64::new(DEFAULT_MAX_STORE),
            running: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
            max_device_memory: AtomicUsize::new(limits.memory.saturating_mul(2).saturating_add(limits.host).saturating_mul(DEVICE_MEMORY_FACTOR)),
            run_freed: Condvar::new(),
            max_runs: AtomicUsize::new(DEFAULT_MAX_RUNS),
            resumable: Mutex::new(HashMap::new()),
            pending: Admission::default(),
            max_pending: AtomicUsize::new(DEFAULT_MAX_PENDING),
            handshake_timeout: AtomicU64::new(DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64),
            sessions: AtomicUsize::new(0),
            max_sessions: AtomicUsize::new(DEFAULT_MAX_SESSIONS),
            stopped: AtomicU64::new(0),
        }))
    }

    /// How many migrated calls were stopped because their device no longer awaited them (it
    /// cancelled them, or its link broke and no resume came).
    pub fn calls_stopped(&self) -> u64 {
        self.stopped.load(Ordering::Relaxed)
    }

    /// At most `n` sessions of one device key at once (those waiting for the device to resume
    /// them included, though the one that has waited longest gives way to a new session of the
    /// same device); more are refused with an error.
    pub fn set_max_runs(&self, n: usize) {
        self.max_runs.store(n.max(1), Ordering::Relaxed);
    }

    /// At most `bytes` for all of one device's replicas together, their memories and tables and
    /// what they hold on the host (files written on the clone, journals, output); a memory
    /// counts twice (the replica keeps a copy of what it agreed with the device). Default:
    /// [`DEVICE_MEMORY_FACTOR`] times what one replica may hold. A device with many runs at
    /// once shares it; a call that would go past it fails on the clone and runs on the device.
    pub fn set_max_device_memory(&self, bytes: usize) {
        self.max_device_memory.store(bytes, Ordering::Relaxed);
    }

    /// The budget all of `device`'s replicas share.
    fn device_budget(&self, device: &str) -> Arc<DeviceBudget> {
        let mut all = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(device.to_string()).or_insert_with(|| DeviceBudget::new(self.max_device_memory.load(Ordering::Relaxed) as u64)).clone()
    }

    /// At most `n` connections that have not authenticated (sent their first message) at
    /// once: a new one past that drops the oldest. A flood of connections then holds at most
    /// `n` descriptors and `2n` threads here, and an honest device's handshake goes through
    /// as long as fewer than `n` connections arrive while it runs.
    pub fn set_max_pending(&self, n: usize) {
        self.max_pending.store(n.max(1), Ordering::Relaxed);
    }

    /// From `accept` to the device's first message (the TLS handshake and the hello, resume or
    /// probe) takes at most `t` in all, however slowly the peer sends.
    pub fn set_handshake_timeout(&self, t: Duration) {
        self.handshake_timeout.store((t.as_millis() as u64).max(1), Ordering::Relaxed);
    }

    /// At most `n` sessions at once, all devices together (each holds a thread and a replica);
    /// more are refused with an error (the device runs its calls locally).
    pub fn set_max_sessions(&self, n: usize) {
        self.max_sessions.store(n.max(1), Ordering::Relaxed);
    }

    fn start_session(&self) -> Option<SessionSlot<'_>> {
        let max = self.max_sessions.load(Ordering::Relaxed);
        self.sessions.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).ok()?;
        Some(SessionSlot { clone: self })
    }

    /// A slot among the device's sessions. At its limit, the session of the device that has
    /// waited longest to be resumed (its link broke; it runs nothing) gives way: the device
    /// that comes back for it starts over (nothing is lost), and a device whose links keep
    /// breaking is not locked out by its own waiting sessions. Only sessions that are running
    /// or holding a connection count against a new one.
    fn start_run(&self, device: &str) -> Option<RunSlot<'_>> {
        // A session whose link just broke may not be waiting yet: look again until then.
        let deadline = Instant::now() + RUN_SLOT_WAIT;
        loop {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let n = running.entry(device.to_string()).or_default();
            if *n < self.max_runs.load(Ordering::Relaxed) {
                *n += 1;
                return Some(RunSlot { clone: self, device: device.to_string() });
            }
            drop(running);
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.give_way(device);
            let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            // Woken when a slot is given back (or soon after, to look again).
            let _ = self.run_freed.wait_timeout(running, (deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// Ends the device's session that has waited longest to be resumed, if one waits.
    fn give_way(&self, device: &str) {
        let all = self.resumable.lock().unwrap_or_else(|e| e.into_inner());
        let waiting = all.iter().filter(|((d, _), _)| d == device).filter_map(|(_, h)| Some((h.waiting_since()?, h)));
        if let Some((_, oldest)) = waiting.min_by_key(|(since, _)| *since)
            && !oldest.superseded.load(Ordering::Relaxed)
        {
            debug!(%device, "the device is at its limit of sessions: the one that waited longest to be resumed gives way");
            oldest.supersede();
        }
    }

    /// At most `bytes` of file contents kept on disk per device; past it the least recently
    /// used are dropped (and sent again when a run needs them).
    pub fn set_max_store(&self, bytes: u64) {
        self.max_store.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// The file store of the device with this key (its whole key in hex).
    fn store(&self, device: &str) -> Result<Arc<Store>, SessionError> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stores.get(device) {
            return Ok(s.clone());
        }
        let dir = self.files.join(device.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        let key = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.secret), device.as_bytes());
        let key: [u8; 32] = key.as_ref().try_into().expect("HMAC-SHA256 has 32 bytes");
        let limit = self.max_store.load(std::sync::atomic::Ordering::Relaxed);
        let s = Arc::new(Store::open(dir.clone(), &key, limit).map_err(|source| SessionError::Store { path: dir, source })?);
        stores.insert(device.to_string(), s.clone());
        Ok(s)
    }

    /// The module `device` uploaded with this hash, if it is still kept.
    fn module(&self, device: &str, hash: &ContentHash) -> Option<Loaded> {
        let mut all = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        let mine = all.get_mut(device)?;
        let at = mine.iter().position(|(h, _)| h == hash)?;
        let entry = mine.remove(at);
        let loaded = entry.1.clone();
        mine.insert(0, entry);
        Some(loaded)
    }

    /// Keeps `loaded` as the module `device` uploaded with this hash, dropping its least
    /// recently used beyond [`MODULES_PER_DEVICE`] (runs using them keep their own reference).
    fn keep_module(&self, device: &str, hash: ContentHash, loaded: Loaded) {
        let mut all = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        let mine = all.entry(device.to_string()).or_default();
        mine.retain(|(h, _)| *h != hash);
        mine.insert(0, (hash, loaded));
        mine.truncate(MODULES_PER_DEVICE);
    }

    /// Accepts devices on `listener`, for ever: each connection on a thread of its own, at most
    /// `--max-pending` of them not yet authenticated (a new one past that drops the oldest) and
    /// each given one deadline for its handshake and first message; at most `--max-sessions`
    /// sessions. A failed `accept` (out of descriptors, say) backs off, 10 ms doubling to 1 s,
    /// and goes on.
    pub fn serve(self: &Arc<Clone>, listener: Listener) -> std::convert::Infallible {
        info!(addr = %listener.local_addr(), "clone serving");
        let mut backoff: Option<Duration> = None;
        loop {
            let incoming = match listener.incoming() {
                Ok(i) => i,
                Err(e) => {
                    let wait = backoff.map_or(ACCEPT_BACKOFF_FIRST, |b| (b * 2).min(ACCEPT_BACKOFF_MAX));
                    backoff = Some(wait);
                    warn!("{e}; accepting again in {wait:?}");
                    std::thread::sleep(wait);
                    continue;
                }
            };
            let deadline = Instant::now() + Duration::from_millis(self.handshake_timeout.load(Ordering::Relaxed));
            let Some(breaker) = incoming.breaker() else {
                // Out of descriptors: this connection is closed, and the next accept waits.
                let wait = backoff.map_or(ACCEPT_BACKOFF_FIRST, |b| (b * 2).min(ACCEPT_BACKOFF_MAX));
                backoff = Some(wait);
                warn!(from = %incoming.from, "cannot keep a connection (out of descriptors?); accepting again in {wait:?}");
                drop(incoming);
                std::thread::sleep(wait);
                continue;
            };
            backoff = None;
            let ticket = self.pending.admit(breaker, self.max_pending.load(Ordering::Relaxed));
            let me = self.clone();
            let spawned = std::thread::Builder::new().name("session".into()).stack_size(SESSION_STACK).spawn(move || {
                let pending = Pending { admission: &me.pending, ticket };
                let from = incoming.from;
                match incoming.accept_by(deadline) {
                    Ok(conn) => {
                        let device = conn.peer().id();
                        let short = conn.peer().fingerprint();
                        info!(%from, device = %short, "device connected");
                        match me.session(conn, deadline, pending) {
                            Ok(()) => debug!(device = %short, "session ended"),
                            Err(e) => warn!(device = %short, full_key = %device, "session ended: {e}"),
                        }
                    }
                    Err(e) => debug!(%from, "refused a connection: {e}"),
                }
            });
            if let Err(e) = spawned {
                drop(Pending { admission: &self.pending, ticket });
                warn!("cannot start a session thread: {e}");
                std::thread::sleep(ACCEPT_BACKOFF_FIRST);
            }
        }
    }

    /// The protocol core's figures for one session.
    fn core(&self) -> CloneConn {
        CloneConn::new(CloneConfig { max_module: self.limits.module, resume_window: self.idle.min(RESUME_WINDOW) })
    }

    /// One connection, to its end: a session of its own, or (after a `resume`) handed to the
    /// session it resumes. The protocol's rules are the core's ([`CloneConn`]); this loop moves
    /// its messages and acts on its events (a replica, the store, the module cache, the
    /// registry of resumable sessions).
    /// `pending` is the connection's place among those not yet authenticated, given up at its
    /// first message, which must arrive by `deadline`.
    fn session(&self, mut conn: Connection, deadline: Instant, pending: Pending<'_>) -> Result<(), SessionError> {
        conn.set_timeout(Some(self.idle));
        // Until a session opens, only a probe, a hello or a resume may come: small frames.
        conn.set_max_frame(BEFORE_SESSION_MAX_FRAME);
        let device = conn.peer().id();
        let mut core = self.core();
        conn.set_deadline(Some(deadline));
        let first = match conn.recv() {
            Ok(m) => m,
            Err(NetError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        conn.set_deadline(None);
        // A session from here on (a resume hands the connection to its own and ends this thread).
        drop(pending);
        core.handle_message(Instant::now(), first);
        let mut first = core.poll_event();
        if let Some(CloneConnEvent::Ended(ending)) = first {
            while let Some(m) = core.poll_transmit() {
                let _ = conn.send(&m);
            }
            return ended(ending);
        }
        if let Some(CloneConnEvent::ResumeWanted { run, awaiting }) = first {
            match self.hand_over(&device, run, Resumption { conn, awaiting }) {
                None => return Ok(()),
                Some(back) => {
                    // Nothing to resume: a new session on this connection.
                    conn = back.conn;
                    core.refuse_resume();
                    first = None;
                }
            }
        }
        let mut result = Ok(());
        let mut next = Some((conn, core, first));
        while let Some((conn, core, first)) = next.take() {
            let (r, leftover) = self.serve_connection(&device, conn, core, first);
            result = r;
            // A resume handed to the session as it ended (its window closing, a new session of
            // the same device taking its place): the device is told there is nothing to
            // resume, and its connection starts a new session, as any refused resume does.
            if let Some(Resumption { mut conn, awaiting }) = leftover {
                debug!(%device, ?awaiting, "a resume reached a session as it ended: a new session on its connection");
                let mut core = self.core();
                core.handle_resume(Instant::now(), &awaiting);
                let reset = core.poll_event();
                debug_assert!(matches!(reset, Some(CloneConnEvent::Reset)));
                conn.set_timeout(Some(self.idle));
                conn.set_max_frame(BEFORE_SESSION_MAX_FRAME);
                next = Some((conn, core, None));
            }
        }
        result
    }

    /// A connection's sessions (a new one after a refused resume or a reset), to the end:
    /// why it ended, and a resume that was handed to it as it ended.
    fn serve_connection(&self, device: &str, conn: Connection, core: CloneConn, first: Option<CloneConnEvent>) -> (Result<(), SessionError>, Option<Resumption>) {
        let store = match self.store(device) {
            Ok(s) => s,
            Err(e) => return (Err(e), None),
        };
        // Shared with the replica's import proxy, which talks to the device during a call.
        let wire = Arc::new(Mutex::new(Wire { conn, core }));
        let budget = self.device_budget(device);
        let mut run = Run { budget, device: device.to_string(), _session: None, _slot: None, registration: None, hash: None, module: None, replica: None, environment: Default::default(), files: None };
        let result = self.drive(&wire, &mut run, &store, first);
        // Taken out of the registry before the session's slots are given back: from here on,
        // a resume of this run finds nothing to hand itself to.
        let leftover = run.registration.take().and_then(Registration::close);
        drop(run);
        (result, leftover)
    }

    /// The session loop: moves the core's messages and acts on its events.
    fn drive<'a>(&'a self, wire: &Arc<Mutex<Wire>>, run: &mut Run<'a>, store: &Arc<Store>, mut first: Option<CloneConnEvent>) -> Result<(), SessionError> {
        let lock = || wire.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            lock().flush();
            // (A statement of its own: the lock is not held while waiting.)
            let polled = first.take().or_else(|| lock().core.poll_event());
            let Some(event) = polled else {
                self.wait(wire, run);
                continue;
            };
            match event {
                CloneConnEvent::Opened { module, run: id, environment, .. } => {
                    // Only an opened session holds a slot (a connection that only probes, none).
                    if run._session.is_none() {
                        run._session = self.start_session();
                        if run._session.is_none() {
                            let limit = self.max_sessions.load(Ordering::Relaxed);
                            lock().core.refuse(format!("this clone already serves {limit} sessions, the most it may at once"));
                            continue;
                        }
                    }
                    if run._slot.is_none() {
                        // (A statement of its own: the lock is not held while waiting for a slot.)
                        run._slot = self.start_run(&run.device);
                        if run._slot.is_none() {
                            let limit = self.max_runs.load(Ordering::Relaxed);
                            lock().core.refuse(format!("this device already has {limit} runs on this clone, the most it may have at once"));
                            continue;
                        }
                    }
                    run.hash = Some(module);
                    run.environment = environment;
                    // Only a module this device sent itself counts as known to it.
                    run.module = self.module(&run.device, &module);
                    let mut w = lock();
                    // A session: migrations carry up to a replica's memory.
                    w.conn.set_max_frame(self.max_frame());
                    run.registration = Some(self.register(&run.device, id, &w.conn));
                    w.core.welcome(run.module.is_some());
                }
                CloneConnEvent::Module { bytes } => {
                    let want = run.hash.expect("a module only follows a hello");
                    // A multi-threaded module runs instrumented (its replicas say which bytes
                    // each call read and wrote), and that is what is compiled and kept.
                    let compiled = clonecloud_replica::clone_module(&bytes).map_err(|e| format!("cannot instrument the multi-threaded module: {e}"));
                    match compiled.and_then(|c| self.cache.load_or_compile_for(&self.engine, &c, &run.device).map_err(|e| format!("cannot compile the module: {e}"))) {
                        Ok(m) => {
                            // The module compiled, so it is valid: the model reads it too.
                            let model = clonecloud_model::Module::parse_without_call_graph(&bytes).ok();
                            let hint = model.map(|model| HeapHint::of(&model, &bytes)).unwrap_or_default();
                            // A module without the rewriter's list of points has none to run.
                            let points = clonecloud_model::rewritten_points(&bytes).unwrap_or_default().into();
                            let entry = Loaded { module: m, hint, points };
                            self.keep_module(&run.device, want, entry.clone());
                            run.module = Some(entry);
                            lock().core.module_loaded();
                        }
                        Err(e) => lock().core.refuse(e),
                    }
                }
                CloneConnEvent::Files { trees } => {
                    let fs = Fs::new(trees, Some(store.clone()));
                    match run.replica.as_mut() {
                        Some(r) => r.set_files(fs),
                        None => run.files = Some(fs),
                    }
                    lock().core.need_files(|h| !store.has(h));
                }
                CloneConnEvent::FileData { hash, bytes } => {
                    if let Err(e) = store.put(&hash, &bytes) {
                        lock().core.refuse(format!("cannot keep a file: {e}"));
                    }
                }
                CloneConnEvent::Migrate { point, args, state, clocks, descriptors, .. } => {
                    let loaded = run.module.as_ref().expect("a migration follows the module");
                    let started = Instant::now();
                    // XOR deltas pay off only compressed: use them when the device compresses.
                    let xor = lock().conn.peer_compression() != Compression::None;
                    let m = Migration { point, args: &args, state: &state, xor, clocks, descriptors: &descriptors };
                    let handoff = run.registration.as_ref().map(|r| r.handoff.clone());
                    let link = DeviceLink { wire: wire.clone(), handoff, broke: None, window: self.idle.min(RESUME_WINDOW) };
                    match self.run(loaded, &mut run.replica, &mut run.files, &run.environment, &run.budget, m, link) {
                        Ok(mut ret) => {
                            ret.micros = started.elapsed().as_micros() as u64;
                            lock().core.returned(ret);
                        }
                        // The link to the device failed inside the call: the session is over.
                        Err(Failure::LinkLost(p)) => return Err(SessionError::LinkLost(p)),
                        Err(Failure::Abandoned) => {
                            self.stopped.fetch_add(1, Ordering::Relaxed);
                            let mut w = lock();
                            // The device cancelled it (the core knows, and drops the replica) or broke
                            // the protocol (the session is over), or its link broke and no resume
                            // came in the window: the session is over.
                            if w.core.is_running() {
                                info!(device = %run.device, point, "the link broke during the call and no resume came: stopped");
                                w.core.handle_not_resumed();
                            } else {
                                debug!(device = %run.device, point, "the device gave the call up (or broke the protocol): stopped");
                            }
                        }
                        Err(Failure::Answer(kind, message)) => {
                            debug!(point, ?kind, "migration failed: {message}");
                            lock().core.failed(kind, message);
                        }
                    }
                }
                // The replica may be half-way through: the device starts over.
                CloneConnEvent::DropReplica => run.replica = None,
                CloneConnEvent::ImportReturned { .. } => lock().core.refuse("no import call is pending".into()),
                // Only after a refused resume: this connection has no other session to join.
                CloneConnEvent::ResumeWanted { .. } => lock().core.refuse_resume(),
                CloneConnEvent::Reset => {
                    info!(device = %run.device, "a resume for an answer this session does not hold: a new session");
                    run.reset();
                    lock().conn.set_max_frame(BEFORE_SESSION_MAX_FRAME);
                }
                CloneConnEvent::Ended(ending) => {
                    lock().flush();
                    return ended(ending);
                }
            }
        }
    }

    /// Nothing to send or act on: the next message from the device, or, while the link is
    /// broken, a new connection resuming the session (until the core's window closes).
    fn wait<'a>(&'a self, wire: &Arc<Mutex<Wire>>, run: &mut Run<'a>) {
        let mut w = wire.lock().unwrap_or_else(|e| e.into_inner());
        let Some(until) = w.core.awaits_resume() else {
            match w.conn.recv() {
                Ok(m) => w.core.handle_message(Instant::now(), m),
                Err(e) => w.broken(&e),
            }
            if w.core.awaits_resume().is_some() {
                debug!(device = %run.device, "the link broke; the session waits to be resumed");
            }
            return;
        };
        drop(w);
        // A session waiting to be resumed still counts among the device's runs and the
        // server's sessions (it holds its replica and its thread).
        let resumption = run.registration.as_ref().and_then(|r| r.wait(until.saturating_duration_since(Instant::now())));
        let mut w = wire.lock().unwrap_or_else(|e| e.into_inner());
        let Some(Resumption { mut conn, awaiting }) = resumption else {
            debug!(device = %run.device, "not resumed: the session is over");
            return w.core.handle_not_resumed();
        };
        conn.set_timeout(Some(self.idle));
        conn.set_max_frame(self.max_frame());
        w.conn = conn;
        if w.core.handle_resume(Instant::now(), &awaiting) {
            info!(device = %run.device, ?awaiting, "session resumed on a new connection");
            if let Some(r) = run.registration.as_ref() {
                r.rebind(&w.conn);
            }
        }
    }

    /// Makes the session of `device`'s run `id` resumable on a new connection (replacing an
    /// earlier session of that run, which ends).
    fn register(&self, device: &str, id: u64, conn: &Connection) -> Registration<'_> {
        let handoff = Arc::new(Handoff::default());
        handoff.rebind(conn);
        let key = (device.to_string(), id);
        let mut all = self.resumable.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = all.insert(key.clone(), handoff.clone()) {
            old.supersede();
        }
        Registration { clone: self, key, handoff }
    }

    /// Hands `conn` (a resume of `device`'s run `id`, awaiting some of its migrations) to that
    /// run's session; gives it back when there is none.
    fn hand_over(&self, device: &str, id: u64, r: Resumption) -> Option<Resumption> {
        let all = self.resumable.lock().unwrap_or_else(|e| e.into_inner());
        let Some(h) = all.get(&(device.to_string(), id)) else { return Some(r) };
        debug!(%device, awaiting = ?r.awaiting, "a resume: handing the connection to its session");
        h.deliver(r);
        None
    }

    fn max_frame(&self) -> usize {
        // A migration carries at most the memory a replica may have (and a module at most the
        // module limit), with room for framing and arguments.
        self.limits.memory.max(self.limits.module).saturating_add(MAX_FRAME_SLACK)
    }

    /// Applies the device's state, runs `point`, and captures what changed.
    fn run(
        &self,
        loaded: &Loaded,
        replica: &mut Option<Replica>,
        files: &mut Option<Fs>,
        environment: &clonecloud_wire::Environment,
        budget: &Arc<DeviceBudget>,
        m: Migration<'_>,
        link: DeviceLink,
    ) -> Result<Returned, Failure> {
        let Migration { point, args, state, xor, clocks, descriptors } = m;
        let unavailable = |e: String| Failure::Answer(FailKind::Unavailable, e);
        if replica.is_none() {
            let (args, env) = (environment.args.clone(), environment.env.clone());
            let mut r = Replica::with_limits(&self.engine, &loaded.module, loaded.points.clone(), self.limits, Some(budget.clone()), args, env).map_err(|e| {
                // Its memory at instantiation may be over a limit already.
                let over = matches!(&e, ExecError::Runtime(w) if w.is::<OverLimit>() || w.is::<OverDeviceLimit>());
                Failure::Answer(if over { FailKind::ResourceLimit } else { FailKind::Unavailable }, e.to_string())
            })?;
            r.set_heap_hint(loaded.hint.clone());
            *replica = Some(r);
        }
        let r = replica.as_mut().expect("made above");
        if let Some(fs) = files.take() {
            r.set_files(fs);
        }
        if state.memory.page_size as usize != PAGE_SIZE && !state.memory.pages.is_empty() {
            return Err(unavailable(format!("pages of {} bytes, this clone uses {PAGE_SIZE}", state.memory.page_size)));
        }
        r.apply(state.memory.wasm_pages, &state.memory.pages, state.memory.xor, &convert::globals(state))
            .map_err(|e| Failure::Answer(FailKind::ResourceLimit, e.to_string()))?;
        let n = r.result_count(point).ok_or_else(|| unavailable(format!("no migration point {point}")))?;
        let mut results = vec![Val::I32(0); n];
        r.set_proxy(Some(Box::new(link)), xor);
        let called = r.call(point, &convert::values_from_wire(args), &mut results, clocks, descriptors);
        r.take_proxy();
        let ended = called.map_err(|e| match e {
            CallError::Proxy(p) => Failure::LinkLost(p),
            CallError::Abandoned => Failure::Abandoned,
            CallError::Trap(t) => Failure::Answer(FailKind::Trap, t.to_string()),
            e @ CallError::Exception => Failure::Answer(FailKind::Exception, e.to_string()),
            e @ (CallError::Deadline(_) | CallError::Memory(_) | CallError::DeviceMemory(_) | CallError::Host(_) | CallError::ProxyAnswer(_)) => {
                Failure::Answer(FailKind::ResourceLimit, e.to_string())
            }
            e => unavailable(e.to_string()),
        })?;
        let (files, output) = r.finish().map_err(|e| match e {
            e @ (clonecloud_files::FsError::Budget { .. } | clonecloud_files::FsError::DeviceBudget { .. }) => Failure::Answer(FailKind::ResourceLimit, e.to_string()),
            e => unavailable(e.to_string()),
        })?;
        let (exit, thrown) = match ended {
            Ended::Returned => (None, None),
            Ended::Exited(code) => (Some(code), None),
            Ended::Threw { tag, fields } => {
                let fields = convert::values_to_wire(&fields).ok_or_else(|| unavailable("a reference-typed exception field".into()))?;
                (None, Some(Thrown { tag, fields }))
            }
        };
        let clonecloud_replica::Captured { wasm_pages, pages, globals, access } = r.capture(xor);
        // After proc_exit, or with an exception thrown, the results were never produced.
        let results = if exit.is_some() || thrown.is_some() {
            Vec::new()
        } else {
            convert::values_to_wire(&results).ok_or_else(|| unavailable("a reference-typed result".into()))?
        };
        let mut state = convert::state(wasm_pages, pages, &globals).ok_or_else(|| unavailable("a reference-typed global".into()))?;
        state.memory.xor = xor;
        let freed = r.freed_pages() as u32;
        Ok(Returned { results, state, micros: 0, output, files, exit, freed, thrown, access })
    }
}

/// A failed `accept` waits this long before the next, doubling up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long a session whose link broke waits to be resumed (at most the idle timeout).
pub const RESUME_WINDOW: Duration = Duration::from_secs(30);

/// The largest frame before a session opens (a probe of at most `MAX_PROBE` bytes, a hello with
/// its arguments and environment, a resume): an authenticated device cannot make a connection
/// that has opened nothing hold a replica's worth of memory.
const BEFORE_SESSION_MAX_FRAME: usize = clonecloud_wire::codec::MAX_PROBE as usize + (4 << 20);

/// Room in a frame for what is not memory or a module: framing, arguments, descriptors.
const MAX_FRAME_SLACK: usize = 16 << 20;

/// A module a device uploaded, compiled, with what the model read from its bytes: where its
/// allocator keeps its state, and its migration points (original function indices, in ordinal
/// order: the wire names a point by its function index).
#[derive(Debug, Clone)]
struct Loaded {
    module: Module,
    hint: HeapHint,
    points: Arc<[u32]>,
}

/// A session's state between messages.
struct Run<'a> {
    /// The memory budget the device's replicas share.
    budget: Arc<DeviceBudget>,
    device: String,
    /// Counted among the server's sessions and the device's runs (while waiting to be resumed
    /// too), from the hello until the session ends: `run` goes before the connection, so a
    /// device that sees its connection closed finds its slots free.
    _session: Option<SessionSlot<'a>>,
    _slot: Option<RunSlot<'a>>,
    /// Resumable from the hello on.
    registration: Option<Registration<'a>>,
    hash: Option<ContentHash>,
    module: Option<Loaded>,
    replica: Option<Replica>,
    environment: clonecloud_wire::Environment,
    /// The device's directories, until a replica takes them.
    files: Option<Fs>,
}

impl Run<'_> {
    /// Forgets the session (a new one starts on the same connection).
    fn reset(&mut self) {
        self.registration = None;
        self.hash = None;
        self.module = None;
        self.replica = None;
        self.environment = Default::default();
        self.files = None;
    }
}

/// What a session's end means for the log.
fn ended(ending: Ending) -> Result<(), SessionError> {
    match ending {
        Ending::Goodbye | Ending::Quietly => Ok(()),
        Ending::Broken(e) => Err(SessionError::Broken(e)),
        Ending::Protocol(e) => Err(SessionError::Protocol(e)),
        Ending::Refused(m) => Err(SessionError::Refused(m)),
    }
}

/// Why a session ended badly (the server logs it; the device falls back on its own).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Protocol(#[from] clonecloud_wire::ProtocolError),
    /// The link broke and the session was not resumed.
    #[error("the link broke: {0}")]
    Broken(String),
    /// What this clone refused, as it told the device.
    #[error("{0}")]
    Refused(String),
    #[error("cannot open the file store {path}: {source}")]
    Store { path: std::path::PathBuf, source: std::io::Error },
    #[error("the link to the device failed inside a migrated call: {0}")]
    LinkLost(clonecloud_replica::ProxyFailed),
}

/// Why a migrated call did not return: an answer for the device (`failed`), or the link to the
/// device lost inside the call (the session is over).
#[derive(Debug)]
enum Failure {
    Answer(FailKind, String),
    LinkLost(clonecloud_replica::ProxyFailed),
    /// The device no longer awaits the call: it was stopped, and nothing is answered.
    Abandoned,
}

/// A new connection resuming a session, and the migrations whose answers the device awaits.
#[derive(Debug)]
struct Resumption {
    conn: Connection,
    awaiting: Vec<clonecloud_wire::MigrationId>,
}

/// Where a resumable session waits for its new connection.
#[derive(Debug, Default)]
struct Handoff {
    mailbox: Mutex<Option<Resumption>>,
    arrived: std::sync::Condvar,
    /// Breaks the session's connection: the device's new one supersedes it.
    breaker: Mutex<Option<clonecloud_net::Breaker>>,
    superseded: std::sync::atomic::AtomicBool,
    /// Since when the session waits to be resumed (its link broke), while it does.
    waiting: Mutex<Option<Instant>>,
}

impl Handoff {
    fn rebind(&self, conn: &Connection) {
        *self.breaker.lock().unwrap_or_else(|e| e.into_inner()) = conn.breaker();
    }

    fn interrupt(&self) {
        if let Some(b) = self.breaker.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            b.break_now();
        }
        self.arrived.notify_all();
    }

    fn deliver(&self, r: Resumption) {
        *self.mailbox.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        // The session may be blocked on its old connection, which may look alive to it.
        self.interrupt();
    }

    /// Whether a resuming connection waits to be taken.
    fn has_mail(&self) -> bool {
        self.mailbox.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn waiting_since(&self) -> Option<Instant> {
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn supersede(&self) {
        self.superseded.store(true, std::sync::atomic::Ordering::Relaxed);
        self.interrupt();
    }
}

/// A session's entry among the resumable ones, removed when the session ends.
struct Registration<'a> {
    clone: &'a Clone,
    key: (String, u64),
    handoff: Arc<Handoff>,
}

impl Registration<'_> {
    fn rebind(&self, conn: &Connection) {
        self.handoff.rebind(conn);
    }

    /// Waits up to `window` for a new connection.
    fn wait(&self, window: Duration) -> Option<Resumption> {
        let deadline = Instant::now() + window;
        let h = &self.handoff;
        *h.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let mut mailbox = h.mailbox.lock().unwrap_or_else(|e| e.into_inner());
        let r = loop {
            if let Some(r) = mailbox.take() {
                break Some(r);
            }
            let now = Instant::now();
            if h.superseded.load(std::sync::atomic::Ordering::Relaxed) || now >= deadline {
                break None;
            }
            mailbox = h.arrived.wait_timeout(mailbox, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        };
        drop(mailbox);
        *h.waiting.lock().unwrap_or_else(|e| e.into_inner()) = None;
        r
    }
}

impl Registration<'_> {
    /// Leaves the registry; returns a resume handed to the session that it did not take.
    fn close(self) -> Option<Resumption> {
        self.remove();
        // No resume is handed over once the entry is gone (handing over holds the registry).
        self.handoff.mailbox.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn remove(&self) {
        let mut all = self.clone.resumable.lock().unwrap_or_else(|e| e.into_inner());
        if all.get(&self.key).is_some_and(|h| Arc::ptr_eq(h, &self.handoff)) {
            all.remove(&self.key);
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The session's connection and protocol state, shared between the session loop and the
/// replica's import proxy (which uses it only inside a call, while the loop waits).
#[derive(Debug)]
struct Wire {
    conn: Connection,
    core: CloneConn,
}

impl Wire {
    /// Sends what the core has to send; a send that fails breaks the link.
    fn flush(&mut self) {
        while let Some(m) = self.core.poll_transmit() {
            // Answer in kind: a device gets its deltas back compressed as it compresses its own.
            let c = self.conn.peer_compression();
            self.conn.set_compression(c);
            if let Err(e) = self.conn.send(&m) {
                self.broken(&e);
            }
        }
    }

    fn broken(&mut self, e: &NetError) {
        match e {
            // The frame came whole through TLS but is not a message this clone takes (over the
            // frame limit, say): the device is told, and the session ends.
            NetError::Decode(d) => self.core.handle_undecodable(d.to_string()),
            _ => {
                self.core.handle_broken(Instant::now(), e.to_string(), matches!(e, NetError::Closed));
                // Closed on this side too: a device that still holds the connection (a timeout
                // here, say) sees the break and resumes on a new one.
                if let Some(b) = self.conn.breaker() {
                    b.break_now();
                }
            }
        }
    }
}

/// The replica's way to the device during a call: a proxied import goes out as `import-call`
/// and waits for `import-return`; between, the replica asks whether the device still awaits the
/// call.
#[derive(Debug)]
struct DeviceLink {
    wire: Arc<Mutex<Wire>>,
    /// Where a resuming connection for the session arrives.
    handoff: Option<Arc<Handoff>>,
    /// When the link was found broken during the call.
    broke: Option<Instant>,
    /// How long the session waits to be resumed (the core's window).
    window: Duration,
}

impl ImportProxy for DeviceLink {
    fn call(&mut self, import: u32, args: &[Val], delta: Delta) -> Result<(Vec<Val>, Delta), Box<dyn std::error::Error + Send + Sync>> {
        let mut w = self.wire.lock().unwrap_or_else(|e| e.into_inner());
        let args = convert::values_to_wire(args).ok_or("a reference-typed argument")?;
        let mut state = convert::state(delta.wasm_pages, delta.pages, &delta.globals).ok_or("a reference-typed global")?;
        state.memory.xor = delta.xor;
        w.core.import_call(import, args, state)?;
        while let Some(m) = w.core.poll_transmit() {
            w.conn.send(&m)?;
        }
        let reply = match w.conn.recv() {
            Ok(m) => m,
            Err(e) => {
                // As outside a call: a frame that came whole but is not a message this clone
                // takes is told to the device (its session is over); any other failure is the
                // link's.
                w.broken(&e);
                w.flush();
                return Err(e.into());
            }
        };
        w.core.handle_message(Instant::now(), reply);
        if !w.core.is_running() && !w.core.is_ended() {
            // A cancel crossed the call: the device runs the function itself.
            return Err(Box::new(clonecloud_replica::Abandoned));
        }
        match w.core.poll_event() {
            Some(CloneConnEvent::ImportReturned { results, state }) => {
                if state.memory.page_size as usize != PAGE_SIZE && !state.memory.pages.is_empty() {
                    return Err(format!("pages of {} bytes", state.memory.page_size).into());
                }
                let globals = convert::globals(&state);
                let d = Delta { wasm_pages: state.memory.wasm_pages, pages: state.memory.pages, xor: state.memory.xor, globals };
                Ok((convert::values_from_wire(&results), d))
            }
            other => {
                // The device broke the protocol: it is told why.
                w.flush();
                Err(format!("expected an import return, got {other:?}").into())
            }
        }
    }

    /// The device says nothing while a call runs, unless it gives the call up (a cancel): so a
    /// message that arrived is read (without waiting) and handed to the core, which stops
    /// running the migration on a cancel (or on anything else, a protocol error). A broken link
    /// is left for the session to find after the call (a resume takes the answer), unless no
    /// resume comes within the window: then nobody awaits the answer either.
    fn abandoned(&mut self) -> bool {
        // Held only by the session loop, which waits for the call.
        let Ok(mut w) = self.wire.try_lock() else { return false };
        if let Some(since) = self.broke {
            let resumed = self.handoff.as_ref().is_some_and(|h| h.has_mail());
            return !resumed && since.elapsed() >= self.window;
        }
        match w.conn.try_recv() {
            Ok(None) => false,
            Ok(Some(m)) => {
                w.core.handle_message(Instant::now(), m);
                !w.core.is_running()
            }
            Err(e @ NetError::Decode(_)) => {
                // Told to the device after the call; the session is over.
                w.broken(&e);
                true
            }
            Err(_) => {
                self.broke = Some(Instant::now());
                false
            }
        }
    }
}

/// One migrate request: the point, its arguments, the device's delta, whether to answer with
/// XOR deltas, and the device's clocks and descriptors.
struct Migration<'a> {
    point: u32,
    args: &'a [clonecloud_wire::Value],
    state: &'a clonecloud_wire::State,
    xor: bool,
    clocks: Clocks,
    descriptors: &'a Descriptors,
}

/// Why an in-process clone could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("cannot start the local clone's thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot make the data directory {}: {source}", path.display())]
    Data { path: std::path::PathBuf, source: std::io::Error },
}

/// A clone in this process, on a loopback port, with keys made for the occasion: the device
/// gets its own identity and the server's key, exactly as for a remote clone.
pub fn spawn_local(cache: ModuleCache, idle: Duration) -> Result<(String, Identity, clonecloud_net::PublicKey), ServeError> {
    spawn_local_with(cache, idle, Limits::default(), None)
}

/// [`spawn_local`] with limits on each migrated call, keeping replicated files in `files` (by
/// default a directory of this process under the system's temporary directory).
pub fn spawn_local_with(
    cache: ModuleCache,
    idle: Duration,
    limits: Limits,
    files: Option<std::path::PathBuf>,
) -> Result<(String, Identity, clonecloud_net::PublicKey), ServeError> {
    let server = Identity::generate()?;
    let device = Identity::generate()?;
    spawn_local_as(cache, idle, limits, files, server, device)
}

/// [`spawn_local_with`] with given keys: a device that keeps its identity between runs finds
/// its replicated files again.
pub fn spawn_local_as(
    cache: ModuleCache,
    idle: Duration,
    limits: Limits,
    files: Option<std::path::PathBuf>,
    server: Identity,
    device: Identity,
) -> Result<(String, Identity, clonecloud_net::PublicKey), ServeError> {
    let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([device.public().clone()]), Duration::from_secs(10))?;
    let addr = listener.local_addr().to_string();
    let clone = match files {
        Some(dir) => Clone::with_files(cache, idle, limits, dir, server.derive_secret(STORE_SECRET)),
        None => Clone::with_limits(cache, idle, limits),
    }?;
    std::thread::Builder::new()
        .name("local-clone".into())
        .spawn(move || {
            match clone.serve(listener) {}
        })
        .map_err(ServeError::Thread)?;
    Ok((addr, device, server.public().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair on loopback: (the server's side, the device's).
    fn pair() -> (Connection, Connection) {
        let (server, device) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([device.public().clone()]), Duration::from_secs(5)).unwrap();
        let addr = listener.local_addr();
        let key = server.public().clone();
        let dialer = std::thread::spawn(move || Connection::connect(addr, Some(&device), &key, Duration::from_secs(5)).unwrap());
        let accepted = listener.incoming().unwrap().accept().unwrap();
        (accepted, dialer.join().unwrap())
    }

    /// A resume handed to a session is never dropped: the session takes it, or, when the session
    /// ends first, closing its registration gives it back (the driver then starts a new session
    /// on it), and after that a resume of the run is given back at once.
    #[test]
    fn a_resume_handed_to_an_ending_session_comes_back() {
        let clone = Clone::new(ModuleCache::disabled(), Duration::from_secs(5)).unwrap();
        let (old, _old_device) = pair();
        let registration = clone.register("device", 7, &old);
        let (new, _new_device) = pair();
        assert!(clone.hand_over("device", 7, Resumption { conn: new, awaiting: vec![3] }).is_none(), "handed to the session");
        // The session ends without waiting for it (its window closed at that moment).
        let left = registration.close().expect("the resume comes back");
        assert_eq!(left.awaiting, [3]);
        let (again, _again_device) = pair();
        assert!(clone.hand_over("device", 7, Resumption { conn: again, awaiting: vec![3] }).is_some(), "nothing to hand to any more");
    }

    /// Without a data directory the clone's files go to a new directory only this user can
    /// enter, under a name nobody can guess ahead: never a fixed path another user could plant.
    #[test]
    fn the_temporary_file_store_is_private_and_unpredictable() {
        use std::os::unix::fs::PermissionsExt;
        let (a, b) = (super::private_temp_dir().unwrap(), super::private_temp_dir().unwrap());
        assert_ne!(a, b);
        for d in [&a, &b] {
            assert_eq!(std::fs::symlink_metadata(d).unwrap().permissions().mode() & 0o7777, 0o700, "{}", d.display());
            assert!(!d.to_string_lossy().contains(&std::process::id().to_string()), "the name is not the process id");
            std::fs::remove_dir(d).unwrap();
        }
    }
}
