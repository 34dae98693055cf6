//! clonecloud-replica: the clone's runtime, one [`Replica`] per session.
//!
//! A replica is an instance of the device's (rewritten) module on the clone's engine
//! ([`clonecloud_exec::new_clone_engine`]): it takes the device's page and global deltas, runs a
//! migrated function within its [`Limits`] (memory, tables, host-side bytes, a deadline), serves
//! the WASI calls it can answer exactly as the device's wasmtime-wasi would (files from the
//! replica of the device's directories, `clonecloud_files::Fs`; clocks from the device's; the
//! descriptors the device listed), hands every other call to the device through its
//! [`ImportProxy`] (the list is [`proxied`]'s, which the device checks too), and captures what
//! changed: a delta, the output, the file journal. A replica of a multi-threaded module runs
//! it instrumented ([`clone_module`]) and says, besides, which bytes of memory 0 each call read
//! and wrote ([`Captured::access`]).
//!
//! It knows nothing of sockets or of the protocol's rules (the server drives it: crate
//! clonecloud-offload), and nothing of the device's side (crate clonecloud-exec runs the device).

mod clone_wasi;
mod replica;

pub use clone_wasi::proxied;
pub use replica::{
    Abandoned, CHECK_EVERY, CallError, Captured, Delta, Ended, DeviceBudget, EPOCH_TICK, HostBudget, ImportProxy, Limits, OverDeviceLimit, OverLimit, Output, ProxyAnswerRefused, ProxyFailed, Replica,
    ThreadOnClone, WasiOnClone, clone_module, is_threaded,
};
