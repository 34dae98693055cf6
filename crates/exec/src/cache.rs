//! The on-disk cache of compiled modules.

use std::hash::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clonecloud_model::RewriteConfig;
use tracing::{debug, info, warn};
use wasmtime::{Engine, Module};
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use crate::error::ExecError;

/// Compiled modules (`Module::serialize`) keyed by the module's content hash, the wasmtime
/// version and the engine configuration (wasmtime's own `precompile_compatibility_hash`), so a
/// changed module, a new wasmtime or another engine configuration never reuses an artefact.
///
/// The cache is an optimisation: a directory that cannot be written, or an entry that does not
/// load, is reported in the log and the module is compiled again.
///
/// With a byte budget ([`ModuleCache::with_limit`]) the cache is least-recently-used: a hit
/// sets the entry's modification time to now, so the order survives restarts and is shared by
/// every process using the directory, and each store then removes the entries used longest ago
/// (never the one just written) until the directory's `*.cwasm` files fit the budget. An entry
/// larger than the whole budget is not kept. Several processes may share one directory: entries
/// are only ever renamed into place or unlinked (a module mapped from an unlinked entry stays
/// valid), never rewritten in place.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: Option<PathBuf>,
    limit: Option<u64>,
}

/// A temporary file older than this was left by a writer that died: the next store removes it.
const STALE_TMP: Duration = Duration::from_secs(3600);

impl ModuleCache {
    /// An unbounded cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModuleCache {
            dir: Some(dir.into()),
            limit: None,
        }
    }

    /// No cache: every module is compiled.
    pub fn disabled() -> Self {
        ModuleCache {
            dir: None,
            limit: None,
        }
    }

    /// This cache, keeping at most `max_bytes` of entries on disk, least recently used out
    /// first (see [`ModuleCache`]).
    pub fn with_limit(mut self, max_bytes: u64) -> Self {
        self.limit = Some(max_bytes);
        self
    }

    /// The byte budget, `None` when unbounded.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// The directory, `None` when disabled.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The file a module compiled by `engine` is cached in.
    pub fn path_for(&self, engine: &Engine, wasm: &[u8]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut h = Xxh3::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Some(dir.join(format!("{:032x}-{:016x}.cwasm", xxh3_128(wasm), h.digest())))
    }

    /// The file a module compiled by `engine` for `owner` is cached in: named by SHA-256 of the
    /// owner and the bytes, so no one can make their module's artefact load for another owner's
    /// (xxh3 is not collision-resistant), and whether an entry exists tells an owner only about
    /// its own uploads.
    pub fn owned_path_for(&self, engine: &Engine, wasm: &[u8], owner: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut h = Xxh3::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let mut key = ring::digest::Context::new(&ring::digest::SHA256);
        key.update(&(owner.len() as u64).to_le_bytes());
        key.update(owner.as_bytes());
        key.update(wasm);
        let key: String = key.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Some(dir.join(format!("{key}-{:016x}.cwasm", h.digest())))
    }

    /// Loads the compiled form of `wasm` from the cache, or compiles and stores it.
    pub fn load_or_compile(&self, engine: &Engine, wasm: &[u8]) -> Result<Module, ExecError> {
        self.load_or_compile_at(engine, wasm, self.path_for(engine, wasm))
    }

    /// [`ModuleCache::load_or_compile`] for a module `owner` sent: its artefact is its own (see
    /// [`ModuleCache::owned_path_for`]).
    pub fn load_or_compile_for(&self, engine: &Engine, wasm: &[u8], owner: &str) -> Result<Module, ExecError> {
        self.load_or_compile_at(engine, wasm, self.owned_path_for(engine, wasm, owner))
    }

    fn load_or_compile_at(&self, engine: &Engine, wasm: &[u8], path: Option<PathBuf>) -> Result<Module, ExecError> {
        let Some(path) = path else {
            return Module::new(engine, wasm).map_err(ExecError::Compile);
        };
        if path.exists() {
            // SAFETY: the file is one this cache wrote with `Module::serialize` for an engine
            // of the same compatibility hash (it is in the name); wasmtime checks the header
            // and the compatibility itself and refuses a mismatch. Like wasmtime's own cache,
            // this trusts the user's cache directory not to be tampered with.
            match unsafe { Module::deserialize_file(engine, &path) } {
                Ok(m) => {
                    debug!(path = %path.display(), "compiled module loaded from cache");
                    touch(&path);
                    return Ok(m);
                }
                Err(e) => warn!(path = %path.display(), "ignoring unusable cache entry: {e}"),
            }
        }
        let module = Module::new(engine, wasm).map_err(ExecError::Compile)?;
        match module.serialize() {
            Ok(bytes) => self.store(&path, &[&bytes]),
            Err(e) => warn!("cannot serialize the compiled module: {e}"),
        }
        Ok(module)
    }

    /// Writes the entry `path` (the concatenation of `parts`) unless it is over the budget by
    /// itself, then evicts down to the budget. Failures are logged: the cache is an optimisation.
    fn store(&self, path: &Path, parts: &[&[u8]]) {
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if let Some(limit) = self.limit
            && size > limit
        {
            info!(
                path = %path.display(),
                "not caching a compiled module of {size} bytes: the cache's limit is {limit} bytes"
            );
            // What is there did not load (or a store would not be asked for): not kept either.
            if let Err(e) = remove(path) {
                warn!(path = %path.display(), "cannot remove an unusable cache entry: {e}");
            }
            return;
        }
        if let Err(e) = write_parts_atomically(path, parts) {
            warn!(path = %path.display(), "cannot write the module cache: {e}");
            return;
        }
        self.evict(Some(path));
    }

    /// Brings the directory within the budget now (the least recently used entries out first)
    /// and removes temporary files left by writers that died. Stores do this anyway; this is
    /// for a long-running process starting on a directory a larger budget filled.
    pub fn trim(&self) {
        self.evict(None);
    }

    /// Removes stale temporary files and, with a budget, the least recently used entries other
    /// than `keep` (the one just written) until the `*.cwasm` files in the directory fit it. One pass over the
    /// directory; entries another process removed meanwhile are simply gone.
    fn evict(&self, keep: Option<&Path>) {
        let Some(dir) = &self.dir else { return };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                warn!(dir = %dir.display(), "cannot list the module cache: {e}");
                return;
            }
        };
        let now = SystemTime::now();
        let mut total = 0u64;
        let mut candidates = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with('.') && name.ends_with(".tmp") {
                if now
                    .duration_since(modified)
                    .is_ok_and(|age| age > STALE_TMP)
                {
                    match remove(&entry.path()) {
                        Ok(()) => {
                            debug!(path = %entry.path().display(), "removed a stale temporary file from the module cache")
                        }
                        Err(e) => {
                            warn!(path = %entry.path().display(), "cannot remove a stale temporary file: {e}")
                        }
                    }
                }
                continue;
            }
            if !name.ends_with(".cwasm") {
                continue;
            }
            total += meta.len();
            let path = entry.path();
            if keep != Some(path.as_path()) {
                candidates.push((modified, path, meta.len()));
            }
        }
        let Some(limit) = self.limit else { return };
        if total <= limit {
            return;
        }
        // Used longest ago first; the name breaks ties so every process picks the same.
        candidates.sort_unstable();
        let (mut evicted, mut freed) = (0usize, 0u64);
        for (_, path, len) in candidates {
            if total <= limit {
                break;
            }
            match remove(&path) {
                Ok(()) => {
                    debug!(path = %path.display(), bytes = len, "evicted from the module cache");
                    total -= len;
                    evicted += 1;
                    freed += len;
                }
                Err(e) => warn!(path = %path.display(), "cannot evict from the module cache: {e}"),
            }
        }
        if evicted > 0 {
            info!(
                dir = %dir.display(),
                "evicted {evicted} least recently used compiled modules ({freed} bytes) to keep the cache within {limit} bytes"
            );
        }
    }
}

/// Marks the entry `path` as used now (its modification time, which eviction orders by).
fn touch(path: &Path) {
    let now = SystemTime::now();
    if let Err(e) = std::fs::File::open(path).and_then(|f| f.set_modified(now)) {
        debug!(path = %path.display(), "cannot mark the cache entry as used: {e}");
    }
}

/// Unlinks `path`; one that is already gone (another process evicted it) counts as removed.
fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl ModuleCache {
    /// The cache key of a rewritten module: what it was made from (the original module's
    /// xxh3-128, the point set, the rewrite's configuration and the rewriter itself,
    /// [`clonecloud_model::REWRITE_FINGERPRINT`]) rather than its bytes, so a launch that finds
    /// it cached need not rewrite the module to name it. `points` must be sorted and
    /// deduplicated (as [`clonecloud_model::rewrite_layout`] orders them).
    pub fn rewrite_key(original_hash: u128, points: &[u32], config: &RewriteConfig) -> u128 {
        let mut h = Xxh3::new();
        h.update(b"clonecloud rewrite\0");
        h.update(&clonecloud_model::REWRITE_FINGERPRINT.to_le_bytes());
        h.update(&original_hash.to_le_bytes());
        h.update(&[u8::from(config.flags_set)]);
        h.update(&(points.len() as u64).to_le_bytes());
        for p in points {
            h.update(&p.to_le_bytes());
        }
        h.digest128()
    }

    /// The file the rewrite with key `key` ([`ModuleCache::rewrite_key`]) compiled by `engine`
    /// is cached in: the compiled artefact, followed by the rewritten module's bytes (what a
    /// clone is sent) and a trailer that gives their length. wasmtime reads the artefact by the
    /// offsets in its ELF headers and never looks past it.
    pub fn rewritten_path_for(&self, engine: &Engine, key: u128) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut h = Xxh3::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Some(dir.join(format!("{key:032x}-{:016x}.cwasm", h.digest())))
    }

    /// Loads the rewrite with key `key` ([`ModuleCache::rewrite_key`]) compiled from the cache,
    /// or makes it with `rewrite`, compiles it and stores it. The rewritten bytes are returned
    /// only with `keep_bytes` (read from the cache entry, or kept from the rewrite): a launch
    /// that finds the entry neither rewrites nor compiles, and without `keep_bytes` it does not
    /// read the bytes either. An entry that does not load is made again.
    pub fn load_or_rewrite(
        &self,
        engine: &Engine,
        key: u128,
        keep_bytes: bool,
        rewrite: impl FnOnce() -> Result<Vec<u8>, ExecError>,
    ) -> Result<(Module, Option<Vec<u8>>), ExecError> {
        let Some(path) = self.rewritten_path_for(engine, key) else {
            let wasm = rewrite()?;
            let module = Module::new(engine, &wasm).map_err(ExecError::Compile)?;
            return Ok((module, keep_bytes.then_some(wasm)));
        };
        let mut loaded = None;
        if path.exists() {
            // SAFETY: as in `load_or_compile`: a file this cache wrote (the artefact from
            // `Module::serialize` for an engine of the compatibility hash in its name, then the
            // bytes, which wasmtime does not read).
            match unsafe { Module::deserialize_file(engine, &path) } {
                Ok(m) if !keep_bytes => {
                    debug!(path = %path.display(), "rewritten module loaded from cache");
                    touch(&path);
                    return Ok((m, None));
                }
                Ok(m) => match read_appended(&path) {
                    Ok(wasm) => {
                        debug!(path = %path.display(), "rewritten module and its bytes loaded from cache");
                        touch(&path);
                        return Ok((m, Some(wasm)));
                    }
                    Err(e) => {
                        warn!(path = %path.display(), "the cache entry's module bytes are unusable: {e}");
                        loaded = Some(m);
                    }
                },
                Err(e) => warn!(path = %path.display(), "ignoring unusable cache entry: {e}"),
            }
        }
        let wasm = rewrite()?;
        let module = match loaded {
            Some(m) => m,
            None => Module::new(engine, &wasm).map_err(ExecError::Compile)?,
        };
        match module.serialize() {
            Ok(artefact) => {
                let trailer = appended_trailer(wasm.len());
                self.store(&path, &[&artefact, &wasm, &trailer]);
            }
            Err(e) => warn!("cannot serialize the compiled module: {e}"),
        }
        Ok((module, keep_bytes.then_some(wasm)))
    }
}

/// Ends a rewritten module's cache entry, after its bytes: their length (u64, little-endian),
/// then this.
const APPENDED_MAGIC: &[u8; 8] = b"ccwasm\x00\x01";

fn appended_trailer(len: usize) -> [u8; 16] {
    let mut t = [0; 16];
    t[..8].copy_from_slice(&(len as u64).to_le_bytes());
    t[8..].copy_from_slice(APPENDED_MAGIC);
    t
}

/// The module bytes stored after the artefact in `path` (see [`ModuleCache::rewritten_path_for`]).
fn read_appended(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let mut trailer = [0; 16];
    if size < 16 {
        return Err(bad("no trailer"));
    }
    f.seek(SeekFrom::Start(size - 16))?;
    f.read_exact(&mut trailer)?;
    if &trailer[8..] != APPENDED_MAGIC {
        return Err(bad("no trailer"));
    }
    let len = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    if len > size - 16 {
        return Err(bad("a length past the start of the file"));
    }
    f.seek(SeekFrom::Start(size - 16 - len))?;
    let mut wasm = vec![0; len as usize];
    f.read_exact(&mut wasm)?;
    if !wasm.starts_with(b"\0asm") {
        return Err(bad("not a wasm module"));
    }
    Ok(wasm)
}

/// Writes the concatenation of `parts` to a temporary file beside `path` and renames it, so a
/// reader never sees half a file (nor an entry changing under its mapping). The new entry's
/// modification time is set from the clock hits use, so the two order consistently.
fn write_parts_atomically(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(dir)?;
    // Unique per process and write, so two threads storing one entry do not share a file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        path.file_name().unwrap().to_string_lossy()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    let written = (|| {
        for part in parts {
            f.write_all(part)?;
        }
        f.set_modified(SystemTime::now())?;
        f.sync_all()
    })();
    drop(f);
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use clonecloud_model::RewriteConfig;

    use super::ModuleCache;
    use crate::error::ExecError;

    const WASM: &str = r#"(module (func (export "f") (result i32) i32.const 7))"#;

    #[test]
    fn a_cached_rewrite_is_not_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModuleCache::new(dir.path());
        let engine = wasmtime::Engine::default();
        let wasm = wat::parse_str(WASM).unwrap();
        let key = ModuleCache::rewrite_key(1, &[0], &RewriteConfig::default());
        assert_ne!(
            key,
            ModuleCache::rewrite_key(1, &[0], &RewriteConfig { flags_set: true })
        );
        assert_ne!(
            key,
            ModuleCache::rewrite_key(1, &[0, 1], &RewriteConfig::default())
        );
        assert_ne!(
            key,
            ModuleCache::rewrite_key(2, &[0], &RewriteConfig::default())
        );
        let made = Cell::new(0);
        let rewrite = || -> Result<Vec<u8>, ExecError> {
            made.set(made.get() + 1);
            Ok(wasm.clone())
        };
        let (_, bytes) = cache.load_or_rewrite(&engine, key, false, rewrite).unwrap();
        assert_eq!((made.get(), bytes), (1, None));
        let path = cache.rewritten_path_for(&engine, key).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "one file per entry"
        );
        // From the cache: no rewrite, and the bytes only when asked for.
        let (m, bytes) = cache.load_or_rewrite(&engine, key, false, rewrite).unwrap();
        assert_eq!((made.get(), bytes), (1, None));
        assert!(m.get_export("f").is_some());
        let (m, bytes) = cache.load_or_rewrite(&engine, key, true, rewrite).unwrap();
        assert_eq!((made.get(), bytes.as_deref()), (1, Some(&wasm[..])));
        assert!(m.get_export("f").is_some());
        // (The entry is mapped while a module from it lives: overwriting it in place would pull
        // it from under the module. The cache itself only ever renames new files into place.)
        drop(m);
        // An entry without its bytes keeps its artefact and gets the bytes again; a broken one
        // is made again.
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - wasm.len() - 16]).unwrap();
        let (_, bytes) = cache.load_or_rewrite(&engine, key, true, rewrite).unwrap();
        assert_eq!((made.get(), bytes.as_deref()), (2, Some(&wasm[..])));
        assert_eq!(std::fs::read(&path).unwrap(), full);
        std::fs::write(&path, b"garbage").unwrap();
        let (m, _) = cache.load_or_rewrite(&engine, key, false, rewrite).unwrap();
        assert_eq!(made.get(), 3);
        assert!(m.get_export("f").is_some());
        assert_eq!(std::fs::read(&path).unwrap(), full);
    }
}
