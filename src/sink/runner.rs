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
//!
//! **Undelivered events.** Each feed keeps a copy of the events it handed to its worker until the
//! worker says it is done with them (a counter the worker publishes, read without a lock), so
//! [`Sinks::pending`] can tell at any time what each sink still has to deliver (queued, in
//! retry, or in the backlog) without stopping it: `watch` saves that about once a second, so a
//! crash loses none of it. The copy is bounded like the queue (`queue_size` + the one in hand).
//!
//! **Reload.** [`Sinks::reconfigure`] applies a new set of `[[sink]]` tables to running sinks:
//! a sink whose name and table are unchanged keeps running untouched; the others are stopped as
//! at [`Sinks::stop`] and started again from their new table.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ahash::AHashSet;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::counters::{bump, LiveCounters, SinkCounters};
use super::{log, warn, Sink, SinkError, SinkSpec};
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
    /// Counts reconfigurations, for [`Sinks::pending_stamp`].
    generation: u64,
}

/// The decider's end of one sink.
struct Feed {
    name: String,
    /// The `[[sink]]` table it was built from (its identity across a reload).
    source: toml::Table,
    proxied: bool,
    tx: Sender<Event>,
    backlog: VecDeque<Event>,
    /// Copies of the events handed to the worker that it may not be done with yet; the first
    /// is the worker's event number `sent_first` (events counted from 0 in the order sent).
    sent: VecDeque<Event>,
    sent_first: u64,
    /// How many events the worker is done with (delivered or given up on); it only grows.
    done: Arc<AtomicU64>,
    /// Bumped whenever `sent` or `backlog` gain or lose an event other than by `done`.
    changes: u64,
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

type Pending = Vec<(String, Vec<Event>)>;

/// Makes a sink from its spec (`SinkSpec::build`; test sinks in tests).
type Build<'a> = dyn FnMut(&SinkSpec) -> Result<Box<dyn Sink>, SinkError> + 'a;

/// What became of an event handed to a worker's queue.
enum Sent {
    Queued,
    Full(Event),
    /// The worker has ended (it reported why).
    Gone,
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
        Sinks::start_built(specs, active, &mut build)
    }

    fn start_built(
        specs: &[SinkSpec],
        active: &[Ban],
        build: &mut Build,
    ) -> Result<Sinks, SinkError> {
        let mut feeds = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            feeds.push(spawn(i, spec, build(spec)?, active)?);
        }
        Ok(Sinks {
            feeds,
            generation: 0,
        })
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
        let (reports, pending) = stop_all(self.feeds);
        let pending = pending.into_iter().filter(|(_, l)| !l.is_empty()).collect();
        (reports, pending)
    }

    /// As [`Sinks::stop`], but waits for the sinks at most `wait` in all: a sink still busy
    /// then (a delivery hanging until its timeout, a slow command) is left to finish or die
    /// with the process, and everything it had not finished, the event in hand included, is
    /// handed back as undelivered (so it may arrive twice: delivery is at least once). A
    /// stopping `watch` must end within a second whatever its sinks' endpoints do.
    pub fn stop_within(self, wait: Duration) -> (Vec<SinkReport>, Vec<(String, Vec<Event>)>) {
        for f in &self.feeds {
            f.stopping.store(true, Ordering::Relaxed);
        }
        let deadline = Instant::now() + wait;
        let mut reports = Vec::with_capacity(self.feeds.len());
        let mut pending = Vec::new();
        for f in self.feeds {
            let name = f.name.clone();
            let (r, left) = f.finish_by(deadline);
            reports.push(r);
            if !left.is_empty() {
                pending.push((name, left));
            }
        }
        (reports, pending)
    }

    /// Gives a sink events a previous run could not deliver, ahead of any new one and never
    /// dropped: the sink whose `[[sink]]` table is `table` (wherever it is in the list now), or
    /// without a table (older state files) the sink named `name`. Returns false when there is
    /// none (the sink was changed or removed).
    pub fn resend(&mut self, name: &str, table: Option<&toml::Table>, events: Vec<Event>) -> bool {
        let found = match table {
            Some(t) => self.feeds.iter_mut().find(|f| f.source == *t),
            None => self.feeds.iter_mut().find(|f| f.name == name),
        };
        let Some(f) = found else {
            return false;
        };
        f.backlog.extend(events);
        f.changes += 1;
        f.drain_backlog();
        true
    }

    /// Each sink's name and `[[sink]]` table, for `pending::save`.
    pub fn tables(&self) -> Vec<(String, toml::Table)> {
        let feeds = self.feeds.iter();
        feeds.map(|f| (f.name.clone(), f.source.clone())).collect()
    }

    /// What each sink has been handed and not delivered yet (queued, being retried, or waiting
    /// in the backlog), by sink name and in order, without stopping anything; sinks with
    /// nothing pending are left out. Moves the backlogs on as `emit` does. Events being delivered at this very moment are among
    /// them: saved and given again after a crash, they may be delivered twice, never lost.
    pub fn pending(&mut self) -> Vec<(String, Vec<Event>)> {
        let mut out = Vec::new();
        for f in &mut self.feeds {
            // Also a chance for the backlog to move on when no event came since it formed.
            f.drain_backlog();
            f.trim();
            if f.sent.is_empty() && f.backlog.is_empty() {
                continue;
            }
            let events = f.sent.iter().chain(&f.backlog).cloned().collect();
            out.push((f.name.clone(), events));
        }
        out
    }

    /// A number that changes whenever [`Sinks::pending`] may have changed (an event handed
    /// over or delivered, a reconfiguration): when it is the same as before a save of the
    /// pending events, there is no need to save them again. Read it before `pending` (a
    /// change in between then only makes the next stamp differ). Moves the backlogs on.
    pub fn pending_stamp(&mut self) -> u64 {
        let mut stamp = self.generation;
        for f in &mut self.feeds {
            f.drain_backlog();
            stamp = stamp
                .wrapping_add(f.changes)
                .wrapping_add(f.done.load(Ordering::Acquire));
        }
        stamp
    }

    /// Applies a new set of `[[sink]]` tables (a SIGHUP reload), handing sinks started now the
    /// bans `active` as at a start. Per sink name:
    /// - the same table: the sink keeps running untouched (its thread, queue, backlog and
    ///   retries go on; it is not started again, so Cloudflare is not reconciled again and the
    ///   nginx file not rewritten);
    /// - another table: the sink is stopped as at [`Sinks::stop`] and its new version started;
    ///   what the old one could not deliver is given to the new one first (same name, same
    ///   destination meant), unless the old table is now under another name (the sink moved
    ///   in the list: the sink started with that name and table gets them);
    /// - no longer configured: stopped; what it could not deliver is dropped (logged);
    /// - new: started.
    ///
    /// Every new sink is built before any running one is stopped: when one cannot be built (a
    /// token file that cannot be read...), nothing changes and the error is returned. Returns
    /// what the stopped sinks did.
    pub fn reconfigure(
        &mut self,
        specs: &[SinkSpec],
        active: &[Ban],
    ) -> Result<Vec<SinkReport>, SinkError> {
        self.reconfigure_built(specs, active, &mut build)
    }

    fn reconfigure_built(
        &mut self,
        specs: &[SinkSpec],
        active: &[Ban],
        build: &mut Build,
    ) -> Result<Vec<SinkReport>, SinkError> {
        let mut built = Vec::with_capacity(specs.len());
        for spec in specs {
            let kept = self.feeds.iter().any(|f| f.is(spec));
            built.push(if kept { None } else { Some(build(spec)?) });
        }
        let (mut kept, gone): (Vec<Feed>, Vec<Feed>) = std::mem::take(&mut self.feeds)
            .into_iter()
            .partition(|f| specs.iter().any(|s| f.is(s)));
        let sources: Vec<toml::Table> = gone.iter().map(|f| f.source.clone()).collect();
        let (reports, left) = stop_all(gone);
        // Who gets what a stopped sink had not delivered: the new sink with the same table (a
        // sink that only moved in the list: same destination), else the one with its name.
        let mut left: Vec<Option<(String, Vec<Event>)>> = left.into_iter().map(Some).collect();
        let mut heirs: Vec<Option<usize>> = vec![None; specs.len()];
        for (i, spec) in specs.iter().enumerate() {
            if built[i].is_some() {
                heirs[i] = (0..left.len()).find(|&j| sources[j] == spec.source);
            }
        }
        for (i, spec) in specs.iter().enumerate() {
            let claimed = |j: usize| heirs.contains(&Some(j));
            if built[i].is_some() && heirs[i].is_none() {
                let same_name = |&j: &usize| left[j].as_ref().is_some_and(|l| l.0 == spec.name);
                heirs[i] = (0..left.len()).filter(|&j| !claimed(j)).find(same_name);
            }
        }
        for (i, (spec, sink)) in specs.iter().zip(built).enumerate() {
            let Some(sink) = sink else {
                if let Some(at) = kept.iter().position(|f| f.is(spec)) {
                    self.feeds.push(kept.swap_remove(at));
                }
                continue;
            };
            let events = heirs[i]
                .and_then(|j| left[j].take())
                .map(|(_, events)| events)
                .unwrap_or_default();
            let mut feed = match spawn(i, spec, sink, active) {
                Ok(f) => f,
                // The OS refused a thread: that sink is missing until the next reload.
                Err(e) => {
                    warn(&spec.name, format_args!("{e}"));
                    if !events.is_empty() {
                        warn(
                            &spec.name,
                            format_args!("{} undelivered events dropped", events.len()),
                        );
                    }
                    continue;
                }
            };
            match events.len() {
                0 => log(&spec.name, format_args!("started (config reloaded)")),
                n => log(
                    &spec.name,
                    format_args!(
                        "started with its new settings; {n} events its previous version had not delivered come first"
                    ),
                ),
            }
            feed.backlog.extend(events);
            feed.drain_backlog();
            self.feeds.push(feed);
        }
        for (name, events) in left.into_iter().flatten() {
            match events.len() {
                0 => log(&name, format_args!("stopped (no longer configured)")),
                n => log(
                    &name,
                    format_args!("stopped (no longer configured): {n} undelivered events dropped"),
                ),
            }
        }
        self.generation += 1;
        Ok(reports)
    }
}

/// Builds a sink, its error naming it.
fn build(spec: &SinkSpec) -> Result<Box<dyn Sink>, SinkError> {
    spec.build().map_err(|e| SinkError {
        message: format!("{}: {}", spec.name, e.message),
        ..e
    })
}

/// Starts the thread of sink number `index`, handing it the `active` bans it takes.
fn spawn(
    index: usize,
    spec: &SinkSpec,
    sink: Box<dyn Sink>,
    active: &[Ban],
) -> Result<Feed, SinkError> {
    let (tx, rx) = crossbeam_channel::bounded(spec.common.queue_size);
    let proxied = spec.common.proxied;
    let stopping = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
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
        done: done.clone(),
        interrupted: false,
        live: live.clone(),
    };
    let handle = std::thread::Builder::new()
        .name(format!("sink-{index}"))
        .spawn(move || worker.run(sink, given, rx))
        .map_err(|e| SinkError::io(format!("{}: cannot start thread: {e}", spec.name)))?;
    Ok(Feed {
        name: spec.name.clone(),
        source: spec.source.clone(),
        proxied,
        tx,
        backlog: VecDeque::new(),
        sent: VecDeque::new(),
        sent_first: 0,
        done,
        changes: 0,
        withheld: withheld.into_iter().map(|b| (b.key, b.rule)).collect(),
        dropped: 0,
        skipped_proxied: 0,
        warned_full: false,
        stopping,
        worker: handle,
        live,
    })
}

/// Stops `feeds` as [`Sinks::stop`] does (all told first, so they stop together): their
/// reports, and what each could not deliver, by name (empty lists included).
fn stop_all(feeds: Vec<Feed>) -> (Vec<SinkReport>, Pending) {
    for f in &feeds {
        f.stopping.store(true, Ordering::Relaxed);
    }
    let mut reports = Vec::with_capacity(feeds.len());
    let mut pending = Vec::with_capacity(feeds.len());
    for f in feeds {
        let name = f.name.clone();
        let (r, left) = f.finish();
        reports.push(r);
        pending.push((name, left));
    }
    (reports, pending)
}

impl Feed {
    /// Whether `spec` is this sink, unchanged.
    fn is(&self, spec: &SinkSpec) -> bool {
        self.name == spec.name && self.source == spec.source
    }

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
                // A dead worker has already reported why: its bans count as dropped.
                let sent =
                    self.backlog.is_empty() && matches!(self.send(event.clone()), Sent::Queued);
                if !sent {
                    self.dropped += 1;
                    bump(&self.live.dropped, 1);
                    self.withheld.insert(slot);
                    if !self.warned_full {
                        self.warned_full = true;
                        warn(
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
                    self.changes += 1;
                    return;
                }
                if let Sent::Full(ev) = self.send(event.clone()) {
                    self.backlog.push_back(ev);
                    self.changes += 1;
                }
            }
        }
    }

    /// Hands `ev` to the worker, keeping a copy until it is done with it.
    fn send(&mut self, ev: Event) -> Sent {
        self.trim();
        match self.tx.try_send(ev.clone()) {
            Ok(()) => {
                self.sent.push_back(ev);
                self.changes += 1;
                Sent::Queued
            }
            Err(TrySendError::Full(_)) => Sent::Full(ev),
            Err(TrySendError::Disconnected(_)) => Sent::Gone,
        }
    }

    /// Forgets the copies of events the worker is done with.
    fn trim(&mut self) {
        let done = self.done.load(Ordering::Acquire);
        while self.sent_first < done && self.sent.pop_front().is_some() {
            self.sent_first += 1;
        }
    }

    fn drain_backlog(&mut self) {
        while let Some(ev) = self.backlog.pop_front() {
            match self.send(ev) {
                Sent::Queued => {}
                Sent::Full(ev) => {
                    self.backlog.push_front(ev);
                    return;
                }
                Sent::Gone => {
                    self.backlog.clear();
                    self.changes += 1;
                    return;
                }
            }
        }
        self.warned_full = false;
    }

    /// Closes the queue after handing it what fits without waiting, and waits for the worker
    /// until `deadline` (see [`Sinks::stop_within`]).
    fn finish_by(mut self, deadline: Instant) -> (SinkReport, Vec<Event>) {
        self.drain_backlog();
        let backlog = std::mem::take(&mut self.backlog);
        let Feed {
            name,
            tx,
            mut sent,
            sent_first,
            done,
            dropped,
            skipped_proxied,
            worker,
            live,
            ..
        } = self;
        // The worker ends once its queue is closed and empty (stopping, it does not retry).
        drop(tx);
        while !worker.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if worker.is_finished() {
            let (mut report, mut left) = match worker.join() {
                Ok(r) => r,
                Err(_) => {
                    warn(&name, format_args!("the sink's thread panicked"));
                    let failed = 1;
                    let r = SinkReport {
                        name: name.clone(),
                        failed,
                        ..SinkReport::default()
                    };
                    (r, Vec::new())
                }
            };
            report.dropped += dropped;
            report.skipped_proxied += skipped_proxied;
            left.extend(backlog);
            return (report, left);
        }
        // Still busy: what it has not finished is what was sent past `done`.
        let finished = done.load(Ordering::Acquire).saturating_sub(sent_first);
        sent.drain(..(finished as usize).min(sent.len()));
        let left: Vec<Event> = sent.into_iter().chain(backlog).collect();
        warn(
            &name,
            format_args!(
                "still delivering at stop: left behind; its {} undelivered events are kept",
                left.len()
            ),
        );
        let c = live.get();
        let report = SinkReport {
            name,
            delivered: c.delivered,
            failed: c.failed,
            dropped: c.dropped,
            skipped_proxied: c.skipped_proxied,
            retries: c.retries,
        };
        (report, left)
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
                warn(&self.name, format_args!("the sink's thread panicked"));
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
    /// How many events taken from the queue are delivered or given up on (see `Feed::sent`).
    done: Arc<AtomicU64>,
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
            for _ in rx.iter() {
                self.report.failed += 1;
                bump(&self.live.failed, 1);
                self.done.fetch_add(1, Ordering::Release);
            }
            return (self.report, Vec::new());
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
                None => {
                    self.report.failed += 1;
                    bump(&self.live.failed, 1);
                }
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
        fn restore(&mut self, active: &[Ban]) -> Result<(), SinkError> {
            let keys: Vec<String> = active.iter().map(|b| b.key.net.to_string()).collect();
            let line = format!("restore {}", keys.join(","));
            self.got.lock().unwrap().push(line);
            Ok(())
        }

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

    /// A spec for a test sink; `version` stands for its table's settings.
    fn spec(name: &str, version: i64, queue: usize, proxied: bool, give_up: Duration) -> SinkSpec {
        let mut source = toml::Table::new();
        source.insert("type".into(), toml::Value::String("probe".into()));
        source.insert("version".into(), toml::Value::Integer(version));
        SinkSpec {
            name: name.into(),
            common: super::super::Common {
                dry_run: false,
                proxied,
                queue_size: queue,
                retry_max_delay: Duration::from_millis(20),
                give_up_after: give_up,
            },
            kind: super::super::SinkKind::Jsonl(super::super::jsonl::JsonlConfig { path: None }),
            source,
        }
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
        let feed = spawn(
            0,
            &spec("probe", 1, queue, proxied, give_up),
            Box::new(probe),
            &[],
        )
        .unwrap();
        Setup {
            sinks: Sinks {
                feeds: vec![feed],
                generation: 0,
            },
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
        assert!(!next.sinks.resend("other", None, Vec::new()));
        assert!(next.sinks.resend("probe", None, events));
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
    fn a_stop_within_a_deadline_leaves_a_stuck_sink_and_keeps_all_it_had_not_done() {
        let mut s = setup(2, true, false, Duration::from_secs(3600));
        s.sinks.emit(&ban("10.0.0.1", false));
        while s.got.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        s.stuck.store(true, Ordering::SeqCst);
        s.sinks.emit(&ban("10.0.0.2", false)); // taken by the worker, which hangs on it
        while !s.sinks.feeds[0].tx.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        s.sinks.emit(&ban("10.0.0.3", false)); // queued
        s.sinks.emit(&ban("10.0.0.4", false)); // queued (2)
        s.sinks.emit(&unban("10.0.0.2")); // backlog
        let started = Instant::now();
        let (reports, pending) = s.sinks.stop_within(Duration::from_millis(100));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "did not wait for the stuck sink"
        );
        assert_eq!(reports[0].delivered, 1);
        let (name, events) = pending.into_iter().next().unwrap();
        assert_eq!(name, "probe");
        let kinds: Vec<String> = events
            .iter()
            .map(|e| match e {
                Event::Ban(b) => format!("ban {}", b.key.net),
                Event::Unban(u) => format!("unban {}", u.key.net),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "ban 10.0.0.2",
                "ban 10.0.0.3",
                "ban 10.0.0.4",
                "unban 10.0.0.2"
            ],
            "the one in hand included"
        );
        s.stuck.store(false, Ordering::SeqCst);
    }

    #[test]
    fn a_stop_within_a_deadline_waits_for_a_sink_that_finishes() {
        let mut s = setup(100, true, false, Duration::from_secs(3600));
        s.sinks.emit(&ban("10.0.0.1", false));
        s.sinks.emit(&unban("10.0.0.1"));
        let (reports, pending) = s.sinks.stop_within(Duration::from_secs(10));
        assert!(pending.is_empty());
        assert_eq!(reports[0].delivered, 2);
        assert_eq!(*s.got.lock().unwrap(), ["ban 10.0.0.1", "unban 10.0.0.1"]);
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

    fn kinds(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Ban(b) => format!("ban {}", b.key.net),
                Event::Unban(u) => format!("unban {}", u.key.net),
            })
            .collect()
    }

    /// Waits (against hangs only) until `f` holds.
    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < until, "never: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn pending_shows_what_a_sink_holds_without_stopping_it() {
        let mut s = setup(2, true, false, Duration::from_secs(3600));
        s.down.store(true, Ordering::SeqCst);
        let stamp0 = s.sinks.pending_stamp();
        assert!(s.sinks.pending().is_empty());
        s.sinks.emit(&ban("10.0.0.1", false));
        s.sinks.emit(&ban("10.0.0.2", false));
        // In the queue, or in the backlog while the worker has not taken the first ban yet.
        s.sinks.emit(&unban("10.0.0.1"));
        // Once the worker holds the first ban (in retry), the backlog moves into the queue.
        wait_until("backlog drained", || {
            s.sinks.pending_stamp();
            s.sinks.feeds[0].backlog.is_empty()
        });
        let stamp1 = s.sinks.pending_stamp();
        assert_ne!(stamp0, stamp1);
        let pending = s.sinks.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].0, "probe");
        assert_eq!(
            kinds(&pending[0].1),
            ["ban 10.0.0.1", "ban 10.0.0.2", "unban 10.0.0.1"],
            "the one in retry, the queued one and the backlogged one"
        );
        // Held for a while by the failing worker: nothing changes.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(s.sinks.pending_stamp(), stamp1);
        assert_eq!(s.sinks.pending(), pending);

        s.down.store(false, Ordering::SeqCst);
        // Asked again and again, as the periodic save does (which also moves the backlog on).
        wait_until("delivered", || s.sinks.pending().is_empty());
        assert_eq!(s.got.lock().unwrap().len(), 3);
        assert_ne!(s.sinks.pending_stamp(), stamp1);
        // The copies are forgotten as they are delivered, not kept for ever.
        for i in 0..50 {
            s.sinks.emit(&ban(&format!("10.0.1.{i}"), false));
            assert!(s.sinks.feeds[0].sent.len() <= 3, "bounded by the queue");
            wait_until("delivered", || s.sinks.pending().is_empty());
            assert!(s.sinks.feeds[0].sent.is_empty());
        }
        let (reports, left) = s.sinks.stop();
        assert!(left.is_empty());
        assert_eq!(reports[0].delivered, 53);
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
    fn resent_events_stay_pending_until_delivered() {
        let mut s = setup(10, true, false, Duration::from_secs(3600));
        s.down.store(true, Ordering::SeqCst);
        assert!(s.sinks.resend("probe", None, vec![ban("10.0.0.1", false)]));
        s.sinks.emit(&ban("10.0.0.2", false));
        let pending = s.sinks.pending();
        assert_eq!(kinds(&pending[0].1), ["ban 10.0.0.1", "ban 10.0.0.2"]);
        s.down.store(false, Ordering::SeqCst);
        wait_until("delivered", || s.sinks.pending().is_empty());
        s.sinks.finish();
    }

    type Record = Arc<Mutex<Vec<String>>>;

    /// Test sinks built by name, as `SinkSpec::build` would build real ones; each build is a new
    /// probe with its own record.
    #[derive(Default)]
    struct Lab {
        built: Mutex<Vec<(String, Record)>>,
        /// Names whose next build is down (its endpoint unreachable) or cannot be built.
        down: Mutex<AHashSet<String>>,
        broken: Mutex<AHashSet<String>>,
    }

    impl Lab {
        fn build(&self, spec: &SinkSpec) -> Result<Box<dyn Sink>, SinkError> {
            if self.broken.lock().unwrap().contains(&spec.name) {
                return Err(SinkError::io("cannot read the token file"));
            }
            let got = Arc::new(Mutex::new(Vec::new()));
            let down = self.down.lock().unwrap().contains(&spec.name);
            self.built
                .lock()
                .unwrap()
                .push((spec.name.clone(), got.clone()));
            Ok(Box::new(Probe {
                got,
                down: Arc::new(AtomicBool::new(down)),
                stuck: Arc::new(AtomicBool::new(false)),
                refuse: false,
            }))
        }

        /// What each build of `name` got, oldest build first.
        fn got(&self, name: &str) -> Vec<Vec<String>> {
            let built = self.built.lock().unwrap();
            let of = built.iter().filter(|(n, _)| n == name);
            of.map(|(_, g)| g.lock().unwrap().clone()).collect()
        }
    }

    fn bans(events: &[Event]) -> Vec<Ban> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Ban(b) => Some(b.clone()),
                Event::Unban(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_reload_keeps_unchanged_sinks_and_restarts_changed_ones_with_their_pending_events() {
        let lab = Lab::default();
        let forever = Duration::from_secs(3600);
        // Versions stand for tables: equal versions would be one destination.
        let v1 = [
            spec("a", 1, 10, true, forever),
            spec("b", 2, 10, true, forever),
            spec("c", 3, 10, true, forever),
        ];
        lab.down.lock().unwrap().insert("b".into());
        let restored = [ban("10.0.0.9", false)];
        let mut build = |s: &SinkSpec| lab.build(s);
        let mut sinks = Sinks::start_built(&v1, &bans(&restored), &mut build).unwrap();
        sinks.emit(&ban("10.0.0.1", false));
        wait_until("a and c delivered", || {
            lab.got("a")[0].len() == 2 && lab.got("c")[0].len() == 2
        });

        // a unchanged, b changed (its endpoint is back), c removed, d added.
        lab.down.lock().unwrap().clear();
        let v2 = [
            spec("a", 1, 10, true, forever),
            spec("b", 5, 10, true, forever),
            spec("d", 4, 10, true, forever),
        ];
        let active = bans(&[ban("10.0.0.9", false), ban("10.0.0.1", false)]);
        let mut build = |s: &SinkSpec| lab.build(s);
        let stopped = sinks.reconfigure_built(&v2, &active, &mut build).unwrap();
        let names: Vec<&str> = stopped.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!((stopped[0].delivered, stopped[0].failed), (0, 0));
        assert_eq!(stopped[1].delivered, 1);
        sinks.emit(&ban("10.0.0.2", false));
        let reports = sinks.finish();
        let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "d"], "in the order of the new config");

        assert_eq!(
            lab.got("a"),
            [["restore 10.0.0.9", "ban 10.0.0.1", "ban 10.0.0.2"]],
            "built once, restored once, every event once and in order"
        );
        assert_eq!(
            lab.got("b"),
            [
                vec!["restore 10.0.0.9"],
                vec!["restore 10.0.0.9,10.0.0.1", "ban 10.0.0.1", "ban 10.0.0.2"]
            ],
            "the new version gets what the old one could not deliver, then new events"
        );
        assert_eq!(lab.got("c"), [["restore 10.0.0.9", "ban 10.0.0.1"]]);
        assert_eq!(
            lab.got("d"),
            [["restore 10.0.0.9,10.0.0.1", "ban 10.0.0.2"]],
            "an added sink takes the active bans over"
        );
    }

    #[test]
    fn a_reload_with_a_sink_that_cannot_be_built_changes_nothing() {
        let lab = Lab::default();
        let forever = Duration::from_secs(3600);
        let v1 = [
            spec("a", 1, 10, true, forever),
            spec("b", 2, 10, true, forever),
        ];
        let mut build = |s: &SinkSpec| lab.build(s);
        let mut sinks = Sinks::start_built(&v1, &[], &mut build).unwrap();
        sinks.emit(&ban("10.0.0.1", false));
        lab.broken.lock().unwrap().insert("e".into());
        let v2 = [
            spec("a", 3, 10, true, forever),
            spec("e", 4, 10, true, forever),
        ];
        wait_until("delivered", || sinks.pending().is_empty());
        let stamp = sinks.pending_stamp();
        let mut build = |s: &SinkSpec| lab.build(s);
        let e = sinks.reconfigure_built(&v2, &[], &mut build).unwrap_err();
        assert!(e.message.contains("token"), "{e}");
        assert_eq!(sinks.pending_stamp(), stamp);
        sinks.emit(&ban("10.0.0.2", false));
        let reports = sinks.finish();
        assert_eq!(reports.len(), 2);
        assert_eq!(lab.got("a")[0], ["ban 10.0.0.1", "ban 10.0.0.2"]);
        assert_eq!(lab.got("b"), [["ban 10.0.0.1", "ban 10.0.0.2"]]);
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

    #[test]
    fn a_sink_that_moved_in_the_list_takes_its_undelivered_events_along() {
        let lab = Lab::default();
        let forever = Duration::from_secs(3600);
        // sink[0] is removed from the config: sink[1] becomes sink[0].
        let v1 = [
            spec("s0", 1, 10, true, forever),
            spec("s1", 2, 10, true, forever),
        ];
        lab.down.lock().unwrap().insert("s0".into());
        lab.down.lock().unwrap().insert("s1".into());
        let mut build = |s: &SinkSpec| lab.build(s);
        let mut sinks = Sinks::start_built(&v1, &[], &mut build).unwrap();
        sinks.emit(&ban("10.0.0.1", false));
        lab.down.lock().unwrap().clear();
        let v2 = [spec("s0", 2, 10, true, forever)];
        let mut build = |s: &SinkSpec| lab.build(s);
        sinks.reconfigure_built(&v2, &[], &mut build).unwrap();
        sinks.emit(&ban("10.0.0.2", false));
        sinks.finish();
        assert_eq!(lab.got("s0").len(), 2, "built again under its new name");
        assert_eq!(
            lab.got("s0")[1],
            ["ban 10.0.0.1", "ban 10.0.0.2"],
            "what the old s1 held, not what the old s0 held (dropped: its table is gone)"
        );
    }
}
