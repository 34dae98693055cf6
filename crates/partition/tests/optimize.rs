//! The optimizer against an independent oracle: on many small random instances the MILP's
//! answer is as good as the best of every conflict-free subset (brute force), and never holds a
//! conflicting (nested) pair. And from a profile: fast links offload the heavy call, slow links
//! nothing; only candidates in the profile are ever options.

use clonecloud_partition::optimize::{Candidate, Files, Network, Objective, PowerModel, Problem, Resources, Shared, problem, solve};
use clonecloud_profile::{FunctionStats, Profile};

#[path = "../../../tests/support/rng.rs"]
mod rng;
use rng::Rng;

fn brute_force(p: &Problem) -> f64 {
    let n = p.options.len();
    let mut best = 0.0f64;
    for mask in 0u32..(1 << n) {
        if p.conflicts.iter().any(|&(a, b)| mask >> a & 1 == 1 && mask >> b & 1 == 1) {
            continue;
        }
        let mut s: f64 = (0..n).filter(|&i| mask >> i & 1 == 1).map(|i| p.options[i].saving).sum();
        if let Some(sh) = &p.shared
            && sh.users.iter().any(|&u| mask >> u & 1 == 1)
        {
            s -= sh.cost;
        }
        if mask != 0 {
            s -= p.session;
        }
        best = best.max(s);
    }
    best
}

#[test]
fn the_milp_answer_is_the_brute_force_optimum() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..300 {
        let n = 1 + (rng.next() % 12) as usize;
        let options = (0..n)
            .map(|i| Candidate { function: i as u32, name: format!("f{i}"), saving: rng.unit() * 2.0 - 0.7, invocations: 1 })
            .collect();
        let density = rng.unit() * 0.6;
        let mut conflicts = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                if rng.unit() < density {
                    conflicts.push((a, b));
                }
            }
        }
        // Half the instances have a cost shared by a random subset (the file sync).
        let shared = (round % 2 == 1).then(|| Shared { cost: rng.unit() * 1.5, users: (0..n).filter(|_| rng.unit() < 0.5).collect() });
        // A third pay a session's opening once if anything migrates.
        let session = if round % 3 == 0 { rng.unit() * 1.0 } else { 0.0 };
        let p = Problem { options, conflicts, shared, session };
        let choice = solve(&p).unwrap();
        let want = brute_force(&p);
        assert!((choice.saving - want).abs() < 1e-6, "round {round}: MILP {} vs brute force {want}: {p:?}", choice.saving);
        let at = |f: u32| p.options.iter().position(|o| o.function == f).unwrap();
        let chosen: Vec<usize> = choice.offload.iter().map(|&f| at(f)).collect();
        for &(a, b) in &p.conflicts {
            assert!(!(chosen.contains(&a) && chosen.contains(&b)), "round {round}: nested pair {a},{b} chosen");
        }
        assert!(chosen.iter().all(|&i| p.options[i].saving > 0.0), "round {round}: nothing that costs is chosen");
    }
}

/// main (0, which carries 40 MB of state) calls heavy (1, 20 s on the device, 2 MB of state) once
/// and tiny (2) a thousand times; 3 is pinned (not a candidate, never hooked); 4 was unhooked.
fn profile() -> Profile {
    let stats = |function, outermost_calls, device_ns, clone_ns, measured_calls, bytes_up, bytes_down| FunctionStats {
        function,
        calls: outermost_calls,
        outermost_calls,
        device_ns,
        clone_ns,
        measured_calls,
        bytes_up,
        bytes_down,
        unhooked_after: None,
        overlap: 0.0,
        needs_threads: 0,
        device_calls: 0,
        device_bytes: 0,
        peak_bytes: 0,
        live_bytes: 0,
    };
    let mut unhooked = stats(4, 20_000, 2_000_000_000, 100_000_000, 1, 4096, 4096);
    unhooked.unhooked_after = Some(10_000);
    Profile {
        module: "m".into(),
        device_engine: "pulley".into(),
        candidates: vec![0, 1, 2, 4],
        names: vec!["main".into(), "heavy".into(), "tiny".into(), "pinned".into(), "unhooked".into()],
        functions: vec![
            stats(0, 1, 21_000_000_000, 1_500_000_000, 1, 40 << 20, 8 << 20),
            stats(1, 1, 20_000_000_000, 1_300_000_000, 1, 2 << 20, 16 << 10),
            stats(2, 1001, 202_000_000, 20_200_000, 1, 4096, 4096),
            unhooked,
        ],
        invocations: Vec::new(),
        device_total_ns: 21_000_000_000,
        clone_total_ns: 1_500_000_000,
        device_hooks_ns: 0,
        clone_hooks_ns: 0,
    }
}

#[test]
fn fast_links_offload_the_heavy_call_and_slow_links_nothing() {
    let p = profile();
    let nesting = [(0, 1), (0, 2), (0, 4)];
    let power = PowerModel::default();
    let files = Files::default();
    let problem = |p: &Profile, nesting: &[(u32, u32)], network, objective, power: &PowerModel| problem(p, nesting, files, network, objective, power, &Resources::default());
    let wifi = solve(&problem(&p, &nesting, Network::WIFI, Objective::Time, &power)).unwrap();
    assert_eq!(wifi.names, ["heavy"], "{wifi:?}");
    let slow = Network::parse("0.1,1000").unwrap();
    let none = solve(&problem(&p, &nesting, slow, Objective::Time, &power)).unwrap();
    assert!(none.offload.is_empty(), "{none:?}");
    // Energy: on Wi-Fi the heavy call pays; on 3G sending its 2 MB (and the radio's tail) costs
    // more than the CPU saves.
    let energy = solve(&problem(&p, &nesting, Network::WIFI, Objective::Energy, &power)).unwrap();
    assert_eq!(energy.names, ["heavy"], "{energy:?}");
    let energy = solve(&problem(&p, &nesting, Network::THREE_G, Objective::Energy, &power)).unwrap();
    assert!(energy.offload.is_empty(), "{energy:?}");
    // Only candidates of the profile are options: the pinned function never is.
    let pr = problem(&p, &nesting, Network::WIFI, Objective::Time, &power);
    assert!(pr.options.iter().all(|o| p.candidates.contains(&o.function)));
    assert!(pr.options.iter().all(|o| o.function != 4), "an unhooked function is never offered");
    // If heavy reads 100 MB of input files that must reach the clone first, Wi-Fi no longer pays.
    let files = Files { users: &[1], bytes: 100 << 20 };
    let with_files = solve(&clonecloud_partition::problem(&p, &nesting, files, Network::WIFI, Objective::Time, &power, &Resources::default())).unwrap();
    assert!(with_files.offload.is_empty(), "{with_files:?}");
}

#[test]
fn networks_parse_or_say_what_is_wrong() {
    assert_eq!(Network::parse("wifi").unwrap(), Network::WIFI);
    assert_eq!(Network::parse("3g").unwrap().key(), "3g");
    assert_eq!(Network::parse("0.1,1000").unwrap().key(), "0.1,1000");
    for bad in ["", "5g", "1,", ",1", "-1,5", "x,y", "1,2,3"] {
        let e = Network::parse(bad).unwrap_err();
        assert!(e.to_string().contains("BW_MBIT,RTT_MS"), "{bad}: {e}");
    }
}

/// The energy of a run, as the bench reports it: the CPU at active power for its CPU time, idle
/// for the rest, the radio for the bytes at the link's rate, and 3G tails that overlap.
#[test]
fn run_energy_follows_the_power_model() {
    use clonecloud_partition::RunMeasure;
    let power = PowerModel::default();
    let local = RunMeasure { wall_s: 10.0, cpu_s: 8.0, bytes_up: 0, bytes_down: 0, transfers: 0 };
    let e = power.energy(&local, None);
    assert!((e.total_j - (8.0 * power.cpu_active_w + 2.0 * power.cpu_idle_w)).abs() < 1e-9);
    assert_eq!((e.radio_j, e.tail_j), (0.0, 0.0));
    // 1 MB each way at 8 Mbit/s: one second of sending, one of receiving.
    let wifi = Network { mbit: 8.0, rtt_ms: 10.0, radio: clonecloud_partition::optimize::Radio::Wifi };
    let run = RunMeasure { wall_s: 3.0, cpu_s: 0.5, bytes_up: 1_000_000, bytes_down: 1_000_000, transfers: 40 };
    let e = power.energy(&run, Some(wifi));
    assert!((e.radio_j - (power.wifi_tx_w + power.wifi_rx_w)).abs() < 1e-9);
    assert_eq!(e.tail_j, 0.0);
    // On 3G, 40 transfers in 3 s leave one tail past the end, not 40.
    let cell = Network { radio: clonecloud_partition::optimize::Radio::Cellular, ..wifi };
    let e = power.energy(&run, Some(cell));
    assert!((e.tail_j - power.cell_tail_w * (3.0 + power.cell_tail_s)).abs() < 1e-9);
    let one = power.energy(&RunMeasure { transfers: 1, ..run }, Some(cell));
    assert!((one.tail_j - power.cell_tail_j()).abs() < 1e-9);
    assert!((e.total_j - (e.cpu_j + e.idle_j + e.radio_j + e.tail_j)).abs() < 1e-9);
}

#[test]
fn concurrent_calls_pay_only_with_clones_enough_to_run_them() {
    // Four threads each call `shard` once, all at the same time (overlap 4): 2 s each on the
    // device, 1.2 s on a clone that runs one of them. One clone runs the four in turn (4.8 s
    // each as the device waits): worse than here; two still worse (2.4 s); four pay.
    let mut p = profile();
    p.names = vec!["main".into(), "shard".into()];
    p.candidates = vec![1];
    p.functions = vec![FunctionStats {
        function: 1,
        calls: 4,
        outermost_calls: 4,
        device_ns: 8_000_000_000,
        clone_ns: 4_800_000_000,
        measured_calls: 4,
        bytes_up: 4 << 20,
        bytes_down: 4 << 10,
        unhooked_after: None,
        overlap: 4.0,
        needs_threads: 0,
        device_calls: 0,
        device_bytes: 0,
        peak_bytes: 0,
        live_bytes: 0,
    }];
    let chosen = |p: &Profile, clones| solve(&problem(p, &[], Files::default(), Network::WIFI, Objective::Time, &PowerModel::default(), &Resources { clones, memory_budget: None })).unwrap().names;
    assert!(chosen(&p, 1).is_empty());
    assert!(chosen(&p, 2).is_empty());
    assert_eq!(chosen(&p, 4), ["shard"]);
    // The same calls one after the other (no overlap) pay on one clone.
    p.functions[0].overlap = 1.0;
    assert_eq!(chosen(&p, 1), ["shard"]);
    // A call that waited for another thread cannot run on a clone at all.
    p.functions[0].needs_threads = 1;
    assert!(chosen(&p, 4).is_empty());
}

#[test]
fn a_function_that_calls_the_camera_pays_for_each_call() {
    // `detect` takes one frame (100 KB) and computes 2 s (0.2 s on the clone); `capture` takes
    // 1,000 frames in a loop, 0.1 s of its own work: over Wi-Fi (10 ms, 20 Mbit/s) detect
    // pays, capture never does.
    let mut p = profile();
    p.names = vec!["main".into(), "detect".into(), "capture".into()];
    p.candidates = vec![1, 2];
    let f = |function, device_ns, clone_ns, device_calls, device_bytes| FunctionStats {
        function,
        calls: 1,
        outermost_calls: 1,
        device_ns,
        clone_ns,
        measured_calls: 1,
        bytes_up: 64 << 10,
        bytes_down: 4 << 10,
        unhooked_after: None,
        overlap: 0.0,
        needs_threads: 0,
        device_calls,
        device_bytes,
        peak_bytes: 0,
        live_bytes: 0,
    };
    p.functions = vec![f(1, 2_000_000_000, 200_000_000, 1, 100_000), f(2, 100_000_000, 10_000_000, 1000, 100_000_000)];
    let choice = solve(&problem(&p, &[], Files::default(), Network::WIFI, Objective::Time, &PowerModel::default(), &Resources::default())).unwrap();
    assert_eq!(choice.names, ["detect"]);
}

#[test]
fn a_function_that_would_take_the_device_past_its_memory_budget_is_offloaded() {
    // `big` allocates 1 GiB and computes for 0.1 s: over 3G its 2 MB of state costs more than the
    // time it saves, so without a budget it stays here; with 64 MiB for the guest it migrates.
    let mut p = profile();
    p.names = vec!["main".into(), "big".into()];
    p.candidates = vec![1];
    p.functions = vec![FunctionStats {
        function: 1,
        calls: 1,
        outermost_calls: 1,
        device_ns: 100_000_000,
        clone_ns: 10_000_000,
        measured_calls: 1,
        bytes_up: 2 << 20,
        bytes_down: 4 << 10,
        unhooked_after: None,
        overlap: 0.0,
        needs_threads: 0,
        device_calls: 0,
        device_bytes: 0,
        peak_bytes: 1 << 30,
        live_bytes: 2 << 20,
    }];
    let chosen = |p: &Profile, budget| solve(&problem(p, &[], Files::default(), Network::THREE_G, Objective::Time, &PowerModel::default(), &Resources { clones: 1, memory_budget: budget })).unwrap().names;
    assert!(chosen(&p, None).is_empty());
    assert!(chosen(&p, Some(2 << 30)).is_empty(), "within a 2 GiB budget");
    assert_eq!(chosen(&p, Some(64 << 20)), ["big"]);
    // An allocator that hands its gigabyte to its caller: offloading it would not help.
    p.functions[0].live_bytes = 1 << 30;
    assert!(chosen(&p, Some(64 << 20)).is_empty());
}
