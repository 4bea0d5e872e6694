//! What `floodwatch top` and the dashboard show, as the control socket (`{"command":"top"}`)
//! and the metrics listener (`/api/top`, `/api/history`) answer it: the watch's pace, its
//! vhosts' rates, and the busiest keys with how close each is to its limit.
//!
//! Rates are requests per second over the last second and the last ten; a key's come from
//! samples of its bucket's request count taken by the shards about once a second while someone
//! looks (see `engine::top`), so a key new to the sample shows its average since its first
//! request until a second sample is there.

use serde::{Deserialize, Serialize};

use super::SinkStatus;

/// The longest list of keys or vhosts an answer holds.
pub const MAX_LIMIT: usize = 1000;
/// Keys and vhosts an answer holds unless asked otherwise.
pub const DEFAULT_LIMIT: usize = 50;
/// A key's bucket at or above this share of its burst is *near* its limit.
pub const NEAR_PERCENT: f64 = 80.0;

/// One frame of `top`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Top {
    pub version: String,
    /// RFC 3339: when the frame was made.
    pub now: String,
    pub uptime_seconds: u64,
    pub lines_per_second_1s: f64,
    pub lines_per_second_10s: f64,
    pub files: usize,
    pub read_lag_seconds: u64,
    pub read_lag_bytes: u64,
    /// (key, rule) entries the shards track.
    pub keys_tracked: u64,
    pub bans: TopBans,
    pub sinks: Vec<SinkStatus>,
    /// Busiest first (rate over 10 s).
    pub vhosts: Vec<TopVhost>,
    /// Busiest first (rate over 10 s, then fill).
    pub keys: Vec<TopKey>,
    /// How old the shards' sample of the keys is (none before the first sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_age_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopBans {
    pub active: u64,
    /// Decided since start (manual ones included).
    pub since_start: u64,
    pub pardoned: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopVhost {
    /// `-` for lines without a vhost.
    pub vhost: String,
    pub rate_1s: f64,
    pub rate_10s: f64,
    /// Share of 4xx and of 5xx answers over the last ten seconds, 0 to 1.
    pub share_4xx: f64,
    pub share_5xx: f64,
    /// Active bans made for a request to this vhost.
    pub bans: u64,
}

/// What a key is up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Counted, below [`NEAR_PERCENT`] of its burst.
    #[default]
    Counting,
    /// At or above [`NEAR_PERCENT`] of its burst.
    Near,
    /// Over its rule's rate and burst (it overflowed within its rule's ban length), not banned:
    /// a ban that is being decided, or one the table refused.
    Over,
    Banned,
    /// `unban`ned: not banned again by this rule until the pardon ends.
    Pardoned,
    /// In the allowlist (or a trusted proxy): never banned.
    Allowlisted,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Counting => "counting",
            KeyState::Near => "near",
            KeyState::Over => "over",
            KeyState::Banned => "banned",
            KeyState::Pardoned => "pardoned",
            KeyState::Allowlisted => "allowlisted",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopKey {
    /// The address or prefix the rule keys on.
    pub key: String,
    /// The vhost: the rule's own when it keys on client and vhost, else the one the client
    /// sent most requests to lately (counted while someone looks), else the one its ban names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    /// The rule whose bucket is fullest (its tightest).
    pub rule: String,
    pub rate_1s: f64,
    pub rate_10s: f64,
    /// That bucket's level in % of the rule's burst (0 for a rule without burst).
    pub fill: f64,
    /// Requests counted since its first request of this spell.
    pub requests: u64,
    pub state: KeyState,
    /// RFC 3339: the end of its ban or pardon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// `/api/history`: the last 15 minutes, a point every [`History::step_seconds`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub step_seconds: u64,
    pub points: Vec<Point>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Unix milliseconds (wall clock) at the end of the step.
    pub t: i64,
    pub lines_per_second: f64,
    /// The busiest vhosts' lines per second over the step (at most a few; the rest summed
    /// under `other`).
    pub vhosts: Vec<Rated>,
    /// Bans decided during the step.
    pub bans: u64,
    /// The busiest keys' rates (over 10 s) at the end of the step.
    pub keys: Vec<Rated>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rated {
    pub name: String,
    pub rate: f64,
}
