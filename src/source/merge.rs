//! Reads many log files as one stream in log-time order, parsed by several producer threads.
//!
//! Work is handed out in chunks. A plain file is cut into byte ranges that any producer can read
//! with `pread` and parse on its own (each range owns the lines that *start* in it), so even one
//! big file keeps every producer busy. A compressed file is decompressed in order, one chunk at a
//! time, by whichever producer holds it, and parsed after it has been handed back.
//!
//! The file whose finished lines are oldest is always read next, so every file advances through
//! log time together. Each producer tells the shards a low mark: the minimum over unfinished
//! files of the newest time of their chunks parsed *in order* (a chunk that finishes before an
//! earlier one of its file does not count yet). Nothing older than that mark can still arrive, but
//! for the disorder within one file that `lateness` allows; the shards order hits below it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crossbeam_channel::Sender;

use crate::engine::router::Router;
use crate::engine::rule::CompiledRules;
use crate::engine::ShardMsg;
use crate::hit::{VhostId, NO_VHOST};
use crate::parse::{Format, MAX_LINE};
use crate::proxy::ClientIp;
use crate::source::ingest::{Ingest, IngestStats};
use crate::source::paths::LogFile;
use crate::source::reader::{Chunks, CHUNK};
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
}

enum Reader {
    /// Not opened yet: thousands of files are opened one by one as the merge reaches them.
    Closed,
    /// Byte ranges read at an offset, by any producer.
    Plain {
        file: Arc<File>,
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
    /// Stream sources a producer is reading from.
    held: usize,
    chunk: usize,
    error: Option<ReadError>,
    oversized: u64,
    progress: Arc<AtomicU64>,
}

/// One chunk of work.
enum Task {
    Range {
        src: usize,
        seq: u64,
        file: Arc<File>,
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

/// Read buffer per chunk: 1 MiB for a few files, less when thousands are open at once, never less
/// than the longest line worth parsing.
fn chunk_size(files: usize) -> usize {
    const BUDGET: usize = 512 << 20;
    (BUDGET / files.max(1)).clamp(MAX_LINE + 1, CHUNK)
}

/// Replays `files` through `p.producers` producer threads into the shards, then tells every
/// shard that each producer is done (also after an error, so the shards stop).
pub fn replay_files(
    files: &[LogFile],
    p: Pipeline<'_>,
) -> Result<(MergeStats, IngestStats), ReadError> {
    let sources: Vec<Source> = files
        .iter()
        .map(|f| Source {
            path: f.path.clone(),
            vhost: f
                .vhost
                .as_deref()
                .map_or(NO_VHOST, |v| p.vhosts.intern(v.as_bytes())),
            reader: Reader::Closed,
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
            chunk: chunk_size(files.len()),
            error: None,
            oversized: 0,
            progress: p.progress.clone(),
        }),
        wake: Condvar::new(),
    };
    let producers = p.producers.max(1);
    let route = p.rules.route_prefixes();
    let mut ingest = IngestStats::default();
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
                        produce(shared, &mut worker, router, progress);
                        worker.stats
                    })
            })
            .collect();
        for h in handles {
            match h.map(|h| h.join()) {
                Ok(Ok(stats)) => ingest.add(&stats),
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
    Ok((
        MergeStats {
            files: files.len() as u64,
            oversized: sched.oversized,
        },
        ingest,
    ))
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
fn produce(shared: &Shared, ingest: &mut Ingest, mut router: Router, progress: &AtomicU64) {
    let mut buf = Vec::new();
    while let Some(task) = next_task(shared) {
        let (src, seq, newest) = match task {
            Task::Range {
                src,
                seq,
                file,
                off,
                len,
            } => {
                let vhost = shared.lock().sources[src].vhost;
                let (newest, oversized) = match read_range(&file, off, len, &mut buf) {
                    Ok((lines, oversized)) => {
                        progress.fetch_add(len, Ordering::Relaxed);
                        (ingest.chunk(lines, vhost, &mut router), oversized)
                    }
                    Err(e) => {
                        fail(shared, src, e);
                        break;
                    }
                };
                shared.lock().oversized += oversized;
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
                let (vhost, more) = {
                    let mut s = shared.lock();
                    let more = matches!(read, Ok(Some(())));
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
                    (source.vhost, more)
                };
                shared.wake.notify_all();
                if let Err(e) = read {
                    fail(shared, src, e);
                    break;
                }
                let newest = if more {
                    ingest.chunk(&buf, vhost, &mut router)
                } else {
                    i64::MIN
                };
                (src, seq, newest)
            }
        };
        let low = complete(shared, src, seq, newest);
        router.flush(low);
    }
    router.finish();
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
            match open(&src.path, s.chunk, &s.progress) {
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
            Reader::Plain { file, len, next } => {
                if *next >= *len {
                    src.exhausted = true;
                    continue;
                }
                let (file, off) = (file.clone(), *next);
                let take = (s.chunk as u64).min(*len - off);
                *next += take;
                src.next_seq += 1;
                if *next < *len {
                    // Other producers may take the following ranges while this one is parsed.
                    s.ready.push(Reverse((src.newest, i)));
                } else {
                    src.exhausted = true;
                }
                return Some(Task::Range {
                    src: i,
                    seq,
                    file,
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
    if n == 2 && magic == [0x1f, 0x8b] {
        let chunks = Chunks::open(path, chunk, progress.clone())?;
        return Ok(Reader::Stream(Some(Box::new(chunks))));
    }
    // Lines appended after this point belong to a later run; a file that shrinks ends early.
    let len = file.metadata()?.len();
    Ok(Reader::Plain {
        file: Arc::new(file),
        len,
        next: 0,
    })
}

/// Marks chunk `seq` of `src` parsed (newest time `newest`) and returns the low mark over all
/// unfinished sources.
fn complete(shared: &Shared, src: usize, seq: u64, newest: i64) -> i64 {
    let mut s = shared.lock();
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
    let low = s
        .sources
        .iter()
        .filter(|x| !x.finished())
        .map(|x| x.newest)
        .min();
    drop(s);
    shared.wake.notify_all();
    // With every source finished, `Router::finish` ends the stream: a low mark of "forever"
    // here would expire every ban on the way out.
    low.unwrap_or(i64::MIN)
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
    // One byte before the range tells whether a line starts exactly at `off`.
    let base = off.saturating_sub(1);
    let want = (off - base + len) as usize + MAX_LINE + 1;
    buf.resize(want, 0);
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[got..], base + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let data = &buf[..got];
    let end = ((off - base + len) as usize).min(got); // First index past the range.
    let start = if off == 0 {
        0
    } else {
        match memchr::memchr(b'\n', &data[..end]) {
            Some(nl) => nl + 1,
            None => return Ok((&[], 0)), // A line from an earlier range covers this one.
        }
    };
    if start >= end {
        return Ok((&[], 0));
    }
    // The owned lines end at the first newline at or after the range's last byte.
    match memchr::memchr(b'\n', &data[end - 1..]) {
        Some(nl) => Ok((&data[start..end + nl], 0)),
        None if got < want => Ok((&data[start..], 0)), // The file's last line, unterminated.
        None => {
            // The last line started here runs past MAX_LINE: drop it.
            let last = memchr::memrchr(b'\n', &data[start..end]).map_or(start, |nl| start + nl + 1);
            Ok((&data[start..last], 1))
        }
    }
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
            writeln!(data, "{}{}", "x".repeat(i % 97), i).unwrap();
        }
        data.extend_from_slice(b"\n\nlast-unterminated");
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        for range in [1u64, 2, 7, 100, 4096, 1 << 20] {
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
