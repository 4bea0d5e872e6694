//! Where events go, in replay and in watch: the configured sinks, or a stream (stdout) as JSON
//! lines flushed one by one when there is none (in watch, once per round of its loop). In watch a SIGHUP may switch between the two
//! ([`Output::reconfigure`]).
//!
//! For watch it also keeps `[state] dir/pending.json` (what the sinks have not delivered yet)
//! up to date ([`Output::save_pending`]), so that a crash loses no event a sink could not take.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::decide::event::{write_json_line, LogLine};
use crate::decide::{Ban, Event};
use crate::pipeline::log_budget::LogBudget;
use crate::sink::runtime::pending;
use crate::sink::{SinkError, SinkHealth, SinkMetrics, SinkReport, SinkSpec, Sinks};
use crate::state_file::StateFileError;
use crate::vhost::Vhosts;

pub struct Output<'a> {
    /// `None`: events go to `out`.
    sinks: Option<Sinks>,
    out: &'a mut (dyn Write + Send),
    line: Vec<u8>,
    /// The first write error; later events are dropped and the loop stops.
    error: Option<io::Error>,
    /// The sinks' pending stamp when `pending.json` was last written; `None`: write it at the
    /// next save (at start, to drop what the last run left for sinks no longer configured).
    saved: Option<u64>,
    /// Whether each event also goes to the log (see [`Output::log_events`]), and how many
    /// more this second may.
    log_events: bool,
    log_budget: LogBudget,
    /// Stream lines wait in `line` for [`Output::flush`] (see [`Output::batch_stream`]).
    batch: bool,
    /// `[fleet]`: this server's own events are also queued for the other servers.
    fleet: Option<crate::fleet::Publish>,
}

/// How long a stop waits for the sinks to deliver what they hold (a stop must end within a
/// second; what a sink has not delivered by then is kept for the next start).
const SINKS_STOP_WAIT: std::time::Duration = std::time::Duration::from_millis(400);

/// What the sinks did and what they could not deliver, at stop.
pub struct Stopped {
    pub reports: Vec<SinkReport>,
    /// By sink name, in order.
    pub pending: Vec<(String, Vec<Event>)>,
    /// Each sink's name and table (see `pending::save`).
    pub tables: Vec<(String, toml::Table)>,
}

impl<'a> Output<'a> {
    /// Starts the sinks `specs`, handing them the bans `active` (see `Sinks::start_with`); with
    /// none, events go to `out`.
    pub fn start(
        out: &'a mut (dyn Write + Send),
        specs: &[SinkSpec],
        active: &[Ban],
    ) -> Result<Output<'a>, SinkError> {
        let sinks = match specs.is_empty() {
            true => None,
            false => Some(Sinks::start_with(specs, active)?),
        };
        Ok(Output {
            sinks,
            out,
            line: Vec::with_capacity(512),
            error: None,
            saved: None,
            log_events: false,
            log_budget: LogBudget::default(),
            batch: false,
            fleet: None,
        })
    }

    /// Also writes each event as a line of the log (stderr, the journal), as fail2ban logs its
    /// bans: watch does, so that bans are seen in the journal whatever the sinks; replay does
    /// when its events go to sinks rather than stdout.
    pub fn log_events(mut self, on: bool) -> Self {
        self.log_events = on;
        self
    }

    /// Stream lines are written at [`Output::flush`] (and when 64 KiB wait), not one by one:
    /// watch flushes after each round of its loop, so that a flood's thousands of bans a
    /// second cost a write each round, not one each.
    pub fn batch_stream(mut self, on: bool) -> Self {
        self.batch = on;
        self
    }

    /// Writes the stream lines waiting (see [`Output::batch_stream`]), and says how many
    /// events the log was spared (see [`LogBudget`]).
    pub fn flush(&mut self) {
        if let Some(n) = self.log_budget.report(crate::clock::wall_ms()) {
            log::info!(
                "{n} more ban and unban events in the last second not logged one by one (past {} a second; the events and `floodwatch bans` have them all)",
                crate::pipeline::log_budget::PER_SECOND
            );
        }
        if self.line.is_empty() || self.error.is_some() {
            return;
        }
        if let Err(e) = self
            .out
            .write_all(&self.line)
            .and_then(|()| self.out.flush())
        {
            self.error = Some(e);
        }
        self.line.clear();
    }

    /// Publishes this server's own events to the fleet from now on (see
    /// [`crate::fleet::message::Message::of_local`] for which).
    pub fn publish_to(&mut self, fleet: crate::fleet::Publish) {
        self.fleet = Some(fleet);
    }

    /// An event of this server: to the sinks (or the stream), the log and the fleet.
    pub fn emit(&mut self, ev: &Event) {
        if let Some(f) = &self.fleet {
            f.event(ev);
        }
        self.emit_remote(ev);
    }

    /// An event the fleet caused (another server's ban or unban applied here): as
    /// [`Output::emit`], but never published again.
    pub fn emit_remote(&mut self, ev: &Event) {
        if self.log_events && self.log_budget.allow(crate::clock::wall_ms()) {
            log::info!("{}", LogLine(ev));
        }
        if let Some(s) = &mut self.sinks {
            return s.emit(ev);
        }
        if self.error.is_some() {
            return;
        }
        if !self.batch {
            self.line.clear();
        }
        write_json_line(ev, &mut self.line);
        if !self.batch || self.line.len() >= 1 << 16 {
            self.flush();
        }
    }

    /// Each sink's counters so far and whether it is up (none when events go to a stream).
    pub fn sink_counters(&self) -> Vec<SinkMetrics> {
        self.sinks.as_ref().map_or_else(Vec::new, Sinks::metrics)
    }

    /// Each sink's counts, what it holds and whether it is failing (none without sinks).
    pub fn sink_health(&mut self) -> Vec<SinkHealth> {
        self.sinks.as_mut().map_or_else(Vec::new, Sinks::health)
    }

    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    pub fn has_sinks(&self) -> bool {
        self.sinks.is_some()
    }

    pub fn sinks_mut(&mut self) -> Option<&mut Sinks> {
        self.sinks.as_mut()
    }

    /// Applies the sinks of a reloaded config (see `Sinks::reconfigure`): unchanged sinks keep
    /// running, changed ones start again, and with no sink left events go to stdout again (or,
    /// from stdout, to the first sinks configured, which take the `active` bans over). When a
    /// new sink cannot be built, nothing changes and the error is returned.
    pub fn reconfigure(&mut self, specs: &[SinkSpec], active: &[Ban]) -> Result<(), SinkError> {
        self.flush();
        let stopped = match (&mut self.sinks, specs.is_empty()) {
            (None, true) => return Ok(()),
            (None, false) => {
                let sinks = Sinks::start_with(specs, active)?;
                for s in specs {
                    crate::sink::log(&s.name, format_args!("started (config reloaded)"));
                }
                self.sinks = Some(sinks);
                Vec::new()
            }
            (Some(sinks), _) => sinks.reconfigure(specs, active)?,
        };
        if specs.is_empty() {
            self.sinks = None;
            log::info!("SIGHUP: no sink configured: events go to stdout");
        }
        for r in stopped {
            log::info!("{r}");
        }
        self.saved = None;
        Ok(())
    }

    /// Writes what the sinks have not delivered yet to `dir/pending.json` (removes it when
    /// nothing is pending), unless nothing changed since the last call.
    pub fn save_pending(&mut self, dir: &Path, vhosts: &Vhosts) -> Result<(), StateFileError> {
        let stamp = self.sinks.as_mut().map_or(0, Sinks::pending_stamp);
        if self.saved == Some(stamp) {
            return Ok(());
        }
        let pending = self.sinks.as_mut().map(Sinks::pending).unwrap_or_default();
        let tables = self.sinks.as_ref().map(Sinks::tables).unwrap_or_default();
        pending::save(dir, vhosts, &pending, &tables)?;
        self.saved = Some(stamp);
        Ok(())
    }

    /// Ends a replay's output: waits until every sink has delivered or reported each event it
    /// was given (their reports go to the log). `Err`: the error that stopped writing to the
    /// stream; `Ok(Some(..))`: the sinks that failed to deliver some events (dropped bans are
    /// reported but are not a failure: see `sink::runtime::runner`).
    pub fn finish(self) -> Result<Option<String>, io::Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let Some(sinks) = self.sinks else {
            return Ok(None);
        };
        let mut failed = Vec::new();
        for r in &sinks.finish() {
            log::info!("{r}");
            if r.failed > 0 {
                failed.push(format!("{}: {} events not delivered", r.name, r.failed));
            } else if let Some(e) = &r.failing {
                failed.push(format!("{}: failing: {e}", r.name));
            }
        }
        Ok((!failed.is_empty()).then(|| failed.join("; ")))
    }

    /// Ends watch's output: the sinks' reports and what they could not deliver (`None` without
    /// sinks), or the error that stopped writing to stdout.
    pub fn stop(mut self) -> Result<Option<Stopped>, io::Error> {
        self.flush();
        match (self.sinks, self.error) {
            (Some(s), _) => {
                let tables = s.tables();
                let (reports, pending) = s.stop_within(SINKS_STOP_WAIT);
                Ok(Some(Stopped {
                    reports,
                    pending,
                    tables,
                }))
            }
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }
}

/// Gives the sinks what they could not deliver before the last stop.
pub fn resend_pending(sinks: &mut crate::sink::Sinks, dir: &Path, vhosts: &Vhosts) {
    match crate::sink::runtime::pending::load(dir, vhosts) {
        Ok(pending) => {
            for kept in pending {
                let (name, n) = (kept.name, kept.events.len());
                if sinks.resend(&name, kept.table.as_ref(), kept.events) {
                    log::info!("{name}: {n} events from the last run to deliver");
                } else {
                    log::warn!("{n} events for {name}, no longer configured as it was: dropped");
                }
            }
        }
        Err(e) => log::error!("undelivered events of the last run: {e}"),
    }
}

/// Keeps what the sinks could not deliver for the next start (lost without a state folder).
pub fn keep_pending(dir: &Option<PathBuf>, vhosts: &Vhosts, stopped: &Stopped) {
    for (name, events) in &stopped.pending {
        log::warn!("{name}: {} events not delivered", events.len());
    }
    if let Some(dir) = dir {
        let (pending, tables) = (&stopped.pending, &stopped.tables);
        if let Err(e) = crate::sink::runtime::pending::save(dir, vhosts, pending, tables) {
            log::error!("keeping undelivered events: {e}");
        }
    }
}

/// Keeps `pending.json` up to date with what the sinks have not delivered yet. Saved before the
/// bans: after a crash between the two writes, an event in `pending.json` is at worst given
/// again to a sink that had it (delivery is at least once), while the other order could leave
/// a ban in `bans.journal`, never announced again, that a sink never got.
pub fn save_pending(output: &mut Output, dir: &Option<PathBuf>, vhosts: &Vhosts) {
    if let Some(dir) = dir {
        if let Err(e) = output.save_pending(dir, vhosts) {
            log::error!("keeping undelivered events: {e}");
        }
    }
}
