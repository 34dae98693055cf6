//! Offloading for a multi-threaded program: a pool of [`Offloader`]s, each with a session (and
//! so a replica) of its own on one of the clones, shared by every thread. A thread at a
//! migration point takes a free offloader and migrates through it while the program's other
//! threads run on (the offloader checks and merges the answer: see `Offloader::merge_thread`);
//! when every offloader is busy with another thread's call, the thread runs its call here rather
//! than wait. Several threads away at once go to different sessions, and with several clones the
//! pool alternates between them, so concurrent migrations go to different clones.

use std::sync::{Arc, Mutex};

use clonecloud_exec::{Guest, Migrator};
use wasmtime::Val;

use crate::Offloader;

/// How many sessions the pool opens per clone: as many threads of one program can be away on one
/// clone at once.
pub const SESSIONS_PER_CLONE: usize = 4;

/// The pool, as each thread's [`Migrator`] (cloning it shares the offloaders).
#[derive(Clone)]
pub struct Pool {
    offloaders: Arc<[Mutex<Offloader>]>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} offloaders)", self.offloaders.len())
    }
}

/// What a pool's offloaders share to send a point's migrations one at a time once one of them
/// conflicted. Two calls away at once that both allocate from the program's one heap both read
/// and write the allocator's state, so the second to merge always conflicts (a local run would
/// have given it other addresses), and so does a call away while a device thread allocates
/// (starting a thread allocates its stack). Run again here, such a call would take the slow
/// device's time; instead it is sent again, and from then on the point's calls take turns (the
/// ones away at once then have the clone to themselves), as lock elision takes the lock after
/// an abort. A call that conflicts again is sent again, a few times, then runs here. Each point
/// takes turns with its own calls only; the program's other threads run on. A thread waiting
/// for its turn holds its offloader (its session), so with every offloader held a call of
/// another point runs here.
#[derive(Debug, Default)]
pub struct OneAtATime {
    /// The points whose migrations take turns (by ordinal), each with the gate its migration
    /// whose turn it is holds.
    points: Mutex<std::collections::HashMap<usize, Arc<Mutex<()>>>>,
    /// Threads' migrations merged so far (a conflict after one of them may be with it).
    merges: std::sync::atomic::AtomicU64,
}

impl OneAtATime {
    /// Point `j`'s gate, if its migrations take turns: its turn is [`Turn::wait`].
    pub(crate) fn turn(&self, j: usize) -> Option<Turn> {
        self.points.lock().unwrap_or_else(|e| e.into_inner()).get(&j).cloned().map(Turn)
    }

    /// Point `j`'s migrations take turns from now on.
    pub(crate) fn one_at_a_time(&self, j: usize) {
        self.points.lock().unwrap_or_else(|e| e.into_inner()).entry(j).or_default();
    }

    pub(crate) fn merges(&self) -> u64 {
        self.merges.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn merged(&self) {
        self.merges.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A point's gate (see [`OneAtATime`]).
pub(crate) struct Turn(Arc<Mutex<()>>);

impl Turn {
    /// Waits for the turn; it ends when the guard goes.
    pub(crate) fn wait(&self) -> std::sync::MutexGuard<'_, ()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Pool {
    /// A pool of `offloaders`, tried in this order (put different clones' first).
    pub fn new(offloaders: Vec<Offloader>) -> Pool {
        let shared = Arc::new(OneAtATime::default());
        Pool {
            offloaders: offloaders
                .into_iter()
                .map(|mut o| {
                    o.take_turns_with(shared.clone());
                    Mutex::new(o)
                })
                .collect(),
        }
    }

    /// Gets every clone ready in the background (see [`Offloader::send_ahead`]).
    pub fn send_ahead(&self) {
        for o in self.offloaders.iter() {
            o.lock().unwrap_or_else(|e| e.into_inner()).send_ahead();
        }
    }
}

impl Migrator for Pool {
    fn migrate(&mut self, guest: &mut Guest<'_, '_>, point: usize, params: &[Val], results: &mut [Val]) -> wasmtime::Result<()> {
        for o in self.offloaders.iter() {
            // A poisoned offloader (a migration panicked) is not used again.
            if let Ok(mut o) = o.try_lock() {
                return o.migrate(guest, point, params, results);
            }
        }
        guest.call_local(point, params, results)
    }

    fn for_thread(&self) -> Option<Box<dyn Migrator>> {
        Some(Box::new(self.clone()))
    }
}

/// The pool's offloaders for `target` and its other clones: [`SESSIONS_PER_CLONE`] per clone,
/// each clone's first before any clone's second (so concurrent migrations spread over the
/// clones), each failing over to the other clones in turn.
pub fn offloaders(target: &crate::Target, mut make: impl FnMut(crate::Target) -> Offloader) -> Vec<Offloader> {
    let own = crate::Endpoint { addr: target.addr.clone(), server_key: target.server_key.clone(), identity: target.identity.clone() };
    let clones: Vec<crate::Endpoint> = std::iter::once(own).chain(target.others.iter().cloned()).collect();
    let mut out = Vec::with_capacity(clones.len() * SESSIONS_PER_CLONE);
    for _ in 0..SESSIONS_PER_CLONE {
        for k in 0..clones.len() {
            let mut t = target.clone();
            let first = &clones[k];
            (t.addr, t.server_key, t.identity) = (first.addr.clone(), first.server_key.clone(), first.identity.clone());
            t.others = clones[k + 1..].iter().chain(&clones[..k]).cloned().collect();
            out.push(make(t));
        }
    }
    out
}
