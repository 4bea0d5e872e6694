//! The watch loop. One thread owns the tailers, the parser state, the router (it is the shards'
//! only producer), the decider and the ban table; shard output reaches it through a relay
//! thread that wakes mio.
//!
//! **Time.** Watch decides as replay does on the final files, however the lines arrive. After
//! each round of reads (every file that changed is read to its end, so the shards sort the
//! round's hits before processing any of them), the loop sends the shards two marks (see
//! `marks`): they process up to the newest log time read, or the wall clock − 1 s when the logs
//! are idle, so a flood is decided as soon as a later line is read or a second has passed; and
//! they forget state only up to what the files being written may still deliver. A line that
//! arrives older than what was processed (a buffered log, a lagging vhost, a skewed clock, a
//! backlog after a stall, older lines appended) is *late*: counted at its own time against its
//! key's state, never at the watermark (see `engine::shard`). The wall clock ends bans and bounds
//! how long idle files are waited for; it never moves a line's time.
//!
//! **Expiry.** A ban ends at its offense's log time plus its length, as in replay; in watch the
//! loop also expires bans on the wall clock (a timer at the next end), so a ban ends on time
//! when the logs are idle and bans restored after a restart end when they should. Log time
//! trails the wall clock, so the decider's own log-time expiry never ends a ban earlier.
//!
//! **State.** Read offsets and active bans are saved under `[state] dir` about once a second when
//! something changed, and on stop; restored bans are not announced again (sinks that keep a set
//! of bans, nginx and Cloudflare, are handed them at start), and a ban that ended while stopped
//! is announced as ended at start. At stop, sinks stop retrying; what one could not deliver (its
//! endpoint is down) is kept in the state folder (`sink::pending`) and given to it first at the
//! next start. What the sinks have not delivered yet is also saved with the bans about once a
//! second, so a crash loses none of it.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::endpoint::Endpoint;
use super::files::Files;
use super::inotify::Inotify;
use super::output::{keep_pending, resend_pending, save_pending, Output};
use super::reload::{self, Live};
use super::signals::{Signal, Signals};
use super::{state, WatchPlan};
use crate::app::AppError;
use crate::config::StartAt;
use crate::decide::allowlist::Allowlist;
use crate::decide::ban_table::BanTable;
use crate::decide::decider::Decider;
use crate::decide::Event;
use crate::engine::router::Router;
use crate::engine::rule_ids::RuleIds;
use crate::engine::shard::{spawn_shards, ShardConfig};
use crate::engine::ShardOut;
use crate::source::checkpoint::Checkpoints;
use crate::source::ingest::{Ingest, IngestStats};
use crate::source::tail::TailBuf;
use crate::vhost::Vhosts;

const INOTIFY: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);
/// The metrics endpoint's listener; its connections take the tokens after it.
const HTTP: Token = Token(16);

/// How often offsets and bans are saved (when something changed).
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often the low mark is moved while lines were read within `ACTIVE_FOR`, and otherwise.
const ACTIVE_TICK: Duration = Duration::from_millis(100);
const ACTIVE_FOR: Duration = Duration::from_secs(3);
const IDLE_TICK: Duration = Duration::from_secs(1);
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

pub(super) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn runtime(what: &str, e: impl std::fmt::Display) -> AppError {
    AppError::Runtime(format!("{what}: {e}"))
}

/// Runs `watch` until SIGTERM or SIGINT (or stdout closing), writing events to `out` when no sink
/// is configured.
pub fn run(plan: WatchPlan, out: &mut dyn Write) -> Result<WatchReport, AppError> {
    // Before any thread starts: threads inherit the blocked signals signalfd needs.
    let mut signals = Signals::new().map_err(|e| runtime("signalfd", e))?;
    crate::sys::raise_fd_limit();
    let WatchPlan {
        mut config,
        format,
        rules,
        proxies,
        patterns,
        sinks,
        shards,
        state_dir,
        config_path,
        cli_paths,
    } = plan;

    if let Some(dir) = &state_dir {
        std::fs::create_dir_all(dir).map_err(|e| runtime(&dir.display().to_string(), e))?;
    }
    let checkpoints = match &state_dir {
        Some(dir) => Checkpoints::load(dir).map_err(|e| AppError::Runtime(e.to_string()))?,
        None => Checkpoints::new(),
    };
    let snapshot = match &state_dir {
        Some(dir) => state::load(dir).map_err(|e| AppError::Runtime(e.to_string()))?,
        None => Default::default(),
    };

    let mut endpoint = Endpoint::bind(config.metrics.listen)?;

    let vhosts = Vhosts::new();
    // Trusted proxies are never banned, whatever they send.
    let allow = [&config.allow[..], proxies.ranges()].concat();
    let mut table = BanTable::new(&config.rules, Allowlist::new(allow), vhosts.clone());
    let restored = table.restore(&snapshot);
    let before = table.stats();

    // Restored bans are not announced again, but sinks that keep a set of bans get them.
    let active: Vec<_> = table.active().cloned().collect();
    let mut output = Output::start(out, &sinks, &active).map_err(AppError::Runtime)?;
    if let (Some(s), Some(dir)) = (output.sinks_mut(), &state_dir) {
        resend_pending(s, dir, &vhosts);
    }

    let mut poll = Poll::new().map_err(|e| runtime("epoll", e))?;
    let inotify = Inotify::new().map_err(|e| runtime("inotify", e))?;
    poll.registry()
        .register(
            &mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&inotify)),
            INOTIFY,
            Interest::READABLE,
        )
        .map_err(|e| runtime("epoll", e))?;
    poll.registry()
        .register(
            &mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&signals)),
            SIGNALS,
            Interest::READABLE,
        )
        .map_err(|e| runtime("epoll", e))?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| runtime("epoll", e))?);
    endpoint.register(poll.registry(), HTTP)?;

    let rules = Arc::new(rules);
    let (out_tx, out_rx) = crossbeam_channel::bounded(16 * 1024);
    let shard_cfg = ShardConfig {
        shards,
        producers: 1,
        // Folded into the low mark: see the module documentation.
        lateness_ms: 0,
        max_keys: usize::try_from(config.engine.max_keys).unwrap_or(usize::MAX),
    };
    let (senders, shard_handles) = spawn_shards(&shard_cfg, rules.clone(), out_tx)
        .map_err(|e| AppError::Runtime(format!("cannot start the shard threads: {e}")))?;
    let relay = relay(out_rx, waker.clone());
    let route = rules.route_prefixes();

    let mut files = Files {
        patterns,
        start_at: config.input.start_at,
        tailers: Vec::new(),
        by_path: HashMap::new(),
        matched: HashSet::new(),
        dirs: HashMap::new(),
        watched: HashSet::new(),
        failed: HashSet::new(),
        inotify,
        buf: TailBuf::new(),
        ingest: Ingest::new(Arc::new(format), rules.clone(), vhosts.clone())
            .with_client_ip(proxies.client_ip()),
        router: Router::new(senders, 0, route),
        vhosts,
        newest: i64::MIN,
        lateness_ms: i64::try_from(config.input.lateness_ms).unwrap_or(i64::MAX),
        lifted: i64::MIN,
        unsaved: true,
        last_read: None,
        read_since_flush: false,
    };
    let started = Instant::now();
    files.rescan(Some(&checkpoints), StartAt::Beginning);
    log::info!(
        "watching {} files in {} folders ({} bans restored) after {} ms",
        files.tailers.len(),
        files.watched.len(),
        restored.bans,
        started.elapsed().as_millis()
    );
    // Lines written while stopped (and everything, with `start_at = "beginning"`): one round.
    for i in 0..files.tailers.len() {
        files.poll(i);
    }

    let mut decider = Decider::new(shards.max(1));
    let mut rule_ids = RuleIds::new(&config.rules);
    let mut reloads = super::metrics::Reloads::default();
    let mut events = Events::with_capacity(256);
    let mut ino_events = Vec::new();
    let mut to_poll: Vec<usize> = Vec::new();
    let mut next_save = Instant::now();
    let mut next_lift = Instant::now();
    let mut next_rescan = Instant::now() + files.rescan_interval();
    let mut saved_stats = table.stats();
    let mut stop = false;
    let mut save_error: Option<AppError> = None;

    loop {
        // One round: low mark, shard output, wall-clock expiry, state.
        let now_ms = wall_ms();
        let now = Instant::now();
        // Only after reads or on the lift timer: flushing on every wake-up would answer the
        // shards' ticks (which wake the loop) with new ticks, for ever. And only until the mark
        // has passed everything read: lifting it further decides nothing, and idle logs should
        // cost no thread wake-ups.
        if files.read_since_flush || (now >= next_lift && files.lifting()) {
            files.flush_marks(now_ms);
            files.read_since_flush = false;
            let active = files
                .last_read
                .is_some_and(|t| now.duration_since(t) < ACTIVE_FOR);
            next_lift = now + if active { ACTIVE_TICK } else { IDLE_TICK };
        }
        while let Ok(msg) = relay.try_recv() {
            decider.handle(msg, &mut table, &mut |ev| {
                endpoint.on_event(ev);
                output.emit(ev)
            });
        }
        for u in table.expire(now_ms) {
            output.emit(&Event::Unban(u));
        }
        if now >= next_save {
            // Before the bans: see `save_pending`.
            save_pending(&mut output, &state_dir, &files.vhosts);
            let changed = table.stats() != saved_stats;
            if files.unsaved || changed {
                if let Err(e) = save(&state_dir, &files.checkpoints(), &table) {
                    log::error!("saving state: {e}");
                }
                files.unsaved = false;
                saved_stats = table.stats();
            }
            next_save = now + SAVE_EVERY;
        }
        if stop || output.failed() {
            break;
        }

        let mut wake = next_rescan;
        if files.lifting() {
            wake = wake.min(next_lift);
        }
        // Sinks deliver (and so change what `pending.json` should hold) on their own threads.
        if files.unsaved || table.stats() != saved_stats || output.has_sinks() {
            wake = wake.min(next_save);
        }
        for w in &files.tailers {
            if let Some(d) = w.tailer.next_deadline() {
                wake = wake.min(d);
            }
        }
        if let Some(d) = endpoint.next_deadline() {
            wake = wake.min(d);
        }
        if let Some(until) = table.next_expiry() {
            let ms = until.saturating_sub(now_ms).clamp(0, 1000) as u64;
            wake = wake.min(now + Duration::from_millis(ms));
        }
        let timeout = wake.saturating_duration_since(now);
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(runtime("epoll", e));
            }
        }

        let mut rescan = false;
        let mut reloaded = false;
        for ev in events.iter() {
            match ev.token() {
                INOTIFY => {
                    ino_events.clear();
                    if let Err(e) = files.inotify.read_events(&mut ino_events) {
                        log::error!("inotify: {e}");
                    }
                    rescan |= files.on_events(&ino_events, &mut to_poll);
                }
                SIGNALS => loop {
                    match signals.read_signal() {
                        Ok(Some(Signal::Stop)) => stop = true,
                        Ok(Some(Signal::Reload)) => {
                            let path = config_path.as_deref();
                            let applied = reload::load(path, &cli_paths, &config).and_then(|r| {
                                let mut live = Live {
                                    config: &mut config,
                                    rule_ids: &mut rule_ids,
                                    files: &mut files,
                                    table: &mut table,
                                    output: &mut output,
                                };
                                live.apply(r)
                            });
                            reloads.count(applied.is_some());
                            reloaded |= applied == Some(true);
                            rescan |= reloaded;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            log::error!("signalfd: {e}");
                            break;
                        }
                    }
                },
                t if endpoint.owns(t) => {
                    endpoint.ready(poll.registry(), t, &|| super::metrics::View {
                        ingest: &files.ingest.stats,
                        shards: decider.live_stats(),
                        table: &table,
                        sinks: output.sink_counters(),
                        files: files.tailers.len(),
                        reloads,
                    })
                }
                _ => {} // The waker: shard output is drained at the top of the loop.
            }
        }
        let now = Instant::now();
        endpoint.expire(poll.registry(), now);
        if now >= next_rescan {
            rescan = true;
            to_poll.extend(0..files.tailers.len());
            next_rescan = now + files.rescan_interval();
        }
        if rescan {
            let known = files.tailers.len();
            // A file newly named by a reload was there before: it starts where a file present
            // at the first start does. One found otherwise is new: read from its start.
            let start = match reloaded {
                true => files.start_at,
                false => StartAt::Beginning,
            };
            files.rescan(None, start);
            to_poll.extend(known..files.tailers.len());
        }
        for (i, w) in files.tailers.iter().enumerate() {
            if w.tailer.next_deadline().is_some_and(|d| d <= now) {
                to_poll.push(i);
            }
        }
        to_poll.sort_unstable();
        to_poll.dedup();
        for &i in &to_poll {
            files.poll(i);
        }
        to_poll.clear();
        if rescan {
            files.retire_unmatched();
        }
        if reloaded {
            log::info!(
                "SIGHUP: watching {} files in {} folders",
                files.tailers.len(),
                files.watched.len()
            );
        }
    }

    // Stop: one last read of every file (cheap: a few syscalls per idle file), so that what
    // was written up to the signal is decided now; the shards process what they hold, the
    // decider decides it, then state and sinks.
    for i in 0..files.tailers.len() {
        files.poll(i);
    }
    files.flush_marks(wall_ms());
    let checkpoints = files.checkpoints();
    let watched_files = files.tailers.len();
    let Files {
        router,
        ingest,
        vhosts,
        ..
    } = files;
    router.finish();
    let deadline = Instant::now() + STOP_WAIT;
    while !decider.is_done() {
        match relay.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(msg) => decider.handle(msg, &mut table, &mut |ev| output.emit(ev)),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    decider.finish(&mut table, &mut |ev| output.emit(ev));
    for u in table.expire(wall_ms()) {
        output.emit(&Event::Unban(u));
    }
    save_pending(&mut output, &state_dir, &vhosts);
    if let Err(e) = save(&state_dir, &checkpoints, &table) {
        save_error = Some(AppError::Runtime(format!("saving state: {e}")));
    }
    for h in shard_handles {
        let _ = h.join();
    }
    let after = table.stats();
    let report = WatchReport {
        files: watched_files,
        ingest: ingest.stats,
        late: decider.shard_stats().late,
        stale: decider.shard_stats().stale,
        bans: after.bans - before.bans,
        unbans: after.unbans - before.unbans,
        restored_bans: restored.bans,
    };
    match output.stop() {
        Ok(Some(stopped)) => {
            for r in &stopped.reports {
                log::info!("{r}");
            }
            keep_pending(&state_dir, &vhosts, &stopped);
        }
        Err(e) => {
            return Err(AppError::writing("events", e));
        }
        Ok(None) => {}
    }
    match save_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Saves bans, then offsets (see `state`).
fn save(dir: &Option<PathBuf>, cps: &Checkpoints, table: &BanTable) -> Result<(), String> {
    let Some(dir) = dir else {
        return Ok(());
    };
    state::save(dir, &table.snapshot()).map_err(|e| e.to_string())?;
    cps.save(dir).map_err(|e| e.to_string())
}

/// Forwards shard output to the loop and wakes it; ends when every shard has hung up.
fn relay(rx: Receiver<ShardOut>, waker: Arc<Waker>) -> Receiver<ShardOut> {
    let (tx, relayed) = crossbeam_channel::unbounded();
    let spawned = std::thread::Builder::new()
        .name("watch-relay".into())
        .spawn(move || {
            for msg in rx {
                if tx.send(msg).is_err() {
                    break;
                }
                let _ = waker.wake();
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the relay thread: {e}");
    }
    relayed
}
