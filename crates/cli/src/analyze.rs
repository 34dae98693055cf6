//! `clonecloud analyze`: the static analyzer's findings, as a summary or as JSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clonecloud_analyze::{Class, Placement, Policy};

/// Find the functions that may migrate, those pinned to the device (with the call path that
/// pins them), and the constraints a partition must respect.
#[derive(Debug, Args)]
pub struct Opts {
    /// The module to analyze.
    module: PathBuf,
    /// An import policy (TOML: `device-only = ["env.camera_*"]`, also `clone-only`, `pure`,
    /// `proxiable`), checked before the built-in defaults.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Print JSON (for scripts) instead of a summary.
    #[arg(long)]
    json: bool,
}

pub fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    let wasm = crate::read_module(&opts.module)?;
    let module = clonecloud_model::Module::parse(&wasm).with_context(|| format!("cannot analyze `{}`", opts.module.display()))?;
    let policy = match &opts.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::builtin(),
    };
    let analysis = clonecloud_analyze::analyze(&module, &policy);
    let mut out = std::io::stdout().lock();
    if opts.json {
        serde_json::to_writer_pretty(&mut out, &analysis)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let count = |c: Class| analysis.imports.iter().filter(|i| i.class == c).count();
    let placed = |p: Placement| analysis.functions.iter().filter(|f| f.placement == p).count();
    writeln!(out, "{}: {} defined functions, {} imported", opts.module.display(), analysis.functions.len(), analysis.imports.len())?;
    writeln!(
        out,
        "imports: {} proxiable, {} pure, {} device (proxied), {} device-only, {} clone-only",
        count(Class::Proxiable),
        count(Class::Pure),
        count(Class::Device),
        count(Class::DeviceOnly),
        count(Class::CloneOnly)
    )?;
    for i in analysis.imports.iter().filter(|i| matches!(i.class, Class::DeviceOnly | Class::CloneOnly | Class::Device)) {
        writeln!(out, "  {}.{}: {}", i.module, i.name, i.class.label())?;
    }
    writeln!(
        out,
        "candidates: {}; pinned to the device: {}; clone only: {}; nowhere: {}",
        analysis.candidates().len(),
        placed(Placement::Device),
        placed(Placement::Clone),
        placed(Placement::Nowhere)
    )?;
    for f in analysis.functions.iter().filter(|f| !f.path.is_empty()) {
        writeln!(out, "  {}: {}", f.name, f.reason.as_deref().unwrap_or(""))?;
        writeln!(out, "    {}", f.path.join(" -> "))?;
    }
    for f in analysis.functions.iter().filter(|f| !f.device_path.is_empty()) {
        writeln!(out, "  {}: reaches the device's hardware: may migrate, each such call from the clone a round trip to the device", f.name)?;
        writeln!(out, "    {}", f.device_path.join(" -> "))?;
    }
    let pairs: usize = analysis.nesting.iter().map(|n| n.inner.len()).sum();
    writeln!(out, "nesting: {pairs} pairs of candidates where one can reach the other (at most one of each migrates)")?;
    for note in &analysis.notes {
        writeln!(out, "note: {note}")?;
    }
    Ok(ExitCode::SUCCESS)
}
