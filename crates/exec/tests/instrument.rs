//! The access-tracking pass (`clonecloud_model::instrument_accesses`) under wasmtime:
//!
//! - every kind of access of memory 0 marks exactly the bytes it accesses, hand-computed per
//!   case, and nothing else (the maps read back from the exports), while computing what the
//!   original computes (the original module run side by side: the same results or trap, the
//!   same memory afterwards); an access at the top of memory, one out of bounds (which must
//!   still trap), `memory.grow` keeping the maps as large as memory 0;
//! - differential: the real programs of the test corpus (Rust built for wasm32-wasip1, and the
//!   WAT modules), plain and rewritten (every function a point, flags clear), run under wasmtime
//!   and wasmtime-wasi preview 1 before and after instrumenting: the same stdout, stderr, exit
//!   code (or trap) and files; a module without imports leaves every byte it changed marked as
//!   written;
//! - the multi-threaded programs (wasm32-wasip1-threads) instrument, import their memory
//!   unshared, and compile.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use clonecloud_model::{READS_EXPORT, RewriteConfig, WRITES_EXPORT, instrument_accesses, rewrite_with};
use wasmtime::{Config, Engine, Instance, Linker, Memory, MemoryType, Module, SharedMemory, Store, Trap, Val};

/// A default engine with the threads proposal on (atomics), and shared memories for the
/// originals that import one.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_threads(true).shared_memory(true);
        Engine::new(&config).unwrap()
    })
}

const PAGE: usize = 65536;

/// The accesses, one exported function each. `$init` writes a pattern into memory 0 so loads
/// read something; memory 1 (`$other`) is not tracked.
const ACCESSES: &str = r#"(module
  MEMORY
  (memory $other 1 1)
  (data $d "hello world")
  (func (export "init")
    (local $i i32)
    (loop $next
      (i32.store8 (local.get $i) (i32.add (i32.mul (local.get $i) (i32.const 7)) (i32.const 3)))
      (i32.store8 $other (local.get $i) (local.get $i))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 65536)))))
  (func (export "load8_s") (param i32) (result i32) (i32.load8_s offset=3 (local.get 0)))
  (func (export "load16_u") (param i32) (result i32) (i32.load16_u offset=1 (local.get 0)))
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "i64_load") (param i32) (result i64) (i64.load offset=16 (local.get 0)))
  (func (export "i64_load32_s") (param i32) (result i64) (i64.load32_s (local.get 0)))
  (func (export "f32_load") (param i32) (result f32) (f32.load (local.get 0)))
  (func (export "f64_load") (param i32) (result f64) (f64.load (local.get 0)))
  (func (export "store8") (param i32 i32) (i32.store8 (local.get 0) (local.get 1)))
  (func (export "store16") (param i32 i32) (i32.store16 offset=2 (local.get 0) (local.get 1)))
  (func (export "store") (param i32 i32) (i32.store offset=7 (local.get 0) (local.get 1)))
  (func (export "i64_store") (param i32 i64) (i64.store (local.get 0) (local.get 1)))
  (func (export "i64_store32") (param i32 i64) (i64.store32 (local.get 0) (local.get 1)))
  (func (export "f32_store") (param i32 f32) (f32.store (local.get 0) (local.get 1)))
  (func (export "f64_store") (param i32 f64) (f64.store (local.get 0) (local.get 1)))
  (func (export "top_store") (param i32 i64) (i64.store offset=65528 (local.get 0) (local.get 1)))
  (func (export "top_load") (param i32) (result i32) (i32.load offset=65532 (local.get 0)))
  (func (export "atomic_load") (param i32) (result i32) (i32.atomic.load (local.get 0)))
  (func (export "atomic_load8") (param i32) (result i64) (i64.atomic.load8_u (local.get 0)))
  (func (export "atomic_load16") (param i32) (result i32) (i32.atomic.load16_u (local.get 0)))
  (func (export "atomic_store") (param i32 i64) (i64.atomic.store (local.get 0) (local.get 1)))
  (func (export "atomic_store16") (param i32 i32) (i32.atomic.store16 (local.get 0) (local.get 1)))
  (func (export "rmw_add") (param i32 i32) (result i32) (i32.atomic.rmw.add offset=4 (local.get 0) (local.get 1)))
  (func (export "rmw8_xor") (param i32 i64) (result i64) (i64.atomic.rmw8.xor_u (local.get 0) (local.get 1)))
  (func (export "rmw32_xchg") (param i32 i64) (result i64) (i64.atomic.rmw32.xchg_u (local.get 0) (local.get 1)))
  (func (export "cmpxchg") (param i32 i32 i32) (result i32) (i32.atomic.rmw.cmpxchg (local.get 0) (local.get 1) (local.get 2)))
  (func (export "cmpxchg64") (param i32 i64 i64) (result i64) (i64.atomic.rmw.cmpxchg (local.get 0) (local.get 1) (local.get 2)))
  (func (export "cmpxchg16") (param i32 i32 i32) (result i32) (i32.atomic.rmw16.cmpxchg_u (local.get 0) (local.get 1) (local.get 2)))
  (func (export "notify") (param i32) (result i32) (memory.atomic.notify (local.get 0) (i32.const 1)))
  (func (export "wait32") (param i32) (result i32) (memory.atomic.wait32 (local.get 0) (i32.const 0) (i64.const 0)))
  (func (export "wait64") (param i32) (result i32) (memory.atomic.wait64 (local.get 0) (i64.const 0) (i64.const 0)))
  (func (export "v128_load") (param i32) (result v128) (v128.load (local.get 0)))
  (func (export "load8x8_s") (param i32) (result v128) (v128.load8x8_s (local.get 0)))
  (func (export "load16_splat") (param i32) (result v128) (v128.load16_splat (local.get 0)))
  (func (export "load32_zero") (param i32) (result v128) (v128.load32_zero (local.get 0)))
  (func (export "load64_lane") (param i32) (result v128) (v128.load64_lane 1 (local.get 0) (v128.const i64x2 5 6)))
  (func (export "v128_store") (param i32) (v128.store (local.get 0) (v128.const i32x4 1 2 3 4)))
  (func (export "store16_lane") (param i32) (v128.store16_lane 3 (local.get 0) (v128.const i16x8 0 1 2 3 4 5 6 7)))
  (func (export "copy") (param i32 i32 i32) (memory.copy (local.get 0) (local.get 1) (local.get 2)))
  (func (export "copy_from_other") (param i32 i32 i32) (memory.copy 0 $other (local.get 0) (local.get 1) (local.get 2)))
  (func (export "copy_to_other") (param i32 i32 i32) (memory.copy $other 0 (local.get 0) (local.get 1) (local.get 2)))
  (func (export "fill") (param i32 i32 i32) (memory.fill (local.get 0) (local.get 1) (local.get 2)))
  (func (export "init_data") (param i32 i32 i32) (memory.init $d (local.get 0) (local.get 1) (local.get 2)))
  (func (export "other_load") (param i32) (result i32) (i32.load $other (local.get 0)))
  (func (export "other_store") (param i32 i32) (i32.store $other (local.get 0) (local.get 1)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "size") (result i32) (memory.size))
  ;; Several accesses in one function: reads [a+4, a+8) and a+9, writes [a, a+4).
  (func (export "sum") (param i32)
    (i32.store (local.get 0) (i32.add (i32.load offset=4 (local.get 0)) (i32.load8_u offset=9 (local.get 0))))))"#;

fn accesses(memory: &str) -> Vec<u8> {
    wat::parse_str(ACCESSES.replace("MEMORY", memory)).unwrap()
}

/// What a call did: its results (Debug form, so floats and vectors compare by bits) or its
/// trap.
#[derive(Debug, PartialEq)]
enum Outcome {
    Returned(Vec<String>),
    Trapped(Trap),
}

fn call(store: &mut Store<()>, instance: &Instance, name: &str, args: &[Val]) -> Outcome {
    let f = instance.get_func(&mut *store, name).unwrap_or_else(|| panic!("no export {name}"));
    let mut results = vec![Val::I32(0); f.ty(&*store).results().len()];
    match f.call(&mut *store, args, &mut results) {
        Ok(()) => Outcome::Returned(results.iter().map(|v| format!("{v:?}")).collect()),
        Err(e) => Outcome::Trapped(*e.downcast_ref::<Trap>().unwrap_or_else(|| panic!("{name}: {e:?}"))),
    }
}

/// A map of `len` bytes with the bytes of `ranges` set.
fn map(len: usize, ranges: &[(usize, usize)]) -> Vec<u8> {
    let mut m = vec![0u8; len];
    for &(from, to) in ranges {
        m[from..to].fill(1);
    }
    m
}

/// Where two maps differ, for a readable failure.
fn differences(got: &[u8], want: &[u8]) -> Vec<(usize, u8, u8)> {
    let mut d: Vec<(usize, u8, u8)> = got.iter().zip(want).enumerate().filter(|(_, (g, w))| g != w).map(|(i, (g, w))| (i, *g, *w)).take(20).collect();
    if got.len() != want.len() {
        d.push((usize::MAX, got.len().min(255) as u8, want.len().min(255) as u8));
    }
    d
}

/// The original module and its instrumented copy, each instantiated (memory 0 defined) and
/// `init`ed, the maps zeroed after `init`.
struct Pair {
    store: Store<()>,
    original: Instance,
    instrumented: Instance,
}

impl Pair {
    fn new(original: &Module, instrumented: &Module) -> Pair {
        let mut store = Store::new(engine(), ());
        let original = Instance::new(&mut store, original, &[]).unwrap();
        let instrumented = Instance::new(&mut store, instrumented, &[]).unwrap();
        for i in [original, instrumented] {
            assert_eq!(call(&mut store, &i, "init", &[]), Outcome::Returned(vec![]));
        }
        let mut pair = Pair { store, original, instrumented };
        for name in [READS_EXPORT, WRITES_EXPORT] {
            pair.map_memory(name).data_mut(&mut pair.store).fill(0);
        }
        pair
    }

    fn map_memory(&mut self, name: &str) -> Memory {
        self.instrumented.get_memory(&mut self.store, name).unwrap()
    }

    fn maps(&mut self) -> (Vec<u8>, Vec<u8>) {
        let reads = self.map_memory(READS_EXPORT).data(&self.store).to_vec();
        let writes = self.map_memory(WRITES_EXPORT).data(&self.store).to_vec();
        (reads, writes)
    }

    fn memory0(&mut self, instance: Instance) -> Vec<u8> {
        let memory = instance.exports(&mut self.store).find_map(|e| e.into_memory()).expect("memory 0 is the first exported memory");
        memory.data(&self.store).to_vec()
    }

    /// Calls `name` in both; asserts the same outcome and the same memory 0 after; returns the
    /// outcome.
    fn call_both(&mut self, name: &str, args: &[Val]) -> Outcome {
        let want = call(&mut self.store, &self.original, name, args);
        let got = call(&mut self.store, &self.instrumented, name, args);
        assert_eq!(got, want, "{name}{args:?}: the instrumented module computes what the original does");
        let (a, b) = (self.memory0(self.original), self.memory0(self.instrumented));
        assert!(a == b, "{name}{args:?}: memory 0 differs at {:?}", differences(&b, &a));
        got
    }
}

#[test]
fn every_access_marks_exactly_its_bytes() {
    // Memory 0 defined and exported first (so `memory0` finds it), unshared, 1 to 4 pages.
    let wasm = accesses(r#"(memory (export "memory") 1 4)"#);
    let out = instrument_accesses(&wasm).unwrap();
    let (original, instrumented) = (Module::new(engine(), &wasm).unwrap(), Module::new(engine(), &out).unwrap());
    let (i32v, i64v) = (Val::I32, Val::I64);
    let f32v = |x: f32| Val::F32(x.to_bits());
    let f64v = |x: f64| Val::F64(x.to_bits());
    type Case<'a> = (&'a str, Vec<Val>, Vec<(usize, usize)>, Vec<(usize, usize)>);
    // (function, arguments, bytes read, bytes written), computed by hand from the WAT above.
    let cases: Vec<Case> = vec![
        ("load8_s", vec![i32v(100)], vec![(103, 104)], vec![]),
        ("load16_u", vec![i32v(200)], vec![(201, 203)], vec![]),
        ("load", vec![i32v(300)], vec![(300, 304)], vec![]),
        ("i64_load", vec![i32v(400)], vec![(416, 424)], vec![]),
        ("i64_load32_s", vec![i32v(450)], vec![(450, 454)], vec![]),
        ("f32_load", vec![i32v(460)], vec![(460, 464)], vec![]),
        ("f64_load", vec![i32v(470)], vec![(470, 478)], vec![]),
        ("store8", vec![i32v(500), i32v(0x1ff)], vec![], vec![(500, 501)]),
        ("store16", vec![i32v(510), i32v(0x1234)], vec![], vec![(512, 514)]),
        ("store", vec![i32v(520), i32v(-1)], vec![], vec![(527, 531)]),
        ("i64_store", vec![i32v(540), i64v(0x0102_0304_0506_0708)], vec![], vec![(540, 548)]),
        ("i64_store32", vec![i32v(550), i64v(-2)], vec![], vec![(550, 554)]),
        ("f32_store", vec![i32v(560), f32v(1.5)], vec![], vec![(560, 564)]),
        ("f64_store", vec![i32v(570), f64v(-2.25)], vec![], vec![(570, 578)]),
        // At the top of memory: the last 8 (4) bytes, through the offset.
        ("top_store", vec![i32v(0), i64v(7)], vec![], vec![(65528, 65536)]),
        ("top_load", vec![i32v(0)], vec![(65532, 65536)], vec![]),
        ("atomic_load", vec![i32v(600)], vec![(600, 604)], vec![]),
        ("atomic_load8", vec![i32v(605)], vec![(605, 606)], vec![]),
        ("atomic_load16", vec![i32v(606)], vec![(606, 608)], vec![]),
        ("atomic_store", vec![i32v(616), i64v(-9)], vec![], vec![(616, 624)]),
        ("atomic_store16", vec![i32v(626), i32v(0xbeef)], vec![], vec![(626, 628)]),
        ("rmw_add", vec![i32v(700), i32v(5)], vec![(704, 708)], vec![(704, 708)]),
        ("rmw8_xor", vec![i32v(709), i64v(0xff)], vec![(709, 710)], vec![(709, 710)]),
        ("rmw32_xchg", vec![i32v(712), i64v(77)], vec![(712, 716)], vec![(712, 716)]),
        // A compare-exchange marks both whether or not it exchanges (the expected value differs
        // from memory's here).
        ("cmpxchg", vec![i32v(720), i32v(0), i32v(9)], vec![(720, 724)], vec![(720, 724)]),
        ("cmpxchg64", vec![i32v(728), i64v(1), i64v(2)], vec![(728, 736)], vec![(728, 736)]),
        ("cmpxchg16", vec![i32v(738), i32v(3), i32v(4)], vec![(738, 740)], vec![(738, 740)]),
        ("v128_load", vec![i32v(800)], vec![(800, 816)], vec![]),
        ("load8x8_s", vec![i32v(820)], vec![(820, 828)], vec![]),
        ("load16_splat", vec![i32v(830)], vec![(830, 832)], vec![]),
        ("load32_zero", vec![i32v(840)], vec![(840, 844)], vec![]),
        ("load64_lane", vec![i32v(850)], vec![(850, 858)], vec![]),
        ("v128_store", vec![i32v(864)], vec![], vec![(864, 880)]),
        ("store16_lane", vec![i32v(880)], vec![], vec![(880, 882)]),
        ("copy", vec![i32v(1000), i32v(2000), i32v(10)], vec![(2000, 2010)], vec![(1000, 1010)]),
        ("copy", vec![i32v(3000), i32v(3004), i32v(8)], vec![(3004, 3012)], vec![(3000, 3008)]),
        ("copy", vec![i32v(5000), i32v(6000), i32v(0)], vec![], vec![]),
        ("copy_from_other", vec![i32v(1100), i32v(0), i32v(6)], vec![], vec![(1100, 1106)]),
        ("copy_to_other", vec![i32v(0), i32v(1200), i32v(6)], vec![(1200, 1206)], vec![]),
        ("fill", vec![i32v(3100), i32v(0xab), i32v(5)], vec![], vec![(3100, 3105)]),
        ("init_data", vec![i32v(4000), i32v(1), i32v(3)], vec![], vec![(4000, 4003)]),
        ("other_load", vec![i32v(16)], vec![], vec![]),
        ("other_store", vec![i32v(16), i32v(5)], vec![], vec![]),
        ("notify", vec![i32v(900)], vec![], vec![]),
        ("size", vec![], vec![], vec![]),
        ("sum", vec![i32v(1500)], vec![(1504, 1508), (1509, 1510)], vec![(1500, 1504)]),
        // Out of bounds: traps in both (the mark traps first, as wide as the access), marks
        // nothing.
        ("store", vec![i32v(65534), i32v(1)], vec![], vec![]),
        ("load", vec![i32v(65533)], vec![], vec![]),
        ("top_load", vec![i32v(1)], vec![], vec![]),
        ("fill", vec![i32v(65530), i32v(1), i32v(7)], vec![], vec![]),
        ("copy", vec![i32v(0), i32v(65530), i32v(7)], vec![], vec![]),
        // Waits on an unshared memory trap, after marking what they would read.
        ("wait32", vec![i32v(904)], vec![(904, 908)], vec![]),
        ("wait64", vec![i32v(912)], vec![(912, 920)], vec![]),
    ];
    let traps = ["store", "load", "top_load", "fill", "copy", "wait32", "wait64"];
    for (name, args, reads, writes) in cases {
        let mut pair = Pair::new(&original, &instrumented);
        let outcome = pair.call_both(name, &args);
        if let Outcome::Trapped(trap) = outcome {
            assert!(traps.contains(&name), "{name}{args:?} trapped: {trap}");
            let want = if name.starts_with("wait") { Trap::AtomicWaitNonSharedMemory } else { Trap::MemoryOutOfBounds };
            assert_eq!(trap, want, "{name}{args:?}");
        }
        let (got_reads, got_writes) = pair.maps();
        let (want_reads, want_writes) = (map(PAGE, &reads), map(PAGE, &writes));
        assert!(got_reads == want_reads, "{name}{args:?}: reads map differs (at, got, want): {:?}", differences(&got_reads, &want_reads));
        assert!(got_writes == want_writes, "{name}{args:?}: writes map differs (at, got, want): {:?}", differences(&got_writes, &want_writes));
    }
}

#[test]
fn memory_grow_keeps_the_maps_as_large_as_memory_0() {
    let wasm = accesses(r#"(memory (export "memory") 1 4)"#);
    let out = instrument_accesses(&wasm).unwrap();
    let (original, instrumented) = (Module::new(engine(), &wasm).unwrap(), Module::new(engine(), &out).unwrap());
    let mut pair = Pair::new(&original, &instrumented);
    let pages = |pair: &mut Pair| {
        let mem0 = pair.memory0(pair.instrumented).len() / PAGE;
        let (r, w) = pair.maps();
        (mem0, r.len() / PAGE, w.len() / PAGE)
    };
    assert_eq!(pair.call_both("grow", &[Val::I32(1)]), Outcome::Returned(vec!["I32(1)".into()]));
    assert_eq!(pages(&mut pair), (2, 2, 2));
    // The new page is tracked: a store in it marks it.
    pair.call_both("store", &[Val::I32(PAGE as i32 + 100), Val::I32(3)]);
    let (_, writes) = pair.maps();
    assert_eq!(writes, map(2 * PAGE, &[(PAGE + 107, PAGE + 111)]));
    // A grow past the maximum fails (in both) and changes nothing.
    assert_eq!(pair.call_both("grow", &[Val::I32(10)]), Outcome::Returned(vec!["I32(-1)".into()]));
    assert_eq!(pages(&mut pair), (2, 2, 2));
    // A map the host grew beyond memory 0 stays as it is; the other follows memory 0.
    pair.map_memory(READS_EXPORT).grow(&mut pair.store, 1).unwrap();
    assert_eq!(pages(&mut pair), (2, 3, 2));
    assert_eq!(pair.call_both("grow", &[Val::I32(1)]), Outcome::Returned(vec!["I32(2)".into()]));
    assert_eq!(pages(&mut pair), (3, 3, 3));
    assert_eq!(pair.call_both("grow", &[Val::I32(1)]), Outcome::Returned(vec!["I32(3)".into()]));
    assert_eq!(pages(&mut pair), (4, 4, 4));
    // At the very top of the grown memory.
    pair.call_both("top_store", &[Val::I32(3 * PAGE as i32), Val::I64(1)]);
    assert_eq!(pair.maps().1[4 * PAGE - 8..], [1; 8]);
    assert_eq!(pair.call_both("store", &[Val::I32(4 * PAGE as i32 - 8), Val::I32(1)]), Outcome::Trapped(Trap::MemoryOutOfBounds));
}

#[test]
fn a_shared_memory_import_becomes_an_ordinary_one() {
    let wasm = accesses(r#"(import "env" "memory" (memory 1 4 shared)) (export "memory" (memory 0))"#);
    let out = instrument_accesses(&wasm).unwrap();
    let engine = engine();
    // The original needs a shared memory, the instrumented copy an ordinary one.
    let original = Module::new(engine, &wasm).unwrap();
    let instrumented = Module::new(engine, &out).unwrap();
    let mut store = Store::new(engine, ());
    let shared = SharedMemory::new(engine, MemoryType::shared(1, 4)).unwrap();
    assert!(Instance::new(&mut store, &instrumented, &[shared.clone().into()]).is_err(), "a shared memory is refused where an unshared one is imported");
    Instance::new(&mut store, &original, &[shared.into()]).unwrap();
    let memory = Memory::new(&mut store, MemoryType::new(1, Some(4))).unwrap();
    let instance = Instance::new(&mut store, &instrumented, &[memory.into()]).unwrap();
    // Atomics work on it; a wait traps, having marked what it would read; notify wakes no one.
    assert_eq!(call(&mut store, &instance, "rmw_add", &[Val::I32(64), Val::I32(5)]), Outcome::Returned(vec!["I32(0)".into()]));
    assert_eq!(call(&mut store, &instance, "atomic_load", &[Val::I32(68)]), Outcome::Returned(vec!["I32(5)".into()]));
    assert_eq!(call(&mut store, &instance, "notify", &[Val::I32(68)]), Outcome::Returned(vec!["I32(0)".into()]));
    assert_eq!(call(&mut store, &instance, "wait32", &[Val::I32(72)]), Outcome::Trapped(Trap::AtomicWaitNonSharedMemory));
    let reads = instance.get_memory(&mut store, READS_EXPORT).unwrap().data(&store).to_vec();
    let writes = instance.get_memory(&mut store, WRITES_EXPORT).unwrap().data(&store).to_vec();
    assert_eq!(reads, map(PAGE, &[(68, 76)]));
    assert_eq!(writes, map(PAGE, &[(68, 72)]));
    // The host grows memory 0 itself: it grows the maps too (the pass cannot see it).
    memory.grow(&mut store, 1).unwrap();
    assert_eq!(call(&mut store, &instance, "store", &[Val::I32(PAGE as i32), Val::I32(1)]), Outcome::Trapped(Trap::MemoryOutOfBounds), "the maps are smaller than memory 0 until the host grows them");
    for name in [READS_EXPORT, WRITES_EXPORT] {
        instance.get_memory(&mut store, name).unwrap().grow(&mut store, 1).unwrap();
    }
    assert_eq!(call(&mut store, &instance, "store", &[Val::I32(PAGE as i32), Val::I32(1)]), Outcome::Returned(vec![]));
}

// ---- Differential: real programs ----

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Builds a cargo project of guest programs under `tests/` for `target`, the way the corpus
/// support (tests/support/corpus.rs) and the CLI's thread tests do, into the same directories
/// (so an earlier build serves); the directory of the `.wasm` files.
fn build(project: &str, target: &str) -> PathBuf {
    let dir = root().join(format!("target/{project}"));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "--target", target, "--manifest-path"])
        .arg(root().join(format!("tests/{project}/Cargo.toml")))
        .arg("--target-dir")
        .arg(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .status()
        .unwrap_or_else(|e| panic!("cannot start cargo to build tests/{project}: {e}"));
    assert!(status.success(), "building tests/{project} for {target} failed");
    dir.join(target).join("release")
}

fn corpus_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build("corpus", "wasm32-wasip1"))
}

/// What a run of a program looked like from outside.
#[derive(Debug, PartialEq)]
struct Run {
    stdout: String,
    stderr: String,
    /// The exit code, or the trap.
    end: Result<i32, Trap>,
    files: Vec<(String, Vec<u8>)>,
}

/// Runs `wasm`'s `_start` under wasmtime + wasmtime-wasi preview 1 with `argv`, `env`, a copy of
/// the corpus fixture preopened at `/data`, stdin empty; imports wasmtime-wasi does not know (a
/// rewritten module's migration imports, never called with the flags clear) trap. Also returns
/// the instance's memories after the run, by export name, when `memories` names any.
fn run(wasm: &[u8], argv: &[String], env: &[(String, String)], memories: &[&str]) -> (Run, Vec<Vec<u8>>) {
    use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
    use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};
    let data = tempfile::tempdir().unwrap();
    copy_dir(&root().join("tests/corpus/fixtures/data"), data.path());
    let engine = Engine::default();
    let module = Module::new(&engine, wasm).unwrap();
    let (stdout, stderr) = (MemoryOutputPipe::new(64 << 20), MemoryOutputPipe::new(64 << 20));
    let mut builder = WasiCtxBuilder::new();
    builder.stdout(stdout.clone()).stderr(stderr.clone()).args(argv).envs(env);
    builder.preopened_dir(data.path(), "/data", FsPerms::ReadWrite).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |cx| cx).unwrap();
    linker.define_unknown_imports_as_traps(&module).unwrap();
    let mut store = Store::new(&engine, builder.build_p1());
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let result = match instance.get_typed_func::<(), ()>(&mut store, "_start") {
        Ok(start) => start.call(&mut store, ()),
        Err(_) => Ok(()),
    };
    let end = match result {
        Ok(()) => Ok(0),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(*e.downcast_ref::<Trap>().unwrap_or_else(|| panic!("neither an exit nor a trap: {e:?}"))),
        },
    };
    let memories = memories.iter().map(|name| instance.get_memory(&mut store, name).unwrap().data(&store).to_vec()).collect();
    drop(store);
    let run = Run {
        stdout: String::from_utf8_lossy(&stdout.contents()).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.contents()).into_owned(),
        end,
        files: snapshot(data.path()),
    };
    (run, memories)
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every file under `dir`, by relative path, with its contents; directories as `path/`.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                out.push((format!("{name}/"), Vec::new()));
                todo.push(path);
            } else {
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A program of the corpus and how to run it.
struct Program {
    name: String,
    wasm: Vec<u8>,
    /// Arguments after argv[0].
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Whether it is a Rust program (which reads and writes memory whatever it does).
    rust: bool,
}

#[test]
fn real_programs_behave_the_same_instrumented() {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // The corpus programs, with the arguments tests/support/corpus.rs gives them.
    let rust = [
        ("hello", vec![], vec![]),
        ("args_env", s(&["one", "two words", "--flag", "ünï", ""]), vec![("CC_NUMBER".to_string(), "12".to_string()), ("CC_EMPTY".into(), String::new())]),
        ("files", vec![], vec![]),
        ("fsops", vec![], vec![]),
        ("exit_code", vec![], vec![]),
        ("panic", vec![], vec![]),
        ("compute", s(&["1"]), vec![]),
        ("textproc", vec![], vec![]),
        ("deep", s(&["2000"]), vec![]),
    ];
    let mut programs: Vec<Program> = rust
        .into_iter()
        .map(|(name, args, env)| {
            let path = corpus_dir().join(format!("{name}.wasm"));
            let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Program { name: name.to_string(), wasm, args, env, rust: true }
        })
        .collect();
    for name in ["bare", "multivalue", "indirect"] {
        let wasm = wat::parse_file(root().join(format!("tests/corpus/wat/{name}.wat"))).unwrap();
        programs.push(Program { name: name.to_string(), wasm, args: vec![], env: vec![], rust: false });
    }
    for Program { name, wasm, args, env, rust } in &programs {
        let argv: Vec<String> = std::iter::once(format!("{name}.wasm")).chain(args.iter().cloned()).collect();
        let (want, _) = run(wasm, &argv, env, &[]);
        let instrumented = instrument_accesses(wasm).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (got, maps) = run(&instrumented, &argv, env, &[READS_EXPORT, WRITES_EXPORT]);
        assert_eq!(got, want, "{name}: the instrumented module behaves like the original");
        if *rust {
            assert!(maps.iter().all(|m| m.contains(&1)), "{name}: a Rust program reads and writes memory");
        }
        // Rewritten first (every function a point, flags clear), as the clone gets it.
        let module = clonecloud_model::Module::parse(wasm).unwrap();
        let rewritten = rewrite_with(&module, wasm, &module.all_points(), &RewriteConfig::default()).unwrap();
        let instrumented = instrument_accesses(&rewritten.wasm).unwrap_or_else(|e| panic!("{name} rewritten: {e}"));
        let (got, _) = run(&instrumented, &argv, env, &[]);
        assert_eq!(got, want, "{name} rewritten: the instrumented module behaves like the original");
    }
}

/// A module with no imports changes memory only through its own code: every byte that differs
/// after its run (its start function, at instantiation) was marked written.
#[test]
fn every_byte_a_module_changes_is_marked_written() {
    // bare's memory, exported so the test can read it; it starts as zeros (no data segment).
    let text = std::fs::read_to_string(root().join("tests/corpus/wat/bare.wat")).unwrap();
    assert!(text.contains("(memory 1)") && !text.contains("(data"));
    let wasm = wat::parse_str(text.replace("(memory 1)", r#"(memory (export "memory") 1)"#)).unwrap();
    let out = instrument_accesses(&wasm).unwrap();
    let mut store = Store::new(engine(), ());
    let instance = Instance::new(&mut store, &Module::new(engine(), &out).unwrap(), &[]).unwrap();
    let [memory0, reads, writes] = ["memory", READS_EXPORT, WRITES_EXPORT].map(|name| instance.get_memory(&mut store, name).unwrap().data(&store).to_vec());
    let changed: Vec<usize> = memory0.iter().enumerate().filter(|(_, b)| **b != 0).map(|(i, _)| i).collect();
    assert!(changed.len() > 100, "bare writes squares into its memory");
    let unmarked: Vec<usize> = changed.iter().copied().filter(|&i| writes[i] != 1).collect();
    assert!(unmarked.is_empty(), "changed but not marked written: {unmarked:?}");
    // It sums what it wrote: every byte it wrote it read back.
    let written: Vec<usize> = (0..writes.len()).filter(|&i| writes[i] == 1).collect();
    assert!(written.iter().all(|&i| reads[i] == 1), "bare reads back all it writes");
}

#[test]
fn threaded_programs_instrument_with_their_memory_unshared() {
    let dir = build("threads", "wasm32-wasip1-threads");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "wasm")).collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for path in names {
        let wasm = std::fs::read(&path).unwrap();
        let module = clonecloud_model::Module::parse(&wasm).unwrap();
        assert!(module.memories[0].imported && module.memories[0].shared, "{}: a wasi-threads module", path.display());
        let rewritten = rewrite_with(&module, &wasm, &module.all_points(), &RewriteConfig::default()).unwrap();
        for (what, input) in [("plain", &wasm), ("rewritten", &rewritten.wasm)] {
            let out = instrument_accesses(input).unwrap_or_else(|e| panic!("{} {what}: {e}", path.display()));
            let new = clonecloud_model::Module::parse(&out).unwrap();
            let m = &new.memories[0];
            assert!(m.imported && !m.shared, "{} {what}: memory 0 imported unshared", path.display());
            assert_eq!((m.initial, m.maximum), (module.memories[0].initial, module.memories[0].maximum));
            Module::new(engine(), &out).unwrap_or_else(|e| panic!("{} {what}: wasmtime refuses it: {e:?}", path.display()));
        }
    }
}
