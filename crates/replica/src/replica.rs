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
//!
//! *Threaded mode*, for a multi-threaded module (wasm32-wasip1-threads: a shared memory 0
//! imported, `wasi.thread-spawn`): the device migrates one thread's call while its other threads
//! run on, and merges the answer byte by byte, so the replica says exactly which bytes of memory
//! 0 the call read and wrote. The clone compiles the module instrumented ([`clone_module`]:
//! its code marks every byte it accesses in two extra memories, the *maps*), memory 0 is an
//! ordinary memory of the replica's store, and the host marks what it accesses for the call
//! itself (WASI buffers, a wait's word, the bytes a proxied import's answer changed). A capture
//! then ships exactly the pages written (whole) with a bitmap of the bytes written and one of
//! the pages read ([`Captured::access`]), and clears the maps. The call cannot start a thread
//! or wait for one (`wasi.thread-spawn`, `clonecloud.wait32/64` on a value that is there):
//! [`ThreadOnClone`], and the device runs it.

use clonecloud_exec::ExecError;
use clonecloud_files::{FileOp, Fs};
use clonecloud_wire::{Access, Clocks, Descriptors};
use clonecloud_exec::state::{ApplyError, PAGE_SIZE, Page, PageTable, StateHandles};
use wasmtime::{AsContextMut, Engine, Func, Memory, Module, Store, Trap, Val, ValType};

/// The bytes a clone compiles for a module a device uploaded: for a multi-threaded module (one
/// that imports a shared memory or `wasi.thread-spawn`: see
/// [`clonecloud_exec::threads::uses_threads`]), the module instrumented to record the bytes of
/// memory 0 each call reads and writes ([`clonecloud_model::instrument_accesses`]), which a
/// [`Replica`] of it then runs in *threaded mode*; otherwise the bytes themselves.
pub fn clone_module(wasm: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, clonecloud_model::ModelError> {
    if is_threaded(wasm) {
        Ok(std::borrow::Cow::Owned(clonecloud_model::instrument_accesses(wasm)?))
    } else {
        Ok(std::borrow::Cow::Borrowed(wasm))
    }
}

/// Whether the clone runs a module a device uploaded in threaded mode (see [`clone_module`]).
pub fn is_threaded(wasm: &[u8]) -> bool {
    clonecloud_exec::threads::uses_threads(wasm)
}

/// A migrated call of a multi-threaded module needed another thread of its program, which runs
/// on the device (or would start there): the call cannot run on the clone, and the device runs
/// it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ThreadOnClone {
    #[error("the migrated call tried to start a thread (`wasi`.`{0}`), which a migrated call cannot do on the clone")]
    Spawn(String),
    #[error("the migrated call waited at address {addr:#x} for another thread of its program (which runs on the device), which it cannot do on the clone")]
    Wait { addr: u64 },
}

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
    /// A call of a multi-threaded module started a thread or waited for one.
    #[error(transparent)]
    Thread(ThreadOnClone),
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
    /// pointer). In threaded mode the two access maps are memories of memory 0's size: a
    /// threaded call's memory 0 may be a third of this (and counts six times in a device's
    /// [`DeviceBudget`], where every memory counts twice).
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
    /// In threaded mode, memory 0 and the maps of the bytes of it the call read and wrote.
    pub(crate) maps: Option<Maps>,
    /// Whether the maps may hold marks no capture took (a call began since the last one).
    maps_dirty: bool,
}

/// A threaded replica's memory 0 and its access maps (see
/// [`clonecloud_model::instrument_accesses`]): byte `a` of `reads` (`writes`) is 1 once the call
/// read (wrote) byte `a` of memory 0. The module's code marks its own accesses; the host marks
/// the ones it makes for the call (WASI buffers, a wait's word, a proxied import's answer). Both
/// maps are kept at least as large as memory 0.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Maps {
    memory: Memory,
    reads: Memory,
    writes: Memory,
}

/// Which map a host access is marked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Read,
    Write,
}

/// Marks bytes `at..at + len` of memory 0 as read or written by the call, in threaded mode
/// (nothing otherwise). The host marks what it accessed in bounds of memory 0, which the maps
/// cover.
pub(crate) fn mark(mut store: impl AsContextMut<Data = Data>, which: Mark, at: usize, len: usize) {
    let Some(maps) = store.as_context().data().maps else { return };
    let map = if which == Mark::Read { maps.reads } else { maps.writes };
    let data = map.data_mut(&mut store);
    let end = at.saturating_add(len).min(data.len());
    if at < end {
        data[at..end].fill(1);
    }
}

/// Grows the maps to memory 0's size (after the host grew memory 0, or at creation).
fn sync_maps(mut store: impl AsContextMut<Data = Data>) -> Result<(), ApplyError> {
    let Some(maps) = store.as_context().data().maps else { return Ok(()) };
    let size = maps.memory.size(&store);
    for map in [maps.reads, maps.writes] {
        let have = map.size(&store);
        if have < size {
            map.grow(&mut store, size - have).map_err(|e| ApplyError::Grow {
                wasm_pages: size as u32,
                why: format!("the map of the bytes a call reads or writes cannot grow with the memory: {e:#}"),
            })?;
        }
    }
    Ok(())
}

/// The bitmap of one page from its map bytes (a bit per byte, LSB first within each byte of
/// the bitmap: bit `i` set when byte `i` of the page is marked), eight bytes at a time.
pub(crate) fn bitmap(marks: &[u8]) -> Vec<u8> {
    marks
        .chunks_exact(8)
        .map(|w| {
            let x = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            // Each byte's own bits folded into its bit 0 (a mark is any non-zero byte)...
            let mut t = x | (x >> 4);
            t |= t >> 2;
            t |= t >> 1;
            // ...then the eight bit 0s gathered into the top byte, byte k to bit 56 + k (the
            // multiplier's terms put each at a distinct place: no carries).
            ((t & 0x0101_0101_0101_0101).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
        })
        .collect()
}

/// The pages of the first `pages` of a map that hold marks, as bitmaps; those pages are then
/// cleared (the rest of the map is all zeros already). Read a word at a time.
fn take_marks(map: &mut [u8], pages: usize) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, page) in map.chunks_exact_mut(PAGE_SIZE).take(pages).enumerate() {
        if page.chunks_exact(8).all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0) {
            continue;
        }
        out.push((i as u32, bitmap(page)));
        page.fill(0);
    }
    out
}

/// The bytes a delta changes in memory 0 as it is now (with `xor`, its non-zero bytes), by
/// page: what a proxied import's answer wrote, for the writes map. A bitmap per page (an eighth
/// of the delta's size, whatever a hostile answer holds).
fn changed_bytes(memory: &[u8], d: &Delta) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, page) in &d.pages {
        let at = *i as usize * PAGE_SIZE;
        let mut bits = vec![0u8; page.len().div_ceil(8)];
        for (k, b) in page.iter().enumerate() {
            let old = memory.get(at + k).copied().unwrap_or(0);
            if (d.xor && *b != 0) || (!d.xor && *b != old) {
                bits[k / 8] |= 1 << (k % 8);
            }
        }
        if bits.iter().any(|b| *b != 0) {
            out.push((at, bits));
        }
    }
    out
}

/// What a capture took: the memory's size, the pages (see [`Replica::capture`]), every mutable
/// global, and in threaded mode which bytes the call read and wrote.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub wasm_pages: u32,
    pub pages: Vec<Page>,
    pub globals: Vec<(u32, Val)>,
    /// `Some` exactly in threaded mode: `writes` names the pages of `pages`, in order.
    pub access: Option<Access>,
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

/// `clonecloud.wait32` / `wait64` (a `memory.atomic.wait32/64` on memory 0 the rewriter turned
/// into a host call): `(addr, expected, timeout_ns, offset)`, the word at `addr + offset`
/// (unsigned) read and marked as read. A value other than `expected` answers 1 (as the
/// instruction does); an equal one with a zero timeout answers 2 (timed out); any other wait
/// would wait for another thread, which is on the device: the call cannot go on here. A
/// misaligned or out-of-bounds address traps, as the instruction does.
fn wait(caller: &mut wasmtime::Caller<'_, Data>, params: &[Val], width: usize) -> wasmtime::Result<i32> {
    let memory = match caller.data().maps {
        Some(m) => m.memory,
        None => {
            let Some(m) = caller.get_export("__cc_memory.0").and_then(|e| e.into_memory()) else {
                return Err(wasmtime::Error::new(Trap::MemoryOutOfBounds));
            };
            m
        }
    };
    let (Some(Val::I32(addr)), Some(expected), Some(Val::I64(timeout)), Some(Val::I32(offset))) = (params.first(), params.get(1), params.get(2), params.get(3)) else {
        return Err(wasmtime::Error::msg("a wait with arguments of the wrong types"));
    };
    let ea = u64::from(*addr as u32) + u64::from(*offset as u32);
    if ea % width as u64 != 0 {
        return Err(wasmtime::Error::new(Trap::HeapMisaligned));
    }
    let data = memory.data(&*caller);
    let Some(word) = usize::try_from(ea).ok().and_then(|at| data.get(at..at.checked_add(width)?)) else {
        return Err(wasmtime::Error::new(Trap::MemoryOutOfBounds));
    };
    let equal = match expected {
        Val::I32(e) if width == 4 => word == e.to_le_bytes(),
        Val::I64(e) if width == 8 => word == e.to_le_bytes(),
        _ => return Err(wasmtime::Error::msg("a wait with arguments of the wrong types")),
    };
    mark(&mut *caller, Mark::Read, ea as usize, width);
    if !equal {
        Ok(1)
    } else if *timeout == 0 {
        Ok(2)
    } else {
        Err(wasmtime::Error::new(ThreadOnClone::Wait { addr: ea }))
    }
}

/// Whether `ty` is the type of the wait of `width` bytes: `(i32, i32 or i64, i64, i32) -> i32`.
fn is_wait_type(ty: &wasmtime::FuncType, width: usize) -> bool {
    let params: Vec<ValType> = ty.params().collect();
    let results: Vec<ValType> = ty.results().collect();
    let expected = if width == 4 { matches!(params.get(1), Some(ValType::I32)) } else { matches!(params.get(1), Some(ValType::I64)) };
    matches!(params[..], [ValType::I32, _, ValType::I64, ValType::I32]) && expected && matches!(results[..], [ValType::I32])
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

    /// The pages of memory wholly inside memory the allocator holds free (sorted).
    fn free_pages(&self, store: impl wasmtime::AsContext) -> Vec<u32> {
        if self.heap.is_empty() { Vec::new() } else { self.heap.free_pages(self.handles.memory_bytes(&store)) }
    }

    /// Puts back the agreed content of the pages in `skipped`, left out of a capture as free
    /// heap: the replica then holds exactly what was agreed, as the device does. (Garbage left
    /// there would show if the device later made the page hold its agreed content again, a
    /// `calloc` zeroing a page that was zero, say: unchanged, it is not sent.)
    fn restore(&mut self, mut store: impl wasmtime::AsContextMut, skipped: &[u32]) {
        let Some(m) = self.handles.memory else { return };
        let data = m.data_mut(&mut store);
        for &i in skipped {
            let at = i as usize * PAGE_SIZE;
            if let (Some(dst), Some(src)) = (data.get_mut(at..at + PAGE_SIZE), self.shadow.get(at..at + PAGE_SIZE)) {
                dst.copy_from_slice(src);
            }
        }
    }

    /// A threaded capture: exactly the `written` pages (sorted), each whole (XORed with its
    /// agreed content with `xor`), recorded as agreed as [`Agreed::capture`] records what it
    /// sends.
    fn capture_written(&mut self, mut store: impl wasmtime::AsContextMut, xor: bool, written: &[u32]) -> Delta {
        let memory = self.handles.memory_bytes(&store);
        self.shadow.resize(memory.len(), 0);
        let mut pages = Vec::with_capacity(written.len());
        for &i in written {
            let at = i as usize * PAGE_SIZE;
            let (Some(now), Some(agreed)) = (memory.get(at..at + PAGE_SIZE), self.shadow.get_mut(at..at + PAGE_SIZE)) else { continue };
            let mut page = now.to_vec();
            if xor {
                page.iter_mut().zip(agreed.iter()).for_each(|(p, a)| *p ^= a);
            }
            agreed.copy_from_slice(now);
            pages.push((i, page));
        }
        self.table.record(memory, written.iter().copied());
        let wasm_pages = self.handles.wasm_pages(&store);
        Delta { wasm_pages, pages, xor, globals: self.handles.globals(&mut store) }
    }

    fn capture(&mut self, mut store: impl wasmtime::AsContextMut, xor: bool) -> Delta {
        let free = self.free_pages(&store);
        let mut pages = self.table.diff_skipping(self.handles.memory_bytes(&store), &free);
        self.shadow.resize(self.handles.memory_bytes(&store).len(), 0);
        // The pages left out that changed: the others hold their agreed content already.
        let skipped = self.table.skipped_pages().to_vec();
        self.restore(&mut store, &skipped);
        let memory = self.handles.memory_bytes(&store);
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
        Ok((vals, d)) => {
            // In threaded mode what the import wrote is the call's writes too.
            let changed = match caller.data().maps {
                Some(m) => changed_bytes(m.memory.data(&*caller), &d),
                None => Vec::new(),
            };
            agreed
                .apply(&mut *caller, limit, &d)
                .and_then(|()| sync_maps(&mut *caller))
                .map(|()| {
                    for (at, bits) in changed {
                        for (k, byte) in bits.iter().enumerate().filter(|(_, b)| **b != 0) {
                            for bit in (0..8).filter(|bit| byte >> bit & 1 == 1) {
                                mark(&mut *caller, Mark::Write, at + k * 8 + bit, 1);
                            }
                        }
                    }
                    vals
                })
                .map_err(|e| wasmtime::Error::new(ProxyAnswerRefused { name: name.to_string(), why: e.to_string() }))
        }
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
            maps: None,
            maps_dirty: false,
        };
        let mut store = Store::new(engine, data);
        store.limiter(|d| &mut d.limits);
        // Each import gets its own function, in order: a module may import the same name twice
        // (which a `Linker` refuses), and each copy proxies through its own trampoline.
        let mut externs: Vec<wasmtime::Extern> = Vec::new();
        let mut function_index = 0u32;
        // Threaded mode: the module was instrumented (see [`clone_module`]), and its memory 0,
        // the imported one, is an ordinary memory of this store.
        let threaded = [clonecloud_model::READS_EXPORT, clonecloud_model::WRITES_EXPORT].iter().all(|n| module.get_export(n).is_some_and(|e| e.memory().is_some()));
        let mut memory0 = None;
        for import in module.imports() {
            let index = function_index;
            if import.ty().func().is_some() {
                function_index += 1;
            }
            if let Some(mt) = import.ty().memory()
                && threaded
                && memory0.is_none()
                && !mt.is_shared()
            {
                let m = Memory::new(&mut store, mt.clone()).map_err(ExecError::Runtime)?;
                memory0 = Some(m);
                externs.push(m.into());
                continue;
            }
            let Some(ty) = import.ty().func().cloned() else {
                let why = match import.ty().memory() {
                    Some(mt) if mt.is_shared() => " (a shared memory: the clone runs a threaded module instrumented, see `clone_module`)",
                    _ => "",
                };
                return Err(ExecError::Runtime(wasmtime::Error::msg(format!(
                    "the clone cannot provide the non-function import `{}`.`{}`{why}",
                    import.module(),
                    import.name()
                ))));
            };
            let (m, n) = (import.module().to_string(), import.name().to_string());
            if m == "wasi" && matches!(n.as_str(), "thread-spawn" | "thread_spawn") {
                let f = Func::new(&mut store, ty, move |_, _, _| Err(wasmtime::Error::new(ThreadOnClone::Spawn(n.clone()))));
                externs.push(f.into());
                continue;
            }
            let wait_width = match n.as_str() {
                clonecloud_model::WAIT32_IMPORT => Some(4),
                clonecloud_model::WAIT64_IMPORT => Some(8),
                _ => None,
            };
            if m == clonecloud_model::IMPORT_MODULE
                && let Some(width) = wait_width
                && is_wait_type(&ty, width)
            {
                let f = Func::new(&mut store, ty, move |mut caller, params, results| {
                    results[0] = Val::I32(wait(&mut caller, params, width)?);
                    Ok(())
                });
                externs.push(f.into());
                continue;
            }
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
        if threaded {
            let reads = instance.get_memory(&mut store, clonecloud_model::READS_EXPORT);
            let writes = instance.get_memory(&mut store, clonecloud_model::WRITES_EXPORT);
            let (Some(memory), Some(reads), Some(writes)) = (memory0, reads, writes) else {
                return Err(ExecError::Runtime(wasmtime::Error::msg("a threaded module on the clone must import its memory 0 (the instrumented module of a shared one)")));
            };
            // The start function's accesses are not a call's.
            reads.data_mut(&mut store).fill(0);
            writes.data_mut(&mut store).fill(0);
            store.data_mut().maps = Some(Maps { memory, reads, writes });
            sync_maps(&mut store).map_err(|e| ExecError::Runtime(wasmtime::Error::msg(e.to_string())))?;
        }
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
        r?;
        sync_maps(&mut self.store)
    }

    /// Whether this replica runs in threaded mode: its module is a multi-threaded one,
    /// instrumented ([`clone_module`]); its captures then say which bytes each call read and
    /// wrote. Its maps are memories of the replica too: a threaded call's memory limit
    /// ([`Limits::memory`]) covers its memory three times over.
    pub fn is_threaded(&self) -> bool {
        self.store.data().maps.is_some()
    }

    /// Where the module's allocator keeps its state: pages it holds free are then left out of
    /// captures (in threaded mode, out of the pages written).
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
    ///
    /// In threaded mode the pages are exactly those the last call wrote (whole, XORed as
    /// above) and not wholly inside free heap now, and [`Captured::access`] says which bytes of
    /// memory 0 it read and wrote (its own accesses and those the host made for it; the writes
    /// of pages left out as free are left out too); the maps are then cleared for the next
    /// call.
    pub fn capture(&mut self, xor: bool) -> Captured {
        let mut agreed = std::mem::take(&mut self.store.data_mut().agreed);
        let (d, access) = match self.store.data().maps {
            Some(maps) => {
                let pages = maps.memory.data_size(&self.store) / PAGE_SIZE;
                let mut writes = take_marks(maps.writes.data_mut(&mut self.store), pages);
                let reads = take_marks(maps.reads.data_mut(&mut self.store), pages);
                self.store.data_mut().maps_dirty = false;
                // Written pages now wholly inside free heap (what the call allocated, used and
                // freed) are left out: their bytes are never read before they are written
                // again, on either side; the device keeps its own there. (Their reads stay
                // checked.)
                let free = agreed.free_pages(&self.store);
                let skipped: Vec<u32> = writes.iter().map(|(i, _)| *i).filter(|i| free.binary_search(i).is_ok()).collect();
                writes.retain(|(i, _)| free.binary_search(i).is_err());
                // Only pages the call wrote can differ from their agreed content.
                agreed.shadow.resize(agreed.handles.memory_bytes(&self.store).len(), 0);
                agreed.restore(&mut self.store, &skipped);
                let written: Vec<u32> = writes.iter().map(|(i, _)| *i).collect();
                let d = agreed.capture_written(&mut self.store, xor, &written);
                agreed.table.note_skipped(skipped);
                (d, Some(Access { reads, writes }))
            }
            None => (agreed.capture(&mut self.store, xor), None),
        };
        self.store.data_mut().agreed = agreed;
        Captured { wasm_pages: d.wasm_pages, pages: d.pages, globals: d.globals, access }
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
        if let Some(maps) = self.store.data().maps
            && std::mem::replace(&mut self.store.data_mut().maps_dirty, true)
        {
            // A call whose accesses no capture took: they are not this one's.
            maps.reads.data_mut(&mut self.store).fill(0);
            maps.writes.data_mut(&mut self.store).fill(0);
        }
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
            } else if let Some(t) = e.downcast_ref::<ThreadOnClone>() {
                CallError::Thread(t.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-wise bitmap is the byte-by-byte one: bit `i % 8` of byte `i / 8` for every
    /// non-zero mark `i`.
    #[test]
    fn bitmaps_are_read_a_word_at_a_time_as_byte_by_byte() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..200 {
            let mut marks = vec![0u8; PAGE_SIZE];
            for m in &mut marks {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Sparse or dense; marks of 1 (the module's) or any non-zero byte.
                if x % 100 < round % 100 {
                    *m = if round % 2 == 0 { 1 } else { (x >> 32) as u8 | 1 };
                }
            }
            let mut want = vec![0u8; PAGE_SIZE / 8];
            for (i, m) in marks.iter().enumerate() {
                if *m != 0 {
                    want[i / 8] |= 1 << (i % 8);
                }
            }
            assert_eq!(bitmap(&marks), want, "round {round}");
            let mut map = marks.clone();
            map.extend(vec![0u8; PAGE_SIZE]);
            let taken = take_marks(&mut map, 2);
            let nonzero = marks.iter().any(|m| *m != 0);
            assert_eq!(taken, if nonzero { vec![(0, want)] } else { vec![] });
            assert!(map.iter().all(|b| *b == 0), "cleared");
        }
    }
}
