//! The device's side of the journal: a migrated function's file changes, carried out on the
//! real preopened directories at the commit.

use crate::scan::Root;
use clonecloud_wire::{FdOp, FileOp};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

/// A journal entry that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the journal names preopen {0}, which this run does not have")]
    NoRoot(u32),
    #[error("the journal names `{0}`, which is not a plain relative path")]
    BadPath(String),
    #[error("cannot {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot replay the descriptor change {op:?}: {why}")]
    Descriptor { op: FdOp, why: Box<dyn std::error::Error + Send + Sync> },
}

fn resolve(roots: &[Root], root: u32, path: &str) -> Result<PathBuf, ApplyError> {
    let r = roots.get(root as usize).ok_or(ApplyError::NoRoot(root))?;
    // The codec refuses such paths already; a journal is checked here again because it is about
    // to touch the device's files.
    if path.is_empty() || path.split('/').any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0')) {
        return Err(ApplyError::BadPath(path.to_string()));
    }
    Ok(r.host.join(path))
}

/// Sets `path`'s times (nanoseconds since the epoch; `None` leaves one as it is) without
/// following a last symbolic link, as `utimensat(AT_SYMLINK_NOFOLLOW)` does (std has no such
/// call).
fn set_times_nofollow(path: &std::path::Path, atim: Option<u64>, mtim: Option<u64>) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let spec = |t: Option<u64>| match t {
        Some(ns) => libc::timespec { tv_sec: (ns / 1_000_000_000) as libc::time_t, tv_nsec: (ns % 1_000_000_000) as libc::c_long },
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
    };
    let times = [spec(atim), spec(mtim)];
    // SAFETY: `c` is a NUL-terminated path and `times` two valid timespecs, both alive for the call.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Whether a link at `path` (relative to its preopen) to `target` leads, read from the link's
/// directory, to a place inside the preopen: a clone may not plant a way out.
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

/// Carries out `ops` in order on the directories of `roots` (the preopens, by position), the
/// descriptor changes through `descriptors` (the device's WASI). Checks every path before the
/// first change.
pub fn apply(
    roots: &[Root],
    ops: &[FileOp],
    descriptors: &mut dyn FnMut(&FdOp) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
) -> Result<(), ApplyError> {
    for op in ops {
        for (root, path) in paths(op) {
            resolve(roots, root, path)?;
        }
        if let FileOp::Symlink { target, path, .. } = op
            && !stays_inside(path, target)
        {
            return Err(ApplyError::BadPath(format!("{path} -> {target}")));
        }
    }
    for op in ops {
        let io = |op: &'static str, path: &PathBuf| {
            let path = path.clone();
            move |source| ApplyError::Io { op, path, source }
        };
        match op {
            FileOp::Create { root, path } => {
                let p = resolve(roots, *root, path)?;
                std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&p).map_err(io("create", &p))?;
            }
            FileOp::Write { root, path, offset, data } => {
                let p = resolve(roots, *root, path)?;
                let mut f = std::fs::OpenOptions::new().write(true).open(&p).map_err(io("open", &p))?;
                f.seek(SeekFrom::Start(*offset)).map_err(io("seek in", &p))?;
                f.write_all(data).map_err(io("write", &p))?;
            }
            FileOp::SetSize { root, path, size } => {
                let p = resolve(roots, *root, path)?;
                let f = std::fs::OpenOptions::new().write(true).open(&p).map_err(io("open", &p))?;
                f.set_len(*size).map_err(io("resize", &p))?;
            }
            FileOp::Mkdir { root, path } => {
                let p = resolve(roots, *root, path)?;
                std::fs::create_dir(&p).map_err(io("create directory", &p))?;
            }
            FileOp::Unlink { root, path } => {
                let p = resolve(roots, *root, path)?;
                std::fs::remove_file(&p).map_err(io("remove", &p))?;
            }
            FileOp::Rmdir { root, path } => {
                let p = resolve(roots, *root, path)?;
                std::fs::remove_dir(&p).map_err(io("remove directory", &p))?;
            }
            FileOp::Rename { root, from, to_root, to } => {
                let (a, b) = (resolve(roots, *root, from)?, resolve(roots, *to_root, to)?);
                std::fs::rename(&a, &b).map_err(io("rename", &a))?;
            }
            FileOp::Link { root, from, to_root, to } => {
                let (a, b) = (resolve(roots, *root, from)?, resolve(roots, *to_root, to)?);
                std::fs::hard_link(&a, &b).map_err(io("link", &a))?;
            }
            FileOp::Symlink { root, target, path } => {
                let p = resolve(roots, *root, path)?;
                std::os::unix::fs::symlink(target, &p).map_err(io("make a link at", &p))?;
            }
            FileOp::SetTimes { root, path, atim, mtim } => {
                // The entry itself: the clone names a link's own path when it set a link's times.
                let p = resolve(roots, *root, path)?;
                set_times_nofollow(&p, *atim, *mtim).map_err(io("set the times of", &p))?;
            }
            FileOp::Fd(op) => descriptors(op).map_err(|why| ApplyError::Descriptor { op: op.clone(), why })?,
        }
    }
    Ok(())
}
