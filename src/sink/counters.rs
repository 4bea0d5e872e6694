//! What each sink has done so far, readable while it runs (watch's metrics endpoint).
//!
//! The sink's worker thread and the decider's end of its queue bump shared atomics; the watch
//! loop reads them when it is asked for metrics. Relaxed counters: each one is exact on its
//! own, and a scrape that sees one a moment before another is harmless.

use std::sync::atomic::{AtomicU64, Ordering};

/// A sink's counters at one moment (the same meanings as in
/// [`SinkReport`](super::SinkReport)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounters {
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
    pub skipped_proxied: u64,
    pub retries: u64,
}

/// The shared, live form of [`SinkCounters`].
#[derive(Debug, Default)]
pub(crate) struct LiveCounters {
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) skipped_proxied: AtomicU64,
    pub(crate) retries: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl LiveCounters {
    pub(crate) fn get(&self) -> SinkCounters {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkCounters {
            delivered: load(&self.delivered),
            failed: load(&self.failed),
            dropped: load(&self.dropped),
            skipped_proxied: load(&self.skipped_proxied),
            retries: load(&self.retries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_show_in_the_snapshot() {
        let c = LiveCounters::default();
        bump(&c.delivered, 3);
        bump(&c.retries, 1);
        bump(&c.delivered, 1);
        let got = c.get();
        assert_eq!((got.delivered, got.retries, got.failed), (4, 1, 0));
    }
}
