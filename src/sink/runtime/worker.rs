//! A sink's worker: the thread that takes events from the sink's queue and delivers them, in
//! order, retrying what fails, and keeps the sink's health true.
//!
//! A failed delivery (or start) is retried after 0.5 s, the wait doubling up to
//! `retry_max_delay` (or what the server's `Retry-After` says), until the sink has been failing
//! for `give_up_after`; then the event is counted as failed and the next one is tried. A
//! failure only the admin can fix (`nginx -t` refuses the config, the API refuses the token) is
//! retried every `retry_max_delay` from the start. An error that says retrying cannot help is
//! counted at once. A stop cuts a retry short: the event in hand and the rest of the queue are
//! handed back undelivered. After each event it is done with (delivered or given up on) the
//! worker bumps the `done` count its feed reads to forget its copy (see `feed`), and it counts
//! what it does in the [`LiveCounters`] it shares with that feed.
//!
//! A flush (an nginx write, test and reload) that fails is not waited on: it is tried again
//! with the same backoff while events keep coming (an nginx file then takes them all at its
//! next write), and for as long as it fails, since no later event could make up for it.
//!
//! **Health.** The sink is failing from its first failed step until a step of the same kind
//! (delivery or flush) fully succeeds, whether the failed one was retried, given up on, or
//! refused: `status` and `floodwatch_sink_up` never call a sink whose last step failed ok.
//! Becoming ok again is logged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::counters::{bump, first_line, LiveCounters, LiveTrouble, Trouble};
use crate::decide::event::Rfc3339;
use crate::decide::{Ban, Event};
use crate::sink::{log, warn, Sink, SinkError, SinkSpec};

const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The kinds of step whose failure makes a sink fail until one of the same kind succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Starting, taking over the restored bans, delivering an event.
    Deliver,
    /// Doing the work batched or held back (an nginx write, test and reload).
    Flush,
}

/// The sink's thread.
pub(super) struct Worker {
    name: String,
    retry_max: Duration,
    give_up_after: Duration,
    /// When deliveries started failing (reset by any success). `give_up_after` counts from
    /// here, not per event: once an outage has lasted that long, each later event gets one try
    /// until one succeeds, rather than every queued event waiting out the whole period again.
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
    /// The last start, restore or delivery failed (retried, given up on or refused).
    deliver_failing: bool,
    /// The last flush failed.
    flush_failing: bool,
    /// Tries of the failing flush so far, and the wait before its next one.
    flush_tries: u32,
    flush_delay: Duration,
    /// A dry run (its report says what it would have done).
    dry_run: bool,
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
        let retry_max = spec.common.retry_max_delay;
        Worker {
            name: spec.name.clone(),
            retry_max,
            give_up_after: spec.common.give_up_after,
            failing_since: None,
            stopping,
            done,
            interrupted: false,
            live,
            trouble,
            deliver_failing: false,
            flush_failing: false,
            flush_tries: 0,
            flush_delay: FIRST_RETRY.min(retry_max),
            dry_run: spec.common.dry_run,
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
        // When the sink is to be flushed again (work held back, or a failed flush to retry).
        let mut flush_at: Option<Instant> = None;
        let mut started = self.start(&mut *sink, &active, &mut flush_at);
        if self.interrupted {
            return rx.iter().collect();
        }
        loop {
            let next = match flush_at {
                Some(at) => rx.recv_deadline(at),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(ev) => {
                    // A sink that could not start tries again at each event (once it has been
                    // failing for give_up_after, one try each).
                    if !started {
                        started = self.start(&mut *sink, &active, &mut flush_at);
                    }
                    let delivered = match started {
                        true => self.retry(Step::Deliver, "delivering", || sink.deliver(&ev)),
                        false => None,
                    };
                    match delivered {
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
                    // A failed flush waits for its retry rather than going again at each event.
                    let waiting = self.flush_failing && flush_at.is_some();
                    if started && ((rx.is_empty() && !waiting) || due) {
                        flush_at = self.flush(&mut *sink);
                    }
                }
                Err(RecvTimeoutError::Timeout) => flush_at = self.flush(&mut *sink),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if started {
            self.end(&mut *sink);
        }
        let summary = sink.summary().or_else(|| {
            let n = self.live.delivered.load(Ordering::Relaxed);
            self.dry_run.then(|| match n {
                0 => "dry run: no change, nothing to deliver".to_string(),
                n => format!("dry run: would have delivered {n} events"),
            })
        });
        self.note_trouble(|t| t.summary = summary);
        Vec::new()
    }

    /// Starts the sink and hands it the active bans (then flushes: a sink added by a reload
    /// denies them without waiting for the next event; after a restart, an nginx file that
    /// already holds them is not rewritten). False when it could not start.
    fn start(
        &mut self,
        sink: &mut dyn Sink,
        active: &[Ban],
        flush_at: &mut Option<Instant>,
    ) -> bool {
        if self
            .retry(Step::Deliver, "starting", || sink.begin())
            .is_none()
        {
            return false;
        }
        if !active.is_empty() {
            match self.retry(Step::Deliver, "restoring", || sink.restore(active)) {
                Some(()) => *flush_at = self.flush(sink),
                // A sink that could not take over the restored bans still delivers what comes
                // next.
                None => bump(&self.live.failed, 1),
            }
        }
        true
    }

    /// The end: one last flush (so that a sink that got no event still writes its state, an
    /// empty nginx file replacing a stale one). At the end of a replay, what was held back is
    /// done at once and retried as a delivery is (until `give_up_after`); at a stop it is tried
    /// once (watch's next
    /// start, or the sink's new version after a reload, writes it at once).
    fn end(&mut self, sink: &mut dyn Sink) {
        if self.stopping.load(Ordering::Relaxed) {
            if self.flush(sink).is_some() {
                log(
                    &self.name,
                    format_args!(
                        "stopped with work held back (min_reload_interval or a failing step)"
                    ),
                );
            }
            return;
        }
        // Retried as a delivery is, but what only the admin can fix (nginx -t refusing) is
        // reported at once: a replay is not left waiting for someone to fix nginx.
        self.retry(Step::Flush, "flushing", || {
            sink.flush_now().map_err(|e| match e.needs_admin() {
                true => SinkError::refused(e.message),
                false => e,
            })
        });
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

    /// Flushes once; when it fails, says when to try again (none for an error that says
    /// retrying cannot help: the next event tries again).
    fn flush(&mut self, sink: &mut dyn Sink) -> Option<Instant> {
        if self.flush_failing && self.flush_tries > 0 {
            bump(&self.live.retries, 1);
        }
        let e = match sink.flush() {
            Ok(None) => {
                let tries = std::mem::take(&mut self.flush_tries);
                self.flush_delay = FIRST_RETRY.min(self.retry_max);
                self.succeeded(Step::Flush, "flushing", tries);
                return None;
            }
            Ok(Some(d)) => return Some(Instant::now() + d),
            Err(e) => e,
        };
        self.failed(Step::Flush, "flushing", &e);
        if !e.is_retryable() {
            warn(&self.name, format_args!("flushing failed: {e}"));
            self.flush_tries = 0;
            return None;
        }
        let wait = self.wait(&e, self.flush_delay);
        // One line per doubling of the wait, not one per attempt, while it fails.
        if self.flush_tries == 0 || self.flush_delay < self.retry_max {
            warn(
                &self.name,
                format_args!("flushing failed, will retry in {}: {e}", secs(wait)),
            );
        }
        self.flush_tries += 1;
        self.flush_delay = (self.flush_delay * 2).min(self.retry_max);
        Some(Instant::now() + wait)
    }

    /// How long to wait before trying again after `e`, `delay` being the backoff's turn.
    fn wait(&self, e: &SinkError, delay: Duration) -> Duration {
        let wait = if e.needs_admin() {
            self.retry_max
        } else {
            delay
        };
        e.retry_after.unwrap_or(wait)
    }

    fn note_trouble(&self, change: impl FnOnce(&mut Trouble)) {
        // A poisoned lock only means a reader panicked mid-read; the data is still whole.
        let mut t = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut t);
    }

    /// A step failed: the sink is failing from now (if it was not already).
    fn failed(&mut self, step: Step, what: &str, e: &SinkError) {
        match step {
            Step::Deliver => self.deliver_failing = true,
            Step::Flush => self.flush_failing = true,
        }
        let now_ms = crate::clock::wall_ms();
        let line = first_line(&format!("{what}: {e}"));
        self.note_trouble(|t| {
            t.last_error = Some((now_ms, line));
            t.failing_since_ms.get_or_insert(now_ms);
        });
    }

    /// A step succeeded after `retries` retries: the sink is up again when no other kind of
    /// step is still failing, and that is said.
    fn succeeded(&mut self, step: Step, what: &str, retries: u32) {
        let was = self.deliver_failing || self.flush_failing;
        match step {
            Step::Deliver => self.deliver_failing = false,
            Step::Flush => self.flush_failing = false,
        }
        if !was {
            return;
        }
        if self.deliver_failing || self.flush_failing {
            if retries > 0 {
                log(
                    &self.name,
                    format_args!("{what}: succeeded after {retries} retries"),
                );
            }
            return;
        }
        let mut since = None;
        self.note_trouble(|t| since = t.failing_since_ms.take());
        let since = since.map_or_else(String::new, |t| format!(", failing since {}", Rfc3339(t)));
        log(
            &self.name,
            format_args!("recovered: {what} succeeded after {retries} retries{since}"),
        );
    }

    /// Runs `f` until it succeeds, fails for good, or the sink has failed for `give_up_after`.
    fn retry<T>(
        &mut self,
        step: Step,
        what: &str,
        mut f: impl FnMut() -> Result<T, SinkError>,
    ) -> Option<T> {
        let mut delay = FIRST_RETRY.min(self.retry_max);
        let mut attempt = 0u32;
        loop {
            let e = match f() {
                Ok(v) => {
                    self.failing_since = None;
                    self.succeeded(step, what, attempt);
                    return Some(v);
                }
                Err(e) => e,
            };
            self.failed(step, what, &e);
            if !e.is_retryable() {
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
            let wait = self.wait(&e, delay);
            // One line per doubling of the wait, not one per attempt, while an endpoint is down.
            if attempt == 0 || delay < self.retry_max {
                warn(
                    &self.name,
                    format_args!("{what} failed, will retry in {}: {e}", secs(wait)),
                );
            }
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

/// A wait as the log shows it: `0.5s`, `30s`.
fn secs(d: Duration) -> String {
    format!("{}s", (d.as_millis() as f64 / 1000.0))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crate::decide::Event;
    use crate::sink::runtime::testing::{ban, setup, spec, unban, wait_until};
    use crate::sink::{Sink, SinkError, SinkSpec, Sinks};

    #[test]
    fn a_sink_that_is_down_gets_everything_once_back_in_order() {
        let mut s = setup(100, true, false, Duration::from_secs(3600));
        s.down.store(true, Ordering::SeqCst);
        s.sinks.emit(&ban("10.0.0.1", false));
        s.sinks.emit(&ban("10.0.0.2", false));
        s.sinks.emit(&unban("10.0.0.1"));
        // Back up only once a delivery has failed and been retried, however slow the machine.
        wait_until("retried while down", || {
            s.sinks.health()[0].counters.retries > 0
        });
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

    /// A sink whose deliveries succeed and whose flush fails while `broken` is set, counting
    /// its flushes, and saying whether `flush_now` was used.
    struct Flaky {
        broken: Arc<AtomicBool>,
        flushes: Arc<Mutex<u32>>,
        now: Arc<AtomicBool>,
        hold: bool,
    }

    impl Sink for Flaky {
        fn deliver(&mut self, _: &Event) -> Result<(), SinkError> {
            Ok(())
        }
        fn flush(&mut self) -> Result<Option<Duration>, SinkError> {
            *self.flushes.lock().unwrap() += 1;
            if self.broken.load(Ordering::SeqCst) {
                return Err(SinkError::unavailable("reload failed: line one\nline two"));
            }
            Ok(self.hold.then_some(Duration::from_secs(3600)))
        }
        fn flush_now(&mut self) -> Result<(), SinkError> {
            self.now.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    struct FlakyRun {
        sinks: Sinks,
        broken: Arc<AtomicBool>,
        flushes: Arc<Mutex<u32>>,
        now: Arc<AtomicBool>,
    }

    fn flaky(broken: bool, hold: bool) -> FlakyRun {
        let broken = Arc::new(AtomicBool::new(broken));
        let flushes = Arc::new(Mutex::new(0));
        let now = Arc::new(AtomicBool::new(false));
        let sink = Flaky {
            broken: broken.clone(),
            flushes: flushes.clone(),
            now: now.clone(),
            hold,
        };
        let spec = spec("flaky", 1, 10, true, Duration::from_millis(50));
        let mut sink = Some(sink);
        let mut build = |_: &SinkSpec| Ok(Box::new(sink.take().unwrap()) as Box<dyn Sink>);
        let sinks = Sinks::start_built(&[spec], &[], &mut build).unwrap();
        FlakyRun {
            sinks,
            broken,
            flushes,
            now,
        }
    }

    #[test]
    fn a_failing_flush_keeps_the_sink_failing_and_is_retried_until_it_succeeds() {
        let mut f = flaky(true, false);
        f.sinks.emit(&ban("10.0.0.1", false));
        wait_until("failing", || !f.sinks.health()[0].trouble.is_up());
        // Retried on its own, with no event to set it off, past give_up_after (50 ms): a
        // flush is not an event to give up on.
        wait_until("retried", || *f.flushes.lock().unwrap() >= 4);
        let h = &f.sinks.health()[0];
        assert!(!h.trouble.is_up());
        assert!(!f.sinks.metrics()[0].up);
        let (_, error) = h.trouble.last_error.clone().unwrap();
        assert_eq!(
            error, "flushing: reload failed: line one (more in the log)",
            "one line for status"
        );
        // A delivery that succeeds does not make up for the flush.
        f.sinks.emit(&ban("10.0.0.2", false));
        wait_until("delivered", || f.sinks.health()[0].counters.delivered == 2);
        assert!(!f.sinks.health()[0].trouble.is_up());
        f.broken.store(false, Ordering::SeqCst);
        wait_until("up again", || f.sinks.health()[0].trouble.is_up());
        assert!(f.sinks.metrics()[0].up);
        let r = f.sinks.finish();
        assert!(r[0].failing.is_none(), "{:?}", r[0]);
        assert!(r[0].retries >= 3, "{:?}", r[0]);
        assert_eq!(r[0].failed, 0);
    }

    #[test]
    fn a_refused_or_given_up_event_leaves_the_sink_failing_until_a_delivery_succeeds() {
        let mut s = setup(10, true, true, Duration::from_secs(3600));
        s.sinks.emit(&ban("10.0.0.1", false));
        wait_until("refused", || s.sinks.health()[0].counters.failed == 1);
        let h = &s.sinks.health()[0];
        assert!(
            !h.trouble.is_up(),
            "refused, not retried, but not ok: {h:?}"
        );
        let r = s.sinks.finish();
        assert_eq!(r[0].failing.as_deref(), Some("delivering: no"));

        let mut s = setup(10, true, false, Duration::from_millis(50));
        s.down.store(true, Ordering::SeqCst);
        s.sinks.emit(&ban("10.0.0.1", false));
        wait_until("given up", || s.sinks.health()[0].counters.failed == 1);
        assert!(!s.sinks.health()[0].trouble.is_up());
        s.down.store(false, Ordering::SeqCst);
        s.sinks.emit(&ban("10.0.0.2", false));
        wait_until("up", || s.sinks.health()[0].trouble.is_up());
        let r = s.sinks.finish();
        assert_eq!((r[0].delivered, r[0].failed), (1, 1));
        assert!(r[0].failing.is_none());
    }

    #[test]
    fn the_end_of_a_replay_does_held_back_work_at_once_and_a_stop_does_not() {
        let mut f = flaky(false, true);
        f.sinks.emit(&ban("10.0.0.1", false));
        // Returns at once (the test would hang for an hour otherwise).
        let r = f.sinks.finish();
        assert!(f.now.load(Ordering::SeqCst), "flush_now at the end");
        assert!(r[0].failing.is_none());

        let mut f = flaky(false, true);
        f.sinks.emit(&ban("10.0.0.1", false));
        f.sinks.stop();
        assert!(!f.now.load(Ordering::SeqCst));
    }

    #[test]
    fn a_replay_whose_last_flush_fails_reports_the_sink_failing() {
        let mut f = flaky(true, false);
        f.sinks.emit(&ban("10.0.0.1", false));
        let r = f.sinks.finish();
        // flush_now succeeds in this probe: the end made everything true.
        assert!(r[0].failing.is_none(), "{:?}", r[0]);

        /// Fails everything, flush_now included.
        struct Broken;
        impl Sink for Broken {
            fn deliver(&mut self, _: &Event) -> Result<(), SinkError> {
                Ok(())
            }
            fn flush(&mut self) -> Result<Option<Duration>, SinkError> {
                Err(SinkError::setup("test failed"))
            }
        }
        let spec = spec("broken", 1, 10, true, Duration::from_millis(50));
        let mut build = |_: &SinkSpec| Ok(Box::new(Broken) as Box<dyn Sink>);
        let mut sinks = Sinks::start_built(&[spec], &[], &mut build).unwrap();
        sinks.emit(&ban("10.0.0.1", false));
        let r = sinks.finish();
        assert_eq!(r[0].failing.as_deref(), Some("flushing: test failed"));
        assert!(r[0].to_string().contains("FAILING: flushing: test failed"));
    }
}
