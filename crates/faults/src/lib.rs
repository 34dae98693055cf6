//! clonecloud-faults: the fault matrix.
//!
//! clonecloud promises that whatever fails, a run prints exactly what a plain local run prints
//! and leaves the device's files as a plain run leaves them. This crate measures the promise.
//! For each program it runs the unmodified program locally (the oracle), then offloaded through
//! the real `clonecloud` binary (`run --offload .. --clone ..` against a `clonecloud serve` child
//! on loopback) with one fault per run:
//!
//! - **link faults**, through a [`FaultProxy`] on the first connection: a cut before each turn
//!   of the conversation (each flight of messages one way: hello, module, files, migrate,
//!   import calls, return, goodbye; so before and after every message kind, both directions)
//!   and inside it, one corrupted byte, a duplicated and a reordered TLS record (TLS refuses
//!   both: the transport does not allow them), a stall past the device's timeout;
//! - **clone faults**: the server killed with SIGKILL during a migration, killed and restarted
//!   on the same address with its replicas gone, a replica over its memory cap (out of memory),
//!   over its deadline, and a guest that traps on the clone;
//! - **flapping**: a [`Link`] that drops every connection and refuses new ones for a moment,
//!   again and again, through a whole run.
//!
//! A case passes when stdout, stderr, the exit code and the preopened directory equal the
//! oracle's. Its path is what the runtime did, from the run's `--stats`: `resume` (the answer
//! came on a new connection), `retry` (sent again on a new session), `fallback` (run locally),
//! or `none` (the fault did not touch a migration, e.g. a cut after the last message).


/// The same promise checked in virtual time, the protocol cores against each other under
/// seeded fault schedules (see clonecloud-sim): `clonecloud faults --simulated`.
pub use clonecloud_sim::{Divergence, Report as SimulatedReport, Rules as SimulatedRules, Tally as SimulatedTally};

/// Runs `count` simulated schedules from seed `first`, with a progress bar when `progress`.
pub fn simulated(first: u64, count: u64, progress: bool) -> SimulatedReport {
    let bar = if progress { ProgressBar::new(count) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{elapsed_precise} {bar:40} {pos}/{len} schedules").expect("a valid template"));
    let report = clonecloud_sim::run(first, count, SimulatedRules::default(), |done| {
        if done % 256 == 0 {
            bar.set_position(done);
        }
    });
    bar.finish_and_clear();
    report
}

pub use clonecloud_harness::{Action, Dir, FaultProxy, Hook, Injection, Turn};

use clonecloud_harness::ServeChild;
use clonecloud_harness::dirs::{copy_dir, snapshot};
use clonecloud_linkem::{Link, Shape};
use clonecloud_stats::{Stats, StatsError};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One program of the matrix and how to run it.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub wasm: PathBuf,
    /// Arguments after the module.
    pub args: Vec<String>,
    /// What to offload (`--offload`).
    pub offload: String,
    /// A directory to preopen: a fresh copy of `.0` as guest path `.1` for every run.
    pub dir: Option<(PathBuf, String)>,
    pub stdin: Vec<u8>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `clonecloud` binary.
    pub clonecloud: PathBuf,
    pub programs: Vec<Program>,
    /// The reduced set: cuts before each turn, one of each other fault.
    pub quick: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FaultsError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Failed(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FaultsError {
    let what = what.into();
    move |source| FaultsError::Io { what, source }
}

/// One case's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub program: String,
    /// The fault (`cut`, `corrupt`, `duplicate`, `reorder`, `stall`, `kill`, `restart`, `oom`,
    /// `deadline`, `trap`, `flapping`, `clean`).
    pub fault: String,
    /// Where: the turn and its messages, or the moment.
    pub at: String,
    pub passed: bool,
    /// `resume`, `retry`, `fallback`, several joined by `+`, or `none`.
    pub path: String,
    pub migrations: u64,
    /// Fallback causes, and what differed when the case failed.
    pub detail: String,
    pub seconds: f64,
}

/// The whole matrix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub tried: usize,
    pub passed: usize,
    /// Cases per path.
    pub paths: BTreeMap<String, usize>,
    pub cases: Vec<Outcome>,
}

impl Report {
    fn new(cases: Vec<Outcome>) -> Report {
        let mut paths = BTreeMap::new();
        for c in &cases {
            *paths.entry(c.path.clone()).or_insert(0) += 1;
        }
        Report { tried: cases.len(), passed: cases.iter().filter(|c| c.passed).count(), paths, cases }
    }

    /// The table, one line per case, then the counts.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let w = self.cases.iter().map(|c| c.at.chars().count()).max().unwrap_or(5).clamp(5, 48);
        out += &format!("{:<17} {:<9} {:<w$} {:<6} {:<16} {:>4}  detail\n", "program", "fault", "where", "result", "path", "mig");
        for c in &self.cases {
            let at: String = c.at.chars().take(w).collect();
            let result = if c.passed { "same" } else { "DIFF" };
            out += &format!("{:<17} {:<9} {at:<w$} {result:<6} {:<16} {:>4}  {}\n", c.program, c.fault, c.path, c.migrations, c.detail);
        }
        let paths: Vec<String> = self.paths.iter().map(|(p, n)| format!("{p} {n}")).collect();
        out += &format!("\n{} cases tried, {} identical to the local run; paths: {}\n", self.tried, self.passed, paths.join(", "));
        out
    }
}

/// What a run printed, how it ended, and the directory afterwards.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    code: Option<i32>,
    files: BTreeMap<String, Vec<u8>>,
}

impl Seen {
    /// What differs from `want`, if anything.
    fn differs(&self, want: &Seen) -> Option<String> {
        let mut d = Vec::new();
        if self.code != want.code {
            d.push(format!("exit code {:?}, not {:?}", self.code, want.code));
        }
        if self.stdout != want.stdout {
            d.push("stdout".into());
        }
        if self.stderr != want.stderr {
            d.push(format!("stderr ({})", String::from_utf8_lossy(&self.stderr).lines().last().unwrap_or("")));
        }
        if self.files != want.files {
            d.push("files".into());
        }
        (!d.is_empty()).then(|| format!("differs: {}", d.join(", ")))
    }
}

/// Keys and directories of one matrix.
#[derive(Debug)]
struct Setup {
    work: tempfile::TempDir,
    server_key: PathBuf,
    server_pub: PathBuf,
    device_key: PathBuf,
    allow: PathBuf,
}

impl Setup {
    fn new(clonecloud: &Path) -> Result<Setup, FaultsError> {
        let work = tempfile::tempdir().map_err(io("cannot make a work directory"))?;
        for name in ["server", "device"] {
            clonecloud_harness::keygen(clonecloud, work.path(), name).map_err(io("cannot make a key pair"))?;
        }
        let allow = work.path().join("allow");
        std::fs::copy(work.path().join("device.pub"), &allow).map_err(io("cannot write the allow list"))?;
        let p = work.path().to_path_buf();
        Ok(Setup { work, server_key: p.join("server.key"), server_pub: p.join("server.pub"), device_key: p.join("device.key"), allow })
    }
}

/// Starts `clonecloud serve` on `listen` with `extra` options and a home of its own.
fn serve(clonecloud: &Path, setup: &Setup, listen: &str, extra: &[&str], home: &str) -> Result<ServeChild, FaultsError> {
    let log = setup.work.path().join(format!("serve-{home}.log"));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(io(format!("cannot create {}", log.display())))?;
    let mut cmd = Command::new(clonecloud);
    cmd.args(["serve", "--listen", listen, "--key"])
        .arg(&setup.server_key)
        .arg("--allow")
        .arg(&setup.allow)
        .args(extra)
        .env("CLONECLOUD_HOME", setup.work.path().join(home))
        .stdin(Stdio::null())
        .stderr(log);
    ServeChild::spawn(cmd).map_err(|e| FaultsError::Failed(format!("clonecloud serve --listen {listen} did not start: {e}")))
}

/// The runner of one matrix.
struct Matrix<'a> {
    cfg: &'a Config,
    setup: Setup,
    bar: ProgressBar,
    cases: Vec<Outcome>,
    run_no: usize,
}

/// The device's timeout for each reply, seconds: long enough for any function here, short
/// enough for a stall case to end soon.
const TIMEOUT_S: &str = "3";

impl Matrix<'_> {
    /// Runs `p`, offloaded through `clone` (or plainly, when `None`); `log` asks for the wire
    /// trace on stderr.
    fn run(&mut self, p: &Program, clone: Option<&str>, log: bool) -> Result<(Seen, Result<Stats, StatsError>), FaultsError> {
        self.run_no += 1;
        let dir = self.setup.work.path().join(format!("run-{}", self.run_no));
        let stats = dir.with_extension("json");
        let mut cmd = Command::new(&self.cfg.clonecloud);
        cmd.arg("run");
        if let Some(addr) = clone {
            cmd.args(["--offload", &p.offload, "--clone", addr, "--key"]).arg(&self.setup.device_key);
            cmd.arg("--clone-key").arg(&self.setup.server_pub).args(["--clone-timeout", TIMEOUT_S, "--stats"]).arg(&stats);
        }
        if let Some((src, guest)) = &p.dir {
            copy_dir(src, &dir).map_err(io(format!("cannot copy {}", src.display())))?;
            cmd.arg("--dir").arg(format!("{}::{guest}", dir.display()));
        }
        cmd.arg(&p.wasm).args(&p.args);
        cmd.env("CLONECLOUD_HOME", self.setup.work.path().join("device-home"));
        cmd.env("CLONECLOUD_LOG", if log { "clonecloud_net::wire=trace" } else { "off" });
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(io("cannot run clonecloud run"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = p.stdin.clone();
        // (A program that does not read stdin may exit before taking it all.)
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().map_err(io("cannot wait for clonecloud run"))?;
        let _ = feeder.join();
        let s = Stats::read(&stats);
        let files = if p.dir.is_some() { snapshot(&dir) } else { BTreeMap::new() };
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&stats);
        Ok((Seen { stdout: out.stdout, stderr: out.stderr, code: out.status.code(), files }, s))
    }

    /// Runs one case and records it.
    fn case(&mut self, p: &Program, want: &Seen, fault: &str, at: &str, clone: &str) -> Result<(), FaultsError> {
        self.bar.set_message(format!("{} {fault} {at}", p.name));
        let t0 = Instant::now();
        let (seen, stats) = self.run(p, Some(clone), false)?;
        self.record(p, want, fault, at, &seen, &stats, t0);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record(&mut self, p: &Program, want: &Seen, fault: &str, at: &str, seen: &Seen, stats: &Result<Stats, StatsError>, t0: Instant) {
        let empty = Stats::default();
        let s = stats.as_ref().unwrap_or(&empty);
        let mut path = Vec::new();
        if s.resumes > 0 {
            path.push("resume");
        }
        if s.retries > 0 {
            path.push("retry");
        }
        if s.fallbacks.count > 0 {
            path.push("fallback");
        }
        let path = if path.is_empty() { "none".to_string() } else { path.join("+") };
        let causes = s.fallbacks.causes.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
        let differs = seen.differs(want);
        let detail = match (&differs, stats) {
            (Some(d), _) => d.clone(),
            (None, Err(e)) => format!("no stats: {e}"),
            (None, Ok(_)) => causes,
        };
        self.cases.push(Outcome {
            program: p.name.clone(),
            fault: fault.into(),
            at: at.into(),
            passed: differs.is_none(),
            path,
            migrations: s.migrations,
            detail,
            seconds: t0.elapsed().as_secs_f64(),
        });
        self.bar.inc(1);
    }

    /// The conversation of a clean run: the first connection's turns with the messages each
    /// carries.
    fn conversation(&mut self, p: &Program, server: &ServeChild) -> Result<Vec<(Turn, String)>, FaultsError> {
        let proxy = FaultProxy::start(&server.addr, None, None).map_err(io("cannot start the fault proxy"))?;
        let (seen, _) = self.run(p, Some(&proxy.addr), true)?;
        let turns = proxy.turns();
        // The device's messages, in order, grouped into flights one way.
        let mut flights: Vec<(Dir, Vec<String>)> = Vec::new();
        for line in String::from_utf8_lossy(&seen.stderr).lines() {
            let Some(line) = line.find("TRACE").map(|i| &line[i..]) else { continue };
            let (dir, rest) = if let Some(i) = line.find(" sent ") {
                (Dir::Up, &line[i + 6..])
            } else if let Some(i) = line.find(" received ") {
                (Dir::Down, &line[i + 10..])
            } else {
                continue;
            };
            let kind = rest.split_whitespace().next().unwrap_or("?").to_string();
            match flights.last_mut() {
                Some((d, kinds)) if *d == dir => {
                    if kinds.last() != Some(&kind) {
                        kinds.push(kind);
                    } else if !kinds.last().is_some_and(|k| k.ends_with('*')) {
                        let last = kinds.pop().expect("one");
                        kinds.push(format!("{last}*"));
                    }
                }
                _ => flights.push((dir, vec![kind])),
            }
        }
        // The TLS handshake comes first: client hello, the server's flight, then the client's
        // last flight with the first message.
        let aligned = turns.len() == flights.len() + 2 && turns.iter().skip(2).zip(&flights).all(|(t, (d, _))| t.dir == *d);
        Ok(turns
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let label = match (aligned, i) {
                    (true, 0) => "TLS client hello".to_string(),
                    (true, 1) => "TLS server handshake".to_string(),
                    (true, i) => {
                        let kinds = flights[i - 2].1.join("+");
                        if i == 2 { format!("TLS finish+{kinds}") } else { kinds }
                    }
                    (false, i) => format!("turn {i}"),
                };
                (*t, format!("{} {label}", t.dir.arrow()))
            })
            .collect())
    }

    fn program(&mut self, p: &Program) -> Result<(), FaultsError> {
        let cfg = self.cfg;
        let (want, _) = self.run(p, None, false)?;
        let server = serve(&cfg.clonecloud, &self.setup, "127.0.0.1:0", &[], "clone")?;
        let t0 = Instant::now();
        self.case(p, &want, "clean", "-", &server.addr.clone())?;
        let clean_s = t0.elapsed().as_secs_f64();
        // (After a first run, the clone holds the module and the files: the conversation every
        // later run on this server has.)
        let turns = self.conversation(p, &server)?;

        // Link faults on the first connection.
        let mut link: Vec<(String, String, Injection)> = Vec::new();
        for (i, (t, label)) in turns.iter().enumerate() {
            let len = t.end - t.start;
            link.push(("cut".into(), format!("before {label}"), Injection::in_turn(i, 0, Action::Cut)));
            if cfg.quick {
                continue;
            }
            if len > 1 {
                link.push(("cut".into(), format!("inside {label}"), Injection::in_turn(i, len / 2, Action::Cut)));
            }
            link.push(("corrupt".into(), format!("inside {label}"), Injection::in_turn(i, len / 2, Action::Corrupt)));
            link.push(("duplicate".into(), format!("first record of {label}"), Injection::in_turn(i, 0, Action::Duplicate)));
            if t.records >= 2 {
                link.push(("reorder".into(), format!("first records of {label}"), Injection::in_turn(i, 0, Action::Reorder)));
            }
        }
        let find = |kind: &str| turns.iter().position(|(_, l)| l.contains(kind));
        let migrate = find("migrate");
        let answer = turns.iter().rposition(|(_, l)| l.contains("return") || l.contains("failed"));
        if cfg.quick {
            // One of each other link fault, where it hurts most: the migration and its answer.
            if let Some(i) = migrate {
                let len = turns[i].0.end - turns[i].0.start;
                link.push(("corrupt".into(), format!("inside {}", turns[i].1), Injection::in_turn(i, len / 2, Action::Corrupt)));
                link.push(("duplicate".into(), format!("first record of {}", turns[i].1), Injection::in_turn(i, 0, Action::Duplicate)));
            }
            if let Some(i) = answer.filter(|&i| turns[i].0.records >= 2) {
                link.push(("reorder".into(), format!("first records of {}", turns[i].1), Injection::in_turn(i, 0, Action::Reorder)));
            }
        }
        for i in [migrate, answer].into_iter().flatten() {
            let len = turns[i].0.end - turns[i].0.start;
            link.push(("stall".into(), format!("inside {}", turns[i].1), Injection::in_turn(i, len / 2, Action::Stall)));
        }
        for (fault, at, injection) in link {
            let proxy = FaultProxy::start(&server.addr, Some(injection), None).map_err(io("cannot start the fault proxy"))?;
            self.case(p, &want, &fault, &at, &proxy.addr.clone())?;
        }
        drop(server);

        // The clone killed during the migration (just after it arrived), and killed then
        // restarted on the same address with its replicas gone.
        if let Some(i) = migrate {
            let (t, label) = &turns[i];
            for restart in [false, true] {
                let killed = serve(&cfg.clonecloud, &self.setup, "127.0.0.1:0", &[], &format!("killed-{restart}"))?;
                let addr = killed.addr.clone();
                let slot = Arc::new(Mutex::new(Some(killed)));
                let (clonecloud, s2) = (cfg.clonecloud.clone(), slot.clone());
                let args = (self.setup.server_key.clone(), self.setup.allow.clone(), self.setup.work.path().join(format!("restarted-{}", p.name)));
                let restarted: Arc<Mutex<Option<ServeChild>>> = Arc::new(Mutex::new(None));
                let r2 = restarted.clone();
                let call: Box<dyn Fn() + Send + Sync> = Box::new(move || {
                    let server = s2.lock().unwrap_or_else(|e| e.into_inner()).take();
                    let Some(mut server) = server else { return };
                    // SIGKILL: no goodbye, no cleanup.
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    if restart {
                        let again = Command::new(&clonecloud)
                            .args(["serve", "--listen", &server.addr, "--key"])
                            .arg(&args.0)
                            .arg("--allow")
                            .arg(&args.1)
                            .env("CLONECLOUD_HOME", &args.2)
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .spawn();
                        if let Ok(child) = again {
                            *r2.lock().unwrap_or_else(|e| e.into_inner()) = Some(ServeChild { child, addr: server.addr.clone() });
                        }
                    }
                });
                let hook = Hook { turn: i, offset: (t.end - t.start) / 2, delay: Duration::ZERO, call };
                let proxy = FaultProxy::start(&addr, None, Some(hook)).map_err(io("cannot start the fault proxy"))?;
                let (fault, at) = if restart { ("restart", format!("clone killed, restarted inside {label}")) } else { ("kill", format!("clone SIGKILLed inside {label}")) };
                self.case(p, &want, fault, &at, &proxy.addr.clone())?;
                drop(proxy);
                drop(restarted.lock().unwrap_or_else(|e| e.into_inner()).take());
                drop(slot.lock().unwrap_or_else(|e| e.into_inner()).take());
            }
        }

        // The clone's limits: a replica out of memory, a call past its deadline.
        for (fault, at, extra) in [("oom", "replica memory capped at 1 MiB", ["--max-memory", "1"]), ("deadline", "calls capped at 10 ms", ["--max-run-time", "0.01"])] {
            let limited = serve(&cfg.clonecloud, &self.setup, "127.0.0.1:0", &extra, "limited")?;
            self.case(p, &want, fault, at, &limited.addr.clone())?;
        }

        // A link that drops every connection and refuses new ones for a moment, again and again.
        let server = serve(&cfg.clonecloud, &self.setup, "127.0.0.1:0", &[], "clone")?;
        let flapping = Link::start("127.0.0.1:0", &server.addr, Shape::symmetric(10_000.0, 0.0)).map_err(io("cannot start the link"))?;
        let period = Duration::from_secs_f64((clean_s / 6.0).clamp(0.005, 1.0));
        let addr = flapping.addr().to_string();
        let flapping = Arc::new(flapping);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (f2, s2) = (flapping.clone(), stop.clone());
        let flaps = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n2 = flaps.clone();
        let flapper = std::thread::spawn(move || {
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(period);
                f2.set_down(true);
                f2.cut();
                n2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(period / 3);
                f2.set_down(false);
            }
        });
        self.bar.set_message(format!("{} flapping", p.name));
        let t0 = Instant::now();
        let (seen, stats) = self.run(p, Some(&addr), false)?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = flapper.join();
        let at = format!("down {:.0} ms every {:.0} ms ({} times)", period.as_secs_f64() * 1e3 / 3.0, period.as_secs_f64() * 1e3 * 4.0 / 3.0, flaps.load(std::sync::atomic::Ordering::Relaxed));
        self.record(p, &want, "flapping", &at, &seen, &stats, t0);
        Ok(())
    }
}

/// Runs the matrix.
pub fn run(cfg: &Config) -> Result<Report, FaultsError> {
    let setup = Setup::new(&cfg.clonecloud)?;
    let bar = if cfg.progress {
        // (How many cases a program has is known only once its conversation is.)
        let b = ProgressBar::new_spinner();
        b.set_style(ProgressStyle::with_template("{elapsed_precise} {spinner} {pos} cases: {msg}").expect("a valid template"));
        b.enable_steady_tick(Duration::from_millis(200));
        b
    } else {
        ProgressBar::hidden()
    };
    let mut m = Matrix { cfg, setup, bar, cases: Vec::new(), run_no: 0 };
    for p in &cfg.programs {
        m.program(p)?;
    }
    m.bar.finish_and_clear();
    Ok(Report::new(m.cases))
}
