//! CloneCloud's optimizer: which candidates to migrate, for a network condition and an
//! objective, as a 0-1 integer program solved by a MILP solver (good_lp with microlp).
//!
//! One binary `x_f` per candidate `f` that appears in the profile. Migrating `f` runs every
//! invocation of `f` not nested in another invocation of `f` on the clone. No two migrated
//! functions may nest (`x_f + x_g <= 1` when `g` is reachable from `f`), so migrated
//! invocations never overlap, and the run's cost is the all-local cost minus, for each chosen
//! `f`, the sum over its outermost invocations (from the profile's per-function sums, bytes at
//! the average of the measured calls) of
//!
//! - time: `device(i) - (clone(i) + 2 RTT + (up(i) + down(i)) / bandwidth)`;
//! - energy: `P_active device(i) - (P_idle (clone(i) + 2 RTT + transfer) + P_tx up(i) / bw +
//!   P_rx down(i) / bw + tail)` (the device waits while the clone runs; see [`PowerModel`]).
//!
//! A function whose calls use the device API (camera, position, screen) pays, for each such use,
//! a round trip and the bytes it gave, sent up: `2 RTT + bytes / bandwidth`.
//!
//! With a memory budget for the device (`run --device-memory`), a function whose calls grew
//! memory past it (the profile's `peak_bytes`) and left live within it (`live_bytes`: the rest
//! was freed, so it stays on the clone) is credited [`OVER_BUDGET`]: it migrates.
//!
//! In a multi-threaded program several threads' calls may be away at once: `clone(i)` is
//! stretched by `overlap(f) / clones` when more of them overlap (the profile's
//! [`clonecloud_profile::FunctionStats::overlap`]) than there are clones, each taken to run one
//! call at full speed (a clone does not say how many cores it has; concurrent calls on one clone
//! share it).
//!
//! The objective maximizes that saving minus, once, the cost of sending the input files if a
//! function that reads them migrates; pinned functions are not variables at all (they are not
//! candidates). A function with no call measured (every call was short), unhooked by the
//! profiler, or with calls that started or waited for threads (a clone runs one) is not offered.

use clonecloud_profile::Profile;
use good_lp::{Expression, Solution, SolverModel, Variable, constraint, variable, variables};
use std::collections::{BTreeMap, BTreeSet};

/// A network condition: throughput and round-trip time.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Network {
    /// Megabits per second, both ways.
    pub mbit: f64,
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// The radio, for the energy model.
    pub radio: Radio,
}

/// Which radio a link uses (its power figures differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Radio {
    Wifi,
    Cellular,
}

impl Network {
    /// Wi-Fi as the paper's evaluation saw it (802.11g to a nearby server): 20 Mbit/s, 10 ms.
    pub const WIFI: Network = Network { mbit: 20.0, rtt_ms: 10.0, radio: Radio::Wifi };
    /// 3G (HSPA as measured in 2010-2011): 1 Mbit/s, 100 ms.
    pub const THREE_G: Network = Network { mbit: 1.0, rtt_ms: 100.0, radio: Radio::Cellular };

    /// `wifi`, `3g`, or `BW_MBIT,RTT_MS` (a custom link counts as Wi-Fi for energy).
    pub fn parse(s: &str) -> Result<Network, ParseError> {
        match s {
            "wifi" => Ok(Network::WIFI),
            "3g" => Ok(Network::THREE_G),
            custom => {
                let bad = || ParseError::Network(custom.to_string());
                let (bw, rtt) = custom.split_once(',').ok_or_else(bad)?;
                let (mbit, rtt_ms): (f64, f64) = (bw.trim().parse().map_err(|_| bad())?, rtt.trim().parse().map_err(|_| bad())?);
                if !(mbit > 0.0 && mbit.is_finite() && rtt_ms >= 0.0 && rtt_ms.is_finite()) {
                    return Err(bad());
                }
                Ok(Network { mbit, rtt_ms, radio: Radio::Wifi })
            }
        }
    }

    /// A stable name for keys: `wifi`, `3g`, or `BW,RTT`.
    pub fn key(&self) -> String {
        if *self == Network::WIFI {
            "wifi".into()
        } else if *self == Network::THREE_G {
            "3g".into()
        } else {
            format!("{},{}", self.mbit, self.rtt_ms)
        }
    }

    /// Bytes per second.
    pub fn bytes_per_s(&self) -> f64 {
        self.mbit * 1e6 / 8.0
    }
}

/// A network or an objective given by name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("network `{0}`: give wifi, 3g or BW_MBIT,RTT_MS (e.g. 0.1,1000)")]
    Network(String),
    #[error("objective `{0}`: give time or energy")]
    Objective(String),
}

/// What to minimize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    Time,
    Energy,
}

impl Objective {
    pub fn parse(s: &str) -> Result<Objective, ParseError> {
        match s {
            "time" => Ok(Objective::Time),
            "energy" => Ok(Objective::Energy),
            o => Err(ParseError::Objective(o.to_string())),
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Objective::Time => "time",
            Objective::Energy => "energy",
        }
    }
}

/// The device's power model, in watts (HTC G1/Nexus One class phones, the paper's era).
/// CPU figures: Carroll and Heiser, "An Analysis of Power Consumption in a Smartphone", USENIX
/// ATC 2010 (CPU busy about 0.6 W over idle, idle with the screen off about 0.07 W). Radio
/// figures: Balasubramanian et al., "Energy Consumption in Mobile Phones: A Measurement Study and
/// Implications for Network Applications", IMC 2009 (3G: about 1.2 W while transferring and a
/// tail of about 12.5 s at about 0.6 W after each transfer; Wi-Fi: about 0.8 W while
/// transferring, negligible tail).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PowerModel {
    pub cpu_active_w: f64,
    pub cpu_idle_w: f64,
    pub wifi_tx_w: f64,
    pub wifi_rx_w: f64,
    pub cell_tx_w: f64,
    pub cell_rx_w: f64,
    /// How long the 3G radio stays in its high-power state after a transfer, seconds.
    pub cell_tail_s: f64,
    /// Its power then, watts.
    pub cell_tail_w: f64,
}

impl Default for PowerModel {
    fn default() -> Self {
        PowerModel { cpu_active_w: 0.67, cpu_idle_w: 0.07, wifi_tx_w: 0.8, wifi_rx_w: 0.8, cell_tx_w: 1.2, cell_rx_w: 1.2, cell_tail_s: 12.5, cell_tail_w: 0.6 }
    }
}

/// What one run measured on the device, for its energy.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RunMeasure {
    /// Wall time of the run, seconds.
    pub wall_s: f64,
    /// CPU time the device spent (user + system), seconds.
    pub cpu_s: f64,
    /// Bytes the device sent and received.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Separate exchanges with the clone (each can leave a 3G tail): the session's start plus
    /// one per migration.
    pub transfers: u64,
}

/// A run's device energy by part, joules (modelled from [`RunMeasure`], not metered).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Energy {
    /// CPU active for the device's CPU time.
    pub cpu_j: f64,
    /// Idle for the rest of the wall time (waiting for the clone or the link).
    pub idle_j: f64,
    /// The radio sending and receiving the bytes at the link's rate.
    pub radio_j: f64,
    /// 3G tails: after each transfer, the tail time at the tail power; tails overlap, so at
    /// most the run's wall time plus one tail.
    pub tail_j: f64,
    pub total_j: f64,
}

impl PowerModel {
    /// The model applied to one run over `network` (`None`: no radio used, a local run).
    pub fn energy(&self, run: &RunMeasure, network: Option<Network>) -> Energy {
        let cpu = run.cpu_s.clamp(0.0, run.wall_s.max(run.cpu_s));
        let cpu_j = self.cpu_active_w * cpu;
        let idle_j = self.cpu_idle_w * (run.wall_s - cpu).max(0.0);
        let (radio_j, tail_j) = match network {
            None => (0.0, 0.0),
            Some(n) => {
                let bw = n.bytes_per_s();
                let (t_up, t_down) = (run.bytes_up as f64 / bw, run.bytes_down as f64 / bw);
                match n.radio {
                    Radio::Wifi => (self.wifi_tx_w * t_up + self.wifi_rx_w * t_down, 0.0),
                    Radio::Cellular => {
                        let tail_s = (run.transfers as f64 * self.cell_tail_s).min(run.wall_s + self.cell_tail_s);
                        let tail_s = if run.transfers == 0 { 0.0 } else { tail_s };
                        (self.cell_tx_w * t_up + self.cell_rx_w * t_down, self.cell_tail_w * tail_s)
                    }
                }
            }
        };
        Energy { cpu_j, idle_j, radio_j, tail_j, total_j: cpu_j + idle_j + radio_j + tail_j }
    }

    /// The energy of one 3G tail, joules.
    pub fn cell_tail_j(&self) -> f64 {
        self.cell_tail_s * self.cell_tail_w
    }
}

/// One candidate's standing in the program: what migrating it saves (negative: costs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    pub function: u32,
    pub name: String,
    /// Seconds or joules saved by migrating it (over the whole run).
    pub saving: f64,
    pub invocations: u64,
}

/// The problem the solver sees: candidates with savings, pairs that cannot both migrate, and a
/// cost paid once if any of some candidates migrates.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Problem {
    pub options: Vec<Candidate>,
    /// Pairs of positions in `options`.
    pub conflicts: Vec<(usize, usize)>,
    pub shared: Option<Shared>,
    /// A cost paid once when anything migrates: opening the session (connection, TLS
    /// handshake, hello, file listing).
    pub session: f64,
}

/// A cost paid once when any of `users` (positions in `options`) migrates: replicating the
/// preopened directories to the clone.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Shared {
    pub cost: f64,
    pub users: Vec<usize>,
}

/// The solver's answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Choice {
    /// Chosen functions (indices) and their names.
    pub offload: Vec<u32>,
    pub names: Vec<String>,
    /// Total saving of the choice (seconds or joules).
    pub saving: f64,
    pub solver_ms: f64,
}

/// Why there is no partition.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error("the solver failed: {0}")]
    Solver(String),
}

/// What the partition is for, beyond the network: how many clones, and the device's memory
/// budget for the guest (`run --device-memory`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resources {
    /// Clones to migrate to (concurrent calls of a threaded program spread over them).
    pub clones: usize,
    /// Bytes of memory the guest may use on the device; a function whose calls grow memory past
    /// it is offloaded whatever its time says.
    pub memory_budget: Option<u64>,
}

impl Default for Resources {
    fn default() -> Resources {
        Resources { clones: 1, memory_budget: None }
    }
}

/// The saving a function over the memory budget is credited with (seconds or joules): more than
/// any run, so the solver offloads it (or a function around it that is over too).
pub const OVER_BUDGET: f64 = 1e6;

/// The files a run's candidates read: who reads them, and how many bytes they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Files<'a> {
    pub users: &'a [u32],
    pub bytes: u64,
}

/// Builds the problem from a profile: savings per candidate under `network` and `objective`,
/// conflicts from `nesting` (`(outer, inner)` function pairs that cannot both migrate), and the
/// one-time cost of sending `files` if a candidate that reads them migrates (the optimizer
/// assumes the clone has none of them: a first run), for the device and clones `resources` say.
pub fn problem(profile: &Profile, nesting: &[(u32, u32)], files: Files<'_>, network: Network, objective: Objective, power: &PowerModel, resources: &Resources) -> Problem {
    let clones = resources.clones;
    let bw = network.bytes_per_s();
    let rtt = network.rtt_ms / 1e3;
    let mut saving: BTreeMap<u32, (f64, u64)> = BTreeMap::new();
    for f in &profile.functions {
        // Unmeasured (every call short) or unhooked (too many tiny calls) functions never pay;
        // ones whose calls start or wait for threads cannot run on a clone.
        // (A thread's migrated call cannot reach the device API: threads have no proxied calls.)
        if f.measured_calls == 0 || f.outermost_calls == 0 || f.unhooked_after.is_some() || f.needs_threads > 0 || (f.overlap > 0.0 && f.device_calls > 0) {
            continue;
        }
        let n = f.outermost_calls as f64;
        let (up, down) = (f.bytes_up as f64 / f.measured_calls as f64, f.bytes_down as f64 / f.measured_calls as f64);
        // More calls away at once than clones: they share the clones.
        let shared_by = (f.overlap / clones.max(1) as f64).max(1.0);
        let (device, clone) = (f.device_ns as f64 / 1e9, f.clone_ns as f64 / 1e9 * shared_by);
        let (t_up, t_down) = (n * up / bw, n * down / bw);
        // The device API from the clone: a round trip each, the frames' and fixes' bytes up.
        let (t_hw, t_hw_up) = (f.device_calls as f64 * 2.0 * rtt, f.device_bytes as f64 / bw);
        let s = match objective {
            Objective::Time => device - (clone + n * 2.0 * rtt + t_up + t_down + t_hw + t_hw_up),
            Objective::Energy => {
                let (tx, rx, tail) = match network.radio {
                    Radio::Wifi => (power.wifi_tx_w, power.wifi_rx_w, 0.0),
                    Radio::Cellular => (power.cell_tx_w, power.cell_rx_w, power.cell_tail_j()),
                };
                power.cpu_active_w * device - (power.cpu_idle_w * (clone + n * 2.0 * rtt + t_hw) + tx * (t_up + t_hw_up) + rx * t_down + n * tail)
            }
        };
        // Running it here would take the device past its memory budget: that costs more than
        // any run (it is offloaded, unless a function around it is).
        // (Only if its migration would keep the device within it: a function that hands the
        // memory it took to its caller, an allocator, does not.)
        let over = resources.memory_budget.is_some_and(|b| f.peak_bytes > b && f.live_bytes <= b);
        let s = if over { s.max(0.0) + OVER_BUDGET } else { s };
        saving.insert(f.function, (s, f.outermost_calls));
    }
    let options: Vec<Candidate> = saving
        .into_iter()
        .map(|(function, (saving, invocations))| Candidate { function, name: profile.names.get(function as usize).cloned().unwrap_or_default(), saving, invocations })
        .collect();
    let at: BTreeMap<u32, usize> = options.iter().enumerate().map(|(i, o)| (o.function, i)).collect();
    let conflicts: BTreeSet<(usize, usize)> = nesting
        .iter()
        .filter_map(|(a, b)| Some((*at.get(a)?, *at.get(b)?)))
        .filter(|(a, b)| a != b)
        .map(|(a, b)| (a.min(b), a.max(b)))
        .collect();
    let users: Vec<usize> = files.users.iter().filter_map(|f| at.get(f).copied()).collect();
    let shared = (files.bytes > 0 && !users.is_empty()).then(|| {
        let t = files.bytes as f64 / bw;
        let cost = match (objective, network.radio) {
            (Objective::Time, _) => t + rtt,
            (Objective::Energy, Radio::Wifi) => power.wifi_tx_w * t + power.cpu_idle_w * rtt,
            (Objective::Energy, Radio::Cellular) => power.cell_tx_w * t + power.cpu_idle_w * rtt + power.cell_tail_j(),
        };
        Shared { cost, users }
    });
    // Opening a session: TCP connect, TLS 1.3 handshake, hello/welcome and the file listing
    // are a round trip each, and about SESSION_BYTES cross the link.
    let t = SESSION_BYTES / bw;
    let session = match (objective, network.radio) {
        (Objective::Time, _) => 4.0 * rtt + t,
        (Objective::Energy, Radio::Wifi) => power.wifi_tx_w * t + power.cpu_idle_w * 4.0 * rtt,
        (Objective::Energy, Radio::Cellular) => power.cell_tx_w * t + power.cpu_idle_w * 4.0 * rtt + power.cell_tail_j(),
    };
    Problem { options, conflicts: conflicts.into_iter().collect(), shared, session }
}

/// Bytes a session's opening moves (certificates, hello, a file listing of a few entries), as
/// measured on the workloads: about 8 KB.
pub const SESSION_BYTES: f64 = 8192.0;

/// Solves `problem` with the MILP solver: the set of options with the largest total saving
/// that has no conflicting pair (options that save nothing are never chosen).
pub fn solve(problem: &Problem) -> Result<Choice, OptimizeError> {
    let started = std::time::Instant::now();
    let positive: Vec<usize> = (0..problem.options.len()).filter(|&i| problem.options[i].saving > 0.0).collect();
    let mut chosen = Vec::new();
    if !positive.is_empty() {
        let mut vars = variables!();
        let x: BTreeMap<usize, Variable> = positive.iter().map(|&i| (i, vars.add(variable().binary()))).collect();
        let mut objective: Expression = positive.iter().map(|&i| problem.options[i].saving * x[&i]).sum();
        // The shared cost: y is 1 when any user migrates.
        let shared = problem.shared.as_ref().map(|s| (s, vars.add(variable().binary())));
        if let Some((s, y)) = &shared {
            objective -= s.cost * *y;
        }
        // The session: z is 1 when anything migrates.
        let z = vars.add(variable().binary());
        objective -= problem.session * z;
        let mut model = vars.maximise(objective).using(good_lp::microlp);
        for &(a, b) in &problem.conflicts {
            if let (Some(&xa), Some(&xb)) = (x.get(&a), x.get(&b)) {
                model = model.with(constraint!(xa + xb <= 1));
            }
        }
        for xi in x.values() {
            model = model.with(constraint!(*xi <= z));
        }
        if let Some((s, y)) = &shared {
            for u in &s.users {
                if let Some(&xu) = x.get(u) {
                    model = model.with(constraint!(xu <= *y));
                }
            }
        }
        let solution = model.solve().map_err(|e| OptimizeError::Solver(e.to_string()))?;
        chosen = positive.into_iter().filter(|i| solution.value(x[i]) > 0.5).collect();
    }
    let pays_shared = problem.shared.as_ref().is_some_and(|s| s.users.iter().any(|u| chosen.contains(u)));
    let saving = chosen.iter().map(|&i| problem.options[i].saving).sum::<f64>()
        - if pays_shared { problem.shared.as_ref().map_or(0.0, |s| s.cost) } else { 0.0 }
        - if chosen.is_empty() { 0.0 } else { problem.session };
    Ok(Choice {
        offload: chosen.iter().map(|&i| problem.options[i].function).collect(),
        names: chosen.iter().map(|&i| problem.options[i].name.clone()).collect(),
        saving,
        solver_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}
