//! A sink's feed: the decider's end of the sink, which hands each event to the sink's worker
//! thread through a bounded queue without ever waiting, and keeps what that needs: the backlog
//! of unbans waiting in front of a full queue, and copies of what the worker has not finished.
//!
//! When the queue is full (the sink's endpoint is down, or slower than the flood of bans):
//! - a **ban** is dropped and counted. The ban table still holds it, so the key is not banned
//!   again until it expires; the sink simply never hears of it, and hears nothing of its unban
//!   either (an unban for a ban a sink never got is never sent to it).
//! - an **unban** of a ban the sink did get is never dropped: a lost unban would leave an
//!   address blocked for good. It waits in a backlog in front of the queue, which is bounded by
//!   the number of active bans (each backlogged unban is a ban the ban table already holds).
//!   While the backlog is not empty, later bans are dropped so that order is kept.
//!
//! **Undelivered events.** A feed keeps a copy of the events it handed to its worker until the
//! worker says it is done with them (a counter the worker publishes, read without a lock), so
//! it can tell at any time what the sink still has to deliver (queued, in retry, or in the
//! backlog) without stopping it: `watch` saves that about once a second, so a crash loses none
//! of it. The copy is bounded like the queue (`queue_size` + the one in hand).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ahash::AHashSet;
use crossbeam_channel::{Sender, TrySendError};

use super::counters::{
    bump, LiveCounters, LiveTrouble, SinkCounters, SinkHealth, SinkMetrics, SinkReport, Trouble,
};
use super::worker::Worker;
use crate::decide::ban_table::FLEET_RULE_NAME;
use crate::decide::{Ban, Event, Origin};
use crate::engine::Key;
use crate::sink::{warn, Sink, SinkError, SinkSpec};

/// The decider's end of one sink.
pub(super) struct Feed {
    name: String,
    /// The `[[sink]]` table it was built from (its identity across a reload).
    source: toml::Table,
    proxied: bool,
    /// Whether other servers' bans (and their unbans) go to this sink (`[fleet] apply_to`).
    fleet: bool,
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
    warned_full: bool,
    /// Set by [`Feed::tell_stop`]: the worker stops retrying and hands back what it holds.
    stopping: Arc<AtomicBool>,
    worker: JoinHandle<Vec<Event>>,
    /// Shared with the worker: what the sink has done so far (this end counts the bans it
    /// drops or skips).
    live: Arc<LiveCounters>,
    /// Shared with the worker: whether it is failing now, and its last failure.
    trouble: Arc<LiveTrouble>,
}

/// Whether `ev` is about another server's ban (see [`crate::fleet`]): only the sinks `[fleet]
/// apply_to` names take those.
fn is_remote(ev: &Event) -> bool {
    match ev {
        Event::Ban(b) => is_remote_ban(b),
        Event::Unban(u) => &*u.rule == FLEET_RULE_NAME,
    }
}

fn is_remote_ban(b: &Ban) -> bool {
    matches!(b.origin, Origin::Fleet(_))
}

/// What became of an event handed to a worker's queue.
enum Sent {
    Queued,
    Full(Event),
    /// The worker has ended (it reported why).
    Gone,
}

impl Feed {
    /// Starts the thread of sink number `index`, handing it the `active` bans it takes.
    pub(super) fn spawn(
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
        let trouble = Arc::new(LiveTrouble::default());
        let fleet = spec.fleet;
        let (given, withheld): (Vec<Ban>, Vec<Ban>) = active
            .iter()
            .filter(|b| fleet || !is_remote_ban(b))
            .cloned()
            .partition(|b| proxied || !b.via_proxy);
        let worker = Worker::new(
            spec,
            stopping.clone(),
            done.clone(),
            live.clone(),
            trouble.clone(),
        );
        let handle = thread::Builder::new()
            .name(format!("sink-{index}"))
            .spawn(move || worker.run(sink, given, rx))
            .map_err(|e| SinkError::io(format!("{}: cannot start thread: {e}", spec.name)))?;
        Ok(Feed {
            name: spec.name.clone(),
            source: spec.source.clone(),
            proxied,
            fleet,
            tx,
            backlog: VecDeque::new(),
            sent: VecDeque::new(),
            sent_first: 0,
            done,
            changes: 0,
            withheld: withheld.into_iter().map(|b| (b.key, b.rule)).collect(),
            warned_full: false,
            stopping,
            worker: handle,
            live,
            trouble,
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The `[[sink]]` table the sink was built from.
    pub(super) fn source(&self) -> &toml::Table {
        &self.source
    }

    /// Whether `spec` is this sink, unchanged.
    pub(super) fn is(&self, spec: &SinkSpec) -> bool {
        self.name == spec.name && self.source == spec.source
    }

    /// What the sink has done so far.
    pub(super) fn counters(&self) -> SinkCounters {
        self.live.get()
    }

    /// Its counters and whether it is up, for `/metrics`.
    pub(super) fn metrics(&self) -> SinkMetrics {
        SinkMetrics {
            name: self.name.clone(),
            counters: self.live.get(),
            up: trouble_of(&self.trouble).is_up(),
        }
    }

    /// What the sink has done, what it holds, and whether it is failing.
    pub(super) fn health(&mut self) -> SinkHealth {
        self.drain_backlog();
        self.trim();
        SinkHealth {
            name: self.name.clone(),
            counters: self.live.get(),
            pending: (self.sent.len() + self.backlog.len()) as u64,
            trouble: trouble_of(&self.trouble),
        }
    }

    pub(super) fn emit(&mut self, event: &Event) {
        if !self.fleet && is_remote(event) {
            return;
        }
        self.drain_backlog();
        match event {
            Event::Ban(b) => {
                let slot = (b.key, b.rule.clone());
                if b.via_proxy && !self.proxied {
                    bump(&self.live.skipped_proxied, 1);
                    self.withheld.insert(slot);
                    return;
                }
                // A dead worker has already reported why: its bans count as dropped.
                let sent =
                    self.backlog.is_empty() && matches!(self.send(event.clone()), Sent::Queued);
                if !sent {
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

    /// Gives the sink `events` (undelivered by a previous run or version of it) ahead of any
    /// new one, never dropped: they wait in the backlog for room in the queue.
    pub(super) fn resend(&mut self, events: Vec<Event>) {
        self.backlog.extend(events);
        self.changes += 1;
        self.drain_backlog();
    }

    /// What the sink has been handed and not delivered yet (the event it is delivering at this
    /// very moment included), in order; moves the backlog on.
    pub(super) fn pending(&mut self) -> Vec<Event> {
        // Also a chance for the backlog to move on when no event came since it formed.
        self.drain_backlog();
        self.trim();
        self.sent.iter().chain(&self.backlog).cloned().collect()
    }

    /// A number that changes whenever [`Feed::pending`] may have changed (see
    /// `Sinks::pending_stamp`); moves the backlog on.
    pub(super) fn stamp(&mut self) -> u64 {
        self.drain_backlog();
        self.changes.wrapping_add(self.done.load(Ordering::Acquire))
    }

    /// Tells the worker to stop retrying and hand back what it holds; [`Feed::finish`] or
    /// [`Feed::finish_by`] then collects it. Told to all sinks first, they stop together.
    pub(super) fn tell_stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
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
    /// until `deadline` (see `Sinks::stop_within`).
    pub(super) fn finish_by(mut self, deadline: Instant) -> (SinkReport, Vec<Event>) {
        self.drain_backlog();
        let backlog = std::mem::take(&mut self.backlog);
        let Feed {
            name,
            tx,
            mut sent,
            sent_first,
            done,
            worker,
            live,
            trouble,
            ..
        } = self;
        // The worker ends once its queue is closed and empty (stopping, it does not retry).
        drop(tx);
        while !worker.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
        if worker.is_finished() {
            let (report, mut left) = ended(name, &live, &trouble, worker.join());
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
        let report = report(name, live.get(), &trouble);
        (report, left)
    }

    /// Closes the queue after handing it the backlog, waiting for room if need be, and waits
    /// until the worker has ended: its report, and what it handed back (a stop's).
    pub(super) fn finish(self) -> (SinkReport, Vec<Event>) {
        // Waiting is fine now: detection is over.
        for ev in self.backlog {
            if self.tx.send(ev).is_err() {
                break;
            }
        }
        drop(self.tx);
        ended(self.name, &self.live, &self.trouble, self.worker.join())
    }
}

/// A copy of what `live` holds.
fn trouble_of(live: &LiveTrouble) -> Trouble {
    // A poisoned lock only means a holder panicked; the data is still whole.
    live.lock()
        .map_or_else(|p| p.into_inner().clone(), |t| t.clone())
}

fn report(name: String, counters: SinkCounters, trouble: &LiveTrouble) -> SinkReport {
    let t = trouble_of(trouble);
    let failing = match (t.is_up(), t.last_error) {
        (true, _) => None,
        (false, Some((_, e))) => Some(e),
        (false, None) => Some("failing".into()),
    };
    SinkReport {
        name,
        counters,
        failing,
        summary: t.summary,
    }
}

/// The report of a sink whose worker has ended (`joined`), and what the worker handed back.
fn ended(
    name: String,
    live: &LiveCounters,
    trouble: &LiveTrouble,
    joined: thread::Result<Vec<Event>>,
) -> (SinkReport, Vec<Event>) {
    let counters = live.get();
    match joined {
        Ok(left) => (report(name, counters, trouble), left),
        Err(_) => {
            warn(&name, format_args!("the sink's thread panicked"));
            // One failure stands for all the worker did; what this end counted stays.
            let counters = SinkCounters {
                failed: 1,
                dropped: counters.dropped,
                skipped_proxied: counters.skipped_proxied,
                ..SinkCounters::default()
            };
            let mut r = report(name, counters, trouble);
            r.failing = Some("the sink's thread panicked".into());
            (r, Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use crate::decide::Event;
    use crate::sink::runtime::testing::{ban, kinds, setup, unban, wait_until};

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
        let h = s.sinks.health().remove(0);
        assert_eq!(
            (h.name.as_str(), h.pending),
            ("probe", 2),
            "in retry and queued"
        );
        assert!(h.trouble.failing_since_ms.is_some(), "{h:?}");
        let (_, error) = h.trouble.last_error.clone().unwrap();
        assert_eq!(error, "delivering: down");
        s.down.store(false, Ordering::SeqCst);
        wait_until("delivered", || s.sinks.health()[0].pending == 0);
        let after = s.sinks.health().remove(0).trouble;
        assert_eq!(after.failing_since_ms, None, "working again");
        assert_eq!(
            after.last_error, h.trouble.last_error,
            "the last failure is kept"
        );
        let r = s.sinks.finish();
        assert_eq!(r[0].delivered, 2);
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
        // Against a hang, not a measure: the stuck sink never finishes, so a stop that waited
        // for it would not return at all; a wide margin over the 100 ms asked for.
        assert!(
            started.elapsed() < Duration::from_secs(30),
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
}
