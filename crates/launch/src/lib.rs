//! Launching a run: what the device decides before its program starts, and keeps between runs.
//!
//! - [`Home`]: the per-user data directory (`$CLONECLOUD_HOME`, else the XDG data directory),
//!   made private before anything is kept there; the compiled-module cache, the embedded
//!   clone's and device's keys, and the partition database (profiles and partitions) in it.
//! - [`points`]: the grammar of point names (`all`, names from the name section, demangled
//!   names, exports, `#INDEX`) and the name a point is reported by.
//! - [`clone_target`]: the clone a run uses, the embedded one in this process (keys kept in the
//!   home, so it finds the device's files again) or a `clonecloud serve` with pinned keys.
//! - [`learn`] (the first run of a module with a clone: run here with every candidate timed, the
//!   profile stored), [`choose`] (later runs: the link measured, the stored profile solved for
//!   it, what to offload and what each offloaded call is expected to take) and [`solve`] (a
//!   partition for a given network, stored).
//!
//! What it does not know: the command line (the binary maps its flags to these calls and prints
//! what they return), the protocol, how a migration runs.

mod home;
pub mod points;

pub use home::{DEFAULT_CACHE_MIB, Home, cache_mib};

use clonecloud_exec::{DeviceEngine, ModuleCache, RunReport};
use clonecloud_offload::{CompressionPolicy, Expectation, Target};
use clonecloud_partition::{Network, Objective, Partition, PowerModel, Resources, Store, StoredProfile};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a launch step failed, saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("no data directory: set CLONECLOUD_HOME (or HOME) to where clonecloud may keep its keys, compiled modules and profiles")]
    NoHome,
    #[error("the data directory {dir} belongs to another user (uid {uid}); clonecloud keeps keys and files there: set CLONECLOUD_HOME to a directory of your own")]
    NotOurs { dir: PathBuf, uid: u32 },
    #[error("cannot prepare the data directory {dir}: {source}")]
    HomeIo { dir: PathBuf, source: std::io::Error },
    #[error("cannot load {path} (delete it to make a new one): {source}")]
    Key { path: PathBuf, source: clonecloud_net::NetError },
    #[error(transparent)]
    Net(#[from] clonecloud_net::NetError),
    #[error(transparent)]
    Store(#[from] clonecloud_partition::store::StoreError),
    #[error(transparent)]
    Solve(#[from] clonecloud_partition::optimize::OptimizeError),
    #[error(transparent)]
    Profile(#[from] clonecloud_profile::ProfileError),
    #[error(transparent)]
    Model(#[from] clonecloud_model::ModelError),
    #[error("cannot start the embedded clone: {0}")]
    LocalClone(clonecloud_offload::ServeError),
    #[error("--clone {addr} needs --key FILE (this device's private key) and --clone-key FILE (the server's public key): `clonecloud keygen --out NAME` makes key pairs")]
    RemoteKeys { addr: String },
    #[error("--clone {spec}: {why}")]
    CloneList { spec: String, why: &'static str },
    #[error("no stored profile of this module to choose a partition from: run it once with --clone (it learns), or `clonecloud profile [--device-engine cranelift|pulley] ... app.wasm`, or name the functions with --offload")]
    NoProfile,
}

/// The name the partition database knows a device engine by.
pub fn engine_key(e: DeviceEngine) -> &'static str {
    clonecloud_profile::engine_name(e)
}

/// Where the clone is.
#[derive(Debug, Clone)]
pub enum CloneAt {
    /// A clone in this process on a loopback port, with keys kept in the home.
    Embedded,
    /// The `n`th (from 1) of several clones in this process (`local:N`), each with keys and a
    /// file store of its own in the home.
    EmbeddedNth(usize),
    /// A `clonecloud serve` at `addr`, this device's private key and the server's public key in
    /// files (pinned: no other server is trusted).
    Remote { addr: String, key: Option<PathBuf>, clone_key: Option<PathBuf> },
}

impl CloneAt {
    /// `local` or `HOST:PORT`, with the key files a remote clone needs.
    pub fn parse(spec: &str, key: Option<PathBuf>, clone_key: Option<PathBuf>) -> CloneAt {
        match spec {
            "local" => CloneAt::Embedded,
            addr => CloneAt::Remote { addr: addr.to_string(), key, clone_key },
        }
    }
}

/// The clone to use and how: for one migration at most `timeout`, compression by `compression`.
/// The embedded clone is started now (its keys, and the directory it keeps the device's files
/// in, are the home's).
pub fn clone_target(home: &Home, cache: &ModuleCache, at: &CloneAt, timeout: Duration, compression: CompressionPolicy) -> Result<Target, LaunchError> {
    let connect_timeout = Duration::from_secs(5);
    let target = |addr: String, server_key, identity| Target { addr, server_key, identity, connect_timeout, timeout, compression, environment: Default::default(), dirs: Vec::new(), others: Vec::new() };
    match at {
        CloneAt::Embedded | CloneAt::EmbeddedNth(1) => embedded(home, cache, "", target),
        CloneAt::EmbeddedNth(n) => embedded(home, cache, &format!("-{n}"), target),
        CloneAt::Remote { addr, key: Some(key), clone_key: Some(clone_key) } => {
            let identity = clonecloud_net::Identity::load(key)?;
            let server_key = clonecloud_net::PublicKey::load(clone_key)?;
            Ok(target(addr.clone(), server_key, identity))
        }
        CloneAt::Remote { addr, .. } => Err(LaunchError::RemoteKeys { addr: addr.clone() }),
    }
}

/// An embedded clone whose keys and file store carry `suffix` (the first: none), kept in the
/// home between runs, so it finds this device's files again.
fn embedded(home: &Home, cache: &ModuleCache, suffix: &str, target: impl Fn(String, clonecloud_net::PublicKey, clonecloud_net::Identity) -> Target) -> Result<Target, LaunchError> {
    let files = home.dir().map(|d| d.join(format!("clone-files{suffix}")));
    let server = home.identity(&format!("local-clone{suffix}"))?;
    let device = home.identity("local-device")?;
    let idle = Duration::from_secs(300);
    let (addr, identity, server_key) =
        clonecloud_offload::spawn_local_as(cache.clone(), idle, clonecloud_replica::Limits::default(), files, server, device).map_err(LaunchError::LocalClone)?;
    Ok(target(addr, server_key, identity))
}

/// The most embedded clones `local:N` starts.
pub const MAX_EMBEDDED: usize = 16;

/// The clones `--clone A,B,...` names (each `local`, `local:N` for N embedded clones, or
/// `HOST:PORT`; the remote ones share the key files), as one target: the first is the clone, the others are tried in order when it
/// cannot be reached ([`clonecloud_offload::Target::others`]).
pub fn clone_targets(home: &Home, cache: &ModuleCache, spec: &str, key: Option<PathBuf>, clone_key: Option<PathBuf>, timeout: Duration, compression: CompressionPolicy) -> Result<Target, LaunchError> {
    let names: Vec<&str> = spec.split(',').map(str::trim).collect();
    let refuse = |why| Err(LaunchError::CloneList { spec: spec.to_string(), why });
    let embedded: Vec<&str> = names.iter().copied().filter(|n| *n == "local" || n.starts_with("local:")).collect();
    if embedded.len() > 1 {
        return refuse("`local` more than once: name the embedded clones once, `local` or `local:N`");
    }
    let count = match embedded.first().and_then(|n| n.strip_prefix("local:")) {
        None => 1,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=MAX_EMBEDDED).contains(&n) => n,
            _ => return refuse("`local:N` takes a number of embedded clones from 1 to 16"),
        },
    };
    if names.iter().any(|n| n.is_empty()) {
        return refuse("an empty name in the list: give `local` or HOST:PORT for each clone, separated by commas");
    }
    if names.iter().enumerate().any(|(i, n)| names[..i].contains(n)) {
        return refuse("a clone named twice");
    }
    let at: Vec<CloneAt> = names
        .iter()
        .flat_map(|n| match n.strip_prefix("local:") {
            Some(_) => (1..=count).map(CloneAt::EmbeddedNth).collect(),
            None => vec![CloneAt::parse(n, key.clone(), clone_key.clone())],
        })
        .collect();
    let mut targets = at.iter().map(|at| clone_target(home, cache, at, timeout, compression));
    let mut first = targets.next().expect("split gives at least one name")?;
    for t in targets {
        let t = t?;
        first.others.push(clonecloud_offload::Endpoint { addr: t.addr, server_key: t.server_key, identity: t.identity });
    }
    Ok(first)
}

/// The bytes of the files under `dir` (what replicating it to a clone sends at most).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Stores `profile` of `wasm` for `partition` and the choice at launch, with what the analyzer
/// adds (which candidates nest, which touch files) and the bytes of the run's directories.
pub fn store_profile(store: &Store, wasm: &[u8], profile: clonecloud_profile::Profile, opts: &clonecloud_profile::Options) -> Result<StoredProfile, LaunchError> {
    let model = clonecloud_model::Module::parse(wasm)?;
    let analysis = clonecloud_analyze::analyze(&model, &opts.policy);
    let nesting = analysis.nesting.iter().flat_map(|n| n.inner.iter().map(move |&i| (n.outer, i))).collect();
    let files_bytes = opts.wasi.dirs.iter().map(|d| dir_bytes(&d.host)).sum();
    let stored = StoredProfile { profile, nesting, file_users: analysis.file_users, files_bytes };
    store.put_profile(&stored)?;
    Ok(stored)
}

/// The name the partition database knows a device by: its engine's, with the speed it is
/// paced to when it is (see [`clonecloud_profile::device_name`]).
pub fn device_key(engine: DeviceEngine, pace: Option<clonecloud_exec::Pace>) -> String {
    clonecloud_profile::device_name(engine, pace)
}

/// Whether `wasm` has a stored profile on `device` (a [`device_key`]; or, lacking one, on
/// another device).
pub fn has_profile(store: &Store, wasm: &[u8], device: &str) -> Result<bool, LaunchError> {
    Ok(store.profile_any(&clonecloud_profile::module_name(wasm), device)?.is_some())
}

/// What a first run learned.
#[derive(Debug)]
pub struct Learned {
    /// The run itself (its outcome is the program's).
    pub report: RunReport,
    /// Migration candidates timed.
    pub candidates: usize,
    /// How many times slower the device's engine measured than the clone's.
    pub speed_ratio: f64,
}

/// The first run of a module with a clone: it runs here with every migration candidate timed (a
/// light profile: no clone run, the state estimated) and the profile is stored, so the next run
/// chooses its partition at launch.
pub fn learn(store: &Store, wasm: &[u8], cache: &ModuleCache, opts: &clonecloud_profile::Options) -> Result<Learned, LaunchError> {
    // A paced device is that much slower again.
    let speed_ratio = clonecloud_profile::speed_ratio(opts.device_engine)? / opts.pace.map_or(1.0, |p| p.speed());
    let (profile, report) = clonecloud_profile::learn(wasm, cache, opts, speed_ratio)?;
    let candidates = profile.candidates.len();
    store_profile(store, wasm, profile, opts)?;
    Ok(Learned { report, candidates, speed_ratio })
}

/// Solves and stores the partition of `wasm` for these keys, from the profile made on `engine`
/// (or, without one, on the other engine). With `files_on_clone`, sending the input files is
/// not charged (the clone's replica holds them from an earlier run).
pub fn solve(store: &Store, wasm: &[u8], engine: DeviceEngine, network: Network, objective: Objective, files_on_clone: bool, resources: &Resources) -> Result<Partition, LaunchError> {
    let module = clonecloud_profile::module_name(wasm);
    let stored = store.profile_any(&module, engine_key(engine))?.ok_or(LaunchError::NoProfile)?;
    solve_stored(store, module, &stored, network, objective, files_on_clone, resources)
}

/// [`solve`] for a profile already read (as `module`'s), for the device and clones `resources`
/// say.
fn solve_stored(store: &Store, module: String, stored: &StoredProfile, network: Network, objective: Objective, files_on_clone: bool, resources: &Resources) -> Result<Partition, LaunchError> {
    let files = clonecloud_partition::Files { users: &stored.file_users, bytes: if files_on_clone { 0 } else { stored.files_bytes } };
    let problem = clonecloud_partition::problem(&stored.profile, &stored.nesting, files, network, objective, &PowerModel::default(), resources);
    for o in &problem.options {
        tracing::debug!(function = %o.name, saving = o.saving, calls = o.invocations, "a candidate the optimizer weighs");
    }
    let choice = clonecloud_partition::solve(&problem)?;
    let partition = Partition {
        module,
        device_engine: stored.profile.device_engine.clone(),
        network: network.key(),
        objective: objective.key().to_string(),
        offload: choice.offload.iter().map(|f| format!("#{f}")).collect(),
        names: choice.names,
        saving: choice.saving,
        solver_ms: choice.solver_ms,
    };
    store.put_partition(&partition)?;
    Ok(partition)
}

/// The choice at launch.
#[derive(Debug, Default)]
pub struct Choice {
    /// The functions to offload (`#INDEX`); none when nothing pays or the clone could not be
    /// reached (then the run is local).
    pub offload: Vec<String>,
    /// What the profile expects of each offloaded function's call, by function index (for
    /// watching the link during the run).
    pub expectations: HashMap<u32, Expectation>,
    /// The link as measured, or why it could not be.
    pub link: Option<Result<clonecloud_offload::Link, clonecloud_offload::ProbeError>>,
    /// The partition solved for it.
    pub partition: Option<Partition>,
    /// The whole run's device time when the profile was made, in seconds.
    pub profiled_s: f64,
}

/// Measures the link to `target` (or, when it cannot be reached, to the first of its others
/// that can), solves the module's stored profile made on `device` (a [`device_key`]) for it,
/// for as many clones as `target` names and for the device's `memory_budget` (bytes for the
/// guest), and returns what to offload. No clone that can be
/// reached is not an error: the choice is then to run here.
pub fn choose(store: &Store, wasm: &[u8], device: &str, objective: Objective, target: &Target, memory_budget: Option<u64>) -> Result<Choice, LaunchError> {
    let module = clonecloud_profile::module_name(wasm);
    let stored = store.profile_any(&module, device)?.ok_or(LaunchError::NoProfile)?;
    let profiled_s = stored.profile.device_total_ns as f64 / 1e9;
    // The first of the clones (`--clone A,B,...`) that answers; the run fails over to it too.
    let mut probe = target.clone();
    let link = loop {
        match clonecloud_offload::measure_link(&probe) {
            Ok(link) => break link,
            Err(_) if probe.fail_over() => continue,
            Err(e) => return Ok(Choice { link: Some(Err(e)), profiled_s, ..Choice::default() }),
        }
    };
    let network = Network { mbit: link.mbit, rtt_ms: link.rtt_ms, radio: clonecloud_partition::optimize::Radio::Wifi };
    // Concurrent migrations (a multi-threaded module's) spread over the clones.
    let p = solve_stored(store, module, &stored, network, objective, false, &Resources { clones: 1 + target.others.len(), memory_budget })?;
    let expectations = stored
        .profile
        .functions
        .iter()
        .filter(|f| f.outermost_calls > 0 && p.offload.contains(&format!("#{}", f.function)))
        // Offloaded for the memory budget, not for time: the link watcher must not bring it back.
        .filter(|f| !memory_budget.is_some_and(|b| f.peak_bytes > b && f.live_bytes <= b))
        .map(|f| {
            let n = f.outermost_calls as f64;
            (f.function, Expectation { device_s: f.device_ns as f64 / 1e9 / n, clone_s: f.clone_ns as f64 / 1e9 / n })
        })
        .collect();
    Ok(Choice { offload: p.offload.clone(), expectations, link: Some(Ok(link)), partition: Some(p), profiled_s })
}
