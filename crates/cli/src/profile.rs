//! `clonecloud profile`: the dynamic profiler's run, as a summary or as JSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clonecloud_analyze::Policy;
use clonecloud_exec::{DirMapping, Stdio, WasiConfig};

/// Run the app with hooks on every migration candidate, on the device's engine and on the
/// clone's, and show where time goes and what migrating would move.
#[derive(Debug, Args)]
pub struct Opts {
    /// Preopen a host directory, as `run` does.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,
    /// The device's camera, as `run` has it (the device API).
    #[arg(long, value_name = "DIR")]
    camera: Option<std::path::PathBuf>,
    /// The device's track, as `run` has it (the device API).
    #[arg(long, value_name = "TRACK.csv")]
    gps: Option<std::path::PathBuf>,
    /// Set an environment variable for the guest, as `run` does.
    #[arg(long = "env", value_name = "NAME[=VAL]")]
    env: Vec<String>,
    /// The device's engine: `cranelift` (this machine is the device) or `pulley` (wasmtime's
    /// interpreter, standing for a phone).
    #[arg(long, value_enum, default_value_t = crate::EngineArg::Cranelift)]
    device_engine: crate::EngineArg,
    /// An import policy for the analyzer (see `clonecloud analyze`).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Calls shorter than this (milliseconds, on the device) are not measured for bytes.
    #[arg(long, value_name = "MS", default_value_t = 1.0)]
    bytes_threshold: f64,
    /// Print JSON (the whole profile tree) instead of a summary.
    #[arg(long)]
    json: bool,
    /// The module, then the arguments passed to it.
    #[arg(required = true, trailing_var_arg = true, value_name = "app.wasm [ARGS]...")]
    module_and_args: Vec<String>,
}

pub fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    let module_path = PathBuf::from(&opts.module_and_args[0]);
    let wasm = crate::read_module(&module_path)?;
    let policy = match &opts.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::builtin(),
    };
    let wasi = WasiConfig {
        args: opts.module_and_args.clone(),
        env: opts.env.iter().map(|e| crate::run::parse_env(e)).collect::<anyhow::Result<_>>()?,
        dirs: opts.dirs.iter().map(|d| DirMapping::parse(d)).collect(),
        stdio: Stdio::Null,
        hardware: crate::run::hardware(opts.camera.as_deref(), opts.gps.as_deref())?,
    };
    let cache = crate::device_cache()?;
    let device_engine = opts.device_engine.engine();
    let profile_opts = clonecloud_profile::Options {
        wasi,
        device_engine,
        policy,
        bytes_threshold: Duration::from_secs_f64(opts.bytes_threshold.max(0.0) / 1e3),
        pace: None,
        thread_end: clonecloud_exec::threads::exit_process,
    };
    let profile = clonecloud_profile::profile(&wasm, &cache, &profile_opts).with_context(|| format!("cannot profile `{}`", module_path.display()))?;
    // Kept for `clonecloud partition` and the choice at launch.
    clonecloud_launch::store_profile(&crate::store()?, &wasm, profile.clone(), &profile_opts)?;
    let mut out = std::io::stdout().lock();
    if opts.json {
        serde_json::to_writer(&mut out, &profile)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    writeln!(
        out,
        "{}: {} candidates, {} calls kept; whole run {:.1} ms on {} (hooks {:.1} ms), {:.1} ms on cranelift (hooks {:.1} ms)",
        module_path.display(),
        profile.candidates.len(),
        profile.invocations.len(),
        ms(profile.device_total_ns),
        profile.device_engine,
        ms(profile.device_hooks_ns),
        ms(profile.clone_total_ns),
        ms(profile.clone_hooks_ns)
    )?;
    writeln!(out, "{:>9} {:>11} {:>11} {:>8} {:>12} {:>12}  function", "calls", "device_ms", "clone_ms", "speedup", "up_KiB/call", "down_KiB/call")?;
    for s in profile.functions.iter().take(20) {
        let per = |b: u64| if s.measured_calls == 0 { "-".to_string() } else { format!("{:.1}", b as f64 / s.measured_calls as f64 / 1024.0) };
        let speedup = if s.clone_ns == 0 { "-".to_string() } else { format!("{:.1}", s.device_ns as f64 / s.clone_ns as f64) };
        let name = profile.names.get(s.function as usize).map_or("?", String::as_str);
        let unhooked = s.unhooked_after.map_or(String::new(), |n| format!(" (unhooked after {n} calls)"));
        writeln!(out, "{:>9} {:>11.2} {:>11.2} {:>8} {:>12} {:>12}  {name}{unhooked}", s.calls, ms(s.device_ns), ms(s.clone_ns), speedup, per(s.bytes_up), per(s.bytes_down))?;
    }
    Ok(ExitCode::SUCCESS)
}
