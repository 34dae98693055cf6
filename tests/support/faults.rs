//! A loopback TCP proxy that breaks the link on purpose: it forwards bytes between a device and a
//! clone server and can cut the connection after a number of bytes in either direction, flip a
//! byte, or stall. Shared by test suites (`#[path]`-included).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What to do to the traffic of each connection. Offsets count the bytes of one connection, in
/// one direction: `up` is device → server, `down` server → device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fault {
    /// Close both directions once this many bytes went up.
    pub cut_up: Option<u64>,
    /// Close both directions once this many bytes came down.
    pub cut_down: Option<u64>,
    /// Flip the down byte at this offset.
    pub corrupt_down: Option<u64>,
    /// Stop forwarding down bytes (keeping the connection open) from this offset.
    pub stall_down: Option<u64>,
}

/// A running proxy; `up`/`down` count the bytes it forwarded over all connections. A cut
/// connection is closed for good (every handle dropped), so the peers see a reset rather than a
/// half-open socket.
#[derive(Debug)]
pub struct Proxy {
    pub addr: String,
    pub up: Arc<AtomicU64>,
    pub down: Arc<AtomicU64>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: Option<u64>, corrupt: Option<u64>, stall: Option<u64>, count: Arc<AtomicU64>) {
    let mut at = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = buf[..n].to_vec();
        if let Some(c) = corrupt.filter(|&c| c >= at && c < at + n as u64) {
            chunk[(c - at) as usize] ^= 0x5a;
        }
        let mut send = chunk.len();
        let mut stop = false;
        for limit in [cut, stall].into_iter().flatten() {
            if at + send as u64 >= limit {
                send = (limit.saturating_sub(at)) as usize;
                stop = true;
            }
        }
        if to.write_all(&chunk[..send]).is_err() {
            break;
        }
        at += send as u64;
        count.fetch_add(send as u64, Ordering::Relaxed);
        if stop {
            if stall.is_some_and(|s| at >= s) && cut.is_none_or(|c| at < c) {
                // Stalled: keep the connection open, forward nothing more.
                std::thread::sleep(Duration::from_secs(3600));
            }
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Starts a proxy to `target` applying `fault` to every connection.
pub fn proxy(target: &str, fault: Fault) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let target = target.to_string();
    let (u, d) = (up.clone(), down.clone());
    std::thread::spawn(move || {
        for device in listener.incoming() {
            let Ok(device) = device else { return };
            let Ok(server) = TcpStream::connect(&target) else { continue };
            let (d1, s1) = (device.try_clone().unwrap(), server.try_clone().unwrap());
            let u = u.clone();
            std::thread::spawn(move || pump(d1, s1, fault.cut_up, None, None, u));
            let d = d.clone();
            std::thread::spawn(move || pump(server, device, fault.cut_down, fault.corrupt_down, fault.stall_down, d));
        }
    });
    Proxy { addr, up, down }
}
