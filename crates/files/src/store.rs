//! The clone's side of the replicator: file contents by hash, on disk, per device.

use crate::content_hash;
use clonecloud_wire::Hash128;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// File contents kept for one device, named by their hash, in a directory of their own (a
/// device never learns what another device's files are). Contents read once stay in memory for
/// the store's life.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    loaded: Mutex<HashMap<Hash128, Arc<[u8]>>>,
}

fn hex(h: &Hash128) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// The store in `dir` (created when missing).
    pub fn open(dir: PathBuf) -> std::io::Result<Store> {
        std::fs::create_dir_all(&dir)?;
        Ok(Store { dir, loaded: Mutex::new(HashMap::new()) })
    }

    fn path(&self, h: &Hash128) -> PathBuf {
        self.dir.join(hex(h))
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<Hash128, Arc<[u8]>>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the content is here.
    pub fn has(&self, h: &Hash128) -> bool {
        self.loaded().contains_key(h) || self.path(h).is_file()
    }

    /// Keeps `bytes`, which must hash to `h`.
    pub fn put(&self, h: &Hash128, bytes: Vec<u8>) -> std::io::Result<()> {
        if content_hash(&bytes) != *h {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the content does not match its hash"));
        }
        if !self.path(h).is_file() {
            // Written whole under a temporary name, then renamed; not synced to disk: a damaged file
            // fails its hash when read and is fetched again.
            let mut tmp = tempfile_in(&self.dir)?;
            tmp.1.write_all(&bytes)?;
            std::fs::rename(&tmp.0, self.path(h))?;
        }
        self.loaded().insert(*h, bytes.into());
        Ok(())
    }

    /// The content with hash `h`, checked against it.
    pub fn get(&self, h: &Hash128) -> std::io::Result<Arc<[u8]>> {
        if let Some(b) = self.loaded().get(h) {
            return Ok(b.clone());
        }
        let bytes = std::fs::read(self.path(h))?;
        if content_hash(&bytes) != *h {
            let _ = std::fs::remove_file(self.path(h));
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a stored file was damaged"));
        }
        let bytes: Arc<[u8]> = bytes.into();
        self.loaded().insert(*h, bytes.clone());
        Ok(bytes)
    }
}

/// A new file in `dir` under a fresh name.
fn tempfile_in(dir: &std::path::Path) -> std::io::Result<(PathBuf, std::fs::File)> {
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
