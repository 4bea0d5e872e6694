//! The files `watch` follows and the reading side of its pipeline: the folders inotify
//! watches, a [`Tailer`] per log the globs name (found by rescans and inotify events, dropped
//! when no longer named), the parser feeding the shards' router, and what each file gave for
//! the marks sent to the shards after each round of reads (see `marks`).

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use super::inotify::{self, Inotify};
use super::marks::{self, FileMark};
use crate::source::discover::Patterns;
use std::sync::Arc;

use crate::config::StartAt;
use crate::control::FileHealth;
use crate::engine::router::Router;
use crate::engine::rule::CompiledRules;
use crate::hit::{VhostId, NO_VHOST};
use crate::parse::Format;
use crate::proxy::ClientIp;
use crate::source::checkpoint::Checkpoints;
use crate::source::ingest::Ingest;
use crate::source::stats::IngestStats;
use crate::source::tail::{Started, TailBuf, Tailer};
use crate::source::unusable;
use crate::vhost::Vhosts;

/// The fallback for what inotify cannot report (a folder or file that could not be watched or
/// opened, a filesystem without inotify): globs evaluated again and every file polled. Rarely
/// while every folder is watched (for 2,000 files a rescan is ~12,000 `stat`s, most of the idle
/// CPU at 10 s), often while one is not.
const RESCAN_EVERY: Duration = Duration::from_secs(60);
const RESCAN_FAILING: Duration = Duration::from_secs(10);
/// How long a followed file may be missing before it is no longer followed.
const MISSING_FOR: Duration = Duration::from_secs(120);
struct Watched {
    tailer: Tailer,
    vhost: VhostId,
    /// The newest log time it gave, and when.
    mark: FileMark,
    /// Whether it was reported as far behind the others (see `marks::BEHIND_WARN_MS`).
    behind_reported: bool,
    /// Since when the globs have not found the file (rescans only).
    missing_since: Option<Instant>,
    /// Its lines, and whether too many could not be used (see `unusable`).
    judge: unusable::FileJudge,
}

/// The files and folders followed, and the reading side of the pipeline.
pub(super) struct Files {
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
    /// How far a file's own lines may be out of order (`[input] lateness`).
    lateness_ms: i64,
    /// The last low mark sent to the shards.
    lifted: i64,
    /// Bytes read, or files opened, rotated or dropped, since the last save.
    unsaved: bool,
    /// When lines were last read.
    last_read: Option<Instant>,
    /// Lines were read since the marks were last sent.
    read_since_flush: bool,
}

/// How far reading is behind the files; see [`Files::read_lag`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadLag {
    pub total_bytes: u64,
    pub worst_bytes: u64,
    /// The oldest newest-line among files with unread bytes, milliseconds before now.
    pub worst_ms: u64,
}

/// How to start [`Files`].
pub(super) struct Reading {
    pub patterns: Patterns,
    pub start_at: StartAt,
    pub inotify: Inotify,
    pub ingest: Ingest,
    pub router: Router,
    pub vhosts: Vhosts,
    pub lateness_ms: i64,
}

impl Files {
    pub(super) fn new(r: Reading) -> Files {
        Files {
            patterns: r.patterns,
            start_at: r.start_at,
            tailers: Vec::new(),
            by_path: HashMap::new(),
            matched: HashSet::new(),
            dirs: HashMap::new(),
            watched: HashSet::new(),
            failed: HashSet::new(),
            inotify: r.inotify,
            buf: TailBuf::new(),
            ingest: r.ingest,
            router: r.router,
            vhosts: r.vhosts,
            newest: i64::MIN,
            lateness_ms: r.lateness_ms,
            lifted: i64::MIN,
            unsaved: true,
            last_read: None,
            read_since_flush: false,
        }
    }

    /// Files followed (a literal path with no file there yet included), and folders watched.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.tailers.len(), self.watched.len())
    }

    /// Files open now: what is really being read.
    pub(super) fn open_files(&self) -> usize {
        self.tailers.iter().filter(|w| w.tailer.is_open()).count()
    }

    /// How far reading is behind the files (for `/metrics`): unread bytes per open file (its
    /// size now less what was read of it, when the path still names the file being read), and
    /// how old the newest line read of a file with unread bytes is.
    pub(super) fn read_lag(&self, now_ms: i64) -> ReadLag {
        let mut lag = ReadLag::default();
        for w in self.tailers.iter().filter(|w| w.tailer.is_open()) {
            let Some(behind) = unread(&w.tailer) else {
                continue;
            };
            lag.total_bytes += behind;
            lag.worst_bytes = lag.worst_bytes.max(behind);
            if behind > 0 && w.mark.newest_ms > i64::MIN {
                let age = u64::try_from(now_ms.saturating_sub(w.mark.newest_ms)).unwrap_or(0);
                lag.worst_ms = lag.worst_ms.max(age);
            }
        }
        lag
    }

    /// Says which arguments name no file now (followed once one appears).
    pub(super) fn report_unmatched(&self) {
        for arg in self.patterns.unmatched() {
            log::warn!("{arg}: no file there yet; followed once one appears");
        }
    }

    pub(super) fn ingest_stats(&self) -> &IngestStats {
        &self.ingest.stats
    }

    /// Requests per vhost so far (counted from start: see `Ingest::counting_vhosts`).
    pub(super) fn vhost_counts(&self) -> Option<&crate::source::vhost_counts::VhostCounts> {
        self.ingest.by_vhost.as_ref()
    }

    /// Counts the vhosts of `addrs` from now on (`top`'s busiest keys), or nothing (none).
    pub(super) fn watch_key_vhosts(&mut self, addrs: Option<&[crate::addr::Addr]>) {
        match addrs {
            Some(a) => (self.ingest.key_vhosts.get_or_insert_with(Default::default)).renew(a),
            None => self.ingest.key_vhosts = None,
        }
    }

    pub(super) fn key_vhosts(&self) -> Option<&crate::source::key_vhosts::KeyVhosts> {
        self.ingest.key_vhosts.as_ref()
    }

    /// The router, to ask the shards for their busiest keys (`top`).
    pub(super) fn router(&self) -> &crate::engine::router::Router {
        &self.router
    }

    /// Each followed file's health, in the order they were found (`status --files`).
    pub(super) fn health(&self, now_ms: i64) -> Vec<FileHealth> {
        (self.tailers.iter())
            .map(|w| {
                let t = &w.judge.total;
                let newest = w.mark.newest_ms;
                FileHealth {
                    path: w.tailer.path().display().to_string(),
                    open: w.tailer.is_open(),
                    lines: t.lines,
                    malformed: t.malformed.total(),
                    not_an_address: t.no_client,
                    newest_line_age_seconds: (newest > i64::MIN)
                        .then(|| u64::try_from(now_ms.saturating_sub(newest) / 1000).unwrap_or(0)),
                    unread_bytes: unread(&w.tailer),
                    warning: w.judge.last_warning.clone(),
                }
            })
            .collect()
    }

    /// Whether something was read, or files came or went, since [`Files::saved`].
    pub(super) fn unsaved(&self) -> bool {
        self.unsaved
    }

    pub(super) fn saved(&mut self) {
        self.unsaved = false;
    }

    /// Whether the marks should be sent now: after reads, or on the lift timer while the low
    /// mark has yet to pass the newest log time read (strictly: the decider releases an offense
    /// once every shard is past its time). Lifting it further decides nothing, and idle logs
    /// should cost no thread wake-ups.
    pub(super) fn marks_due(&self, lift_timer: bool) -> bool {
        self.read_since_flush || (lift_timer && self.lifting())
    }

    /// Whether lines were read within `within` of `now`.
    pub(super) fn active(&self, now: Instant, within: Duration) -> bool {
        self.last_read
            .is_some_and(|t| now.duration_since(t) < within)
    }

    /// The soonest deadline of a tailer (a rotated file's grace period).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.tailers
            .iter()
            .filter_map(|w| w.tailer.next_deadline())
            .min()
    }

    /// Reads every file.
    pub(super) fn poll_all(&mut self) {
        for i in 0..self.tailers.len() {
            self.poll(i);
        }
    }

    /// Reads the files `to_poll` names, and those whose deadline has come.
    pub(super) fn poll_due(&mut self, to_poll: &mut Vec<usize>, now: Instant) {
        for (i, w) in self.tailers.iter().enumerate() {
            if w.tailer.next_deadline().is_some_and(|d| d <= now) {
                to_poll.push(i);
            }
        }
        to_poll.sort_unstable();
        to_poll.dedup();
        for &i in to_poll.iter() {
            self.poll(i);
        }
        to_poll.clear();
    }

    /// Takes a reload's rules, format and proxies: hits batched for the old rules go first.
    /// Returns whether the shards had to forget their buckets (see `Router::set_rules`).
    pub(super) fn set_rules(
        &mut self,
        rules: Arc<CompiledRules>,
        format: Arc<Format>,
        client_ip: Option<Arc<ClientIp>>,
    ) -> bool {
        self.flush_marks(crate::clock::wall_ms());
        let reset = self.router.set_rules(rules.clone());
        self.ingest.reconfigure(format, rules, client_ip);
        reset
    }

    /// Takes a reload's `[input] lateness` (how far behind a file's newest line state is kept).
    /// Has the router copy aside the hits of the rules in `mask` (fleet-wide counting).
    pub(super) fn tap(&mut self, mask: crate::hit::RuleMask) {
        self.router.tap(mask);
    }

    /// The hits copied aside since the last call.
    pub(super) fn take_tapped(&mut self) -> Vec<crate::hit::Hit> {
        self.router.take_tapped()
    }

    pub(super) fn set_lateness(&mut self, lateness_ms: i64) {
        self.lateness_ms = lateness_ms;
    }

    pub(super) fn set_patterns(&mut self, patterns: Patterns) {
        self.patterns = patterns;
    }

    /// Where a file found while running starts: one newly named by a reload was there before,
    /// so it starts where a file present at the first start does; otherwise it is new.
    pub(super) fn start_for(&self, reloaded: bool) -> StartAt {
        match reloaded {
            true => self.start_at,
            false => StartAt::Beginning,
        }
    }

    /// Ends reading: the shards get everything read, and are told this producer is done.
    /// Returns what was read.
    pub(super) fn finish(self) -> IngestStats {
        self.router.finish();
        self.ingest.stats
    }
    /// Watches every folder the patterns walk through, then opens the files they name that are
    /// not followed yet. Folders first, and again until no new one appears: a folder or file
    /// created meanwhile is then either seen by the glob or reported by inotify. Without
    /// checkpoints (`resume`), a file not followed yet starts at `new_start`.
    pub(super) fn rescan(&mut self, resume: Option<&Checkpoints>, new_start: StartAt) {
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
                mark: FileMark::NEW,
                behind_reported: false,
                missing_since: None,
                judge: unusable::FileJudge::default(),
            });
            self.unsaved = true;
        }
    }

    /// Stops following files the globs no longer name (a reload changed them), and files gone
    /// for [`MISSING_FOR`] (their vhost was removed), once they are read to their end and out
    /// of any rotation grace period. A file that is only briefly missing (renamed by a
    /// rotation, its successor not created yet) is kept. A file named again later is new: it
    /// is read from its start.
    pub(super) fn retire_unmatched(&mut self) {
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

    pub(super) fn rescan_interval(&self) -> Duration {
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
        let mut got = i64::MIN;
        let before = ingest.stats;
        // The file's own first unusable lines: its warning shows its samples.
        std::mem::swap(&mut ingest.samples, &mut w.judge.samples);
        let r = w.tailer.poll_with(buf, &mut |chunk| {
            got = got.max(ingest.chunk(chunk, vhost, router));
        });
        std::mem::swap(&mut ingest.samples, &mut w.judge.samples);
        let now_ms = crate::clock::wall_ms();
        if ingest.stats.lines != before.lines {
            let name = || w.tailer.path().display().to_string();
            if let Some(warning) = w.judge.read(&before, &ingest.stats, name, now_ms) {
                log::warn!("{warning}");
            }
        }
        *newest = (*newest).max(got);
        w.mark.read(got, now_ms);
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

    /// Whether the low mark has yet to pass the newest log time read.
    pub(super) fn lifting(&self) -> bool {
        self.lifted <= self.newest
    }

    /// Sends the shards what they may process and forget after a round of reads (see
    /// `marks`), with the hits batched so far.
    pub(super) fn flush_marks(&mut self, now_ms: i64) {
        let low = marks::low_mark(self.newest, now_ms);
        let files = self.tailers.iter().map(|w| w.mark);
        let settled = marks::settled_mark(files, low, self.lateness_ms, now_ms);
        for w in &mut self.tailers {
            if !w.behind_reported && w.mark.far_behind(low, now_ms) {
                w.behind_reported = true;
                log::warn!(
                    "{}: being written with lines {} s older than the newest of the others (a \
                     clock off, or old lines appended): counted at their own times, and every \
                     key's state is kept that long for them",
                    w.tailer.path().display(),
                    (low - w.mark.newest_ms) / 1000
                );
            }
        }
        self.router.settle(settled);
        self.router.flush(low);
        self.lifted = low;
        self.read_since_flush = false;
    }

    pub(super) fn checkpoints(&self) -> Checkpoints {
        let mut cps = Checkpoints::new();
        for w in &self.tailers {
            cps.insert(w.tailer.checkpoint());
        }
        cps
    }

    /// Reads the inotify events waiting, and handles them: the files to read, and whether to
    /// rescan.
    pub(super) fn on_inotify(
        &mut self,
        events: &mut Vec<inotify::Event>,
        to_poll: &mut Vec<usize>,
    ) -> bool {
        events.clear();
        if let Err(e) = self.inotify.read_events(events) {
            log::error!("inotify: {e}");
        }
        self.on_events(events, to_poll)
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

/// The bytes of an open file not read yet: its size now less what was read of it, when its
/// path still names the file being read.
fn unread(tailer: &Tailer) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    if !tailer.is_open() {
        return None;
    }
    let cp = tailer.checkpoint();
    let meta = std::fs::metadata(&cp.path).ok()?;
    ((meta.dev(), meta.ino()) == (cp.dev, cp.inode)).then(|| meta.len().saturating_sub(cp.offset))
}

/// A path without `.` components, so that `access.log`, `./access.log` and the folder `.` joined
/// with the name inotify reports all name the same tailer.
fn normal(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
