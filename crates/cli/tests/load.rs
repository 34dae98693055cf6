//! `clonecloud load` through the binary: simulated devices, each with its own key and replica,
//! against one clone; every answer is checked by the device, and none may fail.

#[test]
fn simulated_devices_migrate_without_failure() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clonecloud")).args(["load", "--devices", "16", "--seconds", "1", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["failures"], 0, "{r}");
    assert_eq!(r["devices"], 16);
    assert!(r["migrations"].as_u64().unwrap() >= 16, "every device migrated: {r}");
    assert!(r["p99_us"].as_f64().unwrap() >= r["p50_us"].as_f64().unwrap());
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_clonecloud")).args(["load", "--devices", "0"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("error: --devices must be"));
}
