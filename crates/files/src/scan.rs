//! The device's side of the replicator: the preopened directories as [`Tree`]s.

use crate::content_hash;
use crate::model::{Entry, EntryKind, FileStat, ContentHash, Tree};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A directory the guest sees: where it is here and the path the guest opens it by.
#[derive(Debug, Clone)]
pub struct Root {
    pub host: PathBuf,
    pub guest: String,
}

/// Why the directories could not be scanned (the clone then serves no files).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the preopened directories hold more than {limit} {what}; the clone will not replicate them")]
    TooLarge { what: &'static str, limit: u64 },
}

/// The most the replicator copies to a clone: beyond it offloaded functions that touch files run
/// on the device.
const MAX_ENTRIES: u64 = 200_000;
const MAX_BYTES: u64 = 4 << 30;
/// A file modified this recently may change again within the file system's timestamp
/// granularity without its size or times changing: it is hashed again on the next scan (as git
/// treats "racily clean" entries).
const RACY: Duration = Duration::from_secs(2);

/// What a file looked like when it was last hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

/// Scans the preopened directories, remembering hashes between scans.
#[derive(Debug)]
pub struct Scanner {
    roots: Vec<Root>,
    hashes: HashMap<PathBuf, (Seen, ContentHash)>,
    /// Where each content was last seen, for sending it.
    paths: HashMap<ContentHash, PathBuf>,
    last: Option<Vec<Tree>>,
}

/// The inode number WASI reports: wasmtime-wasi hashes `(dev, ino)` with std's default hasher.
fn wasi_ino(m: &std::fs::Metadata) -> u64 {
    use std::hash::{Hash, Hasher};
    #[allow(deprecated)]
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (m.dev(), m.ino()).hash(&mut h);
    h.finish()
}

fn nanos(secs: i64, nsec: i64) -> u64 {
    (secs.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(nsec.max(0) as u64)
}

fn stat_of(m: &std::fs::Metadata) -> FileStat {
    FileStat {
        ino: wasi_ino(m),
        nlink: m.nlink(),
        size: m.len(),
        atim: nanos(m.atime(), m.atime_nsec()),
        mtim: nanos(m.mtime(), m.mtime_nsec()),
        ctim: nanos(m.ctime(), m.ctime_nsec()),
    }
}

/// The WASI filetype of something that is neither a file nor a directory.
fn other_type(t: std::fs::FileType) -> u8 {
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() {
        7
    } else if t.is_block_device() {
        1
    } else if t.is_char_device() {
        2
    } else if t.is_socket() {
        6
    } else {
        0
    }
}

impl Scanner {
    pub fn new(roots: Vec<Root>) -> Scanner {
        Scanner { roots, hashes: HashMap::new(), paths: HashMap::new(), last: None }
    }

    /// Whether there is anything to replicate.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Scans every root. Returns the trees when they differ from the last scan's, `None` when
    /// nothing changed.
    pub fn scan(&mut self) -> Result<Option<Vec<Tree>>, ScanError> {
        let now = SystemTime::now();
        let mut trees = Vec::with_capacity(self.roots.len());
        let (mut entries, mut bytes) = (0u64, 0u64);
        for root in self.roots.clone() {
            let mut tree = Tree { guest: root.guest.clone(), entries: Vec::new() };
            let meta = std::fs::metadata(&root.host).map_err(|source| ScanError::Io { path: root.host.clone(), source })?;
            tree.entries.push(Entry { path: String::new(), kind: EntryKind::Dir, stat: stat_of(&meta) });
            // Depth first, each directory's children in the order the directory lists them.
            let mut stack = vec![(root.host.clone(), String::new())];
            while let Some((dir, rel)) = stack.pop() {
                let io = |source| ScanError::Io { path: dir.clone(), source };
                let mut subdirs = Vec::new();
                for item in std::fs::read_dir(&dir).map_err(io)? {
                    let item = item.map_err(io)?;
                    let Some(name) = item.file_name().to_str().map(str::to_string) else {
                        // WASI names are UTF-8; such an entry cannot be served the same way.
                        continue;
                    };
                    let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
                    let host = item.path();
                    let meta = std::fs::symlink_metadata(&host).map_err(|source| ScanError::Io { path: host.clone(), source })?;
                    entries += 1;
                    if entries > MAX_ENTRIES {
                        return Err(ScanError::TooLarge { what: "entries", limit: MAX_ENTRIES });
                    }
                    let kind = if meta.is_dir() {
                        subdirs.push((host.clone(), path.clone()));
                        EntryKind::Dir
                    } else if meta.is_file() {
                        bytes += meta.len();
                        if bytes > MAX_BYTES {
                            return Err(ScanError::TooLarge { what: "bytes", limit: MAX_BYTES });
                        }
                        EntryKind::File(self.hash(&host, &meta, now)?)
                    } else if let Some(target) = meta.is_symlink().then(|| std::fs::read_link(&host).ok()).flatten().and_then(|t| t.to_str().map(str::to_string)) {
                        EntryKind::Symlink(target)
                    } else {
                        EntryKind::Other(other_type(meta.file_type()))
                    };
                    tree.entries.push(Entry { path, kind, stat: stat_of(&meta) });
                }
                // Visit subdirectories in listing order.
                stack.extend(subdirs.into_iter().rev());
            }
            trees.push(tree);
        }
        if self.last.as_ref() == Some(&trees) {
            return Ok(None);
        }
        self.last = Some(trees.clone());
        Ok(Some(trees))
    }

    fn hash(&mut self, path: &Path, meta: &std::fs::Metadata, now: SystemTime) -> Result<ContentHash, ScanError> {
        let seen = Seen { size: meta.len(), mtime: (meta.mtime(), meta.mtime_nsec()), ctime: (meta.ctime(), meta.ctime_nsec()), ino: meta.ino() };
        let racy = meta.modified().map_or(true, |m| now.duration_since(m).map_or(true, |age| age < RACY));
        if let Some((s, h)) = self.hashes.get(path)
            && *s == seen
            && !racy
        {
            return Ok(*h);
        }
        let bytes = std::fs::read(path).map_err(|source| ScanError::Io { path: path.to_path_buf(), source })?;
        let h = content_hash(&bytes);
        self.hashes.insert(path.to_path_buf(), (seen, h));
        self.paths.insert(h, path.to_path_buf());
        Ok(h)
    }

    /// The content with hash `h`, read again and checked (it may have changed since the scan).
    pub fn content(&self, h: &ContentHash) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.paths.get(h)?).ok()?;
        (content_hash(&bytes) == *h).then_some(bytes)
    }

    /// The size of the file the content with hash `h` was found in, as it is now (for
    /// estimates; [`Scanner::content`] checks the content itself).
    pub fn content_len(&self, h: &ContentHash) -> Option<u64> {
        std::fs::metadata(self.paths.get(h)?).ok().map(|m| m.len())
    }

    /// Forgets the last scan, so the next one is sent again (a new session).
    pub fn forget_sent(&mut self) {
        self.last = None;
    }
}
