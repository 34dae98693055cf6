//! The delta applier: any memory size, pages and globals either apply exactly (copied, or XORed
//! into what was agreed) or are refused with the instance untouched.
//!
//! Shared by the fuzz target of the same name (fuzz/fuzz_targets/) and by the replay of its kept
//! corpus under `cargo test` (crates/cli/tests/fuzz_corpus.rs).

use arbitrary::{Arbitrary, Unstructured};
use clonecloud_exec::state::{PAGE_SIZE, StateHandles};
use std::sync::OnceLock;
use wasmtime::{Engine, Instance, Module, Store, Val};

const WAT: &str = r#"(module
  (memory (export "m") 1 8)
  (global (export "g0") (mut i32) (i32.const 7))
  (global (export "g1") (mut i64) (i64.const -1))
  (data (i32.const 100) "agreed state"))"#;

fn module() -> &'static (Engine, Module) {
    static M: OnceLock<(Engine, Module)> = OnceLock::new();
    M.get_or_init(|| {
        let engine = Engine::default();
        let module = Module::new(&engine, WAT).expect("the test module compiles");
        (engine, module)
    })
}

#[derive(Debug, Arbitrary)]
enum V {
    I32(i32),
    I64(i64),
    F32(u32),
}

#[derive(Debug, Arbitrary)]
struct Delta {
    wasm_pages: u8,
    xor: bool,
    pages: Vec<(u8, u16, u8, bool)>,
    globals: Vec<(u8, V)>,
}

/// One input: panics (the fuzzer's crash) when the property does not hold.
pub fn check(data: &[u8]) {
    let Ok(delta) = Delta::arbitrary(&mut Unstructured::new(data)) else { return };
    let (engine, module) = module();
    let mut store = Store::new(engine, ());
    let instance = Instance::new(&mut store, module, &[]).expect("instantiates");
    let handles = StateHandles::resolve(Some("m"), &[(0, "g0".into()), (1, "g1".into())], |n| instance.get_export(&mut store, n));
    // Pages: an index, a length (mostly a whole page), a fill byte.
    let pages: Vec<(u32, Vec<u8>)> = delta
        .pages
        .iter()
        .take(16)
        .map(|&(i, len, fill, whole)| (u32::from(i), vec![fill; if whole { PAGE_SIZE } else { usize::from(len) }]))
        .collect();
    let globals: Vec<(u32, Val)> = delta
        .globals
        .iter()
        .take(4)
        .map(|(g, v)| {
            let v = match v {
                V::I32(x) => Val::I32(*x),
                V::I64(x) => Val::I64(*x),
                V::F32(x) => Val::F32(*x),
            };
            (u32::from(*g % 3), v)
        })
        .collect();
    let before = handles.memory_bytes(&store).to_vec();
    let globals_before = handles.globals(&mut store);
    match handles.apply(&mut store, u32::from(delta.wasm_pages), &pages, delta.xor, &globals) {
        Err(_) => {
            assert_eq!(handles.memory_bytes(&store), &before[..], "a refused delta changed memory");
            let after = handles.globals(&mut store);
            for ((_, a), (_, b)) in after.iter().zip(&globals_before) {
                assert_eq!(a.unwrap_i64_or_i32(), b.unwrap_i64_or_i32(), "a refused delta changed a global");
            }
        }
        Ok(()) => {
            let mem = handles.memory_bytes(&store);
            assert!(mem.len() >= before.len() && mem.len() >= usize::from(delta.wasm_pages) * 65536);
            // The last write to each page wins (later pages with the same index overwrite).
            let mut expect = before.clone();
            expect.resize(mem.len(), 0);
            for (i, p) in &pages {
                let at = *i as usize * PAGE_SIZE;
                let dst = &mut expect[at..at + PAGE_SIZE];
                if delta.xor {
                    dst.iter_mut().zip(p).for_each(|(d, x)| *d ^= x);
                } else {
                    dst.copy_from_slice(p);
                }
            }
            assert_eq!(mem, &expect[..], "applied pages differ");
        }
    }
}

trait Int {
    fn unwrap_i64_or_i32(&self) -> i64;
}

impl Int for Val {
    fn unwrap_i64_or_i32(&self) -> i64 {
        match self {
            Val::I32(x) => i64::from(*x),
            Val::I64(x) => *x,
            _ => i64::MIN,
        }
    }
}
