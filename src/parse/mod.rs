//! Access-log parsing: one line of bytes in, one borrowed [`Record`] out, no allocation.
//!
//! A format (`combined`, `common`, `vhost_combined`, or a custom nginx `log_format` / Apache
//! `LogFormat` string) is compiled once into a field plan ([`Format`]); parsing walks the plan
//! over the line's bytes. Anything that does not fit the plan is [`Malformed`], never a panic.
//!
//! Files: `format.rs` (specs → [`Format`], the entry point), `combined.rs` (the hand-written fast
//! parser for `combined`/`common`/`vhost_combined`), `spec.rs` (nginx and Apache format strings →
//! plans), `plan.rs` (running a plan), `scan.rs` (quotes, status, size, request line), `time.rs`
//! (timestamps and the per-thread [`TimeCache`]).

/// One parsed access-log line. Every slice borrows the line; fields the format does not log are
/// empty slices (`-` is kept as `-`, so callers can tell "logged as absent" from "not logged").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record<'a> {
    /// `%h` / `$remote_addr`: the connecting client as logged (an address, or a hostname).
    pub client: &'a [u8],
    /// `%l`
    pub ident: &'a [u8],
    /// `%u` / `$remote_user`
    pub user: &'a [u8],
    /// Log time in UTC milliseconds since the Unix epoch (the finest time field of the format).
    pub time_ms: i64,
    /// `%r` / `$request`, raw (escapes not decoded).
    pub request: &'a [u8],
    /// The request line's method (`%m` / `$request_method`, or split from the request).
    pub method: &'a [u8],
    /// The request target (path and query, `%U%q` / `$request_uri`, or split from the request).
    pub target: &'a [u8],
    /// `HTTP/1.1` and the like; empty for HTTP/0.9-style requests without a version.
    pub protocol: &'a [u8],
    /// `%>s` / `$status`; 0 when logged as `-`.
    pub status: u16,
    /// `%b`/`%B` / `$body_bytes_sent`; `None` when logged as `-`.
    pub bytes: Option<u64>,
    pub referer: &'a [u8],
    pub user_agent: &'a [u8],
    /// `%v` / `$server_name` / `$host`: empty when the format does not log it.
    pub vhost: &'a [u8],
    /// The field named by [`Format::set_client_ip_field`] (real client behind a proxy), raw.
    pub real_client: &'a [u8],
}

/// Why a line was not parsed. Small and `Copy`: counted per kind, never allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Malformed {
    /// Empty or only whitespace.
    Empty,
    /// Longer than [`MAX_LINE`].
    TooLong,
    /// The line does not have the shape of the format (missing field, separator, quote...).
    Shape,
    /// The time field does not parse.
    Time,
    /// The status field is not `-` or three digits.
    Status,
    /// A numeric field (size, msec...) does not parse.
    Number,
}

/// Lines longer than this are malformed (and skipped without being buffered whole).
pub const MAX_LINE: usize = 64 * 1024;

mod combined;
mod format;
mod format_error;
mod plan;
mod scan;
mod spec;
pub mod time;

pub use format::Format;
pub use format_error::FormatError;
pub use scan::{addr_list, split_request};
pub use time::TimeCache;

#[cfg(test)]
mod proptests;
