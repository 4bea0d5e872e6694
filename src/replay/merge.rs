//! Reads many log files as one stream in log-time order, parsed by several producer threads.
//!
//! Work is handed out in chunks. A plain file is cut into byte ranges that any producer can read
//! (mapped when big, see [`Mapped`]; with `pread` otherwise) and parse on its own (each range
//! owns the lines that *start* in it), so even one big file keeps every producer busy. A compressed file is decompressed in order, one chunk at a
//! time, by whichever producer holds it, and parsed after it has been handed back.
//!
//! The file whose finished lines are oldest is always read next, so every file advances through
//! log time together. Each producer tells the shards a low mark: the minimum over unfinished
//! files of the newest time of their chunks parsed *in order* (a chunk that finishes before an
//! earlier one of its file does not count yet). Nothing older than that mark can still arrive, but
//! for the disorder within one file that `lateness` allows; the shards order hits below it.
//!
//! **Memory.** The shards hold every hit newer than the low mark. Because the oldest file is read
//! next, a file is never ahead of the mark by more than its last chunk (and the chunks in flight),
//! so what waits in the shards is about the sum over files of one chunk each: a busy file
//! interleaved with quiet ones is itself the oldest most of the time and flows straight through.
//! What that sum must not be is "everything": 2,000 small vhost logs that each span the whole
//! period, read in chunks of up to 1 MiB, are each read whole before the mark can leave the
//! period's start (≈140 MB RSS for 2M lines, against ≈20 MB for the same lines in one file).
//! So a plain file's chunk is its share of [`READ_AHEAD`] by size (at least [`MIN_RANGE`], at most
//! [`CHUNK`]): files of similar time spans then advance in steps of similar log time, and what
//! the shards hold stays near `READ_AHEAD` of log lines whatever the number of files (beyond
//! 4,096 files, `MIN_RANGE` each). One big file still gets whole 1 MiB chunks. A file cut smaller
//! than that is read one range at a time (producers racing each other through one small file
//! would run it ahead of the others); there are many files to keep the producers busy. Small
//! chunks cost reads and channel messages, so a range is read with only a little slack past its
//! end, and a producer sends its low mark after every few thousand hits rather than after every
//! chunk (each message makes the shards sort what they hold). No bound here ever makes anyone
//! wait for anything but a chunk being parsed: the oldest file is always readable.
//! (Cutting chunks at a log-time horizon was the other candidate; the size bound holds whatever
//! the files' time spans, without parsing resumed in the middle of a chunk. Figures: docs/benchmarks.md,
//! "Many small files".)
//! A compressed file is sized by the length its gzip trailer gives. Each open gzip stream has a
//! decoder and buffers of its own (~170 KB at least), which costs more than the hits of a small
//! archive (~a fifth of its bytes): an archive of up to [`WHOLE_GZIP`] is read in one chunk, a
//! larger one in its share of the read-ahead, as a plain file.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crossbeam_channel::Sender;

use crate::engine::router::Router;
use crate::engine::rule::CompiledRules;
use crate::engine::ShardMsg;
use crate::hit::{VhostId, NO_VHOST};
use crate::parse::{Format, MAX_LINE};
use crate::proxy::ClientIp;
use crate::source::ingest::Ingest;
use crate::source::mapped::Mapped;
use crate::source::paths::LogFile;
use crate::source::reader::{Chunks, CHUNK};
use crate::source::stats::IngestStats;
use crate::source::unusable::Samples;
use crate::vhost::Vhosts;

/// An error reading one of the files; names it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Counters of the reading itself (lines are counted by [`Ingest`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub files: u64,
    /// Lines too long to be read whole, dropped while reading (counted as malformed).
    pub oversized: u64,
}

/// What the producers need besides the files.
pub struct Pipeline<'a> {
    pub format: Arc<Format>,
    pub rules: Arc<CompiledRules>,
    pub vhosts: &'a Vhosts,
    /// One sender per shard.
    pub senders: Vec<Sender<ShardMsg>>,
    /// Producer threads; the shards must expect this many.
    pub producers: usize,
    /// Bytes read from disk so far (compressed bytes for gzip), for the progress display.
    pub progress: Arc<AtomicU64>,
    /// Real clients behind trusted proxies (`None`: the connecting address is the client).
    pub client_ip: Option<Arc<ClientIp>>,
    /// Bytes of plain-file lines read ahead of the low mark over all files: [`READ_AHEAD`]
    /// (tests use small ones).
    pub read_ahead: u64,
}

enum Reader {
    /// Not opened yet: thousands of files are opened one by one as the merge reaches them.
    Closed,
    /// Byte ranges read at an offset, by any producer.
    Plain {
        file: Arc<File>,
        path: Arc<Path>,
        len: u64,
        next: u64,
    },
    /// Read in order by one producer at a time; `None` while a producer holds it.
    Stream(Option<Box<Chunks>>),
}

struct Source {
    path: PathBuf,
    vhost: VhostId,
    reader: Reader,
    /// Bytes per range of a plain file (see [`range_size`]).
    range: u64,
    /// Read buffer of a compressed file (see [`stream_capacity`]).
    stream_chunk: usize,
    /// Ranges are handed out one at a time (the next once this one is parsed): a file cut into
    /// ranges below [`CHUNK`] is one of many, and producers racing through one small file would
    /// run it ahead of the others (whose hits then wait for it in the shards).
    one_at_a_time: bool,
    /// No chunk left to hand out.
    exhausted: bool,
    next_seq: u64,
    /// Chunks `0..done_seq` are parsed; `early` holds the newest time of those parsed ahead.
    done_seq: u64,
    early: BTreeMap<u64, i64>,
    /// Newest log time of the chunks parsed in order.
    newest: i64,
}

impl Source {
    fn finished(&self) -> bool {
        self.exhausted && self.done_seq == self.next_seq
    }
}

struct Schedule {
    sources: Vec<Source>,
    /// Sources with chunks to hand out, by (newest time when queued, index).
    ready: BinaryHeap<Reverse<(i64, usize)>>,
    /// Sources that are out of `ready` while a producer reads them (streams, and plain files
    /// read one range at a time).
    held: usize,
    error: Option<ReadError>,
    oversized: u64,
    progress: Arc<AtomicU64>,
}

/// One chunk of work.
enum Task {
    Range {
        src: usize,
        vhost: VhostId,
        seq: u64,
        file: Arc<File>,
        path: Arc<Path>,
        off: u64,
        len: u64,
    },
    Stream {
        src: usize,
        seq: u64,
        chunks: Box<Chunks>,
    },
}

struct Shared {
    schedule: Mutex<Schedule>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Schedule> {
        // A producer that panicked left consistent bookkeeping behind (updates are single
        // assignments); carry on rather than poison every other producer.
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Bytes of log lines, over all files, that may be read ahead of the low mark (see the module
/// docs): about 140k lines, whose hits take some 7 MB in the shards.
pub const READ_AHEAD: u64 = 32 << 20;

/// The smallest range of a plain file (unless the whole read-ahead is smaller): below this, reads
/// and bookkeeping cost more than parsing.
pub const MIN_RANGE: u64 = 8 << 10;

/// Hits a producer parses between two low marks it sends (unless its batches are sent full):
/// one batch's worth with [`READ_AHEAD`], so ~32 marks per read-ahead of ~256-byte lines; as
/// often as that with less read-ahead (tests), down to every chunk.
fn flush_every(read_ahead: u64) -> u64 {
    (read_ahead >> 13).clamp(1, crate::engine::router::BATCH as u64)
}

/// Bytes past a range's end read with it, for the range's last line; more only if it needs it.
const TAIL: usize = 4 << 10;

/// The range size of a plain file of `len` bytes among files of `total` bytes: its share of
/// `read_ahead`, so that files spanning the same period move through it in similar steps.
fn range_size(len: u64, total: u64, read_ahead: u64) -> u64 {
    let share = u128::from(len) * u128::from(read_ahead) / u128::from(total.max(1));
    u64::try_from(share)
        .unwrap_or(u64::MAX)
        .clamp(MIN_RANGE.min(read_ahead).max(1), CHUNK as u64)
}

/// Log bytes of a gzip file up to which it is read in one chunk (see the module docs).
pub const WHOLE_GZIP: u64 = 512 << 10;

/// The read buffer of a compressed file of `size` log bytes among files of `total`: the whole
/// file when small, else its share of `read_ahead`; never less than the longest line worth
/// parsing, never more than [`CHUNK`].
fn stream_capacity(size: u64, total: u64, read_ahead: u64) -> usize {
    let cap = if size <= WHOLE_GZIP {
        size.saturating_add(1)
    } else {
        range_size(size, total, read_ahead)
    };
    usize::try_from(cap)
        .unwrap_or(usize::MAX)
        .clamp(MAX_LINE + 1, CHUNK)
}

/// A file's size in log bytes: its length, or for gzip the larger of that and the size its
/// trailer gives (of its last member, modulo 4 GiB: an estimate). 0 when it cannot be read; the
/// merge reports that when it reaches the file.
fn log_size(path: &std::path::Path) -> u64 {
    // Only regular files are opened here (opening a FIFO would wait for a writer).
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    let len = meta.len();
    if !meta.is_file() {
        return len;
    }
    let Ok(file) = File::open(path) else {
        return len;
    };
    let mut magic = [0u8; 2];
    if len >= 18 && file.read_at(&mut magic, 0).ok() == Some(2) && magic == GZIP_MAGIC {
        let mut trailer = [0u8; 4];
        if file.read_at(&mut trailer, len - 4).ok() == Some(4) {
            return len.max(u64::from(u32::from_le_bytes(trailer)));
        }
    }
    len
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What the producers read: counts, and the first unusable lines (see `unusable`).
#[derive(Debug, Default)]
pub struct Read {
    pub merge: MergeStats,
    pub ingest: IngestStats,
    pub samples: Samples,
}

/// Replays `files` through `p.producers` producer threads into the shards, then tells every
/// shard that each producer is done (also after an error, so the shards stop).
pub fn replay_files(files: &[LogFile], p: Pipeline<'_>) -> Result<Read, ReadError> {
    let sizes: Vec<u64> = files.iter().map(|f| log_size(&f.path)).collect();
    let total: u64 = sizes.iter().sum();
    let sources: Vec<Source> = files
        .iter()
        .zip(&sizes)
        .map(|(f, &len)| Source {
            path: f.path.clone(),
            vhost: f
                .vhost
                .as_deref()
                .map_or(NO_VHOST, |v| p.vhosts.intern(v.as_bytes())),
            reader: Reader::Closed,
            range: range_size(len, total, p.read_ahead),
            stream_chunk: stream_capacity(len, total, p.read_ahead),
            one_at_a_time: range_size(len, total, p.read_ahead) < CHUNK as u64,
            exhausted: false,
            next_seq: 0,
            done_seq: 0,
            early: BTreeMap::new(),
            newest: i64::MIN,
        })
        .collect();
    let ready = (0..sources.len()).map(|i| Reverse((i64::MIN, i))).collect();
    let shared = Shared {
        schedule: Mutex::new(Schedule {
            sources,
            ready,
            held: 0,
            error: None,
            oversized: 0,
            progress: p.progress.clone(),
        }),
        wake: Condvar::new(),
    };
    let producers = p.producers.max(1);
    let route = p.rules.route_prefixes();
    let flush = flush_every(p.read_ahead);
    let mut ingest = IngestStats::default();
    let mut samples = Samples::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..producers)
            .map(|id| {
                let router = Router::new(p.senders.clone(), id as u32, route);
                let mut worker = Ingest::new(p.format.clone(), p.rules.clone(), p.vhosts.clone())
                    .with_client_ip(p.client_ip.clone());
                let (shared, progress) = (&shared, &p.progress);
                std::thread::Builder::new()
                    .name(format!("producer-{id}"))
                    .spawn_scoped(s, move || {
                        produce(shared, &mut worker, router, progress, flush);
                        (worker.stats, worker.samples)
                    })
            })
            .collect();
        for h in handles {
            match h.map(|h| h.join()) {
                Ok(Ok((stats, kept))) => {
                    ingest.add(&stats);
                    samples.add(kept);
                }
                Ok(Err(_)) => record(&shared, "producer thread panicked"),
                Err(e) => record(&shared, &format!("cannot start a producer thread: {e}")),
            }
        }
    });
    drop(p.senders);
    let sched = shared
        .schedule
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = sched.error {
        return Err(e);
    }
    Ok(Read {
        merge: MergeStats {
            files: files.len() as u64,
            oversized: sched.oversized,
        },
        ingest,
        samples,
    })
}

fn record(shared: &Shared, what: &str) {
    let mut s = shared.lock();
    if s.error.is_none() {
        s.error = Some(ReadError {
            path: PathBuf::from("(replay)"),
            source: io::Error::other(what),
        });
    }
}

/// One producer: take a chunk, parse it, report it, until nothing is left.
fn produce(
    shared: &Shared,
    ingest: &mut Ingest,
    mut router: Router,
    progress: &AtomicU64,
    flush_every: u64,
) {
    let _stop = StopOnPanic(shared);
    let mut buf = Vec::new();
    let mut flushed_at = 0;
    while let Some(task) = next_task(shared) {
        let (src, seq, newest) = match task {
            Task::Range {
                src,
                vhost,
                seq,
                file,
                path,
                off,
                len,
            } => {
                // A file that cannot be mapped (or a full table of mappings) is read instead.
                let mapped = match len >= MAP_MIN {
                    true => map_range(&file, &path, off, len).ok().flatten(),
                    false => None,
                };
                let read = match &mapped {
                    Some(m) => Ok(owned_by_mapped(m, off, len)),
                    None => read_range(&file, off, len, &mut buf),
                };
                let (newest, oversized) = match read {
                    Ok((lines, oversized)) => {
                        progress.fetch_add(len, Ordering::Relaxed);
                        (ingest.chunk(lines, vhost, &mut router), oversized)
                    }
                    Err(e) => {
                        fail(shared, src, e);
                        break;
                    }
                };
                if oversized > 0 {
                    shared.lock().oversized += oversized;
                }
                (src, seq, newest)
            }
            Task::Stream {
                src,
                seq,
                mut chunks,
            } => {
                buf.clear();
                let read = chunks
                    .next_chunk()
                    .map(|c| c.map(|c| buf.extend_from_slice(c)));
                let got = matches!(read, Ok(Some(())));
                // A file read to its end is closed now, not when the merge comes back to it
                // (a small archive read whole might otherwise stay open, buffers and all, until
                // every other file has caught up with its last line).
                let more = got && !chunks.at_end();
                let vhost = {
                    let mut s = shared.lock();
                    if !more {
                        s.oversized += chunks.oversized();
                    }
                    let sched = &mut *s;
                    let source = &mut sched.sources[src];
                    source.reader = Reader::Stream(more.then_some(chunks));
                    source.exhausted = !more;
                    if more {
                        sched.ready.push(Reverse((source.newest, src)));
                    }
                    sched.held -= 1;
                    source.vhost
                };
                shared.wake.notify_all();
                if let Err(e) = read {
                    fail(shared, src, e);
                    break;
                }
                let newest = if got {
                    ingest.chunk(&buf, vhost, &mut router)
                } else {
                    i64::MIN
                };
                (src, seq, newest)
            }
        };
        complete(shared, src, seq, newest);
        // Every message makes each shard sort what it holds: with small chunks, send the low
        // mark per few thousand hits, not per chunk. Full batches go out on their own anyway.
        if ingest.stats.hits - flushed_at >= flush_every {
            flushed_at = ingest.stats.hits;
            router.flush(low_mark(shared));
        }
    }
    router.finish();
}

/// Stops the other producers when this one panics: they may be waiting for a file it held.
struct StopOnPanic<'a>(&'a Shared);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            record(self.0, "producer thread panicked");
            self.0.wake.notify_all();
        }
    }
}

fn fail(shared: &Shared, src: usize, source: io::Error) {
    let mut s = shared.lock();
    if s.error.is_none() {
        let path = s.sources[src].path.clone();
        s.error = Some(ReadError { path, source });
    }
    drop(s);
    shared.wake.notify_all();
}

/// Hands out the next chunk of the file whose parsed lines are oldest; waits while the only
/// work left is a compressed file another producer is reading. `None` when nothing is left.
fn next_task(shared: &Shared) -> Option<Task> {
    let mut guard = shared.lock();
    loop {
        let s = &mut *guard;
        if s.error.is_some() {
            return None;
        }
        let Some(Reverse((key, i))) = s.ready.pop() else {
            if s.held == 0 {
                return None;
            }
            guard = shared
                .wake
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        let src = &mut s.sources[i];
        if key != src.newest {
            // Queued before its newest time moved: take its place in line again.
            s.ready.push(Reverse((src.newest, i)));
            continue;
        }
        if matches!(src.reader, Reader::Closed) {
            match open(&src.path, src.stream_chunk, &s.progress) {
                Ok(r) => src.reader = r,
                Err(e) => {
                    s.error = Some(ReadError {
                        path: src.path.clone(),
                        source: e,
                    });
                    drop(guard);
                    shared.wake.notify_all();
                    return None;
                }
            }
        }
        let seq = src.next_seq;
        match &mut src.reader {
            Reader::Plain {
                file,
                path,
                len,
                next,
            } => {
                if *next >= *len {
                    src.exhausted = true;
                    if src.finished() {
                        src.reader = Reader::Closed; // An empty file.
                    }
                    continue;
                }
                let (file, path, off) = (file.clone(), path.clone(), *next);
                let take = src.range.min(*len - off);
                *next += take;
                src.next_seq += 1;
                if *next >= *len {
                    src.exhausted = true;
                } else if src.one_at_a_time {
                    s.held += 1; // Back in line once this range is parsed (`complete`).
                } else {
                    // Other producers may take the following ranges while this one is parsed.
                    s.ready.push(Reverse((src.newest, i)));
                }
                return Some(Task::Range {
                    src: i,
                    vhost: src.vhost,
                    seq,
                    file,
                    path,
                    off,
                    len: take,
                });
            }
            Reader::Stream(chunks) => {
                let Some(chunks) = chunks.take() else {
                    continue;
                };
                src.next_seq += 1;
                s.held += 1;
                return Some(Task::Stream {
                    src: i,
                    seq,
                    chunks,
                });
            }
            Reader::Closed => continue,
        }
    }
}

fn open(path: &std::path::Path, chunk: usize, progress: &Arc<AtomicU64>) -> io::Result<Reader> {
    let file = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = file.read_at(&mut magic, 0)?;
    if n == 2 && magic == GZIP_MAGIC {
        let chunks = Chunks::open(path, chunk, progress.clone())?;
        return Ok(Reader::Stream(Some(Box::new(chunks))));
    }
    // Lines appended after this point belong to a later run; a file that shrinks ends early.
    let len = file.metadata()?.len();
    Ok(Reader::Plain {
        file: Arc::new(file),
        path: Arc::from(path),
        len,
        next: 0,
    })
}

/// Marks chunk `seq` of `src` parsed (newest time `newest`).
fn complete(shared: &Shared, src: usize, seq: u64, newest: i64) {
    let mut guard = shared.lock();
    let s = &mut *guard;
    let source = &mut s.sources[src];
    if seq == source.done_seq {
        source.newest = source.newest.max(newest);
        source.done_seq += 1;
        while let Some(t) = source.early.remove(&source.done_seq) {
            source.newest = source.newest.max(t);
            source.done_seq += 1;
        }
        if source.finished() {
            source.reader = Reader::Closed; // Release the descriptor now: thousands may be open.
        }
    } else {
        source.early.insert(seq, newest);
    }
    if source.one_at_a_time && matches!(source.reader, Reader::Plain { .. }) && !source.exhausted {
        s.held -= 1;
        s.ready.push(Reverse((source.newest, src)));
    }
    drop(guard);
    shared.wake.notify_all();
}

/// The low mark over all unfinished sources.
fn low_mark(shared: &Shared) -> i64 {
    let s = shared.lock();
    let low = s
        .sources
        .iter()
        .filter(|x| !x.finished())
        .map(|x| x.newest)
        .min();
    // With every source finished, `Router::finish` ends the stream: a low mark of "forever"
    // here would expire every ban on the way out.
    low.unwrap_or(i64::MIN)
}

/// Ranges from this size on are mapped rather than read (see `source::mapped`): the kernel's
/// copy into a buffer the size of a range cost replay a quarter of its CPU time. A smaller range
/// (one of many small files) is read: mapping and unmapping it would cost about as much.
const MAP_MIN: u64 = 128 << 10;

/// The window a range's lines are found in: from one byte before the range (which tells whether
/// a line starts exactly at `off`), to the end of the longest line that may start in it.
/// (base, index of the range's end in the window, the window's length).
fn window(off: u64, len: u64) -> (u64, usize, usize) {
    let base = off.saturating_sub(1);
    let past = (off - base + len) as usize; // First index past the range.
    (base, past, past + MAX_LINE + 1)
}

/// Maps the window of `[off, off + len)`; `None` when it cannot be (read it instead).
fn map_range(file: &File, path: &Path, off: u64, len: u64) -> io::Result<Option<Mapped>> {
    let (base, _, want) = window(off, len);
    Mapped::map(file, path, base, want)
}

/// The lines that start in `[off, off + len)` of a mapped window, as [`read_range`] gives them.
fn owned_by_mapped(m: &Mapped, off: u64, len: u64) -> (&[u8], u64) {
    let (_, past, want) = window(off, len);
    let data = m.bytes();
    owned_lines(data, off == 0, past, data.len() < want)
}

/// Reads the lines that start in `[off, off + len)` of `file` into `buf`; a line may run past
/// the range by up to [`MAX_LINE`] bytes. Returns those lines and the number of lines dropped for
/// running further (counted as malformed).
fn read_range<'b>(
    file: &File,
    off: u64,
    len: u64,
    buf: &'b mut Vec<u8>,
) -> io::Result<(&'b [u8], u64)> {
    let (base, past, want) = window(off, len);
    // The range's last line usually ends within a few bytes of it: read the rest of the longest
    // line only when it does not. (The buffer never shrinks: regrowing it would zero it again.)
    let mut limit = (past + TAIL).min(want);
    if buf.len() < limit {
        buf.resize(limit, 0);
    }
    let mut got = fill(file, base, &mut buf[..limit], 0)?;
    if got == limit && limit < want && memchr::memchr(b'\n', &buf[past - 1..got]).is_none() {
        limit = want;
        if buf.len() < limit {
            buf.resize(limit, 0);
        }
        got = fill(file, base, &mut buf[..limit], got)?;
    }
    Ok(owned_lines(&buf[..got], off == 0, past, got < limit))
}

/// The lines of `data` (a window read from one byte before a range) that start in the range,
/// which ends at `past`; `at_eof`: `data` ends at the file's end, not at the window's.
fn owned_lines(data: &[u8], first: bool, past: usize, at_eof: bool) -> (&[u8], u64) {
    let end = past.min(data.len());
    let start = if first {
        0
    } else {
        match memchr::memchr(b'\n', &data[..end]) {
            Some(nl) => nl + 1,
            None => return (&[], 0), // A line from an earlier range covers this one.
        }
    };
    if start >= end {
        return (&[], 0);
    }
    // The owned lines end at the first newline at or after the range's last byte.
    match memchr::memchr(b'\n', &data[end - 1..]) {
        Some(nl) => (&data[start..end + nl], 0),
        None if at_eof => (&data[start..], 0), // The file's last line, unterminated.
        None => {
            // The last line started here runs past MAX_LINE: drop it.
            let last = memchr::memrchr(b'\n', &data[start..end]).map_or(start, |nl| start + nl + 1);
            (&data[start..last], 1)
        }
    }
}

/// Reads `buf[got..]` from `pos + got` on, up to the end of the file; returns the bytes in `buf`.
fn fill(file: &File, pos: u64, buf: &mut [u8], mut got: usize) -> io::Result<usize> {
    while got < buf.len() {
        match file.read_at(&mut buf[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Every line is owned by exactly one range, whatever the range size.
    #[test]
    fn ranges_cover_each_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut data = Vec::new();
        for i in 0..5000 {
            // Now and then a line longer than the slack read past a range.
            let len = if i % 250 == 0 { TAIL * 2 + i } else { i % 97 };
            writeln!(data, "{}{}", "x".repeat(len), i).unwrap();
        }
        data.extend_from_slice(b"\n\nlast-unterminated");
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        for range in [1u64, 2, 7, 100, 4096, 5000, 1 << 20] {
            let mut out = Vec::new();
            let mut buf = Vec::new();
            let mut off = 0;
            while off < data.len() as u64 {
                let len = range.min(data.len() as u64 - off);
                let (lines, dropped) = read_range(&file, off, len, &mut buf).unwrap();
                assert_eq!(dropped, 0);
                if !lines.is_empty() && !lines.ends_with(b"\n") {
                    assert!(lines.ends_with(b"last-unterminated"));
                }
                out.extend_from_slice(lines);
                off += len;
            }
            assert_eq!(out, data, "range size {range}");
        }
    }

    /// `files` logs of `lines` lines each, one line per second, all over the same period.
    fn same_period_logs(dir: &std::path::Path, files: usize, lines: usize) -> Vec<LogFile> {
        (0..files)
            .map(|f| {
                let path = dir.join(format!("access_log.{f}"));
                let mut data = Vec::new();
                for s in 0..lines {
                    let (h, m, s) = (10 + s / 3600, s / 60 % 60, s % 60);
                    writeln!(
                        data,
                        "10.{f}.{}.{} - - [25/Nov/2026:{h:02}:{m:02}:{s:02} +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"t\"",
                        s / 250,
                        s % 250
                    )
                    .unwrap();
                }
                std::fs::write(&path, data).unwrap();
                LogFile { path, vhost: None }
            })
            .collect()
    }

    /// What a shard would hold while replaying `files`: replays them into one channel, then plays
    /// the shard's part on the messages in the order they came (hits wait until the minimum low
    /// mark of the running producers reaches them). Returns (most hits held at once, hits), and
    /// checks that no hit breaks the low mark promised before it (these logs are in order).
    fn held_by_a_shard(files: &[LogFile], producers: usize, read_ahead: u64) -> (usize, usize) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let rules = Arc::new(CompiledRules::new(&[crate::config::default_rule()]).unwrap());
        let format = Format::from_spec(&crate::config::Config::default().input.format).unwrap();
        let vhosts = Vhosts::new();
        let pipeline = Pipeline {
            format: Arc::new(format),
            rules,
            vhosts: &vhosts,
            senders: vec![tx],
            producers,
            progress: Arc::default(),
            client_ip: None,
            read_ahead,
        };
        replay_files(files, pipeline).unwrap();
        let mut lows = vec![Some(i64::MIN); producers];
        let mut held = BinaryHeap::new();
        let (mut peak, mut total) = (0, 0);
        for msg in rx.try_iter() {
            let watermark = lows.iter().flatten().min().copied().unwrap_or(i64::MAX);
            match msg {
                ShardMsg::Hits {
                    producer,
                    low_ms,
                    hits,
                    ..
                } => {
                    for h in &hits {
                        assert!(h.time_ms >= watermark, "{} < {watermark}", h.time_ms);
                        held.push(Reverse(h.time_ms));
                    }
                    total += hits.len();
                    lows[producer as usize] = Some(low_ms);
                }
                ShardMsg::Done { producer } => lows[producer as usize] = None,
                ShardMsg::Rules { .. } | ShardMsg::Top { .. } => unreachable!(),
            }
            let watermark = lows.iter().flatten().min().copied().unwrap_or(i64::MAX);
            while held.peek().is_some_and(|&Reverse(t)| t <= watermark) {
                held.pop();
            }
            peak = peak.max(held.len());
        }
        (peak, total)
    }

    /// Many small files over the same period: the shards hold a fraction of the hits, not all
    /// of them until every file has been read once (as 1 MiB chunks, whole files, did).
    #[test]
    fn many_files_over_one_period_are_held_by_read_ahead_not_whole() {
        let dir = tempfile::tempdir().unwrap();
        let files = same_period_logs(dir.path(), 100, 2000);
        let all = 100 * 2000;
        for producers in [1, 2] {
            // 15 MB of logs, 1 MiB read ahead: ranges of ~10 KB, ~130 lines per file.
            let (peak, total) = held_by_a_shard(&files, producers, 1 << 20);
            assert_eq!(total, all);
            assert!(
                peak < all / 4,
                "{producers} producers: {peak} of {total} held"
            );
            // Whole files at once: nearly everything waits for the last file's first chunk.
            let (peak, total) = held_by_a_shard(&files, producers, u64::MAX);
            assert_eq!(total, all);
            assert!(
                peak > all * 3 / 4,
                "{producers} producers: {peak} of {total} held"
            );
        }
    }

    /// The offenses the shards find in `files`.
    fn offenses(
        files: &[LogFile],
        producers: usize,
        read_ahead: u64,
    ) -> Vec<crate::engine::Offense> {
        use crate::engine::shard::{spawn_shards, ShardConfig};
        use crate::engine::ShardOut;
        // Tight enough that ordinary clients overflow too, now and then: many offenses, each of
        // which depends on the order of its key's hits.
        let tight = crate::engine::RuleSpec {
            rate: crate::engine::Rate {
                milli_per_sec: 500,
                text: "1r/2s".into(),
            },
            burst: 2,
            ..crate::config::default_rule()
        };
        let rules = Arc::new(CompiledRules::new(&[tight]).unwrap());
        let cfg = ShardConfig {
            shards: 2,
            producers,
            // No slack: a low mark promised too early would show as late, clamped hits.
            lateness_ms: 0,
            max_keys: 100_000,
        };
        let (out, rx) = crossbeam_channel::unbounded();
        let (senders, handles) = spawn_shards(&cfg, rules.clone(), out).unwrap();
        let format = Format::from_spec(&crate::config::Config::default().input.format).unwrap();
        let vhosts = Vhosts::new();
        let pipeline = Pipeline {
            format: Arc::new(format),
            rules,
            vhosts: &vhosts,
            senders,
            producers,
            progress: Arc::default(),
            client_ip: None,
            read_ahead,
        };
        replay_files(files, pipeline).unwrap();
        for h in handles {
            h.join().unwrap();
        }
        let mut found: Vec<_> = rx
            .try_iter()
            .filter_map(|m| match m {
                ShardOut::Offense { offense, .. } => Some(offense),
                _ => None,
            })
            .collect();
        found.sort_by_key(|o| (o.key, o.rule, o.time_ms));
        found
    }

    /// One log dealt round-robin over many files, read in small ranges one at a time, finds
    /// exactly the offenses of the whole file.
    #[test]
    fn small_ranges_over_many_files_find_the_offenses_of_the_whole_log() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/replay/vhosts/example.com/logs/access_log");
        let text = std::fs::read(&src).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let parts = 40;
        let mut data = vec![Vec::new(); parts];
        for (i, line) in text.split_inclusive(|&b| b == b'\n').enumerate() {
            data[i % parts].extend_from_slice(line);
        }
        let files: Vec<LogFile> = data
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let path = dir.path().join(format!("part{i}.log"));
                std::fs::write(&path, d).unwrap();
                LogFile { path, vhost: None }
            })
            .collect();
        let whole = offenses(
            &[LogFile {
                path: src,
                vhost: None,
            }],
            1,
            READ_AHEAD,
        );
        assert!(whole.len() >= 20, "{}", whole.len());
        // 630 KB in 40 files and 8 KB read ahead: ranges of about 200 bytes, one line or two.
        for (producers, read_ahead) in [(1, 8 << 10), (2, 8 << 10), (2, 64 << 10), (3, READ_AHEAD)]
        {
            assert_eq!(
                offenses(&files, producers, read_ahead),
                whole,
                "{producers} producers, {read_ahead} bytes ahead"
            );
        }
        // The same parts gzipped (each read whole, and closed at once), half of them beside the
        // plain other half.
        let mixed: Vec<LogFile> = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if i % 2 == 1 {
                    return LogFile {
                        path: f.path.clone(),
                        vhost: None,
                    };
                }
                let path = f.path.with_extension("log.gz");
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&std::fs::read(&f.path).unwrap()).unwrap();
                std::fs::write(&path, enc.finish().unwrap()).unwrap();
                LogFile { path, vhost: None }
            })
            .collect();
        assert_eq!(offenses(&mixed, 2, 8 << 10), whole);
    }

    #[test]
    fn range_sizes_share_the_read_ahead() {
        let total = 2000 * 250_000;
        assert_eq!(range_size(250_000, total, READ_AHEAD), 16_777);
        assert_eq!(range_size(total, total, READ_AHEAD), CHUNK as u64);
        assert_eq!(range_size(10, total, READ_AHEAD), MIN_RANGE);
        assert_eq!(range_size(0, 0, READ_AHEAD), MIN_RANGE);
        assert_eq!(range_size(u64::MAX, u64::MAX, u64::MAX), CHUNK as u64);
        assert_eq!(range_size(10, 10, 100), 100, "tests may go below MIN_RANGE");
        assert_eq!(flush_every(READ_AHEAD), 4096);
        // Small archives are read whole; larger ones in their share, as plain files.
        assert_eq!(stream_capacity(300_000, total, READ_AHEAD), 300_001);
        assert_eq!(stream_capacity(100, total, READ_AHEAD), MAX_LINE + 1);
        let (big, total) = (2_400_000, 200 * 2_400_000);
        assert_eq!(stream_capacity(big, total, READ_AHEAD), 167_772);
        assert_eq!(stream_capacity(big, big, READ_AHEAD), CHUNK);
        assert_eq!(flush_every(8 << 10), 1);
    }

    #[test]
    fn a_line_longer_than_max_line_is_dropped_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut data = b"short\n".to_vec();
        data.extend(std::iter::repeat_n(b'L', MAX_LINE * 3));
        data.extend_from_slice(b"\nafter\n");
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let mut out = Vec::new();
        let mut dropped = 0;
        let mut buf = Vec::new();
        let mut off = 0;
        while off < data.len() as u64 {
            let len = 1000.min(data.len() as u64 - off);
            let (lines, d) = read_range(&file, off, len, &mut buf).unwrap();
            out.extend_from_slice(lines);
            dropped += d;
            off += len;
        }
        assert_eq!(out, b"short\nafter\n");
        assert_eq!(dropped, 1);
    }
}
