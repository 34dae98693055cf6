//! The multi-threaded workload (apps/image-search-mt: image-search with worker threads and a
//! main thread that reports progress) against an independent oracle, the single-threaded
//! image-search built natively: the same report plain, paced (`--device-speed`) and with its
//! workers' calls offloaded to two clones; the progress lines the same as the plain run's.

#[path = "../../../tests/support/apps.rs"]
mod apps;

use std::path::Path;
use std::process::{Command, Output};

const CLONECLOUD: &str = env!("CARGO_BIN_EXE_clonecloud");

fn clonecloud(home: &Path, args: &[&str]) -> Output {
    let out = Command::new(CLONECLOUD).args(args).env("CLONECLOUD_HOME", home).env_remove("CLONECLOUD_LOG").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "clonecloud {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn image_search_mt_offloaded_to_two_clones_reports_what_image_search_does() {
    apps::third_party(false);
    let input = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let status = Command::new(apps::native("gen-data"))
        .args(["--app", "image-search", "--size", "medium", "--out"])
        .arg(input.path().join("in"))
        .arg("--third-party")
        .arg(apps::root().join("target/third-party/skimage-data"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let oracle = Command::new(apps::native("image-search")).arg(input.path().join("in")).output().unwrap();
    assert!(oracle.status.success());
    let module = apps::threaded_wasm();
    let module = module.to_str().unwrap();
    let dir = format!("{}::/input", input.path().join("in").display());

    let plain = clonecloud(home.path(), &["run", "--dir", &dir, module, "/input", "4"]);
    assert_eq!(plain.stdout, oracle.stdout, "the threaded workload's report is image-search's");
    let progress = String::from_utf8(plain.stderr.clone()).unwrap();
    assert_eq!(progress.lines().filter(|l| l.starts_with("image-search-mt: searched ")).count(), 4, "{progress}");

    let paced = clonecloud(home.path(), &["run", "--device-speed", "0.5", "--dir", &dir, module, "/input", "4"]);
    assert_eq!((paced.stdout, paced.stderr), (oracle.stdout.clone(), plain.stderr.clone()), "a paced device runs the same program");

    let stats = home.path().join("stats.json");
    let stats_arg = stats.to_str().unwrap();
    let offloaded = clonecloud(home.path(), &["run", "--dir", &dir, "--clone", "local:2", "--offload", "image_search_mt::search_shard", "--stats", stats_arg, module, "/input", "4"]);
    assert_eq!(offloaded.stdout, oracle.stdout);
    assert_eq!(offloaded.stderr, plain.stderr, "the progress the main thread reports while its workers are away");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    let n = |k: &str| s[k].as_u64().unwrap();
    assert!(n("migrations") >= 1, "{s}");
    // What the workers allocated, used and freed (decoded pixels, integral images) does not
    // travel back: the pages left out as free heap outnumber those that did.
    let p = &s["points"]["image_search_mt::search_shard"];
    let (freed, down) = (p["pages_freed"].as_u64().unwrap(), p["pages_down"].as_u64().unwrap());
    assert!(freed > down, "{s}");
    // Every conflict was sent again or ran here.
    let conflict_fallbacks = s["fallbacks"]["causes"]["conflict"].as_u64().unwrap_or(0);
    assert_eq!(n("conflicts"), n("conflicts_sent_again") + conflict_fallbacks, "{s}");
}
