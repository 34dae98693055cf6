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

impl Pool {
    /// A pool of `offloaders`, tried in this order (put different clones' first).
    pub fn new(offloaders: Vec<Offloader>) -> Pool {
        Pool { offloaders: offloaders.into_iter().map(Mutex::new).collect() }
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
