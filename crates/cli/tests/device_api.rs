//! The device API (docs/device-api.md) through the binary: a module that takes every frame of
//! the camera (asking its size first with a buffer too small), a position fix after each, and
//! shows a line on the screen. Oracle: the frame files and the track themselves (the expected
//! stdout is built here from them), and the documented screen format. Run plainly, and with the
//! function that does it all offloaded to the embedded clone, where the camera and position
//! calls are proxied and the screen journaled: the same stdout, stderr and exit code, and
//! `--stats` counts the proxied calls.

use std::path::Path;
use std::process::{Command, Output};

const CLONECLOUD: &str = env!("CARGO_BIN_EXE_clonecloud");

/// `look` loops: `camera_frame` with 4 bytes (must say TOO_SMALL, else exit 99), again with
/// 64 KiB (OK, else 98), the frame to stdout, `position` (OK, else 97) and its 24 bytes to
/// stdout, `screen_text("frame")`; at END it returns the number of frames, the exit code.
const LOOK: &str = r#"(module
  (import "clonecloud_device" "camera_frame" (func $cam (param i32 i32 i32) (result i32)))
  (import "clonecloud_device" "position" (func $pos (param i32) (result i32)))
  (import "clonecloud_device" "screen_text" (func $text (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "frame")
  (func $out (param $p i32) (param $n i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $look (export "look") (result i32)
    (local $n i32) (local $s i32)
    (block $done
      (loop $next
        (local.set $s (call $cam (i32.const 1024) (i32.const 4) (i32.const 16)))
        (br_if $done (i32.eq (local.get $s) (i32.const 2)))
        (if (i32.ne (local.get $s) (i32.const 1)) (then (return (i32.const 99))))
        (if (i32.ne (call $cam (i32.const 1024) (i32.const 65536) (i32.const 16)) (i32.const 0)) (then (return (i32.const 98))))
        (call $out (i32.const 1024) (i32.load (i32.const 16)))
        (if (i32.ne (call $pos (i32.const 32)) (i32.const 0)) (then (return (i32.const 97))))
        (call $out (i32.const 32) (i32.const 24))
        (drop (call $text (i32.const 64) (i32.const 5)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))
  (func (export "_start") (call $exit (call $look))))"#;

struct Setup {
    _dir: tempfile::TempDir,
    home: tempfile::TempDir,
    module: std::path::PathBuf,
    camera: std::path::PathBuf,
    track: std::path::PathBuf,
    /// What `look` must print: each frame (in name order) and the fix after it.
    want: Vec<u8>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("look.wasm");
    std::fs::write(&module, wat::parse_str(LOOK).unwrap()).unwrap();
    let camera = dir.path().join("camera");
    std::fs::create_dir(&camera).unwrap();
    // Written out of order: taken in name order.
    let frames: Vec<(&str, Vec<u8>)> = vec![("b.png", (0..12345u32).map(|i| (i * 7) as u8).collect()), ("a.png", (0..5000u32).map(|i| (i * 13 + 1) as u8).collect())];
    for (name, bytes) in &frames {
        std::fs::write(camera.join(name), bytes).unwrap();
    }
    std::fs::create_dir(camera.join("not-a-frame")).unwrap();
    let track = dir.path().join("track.csv");
    std::fs::write(&track, "unix_ms,latitude,longitude\n# a walk\n1700000000000,37.4275,-122.1697\n1700000005000,37.4276,-122.1699\n").unwrap();
    let fix = |ms: i64, lat: f64, lon: f64| [lat.to_le_bytes().to_vec(), lon.to_le_bytes().to_vec(), ms.to_le_bytes().to_vec()].concat();
    let mut want = frames[1].1.clone();
    want.extend(fix(1_700_000_000_000, 37.4275, -122.1697));
    want.extend(&frames[0].1);
    want.extend(fix(1_700_000_005_000, 37.4276, -122.1699));
    Setup { _dir: dir, home: tempfile::tempdir().unwrap(), module, camera, track, want }
}

fn clonecloud(home: &Path, args: &[&str]) -> Output {
    Command::new(CLONECLOUD).args(args).env("CLONECLOUD_HOME", home).env_remove("CLONECLOUD_LOG").output().unwrap()
}

#[test]
fn a_program_reads_the_camera_and_the_position_here_and_from_the_clone() {
    let s = setup();
    let (camera, track, module) = (s.camera.to_str().unwrap(), s.track.to_str().unwrap(), s.module.to_str().unwrap());
    let plain = clonecloud(s.home.path(), &["run", "--camera", camera, "--gps", track, module]);
    assert_eq!(plain.status.code(), Some(2), "{}", String::from_utf8_lossy(&plain.stderr));
    assert!(plain.stdout == s.want, "the frames and fixes, in order");
    assert_eq!(String::from_utf8_lossy(&plain.stderr), "screen: frame\nscreen: frame\n");

    let stats = s.home.path().join("stats.json");
    let offloaded = clonecloud(s.home.path(), &["run", "--offload", "look", "--stats", stats.to_str().unwrap(), "--camera", camera, "--gps", track, module]);
    assert_eq!((offloaded.status.code(), &offloaded.stdout, &offloaded.stderr), (plain.status.code(), &plain.stdout, &plain.stderr));
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(st["migrations"].as_u64(), Some(1), "{st}");
    // Per frame: the camera twice and the position; then the camera's END. (The screen is
    // journaled on the clone and shown at the merge.)
    assert_eq!(st["points"]["look"]["proxied_calls"].as_u64(), Some(7), "{st}");
}

#[test]
fn a_device_without_the_hardware_says_so_and_bad_tracks_are_named() {
    let s = setup();
    let module = s.module.to_str().unwrap();
    // No camera: NO_DEVICE, which `look` turns into its exit code 99.
    let out = clonecloud(s.home.path(), &["run", module]);
    assert_eq!(out.status.code(), Some(99));
    let bad = s.track.with_file_name("bad.csv");
    std::fs::write(&bad, "1700000000000,37.4,-122.1\n1700000005000,north,-122.1\n").unwrap();
    let out = clonecloud(s.home.path(), &["run", "--gps", bad.to_str().unwrap(), module]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--gps") && err.contains("line 2"), "{err}");
    let out = clonecloud(s.home.path(), &["run", "--camera", "/nonexistent/camera", module]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--camera /nonexistent/camera"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_analyzer_lets_a_function_that_uses_the_device_migrate_and_shows_the_path() {
    let s = setup();
    let out = clonecloud(s.home.path(), &["analyze", s.module.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 device (proxied)") && text.contains("clonecloud_device.camera_frame: device (proxied from a clone)"), "{text}");
    assert!(text.contains("look: reaches the device's hardware") && text.contains("look -> cam"), "{text}");
}
