//! Where log lines come from: path and glob expansion (`paths`, `discover`), chunked reading of
//! plain and gzip files (`reader`; `mapped` for replay's big ranges of plain files), the tailing
//! of live files with checkpoints (`tail`, `checkpoint`), and a chunk of lines turned into hits (`ingest`, with what it counts in
//! `stats` and the lines it cannot use in `unusable`).

pub mod checkpoint;
pub mod discover;
pub mod ingest;
pub mod key_vhosts;
pub mod mapped;
pub mod paths;
pub mod reader;
pub mod stats;
pub mod tail;
pub mod unusable;
pub mod vhost_counts;
