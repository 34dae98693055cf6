//! What offloading did during a run, for `--stats FILE` (JSON).

use serde::Serialize;
use std::collections::BTreeMap;

/// Per migration point.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PointStats {
    /// Calls answered by the clone.
    pub migrations: u64,
    /// Calls that fell back to a local run.
    pub fallbacks: u64,
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
#[derive(Debug, Default, Clone, Serialize)]
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
#[derive(Debug, Default, Clone, Serialize)]
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
    /// Why getting ready failed (the migration points then opened a session themselves).
    pub failed: Option<String>,
}

/// One fallback.
#[derive(Debug, Clone, Serialize)]
pub struct FallbackEvent {
    pub point: String,
    pub cause: String,
    pub detail: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Fallbacks {
    pub count: u64,
    /// Count per cause.
    pub causes: BTreeMap<String, u64>,
    /// The first fallbacks, in order, with their details.
    pub events: Vec<FallbackEvent>,
}

/// The whole run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    /// The clone's address.
    pub clone: String,
    pub migrations: u64,
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

    pub fn fallback(&mut self, point: &str, cause: &str, detail: &str) {
        self.fallbacks.count += 1;
        *self.fallbacks.causes.entry(cause.to_string()).or_insert(0) += 1;
        if self.fallbacks.events.len() < MAX_EVENTS {
            self.fallbacks.events.push(FallbackEvent { point: point.into(), cause: cause.into(), detail: detail.into() });
        }
        self.point(point).fallbacks += 1;
    }
}
