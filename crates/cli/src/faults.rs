//! `clonecloud faults`: the fault matrix (see clonecloud-faults).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Args;
use clonecloud_faults::{Config, Program};

/// Run each program under every fault (cuts before and inside every turn of the conversation,
/// a corrupted byte, duplicated and reordered TLS records, stalls past the timeout, the clone
/// SIGKILLed and restarted, out of memory, past its deadline, a trap, a flapping link) and check
/// each run against a plain local run: stdout, stderr, exit code and files. Prints the table and
/// the path the runtime took in each case (resume, retry, fallback); fails if any case differs.
/// Run it from the repository: it builds the workloads and the test corpus.
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
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Instead of processes and sockets: the device's and the clone's protocol cores against
    /// each other in virtual time, under seeded fault schedules (cuts, duplicated and reordered
    /// records, stalls, the clone restarting with its state gone, failures half-way through),
    /// each checked against a run with no clone. Prints schedules per second and any
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
        println!("calls {}: {} on the clone, {} run locally; {} resumed, {} retried; {} faults injected", t.calls, t.remote, t.fallbacks, t.resumes, t.retries, t.faults);
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
    let root = crate::bench::repo_root().context("clonecloud faults builds its programs from the clonecloud repository: run it there")?;
    let apps: Vec<String> = names.iter().filter(|n| APPS.iter().any(|(a, _)| a == *n)).cloned().collect();
    let inputs = root.join("target/faults/inputs");
    let mut programs = Vec::new();
    if !apps.is_empty() {
        let (modules, gen_data, third_party) = crate::bench::build_workloads(&apps, None)?;
        for app in &apps {
            let input = inputs.join(app);
            if !input.is_dir() {
                let mut cmd = Command::new(&gen_data);
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
            programs.push(Program {
                name: app.clone(),
                wasm: modules.join(format!("{}.wasm", app)),
                args: vec!["/input".into()],
                offload: function.into(),
                dir: Some((input, "/input".into())),
                stdin: Vec::new(),
            });
        }
    }
    let corpus: Vec<&String> = names.iter().filter(|n| CORPUS.contains(&n.as_str())).collect();
    if !corpus.is_empty() {
        let target = root.join("target/corpus");
        eprintln!("clonecloud: building the test corpus");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--target", "wasm32-wasip1", "--manifest-path"])
            .arg(root.join("tests/corpus/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .context("cannot run cargo to build the test corpus")?;
        if !status.success() {
            bail!("building tests/corpus failed (see cargo's messages above)");
        }
        for name in corpus {
            let (dir, stdin) = match name.as_str() {
                "files" => (Some((root.join("tests/corpus/fixtures/data"), "/data".to_string())), Vec::new()),
                "stdin_echo" => (None, "a line of input for the device to read\n".repeat(4000).into_bytes()),
                _ => (None, Vec::new()),
            };
            programs.push(Program { name: name.clone(), wasm: target.join(format!("wasm32-wasip1/release/{name}.wasm")), args: Vec::new(), offload: "all".into(), dir, stdin });
        }
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
