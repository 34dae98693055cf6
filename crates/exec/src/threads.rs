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
//! A threaded module runs as a [`crate::Program`] like any other (`Program::prepare` sees the
//! shared memory; an engine from [`new_threads_engine_with`]): each thread has a store of its
//! own, with the migration points, the [`crate::Migrator`] its thread gets
//! (`Migrator::for_thread`) and the descriptor tool. A program with points rewrites its waits
//! into host calls (`clonecloud.wait32/64`) and runs with safe points: a [`World`] that a
//! merge stops, every thread at a function entry, a loop header or the return from a host call.
//!
//! How the program ends, as in wasmtime: when the main thread's entry returns or it calls
//! `proc_exit`, that is the outcome (`Program::run_threads` returns; threads still running are
//! not waited for, and the caller, a command-line tool, exits). A spawned thread that calls
//! `proc_exit(code)` or traps ends the whole program: the caller's [`ThreadEnd`] hook runs on
//! that thread and must not return (the command-line tool exits the process with `code`, or
//! with 1 after printing the trap, as wasmtime did).
//!
//! Not here: how a migrated call's answer is checked and merged ([`crate::merge`]), the
//! offloading itself.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use clonecloud_model::{ImportKind, Module as Model};
use wasmtime::{Caller, Engine, Extern, Linker, Module, SharedMemory};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::error::ExecError;
use crate::run::{Device, Outcome, RUN_THREAD_STACK, outcome_of};

/// The export a spawned thread starts in: `wasi_thread_start(tid: i32, arg: i32)`.
const THREAD_START: &str = "wasi_thread_start";
/// The largest thread id the proposal allows, plus one.
const TID_LIMIT: i32 = 1 << 29;

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

/// The engine threaded modules without migration points run on: the device's (Cranelift,
/// wasmtime's defaults) with the threads proposal and shared memories on.
pub fn new_threads_engine() -> Result<Engine, ExecError> {
    new_threads_engine_with(crate::PointMode::Flag, false)
}

/// The engine threaded modules run on, for `mode`; with `epochs`, with epoch interruption: at
/// its checks a thread stops when a migrated call merges (a program with migration points: see
/// [`World`]) and a paced thread sleeps ([`crate::Pace`]).
pub fn new_threads_engine_with(mode: crate::PointMode, epochs: bool) -> Result<Engine, ExecError> {
    let mut config = crate::run::base_config(mode, epochs);
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

/// The [`EndHook`] of a command-line tool, as `wasmtime run` ends: stdout flushed, the process
/// exits with the thread's code, or with 1 after printing why the thread failed.
pub fn exit_process(end: ThreadEnd) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    match end {
        ThreadEnd::Exited(code) => std::process::exit(code),
        ThreadEnd::Failed(why) => {
            eprintln!("Error: {why}");
            std::process::exit(1)
        }
    }
}

/// Checks that a wasi-threads module is one clonecloud can run: its imports are WASI preview 1,
/// `thread-spawn` and one shared memory, which it defines no other memory beside and exports as
/// `memory` (where WASI reads and writes), 32-bit with 64 KiB pages.
pub(crate) fn check(model: &Model) -> Result<(), ExecError> {
    let other = model.imports.iter().find(|i| {
        let wasi = matches!(i.class, clonecloud_model::ImportClass::Wasi | clonecloud_model::ImportClass::Device);
        let spawn = i.module == "wasi" && is_spawn(&i.name) && matches!(i.kind, ImportKind::Func { .. });
        let memory = matches!(i.kind, ImportKind::Memory) && model.memories.iter().any(|m| m.imported && m.shared);
        !(wasi || spawn || memory)
    });
    if let Some(i) = other {
        return Err(ExecError::UnsupportedImport { module: i.module.clone(), name: i.name.clone(), kind: crate::run::import_kind(&i.kind) });
    }
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
    Ok(())
}

/// What the threads of one run share: the WASI context (a [`Baton`]), the memory, the means to
/// start a thread like the main one, and the [`World`] that stops them all.
pub(crate) struct Threads {
    pub(crate) wasi: Baton<WasiP1Ctx>,
    pub(crate) world: World,
    pub(crate) memory: SharedMemory,
    /// Where the module imports the memory from.
    memory_import: (String, String),
    next_tid: AtomicI32,
    /// What a spawned thread's store is made from.
    pub(crate) program: crate::Program,
    pub(crate) seed: ThreadSeed,
    /// The [`FORWARDER`] module.
    forwarder: Module,
    end: EndHook,
    /// Whether the module exports the function a thread starts in.
    can_spawn: bool,
    /// The waits under way: (address, width in bytes) and how many threads wait there (the
    /// rewriter makes every wait a host call, so all are known). A merge wakes the ones whose
    /// word the call wrote, rather than notify every word it wrote.
    pub(crate) waiting: Waiting,
}

/// The waits under way (see [`Threads::waiting`]).
#[derive(Default)]
pub(crate) struct Waiting(Mutex<std::collections::HashMap<(u64, u8), u32>>);

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(u64, u8), u32>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `wait` counted as a wait at `at` on `width` bytes.
    fn during<R>(&self, at: u64, width: u8, wait: impl FnOnce() -> R) -> R {
        *self.lock().entry((at, width)).or_insert(0) += 1;
        // Registered before the wait compares the value: a merge that wrote the word before
        // it looks here either finds this wait, or wrote before the comparison (which then
        // sees the new value).
        let r = wait();
        let mut w = self.lock();
        if let Some(n) = w.get_mut(&(at, width)) {
            *n -= 1;
            if *n == 0 {
                w.remove(&(at, width));
            }
        }
        r
    }

    /// The waits under way, as (address, width).
    pub(crate) fn now(&self) -> Vec<(u64, u8)> {
        self.lock().keys().copied().collect()
    }
}

/// What every thread's store starts with besides the shared context.
pub(crate) struct ThreadSeed {
    pub(crate) hardware: crate::hardware::Shared,
    pub(crate) stdio: crate::Stdio,
    pub(crate) stdin: Option<crate::stdin::Stdin>,
    pub(crate) preopens: u32,
    pub(crate) clock_origin: std::time::Instant,
    /// The migrator that spawned threads get theirs from ([`crate::Migrator::for_thread`]).
    pub(crate) migrator: Mutex<Option<Box<dyn crate::Migrator>>>,
}

impl Threads {
    /// The shared parts of a run of `module` (compiled on `engine`), whose WASI context is
    /// `wasi`.
    pub(crate) fn new(program: crate::Program, wasi: WasiP1Ctx, seed: ThreadSeed, end: EndHook) -> Result<Threads, ExecError> {
        let engine = program.engine().clone();
        let module = program.module();
        let (memory_module, memory_name, memory_ty) = module
            .imports()
            .find_map(|i| match i.ty() {
                wasmtime::ExternType::Memory(m) => Some((i.module().to_string(), i.name().to_string(), m)),
                _ => None,
            })
            .ok_or_else(|| ExecError::Threads("the module imports no memory".into()))?;
        let max = memory_ty.maximum().ok_or_else(|| ExecError::Threads("a shared memory has a maximum".into()))?;
        let forwarder = forwarder_text(memory_ty.minimum(), max);
        let forwarder = Module::new(&engine, forwarder).map_err(ExecError::Compile)?;
        let memory = SharedMemory::new(&engine, memory_ty).map_err(ExecError::Runtime)?;
        let can_spawn = module
            .get_export(THREAD_START)
            .and_then(|e| e.func().cloned())
            .is_some_and(|f| f.params().map(|p| p.is_i32()).eq([true, true]) && f.results().len() == 0);
        Ok(Threads {
            wasi: Baton::new(wasi),
            world: World::default(),
            memory,
            memory_import: (memory_module, memory_name),
            next_tid: AtomicI32::new(1),
            program,
            seed,
            forwarder,
            end,
            can_spawn,
            waiting: Waiting::default(),
        })
    }

    /// Defines in `linker` what a thread's instance imports besides WASI: the shared memory,
    /// `thread-spawn`, the calls answered without the context (`proc_exit`, `sched_yield`, a
    /// relative sleep), and the rewriter's wait imports.
    pub(crate) fn link(&self, linker: &mut Linker<Device>, store: impl wasmtime::AsContext<Data = Device>) -> wasmtime::Result<()> {
        linker.define(&store, &self.memory_import.0, &self.memory_import.1, Extern::SharedMemory(self.memory.clone()))?;
        linker.allow_shadowing(true);
        // Calls that need nothing of the context are answered without it, as wasmtime-wasi
        // answers them: a thread may exit, or yield, while another holds the context (blocked
        // reading stdin, say).
        for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
            linker.func_wrap(module, "proc_exit", proc_exit)?;
            linker.func_wrap(module, "sched_yield", || 0i32)?;
        }
        // Preview 1's only: `wasi_unstable` lays its subscriptions out otherwise, and its polls
        // (rare) hold the context.
        linker.func_wrap("wasi_snapshot_preview1", "poll_oneoff", poll_oneoff)?;
        linker.func_wrap("wasi_snapshot_preview1", "fd_write", fd_write)?;
        // Calls that change nothing another thread's migrated call may see of files and
        // descriptors: wasmtime-wasi's, through the forwarder, not counted (see `Device::quiet`).
        for &(name, params) in QUIET {
            let ty = wasmtime::FuncType::new(store.as_context().engine(), params.iter().map(|&wide| if wide { wasmtime::ValType::I64 } else { wasmtime::ValType::I32 }), [wasmtime::ValType::I32]);
            linker.func_new("wasi_snapshot_preview1", name, ty, move |mut caller, params, results| {
                let threads = caller.data().threads.clone().ok_or_else(|| wasmtime::Error::msg("a thread's WASI call outside a threaded program"))?;
                let forward = forwarder(&mut caller, &threads)?
                    .get_func(&mut caller, name)
                    .ok_or_else(|| wasmtime::Error::msg(format!("the forwarder has no `{name}`")))?;
                let was = std::mem::replace(&mut caller.data_mut().quiet, true);
                let r = forward.call(&mut caller, params, results);
                caller.data_mut().quiet = was;
                r
            })?;
        }
        for name in ["thread-spawn", "thread_spawn"] {
            linker.func_wrap("wasi", name, thread_spawn)?;
        }
        linker.func_wrap(clonecloud_model::IMPORT_MODULE, clonecloud_model::WAIT32_IMPORT, wait32)?;
        linker.func_wrap(clonecloud_model::IMPORT_MODULE, clonecloud_model::WAIT64_IMPORT, wait64)?;
        linker.allow_shadowing(false);
        Ok(())
    }
}

/// Every thread of a program stopped at a safe point, for as long as a merge needs memory to
/// stay still. A thread counts as *running* while it executes wasm; it stops at the next safe
/// point: an epoch check (wasmtime puts one at every function entry and loop header; the stopper
/// advances the epoch; wasmtime runs the check's callback as a host call, so the call hook sees
/// the thread leave wasm there and holds it on its way back in), or the return from a host call
/// (the store's call hook). The stopper itself may run wasm meanwhile (the descriptor tool, to
/// carry out a migrated call's file changes): it is not held. A thread in a
/// host call (a WASI call, a wait: the rewriter makes waits host calls) does not run wasm and is
/// not waited for; it stops when its call returns. Only threaded programs with migration points
/// run with safe points (an engine with epoch interruption: see [`new_threads_engine_with`]).
#[derive(Default)]
pub(crate) struct World {
    /// Threads executing wasm now.
    running: std::sync::atomic::AtomicUsize,
    /// Whether a stopper holds the world (mirrors `stopper`, read without the lock: a thread
    /// counts itself in, then looks; the stopper sets it, then counts: one of them sees the other).
    stopped: std::sync::atomic::AtomicBool,
    /// The thread that stopped it.
    stopper: Mutex<Option<std::thread::ThreadId>>,
    changed: Condvar,
}

impl World {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<std::thread::ThreadId>> {
        self.stopper.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A thread is about to execute wasm: it waits while the world is stopped (unless it is the
    /// stopper). No lock is taken unless the world is being stopped.
    pub(crate) fn enter(&self) {
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                let me = Some(std::thread::current().id());
                let mut s = self.lock();
                while self.stopped.load(Ordering::SeqCst) && *s != me {
                    s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
                }
            }
            self.running.fetch_add(1, Ordering::SeqCst);
            if !self.stopped.load(Ordering::SeqCst) || *self.lock() == Some(std::thread::current().id()) {
                return;
            }
            // A stop began meanwhile: out again, and wait for it to end.
            self.leave();
        }
    }

    /// A thread stopped executing wasm (it called the host, or returned to it).
    pub(crate) fn leave(&self) {
        let left = self.running.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1));
        debug_assert!(left.is_ok(), "a thread left wasm without having entered it");
        if self.stopped.load(Ordering::SeqCst) {
            // Under the lock, so the stopper cannot miss it between its count and its wait.
            let _s = self.lock();
            self.changed.notify_all();
        }
    }

    /// Stops every thread at a safe point and returns when none runs wasm; the threads go on at
    /// [`World::resume`]. The caller must not be running wasm itself (it is in a host call);
    /// another stopper is waited for.
    pub(crate) fn stop(&self, engine: &Engine) {
        let mut s = self.lock();
        while s.is_some() {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        *s = Some(std::thread::current().id());
        self.stopped.store(true, Ordering::SeqCst);
        while self.running.load(Ordering::SeqCst) > 0 {
            // A thread that set its deadline after the last increment needs another one.
            engine.increment_epoch();
            s = self.changed.wait_timeout(s, std::time::Duration::from_millis(1)).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Lets every thread go on after [`World::stop`].
    pub(crate) fn resume(&self) {
        let mut s = self.lock();
        *s = None;
        self.stopped.store(false, Ordering::SeqCst);
        drop(s);
        self.changed.notify_all();
    }
}

/// The host side of [`clonecloud_model::WAIT32_IMPORT`]: `memory.atomic.wait32` on the shared
/// memory, as a host call (see [`World`]). Misaligned or out-of-bounds addresses trap as the
/// instruction would.
fn wait32(caller: Caller<'_, Device>, addr: i32, expected: i32, timeout: i64, offset: i32) -> wasmtime::Result<i32> {
    let threads = caller.data().threads().ok_or_else(|| wasmtime::Error::msg("a wait outside a threaded program"))?;
    let at = u64::from(addr as u32) + u64::from(offset as u32);
    let r = blocked(timeout, || threads.waiting.during(at, 4, || threads.memory.atomic_wait32(at, expected as u32, wait_timeout(timeout))))?;
    Ok(r as i32)
}

/// [`wait32`] for `memory.atomic.wait64`.
fn wait64(caller: Caller<'_, Device>, addr: i32, expected: i64, timeout: i64, offset: i32) -> wasmtime::Result<i32> {
    let threads = caller.data().threads().ok_or_else(|| wasmtime::Error::msg("a wait outside a threaded program"))?;
    let at = u64::from(addr as u32) + u64::from(offset as u32);
    let r = blocked(timeout, || threads.waiting.during(at, 8, || threads.memory.atomic_wait64(at, expected as u64, wait_timeout(timeout))))?;
    Ok(r as i32)
}

/// What the calling thread did so far that only another thread could answer (counted for the
/// profiler: a clone runs one thread, so a call that did either cannot run there).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// Waits that blocked (the value was the one expected, with a timeout other than zero).
    pub waits: u64,
    /// The time they blocked.
    pub waited: std::time::Duration,
    /// Threads it asked to start.
    pub spawns: u64,
}

impl Blocking {
    /// What was done between `self` and `later`.
    pub fn since(self, later: Blocking) -> Blocking {
        Blocking { waits: later.waits - self.waits, waited: later.waited.saturating_sub(self.waited), spawns: later.spawns - self.spawns }
    }
}

thread_local! {
    static BLOCKING: std::cell::Cell<Blocking> = const { std::cell::Cell::new(Blocking { waits: 0, waited: std::time::Duration::ZERO, spawns: 0 }) };
}

/// What the calling thread did so far that only another thread could answer.
pub fn blocking() -> Blocking {
    BLOCKING.with(|b| b.get())
}

/// Runs `wait` (a wait with `timeout` ns), counting it in [`blocking`] when it blocked.
fn blocked(timeout: i64, wait: impl FnOnce() -> Result<wasmtime::WaitResult, wasmtime::Trap>) -> Result<wasmtime::WaitResult, wasmtime::Trap> {
    let t0 = std::time::Instant::now();
    let r = wait()?;
    if timeout != 0 && r != wasmtime::WaitResult::Mismatch {
        let waited = t0.elapsed();
        BLOCKING.with(|b| {
            let mut v = b.get();
            v.waits += 1;
            v.waited += waited;
            b.set(v);
        });
    }
    Ok(r)
}

/// A wait's timeout in nanoseconds: negative waits for ever.
fn wait_timeout(ns: i64) -> Option<std::time::Duration> {
    u64::try_from(ns).ok().map(std::time::Duration::from_nanos)
}

/// A value one thread at a time may use, passed from thread to thread without a guard object
/// (the holder is known by a flag in its store: see `Device::wasi`).
pub(crate) struct Baton<T> {
    /// How many times it was taken.
    takes: std::sync::atomic::AtomicU64,
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
        Baton { takes: std::sync::atomic::AtomicU64::new(0), busy: Mutex::new(false), free: Condvar::new(), value: std::cell::UnsafeCell::new(value) }
    }

    /// Waits until no thread holds the value, then holds it; `counted`, it counts as a take
    /// ([`Baton::takes`]).
    pub(crate) fn take(&self, counted: bool) {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        while *busy {
            busy = self.free.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy = true;
        self.takes.fetch_add(u64::from(counted), Ordering::SeqCst);
    }

    /// How many times it was taken so far.
    pub(crate) fn takes(&self) -> u64 {
        self.takes.load(Ordering::SeqCst)
    }

    /// # Safety
    /// The calling thread holds the baton ([`Baton::take`]) and drops the reference before
    /// [`Baton::give_back`].
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn get(&self) -> &mut T {
        unsafe { &mut *self.value.get() }
    }

    pub(crate) fn give_back(&self) {
        *self.busy.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.free.notify_one();
    }
}

/// `wasi`.`thread-spawn(arg) -> tid`: starts a thread running `wasi_thread_start(tid, arg)` in a
/// new instance; a negative result when none can be started.
fn thread_spawn(caller: Caller<'_, Device>, arg: i32) -> i32 {
    BLOCKING.with(|b| {
        let mut v = b.get();
        v.spawns += 1;
        b.set(v);
    });
    let Some(threads) = caller.data().threads.clone() else { return -1 };
    if !threads.can_spawn {
        // As wasmtime did: no thread is started, and the guest is told so.
        return -1;
    }
    let Ok(tid) = threads.next_tid.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| (t < TID_LIMIT).then_some(t + 1)) else {
        return -1;
    };
    let started = std::thread::Builder::new()
        .name(format!("wasi-thread-{tid}"))
        .stack_size(RUN_THREAD_STACK)
        .spawn(move || {
            let end = threads.end;
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_thread(&threads, tid, arg)));
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

fn run_thread(threads: &Arc<Threads>, tid: i32, arg: i32) {
    let fail = |why: String| -> ! { (threads.end)(ThreadEnd::Failed(format!("wasi-thread-{tid} exited unsuccessfully: {why}"))) };
    let mut store = threads.program.thread_store(threads.clone());
    let instance = match threads.program.instantiate_thread(&mut store) {
        Ok(i) => i,
        Err(e) => fail(format!("cannot instantiate the module: {e:#}")),
    };
    let Ok(start) = instance.get_typed_func::<(i32, i32), ()>(&mut store, THREAD_START) else {
        fail(format!("the module has no `{THREAD_START}(i32, i32)` export to start the thread in"))
    };
    if let Err(e) = start.call(&mut store, (tid, arg)) {
        match outcome_of(e) {
            Ok(Outcome::Exited(code)) => (threads.end)(ThreadEnd::Exited(code)),
            Ok(Outcome::Trapped { trap, .. }) => fail(format!("{trap}")),
            Err(e) => fail(format!("{e:#}")),
        }
    }
}

/// `poll_oneoff`: a relative sleep (one clock subscription, realtime or monotonic, what
/// `thread::sleep` and `nanosleep` ask for) sleeps without holding the WASI context, and
/// writes the event wasmtime-wasi writes; anything else is wasmtime-wasi's, under the context,
/// called through the thread's forwarder instance (see [`FORWARDER`]).
fn poll_oneoff(mut caller: Caller<'_, Device>, subs: i32, events: i32, n: i32, nevents: i32) -> wasmtime::Result<i32> {
    let threads = caller.data().threads.clone().ok_or_else(|| wasmtime::Error::msg("a thread's poll outside a threaded program"))?;
    if n == 1
        && let Some(sleep) = relative_sleep(&threads.memory, subs as u32, events as u32, nevents as u32)
    {
        std::thread::sleep(sleep.duration);
        // Memory is written as wasm writes it: not while the world is stopped.
        threads.world.enter();
        sleep.write(&threads.memory);
        threads.world.leave();
        return Ok(0);
    }
    let forward = forwarded(&mut caller, &threads, "poll_oneoff")?;
    // The forwarded call takes the context and gives it back when it returns here: this call
    // must not hold it (it would be given back under it).
    debug_assert!(!caller.data().holds_wasi());
    forward.call(&mut caller, (subs, events, n, nevents))
}

/// `fd_write`, wasmtime-wasi's through the forwarder; a write to stdout or stderr takes the
/// context without counting as a WASI call that may change what another thread's migrated call
/// sees of files and descriptors (see `Device::quiet`).
fn fd_write(mut caller: Caller<'_, Device>, fd: i32, iovs: i32, n: i32, written: i32) -> wasmtime::Result<i32> {
    let threads = caller.data().threads.clone().ok_or_else(|| wasmtime::Error::msg("a thread's write outside a threaded program"))?;
    let forward = forwarded(&mut caller, &threads, "fd_write")?;
    let quiet = fd == 1 || fd == 2;
    caller.data_mut().quiet |= quiet;
    let r = forward.call(&mut caller, (fd, iovs, n, written));
    if quiet {
        caller.data_mut().quiet = false;
    }
    r
}

/// The forwarder's `name` in this thread's store, instantiated on first use.
fn forwarded(caller: &mut Caller<'_, Device>, threads: &Threads, name: &str) -> wasmtime::Result<wasmtime::TypedFunc<(i32, i32, i32, i32), i32>> {
    forwarder(caller, threads)?.get_typed_func(&mut *caller, name)
}

/// The forwarder in this thread's store, instantiated on first use.
fn forwarder(caller: &mut Caller<'_, Device>, threads: &Threads) -> wasmtime::Result<wasmtime::Instance> {
    Ok(match caller.data().forwarder {
        Some(i) => i,
        None => {
            let mut linker = threads.program.wasi_only_linker().map_err(|e| wasmtime::Error::msg(e.to_string()))?;
            linker.define(&*caller, "env", "memory", Extern::SharedMemory(threads.memory.clone()))?;
            let i = linker.instantiate(&mut *caller, &threads.forwarder)?;
            caller.data_mut().forwarder = Some(i);
            i
        }
    })
}

/// WASI preview 1 calls that change neither files nor the descriptor table nor a descriptor's
/// position (queries, clocks, randomness, `fd_pread`), with their parameters (`true`: i64): a
/// thread's call of one cannot change what another thread's migrated call saw, so it is not a
/// conflict (see `Device::quiet`). Each returns an errno (i32).
const QUIET: &[(&str, &[bool])] = &[
    ("args_get", &[false, false]),
    ("args_sizes_get", &[false, false]),
    ("environ_get", &[false, false]),
    ("environ_sizes_get", &[false, false]),
    ("clock_res_get", &[false, false]),
    ("clock_time_get", &[false, true, false]),
    ("random_get", &[false, false]),
    ("fd_fdstat_get", &[false, false]),
    ("fd_filestat_get", &[false, false]),
    ("fd_prestat_get", &[false, false]),
    ("fd_prestat_dir_name", &[false, false, false]),
    ("fd_pread", &[false, false, false, true, false]),
    ("fd_readdir", &[false, false, false, true, false]),
    ("fd_tell", &[false, false]),
    ("path_filestat_get", &[false, false, false, false, false]),
    ("path_readlink", &[false, false, false, false, false, false]),
];

/// [`FORWARDER`] with the guest memory's limits, forwarding the [`QUIET`] calls too (their
/// imports, then their functions).
fn forwarder_text(min: u64, max: u64) -> String {
    let (mut imports, mut funcs) = (String::new(), String::new());
    for (k, &(name, params)) in QUIET.iter().enumerate() {
        let types: Vec<&str> = params.iter().map(|&wide| if wide { "i64" } else { "i32" }).collect();
        let gets: Vec<String> = (0..params.len()).map(|i| format!("local.get {i}")).collect();
        let t = types.join(" ");
        imports += &format!("  (import \"wasi_snapshot_preview1\" \"{name}\" (func $q{k} (param {t}) (result i32)))\n");
        funcs += &format!("  (func (export \"{name}\") (param {t}) (result i32) {} call $q{k})\n", gets.join(" "));
    }
    FORWARDER.replace("{MIN}", &min.to_string()).replace("{MAX}", &max.to_string()).replace("{QUIET_IMPORTS}", &imports).replace("{QUIET_FUNCS}", &funcs)
}

/// `proc_exit(status)`, as wasmtime-wasi: the guest's exit with `status`, which must be below
/// 126.
fn proc_exit(_: Caller<'_, Device>, status: i32) -> wasmtime::Result<()> {
    if status as u32 >= 126 {
        return Err(wasmtime::Error::msg("exit with invalid exit status outside of [0..126)"));
    }
    Err(wasmtime_wasi::I32Exit(status).into())
}

/// A relative sleep: how long, and the event (and count) to write when it is over.
struct Sleep {
    duration: std::time::Duration,
    /// `(address, bytes)` to write.
    writes: Vec<(usize, Vec<u8>)>,
}

impl Sleep {
    fn write(&self, memory: &SharedMemory) {
        let data = memory.data();
        for (at, bytes) in &self.writes {
            for (cell, b) in data[*at..*at + bytes.len()].iter().zip(bytes) {
                // SAFETY: in bounds (checked by `relative_sleep`; shared memories do not shrink);
                // a shared memory's bytes are written racily by design, as wasm's own plain
                // stores are.
                unsafe { *cell.get() = *b };
            }
        }
    }
}

/// If the one subscription at `subs` is a relative clock (realtime or monotonic) and the event
/// and count fit where they go (in bounds, aligned: otherwise wasmtime-wasi answers, with its
/// error), the time to sleep and what to write then: the clock's event (`userdata`, no error,
/// type clock, no bytes) and a count of 1.
fn relative_sleep(memory: &SharedMemory, subs: u32, events: u32, nevents: u32) -> Option<Sleep> {
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
    // The fields wasmtime-wasi writes (its padding bytes it leaves): userdata, error 0, type
    // clock (0), and an empty fd_readwrite (nbytes 0, flags 0).
    let at = events as usize;
    let writes = vec![
        (at, sub[..8].to_vec()),
        (at + 8, 0u16.to_le_bytes().to_vec()),
        (at + 10, vec![0]),
        (at + 16, 0u64.to_le_bytes().to_vec()),
        (at + 24, 0u16.to_le_bytes().to_vec()),
        (nevents as usize, 1u32.to_le_bytes().to_vec()),
    ];
    Some(Sleep { duration: std::time::Duration::from_nanos(timeout), writes })
}

/// A module instantiated in a thread's store on its first `poll_oneoff` that is not a relative
/// sleep: it imports the shared memory and wasmtime-wasi's `poll_oneoff`, exports the memory
/// (which wasmtime-wasi reads the guest's structures from) and a function that calls it. The
/// limits of the memory are the guest's (`{MIN}`, `{MAX}`).
const FORWARDER: &str = r#"(module
  (import "env" "memory" (memory {MIN} {MAX} shared))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
{QUIET_IMPORTS}  (export "memory" (memory 0))
  (func (export "poll_oneoff") (param i32 i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 call $poll)
  (func (export "fd_write") (param i32 i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 call $write)
{QUIET_FUNCS})"#;
