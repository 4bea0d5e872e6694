//! A sink's worker: the thread that takes events from the sink's queue and delivers them, in
//! order, retrying what fails.
//!
//! A failed delivery is retried after 0.5 s, the wait doubling up to `retry_max_delay` (or what
//! the server's `Retry-After` says), until the sink has been failing for `give_up_after`; then
//! the event is counted as failed and the next one is tried. An error that says retrying cannot
//! help is counted at once. A stop cuts a retry short: the event in hand and the rest of the
//! queue are handed back undelivered. After each event it is done with (delivered or given up
//! on) the worker bumps the `done` count its feed reads to forget its copy (see `feed`), and it
//! counts what it does in the [`LiveCounters`] it shares with that feed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::counters::{bump, LiveCounters, LiveTrouble};
use super::{log, warn, Sink, SinkError, SinkSpec};
use crate::decide::{Ban, Event};

const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The sink's thread.
pub(super) struct Worker {
    name: String,
    retry_max: Duration,
    give_up_after: Duration,
    /// When the sink started failing (reset by any success). `give_up_after` counts from here,
    /// not per event: once an outage has lasted that long, each later event gets one try until
    /// one succeeds, rather than every queued event waiting out the whole period again.
    failing_since: Option<Instant>,
    stopping: Arc<AtomicBool>,
    /// How many events taken from the queue are delivered or given up on (see `Feed::sent`).
    done: Arc<AtomicU64>,
    /// A retry was cut short by a stop: the event is handed back, not counted as failed.
    interrupted: bool,
    /// What it has done so far, shared with the feed (which counts what it drops).
    live: Arc<LiveCounters>,
    /// Whether it is failing now, and its last failure, for `status`.
    trouble: Arc<LiveTrouble>,
}

impl Worker {
    /// The worker of the sink `spec`, sharing `stopping`, `done` and `live` with its feed.
    pub(super) fn new(
        spec: &SinkSpec,
        stopping: Arc<AtomicBool>,
        done: Arc<AtomicU64>,
        live: Arc<LiveCounters>,
        trouble: Arc<LiveTrouble>,
    ) -> Worker {
        Worker {
            name: spec.name.clone(),
            retry_max: spec.common.retry_max_delay,
            give_up_after: spec.common.give_up_after,
            failing_since: None,
            stopping,
            done,
            interrupted: false,
            live,
            trouble,
        }
    }

    /// Starts `sink`, hands it the `active` bans, then delivers what comes from `rx` until the
    /// queue is closed and empty. Returns what it did not deliver because of a stop (the event
    /// in hand first, then the rest of the queue, in order).
    pub(super) fn run(
        mut self,
        mut sink: Box<dyn Sink>,
        active: Vec<Ban>,
        rx: Receiver<Event>,
    ) -> Vec<Event> {
        if self.retry("starting", || sink.begin()).is_none() {
            if self.interrupted {
                return rx.iter().collect();
            }
            // Without a start there is nothing to deliver to: every event fails.
            for _ in rx.iter() {
                bump(&self.live.failed, 1);
                self.done.fetch_add(1, Ordering::Release);
            }
            return Vec::new();
        }
        // When the sink asked to be flushed again (work held back until then).
        let mut flush_at: Option<Instant> = None;
        if !active.is_empty() {
            match self.retry("restoring", || sink.restore(&active)) {
                // Written at once (a sink added by a reload denies the active bans without
                // waiting for the next event; after a restart, an nginx file that already
                // holds them is not rewritten).
                Some(()) => flush_at = self.flush(&mut *sink),
                // A sink that could not take over the restored bans still delivers what
                // comes next.
                None => bump(&self.live.failed, 1),
            }
        }
        loop {
            let next = match flush_at {
                Some(at) => rx.recv_deadline(at),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(ev) => {
                    match self.retry("delivering", || sink.deliver(&ev)) {
                        Some(()) => bump(&self.live.delivered, 1),
                        None if self.interrupted => {
                            let mut pending = vec![ev];
                            pending.extend(rx.iter());
                            return pending;
                        }
                        None => bump(&self.live.failed, 1),
                    }
                    self.done.fetch_add(1, Ordering::Release);
                    let due = flush_at.is_some_and(|at| at <= Instant::now());
                    if rx.is_empty() || due {
                        flush_at = self.flush(&mut *sink);
                    }
                }
                Err(RecvTimeoutError::Timeout) => flush_at = self.flush(&mut *sink),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // The end: one last flush (so that a sink that got no event still writes its state,
        // an empty nginx file replacing a stale one), then whatever is held back, waiting for
        // it if need be, unless this is a stop (watch's next start, or the sink's new version
        // after a reload, writes it at once).
        flush_at = self.flush(&mut *sink);
        while let Some(at) = flush_at {
            if !self.sleep(at.saturating_duration_since(Instant::now())) {
                log(
                    &self.name,
                    format_args!("stopped with work held back (min_reload_interval)"),
                );
                break;
            }
            flush_at = self.flush(&mut *sink);
        }
        Vec::new()
    }

    /// Sleeps for `d` unless a stop comes first (then false).
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    fn flush(&mut self, sink: &mut dyn Sink) -> Option<Instant> {
        self.retry("flushing", || sink.flush())
            .flatten()
            .map(|d| Instant::now() + d)
    }

    fn note_trouble(&self, change: impl FnOnce(&mut super::counters::Trouble)) {
        // A poisoned lock only means a reader panicked mid-read; the data is still whole.
        let mut t = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut t);
    }

    /// Runs `f` until it succeeds, fails for good, or has failed for `give_up_after`.
    fn retry<T>(&mut self, what: &str, mut f: impl FnMut() -> Result<T, SinkError>) -> Option<T> {
        let mut delay = FIRST_RETRY.min(self.retry_max);
        let mut attempt = 0u32;
        loop {
            let e = match f() {
                Ok(v) => {
                    if self.failing_since.take().is_some() {
                        self.note_trouble(|t| t.failing_since_ms = None);
                    }
                    if attempt > 0 {
                        log(
                            &self.name,
                            format_args!("{what}: succeeded after {attempt} retries"),
                        );
                    }
                    return Some(v);
                }
                Err(e) => e,
            };
            let now_ms = crate::clock::wall_ms();
            let retryable = e.is_retryable();
            let first = retryable && self.failing_since.is_none();
            self.note_trouble(|t| {
                t.last_error = Some((now_ms, format!("{what}: {e}")));
                if first {
                    t.failing_since_ms = Some(now_ms);
                }
            });
            if !retryable {
                warn(&self.name, format_args!("{what} failed: {e}"));
                return None;
            }
            let since = *self.failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.give_up_after {
                warn(
                    &self.name,
                    format_args!("{what}: giving up after {attempt} retries: {e}"),
                );
                return None;
            }
            // One line per doubling of the wait, not one per attempt, while an endpoint is down.
            if attempt == 0 || delay < self.retry_max {
                warn(&self.name, format_args!("{what} failed, will retry: {e}"));
            }
            let wait = e.retry_after.unwrap_or(delay);
            if !self.sleep(wait) {
                log(
                    &self.name,
                    format_args!("{what}: stopped while retrying: {e}"),
                );
                self.interrupted = true;
                return None;
            }
            delay = (delay * 2).min(self.retry_max);
            attempt += 1;
            bump(&self.live.retries, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crate::decide::Event;
    use crate::sink::testing::{ban, setup, spec, unban, wait_until};
    use crate::sink::{Sink, SinkError, SinkSpec, Sinks};

    #[test]
    fn a_sink_that_is_down_gets_everything_once_back_in_order() {
        let mut s = setup(100, true, false, Duration::from_secs(3600));
        s.down.store(true, Ordering::SeqCst);
        s.sinks.emit(&ban("10.0.0.1", false));
        s.sinks.emit(&ban("10.0.0.2", false));
        s.sinks.emit(&unban("10.0.0.1"));
        std::thread::sleep(Duration::from_millis(100));
        s.down.store(false, Ordering::SeqCst);
        let r = s.sinks.finish();
        assert_eq!(
            *s.got.lock().unwrap(),
            ["ban 10.0.0.1", "ban 10.0.0.2", "unban 10.0.0.1"]
        );
        assert_eq!(r[0].delivered, 3);
        assert_eq!(r[0].failed, 0);
        assert!(r[0].retries > 0);
    }

    #[test]
    fn refused_and_timed_out_events_are_reported_not_retried_forever() {
        let mut s = setup(10, true, true, Duration::from_secs(3600));
        s.sinks.emit(&ban("10.0.0.1", false));
        let r = s.sinks.finish();
        assert_eq!((r[0].failed, r[0].retries), (1, 0));

        let mut s = setup(10, true, false, Duration::from_millis(50));
        s.down.store(true, Ordering::SeqCst);
        s.sinks.emit(&ban("10.0.0.1", false));
        s.sinks.emit(&ban("10.0.0.2", false));
        let r = s.sinks.finish();
        assert_eq!((r[0].failed, r[0].delivered), (2, 0));
        assert!(s.got.lock().unwrap().is_empty());
    }

    #[test]
    fn events_given_up_on_are_not_pending() {
        let mut s = setup(10, true, true, Duration::from_secs(3600));
        s.sinks.emit(&ban("10.0.0.1", false));
        wait_until("refused", || s.sinks.pending().is_empty());
        let r = s.sinks.finish();
        assert_eq!(r[0].failed, 1);
    }

    #[test]
    fn a_stop_does_not_wait_for_work_held_back() {
        /// Always has a write held back for an hour (an nginx reload interval).
        struct Holding(Arc<Mutex<u32>>);
        impl Sink for Holding {
            fn deliver(&mut self, _: &Event) -> Result<(), SinkError> {
                Ok(())
            }
            fn flush(&mut self) -> Result<Option<Duration>, SinkError> {
                *self.0.lock().unwrap() += 1;
                Ok(Some(Duration::from_secs(3600)))
            }
        }
        let flushes = Arc::new(Mutex::new(0));
        let spec = spec("held", 1, 10, true, Duration::from_secs(3600));
        let mut build = |_: &SinkSpec| Ok(Box::new(Holding(flushes.clone())) as Box<dyn Sink>);
        let mut sinks = Sinks::start_built(&[spec], &[], &mut build).unwrap();
        sinks.emit(&ban("10.0.0.1", false));
        // Returns (the test would hang otherwise), after the last flush.
        let (reports, left) = sinks.stop();
        assert!(left.is_empty());
        assert_eq!(reports[0].delivered, 1);
        assert!(
            *flushes.lock().unwrap() >= 2,
            "the flush after the event and at the end"
        );
    }
}
