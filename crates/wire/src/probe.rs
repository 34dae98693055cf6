//! The link measurement a device makes before it opens a session (the choice at launch solves
//! the partition for it), as a machine with no I/O and no clock: it says which probe to send
//! next, takes the replies with the time they arrived, and ends with the round-trip time and
//! the throughput.
//!
//! The rules: the round trip is the best of [`SMALL_PROBES`] small probes; then probes grow from
//! [`FIRST_SIZE`] bytes, four times each step, one up (a big probe, a small reply) and one down
//! (a small probe, a big reply), until a pair takes [`ENOUGH_EXTRA`] more than two round trips,
//! reaches [`MAX_SIZE`] or the measurement has taken [`BUDGET`]; the throughput is the pair's
//! bytes over its time beyond the round trips.

use crate::message::Message;
use crate::session::{DeviceEvent, DeviceSession, ProtocolError};
use std::time::{Duration, Instant};

/// Small probes for the round trip; the best counts.
pub const SMALL_PROBES: u32 = 3;
/// The bytes of a small probe and of a small reply.
pub const SMALL: u32 = 16;
/// The first size of the growing probes.
pub const FIRST_SIZE: u32 = 4096;
/// The largest growing probe.
pub const MAX_SIZE: u32 = 1 << 20;
/// A pair of growing probes that takes this much more than its round trips measures throughput
/// well enough.
pub const ENOUGH_EXTRA: Duration = Duration::from_millis(20);
/// The whole measurement takes about this long at most (a probe pair under way finishes).
pub const BUDGET: Duration = Duration::from_millis(300);
/// Throughput above this (Mbit/s) is reported as this: loopback is not measured closer.
pub const MAX_MBIT: f64 = 100_000.0;

/// A link as measured: round-trip time and throughput.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Link {
    pub rtt_ms: f64,
    pub mbit: f64,
    /// What the measurement took.
    pub ms: f64,
}

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("expected a probe reply of {want} bytes, got {got}")]
    Answer { want: u32, got: String },
    #[error("a reply came with no probe under way")]
    Unasked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Small probe number `n` (from 0).
    Small(u32),
    /// The growing pair's probe up (`size` bytes up, a small reply).
    Up,
    /// Its probe down (a small probe, `size` bytes back).
    Down,
    Done,
}

/// The measurement under way.
#[derive(Debug)]
pub struct LinkProbe {
    session: DeviceSession,
    started: Instant,
    step: Step,
    size: u32,
    /// When the probe under way was sent, and the reply size it asked for.
    sent: Option<(Instant, u32)>,
    /// Whether the next probe is yet to be handed out.
    due: bool,
    rtt: Duration,
    up_took: Duration,
    result: Option<Link>,
}

impl LinkProbe {
    pub fn new(now: Instant) -> LinkProbe {
        LinkProbe {
            session: DeviceSession::new([0; 32], 0, 0, Default::default()),
            started: now,
            step: Step::Small(0),
            size: FIRST_SIZE,
            sent: None,
            due: true,
            rtt: Duration::MAX,
            up_took: Duration::ZERO,
            result: None,
        }
    }

    /// The next probe to send, sent at `now`; none while one is under way or once measured.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Result<Message, ProbeError>> {
        if !self.due {
            return None;
        }
        let (up, down) = match self.step {
            Step::Small(_) => (SMALL, SMALL),
            Step::Up => (self.size, SMALL),
            Step::Down => (SMALL, self.size),
            Step::Done => return None,
        };
        self.due = false;
        self.sent = Some((now, down));
        Some(self.session.probe(vec![0xa5; up as usize], down).map_err(ProbeError::from))
    }

    /// A message from the clone, which arrived at `now`.
    pub fn handle_message(&mut self, now: Instant, m: Message) -> Result<(), ProbeError> {
        let (at, want) = self.sent.take().ok_or(ProbeError::Unasked)?;
        match self.session.on_message(m)? {
            DeviceEvent::ProbeReply { size } if size == want as usize => {}
            other => return Err(ProbeError::Answer { want, got: format!("{other:?}") }),
        }
        let took = now.saturating_duration_since(at);
        self.step = match self.step {
            Step::Small(n) => {
                self.rtt = self.rtt.min(took);
                if n + 1 < SMALL_PROBES { Step::Small(n + 1) } else { Step::Up }
            }
            Step::Up => {
                self.up_took = took;
                Step::Down
            }
            Step::Down => {
                let extra = (self.up_took + took).saturating_sub(2 * self.rtt);
                if extra >= ENOUGH_EXTRA || self.size >= MAX_SIZE || now.saturating_duration_since(self.started) >= BUDGET {
                    let secs = extra.as_secs_f64().max(1e-6);
                    let mbit = (2.0 * f64::from(self.size) * 8.0 / secs / 1e6).min(MAX_MBIT);
                    let ms = now.saturating_duration_since(self.started).as_secs_f64() * 1e3;
                    self.result = Some(Link { rtt_ms: self.rtt.as_secs_f64() * 1e3, mbit, ms });
                    Step::Done
                } else {
                    self.size = self.size.saturating_mul(4).min(MAX_SIZE);
                    Step::Up
                }
            }
            Step::Done => Step::Done,
        };
        self.due = self.step != Step::Done;
        Ok(())
    }

    /// The link, once measured.
    pub fn result(&self) -> Option<Link> {
        self.result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a measurement over a simulated link: each message takes `rtt / 2` plus its bytes
    /// at `mbit` one way.
    fn measure(rtt: Duration, mbit: f64) -> Link {
        let mut now = Instant::now();
        let mut p = LinkProbe::new(now);
        let mut clone = crate::session::CloneSession::new();
        let one_way = |bytes: usize| rtt / 2 + Duration::from_secs_f64(bytes as f64 * 8.0 / (mbit * 1e6));
        for _ in 0..100 {
            if let Some(l) = p.result() {
                return l;
            }
            let probe = p.poll_transmit(now).expect("a probe is due").unwrap();
            let Message::Probe { bytes, reply } = &probe else { panic!("{probe:?}") };
            now += one_way(bytes.len());
            let event = clone.on_message(probe.clone()).unwrap();
            assert!(matches!(event, crate::session::CloneEvent::Probe { .. }));
            let answer = clone.probe_reply(*reply).unwrap();
            let Message::ProbeReply { bytes } = &answer else { panic!() };
            now += one_way(bytes.len());
            assert!(p.poll_transmit(now).is_none(), "one probe at a time");
            p.handle_message(now, answer).unwrap();
        }
        panic!("the measurement never ended")
    }

    #[test]
    fn a_wifi_link_is_measured_as_it_is() {
        let l = measure(Duration::from_millis(10), 20.0);
        assert!((l.rtt_ms - 10.0).abs() < 0.1, "{l:?}");
        // Small probes' own bytes make the round trip a little longer than the pure latency,
        // so the throughput comes out a little high: within 5%.
        assert!((l.mbit - 20.0).abs() / 20.0 < 0.05, "{l:?}");
        assert!(l.ms < BUDGET.as_secs_f64() * 1e3 + 200.0, "{l:?}");
    }

    #[test]
    fn a_slow_link_stops_at_the_first_size_that_shows_its_rate() {
        let l = measure(Duration::from_millis(100), 1.0);
        assert!((l.rtt_ms - 100.0).abs() < 1.0, "{l:?}");
        assert!((l.mbit - 1.0).abs() < 0.1, "{l:?}");
    }

    #[test]
    fn a_fast_link_stops_at_the_largest_probe_or_the_budget() {
        let l = measure(Duration::from_micros(50), 10_000.0);
        assert!(l.mbit > 5_000.0, "{l:?}");
    }

    #[test]
    fn a_reply_of_the_wrong_size_or_unasked_is_an_error() {
        let now = Instant::now();
        let mut p = LinkProbe::new(now);
        assert!(matches!(p.handle_message(now, Message::ProbeReply { bytes: vec![0; 16] }), Err(ProbeError::Unasked)));
        let _ = p.poll_transmit(now).unwrap().unwrap();
        assert!(matches!(p.handle_message(now, Message::ProbeReply { bytes: vec![0; 3] }), Err(ProbeError::Answer { want: 16, .. })));
    }
}
