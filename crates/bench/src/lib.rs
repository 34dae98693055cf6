//! clonecloud-bench: the paper's evaluation (CloneCloud, EuroSys 2011, section 6), reproduced.
//!
//! [`paper::run`] measures each workload at each input size in three configurations, Phone (all
//! local on the emulated device: wasmtime's Pulley interpreter), CC-WiFi and CC-3G (the device
//! offloading the partition the optimizer chose for that network, to a clone on loopback
//! through a [`clonecloud_linkem::Link`] with the network's rate and delay), several times
//! each. Device energy comes from the partitioning crate's power model fed with what each run
//! measured (CPU time, wall time, bytes each way): modelled, not metered. [`report`] holds the
//! results and writes them as Markdown, CSV and JSON; [`plot`] draws the paper's figure (bars of
//! time and of energy per app, size and configuration) as SVG and PNG.

pub mod paper;
pub mod plot;
pub mod report;

pub use paper::{BenchError, Config};
pub use report::Report;
