//! A hostile device cannot make the clone hold more than its replica's budgets: a function that
//! makes a terabyte file (`set_len(1 << 40)`, a `pwrite` at a terabyte's offset), grows a second
//! memory or a table past the memory limit, fails on the clone and runs on the device, with the
//! output a plain run gives, while another device goes on migrating on the same server, which is
//! alive afterwards. (Before the budgets, the terabyte file aborted the whole server.)

use clonecloud_replica::Limits;
use clonecloud_exec::{DirMapping, ModuleCache, Outcome, PointMode, Points, Program, Stdio, WasiConfig, new_engine};
use clonecloud_net::{AllowList, Identity, Listener, PublicKey};
use clonecloud_offload::{Cause, Clone, CompressionPolicy, Offloader, Stats, Target};
use clonecloud_wire::Compression;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `setlen` makes `/pre/big`, sets its length to 1 TiB, reads the size back, removes it and
/// returns errors + size/2^40 + size%256 (1 where the file system takes sparse files, as ext4
/// and tmpfs do); `pwrite` writes one byte at 1 TiB into `/pre/big2` and returns the same with
/// the bytes written (3). `_start` exits with `setlen * 10 + pwrite`.
const ATTACK: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_set_size" (func $set_size (param i32 i64) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite" (func $fd_pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $stat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_unlink_file" (func $unlink (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "big2")
  (data (i32.const 300) "\90\01\00\00\01\00\00\00")
  (data (i32.const 400) "x")
  ;; size/2^40 + size%256 + the errors of stat, close and unlink of the file open at 200
  ;; (its name: `len` bytes at 100).
  (func $finish (param $len i32) (result i32) (local $r i32) (local $size i64)
    (local.set $r (call $stat (i32.load (i32.const 200)) (i32.const 512)))
    (local.set $size (i64.load (i32.const 544)))
    (local.set $r (i32.add (local.get $r) (call $close (i32.load (i32.const 200)))))
    (local.set $r (i32.add (local.get $r) (call $unlink (i32.const 3) (i32.const 100) (local.get $len))))
    (i32.add (local.get $r)
      (i32.wrap_i64 (i64.add (i64.shr_u (local.get $size) (i64.const 40)) (i64.and (local.get $size) (i64.const 255))))))
  (func $setlen (export "setlen") (result i32) (local $r i32)
    (local.set $r (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 3) (i32.const 9)
      (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 200)))
    (local.set $r (i32.add (local.get $r) (call $set_size (i32.load (i32.const 200)) (i64.const 0x10000000000))))
    (i32.add (local.get $r) (call $finish (i32.const 3))))
  (func $pwrite_far (export "pwrite") (result i32) (local $r i32)
    (local.set $r (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 4) (i32.const 9)
      (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 200)))
    (local.set $r (i32.add (local.get $r)
      (call $fd_pwrite (i32.load (i32.const 200)) (i32.const 300) (i32.const 1) (i64.const 0x10000000000) (i32.const 500))))
    (local.set $r (i32.add (local.get $r) (i32.load (i32.const 500))))
    (i32.add (local.get $r) (call $finish (i32.const 4))))
  (func (export "_start")
    (call $exit (i32.add (i32.mul (call $setlen) (i32.const 10)) (call $pwrite_far)))))"#;

/// An honest device's program: `sum` adds 0..200,000 (with its call count) and `_start` calls
/// it 30 times, exiting with the total's low byte.
const HONEST: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (global $calls (mut i32) (i32.const 0))
  (func $sum (export "sum") (result i32) (local $i i32) (local $s i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (loop $l
      (local.set $s (i32.add (local.get $s) (i32.xor (local.get $i) (global.get $calls))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 200000))))
    (local.get $s))
  (func (export "_start") (local $k i32) (local $t i32)
    (loop $l
      (local.set $t (i32.add (local.get $t) (call $sum)))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $k) (i32.const 30))))
    (call $exit (i32.and (local.get $t) (i32.const 255)))))"#;

/// `grow2` grows a second memory by 80 pages (5 MiB) and returns its size; `tgrow` grows a table
/// by 2,000,000 elements in 40 steps and returns its size. Each memory alone stays under an
/// 8 MiB limit (the first has 4 MiB); together they do not, nor does the table (16 MB). `_start`
/// exits with the sum's low 6 bits.
const GROWTH: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory $m0 (export "memory") 64)
  (memory $m1 1)
  (table $t 1 funcref)
  (func $grow2 (export "grow2") (result i32)
    (drop (memory.grow $m1 (i32.const 80)))
    (memory.size $m1))
  (func $tgrow (export "tgrow") (result i32) (local $k i32)
    (loop $l
      (drop (table.grow $t (ref.null func) (i32.const 50000)))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $k) (i32.const 40))))
    (table.size $t))
  (func (export "_start")
    (call $exit (i32.and (i32.add (call $grow2) (call $tgrow)) (i32.const 63)))))"#;

/// A clone serving `devices` with `limits`: its address and key.
fn server(devices: &[&Identity], limits: Limits) -> (String, PublicKey) {
    let server = Identity::generate().unwrap();
    let allow = AllowList::new(devices.iter().map(|d| d.public().clone()));
    let listener = Listener::bind("127.0.0.1:0", &server, allow, Duration::from_secs(10)).unwrap();
    let addr = listener.local_addr().to_string();
    let clone = Clone::with_limits(ModuleCache::disabled(), Duration::from_secs(30), limits).unwrap();
    std::thread::spawn(move || clone.serve(listener));
    (addr, server.public().clone())
}

/// Runs `wat` with `points`, `dir` preopened as `/pre`, on the device alone (`clone: None`) or
/// offloading to the clone as `device`: the exit code and the offloader's record.
fn run(wat: &str, points: &[&str], dir: &Path, clone: Option<(&str, &PublicKey, &Identity)>) -> (i32, Stats) {
    let wasm = wat::parse_str(wat).unwrap();
    let engine = new_engine(PointMode::Host).unwrap();
    let names: Vec<String> = points.iter().map(|p| p.to_string()).collect();
    let program = Program::prepare(&engine, &ModuleCache::disabled(), &wasm, &Points::Named(names.clone()), PointMode::Host).unwrap();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let migrator = clone.map(|(addr, key, device)| {
        let target = Target {
            addr: addr.to_string(),
            server_key: key.clone(),
            identity: device.clone(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            compression: CompressionPolicy::Fixed(Compression::Lz4),
            environment: Default::default(),
            dirs: vec![clonecloud_files::Root { host: dir.to_path_buf(), guest: "/pre".into() }],
            others: Vec::new(),
        };
        Box::new(Offloader::new(target, program.layout().clone(), names, stats.clone())) as Box<dyn clonecloud_exec::Migrator>
    });
    let wasi = WasiConfig { stdio: Stdio::Null, dirs: vec![DirMapping { host: dir.to_path_buf(), guest: "/pre".into() }], ..WasiConfig::default() };
    let code = match program.run_with(&wasi, migrator).unwrap().outcome {
        Outcome::Exited(c) => c,
        other => panic!("{other:?}"),
    };
    let s = stats.lock().unwrap().clone();
    (code, s)
}

fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len())).collect();
    v.sort();
    v
}

fn details(s: &Stats) -> Vec<String> {
    s.fallbacks.events.iter().map(|e| e.detail.clone()).collect()
}

#[test]
fn a_terabyte_file_made_on_the_clone_runs_on_the_device_while_another_device_is_served() {
    let (attacker, honest) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let limits = Limits { host: 64 << 20, ..Limits::default() };
    let (addr, key) = server(&[&attacker, &honest], limits);
    let plain = tempfile::tempdir().unwrap();
    let (want_attack, _) = run(ATTACK, &["setlen", "pwrite"], plain.path(), None);
    assert_eq!(want_attack, 13, "a plain run makes both sparse files (ext4 and tmpfs take them)");
    let (want_honest, _) = run(HONEST, &["sum"], plain.path(), None);

    // Both devices at once on the same server.
    let (a_dir, h_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ((got_attack, sa), (got_honest, sh)) = std::thread::scope(|s| {
        let a = s.spawn(|| run(ATTACK, &["setlen", "pwrite"], a_dir.path(), Some((&addr, &key, &attacker))));
        let h = s.spawn(|| run(HONEST, &["sum"], h_dir.path(), Some((&addr, &key, &honest))));
        (a.join().unwrap(), h.join().unwrap())
    });
    assert_eq!(got_attack, want_attack, "the attacker's output is a plain run's");
    assert_eq!(listing(a_dir.path()), listing(plain.path()), "and so are its files");
    assert_eq!(sa.migrations, 0, "{sa:?}");
    assert_eq!(sa.fallbacks.causes.get(&Cause::ResourceLimit), Some(&2), "{sa:?}");
    for d in details(&sa) {
        assert!(d.contains("over its budget"), "{d}");
    }
    assert_eq!(got_honest, want_honest, "the honest device's output is a plain run's");
    assert_eq!(sh.migrations, 30, "every call of the honest device migrated: {sh:?}");
    assert_eq!(sh.fallbacks.count, 0, "{sh:?}");

    // The server is alive: both devices migrate again (the attacker's calls fail as before).
    let (again, s) = run(HONEST, &["sum"], h_dir.path(), Some((&addr, &key, &honest)));
    assert_eq!((again, s.migrations), (want_honest, 30), "{s:?}");
    let (again, s) = run(ATTACK, &["setlen", "pwrite"], a_dir.path(), Some((&addr, &key, &attacker)));
    assert_eq!((again, s.fallbacks.causes.get(&Cause::ResourceLimit)), (want_attack, Some(&2)), "{s:?}");
}

#[test]
fn a_second_memory_or_a_table_grown_past_the_limit_runs_on_the_device() {
    let device = Identity::generate().unwrap();
    let (addr, key) = server(&[&device], Limits { memory: 8 << 20, ..Limits::default() });
    let dir = tempfile::tempdir().unwrap();
    let (want, _) = run(GROWTH, &["grow2", "tgrow"], dir.path(), None);
    assert_eq!(want, (81 + 2_000_001) & 63);
    let (got, s) = run(GROWTH, &["grow2", "tgrow"], dir.path(), Some((&addr, &key, &device)));
    assert_eq!(got, want, "the same result as a plain run");
    assert_eq!(s.migrations, 0, "{s:?}");
    assert_eq!(s.fallbacks.causes.get(&Cause::ResourceLimit), Some(&2), "{s:?}");
    let d = details(&s);
    assert!(d.iter().all(|d| d.contains("more memory")), "{d:?}");
    // The server is alive and still serves this device.
    let (again, s) = run(HONEST, &["sum"], dir.path(), Some((&addr, &key, &device)));
    assert_eq!(s.migrations, 30, "{s:?}");
    assert_eq!(again, run(HONEST, &["sum"], dir.path(), None).0);
}

/// `rand` fills 64 MiB of memory with `random_get` and returns its errno; `iov` writes to stdout
/// through 2^31 iovecs (more than wasmtime-wasi's hostcall fuel: ENOMEM, 48); `nap` sleeps a
/// second in `poll_oneoff` (one monotonic clock subscription) and returns its errno. `_start`
/// exits with the sum.
const HOST_LOOPS: &str = r#"(module
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1025)
  (data (i32.const 1024)
    "\00\00\00\00\00\00\00\00" "\00\00\00\00\00\00\00\00" "\01\00\00\00\00\00\00\00"
    "\00\ca\9a\3b\00\00\00\00" "\00\00\00\00\00\00\00\00" "\00\00\00\00\00\00\00\00")
  (func $rand (export "rand") (result i32)
    (call $random_get (i32.const 65536) (i32.const 0x4000000)))
  (func $iov (export "iov") (result i32)
    (call $fd_write (i32.const 1) (i32.const 65536) (i32.const 0x7fffffff) (i32.const 0)))
  (func $nap (export "nap") (result i32)
    (call $poll (i32.const 1024) (i32.const 2048) (i32.const 1) (i32.const 4096)))
  (func (export "_start")
    (call $exit (i32.add (i32.add (call $rand) (call $iov)) (call $nap)))))"#;

#[test]
fn a_huge_random_get_or_iovec_array_ends_within_the_run_time_limit() {
    // Host code is not interrupted by the epoch: before, a 64 MiB `random_get` ran to its end
    // whatever the limit (and a 4 GiB one allocated 4 GiB on the host first).
    let device = Identity::generate().unwrap();
    let (addr, key) = server(&[&device], Limits { run_time: Duration::from_millis(10), ..Limits::default() });
    let dir = tempfile::tempdir().unwrap();
    let (want, _) = run(HOST_LOOPS, &["rand", "iov", "nap"], dir.path(), None);
    assert_eq!(want, 48);
    let (got, s) = run(HOST_LOOPS, &["rand", "iov", "nap"], dir.path(), Some((&addr, &key, &device)));
    assert_eq!(got, want, "the same result as a plain run");
    let d = details(&s);
    assert!(d.first().is_some_and(|d| d.contains("ran past")), "random_get stopped at the run-time limit: {d:?} {s:?}");
    // A sleep the guest asks for is host code too: before, the clone slept the whole second.
    let nap = s.fallbacks.events.iter().find(|e| e.point == "nap");
    assert!(nap.is_some_and(|e| e.detail.contains("ran past")), "the sleep stopped at the run-time limit: {s:?}");
}
