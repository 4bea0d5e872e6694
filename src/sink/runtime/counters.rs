//! What each sink has done: one counter type, [`SinkCounters`], for every place that counts.
//!
//! While a sink runs, the decider's end of its queue (`feed`: bans dropped or skipped) and its
//! worker thread (`worker`: events delivered or failed, retries) bump one shared
//! `LiveCounters`, the same type over atomics; watch's metrics endpoint reads it as a plain
//! `SinkCounters` when it is asked ([`Sinks::counters`](crate::sink::Sinks::counters)), and a sink
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

/// How a running sink is doing beyond its counts (`floodwatch status`, the `floodwatch_sink_up`
/// gauge): whether it is failing now, and its last failure. A sink is failing from its first
/// failed step (a delivery, its start, a flush: an nginx write, test or reload) until a step of
/// the same kind fully succeeds, whether or not the failed one is still retried. Written by its
/// worker only when that changes or a step fails; read when asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trouble {
    /// Wall time (UTC ms) since when it fails; none while it works.
    pub failing_since_ms: Option<i64>,
    /// The last failure: when (UTC ms) and what, its first line only (the log has it whole).
    pub last_error: Option<(i64, String)>,
    /// What the sink said of its work at its end (see `Sink::summary`).
    pub summary: Option<String>,
}

impl Trouble {
    /// Whether its last steps all succeeded.
    pub fn is_up(&self) -> bool {
        self.failing_since_ms.is_none()
    }
}

/// The first line of an error, trimmed, with control characters replaced: what fits in one
/// row of `status` (a command's stderr may run over many lines).
pub fn first_line(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or("").trim_end();
    let mut out: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().lines().nth(1).is_some() {
        out.push_str(" (more in the log)");
    }
    out
}

/// One sink's counters and whether it is up, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkMetrics {
    pub name: String,
    pub counters: SinkCounters,
    /// Its last steps all succeeded (`floodwatch_sink_up` 1).
    pub up: bool,
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
/// which read as fields of the report (`report.failed`), and whether it ended failing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkReport {
    pub name: String,
    pub counters: SinkCounters,
    /// It ended failing: its last failure (first line). A replay whose sink ends so fails.
    pub failing: Option<String>,
    /// What it said of its work (a dry run: what it would have done).
    pub summary: Option<String>,
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
        )?;
        if let Some(e) = &self.failing {
            write!(f, "; FAILING: {e}")?;
        }
        if let Some(s) = &self.summary {
            write!(f, "; {s}")?;
        }
        Ok(())
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

    #[test]
    fn an_error_shows_as_its_first_line() {
        assert_eq!(first_line("one line\n"), "one line");
        assert_eq!(
            first_line("test failed: nginx: [emerg] open()\tx\nnginx: configuration test failed\n"),
            "test failed: nginx: [emerg] open() x (more in the log)"
        );
        assert_eq!(first_line(""), "");
    }
}
