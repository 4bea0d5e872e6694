//! Reads many log files as one stream in log-time order (a k-way merge at chunk granularity).
//!
//! The file whose newest line is oldest is always read next, so every file advances through log
//! time together and the engine's watermark (the minimum over open files of their newest time)
//! moves steadily. Hits are not sorted here: the shards order them by time below the watermark.
//! What this module guarantees is that no open file falls further behind than one chunk.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::engine::router::Router;
use crate::hit::{VhostId, NO_VHOST};
use crate::source::ingest::Ingest;
use crate::source::paths::LogFile;
use crate::source::reader::Chunks;
use crate::vhost::Vhosts;

/// An error reading one of the files; names it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Counters of the merge itself (the lines are counted by [`Ingest`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub files: u64,
    /// Lines longer than the read buffer, dropped while reading.
    pub oversized: u64,
}

struct Open {
    path: PathBuf,
    vhost: VhostId,
    chunks: Option<Chunks>,
    newest: i64,
}

/// Read buffer per file: 1 MiB for a few files, less when thousands are open at once, never less
/// than the longest line worth parsing.
fn chunk_size(files: usize) -> usize {
    const BUDGET: usize = 512 << 20;
    (BUDGET / files.max(1)).clamp(crate::parse::MAX_LINE + 1, crate::source::reader::CHUNK)
}

/// Replays `files` through `ingest` into `router`, in log-time order; `progress` counts the bytes
/// read from disk (compressed bytes for gzip). Calls `router.finish()` at the end, also after an error, so the shards stop.
pub fn replay_files(
    files: &[LogFile],
    vhosts: &Vhosts,
    ingest: &mut Ingest,
    mut router: Router,
    progress: &Arc<AtomicU64>,
) -> Result<MergeStats, ReadError> {
    let result = merge(files, vhosts, ingest, &mut router, progress);
    router.finish();
    result
}

fn merge(
    files: &[LogFile],
    vhosts: &Vhosts,
    ingest: &mut Ingest,
    router: &mut Router,
    progress: &Arc<AtomicU64>,
) -> Result<MergeStats, ReadError> {
    let mut stats = MergeStats {
        files: files.len() as u64,
        oversized: 0,
    };
    let size = chunk_size(files.len());
    let mut open: Vec<Open> = files
        .iter()
        .map(|f| Open {
            path: f.path.clone(),
            vhost: f
                .vhost
                .as_deref()
                .map_or(NO_VHOST, |v| vhosts.intern(v.as_bytes())),
            chunks: None,
            newest: i64::MIN,
        })
        .collect();
    // Min-heap on (newest time, file index): the index breaks ties so runs are repeatable.
    let mut heap: BinaryHeap<Reverse<(i64, usize)>> =
        (0..open.len()).map(|i| Reverse((i64::MIN, i))).collect();
    while let Some(Reverse((_, i))) = heap.pop() {
        let src = &mut open[i];
        let err = |source| ReadError {
            path: src.path.clone(),
            source,
        };
        if src.chunks.is_none() {
            src.chunks = Some(Chunks::open(&src.path, size, progress.clone()).map_err(err)?);
        }
        let Some(chunks) = src.chunks.as_mut() else {
            continue;
        };
        let chunk = chunks.next_chunk().map_err(|source| ReadError {
            path: src.path.clone(),
            source,
        })?;
        match chunk {
            Some(chunk) => {
                let newest = ingest.chunk(chunk, src.vhost, router);
                src.newest = src.newest.max(newest);
                heap.push(Reverse((src.newest, i)));
            }
            None => {
                stats.oversized += chunks.oversized();
                src.chunks = None; // Close the file now: thousands may be open.
            }
        }
        // The oldest open file bounds what may still arrive. After the last file, `finish`
        // tells the shards: a low mark of "forever" would expire every ban on the way out.
        if let Some(Reverse((low, _))) = heap.peek() {
            router.flush(*low);
        }
    }
    Ok(stats)
}
