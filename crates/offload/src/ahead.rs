//! Getting the clone ready before the first migration point: a session opened in the
//! background at launch (connect, hello, the module uploaded when the clone lacks it and
//! compiled there, the directories replicated), and the choice a migration point makes while
//! that is still under way: wait for the clone, or run the call here, whichever is expected to
//! end sooner.
//!
//! The clone compiles an uploaded module before it answers the next message, so the answer to
//! the file listing that follows the module (`need-files`) says the clone is ready. That wait
//! gets its own, long timeout ([`READY_TIMEOUT`]): a large module's compile is expected, not a
//! failure, and no guest call is waiting on it unless the device chose to wait.

use crate::device::{Abort, abort, net};
use clonecloud_stats::Cause;
use clonecloud_files::{Scanner, Tree};
use clonecloud_net::{Connection, NetError};
use clonecloud_wire::{ConnEvent, DeviceConfig, DeviceConn, DeviceSession};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the clone may take to compile an uploaded module and take the directories.
pub const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// Bytes of wasm per second a clone's Cranelift compiles (measured: about 9 MB/s for a 39 MB
/// module of 50,000 functions on two cores of a shared machine; a clone is a stronger machine,
/// so this errs towards waiting). Only the choice between waiting and running here uses it.
pub const COMPILE_BYTES_PER_S: f64 = 8e6;

/// Link throughput assumed before one is measured (bytes per second): a Wi-Fi link's.
const DEFAULT_RATE: f64 = 2.5e6;

/// Where the background session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Connecting = 0,
    /// Sending the module.
    Uploading = 1,
    /// The clone has the module (sent or by hash) and compiles it; the directories' listing is
    /// on its way.
    Compiling = 2,
    /// Sending the file contents the clone asked for.
    Syncing = 3,
    Ready = 4,
    Failed = 5,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Connecting,
            1 => Phase::Uploading,
            2 => Phase::Compiling,
            3 => Phase::Syncing,
            4 => Phase::Ready,
            _ => Phase::Failed,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Uploading => "sending the module",
            Phase::Compiling => "the clone is compiling the module",
            Phase::Syncing => "replicating the directories",
            Phase::Ready => "ready",
            Phase::Failed => "failed",
        }
    }
}

/// What the background session reports while it works.
#[derive(Debug)]
pub struct Progress {
    phase: AtomicU8,
    /// When the current phase began.
    since: Mutex<Instant>,
    /// Bytes of the module to send (0 when the clone has it).
    pub module_bytes: AtomicU64,
    /// File contents to send, bytes.
    pub file_bytes: AtomicU64,
    started: Instant,
}

impl Progress {
    fn new() -> Progress {
        let now = Instant::now();
        Progress { phase: AtomicU8::new(Phase::Connecting as u8), since: Mutex::new(now), module_bytes: AtomicU64::new(0), file_bytes: AtomicU64::new(0), started: now }
    }

    fn set(&self, phase: Phase) {
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.phase.store(phase as u8, Ordering::Release);
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Time in the current phase.
    pub fn in_phase(&self) -> Duration {
        self.since.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }

    /// Time since the session was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The expected time until the clone is ready, from the phase, the module's size, the
    /// link's throughput (`rate`, bytes per second, when measured) and the compile rate.
    pub fn remaining(&self, wasm_bytes: usize, rate: Option<f64>) -> Duration {
        let rate = rate.unwrap_or(DEFAULT_RATE).max(1.0);
        let module = self.module_bytes.load(Ordering::Relaxed) as f64;
        let compile = wasm_bytes as f64 / COMPILE_BYTES_PER_S;
        let files = self.file_bytes.load(Ordering::Relaxed) as f64 / rate;
        let spent = self.in_phase().as_secs_f64();
        let left = match self.phase() {
            // Until the welcome, it is not known whether the module must be sent: assume so.
            Phase::Connecting => wasm_bytes as f64 / rate + compile,
            Phase::Uploading => (module / rate - spent).max(0.0) + compile,
            Phase::Compiling => (compile - spent).max(0.0) + files,
            Phase::Syncing => (files - spent).max(0.0),
            Phase::Ready | Phase::Failed => 0.0,
        };
        Duration::from_secs_f64(left)
    }
}

/// A session that was opened, and the scanner that replicated the directories to it.
pub(crate) struct Opened {
    pub conn: Connection,
    pub session: DeviceSession,
    pub scanner: Scanner,
    /// False when the directories could not be scanned (the clone got none).
    pub replicate: bool,
    /// Whether the module was sent (the clone did not have it).
    pub uploaded: bool,
    /// The directories' replication.
    pub sync: clonecloud_stats::FileSync,
}

/// A session being opened in the background.
pub(crate) struct Ahead {
    thread: JoinHandle<Result<Opened, Abort>>,
    pub progress: Arc<Progress>,
}

impl std::fmt::Debug for Ahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ahead").field("phase", &self.progress.phase()).finish()
    }
}

impl Ahead {
    /// Starts opening a session on connections `dial` makes, driving a protocol core of its own
    /// made with `config` ([`DeviceConn::open`]: hello, module, directories); the core that
    /// migrates adopts the session. `timeout` is the reply timeout the session keeps afterwards.
    pub fn start(
        dial: impl FnMut() -> Result<Connection, Abort> + Send + 'static,
        config: DeviceConfig,
        layout: Arc<clonecloud_exec::Layout>,
        scanner: Scanner,
        timeout: Duration,
    ) -> Ahead {
        let progress = Arc::new(Progress::new());
        let p = progress.clone();
        let thread = std::thread::Builder::new()
            .name("clonecloud-ahead".into())
            .spawn(move || {
                let result = open(dial, config, &layout, scanner, timeout, &p);
                p.set(if result.is_ok() { Phase::Ready } else { Phase::Failed });
                result
            })
            .expect("spawn a thread");
        Ahead { thread, progress }
    }

    pub fn finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// The session, once the background work ends (waits for it).
    pub fn join(self) -> Result<Opened, Abort> {
        self.thread.join().unwrap_or_else(|_| Err(abort(Cause::Internal, "the background session panicked")))
    }
}

/// The background session's driver: moves the core's messages, answers its events (the module,
/// the directories' listing and contents) and marks the progress a migration point weighs.
fn open(mut dial: impl FnMut() -> Result<Connection, Abort>, config: DeviceConfig, layout: &clonecloud_exec::Layout, mut scanner: Scanner, timeout: Duration, p: &Progress) -> Result<Opened, Abort> {
    let mut core = DeviceConn::new(config);
    core.open(Instant::now(), timeout.max(READY_TIMEOUT));
    let mut conn: Option<Connection> = None;
    let (mut uploaded, mut replicate) = (false, true);
    let mut sync = clonecloud_stats::FileSync::default();
    let mut on_wire0 = 0;
    loop {
        flush(&mut core, conn.as_mut());
        match core.poll_event() {
            Some(ConnEvent::Dial) => {
                conn = None;
                match dial() {
                    Ok(mut c) => {
                        // The clone compiles an uploaded module before it answers the listing.
                        c.set_timeout(Some(timeout.max(READY_TIMEOUT)));
                        conn = Some(c);
                        core.handle_connected(Instant::now());
                    }
                    Err(a) => core.handle_dial_failed(Instant::now(), a.cause, a.detail),
                }
            }
            Some(ConnEvent::ModuleWanted) => {
                p.module_bytes.store(layout.wasm.len() as u64, Ordering::Relaxed);
                p.set(Phase::Uploading);
                core.module(layout.wasm.to_vec());
                uploaded = true;
            }
            Some(ConnEvent::ListFiles) => {
                p.set(Phase::Compiling);
                // The listing goes even when nothing is replicated: its answer is the sign that
                // the clone has compiled the module.
                let trees = match scanner.scan() {
                    Ok(Some(trees)) => trees,
                    Ok(None) => Vec::new(),
                    Err(e) => {
                        tracing::info!("the preopened directories are not replicated to the clone: {e}");
                        scanner.forget_sent();
                        replicate = false;
                        Vec::<Tree>::new()
                    }
                };
                on_wire0 = conn.as_ref().map_or(0, |c| c.sent + c.received);
                sync = clonecloud_stats::FileSync { syncs: 1, entries: trees.iter().map(|t| t.entries.len() as u64).sum(), ..Default::default() };
                core.files(trees);
            }
            Some(ConnEvent::NeedFiles { hashes }) => {
                // (Sizes as the files are now: for the estimate of what is left.)
                p.file_bytes.store(hashes.iter().filter_map(|h| scanner.content_len(h)).sum(), Ordering::Relaxed);
                p.set(Phase::Syncing);
                sync.files_sent = hashes.len() as u64;
                for h in hashes {
                    let Some(content) = scanner.content(&h) else {
                        core.give_up(Cause::Files);
                        // The clone hears the session is over (it frees it at once).
                        flush(&mut core, conn.as_mut());
                        return Err(abort(Cause::Files, "a file changed while it was being replicated"));
                    };
                    sync.bytes += content.len() as u64;
                    core.file_data(h, content);
                    // Each content goes out before the next is read (after a break, the core
                    // takes no more, and knows what comes next).
                    if !flush(&mut core, conn.as_mut()) {
                        break;
                    }
                }
                core.files_sent();
            }
            Some(ConnEvent::Ready) => {
                let mut conn = conn.take().ok_or_else(|| abort(Cause::Internal, "a session is ready with no connection"))?;
                sync.bytes_on_wire = (conn.sent + conn.received).saturating_sub(on_wire0);
                // The listing's answer waited for the compile: only the rest is the sync's.
                sync.ms = p.in_phase().as_secs_f64() * 1e3;
                conn.set_timeout(Some(timeout));
                let session = core.take_session().ok_or_else(|| abort(Cause::Internal, "a session is ready but not open"))?;
                return Ok(Opened { conn, session, scanner, replicate, uploaded, sync });
            }
            Some(ConnEvent::Abandoned { cause, detail }) => return Err(abort(cause, detail)),
            Some(ConnEvent::NewSession | ConnEvent::Retried | ConnEvent::Resumed) => {}
            Some(e @ (ConnEvent::Capture | ConnEvent::ImportCall { .. } | ConnEvent::Returned { .. })) => {
                return Err(abort(Cause::Internal, format!("a session opened ahead has no migration, yet the core asked: {e:?}")));
            }
            None if core.awaits_message() => match conn.as_mut().map_or(Err(NetError::Closed), |c| c.recv()) {
                Ok(m) => core.handle_message(Instant::now(), m),
                Err(e) => {
                    let a = net(e);
                    core.handle_broken(Instant::now(), a.cause, a.detail);
                }
            },
            None => match core.poll_timeout() {
                Some(at) => {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    core.handle_timeout(Instant::now());
                }
                None => return Err(abort(Cause::Internal, "the protocol core waits for nothing")),
            },
        }
    }
}

/// Sends what the core has to send on `conn`; a send that fails is the core's to handle
/// (`false`: the link broke).
fn flush(core: &mut DeviceConn, mut conn: Option<&mut Connection>) -> bool {
    while let Some(m) = core.poll_transmit() {
        let sent = conn.as_deref_mut().map_or(Err(NetError::Closed), |c| c.send(&m));
        if let Err(e) = sent {
            let a = net(e);
            core.handle_broken(Instant::now(), a.cause, a.detail);
            return false;
        }
    }
    true
}

/// What a migration point does while the clone is not ready yet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Choice {
    /// Wait for the clone: expected to end sooner (or nothing is known of the call's local time).
    Wait,
    /// Run this call here.
    Local,
}

/// Wait, or run here: the call's expected time here (`local_s`, from the profile; `None`: not
/// known, and the user asked for it to be offloaded) against the time until the clone is ready
/// plus the call's expected time there.
pub fn choose(local_s: Option<f64>, remaining: Duration, clone_s: f64) -> Choice {
    match local_s {
        Some(local) if local < remaining.as_secs_f64() + clone_s => Choice::Local,
        _ => Choice::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_runs_here_when_that_ends_before_the_clone_is_ready() {
        let remaining = Duration::from_secs(3);
        assert_eq!(choose(Some(0.5), remaining, 0.1), Choice::Local);
        assert_eq!(choose(Some(10.0), remaining, 1.0), Choice::Wait);
        assert_eq!(choose(None, remaining, 0.0), Choice::Wait, "asked for by name, nothing known");
        assert_eq!(choose(Some(0.5), Duration::ZERO, 0.1), Choice::Wait, "ready now and faster there");
    }

    #[test]
    fn the_estimate_follows_the_phase() {
        let p = Progress::new();
        let mb40 = 40_000_000;
        let connecting = p.remaining(mb40, Some(100e6));
        assert!((connecting.as_secs_f64() - (0.4 + 5.0)).abs() < 0.05, "{connecting:?}");
        p.set(Phase::Compiling);
        assert!(p.remaining(mb40, Some(100e6)) <= Duration::from_secs(5));
        p.set(Phase::Ready);
        assert_eq!(p.remaining(mb40, None), Duration::ZERO);
    }
}
