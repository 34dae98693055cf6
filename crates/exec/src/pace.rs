//! A slower device, emulated: `run --device-speed FRACTION` makes every guest thread run at
//! FRACTION of this machine's speed.
//!
//! The engine runs with epoch interruption and a thread advances its epoch every [`PACE_TICK`].
//! The store's call hook counts the CPU time each thread spends in the guest's wasm (from its
//! entry into wasm, or its return from a host call, to its next call of the host or return to
//! it), and at each epoch check past the deadline (wasmtime puts one at every function entry and
//! loop header; its callback runs as a host call) the thread sleeps `(1 / FRACTION - 1)` times
//! the guest CPU time it used since it last slept. Guest code only is slowed: host calls (WASI,
//! the device's own migration work: capture, compression, TLS, merges, the descriptor tool's
//! wasm) run at this machine's speed, as they do under the Pulley interpreter, the other stand-in
//! for a phone. Unlike Pulley, this works for multi-threaded modules: each thread is paced on its
//! own, as each core of a slower phone would be.

use std::cell::Cell;
use std::time::Duration;

/// How often the epoch advances when pacing: a thread sleeps after at most about this much CPU.
pub const PACE_TICK: Duration = Duration::from_millis(1);

/// How much slower guest code runs (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// The fraction of this machine's speed.
    speed: f64,
    /// Seconds of sleep per second of CPU.
    sleep_per_cpu: f64,
}

impl Pace {
    /// Guest code at `speed` (0 < speed <= 1) of this machine's.
    pub fn new(speed: f64) -> Result<Pace, String> {
        if !(speed > 0.0 && speed <= 1.0) {
            return Err(format!("a device speed of {speed}: give a fraction of this machine's speed above 0 and at most 1 (0.1: ten times slower)"));
        }
        Ok(Pace { speed, sleep_per_cpu: 1.0 / speed - 1.0 })
    }

    /// The calling thread starts running guest code (it enters wasm, or returns to it from a
    /// host call).
    pub(crate) fn enter(&self) {
        CHARGING.with(|c| c.set(thread_cpu_time()));
    }

    /// The calling thread stops running guest code (it calls the host, or returns to it): the
    /// CPU time since [`Pace::enter`] is owed.
    pub(crate) fn leave(&self) {
        if let (Some(since), Some(now)) = (CHARGING.with(|c| c.take()), thread_cpu_time()) {
            OWED.with(|o| o.set(o.get() + now.saturating_sub(since)));
        }
    }

    /// At an epoch check (a host call: [`Pace::leave`] ran): sleeps for what the guest code owes.
    pub(crate) fn pay(&self) {
        let owed = OWED.with(|o| o.replace(Duration::ZERO));
        if self.sleep_per_cpu > 0.0 && !owed.is_zero() {
            std::thread::sleep(owed.mul_f64(self.sleep_per_cpu));
        }
    }

    /// Starts the thread that advances `engine`'s epoch every [`PACE_TICK`] while the engine
    /// lives.
    pub(crate) fn start_ticker(engine: &wasmtime::Engine) -> Result<(), crate::ExecError> {
        crate::run::start_ticker(engine, PACE_TICK, "pace")
    }

    /// The fraction of this machine's speed the guest code runs at.
    pub fn speed(&self) -> f64 {
        self.speed
    }
}

thread_local! {
    /// The calling thread's CPU time when it last entered guest code, while it runs it.
    static CHARGING: Cell<Option<Duration>> = const { Cell::new(None) };
    /// Guest CPU time not yet slept for.
    static OWED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// The CPU time the calling thread has used.
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the one we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (r == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_guest_time_is_owed_and_paying_clears_it() {
        let p = Pace::new(0.5).unwrap();
        let spin = |d: Duration| {
            let t = thread_cpu_time().unwrap();
            while thread_cpu_time().unwrap() - t < d {}
        };
        p.enter();
        spin(Duration::from_millis(20));
        p.leave();
        // Host work (not between enter and leave) is not owed.
        spin(Duration::from_millis(50));
        let owed = OWED.with(|o| o.get());
        assert!(owed >= Duration::from_millis(20) && owed < Duration::from_millis(50), "{owed:?}");
        p.pay();
        assert_eq!(OWED.with(|o| o.get()), Duration::ZERO);
        // A leave without an enter owes nothing.
        p.leave();
        assert_eq!(OWED.with(|o| o.get()), Duration::ZERO);
    }

    #[test]
    fn a_speed_outside_zero_to_one_is_refused_with_what_to_give() {
        for bad in [0.0, -1.0, 1.5, f64::NAN] {
            let e = Pace::new(bad).unwrap_err();
            assert!(e.contains("above 0 and at most 1"), "{e}");
        }
        assert_eq!(Pace::new(1.0).unwrap().sleep_per_cpu, 0.0);
        assert_eq!(Pace::new(0.25).unwrap().sleep_per_cpu, 3.0);
    }
}
