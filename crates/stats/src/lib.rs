//! clonecloud-stats: what offloading did during a run, the record `clonecloud run --stats FILE`
//! writes as JSON, with the protocol's one [`Cause`] type of a fallback (the stats, the logs and
//! the protocol core's decisions share it).
//!
//! The device's runtime (`clonecloud-offload`) fills a [`Stats`]; `bench` and `faults`, which run
//! `clonecloud` as a child process, read the file back with [`Stats::read`] into the same type,
//! so a renamed or retyped field is a compile error or a read error there, never a silent zero.
//! This crate knows nothing of how the numbers are measured.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub use clonecloud_wire::Cause;

/// A `--stats` file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot read the stats file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the stats file {path} is not what this version of clonecloud writes: {source}")]
    Parse { path: String, source: serde_json::Error },
}

/// Per migration point.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointStats {
    /// Calls answered by the clone.
    pub migrations: u64,
    /// Calls that fell back to a local run.
    pub fallbacks: u64,
    /// Calls sent again after a conflict with another thread's migration.
    #[serde(default)]
    pub conflicts_sent_again: u64,
    /// Memory pages sent to the clone, and the state's bytes (pages with their indices, globals).
    pub pages_up: u64,
    pub bytes_up: u64,
    /// Memory pages and state bytes received from the clone.
    pub pages_down: u64,
    pub bytes_down: u64,
    /// The bytes the messages took on the wire, after compression (`--compression`), with the
    /// arguments and framing.
    pub bytes_up_compressed: u64,
    pub bytes_down_compressed: u64,
    /// Time hashing memory and collecting the delta on the device.
    pub capture_ms: f64,
    /// Time on the link (round trip minus the clone's execution).
    pub transfer_ms: f64,
    /// Time the function ran on the clone.
    pub remote_ms: f64,
    /// Time applying the returned delta on the device.
    pub merge_ms: f64,
    /// Changes to files the clone sent back (after merging consecutive writes).
    pub file_changes: u64,
    /// Changed pages the clone did not send back because they hold only memory the module's
    /// allocator has freed.
    pub pages_freed: u64,
    /// Imports the clone had the device run for it (status queries, stdin reads).
    pub proxied_calls: u64,
}

/// Replicating the preopened directories to the clone (apart from the migrations' bytes).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSync {
    /// Times the directories were sent (the first migration of a session, and whenever they
    /// changed).
    pub syncs: u64,
    /// Entries listed, over all syncs.
    pub entries: u64,
    /// File contents the clone asked for, and their bytes.
    pub files_sent: u64,
    pub bytes: u64,
    /// Everything the syncs took on the wire (listings, contents, answers), after compression.
    pub bytes_on_wire: u64,
    pub ms: f64,
}

/// Getting the clone ready before the first migration point (`Offloader::send_ahead`).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// The module's size (what is uploaded when the clone lacks it).
    pub module_bytes: u64,
    /// From launch until the clone had the module compiled and the directories replicated
    /// (`None`: it did not get there before it was needed, or it failed).
    pub ready_ms: Option<f64>,
    /// Migration points that waited for it, and how long in all.
    pub waits: u64,
    pub waited_ms: f64,
    /// Calls run here because they were expected to end before the clone would be ready.
    pub local_calls: u64,
    /// Why getting ready failed (the migration points then opened a session themselves): the
    /// cause and its detail.
    pub failed: Option<(Cause, String)>,
}

/// One fallback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackEvent {
    pub point: String,
    pub cause: Cause,
    pub detail: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallbacks {
    pub count: u64,
    /// Count per cause.
    pub causes: BTreeMap<Cause, u64>,
    /// The first fallbacks, in order, with their details.
    pub events: Vec<FallbackEvent>,
}

/// The whole run.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// The clone's address (with several, `--clone A,B,...`: the one that served last).
    pub clone: String,
    pub migrations: u64,
    /// Times a clone could not be reached and the next of the others given served instead.
    #[serde(default)]
    pub failovers: u64,
    /// Migrations whose answer the other clones asked (`--redundant`) gave too.
    #[serde(default)]
    pub checked: u64,
    /// Migrations of a thread whose answer conflicted with what the device's other threads did
    /// meanwhile (they changed memory the call read): the call was sent again
    /// (`conflicts_sent_again`) or ran here (a fallback of cause `conflict`).
    #[serde(default)]
    pub conflicts: u64,
    /// Of the conflicts, those whose call was sent again (its point's migrations go one at a
    /// time from then on); after a few, a call that conflicts again runs here (a fallback).
    #[serde(default)]
    pub conflicts_sent_again: u64,
    pub fallbacks: Fallbacks,
    /// Migrations whose answer came on a new connection after the link broke (the clone kept
    /// the session and ran on).
    pub resumes: u64,
    /// Migrations sent again on a new session after the link broke (the clone no longer held
    /// the session, or the migration had not reached it).
    pub retries: u64,
    /// Bytes of module uploads (sent when the clone did not have the module).
    pub module_upload_bytes: u64,
    /// Connections opened to the clone.
    pub connections: u64,
    /// Replicating the preopened directories.
    pub file_sync: FileSync,
    /// Getting the clone ready ahead of the first migration point.
    pub ready: Ready,
    /// Points switched to local during the run because the link no longer paid for them.
    pub switched_local: Vec<String>,
    pub points: BTreeMap<String, PointStats>,
}

/// Events kept with their details; later ones are only counted.
const MAX_EVENTS: usize = 100;

impl Stats {
    pub fn point(&mut self, name: &str) -> &mut PointStats {
        self.points.entry(name.to_string()).or_default()
    }

    /// A thread's migration conflicted and goes again.
    pub fn conflict_sent_again(&mut self, point: &str) {
        self.conflicts += 1;
        self.conflicts_sent_again += 1;
        self.point(point).conflicts_sent_again += 1;
    }

    pub fn fallback(&mut self, point: &str, cause: Cause, detail: &str) {
        self.fallbacks.count += 1;
        self.conflicts += u64::from(cause == Cause::Conflict);
        *self.fallbacks.causes.entry(cause).or_insert(0) += 1;
        if self.fallbacks.events.len() < MAX_EVENTS {
            self.fallbacks.events.push(FallbackEvent { point: point.into(), cause, detail: detail.into() });
        }
        self.point(point).fallbacks += 1;
    }

    /// Reads a file `run --stats` wrote.
    pub fn read(path: &Path) -> Result<Stats, StatsError> {
        let text = std::fs::read(path).map_err(|source| StatsError::Read { path: path.display().to_string(), source })?;
        serde_json::from_slice(&text).map_err(|source| StatsError::Parse { path: path.display().to_string(), source })
    }

    /// Sums over the points.
    pub fn total(&self) -> PointStats {
        let mut t = PointStats::default();
        for p in self.points.values() {
            t.migrations += p.migrations;
            t.fallbacks += p.fallbacks;
            t.conflicts_sent_again += p.conflicts_sent_again;
            t.pages_up += p.pages_up;
            t.bytes_up += p.bytes_up;
            t.pages_down += p.pages_down;
            t.bytes_down += p.bytes_down;
            t.bytes_up_compressed += p.bytes_up_compressed;
            t.bytes_down_compressed += p.bytes_down_compressed;
            t.capture_ms += p.capture_ms;
            t.transfer_ms += p.transfer_ms;
            t.remote_ms += p.remote_ms;
            t.merge_ms += p.merge_ms;
            t.file_changes += p.file_changes;
            t.pages_freed += p.pages_freed;
            t.proxied_calls += p.proxied_calls;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_record_reads_back_the_same() {
        let mut s = Stats { clone: "127.0.0.1:1".into(), migrations: 3, ..Stats::default() };
        s.fallback("crunch", Cause::ResourceLimit, "memory");
        s.fallback("crunch", Cause::Link, "reset");
        s.ready.failed = Some((Cause::Connect, "refused".into()));
        s.point("crunch").bytes_up = 4096;
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""resource-limit":1"#), "{text}");
        assert_eq!(serde_json::from_str::<Stats>(&text).unwrap(), s);
        assert_eq!(s.total().fallbacks, 2);
    }

    #[test]
    fn cause_names_are_their_serde_names() {
        for c in Cause::ALL {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{}\"", c.name()));
            assert_eq!(c.to_string(), c.name());
        }
    }

    #[test]
    fn a_field_this_version_does_not_know_is_an_error() {
        let err = serde_json::from_str::<Stats>(r#"{"clone":"x","migrationz":1}"#).unwrap_err();
        assert!(err.to_string().contains("migrationz"), "{err}");
    }
}
