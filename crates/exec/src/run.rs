//! Running a module with WASI preview 1, like `wasmtime run`, with its migration points answered
//! on this machine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use clonecloud_model::{
    BYPASS_EXPORT, FLAGS_EXPORT, ImportClass, ImportKind, LOCALS_EXPORT, Module as Model, RewriteConfig,
    RewrittenPoint, rewrite_layout, rewrite_with,
};
use tracing::debug;
use wasmtime::{Caller, Config, Engine, Func, Linker, Module, SharedMemory, Store, Trap, Val};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::cache::ModuleCache;
use crate::error::ExecError;
use crate::state::{ApplyError, Page, StateHandles};

/// The wasm stack limit of `wasmtime run` (and of wasmtime's defaults): a guest overflows here
/// exactly where it would there.
const WASM_STACK: usize = 512 << 10;
/// In host mode every call to a point also crosses host frames (the import, `Func::call`, the
/// re-entry), about 15 times the native stack of a small wasm frame (measured with
/// tests/corpus `deep`). The limit grows by this factor so that a guest that runs under
/// `wasmtime run` does not overflow because of the detour.
const HOST_MODE_STACK_FACTOR: usize = 32;
/// The native stack of the thread that runs the guest: comfortably above the largest limit, so
/// that a deep guest meets wasmtime's stack-overflow trap, never the thread's guard page.
pub(crate) const RUN_THREAD_STACK: usize = 4 * WASM_STACK * HOST_MODE_STACK_FACTOR;

/// The engine clonecloud runs modules on for the given point mode: Cranelift with wasmtime's
/// defaults, and in host mode a deeper wasm stack limit (see [`PointMode::Host`]). A
/// [`Program`] must run on an engine made for its mode.
pub fn new_engine(mode: PointMode) -> Result<Engine, ExecError> {
    engine_with(mode, false)
}

/// What compiles and runs wasm on the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceEngine {
    /// Cranelift, native code (this machine as the device).
    #[default]
    Cranelift,
    /// wasmtime's Pulley interpreter (`pulley64`), standing for a phone many times slower.
    Pulley,
}

/// [`new_engine`] on `device`.
pub fn new_device_engine(mode: PointMode, device: DeviceEngine) -> Result<Engine, ExecError> {
    new_device_engine_with(mode, device, false)
}

/// [`new_device_engine`]; `paced`, with the epoch interruption a [`crate::Pace`] needs (see
/// [`Program::set_pace`]).
pub fn new_device_engine_with(mode: PointMode, device: DeviceEngine, paced: bool) -> Result<Engine, ExecError> {
    match device {
        DeviceEngine::Cranelift => engine_with(mode, paced),
        DeviceEngine::Pulley => {
            let mut config = base_config(mode, paced);
            config.target("pulley64").map_err(ExecError::Engine)?;
            Engine::new(&config).map_err(ExecError::Engine)
        }
    }
}

/// How often the clone engine's epoch advances: a replica's deadline is counted in these ticks.
pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// The engine a clone runs replicas on (crate clonecloud-replica): flag mode, with epoch
/// interruption so a migrated function can be stopped at a deadline. A thread advances the
/// epoch every [`EPOCH_TICK`].
pub fn new_clone_engine() -> Result<Engine, ExecError> {
    let engine = engine_with(PointMode::Flag, true)?;
    start_ticker(&engine, EPOCH_TICK, "epoch")?;
    Ok(engine)
}

/// Starts a thread named `name` that advances `engine`'s epoch every `period` while the engine
/// lives (the clone's deadlines, a paced device's sleeps).
pub(crate) fn start_ticker(engine: &Engine, period: std::time::Duration, name: &str) -> Result<(), ExecError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                match weak.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| ExecError::Engine(wasmtime::Error::msg(format!("cannot start the {name} thread: {e}"))))
}

fn engine_with(mode: PointMode, epochs: bool) -> Result<Engine, ExecError> {
    Engine::new(&base_config(mode, epochs)).map_err(ExecError::Engine)
}

pub(crate) fn base_config(mode: PointMode, epochs: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(epochs);
    let limit = match mode {
        PointMode::Flag => WASM_STACK,
        PointMode::Host => WASM_STACK * HOST_MODE_STACK_FACTOR,
    };
    // wasmtime insists that async stacks (unused here: runs are synchronous) hold the limit.
    config
        .max_wasm_stack(limit)
        .async_stack_size(limit.max(2 << 20) + (1 << 20));
    config
}

/// Which functions become migration points.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Points {
    /// None: the module runs unmodified.
    #[default]
    None,
    /// Every function that can be one ([`Model::all_points`]).
    All,
    /// These functions (names as [`Model::resolve_points`] takes them).
    Named(Vec<String>),
}

/// How a migration point is answered when offloading is not involved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PointMode {
    /// Flags stay 0: a point's check lets the call run its own code, inside wasm (a load and a
    /// branch).
    #[default]
    Flag,
    /// Every flag is set: each call goes out through its `clonecloud.migrate.*` import to the
    /// host, which calls the local body back: the path offloading takes. Each such call leaves
    /// host frames on the native stack, so this mode runs with a deeper stack limit; a guest that
    /// overflows the stack only near `wasmtime run`'s limit may therefore not overflow here.
    Host,
}

/// Where the guest's standard streams go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stdio {
    /// The process's own stdin, stdout and stderr, as `wasmtime run` does.
    #[default]
    Inherit,
    /// Empty stdin; output is discarded (benchmarks).
    Null,
}

/// A host directory the guest sees under another path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirMapping {
    /// The directory on this machine.
    pub host: PathBuf,
    /// The path the guest opens it by.
    pub guest: String,
}

impl DirMapping {
    /// Parses `HOST[::GUEST]` as `wasmtime run --dir` does: without `::` the guest path is the
    /// host path as written.
    pub fn parse(spec: &str) -> DirMapping {
        match spec.split_once("::") {
            Some((host, guest)) => DirMapping {
                host: host.into(),
                guest: guest.to_string(),
            },
            None => DirMapping {
                host: spec.into(),
                guest: spec.to_string(),
            },
        }
    }
}

/// What the guest is given: arguments (argv[0] included), environment, directories, stdio.
#[derive(Debug, Clone, Default)]
pub struct WasiConfig {
    /// The arguments, the program name first.
    pub args: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Preopened directories.
    pub dirs: Vec<DirMapping>,
    /// Standard streams.
    pub stdio: Stdio,
    /// What only the device has: its camera and track (the device API).
    pub hardware: crate::hardware::HardwareConfig,
}

/// How a run ended, as the guest sees it.
#[derive(Debug)]
pub enum Outcome {
    /// The guest returned from its entry point (code 0) or called `proc_exit(code)`.
    Exited(i32),
    /// A trap stopped the guest.
    Trapped {
        /// Which trap.
        trap: Trap,
        /// The wasm backtrace, when wasmtime recorded one.
        backtrace: Option<String>,
    },
}

impl Outcome {
    /// The exit status `wasmtime run` gives: the guest's code, or 128 + SIGABRT for a trap.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(code) => *code,
            Outcome::Trapped { .. } => 134,
        }
    }
}

/// What a run produced: its outcome and what happened at the migration points.
#[derive(Debug)]
pub struct RunReport {
    /// How the guest ended.
    pub outcome: Outcome,
    /// Calls that went out through a `clonecloud.migrate.*` import to the host.
    pub host_calls: u64,
    /// Bytes of memory 0 resident on this machine when the run ended: what the guest's memory
    /// took of the device at its peak (wasm memory never shrinks; pages a migrated call used
    /// only on the clone were never touched here).
    pub memory_resident: u64,
}

/// A compiled module, ready to run any number of times.
#[derive(Debug, Clone)]
pub struct Program {
    engine: Engine,
    module: Module,
    /// Whether the module is a wasi-threads one (see [`crate::threads`]).
    threaded: bool,
    /// Shared: every host function of a point holds a clone of the program.
    points: Arc<[RewrittenPoint]>,
    /// Whether the flags start set (host mode).
    flags_set: bool,
    layout: Arc<Layout>,
    /// How much slower guest code runs, if paced ([`Program::set_pace`]).
    pace: Option<crate::Pace>,
}

/// The bytes the program was compiled from and where the rewriter put the state exports: what a
/// clone needs to run the same module.
#[derive(Default)]
pub struct Layout {
    /// The (rewritten) module's bytes. Empty, like `hash`, for a program with points prepared in
    /// flag mode, which cannot migrate (a launch from the cache does not read them).
    pub wasm: Vec<u8>,
    /// SHA-256 of `wasm`: the module's name on the wire.
    pub hash: clonecloud_wire::ContentHash,
    /// `(global index, export name)` of every mutable global.
    pub globals: Vec<(u32, String)>,
    /// The export name of memory 0, if there is a memory.
    pub memory: Option<String>,
    /// The most memory 0 can grow to, in 64 KiB wasm pages (its declared maximum, else what
    /// 32-bit addresses reach), when the module has one: what a clone may answer with.
    pub memory_max_pages: Option<u32>,
    /// `(import function index, export name)` of every import trampoline.
    pub trampolines: Vec<(u32, String)>,
    /// `(module, name)` of each imported function, by function index.
    pub imports: Vec<(String, String)>,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout")
            .field("bytes", &self.wasm.len())
            .field("globals", &self.globals)
            .field("memory", &self.memory)
            .field("trampolines", &self.trampolines.len())
            .finish()
    }
}

/// What the device does at a migration point whose flag is set, instead of calling the body
/// back: offloading plugs in here. It must fill `results`, by running the function elsewhere or
/// locally ([`Guest::call_local`]); an error ends the run as a host failure.
pub trait Migrator: Send {
    fn migrate(&mut self, guest: &mut Guest<'_, '_>, point: usize, params: &[Val], results: &mut [Val]) -> wasmtime::Result<()>;

    /// What answers the points called while [`Migrator::migrate`] runs (from the body it ran
    /// locally): by default nothing, so they run locally (at most one migrated frame per
    /// thread); a profiler returns a handle to itself to see every call.
    fn nested(&self) -> Option<Box<dyn Migrator>> {
        None
    }

    /// What answers the points of a thread the program spawns: by default nothing, so its points
    /// run locally.
    fn for_thread(&self) -> Option<Box<dyn Migrator>> {
        None
    }
}

/// Why [`Guest::merge_stopped`] could not grow memory for a migrated call's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrowFailure {
    /// Past the memory's maximum, or the system refused.
    Refused(String),
    /// Another thread grew memory while the merge looked at it: the call's new pages would be
    /// that thread's.
    Raced,
}

/// The world stopped for a merge; dropping it lets every thread go on (on every path out of
/// [`Guest::merge_stopped`], a panic's included).
struct WorldHeld(Arc<crate::threads::Threads>);

impl WorldHeld {
    fn stop(threads: &Arc<crate::threads::Threads>, engine: &Engine) -> WorldHeld {
        threads.world.stop(engine);
        WorldHeld(threads.clone())
    }
}

impl Drop for WorldHeld {
    fn drop(&mut self) {
        self.0.world.resume();
    }
}

/// What ends a threaded program when a spawned thread exits or traps, by default: what `wasmtime
/// run` did (the thread's exit code, or the trap on stderr and 1).
fn exit_like_wasmtime(end: crate::threads::ThreadEnd) -> ! {
    match end {
        crate::threads::ThreadEnd::Exited(code) => std::process::exit(code),
        crate::threads::ThreadEnd::Failed(why) => {
            eprintln!("Error: {why}");
            std::process::exit(1)
        }
    }
}

pub(crate) struct Device {
    /// The guest's WASI context when it is this store's alone; a threaded program's threads share
    /// one (`threads`).
    wasi: Option<WasiP1Ctx>,
    /// Whether this thread holds the shared context now: taken by a WASI call, given back when
    /// that call returns to wasm (the store's call hook).
    holding: bool,
    /// Whether the context is held across host calls (a merge: see [`Guest::merge_stopped`]).
    pinned: bool,
    /// How many times this thread took the shared context.
    takes: u64,
    /// What the threads of a threaded program share.
    pub(crate) threads: Option<Arc<crate::threads::Threads>>,
    /// A threaded program's forwarder (`poll_oneoff`, `fd_write`) in this store, once
    /// instantiated.
    pub(crate) forwarder: Option<wasmtime::Instance>,
    /// Whether this thread's WASI calls now cannot change what another thread's migrated call
    /// sees of files and descriptors (a write to stdout or stderr; queries, clocks, randomness:
    /// `threads::QUIET`; the offloader's own probes of the descriptor table, which leave it as
    /// it was): their takes of the context are not counted.
    pub(crate) quiet: bool,
    /// The origin of the guest's monotonic clock.
    clock_origin: std::time::Instant,
    /// Per point (by ordinal): the point's function, resolved on first use (and grown then: a
    /// run that never reaches the host does not pay for it).
    locals: Vec<Option<Func>>,
    /// The table of the points, the memory of the flags and the global that lets a call through
    /// a set flag, resolved on first use.
    locals_table: Option<wasmtime::Table>,
    flags: Option<wasmtime::Memory>,
    bypass: Option<wasmtime::Global>,
    host_calls: u64,
    migrator: Option<Box<dyn Migrator>>,
    handles: Option<StateHandles>,
    trampolines: HashMap<u32, Func>,
    pub(crate) stdio: Stdio,
    /// The guest's stdin when a migrator may read it through a proxied call.
    stdin: Option<crate::stdin::Stdin>,
    /// A second instance of the module in this store, for proxied imports (see
    /// [`Guest::scratch_load`]).
    scratch: Option<wasmtime::Instance>,
    /// How many directories were preopened (descriptors 3 and up).
    preopens: u32,
    /// The descriptor tool ([`FDTOOL`]), instantiated in this store on first use.
    fdtool: Option<wasmtime::Instance>,
    /// Calls of the descriptor tool under way: its wasm is clonecloud's host work, not the
    /// guest's code, and is not paced ([`crate::Pace`]).
    in_tool: u32,
    /// The device's camera and track, shared by the run's threads.
    pub(crate) hardware: crate::hardware::Shared,
    /// The highest descriptor number ever freed (closed, or renumbered away), by the guest or a
    /// replayed commit (see [`Guest::free_descriptors`]).
    max_freed: Option<u32>,
}

impl Device {
    fn new(wasi: Option<WasiP1Ctx>, threads: Option<Arc<crate::threads::Threads>>, migrator: Option<Box<dyn Migrator>>, stdio: Stdio, stdin: Option<crate::stdin::Stdin>, preopens: u32, clock_origin: std::time::Instant) -> Device {
        Device {
            wasi,
            holding: false,
            pinned: false,
            takes: 0,
            threads,
            forwarder: None,
            quiet: false,
            clock_origin,
            locals: Vec::new(),
            locals_table: None,
            flags: None,
            bypass: None,
            host_calls: 0,
            migrator,
            handles: None,
            trampolines: HashMap::new(),
            stdio,
            stdin,
            scratch: None,
            preopens,
            fdtool: None,
            in_tool: 0,
            max_freed: None,
            hardware: Default::default(),
        }
    }

    /// The WASI context: this store's, or the threads' shared one, taken for this thread until
    /// its current host call returns.
    fn wasi(&mut self) -> &mut WasiP1Ctx {
        if let Some(ctx) = &mut self.wasi {
            return ctx;
        }
        let threads = self.threads.as_deref().expect("a store without a context of its own is a thread's");
        if !self.holding {
            threads.wasi.take(!self.quiet);
            self.holding = true;
            self.takes += u64::from(!self.quiet);
        }
        // SAFETY: this thread holds the baton (taken above, or earlier in the same host call),
        // and gives it back only when the host call that asked returns to wasm (the call hook
        // in `Program::new_store`), after which the reference is no longer used: wasmtime-wasi
        // uses what this returns only inside the host call.
        unsafe { threads.wasi.get() }
    }

    /// Whether this thread holds the shared WASI context.
    pub(crate) fn holds_wasi(&self) -> bool {
        self.holding
    }

    /// The threads' shared parts, in a threaded program.
    pub(crate) fn threads(&self) -> Option<&crate::threads::Threads> {
        self.threads.as_deref()
    }

    /// Gives the shared WASI context back, if this thread holds it (and it is not pinned).
    fn release_wasi(&mut self) {
        if self.pinned {
            return;
        }
        if std::mem::take(&mut self.holding)
            && let Some(t) = &self.threads
        {
            t.wasi.give_back();
        }
    }
}

impl Drop for Device {
    /// A thread whose host call panicked (the call hook that gives the context back never ran)
    /// still gives it back when its store goes.
    fn drop(&mut self) {
        self.release_wasi();
    }
}

/// The running guest as a [`Migrator`] sees it, inside a call to a migration point: its state
/// (memory, mutable globals) and ways to run code in it.
pub struct Guest<'a, 'b> {
    caller: &'a mut Caller<'b, Device>,
    program: &'a Program,
}

/// A wasm exception made in the guest's store, to be thrown from a point
/// ([`Guest::make_exception`], [`Guest::throw`]); it lives as long as the host call that made it.
#[derive(Debug)]
pub struct Exception(wasmtime::Rooted<wasmtime::ExnRef>);

impl std::fmt::Debug for Guest<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Guest({} points)", self.program.points.len())
    }
}

impl Guest<'_, '_> {
    /// The migration point with this ordinal.
    pub fn point(&self, j: usize) -> &RewrittenPoint {
        &self.program.points[j]
    }

    /// Sets or clears point `j`'s flag: clear, its calls take the in-wasm path to the body and
    /// no longer reach the host.
    pub fn set_flag(&mut self, j: usize, on: bool) -> wasmtime::Result<()> {
        let flags = flags(self.caller)?;
        let byte = flags
            .data_mut(&mut *self.caller)
            .get_mut(j)
            .ok_or_else(|| wasmtime::Error::msg(format!("no migration point {j}")))?;
        *byte = u8::from(on);
        Ok(())
    }

    /// The module being run.
    pub fn layout(&self) -> &Arc<Layout> {
        &self.program.layout
    }

    fn handles(&mut self) -> StateHandles {
        if let Some(h) = &self.caller.data().handles {
            return h.clone();
        }
        let layout = self.program.layout.clone();
        let caller = &mut *self.caller;
        let h = StateHandles::resolve(layout.memory.as_deref(), &layout.globals, |name| caller.get_export(name));
        caller.data_mut().handles = Some(h.clone());
        h
    }

    /// Linear memory as it is now.
    pub fn memory(&mut self) -> &[u8] {
        let h = self.handles();
        h.memory_bytes(&*self.caller)
    }

    /// Memory size in 64 KiB pages.
    pub fn wasm_pages(&mut self) -> u32 {
        let h = self.handles();
        h.wasm_pages(&*self.caller)
    }

    /// Bytes of memory 0 resident on this machine now (pages the guest touched; for the
    /// profiler's `peak_bytes`).
    pub fn memory_resident(&mut self) -> u64 {
        match self.caller.get_export("memory") {
            Some(wasmtime::Extern::Memory(m)) => resident(m.data_ptr(&*self.caller), m.data_size(&*self.caller)),
            Some(wasmtime::Extern::SharedMemory(m)) => resident(m.data().as_ptr().cast(), m.data_size()),
            _ => 0,
        }
    }

    /// Every mutable global.
    pub fn globals(&mut self) -> Vec<(u32, Val)> {
        let h = self.handles();
        h.globals(&mut *self.caller)
    }

    /// Merges state from elsewhere: grows memory, copies the pages (or XORs them into the agreed
    /// content, with `xor`), sets the globals. Checked before anything changes, so on an error the
    /// guest is as it was.
    pub fn apply(&mut self, wasm_pages: u32, pages: &[Page], xor: bool, globals: &[(u32, Val)]) -> Result<(), ApplyError> {
        let h = self.handles();
        h.apply(&mut *self.caller, wasm_pages, pages, xor, globals)
    }

    /// Whether [`Guest::apply`] with these would succeed, changing nothing (the merge checks
    /// the memory and globals before it changes the device's files).
    pub fn check_apply(&mut self, wasm_pages: u32, pages: &[Page], globals: &[(u32, Val)]) -> Result<(), ApplyError> {
        let h = self.handles();
        h.check(&mut *self.caller, wasm_pages, pages, globals).map(drop)
    }

    /// Writes what a migrated function wrote to stdout (1) or stderr (2) where the guest's own
    /// output goes (the same process streams WASI writes to, so the order is kept).
    /// A proxied call of a migration is about to take from the device's camera or track (see
    /// [`crate::hardware`]): the first one of the migration notes where they are.
    pub fn hardware_record(&mut self) {
        self.caller.data().hardware.lock().unwrap_or_else(|e| e.into_inner()).record();
    }

    /// The migration ended, committed or abandoned (what its proxied calls took from the camera
    /// and the track is given back).
    pub fn hardware_end(&mut self, committed: bool) {
        self.caller.data().hardware.lock().unwrap_or_else(|e| e.into_inner()).end(committed);
    }

    /// Writes a migrated call's output (`fd` 1: stdout; any other, the device's screen
    /// ([`clonecloud_model::device_api::SCREEN_FD`]) included: stderr, where the screen is).
    pub fn write_output(&mut self, fd: u32, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match (self.caller.data().stdio, fd) {
            (Stdio::Null, _) => Ok(()),
            (Stdio::Inherit, 1) => {
                let mut out = std::io::stdout();
                out.write_all(bytes).and_then(|_| out.flush())
            }
            (Stdio::Inherit, _) => std::io::stderr().write_all(bytes),
        }
    }

    /// The guest's clocks now, as WASI's `clock_time_get` would give them: realtime since the
    /// Unix epoch and monotonic since the run's origin, in nanoseconds.
    pub fn clocks(&self) -> (u64, u64) {
        let realtime = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        (realtime, self.caller.data().clock_origin.elapsed().as_nanos() as u64)
    }

    /// The error that ends the run with `code`, as `proc_exit(code)` does (a migrated function
    /// exited on the clone).
    pub fn exit(&self, code: i32) -> wasmtime::Error {
        wasmtime::Error::new(I32Exit(code))
    }

    /// Whether `vals` are values of point `j`'s result types (a clone's answer is checked before
    /// it is merged).
    pub fn results_match(&mut self, j: usize, vals: &[Val]) -> bool {
        let Ok(body) = local_body(self.caller, j) else { return false };
        let ty = body.ty(&*self.caller);
        ty.results().len() == vals.len()
            && ty.results().zip(vals).all(|(t, v)| v.ty(&*self.caller).is_ok_and(|vt| vt.matches(&t)))
    }

    /// The module's exception tag `tag` (the rewriter exports every one), when `fields` are
    /// values of its parameter types: a clone's exception is checked before the merge.
    fn tag_for(&mut self, tag: u32, fields: &[Val]) -> Result<wasmtime::Tag, String> {
        let Some(wasmtime::Extern::Tag(t)) = self.caller.get_export(&clonecloud_model::tag_export(tag)) else {
            return Err(format!("the module has no exception tag {tag}"));
        };
        let ty = t.ty(&*self.caller);
        let fits = ty.ty().params().len() == fields.len()
            && ty.ty().params().zip(fields).all(|(p, v)| v.ty(&*self.caller).is_ok_and(|vt| vt.matches(&p)));
        if fits { Ok(t) } else { Err(format!("fields {fields:?} do not fit exception tag {tag}")) }
    }

    /// The exception of tag `tag` with `fields` that a migrated call threw on the clone, made
    /// here, ready to be thrown from the point once the rest of the answer is merged (made
    /// first, so that a failure to make it leaves the guest as it was and the call can run
    /// here): an error when the module has no such tag or the fields do not fit it.
    pub fn make_exception(&mut self, tag: u32, fields: &[Val]) -> Result<Exception, String> {
        let t = self.tag_for(tag, fields)?;
        let ty = wasmtime::ExnType::from_tag_type(&t.ty(&*self.caller)).map_err(|e| e.to_string())?;
        let pre = wasmtime::ExnRefPre::new(&mut *self.caller, ty);
        let exn = wasmtime::ExnRef::new(&mut *self.caller, &pre, &t, fields).map_err(|e| format!("cannot make the exception here: {e}"))?;
        Ok(Exception(exn))
    }

    /// The error a point's host function returns to throw `e` from the point (its caller may
    /// catch it).
    pub fn throw(&mut self, e: Exception) -> wasmtime::Error {
        use wasmtime::AsContextMut;
        match self.caller.as_context_mut().throw::<()>(e.0) {
            Err(e) => e,
            Ok(()) => wasmtime::Error::msg("an exception was thrown, yet nothing propagates"),
        }
    }

    /// Whether the guest is a thread of a threaded program: its memory is shared with threads
    /// that keep running while it migrates, so a migration takes a [`Guest::snapshot`] and
    /// merges with [`Guest::merge_stopped`].
    pub fn is_thread(&self) -> bool {
        self.caller.data().threads.is_some()
    }

    /// A copy of memory 0 as it is now, and its size in wasm pages. In a threaded program other
    /// threads may write it while it is copied: the copy may be torn, which a merge that
    /// validates what the call read against it makes harmless (see [`crate::merge`]).
    pub fn snapshot(&mut self) -> (Vec<u8>, u32) {
        match self.caller.data().threads.as_deref() {
            Some(t) => {
                let data = t.memory.data();
                let mut copy = vec![0u8; data.len()];
                // SAFETY: `data` is the shared memory's bytes, in bounds; other threads may
                // write them meanwhile, as wasm's own racy reads allow.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), copy.as_mut_ptr(), data.len()) };
                let pages = (data.len() / 65536) as u32;
                (copy, pages)
            }
            None => {
                let pages = self.wasm_pages();
                (self.memory().to_vec(), pages)
            }
        }
    }

    /// In a threaded program: holds the shared WASI context (so no WASI call writes memory
    /// meanwhile; taken first, so the other threads run on while a WASI call that blocks ends),
    /// stops every other thread at a safe point, and runs `check` with the guest and memory 0
    /// as it is; if that passes, grows memory 0 to `wasm_pages` (if it is smaller) and runs
    /// `apply` with the guest and memory 0's bytes, which nothing else changes until it returns;
    /// then the threads go on. Neither may run the guest's wasm (the descriptor tool's is fine).
    /// `None` in a program without threads. A growth that fails, or that finds memory grown by
    /// another thread since `check` looked (a `memory.grow` under way when the world stopped
    /// ends meanwhile), is a [`GrowFailure`].
    pub fn merge_stopped<R, E: From<GrowFailure>>(
        &mut self,
        wasm_pages: u32,
        check: impl FnOnce(&mut Guest<'_, '_>, &[u8]) -> Result<(), E>,
        apply: impl FnOnce(&mut Guest<'_, '_>, &mut [u8]) -> Result<R, E>,
    ) -> Option<Result<R, E>> {
        let threads = self.caller.data().threads.clone()?;
        // This thread holds the context across the closures' own WASI calls (the descriptor
        // tool's): the call hook leaves it held (`pinned`).
        threads.wasi.take(false);
        let device = self.caller.data_mut();
        device.holding = true;
        device.pinned = true;
        let world = WorldHeld::stop(&threads, &self.program.engine);
        // SAFETY (both views): every other thread is stopped out of wasm, and none is in a WASI
        // call (this thread holds the context); the guest's own wasm does not run meanwhile.
        // The bytes stay mapped (a shared memory never moves or shrinks); a `memory.grow` ending
        // meanwhile only appends.
        let view = |m: &SharedMemory| {
            let data = m.data();
            unsafe { std::slice::from_raw_parts_mut(data.as_ptr().cast::<u8>().cast_mut(), data.len()) }
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let before = view(&threads.memory);
            check(self, before)?;
            let have = (before.len() / 65536) as u64;
            if u64::from(wasm_pages) > have {
                match threads.memory.grow(u64::from(wasm_pages) - have) {
                    Ok(old) if old == have => {}
                    Ok(_) => return Err(GrowFailure::Raced.into()),
                    Err(e) => return Err(GrowFailure::Refused(e.to_string()).into()),
                }
            }
            apply(self, view(&threads.memory))
        }));
        let device = self.caller.data_mut();
        device.pinned = false;
        device.release_wasi();
        drop(world);
        Some(ran.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    }

    /// Wakes every thread waiting on a word of memory 0 of which `written(address, width)` says
    /// a byte was written (a threaded program's merge, after the call's writes): the waits
    /// under way are known (the rewriter makes every wait a host call), so only they are
    /// looked at. Returns how many waits were woken.
    pub fn notify_written(&mut self, written: impl Fn(u64, u64) -> bool) -> u32 {
        let Some(t) = self.caller.data().threads.as_deref() else { return 0 };
        let mut woken = 0;
        for (at, width) in t.waiting.now() {
            if written(at, u64::from(width)) {
                woken += t.memory.atomic_notify(at, u32::MAX).unwrap_or(0);
            }
        }
        woken
    }

    /// How many times the program's *other* threads have taken the shared WASI context so far
    /// (a threaded program's; 0 otherwise): a migration compares it before and after to tell
    /// whether other threads made WASI calls meanwhile.
    pub fn others_wasi_takes(&self) -> u64 {
        let d = self.caller.data();
        d.threads.as_deref().map_or(0, |t| t.wasi.takes() - d.takes)
    }

    /// Runs `f`, whose WASI calls leave files and the descriptor table as they were (the
    /// offloader's probes), without counting them in [`Guest::others_wasi_takes`].
    pub fn uncounted<R>(&mut self, f: impl FnOnce(&mut Guest<'_, '_>) -> R) -> R {
        let was = std::mem::replace(&mut self.caller.data_mut().quiet, true);
        let r = f(self);
        self.caller.data_mut().quiet = was;
        r
    }

    /// Sets the mutable globals of this thread's instance.
    pub fn set_globals(&mut self, globals: &[(u32, Val)]) -> Result<(), ApplyError> {
        let h = self.handles();
        let setters = StateHandles { memory: None, globals: h.globals }.check(&mut *self.caller, 0, &[], globals)?;
        for (g, v) in setters {
            g.set(&mut *self.caller, v).map_err(|e| ApplyError::Global(0, e.to_string()))?;
        }
        Ok(())
    }

    /// Runs point `j`'s code here.
    pub fn call_local(&mut self, j: usize, params: &[Val], results: &mut [Val]) -> wasmtime::Result<()> {
        call_body(self.caller, j, params, results)
    }

    /// The guest's rewindable stdin, when it has one (runs with a migrator).
    pub fn stdin(&self) -> Option<&crate::stdin::Stdin> {
        self.caller.data().stdin.as_ref()
    }

    /// Loads the guest's current memory into the scratch instance (made on first use): a second
    /// instance of the same module in this store, sharing its WASI context (descriptors, stdin,
    /// clocks) but not its memory. A clone's proxied imports run there, on the clone's state, so
    /// the guest's own memory does not change before a migration commits.
    pub fn scratch_load(&mut self) -> wasmtime::Result<()> {
        let scratch = self.scratch()?;
        let main = self.handles().memory.ok_or_else(|| wasmtime::Error::msg("the module has no memory"))?;
        let mem = scratch_memory(&mut *self.caller, scratch)?;
        let (have, want) = (mem.size(&*self.caller), main.size(&*self.caller));
        if have < want {
            mem.grow(&mut *self.caller, want - have)?;
        }
        let len = main.data_size(&*self.caller);
        let bytes = main.data(&*self.caller)[..len].to_vec();
        let data = mem.data_mut(&mut *self.caller);
        data[..len].copy_from_slice(&bytes);
        data[len..].fill(0);
        Ok(())
    }

    fn scratch(&mut self) -> wasmtime::Result<wasmtime::Instance> {
        if let Some(i) = self.caller.data().scratch {
            return Ok(i);
        }
        if self.program.threaded {
            // A second instance would share the threads' memory: it is no scratch.
            return Err(wasmtime::Error::msg("a threaded program has no scratch instance: its proxied calls are not served"));
        }
        let linker = self.program.linker().map_err(|e| wasmtime::Error::msg(e.to_string()))?;
        let i = linker.instantiate(&mut *self.caller, &self.program.module)?;
        self.caller.data_mut().scratch = Some(i);
        Ok(i)
    }

    /// The descriptors open in the guest's WASI context, found by asking `fd_fdstat_get` about
    /// each number through the descriptor tool (linked to the same context; wasmtime-wasi
    /// answers EBADF exactly for a number not open) until [`PROBE_GAP`] numbers in a row are not
    /// open. `None` when the probe fails.
    pub fn open_descriptors(&mut self) -> Option<Vec<u32>> {
        let find = |name: &str| self.program.layout.imports.iter().position(|(m, n)| m == "wasi_snapshot_preview1" && n == name);
        if ["path_open", "fd_close", "fd_renumber", "sock_accept"].iter().all(|n| find(n).is_none()) {
            // A module that can neither open, close nor move a descriptor has those it started
            // with: stdio and the preopens (each probe costs a call into wasm and WASI).
            let preopens = self.caller.data().preopens;
            return Some((0..3 + preopens).collect());
        }
        let (mut open, mut gap, mut fd) = (Vec::new(), 0, 0u32);
        while gap < PROBE_GAP {
            match self.fdtool_call::<i32, i32>("fdstat", fd as i32).ok()?.0 {
                ERRNO_BADF => gap += 1,
                0 => {
                    open.push(fd);
                    gap = 0;
                }
                _ => return None,
            }
            fd += 1;
        }
        Some(open)
    }

    /// Applies a clone's pages to the scratch instance's memory (see [`Guest::scratch_load`]).
    pub fn scratch_apply(&mut self, wasm_pages: u32, pages: &[Page], xor: bool) -> Result<(), ApplyError> {
        let scratch = self.caller.data().scratch.ok_or(ApplyError::NoMemory)?;
        let mem = scratch_memory(&mut *self.caller, scratch).map_err(|_| ApplyError::NoMemory)?;
        StateHandles { memory: Some(mem), globals: Vec::new() }.apply(&mut *self.caller, wasm_pages, pages, xor, &[])
    }

    /// The scratch instance's memory and its size in wasm pages.
    pub fn scratch_memory(&mut self) -> (&[u8], u32) {
        let Some(scratch) = self.caller.data().scratch else { return (&[], 0) };
        let Ok(mem) = scratch_memory(&mut *self.caller, scratch) else { return (&[], 0) };
        let pages = mem.size(&*self.caller) as u32;
        (mem.data(&*self.caller), pages)
    }

    /// Runs import `import` in the scratch instance, through its trampoline, so WASI reads and
    /// writes the scratch memory.
    pub fn scratch_call_import(&mut self, import: u32, params: &[Val]) -> wasmtime::Result<Vec<Val>> {
        let scratch = self.caller.data().scratch.ok_or_else(|| wasmtime::Error::msg("no scratch instance"))?;
        let name = self.trampoline_name(import)?;
        let f = scratch.get_func(&mut *self.caller, &name).ok_or_else(|| wasmtime::Error::msg(format!("missing export {name}")))?;
        call_sized(&mut *self.caller, f, params)
    }

    /// Runs import `import` here like [`Guest::call_import`], its results sized by its type.
    pub fn call_import_vals(&mut self, import: u32, params: &[Val]) -> wasmtime::Result<Vec<Val>> {
        let f = self.trampoline(import)?;
        call_sized(&mut *self.caller, f, params)
    }

    fn trampoline_name(&self, import: u32) -> wasmtime::Result<String> {
        self.program
            .layout
            .trampolines
            .iter()
            .find(|(i, _)| *i == import)
            .map(|(_, n)| n.clone())
            .ok_or_else(|| wasmtime::Error::msg(format!("import {import} has no trampoline")))
    }
}

/// A module of the runner's own, instantiated beside the guest in its store, through which the
/// device reads and changes the guest's descriptor table (it is WASI's, and only WASI calls made
/// from wasm reach it): what a descriptor is and where it stands, before a migration; the
/// descriptor changes a migrated function made, at the commit. Its memory holds the arguments:
/// results at 0, a path at 1024.
const FDTOOL: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $filestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $setflags (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "fdstat") (param i32) (result i32) (call $fdstat (local.get 0) (i32.const 0)))
  (func (export "filestat") (param i32) (result i32) (call $filestat (local.get 0) (i32.const 0)))
  (func (export "seek") (param i32 i64 i32) (result i32) (call $seek (local.get 0) (local.get 1) (local.get 2) (i32.const 0)))
  (func (export "open") (param i32 i32 i32 i64 i32) (result i32)
    (call $open (local.get 0) (i32.const 1) (i32.const 1024) (local.get 1) (local.get 2) (local.get 3) (local.get 3) (local.get 4) (i32.const 0)))
  (func (export "close") (param i32) (result i32) (call $close (local.get 0)))
  (func (export "renumber") (param i32 i32) (result i32) (call $renumber (local.get 0) (local.get 1)))
  (func (export "setflags") (param i32 i32) (result i32) (call $setflags (local.get 0) (local.get 1))))"#;

/// The descriptor tool's instance in this store (made on first use, linked to wasmtime-wasi
/// itself, not to the guest's wrapped imports).
fn fdtool(caller: &mut Caller<'_, Device>, program: &Program) -> wasmtime::Result<wasmtime::Instance> {
    if let Some(i) = caller.data().fdtool {
        return Ok(i);
    }
    let module = Module::new(&program.engine, FDTOOL)?;
    let linker = program.wasi_linker().map_err(|e| wasmtime::Error::msg(e.to_string()))?;
    let i = linker.instantiate(&mut *caller, &module)?;
    caller.data_mut().fdtool = Some(i);
    Ok(i)
}

/// The guest's `fd_close` and `fd_renumber`, run by wasmtime-wasi through the descriptor tool
/// (neither reads guest memory), with the highest number they freed noted: the free numbers
/// above the highest open descriptor are then known exactly ([`Guest::free_descriptors`]).
fn wrap_closes(linker: &mut Linker<Device>, program: &Program) -> Result<(), ExecError> {
    linker.allow_shadowing(true);
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        let p = program.clone();
        linker
            .func_wrap(module, "fd_close", move |mut caller: Caller<'_, Device>, fd: i32| -> wasmtime::Result<i32> {
                let tool = fdtool(&mut caller, &p)?;
                let close = tool.get_typed_func::<i32, i32>(&mut caller, "close")?;
                let errno = in_tool(&mut caller, |c| close.call(c, fd))?;
                if errno == 0 {
                    freed(caller.data_mut(), fd as u32);
                }
                Ok(errno)
            })
            .map_err(ExecError::Runtime)?;
        let p = program.clone();
        linker
            .func_wrap(module, "fd_renumber", move |mut caller: Caller<'_, Device>, from: i32, to: i32| -> wasmtime::Result<i32> {
                let tool = fdtool(&mut caller, &p)?;
                let renumber = tool.get_typed_func::<(i32, i32), i32>(&mut caller, "renumber")?;
                let errno = in_tool(&mut caller, |c| renumber.call(c, (from, to)))?;
                if errno == 0 && from != to {
                    freed(caller.data_mut(), from as u32);
                }
                Ok(errno)
            })
            .map_err(ExecError::Runtime)?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// Runs `f` (a call of the descriptor tool) unpaced (see [`Device::in_tool`]).
fn in_tool<R>(caller: &mut Caller<'_, Device>, f: impl FnOnce(&mut Caller<'_, Device>) -> R) -> R {
    caller.data_mut().in_tool += 1;
    let r = f(caller);
    caller.data_mut().in_tool -= 1;
    r
}

/// Notes that descriptor `fd` was freed.
fn freed(device: &mut Device, fd: u32) {
    device.max_freed = Some(device.max_freed.map_or(fd, |m| m.max(fd)));
}

/// Where the descriptor tool takes a path.
const FDTOOL_PATH: usize = 1024;

use clonecloud_wire::FdOp;

impl Guest<'_, '_> {
    fn fdtool(&mut self) -> wasmtime::Result<wasmtime::Instance> {
        fdtool(self.caller, self.program)
    }

    fn fdtool_call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(&mut self, name: &str, params: P) -> wasmtime::Result<(R, Vec<u8>)> {
        let tool = self.fdtool()?;
        let f = tool.get_typed_func::<P, R>(&mut *self.caller, name)?;
        let r = in_tool(self.caller, |c| f.call(c, params))?;
        let mem = tool.get_memory(&mut *self.caller, "memory").ok_or_else(|| wasmtime::Error::msg("the descriptor tool has no memory"))?;
        Ok((r, mem.data(&*self.caller)[..64].to_vec()))
    }

    /// The numbers wasmtime-wasi will hand out again, given the descriptors now `open`, and
    /// whether they are known to be all (see [`clonecloud_wire::Descriptors::free_exact`]).
    /// Every number up to the highest ever handed out is open or free (numbers are handed out
    /// upwards, or reused), so the free ones are those below the highest open one that are not
    /// open, and above it a run up to the highest free one. There is such a run only if a number
    /// above the highest open one was ever freed; the device sees every close (the guest's
    /// through [`wrap_closes`], the clone's as it replays them), and then one `path_open` shows
    /// the highest free number (it takes the highest) and the `fd_close` after it puts it back,
    /// leaving the table as it was.
    pub fn free_descriptors(&mut self, open: &[u32]) -> (Vec<u32>, bool) {
        let top = open.iter().copied().max().unwrap_or(0);
        let mut free: Vec<u32> = (0..top).filter(|fd| !open.contains(fd)).collect();
        if self.caller.data().max_freed.is_none_or(|m| m <= top) {
            return (free, true);
        }
        let dir = 3..3 + self.caller.data().preopens;
        let Some(dirfd) = open.iter().copied().find(|fd| dir.contains(fd)) else { return (free, false) };
        let Some(got) = self.next_descriptor(dirfd) else { return (free, false) };
        if got > top {
            free.extend(top + 1..=got);
        }
        (free, true)
    }

    /// The number the next `path_open` gets, found by opening directory `dirfd` again and
    /// closing what it gave: the table is as it was if that number was free before.
    pub fn next_descriptor(&mut self, dirfd: u32) -> Option<u32> {
        let probe = FdOp::Open { dirfd, path: String::new(), directory: true, rights: 0, fdflags: 0, fd: u32::MAX };
        // The replay closes a descriptor that is not numbered as asked.
        match self.replay_fd(&probe) {
            Err(FdReplayError::Numbered { got, .. }) => Some(got),
            Err(_) | Ok(_) => None,
        }
    }

    /// What a clone needs to serve the descriptors in `open` beyond stdio and the preopens:
    /// each file's or directory's inode number, offset, flags and access. Descriptors WASI
    /// cannot describe are left out (they stay the device's).
    pub fn open_files(&mut self, open: &[u32]) -> Vec<clonecloud_wire::OpenFile> {
        let first = 3 + self.caller.data().preopens;
        let mut files = Vec::new();
        for &fd in open.iter().filter(|&&fd| fd >= first) {
            let Ok((0, st)) = self.fdtool_call::<i32, i32>("fdstat", fd as i32) else { continue };
            let dir = match st[0] {
                3 => true,
                4 => false,
                _ => continue,
            };
            let fdflags = u16::from_le_bytes([st[2], st[3]]);
            let rights = u64::from_le_bytes(st[8..16].try_into().expect("8 bytes"));
            let Ok((0, fstat)) = self.fdtool_call::<i32, i32>("filestat", fd as i32) else { continue };
            let ino = u64::from_le_bytes(fstat[8..16].try_into().expect("8 bytes"));
            let offset = if dir {
                0
            } else {
                match self.fdtool_call::<(i32, i64, i32), i32>("seek", (fd as i32, 0, 1)) {
                    Ok((0, at)) => u64::from_le_bytes(at[..8].try_into().expect("8 bytes")),
                    _ => continue,
                }
            };
            files.push(clonecloud_wire::OpenFile { fd, dir, ino, offset, fdflags, read: rights & (1 << 1) != 0, write: rights & (1 << 6) != 0 });
        }
        files
    }

    /// Replays one descriptor change a migrated function made (see [`clonecloud_wire::FdOp`])
    /// on the guest's own descriptor table. Answers with the change that undoes it, where there
    /// is one (an open is undone by a close, a seek or a change of flags by the old value; a
    /// close or a renumbering cannot be undone).
    pub fn replay_fd(&mut self, op: &FdOp) -> Result<Option<FdOp>, FdReplayError> {
        let errno = |r: wasmtime::Result<(i32, Vec<u8>)>| match r {
            Ok((0, out)) => Ok(out),
            Ok((e, _)) => Err(FdReplayError::Errno(e)),
            Err(e) => Err(FdReplayError::Tool(e.to_string())),
        };
        match op {
            FdOp::Open { dirfd, path, directory, rights, fdflags, fd } => {
                let path = if path.is_empty() { "." } else { path.as_str() };
                let tool = self.fdtool().map_err(|e| FdReplayError::Tool(e.to_string()))?;
                let mem = tool
                    .get_memory(&mut *self.caller, "memory")
                    .ok_or_else(|| FdReplayError::Tool("the descriptor tool has no memory".into()))?;
                mem.data_mut(&mut *self.caller)
                    .get_mut(FDTOOL_PATH..FDTOOL_PATH + path.len())
                    .ok_or(FdReplayError::PathTooLong)?
                    .copy_from_slice(path.as_bytes());
                let oflags = if *directory { 2 } else { 0 };
                let out = errno(self.fdtool_call::<(i32, i32, i32, i64, i32), i32>(
                    "open",
                    (*dirfd as i32, path.len() as i32, oflags, *rights as i64, i32::from(*fdflags)),
                ))?;
                let got = u32::from_le_bytes(out[..4].try_into().expect("4 bytes"));
                if got != *fd {
                    // Not the descriptor the clone had: closed again, the table is as it was.
                    if self.fdtool_call::<i32, i32>("close", got as i32).is_ok() {
                        freed(self.caller.data_mut(), got);
                    }
                    return Err(FdReplayError::Numbered { got, want: *fd });
                }
                Ok(Some(FdOp::Close { fd: *fd }))
            }
            FdOp::Close { fd } => {
                errno(self.fdtool_call::<i32, i32>("close", *fd as i32))?;
                freed(self.caller.data_mut(), *fd);
                Ok(None)
            }
            FdOp::Renumber { from, to } => {
                errno(self.fdtool_call::<(i32, i32), i32>("renumber", (*from as i32, *to as i32)))?;
                if from != to {
                    freed(self.caller.data_mut(), *from);
                }
                Ok(None)
            }
            FdOp::Seek { fd, offset } => {
                let was = errno(self.fdtool_call::<(i32, i64, i32), i32>("seek", (*fd as i32, 0, 1)))?;
                let was = u64::from_le_bytes(was[..8].try_into().expect("8 bytes"));
                errno(self.fdtool_call::<(i32, i64, i32), i32>("seek", (*fd as i32, *offset as i64, 0)))?;
                Ok(Some(FdOp::Seek { fd: *fd, offset: was }))
            }
            FdOp::SetFlags { fd, fdflags } => {
                let st = errno(self.fdtool_call::<i32, i32>("fdstat", *fd as i32))?;
                let was = u16::from_le_bytes([st[2], st[3]]);
                errno(self.fdtool_call::<(i32, i32), i32>("setflags", (*fd as i32, i32::from(*fdflags))))?;
                Ok(Some(FdOp::SetFlags { fd: *fd, fdflags: was }))
            }
        }
    }
}

/// A descriptor change a migrated function made that the device's WASI could not replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdReplayError {
    #[error("WASI error {0}")]
    Errno(i32),
    #[error("the descriptor tool failed: {0}")]
    Tool(String),
    #[error("the path is longer than the descriptor tool takes")]
    PathTooLong,
    #[error("the device opened it as descriptor {got}, not {want}")]
    Numbered { got: u32, want: u32 },
}

/// Descriptor numbers in a row found closed before a probe stops (wasmtime-wasi numbers new
/// descriptors just above the highest in use, or reuses closed ones).
const PROBE_GAP: u32 = 32;
/// WASI's EBADF.
const ERRNO_BADF: i32 = 8;

/// The memory of the scratch instance.
fn scratch_memory(caller: &mut Caller<'_, Device>, scratch: wasmtime::Instance) -> wasmtime::Result<wasmtime::Memory> {
    scratch.get_memory(&mut *caller, "__cc_memory.0").ok_or_else(|| wasmtime::Error::msg("the scratch instance has no memory"))
}

/// Calls `f` with `params` (checked against its type), results sized by its type.
fn call_sized(caller: &mut Caller<'_, Device>, f: Func, params: &[Val]) -> wasmtime::Result<Vec<Val>> {
    let ty = f.ty(&*caller);
    if ty.params().len() != params.len() || !ty.params().zip(params).all(|(t, v)| v.ty(&*caller).is_ok_and(|vt| vt.matches(&t))) {
        return Err(wasmtime::Error::msg(format!("arguments {params:?} do not fit the import")));
    }
    let mut results = vec![Val::I32(0); ty.results().len()];
    f.call(&mut *caller, params, &mut results)?;
    Ok(results)
}

impl Guest<'_, '_> {
    /// Runs import `import` (its function index) here, through its trampoline export, so WASI
    /// sees this instance's memory.
    pub fn call_import(&mut self, import: u32, params: &[Val], results: &mut [Val]) -> wasmtime::Result<()> {
        let f = self.trampoline(import)?;
        f.call(&mut *self.caller, params, results)
    }

    fn trampoline(&mut self, import: u32) -> wasmtime::Result<Func> {
        let f = match self.caller.data().trampolines.get(&import) {
            Some(f) => *f,
            None => {
                let name = self.trampoline_name(import)?;
                let f = self
                    .caller
                    .get_export(&name)
                    .and_then(|e| e.into_func())
                    .ok_or_else(|| wasmtime::Error::msg(format!("missing export {name}")))?;
                self.caller.data_mut().trampolines.insert(import, f);
                f
            }
        };
        Ok(f)
    }
}

/// The guest's monotonic clock: wasmtime-wasi's own, with an origin this runner knows, so a
/// clone can continue it.
struct RunClock(std::time::Instant);

impl wasmtime_wasi::HostMonotonicClock for RunClock {
    fn resolution(&self) -> u64 {
        wasmtime_wasi::clocks::monotonic_clock().resolution()
    }
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// Point `j`'s function (element `j` of the exported table of points), resolved once. Called
/// as it is, it asks the host again when its flag is set: [`call_body`] runs its code.
fn local_body(caller: &mut Caller<'_, Device>, j: usize) -> wasmtime::Result<Func> {
    if let Some(Some(f)) = caller.data().locals.get(j) {
        return Ok(*f);
    }
    let table = match caller.data().locals_table {
        Some(t) => t,
        None => {
            let t = caller
                .get_export(LOCALS_EXPORT)
                .and_then(|e| e.into_table())
                .ok_or_else(|| wasmtime::Error::msg(format!("missing export {LOCALS_EXPORT}")))?;
            caller.data_mut().locals_table = Some(t);
            t
        }
    };
    let f = table
        .get(&mut *caller, j as u64)
        .and_then(|r| r.as_func().flatten().copied())
        .ok_or_else(|| wasmtime::Error::msg(format!("no migration point {j}")))?;
    let locals = &mut caller.data_mut().locals;
    if locals.len() <= j {
        locals.resize(j + 1, None);
    }
    locals[j] = Some(f);
    Ok(f)
}

/// Runs point `j`'s code here, whatever its flag: with the flag set, the bypass global lets this
/// one call through (the point's check clears it, so the calls it makes are points again).
fn call_body(caller: &mut Caller<'_, Device>, j: usize, params: &[Val], results: &mut [Val]) -> wasmtime::Result<()> {
    let body = local_body(caller, j)?;
    let flags = flags(caller)?;
    if flags.data(&*caller).get(j).is_none_or(|&flag| flag == 0) {
        return body.call(&mut *caller, params, results);
    }
    let bypass = match caller.data().bypass {
        Some(g) => g,
        None => {
            let g = caller
                .get_export(BYPASS_EXPORT)
                .and_then(|e| e.into_global())
                .ok_or_else(|| wasmtime::Error::msg(format!("missing export {BYPASS_EXPORT}")))?;
            caller.data_mut().bypass = Some(g);
            g
        }
    };
    bypass.set(&mut *caller, Val::I32((j as i32).wrapping_add(1)))?;
    let r = body.call(&mut *caller, params, results);
    // Cleared already when the code ran; not when the call failed before it (a stack overflow).
    bypass.set(&mut *caller, Val::I32(0))?;
    r
}

/// The exported memory of the flags, resolved once.
fn flags(caller: &mut Caller<'_, Device>) -> wasmtime::Result<wasmtime::Memory> {
    if let Some(m) = caller.data().flags {
        return Ok(m);
    }
    let m = caller
        .get_export(FLAGS_EXPORT)
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg(format!("missing export {FLAGS_EXPORT}")))?;
    caller.data_mut().flags = Some(m);
    Ok(m)
}

impl Program {
    /// Models `wasm`, checks its imports, rewrites it with `points` (unless there are none),
    /// and compiles it (or loads it from `cache`).
    pub fn prepare(
        engine: &Engine,
        cache: &ModuleCache,
        wasm: &[u8],
        points: &Points,
        mode: PointMode,
    ) -> Result<Program, ExecError> {
        let model = Model::parse_without_call_graph(wasm)?;
        let threaded = crate::threads::is_threaded(&model);
        if threaded {
            crate::threads::check(&model)?;
        } else {
            check_imports(&model)?;
        }
        let chosen = match points {
            Points::None => None,
            Points::All => Some(model.all_points()),
            Points::Named(names) => Some(model.resolve_points(names)?),
        };
        let mut layout = Layout::default();
        let (module, bytes, points) = match chosen {
            None => (cache.load_or_compile(engine, wasm)?, Some(std::borrow::Cow::Borrowed(wasm)), Vec::new()),
            Some(chosen) => {
                // In host mode the flags start set, so that calls made during instantiation (the
                // start function) go through the host as well.
                let config = RewriteConfig {
                    flags_set: mode == PointMode::Host,
                };
                // Where the rewrite puts things is computed without rewriting; the rewritten
                // module is cached under what it is made from, so a cached launch neither
                // rewrites nor compiles.
                let plan = rewrite_layout(&model, &chosen)?;
                let sorted: Vec<u32> = plan.points.iter().map(|p| p.function).collect();
                let key = ModuleCache::rewrite_key(xxhash_rust::xxh3::xxh3_128(wasm), &sorted, &config);
                // In flag mode nothing can migrate, so the rewritten bytes (for a clone) are not
                // kept, nor read from the cache.
                let (module, bytes) = cache.load_or_rewrite(engine, key, config.flags_set, || {
                    let rewritten = rewrite_with(&model, wasm, &sorted, &config)?;
                    debug!(
                        points = rewritten.points.len(),
                        bytes = rewritten.wasm.len(),
                        "module rewritten"
                    );
                    Ok(rewritten.wasm)
                })?;
                check_migrate_imports(&module, &plan.migrate_imports)?;
                layout.globals = plan.globals;
                layout.memory = plan.memories.into_iter().find(|(m, _)| *m == 0).map(|(_, n)| n);
                layout.memory_max_pages = model.memories.iter().find(|m| m.index == 0).map(|m| {
                    let bytes = m.maximum.map_or(u64::MAX, |pages| pages.saturating_mul(m.page_size));
                    u32::try_from(bytes.div_ceil(65536)).unwrap_or(u32::MAX).min(65536)
                });
                layout.trampolines = plan.trampolines;
                (module, bytes.map(std::borrow::Cow::Owned), plan.points)
            }
        };
        if let Some(bytes) = bytes {
            layout.hash = clonecloud_wire::content_hash(&bytes);
            layout.wasm = bytes.into_owned();
        }
        layout.imports = model
            .functions
            .iter()
            .filter_map(|f| match f.kind {
                clonecloud_model::FunctionKind::Imported { import } => Some((model.imports[import].module.clone(), model.imports[import].name.clone())),
                _ => None,
            })
            .collect();
        Ok(Program {
            engine: engine.clone(),
            module,
            threaded,
            points: points.into(),
            flags_set: mode == PointMode::Host,
            layout: Arc::new(layout),
            pace: None,
        })
    }

    /// Paces every thread of every run of this program (see [`crate::Pace`]): its engine must
    /// have epoch interruption ([`new_device_engine_with`] `paced`, or
    /// [`crate::threads::new_threads_engine_with`] with `epochs`); starts the thread that
    /// advances the engine's epoch.
    pub fn set_pace(&mut self, pace: crate::Pace) -> Result<(), ExecError> {
        crate::Pace::start_ticker(&self.engine)?;
        self.pace = Some(pace);
        Ok(())
    }

    /// The module's bytes and state layout.
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// The migration points of the compiled module.
    pub fn points(&self) -> &[RewrittenPoint] {
        &self.points
    }

    /// Whether the module is multi-threaded (wasi-threads): it runs on an engine from
    /// [`crate::threads::new_threads_engine_with`], and a spawned thread that exits or traps ends
    /// the program through [`Program::run_threads`]'s hook.
    pub fn is_threaded(&self) -> bool {
        self.threaded
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn module(&self) -> &Module {
        &self.module
    }

    /// Runs the module's command entry (`_start`, or the default export `""`) once, in a fresh
    /// instance, to its outcome.
    pub fn run(&self, wasi: &WasiConfig) -> Result<RunReport, ExecError> {
        self.run_with(wasi, None)
    }

    /// Runs like [`Program::run`], with `migrator` deciding what happens at every migration
    /// point whose flag is set.
    /// A threaded program's spawned thread that exits or traps ends the process as `wasmtime
    /// run` does (see [`Program::run_threads`]).
    pub fn run_with(&self, wasi: &WasiConfig, migrator: Option<Box<dyn Migrator>>) -> Result<RunReport, ExecError> {
        self.run_threads(wasi, migrator, exit_like_wasmtime)
    }

    /// Runs like [`Program::run_with`]; in a threaded program, `end` is what a spawned thread
    /// that exits or traps runs (it must not return: the program ends). The run's outcome is
    /// the main thread's; threads still running when it ends are not waited for.
    pub fn run_threads(&self, wasi: &WasiConfig, migrator: Option<Box<dyn Migrator>>, end: crate::threads::EndHook) -> Result<RunReport, ExecError> {
        // On a thread of its own, whose stack is known to hold what the engine's limit allows.
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("guest".into())
                .stack_size(RUN_THREAD_STACK)
                .spawn_scoped(s, || self.run_here(wasi, migrator, end))
                .map_err(|e| {
                    ExecError::Runtime(wasmtime::Error::msg(format!(
                        "cannot start the guest thread: {e}"
                    )))
                })?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn run_here(&self, wasi: &WasiConfig, migrator: Option<Box<dyn Migrator>>, end: crate::threads::EndHook) -> Result<RunReport, ExecError> {
        let clock_origin = std::time::Instant::now();
        // With a migrator, stdin is rewindable: a migration that read it through a proxied call
        // and was then abandoned puts the bytes back.
        let stdin = (wasi.stdio == Stdio::Inherit && migrator.is_some()).then(crate::stdin::Stdin::default);
        let ctx = new_wasi_ctx(wasi, stdin.clone(), clock_origin)?;
        let preopens = wasi.dirs.len() as u32;
        let hardware = crate::hardware::shared(wasi.hardware.clone());
        let mut device = if self.threaded {
            let seed = crate::threads::ThreadSeed {
                hardware: hardware.clone(),
                stdio: wasi.stdio,
                stdin: stdin.clone(),
                preopens,
                clock_origin,
                migrator: std::sync::Mutex::new(migrator.as_ref().and_then(|m| m.for_thread())),
            };
            let threads = Arc::new(crate::threads::Threads::new(self.clone(), ctx, seed, end)?);
            Device::new(None, Some(threads), migrator, wasi.stdio, stdin, preopens, clock_origin)
        } else {
            Device::new(Some(ctx), None, migrator, wasi.stdio, stdin, preopens, clock_origin)
        };
        device.hardware = hardware;
        let mut store = self.new_store(device);

        let report = |store: &Store<Device>, outcome| RunReport {
            outcome,
            host_calls: store.data().host_calls,
            memory_resident: 0,
        };
        let instance = match self.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => return Ok(report(&store, outcome_of(e)?)),
        };
        let entry = ["", "_start"]
            .into_iter()
            .find_map(|name| instance.get_func(&mut store, name).map(|f| (name, f)));
        let Some((name, entry)) = entry else {
            // A module with no command entry has done its work in its start function.
            return Ok(report(&store, Outcome::Exited(0)));
        };
        let entry = entry
            .typed::<(), ()>(&store)
            .map_err(|_| ExecError::BadEntry {
                name: name.to_string(),
            })?;
        let outcome = match entry.call(&mut store, ()) {
            Ok(()) => Outcome::Exited(0),
            Err(e) => outcome_of(e)?,
        };
        let memory_resident = match instance.get_export(&mut store, "memory") {
            Some(wasmtime::Extern::Memory(m)) => resident(m.data_ptr(&store), m.data_size(&store)),
            Some(wasmtime::Extern::SharedMemory(m)) => resident(m.data().as_ptr().cast(), m.data_size()),
            _ => 0,
        };
        Ok(RunReport { memory_resident, ..report(&store, outcome) })
    }

    /// A linker with WASI preview 1 (and `wasi_unstable`) and the host side of the migration
    /// imports: what instantiates the module a second time (the scratch instance).
    fn linker(&self) -> Result<Linker<Device>, ExecError> {
        let mut linker = self.wasi_linker()?;
        wrap_closes(&mut linker, self)?;
        let migrate_imports = self
            .module
            .imports()
            .filter(|i| i.module() == clonecloud_model::IMPORT_MODULE);
        for import in migrate_imports {
            let ty = import.ty().unwrap_func().clone();
            linker
                .func_new(import.module(), import.name(), ty, self.answer())
                .map_err(ExecError::Runtime)?;
        }
        Ok(linker)
    }

    /// A linker with WASI preview 1 (and `wasi_unstable`) only.
    fn wasi_linker(&self) -> Result<Linker<Device>, ExecError> {
        let mut linker: Linker<Device> = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, Device::wasi)
            .map_err(ExecError::Runtime)?;
        wasmtime_wasi::p0::add_to_linker_sync(&mut linker, Device::wasi)
            .map_err(ExecError::Runtime)?;
        crate::hardware::add_to_linker(&mut linker).map_err(ExecError::Runtime)?;
        Ok(linker)
    }

    /// [`Program::wasi_linker`], for the threads' forwarder.
    pub(crate) fn wasi_only_linker(&self) -> Result<Linker<Device>, ExecError> {
        self.wasi_linker()
    }

    /// A store for a run: in a threaded program, with the call hook that gives the shared WASI
    /// context back and keeps the count of threads running wasm, and (with points) the epoch
    /// deadline at which a thread stops when the world is stopped (see [`crate::threads::World`]).
    fn new_store(&self, device: Device) -> Store<Device> {
        let threaded = device.threads.is_some();
        let pace = self.pace;
        let mut store = Store::new(&self.engine, device);
        if !threaded && pace.is_none() {
            return store;
        }
        store.call_hook(move |mut cx, hook| {
            use wasmtime::CallHook;
            let device = cx.data_mut();
            if matches!(hook, CallHook::ReturningFromHost) {
                device.release_wasi();
            }
            // Paced, the guest's wasm is timed (the descriptor tool's is host work).
            if let Some(p) = &pace
                && device.in_tool == 0
            {
                match hook {
                    CallHook::CallingWasm | CallHook::ReturningFromHost => p.enter(),
                    CallHook::ReturningFromWasm | CallHook::CallingHost => p.leave(),
                }
            }
            if let Some(t) = device.threads.as_deref() {
                match hook {
                    CallHook::CallingWasm | CallHook::ReturningFromHost => t.world.enter(),
                    CallHook::ReturningFromWasm | CallHook::CallingHost => t.world.leave(),
                }
            }
            Ok(())
        });
        // In a threaded program the epoch check is a safe point: wasmtime calls the deadline
        // callback as a host call (its libcall fires `CallingHost` and `ReturningFromHost`), so
        // the thread leaves wasm there, and on the way back in the hook stops it while the world
        // is stopped. Paced, the callback sleeps what the guest's code owes (not inside the
        // descriptor tool). Harmless on an engine without epoch interruption (no check is
        // compiled in).
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |cx| {
            if let Some(p) = &pace
                && cx.data().in_tool == 0
            {
                p.pay();
            }
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
        store
    }

    /// A spawned thread's store (see [`Program::new_store`]).
    pub(crate) fn thread_store(&self, threads: Arc<crate::threads::Threads>) -> Store<Device> {
        let seed = &threads.seed;
        let migrator = seed.migrator.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|m| m.for_thread());
        let mut device = Device::new(None, Some(threads.clone()), migrator, seed.stdio, seed.stdin.clone(), seed.preopens, seed.clock_origin);
        device.hardware = seed.hardware.clone();
        self.new_store(device)
    }

    /// Instantiates the module for a spawned thread.
    pub(crate) fn instantiate_thread(&self, store: &mut Store<Device>) -> wasmtime::Result<wasmtime::Instance> {
        self.instantiate(store)
    }

    /// The host side of a migration import (one per type of the points; the point's ordinal is
    /// the last argument): the migrator decides, or the body is called back.
    fn answer(&self) -> impl Fn(Caller<'_, Device>, &[Val], &mut [Val]) -> wasmtime::Result<()> + Send + Sync + 'static {
        // Cheap: the program's parts are shared.
        let program = self.clone();
        move |mut caller, params, results| {
            let (j, params) = match params.split_last() {
                Some((Val::I32(j), params)) if (*j as u32 as usize) < program.points.len() => (*j as u32 as usize, params),
                _ => return Err(wasmtime::Error::msg("a migration import was called without a point's ordinal")),
            };
            caller.data_mut().host_calls += 1;
            // A migrator decides; without one, the point is answered here by calling the
            // original body back.
            if let Some(mut m) = caller.data_mut().migrator.take() {
                caller.data_mut().migrator = m.nested();
                let r = m.migrate(&mut Guest { caller: &mut caller, program: &program }, j, params, results);
                caller.data_mut().migrator = Some(m);
                return r;
            }
            call_body(&mut caller, j, params, results)
        }
    }

    /// Instantiates the module in `store` for a run, as `self.linker()` would, at a cost that does
    /// not grow with the points (there is one migration import per type of the points). The
    /// migration imports are given directly, not through a linker's name map. With every flag
    /// clear (flag mode) no call can reach them (only a migrator, itself reached through one,
    /// sets a flag), so they refuse to run.
    fn instantiate(&self, store: &mut Store<Device>) -> wasmtime::Result<wasmtime::Instance> {
        let mut wasi = self.wasi_linker().map_err(|e| wasmtime::Error::msg(e.to_string()))?;
        // With a migrator, the device must see the guest's own closes (a clone numbers new
        // descriptors from the free numbers the device knows).
        if store.data().migrator.is_some() {
            wrap_closes(&mut wasi, self).map_err(|e| wasmtime::Error::msg(e.to_string()))?;
        }
        if let Some(threads) = store.data().threads.clone() {
            threads.link(&mut wasi, &*store)?;
        }
        if self.points.is_empty() {
            return wasi.instantiate(&mut *store, &self.module);
        }
        let mut externs: Vec<wasmtime::Extern> = Vec::with_capacity(self.module.imports().len());
        for import in self.module.imports() {
            if import.module() != clonecloud_model::IMPORT_MODULE || !import.name().starts_with("migrate.") {
                let e = wasi.get_by_import(&mut *store, &import).ok_or_else(|| {
                    wasmtime::Error::msg(format!(
                        "unknown import: `{}::{}` has not been defined",
                        import.module(),
                        import.name()
                    ))
                })?;
                externs.push(e);
                continue;
            }
            let ty = import.ty().unwrap_func().clone();
            let f = if self.flags_set {
                Func::new(&mut *store, ty, self.answer())
            } else {
                Func::new(&mut *store, ty, |_, _, _| {
                    Err(wasmtime::Error::msg(
                        "a migration import was called in flag mode, where every flag stays clear",
                    ))
                })
            };
            externs.push(f.into());
        }
        wasmtime::Instance::new(&mut *store, &self.module, &externs)
    }
}

/// Checks that the compiled module's `clonecloud` imports are the migration imports the layout
/// names, in their order: a cached module made by another rewriter is refused.
fn check_migrate_imports(module: &Module, expected: &[(u32, String)]) -> Result<(), ExecError> {
    let mut expected = expected.iter();
    let mut imports = module
        .imports()
        .filter(|i| i.module() == clonecloud_model::IMPORT_MODULE && i.name().starts_with("migrate."));
    loop {
        match (expected.next(), imports.next()) {
            (None, None) => return Ok(()),
            (Some((_, name)), Some(i)) if i.name() == name => {}
            _ => {
                return Err(ExecError::Runtime(wasmtime::Error::msg(
                    "the compiled module's migration imports do not match its points (a stale \
                     module cache? run with --no-cache or clear it)",
                )));
            }
        }
    }
}

/// Bytes of the `len` bytes at `base` (a page-aligned mapping) resident in memory now.
fn resident(base: *const u8, len: usize) -> u64 {
    if len == 0 || base.is_null() {
        return 0;
    }
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `base..base + len` is the memory's mapping (wasmtime maps linear memories on page
    // boundaries), and `vec` holds one byte per page of it.
    let r = unsafe { libc::mincore(base as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if r != 0 {
        return 0;
    }
    vec.iter().filter(|b| **b & 1 == 1).count() as u64 * page as u64
}

/// Refuses a module whose imports WASI preview 1 does not satisfy, before wasmtime does it with
/// a less helpful message.
fn check_imports(model: &Model) -> Result<(), ExecError> {
    if crate::threads::is_threaded(model) {
        return Err(ExecError::Threads(
            "the module is multi-threaded (wasi-threads): `clonecloud run` runs it, but its functions cannot be migration points yet (profiling and offloading need them)".into(),
        ));
    }
    match model.imports.iter().find(|i| !matches!(i.class, ImportClass::Wasi | ImportClass::Device)) {
        None => Ok(()),
        Some(i) => Err(ExecError::UnsupportedImport {
            module: i.module.clone(),
            name: i.name.clone(),
            kind: import_kind(&i.kind),
        }),
    }
}

/// The guest's WASI preview 1 context for `wasi`: its arguments, environment, preopened
/// directories and standard streams (stdin from `stdin` when given), and a monotonic clock that
/// starts at `clock_origin`.
pub(crate) fn new_wasi_ctx(wasi: &WasiConfig, stdin: Option<crate::stdin::Stdin>, clock_origin: std::time::Instant) -> Result<WasiP1Ctx, ExecError> {
    let mut builder = WasiCtxBuilder::new();
    builder.args(&wasi.args).envs(&wasi.env).monotonic_clock(RunClock(clock_origin));
    match stdin {
        Some(s) => {
            builder.stdin(s).inherit_stdout().inherit_stderr();
        }
        None if wasi.stdio == Stdio::Inherit => {
            builder.inherit_stdio();
        }
        None => {}
    }
    for dir in &wasi.dirs {
        builder
            .preopened_dir(&dir.host, &dir.guest, FsPerms::ReadWrite)
            .map_err(|source| ExecError::Preopen {
                host: dir.host.clone(),
                source,
            })?;
    }
    Ok(builder.build_p1())
}

/// What an import of `kind` is, in words.
pub(crate) fn import_kind(kind: &ImportKind) -> &'static str {
    match kind {
        ImportKind::Func { .. } => "a function",
        ImportKind::Table => "a table",
        ImportKind::Memory => "a memory",
        ImportKind::Global => "a global",
        ImportKind::Tag => "a tag",
    }
}

/// Sorts an error out of wasm into the guest's exit, a trap, or a failure of the host.
pub(crate) fn outcome_of(e: wasmtime::Error) -> Result<Outcome, ExecError> {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return Ok(Outcome::Exited(exit.0));
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        let backtrace = e
            .downcast_ref::<wasmtime::WasmBacktrace>()
            .map(|bt| bt.to_string());
        return Ok(Outcome::Trapped {
            trap: *trap,
            backtrace,
        });
    }
    Err(ExecError::Runtime(e))
}
