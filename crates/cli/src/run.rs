//! `clonecloud run`: run a WASI command module like `wasmtime run`, with migration points.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use clonecloud_exec::{
    DirMapping, ModuleCache, Outcome, PointMode, Points, Program, Stdio, WasiConfig,
};

/// Run a WASI preview 1 command module (like `wasmtime run`), optionally with migration points.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("offloading").multiple(true)))]
pub struct Opts {
    /// Preopen a host directory, under GUEST (default: the same path) inside the guest.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,

    /// Set an environment variable for the guest; a bare NAME passes this process's value.
    #[arg(long = "env", value_name = "NAME[=VAL]")]
    env: Vec<String>,

    /// Turn functions into migration points: `all`, or a comma-separated list of names from the
    /// `name` section, demangled names (`probe::crunch`), export names or #INDEX.
    #[arg(long, value_name = "all|NAME,...")]
    points: Vec<String>,

    /// How migration points are answered on this machine: `flag` takes the in-wasm fast path,
    /// `host` sends every call through the host import (the path offloading uses).
    #[arg(long, value_enum, default_value_t = ModeArg::Flag, requires = "points")]
    point_mode: ModeArg,

    /// Do not use the compiled-module cache.
    #[arg(long)]
    no_cache: bool,

    /// Offload these functions (same names as --points) to a clone: each call ships the thread's
    /// state there, runs there, and merges back; any failure runs it here instead.
    #[arg(long, value_name = "NAME,...", conflicts_with = "points", group = "offloading")]
    offload: Vec<String>,

    /// The clone: `local` (a clone in this process on a loopback port, the default with
    /// --offload), `local:N` (N of them), or HOST:PORT of a `clonecloud serve`; several,
    /// comma-separated, are tried in order when one cannot be reached (the remote ones with the
    /// same --key and --clone-key).
    /// Without --offload, what to offload is chosen at launch: the link is measured and the
    /// module's stored profile solved for it.
    #[arg(long, value_name = "local[:N]|HOST:PORT[,...]", group = "offloading")]
    clone: Option<String>,

    /// For a choice at launch: minimize `time` or device `energy`.
    #[arg(long, value_name = "time|energy", default_value = "time", requires = "clone")]
    objective: String,

    /// For a choice at launch: print on stderr what was measured, what was chosen and why.
    #[arg(long, requires = "clone")]
    explain: bool,

    /// Ask each migration of the first K clones of --clone (one after the other) and merge an
    /// answer only when all K gave the same; any difference is reported (`--stats` fallbacks
    /// cause `mismatch`, a warning) and the call runs here.
    #[arg(long, value_name = "K", default_value_t = 1, requires = "offloading")]
    redundant: usize,

    /// This device's private key (for a remote clone; `clonecloud keygen` makes one).
    #[arg(long, value_name = "FILE", requires = "clone")]
    key: Option<std::path::PathBuf>,

    /// The clone server's public key, pinned (for a remote clone).
    #[arg(long, value_name = "FILE", requires = "clone")]
    clone_key: Option<std::path::PathBuf>,

    /// Seconds one migration may take, from its start to the clone's answer, before the device
    /// runs it here (whatever the clone sends meanwhile: trickled bytes or calls back to the
    /// device do not extend it).
    #[arg(long, value_name = "SECS", default_value_t = 60.0, requires = "offloading")]
    clone_timeout: f64,

    /// How state deltas and files travel: `auto` (LZ4 on fast links, zstd on slow ones, by the
    /// throughput measured), `lz4`, `zstd` or `none`.
    #[arg(long, value_enum, default_value_t = CompressionArg::Auto, requires = "offloading")]
    compression: CompressionArg,

    /// The device's engine: `cranelift`, or `pulley` (wasmtime's interpreter, standing for a
    /// phone).
    #[arg(long, value_enum, default_value_t = crate::EngineArg::Cranelift)]
    device_engine: crate::EngineArg,

    /// The device's camera (the device API, docs/device-api.md): its frames are the files of
    /// DIR, taken in name order.
    #[arg(long, value_name = "DIR")]
    camera: Option<std::path::PathBuf>,

    /// The device's position (the device API): a recorded track, `UNIX_MS,LATITUDE,LONGITUDE`
    /// per line, one fix per call.
    #[arg(long, value_name = "TRACK.csv")]
    gps: Option<std::path::PathBuf>,

    /// The device's memory budget for the guest, MiB: a partition chosen at launch offloads the
    /// functions whose calls would grow the guest's memory past it (their pages stay on the
    /// clone; only live pages come back). A run whose guest memory went past it anyway (no
    /// clone, a call ran here) says so on stderr.
    #[arg(long, value_name = "MIB")]
    device_memory: Option<u64>,

    /// Emulate a slower device: the guest's code runs at FRACTION of this engine's speed on
    /// this machine (every thread sleeps, after each millisecond or so of CPU, for as long as
    /// the slower device would have needed more). Host work (WASI, migrations) is not slowed.
    /// Works for multi-threaded modules, which the pulley engine does not run. Profiles learned
    /// and partitions chosen at launch are the paced device's (`cranelift@0.25`).
    #[arg(long, value_name = "FRACTION")]
    device_speed: Option<f64>,

    /// Write what offloading did (migrations, fallbacks and causes, bytes, times) as JSON.
    #[arg(long, value_name = "FILE", requires = "offloading")]
    stats: Option<std::path::PathBuf>,

    /// The module, then the arguments passed to it.
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_name = "app.wasm [ARGS]..."
    )]
    module_and_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressionArg {
    Auto,
    None,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Flag,
    Host,
}

pub fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    let module_path = std::path::PathBuf::from(&opts.module_and_args[0]);
    let wasm = crate::read_module(&module_path)?;
    let cache = if opts.no_cache { ModuleCache::disabled() } else { crate::device_cache()? };
    if clonecloud_exec::threads::uses_threads(&wasm) {
        return run_threaded(&opts, &wasm, &cache, &module_path);
    }
    // With a clone, nothing named and nothing known of this module yet, the run learns.
    if learns(&opts, &wasm)? {
        return learn(&opts, &wasm, &cache, &module_path);
    }
    // With a clone and nothing named, the partition is chosen now, for the link as it is.
    let launch_target = if opts.offload.is_empty() && opts.clone.is_some() { Some(target(&opts, &cache)?) } else { None };
    let choice = match &launch_target {
        Some(t) => choose_at_launch(&opts, &wasm, t)?,
        None => clonecloud_launch::Choice::default(),
    };
    let offload = !opts.offload.is_empty() || !choice.offload.is_empty();
    let chosen_at_launch = !choice.offload.is_empty();
    let points = if !opts.offload.is_empty() {
        clonecloud_launch::points::parse(&opts.offload).context("--offload")?
    } else if chosen_at_launch {
        Points::Named(choice.offload.clone())
    } else {
        clonecloud_launch::points::parse(&opts.points).context("--points")?
    };
    let expectations = &choice.expectations;
    // Offloaded points start with their flags set: every call goes out to the clone.
    let mode = match opts.point_mode {
        _ if offload => PointMode::Host,
        ModeArg::Flag => PointMode::Flag,
        ModeArg::Host => PointMode::Host,
    };
    let wasi = wasi_config(&opts)?;
    let pace = pace(&opts)?;
    let engine = clonecloud_exec::new_device_engine_with(mode, opts.device_engine.engine(), pace.is_some())?;
    let mut program = Program::prepare(&engine, &cache, &wasm, &points, mode)
        .with_context(|| format!("cannot run `{}`", module_path.display()))?;
    if let Some(p) = pace {
        program.set_pace(p)?;
    }
    let stats = std::sync::Arc::new(std::sync::Mutex::new(clonecloud_offload::Stats::default()));
    let migrator: Option<Box<dyn clonecloud_exec::Migrator>> = if offload {
        let mut target = match launch_target {
            Some(t) => t,
            None => target(&opts, &cache)?,
        };
        target.environment = clonecloud_wire::Environment {
            args: wasi.args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: wasi.env.iter().map(|(k, v)| format!("{k}={v}").into_bytes()).collect(),
        };
        target.dirs = wasi.dirs.iter().map(|d| clonecloud_files::Root { host: d.host.clone(), guest: d.guest.clone() }).collect();
        let witnesses = witnesses(&mut target, opts.redundant)?;
        let model = clonecloud_model::Module::parse_without_call_graph(&wasm)?;
        let names: Vec<String> = program.points().iter().map(|p| clonecloud_launch::points::name(&model, p.function)).collect();
        let mut offloader = clonecloud_offload::Offloader::new(target, program.layout().clone(), names.clone(), stats.clone());
        offloader.allow_device_calls(device_reach(&wasm, &program)?);
        if !witnesses.is_empty() {
            let own_stats = || std::sync::Arc::new(std::sync::Mutex::new(clonecloud_offload::Stats::default()));
            offloader.witnessed_by(witnesses.into_iter().map(|t| clonecloud_offload::Offloader::new(t, program.layout().clone(), names.clone(), own_stats())).collect());
        }
        if !expectations.is_empty() {
            offloader.watch(program.points().iter().map(|p| expectations.get(&p.function).copied()).collect());
        }
        // The clone gets the module and the directories now, while the program starts.
        offloader.send_ahead();
        Some(Box::new(offloader))
    } else {
        None
    };
    let started = std::time::Instant::now();
    let report = program
        .run_with(&wasi, migrator)
        .with_context(|| format!("failed to run `{}`", module_path.display()))?;
    if opts.explain && chosen_at_launch {
        explain_run(&stats.lock().unwrap_or_else(|e| e.into_inner()), started.elapsed(), choice.profiled_s);
    }
    if let Some(path) = &opts.stats {
        let stats = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let json = serde_json::to_string_pretty(&stats).expect("stats serialize") + "\n";
        std::fs::write(path, json).with_context(|| format!("cannot write the stats to `{}`", path.display()))?;
    }
    tracing::debug!(host_calls = report.host_calls, "run finished");
    over_budget(&opts, &report);
    Ok(finish(report.outcome, &module_path))
}

/// A multi-threaded (wasi-threads) module: run here, as `wasmtime run -S threads` runs it, with
/// `--points` as for any module (every thread's calls reach them). With `--offload`, or a
/// partition chosen at launch (`--clone` alone: its first run learns, as a single-threaded
/// module's does, and later ones choose for the link and the number of clones), a thread at one
/// of the functions migrates through a pool of sessions on the clones (`offload::pool`) while
/// the others run on; with `--redundant K`, each migration is asked of K clones.
fn run_threaded(opts: &Opts, wasm: &[u8], cache: &ModuleCache, module_path: &std::path::Path) -> anyhow::Result<ExitCode> {
    if !matches!(opts.device_engine, crate::EngineArg::Cranelift) {
        bail!("`{}` is multi-threaded (wasi-threads), which the pulley device engine does not run (wasmtime's interpreter has no threads): run it with --device-engine cranelift", module_path.display());
    }
    // With a clone and nothing named: the first run learns, later ones choose at launch.
    if learns(opts, wasm)? {
        return learn(opts, wasm, cache, module_path);
    }
    let launch_target = if opts.offload.is_empty() && opts.clone.is_some() { Some(target(opts, cache)?) } else { None };
    let choice = match &launch_target {
        Some(t) => choose_at_launch(opts, wasm, t)?,
        None => clonecloud_launch::Choice::default(),
    };
    let chosen_at_launch = !choice.offload.is_empty();
    let offload = !opts.offload.is_empty() || chosen_at_launch;
    let wasi = wasi_config(opts)?;
    let points = if !opts.offload.is_empty() {
        clonecloud_launch::points::parse(&opts.offload).context("--offload")?
    } else if chosen_at_launch {
        Points::Named(choice.offload.clone())
    } else {
        clonecloud_launch::points::parse(&opts.points).context("--points")?
    };
    // Offloaded points start with their flags set: every call goes out to the clone.
    let mode = match opts.point_mode {
        _ if offload => PointMode::Host,
        ModeArg::Flag => PointMode::Flag,
        ModeArg::Host => PointMode::Host,
    };
    // With points, every thread stops at safe points when a migrated call merges.
    let pace = pace(opts)?;
    let engine = clonecloud_exec::threads::new_threads_engine_with(mode, points != Points::None || pace.is_some())?;
    let mut program = Program::prepare(&engine, cache, wasm, &points, mode).with_context(|| format!("cannot run `{}`", module_path.display()))?;
    if let Some(p) = pace {
        program.set_pace(p)?;
    }
    let stats = std::sync::Arc::new(std::sync::Mutex::new(clonecloud_offload::Stats::default()));
    let migrator: Option<Box<dyn clonecloud_exec::Migrator>> = if offload {
        let mut target = match launch_target {
            Some(t) => t,
            None => target(opts, cache)?,
        };
        target.environment = clonecloud_wire::Environment {
            args: wasi.args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: wasi.env.iter().map(|(k, v)| format!("{k}={v}").into_bytes()).collect(),
        };
        target.dirs = wasi.dirs.iter().map(|d| clonecloud_files::Root { host: d.host.clone(), guest: d.guest.clone() }).collect();
        let model = clonecloud_model::Module::parse_without_call_graph(wasm)?;
        let names: Vec<String> = program.points().iter().map(|p| clonecloud_launch::points::name(&model, p.function)).collect();
        witnesses(&mut target.clone(), opts.redundant)?;
        let reach = device_reach(wasm, &program)?;
        let offloaders = clonecloud_offload::pool::offloaders(&target, |mut t| {
            // Each session's witnesses: the next K-1 clones after its own.
            let chosen = witnesses(&mut t, opts.redundant).unwrap_or_default();
            let mut o = clonecloud_offload::Offloader::new(t, program.layout().clone(), names.clone(), stats.clone());
            o.allow_device_calls(reach.clone());
            if !choice.expectations.is_empty() {
                o.watch(program.points().iter().map(|p| choice.expectations.get(&p.function).copied()).collect());
            }
            if !chosen.is_empty() {
                let own_stats = || std::sync::Arc::new(std::sync::Mutex::new(clonecloud_offload::Stats::default()));
                o.witnessed_by(chosen.into_iter().map(|w| clonecloud_offload::Offloader::new(w, program.layout().clone(), names.clone(), own_stats())).collect());
            }
            o
        });
        let pool = clonecloud_offload::pool::Pool::new(offloaders);
        // The clones get the module and the directories now, while the program starts.
        pool.send_ahead();
        Some(Box::new(pool))
    } else {
        None
    };
    let started = std::time::Instant::now();
    let report = program
        .run_threads(&wasi, migrator, clonecloud_exec::threads::exit_process)
        .with_context(|| format!("failed to run `{}`", module_path.display()))?;
    if opts.explain && chosen_at_launch {
        explain_run(&stats.lock().unwrap_or_else(|e| e.into_inner()), started.elapsed(), choice.profiled_s);
    }
    if let Some(path) = &opts.stats {
        let stats = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let json = serde_json::to_string_pretty(&stats).expect("stats serialize") + "\n";
        std::fs::write(path, json).with_context(|| format!("cannot write the stats to `{}`", path.display()))?;
    }
    over_budget(opts, &report);
    Ok(finish(report.outcome, module_path))
}

/// The guest's arguments, environment, directories and the device's hardware, from the
/// command line (stdio inherited).
fn wasi_config(opts: &Opts) -> anyhow::Result<WasiConfig> {
    Ok(WasiConfig {
        args: opts.module_and_args.clone(),
        env: opts.env.iter().map(|e| parse_env(e)).collect::<anyhow::Result<_>>()?,
        dirs: opts.dirs.iter().map(|d| DirMapping::parse(d)).collect(),
        stdio: Stdio::Inherit,
        hardware: hardware(opts.camera.as_deref(), opts.gps.as_deref())?,
    })
}

/// Per point of `program`, the device API functions its calls can reach (a clone may ask the
/// device for those only).
fn device_reach(wasm: &[u8], program: &Program) -> anyhow::Result<Vec<Vec<String>>> {
    let points: Vec<u32> = program.points().iter().map(|p| p.function).collect();
    if !clonecloud_model::Module::parse_without_call_graph(wasm)?.imports.iter().any(|i| i.class == clonecloud_model::ImportClass::Device) {
        return Ok(vec![Vec::new(); points.len()]);
    }
    Ok(clonecloud_offload::device_reach(&clonecloud_model::Module::parse(wasm)?, &points))
}

/// `--camera` and `--gps`, loaded and checked.
pub(crate) fn hardware(camera: Option<&std::path::Path>, gps: Option<&std::path::Path>) -> anyhow::Result<clonecloud_exec::hardware::HardwareConfig> {
    Ok(clonecloud_exec::hardware::HardwareConfig::load(camera, gps)?)
}

/// Whether this run learns: a clone, nothing named to offload, and no profile of this module
/// on this device yet.
fn learns(opts: &Opts, wasm: &[u8]) -> anyhow::Result<bool> {
    Ok(opts.offload.is_empty() && opts.clone.is_some() && !clonecloud_launch::has_profile(&crate::store()?, wasm, &device_key(opts)?)?)
}

/// The name profiles and partitions know this device by (its engine, paced or not).
fn device_key(opts: &Opts) -> anyhow::Result<String> {
    Ok(clonecloud_launch::device_key(opts.device_engine.engine(), pace(opts)?))
}

/// `--device-speed`, checked.
fn pace(opts: &Opts) -> anyhow::Result<Option<clonecloud_exec::Pace>> {
    opts.device_speed.map(|f| clonecloud_exec::Pace::new(f).map_err(|e| anyhow::anyhow!("--device-speed: {e}"))).transpose()
}

/// For `--redundant K`: the 2nd to Kth clones of `target` become targets of their own (the
/// witnesses), the rest stay its others (to fail over to).
fn witnesses(target: &mut clonecloud_offload::Target, k: usize) -> anyhow::Result<Vec<clonecloud_offload::Target>> {
    if k == 0 {
        bail!("--redundant 0: give how many clones each migration is asked of, 1 (the default) or more");
    }
    if k > target.others.len() + 1 {
        bail!(
            "--redundant {k} asks each migration of {k} clones, and --clone names {} (without it: `local`, one): name at least {k} (--clone A,B,... or local:{k}), or leave --redundant out",
            target.others.len() + 1
        );
    }
    let chosen: Vec<_> = target.others.drain(..k - 1).collect();
    Ok(chosen
        .into_iter()
        .map(|e| clonecloud_offload::Target { addr: e.addr, server_key: e.server_key, identity: e.identity, others: Vec::new(), ..target.clone() })
        .collect())
}

/// After a run chosen at launch (`--explain`): what moved, and the time against the run that
/// made the stored profile (all on this device).
fn explain_run(stats: &clonecloud_offload::Stats, took: std::time::Duration, profiled_s: f64) {
    let (up, down, remote): (u64, u64, f64) =
        stats.points.values().fold((0, 0, 0.0), |(u, d, r), p| (u + p.bytes_up_compressed, d + p.bytes_down_compressed, r + p.remote_ms));
    let kib = |b: u64| b as f64 / 1024.0;
    eprintln!(
        "clonecloud: {} migrations, {} fallbacks; moved {:.1} KiB up and {:.1} KiB down (state), {:.1} KiB of files; {:.0} ms ran on the clone",
        stats.migrations,
        stats.fallbacks.count,
        kib(up),
        kib(down),
        kib(stats.file_sync.bytes_on_wire),
        remote
    );
    let r = &stats.ready;
    if let Some(ms) = r.ready_ms {
        eprintln!(
            "clonecloud: the clone was ready {ms:.0} ms after launch ({}); {} migration points waited {:.0} ms for it, {} calls ran here meanwhile",
            if stats.module_upload_bytes > 0 { format!("module of {:.1} MiB sent and compiled there", r.module_bytes as f64 / (1 << 20) as f64) } else { "it had the module".to_string() },
            r.waits,
            r.waited_ms,
            r.local_calls
        );
    }
    if stats.migrations > 0 && profiled_s > 0.0 {
        let local = profiled_s;
        eprintln!("clonecloud: this run took {:.2} s; all here it took {local:.2} s: {:.1}x faster", took.as_secs_f64(), local / took.as_secs_f64().max(1e-9));
    }
}

/// Prints a trap as `wasmtime run` does and gives the exit code.
/// `--device-memory`, in bytes.
fn budget(opts: &Opts) -> anyhow::Result<Option<u64>> {
    opts.device_memory.map(|m| m.checked_mul(1 << 20).ok_or_else(|| anyhow::anyhow!("--device-memory {m}: more MiB than a 64-bit count of bytes holds"))).transpose()
}

/// Says on stderr when the guest's memory took more of the device than `--device-memory`.
fn over_budget(opts: &Opts, report: &clonecloud_exec::RunReport) {
    if let Some(mib) = opts.device_memory
        && report.memory_resident > mib.saturating_mul(1 << 20)
    {
        eprintln!(
            "clonecloud: the guest's memory went past the device's budget: {} MiB resident, of {mib} MiB (--device-memory){}",
            report.memory_resident >> 20,
            if opts.clone.is_some() || !opts.offload.is_empty() { "; what needed it ran here (no clone answered, or the partition kept it here)" } else { "; with --clone, the functions that need it are offloaded" }
        );
    }
}

fn finish(outcome: Outcome, module_path: &std::path::Path) -> ExitCode {
    if let Outcome::Trapped { trap, backtrace } = &outcome {
        eprintln!(
            "Error: failed to run main module `{}`: {trap}",
            module_path.display()
        );
        if let Some(bt) = backtrace
            && std::env::var_os("CLONECLOUD_BACKTRACE").is_some_and(|v| v != "0")
        {
            eprintln!("{bt}");
        }
    }
    exit_code(outcome.exit_code())
}

/// The first run of a module with a clone: it runs here, every migration candidate timed (a
/// light profile: no clone run, the state estimated), and what it learned is stored, so the
/// next run chooses its partition at launch. `clonecloud profile` makes a careful profile.
fn learn(opts: &Opts, wasm: &[u8], cache: &ModuleCache, module_path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let wasi = wasi_config(opts)?;
    let profile_opts = clonecloud_profile::Options {
        wasi,
        device_engine: opts.device_engine.engine(),
        policy: clonecloud_analyze::Policy::builtin(),
        bytes_threshold: std::time::Duration::from_millis(1),
        pace: pace(opts)?,
        thread_end: clonecloud_exec::threads::exit_process,
    };
    let learned = clonecloud_launch::learn(&crate::store()?, wasm, cache, &profile_opts).with_context(|| format!("cannot run `{}`", module_path.display()))?;
    if let Some(path) = &opts.stats {
        // Nothing migrated: the stats of a local run, for scripts that read them every run.
        let json = serde_json::to_string_pretty(&clonecloud_offload::Stats::default()).expect("stats serialize") + "\n";
        std::fs::write(path, json).with_context(|| format!("cannot write the stats to `{}`", path.display()))?;
    }
    if opts.explain {
        eprintln!(
            "clonecloud: no profile of this module yet: ran it here with its {} candidates timed (the {} device measured {:.1}x slower than a clone); the next run chooses what to offload from it",
            learned.candidates,
            device_key(opts)?,
            learned.speed_ratio
        );
    }
    over_budget(opts, &learned.report);
    Ok(finish(learned.report.outcome, module_path))
}

/// The choice at launch (see `clonecloud_launch::choose`), explained on stderr with --explain.
fn choose_at_launch(opts: &Opts, wasm: &[u8], target: &clonecloud_offload::Target) -> anyhow::Result<clonecloud_launch::Choice> {
    let objective = clonecloud_partition::Objective::parse(&opts.objective)?;
    let choice = clonecloud_launch::choose(&crate::store()?, wasm, &device_key(opts)?, objective, target, budget(opts)?)?;
    if opts.explain {
        match (&choice.link, &choice.partition) {
            (Some(Err(e)), _) => eprintln!("clonecloud: cannot measure the link to {}: {e}; running locally", target.addr),
            (Some(Ok(link)), Some(p)) => {
                eprintln!("clonecloud: link to {}: {:.2} ms round trip, {:.1} Mbit/s (measured in {:.0} ms)", target.addr, link.rtt_ms, link.mbit, link.ms);
                if p.names.is_empty() {
                    eprintln!("clonecloud: for {}, nothing pays on this link: running locally", p.objective);
                } else {
                    eprintln!("clonecloud: for {}, offloading {} (the profile says it saves {:.3} {})", p.objective, p.names.join(", "), p.saving, if p.objective == "time" { "s" } else { "J" });
                }
            }
            _ => {}
        }
    }
    Ok(choice)
}

/// Where the clone is: the embedded clone, or a `clonecloud serve` with pinned keys.
fn target(opts: &Opts, cache: &ModuleCache) -> anyhow::Result<clonecloud_offload::Target> {
    let timeout = std::time::Duration::from_secs_f64(opts.clone_timeout.max(0.001));
    let compression = match opts.compression {
        CompressionArg::Auto => clonecloud_offload::CompressionPolicy::ByLink,
        CompressionArg::None => clonecloud_offload::CompressionPolicy::Fixed(clonecloud_wire::Compression::None),
        CompressionArg::Lz4 => clonecloud_offload::CompressionPolicy::Fixed(clonecloud_wire::Compression::Lz4),
        CompressionArg::Zstd => clonecloud_offload::CompressionPolicy::Fixed(clonecloud_wire::Compression::Zstd),
    };
    let spec = opts.clone.as_deref().unwrap_or("local");
    Ok(clonecloud_launch::clone_targets(&crate::home(), cache, spec, opts.key.clone(), opts.clone_key.clone(), timeout, compression)?)
}

/// The process exit status for a guest exit code (the low 8 bits, as the OS keeps them).
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(code as u8)
}

pub(crate) fn parse_env(spec: &str) -> anyhow::Result<(String, String)> {
    match spec.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        Some(_) => bail!("--env `{spec}`: the variable name is empty"),
        None => {
            let value = std::env::var(spec).with_context(|| {
                format!("--env `{spec}`: no such variable in this environment to pass on")
            })?;
            Ok((spec.to_string(), value))
        }
    }
}
