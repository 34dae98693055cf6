//! The clone server with a multi-threaded module (a shared memory 0): it compiles the module
//! instrumented, and answers a migration with exactly the pages the call wrote and the bitmaps
//! of the bytes it read and wrote; a call that waits for another thread fails (the device runs
//! it) instead of hanging the session.

use clonecloud_exec::ModuleCache;
use clonecloud_net::{AllowList, Connection, Identity, Listener};
use clonecloud_offload::Clone;
use clonecloud_wire::{Compression, FailKind, Message, PageDelta, State, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// Point `f(a, t)` (function 1): stores `load32(a) + 1` at `a + 8` and returns it; with `t`
/// other than 0 it first waits at `a` for the value there, for `t` ns.
const WAT: &str = r#"(module
  (import "env" "memory" (memory 1 4 shared))
  (import "wasi" "thread-spawn" (func $spawn (param i32) (result i32)))
  (func $f (export "f") (param $a i32) (param $t i64) (result i32)
    (if (i64.ne (local.get $t) (i64.const 0))
      (then (drop (memory.atomic.wait32 (local.get $a) (i32.load (local.get $a)) (local.get $t)))))
    (i32.store offset=8 (local.get $a) (i32.add (i32.load (local.get $a)) (i32.const 1)))
    (i32.load offset=8 (local.get $a))))"#;

fn module() -> Vec<u8> {
    let wasm = wat::parse_str(WAT).unwrap();
    let model = clonecloud_model::Module::parse(&wasm).unwrap();
    clonecloud_model::rewrite(&model, &wasm, &[1]).unwrap().wasm
}

fn connect() -> Connection {
    let server = Identity::generate().unwrap();
    let device = Identity::generate().unwrap();
    let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([device.public().clone()]), T).unwrap();
    let addr = listener.local_addr();
    let clone = Clone::new(ModuleCache::disabled(), T).unwrap();
    std::thread::spawn(move || clone.serve(listener));
    let mut c = Connection::connect(addr, Some(&device), server.public(), T).unwrap();
    let module = module();
    c.send(&Message::Hello { version: clonecloud_wire::PROTOCOL_VERSION, module: clonecloud_wire::content_hash(&module), run: 1, thread: 2, environment: Default::default() }).unwrap();
    assert!(matches!(c.recv().unwrap(), Message::Welcome { need_module: true, .. }));
    c.send(&Message::Module { bytes: module }).unwrap();
    c
}

fn migrate(c: &mut Connection, id: u64, a: i32, t: i64, pages: Vec<(u32, Vec<u8>)>) -> Message {
    let state = State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages, xor: false } };
    c.send(&Message::Migrate { id, point: 1, args: vec![Value::I32(a), Value::I64(t)], state, clocks: Default::default(), descriptors: Default::default() }).unwrap();
    c.recv().unwrap()
}

#[test]
fn a_threaded_migration_answers_with_its_accesses() {
    let mut c = connect();
    let mut page = vec![0u8; 4096];
    page[100] = 41;
    page[3000] = 7;
    let answer = migrate(&mut c, 1, 4096 + 100, 0, vec![(1, page.clone())]);
    let Message::Return { id: 1, results, state, access: Some(access), freed: 0, .. } = answer else { panic!("{answer:?}") };
    assert_eq!(results, [Value::I32(42)]);
    page[108] = 42;
    assert_eq!(state.memory.pages, [(1, page.clone())], "exactly the page written, whole");
    let read: Vec<u64> = (0..65536).filter(|&b| access.read(b)).collect();
    let wrote: Vec<u64> = (0..65536).filter(|&b| access.wrote(b)).collect();
    assert_eq!(read, (4196..4200).chain(4204..4208).collect::<Vec<_>>(), "a, then a + 8 read back");
    assert_eq!(wrote, (4204..4208).collect::<Vec<_>>());

    // Compressed, the page comes back XORed with what was agreed: only the bytes written.
    c.set_compression(Compression::Zstd);
    let answer = migrate(&mut c, 2, 4096 + 100, 0, vec![]);
    let Message::Return { id: 2, state, access: Some(access), .. } = answer else { panic!("{answer:?}") };
    assert!(state.memory.xor);
    let mut xor = vec![0u8; 4096];
    xor[108] = 42 ^ 42;
    assert_eq!(state.memory.pages, [(1, xor)], "the same value written again: the page, all zeros");
    assert_eq!(access.writes.len(), 1);

    // A wait on the value that is there, for ever: the call fails at once, the device runs it.
    let started = std::time::Instant::now();
    let answer = migrate(&mut c, 3, 4096 + 100, -1, vec![]);
    assert!(matches!(&answer, Message::Failed { id: 3, kind: FailKind::Unavailable, message } if message.contains("another thread")), "{answer:?}");
    assert!(started.elapsed() < T);
}
