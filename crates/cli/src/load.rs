//! `clonecloud load`: simulated devices against one clone server on loopback.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

/// Run N simulated devices (each its own key, session and replica) migrating a small function
/// with 4-page deltas against one in-process clone server on loopback, and report throughput,
/// latency, memory and failures. With `--hostile N`, N more devices each try to exhaust the
/// clone (memory, table, buffered output) at the same time: the honest devices must still be
/// served, and the report gives the process's peak memory next to the hostile calls' budgets.
#[derive(Debug, Args)]
pub struct Opts {
    /// How many devices at once.
    #[arg(long, default_value_t = 8)]
    devices: usize,
    /// How long, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Devices that try to exhaust the clone meanwhile (see above).
    #[arg(long, default_value_t = 0)]
    hostile: usize,
    /// MiB of memory the clone allows each migrated call (as `serve --max-memory`).
    #[arg(long, value_name = "MIB", default_value_t = 4096)]
    max_memory: usize,
    /// MiB the clone may hold for each migrated call on the host (as `serve --max-host`).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    max_host: usize,
    /// Seconds the clone allows each migrated call (as `serve --max-run-time`).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    max_run_time: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    if opts.devices == 0 || opts.devices > 4096 || opts.hostile > 4096 || !(opts.seconds > 0.0 && opts.seconds <= 3600.0) {
        anyhow::bail!("--devices must be 1 to 4096, --hostile at most 4096 and --seconds above 0 and at most 3600");
    }
    if !(1..=1 << 20).contains(&opts.max_memory) || !(1..=1 << 20).contains(&opts.max_host) {
        anyhow::bail!("--max-memory and --max-host must be 1 to 1048576 MiB");
    }
    let hostile = (opts.hostile > 0).then(|| clonecloud_offload::load::Hostile {
        devices: opts.hostile,
        limits: clonecloud_replica::Limits {
            memory: opts.max_memory << 20,
            host: opts.max_host << 20,
            run_time: std::time::Duration::from_secs_f64(opts.max_run_time.clamp(0.01, 3600.0)),
            ..Default::default()
        },
    });
    let r = clonecloud_offload::load::run_with(opts.devices, std::time::Duration::from_secs_f64(opts.seconds), hostile).map_err(anyhow::Error::msg)?;
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
        if r.hostile > 0 {
            writeln!(
                out,
                "{} hostile devices: {} migrations, {} refused; peak memory {} MiB, their budgets {} MiB in all",
                r.hostile,
                r.hostile_migrations,
                r.hostile_refused,
                r.peak_rss_kib / 1024,
                r.budget_kib / 1024
            )?;
        }
        for e in &r.errors {
            writeln!(out, "  failure: {e}")?;
        }
    }
    Ok(if r.failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
