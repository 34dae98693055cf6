//! clonecloud-linkem: a link emulator for TCP on loopback.
//!
//! The evaluation needs the device and the clone to talk over Wi-Fi and 3G while both run on one
//! machine, through the real transport and protocol. The kernels here have `tc tbf` (rate) but
//! not `netem` (delay), so the link is emulated in user space: a [`Link`] listens on loopback,
//! connects each accepted connection to the upstream address (the clone server), and forwards
//! the bytes both ways, each direction through a [`Pipe`] that says when every piece of data
//! arrives at the far end:
//!
//! - **rate**: pieces leave one after the other at the direction's bandwidth (a queue of unbounded
//!   length in front of the link, as a phone's send buffer plus the network's queues);
//! - **delay**: each piece arrives half the round-trip time after it left;
//! - **loss**: a stream cannot drop bytes, so a lost segment costs what it costs TCP: it arrives
//!   one retransmission timeout later (`max(200 ms, 2 RTT)`), and holds back what follows it
//!   (in-order delivery);
//! - **cut** and **down**: [`Link::cut`] tears down every live connection (both ends see a reset
//!   or end of stream), [`Link::set_down`] makes new connections fail at once (a link flapping).
//!
//! [`Pipe`] is pure (time in, time out) and tested alone; the threads around it only read, sleep
//! until the time it gives and write. The bytes are never changed. Counters tell how many bytes
//! went each way, for the energy model.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A link's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Device to clone, megabits per second.
    pub up_mbit: f64,
    /// Clone to device, megabits per second.
    pub down_mbit: f64,
    /// Round-trip time, milliseconds (half of it each way).
    pub rtt_ms: f64,
    /// Probability that a segment (1448 bytes) is lost and retransmitted, 0 to 1.
    pub loss: f64,
}

/// Link figures out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShapeError {
    #[error("bandwidth {up} / {down} Mbit/s: both must be positive")]
    Bandwidth { up: f64, down: f64 },
    #[error("round-trip time {0} ms: must be zero or more")]
    RoundTrip(f64),
    #[error("loss {0}: must be at least 0 and below 1")]
    Loss(f64),
}

impl Shape {
    /// The same bandwidth both ways, no loss.
    pub fn symmetric(mbit: f64, rtt_ms: f64) -> Shape {
        Shape { up_mbit: mbit, down_mbit: mbit, rtt_ms, loss: 0.0 }
    }

    /// Checks the figures: bandwidths positive, delay and loss in range.
    pub fn validate(&self) -> Result<(), ShapeError> {
        let ok = |v: f64| v > 0.0 && v.is_finite();
        if !ok(self.up_mbit) || !ok(self.down_mbit) {
            return Err(ShapeError::Bandwidth { up: self.up_mbit, down: self.down_mbit });
        }
        if !(self.rtt_ms >= 0.0 && self.rtt_ms.is_finite()) {
            return Err(ShapeError::RoundTrip(self.rtt_ms));
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err(ShapeError::Loss(self.loss));
        }
        Ok(())
    }
}

/// The segment size loss is drawn for (a TCP segment on a 1500-byte MTU).
pub const SEGMENT: usize = 1448;

/// One direction of a link: when each piece of data arrives. Pure: the caller gives the time.
#[derive(Debug, Clone)]
pub struct Pipe {
    bytes_per_s: f64,
    one_way: Duration,
    rto: Duration,
    loss: f64,
    /// When the link has finished sending everything scheduled so far.
    free_at: Duration,
    /// When the last piece arrives (nothing overtakes it).
    last_due: Duration,
    rng: u64,
}

impl Pipe {
    /// A pipe of `mbit` megabits per second, `rtt_ms` round trip (half of it this way), losing
    /// segments with probability `loss` (drawn from `seed`).
    pub fn new(mbit: f64, rtt_ms: f64, loss: f64, seed: u64) -> Pipe {
        let rtt = Duration::from_secs_f64(rtt_ms.max(0.0) / 1e3);
        Pipe {
            bytes_per_s: mbit * 1e6 / 8.0,
            one_way: rtt / 2,
            rto: (rtt * 2).max(Duration::from_millis(200)),
            loss,
            free_at: Duration::ZERO,
            last_due: Duration::ZERO,
            rng: seed | 1,
        }
    }

    /// Changes the figures for what is scheduled from now on (what is in flight keeps its time).
    pub fn reshape(&mut self, mbit: f64, rtt_ms: f64, loss: f64) {
        let rtt = Duration::from_secs_f64(rtt_ms.max(0.0) / 1e3);
        self.bytes_per_s = mbit * 1e6 / 8.0;
        self.one_way = rtt / 2;
        self.rto = (rtt * 2).max(Duration::from_millis(200));
        self.loss = loss;
    }

    /// The largest piece worth scheduling at once: about a millisecond of sending, at least a
    /// segment (a piece arrives whole, so bigger pieces would add latency).
    pub fn piece(&self) -> usize {
        ((self.bytes_per_s / 1000.0) as usize).max(SEGMENT)
    }

    /// `len` bytes handed to the link at `now` (time since any fixed origin): when they have all
    /// arrived at the far end.
    pub fn schedule(&mut self, now: Duration, len: usize) -> Duration {
        let start = now.max(self.free_at);
        self.free_at = start + Duration::from_secs_f64(len as f64 / self.bytes_per_s);
        let mut due = self.free_at + self.one_way;
        if self.loss > 0.0 {
            let segments = len.div_ceil(SEGMENT).max(1);
            if (0..segments).any(|_| self.draw() < self.loss) {
                due += self.rto;
            }
        }
        due = due.max(self.last_due);
        self.last_due = due;
        due
    }

    /// The end of the stream sent at `now`: after everything before it.
    pub fn close(&mut self, now: Duration) -> Duration {
        let due = (now.max(self.free_at) + self.one_way).max(self.last_due);
        self.last_due = due;
        due
    }

    fn draw(&mut self) -> f64 {
        // xorshift64*: reproducible loss for a seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Bytes that crossed the link so far (payload of the TCP streams, both directions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Device to clone.
    pub up: u64,
    /// Clone to device.
    pub down: u64,
    /// Connections accepted.
    pub connections: u64,
}

#[derive(Debug)]
struct Shared {
    upstream: Vec<SocketAddr>,
    shape: Mutex<Shape>,
    /// Bumped when the shape changes: pipes pick the new one up.
    generation: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
    connections: AtomicU64,
    down_flag: AtomicBool,
    stop: AtomicBool,
    live: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    origin: Instant,
}

/// A running link emulator: connections to [`Link::addr`] reach the upstream through it.
/// Dropping it stops accepting and tears down the live connections.
#[derive(Debug)]
pub struct Link {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Link {
    /// Listens on `listen` (`127.0.0.1:0` picks a port) and forwards to `upstream`.
    pub fn start(listen: &str, upstream: &str, shape: Shape) -> io::Result<Link> {
        shape.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let upstream: Vec<SocketAddr> = upstream.to_socket_addrs()?.collect();
        if upstream.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the upstream address resolves to nothing"));
        }
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            shape: Mutex::new(shape),
            generation: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            down_flag: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            live: Mutex::new(HashMap::new()),
            origin: Instant::now(),
        });
        let s = shared.clone();
        thread::Builder::new().name("linkem-accept".into()).spawn(move || accept_loop(listener, s))?;
        Ok(Link { addr, shared })
    }

    /// Where devices connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes and connections so far.
    pub fn counters(&self) -> Counters {
        Counters {
            up: self.shared.up.load(Ordering::Relaxed),
            down: self.shared.down.load(Ordering::Relaxed),
            connections: self.shared.connections.load(Ordering::Relaxed),
        }
    }

    /// The link's figures now.
    pub fn shape(&self) -> Shape {
        *lock(&self.shared.shape)
    }

    /// New figures, for data sent from now on (also on live connections).
    pub fn set_shape(&self, shape: Shape) -> Result<(), ShapeError> {
        shape.validate()?;
        *lock(&self.shared.shape) = shape;
        self.shared.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Tears down every live connection at once (both ends see the stream end or reset).
    pub fn cut(&self) {
        for (_, (a, b)) in lock(&self.shared.live).drain() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// While down, new connections are closed as soon as they are accepted (and, with
    /// [`Link::cut`], the live ones go too): a link that comes and goes.
    pub fn set_down(&self, down: bool) {
        self.shared.down_flag.store(down, Ordering::Release);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        self.cut();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(device) = conn else { continue };
        if shared.down_flag.load(Ordering::Acquire) {
            let _ = device.shutdown(Shutdown::Both);
            continue;
        }
        let clone = match TcpStream::connect(&shared.upstream[..]) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "link emulator: cannot reach the upstream");
                let _ = device.shutdown(Shutdown::Both);
                continue;
            }
        };
        next_id += 1;
        shared.connections.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = connect(next_id, device, clone, &shared) {
            tracing::warn!(error = %e, "link emulator: cannot start a connection");
        }
    }
}

/// Starts the two directions of one connection.
fn connect(id: u64, device: TcpStream, clone: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    let _ = device.set_nodelay(true);
    let _ = clone.set_nodelay(true);
    lock(&shared.live).insert(id, (device.try_clone()?, clone.try_clone()?));
    let seed = shared.origin.elapsed().as_nanos() as u64 ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let ends = Arc::new(AtomicU64::new(0));
    for (from, to, up) in [(device.try_clone()?, clone.try_clone()?, true), (clone, device, false)] {
        let (tx, rx) = mpsc::channel::<(Duration, Option<Vec<u8>>)>();
        let s = shared.clone();
        let to_w = to.try_clone()?;
        let s2 = shared.clone();
        let ends2 = ends.clone();
        thread::Builder::new().name("linkem-read".into()).spawn(move || reader(from, tx, &s, up, seed ^ u64::from(up)))?;
        thread::Builder::new().name("linkem-write".into()).spawn(move || {
            writer(to_w, rx, &s2, up);
            // Both directions done: forget the connection.
            if ends2.fetch_add(1, Ordering::AcqRel) == 1 {
                lock(&s2.live).remove(&id);
            }
        })?;
        drop(to);
    }
    Ok(())
}

fn current_pipe(shared: &Shared, up: bool, seed: u64) -> Pipe {
    let s = *lock(&shared.shape);
    Pipe::new(if up { s.up_mbit } else { s.down_mbit }, s.rtt_ms, s.loss, seed)
}

/// Reads what one side sends and schedules it on the pipe.
fn reader(mut from: TcpStream, tx: mpsc::Sender<(Duration, Option<Vec<u8>>)>, shared: &Shared, up: bool, seed: u64) {
    let mut pipe = current_pipe(shared, up, seed);
    let mut generation = shared.generation.load(Ordering::Acquire);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        let now = shared.origin.elapsed();
        if n == 0 {
            let _ = tx.send((pipe.close(now), None));
            return;
        }
        let g = shared.generation.load(Ordering::Acquire);
        if g != generation {
            generation = g;
            let s = *lock(&shared.shape);
            pipe.reshape(if up { s.up_mbit } else { s.down_mbit }, s.rtt_ms, s.loss);
        }
        for piece in buf[..n].chunks(pipe.piece()) {
            let due = pipe.schedule(now, piece.len());
            if tx.send((due, Some(piece.to_vec()))).is_err() {
                return;
            }
        }
    }
}

/// Delivers each piece at its time.
fn writer(mut to: TcpStream, rx: mpsc::Receiver<(Duration, Option<Vec<u8>>)>, shared: &Shared, up: bool) {
    let counter = if up { &shared.up } else { &shared.down };
    while let Ok((due, data)) = rx.recv() {
        let now = shared.origin.elapsed();
        if due > now {
            thread::sleep(due - now);
        }
        match data {
            Some(bytes) => {
                // Counted as handed over, so a reader that has everything sees it counted.
                counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if to.write_all(&bytes).is_err() {
                    break;
                }
            }
            None => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    #[test]
    fn rate_and_delay() {
        // 8 Mbit/s = 1 MB/s, 100 ms round trip: 1 MB arrives 1 s + 50 ms after it is handed over.
        let mut p = Pipe::new(8.0, 100.0, 0.0, 1);
        let due = p.schedule(Duration::ZERO, 1_000_000);
        assert!((ms(due) - 1050.0).abs() < 1e-6, "{}", ms(due));
        // A small message right after waits for the link to be free.
        let due = p.schedule(Duration::from_millis(10), 1000);
        assert!((ms(due) - 1051.0).abs() < 1e-6, "{}", ms(due));
        // Once the link is idle, only the delay counts.
        let due = p.schedule(Duration::from_secs(5), 0);
        assert!((ms(due) - 5050.0).abs() < 1e-6);
        // The end of the stream comes after the data.
        assert!(p.close(Duration::from_secs(5)) >= due);
    }

    #[test]
    fn loss_delays_by_a_timeout_and_keeps_order() {
        let mut p = Pipe::new(100.0, 10.0, 0.5, 7);
        let mut last = Duration::ZERO;
        let mut late = 0;
        for i in 0..200u64 {
            let now = Duration::from_millis(i);
            let due = p.schedule(now, SEGMENT);
            assert!(due >= last, "in order");
            if due >= now + Duration::from_millis(200) {
                late += 1;
            }
            last = due;
        }
        assert!(late > 50, "about half are retransmitted, got {late}");
        let mut clean = Pipe::new(100.0, 10.0, 0.0, 7);
        assert!(clean.schedule(Duration::ZERO, SEGMENT) < Duration::from_millis(6));
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(Shape::symmetric(0.0, 10.0).validate().is_err());
        assert!(Shape::symmetric(1.0, -1.0).validate().is_err());
        assert!(Shape { loss: 1.0, ..Shape::symmetric(1.0, 1.0) }.validate().is_err());
        assert!(Shape::symmetric(1.0, 0.0).validate().is_ok());
    }

    /// An echo server behind the link: bytes come back unchanged, in order, and a round trip
    /// takes at least the link's round-trip time twice (through the link and back).
    #[test]
    fn forwards_bytes_unchanged_with_delay_and_counts_them() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let up = server.local_addr().unwrap().to_string();
        thread::spawn(move || {
            for c in server.incoming() {
                let mut c = c.unwrap();
                thread::spawn(move || {
                    let mut r = c.try_clone().unwrap();
                    let _ = io::copy(&mut r, &mut c);
                });
            }
        });
        let link = Link::start("127.0.0.1:0", &up, Shape::symmetric(50.0, 40.0)).unwrap();
        let mut c = TcpStream::connect(link.addr()).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let start = Instant::now();
        let mut w = c.try_clone().unwrap();
        let d2 = data.clone();
        let t = thread::spawn(move || w.write_all(&d2).unwrap());
        let mut back = vec![0u8; data.len()];
        c.read_exact(&mut back).unwrap();
        t.join().unwrap();
        let took = start.elapsed();
        assert_eq!(back, data);
        // 200 KB at 50 Mbit/s is 32 ms each way, plus 40 ms of round trip.
        assert!(took >= Duration::from_millis(40 + 32), "{took:?}");
        let counters = link.counters();
        assert_eq!((counters.up, counters.down, counters.connections), (200_000, 200_000, 1));

        // A cut ends the stream at once; while down, new connections close at once.
        link.cut();
        let mut one = [0u8; 1];
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(c.read(&mut one), Ok(0) | Err(_)));
        link.set_down(true);
        let mut d = TcpStream::connect(link.addr()).unwrap();
        d.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(d.read(&mut one), Ok(0) | Err(_)));
        link.set_down(false);
        let mut e = TcpStream::connect(link.addr()).unwrap();
        e.write_all(b"x").unwrap();
        e.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
    }
}
