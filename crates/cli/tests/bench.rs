//! `clonecloud bench paper --quick` end to end, as CI runs it: every app x size x configuration
//! is in the JSON, the CSV, the Markdown and the figures, the files agree with each other, and
//! every run's output was identical to the Phone run's (the bench itself fails otherwise).
//! Also the link emulator as a process between a device and a clone server.

#[path = "../../../tests/support/apps.rs"]
mod apps;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const CLONECLOUD: &str = env!("CARGO_BIN_EXE_clonecloud");

#[test]
fn bench_paper_quick_produces_every_row_and_figure_consistently() {
    let python = apps::third_party(false);
    drop(python);
    let out = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let modules = apps::wasm("virus-scan").parent().unwrap().to_path_buf();
    let run = Command::new(CLONECLOUD)
        .args(["bench", "paper", "--quick", "--json", "--out"])
        .arg(out.path())
        .arg("--modules")
        .arg(&modules)
        .arg("--threaded-modules")
        .arg(apps::threaded_wasm().parent().unwrap())
        .arg("--gen-data")
        .arg(apps::native("gen-data"))
        .arg("--third-party")
        .arg(apps::root().join("target/third-party/skimage-data"))
        .env("CLONECLOUD_HOME", home.path())
        .env_remove("CLONECLOUD_LOG")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let reps = report["reps"].as_u64().unwrap() as usize;
    assert_eq!(reps, 2);
    let all: Vec<&str> = apps::APPS.iter().copied().chain([apps::DEVICE_APP]).collect();
    assert_eq!(rows.len(), 4 * 3, "4 apps x small x (Phone, CC-WiFi, CC-3G)");
    let configs = ["Phone", "CC-WiFi", "CC-3G"];
    for &app in &all {
        let phone = rows.iter().find(|r| r["app"] == app && r["config"] == "Phone").unwrap();
        for config in configs {
            let r = rows.iter().find(|r| r["app"] == app && r["size"] == "small" && r["config"] == config).unwrap_or_else(|| panic!("no {app} {config} row"));
            assert_eq!(r["identical"], true, "{app} {config}");
            assert_eq!(r["times_s"].as_array().unwrap().len(), reps);
            assert_eq!(r["energies_j"].as_array().unwrap().len(), reps);
            let (mean, phone_mean) = (r["time"]["mean"].as_f64().unwrap(), phone["time"]["mean"].as_f64().unwrap());
            assert!((r["speedup"].as_f64().unwrap() - phone_mean / mean).abs() < 1e-9);
            assert!(r["energy"]["mean"].as_f64().unwrap() > 0.0 && r["ideal_s"].as_f64().unwrap() > 0.0);
            // Offloaded rows migrated; local ones moved nothing over the link.
            let offloaded = !r["partition"].as_array().unwrap().is_empty();
            if config != "Phone" {
                assert_eq!(offloaded, r["migrations"].as_f64().unwrap() > 0.0, "{app} {config}: {r}");
                assert_eq!(offloaded, r["bytes_up"].as_f64().unwrap() > 0.0, "{app} {config}: {r}");
            }
        }
    }
    // behavior-profile's small input runs for seconds on the device and well under one on the
    // clone: on Wi-Fi the optimizer offloads it.
    let bp = rows.iter().find(|r| r["app"] == "behavior-profile" && r["config"] == "CC-WiFi").unwrap();
    assert!(!bp["partition"].as_array().unwrap().is_empty(), "{bp}");
    // The photo tagger's partition splits it: the detection migrates, the capture (camera and
    // GPS calls in a loop) and the screen stay on the device.
    let pt = rows.iter().find(|r| r["app"] == apps::DEVICE_APP && r["config"] == "CC-WiFi").unwrap();
    let names: Vec<&str> = pt["partition"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(names.iter().any(|n| n.contains("detect")) && !names.iter().any(|n| n.contains("capture_all") || n.contains("photo_tagger::main")), "{pt}");
    assert!(report["energy_is_modelled"].as_str().unwrap().contains("modelled, not metered"));

    // The multi-threaded workload: the paced phone, then per network its workers offloaded to
    // one clone and to two; every run's output was the phone's (the bench fails otherwise), and
    // the offloaded rows migrated.
    let m = &report["multiplicity"];
    let trows = m["rows"].as_array().unwrap();
    assert_eq!(trows.len(), 1 + 2 * 2, "Phone + (CC-WiFi, CC-3G) x (1, 2 clones): {m}");
    for r in trows {
        assert_eq!(r["identical"], true);
        // Paced to Pulley's speed on image-search (small: the report's own ratio).
        let speed = r["device_speed"].as_f64().unwrap();
        assert!(speed > 0.0 && speed < 1.0, "{r}");
        assert_eq!(r["times_s"].as_array().unwrap().len(), reps);
        let clones = r["clones"].as_u64().unwrap();
        assert_eq!(clones == 0, r["config"] == "Phone", "{r}");
        if clones > 0 {
            assert!(r["migrations"].as_f64().unwrap() >= 1.0, "{r}");
        }
    }

    // The CSV has the same rows and means; the Markdown names every row; the figures exist.
    let csv = std::fs::read_to_string(out.path().join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + rows.len());
    let header: Vec<&str> = lines[0].split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for (line, row) in lines[1..].iter().zip(rows) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[col("app")], row["app"]);
        assert_eq!(f[col("config")], row["config"]);
        let mean: f64 = f[col("time_mean_s")].parse().unwrap();
        assert!((mean - row["time"]["mean"].as_f64().unwrap()).abs() < 1e-3);
        assert_eq!(f[col("identical")], "true");
    }
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("modelled, not metered"));
    assert!(md.contains("## Multiplicity") && md.contains("| image-search-mt | small | CC-WiFi | 2 |"), "report.md lacks the Multiplicity rows");
    for &app in &all {
        for config in configs {
            assert!(md.contains(&format!("| {app} | small | {config} |")), "report.md lacks {app} {config}");
        }
    }
    for name in ["time", "energy"] {
        let svg = std::fs::read_to_string(out.path().join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && all.iter().all(|a| svg.contains(a)) && configs.iter().all(|c| svg.contains(c)), "{name}.svg");
        let png = std::fs::read(out.path().join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{name}.png");
    }
}

/// `clonecloud link` between `run --offload` and `serve`: the output is the plain run's, and the
/// round trips take the emulated delay.
#[test]
fn link_process_carries_an_offloaded_run() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path();
    for name in ["device", "server"] {
        assert!(Command::new(CLONECLOUD).args(["keygen", "--out"]).arg(keys.join(name)).status().unwrap().success());
    }
    std::fs::copy(keys.join("device.pub"), keys.join("allow")).unwrap();
    let mut serve = Command::new(CLONECLOUD)
        .args(["serve", "--listen", "127.0.0.1:0", "--key"])
        .arg(keys.join("server.key"))
        .arg("--allow")
        .arg(keys.join("allow"))
        .env("CLONECLOUD_HOME", dir.path().join("clone"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = first_line(serve.stdout.take().unwrap()).strip_prefix("listening on ").unwrap().to_string();
    let mut link = Command::new(CLONECLOUD).args(["link", "--to", &addr, "--network", "100,200"]).stdout(Stdio::piped()).spawn().unwrap();
    let via = first_line(link.stdout.take().unwrap()).strip_prefix("listening on ").unwrap().to_string();
    let input = dir.path().join("in");
    apps::generate("behavior-profile", "small", &input);
    let plain = apps::run_wasm(CLONECLOUD.as_ref(), "behavior-profile", &input, &[]);
    let stats = dir.path().join("stats.json");
    let start = std::time::Instant::now();
    let offloaded = apps::run_wasm(
        CLONECLOUD.as_ref(),
        "behavior-profile",
        &input,
        &[
            "--offload",
            "behavior_profile::run",
            "--clone",
            &via,
            "--key",
            keys.join("device.key").to_str().unwrap(),
            "--clone-key",
            keys.join("server.pub").to_str().unwrap(),
            "--stats",
            stats.to_str().unwrap(),
        ],
    );
    let took = start.elapsed();
    let _ = (link.kill(), serve.kill(), link.wait(), serve.wait());
    assert_eq!(offloaded.status.code(), plain.status.code(), "{}", String::from_utf8_lossy(&offloaded.stderr));
    assert_eq!(offloaded.stdout, plain.stdout);
    let stats = clonecloud_stats::Stats::read(&stats).expect("the offloaded run wrote its --stats");
    assert_eq!(stats.migrations, 1, "{stats:?}");
    // Connect, TLS, hello, files, data, migration: several round trips of 200 ms.
    assert!(took >= std::time::Duration::from_millis(800), "{took:?}");
}

fn first_line(r: impl std::io::Read) -> String {
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).unwrap();
    line.trim().to_string()
}
