//! The simulated pair against its oracle.

use clonecloud_sim::{Rules, run, schedule};

/// Thousands of seeded fault schedules: none diverges from the run with no clone, and the
/// faults take every path (answers from the clone, resumes, retries, fallbacks, calls proxied
/// to the device).
#[test]
fn no_schedule_diverges_and_every_path_is_taken() {
    let report = run(1, 3000, Rules::default(), |_| {});
    assert_eq!(report.divergent, 0, "{:#?}", report.divergences);
    let t = &report.tally;
    assert!(t.faults > 1000, "{t:?}");
    assert!(t.remote > 0 && t.fallbacks > 0 && t.resumes > 0 && t.retries > 0 && t.proxied > 0, "{t:?}");
    assert_eq!(t.calls, t.remote + t.fallbacks, "every call ended once");
}

/// A driver that does not reset its page baseline when the core starts a new session (the
/// zero-baseline rule broken) is caught within the first thousand schedules.
#[test]
fn a_broken_baseline_rule_is_caught() {
    let broken = Rules { reset_baseline: false, ..Rules::default() };
    let report = run(1, 1000, broken, |_| {});
    assert!(report.divergent > 0, "{:?}", report.tally);
    // And the divergence replays from its seed.
    let d = &report.divergences[0];
    assert_eq!(schedule(d.seed, broken).unwrap_err(), *d);
    assert!(schedule(d.seed, Rules::default()).is_ok());
}

/// A driver that does not give back the input a proxied call consumed when the migration is
/// sent again or run here (the call would read past what a local run reads) is caught too.
#[test]
fn a_broken_input_rule_is_caught() {
    let broken = Rules { give_back_input: false, ..Rules::default() };
    let report = run(1, 1000, broken, |_| {});
    assert!(report.divergent > 0, "{:?}", report.tally);
    let d = &report.divergences[0];
    assert_eq!(schedule(d.seed, broken).unwrap_err(), *d);
    assert!(schedule(d.seed, Rules::default()).is_ok());
}
