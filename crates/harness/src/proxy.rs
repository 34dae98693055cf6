//! A loopback TCP proxy that breaks links on purpose, counts what it forwards, and records the
//! first connection's conversation as turns (bytes one way until the other side speaks).
//!
//! A fault acts at a byte of a turn of the first connection (later connections, a device
//! reconnecting, pass untouched: a link that broke once), or at a byte of one direction of every
//! connection (a link that breaks every time). The proxy sees TLS records, not the protocol's
//! messages: it can cut, corrupt a byte, stall, and duplicate or reorder whole records, which
//! TLS must refuse.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A direction on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Dir {
    /// Device → clone.
    Up,
    /// Clone → device.
    Down,
}

impl Dir {
    pub fn arrow(self) -> &'static str {
        match self {
            Dir::Up => "↑",
            Dir::Down => "↓",
        }
    }
}

/// What to do at the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward the bytes before the offset, then close the connection both ways.
    Cut,
    /// Flip the byte at the offset.
    Corrupt,
    /// Forward the bytes before the offset, then nothing more that way (the connection stays
    /// open).
    Stall,
    /// Send the first TLS record starting at or after the offset twice.
    Duplicate,
    /// Send the first TLS record starting at or after the offset after the one following it.
    Reorder,
}

/// Where a fault acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// `offset` bytes into turn `turn` of the first connection.
    Turn { turn: usize, offset: u64 },
    /// `offset` bytes into direction `dir` of every connection.
    Stream { dir: Dir, offset: u64 },
}

/// A fault: `action` at `place`.
#[derive(Debug, Clone, Copy)]
pub struct Injection {
    pub place: Place,
    pub action: Action,
}

impl Injection {
    /// `action` in turn `turn` of the first connection, `offset` bytes into it.
    pub fn in_turn(turn: usize, offset: u64, action: Action) -> Injection {
        Injection { place: Place::Turn { turn, offset }, action }
    }

    /// `action` `offset` bytes into direction `dir` of every connection.
    pub fn in_stream(dir: Dir, offset: u64, action: Action) -> Injection {
        Injection { place: Place::Stream { dir, offset }, action }
    }
}

/// Bytes one way until the other side speaks, in the first connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Turn {
    pub dir: Dir,
    /// Offsets in that direction: the turn is bytes `start..end`.
    pub start: u64,
    pub end: u64,
    /// TLS records that start in the turn.
    pub records: u32,
}

/// Called once the first connection's turn `turn` has carried `offset` bytes (to kill the
/// clone at a chosen point), after `delay`.
pub struct Hook {
    pub turn: usize,
    pub offset: u64,
    pub delay: Duration,
    pub call: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hook(turn {}, offset {})", self.turn, self.offset)
    }
}

/// A running proxy (it stops accepting when dropped; live connections run out on their own).
pub struct FaultProxy {
    pub addr: String,
    turns: Arc<Mutex<Vec<Turn>>>,
    connections: Arc<AtomicU64>,
    /// Bytes forwarded up and down, all connections together.
    forwarded: Arc<[AtomicU64; 2]>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultProxy({})", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(&self.addr);
    }
}

impl FaultProxy {
    /// Listens on loopback, forwarding to `upstream`, applying `fault` (at a turn: to the first
    /// connection; in a stream: to every connection) and calling `hook` at its point of the
    /// first connection.
    pub fn start(upstream: &str, fault: Option<Injection>, hook: Option<Hook>) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let turns = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicU64::new(0));
        let forwarded = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_string();
        let (t, n, s, f) = (turns.clone(), connections.clone(), stop.clone(), forwarded.clone());
        let hook = hook.map(Arc::new);
        std::thread::Builder::new().name("fault-proxy".into()).spawn(move || {
            for device in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(device) = device else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let first = n.fetch_add(1, Ordering::Relaxed) == 0;
                let _ = device.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(d2), Ok(s2)) = (device.try_clone(), server.try_clone()) else { continue };
                for (dir, from, to) in [(Dir::Up, device, server), (Dir::Down, s2, d2)] {
                    let p = Pump {
                        dir,
                        fault: fault.filter(|f| first || matches!(f.place, Place::Stream { .. })),
                        hook: hook.clone().filter(|_| first),
                        turns: if first { t.clone() } else { Arc::new(Mutex::new(Vec::new())) },
                        forwarded: f.clone(),
                    };
                    std::thread::spawn(move || p.run(from, to));
                }
            }
        })?;
        Ok(FaultProxy { addr, turns, connections, forwarded, stop })
    }

    /// The first connection's turns so far.
    pub fn turns(&self) -> Vec<Turn> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Bytes forwarded in direction `dir` so far, all connections together.
    pub fn forwarded(&self, dir: Dir) -> u64 {
        self.forwarded[dir as usize].load(Ordering::Relaxed)
    }
}

/// One direction of one connection.
struct Pump {
    dir: Dir,
    fault: Option<Injection>,
    hook: Option<Arc<Hook>>,
    /// The connection's turns (both directions).
    turns: Arc<Mutex<Vec<Turn>>>,
    forwarded: Arc<[AtomicU64; 2]>,
}

impl Pump {
    fn count(&self, n: u64) {
        self.forwarded[self.dir as usize].fetch_add(n, Ordering::Relaxed);
    }
}

/// The length of the TLS record at the start of `buf`, when its header is there.
fn record_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 5).then(|| 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]])))
}

impl Pump {
    /// Notes `n` bytes read at direction offset `at` with `records` records starting in them;
    /// returns the turn they belong to and its start offset.
    fn note(&self, at: u64, n: u64, records: u32) -> (usize, u64) {
        let mut t = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        if t.last().is_none_or(|last| last.dir != self.dir) {
            t.push(Turn { dir: self.dir, start: at, end: at, records: 0 });
        }
        let i = t.len() - 1;
        let last = &mut t[i];
        last.end = at + n;
        last.records += records;
        (i, last.start)
    }

    fn run(self, mut from: TcpStream, mut to: TcpStream) {
        let record_mode = matches!(self.fault, Some(Injection { action: Action::Duplicate | Action::Reorder, .. }));
        let mut at = 0u64;
        // Bytes of a record not yet whole, and the direction offset where it starts.
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_at = 0u64;
        let mut held: Option<Vec<u8>> = None;
        let mut fired = false;
        let mut buf = vec![0u8; 64 * 1024];
        'outer: loop {
            // A record held back for reordering waits for the next one, but not for ever (the
            // peer may be waiting for it).
            let _ = from.set_read_timeout(if held.is_some() { Some(Duration::from_millis(200)) } else { None });
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if let Some(r) = held.take() {
                        if to.write_all(&r).is_err() {
                            break;
                        }
                        self.count(r.len() as u64);
                    }
                    continue;
                }
                Err(_) => break,
            };
            let mut chunk = buf[..n].to_vec();
            let start = at;
            at += n as u64;
            pending.extend_from_slice(&chunk);
            let mut whole: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut consumed = 0usize;
            while let Some(len) = record_len(&pending[consumed..]) {
                if pending.len() - consumed < len {
                    break;
                }
                whole.push((pending_at, pending[consumed..consumed + len].to_vec()));
                pending_at += len as u64;
                consumed += len;
            }
            pending.drain(..consumed);
            let (turn, turn_start) = self.note(start, n as u64, whole.len() as u32);
            let (from_in, to_in) = (start - turn_start, at - turn_start);
            if let Some(h) = &self.hook
                && h.turn == turn
                && h.offset >= from_in
                && h.offset < to_in
            {
                let h = h.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(h.delay);
                    (h.call)();
                });
            }
            // The fault's place as a direction offset: where its turn starts, or the stream's
            // start.
            let fault = self.fault.filter(|_| !fired).and_then(|f| match f.place {
                Place::Turn { turn: t, offset } if t == turn => Some((f.action, turn_start + offset)),
                Place::Stream { dir, offset } if dir == self.dir => Some((f.action, offset)),
                _ => None,
            });
            if record_mode {
                for (offset, r) in whole {
                    let len = r.len() as u64;
                    if let Some(h) = held.take() {
                        if to.write_all(&r).and_then(|()| to.write_all(&h)).is_err() {
                            break 'outer;
                        }
                        self.count(len + h.len() as u64);
                        continue;
                    }
                    if let Some((action, at_offset)) = fault
                        && !fired
                        && offset >= at_offset
                    {
                        fired = true;
                        if action == Action::Duplicate {
                            if to.write_all(&r).and_then(|()| to.write_all(&r)).is_err() {
                                break 'outer;
                            }
                            self.count(2 * len);
                        } else {
                            held = Some(r);
                        }
                        continue;
                    }
                    if to.write_all(&r).is_err() {
                        break 'outer;
                    }
                    self.count(len);
                }
                continue;
            }
            let mut send = chunk.len();
            let mut stop = None;
            if let Some((action, at_offset)) = fault
                && at_offset >= start
                && at_offset < at
            {
                fired = true;
                let k = (at_offset - start) as usize;
                match action {
                    Action::Corrupt => chunk[k] ^= 0x5a,
                    Action::Cut | Action::Stall => {
                        send = k;
                        stop = Some(action);
                    }
                    Action::Duplicate | Action::Reorder => unreachable!("record mode"),
                }
            }
            if to.write_all(&chunk[..send]).is_err() {
                break;
            }
            self.count(send as u64);
            match stop {
                Some(Action::Cut) => break,
                Some(_) => {
                    // Stalled: read on (so the sender is not blocked), forward nothing, until
                    // the peer gives up and closes.
                    while matches!(from.read(&mut buf), Ok(n) if n > 0) {}
                    break;
                }
                None => {}
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}
