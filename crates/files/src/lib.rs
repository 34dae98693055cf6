//! The file replicator, CloneCloud's replica of the device's storage, for WASI's preopened
//! directories.
//!
//! - [`Scanner`] (device) walks the preopened directories into [`Tree`]s: every entry with the
//!   stat values the device's WASI runtime reports and, for files, the SHA-256 of the content.
//!   Unchanged files (same size, times and inode, and not modified in the last moments) are not
//!   read again.
//! - [`Store`] (clone) keeps file contents by hash on disk, one directory per device identity,
//!   so a file travels once and is reused by later runs.
//! - [`Fs`] (clone) is what a migrated function's WASI calls see: the trees and the stored
//!   contents, a descriptor table numbered as the device's runtime numbers it, and writes
//!   applied in place and recorded, in order, as [`FileOp`]s. Whatever it cannot answer exactly
//!   as the device would is [`FsError::Unsupported`]: the migration is then abandoned and the
//!   function runs on the device.
//! - [`model`] is the data all of them share and the protocol carries: [`Tree`]s of [`Entry`]s,
//!   the journal ([`FileOp`], [`FdOp`]), the device's [`Descriptors`], [`ContentHash`]es. It
//!   is this crate's own; the wire encodes it and this crate knows nothing of the wire.
//! - [`apply`] (device) carries a journal out on the real directories at the commit, beneath
//!   each preopen with no symbolic link followed, all or nothing ([`Applied`] commits or undoes).

mod apply;
mod fs;
pub mod model;
mod pool;
mod scan;
mod store;

pub use apply::{Applied, ApplyError, DescriptorError, apply};
pub use model::{ContentHash, Descriptors, Entry, EntryKind, FdOp, FileOp, FileStat, Misfit, OpenFile, Tree, content_hash};
pub use fs::{Dirent, Fd, Fdstat, Filestat, Fs, FsError, Opened, PollTarget, errno, filetype};
pub use pool::Pool;
pub use scan::{Root, ScanError, Scanner};
pub use store::{Store, StoreKey, cost as store_cost};

