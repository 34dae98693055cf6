//! A connection: TLS over a TCP stream, carrying whole wire messages, with timeouts.

use crate::keys::{AllowList, Identity, PublicKey};
use crate::tls::{self, certificate_key};
use crate::NetError;
use clonecloud_wire::{Compression, Decoder, Message};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

enum Tls {
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
    Server(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Tls {
    fn sock(&self) -> &TcpStream {
        match self {
            Tls::Client(s) => &s.sock,
            Tls::Server(s) => &s.sock,
        }
    }
}

impl Read for Tls {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Tls::Client(s) => s.read(buf),
            Tls::Server(s) => s.read(buf),
        }
    }
}

impl Write for Tls {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Tls::Client(s) => s.write(buf),
            Tls::Server(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Tls::Client(s) => s.flush(),
            Tls::Server(s) => s.flush(),
        }
    }
}

/// One authenticated connection.
pub struct Connection {
    tls: Tls,
    decoder: Decoder,
    buf: Vec<u8>,
    peer: PublicKey,
    compression: Compression,
    /// Each read's own timeout, and the time by which a [`Connection::recv`] must end however
    /// the bytes trickle in.
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    /// Bytes of frames written and read (before TLS), for statistics.
    pub sent: u64,
    pub received: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection(peer {})", self.peer.fingerprint())
    }
}

fn io_err(what: &str, e: std::io::Error) -> NetError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => NetError::Timeout(what.to_string()),
        _ => NetError::io(what.to_string(), e),
    }
}

/// A socket whose every read and write ends by one deadline (each armed with what is left of
/// it, at most the per-read timeout): a peer that trickles a byte at a time cannot keep a
/// handshake going past the deadline, as it could with a per-read timeout alone.
struct Deadlined<'a> {
    sock: &'a mut TcpStream,
    deadline: Instant,
    timeout: Duration,
}

impl Deadlined<'_> {
    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "past the handshake's deadline"));
        }
        Ok(left.min(self.timeout))
    }
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let t = self.left()?;
        self.sock.set_read_timeout(Some(t))?;
        self.sock.read(buf)
    }
}

impl Write for Deadlined<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let t = self.left()?;
        self.sock.set_write_timeout(Some(t))?;
        self.sock.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

/// Drives a handshake to its end, so authentication failures surface here.
fn handshake<C, S>(conn: &mut C, sock: &mut (impl Read + Write)) -> Result<(), NetError>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(sock) {
            // A TLS alert or a refused certificate arrives as an InvalidData I/O error.
            return Err(match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(t) => NetError::Tls(t.clone()),
                None => io_err("the TLS handshake failed", e),
            });
        }
    }
    Ok(())
}

impl Connection {
    /// Connects to a clone server at `addr`, which must present the key `server`.
    pub fn connect(addr: impl ToSocketAddrs, id: Option<&Identity>, server: &PublicKey, timeout: Duration) -> Result<Connection, NetError> {
        let addr: SocketAddr = addr
            .to_socket_addrs()
            .map_err(|e| NetError::Resolve { addr: "the clone's address".into(), detail: e.to_string() })?
            .next()
            .ok_or_else(|| NetError::Resolve { addr: "the clone's address".into(), detail: "it resolves to no address".into() })?;
        let mut sock = TcpStream::connect_timeout(&addr, timeout).map_err(|e| io_err(&format!("cannot connect to {addr}"), e))?;
        sock.set_nodelay(true).ok();
        sock.set_read_timeout(Some(timeout)).ok();
        sock.set_write_timeout(Some(timeout)).ok();
        let cfg = tls::client_config(id, server.clone())?;
        let name = ServerName::try_from(tls::SERVER_NAME).expect("a valid name");
        let mut conn = ClientConnection::new(cfg, name).map_err(NetError::Tls)?;
        handshake(&mut conn, &mut sock)?;
        // With TLS 1.3 the server judges the device's certificate after the device's last
        // handshake flight: a refusal shows on the first read, as a TLS alert.
        Ok(Connection::new(Tls::Client(Box::new(StreamOwned::new(conn, sock))), server.clone()))
    }

    fn new(tls: Tls, peer: PublicKey) -> Connection {
        let timeout = tls.sock().read_timeout().ok().flatten();
        Connection { tls, decoder: Decoder::default(), buf: vec![0; 64 * 1024], peer, compression: Compression::None, timeout, deadline: None, sent: 0, received: 0 }
    }

    /// The authenticated peer's key.
    pub fn peer(&self) -> &PublicKey {
        &self.peer
    }

    pub fn set_timeout(&mut self, t: Option<Duration>) {
        self.timeout = t;
        self.tls.sock().set_read_timeout(t).ok();
        self.tls.sock().set_write_timeout(t).ok();
    }

    /// [`Connection::recv`] fails with [`NetError::Timeout`] at `deadline` (if not sooner by
    /// the read timeout), however slowly the peer keeps sending: a peer that trickles bytes
    /// cannot hold the reader past it.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
        if deadline.is_none() {
            self.tls.sock().set_read_timeout(self.timeout).ok();
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tls.sock().local_addr().ok()
    }

    /// A handle that breaks this connection from another thread: the blocked or next read and
    /// write fail (the clone uses it when a device resumes its session on a new connection).
    pub fn breaker(&self) -> Option<Breaker> {
        self.tls.sock().try_clone().ok().map(Breaker)
    }

    /// Frames longer than `bytes` are refused from now on (a protocol error): the clone sets
    /// it from its memory cap, so a device cannot make it buffer more than a replica may hold.
    pub fn set_max_frame(&mut self, bytes: usize) {
        self.decoder.set_max_frame(bytes);
    }

    /// The receiver's memory maximum, in wasm pages, and its page size (see
    /// [`clonecloud_wire::Decoder::set_memory_maximum`]): the device sets them from its module.
    pub fn set_memory_maximum(&mut self, wasm_pages: u32, page_size: u32) {
        self.decoder.set_memory_maximum(wasm_pages, page_size);
    }

    /// How page deltas are written from now on.
    pub fn set_compression(&mut self, c: Compression) {
        self.compression = c;
    }

    /// How the last message received was compressed (`None` when it carried nothing
    /// compressed).
    pub fn peer_compression(&self) -> Compression {
        self.decoder.last_compression
    }

    /// Sends one message.
    pub fn send(&mut self, m: &Message) -> Result<(), NetError> {
        let bytes = clonecloud_wire::to_bytes_with(m, self.compression);
        self.tls.write_all(&bytes).map_err(|e| io_err(&format!("sending {}", m.kind()), e))?;
        self.tls.flush().map_err(|e| io_err(&format!("sending {}", m.kind()), e))?;
        self.sent += bytes.len() as u64;
        tracing::trace!(target: "clonecloud_net::wire", "sent {} ({} bytes)", m.kind(), bytes.len());
        Ok(())
    }

    /// Receives one message; [`NetError::Closed`] when the peer closed the connection.
    pub fn recv(&mut self) -> Result<Message, NetError> {
        loop {
            if let Some(m) = self.decoder.next_message().map_err(NetError::Decode)? {
                tracing::trace!(target: "clonecloud_net::wire", "received {}", m.kind());
                return Ok(m);
            }
            if let Some(d) = self.deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(NetError::Timeout("receiving: past the deadline".into()));
                }
                let t = self.timeout.map_or(left, |t| t.min(left));
                self.tls.sock().set_read_timeout(Some(t)).ok();
            }
            self.read_once()?;
        }
    }

    /// One read of the TLS stream, fed to the decoder: [`NetError::Closed`] when the peer
    /// closed the connection, [`NetError::Timeout`] when nothing came in time (or, on a
    /// non-blocking socket, nothing is there now).
    fn read_once(&mut self) -> Result<(), NetError> {
        let n = match self.tls.read(&mut self.buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(read_error(e)),
        };
        if n == 0 {
            return Err(NetError::Closed);
        }
        self.received += n as u64;
        self.decoder.feed(&self.buf[..n]);
        Ok(())
    }

    /// A message if one has arrived, without waiting: `Ok(None)` when no whole message is
    /// here yet (what part of one arrived is kept for the next read); [`NetError::Closed`] when
    /// the peer closed the connection. The clone asks this while a migrated call runs, to hear
    /// a cancel.
    pub fn try_recv(&mut self) -> Result<Option<Message>, NetError> {
        if let Some(m) = self.decoder.next_message().map_err(NetError::Decode)? {
            return Ok(Some(m));
        }
        self.tls.sock().set_nonblocking(true).map_err(|e| io_err("receiving", e))?;
        let read = self.read_once();
        self.tls.sock().set_nonblocking(false).map_err(|e| io_err("receiving", e))?;
        match read {
            // Nothing there now.
            Err(NetError::Timeout(_)) => Ok(None),
            Err(e) => Err(e),
            Ok(()) => self.decoder.next_message().map_err(NetError::Decode),
        }
    }

    /// Ends the TLS session politely.
    pub fn close(mut self) {
        match &mut self.tls {
            Tls::Client(s) => s.conn.send_close_notify(),
            Tls::Server(s) => s.conn.send_close_notify(),
        }
        let _ = self.tls.flush();
    }
}

/// After this long without a byte from the peer, the clone's kernel asks it whether it is
/// there ([`KEEPALIVE_INTERVAL`] apart, [`KEEPALIVE_PROBES`] times); a device whose network
/// vanished (no FIN, no RST) then shows as a broken link within about half a minute, even
/// while a migrated call runs and nothing is said.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_PROBES: u32 = 3;

/// Turns TCP keepalive on with the timings above (best effort: a socket that refuses keeps
/// the kernel's defaults).
fn keep_alive(sock: &TcpStream) {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: `fd` is an open socket for the call, and the value is a c_int of that size.
        unsafe { libc::setsockopt(fd, level, name, (&raw const value).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE.as_secs() as libc::c_int);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL.as_secs() as libc::c_int);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES as libc::c_int);
}

/// What a failed read of the TLS stream means: TLS's own error, or the socket's.
fn read_error(e: std::io::Error) -> NetError {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => NetError::Tls(t.clone()),
        None => io_err("receiving", e),
    }
}

/// Breaks a [`Connection`] from another thread.
#[derive(Debug)]
pub struct Breaker(TcpStream);

impl Breaker {
    pub fn break_now(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// A listening clone server socket.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    cfg: Arc<rustls::ServerConfig>,
    timeout: Duration,
}

impl Listener {
    pub fn bind(addr: impl ToSocketAddrs, id: &Identity, allow: AllowList, timeout: Duration) -> Result<Listener, NetError> {
        let tcp = TcpListener::bind(addr).map_err(|e| NetError::io("cannot listen".into(), e))?;
        Ok(Listener { tcp, cfg: tls::server_config(id, allow)?, timeout })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().expect("a bound socket has an address")
    }

    /// Waits for the next TCP connection (the handshake is [`Incoming::accept`]'s, so a slow or
    /// hostile peer cannot hold up the listener). An error is the listener's (out of
    /// descriptors, buffers or memory, or a connection aborted before it was accepted): the
    /// listener still works, and a server backs off and calls again.
    pub fn incoming(&self) -> Result<Incoming, NetError> {
        let (sock, from) = self.tcp.accept().map_err(|e| NetError::io("accept failed".into(), e))?;
        Ok(Incoming { sock, from, cfg: self.cfg.clone(), timeout: self.timeout })
    }
}

/// A TCP connection not yet authenticated.
#[derive(Debug)]
pub struct Incoming {
    sock: TcpStream,
    pub from: SocketAddr,
    cfg: Arc<rustls::ServerConfig>,
    timeout: Duration,
}

impl Incoming {
    /// A handle that breaks this connection from another thread, before or after the handshake
    /// (a server drops the oldest unauthenticated connection with it); `None` when the socket
    /// cannot be duplicated (out of descriptors).
    pub fn breaker(&self) -> Option<Breaker> {
        self.sock.try_clone().ok().map(Breaker)
    }

    /// The TLS handshake, within the listener's timeout in all: succeeds only for a device on
    /// the allow list.
    pub fn accept(self) -> Result<Connection, NetError> {
        let deadline = Instant::now() + self.timeout;
        self.accept_by(deadline)
    }

    /// The TLS handshake, which must end by `deadline` however slowly the peer sends: succeeds
    /// only for a device on the allow list. The connection's reads and writes then time out
    /// after the listener's timeout each (a server may bound the first message by the same
    /// deadline with [`Connection::set_deadline`]).
    pub fn accept_by(self, deadline: Instant) -> Result<Connection, NetError> {
        let mut sock = self.sock;
        sock.set_nodelay(true).ok();
        keep_alive(&sock);
        let mut conn = ServerConnection::new(self.cfg).map_err(NetError::Tls)?;
        handshake(&mut conn, &mut Deadlined { sock: &mut sock, deadline, timeout: self.timeout })?;
        sock.set_read_timeout(Some(self.timeout)).ok();
        sock.set_write_timeout(Some(self.timeout)).ok();
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| NetError::Tls(rustls::Error::NoCertificatesPresented))?;
        let peer = certificate_key(cert).map_err(NetError::Tls)?;
        Ok(Connection::new(Tls::Server(Box::new(StreamOwned::new(conn, sock))), peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(sock: &TcpStream, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an open socket, and a c_int-sized buffer with its length.
        let r = unsafe { libc::getsockopt(sock.as_raw_fd(), level, name, (&raw mut value).cast(), &raw mut len) };
        assert_eq!(r, 0);
        value
    }

    /// The clone's side of a connection probes a silent peer (a device whose network vanished
    /// sends neither FIN nor RST), with the timings the docs give.
    #[test]
    fn the_clone_s_connections_probe_a_silent_device() {
        let (device, server) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let t = Duration::from_secs(5);
        let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([device.public().clone()]), t).unwrap();
        let addr = listener.local_addr();
        let accepting = std::thread::spawn(move || listener.incoming().unwrap().accept().unwrap());
        let _d = Connection::connect(addr, Some(&device), server.public(), t).unwrap();
        let s = accepting.join().unwrap();
        let sock = s.tls.sock();
        assert_eq!(option(sock, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(option(sock, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), KEEPALIVE_IDLE.as_secs() as libc::c_int);
        assert_eq!(option(sock, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), KEEPALIVE_INTERVAL.as_secs() as libc::c_int);
        assert_eq!(option(sock, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), KEEPALIVE_PROBES as libc::c_int);
    }
}
