//! The on-disk cache of compiled modules.

use std::hash::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};

use clonecloud_model::RewriteConfig;
use tracing::{debug, warn};
use wasmtime::{Engine, Module};
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use crate::error::ExecError;

/// Compiled modules (`Module::serialize`) keyed by the module's content hash, the wasmtime
/// version and the engine configuration (wasmtime's own `precompile_compatibility_hash`), so a
/// changed module, a new wasmtime or another engine configuration never reuses an artefact.
///
/// The cache is an optimisation: a directory that cannot be written, or an entry that does not
/// load, is reported in the log and the module is compiled again.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: Option<PathBuf>,
}

impl ModuleCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModuleCache {
            dir: Some(dir.into()),
        }
    }

    /// No cache: every module is compiled.
    pub fn disabled() -> Self {
        ModuleCache { dir: None }
    }

    /// The file a module compiled by `engine` is cached in.
    pub fn path_for(&self, engine: &Engine, wasm: &[u8]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut h = Xxh3::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Some(dir.join(format!("{:032x}-{:016x}.cwasm", xxh3_128(wasm), h.digest())))
    }

    /// Loads the compiled form of `wasm` from the cache, or compiles and stores it.
    pub fn load_or_compile(&self, engine: &Engine, wasm: &[u8]) -> Result<Module, ExecError> {
        let Some(path) = self.path_for(engine, wasm) else {
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
                    return Ok(m);
                }
                Err(e) => warn!(path = %path.display(), "ignoring unusable cache entry: {e}"),
            }
        }
        let module = Module::new(engine, wasm).map_err(ExecError::Compile)?;
        match module.serialize() {
            Ok(bytes) => {
                if let Err(e) = write_atomically(&path, &bytes) {
                    warn!(path = %path.display(), "cannot write the module cache: {e}");
                }
            }
            Err(e) => warn!("cannot serialize the compiled module: {e}"),
        }
        Ok(module)
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
                    return Ok((m, None));
                }
                Ok(m) => match read_appended(&path) {
                    Ok(wasm) => {
                        debug!(path = %path.display(), "rewritten module and its bytes loaded from cache");
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
                if let Err(e) = write_parts_atomically(&path, &[&artefact, &wasm, &trailer]) {
                    warn!(path = %path.display(), "cannot write the module cache: {e}");
                }
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

/// [`write_atomically`] of the concatenation of `parts`.
fn write_parts_atomically(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        path.file_name().unwrap().to_string_lossy()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    for part in parts {
        f.write_all(part)?;
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Writes to a temporary file beside `path` and renames it, so a reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_parts_atomically(path, &[bytes])
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
