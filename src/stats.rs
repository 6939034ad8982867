//! Process-wide counters of what the zero-error rules did, read by `/__failover/state`.
//!
//! Relaxed atomics bumped off the common path (a retry, a rescue); nothing here is read
//! to make a decision.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Stats {
    /// Requests re-sent to a later upstream after one failed them.
    pub retries: AtomicU64,
    /// Requests moved, while waiting for a response head, when traffic switched.
    pub rescues: AtomicU64,
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
