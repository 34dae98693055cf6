//! clonecloud-offload: CloneCloud's primary feature. At a migration point the device ships the
//! thread's state (arguments, mutable globals, changed memory pages) to a clone, the clone runs
//! the function in its replica of the thread and ships the changed state back, and the device
//! merges it and resumes. Any failure runs the function locally instead: nothing is ever lost.
//!
//! - [`device::Offloader`]: the device side, a [`clonecloud_exec::Migrator`].
//! - [`server::Clone`]: the clone server (`clonecloud serve`), and [`server::spawn_local`], an
//!   in-process clone on loopback that speaks the very same protocol.
//! - [`Stats`] (from `clonecloud-stats`): what happened, for `--stats`, with the [`Cause`] of
//!   every fallback.

mod ahead;
pub mod convert;
pub mod device;
pub mod load;
pub mod pool;
mod proxy;
pub mod server;

pub use device::{CompressionPolicy, Endpoint, Expectation, Link, Offloader, ProbeError, Target, device_reach, measure_link, still_pays};
pub use server::{Clone, ServeError, SessionError, spawn_local, spawn_local_as, spawn_local_with};
pub use clonecloud_stats::{self as stats, Cause, Stats};
