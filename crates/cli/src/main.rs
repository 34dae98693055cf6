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

/// Where clonecloud keeps its per-user data (compiled-module cache; later keys, profiles and
/// partitions): `$CLONECLOUD_HOME`, else `$XDG_DATA_HOME/clonecloud`, else
/// `~/.local/share/clonecloud`. `None` when none of these can be found.
pub(crate) fn data_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("CLONECLOUD_HOME")
        .or_else(|| env("XDG_DATA_HOME").map(|d| d.join("clonecloud")))
        .or_else(|| env("HOME").map(|d| d.join(".local/share/clonecloud")))
}

/// Makes the data directory this user's alone before anything is kept there (keys, compiled
/// modules, replicated files): created with mode 0700, refused if another user owns it, and
/// closed to others if it was open.
pub(crate) fn secure_data_dir() -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let Some(dir) = data_dir() else { return Ok(()) };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let meta = std::fs::metadata(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        anyhow::bail!(
            "the data directory {} belongs to another user (uid {}); clonecloud keeps keys and files there: set CLONECLOUD_HOME to a directory of your own",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("cannot make {} private", dir.display()))?;
        tracing::info!(dir = %dir.display(), "made the data directory private (0700)");
    }
    Ok(())
}

/// MiB the device's compiled-module cache may take when `CLONECLOUD_CACHE_MIB` is not set: room
/// for hundreds of typical modules (a compiled module is a few times its wasm), small next to a
/// device's disk.
pub(crate) const DEFAULT_CACHE_MIB: u64 = 1024;

/// The device's compiled-module cache (`run`, `profile`): `modules` in the data directory,
/// keeping at most `CLONECLOUD_CACHE_MIB` MiB (default [`DEFAULT_CACHE_MIB`]), least recently
/// used out first. Disabled without a data directory.
pub(crate) fn device_cache() -> anyhow::Result<clonecloud_exec::ModuleCache> {
    let mib = cache_mib(std::env::var_os("CLONECLOUD_CACHE_MIB").as_deref())?;
    Ok(match data_dir() {
        Some(dir) => clonecloud_exec::ModuleCache::new(dir.join("modules"))
            .with_limit(mib.saturating_mul(1 << 20)),
        None => clonecloud_exec::ModuleCache::disabled(),
    })
}

/// The value of `CLONECLOUD_CACHE_MIB` (unset or empty: the default).
fn cache_mib(value: Option<&std::ffi::OsStr>) -> anyhow::Result<u64> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_CACHE_MIB);
    };
    match value
        .to_str()
        .map(str::trim)
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(mib) if mib > 0 => Ok(mib),
        _ => anyhow::bail!(
            "CLONECLOUD_CACHE_MIB must be a whole number of MiB above 0 (the most the compiled-module cache may take on disk), got '{}': set it to e.g. {DEFAULT_CACHE_MIB}, or unset it for the default of {DEFAULT_CACHE_MIB} MiB",
            value.to_string_lossy()
        ),
    }
}

/// Reads a module file, saying which file could not be read.
pub(crate) fn read_module(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read module `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::{DEFAULT_CACHE_MIB, cache_mib};

    #[test]
    fn cache_mib_is_a_positive_whole_number() {
        assert_eq!(cache_mib(None).unwrap(), DEFAULT_CACHE_MIB);
        assert_eq!(cache_mib(Some(OsStr::new(""))).unwrap(), DEFAULT_CACHE_MIB);
        assert_eq!(cache_mib(Some(OsStr::new("300"))).unwrap(), 300);
        assert_eq!(cache_mib(Some(OsStr::new(" 7 "))).unwrap(), 7);
        for bad in ["0", "-5", "1.5", "1G", "x", "99999999999999999999999"] {
            let e = cache_mib(Some(OsStr::new(bad))).unwrap_err().to_string();
            assert!(
                e.starts_with("CLONECLOUD_CACHE_MIB must be a whole number of MiB"),
                "{e}"
            );
            assert!(e.contains(&format!("got '{bad}'")), "{e}");
        }
    }
}
