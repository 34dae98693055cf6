//! The simulated pair against its oracle.

use clonecloud_sim::{Rules, run, schedule};

/// Thousands of seeded fault schedules: none diverges from the run with no clone, and the
/// faults take every path (answers from the clone, resumes, retries, fallbacks, calls proxied
/// to the device, file contents sent).
#[test]
fn no_schedule_diverges_and_every_path_is_taken() {
    let report = run(1, 3000, Rules::default(), |_| {});
    assert_eq!(report.divergent, 0, "{:#?}", report.divergences);
    let t = &report.tally;
    assert!(t.faults > 1000, "{t:?}");
    assert!(t.remote > 0 && t.fallbacks > 0 && t.resumes > 0 && t.retries > 0 && t.proxied > 0 && t.files_sent > 0, "{t:?}");
    assert_eq!(t.calls, t.remote + t.fallbacks, "every call ended once");
}

/// A driver that breaks `broken`'s rule is caught within the first thousand schedules, and the
/// divergence replays from its seed (and not with the rule kept).
fn caught(broken: Rules) {
    let report = run(1, 1000, broken, |_| {});
    assert!(report.divergent > 0, "{:?}", report.tally);
    let d = &report.divergences[0];
    assert_eq!(schedule(d.seed, broken).unwrap_err(), *d);
    assert!(schedule(d.seed, Rules::default()).is_ok());
}

/// The driver does not reset its page baseline when the core starts a new session (the
/// zero-baseline rule broken).
#[test]
fn a_broken_baseline_rule_is_caught() {
    caught(Rules { reset_baseline: false, ..Rules::default() });
}

/// The driver does not give back the input a proxied call consumed when the migration is sent
/// again or run here (the call would read past what a local run reads).
#[test]
fn a_broken_input_rule_is_caught() {
    caught(Rules { give_back_input: false, ..Rules::default() });
}

/// The driver does not list its directory again when the file changed since the session was
/// sent it (the clone would read an old content).
#[test]
fn a_broken_listing_rule_is_caught() {
    caught(Rules { list_changes: false, ..Rules::default() });
}
