//! `clonecloud bench paper`: the paper's table and figures (see clonecloud-bench).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use clonecloud_partition::{Network, Objective};

/// Benchmarks.
#[derive(Debug, Args)]
pub struct Opts {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    Paper(PaperOpts),
}

/// Reproduce the paper's evaluation: each workload and input size as Phone (all local on the
/// emulated device, wasmtime's Pulley interpreter), CC-WiFi and CC-3G (offloading to a clone
/// on loopback through an emulated link), several runs each; time, modelled device energy,
/// partitions, bytes, and the ratio to the ideal bound. Writes report.md, results.csv,
/// results.json and time/energy figures (SVG, PNG) into --out. Run it from the repository: it
/// builds the workloads and fetches their third-party data unless --modules is given.
#[derive(Debug, Args)]
pub struct PaperOpts {
    /// Small inputs only and two runs per configuration: a few minutes.
    #[arg(long)]
    quick: bool,
    /// Where the results go.
    #[arg(long, value_name = "DIR", default_value = "target/bench-paper")]
    out: PathBuf,
    /// Measured runs per configuration, after one first run (default 3; 2 with --quick).
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Input sizes (default small,medium,large; small with --quick).
    #[arg(long, value_name = "small,medium,large", value_delimiter = ',')]
    sizes: Vec<String>,
    /// Workloads (default all three).
    #[arg(long, value_name = "APP,...", value_delimiter = ',')]
    apps: Vec<String>,
    /// The CC configurations' networks: `wifi`, `3g` or `BW_MBIT,RTT_MS`, separated by `;`.
    #[arg(long, value_name = "NET;NET", value_delimiter = ';', default_value = "wifi;3g")]
    networks: Vec<String>,
    /// What the partitions minimize: `time` or device `energy`.
    #[arg(long, value_name = "time|energy", default_value = "time")]
    objective: String,
    /// The directory with the workloads' wasm modules (<app>.wasm); default: build them into
    /// target/apps.
    #[arg(long, value_name = "DIR", requires = "gen_data")]
    modules: Option<PathBuf>,
    /// The gen-data binary (with --modules).
    #[arg(long, value_name = "FILE")]
    gen_data: Option<PathBuf>,
    /// scikit-image's data directory for image-search (default: fetched into
    /// target/third-party/skimage-data).
    #[arg(long, value_name = "DIR")]
    third_party: Option<PathBuf>,
    /// Print the results as JSON on stdout (instead of the Markdown table).
    #[arg(long)]
    json: bool,
}

const APPS: [&str; 3] = ["virus-scan", "image-search", "behavior-profile"];
const SIZES: [&str; 3] = ["small", "medium", "large"];

pub fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    let BenchCommand::Paper(opts) = opts.command;
    let apps: Vec<String> = if opts.apps.is_empty() { APPS.map(String::from).to_vec() } else { opts.apps.clone() };
    if let Some(a) = apps.iter().find(|a| !APPS.contains(&a.as_str())) {
        bail!("--apps: unknown workload `{a}`; the workloads are {}", APPS.join(", "));
    }
    let sizes: Vec<String> = match (&opts.sizes[..], opts.quick) {
        ([], true) => vec!["small".into()],
        ([], false) => SIZES.map(String::from).to_vec(),
        (s, _) => s.to_vec(),
    };
    if let Some(s) = sizes.iter().find(|s| !SIZES.contains(&s.as_str())) {
        bail!("--sizes: unknown size `{s}`; give small, medium or large");
    }
    let links = opts
        .networks
        .iter()
        .map(|n| Network::parse(n.trim()).map(|net| (clonecloud_bench::paper::config_name(&net), net)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let objective = Objective::parse(&opts.objective).map_err(anyhow::Error::msg)?;
    let reps = opts.reps.unwrap_or(if opts.quick { 2 } else { 3 });
    if reps == 0 {
        bail!("--reps 0: give at least one run per configuration");
    }
    let (modules, gen_data, third_party) = match (&opts.modules, &opts.gen_data) {
        (Some(m), Some(g)) => (m.clone(), g.clone(), opts.third_party.clone()),
        _ => build_workloads(&apps, opts.third_party.clone())?,
    };
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    let config = clonecloud_bench::Config {
        clonecloud: std::env::current_exe().context("cannot find this clonecloud binary")?,
        modules,
        gen_data,
        third_party,
        out: opts.out.clone(),
        apps,
        sizes,
        reps,
        links,
        objective,
        quick: opts.quick,
        progress: !opts.json,
    };
    let report = clonecloud_bench::paper::run(&config)?;
    let mut out = std::io::stdout().lock();
    if opts.json {
        out.write_all(report.json().as_bytes())?;
    } else {
        out.write_all(report.markdown().as_bytes())?;
        writeln!(out, "\nWritten to {}: report.md, results.csv, results.json, time.svg, time.png, energy.svg, energy.png", opts.out.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the workloads (wasm) and gen-data (native) into target/apps of the repository this
/// command runs in, and fetches image-search's third-party data.
pub(crate) fn build_workloads(apps: &[String], third_party: Option<PathBuf>) -> anyhow::Result<(PathBuf, PathBuf, Option<PathBuf>)> {
    let root = repo_root().context(
        "bench paper builds the workloads from the clonecloud repository: run it there, or give --modules DIR (with <app>.wasm) and --gen-data FILE",
    )?;
    let target = root.join("target/apps");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut wasm = Command::new(&cargo);
    wasm.current_dir(&root).args(["build", "--release", "--locked", "--quiet", "--target", "wasm32-wasip1", "--target-dir"]).arg(&target);
    for app in apps {
        wasm.args(["-p", app]);
    }
    let mut native = Command::new(&cargo);
    native.current_dir(&root).args(["build", "--release", "--locked", "--quiet", "-p", "gen-data", "--target-dir"]).arg(&target);
    for (what, mut cmd) in [("the workloads", wasm), ("gen-data", native)] {
        eprintln!("clonecloud: building {what}");
        let status = cmd.env_remove("RUSTFLAGS").env_remove("CARGO_TARGET_DIR").status().with_context(|| format!("cannot run cargo to build {what}"))?;
        if !status.success() {
            bail!("building {what} failed (see cargo's messages above)");
        }
    }
    let third_party = match third_party {
        Some(dir) => Some(dir),
        None if apps.iter().any(|a| a == "image-search") => {
            // (Its messages go to stderr: stdout may be --json.)
            let status = Command::new("bash").arg(root.join("scripts/fetch-third-party")).stdout(std::io::stderr()).status().context("cannot run scripts/fetch-third-party")?;
            if !status.success() {
                bail!("scripts/fetch-third-party failed (see its message above)");
            }
            Some(root.join("target/third-party/skimage-data"))
        }
        None => None,
    };
    Ok((target.join("wasm32-wasip1/release"), target.join("release/gen-data"), third_party))
}

/// The clonecloud repository holding the current directory.
pub(crate) fn repo_root() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors().find(|d| is_repo(d)).map(Path::to_path_buf)
}

fn is_repo(dir: &Path) -> bool {
    dir.join("apps/gen-data/Cargo.toml").is_file() && dir.join("scripts/fetch-third-party").is_file()
}
