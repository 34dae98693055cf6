//! Redundant execution (`run --redundant K`): every migration is asked of a second clone too,
//! and an answer is merged only when both gave the same. A clone that lies with a well-formed
//! answer (which alone is believed: the clone is authenticated and trusted to compute) is caught,
//! whichever of the two it is, and the call runs here: the program ends as a plain run does.

mod support;

use clonecloud_exec::{ModuleCache, Outcome, PointMode, Points, Program, Stdio, WasiConfig, new_engine};
use clonecloud_net::Identity;
use clonecloud_offload::{Cause, CompressionPolicy, Offloader, Stats, Target, spawn_local_with};
use clonecloud_wire::{Compression, Message, PageDelta, State, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `f` stores 7 at address 1000 and returns 7; `_start` exits with `f()` plus what is at 1000:
/// 14 when `f` ran as written, here or on an honest clone.
const WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1 2)
  (func $f (export "f") (result i32) (i32.store (i32.const 1000) (i32.const 7)) (i32.const 7))
  (func (export "_start") (call $exit (i32.add (call $f) (i32.load (i32.const 1000))))))"#;

fn target(addr: String, identity: Identity, server_key: clonecloud_net::PublicKey) -> Target {
    Target {
        addr,
        server_key,
        identity,
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(20),
        compression: CompressionPolicy::Fixed(Compression::None),
        environment: Default::default(),
        dirs: Vec::new(),
        others: Vec::new(),
    }
}

/// An embedded clone that computes.
fn honest() -> Target {
    let (addr, identity, key) = spawn_local_with(ModuleCache::disabled(), Duration::from_secs(30), clonecloud_replica::Limits::default(), None).unwrap();
    target(addr, identity, key)
}

/// A server that speaks the protocol but answers every migration with `f` returning 9 and
/// nothing written: well-formed, and wrong.
fn liar() -> Target {
    liar_with(9)
}

/// [`liar`], returning `result` (7 is `f`'s own: then only the memory it leaves is wrong).
fn liar_with(result: i32) -> Target {
    let answer = Message::Return {
        id: 1,
        results: vec![Value::I32(result)],
        state: State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![], xor: false } },
        micros: 0,
        output: vec![],
        files: vec![],
        exit: None,
        freed: 0,
        thrown: None,
        access: None,
    };
    let (addr, identity, key) = support::liar(answer);
    target(addr, identity, key)
}

/// Runs the module with `f` offloaded to `primary`, asked of `witnesses` too: the exit code and
/// the primary's stats.
fn run(primary: Target, witnesses: Vec<Target>) -> (i32, Stats) {
    let wasm = wat::parse_str(WAT).unwrap();
    let engine = new_engine(PointMode::Host).unwrap();
    let program = Program::prepare(&engine, &ModuleCache::disabled(), &wasm, &Points::Named(vec!["f".into()]), PointMode::Host).unwrap();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let offloader = |t: Target, stats: Arc<Mutex<Stats>>| Offloader::new(t, program.layout().clone(), vec!["f".into()], stats);
    let mut primary = offloader(primary, stats.clone());
    primary.witnessed_by(witnesses.into_iter().map(|t| offloader(t, Arc::new(Mutex::new(Stats::default())))).collect());
    let wasi = WasiConfig { stdio: Stdio::Null, ..WasiConfig::default() };
    let code = match program.run_with(&wasi, Some(Box::new(primary))).unwrap().outcome {
        Outcome::Exited(c) => c,
        other => panic!("{other:?}"),
    };
    let s = stats.lock().unwrap().clone();
    (code, s)
}

#[test]
fn two_honest_clones_agree_and_the_answer_is_merged() {
    let (code, s) = run(honest(), vec![honest()]);
    assert_eq!(code, 14);
    assert_eq!((s.migrations, s.checked, s.fallbacks.count), (1, 1, 0), "{s:?}");
}

#[test]
fn a_lying_clone_alone_is_believed_so_a_second_one_is_asked() {
    // The premise: a well-formed lie passes every check one clone's answer gets.
    let (code, s) = run(liar(), vec![]);
    assert_eq!((code, s.migrations), (9, 1), "{s:?}");
}

#[test]
fn a_lying_clone_is_caught_whichever_it_is_and_the_call_runs_here() {
    for (primary, witness, case) in [(honest(), liar(), "the second lies"), (liar(), honest(), "the first lies")] {
        let (code, s) = run(primary, vec![witness]);
        assert_eq!(code, 14, "{case}: {s:?}");
        assert_eq!((s.migrations, s.checked), (0, 0), "{case}: {s:?}");
        assert_eq!(s.fallbacks.causes.get(&Cause::Mismatch), Some(&1), "{case}: {s:?}");
        let detail = &s.fallbacks.events[0].detail;
        assert!(detail.contains("disagree: the results differ"), "{case}: {detail}");
    }
}

#[test]
fn a_clone_that_returns_the_right_result_but_leaves_memory_wrong_is_caught() {
    // Alone it is believed: `f`'s 7, but nothing at 1000.
    assert_eq!(run(liar_with(7), vec![]).0, 7);
    for (primary, witness) in [(honest(), liar_with(7)), (liar_with(7), honest())] {
        let (code, s) = run(primary, vec![witness]);
        assert_eq!((code, s.migrations), (14, 0), "{s:?}");
        let detail = &s.fallbacks.events[0].detail;
        assert!(detail.contains("the memory contents differ"), "{detail}");
    }
}

#[test]
fn a_witness_that_cannot_answer_leaves_the_answer_unbelieved() {
    let mut gone = honest();
    gone.addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (code, s) = run(honest(), vec![gone]);
    assert_eq!(code, 14);
    assert_eq!((s.migrations, s.fallbacks.causes.get(&Cause::Mismatch)), (0, Some(&1)), "{s:?}");
}

/// A multi-threaded module (shared memory 0): `f` stores `load(1004) + 7` at 1000 and returns
/// what is at 1000; `_start` exits with `f()` plus what is at 1000: 14 when `f` ran as written.
/// The main thread's migration is a thread's: checked against its snapshot, merged byte by byte.
const THREADED_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "wasi" "thread-spawn" (func $spawn (param i32) (result i32)))
  (import "env" "memory" (memory 1 2 shared))
  (export "memory" (memory 0))
  (func $f (export "f") (result i32)
    (i32.store (i32.const 1000) (i32.add (i32.load (i32.const 1004)) (i32.const 7)))
    (i32.load (i32.const 1000)))
  (func (export "_start") (call $exit (i32.add (call $f) (i32.load (i32.const 1000))))))"#;

/// A server that answers every migration of a thread with `answer`, on any number of
/// connections (a pool opens several).
fn threaded_liar(answer: Message) -> Target {
    use clonecloud_net::{AllowList, Listener};
    let server = Identity::generate().unwrap();
    let device = Identity::generate().unwrap();
    let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([device.public().clone()]), Duration::from_secs(10)).unwrap();
    let addr = listener.local_addr().to_string();
    std::thread::spawn(move || {
        while let Ok(incoming) = listener.incoming() {
            let Ok(mut c) = incoming.accept() else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                while let Ok(m) = c.recv() {
                    let reply = match m {
                        Message::Hello { .. } => Message::Welcome { need_module: false, concurrency: 1 },
                        Message::Files { .. } => Message::NeedFiles { hashes: vec![] },
                        Message::Migrate { .. } => answer.clone(),
                        _ => continue,
                    };
                    if c.send(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    target(addr, device, server.public().clone())
}

/// A bitmap of one 4 KiB page with bytes `at..at + len` set.
fn bits(at: usize, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; clonecloud_wire::ACCESS_BITMAP];
    for i in at..at + len {
        b[i / 8] |= 1 << (i % 8);
    }
    b
}

/// A thread's well-formed answer: `f` returned `result`, leaving `value` at 1000 (page 0 sent
/// whole), having read `reads`.
fn thread_answer(result: i32, value: i32, reads: Vec<(u32, Vec<u8>)>) -> Message {
    let mut page = vec![0u8; 4096];
    page[1000..1004].copy_from_slice(&value.to_le_bytes());
    Message::Return {
        id: 1,
        results: vec![Value::I32(result)],
        state: State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![(0, page)], xor: false } },
        micros: 0,
        output: vec![],
        files: vec![],
        exit: None,
        freed: 0,
        thrown: None,
        access: Some(clonecloud_wire::Access { reads, writes: vec![(0, bits(1000, 4))] }),
    }
}

/// Runs [`THREADED_WAT`] with `f` offloaded through a pool whose sessions go to `primary`, each
/// asked of `witness` too: the exit code and the pool's stats.
fn run_threaded(primary: Target, witness: Target) -> (i32, Stats) {
    let wasm = wat::parse_str(THREADED_WAT).unwrap();
    let engine = clonecloud_exec::threads::new_threads_engine_with(PointMode::Host, true).unwrap();
    let program = Program::prepare(&engine, &ModuleCache::disabled(), &wasm, &Points::Named(vec!["f".into()]), PointMode::Host).unwrap();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let offloader = |t: Target, stats: Arc<Mutex<Stats>>| Offloader::new(t, program.layout().clone(), vec!["f".into()], stats);
    let mut o = offloader(primary, stats.clone());
    o.witnessed_by(vec![offloader(witness, Arc::new(Mutex::new(Stats::default())))]);
    let pool = clonecloud_offload::pool::Pool::new(vec![o]);
    let wasi = WasiConfig { stdio: Stdio::Null, ..WasiConfig::default() };
    fn ended(end: clonecloud_exec::threads::ThreadEnd) -> ! {
        panic!("no thread was spawned, yet one ended: {end:?}")
    }
    let code = match program.run_threads(&wasi, Some(Box::new(pool)), ended).unwrap().outcome {
        Outcome::Exited(c) => c,
        other => panic!("{other:?}"),
    };
    let s = stats.lock().unwrap().clone();
    (code, s)
}

#[test]
fn a_threads_migration_asked_of_two_honest_clones_is_checked_and_merged() {
    let (code, s) = run_threaded(honest(), honest());
    assert_eq!(code, 14);
    assert_eq!((s.migrations, s.checked, s.fallbacks.count), (1, 1, 0), "{s:?}");
}

#[test]
fn a_lying_clone_is_caught_in_a_threads_migration_whichever_it_is() {
    // A wrong result, believed alone.
    let wrong = || threaded_liar(thread_answer(9, 9, vec![(0, bits(1000, 8))]));
    let (code, s) = run_threaded(wrong(), wrong());
    assert_eq!((code, s.migrations), (18, 1), "the premise: two liars who agree are believed: {s:?}");
    for (primary, witness, case) in [(honest(), wrong(), "the second lies"), (wrong(), honest(), "the first lies")] {
        let (code, s) = run_threaded(primary, witness);
        assert_eq!(code, 14, "{case}: {s:?}");
        assert_eq!((s.migrations, s.fallbacks.causes.get(&Cause::Mismatch)), (0, Some(&1)), "{case}: {s:?}");
        assert!(s.fallbacks.events[0].detail.contains("disagree: the results differ"), "{case}: {s:?}");
    }
}

#[test]
fn a_clone_that_hides_what_the_call_read_is_caught() {
    // The right result and memory, but no byte read: a clone saying so would let a call that
    // read what another thread changed meanwhile merge without a conflict.
    let hiding = || threaded_liar(thread_answer(7, 7, vec![]));
    for (primary, witness) in [(honest(), hiding()), (hiding(), honest())] {
        let (code, s) = run_threaded(primary, witness);
        assert_eq!((code, s.migrations), (14, 0), "{s:?}");
        assert!(s.fallbacks.events[0].detail.contains("the bytes the call read and wrote differ"), "{s:?}");
    }
}
