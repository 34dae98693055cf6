//! A clone whose answer does not fit (results of the wrong type or number, a global the module
//! lacks, memory beyond the module's maximum) is not believed: nothing of it is merged, the device
//! runs the call itself, and the program ends as a plain run does. (A well-formed wrong answer is
//! not detectable from one clone's answer: the clone is authenticated and trusted to compute;
//! `--redundant` asks a second, tests/redundant.rs.)

mod support;
use support::liar;

use clonecloud_exec::{ModuleCache, Outcome, PointMode, Points, Program, Stdio, WasiConfig, new_engine};
use clonecloud_offload::{CompressionPolicy, Offloader, Stats, Target};
use clonecloud_wire::{Compression, Message, PageDelta, State, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `f` returns 7 and `_start` exits with it.
const WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1 2)
  (func $f (export "f") (result i32) (i32.const 7))
  (func (export "_start") (call $exit (call $f))))"#;

fn exit_code(answer: Option<Message>) -> (i32, Stats) {
    exit_code_in(answer, None)
}

/// [`exit_code`] with `dir` preopened as `/pre` on the device (and replicated to the liar).
fn exit_code_in(answer: Option<Message>, dir: Option<&std::path::Path>) -> (i32, Stats) {
    exit_code_of(WAT, answer, dir)
}

/// [`exit_code_in`] of the module `wat` (which exports `f`, the function migrated).
fn exit_code_of(wat: &str, answer: Option<Message>, dir: Option<&std::path::Path>) -> (i32, Stats) {
    let wasm = wat::parse_str(wat).unwrap();
    let engine = new_engine(PointMode::Host).unwrap();
    let program = Program::prepare(&engine, &ModuleCache::disabled(), &wasm, &Points::Named(vec!["f".into()]), PointMode::Host).unwrap();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let migrator: Option<Box<dyn clonecloud_exec::Migrator>> = answer.map(|answer| {
        let (addr, identity, server_key) = liar(answer);
        let target = Target {
            addr,
            server_key,
            identity,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            compression: CompressionPolicy::Fixed(Compression::None),
            environment: Default::default(),
            dirs: dir.map(|d| clonecloud_files::Root { host: d.to_path_buf(), guest: "/pre".into() }).into_iter().collect(),
            others: Vec::new(),
        };
        Box::new(Offloader::new(target, program.layout().clone(), vec!["f".into()], stats.clone())) as Box<dyn clonecloud_exec::Migrator>
    });
    let dirs = dir.map(|d| clonecloud_exec::DirMapping { host: d.to_path_buf(), guest: "/pre".into() }).into_iter().collect();
    let wasi = WasiConfig { stdio: Stdio::Null, dirs, ..WasiConfig::default() };
    let code = match program.run_with(&wasi, migrator).unwrap().outcome {
        Outcome::Exited(c) => c,
        other => panic!("{other:?}"),
    };
    let s = stats.lock().unwrap().clone();
    (code, s)
}

fn state(pages: Vec<(u32, Vec<u8>)>) -> State {
    State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages, xor: false } }
}

#[test]
fn answers_that_do_not_fit_are_not_believed() {
    let (want, _) = exit_code(None);
    assert_eq!(want, 7);
    let lies = [
        ("an i64 for an i32", Message::Return { id: 1, results: vec![Value::I64(5)], state: state(vec![]), micros: 0, output: vec![], files: vec![], exit: None, freed: 0, thrown: None, access: None }),
        ("the answer to a migration not sent", Message::Return { id: 2, results: vec![Value::I32(5)], state: state(vec![]), micros: 0, output: vec![], files: vec![], exit: None, freed: 0, thrown: None, access: None }),
        ("two results for one", Message::Return { id: 1, results: vec![Value::I32(5), Value::I32(6)], state: state(vec![]), micros: 0, output: vec![], files: vec![], exit: None, freed: 0, thrown: None, access: None }),
        ("a global the module lacks", Message::Return {
            id: 1,
            results: vec![Value::I32(5)],
            state: State { globals: vec![(99, Value::I32(1))], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![], xor: false } },
            micros: 0,
            output: vec![],
            files: vec![],
            exit: None,
            freed: 0,
            thrown: None,
            access: None,
        }),
        ("memory beyond the module's maximum", Message::Return {
            id: 1,
            results: vec![Value::I32(5)],
            state: State { globals: vec![], memory: PageDelta { wasm_pages: 65536, page_size: 4096, pages: vec![], xor: false } },
            micros: 0,
            output: vec![],
            files: vec![],
            exit: None,
            freed: 0,
            thrown: None,
            access: None,
        }),
        ("a file change in a directory the run does not have", Message::Return {
            id: 1,
            results: vec![Value::I32(5)],
            state: state(vec![]),
            micros: 0,
            output: vec![],
            files: vec![clonecloud_wire::FileOp::Create { root: 0, path: "planted".into() }],
            exit: None,
            freed: 0,
            thrown: None,
            access: None,
        }),
        ("an exception of a tag the module lacks", Message::Return {
            id: 1,
            results: vec![],
            state: state(vec![]),
            micros: 0,
            output: vec![],
            files: vec![],
            exit: None,
            freed: 0,
            thrown: Some(clonecloud_wire::Thrown { tag: 0, fields: vec![Value::I32(1)] }),
            access: None,
        }),
    ];
    for (what, lie) in lies {
        let (got, s) = exit_code(Some(lie));
        assert_eq!(got, want, "{what}: the plain run's exit code");
        assert_eq!((s.migrations, s.fallbacks.count), (0, 1), "{what}: {s:?}");
    }
}

/// Everything under `dir`, by path: content or link target.
fn tree(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                std::fs::read_link(&p).unwrap().to_string_lossy().into_owned().into_bytes()
            } else if m.is_dir() {
                stack.push(p.clone());
                b"<dir>".to_vec()
            } else {
                std::fs::read(&p).unwrap()
            };
            out.push((p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), what));
        }
    }
    out.sort();
    out
}

#[test]
fn a_lying_journal_changes_nothing_on_the_device() {
    let t = tempfile::tempdir().unwrap();
    let (pre, outside) = (t.path().join("pre"), t.path().join("outside"));
    std::fs::create_dir_all(&pre).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(pre.join("data"), b"original").unwrap();
    std::fs::write(outside.join("secret"), b"keep me").unwrap();
    std::os::unix::fs::symlink("../outside", pre.join("out")).unwrap();
    let before = tree(t.path());
    let (want, _) = exit_code_in(None, Some(&pre));
    assert_eq!(want, 7);
    assert_eq!(tree(t.path()), before, "the plain run changes no file");

    let write = |path: &str, data: &[u8]| clonecloud_wire::FileOp::Write { root: 0, path: path.into(), offset: 0, data: data.to_vec() };
    let answer = |files: Vec<clonecloud_wire::FileOp>, state: State| Message::Return { id: 1, results: vec![Value::I32(5)], state, micros: 0, output: vec![], files, exit: None, freed: 0, thrown: None, access: None };
    // An honest journal is merged: the lies below are refused for what they are, not because
    // journals never apply.
    let (got, s) = exit_code_in(Some(answer(vec![write("data", b"CHANGED!")], state(vec![]))), Some(&pre));
    assert_eq!((got, s.migrations), (5, 1), "{s:?}");
    assert_eq!(std::fs::read(pre.join("data")).unwrap(), b"CHANGED!");
    std::fs::write(pre.join("data"), b"original").unwrap();

    let lies = [
        ("a write through a link out of the preopen", answer(vec![write("data", b"CHANGED!"), write("out/secret", b"pwned")], state(vec![]))),
        ("a journal that fails halfway", answer(vec![write("data", b"CHANGED!"), clonecloud_wire::FileOp::Unlink { root: 0, path: "missing".into() }], state(vec![]))),
        ("files with memory beyond the module's maximum", answer(vec![write("data", b"CHANGED!")], State { globals: vec![], memory: PageDelta { wasm_pages: 3, page_size: 4096, pages: vec![], xor: false } })),
        ("files with a global the module lacks", answer(vec![write("data", b"CHANGED!")], State { globals: vec![(99, Value::I32(1))], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![], xor: false } })),
    ];
    for (what, lie) in lies {
        let (got, s) = exit_code_in(Some(lie), Some(&pre));
        assert_eq!(got, want, "{what}: the plain run's exit code");
        assert_eq!((s.migrations, s.fallbacks.count), (0, 1), "{what}: {s:?}");
        assert_eq!(tree(t.path()), before, "{what}: the device's files changed");
    }
}

/// Opens `/pre/data` (descriptor 4) before `f`, and after it reads a byte through that
/// descriptor and exits with it (101 if the read fails).
const READS_AFTER: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1 2)
  (data (i32.const 16) "data")
  (func $f (export "f") (result i32) (i32.const 7))
  (func (export "_start")
    (if (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 4) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 0))
      (then (call $exit (i32.const 100))))
    (drop (call $f))
    (i32.store (i32.const 32) (i32.const 64))
    (i32.store (i32.const 36) (i32.const 1))
    (if (call $read (i32.load (i32.const 0)) (i32.const 32) (i32.const 1) (i32.const 40))
      (then (call $exit (i32.const 101))))
    (call $exit (i32.load8_u (i32.const 64)))))"#;

/// A close cannot be undone on the device. A lying journal that closes a descriptor the
/// device holds and then fails (or whose descriptor changes do not fit the device's table)
/// leaves it open: the function runs locally and the program reads through it as a plain run.
#[test]
fn a_lying_journal_that_closes_a_descriptor_leaves_it_open() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("data"), b"original").unwrap();
    let (want, _) = exit_code_of(READS_AFTER, None, Some(t.path()));
    assert_eq!(want, i32::from(b'o'), "the plain run reads the file's first byte");

    use clonecloud_wire::{FdOp, FileOp};
    let answer = |files: Vec<FileOp>| Message::Return { id: 1, results: vec![Value::I32(5)], state: state(vec![]), micros: 0, output: vec![], files, exit: None, freed: 0, thrown: None, access: None };
    let open = |fd| FileOp::Fd(FdOp::Open { dirfd: 3, path: "data".into(), directory: false, rights: 2, fdflags: 0, fd });
    // An honest close is carried out: the read after it fails as it would.
    let (got, s) = exit_code_of(READS_AFTER, Some(answer(vec![FileOp::Fd(FdOp::Close { fd: 4 })])), Some(t.path()));
    assert_eq!((got, s.migrations), (101, 1), "{s:?}");

    let lies = [
        ("a close, then a change that fails", vec![FileOp::Fd(FdOp::Close { fd: 4 }), FileOp::Unlink { root: 0, path: "missing".into() }]),
        ("a renumbering, then a change that fails", vec![FileOp::Fd(FdOp::Renumber { from: 3, to: 4 }), FileOp::Unlink { root: 0, path: "missing".into() }]),
        ("a close, then an open the device would number otherwise", vec![FileOp::Fd(FdOp::Close { fd: 4 }), open(9)]),
        ("a close, then a seek of what it closed", vec![FileOp::Fd(FdOp::Close { fd: 4 }), FileOp::Fd(FdOp::Seek { fd: 4, offset: 1 })]),
        ("a close of a descriptor the device does not have, after a write", vec![FileOp::Write { root: 0, path: "data".into(), offset: 0, data: b"O".to_vec() }, FileOp::Fd(FdOp::Close { fd: 12 })]),
    ];
    for (what, lie) in lies {
        let (got, s) = exit_code_of(READS_AFTER, Some(answer(lie)), Some(t.path()));
        assert_eq!(got, want, "{what}: the plain run's exit code");
        assert_eq!((s.migrations, s.fallbacks.count), (0, 1), "{what}: {s:?}");
        assert_eq!(std::fs::read(t.path().join("data")).unwrap(), b"original", "{what}");
    }
}

/// `f` computes and never touches the device API; `g` (never migrated) takes a frame.
const CAMERA_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "clonecloud_device" "camera_frame" (func $cam (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1 2)
  (func $f (export "f") (result i32) (i32.const 7))
  (func $g (export "g") (result i32) (call $cam (i32.const 100) (i32.const 1000) (i32.const 0)))
  (func (export "_start") (call $exit (call $f))))"#;

#[test]
fn a_clone_cannot_ask_for_the_camera_in_a_call_that_never_uses_it() {
    // The clone answers `f`'s migration by asking the device for a frame (import 1,
    // `camera_frame`): the device refuses (`f` cannot reach it), sends nothing, and runs `f`.
    let wasm = wat::parse_str(CAMERA_WAT).unwrap();
    let camera = tempfile::tempdir().unwrap();
    std::fs::write(camera.path().join("frame.png"), b"a private picture").unwrap();
    let engine = new_engine(PointMode::Host).unwrap();
    let program = Program::prepare(&engine, &ModuleCache::disabled(), &wasm, &Points::Named(vec!["f".into()]), PointMode::Host).unwrap();
    let ask = Message::ImportCall { id: 1, import: 1, args: vec![Value::I32(100), Value::I32(1000), Value::I32(0)], state: state(vec![]) };
    let (addr, identity, server_key) = liar(ask);
    let target = Target {
        addr,
        server_key,
        identity,
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        compression: CompressionPolicy::Fixed(Compression::None),
        environment: Default::default(),
        dirs: Vec::new(),
        others: Vec::new(),
    };
    let stats = Arc::new(Mutex::new(Stats::default()));
    let mut offloader = Offloader::new(target, program.layout().clone(), vec!["f".into()], stats.clone());
    let model = clonecloud_model::Module::parse(&wasm).unwrap();
    let points: Vec<u32> = program.points().iter().map(|p| p.function).collect();
    let reach = clonecloud_offload::device_reach(&model, &points);
    assert_eq!(reach, [Vec::<String>::new()], "f reaches no device call");
    offloader.allow_device_calls(reach);
    let hardware = clonecloud_exec::hardware::HardwareConfig::load(Some(camera.path()), None).unwrap();
    let wasi = WasiConfig { stdio: Stdio::Null, hardware, ..WasiConfig::default() };
    let outcome = program.run_with(&wasi, Some(Box::new(offloader))).unwrap().outcome;
    assert!(matches!(outcome, Outcome::Exited(7)), "{outcome:?}");
    let s = stats.lock().unwrap().clone();
    assert_eq!((s.migrations, s.fallbacks.causes.get(&clonecloud_offload::Cause::Protocol)), (0, Some(&1)), "{s:?}");
    assert!(s.fallbacks.events[0].detail.contains("cannot reach"), "{s:?}");
    // `g` can reach it.
    let g = model.functions.iter().find(|f| f.name.as_deref() == Some("g")).map(|f| f.index).unwrap();
    assert_eq!(clonecloud_offload::device_reach(&model, &[g]), [vec!["camera_frame".to_string()]]);
}
