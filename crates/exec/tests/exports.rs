//! The state exports the rewriter adds work on a real instance, as the clone will use them:
//! trampolines reach the real WASI import, memory and globals are readable and writable, and a
//! flag set from outside sends the next call to the migration import.

use std::sync::{Arc, Mutex};

use clonecloud_model::{Module as Model, rewrite};
use wasmtime::{Engine, Linker, Module, Store, Val};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

const GUEST: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (global $counter (mut i64) (i64.const 40))
    (global $const i32 (i32.const 1))
    (func $bump (export "bump") (param i64) (result i64)
        (global.set $counter (i64.add (global.get $counter) (local.get 0)))
        (global.get $counter)))"#;

struct Host {
    wasi: WasiP1Ctx,
    migrated: Arc<Mutex<Vec<i64>>>,
}

#[test]
fn trampolines_memory_globals_and_flags() {
    let wasm = wat::parse_str(GUEST).unwrap();
    let model = Model::parse(&wasm).unwrap();
    let bump = model.resolve_points(&["bump".into()]).unwrap();
    let out = rewrite(&model, &wasm, &bump).unwrap();
    assert_eq!(out.trampolines, [(0, "__cc_import.0".to_string())]);
    assert_eq!(
        out.globals,
        [(0, "__cc_global.0".to_string())],
        "only the mutable global"
    );

    let engine = Engine::default();
    let module = Module::new(&engine, &out.wasm).unwrap();
    let stdout = MemoryOutputPipe::new(1 << 16);
    let migrated = Arc::new(Mutex::new(Vec::new()));
    let mut linker: Linker<Host> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut Host| &mut h.wasi).unwrap();
    // One migration import for the point's type, its ordinal as the last argument.
    assert_eq!(out.migrate_imports.len(), 1);
    linker
        .func_wrap(
            "clonecloud",
            &out.migrate_imports[0].1,
            |caller: wasmtime::Caller<'_, Host>, x: i64, j: i32| {
                assert_eq!(j, 0, "the point's ordinal");
                caller.data().migrated.lock().unwrap().push(x);
                -1i64
            },
        )
        .unwrap();
    let host = Host {
        wasi: WasiCtxBuilder::new().stdout(stdout.clone()).build_p1(),
        migrated: migrated.clone(),
    };
    let mut store = Store::new(&engine, host);
    let instance = linker.instantiate(&mut store, &module).unwrap();

    // Memory through its reserved export; fd_write through the trampoline.
    let memory = instance.get_memory(&mut store, "__cc_memory.0").unwrap();
    memory
        .write(&mut store, 100, b"through the trampoline\n")
        .unwrap();
    memory.write(&mut store, 0, &100u32.to_le_bytes()).unwrap();
    memory.write(&mut store, 4, &23u32.to_le_bytes()).unwrap();
    let fd_write = instance
        .get_typed_func::<(i32, i32, i32, i32), i32>(&mut store, "__cc_import.0")
        .unwrap();
    assert_eq!(
        fd_write.call(&mut store, (1, 0, 1, 8)).unwrap(),
        0,
        "errno 0"
    );
    assert_eq!(&stdout.contents()[..], b"through the trampoline\n");

    // Flag clear: the original body runs and changes the global, seen through its export.
    let bump = instance
        .get_typed_func::<i64, i64>(&mut store, "bump")
        .unwrap();
    assert_eq!(bump.call(&mut store, 2).unwrap(), 42);
    let counter = instance.get_global(&mut store, "__cc_global.0").unwrap();
    assert_eq!(counter.get(&mut store).i64(), Some(42));
    counter.set(&mut store, Val::I64(100)).unwrap();
    assert_eq!(
        bump.call(&mut store, 1).unwrap(),
        101,
        "a global set from outside is seen"
    );

    // Flag set (byte 0 of the flag memory): the call goes to the migration import, the body
    // does not run.
    let flags = instance
        .get_memory(&mut store, clonecloud_model::FLAGS_EXPORT)
        .unwrap();
    flags.data_mut(&mut store)[out.points[0].ordinal as usize] = 1;
    assert_eq!(bump.call(&mut store, 5).unwrap(), -1);
    assert_eq!(*migrated.lock().unwrap(), [5]);
    assert_eq!(counter.get(&mut store).i64(), Some(101));
    // And the code stays callable: element 0 of the table of points, with the bypass global set
    // to the ordinal + 1 (the check clears it; without it the call asks the host again).
    let table = instance
        .get_table(&mut store, clonecloud_model::LOCALS_EXPORT)
        .unwrap();
    let local = *table
        .get(&mut store, 0)
        .unwrap()
        .as_func()
        .unwrap()
        .unwrap();
    let local = local.typed::<i64, i64>(&store).unwrap();
    assert_eq!(local.call(&mut store, 9).unwrap(), -1);
    assert_eq!(*migrated.lock().unwrap(), [5, 9]);
    let bypass = instance
        .get_global(&mut store, clonecloud_model::BYPASS_EXPORT)
        .unwrap();
    bypass.set(&mut store, Val::I32(1)).unwrap();
    assert_eq!(local.call(&mut store, 9).unwrap(), 110);
    assert_eq!(bypass.get(&mut store).i32(), Some(0), "the check clears it");
    assert_eq!(counter.get(&mut store).i64(), Some(110));
    // Cleared, the next call asks the host again.
    assert_eq!(bump.call(&mut store, 3).unwrap(), -1);
    assert_eq!(*migrated.lock().unwrap(), [5, 9, 3]);
}
