//! `clonecloud bench paper`: the paper's table, from real runs.
//!
//! Everything goes through the `clonecloud` binary, as a user would run it: `gen-data` writes each
//! input, `run --device-engine pulley` is the Phone, `profile` and `partition --network` choose
//! what to offload, `serve` is the clone (Cranelift, spawned on loopback), and a [`Link`] per
//! network (this crate's process) stands between device and clone. Each device run is a child
//! process: its wall time is measured here, its CPU time comes from `getrusage(RUSAGE_CHILDREN)`
//! around its wait, and the link counts its bytes; [`PowerModel::energy`] turns them into joules.
//! Every run's stdout, stderr and exit code must equal the Phone run's, or the bench fails.

use crate::report::{LinkInfo, Multiplicity, PHONE, Report, Row, Speed, Spread, ThreadRow};
use clonecloud_harness::ServeChild;
use clonecloud_linkem::{Counters, Link, Shape};
use clonecloud_stats::Stats;
use clonecloud_partition::{Energy, Network, Objective, Partition, PowerModel, RunMeasure};
use clonecloud_profile::Profile;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The workload that uses the device API (camera, position, screen).
pub const DEVICE_APP: &str = "photo-tagger";

/// What to run and where.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `clonecloud` binary.
    pub clonecloud: PathBuf,
    /// The directory holding `<app>.wasm` for every app.
    pub modules: PathBuf,
    /// The `gen-data` binary.
    pub gen_data: PathBuf,
    /// scikit-image's data directory for image-search's inputs (gen-data's default if `None`).
    pub third_party: Option<PathBuf>,
    /// Where the report, the figures and the work files go.
    pub out: PathBuf,
    pub apps: Vec<String>,
    pub sizes: Vec<String>,
    /// Measured runs per configuration (after one first run).
    pub reps: usize,
    /// The CC configurations: name (`CC-WiFi`) and network.
    pub links: Vec<(String, Network)>,
    pub objective: Objective,
    pub quick: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// The multi-threaded workload (Multiplicity), if it is run.
    pub threaded: Option<Threaded>,
}

/// The multi-threaded workload and how it is offloaded.
#[derive(Debug, Clone)]
pub struct Threaded {
    /// Its name in the report (`image-search-mt`).
    pub app: String,
    /// Its wasm32-wasip1-threads module.
    pub module: PathBuf,
    /// The workload whose inputs it reads (gen-data's `--app`), single-threaded: the phone is
    /// paced to Pulley's speed on it.
    pub input_of: String,
    /// That workload's wasm32-wasip1 module.
    pub sibling: PathBuf,
    /// Worker threads (its argument after the input directory).
    pub threads: usize,
    /// The worker's function, offloaded by name (`--offload`): the optimizer does not partition
    /// multi-threaded modules yet.
    pub offload: Vec<String>,
    /// The most clones a CC row offloads to (rows for 1 and for this many).
    pub clones: usize,
}

/// Why the evaluation stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Failed(String),
    #[error("the report is inconsistent: {0}")]
    Inconsistent(String),
    #[error("cannot draw the figure {path}: {message}")]
    Figure { path: PathBuf, message: String },
    #[error("{app} {size} {config}: the output differs from the Phone run ({detail}); offloading changed what the program did")]
    Differs { app: String, size: String, config: String, detail: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// One finished child process.
#[derive(Debug)]
struct Output {
    wall_s: f64,
    cpu_s: f64,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    code: Option<i32>,
}

/// CPU time (user + system) of the waited-for children so far, seconds.
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs `cmd` to its end: times, output. Children are waited for one at a time, so the
/// difference in `RUSAGE_CHILDREN` is this child's CPU time.
fn measure(cmd: &mut Command, what: &str) -> Result<Output, BenchError> {
    let before = children_cpu_s();
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().map_err(io(format!("cannot start {what}")))?;
    let wall_s = start.elapsed().as_secs_f64();
    Ok(Output { wall_s, cpu_s: children_cpu_s() - before, stdout: out.stdout, stderr: out.stderr, code: out.status.code() })
}

fn checked(out: Output, what: &str) -> Result<Output, BenchError> {
    if out.code == Some(0) {
        Ok(out)
    } else {
        Err(BenchError::Failed(format!("{what} failed (exit {:?}): {}", out.code, String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// The keys and homes of one evaluation.
#[derive(Debug)]
struct Setup {
    work: PathBuf,
    device_home: PathBuf,
    device_key: PathBuf,
    server_pub: PathBuf,
}

struct Bench<'a> {
    cfg: &'a Config,
    setup: Setup,
    bar: ProgressBar,
    links: Vec<(String, Network, Link)>,
    /// Per other clone of the multi-threaded rows, its link per network (as `links`).
    other_links: Vec<Vec<Link>>,
}

/// Runs the whole evaluation and writes `report.md`, `results.csv`, `results.json` and the
/// figures into `config.out`.
pub fn run(cfg: &Config) -> Result<Report, BenchError> {
    let started = Instant::now();
    if cfg.reps == 0 || (cfg.apps.is_empty() && cfg.threaded.is_none()) || cfg.sizes.is_empty() {
        return Err(BenchError::Failed("nothing to run: give at least one app, one size and one repetition".into()));
    }
    for app in &cfg.apps {
        let wasm = cfg.modules.join(format!("{app}.wasm"));
        if !wasm.is_file() {
            return Err(BenchError::Failed(format!("{} is missing: build the workloads (cargo build --release --target wasm32-wasip1 -p {app})", wasm.display())));
        }
    }
    let work = cfg.out.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(io(format!("cannot clear {}", work.display())))?;
    }
    let setup = Setup {
        device_home: work.join("device-home"),
        device_key: work.join("keys/device.key"),
        server_pub: work.join("keys/server.pub"),
        work,
    };
    for d in [&setup.device_home, &setup.work.join("keys"), &setup.work.join("clone-home")] {
        std::fs::create_dir_all(d).map_err(io(format!("cannot create {}", d.display())))?;
    }
    let server = start_server(cfg, &setup, "clone-home", "serve.log")?;
    let mut links = Vec::new();
    for (name, network) in &cfg.links {
        let link = Link::start("127.0.0.1:0", &server.addr, Shape::symmetric(network.mbit, network.rtt_ms)).map_err(io(format!("cannot start the {name} link emulator")))?;
        links.push((name.clone(), *network, link));
    }
    // The other clones of the multi-threaded workload's rows, each behind links of its own.
    let mut others = Vec::new();
    let mut other_links = Vec::new();
    if let Some(t) = &cfg.threaded {
        for k in 1..t.clones {
            let home = format!("clone-home-{}", k + 1);
            std::fs::create_dir_all(setup.work.join(&home)).map_err(io("cannot create a clone's home"))?;
            let server = start_server(cfg, &setup, &home, &format!("serve-{}.log", k + 1))?;
            let mut per_network = Vec::new();
            for (name, network) in &cfg.links {
                per_network.push(Link::start("127.0.0.1:0", &server.addr, Shape::symmetric(network.mbit, network.rtt_ms)).map_err(io(format!("cannot start the {name} link emulator")))?);
            }
            others.push(server);
            other_links.push(per_network);
        }
    }
    // Per app and size: gen-data, first + reps Phone runs, 2 clone-engine runs, the profile, and
    // per link a partition and first + reps runs; for the multi-threaded workload, gen-data,
    // first + reps Phone runs, and per link and clone count first + reps runs (its calibration
    // is not counted).
    let per = 1 + (1 + cfg.reps) + 2 + 1 + cfg.links.len() * (1 + 1 + cfg.reps);
    let per_threaded = cfg.threaded.as_ref().map_or(0, |t| 1 + (1 + cfg.reps) + cfg.links.len() * (if t.clones > 1 { 2 } else { 1 }) * (1 + cfg.reps));
    let bar = if cfg.progress { ProgressBar::new((cfg.apps.len() * cfg.sizes.len() * per + cfg.sizes.len() * per_threaded) as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{elapsed_precise} [{bar:32}] {pos}/{len} {msg}").expect("a valid template").progress_chars("=> "));
    let mut bench = Bench { cfg, setup, bar, links, other_links };
    let mut rows = Vec::new();
    let mut speed = Vec::new();
    for app in &cfg.apps {
        for size in &cfg.sizes {
            let (r, s) = bench.app(app, size)?;
            rows.extend(r);
            speed.push(s);
        }
    }
    let multiplicity = match &cfg.threaded {
        Some(t) => {
            let mut rows = Vec::new();
            for size in &cfg.sizes {
                // Pulley's speed on the single-threaded sibling at this size: measured above
                // when it was among the apps, else now.
                let known = speed.iter().find(|s| s.app == t.input_of && s.size == *size).map(|s| s.ratio);
                rows.extend(bench.threaded(t, size, known)?);
            }
            Some(Multiplicity { rows })
        }
        None => None,
    };
    bench.bar.finish_and_clear();
    drop(server);
    drop(others);
    let report = Report {
        quick: cfg.quick,
        reps: cfg.reps,
        objective: cfg.objective.key().to_string(),
        apps: cfg.apps.clone(),
        sizes: cfg.sizes.clone(),
        links: cfg
            .links
            .iter()
            .map(|(c, n)| LinkInfo { config: c.clone(), network: n.key(), mbit: n.mbit, rtt_ms: n.rtt_ms, radio: format!("{:?}", n.radio).to_lowercase() })
            .collect(),
        power: PowerModel::default(),
        energy_is_modelled: crate::report::ENERGY_NOTE,
        speed,
        rows,
        multiplicity,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_outputs(&report, &cfg.out)?;
    report.check()?;
    Ok(report)
}

/// Writes the report's Markdown, CSV, JSON and figures into `out`.
pub fn write_outputs(report: &Report, out: &Path) -> Result<(), BenchError> {
    for (name, text) in [("report.md", report.markdown()), ("results.csv", report.csv()), ("results.json", report.json())] {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(io(format!("cannot write {}", path.display())))?;
    }
    crate::plot::figures(report, out)?;
    Ok(())
}

/// A `clonecloud serve` on loopback with its home in `home` (under the work directory); the
/// first one makes the keys, the others serve with the same.
fn start_server(cfg: &Config, setup: &Setup, home: &str, log: &str) -> Result<ServeChild, BenchError> {
    let keys = setup.work.join("keys");
    for name in ["device", "server"] {
        if keys.join(format!("{name}.key")).exists() {
            continue;
        }
        let out = measure(Command::new(&cfg.clonecloud).arg("keygen").arg("--out").arg(keys.join(name)), "clonecloud keygen")?;
        checked(out, "clonecloud keygen")?;
    }
    let allow = keys.join("allow");
    std::fs::copy(keys.join("device.pub"), &allow).map_err(io("cannot write the allow list"))?;
    let log_path = setup.work.join(log);
    let log = setup.work.join(log);
    let log = std::fs::File::create(&log).map_err(io(format!("cannot create {}", log.display())))?;
    let mut cmd = Command::new(&cfg.clonecloud);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--key"])
        .arg(keys.join("server.key"))
        .arg("--allow")
        .arg(&allow)
        .env("CLONECLOUD_HOME", setup.work.join(home))
        .stdin(Stdio::null())
        .stderr(log);
    ServeChild::spawn(cmd).map_err(|e| BenchError::Failed(format!("clonecloud serve did not start: {e} (see {})", log_path.display())))
}

/// What one device run measured.
#[derive(Debug, Default, Clone, Copy)]
struct RunFigures {
    wall_s: f64,
    cpu_s: f64,
    energy: Energy,
    link: Counters,
    migrations: u64,
    fallbacks: u64,
    /// The clone's execution time, seconds.
    remote_s: f64,
    /// State and file bytes the protocol sent each way (compressed frames).
    payload_up: u64,
    payload_down: u64,
    file_bytes: u64,
}

impl Bench<'_> {
    fn step(&self, msg: String) {
        self.bar.set_message(msg);
    }

    fn done(&self) {
        self.bar.inc(1);
    }

    fn clonecloud(&self) -> Command {
        let mut c = Command::new(&self.cfg.clonecloud);
        c.env("CLONECLOUD_HOME", &self.setup.device_home).env_remove("CLONECLOUD_LOG");
        c
    }

    /// All rows of one app at one size.
    fn app(&mut self, app: &str, size: &str) -> Result<(Vec<Row>, Speed), BenchError> {
        let cfg = self.cfg;
        let input = self.setup.work.join(format!("inputs/{app}-{size}"));
        self.step(format!("{app} {size}: writing the input"));
        let mut gen_data = Command::new(&cfg.gen_data);
        gen_data.args(["--app", app, "--size", size, "--out"]).arg(&input);
        if let Some(dir) = &cfg.third_party {
            gen_data.arg("--third-party").arg(dir);
        }
        checked(measure(&mut gen_data, "gen-data")?, &format!("gen-data --app {app} --size {size}"))?;
        self.done();
        let wasm = cfg.modules.join(format!("{app}.wasm"));
        // The device API's workload takes its frames and track from the device's camera and
        // GPS (docs/device-api.md), its model from the preopen.
        let (preopen, device) = match app {
            DEVICE_APP => (input.join("model"), ["--camera", "camera", "--gps", "track.csv"].map(|a| if a.starts_with("--") { a.to_string() } else { input.join(a).display().to_string() }).to_vec()),
            _ => (input.clone(), Vec::new()),
        };
        let dir = format!("{}::/input", preopen.display());
        let base = |engine: &str| -> Vec<String> { ["run", "--device-engine", engine, "--dir", &dir].map(String::from).into_iter().chain(device.iter().cloned()).collect() };
        let tail = [wasm.display().to_string(), "/input".to_string()];

        // Phone: a first run (fills the compiled-module cache) gives the reference output.
        self.step(format!("{app} {size}: Phone, first run"));
        let reference = checked(measure(self.clonecloud().args(base("pulley")).args(&tail), "the Phone run")?, &format!("{app} {size} on the Phone"))?;
        self.done();
        let same = |out: &Output, config: &str| -> Result<(), BenchError> {
            let detail = if out.code != reference.code {
                format!("exit {:?} instead of {:?}", out.code, reference.code)
            } else if out.stdout != reference.stdout {
                "stdout".into()
            } else if out.stderr != reference.stderr {
                format!("stderr: {}", String::from_utf8_lossy(&out.stderr).trim())
            } else {
                return Ok(());
            };
            Err(BenchError::Differs { app: app.into(), size: size.into(), config: config.into(), detail })
        };
        let power = PowerModel::default();
        let mut phone = Vec::new();
        for i in 0..cfg.reps {
            self.step(format!("{app} {size}: Phone, run {}/{}", i + 1, cfg.reps));
            let out = measure(self.clonecloud().args(base("pulley")).args(&tail), "the Phone run")?;
            same(&out, PHONE)?;
            let m = RunMeasure { wall_s: out.wall_s, cpu_s: out.cpu_s, bytes_up: 0, bytes_down: 0, transfers: 0 };
            phone.push(RunFigures { wall_s: out.wall_s, cpu_s: out.cpu_s, energy: power.energy(&m, None), ..Default::default() });
            self.done();
        }
        let phone_time = Spread::of(&phone.iter().map(|r| r.wall_s).collect::<Vec<_>>());
        let phone_energy = Spread::of(&phone.iter().map(|r| r.energy.total_j).collect::<Vec<_>>());

        // The clone's engine on the same input, for the speed ratio (second run: cache warm).
        let mut clone_s = 0.0;
        for i in 0..2 {
            self.step(format!("{app} {size}: clone engine, run {}/2", i + 1));
            let out = measure(self.clonecloud().args(base("cranelift")).args(&tail), "the Cranelift run")?;
            same(&out, "Cranelift")?;
            clone_s = out.wall_s;
            self.done();
        }
        let speed = Speed { app: app.into(), size: size.into(), device_s: phone_time.mean, clone_s, ratio: phone_time.mean / clone_s };

        self.step(format!("{app} {size}: profiling"));
        let mut profile_cmd = self.clonecloud();
        profile_cmd.args(["profile", "--device-engine", "pulley", "--json", "--dir", &dir]).args(&device).args(&tail);
        let out = checked(measure(&mut profile_cmd, "clonecloud profile")?, &format!("clonecloud profile of {app} {size}"))?;
        let profile: Profile = serde_json::from_slice(&out.stdout).map_err(|e| BenchError::Failed(format!("clonecloud profile printed no profile: {e}")))?;
        self.done();

        let mut rows = vec![row(app, size, PHONE, None, None, &phone, phone_time, phone_energy, phone_time.mean, None, true)];
        for k in 0..self.links.len() {
            let (config, network) = (self.links[k].0.clone(), self.links[k].1);
            self.step(format!("{app} {size}: partition for {config}"));
            let out = self.clonecloud().args(["partition", "--device-engine", "pulley", "--files-on-clone", "--json", "--objective", cfg.objective.key(), "--network", &network.key()]).arg(&wasm).stdin(Stdio::null()).output().map_err(io("cannot start clonecloud partition"))?;
            if !out.status.success() {
                return Err(BenchError::Failed(format!("clonecloud partition failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
            }
            let partition: Partition = serde_json::from_slice(&out.stdout).map_err(|e| BenchError::Failed(format!("clonecloud partition printed no partition: {e}")))?;
            self.done();
            let mut runs = Vec::new();
            let mut first = None;
            for i in 0..=cfg.reps {
                self.step(format!("{app} {size}: {config}, {}", if i == 0 { "first run".to_string() } else { format!("run {i}/{}", cfg.reps) }));
                let figures = self.cc_run(&base, &tail, &partition, k, |out| same(out, &config), &power)?;
                if i == 0 {
                    first = Some(figures);
                } else {
                    runs.push(figures);
                }
                self.done();
            }
            let time = Spread::of(&runs.iter().map(|r| r.wall_s).collect::<Vec<_>>());
            let energy = Spread::of(&runs.iter().map(|r| r.energy.total_j).collect::<Vec<_>>());
            let ideal = if partition.offload.is_empty() { phone_time.mean } else { ideal_bound(&profile, &partition, &runs, phone_time.mean, network) };
            let mut r = row(app, size, &config, Some(network.key()), Some(&partition), &runs, time, energy, ideal, first, true);
            r.speedup = phone_time.mean / time.mean;
            r.energy_ratio = phone_energy.mean / energy.mean;
            rows.push(r);
        }
        // The inputs can be large; the next size gets its own.
        let _ = std::fs::remove_dir_all(&input);
        Ok((rows, speed))
    }

    /// The flags of a run offloading `functions` to `clones` (`--clone`), its stats to `stats`.
    fn offloading(&self, cmd: &mut Command, functions: &[String], clones: &str, stats: &Path) {
        cmd.arg("--offload")
            .arg(functions.join(","))
            .arg("--clone")
            .arg(clones)
            .arg("--key")
            .arg(&self.setup.device_key)
            .arg("--clone-key")
            .arg(&self.setup.server_pub)
            // Slow links move megabytes: the wait for an answer is not what is measured.
            .args(["--clone-timeout", "3600"])
            .arg("--stats")
            .arg(stats);
    }

    /// The multi-threaded workload at one size: the paced phone alone, then per link its
    /// workers' calls offloaded to one clone and to [`Threaded::clones`].
    fn threaded(&mut self, t: &Threaded, size: &str, known_ratio: Option<f64>) -> Result<Vec<ThreadRow>, BenchError> {
        let cfg = self.cfg;
        let app = &t.app;
        let input = self.setup.work.join(format!("inputs/{app}-{size}"));
        self.step(format!("{app} {size}: writing the input"));
        let mut gen_data = Command::new(&cfg.gen_data);
        gen_data.args(["--app", &t.input_of, "--size", size, "--out"]).arg(&input);
        if let Some(dir) = &cfg.third_party {
            gen_data.arg("--third-party").arg(dir);
        }
        checked(measure(&mut gen_data, "gen-data")?, &format!("gen-data --app {} --size {size}", t.input_of))?;
        self.done();
        let dir = format!("{}::/input", input.display());
        let ratio = match known_ratio {
            Some(r) => r,
            None => {
                // The sibling on Pulley once, and on Cranelift twice (the first fills the cache).
                let sibling = [t.sibling.display().to_string(), "/input".to_string()];
                self.step(format!("{app} {size}: Pulley's speed on {}", t.input_of));
                let run = |engine: &str| -> Result<f64, BenchError> {
                    let out = measure(self.clonecloud().args(["run", "--device-engine", engine, "--dir", &dir]).args(&sibling), "the calibration run")?;
                    Ok(checked(out, &format!("{} {size} on {engine}", t.input_of))?.wall_s)
                };
                let pulley = run("pulley")?;
                run("cranelift")?;
                pulley / run("cranelift")?
            }
        };
        let device_speed = (1.0 / ratio).min(1.0);
        let speed = format!("{device_speed}");
        let base: Vec<String> = ["run", "--device-speed", &speed, "--dir", &dir].map(String::from).to_vec();
        let tail = [t.module.display().to_string(), "/input".to_string(), t.threads.to_string()];
        self.step(format!("{app} {size}: Phone, first run"));
        let reference = checked(measure(self.clonecloud().args(&base).args(&tail), "the Phone run")?, &format!("{app} {size} on the Phone"))?;
        self.done();
        let same = |out: &Output| out.code == reference.code && out.stdout == reference.stdout && out.stderr == reference.stderr;
        let differs = |config: &str, out: &Output| BenchError::Differs {
            app: app.clone(),
            size: size.into(),
            config: config.into(),
            detail: if out.stdout != reference.stdout { "stdout".into() } else { format!("stderr or exit: {}", String::from_utf8_lossy(&out.stderr).trim()) },
        };
        let mut phone = Vec::new();
        for i in 0..cfg.reps {
            self.step(format!("{app} {size}: Phone, run {}/{}", i + 1, cfg.reps));
            let out = measure(self.clonecloud().args(&base).args(&tail), "the Phone run")?;
            if !same(&out) {
                return Err(differs(PHONE, &out));
            }
            phone.push(out.wall_s);
            self.done();
        }
        let phone_time = Spread::of(&phone);
        let row = |config: &str, clones: usize, runs: &[(f64, Stats)], first: Option<f64>| {
            let n = runs.len().max(1) as f64;
            let mean = |g: &dyn Fn(&Stats) -> u64| runs.iter().map(|(_, s)| g(s) as f64).sum::<f64>() / n;
            let time = Spread::of(&runs.iter().map(|(w, _)| *w).collect::<Vec<_>>());
            ThreadRow {
                app: app.clone(),
                size: size.into(),
                config: config.into(),
                clones,
                threads: t.threads,
                offload: if clones == 0 { Vec::new() } else { t.offload.clone() },
                times_s: runs.iter().map(|(w, _)| *w).collect(),
                time,
                speedup: phone_time.mean / time.mean,
                device_speed,
                migrations: mean(&|s| s.migrations),
                conflicts: mean(&|s| s.conflicts),
                conflicts_sent_again: mean(&|s| s.conflicts_sent_again),
                fallbacks: runs.iter().map(|(_, s)| s.fallbacks.count).sum(),
                first_run_s: first,
                identical: true,
            }
        };
        let mut rows = vec![row(PHONE, 0, &phone.iter().map(|w| (*w, Stats::default())).collect::<Vec<_>>(), None)];
        let stats = self.setup.work.join("stats.json");
        for k in 0..self.links.len() {
            let config = self.links[k].0.clone();
            let counts: Vec<usize> = if t.clones > 1 { vec![1, t.clones] } else { vec![1] };
            for clones in counts {
                let addrs: Vec<String> = std::iter::once(self.links[k].2.addr().to_string())
                    .chain(self.other_links.iter().take(clones - 1).map(|l| l[k].addr().to_string()))
                    .collect();
                let mut runs = Vec::new();
                let mut first = None;
                for i in 0..=cfg.reps {
                    self.step(format!("{app} {size}: {config}, {clones} clone{}, {}", if clones == 1 { "" } else { "s" }, if i == 0 { "first run".to_string() } else { format!("run {i}/{}", cfg.reps) }));
                    let _ = std::fs::remove_file(&stats);
                    let mut cmd = self.clonecloud();
                    cmd.args(&base);
                    self.offloading(&mut cmd, &t.offload, &addrs.join(","), &stats);
                    cmd.args(&tail);
                    let out = measure(&mut cmd, "the CC run")?;
                    if !same(&out) {
                        return Err(differs(&config, &out));
                    }
                    let s = Stats::read(&stats).map_err(|e| BenchError::Failed(e.to_string()))?;
                    if i == 0 {
                        first = Some(out.wall_s);
                    } else {
                        runs.push((out.wall_s, s));
                    }
                    self.done();
                }
                rows.push(row(&config, clones, &runs, first));
            }
        }
        let _ = std::fs::remove_dir_all(&input);
        Ok(rows)
    }

    /// One device run in a CC configuration: offloading the partition's functions through the
    /// link, or a local run when the partition is empty.
    fn cc_run(
        &self,
        base: &dyn Fn(&str) -> Vec<String>,
        tail: &[String],
        partition: &Partition,
        link: usize,
        same: impl Fn(&Output) -> Result<(), BenchError>,
        power: &PowerModel,
    ) -> Result<RunFigures, BenchError> {
        let (_, network, link) = &self.links[link];
        let stats = self.setup.work.join("stats.json");
        let _ = std::fs::remove_file(&stats);
        let mut cmd = self.clonecloud();
        cmd.args(base("pulley"));
        let offload = !partition.offload.is_empty();
        if offload {
            self.offloading(&mut cmd, &partition.offload, &link.addr().to_string(), &stats);
        }
        cmd.args(tail);
        let before = link.counters();
        let out = measure(&mut cmd, "the CC run")?;
        let after = link.counters();
        same(&out)?;
        let mut f = RunFigures { wall_s: out.wall_s, cpu_s: out.cpu_s, ..Default::default() };
        f.link = Counters { up: after.up - before.up, down: after.down - before.down, connections: after.connections - before.connections };
        if offload {
            let s = Stats::read(&stats).map_err(|e| BenchError::Failed(e.to_string()))?;
            let total = s.total();
            f.migrations = s.migrations;
            f.fallbacks = s.fallbacks.count;
            f.file_bytes = s.file_sync.bytes_on_wire;
            f.payload_up = f.file_bytes + total.bytes_up_compressed;
            f.payload_down = total.bytes_down_compressed;
            f.remote_s = total.remote_ms / 1e3;
        }
        let m = RunMeasure { wall_s: f.wall_s, cpu_s: f.cpu_s, bytes_up: f.link.up, bytes_down: f.link.down, transfers: f.migrations + f.link.connections };
        f.energy = power.energy(&m, offload.then_some(*network));
        Ok(f)
    }
}

/// The best an offloaded configuration could do: the Phone's time less the share the profile
/// gives the offloaded calls of the device's time (a share, so both come from one run), plus the clone's time for them, the protocol's state and
/// file bytes at the link's rate, one round trip per migration and the two any authenticated
/// connection needs (TCP, TLS 1.3).
fn ideal_bound(profile: &Profile, partition: &Partition, runs: &[RunFigures], phone_s: f64, network: Network) -> f64 {
    let offloaded: Vec<u32> = partition.offload.iter().filter_map(|f| f.strip_prefix('#')?.parse().ok()).collect();
    let device_ns: u64 = profile.functions.iter().filter(|f| offloaded.contains(&f.function)).map(|f| f.device_ns).sum();
    let share = (device_ns as f64 / profile.device_total_ns.max(1) as f64).min(1.0);
    let n = runs.len().max(1) as f64;
    let mean = |g: fn(&RunFigures) -> f64| runs.iter().map(g).sum::<f64>() / n;
    let bw = network.bytes_per_s();
    phone_s * (1.0 - share)
        + mean(|r| r.remote_s)
        + mean(|r| r.payload_up as f64) / bw
        + mean(|r| r.payload_down as f64) / bw
        + (mean(|r| r.migrations as f64) + 2.0) * network.rtt_ms / 1e3
}

#[allow(clippy::too_many_arguments)]
fn row(
    app: &str,
    size: &str,
    config: &str,
    network: Option<String>,
    partition: Option<&Partition>,
    runs: &[RunFigures],
    time: Spread,
    energy: Spread,
    ideal_s: f64,
    first: Option<RunFigures>,
    identical: bool,
) -> Row {
    let n = runs.len().max(1) as f64;
    let mean = |g: &dyn Fn(&RunFigures) -> f64| runs.iter().map(g).sum::<f64>() / n;
    Row {
        app: app.into(),
        size: size.into(),
        config: config.into(),
        network,
        partition: partition.map(|p| p.names.clone()).unwrap_or_default(),
        predicted_saving: partition.map(|p| p.saving),
        times_s: runs.iter().map(|r| r.wall_s).collect(),
        time,
        energies_j: runs.iter().map(|r| r.energy.total_j).collect(),
        energy,
        energy_parts: Energy {
            cpu_j: mean(&|r| r.energy.cpu_j),
            idle_j: mean(&|r| r.energy.idle_j),
            radio_j: mean(&|r| r.energy.radio_j),
            tail_j: mean(&|r| r.energy.tail_j),
            total_j: energy.mean,
        },
        cpu_s: mean(&|r| r.cpu_s),
        speedup: 1.0,
        energy_ratio: 1.0,
        bytes_up: mean(&|r| r.link.up as f64),
        bytes_down: mean(&|r| r.link.down as f64),
        migrations: mean(&|r| r.migrations as f64),
        fallbacks: runs.iter().map(|r| r.fallbacks).sum(),
        first_run_s: first.map(|f| f.wall_s),
        first_run_file_bytes: first.map_or(0, |f| f.file_bytes),
        ideal_s,
        to_ideal: time.mean / ideal_s,
        identical,
    }
}

/// The display name of a CC configuration over `network`: `CC-WiFi`, `CC-3G`, `CC-BW,RTT`.
pub fn config_name(network: &Network) -> String {
    if *network == Network::WIFI {
        "CC-WiFi".into()
    } else if *network == Network::THREE_G {
        "CC-3G".into()
    } else {
        format!("CC-{}", network.key())
    }
}
