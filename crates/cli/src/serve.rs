//! `clonecloud serve` (the clone server) and `clonecloud keygen` (key pairs for it and devices).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clonecloud_exec::ModuleCache;
use clonecloud_net::{AllowList, Identity, Listener};

/// Run a clone server: devices on the allow list offload functions to it.
#[derive(Debug, Args)]
pub struct Opts {
    /// Address to listen on, HOST:PORT (port 0 picks one; the address is printed).
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// The server's private key (`clonecloud keygen --out server` makes server.key/server.pub).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The devices allowed in: their public keys, one per line.
    #[arg(long, value_name = "FILE")]
    allow: PathBuf,
    /// Seconds a session may stay quiet before its replica is dropped.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    idle_timeout: u64,
    /// Seconds one migrated call may run here; past it the device runs the call itself.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    max_run_time: f64,
    /// MiB of linear memory a replica may use, all its memories and tables together; past it
    /// the device runs the call itself.
    #[arg(long, value_name = "MIB", default_value_t = 4096)]
    max_memory: usize,
    /// MiB all the replicas of one device may hold together: memories (each counted twice, with
    /// the copy a replica keeps of what it agreed with the device), tables, files, journals and
    /// output (a device with several runs at once shares it); past it its calls run on the
    /// device. Default: twice what one replica may hold (2 x --max-memory + --max-host, twice).
    #[arg(long, value_name = "MIB")]
    max_device_memory: Option<usize>,
    /// MiB a replica may make this server hold beyond its memories: files written on the clone
    /// (a sparse `set_len` counts in full), the file journal, buffered output; past it the device
    /// runs the call itself.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    max_host: usize,
    /// MiB a module a device uploads may have; a larger one is refused (and runs locally).
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    max_module: usize,
    /// MiB the compiled-module cache ($CLONECLOUD_HOME/clone-modules, kept across restarts) may
    /// take on disk; past it the least recently used modules are removed (and compiled again if
    /// a device sends them again). A compiled module is a few times its wasm, so the default
    /// keeps a few modules of the --max-module default and hundreds of typical ones.
    #[arg(long, value_name = "MIB", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    max_cache: u64,
    /// Runs one device key may have on this clone at once; more are refused (and run locally).
    #[arg(long, value_name = "N", default_value_t = clonecloud_offload::server::DEFAULT_MAX_RUNS)]
    max_runs: usize,
    /// MiB of file contents kept on disk for each device (encrypted); past it the least recently
    /// used are dropped and sent again when a run needs them. A run whose files do not fit runs
    /// locally.
    #[arg(long, value_name = "MIB", default_value_t = clonecloud_offload::server::DEFAULT_MAX_STORE >> 20)]
    max_store: u64,
    /// Sessions this server holds at once, all devices together (a session waiting for its
    /// device to resume it included); more are refused (and run locally).
    #[arg(long, value_name = "N", default_value_t = clonecloud_offload::server::DEFAULT_MAX_SESSIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_sessions: usize,
    /// Connections that have not authenticated (sent their first message) at once; a new one
    /// past that drops the oldest, so a flood of connections holds at most N descriptors while
    /// an honest device's handshake still goes through.
    #[arg(long, value_name = "N", default_value_t = clonecloud_offload::server::DEFAULT_MAX_PENDING, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_pending: usize,
    /// Seconds from a connection's arrival to its first message (the TLS handshake included),
    /// however slowly it sends; past that it is closed.
    #[arg(long, value_name = "SECS", default_value_t = clonecloud_offload::server::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64())]
    handshake_timeout: f64,
}

/// Make a key pair: NAME.key (private) and NAME.pub (public, one line).
#[derive(Debug, Args)]
pub struct KeygenOpts {
    /// The path prefix of the two files.
    #[arg(long, value_name = "NAME")]
    out: PathBuf,
    /// Replace NAME.key and NAME.pub if they exist (the old identity is lost).
    #[arg(long)]
    force: bool,
}

pub fn keygen(opts: KeygenOpts) -> anyhow::Result<ExitCode> {
    let id = Identity::generate()?;
    let (key, public) = id.save(&opts.out, opts.force)?;
    println!("{}\n{}", key.display(), public.display());
    Ok(ExitCode::SUCCESS)
}

// `Clone::serve` never returns (its type is uninhabited), which rustc reports.
#[allow(unreachable_code)]
pub fn serve(opts: Opts) -> anyhow::Result<ExitCode> {
    // What the server keeps (compiled modules, replicated files) is its own: files 0600,
    // directories 0700.
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0o077) };
    let id = Identity::load(&opts.key)?;
    let allow = AllowList::load(&opts.allow)?;
    if allow.is_empty() {
        anyhow::bail!("{} lists no device key: nobody could connect", opts.allow.display());
    }
    if !(opts.handshake_timeout > 0.0 && opts.handshake_timeout <= 3600.0) {
        anyhow::bail!("--handshake-timeout must be above 0 and at most 3600 seconds");
    }
    let handshake = Duration::from_secs_f64(opts.handshake_timeout);
    let listener = Listener::bind(opts.listen.as_str(), &id, allow, handshake)
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let cache = match crate::data_dir() {
        Some(dir) => ModuleCache::new(dir.join("clone-modules")).with_limit(opts.max_cache.saturating_mul(1 << 20)),
        None => ModuleCache::disabled(),
    };
    // A smaller --max-cache than the last run's applies now, not at the first store.
    cache.trim();
    let limits = clonecloud_replica::Limits {
        memory: opts.max_memory.saturating_mul(1 << 20),
        host: opts.max_host.saturating_mul(1 << 20),
        run_time: Duration::from_secs_f64(opts.max_run_time.max(0.01)),
        module: opts.max_module << 20,
    };
    let idle = Duration::from_secs(opts.idle_timeout);
    let clone = match crate::data_dir() {
        Some(dir) => clonecloud_offload::Clone::with_files(cache, idle, limits, dir.join("clone-files"), id.derive_secret(clonecloud_offload::server::STORE_SECRET))?,
        None => clonecloud_offload::Clone::with_limits(cache, idle, limits)?,
    };
    clone.set_max_runs(opts.max_runs);
    if let Some(mib) = opts.max_device_memory {
        clone.set_max_device_memory(mib.saturating_mul(1 << 20));
    }
    clone.set_max_store(opts.max_store.saturating_mul(1 << 20));
    clone.set_max_sessions(opts.max_sessions);
    clone.set_max_pending(opts.max_pending);
    clone.set_handshake_timeout(handshake);
    // Scripts read the address (port 0 picks one) from this line.
    println!("listening on {}", listener.local_addr());
    // Serves for ever: a failed accept backs off and goes on.
    match clone.serve(listener) {}
}
