//! Decisions: offenses become ban and unban events (allowlist, duplicate suppression,
//! escalation for repeat offenders, expiry).

use std::sync::Arc;

use crate::engine::Key;

pub mod allowlist;
pub mod ban_table;
pub mod decider;
pub mod event;
#[cfg(test)]
mod model_tests;

/// An event for sinks; serialised by `decide::event` as docs/guide.md (Events) describes.
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
    pub origin: Origin,
}

/// Who decided a ban.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// The rules, from the logs.
    #[default]
    Detected,
    /// An admin (`floodwatch ban`): nothing was counted, so rate, burst, requests and offense
    /// mean nothing for it.
    Manual,
    /// Another server of the fleet, by its node name (see [`crate::fleet`]): banned under the
    /// pseudo-rule `fleet`, and like a manual ban nothing was counted here.
    Fleet(Arc<str>),
}

impl Origin {
    /// The node that decided a ban of another server; none for this server's own bans.
    pub fn node(&self) -> Option<&str> {
        match self {
            Origin::Fleet(node) => Some(node),
            Origin::Detected | Origin::Manual => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Unban {
    pub time_ms: i64,
    pub key: Key,
    pub rule: Arc<str>,
    pub reason: UnbanReason,
}

/// Why a ban ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnbanReason {
    /// Its time was up.
    #[default]
    Expired,
    /// A reload allowlisted the key.
    Allowlisted,
    /// An admin lifted it (`floodwatch unban`).
    Manual,
    /// Another server's ban that the fleet no longer holds (its unban was lost while this
    /// server was away; see [`crate::fleet`]).
    Withdrawn,
}

impl UnbanReason {
    /// The event's `reason` field; none for an expiry (the common case, and the events' shape
    /// before reasons were given).
    pub fn name(self) -> Option<&'static str> {
        match self {
            UnbanReason::Expired => None,
            UnbanReason::Allowlisted => Some("allowlisted"),
            UnbanReason::Manual => Some("manual"),
            UnbanReason::Withdrawn => Some("withdrawn"),
        }
    }

    /// The reason [`UnbanReason::name`] names; an expiry for none or a name it does not know.
    pub fn from_name(name: Option<&str>) -> UnbanReason {
        match name {
            Some("allowlisted") => UnbanReason::Allowlisted,
            Some("manual") => UnbanReason::Manual,
            Some("withdrawn") => UnbanReason::Withdrawn,
            _ => UnbanReason::Expired,
        }
    }
}
