//! `clonecloud load`: simulated devices against one clone server on loopback.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

/// Run N simulated devices (each its own key, session and replica) migrating a small function
/// with 4-page deltas against one in-process clone server on loopback, and report throughput,
/// latency, memory and failures.
#[derive(Debug, Args)]
pub struct Opts {
    /// How many devices at once.
    #[arg(long, default_value_t = 8)]
    devices: usize,
    /// How long, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    if opts.devices == 0 || opts.devices > 4096 || !(opts.seconds > 0.0 && opts.seconds <= 3600.0) {
        anyhow::bail!("--devices must be 1 to 4096 and --seconds above 0 and at most 3600");
    }
    let r = clonecloud_offload::load::run(opts.devices, std::time::Duration::from_secs_f64(opts.seconds)).map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    if opts.json {
        serde_json::to_writer_pretty(&mut out, &r)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} devices, {:.1} s: {} migrations ({:.0}/s), latency p50 {:.0} us, p99 {:.0} us, max {:.0} us, memory {} MiB, {} failures",
            r.devices,
            r.seconds,
            r.migrations,
            r.migrations_per_s,
            r.p50_us,
            r.p99_us,
            r.max_us,
            r.rss_kib / 1024,
            r.failures
        )?;
        for e in &r.errors {
            writeln!(out, "  failure: {e}")?;
        }
    }
    Ok(if r.failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
