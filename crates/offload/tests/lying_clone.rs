//! A clone whose answer does not fit (results of the wrong type or number, a global the module
//! lacks, memory beyond the module's maximum) is not believed: nothing of it is merged, the device
//! runs the call itself, and the program ends as a plain run does. (A well-formed wrong answer is
//! not detectable: the clone is authenticated and trusted to compute.)

use clonecloud_exec::{ModuleCache, Outcome, PointMode, Points, Program, Stdio, WasiConfig, new_engine};
use clonecloud_net::{AllowList, Identity, Listener};
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

/// A server that speaks the protocol but answers every migration with `answer`.
fn liar(answer: Message) -> (String, Identity, clonecloud_net::PublicKey) {
    let server = Identity::generate().unwrap();
    let device = Identity::generate().unwrap();
    let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([device.public().clone()]), Duration::from_secs(10)).unwrap();
    let addr = listener.local_addr().to_string();
    std::thread::spawn(move || {
        let mut c = listener.incoming().unwrap().accept().unwrap();
        while let Ok(m) = c.recv() {
            let reply = match m {
                Message::Hello { .. } => Message::Welcome { need_module: false },
                Message::Migrate { .. } => answer.clone(),
                _ => continue,
            };
            if c.send(&reply).is_err() {
                return;
            }
        }
    });
    (addr, device, server.public().clone())
}

fn exit_code(answer: Option<Message>) -> (i32, Stats) {
    let wasm = wat::parse_str(WAT).unwrap();
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
            dirs: Vec::new(),
        };
        Box::new(Offloader::new(target, program.layout().clone(), vec!["f".into()], stats.clone())) as Box<dyn clonecloud_exec::Migrator>
    });
    let wasi = WasiConfig { stdio: Stdio::Null, ..WasiConfig::default() };
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
        ("an i64 for an i32", Message::Return { results: vec![Value::I64(5)], state: state(vec![]), micros: 0, output: vec![], files: vec![], exit: None, freed: 0 }),
        ("two results for one", Message::Return { results: vec![Value::I32(5), Value::I32(6)], state: state(vec![]), micros: 0, output: vec![], files: vec![], exit: None, freed: 0 }),
        ("a global the module lacks", Message::Return {
            results: vec![Value::I32(5)],
            state: State { globals: vec![(99, Value::I32(1))], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![], xor: false } },
            micros: 0,
            output: vec![],
            files: vec![],
            exit: None,
            freed: 0,
        }),
        ("memory beyond the module's maximum", Message::Return {
            results: vec![Value::I32(5)],
            state: State { globals: vec![], memory: PageDelta { wasm_pages: 65536, page_size: 4096, pages: vec![], xor: false } },
            micros: 0,
            output: vec![],
            files: vec![],
            exit: None,
            freed: 0,
        }),
        ("a file change in a directory the run does not have", Message::Return {
            results: vec![Value::I32(5)],
            state: state(vec![]),
            micros: 0,
            output: vec![],
            files: vec![clonecloud_wire::FileOp::Create { root: 0, path: "planted".into() }],
            exit: None,
            freed: 0,
        }),
    ];
    for (what, lie) in lies {
        let (got, s) = exit_code(Some(lie));
        assert_eq!(got, want, "{what}: the plain run's exit code");
        assert_eq!((s.migrations, s.fallbacks.count), (0, 1), "{what}: {s:?}");
    }
}
