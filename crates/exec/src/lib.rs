//! Running a WASI preview 1 command module, plain or rewritten with migration points, on
//! wasmtime: the engine, the on-disk cache of compiled modules, the WASI context and the host
//! side of the migration imports.
//!
//! Used by the device, and by the clone's runtime (crate clonecloud-replica) for its engine,
//! its module cache and the guest's memory state. It opens no sockets and runs no replica: what
//! happens at a migration point is decided by a [`PointMode`], or by the device runtime that
//! plugs in here ([`Migrator`]).
//!
//! The entry type is [`Program`]: [`Program::prepare`] rewrites (if points are asked for),
//! compiles or loads from the [`ModuleCache`], and [`Program::run`] runs it to an [`Outcome`]
//! with the behaviour of `wasmtime run`: the guest's exit code, or the trap that stopped it.
//! Multi-threaded modules (wasi-threads) are programs too: each thread has a store and an
//! instance of its own over the shared memory ([`threads`]); a thread's migrated call is merged
//! byte by byte while the other threads are stopped ([`merge`]).

mod cache;
mod error;
pub mod hardware;
pub mod heap;
pub mod merge;
mod pace;
mod run;
pub mod stdin;
pub mod state;
pub mod threads;

pub use cache::ModuleCache;
pub use pace::{PACE_TICK, Pace};
pub use error::ExecError;
pub use run::{
    DeviceEngine, DirMapping, Exception, FdReplayError, GrowFailure, Guest, Layout, Migrator, Outcome, PointMode, Points, Program, RunReport, Stdio, WasiConfig,
    EPOCH_TICK, new_clone_engine, new_device_engine, new_device_engine_with, new_engine,
};
