//! Where log lines come from: path and glob expansion, chunked reading of plain and gzip files,
//! and the merge of several files by log time.

pub mod ingest;
pub mod merge;
pub mod paths;
pub mod reader;
