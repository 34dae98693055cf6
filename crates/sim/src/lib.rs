//! clonecloud-sim: the protocol's two cores ([`DeviceConn`] and [`CloneConn`]) wired together
//! in virtual time, under seeded fault schedules, against an oracle.
//!
//! One *schedule* is a small app run: a device makes a few calls to migration points, doing
//! local work between them; each call is offloaded through the device's core to a clone that
//! serves it through the clone's core. Execution is a deterministic stand-in on both sides (a
//! function of the point, its argument and a memory of sixteen pages, whose result
//! depends on the whole memory), and the state travels as page deltas against the baseline the
//! two sides agree on, as the real runtime's does. Some points call, half-way, an import only the
//! device has (the next value of the device's input, as a read of stdin is): on the clone that
//! call is proxied to the device, with the state changed so far going there and back. Every call
//! reads a file of the device's preopened directory, which the device's work between calls
//! changes now and then: the device lists the directory when it changed since it was last sent
//! on the session, and the clone asks for the content it lacks (its store of contents outlives
//! sessions, not a restart). The link between them delivers encoded
//! frames after a seeded latency, and the schedule injects faults at seeded moments: the
//! connection cut, a frame duplicated or overtaken by the next (the transport is TLS, which
//! refuses both: the connection breaks at the receiver, after the frames before it), the link
//! stalling past the device's deadline, the clone
//! restarting with its state gone and refusing connections for a while, a migration failing on
//! the clone half-way through.
//!
//! The oracle: the same calls run with no clone. A schedule *diverges* when the device's
//! results or its final memory differ from the oracle's, the device never finishes (every call
//! must end, remotely or locally, by the core's deadline), either core finds the other breaking
//! the protocol (a fallback on a protocol error, a clone session ending on one: with a transport
//! that delivers in order or breaks, they never disagree), or a clone session is left over at
//! the end (every one ends by a goodbye or its resume window). Everything is a pure function of
//! the seed, so a divergence is replayed by its seed.
//!
//! It knows nothing of wasm, files, sockets or threads; the drivers here are the simulation's
//! own (the real ones are `offload::Offloader` and `offload::server`), and they keep the rules
//! that belong to drivers, such as resetting the page baseline when the core says a new session
//! started, listing the directory again when it changed, or giving back the input a proxied call
//! consumed when the migration is sent again or run here ([`Rules`] can break them, to show the
//! oracle catches it).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use clonecloud_wire::{
    Cause, CloneConfig, CloneConn, CloneConnEvent, ConnEvent, ContentHash, DeviceConfig, DeviceConn, Ending, Entry, EntryKind, Environment, FailKind, FileStat, Message, PageDelta,
    Returned, State, Tree, Value, content_hash, from_bytes, to_bytes,
};

/// Pages of the stand-in memory: each holds one `u64` (in the first 8 of its bytes).
const PAGES: usize = 16;
/// The smallest page the codec takes.
const PAGE_SIZE: usize = 256;
/// The stand-in module's bytes (the clone asks for them once per restart).
const MODULE: &[u8] = b"\0asm\x01\0\0\0simulated";
/// The device gives up on a schedule that has not finished by then (virtual time).
const GIVE_UP: Duration = Duration::from_secs(30 * 60);

/// The drivers' halves of the protocol's rules, each on by default; a test turns one off to show
/// that the oracle catches it.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The device forgets which pages the clone has when its core starts a new session.
    pub reset_baseline: bool,
    /// The clone drops its replica when its core says so (after a failure).
    pub drop_replica: bool,
    /// The device gives back the input its proxied calls consumed when the migration is sent
    /// again on a new session or run here (the call then reads it again).
    pub give_back_input: bool,
    /// The device lists its directory again when the file changed since it was sent on the
    /// session.
    pub list_changes: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules { reset_baseline: true, drop_replica: true, give_back_input: true, list_changes: true }
    }
}

/// What happened in the schedules run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    pub calls: u64,
    /// Calls answered by the clone.
    pub remote: u64,
    /// Calls the device ran itself.
    pub fallbacks: u64,
    /// Answers that came on a new connection after a break.
    pub resumes: u64,
    /// Migrations sent again on a new session.
    pub retries: u64,
    /// Calls the clone proxied to the device and the device answered.
    pub proxied: u64,
    /// File contents the device sent the clone.
    pub files_sent: u64,
    /// Faults injected.
    pub faults: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.calls += o.calls;
        self.remote += o.remote;
        self.fallbacks += o.fallbacks;
        self.resumes += o.resumes;
        self.retries += o.retries;
        self.proxied += o.proxied;
        self.files_sent += o.files_sent;
        self.faults += o.faults;
    }
}

/// A schedule whose run did not end as the oracle's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("schedule {seed}: {detail}")]
pub struct Divergence {
    pub seed: u64,
    pub detail: String,
}

/// Runs the schedules `first..first + count` and tallies them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub schedules: u64,
    pub first_seed: u64,
    pub seconds: f64,
    pub schedules_per_second: f64,
    pub tally: Tally,
    /// How many diverged, and the first few.
    pub divergent: u64,
    pub divergences: Vec<Divergence>,
}

/// Runs `count` schedules from seed `first`, with `progress` told of each one done.
pub fn run(first: u64, count: u64, rules: Rules, mut progress: impl FnMut(u64)) -> Report {
    let started = Instant::now();
    let mut report = Report { schedules: count, first_seed: first, ..Report::default() };
    for seed in first..first.saturating_add(count) {
        match schedule(seed, rules) {
            Ok(t) => report.tally.add(&t),
            Err(d) => {
                report.divergent += 1;
                if report.divergences.len() < 10 {
                    report.divergences.push(d);
                }
            }
        }
        progress(seed - first + 1);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.schedules_per_second = count as f64 / report.seconds.max(1e-9);
    report
}

/// xorshift64*: the schedule's only source of choices.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The stand-in for a migrated function: it changes three pages and returns a hash of the
/// whole memory, so any page the two sides disagree on shows in its result.
fn body(point: u32, a: u64, mem: &mut [u64]) -> u64 {
    let n = mem.len() as u64;
    for j in 0..3u64 {
        let i = ((a.wrapping_add(j * 7).wrapping_add(u64::from(point))) % n) as usize;
        mem[i] = mem[i].wrapping_mul(31).wrapping_add(a ^ j);
    }
    mem.iter().fold(a, |h, &v| h.rotate_left(5) ^ v)
}

/// Whether point `point` calls the device's import half-way.
fn proxies(point: u32) -> bool {
    point == 3
}

/// The import only the device has: the next value of the device's input (consumed, as a read of
/// stdin is), which it also adds into the last page.
fn device_import(input: &mut u64, mem: &mut [u64]) -> u64 {
    *input = input.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    let last = mem.len() - 1;
    mem[last] = mem[last].wrapping_add(*input);
    *input
}

/// A whole call run here, reading `file`: the body, and for a point that proxies, the import
/// half-way and the body again with its value.
fn run_local(call: Call, file: u64, input: &mut u64, mem: &mut [u64]) -> u64 {
    let a = call.arg ^ file;
    let r = body(call.point, a, mem);
    if !proxies(call.point) {
        return r;
    }
    let v = device_import(input, mem);
    body(call.point, a ^ v, mem)
}

/// The device's own work between calls, in memory and, now and then, in the file.
fn local_work(call: usize, mem: &mut [u64], file: &mut u64) {
    let i = (call * 5) % mem.len();
    mem[i] ^= call as u64 + 1;
    if call % 3 == 1 {
        *file = file.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(call as u64);
    }
}

/// The file's bytes and the directory listing them.
fn file_bytes(file: u64) -> Vec<u8> {
    file.to_le_bytes().to_vec()
}

fn listing(file: u64) -> Tree {
    let entry = |path: &str, kind| Entry { path: path.into(), kind, stat: FileStat::default() };
    Tree { guest: "/data".into(), entries: vec![entry("", EntryKind::Dir), entry("f", EntryKind::File(content_hash(&file_bytes(file))))] }
}

/// The pages of `to` that differ from `from`.
fn delta(from: &[u64], to: &[u64]) -> State {
    let page = |v: &u64| {
        let mut p = vec![0u8; PAGE_SIZE];
        p[..8].copy_from_slice(&v.to_le_bytes());
        p
    };
    let pages = from.iter().zip(to).enumerate().filter(|(_, (a, b))| a != b).map(|(i, (_, b))| (i as u32, page(b))).collect();
    State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: PAGE_SIZE as u32, pages, xor: false } }
}

/// A delta that does not fit the stand-in memory.
#[derive(Debug, thiserror::Error)]
enum BadDelta {
    #[error("page {0} is out of range")]
    Range(u32),
    #[error("page {0} has {1} bytes")]
    Size(u32, usize),
}

fn apply(mem: &mut [u64], s: &State) -> Result<(), BadDelta> {
    for (i, bytes) in &s.memory.pages {
        let page = mem.get_mut(*i as usize).ok_or(BadDelta::Range(*i))?;
        if bytes.len() != PAGE_SIZE {
            return Err(BadDelta::Size(*i, bytes.len()));
        }
        *page = u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"));
    }
    Ok(())
}

/// One call of the app: the point and its argument.
#[derive(Debug, Clone, Copy)]
struct Call {
    point: u32,
    arg: u64,
}

/// The faults of one schedule.
#[derive(Debug, Clone, Default)]
struct Faults {
    /// By the number of the frame sent (both ways, all connections, from 1).
    cut: Vec<u64>,
    duplicate: Vec<u64>,
    overtaken: Vec<u64>,
    stall: Option<u64>,
    /// The clone restarts at this virtual time and refuses connections for the duration.
    restart: Option<(Duration, Duration)>,
    /// The clone's migration with this number (all sessions, from 1) fails half-way.
    fail: Vec<u64>,
}

impl Faults {
    fn draw(rng: &mut Rng, horizon: u64) -> Faults {
        let mut f = Faults::default();
        for _ in 0..rng.below(4) {
            let at = 1 + rng.below(horizon);
            match rng.below(7) {
                0 | 1 => f.cut.push(at),
                2 => f.duplicate.push(at),
                3 => f.overtaken.push(at),
                4 => f.stall = Some(at),
                5 => f.restart = Some((Duration::from_millis(rng.below(400)), Duration::from_millis(rng.below(3000)))),
                _ => f.fail.push(1 + rng.below(4)),
            }
        }
        f
    }

    fn count(&self) -> u64 {
        (self.cut.len() + self.duplicate.len() + self.overtaken.len() + self.fail.len()) as u64 + u64::from(self.stall.is_some()) + u64::from(self.restart.is_some())
    }
}

#[derive(Debug)]
enum Ev {
    /// A frame arrives at the clone (`to_clone`) or the device.
    Frame { conn: usize, to_clone: bool, bytes: Vec<u8> },
    Broken { conn: usize },
    Dialed { conn: usize, ok: bool },
    DeviceTimer,
    CloneTimer { session: u64 },
    Restart { down: Duration },
    NextCall,
}

#[derive(Debug, Default)]
struct Link {
    alive: bool,
    stalled: bool,
    /// When the last frame each way arrives (frames arrive in order, unless overtaken).
    last_to_clone: Duration,
    last_to_device: Duration,
}

#[derive(Debug)]
struct Session {
    core: CloneConn,
    conn: usize,
    replica: Option<Vec<u64>>,
    run: Option<u64>,
    /// A migration waiting for its proxied call's answer: its point, argument and replica.
    pending: Option<(u32, u64, Vec<u64>)>,
    /// The file's content hash in the session's last listing.
    file: Option<ContentHash>,
}

/// One schedule's world.
struct World {
    seed: u64,
    rules: Rules,
    t0: Instant,
    now: Duration,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    latency: Duration,
    faults: Faults,
    frames: u64,
    links: Vec<Link>,
    // The device.
    device: DeviceConn,
    conn: Option<usize>,
    inbox: VecDeque<Message>,
    mem: Vec<u64>,
    agreed: Vec<u64>,
    /// The memory a migration's answer applies to: as captured, with what its proxied calls
    /// changed (the device's own memory stays as at the call's entry until the answer).
    proxy_mem: Vec<u64>,
    /// The device's input (what its import reads), and where it stood at the call's entry.
    input: u64,
    entry_input: u64,
    /// The device's file, and the content the current session was last sent (and the one
    /// listed, while its contents go out).
    file: u64,
    file_sent: Option<u64>,
    file_listed: Option<u64>,
    calls: Vec<Call>,
    next: usize,
    results: Vec<u64>,
    tally: Tally,
    device_timer: Option<Instant>,
    // The clone.
    sessions: HashMap<u64, Session>,
    owner: HashMap<usize, u64>,
    resumable: HashMap<u64, u64>,
    module_known: bool,
    /// The clone's store of file contents (gone at a restart).
    store: HashMap<ContentHash, u64>,
    down_until: Duration,
    migrations: u64,
    next_session: u64,
    /// What the clone's core found wrong with what the device sent (nothing, ever, when both
    /// keep the protocol).
    clone_errors: Vec<String>,
}

/// Runs schedule `seed`: `Ok` with what happened when it ended as the oracle's run.
pub fn schedule(seed: u64, rules: Rules) -> Result<Tally, Divergence> {
    let mut rng = Rng::new(seed);
    let calls: Vec<Call> = (0..2 + rng.below(6)).map(|_| Call { point: rng.below(4) as u32, arg: rng.next() }).collect();
    let (input, file) = (rng.next(), rng.next());
    // The oracle: the same calls, no clone.
    let mut want_mem = vec![0u64; PAGES];
    let (mut want_input, mut want_file) = (input, file);
    let want: Vec<u64> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            local_work(i, &mut want_mem, &mut want_file);
            run_local(*c, want_file, &mut want_input, &mut want_mem)
        })
        .collect();
    let latency = Duration::from_micros(rng.below(40_000));
    let faults = Faults::draw(&mut rng, 8 * calls.len() as u64);
    let config = DeviceConfig {
        module: content_hash(MODULE),
        run: 1,
        thread: 0,
        environment: Environment::default(),
        max_breaks: 8,
        reconnect_window: Duration::from_secs(3),
        first_pause: Duration::from_millis(50),
        retry_after: Duration::from_secs(5),
        answer_within: Duration::from_secs(10),
        max_proxied: 1000,
    };
    let mut w = World {
        seed,
        rules,
        t0: Instant::now(),
        now: Duration::ZERO,
        queue: BinaryHeap::new(),
        events: HashMap::new(),
        seq: 0,
        latency,
        frames: 0,
        links: Vec::new(),
        device: DeviceConn::new(config),
        conn: None,
        inbox: VecDeque::new(),
        mem: vec![0; PAGES],
        agreed: vec![0; PAGES],
        proxy_mem: Vec::new(),
        input,
        entry_input: input,
        file,
        file_sent: None,
        file_listed: None,
        calls,
        next: 0,
        results: Vec::new(),
        tally: Tally { faults: faults.count(), ..Tally::default() },
        device_timer: None,
        sessions: HashMap::new(),
        owner: HashMap::new(),
        resumable: HashMap::new(),
        module_known: false,
        store: HashMap::new(),
        down_until: Duration::ZERO,
        migrations: 0,
        next_session: 0,
        clone_errors: Vec::new(),
        faults,
    };
    if let Some((at, down)) = w.faults.restart {
        w.at(at, Ev::Restart { down });
    }
    w.at(Duration::ZERO, Ev::NextCall);
    while let Some(Reverse((t, seq))) = w.queue.pop() {
        if t > GIVE_UP {
            break;
        }
        w.now = t;
        let ev = w.events.remove(&seq).expect("every queued event is kept");
        w.handle(ev)?;
    }
    let diverged = |detail: String| Err(Divergence { seed, detail });
    if w.results.len() != w.calls.len() {
        return diverged(format!("the device finished {} of {} calls", w.results.len(), w.calls.len()));
    }
    if w.results != want {
        let k = w.results.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
        return diverged(format!("call {k} returned {:#x}, the oracle's {:#x}", w.results[k], want[k]));
    }
    if w.mem != want_mem {
        return diverged("the device's memory differs from the oracle's".into());
    }
    if let Some(e) = w.clone_errors.first() {
        return diverged(e.clone());
    }
    // Every session ends (said goodbye, or not resumed within its window): nothing is held.
    if !w.sessions.is_empty() {
        return diverged(format!("{} clone sessions never ended", w.sessions.len()));
    }
    w.tally.calls = w.calls.len() as u64;
    Ok(w.tally)
}

impl World {
    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    fn at(&mut self, t: Duration, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((t, self.seq)));
    }

    fn diverged(&self, detail: String) -> Result<(), Divergence> {
        Err(Divergence { seed: self.seed, detail })
    }

    /// Sends `m` on `conn`, through the schedule's faults.
    fn send(&mut self, conn: usize, to_clone: bool, m: &Message) {
        self.frames += 1;
        let n = self.frames;
        if self.faults.stall == Some(n)
            && let Some(l) = self.links.get_mut(conn)
        {
            l.stalled = true;
        }
        let Some(link) = self.links.get_mut(conn) else { return };
        if !link.alive || link.stalled {
            return;
        }
        if self.faults.cut.contains(&n) {
            let t = self.now + self.latency;
            self.at(t, Ev::Broken { conn });
            return;
        }
        let bytes = to_bytes(m);
        let last = if to_clone { &mut link.last_to_clone } else { &mut link.last_to_device };
        let arrive = (self.now + self.latency).max(*last + Duration::from_micros(1));
        *last = arrive;
        // The transport is TLS: a record out of order or repeated fails its check at the
        // receiver, and the connection breaks there (the cores rely on an ordered stream).
        if self.faults.overtaken.contains(&n) {
            self.at(arrive, Ev::Broken { conn });
            return;
        }
        self.at(arrive, Ev::Frame { conn, to_clone, bytes });
        if self.faults.duplicate.contains(&n) {
            self.at(arrive + Duration::from_micros(1), Ev::Broken { conn });
        }
    }

    fn handle(&mut self, ev: Ev) -> Result<(), Divergence> {
        let now = self.instant();
        match ev {
            Ev::NextCall => {
                if self.next < self.calls.len() {
                    local_work(self.next, &mut self.mem, &mut self.file);
                    self.entry_input = self.input;
                    self.device.start_migration(now);
                } else if let Some(conn) = self.conn.take() {
                    // The app ends: a goodbye if a session is open, then the connection closes.
                    if let Some(bye) = self.device.close() {
                        self.send(conn, true, &bye);
                    }
                    self.close_link(conn);
                }
            }
            Ev::Dialed { conn, ok } => {
                if self.conn == Some(conn) {
                    if ok {
                        self.device.handle_connected(now);
                    } else {
                        self.device.handle_dial_failed(now, Cause::Connect, "refused: the clone is restarting".into());
                    }
                }
            }
            Ev::Frame { conn, to_clone: false, bytes } => {
                if self.conn == Some(conn) && self.links[conn].alive {
                    match from_bytes(&bytes, usize::MAX) {
                        Ok(m) => self.inbox.push_back(m),
                        Err(e) => return self.diverged(format!("the device cannot decode a frame: {e}")),
                    }
                }
            }
            Ev::Frame { conn, to_clone: true, bytes } => {
                if self.links[conn].alive {
                    let m = match from_bytes(&bytes, usize::MAX) {
                        Ok(m) => m,
                        Err(e) => return self.diverged(format!("the clone cannot decode a frame: {e}")),
                    };
                    self.clone_message(conn, m);
                }
            }
            Ev::Broken { conn } => self.break_link(conn, "cut"),
            Ev::DeviceTimer => {
                if self.device.poll_timeout().is_some_and(|t| t <= now) {
                    self.device_timer = None;
                    self.device.handle_timeout(now);
                }
            }
            Ev::CloneTimer { session } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.core.handle_timeout(now);
                    self.pump_clone(session);
                }
            }
            Ev::Restart { down } => {
                // Its state is gone: sessions, the registry of resumable ones, its modules.
                self.sessions.clear();
                self.resumable.clear();
                self.module_known = false;
                self.store.clear();
                self.down_until = self.now + down;
                self.owner.clear();
                for c in 0..self.links.len() {
                    self.break_link(c, "the clone restarted");
                }
            }
        }
        self.pump_device()
    }

    /// The link `conn` breaks: both ends learn it.
    fn break_link(&mut self, conn: usize, why: &str) {
        let Some(link) = self.links.get_mut(conn) else { return };
        if !link.alive {
            return;
        }
        link.alive = false;
        let now = self.instant();
        if self.conn == Some(conn) {
            self.inbox.clear();
            self.device.handle_broken(now, Cause::Link, why.to_string());
        }
        if let Some(&sid) = self.owner.get(&conn)
            && let Some(s) = self.sessions.get_mut(&sid)
            && s.conn == conn
        {
            s.core.handle_broken(now, why.to_string(), false);
            self.pump_clone(sid);
        }
    }

    /// Moves the device's core along until it waits: its frames out, its events acted on, the
    /// messages it awaits fed in, its timer set.
    fn pump_device(&mut self) -> Result<(), Divergence> {
        loop {
            let now = self.instant();
            while let Some(m) = self.device.poll_transmit() {
                match self.conn {
                    Some(c) if self.links[c].alive => self.send(c, true, &m),
                    _ => self.device.handle_broken(now, Cause::Link, "no connection".into()),
                }
            }
            if let Some(e) = self.device.poll_event() {
                self.device_event(e)?;
                continue;
            }
            if self.device.awaits_message()
                && let Some(m) = self.inbox.pop_front()
            {
                self.device.handle_message(now, m);
                continue;
            }
            break;
        }
        if let Some(t) = self.device.poll_timeout()
            && self.device_timer != Some(t)
        {
            self.device_timer = Some(t);
            let at = t.saturating_duration_since(self.t0);
            self.at(at, Ev::DeviceTimer);
        }
        Ok(())
    }

    fn device_event(&mut self, e: ConnEvent) -> Result<(), Divergence> {
        match e {
            ConnEvent::Dial => {
                if let Some(old) = self.conn.take() {
                    self.close_link(old);
                }
                let conn = self.links.len();
                self.links.push(Link { alive: true, ..Link::default() });
                self.conn = Some(conn);
                self.inbox.clear();
                let ok = self.now >= self.down_until;
                let t = self.now + self.latency * 2;
                self.at(t, Ev::Dialed { conn, ok });
            }
            ConnEvent::NewSession => {
                if self.rules.reset_baseline {
                    self.agreed = vec![0; PAGES];
                }
                self.file_sent = None;
            }
            ConnEvent::ModuleWanted => self.device.module(MODULE.to_vec()),
            ConnEvent::ListFiles => {
                let unchanged = match self.file_sent {
                    Some(f) => f == self.file || !self.rules.list_changes,
                    None => false,
                };
                if unchanged {
                    self.device.files_unchanged();
                } else {
                    self.file_listed = Some(self.file);
                    self.device.files(vec![listing(self.file)]);
                }
            }
            ConnEvent::NeedFiles { hashes } => {
                let Some(file) = self.file_listed else {
                    return self.diverged("the clone asked for contents with no listing out".into());
                };
                for h in hashes {
                    if h != content_hash(&file_bytes(file)) {
                        return self.diverged("the clone asked for a content the listing did not name".into());
                    }
                    self.tally.files_sent += 1;
                    self.device.file_data(h, file_bytes(file));
                }
                self.device.files_sent();
                self.file_sent = Some(file);
            }
            ConnEvent::Capture => {
                let call = self.calls[self.next];
                self.proxy_mem = self.mem.clone();
                let state = delta(&self.agreed, &self.mem);
                self.device.migrate(call.point, vec![Value::I64(call.arg as i64)], state, Default::default(), Default::default());
            }
            ConnEvent::ImportCall { state, .. } => {
                // The clone's changes so far, then the import on them, and its changes back.
                if let Err(e) = apply(&mut self.proxy_mem, &state) {
                    return self.diverged(format!("the clone's state for a proxied call does not apply: {e}"));
                }
                let before = self.proxy_mem.clone();
                let v = device_import(&mut self.input, &mut self.proxy_mem);
                let back = delta(&before, &self.proxy_mem);
                self.agreed = self.proxy_mem.clone();
                self.tally.proxied += 1;
                self.device.import_return(vec![Value::I64(v as i64)], back);
            }
            ConnEvent::Ready => return self.diverged("the device's core said a session opened ahead is ready, though none was asked for".into()),
            ConnEvent::Resumed => self.tally.resumes += 1,
            ConnEvent::Retried => {
                self.tally.retries += 1;
                self.give_back_input();
            }
            ConnEvent::Returned { results, state, .. } => {
                let mut mem = self.proxy_mem.clone();
                if let Err(e) = apply(&mut mem, &state) {
                    return self.diverged(format!("the clone's answer does not apply: {e}"));
                }
                let Some(Value::I64(r)) = results.first().copied() else {
                    return self.diverged(format!("the clone answered {results:?}"));
                };
                self.mem = mem.clone();
                self.agreed = mem;
                self.results.push(r as u64);
                self.tally.remote += 1;
                self.finish_call();
            }
            ConnEvent::Abandoned { cause, detail } => {
                // The transport delivers in order or breaks: the two cores never disagree.
                if cause == Cause::Protocol {
                    return self.diverged(format!("call {} fell back on a protocol error: {detail}", self.next));
                }
                let call = self.calls[self.next];
                self.give_back_input();
                let r = run_local(call, self.file, &mut self.input, &mut self.mem);
                self.results.push(r);
                self.tally.fallbacks += 1;
                self.finish_call();
            }
        }
        Ok(())
    }

    /// What the migration's proxied calls consumed is given back: the call reads it again.
    fn give_back_input(&mut self) {
        if self.rules.give_back_input {
            self.input = self.entry_input;
        }
    }

    fn finish_call(&mut self) {
        self.next += 1;
        let t = self.now + Duration::from_millis(1);
        self.at(t, Ev::NextCall);
    }

    /// The device drops a connection: the clone sees it closed.
    fn close_link(&mut self, conn: usize) {
        let t = self.now + self.latency;
        self.at(t, Ev::Broken { conn });
    }

    /// A message arrives at the clone on `conn`.
    fn clone_message(&mut self, conn: usize, m: Message) {
        let sid = match self.owner.get(&conn) {
            Some(&s) => s,
            None => {
                self.next_session += 1;
                let sid = self.next_session;
                let core = CloneConn::new(CloneConfig { max_module: 1 << 20, resume_window: Duration::from_secs(30) });
                self.sessions.insert(sid, Session { core, conn, replica: None, run: None, pending: None, file: None });
                self.owner.insert(conn, sid);
                sid
            }
        };
        let now = self.instant();
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.core.handle_message(now, m);
        }
        self.pump_clone(sid);
    }

    /// Moves a session's core along: its frames out, its events acted on, its timer set.
    fn pump_clone(&mut self, sid: u64) {
        loop {
            let Some(s) = self.sessions.get_mut(&sid) else { return };
            let conn = s.conn;
            let mut out = Vec::new();
            while let Some(m) = s.core.poll_transmit() {
                out.push(m);
            }
            let event = s.core.poll_event();
            for m in out {
                self.send(conn, false, &m);
            }
            let Some(e) = event else { break };
            self.clone_event(sid, e);
        }
        if let Some(until) = self.sessions.get(&sid).and_then(|s| s.core.awaits_resume()) {
            let t = until.saturating_duration_since(self.t0);
            self.at(t, Ev::CloneTimer { session: sid });
        }
    }

    fn clone_event(&mut self, sid: u64, e: CloneConnEvent) {
        let now = self.instant();
        match e {
            CloneConnEvent::Opened { run, .. } => {
                if let Some(old) = self.resumable.insert(run, sid)
                    && old != sid
                    && let Some(o) = self.sessions.get_mut(&old)
                {
                    // A new session of the same run supersedes the old one.
                    o.core.handle_not_resumed();
                    self.pump_clone(old);
                }
                let known = self.module_known;
                let s = self.sessions.get_mut(&sid).expect("pumped");
                s.run = Some(run);
                s.core.welcome(known);
            }
            CloneConnEvent::Module { .. } => {
                self.module_known = true;
                self.sessions.get_mut(&sid).expect("pumped").core.module_loaded();
            }
            CloneConnEvent::Files { trees } => {
                let file = trees.iter().flat_map(|t| &t.entries).find_map(|e| match e.kind {
                    EntryKind::File(h) => Some(h),
                    _ => None,
                });
                let s = self.sessions.get_mut(&sid).expect("pumped");
                s.file = file;
                let store = &self.store;
                s.core.need_files(|h| !store.contains_key(h));
            }
            CloneConnEvent::FileData { hash, bytes } => {
                let s = self.sessions.get_mut(&sid).expect("pumped");
                match <[u8; 8]>::try_from(&bytes[..]) {
                    Ok(b) if content_hash(&bytes) == hash => {
                        self.store.insert(hash, u64::from_le_bytes(b));
                    }
                    _ => s.core.refuse("a content that does not match its hash".into()),
                }
            }
            CloneConnEvent::ImportReturned { results, state } => {
                let s = self.sessions.get_mut(&sid).expect("pumped");
                let Some((point, a, mut replica)) = s.pending.take() else {
                    return s.core.refuse("no proxied call is out".into());
                };
                let (Some(Value::I64(v)), Ok(())) = (results.first().copied(), apply(&mut replica, &state)) else {
                    return s.core.failed(FailKind::Unavailable, "the device's answer does not fit".into());
                };
                let before = replica.clone();
                let r = body(point, a ^ v as u64, &mut replica);
                let state = delta(&before, &replica);
                s.replica = Some(replica);
                s.core.returned(Returned { results: vec![Value::I64(r as i64)], state, ..Returned::default() });
            }
            CloneConnEvent::Migrate { point, args, state, .. } => {
                self.migrations += 1;
                let fail = self.faults.fail.contains(&self.migrations);
                let s = self.sessions.get_mut(&sid).expect("pumped");
                let mut replica = s.replica.take().unwrap_or_else(|| vec![0; PAGES]);
                if let Err(e) = apply(&mut replica, &state) {
                    s.core.failed(FailKind::Unavailable, e.to_string());
                    return;
                }
                let Some(Value::I64(a)) = args.first().copied() else {
                    s.core.failed(FailKind::Unavailable, "no argument".into());
                    return;
                };
                // The function reads the file as the session's listing names it.
                let Some(&file) = s.file.and_then(|h| self.store.get(&h)) else {
                    self.clone_errors.push("a migration on a session whose file the clone does not hold".into());
                    s.core.failed(FailKind::Unavailable, "the file is not here".into());
                    return;
                };
                let a = a as u64 ^ file;
                let before = replica.clone();
                if fail {
                    // Half-way through: a page changed, then the trap.
                    replica[0] = replica[0].wrapping_add(1);
                    s.replica = Some(replica);
                    s.core.failed(FailKind::Trap, "a trap, half-way through".into());
                    return;
                }
                let r = body(point, a, &mut replica);
                let state = delta(&before, &replica);
                if proxies(point) {
                    // Half-way: the device's import, with what changed so far.
                    s.pending = Some((point, a, replica));
                    if let Err(e) = s.core.import_call(0, vec![], state) {
                        self.clone_errors.push(format!("the clone's core refused a proxied call: {e}"));
                    }
                    return;
                }
                s.replica = Some(replica);
                s.core.returned(Returned { results: vec![Value::I64(r as i64)], state, ..Returned::default() });
            }
            CloneConnEvent::DropReplica => {
                if self.rules.drop_replica {
                    let s = self.sessions.get_mut(&sid).expect("pumped");
                    s.replica = None;
                    s.pending = None;
                }
            }
            CloneConnEvent::ResumeWanted { run, awaiting } => {
                let conn = self.sessions[&sid].conn;
                match self.resumable.get(&run).copied().filter(|t| *t != sid && self.sessions.contains_key(t)) {
                    Some(target) => {
                        // The connection goes to the waiting session; its old one is broken.
                        self.sessions.remove(&sid);
                        self.owner.insert(conn, target);
                        let t = self.sessions.get_mut(&target).expect("checked");
                        let old = std::mem::replace(&mut t.conn, conn);
                        if t.core.awaits_resume().is_none() {
                            t.core.handle_broken(now, "superseded by a resume".into(), false);
                        }
                        if let Some(l) = self.links.get_mut(old) {
                            l.alive = false;
                        }
                        let t = self.sessions.get_mut(&target).expect("checked");
                        t.core.handle_resume(now, &awaiting);
                        self.pump_clone(target);
                    }
                    None => self.sessions.get_mut(&sid).expect("pumped").core.refuse_resume(),
                }
            }
            CloneConnEvent::Reset => {
                let s = self.sessions.get_mut(&sid).expect("pumped");
                s.replica = None;
                s.pending = None;
                if let Some(run) = s.run.take()
                    && self.resumable.get(&run) == Some(&sid)
                {
                    self.resumable.remove(&run);
                }
            }
            CloneConnEvent::Ended(ending) => {
                if let Ending::Protocol(e) = &ending {
                    self.clone_errors.push(format!("a clone session ended on a protocol error: {e}"));
                }
                let Some(s) = self.sessions.remove(&sid) else { return };
                if let Some(run) = s.run
                    && self.resumable.get(&run) == Some(&sid)
                {
                    self.resumable.remove(&run);
                }
                // The server closes the connection when the session ends.
                if self.owner.get(&s.conn) == Some(&sid) {
                    self.owner.remove(&s.conn);
                    self.close_link(s.conn);
                }
            }
        }
    }
}
