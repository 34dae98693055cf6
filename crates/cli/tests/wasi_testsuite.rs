//! The public WASI conformance corpus, WebAssembly/wasi-testsuite (its wasm32-wasip1 tests in
//! AssemblyScript, C and Rust, vendored in tests/third-party/wasi-testsuite by
//! scripts/vendor-wasi-testsuite). Each test, in a fresh copy of the directories its
//! specification preopens, run by `clonecloud run` plainly, with every function a host-answered
//! migration point, and with every function offloaded to a local clone, must behave byte for
//! byte like the unmodified module on plain wasmtime + wasmtime-wasi: stdout, stderr, exit code
//! and the directory tree it leaves. The oracle itself must meet the specification's own
//! expectation (exit code, stdout, stderr when given), except the tests listed in
//! [`KNOWN_SPEC_DIFFERENCES`].
//!
//! With `--offload all`, every test must really run on the clone: migrations and no fallback,
//! except the tests listed in [`KNOWN_FALLBACKS`] (their causes are printed).
//!
//! `cargo test --release -p clonecloud --test wasi_testsuite -- --nocapture` prints a table of
//! what passed in each mode, the migrations and fallback causes, then every difference.
//! `WASI_TESTSUITE_FILTER=SUBSTRING` runs only the tests whose `language/name` contains it;
//! `WASI_TESTSUITE_JOBS=N` runs N tests side by side (default 2).
//! `WASI_TESTSUITE_ERRNO_MODE_UNIX=1` runs the Rust tests (every run, the oracle's included) with
//! `ERRNO_MODE_UNIX` set, which makes them demand Linux's errno where by default they accept any of
//! several (the specifications set no such variable, so this is not the default).

#[path = "../../../tests/support/corpus.rs"]
mod corpus;
#[allow(dead_code)]
#[path = "../../../tests/support/oracle.rs"]
mod oracle;
#[path = "../../../tests/support/observed.rs"]
mod observed;

use observed::{Observed, diff_lines, differences};

use clonecloud_stats::{Cause, Stats, StatsError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use corpus::{copy_dir, repo_root};

/// Tests exempt from "ran on the clone without a fallback" under `--offload all`, by
/// `language/name`, with why. Their output must still equal wasmtime's. Shrink this to empty as
/// the clone learns to serve the calls (a test that no longer falls back is reported as
/// removable).
const KNOWN_FALLBACKS: &[(&str, &str)] = &[];

/// Tests whose specification (exit code, stdout, stderr) plain wasmtime 48 does not meet, by
/// `language/name`, with why: for them the specification is not checked, but clonecloud must
/// still equal the oracle.
const KNOWN_SPEC_DIFFERENCES: &[(&str, &str)] = &[];

/// What puts a test's stdout in a canonical form.
type Canonical = fn(&str) -> String;

/// Tests whose output varies from run to run even on plain wasmtime, by `language/name`, with
/// why, and what puts their stdout in a canonical form before any comparison.
const NONDETERMINISTIC: &[(&str, &str, Canonical)] = &[(
    "rust/poll_oneoff_stdio",
    "prints a HashMap (`writable subs: {1: 1, 2: 2}`), whose order std's RandomState seeds from random_get",
    sort_braced_entries,
)];

/// `text` with the `, `-separated entries of each `{...}` sorted.
fn sort_braced_entries(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { break };
        let mut entries: Vec<&str> = rest[open + 1..open + close].split(", ").collect();
        entries.sort();
        out.push_str(&rest[..=open]);
        out.push_str(&entries.join(", "));
        out.push('}');
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// `stdout` of `test` in canonical form (see [`NONDETERMINISTIC`]).
fn canonical_stdout(test: &Test, stdout: String) -> String {
    match NONDETERMINISTIC.iter().find(|(n, _, _)| *n == test.id()) {
        Some((_, _, canonical)) => canonical(&stdout),
        None => stdout,
    }
}

/// The three ways `clonecloud run` runs each test (the offloaded one also gets `--stats FILE`).
const MODES: [(&str, &[&str]); 3] = [
    ("plain", &[]),
    ("points", &["--points", "all", "--point-mode", "host"]),
    ("offload", &["--offload", "all", "--clone", "local"]),
];

/// The languages of the corpus, as directories of tests/third-party/wasi-testsuite.
const LANGUAGES: [&str; 3] = ["assemblyscript", "c", "rust"];

/// Longest a single run may take before it counts as hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// What a test's `.json` says (upstream's doc/specification.md; defaults when there is none).
#[derive(Debug, Clone, Default)]
struct Spec {
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// (directory relative to the test's, guest path): `root` preopened as `/`, and the legacy
    /// `dirs`, each preopened under its own name.
    preopens: Vec<(String, String)>,
    exit_code: i32,
    stdout: Option<String>,
    stderr: Option<String>,
}

/// One test of the corpus.
#[derive(Debug, Clone)]
struct Test {
    /// The file stem.
    name: String,
    language: &'static str,
    path: PathBuf,
    spec: Spec,
}

impl Test {
    /// `language/name`, unique across languages.
    fn id(&self) -> String {
        format!("{}/{}", self.language, self.name)
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap()
    }
}


fn suite_dir() -> PathBuf {
    repo_root().join("tests/third-party/wasi-testsuite")
}

fn strings(value: &serde_json::Value, what: &str, file: &Path) -> Vec<String> {
    match value {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .unwrap_or_else(|| panic!("{}: {what} holds a non-string", file.display()))
                    .to_string()
            })
            .collect(),
        _ => panic!("{}: {what} is not a list", file.display()),
    }
}

/// Reads `file` (legacy keys `args`, `env`, `root`, `dirs`, `exit_code`, `stdout`, `stderr`; or
/// `operations` of `run`, `read` and `wait` only, the others being for sockets and http).
fn parse_spec(file: &Path) -> Spec {
    let text = std::fs::read_to_string(file).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", file.display()));
    let object = json
        .as_object()
        .unwrap_or_else(|| panic!("{}: not an object", file.display()));
    let mut spec = Spec::default();
    let run = |spec: &mut Spec, op: &serde_json::Map<String, serde_json::Value>| {
        spec.args = strings(op.get("args").unwrap_or(&serde_json::Value::Null), "args", file);
        if let Some(env) = op.get("env") {
            let env = env
                .as_object()
                .unwrap_or_else(|| panic!("{}: env is not an object", file.display()));
            spec.env = env
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("env value").to_string()))
                .collect();
        }
        if let Some(root) = op.get("root").and_then(|r| r.as_str()) {
            spec.preopens.push((root.to_string(), "/".to_string()));
        }
        for dir in strings(op.get("dirs").unwrap_or(&serde_json::Value::Null), "dirs", file) {
            spec.preopens.push((dir.clone(), dir));
        }
    };
    if let Some(ops) = object.get("operations") {
        let mut runs = 0;
        for op in ops.as_array().expect("operations is a list") {
            let op = op.as_object().expect("operation is an object");
            match op.get("type").and_then(|t| t.as_str()) {
                Some("run") => {
                    runs += 1;
                    run(&mut spec, op)
                }
                Some("wait") => spec.exit_code = op.get("exit_code").and_then(|c| c.as_i64()).unwrap_or(0) as i32,
                Some("read") => {
                    let payload = op.get("payload").and_then(|p| p.as_str()).unwrap_or("").to_string();
                    match op.get("id").and_then(|i| i.as_str()).unwrap_or("stdout") {
                        "stdout" => spec.stdout = Some(payload),
                        "stderr" => spec.stderr = Some(payload),
                        other => panic!("{}: read of stream {other}", file.display()),
                    }
                }
                other => panic!("{}: unsupported operation {other:?}", file.display()),
            }
        }
        assert_eq!(runs, 1, "{}: one run operation expected", file.display());
    } else {
        for key in object.keys() {
            assert!(
                ["args", "env", "root", "dirs", "exit_code", "stdout", "stderr"].contains(&key.as_str()),
                "{}: unknown key {key}",
                file.display()
            );
        }
        run(&mut spec, object);
        spec.exit_code = object.get("exit_code").and_then(|c| c.as_i64()).unwrap_or(0) as i32;
        spec.stdout = object.get("stdout").and_then(|s| s.as_str()).map(str::to_string);
        spec.stderr = object.get("stderr").and_then(|s| s.as_str()).map(str::to_string);
    }
    spec
}

/// Every vendored test, by language then name.
fn tests() -> Vec<Test> {
    let filter = std::env::var("WASI_TESTSUITE_FILTER").unwrap_or_default();
    let mut out = Vec::new();
    for language in LANGUAGES {
        let dir = suite_dir().join(language).join("wasm32-wasip1");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (see scripts/vendor-wasi-testsuite)", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        paths.sort();
        assert!(!paths.is_empty(), "no tests in {}", dir.display());
        for path in paths {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let json = path.with_extension("json");
            let mut spec = if json.exists() {
                parse_spec(&json)
            } else {
                Spec::default()
            };
            if language == "rust" && std::env::var_os("WASI_TESTSUITE_ERRNO_MODE_UNIX").is_some() {
                spec.env.push(("ERRNO_MODE_UNIX".into(), "1".into()));
            }
            for (dir_name, _) in &spec.preopens {
                assert!(
                    path.parent().unwrap().join(dir_name).is_dir(),
                    "{}: its directory {dir_name} is not vendored",
                    path.display()
                );
            }
            let test = Test {
                name,
                language,
                path,
                spec,
            };
            if test.id().contains(&filter) {
                out.push(test);
            }
        }
    }
    out
}

/// argv as both runs give it: the module path as written on the command line, then the args.
fn argv(test: &Test) -> Vec<String> {
    std::iter::once(test.path.to_string_lossy().into_owned())
        .chain(test.spec.args.iter().cloned())
        .collect()
}

/// Fresh copies, under `base`, of the directories `test` preopens: (host copy, guest path).
fn fresh_dirs(test: &Test, base: &Path) -> Vec<(PathBuf, String)> {
    test.spec
        .preopens
        .iter()
        .enumerate()
        .map(|(i, (dir, guest))| {
            let host = base.join(format!("{i}"));
            copy_dir(&test.dir().join(dir), &host);
            (host, guest.clone())
        })
        .collect()
}

/// The trees of all preopened copies, each path prefixed with its guest path.
fn snapshot_all(dirs: &[(PathBuf, String)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (host, guest) in dirs {
        for (k, v) in observed::snapshot(host) {
            out.insert(format!("{guest}:{k}"), v);
        }
    }
    out
}

/// The oracle: the unmodified module on wasmtime + wasmtime-wasi, nothing of clonecloud.
fn oracle(test: &Test, dirs: &[(PathBuf, String)]) -> Observed {
    let preopens: Vec<(&Path, &str)> = dirs.iter().map(|(h, g)| (h.as_path(), g.as_str())).collect();
    let plain = oracle::run_with_dirs(&test.path, &argv(test), &test.spec.env, &preopens);
    Observed {
        stdout: canonical_stdout(test, String::from_utf8_lossy(&plain.stdout).into_owned()),
        stderr: plain.stderr,
        exit: plain.exit,
        files: snapshot_all(dirs),
    }
}

/// `clonecloud run OPTIONS --dir HOST::GUEST... --env K=V... module args...`, stdin empty.
fn clonecloud(test: &Test, dirs: &[(PathBuf, String)], options: &[&str], home: &Path) -> Result<Observed, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clonecloud"));
    cmd.arg("run").args(options);
    for (host, guest) in dirs {
        cmd.arg("--dir").arg(format!("{}::{guest}", host.display()));
    }
    for (k, v) in &test.spec.env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    cmd.arg(&test.path)
        .args(&test.spec.args)
        .env("CLONECLOUD_HOME", home)
        .env_remove("CLONECLOUD_LOG")
        .env_remove("RUST_LOG")
;
    let (stdout, stderr, exit) = observed::run_with_timeout(&mut cmd, RUN_TIMEOUT)?;
    Ok(Observed {
        stdout: canonical_stdout(test, String::from_utf8_lossy(&stdout).into_owned()),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        exit,
        files: snapshot_all(dirs),
    })
}

/// How the oracle's run fails the test's specification, empty when it meets it.
fn spec_differences(spec: &Spec, oracle: &Observed) -> String {
    let mut out = String::new();
    if spec.exit_code != oracle.exit {
        out.push_str(&format!(
            "  exit code: spec {}, wasmtime {}\n",
            spec.exit_code, oracle.exit
        ));
    }
    if let Some(stdout) = &spec.stdout
        && *stdout != oracle.stdout
    {
        out.push_str(&format!(
            "  stdout (- spec, + wasmtime):\n{}",
            diff_lines(stdout, &oracle.stdout)
        ));
    }
    if let Some(stderr) = &spec.stderr
        && *stderr != oracle.stderr
    {
        out.push_str(&format!(
            "  stderr (- spec, + wasmtime):\n{}",
            diff_lines(stderr, &oracle.stderr)
        ));
    }
    if !out.is_empty() && (!oracle.stdout.is_empty() || !oracle.stderr.is_empty()) {
        out.push_str(&format!(
            "  wasmtime's stdout:\n{}  wasmtime's stderr:\n{}",
            indent(&oracle.stdout),
            indent(&oracle.stderr)
        ));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// What `--stats` says about one offloaded run.
fn read_stats(path: &Path) -> Result<Stats, String> {
    Stats::read(path).map_err(|e| match e {
        StatsError::Read { source, .. } => format!("no stats written: {source}"),
        StatsError::Parse { source, .. } => format!("stats are not what this version writes: {source}"),
    })
}

/// Everything about one test.
struct Report {
    test: Test,
    /// How the oracle fails the specification (empty: it meets it).
    spec: String,
    /// Per mode: `None` when equal to the oracle, else what differs.
    modes: Vec<(&'static str, Option<String>)>,
    offloaded: Result<Stats, String>,
}

fn check(test: &Test, home: &Path) -> Report {
    let scratch = tempfile::tempdir().unwrap();
    let dirs = fresh_dirs(test, &scratch.path().join("oracle"));
    let expected = oracle(test, &dirs);
    let spec = spec_differences(&test.spec, &expected);
    let mut modes = Vec::new();
    let mut offloaded = Err("not run".to_string());
    for (mode, options) in MODES {
        let dirs = fresh_dirs(test, &scratch.path().join(mode));
        let stats_file = scratch.path().join(format!("{mode}.stats.json"));
        let stats_arg = stats_file.to_string_lossy().into_owned();
        let mut options = options.to_vec();
        if mode == "offload" {
            options.extend(["--stats", stats_arg.as_str()]);
        }
        let outcome = match clonecloud(test, &dirs, &options, home) {
            Ok(got) => {
                let d = differences(&expected, &got);
                (!d.is_empty()).then_some(d)
            }
            Err(e) => Some(format!("  {e}\n")),
        };
        if mode == "offload" {
            offloaded = read_stats(&stats_file);
        }
        modes.push((mode, outcome));
    }
    Report {
        test: test.clone(),
        spec,
        modes,
        offloaded,
    }
}

/// The distinct (cause, detail) of a run's fallbacks, in order, with the first point of each.
fn distinct_causes(o: &Stats) -> Vec<(Cause, String, String)> {
    let mut seen = BTreeSet::new();
    o.fallbacks
        .events
        .iter()
        .filter(|e| seen.insert((e.cause, e.detail.clone())))
        .map(|e| (e.cause, e.detail.clone(), e.point.clone()))
        .collect()
}

#[test]
fn wasi_testsuite_behaves_like_wasmtime_plainly_at_points_and_on_the_clone() {
    let tests = tests();
    assert!(!tests.is_empty(), "no test matches WASI_TESTSUITE_FILTER");
    let ids: BTreeSet<String> = tests.iter().map(Test::id).collect();
    if std::env::var_os("WASI_TESTSUITE_FILTER").is_none() {
        let nondeterministic = NONDETERMINISTIC.iter().map(|(n, _, _)| n);
        for name in KNOWN_FALLBACKS
            .iter()
            .chain(KNOWN_SPEC_DIFFERENCES)
            .map(|(n, _)| n)
            .chain(nondeterministic)
        {
            assert!(
                ids.contains(*name),
                "{name} is listed in a table but is no test of the corpus"
            );
        }
    }
    let jobs: usize = std::env::var("WASI_TESTSUITE_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2)
        .max(1);
    let home = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<Report>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(test) = tests.get(i) else { break };
                    let report = check(test, home.path());
                    reports.lock().unwrap().push(report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap();
    reports.sort_by_key(|r| {
        (
            LANGUAGES.iter().position(|l| *l == r.test.language),
            r.test.name.clone(),
        )
    });

    // The table.
    println!(
        "\n{:<36} {:<14} {:<5} {:<5} {:<6} {:<7} {:>4} {:>4}  fallback causes",
        "test", "language", "spec", "plain", "points", "offload", "migr", "fall"
    );
    for r in &reports {
        let verdict = |mode: &str| match r.modes.iter().find(|(m, _)| *m == mode) {
            Some((_, None)) => "ok",
            Some((_, Some(_))) => "DIFF",
            None => "-",
        };
        let spec = if r.spec.is_empty() {
            "ok"
        } else if KNOWN_SPEC_DIFFERENCES.iter().any(|(n, _)| *n == r.test.id()) {
            "skip"
        } else {
            "FAIL"
        };
        let (migrations, fallbacks, causes) = match &r.offloaded {
            Ok(o) => (
                o.migrations.to_string(),
                o.fallbacks.count.to_string(),
                o.fallbacks
                    .causes
                    .iter()
                    .map(|(c, n)| format!("{c}×{n}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Err(e) => ("-".into(), "-".into(), e.clone()),
        };
        println!(
            "{:<36} {:<14} {:<5} {:<5} {:<6} {:<7} {:>4} {:>4}  {}",
            r.test.name,
            r.test.language,
            spec,
            verdict("plain"),
            verdict("points"),
            verdict("offload"),
            migrations,
            fallbacks,
            causes
        );
    }

    let mut failures = Vec::new();
    // The oracle against the corpus's own expectation.
    for r in &reports {
        let id = r.test.id();
        let known = KNOWN_SPEC_DIFFERENCES.iter().find(|(n, _)| *n == id);
        match (r.spec.is_empty(), known) {
            (false, None) => {
                println!("\n{id}: wasmtime does not meet the specification:\n{}", r.spec);
                failures.push(format!("{id}: wasmtime does not meet the specification"));
            }
            (false, Some((_, why))) => println!("\n{id}: specification not checked ({why}):\n{}", r.spec),
            (true, Some(_)) => println!("\n{id} meets its specification: remove it from KNOWN_SPEC_DIFFERENCES"),
            (true, None) => {}
        }
    }
    // clonecloud against the oracle.
    for r in &reports {
        for (mode, diff) in &r.modes {
            if let Some(diff) = diff {
                let id = r.test.id();
                println!("\n{id} with {mode} differs from wasmtime:\n{diff}");
                failures.push(format!("{id}: {mode} differs from wasmtime"));
            }
        }
    }
    // Offloading: migrations and no fallback, or a known exemption.
    println!("\nFallbacks with --offload all:");
    for r in &reports {
        let id = r.test.id();
        let known = KNOWN_FALLBACKS.iter().find(|(n, _)| *n == id);
        match &r.offloaded {
            Err(e) => {
                println!("  {id}: {e}");
                failures.push(format!("{id}: offload stats: {e}"));
            }
            Ok(o) => {
                let clean = o.migrations > 0 && o.fallbacks.count == 0;
                if clean {
                    continue;
                }
                println!(
                    "  {id}: {} migrations, {} fallbacks, causes {:?}",
                    o.migrations, o.fallbacks.count, o.fallbacks.causes
                );
                for (cause, detail, point) in distinct_causes(o) {
                    println!("      {cause}: {detail}  (first at {point})");
                }
                match known {
                    None => failures.push(format!(
                        "{id}: with --offload all, {} migrations and {} fallbacks ({:?}); not in KNOWN_FALLBACKS",
                        o.migrations, o.fallbacks.count, o.fallbacks.causes
                    )),
                    Some((_, why)) => println!("      (known: {why})"),
                }
            }
        }
    }
    for r in &reports {
        let id = r.test.id();
        if let (Ok(o), Some(_)) = (&r.offloaded, KNOWN_FALLBACKS.iter().find(|(n, _)| *n == id))
            && o.migrations > 0
            && o.fallbacks.count == 0
        {
            println!("  {id} no longer falls back: remove it from KNOWN_FALLBACKS");
        }
    }
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n"));
}
