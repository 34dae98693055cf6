//! `clonecloud faults`: the fault matrix (see clonecloud-faults).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Args;
use clonecloud_faults::{Config, Program};

use crate::bench::Built;

/// Run each program under every fault (cuts before and inside every turn of the conversation,
/// a corrupted byte, duplicated and reordered TLS records, stalls past the timeout, the clone
/// SIGKILLed and restarted, out of memory, past its deadline, a trap, a flapping link) and check
/// each run against a plain local run: stdout, stderr, exit code and files. Prints the table and
/// the path the runtime took in each case (resume, retry, fallback); fails if any case differs.
/// Run it in the repository after `cargo xtask build` (or give where the programs are);
/// `cargo xtask faults ...` builds them and runs this.
#[derive(Debug, Args)]
pub struct Opts {
    /// The reduced set (as in CI): cuts before each turn and one of each other fault, on
    /// behavior-profile and the corpus programs.
    #[arg(long)]
    quick: bool,
    /// Programs: virus-scan, image-search, behavior-profile, stdin_echo (proxied stdin reads),
    /// files (file writes on the clone), panic (a trap). Default: all (with --quick:
    /// behavior-profile, stdin_echo, files, panic).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    programs: Vec<String>,
    /// The directory with the workloads' wasm modules (<app>.wasm); default: where `cargo xtask
    /// build` puts them in the repository (target/apps/wasm32-wasip1/release).
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
    /// The gen-data binary that writes the workloads' inputs (default:
    /// target/apps/release/gen-data in the repository).
    #[arg(long, value_name = "FILE")]
    gen_data: Option<PathBuf>,
    /// The directory with the test corpus's modules (stdin_echo.wasm, files.wasm, panic.wasm);
    /// default: target/corpus/wasm32-wasip1/release in the repository.
    #[arg(long, value_name = "DIR")]
    corpus: Option<PathBuf>,
    /// scikit-image's data directory for image-search's input (default:
    /// target/third-party/skimage-data in the repository).
    #[arg(long, value_name = "DIR")]
    third_party: Option<PathBuf>,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Instead of processes and sockets: the device's and the clone's protocol cores against
    /// each other in virtual time, with migrations, calls proxied to the device and a file
    /// replicated, under seeded fault schedules (cuts, duplicated and reordered records, stalls,
    /// the clone restarting with its state gone, failures half-way through), each checked
    /// against a run with no clone. Prints schedules per second and any
    /// divergence with its seed (replayable with --seed SEED --schedules 1).
    #[arg(long)]
    simulated: bool,
    /// With --simulated: how many schedules.
    #[arg(long, default_value_t = 10_000, requires = "simulated")]
    schedules: u64,
    /// With --simulated: the first schedule's seed.
    #[arg(long, default_value_t = 1, requires = "simulated")]
    seed: u64,
}

fn simulated(opts: &Opts) -> anyhow::Result<ExitCode> {
    let r = clonecloud_faults::simulated(opts.seed, opts.schedules, !opts.json);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let t = &r.tally;
        println!(
            "{} schedules (seeds {}..={}) in {:.2} s: {:.0} schedules/s",
            r.schedules,
            r.first_seed,
            r.first_seed + r.schedules.saturating_sub(1),
            r.seconds,
            r.schedules_per_second
        );
        println!("calls {}: {} on the clone, {} run locally; {} resumed, {} retried; {} calls proxied to the device; {} file contents sent; {} faults injected", t.calls, t.remote, t.fallbacks, t.resumes, t.retries, t.proxied, t.files_sent, t.faults);
        println!("divergences: {}", r.divergent);
        for d in &r.divergences {
            println!("  {d}");
        }
    }
    if r.divergent > 0 {
        bail!("{} of {} schedules did not end as the run with no clone (replay one with --seed SEED --schedules 1)", r.divergent, r.schedules);
    }
    Ok(ExitCode::SUCCESS)
}

const APPS: [(&str, &str); 3] = [
    ("virus-scan", "virus_scan::db::Database::scan"),
    ("image-search", "image_search::cascade::Cascade::detect"),
    ("behavior-profile", "behavior_profile::Classifier::train"),
];
const CORPUS: [&str; 3] = ["stdin_echo", "files", "panic"];

pub fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    if opts.simulated {
        return simulated(&opts);
    }
    let names: Vec<String> = if !opts.programs.is_empty() {
        opts.programs.clone()
    } else if opts.quick {
        ["behavior-profile", "stdin_echo", "files", "panic"].map(String::from).to_vec()
    } else {
        APPS.iter().map(|(a, _)| a.to_string()).chain(CORPUS.iter().map(|c| c.to_string())).collect()
    };
    for n in &names {
        if !APPS.iter().any(|(a, _)| a == n) && !CORPUS.contains(&n.as_str()) {
            bail!("no program `{n}` in the fault matrix: pick from virus-scan, image-search, behavior-profile, stdin_echo, files, panic");
        }
    }
    let built = Built::defaults(opts.modules.clone(), opts.gen_data.clone(), opts.corpus.clone(), opts.third_party.clone());
    let command = "faults";
    let apps: Vec<String> = names.iter().filter(|n| APPS.iter().any(|(a, _)| a == *n)).cloned().collect();
    // The apps' inputs, made once by gen-data; the files program's fixture.
    let scratch = crate::bench::repo_root().map(|r| r.join("target/faults")).unwrap_or_else(|| std::env::temp_dir().join("clonecloud-faults"));
    let inputs = scratch.join("inputs");
    let mut programs = Vec::new();
    if !apps.is_empty() {
        let gen_data = Built::need(&built.gen_data, "--gen-data FILE", command)?;
        let third_party = match apps.iter().any(|a| a == "image-search") {
            true => Some(Built::need(&built.third_party, "--third-party DIR", command)?),
            false => None,
        };
        for app in &apps {
            let wasm = Built::need(&built.modules.join(format!("{app}.wasm")), "--modules DIR", command)?.to_path_buf();
            let input = inputs.join(app);
            if !input.is_dir() {
                let mut cmd = Command::new(gen_data);
                cmd.args(["--app", app, "--size", "small", "--out"]).arg(&input);
                if let (Some(dir), "image-search") = (&third_party, app.as_str()) {
                    cmd.arg("--third-party").arg(dir);
                }
                let status = cmd.stdout(std::io::stderr()).status().context("cannot run gen-data")?;
                if !status.success() {
                    let _ = std::fs::remove_dir_all(&input);
                    bail!("gen-data --app {app} failed");
                }
            }
            let function = APPS.iter().find(|(a, _)| a == app).expect("checked").1;
            programs.push(Program { name: app.clone(), wasm, args: vec!["/input".into()], offload: function.into(), dir: Some((input, "/input".into())), stdin: Vec::new() });
        }
    }
    for name in names.iter().filter(|n| CORPUS.contains(&n.as_str())) {
        let wasm = Built::need(&built.corpus.join(format!("{name}.wasm")), "--corpus DIR", command)?.to_path_buf();
        let (dir, stdin) = match name.as_str() {
            "files" => {
                // The files program's fixture: a few files it reads and writes (copied per case).
                let root = crate::bench::repo_root().context("the files program's fixture is tests/corpus/fixtures/data: run clonecloud faults in the clonecloud repository")?;
                (Some((root.join("tests/corpus/fixtures/data"), "/data".to_string())), Vec::new())
            }
            "stdin_echo" => (None, "a line of input for the device to read\n".repeat(4000).into_bytes()),
            _ => (None, Vec::new()),
        };
        programs.push(Program { name: name.clone(), wasm, args: Vec::new(), offload: "all".into(), dir, stdin });
    }
    let clonecloud: PathBuf = std::env::current_exe().context("cannot find the clonecloud binary")?;
    let cfg = Config { clonecloud, programs, quick: opts.quick, progress: !opts.json };
    let report = clonecloud_faults::run(&cfg)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if report.passed != report.tried {
        bail!("{} of {} fault cases did not end as the local run did", report.tried - report.passed, report.tried);
    }
    Ok(ExitCode::SUCCESS)
}
