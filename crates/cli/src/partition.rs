//! `clonecloud partition` (solve from the stored profile and store the partition) and
//! `clonecloud partitions` (list what is stored).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use clonecloud_partition::{Network, Objective, Partition, PowerModel, Store};

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
}

/// List the stored partitions.
#[derive(Debug, Args)]
pub struct ListOpts {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The partition database in the data directory.
pub(crate) fn store() -> anyhow::Result<Store> {
    let Some(dir) = crate::data_dir() else {
        bail!("no data directory for the partition database: set CLONECLOUD_HOME");
    };
    Ok(Store::open(&dir.join("partitions.redb"))?)
}

pub(crate) fn engine_key(e: crate::EngineArg) -> &'static str {
    match e {
        crate::EngineArg::Cranelift => "cranelift",
        crate::EngineArg::Pulley => "pulley",
    }
}

/// Solves and stores the partition of `wasm` for these keys, from the profile made on `engine`
/// (or, without one, on the other engine).
/// With `files_on_clone`, sending the input files is not charged.
pub(crate) fn solve(store: &Store, wasm: &[u8], engine: &str, network: Network, objective: Objective, files_on_clone: bool) -> anyhow::Result<Partition> {
    let module = clonecloud_profile::module_name(wasm);
    let Some(stored) = store.profile_any(&module, engine)? else {
        bail!("no stored profile of this module: run `clonecloud profile [--device-engine cranelift|pulley] ... app.wasm` first");
    };
    let engine = stored.profile.device_engine.as_str();
    let files = clonecloud_partition::Files { users: &stored.file_users, bytes: if files_on_clone { 0 } else { stored.files_bytes } };
    let problem = clonecloud_partition::problem(&stored.profile, &stored.nesting, files, network, objective, &PowerModel::default());
    let choice = clonecloud_partition::solve(&problem)?;
    let partition = Partition {
        module,
        device_engine: engine.to_string(),
        network: network.key(),
        objective: objective.key().to_string(),
        offload: choice.offload.iter().map(|f| format!("#{f}")).collect(),
        names: choice.names,
        saving: choice.saving,
        solver_ms: choice.solver_ms,
    };
    store.put_partition(&partition)?;
    Ok(partition)
}

pub fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    let network = Network::parse(&opts.network).map_err(anyhow::Error::msg)?;
    let objective = Objective::parse(&opts.objective).map_err(anyhow::Error::msg)?;
    let wasm = crate::read_module(&opts.module)?;
    clonecloud_model::Module::parse(&wasm).with_context(|| format!("cannot partition `{}`", opts.module.display()))?;
    let store = store()?;
    let p = solve(&store, &wasm, engine_key(opts.device_engine.unwrap_or(crate::EngineArg::Cranelift)), network, objective, opts.files_on_clone)?;
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
    let partitions = store()?.partitions()?;
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
