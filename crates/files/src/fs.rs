//! The clone's view of the device's preopened directories, as WASI preview 1 calls see it.
//!
//! It answers as wasmtime-wasi answers on the device (the same descriptor numbers, stat values,
//! directory order and error numbers for the ordinary cases: a missing file, an existing one, a
//! file where a directory is wanted, a non-empty directory, a trailing slash) and refuses, with
//! [`FsError::Unsupported`], whatever it cannot answer exactly: symbolic links, `..`, absolute
//! paths, stdin. A refusal abandons the migration and the function runs on the device, so
//! guessing is never needed.
//!
//! Descriptors cross the migration both ways: those the device had open are found in the
//! replicated trees by inode number and served from their offsets; those the call opens,
//! closes, renumbers or re-flags are journaled as [`FdOp`]s and replayed on the device, which
//! then ends with the same table (numbers, offsets, flags) as the call left here.
//!
//! Writes change the view at once (the function reads its own writes) and are recorded as
//! [`FileOp`]s, in order, for the device to carry out at the commit. Output to stdout and stderr
//! is recorded the same way.

use crate::store::Store;
use crate::model::{Descriptors, EntryKind, FdOp, FileOp, FileStat, ContentHash, Tree};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// WASI preview 1 error numbers used here.
pub mod errno {
    pub const BADF: u16 = 8;
    pub const EXIST: u16 = 20;
    pub const INVAL: u16 = 28;
    pub const ISDIR: u16 = 31;
    pub const NAMETOOLONG: u16 = 37;
    pub const LOOP: u16 = 32;
    pub const NOENT: u16 = 44;
    pub const NOTSOCK: u16 = 57;
    pub const NOTSUP: u16 = 58;
    pub const PERM: u16 = 63;
    pub const NOTDIR: u16 = 54;
    pub const NOTEMPTY: u16 = 55;
    pub const SPIPE: u16 = 70;
}

/// WASI preview 1 file types.
pub mod filetype {
    pub const DIRECTORY: u8 = 3;
    pub const REGULAR_FILE: u8 = 4;
    pub const SYMBOLIC_LINK: u8 = 7;
}

mod rights {
    pub const FD_READ: u64 = 1 << 1;
    pub const FD_SEEK: u64 = 1 << 2;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const FD_READDIR: u64 = 1 << 14;
    pub const PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
    pub const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    /// All thirty rights of preview 1.
    pub const ALL: u64 = (1 << 30) - 1;
    /// What wasmtime-wasi reports for a preopened directory (base, then inheriting).
    pub const PREOPEN_BASE: u64 = (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 17)
        | (1 << 18) | (1 << 20) | (1 << 21) | (1 << 23) | (1 << 24) | (1 << 25) | (1 << 26);
    pub const PREOPEN_INHERITING: u64 =
        PREOPEN_BASE | (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 21) | (1 << 22) | (1 << 23) | (1 << 27);
}

const O_CREAT: u16 = 1;
const O_DIRECTORY: u16 = 2;
const O_EXCL: u16 = 4;
const O_TRUNC: u16 = 8;
const FDFLAG_APPEND: u16 = 1;
const FDFLAG_NONBLOCK: u16 = 4;
/// The flags `fd_fdstat_set_flags` may not change and `path_open` does not support (dsync,
/// rsync, sync).
const FDFLAGS_SYNC: u16 = 2 | 8 | 16;
/// Symbolic links followed in one path at most, as Linux allows.
const MAX_LINKS: u32 = 40;

/// A path resolved to the directory holding its last component.
struct Walked {
    parent: NodeId,
    /// The last component; `None` when the path names a directory itself.
    name: Option<String>,
    /// The path (or the last link's target) ends with a slash: it must be a directory.
    trailing: bool,
}

/// Where the clone numbers the descriptors it opens when the device's table is unknown: far
/// above any the device can have open.
const UNKNOWN_TABLE_BASE: u32 = 1 << 30;

/// Why a call was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    /// The answer is this WASI error, exactly as on the device.
    #[error("WASI error {0}")]
    Errno(u16),
    /// The clone cannot answer as the device would: run the function on the device.
    #[error("{0}")]
    Unsupported(String),
    /// The call would make the clone hold more than the replica's budget of host memory (file
    /// contents, journal, output): it runs on the device instead, where the real file system
    /// answers (a sparse `set_len(1 << 40)` succeeds there, so no WASI error could stand in).
    #[error("the call would hold {wanted} bytes of files, journal and output on the clone, over its budget of {budget} bytes")]
    Budget { wanted: u64, budget: u64 },
    /// The call would make the device's replicas together hold more than the clone allows one
    /// device (memories, tables and these buffers): it runs on the device instead.
    #[error("the call would make this device's replicas hold {wanted} bytes together, over the clone's per-device limit of {limit} bytes")]
    DeviceBudget { wanted: u64, limit: u64 },
}

/// The host memory an [`Fs`] may hold by default (file contents written on the clone, the
/// journal, the output): 1 GiB.
pub const DEFAULT_BUDGET: u64 = 1 << 30;

/// What a journaled change or a node costs beyond its strings and data: the enum, the vector
/// slot, the allocations' headers.
const OP_BYTES: u64 = 128;

/// The host bytes a journaled change holds.
fn op_bytes(op: &FileOp) -> u64 {
    let strings: usize = match op {
        FileOp::Create { path, .. } | FileOp::SetSize { path, .. } | FileOp::Mkdir { path, .. } | FileOp::Unlink { path, .. } => path.len(),
        FileOp::Rmdir { path, .. } | FileOp::SetTimes { path, .. } => path.len(),
        FileOp::Write { path, data, .. } => path.len() + data.len(),
        FileOp::Rename { from, to, .. } | FileOp::Link { from, to, .. } => from.len() + to.len(),
        FileOp::Symlink { target, path, .. } => target.len() + path.len(),
        FileOp::Fd(FdOp::Open { path, .. }) => path.len(),
        FileOp::Fd(_) => 0,
    };
    OP_BYTES + strings as u64
}

fn unsupported<T>(what: impl Into<String>) -> Result<T, FsError> {
    Err(FsError::Unsupported(what.into()))
}

fn err<T>(e: u16) -> Result<T, FsError> {
    Err(FsError::Errno(e))
}

type NodeId = usize;

#[derive(Debug, Clone)]
enum Content {
    /// As the device has it, by hash; loaded from the store when first read.
    Stored(ContentHash),
    Loaded(ContentHash, Arc<[u8]>),
    /// Written on the clone.
    Owned(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Kind {
    /// Children by name, in directory order.
    Dir(Vec<(String, NodeId)>),
    File(Content),
    /// A symbolic link, by its target.
    Symlink(String),
    Other(u8),
}

#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    stat: FileStat,
    /// Which preopen, and the parent and name; `None` for a preopen's root and for a node
    /// that was removed.
    root: u32,
    parent: Option<(NodeId, String)>,
    /// Its other names (hard links made on the clone), each a directory and a name.
    aliases: Vec<(NodeId, String)>,
}

/// A descriptor in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fd {
    Stdin,
    Stdout,
    Stderr,
    Dir { node: NodeId, preopen: bool },
    File(Opened),
    /// Open on the device (before the migration): the clone cannot serve it.
    Device,
}

/// A file open during a migrated call (opened on the clone, or on the device before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    node: NodeId,
    pos: u64,
    read: bool,
    write: bool,
    fdflags: u16,
    /// The offset the device's descriptor will have once the journal is replayed (0 for one
    /// opened here): the commit moves it to `pos` when they differ.
    synced: u64,
}

/// A descriptor as `poll_oneoff` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollTarget {
    Stdin,
    Output,
    File { left: u64 },
}

/// `fdstat`: file type, flags, rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fdstat {
    pub filetype: u8,
    pub flags: u16,
    pub rights_base: u64,
    pub rights_inheriting: u64,
}

/// `filestat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filestat {
    pub dev: u64,
    pub ino: u64,
    pub filetype: u8,
    pub nlink: u64,
    pub size: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

/// One directory entry as `fd_readdir` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirent {
    pub next: u64,
    pub ino: u64,
    pub filetype: u8,
    pub name: String,
}

/// The replica's file system: the trees, the descriptor table, and the journal of the call in
/// progress.
#[derive(Debug)]
pub struct Fs {
    nodes: Vec<Node>,
    /// Guest path and root node of each preopen, by position (descriptor `3 + position`).
    roots: Vec<(String, NodeId)>,
    store: Option<Arc<Store>>,
    used: BTreeMap<u32, Fd>,
    free: BTreeSet<u32>,
    initial: BTreeMap<u32, Fd>,
    /// The number each descriptor open on the device at the start of the call has there (a
    /// renumbering here moves it; the device's own table changes only at the commit).
    origin: BTreeMap<u32, u32>,
    journal: Vec<FileOp>,
    output: Vec<(u32, Vec<u8>)>,
    /// The device's realtime clock now, for the times of what is written.
    now: u64,
    /// Whether the device's preopens are known (else no descriptor beyond stdio is).
    known: bool,
    /// Whether the device listed all its descriptors (else an unknown one may be open there).
    complete: bool,
    /// Whether `free` holds every number the device would hand out again; when not, a new
    /// descriptor is handed out only before any is closed (see [`Descriptors::free_exact`]).
    free_exact: bool,
    closed_any: bool,
    /// The most host memory this view may hold for what the guest did: contents written here
    /// (`kept`), the journal and the output (`logged`). Checked before anything is allocated.
    budget: u64,
    /// Bytes of contents owned by the view and of the nodes it made (they outlive a call).
    kept: u64,
    /// Bytes of the call's journal and output (cleared with them).
    logged: u64,
    /// The device's budget shared with its other replicas, and what this view has taken of it
    /// (at least what it holds: taken when charged, given back when settled).
    pool: Option<Arc<crate::Pool>>,
    pooled: std::sync::atomic::AtomicU64,
}

impl Drop for Fs {
    fn drop(&mut self) {
        if let Some(p) = &self.pool {
            p.give(*self.pooled.get_mut());
        }
    }
}

impl Default for Fs {
    /// A view that knows nothing of the device's directories: every descriptor beyond stdio is
    /// unsupported.
    fn default() -> Self {
        let mut fs = Fs::new(Vec::new(), None);
        fs.known = false;
        fs
    }
}

impl Fs {
    /// The view of `trees` (the device's preopens, in order), with contents from `store`.
    /// Without trees there are no preopens: any file call is unsupported.
    pub fn new(trees: Vec<Tree>, store: Option<Arc<Store>>) -> Fs {
        let mut fs = Fs {
            nodes: Vec::new(),
            roots: Vec::new(),
            store,
            used: BTreeMap::new(),
            free: BTreeSet::new(),
            initial: BTreeMap::new(),
            origin: BTreeMap::new(),
            journal: Vec::new(),
            output: Vec::new(),
            now: 0,
            known: true,
            complete: false,
            free_exact: true,
            closed_any: false,
            budget: DEFAULT_BUDGET,
            kept: 0,
            logged: 0,
            pool: None,
            pooled: Default::default(),
        };
        for (r, tree) in trees.into_iter().enumerate() {
            let r = r as u32;
            let mut by_path: std::collections::HashMap<String, NodeId> = std::collections::HashMap::new();
            let mut root_id = None;
            for e in tree.entries {
                // Each listed entry is held for the view's life, as a node made here is.
                fs.kept += OP_BYTES + 2 * e.path.len() as u64;
                let kind = match e.kind {
                    EntryKind::Dir => Kind::Dir(Vec::new()),
                    EntryKind::File(h) => Kind::File(Content::Stored(h)),
                    EntryKind::Other(t) => Kind::Other(t),
                    EntryKind::Symlink(t) => Kind::Symlink(t),
                };
                let id = fs.nodes.len();
                if e.path.is_empty() {
                    fs.nodes.push(Node { kind, stat: e.stat, root: r, parent: None, aliases: Vec::new() });
                    root_id = Some(id);
                } else {
                    let (parent_path, name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
                    // The device lists every directory before its children; an entry whose
                    // parent is missing or not a directory is dropped (it cannot be reached).
                    let parent = if parent_path.is_empty() { root_id } else { by_path.get(parent_path).copied() };
                    let Some(parent) = parent else { continue };
                    let name = name.to_string();
                    match &mut fs.nodes[parent].kind {
                        Kind::Dir(children) => children.push((name.clone(), id)),
                        _ => continue,
                    }
                    fs.nodes.push(Node { kind, stat: e.stat, root: r, parent: Some((parent, name)), aliases: Vec::new() });
                }
                by_path.insert(e.path, id);
            }
            let root_id = root_id.unwrap_or_else(|| {
                fs.nodes.push(Node { kind: Kind::Dir(Vec::new()), stat: FileStat::default(), root: r, parent: None, aliases: Vec::new() });
                fs.nodes.len() - 1
            });
            fs.roots.push((tree.guest, root_id));
        }
        fs.begin(&Descriptors::default(), 0);
        fs
    }

    /// Starts a migrated call: the descriptor table as the device has it (stdio, the preopens,
    /// and the others open there), an empty journal, and `now` as the device's realtime clock.
    /// Without a complete list from the device, stdio and the preopens are assumed and any other
    /// descriptor is unsupported.
    pub fn begin(&mut self, device: &Descriptors, now: u64) {
        self.used.clear();
        let open = |fd: u32| !device.complete || device.open.contains(&fd);
        for (fd, d) in [(0, Fd::Stdin), (1, Fd::Stdout), (2, Fd::Stderr)] {
            if open(fd) {
                self.used.insert(fd, d);
            }
        }
        for (i, (_, node)) in self.roots.iter().enumerate() {
            if open(3 + i as u32) {
                self.used.insert(3 + i as u32, Fd::Dir { node: *node, preopen: true });
            }
        }
        // The device's list is as long as it likes: one pass over the nodes, then a lookup each.
        let by_ino = if device.files.is_empty() { Default::default() } else { self.by_ino() };
        for f in &device.files {
            if f.fd <= 2 || self.used.contains_key(&f.fd) {
                continue;
            }
            if let Some(&Some(node)) = by_ino.get(&f.ino) {
                let d = match (&self.nodes[node].kind, f.dir) {
                    (Kind::Dir(_), true) => Fd::Dir { node, preopen: false },
                    (Kind::File(_), false) => {
                        Fd::File(Opened { node, pos: f.offset, read: f.read, write: f.write, fdflags: f.fdflags, synced: f.offset })
                    }
                    _ => continue,
                };
                self.used.insert(f.fd, d);
            }
        }
        for fd in &device.open {
            self.used.entry(*fd).or_insert(Fd::Device);
        }
        self.complete = device.complete;
        self.free_exact = device.free_exact || !device.complete;
        self.closed_any = false;
        self.free = device.free.iter().copied().filter(|f| !self.used.contains_key(f)).collect();
        self.initial = self.used.clone();
        self.origin = self.used.keys().map(|&fd| (fd, fd)).collect();
        self.journal.clear();
        self.output.clear();
        self.logged = 0;
        self.now = now;
        self.settle();
    }

    /// At most `bytes` of host memory for what the guest does: contents written on the clone,
    /// the nodes it makes, the journal and the output. A call that would need more fails with
    /// [`FsError::Budget`] before anything is allocated (and runs on the device).
    pub fn set_budget(&mut self, bytes: u64) {
        self.budget = bytes;
    }

    /// The host memory charged against the budget now.
    pub fn held(&self) -> u64 {
        self.kept.saturating_add(self.logged)
    }

    /// What this view holds is also taken from `pool`, the budget the device's replicas share
    /// (what it held before is taken now, or the view refuses the next call that needs more).
    pub fn set_pool(&mut self, pool: Arc<crate::Pool>) {
        if let Some(old) = self.pool.take() {
            old.give(std::mem::take(self.pooled.get_mut()));
        }
        self.pool = Some(pool);
        let _ = self.charge(0);
    }

    /// Whether `more` bytes fit the budget (and the device's, where they are taken now).
    fn charge(&self, more: u64) -> Result<(), FsError> {
        use std::sync::atomic::Ordering::Relaxed;
        let wanted = self.held().saturating_add(more);
        if wanted > self.budget {
            return Err(FsError::Budget { wanted, budget: self.budget });
        }
        if let Some(pool) = &self.pool {
            let pooled = self.pooled.load(Relaxed);
            if wanted > pooled {
                pool.take(wanted - pooled).map_err(|all| FsError::DeviceBudget { wanted: all, limit: pool.limit() })?;
                self.pooled.store(wanted, Relaxed);
            }
        }
        Ok(())
    }

    /// Gives back to the device's budget what this view took and no longer holds.
    fn settle(&mut self) {
        let held = self.held();
        if let Some(pool) = &self.pool {
            let pooled = self.pooled.get_mut();
            if *pooled > held {
                pool.give(*pooled - held);
                *pooled = held;
            }
        }
    }

    /// The number descriptor `fd` has on the device, if it was open there when the call began
    /// (what a call proxied to the device must name).
    pub fn device_number(&self, fd: u32) -> Option<u32> {
        self.origin.get(&fd).copied()
    }

    /// The nodes in the replicated trees by inode number: `Some` where exactly one has it, `None`
    /// where several do. Linear in the nodes (whether each is attached is found once).
    fn by_ino(&self) -> std::collections::HashMap<u64, Option<NodeId>> {
        let attached = self.attached();
        let mut by = std::collections::HashMap::new();
        for (id, n) in self.nodes.iter().enumerate() {
            if attached[id] {
                by.entry(n.stat.ino).and_modify(|v| *v = None).or_insert(Some(id));
            }
        }
        by
    }

    /// Whether each node is reachable from its preopen's root (a removed one is not), found
    /// in one pass: each node's answer is its parent's, remembered on the way down.
    fn attached(&self) -> Vec<bool> {
        let mut known: Vec<Option<bool>> = vec![None; self.nodes.len()];
        for &(_, r) in &self.roots {
            known[r] = Some(true);
        }
        let mut chain = Vec::new();
        for start in 0..self.nodes.len() {
            let mut at = start;
            let answer = loop {
                if let Some(a) = known[at] {
                    break a;
                }
                chain.push(at);
                match &self.nodes[at].parent {
                    // (A chain longer than the nodes would be a cycle, which renames never make.)
                    Some((p, _)) if chain.len() <= self.nodes.len() => at = *p,
                    _ => break false,
                }
            };
            for id in chain.drain(..) {
                known[id] = Some(answer);
            }
        }
        known.into_iter().map(|a| a.unwrap_or(false)).collect()
    }

    /// Sets the clock used for the times of what is written.
    pub fn set_now(&mut self, now: u64) {
        self.now = now;
    }

    /// Ends the call: its file changes, descriptor changes and output, in order. Descriptors the
    /// call opened, closed, renumbered or moved are in the journal, so the device ends with the
    /// table the call left: the same numbers, offsets and flags. Contents written are kept in
    /// the store, so the device need not send them back.
    #[allow(clippy::type_complexity)]
    pub fn finish(&mut self) -> Result<(Vec<FileOp>, Vec<(u32, Vec<u8>)>), FsError> {
        let moved: Vec<(u32, u64)> = self
            .used
            .iter()
            .filter_map(|(fd, d)| match d {
                Fd::File(o) if o.pos != o.synced => Some((*fd, o.pos)),
                _ => None,
            })
            .collect();
        for (fd, offset) in moved {
            self.log(FileOp::Fd(FdOp::Seek { fd, offset }))?;
            if let Some(Fd::File(o)) = self.used.get_mut(&fd) {
                o.synced = offset;
            }
        }
        if let Some(store) = &self.store {
            // What the call wrote goes to the store, and what it read is let go: between calls
            // the replica holds no contents, only their hashes (the next call reads them from
            // the store again, charged again).
            for n in &mut self.nodes {
                match &mut n.kind {
                    Kind::File(Content::Owned(bytes)) => {
                        let h = crate::content_hash(bytes);
                        let len = bytes.len() as u64;
                        // When the put fails (the quota) the bytes stay, charged.
                        if store.put(&h, bytes).is_ok() {
                            self.kept = self.kept.saturating_sub(len);
                            n.kind = Kind::File(Content::Stored(h));
                        }
                    }
                    Kind::File(Content::Loaded(h, b)) => {
                        self.kept = self.kept.saturating_sub(b.len() as u64);
                        n.kind = Kind::File(Content::Stored(*h));
                    }
                    _ => {}
                }
            }
        }
        self.logged = 0;
        self.settle();
        Ok((std::mem::take(&mut self.journal), std::mem::take(&mut self.output)))
    }

    /// The output so far (stdout and stderr), taken.
    pub fn take_output(&mut self) -> Vec<(u32, Vec<u8>)> {
        let output = std::mem::take(&mut self.output);
        let bytes: u64 = output.iter().map(|(_, b)| OP_BYTES + b.len() as u64).sum();
        self.logged = self.logged.saturating_sub(bytes);
        self.settle();
        output
    }

    fn fd(&self, fd: u32) -> Result<&Fd, FsError> {
        match self.used.get(&fd) {
            None if !self.known => unsupported("the device's directories are not replicated on this clone"),
            None if !self.complete => unsupported(format!("descriptor {fd} may be open on the device")),
            None => err(errno::BADF),
            Some(Fd::Device) => unsupported(format!("descriptor {fd} was opened on the device")),
            Some(d) => Ok(d),
        }
    }

    /// Whether `fd` is open, for the calls that only need to know that (a descriptor the
    /// device opened counts).
    fn is_open(&self, fd: u32) -> Result<bool, FsError> {
        match self.used.get(&fd) {
            Some(_) => Ok(true),
            None => self.fd(fd).map(|_| true).or_else(|e| if e == FsError::Errno(errno::BADF) { Ok(false) } else { Err(e) }),
        }
    }

    fn file(&mut self, fd: u32) -> Result<&mut Opened, FsError> {
        match self.fd(fd)? {
            Fd::File(_) => match self.used.get_mut(&fd) {
                Some(Fd::File(o)) => Ok(o),
                _ => unreachable!("checked above"),
            },
            Fd::Stdin => unsupported("stdin is read on the device only"),
            Fd::Stdout | Fd::Stderr => err(errno::SPIPE),
            Fd::Dir { .. } | Fd::Device => err(errno::BADF),
        }
    }

    fn push(&mut self, d: Fd) -> Result<u32, FsError> {
        if !self.free_exact && self.closed_any {
            return unsupported("a descriptor opened after one was closed, where the device's free numbers are not all known");
        }
        let fd = match self.free.pop_last() {
            Some(fd) => fd,
            // Not knowing the device's numbers, stay clear of them.
            None if !self.complete => self.used.last_key_value().map_or(0, |(k, _)| k + 1).max(UNKNOWN_TABLE_BASE),
            None => self.used.last_key_value().map_or(0, |(k, _)| k + 1),
        };
        self.used.insert(fd, d);
        Ok(fd)
    }

    /// The preopen's guest path, for `fd_prestat_get` and `fd_prestat_dir_name`. A descriptor
    /// the device opened is not a preopen (wasmtime-wasi answers EBADF for any other), so this
    /// needs no trip to the device; it keeps wasi-libc's preopen scan on the clone.
    pub fn prestat(&self, fd: u32) -> Result<&str, FsError> {
        if self.used.get(&fd) == Some(&Fd::Device) {
            return err(errno::BADF);
        }
        match self.fd(fd)? {
            Fd::Dir { node, preopen: true } => {
                Ok(&self.roots.iter().find(|(_, n)| n == node).expect("a preopen is a root").0)
            }
            _ => err(errno::BADF),
        }
    }

    /// `fd_prestat_dir_name`'s check: the name and whether it fits `max`.
    pub fn prestat_dir_name(&self, fd: u32, max: usize) -> Result<&str, FsError> {
        if self.used.get(&fd) == Some(&Fd::Device) {
            return err(errno::NOTDIR);
        }
        match self.fd(fd)? {
            Fd::Dir { preopen: true, .. } => {
                let name = self.prestat(fd)?;
                if name.len() > max { err(errno::NAMETOOLONG) } else { Ok(name) }
            }
            _ => err(errno::NOTDIR),
        }
    }

    fn dir_fd(&self, fd: u32) -> Result<NodeId, FsError> {
        match self.fd(fd)? {
            Fd::Dir { node, .. } => Ok(*node),
            _ => err(errno::BADF),
        }
    }

    fn child(&self, dir: NodeId, name: &str) -> Option<NodeId> {
        match &self.nodes[dir].kind {
            Kind::Dir(children) => children.iter().find(|(n, _)| n == name).map(|(_, id)| *id),
            _ => None,
        }
    }

    /// Splits `path` under directory `dir` into the directory holding its last component and
    /// that component (`None` for a directory itself), as wasmtime-wasi (cap-std) resolves it:
    /// `.` and `..` (never above `dir`: that is EPERM, an escape from the sandbox), symbolic
    /// links in the middle always followed, the last one when `follow` (or a trailing slash
    /// asks for a directory), at most [`MAX_LINKS`] links (ELOOP), absolute ones EPERM.
    fn walk_with(&self, dir: NodeId, path: &str, follow: bool) -> Result<Walked, FsError> {
        if path.is_empty() {
            return err(errno::NOENT);
        }
        // The host's path cannot hold a NUL: rustix refuses it before any lookup.
        if path.contains('\0') {
            return err(errno::INVAL);
        }
        if path.starts_with('/') {
            return err(errno::PERM);
        }
        let mut trailing = path.ends_with('/');
        let mut comps: std::collections::VecDeque<String> = path.split('/').filter(|c| !c.is_empty()).map(str::to_string).collect();
        let mut stack = vec![dir];
        let mut links = 0;
        while let Some(c) = comps.pop_front() {
            let top = *stack.last().expect("never empty");
            let last = comps.is_empty();
            match c.as_str() {
                "." => {}
                ".." => {
                    if stack.len() == 1 {
                        return err(errno::PERM);
                    }
                    stack.pop();
                }
                name => {
                    let child = self.child(top, name);
                    let kind = child.map(|id| &self.nodes[id].kind);
                    match kind {
                        Some(Kind::Symlink(target)) if !last || follow || trailing => {
                            links += 1;
                            if links > MAX_LINKS {
                                return err(errno::LOOP);
                            }
                            if target.starts_with('/') {
                                return err(errno::PERM);
                            }
                            // The target's own trailing slash asks for a directory too.
                            trailing |= last && target.ends_with('/');
                            for t in target.split('/').filter(|c| !c.is_empty()).rev() {
                                comps.push_front(t.to_string());
                            }
                        }
                        _ if last => {
                            return match kind {
                                Some(Kind::File(_)) if trailing => err(errno::NOTDIR),
                                Some(Kind::Other(_)) => unsupported(format!("`{name}` in `{path}` is a special file")),
                                Some(Kind::Dir(_)) => Ok(Walked { parent: top, name: Some(name.to_string()), trailing }),
                                _ => Ok(Walked { parent: top, name: Some(name.to_string()), trailing }),
                            };
                        }
                        None => return err(errno::NOENT),
                        Some(Kind::Dir(_)) => stack.push(child.expect("found")),
                        Some(Kind::File(_)) => return err(errno::NOTDIR),
                        Some(Kind::Other(_)) => return unsupported(format!("`{name}` in `{path}` is a special file")),
                        Some(Kind::Symlink(_)) => unreachable!("followed above"),
                    }
                }
            }
        }
        Ok(Walked { parent: *stack.last().expect("never empty"), name: None, trailing })
    }

    /// [`Fs::walk_with`] without following a last symbolic link.
    fn walk(&self, dir: NodeId, path: &str) -> Result<(NodeId, Option<String>), FsError> {
        self.walk_with(dir, path, false).map(|w| (w.parent, w.name))
    }

    /// The node `path` names under `dir` (a last symbolic link followed with `follow`).
    fn lookup(&self, dir: NodeId, path: &str, follow: bool) -> Result<NodeId, FsError> {
        let w = self.walk_with(dir, path, follow)?;
        let Some(name) = w.name else { return Ok(w.parent) };
        let id = self.child(w.parent, &name).ok_or(FsError::Errno(errno::NOENT))?;
        if let Kind::Other(_) = self.nodes[id].kind {
            return unsupported(format!("`{path}` is a special file"));
        }
        Ok(id)
    }

    /// A node's path relative to its preopen.
    fn path_of(&self, mut id: NodeId) -> Option<String> {
        let mut parts = Vec::new();
        while let Some((parent, name)) = &self.nodes[id].parent {
            parts.push(name.as_str());
            id = *parent;
        }
        // A node detached from its tree has no path.
        if !self.roots.iter().any(|(_, r)| *r == id) {
            return None;
        }
        parts.reverse();
        Some(parts.join("/"))
    }

    fn touch(&mut self, id: NodeId) {
        let now = self.now;
        let s = &mut self.nodes[id].stat;
        s.mtim = now;
        s.ctim = now;
    }

    /// Adds a node (charged against the budget for the view's life: nodes are never freed).
    fn attach(&mut self, parent: NodeId, name: &str, kind: Kind) -> Result<NodeId, FsError> {
        let bytes = OP_BYTES + 2 * name.len() as u64;
        self.charge(bytes)?;
        self.kept += bytes;
        let id = self.nodes.len();
        let root = self.nodes[parent].root;
        let nlink = if matches!(kind, Kind::Dir(_)) { 2 } else { 1 };
        // Its real inode number is known only once the device has made it.
        let ino = crate::content_hash(format!("{root}/{}/{name}", parent).as_bytes())[..8].iter().fold(0u64, |a, b| a << 8 | u64::from(*b));
        let now = self.now;
        self.nodes.push(Node {
            kind,
            stat: FileStat { ino, nlink, size: 0, atim: now, mtim: now, ctim: now },
            root,
            parent: Some((parent, name.to_string())),
            aliases: Vec::new(),
        });
        if let Kind::Dir(children) = &mut self.nodes[parent].kind {
            children.push((name.to_string(), id));
        }
        self.touch(parent);
        Ok(id)
    }

    fn detach(&mut self, id: NodeId) {
        if let Some((parent, name)) = self.nodes[id].parent.take() {
            if let Kind::Dir(children) = &mut self.nodes[parent].kind {
                children.retain(|(n, _)| *n != name);
            }
            self.touch(parent);
        }
    }

    /// Journals a change (charged against the budget first; a change refused by it was made to
    /// the view already, but the call is then abandoned with its replica).
    fn record(&mut self, op: FileOp) -> Result<(), FsError> {
        // Consecutive writes to one file, each where the last ended, travel as one.
        if let (Some(FileOp::Write { root, path, offset, data }), FileOp::Write { root: r2, path: p2, offset: o2, data: d2 }) =
            (self.journal.last(), &op)
            && root == r2
            && path == p2
            && *offset + data.len() as u64 == *o2
        {
            let more = d2.len() as u64;
            self.charge(more)?;
            if let Some(FileOp::Write { data, .. }) = self.journal.last_mut() {
                data.extend_from_slice(d2);
            }
            self.logged += more;
            return Ok(());
        }
        self.log(op)
    }

    /// Journals a change as it is (charged against the budget first).
    fn log(&mut self, op: FileOp) -> Result<(), FsError> {
        let bytes = op_bytes(&op);
        self.charge(bytes)?;
        self.journal.push(op);
        self.logged += bytes;
        Ok(())
    }

    fn content(&mut self, id: NodeId) -> Result<&[u8], FsError> {
        if let Kind::File(Content::Stored(h)) = &self.nodes[id].kind {
            let h = *h;
            let Some(store) = &self.store else { return unsupported("no file contents on this clone") };
            let bytes = store.get(&h).map_err(|e| FsError::Unsupported(format!("a replicated file is not available: {e}")))?;
            // Held until the call ends, so charged.
            self.charge(bytes.len() as u64)?;
            self.kept += bytes.len() as u64;
            self.nodes[id].kind = Kind::File(Content::Loaded(h, bytes));
        }
        match &self.nodes[id].kind {
            Kind::File(Content::Loaded(_, b)) => Ok(b),
            Kind::File(Content::Owned(b)) => Ok(b),
            _ => err(errno::BADF),
        }
    }

    fn content_mut(&mut self, id: NodeId) -> Result<&mut Vec<u8>, FsError> {
        if !matches!(self.nodes[id].kind, Kind::File(Content::Owned(_))) {
            let len = self.content(id)?.len() as u64;
            self.charge(len)?;
            let bytes = self.content(id)?.to_vec();
            self.kept += len;
            // The loaded copy (charged by `content`) goes: only the owned one is held.
            if matches!(std::mem::replace(&mut self.nodes[id].kind, Kind::File(Content::Owned(bytes))), Kind::File(Content::Loaded(..))) {
                self.kept = self.kept.saturating_sub(len);
            }
        }
        match &mut self.nodes[id].kind {
            Kind::File(Content::Owned(b)) => Ok(b),
            _ => unreachable!("made owned above"),
        }
    }

    /// `path_open`: a new descriptor.
    /// `path_open`; `follow`: the lookup flag that follows a last symbolic link.
    pub fn open(&mut self, dirfd: u32, path: &str, follow: bool, oflags: u16, rights: u64, fdflags: u16) -> Result<u32, FsError> {
        let dir = match self.fd(dirfd)? {
            Fd::Dir { node, .. } => *node,
            Fd::File(_) => return err(errno::NOTDIR),
            _ => return err(errno::BADF),
        };
        // As wasmtime-wasi decides before it opens anything: the synchronous-I/O flags are not
        // supported, a directory is not created or truncated, and creating or truncating opens
        // for writing whatever the rights say (a descriptor without the right to read or write
        // is opened for reading).
        if fdflags & FDFLAGS_SYNC != 0 {
            return err(errno::NOTSUP);
        }
        if oflags & O_DIRECTORY != 0 && oflags & (O_CREAT | O_EXCL | O_TRUNC) != 0 {
            return err(errno::INVAL);
        }
        let write = rights & rights::FD_WRITE != 0 || oflags & (O_CREAT | O_TRUNC) != 0;
        let read = rights & rights::FD_READ != 0 || rights & rights::FD_WRITE == 0;
        // What the device replays (without O_CREAT or O_TRUNC) to open it the same way.
        let rights = (rights & !(rights::FD_READ | rights::FD_WRITE)) | if read { rights::FD_READ } else { 0 } | if write { rights::FD_WRITE } else { 0 };
        let Walked { parent, name, trailing } = self.walk_with(dir, path, follow)?;
        let existing = match &name {
            None => Some(parent),
            Some(n) => self.child(parent, n),
        };
        let id = match existing {
            Some(id) => {
                if oflags & O_CREAT != 0 && oflags & O_EXCL != 0 {
                    return err(errno::EXIST);
                }
                match self.nodes[id].kind {
                    Kind::Other(_) => return unsupported(format!("`{path}` is a special file")),
                    // Not followed: as O_NOFOLLOW does.
                    Kind::Symlink(_) => return err(errno::LOOP),
                    Kind::Dir(_) if oflags & O_CREAT != 0 => return err(errno::ISDIR),
                    Kind::Dir(_) => {
                        if write || oflags & O_TRUNC != 0 {
                            return err(errno::ISDIR);
                        }
                        let fd = self.push(Fd::Dir { node: id, preopen: false })?;
                        self.record_open(dirfd, dir, parent, name.as_deref(), true, rights, fdflags, fd)?;
                        return Ok(fd);
                    }
                    Kind::File(_) => {
                        if oflags & O_DIRECTORY != 0 {
                            return err(errno::NOTDIR);
                        }
                        if oflags & O_TRUNC != 0 {
                            self.set_len(id, 0)?;
                        }
                        id
                    }
                }
            }
            None if oflags & O_CREAT != 0 && trailing => return err(errno::ISDIR),
            None if oflags & O_CREAT != 0 => {
                let new = name.clone().expect("a missing node has a name");
                let id = self.attach(parent, &new, Kind::File(Content::Owned(Vec::new())))?;
                let root = self.nodes[id].root;
                let path = self.path_of(id).expect("just attached");
                self.record(FileOp::Create { root, path })?;
                id
            }
            None => return err(errno::NOENT),
        };
        let fd = self.push(Fd::File(Opened { node: id, pos: 0, read, write, fdflags, synced: 0 }))?;
        self.record_open(dirfd, dir, parent, name.as_deref(), false, rights, fdflags, fd)?;
        Ok(fd)
    }

    /// Journals a `path_open` for the device to replay: entry `name` of directory `parent` (the
    /// directory itself without a name), by its plain path under `dir` (the descriptor `dirfd`'s
    /// directory). Resolution never leaves `dir`, and directories have one parent, so `parent`
    /// is reached from `dir` by name; the entry is named as the lookup found it (a file with hard
    /// links has several names).
    #[allow(clippy::too_many_arguments)]
    fn record_open(&mut self, dirfd: u32, dir: NodeId, parent: NodeId, name: Option<&str>, directory: bool, rights: u64, fdflags: u16, fd: u32) -> Result<(), FsError> {
        let mut parts: Vec<String> = name.map(str::to_string).into_iter().collect();
        let mut at = parent;
        while at != dir {
            let Some((up, name)) = &self.nodes[at].parent else { break };
            parts.push(name.clone());
            at = *up;
        }
        parts.reverse();
        let path = parts.join("/");
        self.log(FileOp::Fd(FdOp::Open { dirfd, path, directory, rights, fdflags, fd }))
    }

    /// Resizes a file's content to `size`: growth is charged against the budget before anything
    /// is allocated, and memory a cut frees is given back.
    fn resize(&mut self, id: NodeId, size: u64) -> Result<(), FsError> {
        let old = self.content_mut(id)?.len() as u64;
        if size > old {
            self.charge(size - old)?;
        }
        let len = usize::try_from(size).map_err(|_| FsError::Unsupported("a file of more than the address space".into()))?;
        let bytes = self.content_mut(id)?;
        bytes.resize(len, 0);
        if bytes.capacity() > len.saturating_mul(2).max(4096) {
            bytes.shrink_to_fit();
        }
        self.kept = (self.kept + size).saturating_sub(old);
        Ok(())
    }

    fn set_len(&mut self, id: NodeId, size: u64) -> Result<(), FsError> {
        self.resize(id, size)?;
        self.nodes[id].stat.size = size;
        self.touch(id);
        if let Some(path) = self.path_of(id) {
            let root = self.nodes[id].root;
            self.record(FileOp::SetSize { root, path, size })?;
        }
        Ok(())
    }

    /// `fd_close`: any descriptor, stdio, preopens and the device's included (the device
    /// closes its own at the commit).
    pub fn close(&mut self, fd: u32) -> Result<(), FsError> {
        if !self.is_open(fd)? {
            return err(errno::BADF);
        }
        self.used.remove(&fd);
        self.origin.remove(&fd);
        self.free.insert(fd);
        self.closed_any = true;
        self.log(FileOp::Fd(FdOp::Close { fd }))?;
        Ok(())
    }

    /// `fd_renumber`: both must be open; `to` is closed and `from` takes its number.
    pub fn renumber(&mut self, from: u32, to: u32) -> Result<(), FsError> {
        if !self.is_open(from)? || !self.is_open(to)? {
            return err(errno::BADF);
        }
        if from == to {
            return Ok(());
        }
        let d = self.used.remove(&from).expect("open");
        self.free.insert(from);
        self.closed_any = true;
        self.free.remove(&to);
        self.used.insert(to, d);
        self.origin.remove(&to);
        if let Some(o) = self.origin.remove(&from) {
            self.origin.insert(to, o);
        }
        self.log(FileOp::Fd(FdOp::Renumber { from, to }))?;
        Ok(())
    }

    /// `fd_fdstat_set_flags`: a file's append and non-blocking flags.
    pub fn set_fdflags(&mut self, fd: u32, flags: u16) -> Result<(), FsError> {
        let o = self.file_for_flags(fd)?;
        if flags & FDFLAGS_SYNC != 0 {
            return err(errno::INVAL);
        }
        o.fdflags = (o.fdflags & !(FDFLAG_APPEND | FDFLAG_NONBLOCK)) | (flags & (FDFLAG_APPEND | FDFLAG_NONBLOCK));
        self.log(FileOp::Fd(FdOp::SetFlags { fd, fdflags: flags }))?;
        Ok(())
    }

    fn file_for_flags(&mut self, fd: u32) -> Result<&mut Opened, FsError> {
        match self.fd(fd)? {
            Fd::File(_) => self.file(fd),
            _ => err(errno::BADF),
        }
    }

    /// `fd_fdstat_set_rights`: wasmtime-wasi checks the descriptor and answers ENOTSUP.
    pub fn set_rights(&self, fd: u32) -> Result<(), FsError> {
        match self.fd(fd)? {
            Fd::File(_) | Fd::Dir { .. } => err(errno::NOTSUP),
            _ => err(errno::BADF),
        }
    }

    /// `fd_allocate`: wasmtime-wasi checks that the descriptor is a file and answers ENOTSUP.
    pub fn allocate(&self, fd: u32) -> Result<(), FsError> {
        match self.fd(fd)? {
            Fd::File(_) => err(errno::NOTSUP),
            _ => err(errno::BADF),
        }
    }

    /// `sock_*`: no socket exists in a preview 1 run, so wasmtime-wasi answers ENOTSOCK for any
    /// open descriptor and EBADF for any other.
    pub fn socket(&self, fd: u32) -> Result<(), FsError> {
        if self.is_open(fd)? { err(errno::NOTSOCK) } else { err(errno::BADF) }
    }

    /// What `poll_oneoff` sees of a descriptor: stdin (the device's to wait for), stdout or
    /// stderr, or a file with the bytes left to read from its position.
    pub fn poll_target(&self, fd: u32) -> Result<PollTarget, FsError> {
        match self.fd(fd)? {
            Fd::Stdin => Ok(PollTarget::Stdin),
            Fd::Stdout | Fd::Stderr => Ok(PollTarget::Output),
            Fd::File(o) => Ok(PollTarget::File { left: self.nodes[o.node].stat.size.saturating_sub(o.pos) }),
            _ => err(errno::BADF),
        }
    }

    /// `fd_filestat_set_times`: `None` leaves a time as it is.
    pub fn set_times(&mut self, fd: u32, atim: Option<u64>, mtim: Option<u64>) -> Result<(), FsError> {
        let id = match self.fd(fd)? {
            Fd::File(o) => o.node,
            Fd::Dir { node, .. } => *node,
            _ => return err(errno::BADF),
        };
        self.times_of(id, atim, mtim)
    }

    /// `path_filestat_set_times`.
    pub fn path_set_times(&mut self, dirfd: u32, path: &str, follow: bool, atim: Option<u64>, mtim: Option<u64>) -> Result<(), FsError> {
        let dir = self.dir_fd(dirfd)?;
        let id = self.lookup(dir, path, follow)?;
        self.times_of(id, atim, mtim)
    }

    fn times_of(&mut self, id: NodeId, atim: Option<u64>, mtim: Option<u64>) -> Result<(), FsError> {
        let Some(path) = self.path_of(id) else { return unsupported("setting the times of a file that was removed") };
        if path.is_empty() {
            return unsupported("setting the times of a preopened directory");
        }
        let now = self.now;
        let s = &mut self.nodes[id].stat;
        if let Some(a) = atim {
            s.atim = a;
        }
        if let Some(m) = mtim {
            s.mtim = m;
        }
        s.ctim = now;
        let root = self.nodes[id].root;
        self.record(FileOp::SetTimes { root, path, atim, mtim })?;
        Ok(())
    }

    /// `fd_read` (`at: None`, from the position, which advances) or `fd_pread` (at `at`).
    pub fn read(&mut self, fd: u32, max: usize, at: Option<u64>) -> Result<Vec<u8>, FsError> {
        // `fd_pread`: stdin cannot seek, and the other stdio streams are not for reading.
        match (self.fd(fd)?, at) {
            (Fd::Stdin, Some(_)) => return err(errno::SPIPE),
            (Fd::Stdout | Fd::Stderr, _) => return err(errno::BADF),
            _ => {}
        }
        let o = self.file(fd)?.clone();
        if !o.read {
            return err(errno::BADF);
        }
        let start = at.unwrap_or(o.pos);
        let data = self.content(o.node)?;
        let from = usize::try_from(start).unwrap_or(usize::MAX).min(data.len());
        let out = data[from..from + max.min(data.len() - from)].to_vec();
        if at.is_none()
            && let Fd::File(f) = self.used.get_mut(&fd).expect("checked")
        {
            f.pos = start + out.len() as u64;
        }
        Ok(out)
    }

    /// `fd_write` (`at: None`) or `fd_pwrite`. Stdout and stderr go to the output journal.
    /// Journals `data` for output channel `channel` (not a descriptor of the guest: the
    /// device's screen), after the output before it.
    pub fn journal(&mut self, channel: u32, data: &[u8]) -> Result<(), FsError> {
        let more = data.len() as u64;
        self.charge(OP_BYTES + more)?;
        self.output.push((channel, data.to_vec()));
        self.logged += OP_BYTES + more;
        Ok(())
    }

    pub fn write(&mut self, fd: u32, data: &[u8], at: Option<u64>) -> Result<usize, FsError> {
        match (self.fd(fd)?, at) {
            (Fd::Stdout | Fd::Stderr, None) => {
                let more = data.len() as u64;
                if matches!(self.output.last(), Some((last, _)) if *last == fd) {
                    self.charge(more)?;
                    self.output.last_mut().expect("checked").1.extend_from_slice(data);
                    self.logged += more;
                } else {
                    self.charge(OP_BYTES + more)?;
                    self.output.push((fd, data.to_vec()));
                    self.logged += OP_BYTES + more;
                }
                return Ok(data.len());
            }
            (Fd::Stdout | Fd::Stderr, Some(_)) => return err(errno::SPIPE),
            (Fd::Stdin, _) => return err(errno::BADF),
            _ => {}
        }
        let o = self.file(fd)?.clone();
        if !o.write {
            return err(errno::BADF);
        }
        let append = o.fdflags & FDFLAG_APPEND != 0;
        let len = self.content(o.node)?.len() as u64;
        let offset = if append { len } else { at.unwrap_or(o.pos) };
        let end = offset
            .checked_add(data.len() as u64)
            .and_then(|e| usize::try_from(e).ok())
            .ok_or_else(|| FsError::Unsupported("a write past the address space".into()))?;
        if (self.content_mut(o.node)?.len()) < end {
            self.resize(o.node, end as u64)?;
        }
        let bytes = self.content_mut(o.node)?;
        bytes[offset as usize..end].copy_from_slice(data);
        let size = bytes.len() as u64;
        self.nodes[o.node].stat.size = size;
        self.touch(o.node);
        if let Some(path) = self.path_of(o.node) {
            let root = self.nodes[o.node].root;
            self.record(FileOp::Write { root, path, offset, data: data.to_vec() })?;
        }
        if at.is_none()
            && let Fd::File(f) = self.used.get_mut(&fd).expect("checked")
        {
            f.pos = if append { size } else { end as u64 };
        }
        Ok(data.len())
    }

    /// `fd_seek`: whence 0 (set), 1 (current), 2 (end).
    pub fn seek(&mut self, fd: u32, offset: i64, whence: u8) -> Result<u64, FsError> {
        let o = self.file(fd)?.clone();
        let pos = match whence {
            0 if offset >= 0 => offset as u64,
            1 => o.pos.checked_add_signed(offset).ok_or(FsError::Errno(errno::INVAL))?,
            2 => (self.content(o.node)?.len() as u64).checked_add_signed(offset).ok_or(FsError::Errno(errno::INVAL))?,
            _ => return err(errno::INVAL),
        };
        self.file(fd)?.pos = pos;
        Ok(pos)
    }

    /// `fd_tell`.
    pub fn tell(&mut self, fd: u32) -> Result<u64, FsError> {
        Ok(self.file(fd)?.pos)
    }

    /// `fd_fdstat_get`.
    pub fn fdstat(&self, fd: u32) -> Result<Fdstat, FsError> {
        match self.fd(fd)? {
            Fd::Stdin | Fd::Stdout | Fd::Stderr => unsupported("whether stdio is a terminal is known on the device only"),
            Fd::Dir { preopen: true, .. } => Ok(Fdstat {
                filetype: filetype::DIRECTORY,
                flags: 0,
                rights_base: rights::PREOPEN_BASE,
                rights_inheriting: rights::PREOPEN_INHERITING,
            }),
            Fd::Dir { .. } => {
                // Directories are opened here for reading only.
                let base = rights::ALL & !(rights::FD_SEEK | rights::FD_FILESTAT_SET_SIZE | rights::PATH_FILESTAT_SET_SIZE | rights::FD_WRITE);
                Ok(Fdstat { filetype: filetype::DIRECTORY, flags: 0, rights_base: base, rights_inheriting: base })
            }
            Fd::File(o) => {
                let mut base = rights::ALL;
                if !o.read {
                    base &= !(rights::FD_READ | rights::FD_READDIR);
                }
                if !o.write {
                    base &= !rights::FD_WRITE;
                }
                Ok(Fdstat { filetype: filetype::REGULAR_FILE, flags: o.fdflags, rights_base: base, rights_inheriting: base })
            }
            Fd::Device => unreachable!("refused by fd()"),
        }
    }

    fn filestat_of(&self, id: NodeId) -> Filestat {
        let n = &self.nodes[id];
        let filetype = match n.kind {
            Kind::Dir(_) => filetype::DIRECTORY,
            Kind::File(_) => filetype::REGULAR_FILE,
            Kind::Other(t) => t,
            Kind::Symlink(_) => filetype::SYMBOLIC_LINK,
        };
        let s = n.stat;
        Filestat { dev: 1, ino: s.ino, filetype, nlink: s.nlink, size: s.size, atim: s.atim, mtim: s.mtim, ctim: s.ctim }
    }

    /// `fd_filestat_get`.
    pub fn filestat(&self, fd: u32) -> Result<Filestat, FsError> {
        match self.fd(fd)? {
            Fd::Dir { node, .. } => Ok(self.filestat_of(*node)),
            Fd::File(o) => Ok(self.filestat_of(o.node)),
            _ => unsupported("whether stdio is a terminal is known on the device only"),
        }
    }

    /// `path_filestat_get`.
    pub fn path_filestat(&self, dirfd: u32, path: &str, follow: bool) -> Result<Filestat, FsError> {
        let dir = self.dir_fd(dirfd)?;
        Ok(self.filestat_of(self.lookup(dir, path, follow)?))
    }

    /// `fd_readdir`: the bytes wasmtime-wasi writes into a buffer of `buf_len` bytes from
    /// `cookie` on (entries `.` and `..` first, then the children in directory order; the last
    /// entry cut at the buffer's end).
    pub fn readdir(&self, fd: u32, buf_len: u32, cookie: u64) -> Result<Vec<u8>, FsError> {
        let dir = self.dir_fd(fd)?;
        let Kind::Dir(children) = &self.nodes[dir].kind else { return err(errno::NOTDIR) };
        let ino = self.nodes[dir].stat.ino;
        let mut all = vec![
            Dirent { next: 1, ino, filetype: filetype::DIRECTORY, name: ".".into() },
            Dirent { next: 2, ino, filetype: filetype::DIRECTORY, name: "..".into() },
        ];
        for (k, (name, id)) in children.iter().enumerate() {
            let st = self.filestat_of(*id);
            all.push(Dirent { next: 3 + k as u64, ino: st.ino, filetype: st.filetype, name: name.clone() });
        }
        let mut out = Vec::new();
        let mut cap = buf_len as usize;
        for d in all.into_iter().skip(usize::try_from(cookie).unwrap_or(usize::MAX)) {
            let mut head = [0u8; 24];
            head[0..8].copy_from_slice(&d.next.to_le_bytes());
            head[8..16].copy_from_slice(&d.ino.to_le_bytes());
            head[16..20].copy_from_slice(&(d.name.len() as u32).to_le_bytes());
            head[20] = d.filetype;
            let n = cap.min(24);
            out.extend_from_slice(&head[..n]);
            cap -= n;
            if cap == 0 {
                break;
            }
            let n = cap.min(d.name.len());
            out.extend_from_slice(&d.name.as_bytes()[..n]);
            cap -= n;
            if cap == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// `fd_filestat_set_size`.
    pub fn set_size(&mut self, fd: u32, size: u64) -> Result<(), FsError> {
        let o = match self.fd(fd)? {
            Fd::File(o) => o.clone(),
            _ => return err(errno::BADF),
        };
        if !o.write {
            // ftruncate on a descriptor opened for reading only.
            return err(errno::INVAL);
        }
        self.set_len(o.node, size)
    }

    /// `fd_sync`, `fd_datasync`, `fd_advise`: nothing to do beyond checking that the descriptor
    /// is a file (EBADF for anything else, as wasmtime-wasi answers).
    pub fn check(&self, fd: u32) -> Result<(), FsError> {
        match self.fd(fd)? {
            Fd::File(_) => Ok(()),
            _ => err(errno::BADF),
        }
    }

    fn named(&self, dirfd: u32, path: &str) -> Result<(NodeId, String), FsError> {
        let dir = self.dir_fd(dirfd)?;
        match self.walk(dir, path)? {
            (parent, Some(name)) => Ok((parent, name)),
            (_, None) => unsupported(format!("`{path}` names the directory itself")),
        }
    }

    /// `path_create_directory`.
    pub fn mkdir(&mut self, dirfd: u32, path: &str) -> Result<(), FsError> {
        let (parent, name) = self.named(dirfd, path)?;
        if self.child(parent, &name).is_some() {
            return err(errno::EXIST);
        }
        let id = self.attach(parent, &name, Kind::Dir(Vec::new()))?;
        let (root, path) = (self.nodes[id].root, self.path_of(id).expect("attached"));
        self.record(FileOp::Mkdir { root, path })?;
        Ok(())
    }

    /// `path_unlink_file`.
    pub fn unlink(&mut self, dirfd: u32, path: &str) -> Result<(), FsError> {
        let (parent, name) = self.named(dirfd, path)?;
        let id = self.child(parent, &name).ok_or(FsError::Errno(errno::NOENT))?;
        match self.nodes[id].kind {
            Kind::File(_) | Kind::Symlink(_) => {}
            Kind::Dir(_) => return err(errno::ISDIR),
            Kind::Other(_) => return unsupported(format!("unlinking `{path}`, a special file")),
        }
        let Some(p) = self.name_path(parent, &name) else { return unsupported("unlinking in a removed directory") };
        let root = self.nodes[parent].root;
        self.remove_name(id, parent, &name);
        self.record(FileOp::Unlink { root, path: p })?;
        Ok(())
    }

    /// Removes name `name` in `parent` of node `id` (one of its names, if it has several).
    fn remove_name(&mut self, id: NodeId, parent: NodeId, name: &str) {
        let name = name.to_string();
        if self.nodes[id].parent.as_ref() == Some(&(parent, name.clone())) {
            self.detach(id);
            // Another name, if any, becomes the one its changes are journaled under.
            if let Some(other) = self.nodes[id].aliases.pop() {
                self.nodes[id].root = self.nodes[other.0].root;
                self.nodes[id].parent = Some(other);
            }
        } else {
            self.nodes[id].aliases.retain(|(d, n)| !(*d == parent && *n == name));
            if let Kind::Dir(children) = &mut self.nodes[parent].kind {
                children.retain(|(n, _)| *n != name);
            }
            self.touch(parent);
        }
        if matches!(self.nodes[id].kind, Kind::File(_)) {
            let s = &mut self.nodes[id].stat;
            s.nlink = s.nlink.saturating_sub(1);
            s.ctim = self.now;
        }
    }

    /// The path, relative to its preopen, of entry `name` in directory `dir`.
    fn name_path(&self, dir: NodeId, name: &str) -> Option<String> {
        let d = self.path_of(dir)?;
        Some(if d.is_empty() { name.to_string() } else { format!("{d}/{name}") })
    }

    /// `path_link`: `to` (under `fd2`) becomes another name of the file `from` (under `fd1`; a
    /// last symbolic link is linked itself, and following it is EINVAL, as wasmtime-wasi has it).
    pub fn link(&mut self, fd1: u32, follow: bool, from: &str, fd2: u32, to: &str) -> Result<(), FsError> {
        let (d1, d2) = (self.dir_fd(fd1)?, self.dir_fd(fd2)?);
        if follow {
            return err(errno::INVAL);
        }
        if to.ends_with('/') {
            return err(errno::NOENT);
        }
        let w1 = self.walk_with(d1, from, false)?;
        let Some(n1) = w1.name else { return err(errno::PERM) };
        let id = self.child(w1.parent, &n1).ok_or(FsError::Errno(errno::NOENT))?;
        match self.nodes[id].kind {
            Kind::File(_) | Kind::Symlink(_) => {}
            Kind::Dir(_) => return err(errno::PERM),
            Kind::Other(_) => return unsupported(format!("`{from}` is a special file")),
        }
        let w2 = self.walk_with(d2, to, false)?;
        let Some(n2) = w2.name else { return err(errno::EXIST) };
        if self.child(w2.parent, &n2).is_some() {
            return err(errno::EXIST);
        }
        let (Some(from_path), Some(to_path)) = (self.path_of(id), self.name_path(w2.parent, &n2)) else {
            return unsupported("a hard link in a removed directory");
        };
        if let Kind::Dir(children) = &mut self.nodes[w2.parent].kind {
            children.push((n2.clone(), id));
        }
        self.touch(w2.parent);
        self.nodes[id].aliases.push((w2.parent, n2));
        let now = self.now;
        let s = &mut self.nodes[id].stat;
        s.nlink += 1;
        s.ctim = now;
        let (root, to_root) = (self.nodes[id].root, self.nodes[w2.parent].root);
        self.record(FileOp::Link { root, from: from_path, to_root, to: to_path })?;
        Ok(())
    }

    /// `path_remove_directory`.
    pub fn rmdir(&mut self, dirfd: u32, path: &str) -> Result<(), FsError> {
        let (parent, name) = self.named(dirfd, path)?;
        let id = self.child(parent, &name).ok_or(FsError::Errno(errno::NOENT))?;
        match &self.nodes[id].kind {
            Kind::Dir(children) if !children.is_empty() => return err(errno::NOTEMPTY),
            Kind::Dir(_) => {}
            Kind::File(_) | Kind::Symlink(_) => return err(errno::NOTDIR),
            Kind::Other(_) => return unsupported(format!("`{path}` is a special file")),
        }
        let (root, p) = (self.nodes[id].root, self.path_of(id).expect("attached"));
        self.detach(id);
        self.record(FileOp::Rmdir { root, path: p })?;
        Ok(())
    }

    /// `path_symlink`: `path` (under `dirfd`) becomes a link to `target`.
    pub fn symlink(&mut self, target: &str, dirfd: u32, path: &str) -> Result<(), FsError> {
        if target.starts_with('/') {
            return err(errno::PERM);
        }
        if target.is_empty() || target.contains('\0') {
            return unsupported("an empty link target");
        }
        let dir = self.dir_fd(dirfd)?;
        let w = self.walk_with(dir, path, false)?;
        let Some(name) = w.name else { return err(errno::EXIST) };
        if self.child(w.parent, &name).is_some() {
            return err(errno::EXIST);
        }
        if w.trailing {
            return err(errno::NOENT);
        }
        if !crate::apply::stays_inside(&self.name_path(w.parent, &name).unwrap_or_default(), target) {
            // The device refuses to make such a link from a journal (it would follow it there).
            return unsupported(format!("a link at `{path}` to `{target}`, out of its directory"));
        }
        let id = self.attach(w.parent, &name, Kind::Symlink(target.to_string()))?;
        self.nodes[id].stat.size = target.len() as u64;
        let (root, p) = (self.nodes[id].root, self.path_of(id).expect("attached"));
        self.record(FileOp::Symlink { root, target: target.to_string(), path: p })?;
        Ok(())
    }

    /// `path_readlink`: the link's target (EINVAL for anything else; EPERM for an absolute
    /// target, as wasmtime-wasi will not show those).
    pub fn readlink(&self, dirfd: u32, path: &str) -> Result<String, FsError> {
        let dir = self.dir_fd(dirfd)?;
        let w = self.walk_with(dir, path, false)?;
        let Some(name) = w.name else { return err(errno::INVAL) };
        match self.child(w.parent, &name).map(|id| &self.nodes[id].kind) {
            None => err(errno::NOENT),
            Some(Kind::Symlink(t)) if t.starts_with('/') => err(errno::PERM),
            Some(Kind::Symlink(t)) => Ok(t.clone()),
            Some(_) => err(errno::INVAL),
        }
    }

    /// `path_rename`.
    pub fn rename(&mut self, fd1: u32, from: &str, fd2: u32, to: &str) -> Result<(), FsError> {
        let (p1, n1) = self.named(fd1, from)?;
        let (p2, n2) = self.named(fd2, to)?;
        let id = self.child(p1, &n1).ok_or(FsError::Errno(errno::NOENT))?;
        let target = self.child(p2, &n2);
        let is_file = |fs: &Fs, id: NodeId| matches!(fs.nodes[id].kind, Kind::File(_) | Kind::Symlink(_));
        if is_file(self, id) && (from.ends_with('/') || to.ends_with('/')) {
            return err(errno::NOTDIR);
        }
        match target {
            Some(t) if t == id => return Ok(()),
            // As rename(2): a file over a directory, a directory over a file or a non-empty one.
            Some(t) if is_file(self, id) && matches!(self.nodes[t].kind, Kind::Dir(_)) => return err(errno::ISDIR),
            Some(t) if !is_file(self, id) && is_file(self, t) => return err(errno::NOTDIR),
            Some(t) if matches!(&self.nodes[t].kind, Kind::Dir(c) if !c.is_empty()) => return err(errno::NOTEMPTY),
            Some(t) if !(is_file(self, id) && is_file(self, t)) && !matches!(self.nodes[t].kind, Kind::Dir(_)) => {
                return unsupported(format!("renaming `{from}` over `{to}`, a special file"));
            }
            _ if matches!(self.nodes[id].kind, Kind::Other(_)) => return unsupported(format!("`{from}` is a special file")),
            _ => {}
        }
        if !is_file(self, id) && self.nodes[p2].root != self.nodes[id].root {
            return unsupported(format!("moving directory `{from}` to another preopen"));
        }
        // A directory cannot move into itself.
        let mut up = Some(p2);
        while let Some(u) = up {
            if u == id {
                return err(errno::INVAL);
            }
            up = self.nodes[u].parent.as_ref().map(|(p, _)| *p);
        }
        if !self.nodes[id].aliases.is_empty() {
            return unsupported(format!("renaming `{from}`, a file with several names"));
        }
        if self.nodes[id].parent.as_ref().map(|(_, n)| n.as_str()) != Some(n1.as_str()) {
            return unsupported(format!("renaming `{from}`, another name of its file"));
        }
        let (root, from_path) = (self.nodes[id].root, self.path_of(id).expect("attached"));
        if let Some(t) = target {
            // The name goes; the file stays if it has others.
            self.remove_name(t, p2, &n2);
        }
        self.detach(id);
        self.nodes[id].parent = Some((p2, n2.clone()));
        self.nodes[id].root = self.nodes[p2].root;
        if let Kind::Dir(children) = &mut self.nodes[p2].kind {
            children.push((n2, id));
        }
        self.touch(p2);
        let (to_root, to_path) = (self.nodes[id].root, self.path_of(id).expect("attached"));
        self.record(FileOp::Rename { root, from: from_path, to_root, to: to_path })?;
        Ok(())
    }
}
