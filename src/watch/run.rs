//! The watch loop. One thread owns the tailers, the parser state, the router (it is the shards'
//! only producer), the decider and the ban table; shard output reaches it through a relay
//! thread that wakes mio.
//!
//! **Low marks.** Replay waits for the slowest file; a live log may stay idle for hours, so watch
//! cannot. After each round of reads (every file that changed is read to its end, so the shards
//! sort the round's hits before processing any of them), the loop promises the shards
//! `max(newest log time read, wall clock − 1 s)`, capped at the wall clock + 1 s, with no further
//! lateness. Idle files therefore never hold anything back, a flood is decided as soon as a
//! line stamped with a later time is read or one wall-clock second has passed (so a format with
//! millisecond times gives millisecond latency), and a line that arrives older than what was
//! already processed (another vhost's log lagging, or a slow request logged at its end with its
//! start time) is counted as *late*: still counted, at the watermark. The backlog read at start
//! (lines written while stopped) comes in one round and is merged by time like a replay. Lines
//! stamped more than a second in the past when they are *written* all count as late: watch is
//! for live logs; archives are for replay.
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
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::endpoint::Endpoint;
use super::inotify::{self, Inotify};
use super::output::{Output, Stopped};
use super::reload::{self, Reloaded};
use super::signals::{Signal, Signals};
use super::{state, Patterns, WatchPlan};
use crate::app::AppError;
use crate::config::{Config, StartAt};
use crate::decide::allowlist::Allowlist;
use crate::decide::ban_table::BanTable;
use crate::decide::decider::Decider;
use crate::decide::Event;
use crate::engine::router::Router;
use crate::engine::rule_ids::RuleIds;
use crate::engine::shard::{spawn_shards, ShardConfig};
use crate::engine::ShardOut;
use crate::hit::{VhostId, NO_VHOST};
use crate::source::checkpoint::Checkpoints;
use crate::source::ingest::{Ingest, IngestStats};
use crate::source::tail::{Started, TailBuf, Tailer};
use crate::vhost::Vhosts;

const INOTIFY: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);
/// The metrics endpoint's listener; its connections take the tokens after it.
const HTTP: Token = Token(16);

/// How often offsets and bans are saved (when something changed).
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// The fallback for what inotify cannot report (a folder or file that could not be watched or
/// opened, a filesystem without inotify): globs evaluated again and every file polled. Rarely
/// while every folder is watched (for 2,000 files a rescan is ~12,000 `stat`s, most of the idle
/// CPU at 10 s), often while one is not.
const RESCAN_EVERY: Duration = Duration::from_secs(60);
const RESCAN_FAILING: Duration = Duration::from_secs(10);
/// How long a followed file may be missing before it is no longer followed.
const MISSING_FOR: Duration = Duration::from_secs(120);
/// How far behind the wall clock the low mark may trail a file with nothing newer.
const WALL_SLACK_MS: i64 = 1000;
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
    /// Hits older than what the shards had processed when they arrived (counted at the
    /// watermark; see the module documentation).
    pub late: u64,
    pub bans: u64,
    pub unbans: u64,
    pub restored_bans: u64,
}

impl std::fmt::Display for WatchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "watched {} files: {} lines, {} malformed, {} late, {} bans, {} unbans ({} bans restored)",
            self.files,
            self.ingest.lines,
            self.ingest.malformed.total(),
            self.late,
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

struct Watched {
    tailer: Tailer,
    vhost: VhostId,
    /// Since when the globs have not found the file (rescans only).
    missing_since: Option<Instant>,
}

/// The files and folders followed, and the reading side of the pipeline.
struct Files {
    patterns: Patterns,
    start_at: StartAt,
    tailers: Vec<Watched>,
    by_path: HashMap<PathBuf, usize>,
    /// The files the globs named at the last rescan.
    matched: HashSet<PathBuf>,
    /// Watch descriptor → folder, and the folders watched.
    dirs: HashMap<i32, PathBuf>,
    watched: HashSet<PathBuf>,
    /// Folders and files that could not be watched or opened, reported once (they are tried
    /// again at every rescan; `fs.inotify.max_user_watches` or permissions may change).
    failed: HashSet<PathBuf>,
    inotify: Inotify,
    buf: TailBuf,
    ingest: Ingest,
    router: Router,
    vhosts: Vhosts,
    /// The newest log time read from any file.
    newest: i64,
    /// The last low mark sent to the shards.
    lifted: i64,
    /// Bytes read since the last save.
    unsaved: bool,
    /// When lines were last read.
    last_read: Option<Instant>,
    /// Lines were read since the low mark was last sent.
    read_since_flush: bool,
}

impl Files {
    /// Watches every folder the patterns walk through, then opens the files they name that are
    /// not followed yet. Folders first, and again until no new one appears: a folder or file
    /// created meanwhile is then either seen by the glob or reported by inotify. Without
    /// checkpoints (`resume`), a file not followed yet starts at `new_start`.
    fn rescan(&mut self, resume: Option<&Checkpoints>, new_start: StartAt) {
        let mut wanted = Vec::new();
        for _ in 0..8 {
            let mut added = false;
            wanted = self.patterns.dirs();
            for dir in wanted.iter().cloned() {
                if self.watched.contains(&dir) {
                    continue;
                }
                match self.inotify.watch_dir(&dir) {
                    Ok(wd) => {
                        self.failed.remove(&dir);
                        self.dirs.insert(wd, dir.clone());
                        self.watched.insert(dir);
                        added = true;
                    }
                    Err(e) => {
                        if self.failed.insert(dir.clone()) {
                            log::warn!("cannot watch {}: {e}", dir.display());
                        }
                    }
                }
            }
            if !added {
                break;
            }
        }
        self.matched.clear();
        let mut files = self.patterns.files();
        // A path with a checkpoint but no file at a restart (renamed by a rotation, the new file
        // not created yet) is followed too: its tailer reads the renamed file on.
        if let Some(cps) = resume {
            let gone = cps.iter().filter(|cp| cp.inode != 0 && !cp.path.exists());
            files.extend(gone.filter_map(|cp| self.patterns.file(&cp.path)));
        }
        // What failed and is no longer named (a reload) is not tried again.
        self.failed
            .retain(|p| wanted.contains(p) || files.iter().any(|f| f.path == *p));
        for f in files {
            self.matched.insert(normal(&f.path));
            if self.by_path.contains_key(&normal(&f.path)) {
                continue;
            }
            // At the first start, `start_at` says where; a file without a checkpoint after a
            // restart, or found while running, is new: read from its start.
            let (start, cp) = match resume {
                Some(cps) if cps.is_empty() => (self.start_at, None),
                Some(cps) => (StartAt::Beginning, cps.get(&f.path)),
                None => (new_start, None),
            };
            let tailer = match Tailer::open(&f.path, start, cp) {
                Ok(t) => {
                    self.failed.remove(&f.path);
                    t
                }
                Err(e) => {
                    if self.failed.insert(f.path.clone()) {
                        log::warn!("{}: {e}", f.path.display());
                    }
                    continue;
                }
            };
            if tailer.started() == Started::CheckpointMismatch {
                log::warn!(
                    "{}: not the file of the checkpoint (rotated while stopped?): read from its start",
                    f.path.display()
                );
            }
            let vhost = f
                .vhost
                .as_deref()
                .map_or(NO_VHOST, |v| self.vhosts.intern(v.as_bytes()));
            self.by_path.insert(normal(&f.path), self.tailers.len());
            self.tailers.push(Watched {
                tailer,
                vhost,
                missing_since: None,
            });
            self.unsaved = true;
        }
    }

    /// Stops following files the globs no longer name (a reload changed them), and files gone
    /// for [`MISSING_FOR`] (their vhost was removed), once they are read to their end and out
    /// of any rotation grace period. A file that is only briefly missing (renamed by a
    /// rotation, its successor not created yet) is kept. A file named again later is new: it
    /// is read from its start.
    fn retire_unmatched(&mut self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        for (i, w) in self.tailers.iter_mut().enumerate() {
            let path = normal(w.tailer.path());
            if self.matched.contains(&path) {
                w.missing_since = None;
            } else if !self.patterns.names(&path)
                || now.duration_since(*w.missing_since.get_or_insert(now)) >= MISSING_FOR
            {
                gone.push(i);
            }
        }
        if gone.is_empty() {
            return;
        }
        for &i in &gone {
            self.poll(i);
        }
        let before = self.tailers.len();
        let mut unnamed = vec![false; before];
        gone.iter().for_each(|&i| unnamed[i] = true);
        let mut i = 0;
        self.tailers.retain(|w| {
            let keep = !unnamed[i] || w.tailer.next_deadline().is_some();
            if !keep {
                log::debug!(
                    "{}: no longer named by the globs, not followed",
                    w.tailer.path().display()
                );
            }
            i += 1;
            keep
        });
        if self.tailers.len() != before {
            self.by_path = (self.tailers.iter().enumerate())
                .map(|(i, w)| (normal(w.tailer.path()), i))
                .collect();
            self.unsaved = true;
        }
    }

    fn rescan_interval(&self) -> Duration {
        match self.failed.is_empty() {
            true => RESCAN_EVERY,
            false => RESCAN_FAILING,
        }
    }

    /// Reads what is new in file `i` into the shards.
    fn poll(&mut self, i: usize) {
        let Files {
            tailers,
            buf,
            ingest,
            router,
            newest,
            ..
        } = self;
        let Some(w) = tailers.get_mut(i) else {
            return;
        };
        let vhost = w.vhost;
        let r = w.tailer.poll_with(buf, &mut |chunk| {
            *newest = (*newest).max(ingest.chunk(chunk, vhost, router));
        });
        match r {
            Ok(st) if st.bytes > 0 || st.opened > 0 || st.rotated > 0 || st.truncated > 0 => {
                self.unsaved = true;
                if st.opened + st.rotated + st.truncated > 0 {
                    log::debug!(
                        "{}: opened {}, rotated {}, truncated {}",
                        w.tailer.path().display(),
                        st.opened,
                        st.rotated,
                        st.truncated
                    );
                }
                if st.bytes > 0 {
                    self.last_read = Some(Instant::now());
                    self.read_since_flush = true;
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!("{}: {e}", w.tailer.path().display()),
        }
    }

    /// Whether the low mark has yet to pass the newest log time read (strictly: the decider
    /// releases an offense once every shard is past its time).
    fn lifting(&self) -> bool {
        self.lifted <= self.newest
    }

    /// The low mark promised after a round of reads (see the module documentation).
    fn low_mark(&self, now_ms: i64) -> i64 {
        low_mark(self.newest, now_ms)
    }

    fn checkpoints(&self) -> Checkpoints {
        let mut cps = Checkpoints::new();
        for w in &self.tailers {
            cps.insert(w.tailer.checkpoint());
        }
        cps
    }

    /// Handles a batch of inotify events: the files to read, and whether to rescan.
    fn on_events(&mut self, events: &[inotify::Event], to_poll: &mut Vec<usize>) -> bool {
        let mut rescan = false;
        let mut other_write = false;
        for ev in events {
            if ev.mask & inotify::OVERFLOW != 0 {
                to_poll.extend(0..self.tailers.len());
                rescan = true;
                continue;
            }
            if ev.mask & inotify::GONE != 0 && ev.name.is_empty() {
                if let Some(dir) = self.dirs.remove(&ev.wd) {
                    self.watched.remove(&dir);
                }
                rescan = true;
                continue;
            }
            let Some(dir) = self.dirs.get(&ev.wd) else {
                continue;
            };
            let path = normal(&dir.join(ev.name()));
            match self.by_path.get(&path) {
                Some(&i) => to_poll.push(i),
                None if ev.mask & inotify::APPEARED != 0 => rescan = true,
                None => other_write |= ev.mask & inotify::MODIFY != 0,
            }
        }
        // A write to a file no tailer follows by its name may be a late write to a rotated
        // file (`access_log.1`) still in its grace period: read those now rather than at the
        // next rescan.
        if other_write {
            let retiring = self.tailers.iter().enumerate();
            to_poll.extend(retiring.filter_map(|(i, w)| w.tailer.next_deadline().map(|_| i)));
        }
        rescan
    }
}

/// The newest log time read, but never more than [`WALL_SLACK_MS`] behind the wall clock (idle
/// files do not hold the engine back) nor ahead of it (a line stamped in the future would
/// otherwise make every later line late).
fn low_mark(newest_ms: i64, now_ms: i64) -> i64 {
    newest_ms
        .min(now_ms.saturating_add(WALL_SLACK_MS))
        .max(now_ms.saturating_sub(WALL_SLACK_MS))
}

/// A path without `.` components, so that `access.log`, `./access.log` and the folder `.` joined
/// with the name inotify reports all name the same tailer.
fn normal(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
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
            let low = files.low_mark(now_ms);
            files.router.flush(low);
            files.lifted = low;
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
    files.router.flush(files.low_mark(wall_ms()));
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
            return Err(if e.kind() == io::ErrorKind::BrokenPipe {
                AppError::BrokenPipe
            } else {
                AppError::Runtime(format!("writing events: {e}"))
            });
        }
        Ok(None) => {}
    }
    match save_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// What a SIGHUP may change while the loop runs.
struct Live<'a, 'o> {
    config: &'a mut Config,
    rule_ids: &'a mut RuleIds,
    files: &'a mut Files,
    table: &'a mut BanTable,
    output: &'a mut Output<'o>,
}

impl Live<'_, '_> {
    /// Applies a config that loaded and compiled (see `reload`); returns whether the globs
    /// changed, `None` when it was refused (nothing changed). Rules keep their ids, buckets and bans by name; hits already read meet the new
    /// rules in their shard, so no line is counted twice or missed.
    fn apply(&mut self, r: Reloaded) -> Option<bool> {
        let Reloaded {
            config: new,
            compiled,
            patterns,
        } = r;
        let mut ids = self.rule_ids.clone();
        let Some(rule_ids) = ids.assign(&new.rules) else {
            log::error!("SIGHUP: too many rule names since start; restart to apply this config");
            return None;
        };
        // Sinks first: the one step that can fail (a sink that cannot be built), and then
        // nothing has changed.
        if new.sinks != self.config.sinks {
            let active: Vec<_> = self.table.active().cloned().collect();
            if let Err(e) = self.output.reconfigure(&compiled.sinks, &active) {
                log::error!("SIGHUP: {e}; keeping the running config");
                return None;
            }
        }
        let rules = Arc::new(compiled.rules.with_ids(rule_ids.clone()));
        let files = &mut *self.files;
        files.router.flush(files.low_mark(wall_ms()));
        if files.router.set_rules(rules.clone()) {
            log::warn!(
                "SIGHUP: a rule keys on a shorter prefix than any before, so addresses move \
                 between shards: every rate bucket starts empty (bans are kept)"
            );
        }
        let client_ip = compiled.proxies.client_ip();
        files
            .ingest
            .reconfigure(Arc::new(compiled.format), rules, client_ip);
        self.table.set_rules(&new.rules, &rule_ids);
        let allow = [&new.allow[..], compiled.proxies.ranges()].concat();
        for u in self.table.set_allowlist(Allowlist::new(allow), wall_ms()) {
            self.output.emit(&Event::Unban(u));
        }
        let globs = patterns.is_some();
        if let Some(p) = patterns {
            files.patterns = p;
        }
        let changed = reload::changes(self.config, &new, true);
        log::info!(
            "SIGHUP: config reloaded ({})",
            match changed.is_empty() {
                true => "no change".to_string(),
                false => changed.join(", "),
            }
        );
        *self.rule_ids = ids;
        *self.config = new;
        Some(globs)
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

/// Gives the sinks what they could not deliver before the last stop.
fn resend_pending(sinks: &mut crate::sink::Sinks, dir: &Path, vhosts: &Vhosts) {
    match crate::sink::pending::load(dir, vhosts) {
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
fn keep_pending(dir: &Option<PathBuf>, vhosts: &Vhosts, stopped: &Stopped) {
    for (name, events) in &stopped.pending {
        log::warn!("{name}: {} events not delivered", events.len());
    }
    if let Some(dir) = dir {
        let (pending, tables) = (&stopped.pending, &stopped.tables);
        if let Err(e) = crate::sink::pending::save(dir, vhosts, pending, tables) {
            log::error!("keeping undelivered events: {e}");
        }
    }
}

/// Keeps `pending.json` up to date with what the sinks have not delivered yet. Saved before the
/// bans: after a crash between the two writes, an event in `pending.json` is at worst given
/// again to a sink that had it (delivery is at least once), while the other order could leave
/// a ban in `bans.json`, never announced again, that a sink never got.
fn save_pending(output: &mut Output, dir: &Option<PathBuf>, vhosts: &Vhosts) {
    if let Some(dir) = dir {
        if let Err(e) = output.save_pending(dir, vhosts) {
            log::error!("keeping undelivered events: {e}");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_low_mark_follows_the_logs_within_a_second_of_the_clock() {
        let now = 1_800_000_000_000;
        assert_eq!(low_mark(i64::MIN, now), now - 1000, "nothing read yet");
        assert_eq!(low_mark(now - 3_600_000, now), now - 1000, "idle logs");
        assert_eq!(low_mark(now - 200, now), now - 200, "a busy log");
        assert_eq!(low_mark(now + 86_400_000, now), now + 1000, "a clock ahead");
    }

    #[test]
    fn dot_components_do_not_split_one_file_in_two() {
        assert_eq!(normal(Path::new("./access.log")), Path::new("access.log"));
        assert_eq!(
            normal(&Path::new(".").join("access.log")),
            normal(Path::new("access.log"))
        );
        assert_eq!(normal(Path::new("/var/./log/x")), Path::new("/var/log/x"));
    }
}
