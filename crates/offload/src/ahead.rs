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
use clonecloud_net::Connection;
use clonecloud_wire::{DeviceEvent, DeviceSession};
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
    /// Starts opening a session on the connection `dial` makes: hello, module, directories.
    /// `timeout` is the reply timeout the session keeps afterwards.
    pub fn start(
        dial: impl FnOnce() -> Result<Connection, Abort> + Send + 'static,
        mut session: DeviceSession,
        layout: Arc<clonecloud_exec::Layout>,
        mut scanner: Scanner,
        timeout: Duration,
    ) -> Ahead {
        let progress = Arc::new(Progress::new());
        let p = progress.clone();
        let thread = std::thread::Builder::new()
            .name("clonecloud-ahead".into())
            .spawn(move || {
                let result = (|| {
                    let mut conn = dial()?;
                    let mut uploaded = false;
                    conn.set_timeout(Some(timeout.max(READY_TIMEOUT)));
                    conn.send(&session.hello().map_err(|e| abort(Cause::Protocol, e))?).map_err(net)?;
                    match session.on_message(conn.recv().map_err(net)?).map_err(|e| abort(Cause::Protocol, e))? {
                        DeviceEvent::Welcomed { need_module: true } => {
                            p.module_bytes.store(layout.wasm.len() as u64, Ordering::Relaxed);
                            p.set(Phase::Uploading);
                            let m = session.module(layout.wasm.clone()).map_err(|e| abort(Cause::Protocol, e))?;
                            conn.send(&m).map_err(net)?;
                            uploaded = true;
                        }
                        DeviceEvent::Welcomed { need_module: false } => {}
                        other => return Err(abort(Cause::Protocol, format!("expected a welcome, got {other:?}"))),
                    }
                    p.set(Phase::Compiling);
                    // The listing goes even when nothing is replicated: its answer is the sign
                    // that the clone has compiled the module.
                    let (trees, replicate) = match scanner.scan() {
                        Ok(Some(trees)) => (trees, true),
                        Ok(None) => (Vec::new(), true),
                        Err(e) => {
                            tracing::info!("the preopened directories are not replicated to the clone: {e}");
                            scanner.forget_sent();
                            (Vec::<Tree>::new(), false)
                        }
                    };
                    let (sent0, received0) = (conn.sent, conn.received);
                    let mut sync = clonecloud_stats::FileSync { syncs: 1, entries: trees.iter().map(|t| t.entries.len() as u64).sum(), ..Default::default() };
                    conn.send(&session.files(trees).map_err(|e| abort(Cause::Protocol, e))?).map_err(net)?;
                    let hashes = match session.on_message(conn.recv().map_err(net)?).map_err(|e| abort(Cause::Protocol, e))? {
                        DeviceEvent::NeedFiles { hashes } => hashes,
                        other => return Err(abort(Cause::Protocol, format!("expected the files the clone needs, got {other:?}"))),
                    };
                    let contents: Vec<_> = hashes
                        .iter()
                        .map(|h| scanner.content(h).map(|c| (*h, c)).ok_or_else(|| abort(Cause::Files, "a file changed while it was being replicated")))
                        .collect::<Result<_, _>>()?;
                    p.file_bytes.store(contents.iter().map(|(_, c)| c.len() as u64).sum(), Ordering::Relaxed);
                    p.set(Phase::Syncing);
                    sync.files_sent = contents.len() as u64;
                    sync.bytes = p.file_bytes.load(Ordering::Relaxed);
                    for (h, content) in contents {
                        conn.send(&session.file_data(h, content).map_err(|e| abort(Cause::Protocol, e))?).map_err(net)?;
                    }
                    sync.bytes_on_wire = conn.sent - sent0 + conn.received - received0;
                    // The listing's answer waited for the compile: only the rest is the sync's.
                    sync.ms = p.in_phase().as_secs_f64() * 1e3;
                    conn.set_timeout(Some(timeout));
                    Ok(Opened { conn, session, scanner, replicate, uploaded, sync })
                })();
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
