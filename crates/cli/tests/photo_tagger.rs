//! The fourth workload, apps/photo-tagger (the device API: frames from the camera, a fix per
//! frame, faces detected, results and progress on the screen), against an independent oracle:
//! its native build over the same files (`CLONECLOUD_CAMERA`, `CLONECLOUD_GPS`). Plain, with its
//! capture offloaded (every camera and GPS call proxied to the device), and with its detection
//! offloaded: the same stdout, stderr and exit code. Profiled on the Pulley phone, the partition
//! for Wi-Fi splits it: the detection migrates, the capture and the screen stay on the device.

#[path = "../../../tests/support/apps.rs"]
mod apps;

use std::path::Path;
use std::process::{Command, Output};

const CLONECLOUD: &str = env!("CARGO_BIN_EXE_clonecloud");

fn cc(home: &Path, args: &[&str]) -> Output {
    Command::new(CLONECLOUD).args(args).env("CLONECLOUD_HOME", home).env_remove("CLONECLOUD_LOG").output().unwrap()
}

fn stats(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn photo_tagger_gives_its_native_output_here_and_offloaded_and_its_partition_splits_it() {
    let input = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    apps::generate(apps::DEVICE_APP, "medium", input.path());
    let (camera, track, model) = (input.path().join("camera"), input.path().join("track.csv"), input.path().join("model"));
    let oracle = Command::new(apps::native(apps::DEVICE_APP)).arg(&model).env("CLONECLOUD_CAMERA", &camera).env("CLONECLOUD_GPS", &track).output().unwrap();
    assert_eq!(oracle.status.code(), Some(0), "{}", String::from_utf8_lossy(&oracle.stderr));
    let report = String::from_utf8_lossy(&oracle.stdout);
    assert!(report.contains("faces: ") && !report.contains("faces: 0,"), "the medium input has faces: {report}");

    let wasm = apps::wasm(apps::DEVICE_APP);
    let dir = format!("{}::/model", model.display());
    let device = ["--camera", camera.to_str().unwrap(), "--gps", track.to_str().unwrap(), "--dir", &dir];
    let run = |extra: &[&str]| {
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&device);
        args.extend([wasm.to_str().unwrap(), "/model"]);
        let out = cc(home.path(), &args);
        assert_eq!((out.status.code(), &out.stdout, &out.stderr), (oracle.status.code(), &oracle.stdout, &oracle.stderr), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[]);
    let file = home.path().join("stats.json");
    let st = file.to_str().unwrap();
    // The capture on the clone: each frame's size, its bytes and its fix come from the device.
    run(&["--offload", "photo_tagger::capture_all", "--stats", st]);
    let s = stats(&file);
    let p = &s["points"]["photo_tagger::capture_all"];
    assert_eq!((s["migrations"].as_u64(), s["fallbacks"]["count"].as_u64()), (Some(1), Some(0)), "{s}");
    let frames = report.lines().filter(|l| l.starts_with("frame ")).count() as u64;
    assert_eq!(p["proxied_calls"].as_u64(), Some(3 * frames + 1), "size, frame and fix per frame, then the camera's end: {s}");
    // The detection on the clone, frame by frame.
    run(&["--offload", "photo_tagger::detect", "--stats", st]);
    let s = stats(&file);
    assert_eq!((s["migrations"].as_u64(), s["fallbacks"]["count"].as_u64()), (Some(frames), Some(0)), "{s}");

    // The optimizer, from a profile on the emulated phone: on Wi-Fi the detection migrates; the
    // capture (a camera and a GPS round trip per frame) and the screen stay here.
    let mut profile = vec!["profile", "--device-engine", "pulley"];
    profile.extend_from_slice(&device);
    profile.extend([wasm.to_str().unwrap(), "/model"]);
    assert!(cc(home.path(), &profile).status.success());
    let out = cc(home.path(), &["partition", "--network", "wifi", "--json", wasm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = p["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(names.iter().any(|n| n.contains("detect")), "{p}");
    assert!(!names.iter().any(|n| n.contains("capture_all") || n.contains("main") || *n == "_start"), "{p}");
}
