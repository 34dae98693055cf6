//! Threaded mode: a replica of a multi-threaded module (one that imports a shared memory) runs
//! it instrumented, and each capture says exactly which bytes of memory 0 the call read and
//! wrote (the module's own accesses and the host's), with exactly the written pages; a call that
//! would start or wait for another thread fails instead of hanging; the maps are clear for the
//! next call and follow memory 0 when it grows.

use clonecloud_replica::{CallError, Captured, Delta, Ended, ImportProxy, Replica, ThreadOnClone};
use clonecloud_wire::{ACCESS_BITMAP, Access, Clocks, Descriptors, PAGE_SIZE};
use wasmtime::{Trap, Val};

/// One point, `work(op, a, v, timeout) -> i64`:
/// - 0: `v + load32_u(a)` stored as 16 bits at `a + 100`; returns `load32_u(a)` (read again);
/// - 1: `store8(a, v)`;
/// - 2: `memory.atomic.wait32(a, v, timeout)`;
/// - 3: `memory.atomic.wait64(a, v, timeout)`;
/// - 4: `thread-spawn(a)`;
/// - 5: `memory.grow(1)`, then `store32(65536 + a, v)`; returns the memory's size;
/// - 6: `clock_time_get(v, 0, a)` (the host writes 8 bytes at `a`; for a CPU-time clock, the
///   device does, proxied); returns its errno;
/// - 7: `memory.copy(a + 32, a, 3)`.
const WAT: &str = r#"(module
  (import "env" "memory" (memory 1 2 shared))
  (import "wasi" "thread-spawn" (func $spawn (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (func $work (export "work") (param $op i32) (param $a i32) (param $v i64) (param $t i64) (result i64)
    (block $copy (block $clock (block $grow (block $spawn (block $wait64 (block $wait32 (block $store8 (block $load_store
      (br_table $load_store $store8 $wait32 $wait64 $spawn $grow $clock $copy (local.get $op)))
      (i32.store16 offset=100 (local.get $a) (i32.add (i32.load (local.get $a)) (i32.wrap_i64 (local.get $v))))
      (return (i64.load32_u (local.get $a))))
      (i32.store8 (local.get $a) (i32.wrap_i64 (local.get $v)))
      (return (i64.const 0)))
      (return (i64.extend_i32_u (memory.atomic.wait32 (local.get $a) (i32.wrap_i64 (local.get $v)) (local.get $t)))))
      (return (i64.extend_i32_u (memory.atomic.wait64 (local.get $a) (local.get $v) (local.get $t)))))
      (return (i64.extend_i32_s (call $spawn (local.get $a)))))
      (drop (memory.grow (i32.const 1)))
      (i32.store offset=65536 (local.get $a) (i32.wrap_i64 (local.get $v)))
      (return (i64.extend_i32_u (memory.size))))
      (return (i64.extend_i32_u (call $clock (i32.wrap_i64 (local.get $v)) (i64.const 0) (local.get $a)))))
    (memory.copy (i32.add (local.get $a) (i32.const 32)) (local.get $a) (i32.const 3))
    (i64.const 0))
  (func (export "_start") (drop (call $work (i32.const 1) (i32.const 0) (i64.const 0) (i64.const 0)))))"#;

struct Fixture {
    engine: wasmtime::Engine,
    module: wasmtime::Module,
    points: std::sync::Arc<[u32]>,
    work: u32,
}

fn fixture() -> Fixture {
    let wasm = wat::parse_str(WAT).unwrap();
    let model = clonecloud_model::Module::parse(&wasm).unwrap();
    let points = model.resolve_points(&["work".to_string()]).unwrap();
    let rewritten = clonecloud_model::rewrite(&model, &wasm, &points).unwrap();
    assert!(clonecloud_replica::is_threaded(&rewritten.wasm));
    let bytes = clonecloud_replica::clone_module(&rewritten.wasm).unwrap();
    assert_ne!(&bytes[..], &rewritten.wasm[..], "a threaded module is compiled instrumented");
    let engine = clonecloud_exec::new_clone_engine().unwrap();
    let module = wasmtime::Module::new(&engine, &bytes).unwrap();
    let points: std::sync::Arc<[u32]> = clonecloud_model::rewritten_points(&bytes).unwrap().into();
    let work = points_of(&points);
    Fixture { engine, module, points, work }
}

fn points_of(points: &[u32]) -> u32 {
    assert_eq!(points.len(), 1);
    points[0]
}

impl Fixture {
    fn replica(&self) -> Replica {
        let r = Replica::new(&self.engine, &self.module, self.points.clone()).unwrap();
        assert!(r.is_threaded());
        r
    }
}

fn call(f: &Fixture, r: &mut Replica, op: i32, a: i32, v: i64, t: i64) -> Result<i64, CallError> {
    let mut results = [Val::I64(0)];
    let ended = r.call(f.work, &[Val::I32(op), Val::I32(a), Val::I64(v), Val::I64(t)], &mut results, Clocks { realtime: 1_000_000_007, monotonic: 5 }, &Descriptors::default())?;
    assert!(matches!(ended, Ended::Returned), "{ended:?}");
    Ok(results[0].unwrap_i64())
}

/// The bitmap of `bytes` (offsets within one page).
fn bits(bytes: impl IntoIterator<Item = usize>) -> Vec<u8> {
    let mut b = vec![0u8; ACCESS_BITMAP];
    for i in bytes {
        b[i / 8] |= 1 << (i % 8);
    }
    b
}

/// Every byte of the first `len` bytes of memory the access marks, as (read, written) lists.
fn marked(a: &Access, len: u64) -> (Vec<u64>, Vec<u64>) {
    ((0..len).filter(|&b| a.read(b)).collect(), (0..len).filter(|&b| a.wrote(b)).collect())
}

fn page_with(bytes: &[(usize, u8)]) -> Vec<u8> {
    let mut p = vec![0u8; PAGE_SIZE];
    for &(at, b) in bytes {
        p[at] = b;
    }
    p
}

#[test]
fn a_call_reports_exactly_the_bytes_it_read_and_wrote_and_the_pages_it_wrote() {
    let f = fixture();
    let mut r = f.replica();
    // The device's delta: page 0 holds 5 at byte 8; page 3 holds something the call never
    // touches.
    let page0 = page_with(&[(8, 5)]);
    r.apply(1, &[(0, page0.clone()), (3, page_with(&[(1, 1)]))], false, &[]).unwrap();
    assert_eq!(call(&f, &mut r, 0, 8, 1, 0).unwrap(), 5);
    let Captured { wasm_pages, pages, globals: _, access } = r.capture(false);
    assert_eq!(wasm_pages, 1);
    // Exactly the page written, whole, as memory holds it now.
    let mut want = page0.clone();
    want[108] = 6;
    assert_eq!(pages, [(0, want)]);
    let access = access.expect("a threaded capture says what the call accessed");
    assert_eq!(access.reads, [(0, bits(8..12))], "the 4 bytes loaded (twice)");
    assert_eq!(access.writes, [(0, bits(108..110))], "the 2 bytes stored");
    assert_eq!(marked(&access, 65536), ((8..12).collect(), (108..110).collect()));

    // Again, answering in XOR: the page against what was agreed (the last capture), which only
    // the bytes written change.
    assert_eq!(call(&f, &mut r, 0, 8, 2, 0).unwrap(), 5);
    let c = r.capture(true);
    assert_eq!(c.pages, [(0, page_with(&[(108, 6 ^ 7)]))]);
    let access = c.access.unwrap();
    assert_eq!((access.reads, access.writes), (vec![(0, bits(8..12))], vec![(0, bits(108..110))]), "only this call's accesses");
}

/// Two calls writing neighbouring bytes of one page: each call's mask holds its own byte only
/// (the maps are cleared between calls), so the device can merge both.
#[test]
fn neighbouring_writes_give_masks_that_do_not_overlap() {
    let f = fixture();
    let mut r = f.replica();
    r.apply(1, &[], false, &[]).unwrap();
    call(&f, &mut r, 1, 4096 + 200, 0xAB, 0).unwrap();
    let first = r.capture(false);
    call(&f, &mut r, 1, 4096 + 201, 0xCD, 0).unwrap();
    let second = r.capture(false);
    let (a, b) = (first.access.unwrap(), second.access.unwrap());
    assert!(a.reads.is_empty() && b.reads.is_empty(), "a store reads nothing");
    assert_eq!(a.writes, [(1, bits([200]))]);
    assert_eq!(b.writes, [(1, bits([201]))]);
    assert!(a.writes[0].1.iter().zip(&b.writes[0].1).all(|(x, y)| x & y == 0));
    assert_eq!(first.pages, [(1, page_with(&[(200, 0xAB)]))]);
    assert_eq!(second.pages, [(1, page_with(&[(200, 0xAB), (201, 0xCD)]))]);
}

/// The host's accesses count: `clock_time_get` writes its 8 bytes from outside the module, and
/// they are in the writes map and the page; `memory.copy` reads its source and writes its
/// destination.
#[test]
fn the_host_s_and_bulk_accesses_are_marked() {
    let f = fixture();
    let mut r = f.replica();
    r.apply(1, &[], false, &[]).unwrap();
    assert_eq!(call(&f, &mut r, 6, 2 * 4096 - 4, 0, 0).unwrap(), 0, "errno");
    let c = r.capture(false);
    let access = c.access.unwrap();
    assert!(access.reads.is_empty());
    assert_eq!(marked(&access, 65536).1, (2 * 4096 - 4..2 * 4096 + 4).collect::<Vec<_>>(), "across two pages");
    assert_eq!(c.pages.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2]);
    let realtime = u64::from_le_bytes([&c.pages[0].1[4092..], &c.pages[1].1[..4]].concat().try_into().unwrap());
    assert!(realtime >= 1_000_000_007, "the device's clock, continued: {realtime}");

    r.apply(1, &[(5, page_with(&[(10, 1), (11, 2), (12, 3)]))], false, &[]).unwrap();
    call(&f, &mut r, 7, 5 * 4096 + 10, 0, 0).unwrap();
    let c = r.capture(false);
    let access = c.access.unwrap();
    assert_eq!(access.reads, [(5, bits(10..13))]);
    assert_eq!(access.writes, [(5, bits(42..45))]);
    assert_eq!(c.pages, [(5, page_with(&[(10, 1), (11, 2), (12, 3), (42, 1), (43, 2), (44, 3)]))]);
}

/// A wait on a value that differs answers 1 and its word counts as read; an equal one with a
/// zero timeout times out (2); an equal one that would wait (for ever, or for a while) fails the
/// call at once (another thread, on the device, would have to wake it), as does a thread
/// spawn; a misaligned wait traps as the instruction does.
#[test]
fn waits_and_spawns_on_the_clone() {
    let f = fixture();
    let mut r = f.replica();
    r.apply(1, &[(0, page_with(&[(64, 7), (128, 9)]))], false, &[]).unwrap();
    assert_eq!(call(&f, &mut r, 2, 64, 3, -1).unwrap(), 1, "not equal");
    let c = r.capture(false);
    let access = c.access.unwrap();
    assert_eq!((access.reads, access.writes), (vec![(0, bits(64..68))], vec![]));
    assert!(c.pages.is_empty(), "a wait writes nothing");
    assert_eq!(call(&f, &mut r, 3, 128, 8, -1).unwrap(), 1, "not equal (64 bits)");
    assert_eq!(r.capture(false).access.unwrap().reads, [(0, bits(128..136))]);
    assert_eq!(call(&f, &mut r, 2, 64, 7, 0).unwrap(), 2, "equal, no time to wait: timed out");
    assert_eq!(r.capture(false).access.unwrap().reads, [(0, bits(64..68))]);

    for (op, v, t) in [(2, 7, -1), (2, 7, 1_000_000), (3, 9, -1)] {
        let mut r = f.replica();
        r.apply(1, &[(0, page_with(&[(64, 7), (128, 9)]))], false, &[]).unwrap();
        let started = std::time::Instant::now();
        let a = if op == 2 { 64 } else { 128 };
        let e = call(&f, &mut r, op, a, v, t).unwrap_err();
        assert!(matches!(e, CallError::Thread(ThreadOnClone::Wait { addr }) if addr == a as u64), "{e}");
        assert!(e.to_string().contains("another thread"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "failed, did not hang");
    }
    let mut r = f.replica();
    let e = call(&f, &mut r, 2, 66, 0, -1).unwrap_err();
    assert!(matches!(e, CallError::Trap(Trap::HeapMisaligned)), "{e}");
    let e = call(&f, &mut r, 3, 65536, 0, -1).unwrap_err();
    assert!(matches!(e, CallError::Trap(Trap::MemoryOutOfBounds)), "{e}");

    let mut r = f.replica();
    let e = call(&f, &mut r, 4, 0, 0, 0).unwrap_err();
    assert!(matches!(e, CallError::Thread(ThreadOnClone::Spawn(ref n)) if n == "thread-spawn"), "{e}");
    assert!(e.to_string().contains("start a thread"), "{e}");
}

/// Memory 0 grown by the call (the module grows its maps itself) and by the device's delta (the
/// replica grows them): accesses past the first size are tracked as any.
#[test]
fn growth_by_the_call_and_by_the_device_is_tracked() {
    let f = fixture();
    let mut r = f.replica();
    r.apply(1, &[], false, &[]).unwrap();
    assert_eq!(call(&f, &mut r, 5, 4, 0x0102_0304, 0).unwrap(), 2, "grown to 2 wasm pages");
    let c = r.capture(false);
    assert_eq!(c.wasm_pages, 2);
    assert_eq!(c.pages, [(16, page_with(&[(4, 4), (5, 3), (6, 2), (7, 1)]))]);
    assert_eq!(c.access.unwrap().writes, [(16, bits(4..8))]);

    // The device grew it: the maps follow before the next call.
    let mut r = f.replica();
    r.apply(2, &[(20, page_with(&[(4095, 0x11)]))], false, &[]).unwrap();
    assert_eq!(call(&f, &mut r, 0, 20 * 4096 + 4092, 0, 0).unwrap(), 0x1100_0000);
    let c = r.capture(false);
    let access = c.access.unwrap();
    assert_eq!(access.reads, [(20, bits(4092..4096))]);
    assert_eq!(access.writes, [(21, bits(96..98))], "the store16 at +100 lands on the next page");
    // The low 16 bits of 0x1100_0000: zeros over zeros, and still a page written.
    assert_eq!(c.pages, [(21, page_with(&[]))], "a page written with what it held is sent all the same");
    // The last byte of the grown memory.
    call(&f, &mut r, 1, 2 * 65536 - 1, 0x22, 0).unwrap();
    assert_eq!(r.capture(false).access.unwrap().writes, [(31, bits([4095]))]);
}

/// Byte `i` of a page is bit `i % 8` of byte `i / 8` of its bitmap, wherever it lies.
#[test]
fn each_byte_stored_is_its_own_bit() {
    let f = fixture();
    let mut r = f.replica();
    r.apply(1, &[], false, &[]).unwrap();
    for a in (3000..3040).step_by(3) {
        call(&f, &mut r, 1, a, 1, 0).unwrap();
        let c = r.capture(false);
        assert_eq!(c.access.unwrap().writes, [(0, bits([a as usize]))]);
    }
}

/// The device, answering a proxied `clock_time_get`: it writes the time (8 bytes) at the
/// pointer, in the page it sends back whole.
#[derive(Debug)]
struct Device {
    page: u32,
    agreed: Vec<u8>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Delta>>>,
}

impl ImportProxy for Device {
    fn call(&mut self, _import: u32, args: &[Val], delta: Delta) -> Result<(Vec<Val>, Delta), Box<dyn std::error::Error + Send + Sync>> {
        let at = args[2].unwrap_i32() as usize % PAGE_SIZE;
        let mut page = self.agreed.clone();
        page[at..at + 8].copy_from_slice(&0x0807_0605_0403_0201u64.to_le_bytes());
        let wasm_pages = delta.wasm_pages;
        self.seen.lock().unwrap().push(delta);
        Ok((vec![Val::I32(0)], Delta { wasm_pages, pages: vec![(self.page, page)], xor: false, globals: vec![] }))
    }
}

/// A call proxied to the device from a threaded migration works as in any other: the device's
/// answer is applied, and the bytes it changed count as the call's writes (the page comes back
/// whole, with the device's bytes in it); the bytes it sent unchanged do not.
#[test]
fn a_proxied_import_s_writes_are_the_call_s() {
    let f = fixture();
    let mut r = f.replica();
    let agreed = page_with(&[(0, 9), (100, 1), (101, 2), (102, 3), (103, 4)]);
    r.apply(1, &[(2, agreed.clone())], false, &[]).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    r.set_proxy(Some(Box::new(Device { page: 2, agreed: agreed.clone(), seen: seen.clone() })), false);
    // Process CPU time: the device's clock, proxied. The first 4 bytes written are the same as
    // those there (1 2 3 4).
    assert_eq!(call(&f, &mut r, 6, 2 * 4096 + 100, 2, 0).unwrap(), 0);
    r.take_proxy();
    assert_eq!(seen.lock().unwrap().len(), 1, "one proxied call");
    assert!(seen.lock().unwrap()[0].pages.is_empty(), "nothing changed before it");
    let c = r.capture(false);
    let mut want = agreed;
    want[100..108].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(c.pages, [(2, want)]);
    let access = c.access.unwrap();
    assert!(access.reads.is_empty());
    assert_eq!(access.writes, [(2, bits(104..108))], "the bytes the device's answer changed");
}
