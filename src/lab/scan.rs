//! One pass over an archive for `analyze` and `report`: every line parsed once, and from it the
//! per-file line quality, requests per second per vhost, and per rule each key's request times
//! with the vhosts, user agents and paths it sent.
//!
//! A line becomes a rule's hit exactly as replay's ingest decides it (same parser, future limit,
//! client address, trusted proxies, vhost and request matchers), so that the what-if grid built on
//! these hits is what replay would ban; the tests compare the two. The full record is read:
//! beside what the rules need, the user agent and the request target (for the top talkers).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use ahash::AHashMap;

use super::crawler;
use crate::addr::{Addr, Cidr};
use crate::engine::rule::CompiledRules;
use crate::engine::{Key, RuleSpec};
use crate::hit::{RuleMask, VhostId, NO_VHOST};
use crate::parse::{Format, TimeCache};
use crate::proxy::{Client, ClientIp};
use crate::source::paths::LogFile;
use crate::source::reader::{lines, Chunks, CHUNK};
use crate::source::stats::IngestStats;
use crate::vhost::{VhostCache, Vhosts};

/// Which log times count: `since <= t < until` (UTC ms); `None` = unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl Window {
    pub fn contains(&self, t: i64) -> bool {
        self.since_ms.is_none_or(|s| t >= s) && self.until_ms.is_none_or(|u| t < u)
    }

    pub fn is_bounded(&self) -> bool {
        self.since_ms.is_some() || self.until_ms.is_some()
    }
}

/// What one file held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileScan {
    pub path: PathBuf,
    pub lines: u64,
    /// Not lines of the format (too long included).
    pub malformed: u64,
    /// Well-formed, but no usable client address or a time more than a day ahead.
    pub unusable: u64,
    /// Well-formed lines outside the time window.
    pub outside: u64,
    /// Lines inside the window with a client: the requests counted in the charts.
    pub requests: u64,
}

impl FileScan {
    /// Share of the file's lines that could not be used at all (malformed or unusable).
    pub fn bad_share(&self) -> f64 {
        if self.lines == 0 {
            0.0
        } else {
            (self.malformed + self.unusable) as f64 / self.lines as f64
        }
    }
}

/// Counts of byte strings, capped at [`Tally::CAP`] distinct values (later new values are counted
/// in `other`): enough for a key's user agents and paths, bounded whatever it sends.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    entries: Vec<(Box<[u8]>, u64)>,
    /// The entry matched last: a key mostly repeats its user agent, so it is compared first.
    last: usize,
    pub other: u64,
}

impl Tally {
    pub const CAP: usize = 32;

    pub fn add(&mut self, v: &[u8]) {
        self.add_n(v, 1);
    }

    fn add_n(&mut self, v: &[u8], n: u64) {
        if let Some(e) = self.entries.get_mut(self.last) {
            if *e.0 == *v {
                e.1 += n;
                return;
            }
        }
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.0.len() == v.len() && *e.0 == *v)
        {
            self.entries[i].1 += n;
            self.last = i;
        } else if self.entries.len() < Tally::CAP {
            self.entries.push((v.into(), n));
            self.last = self.entries.len() - 1;
        } else {
            self.other += n;
        }
    }

    fn merge(&mut self, o: Tally) {
        for (v, n) in o.entries {
            self.add_n(&v, n);
        }
        self.other += o.other;
    }

    /// The `n` most frequent values, most first (ties by value), as text (invalid UTF-8
    /// replaced; escaping is the writer's job).
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<&(Box<[u8]>, u64)> = self.entries.iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter()
            .take(n)
            .map(|(s, c)| (String::from_utf8_lossy(s).into_owned(), *c))
            .collect()
    }
}

/// One key's hits under one rule while reading.
#[derive(Debug, Default)]
struct KeyAcc {
    /// (log time, vhost), in reading order.
    hits: Vec<(i64, VhostId)>,
    agents: Tally,
    paths: Tally,
}

/// One key's hits under one rule, sorted by time.
#[derive(Clone, Debug)]
pub struct KeyHits {
    pub key: Key,
    /// (log time, vhost), sorted.
    pub hits: Vec<(i64, VhostId)>,
    pub agents: Tally,
    pub paths: Tally,
    /// The well-known crawler one of its user agents names.
    pub crawler: Option<&'static str>,
}

impl KeyHits {
    /// The vhost this key sent most of its requests to.
    pub fn main_vhost(&self) -> VhostId {
        let mut counts: AHashMap<VhostId, u64> = AHashMap::new();
        for &(_, v) in &self.hits {
            *counts.entry(v).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map_or(NO_VHOST, |e| e.0)
    }
}

/// Requests per time bin per vhost; bins start at one second and widen (doubling) when the
/// table grows past [`Series::MAX_CELLS`], so a long archive of many vhosts stays bounded.
#[derive(Clone, Debug)]
pub struct Series {
    pub bin_s: i64,
    pub counts: AHashMap<(VhostId, i64), u64>,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            bin_s: 1,
            counts: AHashMap::new(),
        }
    }
}

impl Series {
    pub const MAX_CELLS: usize = 1 << 20;

    fn add(&mut self, vhost: VhostId, time_ms: i64, n: u64) {
        let bin = time_ms.div_euclid(1000).div_euclid(self.bin_s);
        *self.counts.entry((vhost, bin)).or_default() += n;
        if self.counts.len() > Series::MAX_CELLS {
            self.widen();
        }
    }

    fn widen(&mut self) {
        self.bin_s *= 2;
        let old = std::mem::take(&mut self.counts);
        for ((v, bin), n) in old {
            *self.counts.entry((v, bin.div_euclid(2))).or_default() += n;
        }
    }

    fn merge(&mut self, other: Series) {
        while self.bin_s < other.bin_s {
            self.widen();
        }
        let ratio = self.bin_s / other.bin_s.max(1);
        for ((v, bin), n) in other.counts {
            *self.counts.entry((v, bin.div_euclid(ratio))).or_default() += n;
        }
        while self.counts.len() > Series::MAX_CELLS {
            self.widen();
        }
    }
}

/// Everything one pass gathered.
pub struct Scan {
    pub files: Vec<FileScan>,
    /// Totals over the files, as replay counts them (the window's outside lines are `unmatched`).
    pub stats: IngestStats,
    pub vhosts: Vhosts,
    pub series: Series,
    /// Per rule (config order), its keys, most requests first (ties by key).
    pub rules: Vec<Vec<KeyHits>>,
    /// First and last log time of the requests in the window (0 when none).
    pub first_ms: i64,
    pub last_ms: i64,
    /// Lines older than their file's newest line by more than the config's lateness: replay
    /// counts them late, at their own time, which the grid's time-sorted buckets may not match.
    /// (A large file is read in ranges; a line is compared with the newest of its own range.)
    pub late: u64,
}

/// What the pass needs: the replay plan's parts.
pub struct ScanSpec<'a> {
    pub format: &'a Format,
    pub rules: &'a CompiledRules,
    pub specs: &'a [RuleSpec],
    pub client_ip: Option<Arc<ClientIp>>,
    pub files: &'a [LogFile],
    pub window: Window,
    pub lateness_ms: i64,
}

/// An unreadable file, named.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ScanError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// How far ahead of the clock a log time may be (as ingest allows).
const FUTURE_SLACK_MS: i64 = 24 * 3600 * 1000;

/// One reader's state (one per thread).
struct Reader<'a> {
    spec: &'a ScanSpec<'a>,
    times: TimeCache,
    vhosts: VhostCache,
    shared: Vhosts,
    vhost_masks: AHashMap<VhostId, RuleMask>,
    future_limit_ms: i64,
    stats: IngestStats,
    series: Series,
    keys: Vec<AHashMap<Key, KeyAcc>>,
    first_ms: i64,
    last_ms: i64,
    late: u64,
    /// Requests of one (vhost, second) not yet added to `series`: lines come in runs of one
    /// second, so most lines touch no map.
    pending: ((VhostId, i64), u64),
}

impl<'a> Reader<'a> {
    fn new(spec: &'a ScanSpec<'a>, vhosts: Vhosts) -> Reader<'a> {
        Reader {
            spec,
            times: TimeCache::default(),
            vhosts: VhostCache::new(vhosts.clone()),
            shared: vhosts,
            vhost_masks: AHashMap::new(),
            future_limit_ms: crate::clock::wall_ms().saturating_add(FUTURE_SLACK_MS),
            stats: IngestStats::default(),
            series: Series::default(),
            keys: (0..spec.specs.len()).map(|_| AHashMap::new()).collect(),
            first_ms: i64::MAX,
            last_ms: i64::MIN,
            late: 0,
            pending: ((NO_VHOST, 0), 0),
        }
    }

    fn flush_series(&mut self) {
        let ((v, sec), n) = self.pending;
        if n > 0 {
            self.series.add(v, sec * 1000, n);
        }
        self.pending.1 = 0;
    }

    /// Reads one piece of a file: all of it, or the byte range `range` (whole lines, see
    /// [`pieces`]).
    fn piece(&mut self, f: &LogFile, range: Option<(u64, u64)>) -> Result<FileScan, ScanError> {
        let err = |source| ScanError {
            path: f.path.clone(),
            source,
        };
        let file_vhost = f
            .vhost
            .as_deref()
            .map_or(NO_VHOST, |v| self.shared.intern(v.as_bytes()));
        let mut fs = FileScan {
            path: f.path.clone(),
            ..FileScan::default()
        };
        let mut chunks = match range {
            None => Chunks::open(&f.path, CHUNK, Arc::new(AtomicU64::new(0))).map_err(err)?,
            Some((start, end)) => {
                let mut file = File::open(&f.path).map_err(err)?;
                file.seek(SeekFrom::Start(start)).map_err(err)?;
                Chunks::from_reader(Box::new(file.take(end - start)), CHUNK)
            }
        };
        let mut newest = i64::MIN;
        while let Some(chunk) = chunks.next_chunk().map_err(err)? {
            self.stats.bytes += chunk.len() as u64;
            for line in lines(chunk) {
                self.line(line, file_vhost, &mut fs, &mut newest);
            }
        }
        self.flush_series();
        fs.malformed += chunks.oversized();
        fs.lines += chunks.oversized();
        self.stats.malformed.too_long += chunks.oversized();
        Ok(fs)
    }

    /// One line; mirrors `Ingest::line` for what becomes a hit.
    fn line(&mut self, line: &[u8], file_vhost: VhostId, fs: &mut FileScan, newest: &mut i64) {
        self.stats.lines += 1;
        fs.lines += 1;
        let rec = match self.spec.format.parse(line, &mut self.times) {
            Ok(rec) => rec,
            Err(kind) => {
                self.stats.malformed.count(kind);
                fs.malformed += 1;
                return;
            }
        };
        if rec.time_ms > self.future_limit_ms {
            self.stats.future += 1;
            fs.unusable += 1;
            return;
        }
        let Some(mut addr) = Addr::parse(rec.client) else {
            self.stats.no_client += 1;
            fs.unusable += 1;
            return;
        };
        if let Some(ip) = &self.spec.client_ip {
            match ip.resolve(addr, rec.real_client) {
                Client::Direct => {}
                Client::Proxied(real) => {
                    addr = real;
                    self.stats.via_proxy += 1;
                }
                Client::Unusable => self.stats.proxy_fallback += 1,
            }
        }
        let t = rec.time_ms;
        if t < newest.saturating_sub(self.spec.lateness_ms) {
            self.late += 1;
        }
        *newest = (*newest).max(t);
        if !self.spec.window.contains(t) {
            fs.outside += 1;
            self.stats.unmatched += 1;
            return;
        }
        fs.requests += 1;
        self.first_ms = self.first_ms.min(t);
        self.last_ms = self.last_ms.max(t);
        let vhost = if self.spec.format.has_vhost() {
            self.vhosts.id(rec.vhost)
        } else {
            file_vhost
        };
        let second = (vhost, t.div_euclid(1000));
        if self.pending.0 == second {
            self.pending.1 += 1;
        } else {
            self.flush_series();
            self.pending = (second, 1);
        }
        let mask = self.vhost_mask(vhost) & self.spec.rules.request_mask(&rec);
        if mask == 0 {
            self.stats.unmatched += 1;
            return;
        }
        self.stats.hits += 1;
        let path = match memchr::memchr(b'?', rec.target) {
            Some(q) => &rec.target[..q],
            None => rec.target,
        };
        let mut bits = mask;
        while bits != 0 {
            let r = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let Some(spec) = self.spec.specs.get(r) else {
                continue;
            };
            let prefix = if addr.is_v4() {
                spec.ipv4_prefix
            } else {
                spec.ipv6_prefix
            };
            let key = Key {
                net: Cidr::new(addr, prefix),
                vhost: if spec.key_by_vhost { vhost } else { NO_VHOST },
            };
            let acc = self.keys[r].entry(key).or_insert_with(|| KeyAcc {
                hits: Vec::with_capacity(16),
                ..KeyAcc::default()
            });
            acc.hits.push((t, vhost));
            acc.agents.add(rec.user_agent);
            acc.paths.add(path);
        }
    }

    fn vhost_mask(&mut self, vhost: VhostId) -> RuleMask {
        if let Some(m) = self.vhost_masks.get(&vhost) {
            return *m;
        }
        let name = if vhost == NO_VHOST {
            Default::default()
        } else {
            self.shared.name(vhost).unwrap_or_default()
        };
        let m = self.spec.rules.vhost_mask(name.as_bytes());
        self.vhost_masks.insert(vhost, m);
        m
    }
}

/// A file (index) and, for a large plain file, the byte range of whole lines to read.
type Piece = (usize, Option<(u64, u64)>);

/// Plain files at least this large are read in several byte ranges at once.
const SPLIT_FROM: u64 = 16 << 20;

/// The work: (file index, byte range) pieces. A large plain file is cut into one range per CPU,
/// each cut moved to just after a newline so that every range holds whole lines; a compressed
/// file is read whole (it can only be decompressed in order).
fn pieces(files: &[LogFile], cpus: usize, split_from: u64) -> Result<Vec<Piece>, ScanError> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let err = |source| ScanError {
            path: f.path.clone(),
            source,
        };
        let len = std::fs::metadata(&f.path).map_err(err)?.len();
        if cpus < 2 || len < split_from || is_gzip(&f.path).map_err(err)? {
            out.push((i, None));
            continue;
        }
        let file = File::open(&f.path).map_err(err)?;
        let mut cuts = vec![0];
        for k in 1..cpus as u64 {
            let cut = after_newline(&file, len * k / cpus as u64, len).map_err(err)?;
            if cut > *cuts.last().unwrap_or(&0) && cut < len {
                cuts.push(cut);
            }
        }
        cuts.push(len);
        for w in cuts.windows(2) {
            out.push((i, Some((w[0], w[1]))));
        }
    }
    Ok(out)
}

fn is_gzip(path: &std::path::Path) -> std::io::Result<bool> {
    let mut magic = [0u8; 2];
    let n = File::open(path)?.read(&mut magic)?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

/// The offset just after the first newline at or after `from - 1` (so `from` itself when a line
/// starts there), or `len`.
fn after_newline(file: &File, from: u64, len: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut pos = from.saturating_sub(1);
    let mut buf = vec![0u8; 64 * 1024];
    while pos < len {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(pos + i as u64 + 1);
        }
        pos += n as u64;
    }
    Ok(len)
}

/// A reader thread's state at its end, with the files it read (by index).
type ReaderDone<'a> = (Reader<'a>, Vec<(usize, FileScan)>);

/// Reads every file (several at once when there are several) and gathers the [`Scan`].
pub fn scan(spec: &ScanSpec<'_>) -> Result<Scan, ScanError> {
    let vhosts = Vhosts::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let work = pieces(spec.files, cpus, SPLIT_FROM)?;
    let threads = cpus.min(work.len()).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<ReaderDone<'_>, ScanError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let vhosts = vhosts.clone();
                let (next, work) = (&next, &work);
                s.spawn(move || {
                    let mut r = Reader::new(spec, vhosts);
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(file, range)) = work.get(i) else {
                            break;
                        };
                        done.push((file, r.piece(&spec.files[file], range)?));
                    }
                    Ok((r, done))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(_) => Err(ScanError {
                    path: PathBuf::from("(reader thread)"),
                    source: std::io::Error::other("a reader thread panicked"),
                }),
            })
            .collect()
    });
    let mut files: Vec<Option<FileScan>> = vec![None; spec.files.len()];
    let mut stats = IngestStats::default();
    let mut series = Series::default();
    let mut keys: Vec<AHashMap<Key, KeyAcc>> =
        (0..spec.specs.len()).map(|_| AHashMap::new()).collect();
    let (mut first_ms, mut last_ms, mut late) = (i64::MAX, i64::MIN, 0);
    for res in results {
        let (r, done) = res?;
        for (i, f) in done {
            match &mut files[i] {
                Some(all) => {
                    all.lines += f.lines;
                    all.malformed += f.malformed;
                    all.unusable += f.unusable;
                    all.outside += f.outside;
                    all.requests += f.requests;
                }
                slot => *slot = Some(f),
            }
        }
        stats.add(&r.stats);
        series.merge(r.series);
        first_ms = first_ms.min(r.first_ms);
        last_ms = last_ms.max(r.last_ms);
        late += r.late;
        for (all, part) in keys.iter_mut().zip(r.keys) {
            for (k, acc) in part {
                match all.entry(k) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(acc);
                    }
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        let e = o.get_mut();
                        e.hits.extend(acc.hits);
                        e.agents.merge(acc.agents);
                        e.paths.merge(acc.paths);
                    }
                }
            }
        }
    }
    let rules = keys.into_iter().map(finish_keys).collect();
    if first_ms > last_ms {
        (first_ms, last_ms) = (0, 0);
    }
    Ok(Scan {
        files: files.into_iter().flatten().collect(),
        stats,
        vhosts,
        series,
        rules,
        first_ms,
        last_ms,
        late,
    })
}

fn finish_keys(keys: AHashMap<Key, KeyAcc>) -> Vec<KeyHits> {
    // An archive has few distinct user agents and many keys sending each: each is looked at once.
    let mut named: AHashMap<Box<[u8]>, Option<&'static str>> = AHashMap::new();
    let mut out: Vec<KeyHits> = keys
        .into_iter()
        .map(|(key, mut acc)| {
            acc.hits.sort_unstable();
            let crawler = acc.agents.entries.iter().find_map(|(ua, _)| {
                if let Some(known) = named.get(ua) {
                    return *known;
                }
                let found = crawler::named_in(ua);
                named.insert(ua.clone(), found);
                found
            });
            KeyHits {
                key,
                hits: acc.hits,
                agents: acc.agents,
                paths: acc.paths,
                crawler,
            }
        })
        .collect();
    out.sort_by(|a, b| b.hits.len().cmp(&a.hits.len()).then(a.key.cmp(&b.key)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranges of a split file hold every line once, each cut just after a newline.
    #[test]
    fn ranges_cut_after_newlines_and_cover_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut text = String::new();
        for i in 0..500 {
            text.push_str(&"x".repeat(i % 37));
            text.push('\n');
        }
        text.push_str("last line without newline");
        std::fs::write(&path, &text).unwrap();
        let files = [LogFile {
            path: path.clone(),
            vhost: None,
        }];
        for cpus in [2, 3, 7] {
            let work = pieces(&files, cpus, 1).unwrap();
            assert_eq!(work.len(), cpus);
            let mut joined = String::new();
            let mut lines_seen = 0;
            for (_, range) in &work {
                let (a, b) = range.unwrap();
                let part = &text[a as usize..b as usize];
                assert!(a == 0 || text.as_bytes()[a as usize - 1] == b'\n');
                lines_seen += lines(part.as_bytes()).count();
                joined.push_str(part);
            }
            assert_eq!(joined, text);
            assert_eq!(lines_seen, 501);
        }
        assert_eq!(pieces(&files, 2, u64::MAX).unwrap(), [(0, None)]);
    }
}
