//! The differential-test corpus: guest programs built from source in `tests/corpus` during the
//! test run (Rust for wasm32-wasip1 with cargo, WAT with the `wat` crate), with the arguments,
//! environment and files each one is run with. Shared by the test suites of several crates
//! (`#[path]`-included), built once per process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One guest program of the corpus and how to run it.
#[derive(Debug, Clone)]
pub struct Guest {
    /// Short name (the file stem).
    pub name: &'static str,
    /// The built `.wasm` file.
    pub path: PathBuf,
    /// Arguments after argv[0].
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The directory every run preopens as `/data` gets a fresh copy of this.
pub fn fixture_dir() -> PathBuf {
    repo_root().join("tests/corpus/fixtures/data")
}

/// Builds the corpus (once per process) and returns it.
pub fn corpus() -> &'static [Guest] {
    static CORPUS: OnceLock<Vec<Guest>> = OnceLock::new();
    CORPUS.get_or_init(build)
}

/// One guest by name.
pub fn guest(name: &str) -> &'static Guest {
    corpus()
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no guest {name}"))
}

fn build() -> Vec<Guest> {
    let root = repo_root();
    let target_dir = root.join("target/corpus");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(root.join("tests/corpus/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("cannot start cargo to build the test corpus");
    assert!(
        status.success(),
        "building tests/corpus for wasm32-wasip1 failed"
    );
    let rust = |name: &'static str, args: &[&str], env: &[(&str, &str)]| Guest {
        name,
        path: target_dir.join(format!("wasm32-wasip1/release/{name}.wasm")),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let wat_dir = target_dir.join("wat");
    std::fs::create_dir_all(&wat_dir).unwrap();
    let wat = |name: &'static str| {
        let wasm = wat::parse_file(root.join(format!("tests/corpus/wat/{name}.wat")))
            .unwrap_or_else(|e| panic!("tests/corpus/wat/{name}.wat: {e}"));
        let path = wat_dir.join(format!("{name}.wasm"));
        if std::fs::read(&path).ok().as_deref() != Some(&wasm[..]) {
            let tmp = wat_dir.join(format!(".{name}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, &wasm).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
        Guest {
            name,
            path,
            args: Vec::new(),
            env: Vec::new(),
        }
    };
    vec![
        rust("hello", &[], &[]),
        rust(
            "args_env",
            &["one", "two words", "--flag", "ünï", ""],
            &[("CC_NUMBER", "12"), ("CC_PATH", "/x/y"), ("CC_EMPTY", "")],
        ),
        rust("files", &[], &[]),
        rust("fsops", &[], &[]),
        rust("stdin_echo", &[], &[]),
        rust("handles", &[], &[]),
        rust("exit_code", &[], &[]),
        rust("panic", &[], &[]),
        rust("compute", &["1"], &[]),
        rust("textproc", &[], &[]),
        // Deep enough that every level crossing the host would overflow wasmtime's default stack
        // limit (it runs at depth 3000 under plain wasmtime, not at 4000).
        rust("deep", &["2000"], &[]),
        wat("bare"),
        wat("multivalue"),
        wat("indirect"),
    ]
}

/// Copies a directory tree (the fixture) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    clonecloud_harness::dirs::copy_dir(from, to).unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}

/// Every file under `dir` with its contents, by relative path, directories as `path/`.
pub fn snapshot_dir(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    clonecloud_harness::dirs::snapshot(dir)
}
