//! `clonecloud bench paper`: the paper's table and figures (see clonecloud-bench).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
/// results.json and time/energy figures (SVG, PNG) into --out. The workloads are built by
/// `cargo xtask build` (or give --modules, --gen-data and --third-party); `cargo xtask bench
/// paper ...` builds them and runs this.
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
    /// Workloads (default all four: the paper's three and image-search-mt, the multi-threaded
    /// one, whose rows are the Multiplicity table).
    #[arg(long, value_name = "APP,...", value_delimiter = ',')]
    apps: Vec<String>,
    /// The CC configurations' networks: `wifi`, `3g` or `BW_MBIT,RTT_MS`, separated by `;`.
    #[arg(long, value_name = "NET;NET", value_delimiter = ';', default_value = "wifi;3g")]
    networks: Vec<String>,
    /// What the partitions minimize: `time` or device `energy`.
    #[arg(long, value_name = "time|energy", default_value = "time")]
    objective: String,
    /// The directory with the workloads' wasm modules (<app>.wasm); default: where `cargo xtask
    /// build` puts them in the repository (target/apps/wasm32-wasip1/release).
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
    /// The directory with the multi-threaded workload's module (image-search-mt.wasm); default:
    /// where `cargo xtask build` puts it (target/apps/wasm32-wasip1-threads/release).
    #[arg(long, value_name = "DIR")]
    threaded_modules: Option<PathBuf>,
    /// The gen-data binary (default: target/apps/release/gen-data in the repository).
    #[arg(long, value_name = "FILE")]
    gen_data: Option<PathBuf>,
    /// scikit-image's data directory for image-search (default:
    /// target/third-party/skimage-data in the repository, fetched by `cargo xtask build`).
    #[arg(long, value_name = "DIR")]
    third_party: Option<PathBuf>,
    /// Print the results as JSON on stdout (instead of the Markdown table).
    #[arg(long)]
    json: bool,
}

const APPS: [&str; 4] = ["virus-scan", "image-search", "behavior-profile", clonecloud_bench::paper::DEVICE_APP];
/// The multi-threaded workload (wasm32-wasip1-threads), its Multiplicity rows apart.
const THREADED_APP: &str = "image-search-mt";
const SIZES: [&str; 3] = ["small", "medium", "large"];

pub fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    let BenchCommand::Paper(opts) = opts.command;
    let chosen: Vec<String> = if opts.apps.is_empty() { APPS.iter().chain([&THREADED_APP]).map(|a| a.to_string()).collect() } else { opts.apps.clone() };
    if let Some(a) = chosen.iter().find(|a| !APPS.contains(&a.as_str()) && a.as_str() != THREADED_APP) {
        bail!("--apps: unknown workload `{a}`; the workloads are {}, {THREADED_APP}", APPS.join(", "));
    }
    let threaded_app = chosen.iter().any(|a| a == THREADED_APP);
    let apps: Vec<String> = chosen.into_iter().filter(|a| a != THREADED_APP).collect();
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
    let mut built = Built::defaults(opts.modules.clone(), opts.gen_data.clone(), None, opts.third_party.clone());
    if let Some(dir) = &opts.threaded_modules {
        built.threaded_modules = dir.clone();
    }
    for app in &apps {
        Built::need(&built.modules.join(format!("{app}.wasm")), "--modules DIR", "bench paper")?;
    }
    let gen_data = Built::need(&built.gen_data, "--gen-data FILE", "bench paper")?.to_path_buf();
    let threaded = match threaded_app {
        true => {
            let module = built.threaded_modules.join(format!("{THREADED_APP}.wasm"));
            Built::need(&module, "--threaded-modules DIR", "bench paper")?;
            Some(clonecloud_bench::paper::Threaded {
                app: THREADED_APP.into(),
                module,
                input_of: "image-search".into(),
                sibling: Built::need(&built.modules.join("image-search.wasm"), "--modules DIR", "bench paper")?.to_path_buf(),
                threads: 4,
                offload: vec!["image_search_mt::search_shard".into()],
                clones: 2,
            })
        }
        false => None,
    };
    let third_party = match threaded_app || apps.iter().any(|a| a == "image-search") {
        true => Some(Built::need(&built.third_party, "--third-party DIR", "bench paper")?.to_path_buf()),
        false => None,
    };
    let modules = built.modules;
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
        threaded,
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

/// What `cargo xtask build` puts into the repository holding the current directory: the
/// workloads' modules, gen-data, the test corpus and image-search's third-party data. Each flag
/// given replaces its default; a default that is not there is an error naming what to run.
pub(crate) struct Built {
    pub modules: PathBuf,
    pub threaded_modules: PathBuf,
    pub gen_data: PathBuf,
    pub corpus: PathBuf,
    pub third_party: PathBuf,
}

impl Built {
    pub(crate) fn defaults(modules: Option<PathBuf>, gen_data: Option<PathBuf>, corpus: Option<PathBuf>, third_party: Option<PathBuf>) -> Built {
        let root = repo_root().unwrap_or_default();
        Built {
            modules: modules.unwrap_or_else(|| root.join("target/apps/wasm32-wasip1/release")),
            threaded_modules: root.join("target/apps/wasm32-wasip1-threads/release"),
            gen_data: gen_data.unwrap_or_else(|| root.join("target/apps/release/gen-data")),
            corpus: corpus.unwrap_or_else(|| root.join("target/corpus/wasm32-wasip1/release")),
            third_party: third_party.unwrap_or_else(|| root.join("target/third-party/skimage-data")),
        }
    }

    /// `path` (what `flag` names), or an error saying how to get it.
    pub(crate) fn need<'a>(path: &'a Path, flag: &str, command: &str) -> anyhow::Result<&'a Path> {
        if path.exists() {
            return Ok(path);
        }
        bail!(
            "{} is not there: build the workloads, the test corpus and their data with `cargo xtask build` in the clonecloud repository (or run `cargo xtask {command}`, which builds them first), or give {flag}",
            path.display()
        )
    }
}

/// The clonecloud repository holding the current directory.
pub(crate) fn repo_root() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors().find(|d| is_repo(d)).map(Path::to_path_buf)
}

fn is_repo(dir: &Path) -> bool {
    dir.join("apps/gen-data/Cargo.toml").is_file() && dir.join("scripts/fetch-third-party").is_file()
}
