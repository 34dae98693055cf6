//! The device's side of the journal: a migrated function's file changes, carried out on the
//! real preopened directories at the commit.
//!
//! The journal comes from the clone, which the device does not trust with its files:
//! - Every path is resolved beneath its preopen one component at a time, each directory opened
//!   with `O_NOFOLLOW`, and the last component acted on with the `*at` calls that do not follow
//!   it: no symbolic link is followed anywhere (as `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)` would have it). The clone's journal names entries by their place in
//!   the tree, never through a link, so an honest journal never needs one followed.
//! - The journal is all or nothing. Each change is recorded with what undoes it (the bytes a
//!   write covers, the tail a truncation cuts, a removed or replaced entry kept under a hidden
//!   name beside it until the commit) and, when a change fails, the ones before it are undone
//!   in reverse order. [`Applied::undo`] does the same when what comes after the files (the
//!   memory merge) fails, and [`Applied::commit`] removes what was kept.
//!
//! What it does not know: descriptor changes go through the device's WASI (`descriptors`),
//! which says how to undo each one it can; a close or a renumber cannot be undone, so each is
//! held back to [`Applied::commit`] (or to the next open, whose number it decides), and the
//! caller checks the journal against the device's table first
//! ([`crate::Descriptors::check_journal`]). One carried out before a later change fails (an
//! open after it failed) stays carried out; the rest is undone.

use crate::scan::Root;
use crate::model::{FdOp, FileOp};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use tracing::warn;

/// The errors a descriptor replay reports.
pub type DescriptorError = Box<dyn std::error::Error + Send + Sync>;

/// A journal entry that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the journal names preopen {0}, which this run does not have")]
    NoRoot(u32),
    #[error("the journal names `{0}`, which is not a plain relative path")]
    BadPath(String),
    #[error("cannot {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("cannot replay the descriptor change {op:?}: {why}")]
    Descriptor { op: FdOp, why: DescriptorError },
    /// A change failed and the ones before it could not all be undone: the directories are not
    /// as they were (each step that could not be undone was logged).
    #[error("{first}; undoing the changes before it failed {failed} times")]
    Partial { first: Box<ApplyError>, failed: usize },
}

/// A journal carried out, not yet committed: what undoes it.
#[must_use = "a journal applied is committed or undone"]
#[derive(Debug)]
pub struct Applied<'r> {
    roots: &'r [Root],
    undo: Vec<Undo>,
    /// Per preopen that needed one: the hidden directory at its top where removed and replaced
    /// entries are kept until the commit (not beside them, so the directory they were in can
    /// still be removed, and is empty when the journal says it is).
    stashes: Vec<Stash>,
    /// Per file (device, inode): the offset from which its original bytes are already saved by
    /// an earlier truncation (undone later, so it puts them back last); a later truncation
    /// saves only what lies below it. So a journal's undo data for a file is at most its
    /// original size, however often the journal grows and cuts it.
    saved_from: HashMap<(u64, u64), u64>,
    /// Bytes of undo data held in memory; past [`UNDO_IN_MEMORY`] tails go to the stash.
    in_memory: u64,
    /// Closes and renumberings not carried out yet. Nothing undoes them on the device (the
    /// description a close drops is gone), and they commute with every change to the files, so
    /// each waits for the commit, or for the next descriptor change it could affect: an open
    /// (whose number depends on which are free), or a change to a descriptor one of them names.
    held: Vec<FdOp>,
}

/// A hidden directory at the top of a preopen, made for one merge.
#[derive(Debug)]
struct Stash {
    root: u32,
    /// The preopen, and the stash's name in it.
    top: OwnedFd,
    name: CString,
    dir: OwnedFd,
}

/// What undoes one change, by path (the journal's paths are valid again once every later
/// change has been undone, so nothing is held open).
#[derive(Debug)]
enum Undo {
    /// Remove what the change made (`dir`: a directory).
    Remove { root: u32, path: String, dir: bool },
    /// Put back what was kept aside (in the preopen's stash, or beside `path` when the stash is
    /// on another file system); at the commit, remove it.
    Restore { root: u32, path: String, kept: At, dir: bool },
    /// Rename `to` back to `from`.
    MoveBack { root: u32, from: String, to_root: u32, to: String },
    /// Cut the file back to `len`, write `old` back at `offset` and set its `times` again.
    Bytes { root: u32, path: String, offset: u64, old: Vec<u8>, len: u64, times: [libc::timespec; 2] },
    /// Cut the file back to `len`, then copy the kept `hidden` (a sibling) back in at `at`; at
    /// the commit, remove it.
    Tail { root: u32, path: String, kept: At, at: u64, len: u64, times: [libc::timespec; 2] },
    /// Make the empty directory that was removed, with its mode and times.
    Rmdir { root: u32, path: String, mode: u32, atim: libc::timespec, mtim: libc::timespec },
    Times { root: u32, path: String, atim: libc::timespec, mtim: libc::timespec },
    /// Replay this descriptor change.
    Fd(FdOp),
}

/// Whether a link at `path` (relative to its preopen) to `target` leads, read as text from the
/// link's directory, to a place inside the preopen. This is a check on the target's text only: a
/// target that passes through other links can still point out, as a program run locally could
/// make it do (WASI refuses to follow such a link for the program; other programs on the device
/// would). A link the journal moves (renamed, hard-linked, or beneath a directory renamed) is
/// checked again where it lands ([`links_land_inside`]).
pub(crate) fn stays_inside(path: &str, target: &str) -> bool {
    if target.starts_with('/') || target.contains('\0') {
        return false;
    }
    let mut depth = path.split('/').filter(|c| !c.is_empty()).count() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// Refuses a move of the entry at `at` (of status `st`) to `to` when it would leave a symbolic
/// link pointing out of the preopen: the entry itself if it is a link, or any link beneath it if
/// it is a directory (a relative target means something else at another depth). So a journal
/// cannot plant a link that points out by making it where it may and moving it.
fn links_land_inside(at: &At, st: &libc::stat, to: &str) -> Result<(), ApplyError> {
    let bad = |path: &str, target: &str| ApplyError::BadPath(format!("{path} -> {target} (moved)"));
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: valid directory, NUL-terminated name, and a buffer of the length given.
        let n = unsafe { libc::readlinkat(at.dir.as_raw_fd(), at.name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        let n = usize::try_from(n).map_err(|_| ApplyError::BadPath(format!("{to}: the link cannot be read")))?;
        let target = String::from_utf8_lossy(&buf[..n]).into_owned();
        return if stays_inside(to, &target) { Ok(()) } else { Err(bad(to, &target)) };
    }
    if !is_dir(st) {
        return Ok(());
    }
    // Beneath a directory: every link, at its new path (no link followed on the way down).
    let top = at.through_proc();
    let mut stack = vec![(top, to.to_string())];
    while let Some((dir, rel)) = stack.pop() {
        let unreadable = |e: io::Error| ApplyError::BadPath(format!("{rel}: cannot look beneath it ({e})"));
        for e in std::fs::read_dir(&dir).map_err(unreadable)? {
            let e = e.map_err(unreadable)?;
            let kind = e.file_type().map_err(unreadable)?;
            let path = format!("{rel}/{}", e.file_name().to_string_lossy());
            if kind.is_symlink() {
                let target = std::fs::read_link(e.path()).map_err(unreadable)?;
                let target = target.to_string_lossy();
                if !stays_inside(&path, &target) {
                    return Err(bad(&path, &target));
                }
            } else if kind.is_dir() {
                stack.push((e.path(), path));
            }
        }
    }
    Ok(())
}

fn check_path(roots: &[Root], root: u32, path: &str) -> Result<(), ApplyError> {
    roots.get(root as usize).ok_or(ApplyError::NoRoot(root))?;
    // The codec refuses such paths already; a journal is checked here again because it is about
    // to touch the device's files.
    if path.is_empty() || path.split('/').any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0')) {
        return Err(ApplyError::BadPath(path.to_string()));
    }
    // What a merge keeps aside is its own: no journal names it.
    if path.starts_with(HIDDEN_PREFIX) {
        return Err(ApplyError::BadPath(path.to_string()));
    }
    Ok(())
}

/// The (preopen, path) pairs an operation touches.
fn paths(op: &FileOp) -> Vec<(u32, &str)> {
    match op {
        FileOp::Create { root, path }
        | FileOp::Write { root, path, .. }
        | FileOp::SetSize { root, path, .. }
        | FileOp::Mkdir { root, path }
        | FileOp::Unlink { root, path }
        | FileOp::Rmdir { root, path }
        | FileOp::SetTimes { root, path, .. }
        | FileOp::Symlink { root, path, .. } => vec![(*root, path)],
        FileOp::Rename { root, from, to_root, to } | FileOp::Link { root, from, to_root, to } => vec![(*root, from), (*to_root, to)],
        // Replayed through the device's WASI, which keeps them inside its preopens.
        FileOp::Fd(_) => vec![],
    }
}

/// The descriptor an undoing descriptor change acts on.
fn fd_of(op: &FdOp) -> Option<u32> {
    match op {
        FdOp::Open { fd, .. } | FdOp::Close { fd } | FdOp::Seek { fd, .. } | FdOp::SetFlags { fd, .. } => Some(*fd),
        FdOp::Renumber { .. } => None,
    }
}

fn c(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// The preopen `root` itself (the user's choice, links and all).
fn open_top(roots: &[Root], root: u32) -> io::Result<OwnedFd> {
    let r = &roots[root as usize];
    let host = c(r.host.to_str().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?)?;
    // SAFETY: `host` is NUL-terminated; the descriptor returned is owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(cvt(libc::open(host.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC))?) })
}

/// An entry's directory, opened beneath its preopen with no link followed, and its name there.
#[derive(Debug)]
struct At {
    dir: OwnedFd,
    name: CString,
}

impl At {
    fn open(roots: &[Root], root: u32, path: &str) -> io::Result<At> {
        let mut dir = open_top(roots, root)?;
        let mut parts: Vec<&str> = path.split('/').collect();
        let last = parts.pop().unwrap_or_default();
        for part in parts {
            let name = c(part)?;
            // SAFETY: `dir` is an open directory and `name` NUL-terminated.
            let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) })?;
            // SAFETY: `fd` was just opened and is owned by nobody else.
            dir = unsafe { OwnedFd::from_raw_fd(fd) };
        }
        Ok(At { dir, name: c(last)? })
    }

    /// The entry as a path through its open directory, for what std reads by path (only of an
    /// entry found not to be a link).
    fn through_proc(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{}", self.dir.as_raw_fd(), self.name.to_string_lossy()))
    }

    /// The entry's own status (a last link not followed); `None` if there is no entry.
    fn stat(&self) -> io::Result<Option<libc::stat>> {
        // SAFETY: `st` is written by fstatat before it is read; the pointers are valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        match cvt(unsafe { libc::fstatat(self.dir.as_raw_fd(), self.name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) }) {
            Ok(_) => Ok(Some(st)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the entry, which must be a file (a link is refused, not followed).
    fn file(&self, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
        // SAFETY: valid directory and NUL-terminated name.
        let fd = cvt(unsafe { libc::openat(self.dir.as_raw_fd(), self.name.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC, libc::c_uint::from(mode)) })?;
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn remove(&self, dir: bool) -> io::Result<()> {
        // SAFETY: valid directory and NUL-terminated name.
        cvt(unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.name.as_ptr(), if dir { libc::AT_REMOVEDIR } else { 0 }) }).map(drop)
    }

    fn rename_to(&self, to: &At) -> io::Result<()> {
        // SAFETY: valid directories and NUL-terminated names.
        cvt(unsafe { libc::renameat(self.dir.as_raw_fd(), self.name.as_ptr(), to.dir.as_raw_fd(), to.name.as_ptr()) }).map(drop)
    }

    /// A name beside this entry that nothing uses, for keeping what a change removes.
    fn hidden(&self) -> io::Result<At> {
        loop {
            let n = NEXT_HIDDEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = c(&format!("{HIDDEN_PREFIX}{:016x}{n}", unguessable()))?;
            let dir = self.dir.try_clone()?;
            let at = At { dir, name };
            if at.stat()?.is_none() {
                return Ok(at);
            }
        }
    }

    fn set_times(&self, atim: libc::timespec, mtim: libc::timespec) -> io::Result<()> {
        let times = [atim, mtim];
        // SAFETY: valid directory, NUL-terminated name and two timespecs.
        cvt(unsafe { libc::utimensat(self.dir.as_raw_fd(), self.name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
    }
}

fn size_and_times(f: &File) -> io::Result<(u64, [libc::timespec; 2])> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    let t = |s: i64, ns: i64| libc::timespec { tv_sec: s as libc::time_t, tv_nsec: ns as libc::c_long };
    Ok((m.len(), [t(m.atime(), m.atime_nsec()), t(m.mtime(), m.mtime_nsec())]))
}

fn futimens(f: &File, times: [libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: an open file and two timespecs.
    cvt(unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) }).map(drop)
}

fn times_of(st: &libc::stat) -> (libc::timespec, libc::timespec) {
    (libc::timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec }, libc::timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec })
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn spec(t: Option<u64>) -> libc::timespec {
    match t {
        Some(ns) => libc::timespec { tv_sec: (ns / 1_000_000_000) as libc::time_t, tv_nsec: (ns % 1_000_000_000) as libc::c_long },
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
    }
}

/// How the names of what a merge keeps aside begin.
const HIDDEN_PREFIX: &str = ".clonecloud-undo-";

/// 64 bits nobody can guess ahead (std's hash seeds come from the OS's randomness).
fn unguessable() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// Numbers the hidden names a merge keeps things under.
static NEXT_HIDDEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Tails longer than this that a truncation cuts are kept in a file in the stash, not in memory.
const TAIL_IN_MEMORY: u64 = 64 << 20;

/// Undo data a merge holds in memory at most; past it, tails go to the stash too.
const UNDO_IN_MEMORY: u64 = 256 << 20;

/// Carries out `ops` in order on the directories of `roots` (the preopens, by position), the
/// descriptor changes through `descriptors` (the device's WASI, which answers with the change
/// that undoes each, when there is one). Checks every path before the first change; if a change
/// fails, undoes the ones before it and returns the error. Closes and renumberings, which
/// cannot be undone, are held back as long as the order allows: to the commit, or to the next
/// descriptor change that depends on them; a journal that fails before then leaves them
/// undone, so the device's descriptors are as they were.
pub fn apply<'r>(
    roots: &'r [Root],
    ops: &[FileOp],
    descriptors: &mut dyn FnMut(&FdOp) -> Result<Option<FdOp>, DescriptorError>,
) -> Result<Applied<'r>, ApplyError> {
    for op in ops {
        for (root, path) in paths(op) {
            check_path(roots, root, path)?;
        }
        if let FileOp::Symlink { target, path, .. } = op
            && !stays_inside(path, target)
        {
            return Err(ApplyError::BadPath(format!("{path} -> {target}")));
        }
    }
    let mut applied = Applied { roots, undo: Vec::new(), stashes: Vec::new(), saved_from: HashMap::new(), in_memory: 0, held: Vec::new() };
    for op in ops {
        if let Err(e) = applied.one(op, descriptors) {
            let failed = applied.rollback(descriptors) + applied.remove_stashes();
            return Err(if failed == 0 { e } else { ApplyError::Partial { first: Box::new(e), failed } });
        }
    }
    Ok(applied)
}

impl Applied<'_> {
    /// The journal stays: the closes and renumberings held back are carried out (through
    /// `descriptors`), and what was kept to undo the rest is removed. A held change that fails
    /// (the journal was checked against the device's table first, see
    /// [`crate::Descriptors::check_journal`], so only the device's system can make one fail) is
    /// returned after the rest is done.
    pub fn commit(mut self, descriptors: &mut dyn FnMut(&FdOp) -> Result<Option<FdOp>, DescriptorError>) -> Result<(), ApplyError> {
        let mut first = None;
        for op in std::mem::take(&mut self.held) {
            if let Err(why) = descriptors(&op) {
                warn!(?op, "a descriptor change held to the commit failed: {why}");
                first.get_or_insert(ApplyError::Descriptor { op, why });
            }
        }
        for u in std::mem::take(&mut self.undo) {
            let (path, kept, dir) = match u {
                Undo::Restore { path, kept, dir, .. } => (path, kept, dir),
                Undo::Tail { path, kept, .. } => (path, kept, false),
                _ => continue,
            };
            {
                // An entry kept aside: a file, or a directory that was empty.
                if let Err(e) = kept.remove(dir) {
                    warn!(%path, "cannot remove what the merge kept of it: {e}");
                }
            }
        }
        self.remove_stashes();
        first.map_or(Ok(()), Err)
    }

    /// Removes the stashes (empty by now); returns how many could not be.
    fn remove_stashes(&mut self) -> usize {
        let mut failed = 0;
        for s in std::mem::take(&mut self.stashes) {
            // SAFETY: valid directory and NUL-terminated name.
            if let Err(e) = cvt(unsafe { libc::unlinkat(s.top.as_raw_fd(), s.name.as_ptr(), libc::AT_REMOVEDIR) }) {
                warn!(root = s.root, "cannot remove the merge's hidden directory: {e}");
                failed += 1;
            }
        }
        failed
    }

    /// The stash of preopen `root`, made on first use.
    fn stash(&mut self, root: u32) -> io::Result<&Stash> {
        if let Some(i) = self.stashes.iter().position(|s| s.root == root) {
            return Ok(&self.stashes[i]);
        }
        let top = open_top(self.roots, root)?;
        loop {
            let n = NEXT_HIDDEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = c(&format!("{HIDDEN_PREFIX}{:016x}{n}", unguessable()))?;
            // SAFETY: valid directory and NUL-terminated name.
            match cvt(unsafe { libc::mkdirat(top.as_raw_fd(), name.as_ptr(), 0o700) }) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
            // SAFETY: valid directory and NUL-terminated name; the descriptor is owned below.
            let fd = cvt(unsafe { libc::openat(top.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) })?;
            // SAFETY: `fd` was just opened and is owned by nobody else.
            let dir = unsafe { OwnedFd::from_raw_fd(fd) };
            self.stashes.push(Stash { root, top, name, dir });
            return Ok(self.stashes.last().expect("just pushed"));
        }
    }

    /// A fresh name in the stash of `root` (beside `at` if there is no stash).
    fn hidden(&mut self, root: u32, at: &At) -> io::Result<At> {
        match self.stash(root) {
            Ok(s) => {
                let n = NEXT_HIDDEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(At { dir: s.dir.try_clone()?, name: c(&n.to_string())? })
            }
            Err(_) => at.hidden(),
        }
    }

    /// Moves `at` aside, into the stash of `root` (or beside it when the stash is on another
    /// file system, as a mount inside the preopen is), and returns where it went.
    fn keep_aside(&mut self, root: u32, at: &At) -> io::Result<At> {
        let kept = self.hidden(root, at)?;
        match at.rename_to(&kept) {
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let beside = at.hidden()?;
                at.rename_to(&beside)?;
                Ok(beside)
            }
            r => r.map(|()| kept),
        }
    }

    /// Undoes the journal (what comes after the files failed). Returns how many steps could not
    /// be undone (each is logged).
    pub fn undo(mut self, descriptors: &mut dyn FnMut(&FdOp) -> Result<Option<FdOp>, DescriptorError>) -> usize {
        self.rollback(descriptors) + self.remove_stashes()
    }

    fn rollback(&mut self, descriptors: &mut dyn FnMut(&FdOp) -> Result<Option<FdOp>, DescriptorError>) -> usize {
        let mut failed = 0;
        while let Some(u) = self.undo.pop() {
            let what = format!("{u:?}");
            let r: Result<(), DescriptorError> = (|| {
                match u {
                    Undo::Remove { root, path, dir } => At::open(self.roots, root, &path)?.remove(dir)?,
                    Undo::Restore { root, path, kept, dir: _ } => kept.rename_to(&At::open(self.roots, root, &path)?)?,
                    Undo::MoveBack { root, from, to_root, to } => {
                        At::open(self.roots, to_root, &to)?.rename_to(&At::open(self.roots, root, &from)?)?;
                    }
                    Undo::Bytes { root, path, offset, old, len, times } => {
                        let f = At::open(self.roots, root, &path)?.file(libc::O_WRONLY, 0)?;
                        f.set_len(len)?;
                        f.write_all_at(&old, offset)?;
                        futimens(&f, times)?;
                    }
                    Undo::Tail { root, path, kept, at, len, times } => {
                        let f = At::open(self.roots, root, &path)?.file(libc::O_WRONLY, 0)?;
                        f.set_len(len)?;
                        let mut src = kept.file(libc::O_RDONLY, 0)?;
                        let mut dst = f;
                        std::io::Seek::seek(&mut dst, std::io::SeekFrom::Start(at))?;
                        std::io::copy(&mut src, &mut dst)?;
                        futimens(&dst, times)?;
                        kept.remove(false)?;
                    }
                    Undo::Rmdir { root, path, mode, atim, mtim } => {
                        let at = At::open(self.roots, root, &path)?;
                        // SAFETY: valid directory and NUL-terminated name.
                        cvt(unsafe { libc::mkdirat(at.dir.as_raw_fd(), at.name.as_ptr(), 0o700) })?;
                        // The mode exactly, which the umask would have cut.
                        // SAFETY: valid directory and NUL-terminated name.
                        cvt(unsafe { libc::fchmodat(at.dir.as_raw_fd(), at.name.as_ptr(), mode & 0o7777, 0) })?;
                        at.set_times(atim, mtim)?;
                    }
                    Undo::Times { root, path, atim, mtim } => At::open(self.roots, root, &path)?.set_times(atim, mtim)?,
                    Undo::Fd(op) => drop(descriptors(&op)?),
                }
                Ok(())
            })();
            if let Err(e) = r {
                warn!("cannot undo a file change of a failed merge ({what}): {e}");
                failed += 1;
            }
        }
        failed
    }

    /// Carries out one change and records what undoes it.
    fn one(&mut self, op: &FileOp, descriptors: &mut dyn FnMut(&FdOp) -> Result<Option<FdOp>, DescriptorError>) -> Result<(), ApplyError> {
        let roots = self.roots;
        let io = |op: &'static str, root: u32, path: &str| {
            let path = roots[root as usize].host.join(path);
            move |source| ApplyError::Io { op, path, source }
        };
        match op {
            FileOp::Create { root, path } => {
                let at = At::open(roots, *root, path).map_err(io("reach", *root, path))?;
                let existed = at.stat().map_err(io("look at", *root, path))?.is_some();
                // Not blocking on a FIFO a journal names (it fails instead, and is undone).
                at.file(libc::O_WRONLY | libc::O_CREAT | libc::O_NONBLOCK, 0o666).map_err(io("create", *root, path))?;
                if !existed {
                    self.undo.push(Undo::Remove { root: *root, path: path.clone(), dir: false });
                }
            }
            FileOp::Write { root, path, offset, data } => {
                let f = At::open(roots, *root, path).and_then(|at| at.file(libc::O_RDWR, 0)).map_err(io("open", *root, path))?;
                let (len, times) = size_and_times(&f).map_err(io("look at", *root, path))?;
                let covered = len.saturating_sub(*offset).min(data.len() as u64) as usize;
                let mut old = vec![0; covered];
                f.read_exact_at(&mut old, *offset).map_err(io("read", *root, path))?;
                self.undo.push(Undo::Bytes { root: *root, path: path.clone(), offset: *offset, old, len, times });
                f.write_all_at(data, *offset).map_err(io("write", *root, path))?;
            }
            FileOp::SetSize { root, path, size } => {
                let at = At::open(roots, *root, path).map_err(io("reach", *root, path))?;
                let f = at.file(libc::O_RDWR, 0).map_err(io("open", *root, path))?;
                let (len, times) = size_and_times(&f).map_err(io("look at", *root, path))?;
                let id = { use std::os::unix::fs::MetadataExt; f.metadata().map(|m| (m.dev(), m.ino())).map_err(io("look at", *root, path))? };
                let saved_from = *self.saved_from.entry(id).or_insert(len);
                // Bytes at or past `saved_from` are put back by an earlier step's undo.
                let keep_to = len.min(saved_from);
                let tail = keep_to.saturating_sub(*size);
                if tail > TAIL_IN_MEMORY || self.in_memory + tail > UNDO_IN_MEMORY {
                    // A long tail is kept in a file in the stash, put back over the same file
                    // (same inode: hard links and open descriptors still see it).
                    let hidden = self.hidden(*root, &at).map_err(io("keep", *root, path))?;
                    let mut copy = hidden.file(libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600).map_err(io("keep", *root, path))?;
                    self.undo.push(Undo::Tail { root: *root, path: path.clone(), kept: hidden, at: *size, len, times });
                    let mut src = at.file(libc::O_RDONLY, 0).map_err(io("open", *root, path))?;
                    std::io::Seek::seek(&mut src, std::io::SeekFrom::Start(*size)).map_err(io("read", *root, path))?;
                    std::io::copy(&mut std::io::Read::take(src, tail), &mut copy).map_err(io("keep", *root, path))?;
                } else {
                    let mut old = vec![0; tail as usize];
                    f.read_exact_at(&mut old, *size).map_err(io("read", *root, path))?;
                    self.in_memory += tail;
                    self.undo.push(Undo::Bytes { root: *root, path: path.clone(), offset: *size, old, len, times });
                }
                if *size < saved_from {
                    self.saved_from.insert(id, *size);
                }
                f.set_len(*size).map_err(io("resize", *root, path))?;
            }
            FileOp::Mkdir { root, path } => {
                let at = At::open(roots, *root, path).map_err(io("reach", *root, path))?;
                // SAFETY: valid directory and NUL-terminated name.
                cvt(unsafe { libc::mkdirat(at.dir.as_raw_fd(), at.name.as_ptr(), 0o777) }).map_err(io("create directory", *root, path))?;
                self.undo.push(Undo::Remove { root: *root, path: path.clone(), dir: true });
            }
            FileOp::Unlink { root, path } => {
                let at = At::open(roots, *root, path).map_err(io("reach", *root, path))?;
                match at.stat().map_err(io("look at", *root, path))? {
                    None => return Err(io("remove", *root, path)(io::Error::from(io::ErrorKind::NotFound))),
                    Some(st) if is_dir(&st) => return Err(io("remove", *root, path)(io::Error::from_raw_os_error(libc::EISDIR))),
                    Some(_) => {}
                }
                let hidden = self.keep_aside(*root, &at).map_err(io("remove", *root, path))?;
                self.undo.push(Undo::Restore { root: *root, path: path.clone(), kept: hidden, dir: false });
            }
            FileOp::Rmdir { root, path } => {
                let at = At::open(roots, *root, path).map_err(io("reach", *root, path))?;
                let st = at.stat().map_err(io("look at", *root, path))?.ok_or_else(|| io("remove directory", *root, path)(io::Error::from(io::ErrorKind::NotFound)))?;
                at.remove(true).map_err(io("remove directory", *root, path))?;
                let (atim, mtim) = times_of(&st);
                self.undo.push(Undo::Rmdir { root: *root, path: path.clone(), mode: st.st_mode, atim, mtim });
            }
            FileOp::Rename { root, from, to_root, to } => {
                let a = At::open(roots, *root, from).map_err(io("reach", *root, from))?;
                let b = At::open(roots, *to_root, to).map_err(io("reach", *to_root, to))?;
                let sa = a.stat().map_err(io("look at", *root, from))?.ok_or_else(|| io("rename", *root, from)(io::Error::from(io::ErrorKind::NotFound)))?;
                links_land_inside(&a, &sa, to)?;
                if let Some(sb) = b.stat().map_err(io("look at", *to_root, to))? {
                    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino) {
                        // Two names of one file: rename(2) does nothing.
                        return Ok(());
                    }
                    // The entry the rename replaces is kept aside; a non-empty directory is
                    // refused as rename(2) would.
                    if is_dir(&sb) {
                        if !is_dir(&sa) {
                            return Err(io("rename", *root, from)(io::Error::from_raw_os_error(libc::EISDIR)));
                        }
                        let mut rd = std::fs::read_dir(b.through_proc()).map_err(io("look at", *to_root, to))?;
                        if rd.next().is_some() {
                            return Err(io("rename", *root, from)(io::Error::from_raw_os_error(libc::ENOTEMPTY)));
                        }
                    } else if is_dir(&sa) {
                        return Err(io("rename", *root, from)(io::Error::from_raw_os_error(libc::ENOTDIR)));
                    }
                    let hidden = self.keep_aside(*to_root, &b).map_err(io("rename", *to_root, to))?;
                    self.undo.push(Undo::Restore { root: *to_root, path: to.clone(), kept: hidden, dir: is_dir(&sb) });
                }
                a.rename_to(&b).map_err(io("rename", *root, from))?;
                self.undo.push(Undo::MoveBack { root: *root, from: from.clone(), to_root: *to_root, to: to.clone() });
            }
            FileOp::Link { root, from, to_root, to } => {
                let a = At::open(roots, *root, from).map_err(io("reach", *root, from))?;
                let b = At::open(roots, *to_root, to).map_err(io("reach", *to_root, to))?;
                if let Some(sa) = a.stat().map_err(io("look at", *root, from))? {
                    links_land_inside(&a, &sa, to)?;
                }
                // Flags 0: a last link is linked itself, not followed.
                // SAFETY: valid directories and NUL-terminated names.
                cvt(unsafe { libc::linkat(a.dir.as_raw_fd(), a.name.as_ptr(), b.dir.as_raw_fd(), b.name.as_ptr(), 0) }).map_err(io("link", *root, from))?;
                self.undo.push(Undo::Remove { root: *to_root, path: to.clone(), dir: false });
            }
            FileOp::Symlink { root, target, path } => {
                let at = At::open(roots, *root, path).map_err(io("reach", *root, path))?;
                let t = c(target).map_err(io("make a link at", *root, path))?;
                // SAFETY: valid directory and NUL-terminated strings.
                cvt(unsafe { libc::symlinkat(t.as_ptr(), at.dir.as_raw_fd(), at.name.as_ptr()) }).map_err(io("make a link at", *root, path))?;
                self.undo.push(Undo::Remove { root: *root, path: path.clone(), dir: false });
            }
            FileOp::SetTimes { root, path, atim, mtim } => {
                // The entry itself: the clone names a link's own path when it set a link's times.
                let at = At::open(roots, *root, path).map_err(io("reach", *root, path))?;
                let st = at.stat().map_err(io("look at", *root, path))?.ok_or_else(|| io("set the times of", *root, path)(io::Error::from(io::ErrorKind::NotFound)))?;
                at.set_times(spec(*atim), spec(*mtim)).map_err(io("set the times of", *root, path))?;
                let (atim, mtim) = times_of(&st);
                self.undo.push(Undo::Times { root: *root, path: path.clone(), atim, mtim });
            }
            FileOp::Fd(op) => {
                let depends = match op {
                    FdOp::Close { .. } | FdOp::Renumber { .. } => {
                        self.held.push(op.clone());
                        return Ok(());
                    }
                    FdOp::Open { .. } => !self.held.is_empty(),
                    FdOp::Seek { fd, .. } | FdOp::SetFlags { fd, .. } => self.held.iter().any(|h| names(h).contains(fd)),
                };
                if depends {
                    for held in std::mem::take(&mut self.held) {
                        self.replay(&held, descriptors)?;
                    }
                }
                self.replay(op, descriptors)?;
            }
        }
        Ok(())
    }

    /// Replays one descriptor change through the device and records what undoes it.
    fn replay(&mut self, op: &FdOp, descriptors: &mut dyn FnMut(&FdOp) -> Result<Option<FdOp>, DescriptorError>) -> Result<(), ApplyError> {
        match descriptors(op).map_err(|why| ApplyError::Descriptor { op: op.clone(), why })? {
            Some(inverse) => self.undo.push(Undo::Fd(inverse)),
            // Nothing undoes it (a close, a renumbering): what came before on the descriptors
            // it touched cannot be undone either (their open, seeks and flags went with them),
            // the rest stays undoable.
            None => self.undo.retain(|u| !matches!(u, Undo::Fd(inv) if fd_of(inv).is_some_and(|fd| names(op).contains(&fd)))),
        }
        Ok(())
    }
}

/// The descriptors a close or a renumbering names.
fn names(op: &FdOp) -> Vec<u32> {
    match op {
        FdOp::Close { fd } => vec![*fd],
        FdOp::Renumber { from, to } => vec![*from, *to],
        _ => vec![],
    }
}
