//! The optimizer against an independent oracle: on many small random instances the MILP's
//! answer is as good as the best of every conflict-free subset (brute force), and never holds a
//! conflicting (nested) pair. And from a profile: fast links offload the heavy call, slow links
//! nothing; only candidates in the profile are ever options.

use clonecloud_partition::optimize::{Candidate, Network, Objective, PowerModel, Problem, problem, solve};
use clonecloud_profile::{Invocation, Profile};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1_000_000.0
    }
}

fn brute_force(p: &Problem) -> f64 {
    let n = p.options.len();
    let mut best = 0.0f64;
    for mask in 0u32..(1 << n) {
        if p.conflicts.iter().any(|&(a, b)| mask >> a & 1 == 1 && mask >> b & 1 == 1) {
            continue;
        }
        let s: f64 = (0..n).filter(|&i| mask >> i & 1 == 1).map(|i| p.options[i].saving).sum();
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
        let p = Problem { options, conflicts };
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
/// and tiny (2) many times; 3 is pinned (not a candidate, never hooked).
fn profile() -> Profile {
    let mut invocations = vec![Invocation { function: 0, parent: None, device_ns: 21_000_000_000, clone_ns: 1_500_000_000, bytes_up: Some(40 << 20), bytes_down: Some(8 << 20) }];
    invocations.push(Invocation { function: 1, parent: Some(0), device_ns: 20_000_000_000, clone_ns: 1_300_000_000, bytes_up: Some(2 << 20), bytes_down: Some(16 << 10) });
    for _ in 0..1000 {
        invocations.push(Invocation { function: 2, parent: Some(0), device_ns: 200_000, clone_ns: 20_000, bytes_up: None, bytes_down: None });
    }
    invocations.push(Invocation { function: 2, parent: Some(0), device_ns: 2_000_000, clone_ns: 200_000, bytes_up: Some(4096), bytes_down: Some(4096) });
    Profile {
        module: "m".into(),
        device_engine: "pulley".into(),
        candidates: vec![0, 1, 2],
        names: vec!["main".into(), "heavy".into(), "tiny".into(), "pinned".into()],
        invocations,
        device_total_ns: 21_000_000_000,
        clone_total_ns: 1_500_000_000,
        device_hooks_ns: 0,
        clone_hooks_ns: 0,
    }
}

#[test]
fn fast_links_offload_the_heavy_call_and_slow_links_nothing() {
    let p = profile();
    let nesting = [(0, 1), (0, 2)];
    let power = PowerModel::default();
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
}

#[test]
fn networks_parse_or_say_what_is_wrong() {
    assert_eq!(Network::parse("wifi").unwrap(), Network::WIFI);
    assert_eq!(Network::parse("3g").unwrap().key(), "3g");
    assert_eq!(Network::parse("0.1,1000").unwrap().key(), "0.1,1000");
    for bad in ["", "5g", "1,", ",1", "-1,5", "x,y", "1,2,3"] {
        let e = Network::parse(bad).unwrap_err();
        assert!(e.contains("BW_MBIT,RTT_MS"), "{bad}: {e}");
    }
}
