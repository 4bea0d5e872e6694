//! The watch loop. One thread owns the files (tailers, parser, the router: it is the shards'
//! only producer), the [`Detector`]'s decider and ban table, the output and the metrics
//! endpoint; shard output wakes it through the detector's relay thread. [`WatchLoop`] runs it in
//! small steps: a round (marks, decisions, wall-clock expiry, saving), a wait in mio, the events
//! that woke it (inotify, signals, metrics and control requests), the reads; and the stop.
//!
//! **Time.** Watch decides as replay does on the final files, however the lines arrive: after
//! each round of reads the loop sends the shards their marks (`marks`), the decider decides an
//! offense as soon as every shard has processed its time, a late line counts at its own time,
//! and the wall clock ends bans (a timer at the next end) but never moves a line's time. The
//! rules, once: docs/design.md (Time).
//!
//! **State.** Read offsets and active bans are saved under `[state] dir` about once a second when
//! something changed, and on stop; restored bans are not announced again (sinks that keep a set
//! of bans, nginx and Cloudflare, are handed them at start), and a ban that ended while stopped
//! is announced as ended at start. At stop, sinks stop retrying; what one could not deliver (its
//! endpoint is down) is kept in the state folder (`sink::runtime::pending`) and given to it first at the
//! next start. What the sinks have not delivered yet is also saved with the bans about once a
//! second, so a crash loses none of it.
//!
//! **Fleet.** With `[fleet]`, the output also queues this server's own events for the fleet's
//! publisher thread, and each round applies what the follower thread read from the other
//! servers (it wakes the loop through the same waker as shard output); their events go to the
//! sinks through `Output::emit_remote`, never published again. The last stream entry applied and
//! the unpublished messages are saved in `fleet.json` with the rest (see `crate::fleet`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::commands::{self, Ctx, LineRate, Started};
use super::endpoint::Endpoint;
use super::files::{Files, ReadLag, Reading};
use super::http::Page;
use super::inotify::{self, Inotify};
use super::live::{LiveView, Sources};
use super::notify::Systemd;
use super::reload::{self, Live};
use super::signals::{Signal, Signals};
use super::state::BanStore;
use super::WatchPlan;
use crate::clock::wall_ms;
use crate::config::{Config, StartAt};
use crate::control::server::ControlSocket;
use crate::control::top::DEFAULT_LIMIT;
use crate::decide::ban_table::{RestoreStats, TableStats};
use crate::engine::rule_ids::RuleIds;
use crate::error::Error;
use crate::fleet::{self, Fleet};
use crate::pipeline::detector::{Detector, DetectorSpec};
use crate::pipeline::output::{keep_pending, resend_pending, save_pending, Output};
use crate::source::checkpoint::Checkpoints;
use crate::source::ingest::Ingest;
use crate::source::stats::IngestStats;
use crate::state_file::StateFileError;
use crate::state_lock::{self, StateLock};
use crate::vhost::Vhosts;

const INOTIFY: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);
/// The metrics endpoint's listener; its connections take the tokens after it.
const HTTP: Token = Token(16);
/// The control socket's listener, far above: its connections take the tokens after it.
const CONTROL: Token = Token(usize::MAX / 2);

/// How often offsets and bans are saved (when something changed).
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often the marks are sent while lines were read within `ACTIVE_FOR`, and otherwise.
const ACTIVE_TICK: Duration = Duration::from_millis(100);
const ACTIVE_FOR: Duration = Duration::from_secs(3);
const IDLE_TICK: Duration = Duration::from_secs(1);
/// How often the loop looks at an in-process caller's stop flag.
const STOP_FLAG_EVERY: Duration = Duration::from_millis(50);
/// How long a stop waits for the shards to hand over their last offenses.
const STOP_WAIT: Duration = Duration::from_millis(500);

/// What a watch run did, for the log at its end.
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchReport {
    pub files: usize,
    pub ingest: IngestStats,
    /// Hits older than what the shards had processed when they arrived (each still counted at
    /// its own time; see the module documentation).
    pub late: u64,
    /// Hits too old to count (skipped; see `engine::table`).
    pub stale: u64,
    pub bans: u64,
    pub unbans: u64,
    pub restored_bans: u64,
}

impl std::fmt::Display for WatchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "watched {} files: {} lines, {} malformed, {} late, {} too old to count, {} bans, {} unbans \
             ({} bans restored)",
            self.files,
            self.ingest.lines,
            self.ingest.malformed.total(),
            self.late,
            self.stale,
            self.bans,
            self.unbans,
            self.restored_bans
        )
    }
}

/// Runs `watch` until SIGTERM or SIGINT (or stdout closing), writing events to `out` when no sink
/// is configured.
pub fn run(plan: WatchPlan, out: &mut (dyn Write + Send)) -> Result<WatchReport, Error> {
    WatchLoop::start(plan, out)?.run()
}

/// The loop's state between steps.
struct WatchLoop<'o> {
    config: Config,
    config_path: Option<PathBuf>,
    cli_paths: Vec<String>,
    state_dir: Option<PathBuf>,
    /// The bans kept in the state folder (with `[state] dir`).
    bans: Option<BanStore>,
    /// Held for the watch's whole life: no other watch, nor `replay --sinks`, uses the folder.
    state_lock: Option<StateLock>,
    signals: Signals,
    poll: Poll,
    events: Events,
    endpoint: Endpoint,
    /// None without `[state] dir` or `[state] socket`.
    control: Option<ControlSocket>,
    started: Started,
    line_rate: LineRate,
    systemd: Systemd,
    files: Files,
    detector: Detector,
    output: Output<'o>,
    vhosts: Vhosts,
    rule_ids: RuleIds,
    reloads: super::metrics::Reloads,
    next_save: Instant,
    next_lift: Instant,
    next_rescan: Instant,
    /// The ban table's counters at the last save, and at start.
    saved_stats: TableStats,
    started_stats: TableStats,
    restored: RestoreStats,
    ino_events: Vec<inotify::Event>,
    to_poll: Vec<usize>,
    stop: bool,
    /// When the config in force was read, and the last one refused.
    config_state: reload::ConfigState,
    /// Set by a caller that runs watch in process (see [`WatchPlan::stop`]).
    stop_flag: Option<Arc<AtomicBool>>,
    /// `[fleet]`: bans shared with other servers.
    fleet: Option<Fleet>,
    /// What `top` and the dashboard show.
    live: LiveView,
}

impl<'o> WatchLoop<'o> {
    /// Loads the state, starts the detector, the output and the metrics endpoint, follows the
    /// files the globs name and reads what was written while stopped.
    fn start(plan: WatchPlan, out: &'o mut (dyn Write + Send)) -> Result<WatchLoop<'o>, Error> {
        // Before any thread starts: threads inherit the blocked signals signalfd needs.
        let signals = Signals::new().map_err(Error::system("signalfd"))?;
        crate::sys::raise_fd_limit();
        let WatchPlan {
            config,
            format,
            rules,
            proxies,
            patterns,
            sinks,
            shards,
            state_dir,
            config_path,
            cli_paths,
            stop,
        } = plan;

        if let Some(dir) = &state_dir {
            std::fs::create_dir_all(dir).map_err(Error::file(dir))?;
        }
        let state_lock = match &state_dir {
            Some(dir) => Some(lock_state(dir)?),
            None => None,
        };
        let checkpoints = match &state_dir {
            Some(dir) => Checkpoints::load(dir)?,
            None => Checkpoints::new(),
        };
        let mut endpoint = Endpoint::bind(config.metrics.listen, config.metrics.dashboard)?;
        let mut control = bind_control(&config)?;

        let vhosts = Vhosts::new();
        let rules = Arc::new(rules);
        let mut detector = Detector::start(DetectorSpec {
            shards,
            // Folded into the marks: see `marks`.
            lateness_ms: 0,
            // A ban as soon as its line is read, not at the next round's tick.
            eager: true,
            ..DetectorSpec::from_config(&config, rules.clone(), &proxies, vhosts.clone())
        })?;
        let (bans, restored) = match &state_dir {
            Some(dir) => {
                let (store, restored) = BanStore::open(dir, detector.table_mut())?;
                (Some(store), restored)
            }
            None => (None, RestoreStats::default()),
        };
        let started_stats = detector.table().stats();

        // Restored bans are not announced again, but sinks that keep a set of bans get them.
        let active: Vec<_> = match sinks.is_empty() {
            true => Vec::new(),
            false => detector.table().active().collect(),
        };
        let mut output = Output::start(out, &sinks, &active)?
            .log_events(true)
            .batch_stream(true);
        if let (Some(s), Some(dir)) = (output.sinks_mut(), &state_dir) {
            resend_pending(s, dir, &vhosts);
        }

        let poll = Poll::new().map_err(Error::system("epoll"))?;
        let inotify = Inotify::new().map_err(Error::system("inotify"))?;
        let fd = |f: &dyn std::os::fd::AsRawFd| f.as_raw_fd();
        let registry = poll.registry();
        registry
            .register(&mut SourceFd(&fd(&inotify)), INOTIFY, Interest::READABLE)
            .and_then(|()| {
                registry.register(&mut SourceFd(&fd(&signals)), SIGNALS, Interest::READABLE)
            })
            .map_err(Error::system("epoll"))?;
        let waker = Arc::new(Waker::new(registry, WAKER).map_err(Error::system("epoll"))?);
        detector.wake_on_output(waker.clone());
        // The rules counted with the whole fleet: their hits are handed to `fleet` each round.
        let mut count_mask = 0;
        let fleet = match &config.fleet {
            Some(f) => {
                let saved = match &state_dir {
                    Some(dir) => fleet::state::load(dir)?,
                    None => Default::default(),
                };
                let mut fleet = Fleet::start(f, saved, waker.clone())?;
                output.publish_to(fleet.publish_handle());
                let ids: Vec<u16> = (0..config.rules.len() as u16).collect();
                count_mask = fleet.start_counting(f, &config.rules, &ids, vhosts.clone(), waker)?;
                Some(fleet)
            }
            None => None,
        };
        endpoint.register(registry, HTTP)?;
        if let Some(c) = &mut control {
            c.register(registry, CONTROL)
                .map_err(Error::system("epoll"))?;
        }

        let ingest = Ingest::new(Arc::new(format), rules, vhosts.clone())
            .with_client_ip(proxies.client_ip())
            .counting_vhosts();
        let mut files = Files::new(Reading {
            patterns,
            start_at: config.input.start_at,
            inotify,
            ingest,
            router: detector.router(),
            vhosts: vhosts.clone(),
            lateness_ms: i64::try_from(config.input.lateness_ms).unwrap_or(i64::MAX),
        });
        files.tap(count_mask);
        let started = Instant::now();
        files.rescan(Some(&checkpoints), StartAt::Beginning);
        files.report_unmatched();
        let (n_files, folders) = (files.open_files(), files.counts().1);
        log::info!(
            "watching {n_files} files in {folders} folders ({} bans restored) after {} ms",
            restored.bans,
            started.elapsed().as_millis()
        );
        // Lines written while stopped (and everything, with `start_at = "beginning"`): one round.
        files.poll_all();
        let systemd = Systemd::new();
        systemd.ready(&format!("watching {n_files} files in {folders} folders"));

        let now = Instant::now();
        let live = LiveView::new(
            files.router().shards(),
            config.metrics.dashboard,
            vhosts.clone(),
        );
        Ok(WatchLoop {
            live,
            rule_ids: RuleIds::new(&config.rules),
            config,
            config_path,
            cli_paths,
            state_dir,
            bans,
            state_lock,
            signals,
            poll,
            events: Events::with_capacity(256),
            endpoint,
            control,
            started: Started {
                wall_ms: wall_ms(),
                at: started,
            },
            line_rate: LineRate::default(),
            systemd,
            next_rescan: now + files.rescan_interval(),
            files,
            detector,
            output,
            vhosts,
            reloads: Default::default(),
            next_save: now,
            next_lift: now,
            saved_stats: started_stats,
            started_stats,
            restored,
            ino_events: Vec::new(),
            to_poll: Vec::new(),
            stop: false,
            config_state: reload::ConfigState::new(wall_ms()),
            stop_flag: stop,
            fleet,
        })
    }

    fn run(mut self) -> Result<WatchReport, Error> {
        loop {
            if let Some(flag) = &self.stop_flag {
                self.stop |= flag.load(Ordering::Acquire);
            }
            self.round();
            if self.stop || self.output.failed() {
                break;
            }
            self.wait()?;
            let (rescan, reloaded) = self.handle_events();
            self.read(rescan, reloaded);
        }
        self.finish()
    }

    /// One round: the marks, the shards' output decided, wall-clock expiry, state.
    fn round(&mut self) {
        let now = Instant::now();
        // Only after reads or on the lift timer: sending marks on every wake-up would answer
        // the shards' ticks (which wake the loop) with new ticks, for ever.
        if self.files.marks_due(now >= self.next_lift) {
            self.files.flush_marks(wall_ms());
            let active = self.files.active(now, ACTIVE_FOR);
            self.next_lift = now + if active { ACTIVE_TICK } else { IDLE_TICK };
        }
        let WatchLoop {
            detector,
            endpoint,
            output,
            ..
        } = self;
        detector.decide_ready(&mut |ev| {
            endpoint.on_event(ev);
            output.emit(ev)
        });
        if let Some(f) = &mut self.fleet {
            let table = detector.table_mut();
            f.apply_ready(table, wall_ms(), &mut |ev| output.emit_remote(ev));
            f.count(self.files.take_tapped());
            f.counted_ready(table, &mut |ev| {
                endpoint.on_event(ev);
                output.emit(ev)
            });
        }
        detector.expire(wall_ms(), &mut |ev| output.emit(ev));
        output.flush();
        self.line_rate.sample(now, self.files.ingest_stats().lines);
        // A round's tick draws no frame: the read lag (a stat of every open file) is left out,
        // which at 100 files and thousands of rounds a second was half of this thread's time.
        let sources = live_sources(
            &self.files,
            self.detector.table(),
            self.started,
            self.started_stats,
            Vec::new(),
            ReadLag::default(),
        );
        self.live.tick(now, self.files.router(), &sources);
        if let Some(addrs) = self.live.watched(now) {
            self.files.watch_key_vhosts(addrs.as_deref());
        }
        self.systemd.tick(now);
        if now >= self.next_save {
            self.save();
            self.next_save = now + SAVE_EVERY;
        }
    }

    /// Saves what changed: the events the sinks have not delivered (first: see
    /// `save_pending`), then the bans and the read offsets.
    fn save(&mut self) {
        save_pending(&mut self.output, &self.state_dir, &self.vhosts);
        if let (Some(f), Some(dir)) = (&mut self.fleet, &self.state_dir) {
            if let Err(e) = f.save(dir) {
                log::error!("saving the fleet's state: {e}");
            }
        }
        let stats = self.detector.table().stats();
        if self.files.unsaved() || stats != self.saved_stats {
            let checkpoints = self.files.checkpoints();
            if let Err(e) = self.save_state(&checkpoints) {
                log::error!("saving state: {e}");
            }
            self.files.saved();
            self.saved_stats = stats;
        }
    }

    /// Saves bans, then offsets (see `state`).
    fn save_state(&mut self, cps: &Checkpoints) -> Result<(), StateFileError> {
        let (Some(dir), Some(bans)) = (&self.state_dir, &mut self.bans) else {
            return Ok(());
        };
        bans.save(self.detector.table_mut())?;
        cps.save(dir)
    }

    /// Waits in mio until something happens or the next timer is due.
    fn wait(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        let mut wake = self.next_rescan;
        if self.files.lifting() {
            wake = wake.min(self.next_lift);
        }
        // Sinks deliver (and so change what `pending.json` should hold) on their own threads.
        let table = self.detector.table();
        let fleet = self.fleet.is_some();
        if self.files.unsaved()
            || table.stats() != self.saved_stats
            || self.output.has_sinks()
            || fleet
        {
            wake = wake.min(self.next_save);
        }
        let deadlines = [
            self.files.next_deadline(),
            self.endpoint.next_deadline(),
            self.control.as_ref().and_then(ControlSocket::next_deadline),
            self.systemd.next_deadline(),
        ];
        wake = deadlines.into_iter().flatten().fold(wake, Instant::min);
        if let Some(until) = table.next_expiry() {
            let ms = until.saturating_sub(wall_ms()).clamp(0, 1000) as u64;
            wake = wake.min(now + Duration::from_millis(ms));
        }
        if self.stop_flag.is_some() {
            wake = wake.min(now + STOP_FLAG_EVERY);
        }
        let timeout = wake.saturating_duration_since(now);
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(Error::system("epoll")(e)),
            _ => Ok(()),
        }
    }

    /// Handles what woke the loop: returns whether to rescan, and whether a reload changed
    /// the globs. The waker needs nothing: shard output is decided at the next round.
    fn handle_events(&mut self) -> (bool, bool) {
        let (mut rescan, mut reloaded) = (false, false);
        let tokens: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
        for token in tokens {
            match token {
                INOTIFY => {
                    let (events, to_poll) = (&mut self.ino_events, &mut self.to_poll);
                    rescan |= self.files.on_inotify(events, to_poll);
                }
                SIGNALS => {
                    let globs = self.on_signals();
                    reloaded |= globs;
                    rescan |= globs;
                }
                t if self.endpoint.owns(t) => self.serve(t),
                t if self.control.as_ref().is_some_and(|c| c.owns(t)) => self.command(t),
                _ => {}
            }
        }
        (rescan, reloaded)
    }

    /// Reads the signals waiting: a stop, or a reload (returns whether it changed the globs).
    fn on_signals(&mut self) -> bool {
        let mut globs = false;
        loop {
            match self.signals.read_signal() {
                Ok(Some(Signal::Stop)) => self.stop = true,
                Ok(Some(Signal::Reload)) => globs |= self.reload(),
                Ok(None) => return globs,
                Err(e) => {
                    log::error!("signalfd: {e}");
                    return globs;
                }
            }
        }
    }

    /// SIGHUP: reads the config again and applies it (see `reload`); returns whether the globs
    /// changed.
    fn reload(&mut self) -> bool {
        self.systemd.reloading();
        let path = self.config_path.as_deref();
        let applied = reload::load(path, &self.cli_paths, &self.config).and_then(|r| {
            Live {
                config: &mut self.config,
                rule_ids: &mut self.rule_ids,
                files: &mut self.files,
                table: self.detector.table_mut(),
                output: &mut self.output,
            }
            .apply(r)
        });
        self.reloads.count(applied.is_ok());
        if let (Ok(_), Some(f)) = (&applied, &mut self.fleet) {
            let ids = (self.rule_ids.clone().assign(&self.config.rules)).unwrap_or_default();
            let mask = f.rules_reloaded(self.config.fleet.as_ref(), &self.config.rules, &ids);
            self.files.tap(mask);
        }
        self.config_state.reloaded(&applied, wall_ms());
        let (n_files, folders) = (self.files.open_files(), self.files.counts().1);
        self.systemd
            .ready(&format!("watching {n_files} files in {folders} folders"));
        matches!(applied, Ok(true))
    }

    /// A metrics request or connection event.
    fn serve(&mut self, token: Token) {
        let WatchLoop {
            endpoint,
            files,
            detector,
            output,
            reloads,
            poll,
            fleet,
            live,
            started,
            started_stats,
            config,
            ..
        } = self;
        // Taken before: `/metrics` borrows the output too (once per request, a few sinks).
        let mut sinks: Option<Vec<_>> = config.metrics.dashboard.then(|| {
            output
                .sink_health()
                .iter()
                .map(commands::sink_status)
                .collect()
        });
        let mut api = |page: Page, out: &mut Vec<u8>| match page {
            Page::ApiTop { limit } => {
                live.want(Instant::now(), files.router());
                let sinks = sinks.take().unwrap_or_default();
                let lag = files.read_lag(wall_ms());
                let src = live_sources(
                    files,
                    detector.table(),
                    *started,
                    *started_stats,
                    sinks,
                    lag,
                );
                let limit = limit.map_or(DEFAULT_LIMIT, usize::from);
                let _ = serde_json::to_writer(&mut *out, &live.top(limit, src));
            }
            Page::ApiHistory => {
                let _ = serde_json::to_writer(&mut *out, &live.history());
            }
            _ => {}
        };
        endpoint.ready(
            poll.registry(),
            token,
            detector.table(),
            &|| super::metrics::View {
                ingest: files.ingest_stats(),
                shards: detector.live_stats(),
                table: detector.table(),
                sinks: output.sink_counters(),
                files: files.open_files(),
                reloads: *reloads,
                lag: files.read_lag(wall_ms()),
                fleet: fleet.as_ref().map(Fleet::stats),
            },
            &mut api,
        )
    }

    /// A control request or connection event (`floodwatch bans`, `unban`...).
    fn command(&mut self, token: Token) {
        let WatchLoop {
            control: Some(control),
            detector,
            output,
            files,
            started,
            started_stats,
            config_path,
            config_state,
            line_rate,
            poll,
            fleet,
            live,
            ..
        } = self
        else {
            return;
        };
        control.ready(poll.registry(), token, &mut |req, out| {
            let cx = Ctx {
                detector,
                output,
                files,
                started: *started,
                started_stats: *started_stats,
                config_path: config_path.as_deref(),
                config_state,
                rate: line_rate,
                fleet: fleet.as_ref(),
                live,
            };
            commands::answer(req, cx, out)
        });
    }

    /// Reads the files that changed (or all of them at a rescan), follows what a rescan finds,
    /// and drops what the globs no longer name.
    fn read(&mut self, mut rescan: bool, reloaded: bool) {
        let now = Instant::now();
        self.endpoint.expire(self.poll.registry(), now);
        if let Some(c) = &mut self.control {
            c.expire(self.poll.registry(), now);
        }
        if now >= self.next_rescan {
            rescan = true;
            self.to_poll.extend(0..self.files.counts().0);
            self.next_rescan = now + self.files.rescan_interval();
        }
        if rescan {
            let known = self.files.counts().0;
            let start = self.files.start_for(reloaded);
            self.files.rescan(None, start);
            self.to_poll.extend(known..self.files.counts().0);
        }
        self.files.poll_due(&mut self.to_poll, now);
        if rescan {
            self.files.retire_unmatched();
        }
        if reloaded {
            self.files.report_unmatched();
            let (n_files, folders) = (self.files.open_files(), self.files.counts().1);
            log::info!("SIGHUP: watching {n_files} files in {folders} folders");
        }
    }

    /// Stop: one last read of every file (cheap: a few syscalls per idle file), so that what
    /// was written up to the signal is decided now; the shards process what they hold, the
    /// decider decides it, then state and sinks.
    fn finish(self) -> Result<WatchReport, Error> {
        let WatchLoop {
            mut files,
            mut detector,
            mut output,
            state_dir,
            mut bans,
            vhosts,
            started_stats,
            restored,
            control,
            systemd,
            mut fleet,
            // Kept until the state is saved: released as the last step.
            state_lock: _state_lock,
            ..
        } = self;
        systemd.stopping();
        // Commands now would find no one to answer them.
        drop(control);
        files.poll_all();
        files.flush_marks(wall_ms());
        let checkpoints = files.checkpoints();
        let watched_files = files.open_files();
        let ingest: IngestStats = files.finish();
        detector.finish_within(STOP_WAIT, &mut |ev| output.emit(ev));
        detector.expire(wall_ms(), &mut |ev| output.emit(ev));
        save_pending(&mut output, &state_dir, &vhosts);
        if let Some(f) = &mut fleet {
            f.stop();
            if let Some(dir) = &state_dir {
                if let Err(e) = f.save(dir) {
                    log::error!("saving the fleet's state: {e}");
                }
            }
        }
        let saved = match (&state_dir, &mut bans) {
            (Some(dir), Some(bans)) => bans
                .save(detector.table_mut())
                .and_then(|()| checkpoints.save(dir)),
            _ => Ok(()),
        };
        let after = detector.table().stats();
        let shards = detector.shard_stats();
        let report = WatchReport {
            files: watched_files,
            ingest,
            late: shards.late,
            stale: shards.stale,
            bans: after.bans - started_stats.bans,
            unbans: after.unbans - started_stats.unbans,
            restored_bans: restored.bans,
        };
        match output.stop() {
            Ok(Some(stopped)) => {
                for r in &stopped.reports {
                    log::info!("{r}");
                }
                keep_pending(&state_dir, &vhosts, &stopped);
            }
            Err(e) => return Err(Error::writing("events", e)),
            Ok(None) => {}
        }
        saved.map_err(Error::SavingState)?;
        Ok(report)
    }
}

/// What a `top` frame is made from, as the loop has it now (`sinks`: their status, when the
/// frame shows them).
fn live_sources<'a>(
    files: &'a Files,
    table: &'a crate::decide::ban_table::BanTable,
    started: Started,
    started_stats: TableStats,
    sinks: Vec<crate::control::SinkStatus>,
    lag: ReadLag,
) -> Sources<'a> {
    Sources {
        table,
        lines: files.ingest_stats().lines,
        vhost_counts: files.vhost_counts(),
        key_vhosts: files.key_vhosts(),
        files: files.open_files(),
        read_lag_ms: lag.worst_ms,
        read_lag_bytes: lag.worst_bytes,
        uptime: started.at.elapsed(),
        bans_since_start: table.stats().bans.saturating_sub(started_stats.bans),
        sinks,
    }
}

/// Takes the state folder's lock (see [`crate::state_lock`]), or says who holds it.
fn lock_state(dir: &Path) -> Result<StateLock, Error> {
    state_lock::acquire(dir, "watch").map_err(|source| Error::StateLock {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Creates the control socket the config names (see [`crate::control`]); none without `[state]
/// dir` or `[state] socket`, said once in the log.
fn bind_control(config: &Config) -> Result<Option<ControlSocket>, Error> {
    let Some(path) = config.state.socket_path() else {
        log::info!(
            "no [state] dir or socket: `floodwatch bans`, `ban`, `unban` and `status` cannot reach this watch"
        );
        return Ok(None);
    };
    let key = match config.state.socket {
        Some(_) => "[state] socket",
        None => "[state] dir (its control.sock)",
    };
    // Said as it is: the socket's own error names the setting and the path.
    ControlSocket::bind(&path, key)
        .map(Some)
        .map_err(|e| Error::Runtime(e.to_string()))
}
