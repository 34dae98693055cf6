//! The independent oracle of the differential tests: a module run through the plain wasmtime
//! API and wasmtime-wasi, with nothing of clonecloud, one directory preopened at `/data`
//! ([`run_plain`]) or any directories ([`run_with_dirs`]).

use std::path::Path;

use wasmtime::{Engine, Linker, Module, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// What plain wasmtime did: output, and the exit code as `clonecloud run` gives it.
pub struct Plain {
    pub stdout: Vec<u8>,
    /// The guest's stderr, followed on a trap by the line `clonecloud run` promises to print.
    pub stderr: String,
    /// The guest's exit code; 134 on a trap.
    pub exit: i32,
}

/// Runs `module` with `argv` (argv[0] included) and `env`, `data` preopened read-write at
/// `/data`, stdin empty.
pub fn run_plain(module: &Path, argv: &[String], env: &[(String, String)], data: &Path) -> Plain {
    run_with_dirs(module, argv, env, &[(data, "/data")])
}

/// Runs `module` with `argv` (argv[0] included) and `env`, each `(host, guest)` of `dirs`
/// preopened read-write under `guest`, in that order (file descriptors 3, 4, ...), stdin empty.
pub fn run_with_dirs(module: &Path, argv: &[String], env: &[(String, String)], dirs: &[(&Path, &str)]) -> Plain {
    let engine = Engine::default();
    let compiled = Module::from_file(&engine, module).unwrap();
    let stdout = MemoryOutputPipe::new(64 << 20);
    let stderr = MemoryOutputPipe::new(64 << 20);
    let mut builder = WasiCtxBuilder::new();
    builder.stdout(stdout.clone()).stderr(stderr.clone()).args(argv).envs(env);
    for (host, guest) in dirs {
        builder.preopened_dir(host, guest, FsPerms::ReadWrite).unwrap();
    }
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |cx| cx).unwrap();
    // `wasi_unstable`, as `wasmtime run` links it too.
    wasmtime_wasi::p0::add_to_linker_sync(&mut linker, |cx| cx).unwrap();
    let mut store = Store::new(&engine, builder.build_p1());
    let result = linker.instantiate(&mut store, &compiled).and_then(|instance| match instance.get_typed_func::<(), ()>(&mut store, "_start") {
        Ok(start) => start.call(&mut store, ()),
        Err(_) => Ok(()),
    });
    let mut stderr_text = String::from_utf8_lossy(&stderr.contents()).into_owned();
    let exit = match result {
        Ok(()) => 0,
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                exit.0
            } else {
                let trap = e.downcast_ref::<Trap>().unwrap_or_else(|| panic!("{}: {e:?}", module.display()));
                // What `clonecloud run` promises to print after the guest's own stderr.
                stderr_text.push_str(&format!("Error: failed to run main module `{}`: {trap}\n", module.display()));
                134
            }
        }
    };
    // The store holds the preopened directory: closed before the caller looks at it.
    drop(store);
    Plain { stdout: stdout.contents().to_vec(), stderr: stderr_text, exit }
}
