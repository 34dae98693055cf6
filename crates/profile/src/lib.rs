//! The dynamic profiler: CloneCloud's profiler, on wasm.
//!
//! The module is rewritten with every candidate of the static analyzer as a migration point, all
//! answered on this machine (`PointMode::Host`), so each call enters and leaves through a hook.
//! It runs twice on the same input: on the device's engine (Cranelift, or the Pulley interpreter
//! to stand for a phone) and on the clone's (Cranelift). Each run counts every call per
//! candidate and sums the times of the outermost ones; invocations of at least [`KEEP_NS`] on the
//! device are kept as a tree (inclusive time on both sides, parent) with, in the clone's run,
//! the bytes a migration there would move: at entry, the pages changed since the last sync; at exit, the
//! pages the call changed (the touched volume, less pages wholly inside memory the allocator
//! holds free, as the clone leaves those out). Every entry and exit measured is a sync point.
//! Bytes are measured for the first [`MEASURED_CALLS`] calls of each function that took at least
//! [`Options::bytes_threshold`] on the device: a shorter call never pays for a round trip, and
//! hashing memory at every tiny call would swamp the run.
//!
//! A function called [`UNHOOK_AFTER`] times averaging under [`UNHOOK_BELOW_NS`] a call is
//! unhooked (its flag cleared, so later calls stay inside wasm): it could never pay for a round
//! trip, and hooking millions of tiny calls would swamp the run. The clone's run unhooks at the
//! same call, so both runs see the same sequence of hooked calls.
//!
//! Hook overhead: the time spent inside the hooks of nested calls (bookkeeping, hashing) is
//! measured and subtracted from every enclosing invocation; what remains per nested call is the
//! wasm-to-host crossing itself (a fraction of a microsecond; `cargo bench -p clonecloud --bench
//! points` measures it).

use clonecloud_analyze::{Policy, analyze};
use clonecloud_exec::heap::HeapHint;
use clonecloud_exec::state::{PAGE_SIZE, PageTable};
use clonecloud_exec::{
    DeviceEngine, ExecError, Guest, Migrator, ModuleCache, PointMode, Points, Program, RunReport, Stdio, WasiConfig, new_device_engine, new_device_engine_with,
    new_engine,
};
use std::collections::{HashMap, HashSet};

/// Calls of one function measured for bytes at most (each costs two passes over memory); the
/// others are taken to move what the measured ones moved on average.
pub const MEASURED_CALLS: usize = 32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::Val;

/// How to profile.
#[derive(Debug, Clone)]
pub struct Options {
    /// The run's arguments, environment and directories (stdio is discarded, stdin empty).
    pub wasi: WasiConfig,
    pub device_engine: DeviceEngine,
    pub policy: Policy,
    /// Calls shorter than this on the device are not measured for bytes.
    pub bytes_threshold: Duration,
    /// A slower device emulated (`run --device-speed`): the device's run is paced, and the
    /// profile is the paced device's ([`device_name`]).
    pub pace: Option<clonecloud_exec::Pace>,
    /// What runs when a spawned thread of a multi-threaded module ends the program (its
    /// `proc_exit`, a trap): see [`clonecloud_exec::threads::EndHook`].
    pub thread_end: clonecloud_exec::threads::EndHook,
}

/// Why a profile could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Model(#[from] clonecloud_model::ModelError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("no function of this module can migrate (see `clonecloud analyze`)")]
    NoCandidates,
    #[error(
        "the module is multi-threaded (wasi-threads): a full profile (two runs, the clone's measured) is not made for it; its first run with --clone learns its profile (`clonecloud run --clone local[:N] app.wasm`)"
    )]
    Threaded,
    #[error("the {engine} run failed: {message}")]
    Run { engine: &'static str, message: String },
    #[error(
        "the device run made {device} calls to candidates and the clone run {clone}: the program does not take the same path twice (its profile would not describe a run)"
    )]
    Diverged { device: usize, clone: usize },
}

/// One invocation of a candidate that took at least [`KEEP_NS`] on the device (shorter ones
/// are only counted, per function).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Invocation {
    pub function: u32,
    /// The enclosing kept invocation (by position), `None` at the top.
    pub parent: Option<usize>,
    /// Inclusive time on the device's engine and on the clone's, nanoseconds, hooks excluded.
    pub device_ns: u64,
    pub clone_ns: u64,
    /// Bytes a migration here would move (raw 4 KiB pages), if measured.
    pub bytes_up: Option<u64>,
    pub bytes_down: Option<u64>,
}

/// Per candidate: every call counted, times summed over the outermost calls (a call not inside
/// another call of the same function), bytes over the measured calls.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FunctionStats {
    pub function: u32,
    pub calls: u64,
    pub outermost_calls: u64,
    pub device_ns: u64,
    pub clone_ns: u64,
    pub measured_calls: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Set when the function was unhooked after this many calls (too many too short calls to
    /// ever pay for a migration; later calls count in their callers' times only).
    pub unhooked_after: Option<u64>,
    /// In a multi-threaded run: how many threads were inside a hooked call (this one's
    /// included) during its outermost calls, on average (each call counts the larger of the
    /// numbers at its entry and at its exit). 0 in a run of one thread.
    #[serde(default)]
    pub overlap: f64,
    /// Calls that started a thread, or waited for another thread (blocked on a value only
    /// another thread changes): a clone runs one thread, so they cannot run there, and the
    /// optimizer does not offer the function. Their blocked time is not counted in the times.
    #[serde(default)]
    pub needs_threads: u64,
    /// Over the outermost calls: calls of the device API (camera, position, screen), and the
    /// bytes the camera and the position gave. From a clone each is a round trip to the device.
    #[serde(default)]
    pub device_calls: u64,
    #[serde(default)]
    pub device_bytes: u64,
    /// The most memory 0 resident on the device (bytes of pages touched) a call of it left,
    /// among the calls that grew memory: what running it here takes of the device (wasm memory
    /// never shrinks, and freed heap stays resident). 0 when no call grew memory (or in a
    /// multi-threaded run, which does not measure it).
    #[serde(default)]
    pub peak_bytes: u64,
    /// At the exit of the call that left `peak_bytes`: memory 0's bytes not wholly inside free
    /// heap, what a migration of the call leaves the device holding at most (its freed pages
    /// stay on the clone). A function with `peak_bytes` over the device's budget and
    /// `live_bytes` within it is what to offload to stay within the budget.
    #[serde(default)]
    pub live_bytes: u64,
}

/// A profile: the candidates' statistics and the tree of their longer invocations, on both
/// engines.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// xxh3-128 of the original module, hex.
    pub module: String,
    pub device_engine: String,
    pub candidates: Vec<u32>,
    /// Display names, by function index.
    pub names: Vec<String>,
    pub functions: Vec<FunctionStats>,
    pub invocations: Vec<Invocation>,
    /// The whole run on each engine, nanoseconds.
    pub device_total_ns: u64,
    pub clone_total_ns: u64,
    /// Time the hooks took, on each engine (already subtracted from the invocations).
    pub device_hooks_ns: u64,
    pub clone_hooks_ns: u64,
}

/// Invocations shorter than this on the device are counted, not kept.
pub const KEEP_NS: u64 = 100_000;
/// A function is unhooked once it has been called this many times averaging under
/// [`UNHOOK_BELOW_NS`] a call.
pub const UNHOOK_AFTER: u64 = 10_000;
pub const UNHOOK_BELOW_NS: u64 = 10_000;

struct Frame {
    /// The call's number among all hooked calls.
    seq: u64,
    kept: Option<usize>,
    start: Instant,
    /// Time nested hooks took, to subtract.
    hooks: Duration,
    measured: bool,
    /// Threads inside a hooked call at this call's entry (a threaded run; 0 otherwise).
    busy_at_entry: u32,
    /// What the thread had done that needs other threads, at this call's entry.
    blocking: clonecloud_exec::threads::Blocking,
    /// The thread's calls of the device's hardware so far, and their bytes, at this call's entry.
    hardware: (u64, u64),
    /// Memory 0's size at this call's entry, bytes (0 in a threaded run).
    memory_at_entry: u64,
}

/// What one run records.
#[derive(Default)]
struct Record {
    clone_side: bool,
    seq: u64,
    frames: Vec<Frame>,
    /// Kept invocations, with their call numbers.
    kept: Vec<(u64, Invocation)>,
    /// The clone's run keeps the calls the device's run kept.
    keep: Option<HashSet<u64>>,
    stats: HashMap<u32, FunctionStats>,
    /// Open calls per function (for outermost).
    open: HashMap<u32, u32>,
    /// The clone's run unhooks where the device's run did.
    unhook: HashMap<u32, u64>,
    hooks: Duration,
    /// Functions measured for bytes, with how many of their calls were.
    measure: HashMap<u32, usize>,
    table: PageTable,
    heap: HeapHint,
    /// A learning run ([`learn`]): calls at least this long have their state estimated at
    /// their exit (memory in use), for the first [`MEASURED_CALLS`] of each function.
    estimate: Option<Duration>,
    /// A threaded run: per function, the sum over its outermost calls of the threads inside a
    /// hooked call meanwhile (see [`FunctionStats::overlap`]).
    overlap: HashMap<u32, u64>,
}

/// The hooks of a run: one record per thread (each thread has its own stack of calls).
struct Recorder {
    record: Arc<Mutex<Record>>,
    /// A threaded run's records, every thread's.
    threads: Option<Arc<ThreadRecords>>,
}

/// Every thread's record of a threaded run, and how many threads are inside a hooked call now.
struct ThreadRecords {
    records: Mutex<Vec<Arc<Mutex<Record>>>>,
    busy: std::sync::atomic::AtomicU32,
    estimate: Option<Duration>,
}

impl Recorder {
    /// The recorder of a run's first thread, from `record`.
    fn new(record: Record, threaded: bool) -> Recorder {
        let record = Arc::new(Mutex::new(record));
        let threads = threaded.then(|| {
            let estimate = record.lock().unwrap_or_else(|e| e.into_inner()).estimate;
            Arc::new(ThreadRecords { records: Mutex::new(vec![record.clone()]), busy: Default::default(), estimate })
        });
        Recorder { record, threads }
    }

    /// What the run recorded, every thread's records merged (each thread's call numbers after
    /// the previous thread's).
    fn take(&self) -> Record {
        let records: Vec<Arc<Mutex<Record>>> = match &self.threads {
            Some(t) => t.records.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            None => vec![self.record.clone()],
        };
        let mut all = records.into_iter().map(|r| std::mem::take(&mut *r.lock().unwrap_or_else(|e| e.into_inner())));
        let mut out = all.next().unwrap_or_default();
        for r in all {
            let (seqs, kept) = (out.seq, out.kept.len());
            out.seq += r.seq;
            out.hooks += r.hooks;
            out.kept.extend(r.kept.into_iter().map(|(seq, inv)| (seq + seqs, Invocation { parent: inv.parent.map(|p| p + kept), ..inv })));
            for (f, st) in r.stats {
                let o = out.stats.entry(f).or_insert_with(|| FunctionStats { function: f, ..FunctionStats::default() });
                o.calls += st.calls;
                o.outermost_calls += st.outermost_calls;
                o.device_ns += st.device_ns;
                o.clone_ns += st.clone_ns;
                o.measured_calls += st.measured_calls;
                o.bytes_up += st.bytes_up;
                o.bytes_down += st.bytes_down;
                o.unhooked_after = o.unhooked_after.max(st.unhooked_after);
                o.needs_threads += st.needs_threads;
                o.device_calls += st.device_calls;
                o.device_bytes += st.device_bytes;
                if st.peak_bytes > o.peak_bytes {
                    (o.peak_bytes, o.live_bytes) = (st.peak_bytes, st.live_bytes);
                }
            }
            for (f, n) in r.overlap {
                *out.overlap.entry(f).or_default() += n;
            }
        }
        for (f, n) in &out.overlap {
            if let Some(st) = out.stats.get_mut(f) {
                st.overlap = *n as f64 / st.outermost_calls.max(1) as f64;
            }
        }
        out
    }
}

/// Memory 0 as it is now: a threaded program's is a copy (other threads run on).
fn memory_now<'a>(guest: &'a mut Guest<'_, '_>, copy: &'a mut Vec<u8>) -> &'a [u8] {
    if guest.is_thread() {
        *copy = guest.snapshot().0;
        copy
    } else {
        guest.memory()
    }
}

impl Migrator for Recorder {
    fn migrate(&mut self, guest: &mut Guest<'_, '_>, j: usize, params: &[Val], results: &mut [Val]) -> wasmtime::Result<()> {
        let entered = Instant::now();
        let function = guest.point(j).function;
        let memory_at_entry = if guest.is_thread() { 0 } else { u64::from(guest.wasm_pages()) * 65536 };
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        // A thread entering its outermost hooked call is one more inside one.
        let busy_at_entry = match &self.threads {
            Some(t) if r.frames.is_empty() => t.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1,
            Some(t) => t.busy.load(std::sync::atomic::Ordering::SeqCst),
            None => 0,
        };
        let seq = r.seq;
        r.seq += 1;
        // Kept: on the device, decided at the exit; on the clone, as the device decided.
        let keep = r.keep.as_ref().map(|k| k.contains(&seq));
        let measure = keep != Some(false)
            && match r.measure.get_mut(&function) {
                Some(n) if *n < MEASURED_CALLS => {
                    *n += 1;
                    true
                }
                _ => false,
            };
        let mut bytes_up = None;
        // (A threaded run measures no deltas: `learn` only estimates.)
        if measure && !guest.is_thread() {
            let pages = r.table.diff(guest.memory()).len();
            bytes_up = Some((pages * PAGE_SIZE) as u64);
        }
        let kept = if keep == Some(true) {
            let parent = r.frames.iter().rev().find_map(|f| f.kept);
            r.kept.push((seq, Invocation { function, parent, bytes_up, ..Invocation::default() }));
            Some(r.kept.len() - 1)
        } else {
            None
        };
        *r.open.entry(function).or_default() += 1;
        let hook_in = entered.elapsed();
        r.frames.push(Frame { seq, kept, start: Instant::now(), hooks: Duration::ZERO, measured: measure && !guest.is_thread(), busy_at_entry, blocking: clonecloud_exec::threads::blocking(), hardware: clonecloud_exec::hardware::device_calls(), memory_at_entry });
        drop(r);
        let outcome = guest.call_local(j, params, results);
        let returned = Instant::now();
        let memory_at_exit = if guest.is_thread() { 0 } else { u64::from(guest.wasm_pages()) * 65536 };
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        let frame = r.frames.pop().expect("pushed above");
        let busy = match &self.threads {
            Some(t) if r.frames.is_empty() => t.busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst),
            Some(t) => t.busy.load(std::sync::atomic::Ordering::SeqCst),
            None => 0,
        };
        // Time blocked waiting for other threads is not the call's work.
        let blocking = frame.blocking.since(clonecloud_exec::threads::blocking());
        let ns = returned.duration_since(frame.start).saturating_sub(frame.hooks).saturating_sub(blocking.waited).as_nanos() as u64;
        let mut bytes_down = None;
        if let Some(min) = r.estimate
            && ns >= min.as_nanos() as u64
            && r.stats.get(&function).is_none_or(|s| s.measured_calls < MEASURED_CALLS as u64)
        {
            // What a migration here could move at most: every page in use, both ways.
            let mut copy = Vec::new();
            let in_use = (memory_now(guest, &mut copy).chunks(PAGE_SIZE).filter(|p| p.iter().any(|b| *b != 0)).count() * PAGE_SIZE) as u64;
            bytes_up = Some(in_use);
            bytes_down = Some(in_use);
        }
        if frame.measured {
            let memory = guest.memory();
            let free = r.heap.free_pages(memory);
            let pages = r.table.diff_skipping(memory, &free).len();
            bytes_down = Some((pages * PAGE_SIZE) as u64);
        }
        let clone_side = r.clone_side;
        // The device's run keeps the longer calls, with their place in the tree.
        let kept = match frame.kept {
            Some(k) => Some(k),
            None if !clone_side && ns >= KEEP_NS => {
                let parent = r.frames.iter().rev().find_map(|f| f.kept);
                r.kept.push((frame.seq, Invocation { function, parent, bytes_up, ..Invocation::default() }));
                // (Its parent here is a guess: ancestors are kept at their own exits. The tree
                // the profile keeps is the clone run's, which knows them at entry.)
                Some(r.kept.len() - 1)
            }
            None => None,
        };
        if let Some(k) = kept {
            let inv = &mut r.kept[k].1;
            if clone_side { inv.clone_ns = ns } else { inv.device_ns = ns }
            inv.bytes_up = inv.bytes_up.or(bytes_up);
            inv.bytes_down = bytes_down;
        }
        let depth = r.open.get_mut(&function).expect("opened above");
        *depth -= 1;
        let outermost = *depth == 0;
        if outermost && self.threads.is_some() {
            *r.overlap.entry(function).or_default() += u64::from(frame.busy_at_entry.max(busy));
        }
        // (Only calls that grew memory pay for counting the resident and the live pages.)
        let peak = (memory_at_exit > frame.memory_at_entry).then(|| {
            let resident = guest.memory_resident();
            let memory = guest.memory();
            let free = r.heap.free_pages(memory).len() * PAGE_SIZE;
            (resident, memory.len().saturating_sub(free) as u64)
        });
        let st = r.stats.entry(function).or_insert_with(|| FunctionStats { function, ..FunctionStats::default() });
        st.calls += 1;
        st.needs_threads += u64::from(blocking.waits > 0 || blocking.spawns > 0);
        if let Some((resident, live)) = peak
            && resident > st.peak_bytes
        {
            (st.peak_bytes, st.live_bytes) = (resident, live);
        }
        if outermost {
            let (calls, bytes) = clonecloud_exec::hardware::device_calls();
            st.device_calls += calls - frame.hardware.0;
            st.device_bytes += bytes - frame.hardware.1;
            st.outermost_calls += 1;
            if clone_side { st.clone_ns += ns } else { st.device_ns += ns }
        }
        if let (Some(u), Some(d)) = (bytes_up, bytes_down) {
            st.measured_calls += 1;
            st.bytes_up += u;
            st.bytes_down += d;
        }
        let calls = st.calls;
        let unhook = if clone_side {
            r.unhook.get(&function) == Some(&calls)
        } else {
            let st = &r.stats[&function];
            st.unhooked_after.is_none() && calls >= UNHOOK_AFTER && st.device_ns < UNHOOK_BELOW_NS * st.outermost_calls.max(1)
        };
        if unhook {
            r.stats.get_mut(&function).expect("counted").unhooked_after = Some(calls);
            drop(r);
            guest.set_flag(j, false)?;
            r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        }
        let hooks = hook_in + returned.elapsed();
        r.hooks += hooks;
        // The enclosing call subtracts this call's hooks and those nested in it.
        if let Some(p) = r.frames.last_mut() {
            p.hooks += hooks + frame.hooks;
        }
        outcome
    }

    fn nested(&self) -> Option<Box<dyn Migrator>> {
        Some(Box::new(Recorder { record: self.record.clone(), threads: self.threads.clone() }))
    }

    /// A spawned thread records on its own (its calls nest on its own stack).
    fn for_thread(&self) -> Option<Box<dyn Migrator>> {
        let t = self.threads.clone()?;
        let record = Arc::new(Mutex::new(Record { estimate: t.estimate, ..Record::default() }));
        t.records.lock().unwrap_or_else(|e| e.into_inner()).push(record.clone());
        Some(Box::new(Recorder { record, threads: Some(t) }))
    }
}

/// One hooked run: the record and the run's time.
fn hooked_run(program: &Program, wasi: &WasiConfig, record: Record, engine: &'static str) -> Result<(Record, Duration), ProfileError> {
    let recorder = Recorder::new(record, false);
    let record = recorder.record.clone();
    let started = Instant::now();
    let report = program.run_with(wasi, Some(Box::new(recorder)));
    let total = started.elapsed();
    report.map_err(|e| ProfileError::Run { engine, message: e.to_string() })?;
    let record = std::mem::take(&mut *record.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((record, total))
}

/// The module's model, the analyzer's migration candidates, and the points that hook them all.
fn hooked(wasm: &[u8], policy: &Policy) -> Result<(clonecloud_model::Module, Vec<u32>, Points), ProfileError> {
    let model = clonecloud_model::Module::parse(wasm)?;
    let candidates = analyze(&model, policy).candidates();
    if candidates.is_empty() {
        return Err(ProfileError::NoCandidates);
    }
    let points = Points::Named(candidates.iter().map(|i| format!("#{i}")).collect());
    Ok((model, candidates, points))
}

/// Profiles `wasm` (the original module) as [`Options`] say.
pub fn profile(wasm: &[u8], cache: &ModuleCache, opts: &Options) -> Result<Profile, ProfileError> {
    if clonecloud_exec::threads::uses_threads(wasm) {
        return Err(ProfileError::Threaded);
    }
    let (model, candidates, points) = hooked(wasm, &opts.policy)?;
    let wasi = WasiConfig { stdio: Stdio::Null, ..opts.wasi.clone() };

    let program = device_program(wasm, cache, &points, opts)?;
    let device_name = device_name(opts.device_engine, opts.pace);
    let (dev, device_total) = hooked_run(&program, &wasi, Record::default(), engine_name(opts.device_engine))?;
    // The device's kept calls were pushed at their exits: order them by call number, so a
    // parent comes before its children, and link each to its nearest kept ancestor.
    let mut kept: Vec<(u64, Invocation)> = dev.kept;
    kept.sort_by_key(|(seq, _)| *seq);

    // The clone's run keeps the same calls, unhooks where the device's did, and measures bytes
    // for the functions that took long enough on the device.
    let measure = dev
        .stats
        .values()
        .filter(|s| s.outermost_calls > 0 && s.device_ns / s.outermost_calls >= opts.bytes_threshold.as_nanos() as u64)
        .map(|s| (s.function, 0))
        .collect();
    let unhook = dev.stats.values().filter_map(|s| Some((s.function, s.unhooked_after?))).collect();
    let clone = new_engine(PointMode::Host)?;
    let program = Program::prepare(&clone, cache, wasm, &points, PointMode::Host)?;
    let heap = heap_hint(&program);
    let record = Record { clone_side: true, keep: Some(kept.iter().map(|(s, _)| *s).collect()), unhook, measure, heap, ..Record::default() };
    let (clo, clone_total) = hooked_run(&program, &wasi, record, "cranelift")?;

    if clo.seq != dev.seq || clo.kept.len() != kept.len() || clo.kept.iter().zip(&kept).any(|(a, b)| a.0 != b.0 || a.1.function != b.1.function) {
        return Err(ProfileError::Diverged { device: dev.seq as usize, clone: clo.seq as usize });
    }
    // The clone's record has the tree in call order already; take the device's times.
    let device_ns: HashMap<u64, u64> = kept.iter().map(|(s, i)| (*s, i.device_ns)).collect();
    let invocations = clo.kept.into_iter().map(|(seq, inv)| Invocation { device_ns: device_ns[&seq], ..inv }).collect();
    let mut functions: Vec<FunctionStats> = clo
        .stats
        .into_values()
        .map(|c| {
            let d = &dev.stats[&c.function];
            FunctionStats { device_ns: d.device_ns, unhooked_after: d.unhooked_after, ..c }
        })
        .collect();
    functions.sort_by(|a, b| b.device_ns.cmp(&a.device_ns));
    Ok(Profile {
        module: module_name(wasm),
        device_engine: device_name,
        candidates,
        names: model.functions.iter().map(|f| f.display_name()).collect(),
        functions,
        invocations,
        device_total_ns: device_total.as_nanos() as u64,
        clone_total_ns: clone_total.as_nanos() as u64,
        device_hooks_ns: dev.hooks.as_nanos() as u64,
        clone_hooks_ns: clo.hooks.as_nanos() as u64,
    })
}

/// A first run that learns: the run itself (stdio as `opts.wasi` says), on the device's engine
/// with every candidate hooked, recording the device's times as [`profile`] does. The state a
/// migration would move is estimated at the exit of calls of at least `opts.bytes_threshold`
/// as the memory in use (an upper bound: [`profile`] measures the real deltas), and the
/// clone's times are the device's divided by `speed_ratio` (device time over clone time, see
/// [`speed_ratio`]). Returns the profile and how the run ended.
pub fn learn(wasm: &[u8], cache: &ModuleCache, opts: &Options, speed_ratio: f64) -> Result<(Profile, RunReport), ProfileError> {
    let (model, candidates, points) = hooked(wasm, &opts.policy)?;
    let program = device_program(wasm, cache, &points, opts)?;
    let heap = heap_hint(&program);
    let recorder = Recorder::new(Record { estimate: Some(opts.bytes_threshold), heap, ..Record::default() }, program.is_threaded());
    let records = Recorder { record: recorder.record.clone(), threads: recorder.threads.clone() };
    let started = Instant::now();
    let report = if program.is_threaded() {
        program.run_threads(&opts.wasi, Some(Box::new(recorder)), opts.thread_end)?
    } else {
        program.run_with(&opts.wasi, Some(Box::new(recorder)))?
    };
    let total = started.elapsed();
    let dev = records.take();
    let ratio = speed_ratio.max(1e-3);
    let clone_ns = |ns: u64| (ns as f64 / ratio) as u64;
    let mut kept = dev.kept;
    kept.sort_by_key(|(seq, _)| *seq);
    let invocations = kept.into_iter().map(|(_, i)| Invocation { clone_ns: clone_ns(i.device_ns), ..i }).collect();
    let mut functions: Vec<FunctionStats> = dev.stats.into_values().map(|f| FunctionStats { clone_ns: clone_ns(f.device_ns), ..f }).collect();
    functions.sort_by(|a, b| b.device_ns.cmp(&a.device_ns));
    let profile = Profile {
        module: module_name(wasm),
        device_engine: device_name(opts.device_engine, opts.pace),
        candidates,
        names: model.functions.iter().map(|f| f.display_name()).collect(),
        functions,
        invocations,
        device_total_ns: total.as_nanos() as u64,
        clone_total_ns: clone_ns(total.as_nanos() as u64),
        device_hooks_ns: dev.hooks.as_nanos() as u64,
        clone_hooks_ns: 0,
    };
    Ok((profile, report))
}

/// Where `program`'s allocator keeps its state, to find free heap: read from the rewritten module
/// the program runs (its function indices are not the original's).
fn heap_hint(program: &Program) -> HeapHint {
    let wasm = &program.layout().wasm;
    clonecloud_model::Module::parse_without_call_graph(wasm).map(|m| HeapHint::of(&m, wasm)).unwrap_or_default()
}

/// The device's program with every candidate hooked: on its engine (a multi-threaded module's:
/// Cranelift with threads), paced as `opts` says.
fn device_program(wasm: &[u8], cache: &ModuleCache, points: &Points, opts: &Options) -> Result<Program, ProfileError> {
    let paced = opts.pace.is_some();
    let engine = if clonecloud_exec::threads::uses_threads(wasm) {
        clonecloud_exec::threads::new_threads_engine_with(PointMode::Host, paced)?
    } else {
        new_device_engine_with(PointMode::Host, opts.device_engine, paced)?
    };
    let mut program = Program::prepare(&engine, cache, wasm, points, PointMode::Host)?;
    if let Some(p) = opts.pace {
        program.set_pace(p)?;
    }
    Ok(program)
}

/// The name profiles and partitions know a device by: its engine's, with the speed it was paced
/// to (`cranelift@0.25`) when it was.
pub fn device_name(engine: DeviceEngine, pace: Option<clonecloud_exec::Pace>) -> String {
    match pace {
        Some(p) => format!("{}@{}", engine_name(engine), p.speed()),
        None => engine_name(engine).to_string(),
    }
}

/// The name a profile and the partition database know an engine by.
pub fn engine_name(e: DeviceEngine) -> &'static str {
    match e {
        DeviceEngine::Cranelift => "cranelift",
        DeviceEngine::Pulley => "pulley",
    }
}

/// A small compute kernel (integer arithmetic, loads and stores in a loop) for [`speed_ratio`].
const KERNEL: &str = r#"(module
  (memory 1)
  (func (export "run") (param $n i32) (result i32)
    (local $i i32) (local $acc i32)
    (loop $l
      (i32.store (i32.and (i32.mul (local.get $i) (i32.const 4)) (i32.const 0xfffc))
        (local.tee $acc (i32.add (i32.mul (local.get $acc) (i32.const 1103515245)) (i32.const 12345))))
      (local.set $acc (i32.xor (local.get $acc)
        (i32.load (i32.and (i32.mul (local.get $acc) (i32.const 4)) (i32.const 0xfffc)))))
      (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (local.get $n))))
    (local.get $acc)))"#;

/// How many times slower the device's engine runs wasm than a clone's (Cranelift on this
/// machine, standing for the clone's), timed on [`KERNEL`]: the best of three runs each.
pub fn speed_ratio(device: DeviceEngine) -> Result<f64, ProfileError> {
    let time = |engine: &wasmtime::Engine, n: i32| -> Result<Duration, ProfileError> {
        let err = |e: wasmtime::Error| ProfileError::Run { engine: "calibration", message: e.to_string() };
        let module = wasmtime::Module::new(engine, KERNEL).map_err(err)?;
        let mut store = wasmtime::Store::new(engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).map_err(err)?;
        let run = instance.get_typed_func::<i32, i32>(&mut store, "run").map_err(err)?;
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            std::hint::black_box(run.call(&mut store, n).map_err(err)?);
            best = best.min(t.elapsed());
        }
        Ok(best)
    };
    let n = 2_000_000;
    let device = time(&new_device_engine(PointMode::Flag, device)?, n)?;
    let clone = time(&new_engine(PointMode::Flag)?, n)?;
    Ok(device.as_secs_f64() / clone.as_secs_f64().max(1e-9))
}

/// The module's name in profiles and partitions: xxh3-128 of its bytes, hex.
pub fn module_name(wasm: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(wasm))
}

