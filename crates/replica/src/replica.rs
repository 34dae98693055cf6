//! The clone's copy of a device's thread: a second instance of the same rewritten module, whose
//! state is kept equal to the device's at every migration, and in which migrated functions run.
//!
//! The replica serves WASI itself ([`crate::clone_wasi`]): files from the replica of the device's
//! preopened directories, output and file changes into a journal the device carries out when it
//! merges the return (and drops if the migration fails), the run's arguments and environment,
//! the device's clocks, randomness. Any call it cannot serve exactly as the device would stops
//! the function with [`WasiOnClone`], and the device runs it locally instead (nothing on the
//! device changed since the function's entry, so that is always correct). Nested migration
//! points run locally: every flag is cleared.

use clonecloud_exec::ExecError;
use clonecloud_files::{FileOp, Fs};
use clonecloud_wire::{Clocks, Descriptors};
use clonecloud_exec::state::{ApplyError, PAGE_SIZE, Page, PageTable, StateHandles};
use wasmtime::{Engine, Func, Module, Store, Trap, Val};

/// A function on the clone called an import the clone cannot serve.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the function called `{module}`.`{name}`, which the clone does not serve")]
pub struct WasiOnClone {
    pub module: String,
    pub name: String,
}

/// Why a call on the replica did not return.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("wasm trap: {0}")]
    Trap(Trap),
    #[error("the call ran past the clone's limit of {0:?}")]
    Deadline(std::time::Duration),
    #[error("the call wanted more memory than the clone allows ({0} bytes)")]
    Memory(usize),
    #[error("the call wanted more memory than the clone's per-device limit allows all of this device's runs together ({0} bytes)")]
    DeviceMemory(usize),
    #[error(transparent)]
    Host(HostBudget),
    #[error(transparent)]
    Import(WasiOnClone),
    #[error("no migration point {0} in this module")]
    NoPoint(u32),
    #[error(transparent)]
    Proxy(ProxyFailed),
    /// The device answered a proxied call with state this replica cannot take (memory past its
    /// limits): the link is fine, the call runs on the device.
    #[error(transparent)]
    ProxyAnswer(ProxyAnswerRefused),
    #[error("the function threw a wasm exception it did not catch")]
    Exception,
    /// The device no longer awaits the call (it cancelled it, or its link broke and no resume
    /// came): it was stopped, and nothing is to be answered.
    #[error("the device no longer awaits this call: stopped")]
    Abandoned,
    #[error("{0}")]
    Other(wasmtime::Error),
}

/// The instant `t` from now (far ahead for a limit too large to add).
fn deadline_after(t: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(t).unwrap_or_else(|| now + std::time::Duration::from_secs(1 << 32))
}

/// What a migrated function wrote to stdout (1) and stderr (2), in order.
pub type Output = Vec<(u32, Vec<u8>)>;

/// How often a clone engine's epoch advances; a call's deadline (and whether the device still
/// awaits it) is checked every [`CHECK_EVERY`] ticks, so a run-time limit is kept to within
/// that.
pub use clonecloud_exec::EPOCH_TICK;

/// What one migrated call may use on the clone.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memories and tables, all of them together, in bytes (a table element counts as a
    /// pointer).
    pub memory: usize,
    /// What else the guest can make the clone hold, in bytes: the contents of files written on
    /// the clone, the nodes it makes, the file journal and the buffered output.
    pub host: usize,
    /// Wall time of one call.
    pub run_time: std::time::Duration,
    /// A module's size, in bytes (the clone compiles what a device uploads).
    pub module: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory: 4 << 30, host: 1 << 30, run_time: std::time::Duration::from_secs(300), module: 256 << 20 }
    }
}

/// A call would make the clone hold more host memory than [`Limits::host`] allows (files,
/// journal, output): it fails, and the device runs it on its own file system.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HostBudget(pub String);

/// A growth of a linear memory or a table past [`Limits::memory`], counted over all of them.
#[derive(Debug, Clone, thiserror::Error)]
#[error("growing a {what} would make the replica's memories and tables {wanted} bytes, over the clone's limit of {limit} bytes")]
pub struct OverLimit {
    pub what: &'static str,
    pub wanted: usize,
    pub limit: usize,
}

/// What all the replicas of one device may hold together: their memories and tables and their
/// host-side buffers (file contents written on the clone, journals, output). A device with many
/// runs at once (up to the server's `--max-runs`) shares one budget instead of getting
/// [`Limits`] per run. Each replica charges its growths here as well as to its own limits, and
/// gives everything back when it is dropped.
pub type DeviceBudget = clonecloud_files::Pool;

/// A growth that would make a device's replicas together hold more than its
/// [`DeviceBudget`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("growing a {what} would make this device's replicas hold {wanted} bytes together, over the clone's per-device limit of {limit} bytes")]
pub struct OverDeviceLimit {
    pub what: &'static str,
    pub wanted: usize,
    pub limit: usize,
}

/// Memories and tables one replica may have (a rewritten module has its own and one of each
/// more); past them instantiation fails and the device runs the calls.
const MAX_MEMORIES: usize = 16;
const MAX_TABLES: usize = 64;

/// The replica's resource limiter: every linear memory and table of the store counted against
/// one budget of bytes (wasmtime's `StoreLimits` bounds each memory alone and tables not at
/// all). A growth past it traps, so the call fails and runs on the device, where it succeeds; a
/// growth past the module's own maximum fails in wasm (-1), as on the device.
#[derive(Debug)]
struct MemoryBudget {
    limit: usize,
    used: usize,
    /// What this replica's growths took of the device's budget.
    device_used: usize,
    /// The last growth allowed (bytes, and of the device's budget), given back if it then failed.
    pending: (usize, usize),
    /// The device's budget, shared with its other replicas.
    device: Option<std::sync::Arc<DeviceBudget>>,
}

impl MemoryBudget {
    /// `more` bytes of `what`, of which the device's budget is charged `device_more` (a memory
    /// counts twice there: the replica keeps a copy of what it agreed with the device).
    fn grow(&mut self, what: &'static str, more: usize, device_more: usize) -> wasmtime::Result<bool> {
        let wanted = self.used.saturating_add(more);
        if wanted > self.limit {
            return Err(wasmtime::Error::new(OverLimit { what, wanted, limit: self.limit }));
        }
        if let Some(d) = &self.device
            && let Err(wanted) = d.take(device_more as u64)
        {
            let saturate = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
            return Err(wasmtime::Error::new(OverDeviceLimit { what, wanted: saturate(wanted), limit: saturate(d.limit()) }));
        }
        self.used = wanted;
        self.device_used = self.device_used.saturating_add(device_more);
        self.pending = (more, device_more);
        Ok(true)
    }

    fn failed(&mut self, what: &str, error: wasmtime::Error) -> wasmtime::Result<()> {
        let (pending, device_pending) = std::mem::take(&mut self.pending);
        self.used = self.used.saturating_sub(pending);
        self.device_used = self.device_used.saturating_sub(device_pending);
        if let Some(d) = &self.device {
            d.give(device_pending as u64);
        }
        // The device might have had it: not a wasm failure but the call's.
        Err(error.context(format!("growing {what} failed on the clone")))
    }
}

impl Drop for MemoryBudget {
    fn drop(&mut self) {
        if let Some(d) = &self.device {
            d.give(self.device_used as u64);
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryBudget {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let more = desired.saturating_sub(current);
        self.grow("memory", more, more.saturating_mul(2))
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.failed("memory", error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let more = desired.saturating_sub(current).saturating_mul(std::mem::size_of::<usize>());
        self.grow("table", more, more)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.failed("a table", error)
    }

    fn instances(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

/// The device's clocks as of a migration, continued by this machine's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClockBase {
    device: Clocks,
    at: std::time::Instant,
}

impl ClockBase {
    pub(crate) fn realtime(&self) -> u64 {
        self.device.realtime.saturating_add(self.at.elapsed().as_nanos() as u64)
    }
    pub(crate) fn monotonic(&self) -> u64 {
        self.device.monotonic.saturating_add(self.at.elapsed().as_nanos() as u64)
    }
}

/// The replica's store data: the replicated files (and the output journal they keep), the
/// clocks, the memory limit, and the run's arguments and environment.
#[derive(Debug)]
pub struct Data {
    pub(crate) fs: Fs,
    pub(crate) clocks: ClockBase,
    limits: MemoryBudget,
    /// When the call in progress must end: host code looping over guest data checks it (the
    /// epoch deadline interrupts wasm only).
    pub(crate) deadline: std::time::Instant,
    pub(crate) lists: [Vec<Vec<u8>>; 2],
    /// The state agreed with the device (taken out while it is worked on).
    agreed: Agreed,
    /// The way to the device for proxied imports, during a call.
    proxy: Option<Box<dyn ImportProxy>>,
    /// Whether captures XOR pages with their agreed content (the device compresses).
    xor: bool,
    memory_limit: usize,
}

/// Between checks of the epoch ([`CHECK_EVERY`] ticks): the call ends at its deadline as a
/// trap (as a wasm call past its time does), or when the proxy says the device no longer
/// awaits it.
fn check_epoch(mut ctx: wasmtime::StoreContextMut<'_, Data>) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    check_call(ctx.data_mut())?;
    Ok(wasmtime::UpdateDeadline::Continue(CHECK_EVERY))
}

/// Whether the call in progress may go on: an error past its deadline (a trap, as a wasm call
/// past its time) or when the device no longer awaits it. Host code that waits (a sleep the
/// guest asked for) asks this between slices.
pub(crate) fn check_call(data: &mut Data) -> wasmtime::Result<()> {
    if std::time::Instant::now() >= data.deadline {
        return Err(wasmtime::Error::new(Trap::Interrupt));
    }
    if data.proxy.as_mut().is_some_and(|p| p.abandoned()) {
        return Err(wasmtime::Error::new(Abandoned));
    }
    Ok(())
}

/// A state delta as a proxied import call carries it (both ways).
#[derive(Debug, Clone, Default)]
pub struct Delta {
    pub wasm_pages: u32,
    pub pages: Vec<Page>,
    pub xor: bool,
    pub globals: Vec<(u32, Val)>,
}

/// A migrated call's way back to the device, for the imports the clone may not answer itself
/// ([`crate::clone_wasi`] says which): the device applies `delta`, runs import `import` (its
/// function index) with `args` through its trampoline, and answers with the results and what
/// the import changed.
pub trait ImportProxy: Send + std::fmt::Debug {
    fn call(&mut self, import: u32, args: &[Val], delta: Delta) -> Result<(Vec<Val>, Delta), Box<dyn std::error::Error + Send + Sync>>;

    /// Whether the device no longer awaits the call in progress (it cancelled it, say): asked
    /// every [`CHECK_EVERY`] ticks of the epoch while wasm runs, and between the slices of a
    /// sleep the guest asked for, without waiting; `true` stops the call
    /// ([`CallError::Abandoned`]).
    fn abandoned(&mut self) -> bool {
        false
    }
}

/// How many epoch ticks pass between checks of the call's deadline and of whether the device
/// still awaits it.
pub const CHECK_EVERY: u64 = 5;

/// A call stopped because the device no longer awaits it; an [`ImportProxy::call`] returns it
/// when the device cancelled the call instead of answering.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the device no longer awaits this call")]
pub struct Abandoned;

/// A proxied import call failed (the link, the device refused it): the call cannot go on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("a proxied call of `{name}` failed: {why}")]
pub struct ProxyFailed {
    pub name: String,
    pub why: String,
}

/// The device's answer to a proxied call carried state this replica cannot take.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the device's answer to `{name}` cannot be applied on the clone: {why}")]
pub struct ProxyAnswerRefused {
    pub name: String,
    pub why: String,
}

/// What both sides agree the memory holds: the page hashes, a shadow copy (for XOR deltas), the
/// handles to the state, and where the allocator keeps its free lists.
#[derive(Debug, Default)]
struct Agreed {
    handles: StateHandles,
    table: PageTable,
    shadow: Vec<u8>,
    heap: clonecloud_exec::heap::HeapHint,
}

impl Agreed {
    fn apply(&mut self, mut store: impl wasmtime::AsContextMut, limit: usize, d: &Delta) -> Result<(), ApplyError> {
        if d.wasm_pages as usize * 65536 > limit {
            return Err(ApplyError::Grow { wasm_pages: d.wasm_pages, why: format!("over the clone's memory limit of {limit} bytes") });
        }
        self.handles.apply(&mut store, d.wasm_pages, &d.pages, d.xor, &d.globals)?;
        let memory = self.handles.memory_bytes(&store);
        self.table.record(memory, d.pages.iter().map(|(i, _)| *i));
        self.shadow.resize(memory.len(), 0);
        for (i, _) in &d.pages {
            let at = *i as usize * PAGE_SIZE;
            self.shadow[at..at + PAGE_SIZE].copy_from_slice(&memory[at..at + PAGE_SIZE]);
        }
        Ok(())
    }

    fn capture(&mut self, mut store: impl wasmtime::AsContextMut, xor: bool) -> Delta {
        let memory = self.handles.memory_bytes(&store);
        let free = if self.heap.is_empty() { Vec::new() } else { self.heap.free_pages(memory) };
        let mut pages = self.table.diff_skipping(memory, &free);
        self.shadow.resize(memory.len(), 0);
        for (i, page) in &mut pages {
            let at = *i as usize * PAGE_SIZE;
            let agreed = &mut self.shadow[at..at + PAGE_SIZE];
            if xor {
                page.iter_mut().zip(agreed.iter()).for_each(|(p, a)| *p ^= a);
                agreed.iter_mut().zip(&memory[at..at + PAGE_SIZE]).for_each(|(a, m)| *a = *m);
            } else {
                agreed.copy_from_slice(page);
            }
        }
        let wasm_pages = self.handles.wasm_pages(&store);
        Delta { wasm_pages, pages, xor, globals: self.handles.globals(&mut store) }
    }
}

/// Runs import `import` (named `name`) on the device through the call's proxy: the clone's
/// changes go first, the device's come back.
pub(crate) fn proxy_call(caller: &mut wasmtime::Caller<'_, Data>, import: u32, name: &str, params: &[Val], results: &mut [Val]) -> wasmtime::Result<()> {
    let failed = |why: String| wasmtime::Error::new(ProxyFailed { name: name.to_string(), why });
    let Some(mut link) = caller.data_mut().proxy.take() else {
        return Err(wasmtime::Error::new(WasiOnClone { module: "wasi_snapshot_preview1".into(), name: name.to_string() }));
    };
    let mut agreed = std::mem::take(&mut caller.data_mut().agreed);
    let xor = caller.data().xor;
    let delta = agreed.capture(&mut *caller, xor);
    let answer = link.call(import, params, delta);
    caller.data_mut().proxy = Some(link);
    let limit = caller.data().memory_limit;
    let r = match answer {
        // The device gave the call up instead of answering: it ends as one stopped.
        Err(e) if e.is::<Abandoned>() => Err(wasmtime::Error::new(Abandoned)),
        Err(e) => Err(failed(e.to_string())),
        // The link held; the device's changes do not fit here.
        Ok((vals, d)) => agreed.apply(&mut *caller, limit, &d).map(|()| vals).map_err(|e| wasmtime::Error::new(ProxyAnswerRefused { name: name.to_string(), why: e.to_string() })),
    };
    caller.data_mut().agreed = agreed;
    let vals = r?;
    if vals.len() != results.len() {
        return Err(failed(format!("{} results for {}", vals.len(), results.len())));
    }
    results.copy_from_slice(&vals);
    Ok(())
}

/// One replica.
pub struct Replica {
    store: Store<Data>,
    limits: Limits,
    /// The module's points (original function indices, sorted: the position is the ordinal).
    points: std::sync::Arc<[u32]>,
    /// Per ordinal: the original body, resolved on first use.
    locals: std::collections::HashMap<u32, Func>,
    /// The module's table of the original bodies (none without points).
    table: Option<wasmtime::Table>,
    /// The module's exception tags the rewriter exported, by tag index.
    tags: Vec<(u32, wasmtime::Tag)>,
}

/// How a migrated call ended, when it did not fail.
#[derive(Debug, Clone)]
pub enum Ended {
    /// It returned its results.
    Returned,
    /// It called `proc_exit` with this code.
    Exited(u32),
    /// It threw an exception of tag `tag` (the module's tag index) with `fields` that nothing in
    /// it caught: the device throws the same from the point.
    Threw { tag: u32, fields: Vec<Val> },
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replica({} pages agreed)", self.store.data().agreed.table.len())
    }
}

impl Replica {
    /// Instantiates `module` (a module rewritten by clonecloud, whose points are `points`, as
    /// [`clonecloud_model::rewritten_points`] reads them from its bytes), clears its flags and
    /// zeroes its memory: the baseline every device starts from.
    pub fn new(engine: &Engine, module: &Module, points: std::sync::Arc<[u32]>) -> Result<Replica, ExecError> {
        Replica::with_limits(engine, module, points, Limits::default(), None, Vec::new(), Vec::new())
    }

    /// A replica whose calls may use at most `limits` (deadlines need an engine from
    /// [`clonecloud_exec::new_clone_engine`]), and whose memories and tables count against its
    /// device's `budget` too, serving the run's `args` and `env` (`NAME=value`).
    pub fn with_limits(
        engine: &Engine,
        module: &Module,
        points: std::sync::Arc<[u32]>,
        limits: Limits,
        budget: Option<std::sync::Arc<DeviceBudget>>,
        args: Vec<Vec<u8>>,
        env: Vec<Vec<u8>>,
    ) -> Result<Replica, ExecError> {
        let mut fs = Fs::default();
        fs.set_budget(limits.host as u64);
        if let Some(b) = &budget {
            fs.set_pool(b.clone());
        }
        let data = Data {
            fs,
            clocks: ClockBase { device: Clocks::default(), at: std::time::Instant::now() },
            limits: MemoryBudget { limit: limits.memory, used: 0, device_used: 0, pending: (0, 0), device: budget },
            deadline: deadline_after(limits.run_time),
            lists: [args, env],
            agreed: Agreed::default(),
            proxy: None,
            xor: false,
            memory_limit: limits.memory,
        };
        let mut store = Store::new(engine, data);
        store.limiter(|d| &mut d.limits);
        // Each import gets its own function, in order: a module may import the same name twice
        // (which a `Linker` refuses), and each copy proxies through its own trampoline.
        let mut externs: Vec<wasmtime::Extern> = Vec::new();
        let mut function_index = 0u32;
        for import in module.imports() {
            let index = function_index;
            if import.ty().func().is_some() {
                function_index += 1;
            }
            let Some(ty) = import.ty().func().cloned() else {
                return Err(ExecError::Runtime(wasmtime::Error::msg(format!(
                    "the clone cannot provide the non-function import `{}`.`{}`",
                    import.module(),
                    import.name()
                ))));
            };
            let (m, n) = (import.module().to_string(), import.name().to_string());
            if let Some(handler) = crate::clone_wasi::served(&m, &n, &ty) {
                let f = Func::new(&mut store, ty, move |mut caller, params, results| {
                        match handler(&mut caller, params) {
                            Ok(Some(errno)) => results[0] = Val::I32(errno),
                            Ok(None) => {}
                            // Not answerable here, but a query the device may answer.
                            Err(e) if e.is::<WasiOnClone>() => {
                                let params = crate::clone_wasi::on_device(&mut caller, &n, params);
                                if crate::clone_wasi::proxied(&m, &n, &params) {
                                    return proxy_call(&mut caller, index, &n, &params, results);
                                }
                                return Err(e);
                            }
                            Err(e) => return Err(e),
                        }
                        Ok(())
                    });
                externs.push(f.into());
                continue;
            }
            let f = Func::new(&mut store, ty, move |mut caller, params, results| {
                if crate::clone_wasi::proxied(&m, &n, params) {
                    return proxy_call(&mut caller, index, &n, params, results);
                }
                Err(wasmtime::Error::new(WasiOnClone { module: m.clone(), name: n.clone() }))
            });
            externs.push(f.into());
        }
        // Instantiation itself gets the run-time limit too.
        store.set_epoch_deadline(CHECK_EVERY);
        store.epoch_deadline_callback(check_epoch);
        let instance = wasmtime::Instance::new(&mut store, module, &externs).map_err(ExecError::Runtime)?;
        let mut memory = None;
        let mut globals = Vec::new();
        let mut tags = Vec::new();
        for e in module.exports() {
            let name = e.name();
            if let Some(g) = name.strip_prefix("__cc_global.").and_then(|g| g.parse::<u32>().ok()) {
                globals.push((g, name.to_string()));
            } else if name == "__cc_memory.0" {
                memory = Some(name.to_string());
            } else if let Some(t) = name.strip_prefix("__cc_tag.").and_then(|t| t.parse::<u32>().ok())
                && let Some(tag) = instance.get_tag(&mut store, name)
            {
                tags.push((t, tag));
            }
        }
        // Every flag clear: nested points run here.
        if let Some(flags) = instance.get_memory(&mut store, clonecloud_model::FLAGS_EXPORT) {
            flags.data_mut(&mut store).fill(0);
        }
        let table = instance.get_table(&mut store, clonecloud_model::LOCALS_EXPORT);
        let handles = StateHandles::resolve(memory.as_deref(), &globals, |n| instance.get_export(&mut store, n));
        if let Some(m) = handles.memory {
            m.data_mut(&mut store).fill(0);
        }
        store.data_mut().agreed.handles = handles;
        Ok(Replica { store, limits, points, locals: Default::default(), table, tags })
    }

    /// The exception pending in the store, taken, as the device can throw it again: its tag one
    /// the rewriter exported, its fields numbers (a reference cannot cross). `None` when it
    /// cannot cross (the call then ends as [`CallError::Exception`]).
    fn thrown(&mut self) -> Option<Ended> {
        use wasmtime::AsContextMut;
        let mut scope = wasmtime::RootScope::new(&mut self.store);
        let exn = scope.as_context_mut().take_pending_exception()?;
        let tag = exn.tag(&mut scope).ok()?;
        let found = self.tags.iter().find(|(_, t)| wasmtime::Tag::eq(t, &tag, &scope)).map(|(i, _)| *i);
        let n = exn.ty(&scope).ok()?.fields().len();
        let fields: Option<Vec<Val>> = (0..n).map(|i| exn.field(&mut scope, i).ok().filter(|v| matches!(v, Val::I32(_) | Val::I64(_) | Val::F32(_) | Val::F64(_)))).collect();
        match (found, fields) {
            (Some(tag), Some(fields)) => Some(Ended::Threw { tag, fields }),
            _ => {
                // Back in place: the call ends as an exception that cannot cross.
                let _ = scope.as_context_mut().throw::<()>(exn);
                None
            }
        }
    }

    /// Applies a device's delta (pages XORed into the agreed content with `xor`).
    pub fn apply(&mut self, wasm_pages: u32, pages: &[Page], xor: bool, globals: &[(u32, Val)]) -> Result<(), ApplyError> {
        let mut agreed = std::mem::take(&mut self.store.data_mut().agreed);
        let d = Delta { wasm_pages, pages: pages.to_vec(), xor, globals: globals.to_vec() };
        let r = agreed.apply(&mut self.store, self.limits.memory, &d);
        self.store.data_mut().agreed = agreed;
        r
    }

    /// Where the module's allocator keeps its state: pages it holds free are then left out of
    /// captures.
    pub fn set_heap_hint(&mut self, hint: clonecloud_exec::heap::HeapHint) {
        self.store.data_mut().agreed.heap = hint;
    }

    /// How many changed pages the last capture left out as free heap.
    pub fn freed_pages(&self) -> usize {
        self.store.data().agreed.table.skipped()
    }

    /// What changed since the last agreed state: memory size, pages (with `xor`, each XORed with
    /// its agreed content), every mutable global. The result is the new agreed state. Pages
    /// wholly inside free heap memory are left out (their content is never read again before it
    /// is written, and a page is shipped whole once it is).
    pub fn capture(&mut self, xor: bool) -> (u32, Vec<Page>, Vec<(u32, Val)>) {
        let mut agreed = std::mem::take(&mut self.store.data_mut().agreed);
        let d = agreed.capture(&mut self.store, xor);
        self.store.data_mut().agreed = agreed;
        (d.wasm_pages, d.pages, d.globals)
    }

    /// Gives the next calls a way to the device for proxied imports, and says whether deltas
    /// XOR pages (as the device compresses).
    pub fn set_proxy(&mut self, proxy: Option<Box<dyn ImportProxy>>, xor: bool) {
        let data = self.store.data_mut();
        data.proxy = proxy;
        data.xor = xor;
    }

    /// Takes the proxy back.
    pub fn take_proxy(&mut self) -> Option<Box<dyn ImportProxy>> {
        self.store.data_mut().proxy.take()
    }

    /// Replaces the replicated files (after the device sent its directories).
    pub fn set_files(&mut self, mut fs: Fs) {
        fs.set_budget(self.limits.host as u64);
        // The files' view holds host memory of the device's budget too.
        if let Some(b) = self.store.data().limits.device.clone() {
            fs.set_pool(b);
        }
        self.store.data_mut().fs = fs;
    }

    /// What the last call changed (files and descriptors, in order; stdout and stderr, in
    /// order), taken.
    pub fn finish(&mut self) -> Result<(Vec<FileOp>, Output), clonecloud_files::FsError> {
        self.store.data_mut().fs.finish()
    }

    /// Calls migration point `function` (its original index) with `params`, with the device's
    /// `clocks` and `descriptors` as of the migration; the journal starts afresh. Says how it
    /// ended: returned (into `results`), exited, or threw an exception the device can throw
    /// again (one that cannot cross is [`CallError::Exception`]).
    pub fn call(&mut self, function: u32, params: &[Val], results: &mut [Val], clocks: Clocks, descriptors: &Descriptors) -> Result<Ended, CallError> {
        let data = self.store.data_mut();
        data.clocks = ClockBase { device: clocks, at: std::time::Instant::now() };
        data.fs.begin(descriptors, clocks.realtime);
        data.deadline = deadline_after(self.limits.run_time);
        self.store.set_epoch_deadline(CHECK_EVERY);
        let f = self.local(function).ok_or(CallError::NoPoint(function))?;
        let ty = f.ty(&self.store);
        if ty.params().len() != params.len() || ty.results().len() != results.len() {
            return Err(CallError::Other(wasmtime::Error::msg("arguments or results do not match the point's type")));
        }
        let r = f.call(&mut self.store, params, results);
        if let Err(e) = &r
            && let Some(exit) = e.downcast_ref::<crate::clone_wasi::Exit>()
        {
            return Ok(Ended::Exited(exit.0));
        }
        if let Err(e) = &r
            && e.is::<wasmtime::ThrownException>()
            && let Some(threw) = self.thrown()
        {
            return Ok(threw);
        }
        r.map(|()| Ended::Returned).map_err(|e| {
            if let Some(p) = e.downcast_ref::<ProxyFailed>() {
                CallError::Proxy(p.clone())
            } else if e.is::<Abandoned>() {
                CallError::Abandoned
            } else if let Some(p) = e.downcast_ref::<ProxyAnswerRefused>() {
                CallError::ProxyAnswer(p.clone())
            } else if let Some(w) = e.downcast_ref::<WasiOnClone>() {
                CallError::Import(w.clone())
            } else if let Some(h) = e.downcast_ref::<HostBudget>() {
                CallError::Host(h.clone())
            } else if let Some(o) = e.downcast_ref::<OverLimit>() {
                CallError::Memory(o.limit)
            } else if let Some(o) = e.downcast_ref::<OverDeviceLimit>() {
                CallError::DeviceMemory(o.limit)
            } else if e.is::<wasmtime::ThrownException>() {
                // The exception stays with the replica's store until taken.
                let _ = self.store.take_pending_exception();
                CallError::Exception
            } else if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
                CallError::Deadline(self.limits.run_time)
            } else if let Some(t) = e.downcast_ref::<Trap>() {
                CallError::Trap(*t)
            } else if format!("{e:?}").contains("growing memory") || format!("{e:?}").contains("over the clone's limit") {
                // The limiter refused to grow memory: a local run would have had it.
                CallError::Memory(self.limits.memory)
            } else {
                CallError::Other(e)
            }
        })
    }

    /// The result types of point `function`, to size the results.
    pub fn result_count(&mut self, function: u32) -> Option<usize> {
        let f = self.local(function)?;
        Some(f.ty(&self.store).results().len())
    }

    /// The original body of point `function` (its original index): the element of the table of
    /// bodies at the point's ordinal, resolved once.
    fn local(&mut self, function: u32) -> Option<Func> {
        let j = self.points.binary_search(&function).ok()? as u32;
        if let Some(f) = self.locals.get(&j) {
            return Some(*f);
        }
        let f = *self.table?.get(&mut self.store, u64::from(j))?.as_func()??;
        self.locals.insert(j, f);
        Some(f)
    }
}
