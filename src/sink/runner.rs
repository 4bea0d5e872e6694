//! Runs each sink on its own thread behind a bounded queue, retrying with capped exponential
//! backoff, without ever blocking the thread that decides bans.
//!
//! [`Sinks::emit`] is called on the decider thread and never waits. When a sink's queue is full
//! (its endpoint is down, or slower than the flood of bans):
//! - a **ban** is dropped and counted. The ban table still holds it, so the key is not banned
//!   again until it expires; the sink simply never hears of it, and hears nothing of its unban
//!   either (an unban for a ban a sink never got is never sent to it).
//! - an **unban** of a ban the sink did get is never dropped: a lost unban would leave an
//!   address blocked for good. It waits in a backlog in front of the queue, which is bounded by
//!   the number of active bans (each backlogged unban is a ban the ban table already holds).
//!   While the backlog is not empty, later bans are dropped so that order is kept.
//!
//! Per sink, events are delivered in order. A failed delivery is retried (0.5 s, doubling up to
//! `retry_max_delay`, or the server's `Retry-After`) until `give_up_after`, then reported as
//! failed; an error that says retrying cannot help is reported at once. [`Sinks::finish`] closes
//! the queues and waits until every sink has delivered or reported each event it was given.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ahash::AHashSet;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::counters::{bump, LiveCounters, SinkCounters};
use super::{log, Sink, SinkError, SinkSpec};
use crate::decide::{Ban, Event};
use crate::engine::Key;

const FIRST_RETRY: Duration = Duration::from_millis(500);

/// What one sink did with the events it was handed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkReport {
    pub name: String,
    /// Events delivered (or, in dry-run mode, logged).
    pub delivered: u64,
    /// Events given up on (refused, or still failing after `give_up_after`).
    pub failed: u64,
    /// Bans dropped because the queue was full, and the unbans that went with them.
    pub dropped: u64,
    /// Bans of clients behind a trusted proxy that this sink does not take (`proxied`).
    pub skipped_proxied: u64,
    /// Attempts that failed and were tried again.
    pub retries: u64,
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

/// The running sinks, fed from the decider thread.
pub struct Sinks {
    feeds: Vec<Feed>,
}

/// The decider's end of one sink.
struct Feed {
    name: String,
    proxied: bool,
    tx: Sender<Event>,
    backlog: VecDeque<Event>,
    /// (key, rule) of bans this sink was not given: their unbans are not given either.
    withheld: AHashSet<(Key, Arc<str>)>,
    dropped: u64,
    skipped_proxied: u64,
    warned_full: bool,
    /// Set by [`Sinks::stop`]: the worker stops retrying and hands back what it holds.
    stopping: Arc<AtomicBool>,
    worker: JoinHandle<(SinkReport, Vec<Event>)>,
    /// Shared with the worker: what the sink has done so far.
    live: Arc<LiveCounters>,
}

impl Sinks {
    /// Builds every sink and starts its thread.
    pub fn start(specs: &[SinkSpec]) -> Result<Sinks, SinkError> {
        Sinks::start_with(specs, &[])
    }

    /// As [`Sinks::start`], handing each sink the bans already `active` (restored after a
    /// restart; see [`Sink::restore`]) before any event. A sink that does not take proxied bans
    /// is not given them, nor later their unbans.
    pub fn start_with(specs: &[SinkSpec], active: &[Ban]) -> Result<Sinks, SinkError> {
        let mut feeds = Vec::with_capacity(specs.len());
        for spec in specs {
            let sink = spec.build().map_err(|e| SinkError {
                message: format!("{}: {}", spec.name, e.message),
                ..e
            })?;
            let (tx, rx) = crossbeam_channel::bounded(spec.common.queue_size);
            let proxied = spec.common.proxied;
            let stopping = Arc::new(AtomicBool::new(false));
            let live = Arc::new(LiveCounters::default());
            let (given, withheld): (Vec<Ban>, Vec<Ban>) = active
                .iter()
                .cloned()
                .partition(|b| proxied || !b.via_proxy);
            let worker = Worker {
                name: spec.name.clone(),
                retry_max: spec.common.retry_max_delay,
                give_up_after: spec.common.give_up_after,
                report: SinkReport {
                    name: spec.name.clone(),
                    ..SinkReport::default()
                },
                failing_since: None,
                stopping: stopping.clone(),
                interrupted: false,
                live: live.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("sink-{}", feeds.len()))
                .spawn(move || worker.run(sink, given, rx))
                .map_err(|e| SinkError::io(format!("{}: cannot start thread: {e}", spec.name)))?;
            feeds.push(Feed {
                name: spec.name.clone(),
                proxied: spec.common.proxied,
                tx,
                backlog: VecDeque::new(),
                withheld: withheld.into_iter().map(|b| (b.key, b.rule)).collect(),
                dropped: 0,
                skipped_proxied: 0,
                warned_full: false,
                stopping,
                worker: handle,
                live,
            });
        }
        Ok(Sinks { feeds })
    }

    /// Hands `event` to every sink; never blocks.
    pub fn emit(&mut self, event: &Event) {
        for f in &mut self.feeds {
            f.emit(event);
        }
    }

    /// Each sink's counters so far, by name, in config order.
    pub fn counters(&self) -> Vec<(String, SinkCounters)> {
        self.feeds
            .iter()
            .map(|f| (f.name.clone(), f.live.get()))
            .collect()
    }

    /// Closes the queues and waits until every sink has delivered or given up on everything.
    pub fn finish(self) -> Vec<SinkReport> {
        self.feeds.into_iter().map(|f| f.finish().0).collect()
    }

    /// Ends a `watch`: each sink delivers what it can without retrying; what a sink could not
    /// deliver (its endpoint is down) is handed back, by sink name and in order, for the next
    /// start to give again with [`Sinks::resend`].
    pub fn stop(self) -> (Vec<SinkReport>, Vec<(String, Vec<Event>)>) {
        for f in &self.feeds {
            f.stopping.store(true, Ordering::Relaxed);
        }
        let mut reports = Vec::with_capacity(self.feeds.len());
        let mut pending = Vec::new();
        for f in self.feeds {
            let name = f.name.clone();
            let (r, left) = f.finish();
            reports.push(r);
            if !left.is_empty() {
                pending.push((name, left));
            }
        }
        (reports, pending)
    }

    /// Gives the sink named `name` events a previous run could not deliver, ahead of any new
    /// one and never dropped. Returns false when no sink has that name (the config changed).
    pub fn resend(&mut self, name: &str, events: Vec<Event>) -> bool {
        let Some(f) = self.feeds.iter_mut().find(|f| f.name == name) else {
            return false;
        };
        f.backlog.extend(events);
        f.drain_backlog();
        true
    }
}

impl Feed {
    fn emit(&mut self, event: &Event) {
        self.drain_backlog();
        match event {
            Event::Ban(b) => {
                let slot = (b.key, b.rule.clone());
                if b.via_proxy && !self.proxied {
                    self.skipped_proxied += 1;
                    bump(&self.live.skipped_proxied, 1);
                    self.withheld.insert(slot);
                    return;
                }
                let sent = self.backlog.is_empty()
                    && match self.tx.try_send(event.clone()) {
                        Ok(()) => true,
                        // A dead worker has already reported why; count the ban as dropped.
                        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
                    };
                if !sent {
                    self.dropped += 1;
                    bump(&self.live.dropped, 1);
                    self.withheld.insert(slot);
                    if !self.warned_full {
                        self.warned_full = true;
                        log(
                            &self.name,
                            format_args!("queue full: dropping bans until it drains"),
                        );
                    }
                }
            }
            Event::Unban(u) => {
                if self.withheld.remove(&(u.key, u.rule.clone())) {
                    return;
                }
                if !self.backlog.is_empty() {
                    self.backlog.push_back(event.clone());
                    return;
                }
                if let Err(TrySendError::Full(ev)) = self.tx.try_send(event.clone()) {
                    self.backlog.push_back(ev);
                }
            }
        }
    }

    fn drain_backlog(&mut self) {
        while let Some(ev) = self.backlog.pop_front() {
            match self.tx.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(ev)) => {
                    self.backlog.push_front(ev);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.backlog.clear();
                    return;
                }
            }
        }
        self.warned_full = false;
    }

    fn finish(self) -> (SinkReport, Vec<Event>) {
        // Waiting is fine now: detection is over.
        for ev in self.backlog {
            if self.tx.send(ev).is_err() {
                break;
            }
        }
        drop(self.tx);
        let (mut report, pending) = match self.worker.join() {
            Ok(r) => r,
            Err(_) => {
                log(&self.name, format_args!("the sink's thread panicked"));
                let r = SinkReport {
                    name: self.name.clone(),
                    failed: 1,
                    ..SinkReport::default()
                };
                (r, Vec::new())
            }
        };
        report.dropped += self.dropped;
        report.skipped_proxied += self.skipped_proxied;
        (report, pending)
    }
}

/// The sink's thread.
struct Worker {
    name: String,
    retry_max: Duration,
    give_up_after: Duration,
    report: SinkReport,
    /// When the sink started failing (reset by any success). `give_up_after` counts from here,
    /// not per event: once an outage has lasted that long, each later event gets one try until
    /// one succeeds, rather than every queued event waiting out the whole period again.
    failing_since: Option<Instant>,
    stopping: Arc<AtomicBool>,
    /// A retry was cut short by a stop: the event is handed back, not counted as failed.
    interrupted: bool,
    /// `report`'s counters as they go, for the metrics endpoint.
    live: Arc<LiveCounters>,
}

impl Worker {
    fn run(
        mut self,
        mut sink: Box<dyn Sink>,
        active: Vec<Ban>,
        rx: Receiver<Event>,
    ) -> (SinkReport, Vec<Event>) {
        if self.retry("starting", || sink.begin()).is_none() {
            if self.interrupted {
                return (self.report, rx.iter().collect());
            }
            // Without a start there is nothing to deliver to: every event fails.
            let n = rx.iter().count() as u64;
            self.report.failed += n;
            bump(&self.live.failed, n);
            return (self.report, Vec::new());
        }
        // A sink that could not take over the restored bans still delivers what comes next.
        if !active.is_empty() && self.retry("restoring", || sink.restore(&active)).is_none() {
            self.report.failed += 1;
            bump(&self.live.failed, 1);
        }
        // When the sink asked to be flushed again (work held back until then).
        let mut flush_at: Option<Instant> = None;
        loop {
            let next = match flush_at {
                Some(at) => rx.recv_deadline(at),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(ev) => {
                    match self.retry("delivering", || sink.deliver(&ev)) {
                        Some(()) => {
                            self.report.delivered += 1;
                            bump(&self.live.delivered, 1);
                        }
                        None if self.interrupted => {
                            let mut pending = vec![ev];
                            pending.extend(rx.iter());
                            return (self.report, pending);
                        }
                        None => {
                            self.report.failed += 1;
                            bump(&self.live.failed, 1);
                        }
                    }
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
        // it if need be.
        flush_at = self.flush(&mut *sink);
        while let Some(at) = flush_at {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            flush_at = self.flush(&mut *sink);
        }
        (self.report, Vec::new())
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

    /// Runs `f` until it succeeds, fails for good, or has failed for `give_up_after`.
    fn retry<T>(&mut self, what: &str, mut f: impl FnMut() -> Result<T, SinkError>) -> Option<T> {
        let mut delay = FIRST_RETRY.min(self.retry_max);
        let mut attempt = 0u32;
        loop {
            let e = match f() {
                Ok(v) => {
                    self.failing_since = None;
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
            if !e.is_retryable() {
                log(&self.name, format_args!("{what} failed: {e}"));
                return None;
            }
            let since = *self.failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.give_up_after {
                log(
                    &self.name,
                    format_args!("{what}: giving up after {attempt} retries: {e}"),
                );
                return None;
            }
            // One line per doubling of the wait, not one per attempt, while an endpoint is down.
            if attempt == 0 || delay < self.retry_max {
                log(&self.name, format_args!("{what} failed, will retry: {e}"));
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
            self.report.retries += 1;
            bump(&self.live.retries, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::decide::{Ban, Unban};
    use crate::hit::NO_VHOST;

    /// A sink recording what it gets, failing while `down` is set, blocking while `stuck`.
    struct Probe {
        got: Arc<Mutex<Vec<String>>>,
        down: Arc<AtomicBool>,
        stuck: Arc<AtomicBool>,
        refuse: bool,
    }

    impl Sink for Probe {
        fn deliver(&mut self, ev: &Event) -> Result<(), SinkError> {
            while self.stuck.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if self.refuse {
                return Err(SinkError::refused("no"));
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(SinkError::unavailable("down"));
            }
            let line = match ev {
                Event::Ban(b) => format!("ban {}", b.key.net),
                Event::Unban(u) => format!("unban {}", u.key.net),
            };
            self.got.lock().unwrap().push(line);
            Ok(())
        }
    }

    fn ban(ip: &str, via_proxy: bool) -> Event {
        Event::Ban(Ban {
            time_ms: 0,
            key: Key {
                net: ip.parse().unwrap(),
                vhost: NO_VHOST,
            },
            rule: Arc::from("r"),
            vhost: None,
            rate: Arc::from("1r/s"),
            burst: 1,
            requests: 2,
            first_seen_ms: 0,
            ban_ms: 1000,
            until_ms: 1000,
            offense: 1,
            via_proxy,
        })
    }

    fn unban(ip: &str) -> Event {
        Event::Unban(Unban {
            time_ms: 1000,
            key: Key {
                net: ip.parse().unwrap(),
                vhost: NO_VHOST,
            },
            rule: Arc::from("r"),
        })
    }

    struct Setup {
        sinks: Sinks,
        got: Arc<Mutex<Vec<String>>>,
        down: Arc<AtomicBool>,
        stuck: Arc<AtomicBool>,
    }

    fn setup(queue: usize, proxied: bool, refuse: bool, give_up: Duration) -> Setup {
        let got = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let stuck = Arc::new(AtomicBool::new(false));
        let probe = Probe {
            got: got.clone(),
            down: down.clone(),
            stuck: stuck.clone(),
            refuse,
        };
        let (tx, rx) = crossbeam_channel::bounded(queue);
        let stopping = Arc::new(AtomicBool::new(false));
        let live = Arc::new(LiveCounters::default());
        let worker = Worker {
            name: "probe".into(),
            retry_max: Duration::from_millis(20),
            give_up_after: give_up,
            report: SinkReport {
                name: "probe".into(),
                ..SinkReport::default()
            },
            failing_since: None,
            stopping: stopping.clone(),
            interrupted: false,
            live: live.clone(),
        };
        let handle = std::thread::spawn(move || worker.run(Box::new(probe), Vec::new(), rx));
        let feed = Feed {
            name: "probe".into(),
            proxied,
            tx,
            backlog: VecDeque::new(),
            withheld: AHashSet::new(),
            dropped: 0,
            skipped_proxied: 0,
            warned_full: false,
            stopping,
            worker: handle,
            live,
        };
        Setup {
            sinks: Sinks { feeds: vec![feed] },
            got,
            down,
            stuck,
        }
    }

    #[test]
    fn a_stop_hands_back_what_a_down_sink_holds_and_resend_delivers_it() {
        let mut s = setup(2, true, false, Duration::from_secs(3600));
        s.down.store(true, Ordering::SeqCst);
        s.sinks.emit(&ban("10.0.0.1", false));
        s.sinks.emit(&ban("10.0.0.2", false));
        // In the queue or, when the worker has not taken the first ban yet, in the backlog:
        // it comes back either way.
        s.sinks.emit(&unban("10.0.0.1"));
        std::thread::sleep(Duration::from_millis(100));
        let (reports, pending) = s.sinks.stop();
        assert_eq!(reports[0].failed, 0, "{:?}", reports[0]);
        assert_eq!(pending.len(), 1);
        let (name, events) = pending.into_iter().next().unwrap();
        assert_eq!(name, "probe");
        let kinds: Vec<String> = events
            .iter()
            .map(|e| match e {
                Event::Ban(b) => format!("ban {}", b.key.net),
                Event::Unban(u) => format!("unban {}", u.key.net),
            })
            .collect();
        assert_eq!(kinds, ["ban 10.0.0.1", "ban 10.0.0.2", "unban 10.0.0.1"]);

        let mut next = setup(100, true, false, Duration::from_secs(3600));
        assert!(!next.sinks.resend("other", Vec::new()));
        assert!(next.sinks.resend("probe", events));
        next.sinks.emit(&ban("10.0.0.4", false));
        let (reports, pending) = next.sinks.stop();
        assert!(pending.is_empty());
        assert_eq!(reports[0].delivered, 4);
        assert_eq!(
            *next.got.lock().unwrap(),
            [
                "ban 10.0.0.1",
                "ban 10.0.0.2",
                "unban 10.0.0.1",
                "ban 10.0.0.4"
            ]
        );
    }

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
    fn full_queue_drops_bans_with_their_unbans_but_keeps_other_unbans() {
        let mut s = setup(1, true, false, Duration::from_secs(3600));
        s.stuck.store(true, Ordering::SeqCst);
        s.sinks.emit(&ban("10.0.0.1", false)); // taken by the worker, which is stuck on it
        while !s.sinks.feeds[0].tx.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        s.sinks.emit(&ban("10.0.0.2", false)); // fills the queue
        s.sinks.emit(&ban("10.0.0.3", false)); // dropped
        s.sinks.emit(&unban("10.0.0.1")); // backlogged, never lost
        s.sinks.emit(&unban("10.0.0.3")); // its ban was dropped: withheld too
        s.sinks.emit(&ban("10.0.0.4", false)); // behind the backlog: dropped
        s.stuck.store(false, Ordering::SeqCst);
        let r = s.sinks.finish();
        assert_eq!(
            *s.got.lock().unwrap(),
            ["ban 10.0.0.1", "ban 10.0.0.2", "unban 10.0.0.1"]
        );
        assert_eq!(r[0].dropped, 2);
        assert_eq!(r[0].delivered, 3);
    }

    #[test]
    fn counters_follow_the_sink_while_it_runs() {
        let mut s = setup(1, false, false, Duration::from_secs(3600));
        s.down.store(true, Ordering::SeqCst);
        s.sinks.emit(&ban("10.0.0.1", false));
        s.sinks.emit(&ban("10.0.0.9", true)); // not for this sink
                                              // The worker retries the first ban (every 20 ms) while the queue holds the second.
        let until = Instant::now() + Duration::from_secs(10);
        while s.sinks.counters()[0].1.retries < 2 {
            assert!(Instant::now() < until, "{:?}", s.sinks.counters());
            std::thread::sleep(Duration::from_millis(5));
        }
        while !s.sinks.feeds[0].tx.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        s.sinks.emit(&ban("10.0.0.2", false)); // fills the queue
        s.sinks.emit(&ban("10.0.0.3", false)); // dropped
        let (name, c) = s.sinks.counters().remove(0);
        assert_eq!(name, "probe");
        assert_eq!((c.delivered, c.dropped, c.skipped_proxied), (0, 1, 1));
        s.down.store(false, Ordering::SeqCst);
        let r = s.sinks.finish();
        assert_eq!(r[0].delivered, 2);
    }

    #[test]
    fn proxied_bans_skip_sinks_that_cannot_block_them() {
        let mut s = setup(10, false, false, Duration::from_secs(3600));
        s.sinks.emit(&ban("10.0.0.1", true));
        s.sinks.emit(&ban("10.0.0.2", false));
        s.sinks.emit(&unban("10.0.0.1"));
        s.sinks.emit(&unban("10.0.0.2"));
        let r = s.sinks.finish();
        assert_eq!(*s.got.lock().unwrap(), ["ban 10.0.0.2", "unban 10.0.0.2"]);
        assert_eq!(r[0].skipped_proxied, 1);
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
}
