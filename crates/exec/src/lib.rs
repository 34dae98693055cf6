//! Running a WASI preview 1 command module, plain or rewritten with migration points, on
//! wasmtime: the engine, the on-disk cache of compiled modules, the WASI context and the host
//! side of the migration imports.
//!
//! Used by both the device and (later) the clone. It opens no sockets: what happens at a
//! migration point is decided by a [`PointMode`] (and, once offloading exists, by the device
//! runtime that plugs in here).
//!
//! The entry type is [`Program`]: [`Program::prepare`] rewrites (if points are asked for),
//! compiles or loads from the [`ModuleCache`], and [`Program::run`] runs it to an [`Outcome`]
//! with the behaviour of `wasmtime run`: the guest's exit code, or the trap that stopped it.

mod cache;
mod clone_wasi;
pub use clone_wasi::proxied;
mod error;
pub mod heap;
pub mod replica;
mod run;
pub mod stdin;
pub mod state;

pub use cache::ModuleCache;
pub use error::ExecError;
pub use replica::{CallError, Delta, HostBudget, ImportProxy, Limits, OverLimit, Output, ProxyFailed, Replica, WasiOnClone};
pub use run::{
    DeviceEngine, DirMapping, FdReplayError, Guest, Layout, Migrator, Outcome, PointMode, Points, Program, RunReport, Stdio, WasiConfig,
    new_clone_engine, new_device_engine, new_engine,
};
