//! The file replicator's model, shared by the device, the clone and the protocol that carries
//! it between them: what a preopened directory holds ([`Tree`], [`Entry`]), what a migrated
//! function changed ([`FileOp`], [`FdOp`]), the device's descriptor table ([`Descriptors`]), and
//! the hash file contents (and modules) are named by. Plain data: no I/O.

/// A content hash: SHA-256 of a module's or a file's bytes (collision-resistant: what a hash
/// names on the clone is what was sent under it).
pub type ContentHash = [u8; 32];

/// The [`ContentHash`] of `bytes`.
pub fn content_hash(bytes: &[u8]) -> ContentHash {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().try_into().expect("SHA-256 has 32 bytes")
}

/// What WASI reports of a file or directory (`filestat`, less the type), as the device's runtime
/// reports it, so the clone answers `fd_filestat_get` and `fd_readdir` with the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FileStat {
    pub ino: u64,
    pub nlink: u64,
    pub size: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

/// What an entry of a preopened directory is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file, named by the SHA-256 of its content.
    File(ContentHash),
    /// A symbolic link and its target (UTF-8; the clone follows it as wasmtime-wasi would).
    Symlink(String),
    /// Anything else (a symbolic link, a socket, a device), by its WASI filetype: the clone
    /// lists it but does not open it (such a call runs on the device).
    Other(u8),
}

/// One entry of a preopened directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the preopened directory, components joined by `/`; `""` is the directory
    /// itself.
    pub path: String,
    pub kind: EntryKind,
    pub stat: FileStat,
}

/// A preopened directory as the device sees it: the guest path it is opened by and its entries,
/// each directory before its children and the children in the device's directory order (the
/// order `fd_readdir` gives).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    pub guest: String,
    pub entries: Vec<Entry>,
}

/// The device's descriptor table, so the clone answers for exactly the descriptors the device
/// has and hands out the numbers the device would: `open` lists every descriptor open on the
/// device (stdio and preopens included), `free` the numbers the device's runtime will hand out
/// again (closed ones, below the highest open one or above it), highest first. When `complete` is false the device could not list them: the clone then
/// assumes stdio and the preopens and serves no other descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Descriptors {
    pub open: Vec<u32>,
    pub free: Vec<u32>,
    pub complete: bool,
    /// Whether `free` is known to hold every number the device will hand out again. When not,
    /// numbers above the highest open one may be free on the device too: the clone then hands
    /// out a new number only while it has closed none, and the device checks, before it changes
    /// anything at the commit, that the number above the highest is the one it would hand out.
    pub free_exact: bool,
    /// The descriptors beyond stdio and the preopens that the clone may serve: each names its
    /// file or directory by inode number (the clone finds it in the replicated trees) with its
    /// offset and flags. An open descriptor not listed here stays the device's.
    pub files: Vec<OpenFile>,
}

/// A descriptor the device opened before a migration, as the clone takes it over for the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OpenFile {
    pub fd: u32,
    pub dir: bool,
    /// The inode number WASI reports for it (`fd_filestat_get`), as in [`FileStat::ino`].
    pub ino: u64,
    pub offset: u64,
    /// WASI's fdflags (append, nonblock, ...).
    pub fdflags: u16,
    pub read: bool,
    pub write: bool,
}

/// A change a migrated function made to the preopened directories, applied by the device at the
/// commit, in order. `root` is the preopen's position (descriptor `3 + root`), paths are relative
/// to it as in [`Entry::path`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOp {
    /// Create the file if it does not exist.
    Create { root: u32, path: String },
    Write { root: u32, path: String, offset: u64, data: Vec<u8> },
    SetSize { root: u32, path: String, size: u64 },
    Mkdir { root: u32, path: String },
    Unlink { root: u32, path: String },
    Rmdir { root: u32, path: String },
    Rename { root: u32, from: String, to_root: u32, to: String },
    /// Make `path` a symbolic link to `target`, a relative path that, read from the link's
    /// directory, stays inside the preopen (the device checks it again).
    Symlink { root: u32, target: String, path: String },
    /// Make `to` another name (a hard link) of the file `from`.
    Link { root: u32, from: String, to_root: u32, to: String },
    /// Set the access and modification times (nanoseconds since the Unix epoch); `None` leaves
    /// that time as it is.
    SetTimes { root: u32, path: String, atim: Option<u64>, mtim: Option<u64> },
    /// A change to the descriptor table, carried out through the device's own WASI in order with
    /// the file changes, so the device ends with the descriptors the function left, at the same
    /// numbers, offsets and flags.
    Fd(FdOp),
}

/// A descriptor-table change a migrated function made, replayed on the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FdOp {
    /// `path_open(dirfd, path)` as the function called it, with its base rights (wasmtime-wasi
    /// reads only those) and flags. Creation and truncation are in the journal already, so the
    /// device opens what exists; it must get descriptor `fd`.
    Open { dirfd: u32, path: String, directory: bool, rights: u64, fdflags: u16, fd: u32 },
    Close { fd: u32 },
    Renumber { from: u32, to: u32 },
    /// Set the descriptor's offset (its final one, after the function's reads and writes).
    Seek { fd: u32, offset: u64 },
    SetFlags { fd: u32, fdflags: u16 },
}

/// A descriptor change of a journal that the device's descriptor table cannot take as it is:
/// a number not open, or an open that would get another number there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the descriptor change {op:?} does not fit the device's descriptors: {why}")]
pub struct Misfit {
    pub op: FdOp,
    pub why: String,
}

impl Descriptors {
    /// Checks the descriptor changes of `ops`, in order, against this table as wasmtime-wasi
    /// keeps it (the numbers in use, and a set of freed ones: an open takes the highest freed
    /// number, or one above the highest in use; a close frees its number; a renumbering frees
    /// its source and keeps its target), so that a journal whose changes the device could not
    /// carry out is refused before anything changes. A close or a renumbering cannot be undone
    /// on the device; with this check, what can still make one fail is the device's own system,
    /// not the journal. Without a complete table nothing is checked (the replay checks each);
    /// where the freed numbers are not all known, an open need only take a number not in use.
    pub fn check_journal(&self, ops: &[FileOp]) -> Result<(), Misfit> {
        if !self.complete {
            return Ok(());
        }
        let mut used: std::collections::BTreeSet<u32> = self.open.iter().copied().collect();
        let mut free: std::collections::BTreeSet<u32> = self.free.iter().copied().filter(|fd| !used.contains(fd)).collect();
        for op in ops {
            let FileOp::Fd(op) = op else { continue };
            let misfit = |why: String| Misfit { op: op.clone(), why };
            let is_open = |used: &std::collections::BTreeSet<u32>, fd: u32| if used.contains(&fd) { Ok(()) } else { Err(misfit(format!("descriptor {fd} is not open"))) };
            match *op {
                FdOp::Open { fd, .. } => {
                    if used.contains(&fd) {
                        return Err(misfit(format!("descriptor {fd} is open already")));
                    }
                    if self.free_exact {
                        let next = match free.last() {
                            Some(&f) => f,
                            None => used.last().map_or(Some(0), |top| top.checked_add(1)).ok_or_else(|| misfit("no descriptor number is left".into()))?,
                        };
                        if fd != next {
                            return Err(misfit(format!("the device would hand out {next}")));
                        }
                    }
                    free.remove(&fd);
                    used.insert(fd);
                }
                FdOp::Close { fd } => {
                    is_open(&used, fd)?;
                    used.remove(&fd);
                    free.insert(fd);
                }
                FdOp::Renumber { from, to } => {
                    is_open(&used, from)?;
                    is_open(&used, to)?;
                    if from != to {
                        used.remove(&from);
                        free.insert(from);
                    }
                }
                FdOp::Seek { fd, .. } | FdOp::SetFlags { fd, .. } => is_open(&used, fd)?,
            }
        }
        Ok(())
    }
}
