//! What each sink has done: one counter type, [`SinkCounters`], for every place that counts.
//!
//! While a sink runs, the decider's end of its queue (`feed`: bans dropped or skipped) and its
//! worker thread (`worker`: events delivered or failed, retries) bump one shared
//! `LiveCounters`, the same type over atomics; watch's metrics endpoint reads it as a plain
//! `SinkCounters` when it is asked ([`Sinks::counters`](super::Sinks::counters)), and a sink
//! that stops reports it in its [`SinkReport`]. Relaxed counters: each one is exact on its own,
//! and a scrape that sees one a moment before another is harmless.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What a sink did with the events it was handed. `C` is `u64` for the counts at one moment,
/// `AtomicU64` for the live counters of a running sink (`LiveCounters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounters<C = u64> {
    /// Events delivered (or, in dry-run mode, logged).
    pub delivered: C,
    /// Events given up on (refused, or still failing after `give_up_after`).
    pub failed: C,
    /// Bans dropped because the queue was full, and the unbans that went with them.
    pub dropped: C,
    /// Bans of clients behind a trusted proxy that this sink does not take (`proxied`).
    pub skipped_proxied: C,
    /// Attempts that failed and were tried again.
    pub retries: C,
}

/// The shared, live form of [`SinkCounters`].
pub(crate) type LiveCounters = SinkCounters<AtomicU64>;

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

/// How a running sink is doing beyond its counts (`floodwatch status`): whether its deliveries
/// are failing now, and its last failure. Written by its worker only when a delivery fails or
/// the first one after failures succeeds; read when asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trouble {
    /// Wall time (UTC ms) since when deliveries fail and are retried; none while it works.
    pub failing_since_ms: Option<i64>,
    /// The last failure: when (UTC ms) and what.
    pub last_error: Option<(i64, String)>,
}

/// The shared form of [`Trouble`].
pub(crate) type LiveTrouble = Mutex<Trouble>;

/// What one sink has done and how it is doing, while it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkHealth {
    pub name: String,
    pub counters: SinkCounters,
    /// Events handed to it that it has not delivered yet (queued, in retry, or waiting in
    /// front of a full queue).
    pub pending: u64,
    pub trouble: Trouble,
}

/// What one sink did with the events it was handed, once stopped: its name and its counters,
/// which read as fields of the report (`report.failed`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkReport {
    pub name: String,
    pub counters: SinkCounters,
}

impl Deref for SinkReport {
    type Target = SinkCounters;

    fn deref(&self) -> &SinkCounters {
        &self.counters
    }
}

impl fmt::Display for SinkReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} delivered, {} failed, {} dropped (queue full), {} behind a proxy skipped, {} retries",
            self.name, self.delivered, self.failed, self.dropped, self.skipped_proxied, self.retries
        )
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
