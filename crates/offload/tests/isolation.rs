//! A device never reaches another device's replica: replicas belong to the authenticated
//! session, so a second device claiming the same module and run gets a replica of its own, and a
//! device that breaks the protocol is cut off while the server goes on serving.

use clonecloud_exec::ModuleCache;
use clonecloud_net::{AllowList, Connection, Identity, Listener, NetError};
use clonecloud_offload::Clone;
use clonecloud_wire::{Message, PageDelta, State, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// `wat` rewritten with functions `points` (original indices) as migration points.
fn rewritten(wat: &str, points: &[u32]) -> Vec<u8> {
    let wasm = wat::parse_str(wat).unwrap();
    let model = clonecloud_model::Module::parse(&wasm).unwrap();
    clonecloud_model::rewrite(&model, &wasm, points).unwrap().wasm
}

/// A rewritten module whose point `f` (function 0) returns the i32 at address 0.
fn module() -> Vec<u8> {
    rewritten(r#"(module (memory (export "memory") 1) (func $f (export "f") (result i32) (i32.load (i32.const 0))))"#, &[0])
}

/// A rewritten module whose point `f` (function 1) reads stdin, which only the device can
/// answer (the clone proxies the call).
fn reads_stdin() -> Vec<u8> {
    rewritten(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func $f (export "f") (result i32)
            (i32.store (i32.const 16) (i32.const 64))
            (i32.store (i32.const 20) (i32.const 8))
            (call $read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 32))))"#,
        &[1],
    )
}

fn hello(c: &mut Connection, module: &[u8], run: u64) {
    let hash = clonecloud_wire::content_hash(module);
    c.send(&Message::Hello { version: clonecloud_wire::PROTOCOL_VERSION, module: hash, run, thread: 0, environment: Default::default() }).unwrap();
    match c.recv().unwrap() {
        Message::Welcome { need_module: true, concurrency: 1 } => c.send(&Message::Module { bytes: module.to_vec() }).unwrap(),
        Message::Welcome { need_module: false, concurrency: 1 } => {}
        other => panic!("{other:?}"),
    }
}

/// Migrates `f` as the session's migration `id` with a delta that sets memory page 0 to `page0`
/// (or nothing), returns its result.
fn call_f(c: &mut Connection, id: u64, page0: Option<u32>) -> Value {
    let pages = page0
        .map(|v| {
            let mut p = vec![0u8; 4096];
            p[..4].copy_from_slice(&v.to_le_bytes());
            vec![(0, p)]
        })
        .unwrap_or_default();
    let state = State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages, xor: false } };
    c.send(&Message::Migrate { id, point: 0, args: vec![], state, clocks: Default::default(), descriptors: Default::default() }).unwrap();
    match c.recv().unwrap() {
        Message::Return { id: answered, results, .. } if answered == id => results[0],
        other => panic!("{other:?}"),
    }
}

/// A clone serving two allowed devices, each with at most `max_runs` runs at once: the server's
/// identity, the devices' and the address.
fn two_devices(max_runs: usize) -> (Identity, Identity, Identity, std::net::SocketAddr) {
    two_devices_with(|clone| clone.set_max_runs(max_runs))
}

/// [`two_devices`] with the server set up by `setup`.
fn two_devices_with(setup: impl FnOnce(&Clone)) -> (Identity, Identity, Identity, std::net::SocketAddr) {
    let server = Identity::generate().unwrap();
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([a.public().clone(), b.public().clone()]), T).unwrap();
    let addr = listener.local_addr();
    let clone = Clone::new(ModuleCache::disabled(), T).unwrap();
    setup(&clone);
    std::thread::spawn(move || clone.serve(listener));
    (server, a, b, addr)
}

#[test]
fn replicas_belong_to_the_authenticated_session() {
    let (server, a, b, addr) = two_devices(clonecloud_offload::server::DEFAULT_MAX_RUNS);
    let module = module();

    let mut ca = Connection::connect(addr, Some(&a), server.public(), T).unwrap();
    hello(&mut ca, &module, 7);
    assert_eq!(call_f(&mut ca, 1, Some(42)), Value::I32(42));
    assert_eq!(call_f(&mut ca, 2, None), Value::I32(42), "A's replica keeps A's state between migrations");

    // B names the same module and run: it still starts from the zero baseline, not from A's state.
    let mut cb = Connection::connect(addr, Some(&b), server.public(), T).unwrap();
    hello(&mut cb, &module, 7);
    assert_eq!(call_f(&mut cb, 1, None), Value::I32(0), "B never sees A's replica");

    // A device that breaks the protocol (a second hello) gets an error and is cut off...
    ca.send(&Message::Hello { version: clonecloud_wire::PROTOCOL_VERSION, module: [0; 32], run: 7, thread: 0, environment: Default::default() }).unwrap();
    assert!(matches!(ca.recv(), Ok(Message::Error { .. })));
    assert!(matches!(ca.recv(), Err(NetError::Closed | NetError::Io { .. } | NetError::Tls(_))));
    // ...and the server goes on serving the others.
    assert_eq!(call_f(&mut cb, 2, Some(5)), Value::I32(5));

    // A module whose bytes do not match the hash of the hello is refused.
    let mut cc = Connection::connect(addr, Some(&b), server.public(), T).unwrap();
    cc.send(&Message::Hello { version: clonecloud_wire::PROTOCOL_VERSION, module: [9; 32], run: 1, thread: 0, environment: Default::default() }).unwrap();
    assert!(matches!(cc.recv().unwrap(), Message::Welcome { need_module: true, concurrency: 1 }));
    cc.send(&Message::Module { bytes: module.clone() }).unwrap();
    assert!(matches!(cc.recv(), Ok(Message::Error { .. })));
}

#[test]
fn a_device_cannot_learn_which_modules_others_ran() {
    let (server, a, b, addr) = two_devices(clonecloud_offload::server::DEFAULT_MAX_RUNS);
    let module = module();
    let hash = clonecloud_wire::content_hash(&module);
    let welcome = |id: &Identity| {
        let mut c = Connection::connect(addr, Some(id), server.public(), T).unwrap();
        c.send(&Message::Hello { version: clonecloud_wire::PROTOCOL_VERSION, module: hash, run: 1, thread: 0, environment: Default::default() }).unwrap();
        let need = match c.recv().unwrap() {
            Message::Welcome { need_module, .. } => need_module,
            other => panic!("{other:?}"),
        };
        if need {
            c.send(&Message::Module { bytes: module.clone() }).unwrap();
            assert_eq!(call_f(&mut c, 1, Some(3)), Value::I32(3));
        }
        need
    };
    assert!(welcome(&a), "A sends its module");
    assert!(!welcome(&a), "A is not asked again");
    assert!(welcome(&b), "B is asked for the bytes too: the server does not tell it A ran this module");
}

#[test]
fn a_device_has_at_most_its_share_of_runs_at_once() {
    let (server, a, b, addr) = two_devices(1);
    let module = module();
    let mut first = Connection::connect(addr, Some(&a), server.public(), T).unwrap();
    hello(&mut first, &module, 1);
    assert_eq!(call_f(&mut first, 1, Some(1)), Value::I32(1));
    // A second run of A at the same time is refused, with a reason...
    let mut second = Connection::connect(addr, Some(&a), server.public(), T).unwrap();
    second.send(&Message::Hello { version: clonecloud_wire::PROTOCOL_VERSION, module: [0; 32], run: 2, thread: 0, environment: Default::default() }).unwrap();
    match second.recv() {
        Ok(Message::Error { message }) => assert!(message.contains("runs"), "{message}"),
        other => panic!("{other:?}"),
    }
    // ...while another device is served, and A's first run goes on.
    let mut other = Connection::connect(addr, Some(&b), server.public(), T).unwrap();
    hello(&mut other, &module, 1);
    assert_eq!(call_f(&mut other, 1, Some(2)), Value::I32(2));
    assert_eq!(call_f(&mut first, 2, None), Value::I32(1));
    // Once the first run ends, A may start another.
    first.send(&Message::Goodbye).unwrap();
    drop(first);
    let deadline = std::time::Instant::now() + T;
    loop {
        let mut again = Connection::connect(addr, Some(&a), server.public(), T).unwrap();
        let hash = clonecloud_wire::content_hash(&module);
        again.send(&Message::Hello { version: clonecloud_wire::PROTOCOL_VERSION, module: hash, run: 3, thread: 0, environment: Default::default() }).unwrap();
        match again.recv() {
            Ok(Message::Welcome { .. }) => break,
            _ if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("A's slot never came back: {other:?}"),
        }
    }
}

/// A session whose link broke is resumed only by its own device key: another device naming the
/// same run is refused (and may say resume again without breaking the server), while the owner
/// gets the answer the clone computed while the link was down.
#[test]
fn only_the_device_that_owns_a_session_can_resume_it() {
    let (server, a, b, addr) = two_devices(4);
    let m = module();
    let connect = |id: &Identity| Connection::connect(addr, Some(id), server.public(), T).unwrap();
    let mut ca = connect(&a);
    hello(&mut ca, &m, 42);
    // The migration goes out, then the link breaks before the answer is read.
    let mut p = vec![0u8; 4096];
    p[..4].copy_from_slice(&1234u32.to_le_bytes());
    let state = State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![(0, p)], xor: false } };
    ca.send(&Message::Migrate { id: 1, point: 0, args: vec![], state, clocks: Default::default(), descriptors: Default::default() }).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(ca);

    // Device b claims a's run: refused, twice, then it has a session of its own.
    let mut cb = connect(&b);
    for _ in 0..2 {
        cb.send(&Message::Resume { version: clonecloud_wire::PROTOCOL_VERSION, run: 42, awaiting: vec![1] }).unwrap();
        assert_eq!(cb.recv().unwrap(), Message::Resumed { ok: false });
    }
    hello(&mut cb, &m, 42);
    assert_eq!(call_f(&mut cb, 1, None), Value::I32(0), "b's replica is its own, zeroed");

    // a resumes and gets its answer.
    let mut ca = connect(&a);
    ca.send(&Message::Resume { version: clonecloud_wire::PROTOCOL_VERSION, run: 42, awaiting: vec![1] }).unwrap();
    assert_eq!(ca.recv().unwrap(), Message::Resumed { ok: true });
    match ca.recv().unwrap() {
        Message::Return { id: 1, results, .. } => assert_eq!(results, vec![Value::I32(1234)]),
        other => panic!("{other:?}"),
    }
    // A resume for an answer the session does not hold starts a new session.
    let mut again = connect(&a);
    again.send(&Message::Resume { version: clonecloud_wire::PROTOCOL_VERSION, run: 42, awaiting: vec![9] }).unwrap();
    assert_eq!(again.recv().unwrap(), Message::Resumed { ok: false });
}

/// A device cannot fill its file store with contents no run of it needs: the clone takes only
/// the contents it asked for, each once.
#[test]
fn file_contents_the_clone_did_not_ask_for_are_refused() {
    let (server, a, _b, addr) = two_devices(4);
    let m = module();
    let asked = b"asked for".to_vec();
    let stray = b"never asked for".to_vec();
    let (h_asked, h_stray) = (clonecloud_files::content_hash(&asked), clonecloud_files::content_hash(&stray));
    let mut c = Connection::connect(addr, Some(&a), server.public(), T).unwrap();
    hello(&mut c, &m, 5);
    let file = |h| clonecloud_wire::Entry { path: "f".into(), kind: clonecloud_wire::EntryKind::File(h), stat: Default::default() };
    let dir = clonecloud_wire::Entry { path: "".into(), kind: clonecloud_wire::EntryKind::Dir, stat: Default::default() };
    c.send(&Message::Files { trees: vec![clonecloud_wire::Tree { guest: "/d".into(), entries: vec![dir, file(h_asked)] }] }).unwrap();
    assert_eq!(c.recv().unwrap(), Message::NeedFiles { hashes: vec![h_asked] });
    c.send(&Message::FileData { hash: h_asked, bytes: asked.clone() }).unwrap();
    // The clone goes on: a migration is answered.
    assert_eq!(call_f(&mut c, 1, Some(8)), Value::I32(8));
    // The same contents again, or contents never asked for: the session is refused.
    for (h, bytes) in [(h_asked, asked), (h_stray, stray)] {
        let mut c = Connection::connect(addr, Some(&a), server.public(), T).unwrap();
        hello(&mut c, &m, 6);
        c.send(&Message::FileData { hash: h, bytes }).unwrap();
        match c.recv() {
            Ok(Message::Error { message }) => assert!(message.contains("did not ask"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}

/// Compiled modules are each device's own: the same module sent by two devices is compiled for
/// each (so how fast a clone answers tells no device whether another ran the module, and no
/// device's upload can stand in for another's), while each device's own second run finds its
/// artefact.
#[test]
fn compiled_modules_are_each_devices_own() {
    let cache_dir = tempfile::tempdir().unwrap();
    let server = Identity::generate().unwrap();
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([a.public().clone(), b.public().clone()]), T).unwrap();
    let addr = listener.local_addr();
    let clone = Clone::new(ModuleCache::new(cache_dir.path()), T).unwrap();
    std::thread::spawn(move || clone.serve(listener));
    let m = module();
    let artefacts = || std::fs::read_dir(cache_dir.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".cwasm")).count();
    for (n, id) in [(1, &a), (2, &b), (2, &a)] {
        let mut c = Connection::connect(addr, Some(id), server.public(), T).unwrap();
        hello(&mut c, &m, 1);
        assert_eq!(call_f(&mut c, 1, Some(n)), Value::I32(n as i32));
        c.send(&Message::Goodbye).unwrap();
        assert_eq!(artefacts(), n as usize, "after device run {n}");
    }
}

/// A session whose link broke counts among its device's runs while it waits to be resumed, but
/// gives way to a new run of the same device at its limit: with one run allowed, the device
/// never holds two, a device whose link broke is not locked out by its own waiting session, and
/// the device that comes back for the session that gave way starts over.
#[test]
fn a_session_waiting_to_be_resumed_counts_among_the_device_s_runs() {
    let (server, a, b, addr) = two_devices(1);
    let m = module();
    let connect = |id: &Identity| Connection::connect(addr, Some(id), server.public(), T).unwrap();
    let mut ca = connect(&a);
    hello(&mut ca, &m, 42);
    assert_eq!(call_f(&mut ca, 1, Some(77)), Value::I32(77));
    // A second run while the first holds its connection: refused.
    let mut other = connect(&a);
    other.send(&Message::Hello { version: clonecloud_wire::PROTOCOL_VERSION, module: [0; 32], run: 43, thread: 0, environment: Default::default() }).unwrap();
    match other.recv() {
        Ok(Message::Error { message }) => assert!(message.contains("runs"), "{message}"),
        other => panic!("a second run while the first is connected: {other:?}"),
    }
    // The link breaks after the answer arrived: the session waits for a resume, and a new run
    // of the same device takes its place.
    drop(ca);
    let mut cn = connect(&a);
    hello(&mut cn, &m, 43);
    assert_eq!(call_f(&mut cn, 1, Some(5)), Value::I32(5));
    // Another device is not affected.
    let mut cb = connect(&b);
    hello(&mut cb, &m, 42);
    assert_eq!(call_f(&mut cb, 1, None), Value::I32(0));
    // The session that gave way is gone: its resume is refused (the device sends the migration
    // again on a new session).
    let mut ca = connect(&a);
    ca.send(&Message::Resume { version: clonecloud_wire::PROTOCOL_VERSION, run: 42, awaiting: vec![1] }).unwrap();
    assert_eq!(ca.recv().unwrap(), Message::Resumed { ok: false });
    // And the new run's session is the device's one: a resume of it is served.
    drop(cn);
    let mut cn = connect(&a);
    cn.send(&Message::Resume { version: clonecloud_wire::PROTOCOL_VERSION, run: 43, awaiting: vec![1] }).unwrap();
    assert_eq!(cn.recv().unwrap(), Message::Resumed { ok: true });
    match cn.recv().unwrap() {
        Message::Return { id: 1, results, .. } => assert_eq!(results, vec![Value::I32(5)]),
        other => panic!("{other:?}"),
    }
    assert_eq!(call_f(&mut cn, 2, None), Value::I32(5), "the same replica");
}

/// At most --max-sessions sessions at once, all devices together: one more is refused with a
/// reason (the device runs locally), and admitted once a session ends.
#[test]
fn a_server_holds_at_most_its_sessions_at_once() {
    let (server, a, b, addr) = two_devices_with(|clone| clone.set_max_sessions(1));
    let m = module();
    let hash = clonecloud_wire::content_hash(&m);
    let connect = |id: &Identity| Connection::connect(addr, Some(id), server.public(), T).unwrap();
    let mut ca = connect(&a);
    hello(&mut ca, &m, 1);
    assert_eq!(call_f(&mut ca, 1, Some(5)), Value::I32(5));
    let mut cb = connect(&b);
    cb.send(&Message::Hello { version: clonecloud_wire::PROTOCOL_VERSION, module: hash, run: 1, thread: 0, environment: Default::default() }).unwrap();
    match cb.recv() {
        Ok(Message::Error { message }) => assert!(message.contains("sessions"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A's session goes on; once it ends, B is served.
    assert_eq!(call_f(&mut ca, 2, None), Value::I32(5));
    ca.send(&Message::Goodbye).unwrap();
    // The server closes A's connection when the session (and its slot) is gone.
    assert!(ca.recv().is_err());
    let mut cb = connect(&b);
    hello(&mut cb, &m, 2);
    assert_eq!(call_f(&mut cb, 1, Some(6)), Value::I32(6));
}

/// All of a device's replicas share one memory budget (`--max-device-memory`): with room for
/// one replica's growth, a second run of the same device that grows as much fails on the clone
/// (`resource-limit`: the device runs it), another device is not affected, and the budget comes
/// back when the first run ends.
#[test]
fn a_device_s_replicas_share_one_memory_budget() {
    // Point `g` grows memory by 40 pages (2.5 MiB) and returns its size in pages.
    let m = rewritten(r#"(module (memory (export "memory") 1) (func $g (export "g") (result i32) (drop (memory.grow (i32.const 40))) (memory.size)))"#, &[0]);
    // Room for one replica's memory and the copy of it the replica keeps (2 x 2.6 MiB), not two.
    let (server, a, b, addr) = two_devices_with(|clone| clone.set_max_device_memory(8 << 20));
    let connect = |id: &Identity| Connection::connect(addr, Some(id), server.public(), T).unwrap();
    let grow = |c: &mut Connection| {
        let state = State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![], xor: false } };
        c.send(&Message::Migrate { id: 1, point: 0, args: vec![], state, clocks: Default::default(), descriptors: Default::default() }).unwrap();
        c.recv().unwrap()
    };
    let mut a1 = connect(&a);
    hello(&mut a1, &m, 1);
    assert!(matches!(grow(&mut a1), Message::Return { id: 1, results, .. } if results == vec![Value::I32(41)]));
    let mut a2 = connect(&a);
    hello(&mut a2, &m, 2);
    match grow(&mut a2) {
        Message::Failed { id: 1, kind, message } => {
            assert_eq!(kind, clonecloud_wire::FailKind::ResourceLimit, "{message}");
            assert!(message.contains("per-device limit"), "{message}");
        }
        other => panic!("a second run over the device's budget: {other:?}"),
    }
    let mut b1 = connect(&b);
    hello(&mut b1, &m, 1);
    assert!(matches!(grow(&mut b1), Message::Return { id: 1, results, .. } if results == vec![Value::I32(41)]), "another device has its own budget");
    // The first run ends: its replica's memory is the device's again.
    a1.send(&Message::Goodbye).unwrap();
    assert!(a1.recv().is_err(), "the server closes the connection when the session is gone");
    drop(a2);
    let mut a3 = connect(&a);
    hello(&mut a3, &m, 3);
    assert!(matches!(grow(&mut a3), Message::Return { id: 1, results, .. } if results == vec![Value::I32(41)]));
}

/// Before a session opens, frames are small: a first message of 10 MiB (a hello with a huge
/// environment) ends the connection at its header, without the server holding it; a normal
/// hello right after is served.
#[test]
fn a_huge_first_message_is_refused_at_its_header() {
    let (server, a, _b, addr) = two_devices(clonecloud_offload::server::DEFAULT_MAX_RUNS);
    let mut c = Connection::connect(addr, Some(&a), server.public(), T).unwrap();
    let environment = clonecloud_wire::Environment { args: vec![vec![b'x'; 10 << 20]], env: vec![] };
    let _ = c.send(&Message::Hello { version: clonecloud_wire::PROTOCOL_VERSION, module: [0; 32], run: 1, thread: 0, environment });
    assert!(c.recv().is_err(), "the server keeps no connection with a 10 MiB first frame");
    let m = module();
    let mut ok = Connection::connect(addr, Some(&a), server.public(), T).unwrap();
    hello(&mut ok, &m, 2);
    assert_eq!(call_f(&mut ok, 1, Some(9)), Value::I32(9));
}

/// A connection that only measures the link (probes) holds no session: with room for one
/// session and one run, a device that keeps its probe connection open still opens its run.
#[test]
fn a_connection_that_only_probes_holds_no_session() {
    let (server, a, _b, addr) = two_devices_with(|clone| {
        clone.set_max_sessions(1);
        clone.set_max_runs(1);
    });
    let m = module();
    let connect = |id: &Identity| Connection::connect(addr, Some(id), server.public(), T).unwrap();
    let mut probing = connect(&a);
    probing.send(&Message::Probe { bytes: vec![7; 1000], reply: 10 }).unwrap();
    match probing.recv().unwrap() {
        Message::ProbeReply { bytes } => assert_eq!(bytes.len(), 10),
        other => panic!("{other:?}"),
    }
    let mut run = connect(&a);
    hello(&mut run, &m, 1);
    assert_eq!(call_f(&mut run, 1, Some(3)), Value::I32(3));
    // The probing connection may still probe.
    probing.send(&Message::Probe { bytes: vec![], reply: 4 }).unwrap();
    assert!(matches!(probing.recv().unwrap(), Message::ProbeReply { .. }));
}

/// A device that answers a proxied call (a read of stdin) with more memory than the clone allows
/// is told the call hit a resource limit (it runs it itself), on a session that goes on: the
/// answer is refused, the link is not taken for broken.
#[test]
fn a_proxied_call_answered_with_too_much_memory_fails_as_a_resource_limit() {
    let server = Identity::generate().unwrap();
    let a = Identity::generate().unwrap();
    let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([a.public().clone()]), T).unwrap();
    let addr = listener.local_addr();
    let limits = clonecloud_replica::Limits { memory: 64 << 20, ..Default::default() };
    let clone = Clone::with_limits(ModuleCache::disabled(), T, limits).unwrap();
    std::thread::spawn(move || clone.serve(listener));
    let m = reads_stdin();
    let mut c = Connection::connect(addr, Some(&a), server.public(), T).unwrap();
    hello(&mut c, &m, 1);
    let empty = State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![], xor: false } };
    c.send(&Message::Migrate { id: 1, point: 1, args: vec![], state: empty, clocks: Default::default(), descriptors: Default::default() }).unwrap();
    match c.recv().unwrap() {
        Message::ImportCall { .. } => {}
        other => panic!("expected the read proxied to the device: {other:?}"),
    }
    // 2,000 wasm pages: 125 MiB, past the clone's memory limit of 64 MiB.
    let huge = State { globals: vec![], memory: PageDelta { wasm_pages: 2_000, page_size: 4096, pages: vec![], xor: false } };
    c.send(&Message::ImportReturn { id: 1, results: vec![Value::I32(0)], state: huge }).unwrap();
    match c.recv().unwrap() {
        Message::Failed { id: 1, kind: clonecloud_wire::FailKind::ResourceLimit, message } => assert!(message.contains("fd_read"), "{message}"),
        other => panic!("expected a resource-limit failure: {other:?}"),
    }
    // The session ends in order: a goodbye is taken.
    c.send(&Message::Goodbye).unwrap();

    // An answer that is not a message the clone takes (a page past the memory it declares) is
    // told to the device at once, not waited out as a broken link.
    let mut c = Connection::connect(addr, Some(&a), server.public(), T).unwrap();
    hello(&mut c, &m, 2);
    let empty = State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![], xor: false } };
    c.send(&Message::Migrate { id: 1, point: 1, args: vec![], state: empty, clocks: Default::default(), descriptors: Default::default() }).unwrap();
    assert!(matches!(c.recv().unwrap(), Message::ImportCall { id: 1, .. }));
    let outside = State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![(16, vec![0; 4096])], xor: false } };
    c.send(&Message::ImportReturn { id: 1, results: vec![Value::I32(0)], state: outside }).unwrap();
    match c.recv() {
        Ok(Message::Error { message }) => assert!(message.contains("beyond"), "{message}"),
        other => panic!("expected the clone to say what was wrong: {other:?}"),
    }
}

/// A device that gives a migration up (its deadline passed) cancels it: the clone stops the
/// call at once instead of computing, up to its run-time limit, an answer nobody awaits, sends
/// nothing for it, ends the session at the goodbye, and the device's run slot is free for its
/// next run (here the only one it may have).
#[test]
fn a_call_the_device_cancels_is_stopped_and_its_session_freed() {
    // Point 0 returns the i32 at address 0; point 1 never returns.
    let module = rewritten(
        r#"(module (memory (export "memory") 1)
             (func $f (export "f") (result i32) (i32.load (i32.const 0)))
             (func $spin (export "spin") (result i32) (loop $l (br $l)) (i32.const 0)))"#,
        &[0, 1],
    );
    let server = Identity::generate().unwrap();
    let device = Identity::generate().unwrap();
    let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([device.public().clone()]), T).unwrap();
    let addr = listener.local_addr();
    // The session's idle timeout is long: only the cancel can end the call in time.
    let clone = Clone::new(ModuleCache::disabled(), Duration::from_secs(120)).unwrap();
    clone.set_max_runs(1);
    let serving = std::sync::Arc::clone(&clone);
    std::thread::spawn(move || serving.serve(listener));

    let mut c = Connection::connect(addr, Some(&device), server.public(), T).unwrap();
    hello(&mut c, &module, 1);
    let state = State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![], xor: false } };
    c.send(&Message::Migrate { id: 1, point: 1, args: vec![], state, clocks: Default::default(), descriptors: Default::default() }).unwrap();
    c.send(&Message::Cancel { id: 1 }).unwrap();
    c.send(&Message::Goodbye).unwrap();
    let started = std::time::Instant::now();
    // Nothing is answered for the cancelled call: the session just ends.
    c.set_timeout(Some(Duration::from_secs(60)));
    assert!(matches!(c.recv(), Err(NetError::Closed)), "the clone ends the session without an answer");
    assert!(started.elapsed() < Duration::from_secs(30), "stopped at once, not at the run-time limit");
    assert_eq!(clone.calls_stopped(), 1);

    // The device's next run gets its one slot and a fresh replica.
    let mut again = Connection::connect(addr, Some(&device), server.public(), T).unwrap();
    hello(&mut again, &module, 2);
    assert_eq!(call_f(&mut again, 1, Some(5)), Value::I32(5));
    again.send(&Message::Goodbye).unwrap();
    assert!(matches!(again.recv(), Err(NetError::Closed)));

    // A cancel that crosses a proxied call (a read of stdin, which only the device can answer)
    // stops the call too.
    let module = reads_stdin();
    let mut c = Connection::connect(addr, Some(&device), server.public(), T).unwrap();
    hello(&mut c, &module, 3);
    let state = State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![], xor: false } };
    c.send(&Message::Migrate { id: 1, point: 1, args: vec![], state, clocks: Default::default(), descriptors: Default::default() }).unwrap();
    assert!(matches!(c.recv().unwrap(), Message::ImportCall { id: 1, .. }), "the read goes to the device");
    c.send(&Message::Cancel { id: 1 }).unwrap();
    c.send(&Message::Goodbye).unwrap();
    assert!(matches!(c.recv(), Err(NetError::Closed)), "the clone ends the session without an answer");
    assert_eq!(clone.calls_stopped(), 2);
}
