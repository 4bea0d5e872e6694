//! Where log lines come from: path and glob expansion, chunked reading of plain and gzip files,
//! the merge of several files by log time, and the tailing of live files with checkpoints.

pub mod checkpoint;
pub mod discover;
pub mod ingest;
pub mod merge;
pub mod paths;
pub mod reader;
pub mod stats;
pub mod tail;
pub mod unusable;
