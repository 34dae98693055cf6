//! The evaluation's results: rows per app, size and configuration, and their Markdown, CSV and
//! JSON forms.

use clonecloud_partition::{Energy, PowerModel};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The configurations of the paper's table, in its order.
pub const PHONE: &str = "Phone";

/// Mean and spread of repeated measurements.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    pub mean: f64,
    /// Sample standard deviation (0 for one value).
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = if values.len() > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Spread { mean, sd, min, max }
    }
}

/// One app, input size and configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub app: String,
    pub size: String,
    /// `Phone`, `CC-WiFi`, `CC-3G`.
    pub config: String,
    /// The network the partition was chosen for and the link emulated (`None` for Phone).
    pub network: Option<String>,
    /// The functions offloaded (empty: the partition is all local).
    pub partition: Vec<String>,
    /// What the optimizer expected the partition to save, seconds (or joules).
    pub predicted_saving: Option<f64>,
    /// Each repetition's wall time, seconds.
    pub times_s: Vec<f64>,
    pub time: Spread,
    /// Each repetition's modelled device energy, joules.
    pub energies_j: Vec<f64>,
    pub energy: Spread,
    /// The energy's parts, averaged over the repetitions.
    pub energy_parts: Energy,
    /// The device's CPU time, mean, seconds.
    pub cpu_s: f64,
    /// Phone's mean time over this row's (1 for Phone).
    pub speedup: f64,
    /// Phone's mean energy over this row's.
    pub energy_ratio: f64,
    /// Bytes on the emulated link per run (TLS records included), device to clone and back.
    pub bytes_up: f64,
    pub bytes_down: f64,
    /// Migrations per run.
    pub migrations: f64,
    /// Fallbacks (migrations run locally after all) over all the repetitions.
    pub fallbacks: u64,
    /// The first run of this configuration (not in the figures: it syncs the input files to the
    /// clone's replica and fills the caches), seconds, and the file bytes it sent.
    pub first_run_s: Option<f64>,
    pub first_run_file_bytes: u64,
    /// The ideal bound, seconds: the device's time for what stays local + the clone's time for
    /// what migrates + the state's bytes at the link's rate + one round trip per migration and
    /// two to connect (TCP, TLS 1.3).
    pub ideal_s: f64,
    /// Measured mean time over the ideal bound.
    pub to_ideal: f64,
    /// Every run's stdout, stderr and exit code were identical to the Phone run's.
    pub identical: bool,
}

/// How much slower the device is than the clone, per workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Speed {
    pub app: String,
    pub size: String,
    /// The whole run on the device (Pulley), mean, seconds.
    pub device_s: f64,
    /// The whole run on the clone's engine (Cranelift), seconds.
    pub clone_s: f64,
    pub ratio: f64,
}

/// One configuration of the multi-threaded workload (Multiplicity): the emulated phone alone,
/// or offloading its worker threads' calls to one clone or to several.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadRow {
    pub app: String,
    pub size: String,
    /// `Phone`, or a CC configuration (`CC-WiFi`).
    pub config: String,
    /// Clones offloaded to (0 for Phone).
    pub clones: usize,
    /// The worker threads the program ran.
    pub threads: usize,
    /// The phone's guest code ran at this fraction of Cranelift's speed here (`run
    /// --device-speed`): Pulley's on the single-threaded sibling at this size (Pulley runs no
    /// threads).
    pub device_speed: f64,
    /// The functions offloaded.
    pub offload: Vec<String>,
    pub times_s: Vec<f64>,
    pub time: Spread,
    /// Phone's mean time over this row's.
    pub speedup: f64,
    /// Per run, means.
    pub migrations: f64,
    pub conflicts: f64,
    /// Of the conflicts, those sent again (one at a time) rather than run here.
    pub conflicts_sent_again: f64,
    /// Fallbacks over all the repetitions.
    pub fallbacks: u64,
    pub first_run_s: Option<f64>,
    pub identical: bool,
}

/// The multi-threaded workload's part of the evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Multiplicity {
    pub rows: Vec<ThreadRow>,
}

/// A link as it was emulated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkInfo {
    pub config: String,
    pub network: String,
    pub mbit: f64,
    pub rtt_ms: f64,
    pub radio: String,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub quick: bool,
    pub reps: usize,
    pub objective: String,
    pub apps: Vec<String>,
    pub sizes: Vec<String>,
    pub links: Vec<LinkInfo>,
    pub power: PowerModel,
    pub energy_is_modelled: &'static str,
    pub speed: Vec<Speed>,
    pub rows: Vec<Row>,
    /// The multi-threaded workload, when it was run.
    pub multiplicity: Option<Multiplicity>,
    pub seconds: f64,
}

/// What every output says about energy.
pub const ENERGY_NOTE: &str = "Device energy is modelled, not metered: CPU active power for the device's CPU time, idle power for the rest of the wall time, radio power for the bytes at the link's rate, and 3G tails (clonecloud-partition's PowerModel).";

impl Report {
    /// The configurations in table order.
    pub fn configs(&self) -> Vec<String> {
        std::iter::once(PHONE.to_string()).chain(self.links.iter().map(|l| l.config.clone())).collect()
    }

    pub fn row(&self, app: &str, size: &str, config: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.app == app && r.size == size && r.config == config)
    }

    /// Every app × size × configuration is there with all its repetitions, figures agree with
    /// each other, and every run's output was identical to the Phone run's.
    pub fn check(&self) -> Result<(), crate::paper::BenchError> {
        use crate::paper::BenchError::Inconsistent;
        for app in &self.apps {
            for size in &self.sizes {
                let phone = self.row(app, size, PHONE).ok_or_else(|| Inconsistent(format!("no Phone row for {app} {size}")))?;
                for config in self.configs() {
                    let r = self.row(app, size, &config).ok_or_else(|| Inconsistent(format!("no {config} row for {app} {size}")))?;
                    if r.times_s.len() != self.reps || r.energies_j.len() != self.reps {
                        return Err(Inconsistent(format!("{app} {size} {config}: {} runs, expected {}", r.times_s.len(), self.reps)));
                    }
                    if !r.identical {
                        return Err(Inconsistent(format!("{app} {size} {config}: an output differed from the Phone run")));
                    }
                    let speedup = phone.time.mean / r.time.mean;
                    if !(r.time.mean > 0.0 && (speedup - r.speedup).abs() <= 1e-9 * speedup.max(1.0)) {
                        return Err(Inconsistent(format!("{app} {size} {config}: speedup {} does not match the times", r.speedup)));
                    }
                    if !(r.energy.mean > 0.0 && r.ideal_s > 0.0 && r.to_ideal.is_finite()) {
                        return Err(Inconsistent(format!("{app} {size} {config}: energy or ideal bound missing")));
                    }
                }
            }
        }
        if let Some(m) = &self.multiplicity {
            for r in &m.rows {
                if r.times_s.len() != self.reps || !r.identical || !(r.time.mean > 0.0) {
                    return Err(Inconsistent(format!("{} {} {} with {} clones: {} runs, identical {}", r.app, r.size, r.config, r.clones, r.times_s.len(), r.identical)));
                }
            }
        }
        if self.rows.len() != self.apps.len() * self.sizes.len() * self.configs().len() {
            return Err(Inconsistent(format!("{} rows, expected {}", self.rows.len(), self.apps.len() * self.sizes.len() * self.configs().len())));
        }
        Ok(())
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes") + "\n"
    }

    pub fn csv(&self) -> String {
        let mut out = String::from(
            "app,size,config,network,partition,reps,time_mean_s,time_sd_s,time_min_s,time_max_s,speedup,energy_mean_j,energy_sd_j,energy_ratio,cpu_j,idle_j,radio_j,tail_j,device_cpu_s,bytes_up,bytes_down,migrations,fallbacks,first_run_s,ideal_s,to_ideal,identical\n",
        );
        for r in &self.rows {
            let partition = if r.partition.is_empty() { "local".to_string() } else { r.partition.join(" + ") };
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{:.4},{:.4},{:.4},{:.4},{:.3},{:.4},{:.4},{:.3},{:.4},{:.4},{:.4},{:.4},{:.4},{:.0},{:.0},{:.1},{},{},{:.4},{:.3},{}",
                r.app,
                r.size,
                r.config,
                r.network.as_deref().unwrap_or(""),
                csv_field(&partition),
                r.times_s.len(),
                r.time.mean,
                r.time.sd,
                r.time.min,
                r.time.max,
                r.speedup,
                r.energy.mean,
                r.energy.sd,
                r.energy_ratio,
                r.energy_parts.cpu_j,
                r.energy_parts.idle_j,
                r.energy_parts.radio_j,
                r.energy_parts.tail_j,
                r.cpu_s,
                r.bytes_up,
                r.bytes_down,
                r.migrations,
                r.fallbacks,
                r.first_run_s.map_or(String::new(), |s| format!("{s:.4}")),
                r.ideal_s,
                r.to_ideal,
                r.identical
            );
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# clonecloud: the paper's evaluation\n");
        let links: Vec<String> = self.links.iter().map(|l| format!("{} {} Mbit/s each way, {} ms round trip ({})", l.config, l.mbit, l.rtt_ms, l.radio)).collect();
        let _ = writeln!(
            out,
            "Phone: the app on wasmtime's Pulley interpreter (the device). CC: the same device offloading to a `clonecloud serve` (Cranelift) on loopback, through an emulated link: {}. Partitions chosen by the optimizer for {} from a profile of the same input; the clone's replica holds the input files (synced by each configuration's first run, shown apart). {} runs each{}.\n",
            links.join("; "),
            self.objective,
            self.reps,
            if self.quick { " (`--quick`: small inputs)" } else { "" }
        );
        let _ = writeln!(out, "**{ENERGY_NOTE}**\n");
        let _ = writeln!(out, "## Device and clone\n\n| app | size | device (Pulley) s | clone (Cranelift) s | device / clone |\n|---|---|---:|---:|---:|");
        for s in &self.speed {
            let _ = writeln!(out, "| {} | {} | {:.2} | {:.3} | {:.1}x |", s.app, s.size, s.device_s, s.clone_s, s.ratio);
        }
        let _ = writeln!(
            out,
            "\n## Time and energy\n\n| app | size | config | partition | time s (± sd) | speedup | energy J (± sd) | energy ratio | KB up / down | migrations | fallbacks | ideal s | time / ideal | first run s |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.rows {
            let partition = if r.config == PHONE {
                "-".to_string()
            } else if r.partition.is_empty() {
                "local".to_string()
            } else {
                r.partition.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2} ± {:.2} | {:.2}x | {:.2} ± {:.2} | {:.2}x | {:.1} / {:.1} | {:.1} | {} | {:.2} | {:.2} | {} |",
                r.app,
                r.size,
                r.config,
                partition,
                r.time.mean,
                r.time.sd,
                r.speedup,
                r.energy.mean,
                r.energy.sd,
                r.energy_ratio,
                r.bytes_up / 1e3,
                r.bytes_down / 1e3,
                r.migrations,
                r.fallbacks,
                r.ideal_s,
                r.to_ideal,
                r.first_run_s.map_or("-".to_string(), |s| format!("{s:.2}"))
            );
        }
        if let Some(m) = &self.multiplicity {
            let _ = writeln!(
                out,
                "\n## Multiplicity: a multi-threaded workload, one clone and several\n\nPhone: the program's guest code paced to the speed Pulley runs its single-threaded sibling at on the same input (`run --device-speed`, the fraction of Cranelift's speed in the table: Pulley runs no threads), its threads on this machine's cores. CC: its worker threads' calls offloaded (a thread migrates, the others run on), to one clone or to several (a `clonecloud serve` each, each behind its own emulated link). Time only (a paced device's energy is not modelled). COMET (OSDI 2012) reports a 2.88x geometric mean over Wi-Fi.\n\n| app | size | config | clones | threads | device speed | time s (± sd) | speedup | migrations | conflicts (sent again) | fallbacks | first run s |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for r in &m.rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {:.3} | {:.2} ± {:.2} | {:.2}x | {:.1} | {:.1} ({:.1}) | {} | {} |",
                    r.app,
                    r.size,
                    r.config,
                    r.clones,
                    r.threads,
                    r.device_speed,
                    r.time.mean,
                    r.time.sd,
                    r.speedup,
                    r.migrations,
                    r.conflicts,
                    r.conflicts_sent_again,
                    r.fallbacks,
                    r.first_run_s.map_or("-".to_string(), |s| format!("{s:.2}"))
                );
            }
        }
        let _ = writeln!(out, "\nFigures: `time.svg`/`time.png` and `energy.svg`/`energy.png` beside this file. Whole evaluation: {:.0} s.", self.seconds);
        out
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread() {
        let s = Spread::of(&[1.0, 2.0, 3.0]);
        assert_eq!((s.mean, s.sd, s.min, s.max), (2.0, 1.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0]).sd, 0.0);
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(csv_field("a + b"), "a + b");
        assert_eq!(csv_field("f<a, b>"), "\"f<a, b>\"");
    }
}
