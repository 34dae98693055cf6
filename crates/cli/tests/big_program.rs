//! Large real C++ programs built by others, compiled here from Debian's sources by
//! `scripts/build-big-program` (clang 22, wasm exception handling in its standard exnref form):
//! each runs under `clonecloud run` plainly, with every function a migration point (flag and
//! host mode), and with its `main` offloaded to the embedded clone, and every run prints what
//! the unmodified module prints on plain wasmtime (stdout, stderr, exit code), which is also
//! what `tests/corpus/big/expected` holds. The offloaded runs must migrate and never fall back.
//!
//! - Lua 5.4 compiled as C++ (`error`/`pcall` throw and catch C++ exceptions), 0.7 MB: always
//!   (the test runs `scripts/build-big-program lua`, which installs what it needs).
//! - cppcheck 2.10's own test runner at -O0 (24 MB, 40,000 functions, exceptions thrown and
//!   caught by the hundred): with `CLONECLOUD_BIG=1`, after `scripts/build-big-program`
//!   (about 4 minutes to build; the test compiles the module several times, a few minutes more).

#[path = "../../../tests/support/oracle.rs"]
#[allow(dead_code)]
mod oracle;

use clonecloud_stats::Stats;
use std::path::{Path, PathBuf};
use std::process::Command;

const CLONECLOUD: &str = env!("CARGO_BIN_EXE_clonecloud");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

struct Program {
    name: &'static str,
    module: PathBuf,
    /// (host, guest) preopens.
    dirs: Vec<(PathBuf, &'static str)>,
    args: Vec<&'static str>,
}

fn lua() -> Program {
    let r = root();
    Program { name: "lua", module: r.join("target/big/lua.wasm"), dirs: vec![(r.join("tests/corpus/big/lua"), "/lua")], args: vec!["/lua/errors.lua"] }
}

fn testrunner() -> Program {
    let r = root();
    Program {
        name: "testrunner",
        module: r.join("target/big/cppcheck-testrunner.wasm"),
        dirs: vec![(r.join("target/big/cppcheck-share"), "/cppcheck")],
        args: vec!["TestGarbage", "TestSimplifyTypedef", "TestVarID"],
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Observed {
    stdout: String,
    stderr: String,
    exit: i32,
}

/// The oracle: plain wasmtime, which must also print what `expected/` holds.
fn oracle(p: &Program) -> Observed {
    let argv: Vec<String> = std::iter::once(p.module.to_string_lossy().into_owned()).chain(p.args.iter().map(|a| a.to_string())).collect();
    let dirs: Vec<(&Path, &str)> = p.dirs.iter().map(|(h, g)| (h.as_path(), *g)).collect();
    let plain = oracle::run_with_dirs(&p.module, &argv, &[], &dirs);
    let seen = Observed { stdout: String::from_utf8_lossy(&plain.stdout).into_owned(), stderr: plain.stderr, exit: plain.exit };
    let expected = |k: &str| std::fs::read_to_string(root().join(format!("tests/corpus/big/expected/{}.{k}", p.name))).unwrap();
    assert_eq!(seen.stdout, expected("stdout"), "{}: plain wasmtime's stdout and expected/", p.name);
    assert_eq!(seen.exit.to_string(), expected("status").trim(), "{}: plain wasmtime's exit code", p.name);
    seen
}

fn clonecloud(p: &Program, home: &Path, options: &[&str]) -> Observed {
    let mut cmd = Command::new(CLONECLOUD);
    cmd.arg("run").args(options);
    for (h, g) in &p.dirs {
        cmd.arg("--dir").arg(format!("{}::{g}", h.display()));
    }
    let out = cmd.arg(&p.module).args(&p.args).env("CLONECLOUD_HOME", home).env_remove("CLONECLOUD_LOG").output().unwrap();
    Observed { stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned(), exit: out.status.code().expect("not killed") }
}

fn stats(path: &Path) -> Stats {
    Stats::read(path).expect("the offloaded run wrote its --stats")
}

/// Every mode against the oracle; `offloaded`: functions offloaded one at a time, each of which
/// must migrate without a fallback.
fn check(p: &Program, offloaded: &[&str]) {
    if !p.module.is_file() {
        let msg = format!("{} is missing: run scripts/build-big-program", p.module.display());
        assert!(std::env::var_os("CLONECLOUD_REQUIRE_ORACLES").is_none(), "{msg}");
        eprintln!("skipped: {msg}");
        return;
    }
    let want = oracle(p);
    let home = tempfile::tempdir().unwrap();
    for options in [&[][..], &["--points", "all"], &["--points", "all"], &["--points", "all", "--point-mode", "host"]] {
        let got = clonecloud(p, home.path(), options);
        // (The guest's stderr is compared too: plain wasmtime's has no trap line here.)
        assert_eq!(got, want, "{}: clonecloud run {options:?}", p.name);
    }
    for f in offloaded {
        for clone in ["cold", "warm"] {
            let s = home.path().join("stats.json");
            let got = clonecloud(p, home.path(), &["--offload", f, "--clone", "local", "--stats", s.to_str().unwrap()]);
            assert_eq!(got, want, "{}: --offload {f} ({clone} clone)", p.name);
            let s = stats(&s);
            assert!(s.migrations > 0, "{}: --offload {f}: {s:?}", p.name);
            assert_eq!(s.fallbacks.count, 0, "{}: --offload {f}: {s:?}", p.name);
        }
    }
}

#[test]
fn lua_as_cxx_with_exceptions_runs_everywhere_like_plain_wasmtime() {
    // Built here when missing (about 2 minutes; nothing when built), as the C corpus is.
    let status = Command::new("bash").arg(root().join("scripts/build-big-program")).arg("lua").status().unwrap();
    assert!(status.success(), "scripts/build-big-program lua failed");
    // `main`, and the function that runs protected calls (it catches what `error` throws).
    check(&lua(), &["main", "luaD_rawrunprotected"]);
    // The function that throws every Lua error (a C++ `throw`, a wasm exception of libc++abi's
    // tag whose object lives in linear memory): on the clone each call ends with the exception
    // it does not catch, which comes back with the state and is thrown again here from the
    // point, where `luaD_rawrunprotected` catches it.
    let p = lua();
    let home = tempfile::tempdir().unwrap();
    let s = home.path().join("stats.json");
    let got = clonecloud(&p, home.path(), &["--offload", "luaD_throw", "--clone", "local", "--stats", s.to_str().unwrap()]);
    assert_eq!(got, oracle(&p), "lua: --offload luaD_throw");
    let s = stats(&s);
    assert!(s.migrations > 0, "{s:?}");
    assert_eq!(s.fallbacks.count, 0, "{s:?}");
    assert!(s.switched_local.is_empty(), "{s:?}");
}

#[test]
fn cppcheck_s_test_runner_runs_everywhere_like_plain_wasmtime() {
    if std::env::var_os("CLONECLOUD_BIG").is_none() {
        eprintln!("skipped: set CLONECLOUD_BIG=1 (after scripts/build-big-program) for the 24 MB cppcheck test runner");
        return;
    }
    check(&testrunner(), &["main"]);
}
