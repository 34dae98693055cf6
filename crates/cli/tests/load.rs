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

/// Sixteen devices each try to exhaust the clone at once (memory a MiB at a time, a table, output
/// the clone buffers) while two honest devices migrate: every hostile migration is refused, no
/// honest one fails, and the process's peak memory stays under the sum of the hostile calls'
/// budgets plus a fixed margin (the honest run alone takes about 30 MiB).
#[test]
fn hostile_devices_stay_within_their_budgets_while_honest_ones_are_served() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clonecloud"))
        .args(["load", "--devices", "2", "--seconds", "3", "--hostile", "16", "--max-memory", "32", "--max-host", "32", "--max-run-time", "1", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["failures"], 0, "{r}");
    assert!(r["migrations"].as_u64().unwrap() > 0, "{r}");
    let (tried, refused) = (r["hostile_migrations"].as_u64().unwrap(), r["hostile_refused"].as_u64().unwrap());
    assert!(tried >= 16 && refused == tried, "every hostile migration is refused: {r}");
    assert_eq!(r["budget_kib"], 16 * 64 * 1024);
    let margin_kib = 256 * 1024;
    assert!(r["peak_rss_kib"].as_u64().unwrap() < r["budget_kib"].as_u64().unwrap() + margin_kib, "{r}");
}
