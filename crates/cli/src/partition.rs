//! `clonecloud partition` (solve from the stored profile and store the partition) and
//! `clonecloud partitions` (list what is stored).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clonecloud_partition::{Network, Objective};

/// Choose the functions to offload for a network condition and an objective, from the module's
/// stored profile (made by `clonecloud profile`), and store the partition.
#[derive(Debug, Args)]
pub struct Opts {
    /// The module (the one that was profiled).
    module: PathBuf,
    /// `wifi`, `3g`, or `BW_MBIT,RTT_MS` (e.g. `0.1,1000`).
    #[arg(long, value_name = "wifi|3g|BW_MBIT,RTT_MS")]
    network: String,
    /// What to minimize: `time` or device `energy`.
    #[arg(long, value_name = "time|energy", default_value = "time")]
    objective: String,
    /// The device engine whose profile to use (default: the one stored, Cranelift's if both
    /// are).
    #[arg(long, value_enum)]
    device_engine: Option<crate::EngineArg>,
    /// The clone already holds the preopened directories' files (an earlier run synced them to
    /// its replica): do not charge sending them.
    #[arg(long)]
    files_on_clone: bool,
    /// Print JSON (the chosen points under `offload`).
    #[arg(long)]
    json: bool,
    /// The device's memory budget for the guest, MiB (as `run --device-memory`).
    #[arg(long, value_name = "MIB")]
    device_memory: Option<u64>,
}

/// List the stored partitions.
#[derive(Debug, Args)]
pub struct ListOpts {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    let network = Network::parse(&opts.network)?;
    let objective = Objective::parse(&opts.objective)?;
    let wasm = crate::read_module(&opts.module)?;
    clonecloud_model::Module::parse(&wasm).with_context(|| format!("cannot partition `{}`", opts.module.display()))?;
    let store = crate::store()?;
    let engine = opts.device_engine.unwrap_or(crate::EngineArg::Cranelift).engine();
    let budget = opts.device_memory.map(|m| m.checked_mul(1 << 20).ok_or_else(|| anyhow::anyhow!("--device-memory {m}: more MiB than a 64-bit count of bytes holds"))).transpose()?;
    let resources = clonecloud_partition::Resources { clones: 1, memory_budget: budget };
    let p = clonecloud_launch::solve(&store, &wasm, engine, network, objective, opts.files_on_clone, &resources)?;
    let mut out = std::io::stdout().lock();
    if opts.json {
        serde_json::to_writer_pretty(&mut out, &p)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let unit = if objective == Objective::Time { "s" } else { "J" };
    if p.names.is_empty() {
        writeln!(out, "{}: nothing pays on {} for {} (run everything locally)", opts.module.display(), p.network, p.objective)?;
    } else {
        writeln!(out, "{}: offload {} on {} for {} (saves {:.3} {unit}; solved in {:.2} ms)", opts.module.display(), p.names.join(", "), p.network, p.objective, p.saving, p.solver_ms)?;
        writeln!(out, "run it with: clonecloud run --offload {} ...", p.offload.join(","))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(opts: ListOpts) -> anyhow::Result<ExitCode> {
    let partitions = crate::store()?.partitions()?;
    let mut out = std::io::stdout().lock();
    if opts.json {
        serde_json::to_writer_pretty(&mut out, &partitions)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "{:<34} {:<9} {:<12} {:<7} {:>10}  offload", "module", "engine", "network", "goal", "saving")?;
    for p in partitions {
        writeln!(out, "{:<34} {:<9} {:<12} {:<7} {:>10.3}  {}", p.module, p.device_engine, p.network, p.objective, p.saving, if p.names.is_empty() { "-".to_string() } else { p.names.join(", ") })?;
    }
    Ok(ExitCode::SUCCESS)
}
