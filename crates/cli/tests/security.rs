//! Attacks on admission, against a real `clonecloud serve` process: what anyone on the network
//! can do before authenticating. A flood of idle connections past the process's descriptor limit,
//! connections that trickle their handshake a byte at a time, and an allowed device that never
//! sends its first message: the server goes on, closes what it must by the handshake deadline,
//! and an honest device's call runs on it meanwhile with output identical to a plain run.

#[path = "../../../tests/support/apps.rs"]
mod apps;
#[path = "../../../tests/support/clone.rs"]
mod clone;

use clonecloud_stats::Stats;
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CLONECLOUD: &str = env!("CARGO_BIN_EXE_clonecloud");
const APP: &str = "virus-scan";
const FUNCTION: &str = "virus_scan::db::Database::scan";

/// Keys for a server and one allowed device, and the allow file.
struct Keys {
    dir: tempfile::TempDir,
    server_key: String,
    server_pub: String,
    device_key: String,
    device_pub: String,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let (server_key, server_pub) = clone::keygen(CLONECLOUD, dir.path(), "server");
    let (device_key, device_pub) = clone::keygen(CLONECLOUD, dir.path(), "device");
    std::fs::write(dir.path().join("allow"), std::fs::read_to_string(&device_pub).unwrap()).unwrap();
    Keys { dir, server_key, server_pub, device_key, device_pub }
}

/// A `clonecloud serve` child under `ulimit -n NOFILE`, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    home: tempfile::TempDir,
}

impl Server {
    /// Its warnings go to `log` in its home.
    fn start(keys: &Keys, nofile: u32, extra: &[&str]) -> Server {
        let home = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(home.path().join("log")).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(CLONECLOUD)
            .args(["serve", "--listen", "127.0.0.1:0", "--key", &keys.server_key, "--allow"])
            .arg(keys.dir.path().join("allow"))
            .args(extra)
            .env("CLONECLOUD_HOME", home.path())
            .env("CLONECLOUD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("serve printed {line:?}")).to_string();
        Server { child, addr, home }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("log")).unwrap()
    }

    fn assert_alive(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "the server exited: {:?}", self.child.try_wait());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The app's input, and its plain local run.
struct Input {
    dir: tempfile::TempDir,
    plain: Output,
}

fn input() -> Input {
    let dir = tempfile::tempdir().unwrap();
    apps::generate(APP, "small", dir.path());
    let plain = apps::run_wasm(CLONECLOUD.as_ref(), APP, dir.path(), &[]);
    assert_eq!(plain.status.code(), Some(0), "{}", String::from_utf8_lossy(&plain.stderr));
    Input { dir, plain }
}

/// An honest device offloading FUNCTION to `server`: its output must equal the plain run's and
/// the call must have run on the clone (a migration, no fallback).
fn honest_device(keys: &Keys, server: &Server, input: &Input) -> Stats {
    let stats_dir = tempfile::tempdir().unwrap();
    let stats_file: PathBuf = stats_dir.path().join("stats.json");
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(CLONECLOUD)
        .arg("run")
        .args(["--offload", FUNCTION, "--clone", &server.addr, "--key", &keys.device_key, "--clone-key", &keys.server_pub, "--stats"])
        .arg(&stats_file)
        .arg("--dir")
        .arg(format!("{}::/input", input.dir.path().display()))
        .arg(apps::wasm(APP))
        .arg("/input")
        .env("CLONECLOUD_HOME", home.path())
        .env_remove("CLONECLOUD_LOG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), input.plain.status.code(), "exit code");
    assert!(out.stdout == input.plain.stdout, "stdout differs from the plain run");
    assert_eq!(String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&input.plain.stderr), "stderr");
    let s = Stats::read(&stats_file).expect("stats written");
    assert!(s.migrations > 0, "the call ran on the clone: {s:?}");
    assert_eq!(s.fallbacks.count, 0, "no fallback: {s:?}");
    s
}

/// Lets this process hold `n` more descriptors (the soft limit raised toward the hard one).
fn allow_descriptors(n: u64) {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit write and read the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = l.rlim_cur.saturating_add(n).min(l.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
    assert!(l.rlim_cur >= n, "this test needs {n} descriptors; the hard limit is {}", l.rlim_max);
}

/// Whether the server closed `s`: a read sees the end (or a reset) within `wait`.
fn closed_within(mut s: &TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

/// The confirmed attack: 1,100 idle TCP connections used to exhaust `ulimit -n 1024` and make
/// `accept` fail and the server exit. Now at most --max-pending of them are kept (each new one
/// past that drops the oldest), the server lives on, and an honest device migrates meanwhile.
#[test]
fn a_flood_of_idle_connections_past_the_descriptor_limit_does_not_stop_the_server() {
    const FLOOD: usize = 1100;
    const MAX_PENDING: usize = 64;
    allow_descriptors(FLOOD as u64 + 256);
    let keys = keys();
    let input = input();
    let mut server = Server::start(&keys, 1024, &["--max-pending", &MAX_PENDING.to_string()]);
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|k| {
            TcpStream::connect_timeout(&server.addr.parse().unwrap(), Duration::from_secs(30)).unwrap_or_else(|e| panic!("connection {k}: {e}"))
        })
        .collect();
    // The honest device's connection comes after all of them, and is served.
    honest_device(&keys, &server, &input);
    server.assert_alive();
    // Its files are kept under its whole key (not 64 bits of it, which another key may share).
    let id = clonecloud_net::PublicKey::load(Path::new(&keys.device_pub)).unwrap().id();
    assert_eq!(id.len(), 88);
    let files = server.home.path().join("clone-files");
    let dirs: Vec<String> = std::fs::read_dir(&files).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(dirs, vec![id], "the device's file store in {}", files.display());
    // By then the server had accepted every connection of the flood and kept at most
    // MAX_PENDING: all the others were closed by it.
    let closed = flood.iter().filter(|s| closed_within(s, Duration::from_millis(20))).count();
    assert!(closed >= FLOOD - MAX_PENDING, "only {closed} of {FLOOD} idle connections were closed by the server");
    // And it serves again with the flood still open.
    honest_device(&keys, &server, &input);
    server.assert_alive();
}

/// A failed `accept` does not end the server: with --max-pending above the descriptor limit,
/// the flood makes `accept` fail with "Too many open files"; the server backs off, closes the
/// idle connections at the handshake deadline, and serves an honest device afterwards.
#[test]
fn accept_failing_for_want_of_descriptors_does_not_stop_the_server() {
    const FLOOD: usize = 300;
    allow_descriptors(FLOOD as u64 + 256);
    let keys = keys();
    let input = input();
    let mut server = Server::start(&keys, 256, &["--max-pending", "4096", "--handshake-timeout", "2"]);
    let addr = server.addr.parse().unwrap();
    // Past the server's descriptors, connections wait in the listen backlog, and past that
    // may not connect at all: those are not needed.
    let flood: Vec<TcpStream> = (0..FLOOD).filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()).collect();
    // Each pending connection holds two descriptors of the server's 256.
    assert!(flood.len() > 200, "only {} connections opened", flood.len());
    // The server ran out of descriptors; it closes what it accepted at the deadline. Wait for
    // the first connection to be closed: then the flood is dropped.
    assert!(closed_within(&flood[0], Duration::from_secs(20)), "the server never closed the first idle connection");
    server.assert_alive();
    let log = server.log();
    assert!(log.contains("Too many open files") || log.contains("out of descriptors"), "accept never failed: {log}");
    drop(flood);
    honest_device(&keys, &server, &input);
    server.assert_alive();
}

/// Slowloris: connections that send a TLS record header and then a byte every 200 ms are
/// closed by the server at the handshake deadline (not kept alive by each byte resetting a
/// per-read timeout); an allowed device that completes TLS and then never sends its first
/// message is closed at the same deadline; an honest device is served meanwhile.
#[test]
fn slow_handshakes_are_cut_at_the_deadline() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let keys = keys();
    let input = input();
    let mut server = Server::start(&keys, 1024, &["--handshake-timeout", &TIMEOUT.as_secs_f64().to_string()]);
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();
    let started = Instant::now();
    let trickles: Vec<_> = (0..4)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            let mut writer = s.try_clone().unwrap();
            std::thread::spawn(move || {
                // A handshake record of 16 KiB that never completes.
                let _ = writer.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00]);
                while writer.write_all(&[0]).is_ok() {
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
            std::thread::spawn(move || {
                let closed = closed_within(&s, 3 * TIMEOUT);
                (closed, started.elapsed())
            })
        })
        .collect();
    // An allowed device, authenticated, that says nothing.
    let device = clonecloud_net::Identity::load(Path::new(&keys.device_key)).unwrap();
    let server_pub = clonecloud_net::PublicKey::load(Path::new(&keys.server_pub)).unwrap();
    let mut quiet = clonecloud_net::Connection::connect(addr, Some(&device), &server_pub, 3 * TIMEOUT).unwrap();
    let quiet = std::thread::spawn(move || (quiet.recv(), started.elapsed()));

    honest_device(&keys, &server, &input);

    for t in trickles {
        let (closed, after) = t.join().unwrap();
        assert!(closed, "a trickling connection was still open after {:?}", 3 * TIMEOUT);
        assert!(after >= TIMEOUT / 2, "closed after {after:?}: before the deadline, for another reason?");
    }
    let (r, after) = quiet.join().unwrap();
    assert!(!matches!(r, Err(clonecloud_net::NetError::Timeout(_))), "the silent device was not closed: {r:?}");
    assert!(r.is_err() && after < 3 * TIMEOUT, "{r:?} after {after:?}");
    server.assert_alive();
}
