//! The workloads (`apps/`): built natively and for wasm32-wasip1 during the test run into
//! `target/apps`, their inputs written by gen-data, the third-party data fetched by
//! `scripts/fetch-third-party`. Shared by test suites (`#[path]`-included), built once per process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

pub const APPS: [&str; 3] = ["virus-scan", "image-search", "behavior-profile"];

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn target_dir() -> PathBuf {
    root().join("target/apps")
}

fn cargo(args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root())
        .args(args)
        .arg("--target-dir")
        .arg(target_dir())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("cannot start cargo to build the workloads");
    assert!(status.success(), "cargo {args:?} failed");
}

/// Builds the apps (native and wasm) and gen-data, once per process.
fn built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut native = vec!["build", "--release", "--quiet", "--locked", "-p", "gen-data"];
        let mut wasm = vec!["build", "--release", "--quiet", "--locked", "--target", "wasm32-wasip1"];
        for app in APPS.iter().chain([&DEVICE_APP]) {
            native.extend(["-p", app]);
            wasm.extend(["-p", app]);
        }
        cargo(&native);
        cargo(&wasm);
        cargo(&["build", "--release", "--quiet", "--locked", "--target", "wasm32-wasip1-threads", "-p", THREADED_APP]);
    });
}

/// The workload that uses the device API (camera, position, screen: docs/device-api.md); its
/// native build reads the same files (`CLONECLOUD_CAMERA`, `CLONECLOUD_GPS`).
pub const DEVICE_APP: &str = "photo-tagger";

/// The multi-threaded workload (image-search's, with worker threads), built for
/// wasm32-wasip1-threads.
pub const THREADED_APP: &str = "image-search-mt";

/// The wasm32-wasip1-threads build of [`THREADED_APP`].
pub fn threaded_wasm() -> PathBuf {
    built();
    target_dir().join(format!("wasm32-wasip1-threads/release/{THREADED_APP}.wasm"))
}

/// The native build of `app`.
pub fn native(app: &str) -> PathBuf {
    built();
    target_dir().join("release").join(app)
}

/// The wasm32-wasip1 build of `app`.
pub fn wasm(app: &str) -> PathBuf {
    built();
    target_dir().join(format!("wasm32-wasip1/release/{app}.wasm"))
}

/// Runs `scripts/fetch-third-party` (with `--oracle`: also the scikit-image venv), once per
/// process and flavour; returns the Python of the venv.
pub fn third_party(oracle: bool) -> PathBuf {
    static DONE: Mutex<(bool, bool)> = Mutex::new((false, false));
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if !done.0 || (oracle && !done.1) {
        let mut cmd = Command::new("bash");
        cmd.arg(root().join("scripts/fetch-third-party"));
        if oracle {
            cmd.arg("--oracle");
        }
        let status = cmd.status().expect("cannot run scripts/fetch-third-party");
        assert!(status.success(), "scripts/fetch-third-party failed (see its message above)");
        done.0 = true;
        done.1 |= oracle;
    }
    root().join("target/third-party/venv/bin/python")
}

/// Writes the input set of `app` at `size` into `out` with gen-data.
pub fn generate(app: &str, size: &str, out: &Path) {
    if app == "image-search" || app == DEVICE_APP {
        third_party(false);
    }
    let status = Command::new(native("gen-data"))
        .args(["--app", app, "--size", size, "--out"])
        .arg(out)
        .status()
        .expect("cannot start gen-data");
    assert!(status.success(), "gen-data --app {app} --size {size} failed");
}

/// Runs the native build of `app` on `input`.
pub fn run_native(app: &str, input: &Path) -> Output {
    Command::new(native(app)).arg(input).output().expect("cannot start the native app")
}

/// Runs the wasm build of `app` through `clonecloud run`, with `input` preopened as `/input`.
pub fn run_wasm(clonecloud: &Path, app: &str, input: &Path, extra: &[&str]) -> Output {
    Command::new(clonecloud)
        .arg("run")
        .args(extra)
        .arg("--dir")
        .arg(format!("{}::/input", input.display()))
        .arg(wasm(app))
        .arg("/input")
        .output()
        .expect("cannot start clonecloud")
}

/// The sizes the cross-build comparison covers: `CLONECLOUD_WORKLOAD_SIZES` (comma-separated),
/// `small` by default.
pub fn sizes() -> Vec<String> {
    std::env::var("CLONECLOUD_WORKLOAD_SIZES")
        .unwrap_or_else(|_| "small".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}
