//! The per-user data directory and what is kept there.

use crate::LaunchError;
use clonecloud_exec::ModuleCache;
use clonecloud_partition::Store;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// MiB the device's compiled-module cache may take when `CLONECLOUD_CACHE_MIB` is not set: room
/// for hundreds of typical modules (a compiled module is a few times its wasm), small next to a
/// device's disk.
pub const DEFAULT_CACHE_MIB: u64 = 1024;

/// Where clonecloud keeps its per-user data: the compiled-module cache (`modules`), keys
/// (`keys`), the partition database (`partitions.redb`), the embedded clone's copies of the
/// device's files (`clone-files`).
#[derive(Debug, Clone)]
pub struct Home {
    dir: Option<PathBuf>,
}

impl Home {
    /// `$CLONECLOUD_HOME`, else `$XDG_DATA_HOME/clonecloud`, else `~/.local/share/clonecloud`;
    /// none when none of these is set (then nothing is kept between runs).
    pub fn from_env() -> Home {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        Home { dir: env("CLONECLOUD_HOME").or_else(|| env("XDG_DATA_HOME").map(|d| d.join("clonecloud"))).or_else(|| env("HOME").map(|d| d.join(".local/share/clonecloud"))) }
    }

    /// The home at `dir`.
    pub fn at(dir: PathBuf) -> Home {
        Home { dir: Some(dir) }
    }

    /// The directory, if there is one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Makes the directory this user's alone before anything is kept there (keys, compiled
    /// modules, replicated files): created with mode 0700, refused if another user owns it,
    /// and closed to others if it was open.
    pub fn secure(&self) -> Result<(), LaunchError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let Some(dir) = &self.dir else { return Ok(()) };
        let io = |source| LaunchError::HomeIo { dir: dir.clone(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        let meta = std::fs::metadata(dir).map_err(io)?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(LaunchError::NotOurs { dir: dir.clone(), uid: meta.uid() });
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
            tracing::info!(dir = %dir.display(), "made the data directory private (0700)");
        }
        Ok(())
    }

    /// The device's compiled-module cache: `modules` here, keeping at most `limit_mib` MiB,
    /// least recently used out first. Disabled without a directory.
    pub fn module_cache(&self, limit_mib: u64) -> ModuleCache {
        match &self.dir {
            Some(dir) => ModuleCache::new(dir.join("modules")).with_limit(limit_mib.saturating_mul(1 << 20)),
            None => ModuleCache::disabled(),
        }
    }

    /// The partition database: profiles and partitions by module.
    pub fn store(&self) -> Result<Store, LaunchError> {
        let dir = self.dir.as_ref().ok_or(LaunchError::NoHome)?;
        Ok(Store::open(&dir.join("partitions.redb"))?)
    }

    /// The key pair `NAME` under `keys`, made on first use (a fresh one without a directory).
    /// Runs started at once agree on one: a key is published whole, once, and a run that loses
    /// the race to make it loads the winner's.
    pub fn identity(&self, name: &str) -> Result<clonecloud_net::Identity, LaunchError> {
        let Some(home) = &self.dir else { return Ok(clonecloud_net::Identity::generate()?) };
        let dir = home.join("keys");
        let key = dir.join(format!("{name}.key"));
        let load = |path: &Path| clonecloud_net::Identity::load(path).map_err(|source| LaunchError::Key { path: path.to_path_buf(), source });
        if key.is_file() {
            return load(&key);
        }
        std::fs::create_dir_all(&dir).map_err(|source| LaunchError::HomeIo { dir: dir.clone(), source })?;
        let id = clonecloud_net::Identity::generate()?;
        match id.save(&dir.join(name), false) {
            Ok(_) => Ok(id),
            // Another run made it at the same moment (it is published whole): use that one.
            Err(_) if key.is_file() => load(&key),
            Err(e) => Err(e.into()),
        }
    }
}

/// Why `CLONECLOUD_CACHE_MIB` was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "CLONECLOUD_CACHE_MIB must be a whole number of MiB above 0 (the most the compiled-module cache may take on disk), got '{0}': set it to e.g. {DEFAULT_CACHE_MIB}, or unset it for the default of {DEFAULT_CACHE_MIB} MiB"
)]
pub struct CacheMibError(String);

/// The value of `CLONECLOUD_CACHE_MIB` (unset or empty: the default).
pub fn cache_mib(value: Option<&OsStr>) -> Result<u64, CacheMibError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_CACHE_MIB);
    };
    match value.to_str().map(str::trim).and_then(|v| v.parse::<u64>().ok()) {
        Some(mib) if mib > 0 => Ok(mib),
        _ => Err(CacheMibError(value.to_string_lossy().into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_mib_is_a_positive_whole_number() {
        assert_eq!(cache_mib(None).unwrap(), DEFAULT_CACHE_MIB);
        assert_eq!(cache_mib(Some(OsStr::new(""))).unwrap(), DEFAULT_CACHE_MIB);
        assert_eq!(cache_mib(Some(OsStr::new("300"))).unwrap(), 300);
        assert_eq!(cache_mib(Some(OsStr::new(" 7 "))).unwrap(), 7);
        for bad in ["0", "-5", "1.5", "1G", "x", "99999999999999999999999"] {
            let e = cache_mib(Some(OsStr::new(bad))).unwrap_err().to_string();
            assert!(e.starts_with("CLONECLOUD_CACHE_MIB must be a whole number of MiB"), "{e}");
            assert!(e.contains(&format!("got '{bad}'")), "{e}");
        }
    }

    #[test]
    fn a_home_is_made_private_and_its_keys_are_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        home.secure().unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("home")).unwrap().permissions().mode() & 0o777, 0o700);
        let a = home.identity("local-device").unwrap();
        let b = home.identity("local-device").unwrap();
        assert_eq!(a.public(), b.public(), "the second run finds the first's key");
    }
}
