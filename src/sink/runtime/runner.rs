//! Runs each sink on its own thread behind a bounded queue, retrying with capped exponential
//! backoff, without ever blocking the thread that decides bans: [`Sinks`], the front the rest
//! of the program uses.
//!
//! Each sink is a feed (module `feed`: the decider's end of its queue) and a worker thread
//! (module `worker`) delivering what it takes from the queue. [`Sinks::emit`] is called on the
//! decider thread and never waits: when a sink's queue is full, a ban is dropped and counted
//! (the sink then never hears of its unban either), while an unban of a ban the sink did get
//! waits in a backlog and is never dropped. Per sink, events are delivered in order; a failed
//! delivery is retried until `give_up_after`, then reported as failed. [`Sinks::finish`] closes
//! the queues and waits until every sink has delivered or reported each event it was given;
//! [`Sinks::stop`] ends a `watch` and hands back what could not be delivered.
//!
//! [`Sinks::pending`] tells at any time what each sink still has to deliver, without stopping
//! it, so that `watch` can save it; [`Sinks::reconfigure`] (module `reload`) applies a reloaded
//! config to running sinks. What each sink did is counted in a [`SinkCounters`]
//! ([`Sinks::counters`] while it runs, a [`SinkReport`] once stopped).

use std::time::{Duration, Instant};

use super::counters::{SinkCounters, SinkHealth, SinkMetrics, SinkReport};
use super::feed::Feed;
use crate::decide::{Ban, Event};
use crate::sink::{Sink, SinkError, SinkSpec};

/// The running sinks, fed from the decider thread.
pub struct Sinks {
    pub(super) feeds: Vec<Feed>,
    /// Counts reconfigurations, for [`Sinks::pending_stamp`].
    pub(super) generation: u64,
}

pub(super) type Pending = Vec<(String, Vec<Event>)>;

/// Makes a sink from its spec (`SinkSpec::build`; test sinks in tests).
pub(super) type Build<'a> = dyn FnMut(&SinkSpec) -> Result<Box<dyn Sink>, SinkError> + 'a;

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

    pub(super) fn start_built(
        specs: &[SinkSpec],
        active: &[Ban],
        build: &mut Build,
    ) -> Result<Sinks, SinkError> {
        let mut feeds = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            feeds.push(Feed::spawn(i, spec, build(spec)?, active)?);
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
            .map(|f| (f.name().to_string(), f.counters()))
            .collect()
    }

    /// Each sink's counters and whether it is up, in config order, for `/metrics`.
    pub fn metrics(&self) -> Vec<SinkMetrics> {
        self.feeds.iter().map(Feed::metrics).collect()
    }

    /// Closes the queues and waits until every sink has delivered or given up on everything;
    /// work a sink held back (an nginx reload waiting for `min_reload_interval`) is done at
    /// once, so that what the events asked for is in force when it returns (end of a replay).
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
            f.tell_stop();
        }
        let deadline = Instant::now() + wait;
        let mut reports = Vec::with_capacity(self.feeds.len());
        let mut pending = Vec::new();
        for f in self.feeds {
            let name = f.name().to_string();
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
            Some(t) => self.feeds.iter_mut().find(|f| f.source() == t),
            None => self.feeds.iter_mut().find(|f| f.name() == name),
        };
        let Some(f) = found else {
            return false;
        };
        f.resend(events);
        true
    }

    /// Each sink's name and `[[sink]]` table, for `pending::save`.
    pub fn tables(&self) -> Vec<(String, toml::Table)> {
        let feeds = self.feeds.iter();
        feeds
            .map(|f| (f.name().to_string(), f.source().clone()))
            .collect()
    }

    /// What each sink has been handed and not delivered yet (queued, being retried, or waiting
    /// in the backlog), by sink name and in order, without stopping anything; sinks with
    /// nothing pending are left out. Moves the backlogs on as `emit` does. Events being delivered at this very moment are among
    /// them: saved and given again after a crash, they may be delivered twice, never lost.
    /// Each sink's counts, what it still holds and whether it is failing, in config order.
    pub fn health(&mut self) -> Vec<SinkHealth> {
        self.feeds.iter_mut().map(Feed::health).collect()
    }

    pub fn pending(&mut self) -> Vec<(String, Vec<Event>)> {
        let mut out = Vec::new();
        for f in &mut self.feeds {
            let events = f.pending();
            if !events.is_empty() {
                out.push((f.name().to_string(), events));
            }
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
            stamp = stamp.wrapping_add(f.stamp());
        }
        stamp
    }
}

/// Builds a sink, its error naming it.
pub(super) fn build(spec: &SinkSpec) -> Result<Box<dyn Sink>, SinkError> {
    spec.build().map_err(|e| SinkError {
        message: format!("{}: {}", spec.name, e.message),
        ..e
    })
}

/// Stops `feeds` as [`Sinks::stop`] does (all told first, so they stop together): their
/// reports, and what each could not deliver, by name (empty lists included).
pub(super) fn stop_all(feeds: Vec<Feed>) -> (Vec<SinkReport>, Pending) {
    for f in &feeds {
        f.tell_stop();
    }
    let mut reports = Vec::with_capacity(feeds.len());
    let mut pending = Vec::with_capacity(feeds.len());
    for f in feeds {
        let name = f.name().to_string();
        let (r, left) = f.finish();
        reports.push(r);
        pending.push((name, left));
    }
    (reports, pending)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::decide::Event;
    use crate::sink::runtime::testing::{ban, kinds, setup, unban, wait_until};

    #[test]
    fn a_stop_hands_back_what_a_down_sink_holds_and_resend_delivers_it() {
        let mut s = setup(2, true, false, Duration::from_secs(3600));
        s.down.store(true, Ordering::SeqCst);
        s.sinks.emit(&ban("10.0.0.1", false));
        s.sinks.emit(&ban("10.0.0.2", false));
        // In the queue or, when the worker has not taken the first ban yet, in the backlog:
        // it comes back either way.
        s.sinks.emit(&unban("10.0.0.1"));
        // The first ban held in retry by the worker when the stop comes.
        wait_until("retried while down", || {
            s.sinks.health()[0].counters.retries > 0
        });
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
}
