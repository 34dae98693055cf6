//! `cargo xtask`: the developer tasks that need cargo, kept out of the `clonecloud` binary (which
//! runs on machines with no Rust toolchain and never invokes cargo).
//!
//! - `cargo xtask build`: builds the three workloads for wasm32-wasip1 and gen-data natively into
//!   `target/apps`, the test corpus (`tests/corpus`) into `target/corpus`, and fetches
//!   image-search's third-party data into `target/third-party`. Prints where each went.
//! - `cargo xtask bench ARGS...`: builds those and the release `clonecloud`, then runs
//!   `clonecloud bench ARGS... --modules ... --gen-data ... --third-party ...`.
//! - `cargo xtask faults ARGS...`: the same for `clonecloud faults` (with `--corpus` too).
//!
//! What it does not know: anything about clonecloud beyond these paths and flags.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Where `cargo xtask build` puts what it builds, under the repository's root.
struct Built {
    modules: PathBuf,
    gen_data: PathBuf,
    corpus: PathBuf,
    third_party: PathBuf,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[OsString]) -> Result<ExitCode, String> {
    let root = root();
    let task = args.first().and_then(|a| a.to_str()).unwrap_or("");
    match task {
        "build" => {
            let b = build(&root)?;
            println!("workloads (wasm): {}", b.modules.display());
            println!("gen-data:         {}", b.gen_data.display());
            println!("test corpus:      {}", b.corpus.display());
            println!("third-party data: {}", b.third_party.display());
            Ok(ExitCode::SUCCESS)
        }
        "bench" | "faults" => {
            let rest = &args[1..];
            let simulated = rest.iter().any(|a| a == "--simulated");
            let built = if simulated { None } else { Some(build(&root)?) };
            cargo(&root, &["build", "--release", "--locked", "--quiet", "-p", "clonecloud", "--bin", "clonecloud"], None, "clonecloud")?;
            let mut cmd = Command::new(root.join("target/release/clonecloud"));
            cmd.current_dir(&root).arg(task).args(rest);
            if let Some(b) = built {
                cmd.arg("--modules").arg(&b.modules).arg("--gen-data").arg(&b.gen_data).arg("--third-party").arg(&b.third_party);
                if task == "faults" {
                    cmd.arg("--corpus").arg(&b.corpus);
                }
            }
            let status = cmd.status().map_err(|e| format!("cannot run target/release/clonecloud: {e}"))?;
            Ok(status.code().map_or(ExitCode::FAILURE, |c| ExitCode::from(c as u8)))
        }
        _ => Err(format!(
            "unknown task `{task}`: give `build` (the workloads, gen-data, the test corpus and the third-party data), `bench ARGS...` or `faults ARGS...` (build, then run `clonecloud bench|faults ARGS...` on what was built)"
        )),
    }
}

/// The repository's root (this crate's parent directory).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the repository").to_path_buf()
}

/// Runs cargo in `root` with `args` (and `--target-dir DIR` when given), with the caller's
/// RUSTFLAGS and CARGO_TARGET_DIR removed (the guests are built as the tests build them).
fn cargo(root: &Path, args: &[&str], target_dir: Option<&Path>, what: &str) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args(args).env_remove("RUSTFLAGS").env_remove("CARGO_TARGET_DIR");
    if let Some(dir) = target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    eprintln!("xtask: building {what}");
    let status = cmd.status().map_err(|e| format!("cannot run cargo to build {what}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("building {what} failed (see cargo's messages above)")) }
}

fn build(root: &Path) -> Result<Built, String> {
    let apps = root.join("target/apps");
    let corpus = root.join("target/corpus");
    let workloads = ["-p", "virus-scan", "-p", "image-search", "-p", "behavior-profile", "-p", "photo-tagger"];
    let wasm: Vec<&str> = ["build", "--release", "--locked", "--quiet", "--target", "wasm32-wasip1"].into_iter().chain(workloads).collect();
    cargo(root, &wasm, Some(&apps), "the workloads")?;
    cargo(root, &["build", "--release", "--locked", "--quiet", "--target", "wasm32-wasip1-threads", "-p", "image-search-mt"], Some(&apps), "the multi-threaded workload")?;
    cargo(root, &["build", "--release", "--locked", "--quiet", "-p", "gen-data"], Some(&apps), "gen-data")?;
    let manifest = root.join("tests/corpus/Cargo.toml");
    let manifest = manifest.to_str().ok_or("the repository's path is not UTF-8")?;
    cargo(root, &["build", "--release", "--quiet", "--target", "wasm32-wasip1", "--manifest-path", manifest], Some(&corpus), "the test corpus")?;
    eprintln!("xtask: fetching the third-party data");
    // (Its messages go to stderr: stdout may be a task's --json.)
    let status = Command::new("bash")
        .arg(root.join("scripts/fetch-third-party"))
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("cannot run scripts/fetch-third-party: {e}"))?;
    if !status.success() {
        return Err("scripts/fetch-third-party failed (see its message above)".into());
    }
    Ok(Built {
        modules: apps.join("wasm32-wasip1/release"),
        gen_data: apps.join("release/gen-data"),
        corpus: corpus.join("wasm32-wasip1/release"),
        third_party: root.join("target/third-party/skimage-data"),
    })
}
