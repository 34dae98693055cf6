//! The WASI corpus: programs that together call every function of `wasi_snapshot_preview1`, in C
//! (tests/corpus/c, built with Debian's clang and wasi-libc by scripts/build-c-corpus) and in
//! Rust (tests/corpus/src/bin/wasi_all.rs, which alone calls all 46). Their output is
//! deterministic (numbers, errnos and facts derived from times, inodes and random bytes), so each
//! program, run by `clonecloud run` plainly, with every function a host-answered migration point,
//! and with every function offloaded to the in-process clone, must behave byte for byte like the
//! unmodified module on plain wasmtime + wasmtime-wasi: stdout, stderr, exit code, and the
//! directory tree it leaves (contents, symbolic links, link counts, modes, explicitly set times).
//!
//! With `--offload all`, every program must also really run on the clone: migrations and no
//! fallback, except the programs listed in [`KNOWN_FALLBACKS`] (their causes are printed).
//!
//! `cargo test --release -p clonecloud --test wasi_corpus -- --nocapture` prints a table of
//! what passed in each mode, the differences from wasmtime and the fallback causes; add
//! `--ignored` to offload each work function alone and list every call the clone falls back on.
//! `WASI_CORPUS_DUMP=DIR` writes each program's expected output (the oracle's) to DIR.

#[path = "../../../tests/support/corpus.rs"]
mod corpus;
#[path = "../../../tests/support/oracle.rs"]
mod oracle;
#[path = "../../../tests/support/observed.rs"]
mod observed;

use observed::{Observed, differences};

use clonecloud_stats::{Stats, StatsError};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use corpus::{copy_dir, fixture_dir, repo_root};


/// Programs exempt from "ran on the clone without a fallback" under `--offload all`, with why.
/// Their output must still equal wasmtime's. Shrink this to empty as the clone learns to serve
/// the calls (a program that no longer falls back is reported as removable).
///
/// With `--offload all` the first call out of the host (`_start`) migrates and the whole program
/// runs on the clone, so the first call the clone cannot serve sends all of it back: the cause
/// named first is the one `--stats` shows; the others are what the ignored test
/// `each_work_function_offloaded_alone_behaves_like_wasmtime` found offloading each function
/// alone (again only the first per function).
const KNOWN_FALLBACKS: &[(&str, &str)] = &[
    (
        "c_paths",
        "path_symlink of a link whose target leads out of the preopen (`p/up -> ../../x`): the device makes \
         such a link itself, as it refuses to make one from a clone's journal",
    ),
    (
        "wasi_all",
        "path_symlink of a link whose target leads out of the preopen (`rs/up -> ../../x`): the device \
         makes such a link itself, as it refuses to make one from a clone's journal",
    ),
];

/// The three ways `clonecloud run` runs each program.
const MODES: [(&str, &[&str]); 3] = [
    ("plain", &[]),
    ("points-host", &["--points", "all", "--point-mode", "host"]),
    ("offload", &["--offload", "all"]),
];

/// Longest a single run may take before it counts as hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// One program of the corpus.
#[derive(Debug, Clone)]
struct Program {
    name: String,
    path: PathBuf,
    /// C or Rust.
    language: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The exit code and a line its stdout must have (guards the oracle itself).
    expect_exit: i32,
    expect_line: String,
}


/// The C programs (built by the script) and the Rust one (built with the Rust corpus), built once
/// per process.
fn programs() -> Vec<Program> {
    static PROGRAMS: std::sync::OnceLock<Vec<Program>> = std::sync::OnceLock::new();
    PROGRAMS.get_or_init(build_programs).clone()
}

fn build_programs() -> Vec<Program> {
    let root = repo_root();
    let status = Command::new("bash")
        .arg(root.join("scripts/build-c-corpus"))
        .status()
        .expect("cannot run scripts/build-c-corpus");
    assert!(status.success(), "scripts/build-c-corpus failed");
    // Builds the whole Rust corpus (wasi_all with it).
    let _ = corpus::corpus();
    let args: Vec<String> = ["alpha", "two words", "", "ünï"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let env: Vec<(String, String)> = [("CC_A", "1"), ("CC_EMPTY", ""), ("CC_PATH", "/x/y")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut names: Vec<String> = std::fs::read_dir(root.join("tests/corpus/c"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.len() >= 5,
        "tests/corpus/c has too few programs: {names:?}"
    );
    let mut out: Vec<Program> = names
        .into_iter()
        .map(|name| {
            let (expect_exit, expect_line) = match name.as_str() {
                "c_exit" => (7, "leaving with 7".to_string()),
                _ => (0, format!("{name} done")),
            };
            Program {
                path: root.join(format!("target/c-corpus/{name}.wasm")),
                name,
                language: "C",
                args: args.clone(),
                env: env.clone(),
                expect_exit,
                expect_line,
            }
        })
        .collect();
    out.push(Program {
        name: "wasi_all".into(),
        path: root.join("target/corpus/wasm32-wasip1/release/wasi_all.wasm"),
        language: "Rust",
        args,
        env,
        expect_exit: 3,
        expect_line: "wasi_all done, exiting with 3".into(),
    });
    out
}

/// The preview 1 functions a module imports.
fn wasi_imports(engine: &wasmtime::Engine, path: &Path) -> BTreeSet<String> {
    let module = wasmtime::Module::from_file(engine, path).unwrap();
    module
        .imports()
        .filter(|i| i.module() == "wasi_snapshot_preview1")
        .map(|i| i.name().to_string())
        .collect()
}

/// argv as both runs give it: the module path as written on the command line, then the args.
fn argv(program: &Program) -> Vec<String> {
    std::iter::once(program.path.to_string_lossy().into_owned())
        .chain(program.args.iter().cloned())
        .collect()
}

/// The oracle: the unmodified module on wasmtime + wasmtime-wasi, nothing of clonecloud.
fn oracle(program: &Program, data: &Path) -> Observed {
    let plain = oracle::run_plain(&program.path, &argv(program), &program.env, data);
    Observed {
        stdout: String::from_utf8_lossy(&plain.stdout).into_owned(),
        stderr: plain.stderr,
        exit: plain.exit,
        files: observed::snapshot(data),
    }
}

/// `clonecloud run OPTIONS --dir DATA::/data --env ... module args...`, stdin empty.
fn clonecloud(
    program: &Program,
    data: &Path,
    options: &[&str],
    home: &Path,
) -> Result<Observed, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clonecloud"));
    cmd.arg("run")
        .args(options)
        .arg("--dir")
        .arg(format!("{}::/data", data.display()));
    for (k, v) in &program.env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    cmd.arg(&program.path)
        .args(&program.args)
        .env("CLONECLOUD_HOME", home)
        .env_remove("CLONECLOUD_LOG")
        .env_remove("RUST_LOG")
;
    let (stdout, stderr, exit) = observed::run_with_timeout(&mut cmd, RUN_TIMEOUT)?;
    Ok(Observed {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        exit,
        files: observed::snapshot(data),
    })
}

/// What `--stats` says about one offloaded run.
fn read_stats(path: &Path) -> Result<Stats, String> {
    Stats::read(path).map_err(|e| match e {
        StatsError::Read { source, .. } => format!("no stats written: {source}"),
        StatsError::Parse { source, .. } => format!("stats are not what this version writes: {source}"),
    })
}

/// Everything about one program.
struct Report {
    program: Program,
    /// Per mode: `None` when equal to the oracle, else what differs.
    modes: Vec<(&'static str, Option<String>)>,
    offloaded: Result<Stats, String>,
}

/// The oracle's run of `program` in a fresh copy of the fixture, checked against what the program
/// promises (so that a corpus that silently does nothing fails), and written out under
/// `$WASI_CORPUS_DUMP/NAME.oracle.txt` when that is set.
fn expected(program: &Program, scratch: &Path) -> Observed {
    let oracle_dir = scratch.join("oracle");
    copy_dir(&fixture_dir(), &oracle_dir);
    let expected = oracle(program, &oracle_dir);
    if let Some(dump) = std::env::var_os("WASI_CORPUS_DUMP") {
        let mut text = format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}--- files\n",
            expected.exit, expected.stdout, expected.stderr
        );
        for (k, v) in &expected.files {
            text.push_str(&format!("{k}: {v}\n"));
        }
        std::fs::create_dir_all(&dump).unwrap();
        std::fs::write(
            Path::new(&dump).join(format!("{}.oracle.txt", program.name)),
            text,
        )
        .unwrap();
    }
    assert_eq!(
        expected.exit, program.expect_exit,
        "{}: the oracle's exit code; stdout:\n{}\nstderr:\n{}",
        program.name, expected.stdout, expected.stderr
    );
    assert!(
        expected.stdout.lines().any(|l| l == program.expect_line),
        "{}: the oracle's stdout lacks {:?}:\n{}",
        program.name,
        program.expect_line,
        expected.stdout
    );
    expected
}

/// One `clonecloud run` with `options` (plus `--stats` when `offload`) in a fresh copy of the
/// fixture named `label`: what differs from `expected` (`None`: nothing), and the stats.
fn compare(
    program: &Program,
    expected: &Observed,
    scratch: &Path,
    label: &str,
    options: &[&str],
    offload: bool,
    home: &Path,
) -> (Option<String>, Result<Stats, String>) {
    let dir = scratch.join(label);
    copy_dir(&fixture_dir(), &dir);
    let stats_file = scratch.join(format!("{label}.stats.json"));
    let stats_arg = stats_file.to_string_lossy().into_owned();
    let mut options = options.to_vec();
    if offload {
        options.extend(["--stats", stats_arg.as_str()]);
    }
    let outcome = match clonecloud(program, &dir, &options, home) {
        Ok(got) => {
            let d = differences(expected, &got);
            (!d.is_empty()).then_some(d)
        }
        Err(e) => Some(format!("  {e}\n")),
    };
    let stats = if offload {
        read_stats(&stats_file)
    } else {
        Err("not offloaded".into())
    };
    (outcome, stats)
}

fn check(program: &Program, home: &Path) -> Report {
    let scratch = tempfile::tempdir().unwrap();
    let expected = expected(program, scratch.path());
    let mut modes = Vec::new();
    let mut offloaded = Err("not run".to_string());
    for (mode, options) in MODES {
        let (outcome, stats) = compare(
            program,
            &expected,
            scratch.path(),
            mode,
            options,
            mode == "offload",
            home,
        );
        if mode == "offload" {
            offloaded = stats;
        }
        modes.push((mode, outcome));
    }
    Report {
        program: program.clone(),
        modes,
        offloaded,
    }
}

/// The functions of a program that do its work, by the names `--offload` takes: in C the
/// `static NOINLINE` functions of its own file, in Rust the `#[inline(never)]` ones.
fn work_functions(program: &Program) -> Vec<String> {
    let root = repo_root();
    if program.language == "C" {
        let source =
            std::fs::read_to_string(root.join(format!("tests/corpus/c/{}.c", program.name)))
                .unwrap();
        source
            .lines()
            .filter_map(|l| l.strip_prefix("static NOINLINE "))
            .filter_map(|rest| rest.split('(').next())
            .filter_map(|head| head.split_whitespace().last())
            .map(|name| name.trim_start_matches('*').to_string())
            .collect()
    } else {
        let source =
            std::fs::read_to_string(root.join(format!("tests/corpus/src/bin/{}.rs", program.name)))
                .unwrap();
        let lines: Vec<&str> = source.lines().collect();
        lines
            .windows(2)
            .filter(|w| w[0].trim() == "#[inline(never)]")
            .filter_map(|w| w[1].trim().strip_prefix("fn "))
            .filter_map(|rest| rest.split('(').next())
            .map(|name| format!("{}::{name}", program.name))
            .collect()
    }
}

/// Each work function of each program offloaded alone (`--offload FUNCTION`): output, exit code
/// and files must still equal wasmtime's; prints, per function, the migrations, fallbacks and
/// the first cause, so that every call the clone cannot serve shows (with `--offload all` the
/// first one stops the whole program's migration). Slow: run with `--ignored`.
#[test]
#[ignore = "one run per function: run with --ignored for the full list of fallback causes"]
fn each_work_function_offloaded_alone_behaves_like_wasmtime() {
    let programs = programs();
    let home = tempfile::tempdir().unwrap();
    type Row = (String, Option<String>, Result<Stats, String>);
    let results: Vec<(String, Vec<Row>)> = std::thread::scope(|s| {
        let handles: Vec<_> = programs
            .iter()
            .map(|p| {
                let home = home.path();
                s.spawn(move || {
                    let scratch = tempfile::tempdir().unwrap();
                    let expected = expected(p, scratch.path());
                    let rows = work_functions(p)
                        .into_iter()
                        .enumerate()
                        .map(|(i, f)| {
                            let (diff, stats) = compare(
                                p,
                                &expected,
                                scratch.path(),
                                &format!("f{i}"),
                                &["--offload", &f],
                                true,
                                home,
                            );
                            (f, diff, stats)
                        })
                        .collect();
                    (p.name.clone(), rows)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for (program, rows) in &results {
        println!("\n{program}:");
        for (function, diff, stats) in rows {
            let verdict = if diff.is_some() { "DIFFERS" } else { "same" };
            match stats {
                Ok(o) => {
                    let cause = o
                        .fallbacks
                        .events
                        .first()
                        .map(|e| format!("{}: {}", e.cause, e.detail))
                        .unwrap_or_default();
                    println!(
                        "  {function:<36} {verdict:<8} migrations {:>3} fallbacks {:>3}  {cause}",
                        o.migrations, o.fallbacks.count
                    );
                }
                Err(e) => println!("  {function:<36} {verdict:<8} {e}"),
            }
            if let Some(diff) = diff {
                println!("{diff}");
                failures.push(format!(
                    "{program} offloading {function} differs from wasmtime"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n"));
}

#[test]
fn every_wasi_function_behaves_like_wasmtime_plainly_at_points_and_on_the_clone() {
    let programs = programs();

    // Coverage: the C programs together, and the Rust program alone, import all 46 functions
    // (and nothing else of preview 1). wasm-ld and rustc drop unused imports, so an import is a
    // function the program calls.
    let engine = wasmtime::Engine::default();
    let mut c_union = BTreeSet::new();
    // The witx of preview 1 has 46 functions.
    assert_eq!(clonecloud_model::WASI_P1_FUNCTIONS.len(), 46);
    let all: BTreeSet<String> = clonecloud_model::WASI_P1_FUNCTIONS.iter().map(|s| s.to_string()).collect();
    println!("\nWASI functions imported by each program:");
    for p in &programs {
        let imports = wasi_imports(&engine, &p.path);
        assert!(
            imports.is_subset(&all),
            "{} imports functions that are not preview 1's: {:?}",
            p.name,
            imports.difference(&all).collect::<Vec<_>>()
        );
        println!(
            "  {:<10} {:>2}  {}",
            p.name,
            imports.len(),
            imports.iter().cloned().collect::<Vec<_>>().join(" ")
        );
        if p.language == "C" {
            c_union.extend(imports.clone());
        } else {
            assert_eq!(
                imports, all,
                "{} must call every preview 1 function",
                p.name
            );
        }
    }
    assert_eq!(
        c_union,
        all,
        "the C programs together must call every preview 1 function: missing {:?}",
        all.difference(&c_union).collect::<Vec<_>>()
    );

    let home = tempfile::tempdir().unwrap();
    // Programs run side by side; each one's modes one after the other.
    let reports: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = programs
            .iter()
            .map(|p| s.spawn(|| check(p, home.path())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // The table.
    println!(
        "\n{:<10} {:<5} {:<8} {:<12} {:<8} offload: migrations, fallbacks",
        "program", "lang", "plain", "points-host", "offload"
    );
    let mut failures = Vec::new();
    for r in &reports {
        let verdict = |mode: &str| match r.modes.iter().find(|(m, _)| *m == mode) {
            Some((_, None)) => "same",
            Some((_, Some(_))) => "DIFFERS",
            None => "-",
        };
        let stats = match &r.offloaded {
            Ok(o) => format!("{}, {}", o.migrations, o.fallbacks.count),
            Err(e) => e.clone(),
        };
        println!(
            "{:<10} {:<5} {:<8} {:<12} {:<8} {}",
            r.program.name,
            r.program.language,
            verdict("plain"),
            verdict("points-host"),
            verdict("offload"),
            stats
        );
    }
    for r in &reports {
        for (mode, diff) in &r.modes {
            if let Some(diff) = diff {
                println!(
                    "\n{} with {mode} differs from wasmtime:\n{diff}",
                    r.program.name
                );
                failures.push(format!("{}: {mode} differs from wasmtime", r.program.name));
            }
        }
    }

    // Offloading: migrations and no fallback, or a known exemption.
    println!("\nFallbacks with --offload all:");
    for r in &reports {
        let name = r.program.name.as_str();
        let known = KNOWN_FALLBACKS.iter().find(|(n, _)| *n == name);
        match &r.offloaded {
            Err(e) => {
                println!("  {name}: {e}");
                failures.push(format!("{name}: offload stats: {e}"));
            }
            Ok(o) => {
                let clean = o.migrations > 0 && o.fallbacks.count == 0;
                if o.fallbacks.count > 0 || o.migrations == 0 {
                    println!(
                        "  {name}: {} migrations, {} fallbacks, causes {:?}",
                        o.migrations, o.fallbacks.count, o.fallbacks.causes
                    );
                    let mut seen = BTreeSet::new();
                    for e in &o.fallbacks.events {
                        if seen.insert((e.cause, e.detail.clone())) {
                            println!("      {}: {}  (first at {})", e.cause, e.detail, e.point);
                        }
                    }
                } else {
                    println!("  {name}: {} migrations, no fallback", o.migrations);
                }
                match (clean, known) {
                    (false, None) => failures.push(format!(
                        "{name}: with --offload all, {} migrations and {} fallbacks ({:?}); not in KNOWN_FALLBACKS",
                        o.migrations, o.fallbacks.count, o.fallbacks.causes
                    )),
                    (false, Some((_, why))) => println!("      (known: {why})"),
                    (true, Some(_)) => println!("      {name} no longer falls back: remove it from KNOWN_FALLBACKS"),
                    (true, None) => {}
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n"));
}
