//! The on-disk cache of compiled modules.

use std::hash::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Writes to a temporary file beside `path` and renames it, so a reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        path.file_name().unwrap().to_string_lossy()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
