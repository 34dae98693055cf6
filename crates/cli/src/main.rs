//! `clonecloud`: the one command line of clonecloud. It owns argument parsing and output and
//! nothing else: each subcommand is a module with its clap `Opts` and a `run()`, calling the
//! library crates.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod analyze;
mod bench;
mod faults;
mod inspect;
mod link;
mod load;
mod partition;
mod profile;
mod run;
mod serve;

/// clonecloud: run a WebAssembly app, handing the heavy parts to a clone on a stronger machine.
#[derive(Debug, Parser)]
#[command(name = "clonecloud", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::Opts),
    Inspect(inspect::Opts),
    Analyze(analyze::Opts),
    Profile(profile::Opts),
    Partition(partition::Opts),
    Partitions(partition::ListOpts),
    Load(load::Opts),
    Bench(bench::Opts),
    Faults(faults::Opts),
    Link(link::Opts),
    Serve(serve::Opts),
    Keygen(serve::KeygenOpts),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(match cli.command {
        // The guest's stderr is the process's: only clonecloud's own warnings go there, not the
        // in-process clone's (whose sessions end when the link does) nor fallbacks (logged at
        // info, and counted in --stats).
        Command::Run(_) => "warn,clonecloud_offload::server=error,wasmtime_wasi=error",
        _ => "warn",
    });
    let keeps_data = matches!(cli.command, Command::Run(_) | Command::Profile(_) | Command::Partition(_) | Command::Serve(_) | Command::Load(_) | Command::Bench(_) | Command::Faults(_));
    if keeps_data && let Err(e) = secure_data_dir() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(opts) => run::run(opts),
        Command::Inspect(opts) => inspect::run(opts),
        Command::Analyze(opts) => analyze::run(opts),
        Command::Profile(opts) => profile::run(opts),
        Command::Partition(opts) => partition::run(opts),
        Command::Partitions(opts) => partition::list(opts),
        Command::Load(opts) => load::run(opts),
        Command::Bench(opts) => bench::run(opts),
        Command::Faults(opts) => faults::run(opts),
        Command::Link(opts) => link::run(opts),
        Command::Serve(opts) => serve::serve(opts),
        Command::Keygen(opts) => serve::keygen(opts),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--device-engine`: what runs wasm on the device.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum EngineArg {
    /// Cranelift: this machine is the device.
    Cranelift,
    /// wasmtime's Pulley interpreter, standing for a phone (many times slower).
    Pulley,
}

impl EngineArg {
    pub(crate) fn engine(self) -> clonecloud_exec::DeviceEngine {
        match self {
            EngineArg::Cranelift => clonecloud_exec::DeviceEngine::Cranelift,
            EngineArg::Pulley => clonecloud_exec::DeviceEngine::Pulley,
        }
    }
}

/// Logs go to stderr through `tracing`; `CLONECLOUD_LOG` (or `RUST_LOG`) sets the filter,
/// `default` when neither is set.
fn init_logging(default: &str) {
    let filter = std::env::var("CLONECLOUD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Output to a closed pipe (`clonecloud inspect app.wasm | head`) is a normal end, not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Where clonecloud keeps its per-user data (see `clonecloud_launch::Home`).
pub(crate) fn home() -> clonecloud_launch::Home {
    clonecloud_launch::Home::from_env()
}

/// Where clonecloud keeps its per-user data, if anywhere.
pub(crate) fn data_dir() -> Option<PathBuf> {
    home().dir().map(PathBuf::from)
}

/// Makes the data directory this user's alone before anything is kept there.
fn secure_data_dir() -> anyhow::Result<()> {
    Ok(home().secure()?)
}

/// The device's compiled-module cache (`run`, `profile`): `modules` in the data directory,
/// keeping at most `CLONECLOUD_CACHE_MIB` MiB (default 1024), least recently used out first.
/// Disabled without a data directory.
pub(crate) fn device_cache() -> anyhow::Result<clonecloud_exec::ModuleCache> {
    let mib = clonecloud_launch::cache_mib(std::env::var_os("CLONECLOUD_CACHE_MIB").as_deref())?;
    Ok(home().module_cache(mib))
}

/// The partition database in the data directory.
pub(crate) fn store() -> anyhow::Result<clonecloud_partition::Store> {
    Ok(home().store()?)
}

/// Reads a module file, saying which file could not be read.
pub(crate) fn read_module(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read module `{}`", path.display()))
}
