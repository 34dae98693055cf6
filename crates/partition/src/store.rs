//! The partition database: profiles and partitions in an embedded ACID database (redb), keyed
//! by module hash, device engine, network condition and objective.

use crate::optimize::{Network, Objective};
use clonecloud_profile::Profile;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};
use std::path::Path;

/// `module/engine` → a stored profile (JSON).
const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");
/// `module/engine/network/objective` → a partition (JSON).
const PARTITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("partitions");

/// A profile with what the optimizer needs besides it: the analyzer's nesting pairs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredProfile {
    pub profile: Profile,
    /// `(outer, inner)` candidates where `inner` is reachable from `outer`.
    pub nesting: Vec<(u32, u32)>,
    /// Candidates that read the preopened directories, and the directories' size when profiled:
    /// migrating any of them first needs the files on the clone.
    #[serde(default)]
    pub file_users: Vec<u32>,
    #[serde(default)]
    pub files_bytes: u64,
}

/// A chosen partition.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Partition {
    pub module: String,
    pub device_engine: String,
    pub network: String,
    pub objective: String,
    /// The functions to offload, by name (as `--offload` takes them: `#INDEX`).
    pub offload: Vec<String>,
    /// Their display names.
    pub names: Vec<String>,
    /// Seconds or joules the partition saves over running everything locally, as modelled.
    pub saving: f64,
    pub solver_ms: f64,
}

/// A database error, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the partition database {path}: {message} (delete it to start afresh)")]
    Db { path: String, message: String },
}

/// The database.
#[derive(Debug)]
pub struct Store {
    db: redb::Database,
    path: String,
}

fn key(parts: &[&str]) -> String {
    parts.join("/")
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Db { path: shown.clone(), message: e.to_string() })?;
        }
        let db = redb::Database::create(path).map_err(|e| StoreError::Db { path: shown.clone(), message: e.to_string() })?;
        Ok(Store { db, path: shown })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db { path: self.path.clone(), message: e.to_string() }
    }

    fn put(&self, table: TableDefinition<&str, &[u8]>, k: &str, v: &[u8]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = w.open_table(table).map_err(|e| self.err(e))?;
            t.insert(k, v).map_err(|e| self.err(e))?;
        }
        w.commit().map_err(|e| self.err(e))
    }

    fn get(&self, table: TableDefinition<&str, &[u8]>, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match r.open_table(table) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        Ok(t.get(k).map_err(|e| self.err(e))?.map(|v| v.value().to_vec()))
    }

    fn all(&self, table: TableDefinition<&str, &[u8]>) -> Result<Vec<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match r.open_table(table) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.err(e))? {
            let (_, v) = item.map_err(|e| self.err(e))?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    /// Keeps a profile (replacing the module's earlier one on that engine).
    pub fn put_profile(&self, p: &StoredProfile) -> Result<(), StoreError> {
        let v = serde_json::to_vec(p).map_err(|e| self.err(e))?;
        self.put(PROFILES, &key(&[&p.profile.module, &p.profile.device_engine]), &v)
    }

    /// The stored profile of `module` on `engine`.
    pub fn profile(&self, module: &str, engine: &str) -> Result<Option<StoredProfile>, StoreError> {
        match self.get(PROFILES, &key(&[module, engine]))? {
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| self.err(format!("a stored profile is unreadable: {e}"))),
            None => Ok(None),
        }
    }

    /// The stored profile of `module` on `engine`, or else on any engine (the first by name).
    pub fn profile_any(&self, module: &str, engine: &str) -> Result<Option<StoredProfile>, StoreError> {
        if let Some(p) = self.profile(module, engine)? {
            return Ok(Some(p));
        }
        for v in self.all(PROFILES)? {
            let p: StoredProfile = serde_json::from_slice(&v).map_err(|e| self.err(format!("a stored profile is unreadable: {e}")))?;
            if p.profile.module == module {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Keeps a partition.
    pub fn put_partition(&self, p: &Partition) -> Result<(), StoreError> {
        let v = serde_json::to_vec(p).map_err(|e| self.err(e))?;
        self.put(PARTITIONS, &key(&[&p.module, &p.device_engine, &p.network, &p.objective]), &v)
    }

    /// The stored partition for these keys.
    pub fn partition(&self, module: &str, engine: &str, network: &Network, objective: Objective) -> Result<Option<Partition>, StoreError> {
        match self.get(PARTITIONS, &key(&[module, engine, &network.key(), objective.key()]))? {
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| self.err(format!("a stored partition is unreadable: {e}"))),
            None => Ok(None),
        }
    }

    /// Every stored partition, by key.
    pub fn partitions(&self) -> Result<Vec<Partition>, StoreError> {
        self.all(PARTITIONS)?
            .into_iter()
            .map(|v| serde_json::from_slice(&v).map_err(|e| self.err(format!("a stored partition is unreadable: {e}"))))
            .collect()
    }
}
