//! Reload: [`Sinks::reconfigure`] applies a new set of `[[sink]]` tables (a SIGHUP) to the
//! running sinks.
//!
//! A sink whose name and table are unchanged keeps running untouched; the others are stopped as
//! at [`Sinks::stop`] and started again from their new table, and what a stopped sink could not
//! deliver goes to the sink that takes its place (see `reconfigure` for which one).

use super::counters::SinkReport;
use super::feed::Feed;
use super::runner::{build, stop_all, Build};
use crate::decide::{Ban, Event};
use crate::sink::{log, warn, SinkError, SinkSpec, Sinks};

impl Sinks {
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
        let sources: Vec<toml::Table> = gone.iter().map(|f| f.source().clone()).collect();
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
            let mut feed = match Feed::spawn(i, spec, sink, active) {
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
            feed.resend(events);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use ahash::AHashSet;

    use crate::decide::{Ban, Event};
    use crate::sink::runtime::testing::{ban, spec, wait_until, Probe};
    use crate::sink::{Sink, SinkError, SinkSpec, Sinks};

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
