//! Multi-threaded modules: wasi-threads (`wasm32-wasip1-threads`), run as `wasmtime run -S
//! threads` ran them (wasmtime 46 and before; wasmtime 47 dropped wasi-threads, so clonecloud
//! carries the host side itself, which is small).
//!
//! Such a module imports one shared memory (`env`.`memory`) and `wasi`.`thread-spawn`, and
//! exports `wasi_thread_start`. The main thread runs the command entry in an instance of its
//! own; each `thread-spawn(arg)` starts an OS thread with a fresh instance of the same module,
//! linked to the same shared memory, that calls `wasi_thread_start(tid, arg)`. Thread ids are
//! handed out in order from 1 (the proposal asks for unique ids in `1..2^29`; `-1` when they
//! run out or the OS refuses a thread).
//!
//! All threads share one WASI preview 1 context (descriptors, preopens, clocks), as wasi-common
//! did: the context is held by one thread at a time, taken when a WASI call needs it and given
//! back when that call returns to wasm (a store call hook). A relative sleep (one clock
//! subscription, what `thread::sleep` and `nanosleep` ask for, through preview 1's
//! `poll_oneoff`) does not hold it, so a sleeping
//! thread does not stall the others; a read of stdin that blocks does hold it, so other threads'
//! WASI calls wait for that input (a limit of this design).
//!
//! How the program ends, as in wasmtime: when the main thread's entry returns or it calls
//! `proc_exit`, that is the outcome ([`ThreadedProgram::run`] returns; threads still running are
//! not waited for, and the caller, a command-line tool, exits). A spawned thread that calls
//! `proc_exit(code)` or traps ends the whole program: the caller's [`ThreadEnd`] hook runs on
//! that thread and must not return (the command-line tool exits the process with `code`, or
//! with 1 after printing the trap, as wasmtime did).
//!
//! Not here: migration points. A threaded module is run as it is; offloading its threads is
//! another matter (the thread that migrates must leave the others running).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use clonecloud_model::{ImportKind, Module as Model};
use wasmtime::{Caller, Engine, Extern, Linker, Module, SharedMemory, Store};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::error::ExecError;
use crate::run::{Outcome, RUN_THREAD_STACK, new_wasi_ctx, outcome_of};
use crate::{ModuleCache, WasiConfig};

/// The export a spawned thread starts in: `wasi_thread_start(tid: i32, arg: i32)`.
const THREAD_START: &str = "wasi_thread_start";
/// The largest thread id the proposal allows, plus one.
const TID_LIMIT: i32 = 1 << 29;
/// A spawned thread's native stack: room for the engine's wasm stack limit (flag mode's, as the
/// device's) and the host's frames above it, as a process's main thread gets.
const SPAWNED_STACK: usize = 8 << 20;

/// Whether `model` is a wasi-threads module: it imports `wasi`.`thread-spawn`, or a shared
/// memory.
pub fn is_threaded(model: &Model) -> bool {
    model.imports.iter().any(|i| i.module == "wasi" && matches!(i.kind, ImportKind::Func { .. }) && is_spawn(&i.name))
        || model.memories.iter().any(|m| m.shared)
}

/// [`is_threaded`] from the module's import and memory sections alone (nothing after them is
/// read): what a launch asks before it models the module. A module that
/// does not parse is not threaded here (the model says what is wrong with it).
pub fn uses_threads(wasm: &[u8]) -> bool {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(wasmparser::Payload::ImportSection(reader)) => {
                let threads = reader.into_imports().any(|i| {
                    i.is_ok_and(|i| match i.ty {
                        wasmparser::TypeRef::Func(_) => i.module == "wasi" && is_spawn(i.name),
                        wasmparser::TypeRef::Memory(m) => m.shared,
                        _ => false,
                    })
                });
                if threads {
                    return true;
                }
            }
            Ok(wasmparser::Payload::MemorySection(reader)) => {
                return reader.into_iter().any(|m| m.is_ok_and(|m| m.shared));
            }
            Ok(wasmparser::Payload::CodeSectionStart { .. }) | Err(_) => return false,
            Ok(_) => {}
        }
    }
    false
}

fn is_spawn(name: &str) -> bool {
    // `thread-spawn` is the proposal's name; early toolchains used `thread_spawn`.
    name == "thread-spawn" || name == "thread_spawn"
}

/// The engine threaded modules run on: the device's (Cranelift, wasmtime's defaults) with the
/// threads proposal and shared memories on.
pub fn new_threads_engine() -> Result<Engine, ExecError> {
    let mut config = crate::run::base_config(crate::PointMode::Flag, false);
    config.wasm_threads(true).shared_memory(true);
    Engine::new(&config).map_err(ExecError::Engine)
}

/// What ended a spawned thread, and so the program: its `proc_exit(code)`, or a trap (the
/// message says which thread and why).
#[derive(Debug)]
pub enum ThreadEnd {
    /// The thread called `proc_exit` with this code.
    Exited(i32),
    /// The thread trapped, or failed to start.
    Failed(String),
}

/// What runs on a spawned thread that ends the program; it must not return (a command-line
/// tool exits the process).
pub type EndHook = fn(ThreadEnd) -> !;

/// A compiled wasi-threads module, ready to run.
#[derive(Clone)]
pub struct ThreadedProgram {
    engine: Engine,
    module: Module,
}

impl std::fmt::Debug for ThreadedProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadedProgram").finish_non_exhaustive()
    }
}

impl ThreadedProgram {
    /// Checks that `wasm` is a wasi-threads command module clonecloud can run (WASI preview 1
    /// imports, `thread-spawn`, and one shared memory import) and compiles it (or loads it from
    /// `cache`) on `engine` (see [`new_threads_engine`]).
    pub fn prepare(engine: &Engine, cache: &ModuleCache, wasm: &[u8]) -> Result<ThreadedProgram, ExecError> {
        let model = Model::parse_without_call_graph(wasm)?;
        let other = model.imports.iter().find(|i| {
            let wasi = i.class == clonecloud_model::ImportClass::Wasi;
            let spawn = i.module == "wasi" && is_spawn(&i.name) && matches!(i.kind, ImportKind::Func { .. });
            let memory = matches!(i.kind, ImportKind::Memory) && model.memories.iter().any(|m| m.imported && m.shared);
            !(wasi || spawn || memory)
        });
        if let Some(i) = other {
            return Err(ExecError::UnsupportedImport {
                module: i.module.clone(),
                name: i.name.clone(),
                kind: crate::run::import_kind(&i.kind),
            });
        }
        // One memory, imported, shared, exported as `memory` (where WASI reads and writes).
        let memory = match model.memories.as_slice() {
            [m] if m.imported && m.shared => m,
            _ => {
                return Err(ExecError::Threads(format!(
                    "a wasi-threads module imports one shared memory and defines none (threads share it); this one has {} memories, {} of them imported and shared",
                    model.memories.len(),
                    model.memories.iter().filter(|m| m.imported && m.shared).count()
                )));
            }
        };
        if memory.memory64 || memory.page_size != 65536 {
            return Err(ExecError::Threads("the shared memory is 64-bit or has custom pages, which clonecloud's threads do not run".into()));
        }
        let exported = model.exports.iter().any(|e| e.name == "memory" && e.kind == clonecloud_model::ExportKind::Memory && e.index == memory.index);
        if !exported {
            return Err(ExecError::Threads(
                "the module does not export its shared memory as `memory`, where WASI calls read and write (link with --export-memory)".into(),
            ));
        }
        let module = cache.load_or_compile(engine, wasm)?;
        Ok(ThreadedProgram { engine: engine.clone(), module })
    }

    /// Runs the command entry on this thread (with a stack the engine's limit fits in) to its
    /// outcome; `end` is what a spawned thread that exits or traps runs.
    pub fn run(&self, wasi: &WasiConfig, end: EndHook) -> Result<Outcome, ExecError> {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("guest".into())
                .stack_size(RUN_THREAD_STACK)
                .spawn_scoped(s, || self.run_here(wasi, end))
                .map_err(|e| ExecError::Runtime(wasmtime::Error::msg(format!("cannot start the guest thread: {e}"))))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn run_here(&self, wasi: &WasiConfig, end: EndHook) -> Result<Outcome, ExecError> {
        let ctx = new_wasi_ctx(wasi, None, std::time::Instant::now())?;
        let memory_import = self
            .module
            .imports()
            .find_map(|i| match i.ty() {
                wasmtime::ExternType::Memory(m) => Some((i.module().to_string(), i.name().to_string(), m)),
                _ => None,
            })
            .expect("prepare checked the memory import");
        let (memory_module, memory_name, memory_ty) = memory_import;
        let forwarder = FORWARDER
            .replace("{MIN}", &memory_ty.minimum().to_string())
            .replace("{MAX}", &memory_ty.maximum().expect("a shared memory has a maximum").to_string());
        let forwarder = Module::new(&self.engine, forwarder).map_err(ExecError::Compile)?;
        let memory = SharedMemory::new(&self.engine, memory_ty).map_err(ExecError::Runtime)?;
        let shared = Arc::new(Shared {
            wasi: Baton::new(ctx),
            next_tid: AtomicI32::new(1),
            module: self.module.clone(),
            linker: std::sync::OnceLock::new(),
            forwarder,
            forwarder_linker: std::sync::OnceLock::new(),
            end,
            can_spawn: self.module.get_export(THREAD_START).and_then(|e| e.func().cloned()).is_some_and(|f| {
                f.params().map(|p| p.is_i32()).eq([true, true]) && f.results().len() == 0
            }),
        });
        let mut forwarder_linker: Linker<Host> = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut forwarder_linker, Host::wasi).map_err(ExecError::Runtime)?;
        let mut linker: Linker<Host> = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, Host::wasi).map_err(ExecError::Runtime)?;
        wasmtime_wasi::p0::add_to_linker_sync(&mut linker, Host::wasi).map_err(ExecError::Runtime)?;
        linker.allow_shadowing(true);
        // Calls that need nothing of the context are answered without it, as wasmtime-wasi
        // answers them: a thread may exit, or yield, while another holds the context (blocked
        // reading stdin, say).
        for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
            linker.func_wrap(module, "proc_exit", proc_exit).map_err(ExecError::Runtime)?;
            linker.func_wrap(module, "sched_yield", || 0i32).map_err(ExecError::Runtime)?;
        }
        // Preview 1's only: `wasi_unstable` lays its subscriptions out otherwise, and its polls
        // (rare) hold the context.
        linker.func_wrap("wasi_snapshot_preview1", "poll_oneoff", poll_oneoff).map_err(ExecError::Runtime)?;
        linker.allow_shadowing(false);
        for name in ["thread-spawn", "thread_spawn"] {
            linker.func_wrap("wasi", name, thread_spawn).map_err(ExecError::Runtime)?;
        }
        let mut store = new_store(&self.engine, Host::new(shared.clone()));
        linker
            .define(&store, &memory_module, &memory_name, Extern::SharedMemory(memory.clone()))
            .map_err(ExecError::Runtime)?;
        forwarder_linker.define(&store, "env", "memory", Extern::SharedMemory(memory)).map_err(ExecError::Runtime)?;
        let linker = shared.linker.get_or_init(|| linker);
        shared.forwarder_linker.get_or_init(|| forwarder_linker);

        let instance = match linker.instantiate(&mut store, &self.module) {
            Ok(instance) => instance,
            Err(e) => return outcome_of(e),
        };
        let Some(entry) = ["", "_start"].into_iter().find_map(|n| instance.get_func(&mut store, n).map(|f| (n, f))) else {
            return Ok(Outcome::Exited(0));
        };
        let (name, entry) = entry;
        let entry = entry.typed::<(), ()>(&store).map_err(|_| ExecError::BadEntry { name: name.to_string() })?;
        match entry.call(&mut store, ()) {
            Ok(()) => Ok(Outcome::Exited(0)),
            Err(e) => outcome_of(e),
        }
    }
}

/// What the threads of one run share.
struct Shared {
    wasi: Baton<WasiP1Ctx>,
    next_tid: AtomicI32,
    module: Module,
    /// The linker every thread instantiates the module with (the shared memory defined in it).
    linker: std::sync::OnceLock<Linker<Host>>,
    /// The [`FORWARDER`] module and the linker it is instantiated with (wasmtime-wasi's own
    /// `poll_oneoff`, and the shared memory).
    forwarder: Module,
    forwarder_linker: std::sync::OnceLock<Linker<Host>>,
    end: EndHook,
    /// Whether the module exports the function a thread starts in.
    can_spawn: bool,
}

/// A thread's store data: the run's shared part, and whether this thread holds the WASI
/// context now.
struct Host {
    shared: Arc<Shared>,
    holding: bool,
    /// The forwarder's `poll_oneoff` in this thread's store, once instantiated.
    forwarder: Option<wasmtime::TypedFunc<(i32, i32, i32, i32), i32>>,
}

impl Host {
    fn new(shared: Arc<Shared>) -> Host {
        Host { shared, holding: false, forwarder: None }
    }
}

impl Host {
    /// The WASI context, taken for this thread until its current host call returns.
    fn wasi(&mut self) -> &mut WasiP1Ctx {
        if !self.holding {
            self.shared.wasi.take();
            self.holding = true;
        }
        // SAFETY: this thread holds the baton (taken above, or earlier in the same host call),
        // and gives it back only when the host call that asked returns to wasm (the call hook
        // in `new_store`), after which the reference is no longer used: wasmtime-wasi uses what
        // this returns only inside the host call.
        unsafe { self.shared.wasi.get() }
    }
}

impl Drop for Host {
    /// A thread whose host call panicked (the call hook that gives the context back never ran)
    /// still gives it back when its store goes.
    fn drop(&mut self) {
        if std::mem::take(&mut self.holding) {
            self.shared.wasi.give_back();
        }
    }
}

fn new_store(engine: &Engine, host: Host) -> Store<Host> {
    let mut store = Store::new(engine, host);
    store.call_hook(|mut cx, hook| {
        if matches!(hook, wasmtime::CallHook::ReturningFromHost) {
            let host = cx.data_mut();
            if host.holding {
                host.holding = false;
                host.shared.wasi.give_back();
            }
        }
        Ok(())
    });
    store
}

/// A value one thread at a time may use, passed from thread to thread without a guard object
/// (the holder is known by a flag in its store: see [`Host::wasi`]).
struct Baton<T> {
    busy: Mutex<bool>,
    free: Condvar,
    value: std::cell::UnsafeCell<T>,
}

// SAFETY: access to `value` is serialized by `busy` (see `take`, `get`, `give_back`), and `T`
// moves between threads only as a whole (`Send`).
unsafe impl<T: Send> Sync for Baton<T> {}
unsafe impl<T: Send> Send for Baton<T> {}

impl<T> Baton<T> {
    fn new(value: T) -> Baton<T> {
        Baton { busy: Mutex::new(false), free: Condvar::new(), value: std::cell::UnsafeCell::new(value) }
    }

    /// Waits until no thread holds the value, then holds it.
    fn take(&self) {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        while *busy {
            busy = self.free.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy = true;
    }

    /// # Safety
    /// The calling thread holds the baton ([`Baton::take`]) and drops the reference before
    /// [`Baton::give_back`].
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self) -> &mut T {
        unsafe { &mut *self.value.get() }
    }

    fn give_back(&self) {
        *self.busy.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.free.notify_one();
    }
}

/// `wasi`.`thread-spawn(arg) -> tid`: starts a thread running `wasi_thread_start(tid, arg)` in a
/// new instance; a negative result when none can be started.
fn thread_spawn(caller: Caller<'_, Host>, arg: i32) -> i32 {
    let shared = caller.data().shared.clone();
    if !shared.can_spawn {
        // As wasmtime did: no thread is started, and the guest is told so.
        return -1;
    }
    let Ok(tid) = shared.next_tid.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| (t < TID_LIMIT).then_some(t + 1)) else {
        return -1;
    };
    let host = Host::new(shared.clone());
    let engine = caller.engine().clone();
    let started = std::thread::Builder::new()
        .name(format!("wasi-thread-{tid}"))
        .stack_size(SPAWNED_STACK)
        .spawn(move || {
            let end = host.shared.end;
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_thread(&engine, host, tid, arg)));
            if ran.is_err() {
                end(ThreadEnd::Failed(format!("wasi-thread-{tid} panicked")));
            }
        });
    match started {
        Ok(_) => tid,
        Err(e) => {
            tracing::warn!("cannot start thread {tid}: {e}");
            -1
        }
    }
}

fn run_thread(engine: &Engine, host: Host, tid: i32, arg: i32) {
    let shared = host.shared.clone();
    let linker = shared.linker.get().expect("the linker is set before the main instance runs");
    let mut store = new_store(engine, host);
    let fail = |why: String| -> ! { (shared.end)(ThreadEnd::Failed(format!("wasi-thread-{tid} exited unsuccessfully: {why}"))) };
    let instance = match linker.instantiate(&mut store, &shared.module) {
        Ok(i) => i,
        Err(e) => fail(format!("cannot instantiate the module: {e:#}")),
    };
    let Ok(start) = instance.get_typed_func::<(i32, i32), ()>(&mut store, THREAD_START) else {
        fail(format!("the module has no `{THREAD_START}(i32, i32)` export to start the thread in"))
    };
    if let Err(e) = start.call(&mut store, (tid, arg)) {
        match outcome_of(e) {
            Ok(Outcome::Exited(code)) => (shared.end)(ThreadEnd::Exited(code)),
            Ok(Outcome::Trapped { trap, .. }) => fail(format!("{trap}")),
            Err(e) => fail(format!("{e:#}")),
        }
    }
}

/// `poll_oneoff`: a relative sleep (one clock subscription, realtime or monotonic, what
/// `thread::sleep` and `nanosleep` ask for) sleeps without holding the WASI context, and
/// writes the event wasmtime-wasi writes; anything else is wasmtime-wasi's, under the context,
/// called through the thread's forwarder instance (see [`FORWARDER`]).
fn poll_oneoff(mut caller: Caller<'_, Host>, subs: i32, events: i32, n: i32, nevents: i32) -> wasmtime::Result<i32> {
    if n == 1
        && let Some(Extern::SharedMemory(m)) = caller.get_export("memory")
        && let Some(sleep) = relative_sleep(&m, subs as u32, events as u32, nevents as u32)
    {
        std::thread::sleep(sleep);
        return Ok(0);
    }
    let forward = match caller.data().forwarder.clone() {
        Some(f) => f,
        None => {
            let shared = caller.data().shared.clone();
            let instance = shared.forwarder_linker.get().expect("set before the main instance runs").instantiate(&mut caller, &shared.forwarder)?;
            let f = instance.get_typed_func::<(i32, i32, i32, i32), i32>(&mut caller, "poll_oneoff")?;
            caller.data_mut().forwarder = Some(f.clone());
            f
        }
    };
    // The forwarded call takes the context and gives it back when it returns here: this call
    // must not hold it (it would be given back under it).
    debug_assert!(!caller.data().holding);
    forward.call(&mut caller, (subs, events, n, nevents))
}

/// `proc_exit(status)`, as wasmtime-wasi: the guest's exit with `status`, which must be below
/// 126.
fn proc_exit(_: Caller<'_, Host>, status: i32) -> wasmtime::Result<()> {
    if status as u32 >= 126 {
        return Err(wasmtime::Error::msg("exit with invalid exit status outside of [0..126)"));
    }
    Err(wasmtime_wasi::I32Exit(status).into())
}

/// If the one subscription at `subs` is a relative clock (realtime or monotonic) and the event
/// and count fit where they go (in bounds, aligned: otherwise wasmtime-wasi answers, with its
/// error), writes the clock's event (`userdata`, no error, type clock, no bytes) and a count of
/// 1, and gives the time to sleep.
fn relative_sleep(memory: &SharedMemory, subs: u32, events: u32, nevents: u32) -> Option<std::time::Duration> {
    const SUB: usize = 48;
    const EVENT: usize = 32;
    let data = memory.data();
    let fits = |at: u32, len: usize, align: u32| at.is_multiple_of(align) && (at as usize).checked_add(len).is_some_and(|end| end <= data.len());
    if !(fits(subs, SUB, 8) && fits(events, EVENT, 8) && fits(nevents, 4, 4)) {
        return None;
    }
    let read = |at: usize, len: usize| -> Vec<u8> { data[at..at + len].iter().map(|c| unsafe { *c.get() }).collect() };
    let sub = read(subs as usize, SUB);
    let u64_at = |o: usize| u64::from_le_bytes(sub[o..o + 8].try_into().expect("8 bytes"));
    let (tag, clock, timeout, flags) = (sub[8], u32::from_le_bytes(sub[16..20].try_into().expect("4 bytes")), u64_at(24), u16::from_le_bytes([sub[40], sub[41]]));
    // Tag 0: a clock; clocks 0 and 1: realtime and monotonic; no flags (1 is an absolute time,
    // others are invalid: wasmtime-wasi answers those).
    if tag != 0 || clock > 1 || flags != 0 {
        return None;
    }
    let write = |at: usize, bytes: &[u8]| {
        for (cell, b) in data[at..at + bytes.len()].iter().zip(bytes) {
            // SAFETY: in bounds (checked above); a shared memory's bytes are written racily by
            // design, as wasm's own plain stores are.
            unsafe { *cell.get() = *b };
        }
    };
    // The fields wasmtime-wasi writes (its padding bytes it leaves): userdata, error 0, type
    // clock (0), and an empty fd_readwrite (nbytes 0, flags 0).
    let at = events as usize;
    write(at, &sub[..8]);
    write(at + 8, &0u16.to_le_bytes());
    write(at + 10, &[0]);
    write(at + 16, &0u64.to_le_bytes());
    write(at + 24, &0u16.to_le_bytes());
    write(nevents as usize, &1u32.to_le_bytes());
    Some(std::time::Duration::from_nanos(timeout))
}

/// A module instantiated in a thread's store on its first `poll_oneoff` that is not a relative
/// sleep: it imports the shared memory and wasmtime-wasi's `poll_oneoff`, exports the memory
/// (which wasmtime-wasi reads the guest's structures from) and a function that calls it. The
/// limits of the memory are the guest's (`{MIN}`, `{MAX}`).
const FORWARDER: &str = r#"(module
  (import "env" "memory" (memory {MIN} {MAX} shared))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (export "memory" (memory 0))
  (func (export "poll_oneoff") (param i32 i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 call $poll))"#;
