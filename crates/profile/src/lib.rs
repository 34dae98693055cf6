//! The dynamic profiler: CloneCloud's profiler, on wasm.
//!
//! The module is rewritten with every candidate of the static analyzer as a migration point, all
//! answered on this machine (`PointMode::Host`), so each call enters and leaves through a hook.
//! It runs twice on the same input: on the device's engine (Cranelift, or the Pulley interpreter
//! to stand for a phone) and on the clone's (Cranelift). Each run records, per invocation of a
//! candidate, its inclusive time, its parent invocation and (in the clone's run) the bytes a
//! migration there would move: at entry, the pages changed since the last sync; at exit, the
//! pages the call changed (the touched volume, less pages wholly inside memory the allocator
//! holds free, as the clone leaves those out). Every entry and exit measured is a sync point.
//! Bytes are measured for the first [`MEASURED_CALLS`] calls of each function that took at least
//! [`Options::bytes_threshold`] on the device: a shorter call never pays for a round trip, and
//! hashing memory at every tiny call would swamp the run.
//!
//! Hook overhead: the time spent inside the hooks of nested calls (bookkeeping, hashing) is
//! measured and subtracted from every enclosing invocation; what remains per nested call is the
//! wasm-to-host crossing itself (a fraction of a microsecond; `cargo bench -p clonecloud --bench
//! points` measures it).

use clonecloud_analyze::{Policy, analyze};
use clonecloud_exec::heap::HeapHint;
use clonecloud_exec::state::{PAGE_SIZE, PageTable};
use clonecloud_exec::{
    DeviceEngine, ExecError, Guest, Migrator, ModuleCache, PointMode, Points, Program, Stdio, WasiConfig, new_device_engine, new_engine,
};
use std::collections::HashMap;

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
    #[error("the {engine} run failed: {message}")]
    Run { engine: &'static str, message: String },
    #[error(
        "the device run made {device} calls to candidates and the clone run {clone}: the program does not take the same path twice (its profile would not describe a run)"
    )]
    Diverged { device: usize, clone: usize },
}

/// One invocation of a candidate.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Invocation {
    pub function: u32,
    /// The enclosing invocation (by position), `None` at the top.
    pub parent: Option<usize>,
    /// Inclusive time on the device's engine and on the clone's, nanoseconds, hooks excluded.
    pub device_ns: u64,
    pub clone_ns: u64,
    /// Bytes a migration here would move (raw 4 KiB pages), if measured.
    pub bytes_up: Option<u64>,
    pub bytes_down: Option<u64>,
}

/// A profile: the tree of candidate invocations of one run, on both engines.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// xxh3-128 of the original module, hex.
    pub module: String,
    pub device_engine: String,
    pub candidates: Vec<u32>,
    /// Display names, by function index.
    pub names: Vec<String>,
    pub invocations: Vec<Invocation>,
    /// The whole run on each engine, nanoseconds.
    pub device_total_ns: u64,
    pub clone_total_ns: u64,
    /// Time the hooks took, on each engine (already subtracted from the invocations).
    pub device_hooks_ns: u64,
    pub clone_hooks_ns: u64,
}

struct Frame {
    invocation: usize,
    start: Instant,
    /// Time nested hooks took, to subtract.
    hooks: Duration,
}

/// Records the invocations of one run.
#[derive(Default)]
struct Record {
    invocations: Vec<Invocation>,
    frames: Vec<Frame>,
    hooks: Duration,
    /// Functions measured for bytes, with how many of their calls were.
    measure: HashMap<u32, usize>,
    table: PageTable,
    heap: HeapHint,
}

struct Recorder(Arc<Mutex<Record>>, bool);

impl Migrator for Recorder {
    fn migrate(&mut self, guest: &mut Guest<'_, '_>, j: usize, params: &[Val], results: &mut [Val]) -> wasmtime::Result<()> {
        let entered = Instant::now();
        let clone_side = self.1;
        let function = guest.point(j).function;
        let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let invocation = r.invocations.len();
        let parent = r.frames.last().map(|f| f.invocation);
        let measure = match r.measure.get_mut(&function) {
            Some(n) if *n < MEASURED_CALLS => {
                *n += 1;
                true
            }
            _ => false,
        };
        let mut inv = Invocation { function, parent, ..Invocation::default() };
        if measure {
            let pages = r.table.diff(guest.memory()).len();
            inv.bytes_up = Some((pages * PAGE_SIZE) as u64);
        }
        r.invocations.push(inv);
        let hook_in = entered.elapsed();
        r.frames.push(Frame { invocation, start: Instant::now(), hooks: Duration::ZERO });
        drop(r);
        let outcome = guest.call_local(j, params, results);
        let returned = Instant::now();
        let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let frame = r.frames.pop().expect("pushed above");
        let inclusive = returned.duration_since(frame.start).saturating_sub(frame.hooks);
        if measure {
            let memory = guest.memory();
            let free = r.heap.free_pages(memory);
            let pages = r.table.diff_skipping(memory, &free).len();
            r.invocations[invocation].bytes_down = Some((pages * PAGE_SIZE) as u64);
        }
        let ns = inclusive.as_nanos() as u64;
        if clone_side {
            r.invocations[invocation].clone_ns = ns;
        } else {
            r.invocations[invocation].device_ns = ns;
        }
        let hooks = hook_in + returned.elapsed();
        r.hooks += hooks;
        if let Some(p) = r.frames.last_mut() {
            p.hooks += hooks;
        }
        outcome
    }

    fn nested(&self) -> Option<Box<dyn Migrator>> {
        Some(Box::new(Recorder(self.0.clone(), self.1)))
    }
}

/// One hooked run: the invocations, the run's time, the hooks' time.
fn hooked_run(program: &Program, wasi: &WasiConfig, record: Record, clone_side: bool, engine: &'static str) -> Result<(Record, Duration), ProfileError> {
    let shared = Arc::new(Mutex::new(record));
    let started = Instant::now();
    let report = program.run_with(wasi, Some(Box::new(Recorder(shared.clone(), clone_side))));
    let total = started.elapsed();
    report.map_err(|e| ProfileError::Run { engine, message: e.to_string() })?;
    let record = std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((record, total))
}

/// Profiles `wasm` (the original module) as [`Options`] say.
pub fn profile(wasm: &[u8], cache: &ModuleCache, opts: &Options) -> Result<Profile, ProfileError> {
    let model = clonecloud_model::Module::parse(wasm)?;
    let analysis = analyze(&model, &opts.policy);
    let candidates = analysis.candidates();
    if candidates.is_empty() {
        return Err(ProfileError::NoCandidates);
    }
    let points = Points::Named(candidates.iter().map(|i| format!("#{i}")).collect());
    let wasi = WasiConfig { stdio: Stdio::Null, ..opts.wasi.clone() };

    let device = new_device_engine(PointMode::Host, opts.device_engine)?;
    let program = Program::prepare(&device, cache, wasm, &points, PointMode::Host)?;
    let device_name = match opts.device_engine {
        DeviceEngine::Cranelift => "cranelift",
        DeviceEngine::Pulley => "pulley",
    };
    let (dev, device_total) = hooked_run(&program, &wasi, Record::default(), false, device_name)?;

    // The clone's run measures bytes for the functions that took long enough on the device.
    let mut measure = HashMap::new();
    for inv in &dev.invocations {
        if inv.device_ns >= opts.bytes_threshold.as_nanos() as u64 {
            measure.insert(inv.function, 0);
        }
    }
    let clone = new_engine(PointMode::Host)?;
    let program = Program::prepare(&clone, cache, wasm, &points, PointMode::Host)?;
    let heap = HeapHint::of(&model, &program.layout().wasm);
    let record = Record { measure, heap, ..Record::default() };
    let (clo, clone_total) = hooked_run(&program, &wasi, record, true, "cranelift")?;

    if dev.invocations.len() != clo.invocations.len() || dev.invocations.iter().zip(&clo.invocations).any(|(a, b)| a.function != b.function) {
        return Err(ProfileError::Diverged { device: dev.invocations.len(), clone: clo.invocations.len() });
    }
    let invocations = dev
        .invocations
        .iter()
        .zip(clo.invocations)
        .map(|(d, c)| Invocation { device_ns: d.device_ns, ..c })
        .collect();
    Ok(Profile {
        module: module_name(wasm),
        device_engine: device_name.to_string(),
        candidates,
        names: model.functions.iter().map(|f| f.display_name()).collect(),
        invocations,
        device_total_ns: device_total.as_nanos() as u64,
        clone_total_ns: clone_total.as_nanos() as u64,
        device_hooks_ns: dev.hooks.as_nanos() as u64,
        clone_hooks_ns: clo.hooks.as_nanos() as u64,
    })
}

/// The module's name in profiles and partitions: xxh3-128 of its bytes, hex.
pub fn module_name(wasm: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(wasm))
}

/// Per function: calls, and total inclusive time on each side and bytes over the measured calls
/// (outermost invocations only, so nested time is not counted twice).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FunctionSummary {
    pub function: u32,
    pub name: String,
    pub calls: u64,
    pub device_ns: u64,
    pub clone_ns: u64,
    pub measured_calls: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl Profile {
    /// Per function, by device time (descending).
    pub fn summary(&self) -> Vec<FunctionSummary> {
        let mut by: std::collections::BTreeMap<u32, FunctionSummary> = Default::default();
        // An invocation nested in another of the same function is already inside it.
        let mut open_same = vec![false; self.invocations.len()];
        for (i, inv) in self.invocations.iter().enumerate() {
            let nested = inv.parent.is_some_and(|p| self.invocations[p].function == inv.function || open_same[p]);
            open_same[i] = nested;
            let s = by.entry(inv.function).or_insert_with(|| FunctionSummary {
                function: inv.function,
                name: self.names.get(inv.function as usize).cloned().unwrap_or_default(),
                ..FunctionSummary::default()
            });
            s.calls += 1;
            if !nested {
                s.device_ns += inv.device_ns;
                s.clone_ns += inv.clone_ns;
            }
            if let (Some(u), Some(d)) = (inv.bytes_up, inv.bytes_down) {
                s.measured_calls += 1;
                s.bytes_up += u;
                s.bytes_down += d;
            }
        }
        let mut v: Vec<FunctionSummary> = by.into_values().collect();
        v.sort_by(|a, b| b.device_ns.cmp(&a.device_ns));
        v
    }
}
