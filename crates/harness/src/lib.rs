//! The outside of clonecloud, for the harnesses (`clonecloud faults`, `bench paper`) and the
//! tests: one place for what each of them used to carry a copy of.
//!
//! - [`proxy`]: a loopback TCP proxy between a device and a clone server that breaks the link
//!   on purpose (cuts, a flipped byte, a stall, a duplicated or reordered TLS record) at a byte
//!   of a turn of the first connection or of every connection's stream, counts the bytes it
//!   forwarded, records the first connection's turns, and calls a hook at a chosen byte (to kill
//!   the server there).
//! - [`serve`]: key pairs by `clonecloud keygen` and `clonecloud serve` child processes, killed
//!   when dropped.
//! - [`dirs`]: copying a directory tree and reading one back whole, to compare a run's files
//!   with an oracle's.
//!
//! What it does not know: the protocol (the proxy sees TLS records, not messages), wasm, how a
//! run is judged (each harness has its oracle).

pub mod dirs;
pub mod proxy;
pub mod serve;

pub use proxy::{Action, Dir, FaultProxy, Hook, Injection, Place, Turn};
pub use serve::{ServeChild, keygen};
