//! Decisions: offenses become ban and unban events (allowlist, duplicate suppression,
//! escalation for repeat offenders, expiry).

use std::sync::Arc;

use crate::engine::Key;

pub mod allowlist;
pub mod ban_table;
pub mod decider;
pub mod event;

/// An event for sinks; serialised by `decide::event` as the README's Events section describes.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Ban(Ban),
    Unban(Unban),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ban {
    /// Log time of the offense (UTC ms).
    pub time_ms: i64,
    pub key: Key,
    pub rule: Arc<str>,
    pub vhost: Option<Arc<str>>,
    pub rate: Arc<str>,
    pub burst: u32,
    pub requests: u64,
    pub first_seen_ms: i64,
    pub ban_ms: u64,
    pub until_ms: i64,
    /// 1 for a first offense, n for the n-th within the recidive window.
    pub offense: u32,
    /// The key was seen through a trusted proxy (only a CDN-level sink can block it).
    pub via_proxy: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Unban {
    pub time_ms: i64,
    pub key: Key,
    pub rule: Arc<str>,
}
