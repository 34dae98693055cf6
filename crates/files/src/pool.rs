//! A budget of bytes shared by several holders: one device's replicas on a clone, their
//! memories, tables and host-side buffers (file contents, journals, output) together.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes several holders share a limit of: each takes before it holds and gives back what it let
/// go of.
#[derive(Debug)]
pub struct Pool {
    limit: u64,
    used: AtomicU64,
}

impl Pool {
    pub fn new(limit: u64) -> Arc<Pool> {
        Arc::new(Pool { limit, used: AtomicU64::new(0) })
    }

    /// Bytes held now, all holders together.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Takes `n` bytes, or says how many all would hold with them (over the limit).
    pub fn take(&self, n: u64) -> Result<(), u64> {
        self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| u.checked_add(n).filter(|w| *w <= self.limit)).map(|_| ()).map_err(|u| u.saturating_add(n))
    }

    /// Gives back `n` bytes.
    pub fn give(&self, n: u64) {
        let _ = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_sub(n)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_share_the_limit() {
        let p = Pool::new(100);
        assert!(p.take(60).is_ok());
        assert_eq!(p.take(50), Err(110));
        assert!(p.take(40).is_ok());
        p.give(60);
        assert_eq!(p.used(), 40);
        p.give(1000);
        assert_eq!(p.used(), 0, "never below zero");
    }
}
