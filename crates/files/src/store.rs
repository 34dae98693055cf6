//! The clone's side of the replicator: file contents by hash, on disk, per device.
//!
//! A device's store is a directory of its own, sealed with a key of its own (derived by the
//! server from its identity and the device's key): each file is encrypted and authenticated with
//! AES-256-GCM, the content hash as associated data, and named by a keyed hash of the content
//! hash, so neither the contents nor which well-known files a device has can be read off the
//! disk. The store holds at most its quota of bytes on disk, dropping the least recently used
//! contents to make room (a later run has them sent again); nothing is kept in memory.

use crate::content_hash;
use crate::model::ContentHash;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What sealing adds to each file on disk: the nonce before it and the tag after it.
const SEAL_OVERHEAD: u64 = (NONCE_LEN + 16) as u64;

/// What a file costs against the quota besides its sealed bytes: a disk block at least (tiny
/// files take a block and an inode each) and its place in the index.
const MIN_FILE: u64 = 4096;
const INDEX_ENTRY: u64 = 256;

/// What a content of `len` bytes costs against a store's quota.
pub fn cost(len: u64) -> u64 {
    len.saturating_add(SEAL_OVERHEAD).max(MIN_FILE).saturating_add(INDEX_ENTRY)
}

/// The secret one device's store is sealed with (32 bytes from a key derivation).
pub type StoreKey = [u8; 32];

/// File contents kept for one device, named by a keyed hash of their content hash, encrypted,
/// within a quota of bytes on disk.
pub struct Store {
    dir: PathBuf,
    seal: LessSafeKey,
    names: ring::hmac::Key,
    random: SystemRandom,
    limit: u64,
    index: Mutex<Index>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).field("limit", &self.limit).finish_non_exhaustive()
    }
}

/// What is on disk: each file's size and when it was last used, and the files by last use.
#[derive(Default)]
struct Index {
    used: u64,
    /// Bytes of puts being written now (counted before they are written, so puts at once
    /// cannot together pass the quota).
    reserved: u64,
    clock: u64,
    files: HashMap<String, (u64, u64)>,
    by_use: BTreeMap<u64, String>,
}

impl Index {
    fn touch(&mut self, name: &str) {
        if let Some((_, at)) = self.files.get_mut(name) {
            self.by_use.remove(at);
            self.clock += 1;
            *at = self.clock;
            self.by_use.insert(self.clock, name.to_string());
        }
    }

    fn insert(&mut self, name: String, size: u64) {
        self.remove(&name);
        self.clock += 1;
        self.used += size;
        self.by_use.insert(self.clock, name.clone());
        self.files.insert(name, (size, self.clock));
    }

    fn remove(&mut self, name: &str) {
        if let Some((size, at)) = self.files.remove(name) {
            self.by_use.remove(&at);
            self.used -= size;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

impl Store {
    /// The store in `dir` (created when missing, 0700), sealed with `key`, holding at most
    /// `limit` bytes on disk. Files from an earlier run under the same key are found again,
    /// the least recently used first to go; leftovers of an interrupted write are removed.
    pub fn open(dir: PathBuf, key: &StoreKey, limit: u64) -> std::io::Result<Store> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        }
        #[cfg(not(unix))]
        std::fs::create_dir_all(&dir)?;
        let derive = |label: &[u8]| ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), label);
        let seal = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, derive(b"clonecloud store contents").as_ref()).map_err(|_| invalid("bad store key"))?);
        let names = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derive(b"clonecloud store names").as_ref());
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata()?;
            if let Some(rest) = name.strip_prefix(".incoming-") {
                // Another process may be writing into the same store (two runs of one device
                // on one machine): only a write whose process is gone is a leftover.
                if abandoned(rest, &meta) {
                    let _ = std::fs::remove_file(entry.path());
                }
            } else if meta.is_file() && name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                found.push((meta.modified().ok(), name, cost(meta.len().saturating_sub(SEAL_OVERHEAD))));
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, name, size) in found {
            index.insert(name, size);
        }
        let store = Store { dir, seal, names, random: SystemRandom::new(), limit, index: Mutex::new(index) };
        store.make_room(0, None);
        Ok(store)
    }

    fn name(&self, h: &ContentHash) -> String {
        hex(ring::hmac::sign(&self.names, h).as_ref())
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the files here cost against the quota now (see [`cost`]).
    pub fn used(&self) -> u64 {
        self.index().used
    }

    /// The quota: the most the files here may cost (see [`cost`]).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether the content is here.
    pub fn has(&self, h: &ContentHash) -> bool {
        self.index().files.contains_key(&self.name(h))
    }

    /// Removes the least recently used files (never `keep`) until `more` bytes fit beside
    /// those being written.
    fn make_room(&self, more: u64, keep: Option<&str>) {
        let mut index = self.index();
        self.evict(&mut index, more, keep);
    }

    fn evict(&self, index: &mut Index, more: u64, keep: Option<&str>) {
        while index.used.saturating_add(index.reserved).saturating_add(more) > self.limit {
            let Some(name) = index.by_use.values().find(|n| Some(n.as_str()) != keep).cloned() else { break };
            let _ = std::fs::remove_file(self.dir.join(&name));
            index.remove(&name);
        }
    }

    /// Keeps `bytes`, which must hash to `h`, encrypted. Contents larger than the whole quota
    /// are refused (`StorageFull`); others push out the least recently used.
    pub fn put(&self, h: &ContentHash, bytes: &[u8]) -> std::io::Result<()> {
        if content_hash(bytes) != *h {
            return Err(invalid("the content does not match its hash"));
        }
        let name = self.name(h);
        if self.index().files.contains_key(&name) {
            self.used_now(&name);
            return Ok(());
        }
        let size = cost(bytes.len() as u64);
        if size > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("a file of {} bytes is over this device's store quota of {} bytes", bytes.len(), self.limit),
            ));
        }
        {
            let mut index = self.index();
            self.evict(&mut index, size, None);
            if index.used.saturating_add(index.reserved).saturating_add(size) > self.limit {
                return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "this device's store is full of files being written"));
            }
            index.reserved += size;
        }
        let written = self.write(h, &name, bytes);
        let mut index = self.index();
        index.reserved -= size;
        written?;
        index.insert(name, size);
        Ok(())
    }

    /// Seals `bytes` into the file `name`.
    fn write(&self, h: &ContentHash, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| std::io::Error::other("no randomness for a nonce"))?;
        let mut sealed = bytes.to_vec();
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(h), &mut sealed)
            .map_err(|_| std::io::Error::other("cannot encrypt a file"))?;
        // Written whole under a temporary name, then renamed; not synced to disk: a damaged file
        // fails its authentication when read and is fetched again.
        let (tmp, mut file) = tempfile_in(&self.dir)?;
        let written = file.write_all(&nonce).and_then(|()| file.write_all(&sealed)).and_then(|()| std::fs::rename(&tmp, self.dir.join(name)));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// The content with hash `h`, read from disk and checked: a file that fails its
    /// authentication or its hash is removed and reported as `InvalidData`.
    pub fn get(&self, h: &ContentHash) -> std::io::Result<Arc<[u8]>> {
        let name = self.name(h);
        let path = self.dir.join(&name);
        let mut sealed = std::fs::read(&path)?;
        // Opened in place: the plaintext is the same buffer, moved down over the nonce.
        let opened = (sealed.len() >= NONCE_LEN)
            .then(|| {
                let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
                let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
                let n = self.seal.open_in_place(nonce, Aad::from(h), rest).ok()?.len();
                sealed.copy_within(NONCE_LEN..NONCE_LEN + n, 0);
                sealed.truncate(n);
                (content_hash(&sealed) == *h).then_some(sealed)
            })
            .flatten();
        let Some(bytes) = opened else {
            let _ = std::fs::remove_file(&path);
            self.index().remove(&name);
            return Err(invalid("a stored file was damaged"));
        };
        self.used_now(&name);
        Ok(bytes.into())
    }

    /// Marks `name` used now: in the index, and on disk as its modification time (what `open`
    /// orders by), so after a restart the least recently used still go first.
    fn used_now(&self, name: &str) {
        self.index().touch(name);
        if let Ok(f) = std::fs::File::options().write(true).open(self.dir.join(name)) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }
}

/// Whether the temporary file `.incoming-{rest}` is left over from an interrupted write: its
/// writer (the process id in its name) is gone, or it is a day old (the id may be reused).
fn abandoned(rest: &str, meta: &std::fs::Metadata) -> bool {
    let stale = meta.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > std::time::Duration::from_secs(24 * 3600));
    let writer = rest.split('-').next().and_then(|pid| pid.parse::<i32>().ok()).filter(|&pid| pid > 0);
    stale || writer.is_none_or(|pid| !process_alive(pid))
}

#[cfg(unix)]
fn process_alive(pid: i32) -> bool {
    // Signal 0 checks that the process exists without touching it; EPERM means it exists too.
    // SAFETY: kill with signal 0 sends nothing.
    unsafe { libc::kill(pid, 0) == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) }
}

#[cfg(not(unix))]
fn process_alive(_pid: i32) -> bool {
    true
}

/// A new file in `dir` under a fresh name.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(".incoming-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}
