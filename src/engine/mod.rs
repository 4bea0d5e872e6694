//! The rate engine: per-key `limit_req` buckets, sharded over threads that each own their keys.
//!
//! Rules are validated [`RuleSpec`]s; requests arrive as [`Hit`]s in batches
//! ([`ShardMsg`]); shards report [`ShardOut`]: offenses (a request nginx would have rejected),
//! progress ticks of log time, and final statistics.
//!
//! In the order a request meets them: [`rule`] turns a parsed record into rule bits (on the
//! parsing thread), [`router`] batches hits to the shard that owns their key, [`shard`] merges
//! producers by log time and runs [`table`], one shard's maps of key → [`bucket`] state.
//! `model_tests` checks the whole path against a literal reference model.

use std::sync::Arc;

use crate::addr::Cidr;
use crate::hit::{Hit, VhostId};

pub mod bucket;
pub mod router;
pub mod rule;
pub mod rule_ids;
pub mod shard;
pub mod table;
pub mod top;

#[cfg(test)]
mod model_tests;

/// A request rate in nginx's units: milli-requests per second (`20r/s` → 20_000, `30r/m` → 500).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rate {
    pub milli_per_sec: u64,
    /// As written in the config (`"20r/s"`), echoed in events.
    pub text: String,
}

/// A status matcher: one code (`404`) or a class (`4xx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    Class(u8),
}

/// One validated rule. Produced by `config`, compiled into matchers by `engine::rule`.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSpec {
    pub name: String,
    pub rate: Rate,
    pub burst: u32,
    /// First ban length.
    pub ban_ms: u64,
    /// Repeat offenders within `recidive_window_ms` get `ban * factor^n`, at most `max_ban_ms`.
    pub ban_factor: f64,
    pub max_ban_ms: u64,
    pub recidive_window_ms: u64,
    /// Upper-case methods; empty = any.
    pub methods: Vec<String>,
    /// Empty = any status.
    pub statuses: Vec<StatusMatch>,
    /// Path matchers on the request target (query included); each list empty = no constraint,
    /// otherwise any entry of the list must match.
    pub path_prefix: Vec<String>,
    pub path_suffix: Vec<String>,
    pub path_contains: Vec<String>,
    /// Lower-case extensions without the dot; a path (query stripped) ending in one is not counted.
    pub exclude_extensions: Vec<String>,
    /// Vhost globs (`*.example.com`); empty = every vhost.
    pub vhosts: Vec<String>,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Key on client + vhost instead of client alone.
    pub key_by_vhost: bool,
}

/// Who offended: an address or prefix, and the vhost when the rule keys on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub net: Cidr,
    /// [`crate::hit::NO_VHOST`] unless the rule keys on client + vhost.
    pub vhost: VhostId,
}

/// A request that overflowed a rule's bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offense {
    pub key: Key,
    /// The rule's id: its index in config order, unless a reload renumbered the rules (see
    /// [`rule_ids`]).
    pub rule: u16,
    /// Log time of the overflowing request.
    pub time_ms: i64,
    /// Log time of the first request of this key's current tracking period.
    pub first_seen_ms: i64,
    /// Requests counted for this key and rule since `first_seen_ms` (this one included).
    pub requests: u64,
    /// Vhost of the overflowing request.
    pub vhost: VhostId,
    /// `HIT_*` flags of the overflowing request.
    pub flags: u8,
}

/// Producer → shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// A batch of hits from one producer, with two marks (log times; `i64::MIN` while unknown).
    ///
    /// `low_ms`: the shard may process everything up to `low_ms` minus the allowed lateness.
    /// In replay it is a promise (the minimum over the producer's open sources of the newest
    /// time each has produced), in watch a decision to wait no longer (idle files are not waited
    /// for). A hit that comes older than what was processed is *late* and still counted exactly
    /// (see [`shard`]).
    ///
    /// `settled_ms` (≤ `low_ms`): a promise that the producer's sources still being read will
    /// send nothing older, minus the lateness. Shards forget idle state only up to there, so
    /// that a late line finds its key's bucket as replay would.
    Hits {
        producer: u32,
        low_ms: i64,
        settled_ms: i64,
        hits: Vec<Hit>,
    },
    /// The producer will send nothing more.
    Done { producer: u32 },
    /// From now on, hits carry the bits of these rules (a SIGHUP reload; see
    /// [`KeyTable::set_rules`](table::KeyTable::set_rules)). `reset`: forget every bucket
    /// (the routing of addresses to shards changed).
    Rules {
        rules: Arc<rule::CompiledRules>,
        reset: bool,
    },
    /// Send the busiest `k` entries by fill and by rate to `reply` (`floodwatch top`; see
    /// [`top`]). Asked by whoever holds a sender, between batches: no per-hit cost.
    Top {
        k: usize,
        reply: crossbeam_channel::Sender<top::ShardTop>,
    },
}

/// Counters a shard reports when it finishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub hits: u64,
    /// Hits older than what the shard had processed when they arrived (still counted, each at
    /// its own time against its key's state).
    pub late: u64,
    /// Hits too old to count at all: older than the oldest time the shard can still represent
    /// (about 24 days before the newest hit it has seen). Skipped, never counted at another time.
    pub stale: u64,
    /// Most (key, rule) entries tracked at once.
    pub keys_peak: u64,
    pub keys_at_end: u64,
    /// Idle, recovered entries dropped.
    pub evicted: u64,
    /// New keys refused because the cap was reached.
    pub cap_refused: u64,
    /// Offenses reported (overflows outside a key's report suppression).
    pub offenses: u64,
    /// Every overflowing request, reported or suppressed.
    pub overflows: u64,
}

/// Shard → decider.
#[derive(Debug)]
pub enum ShardOut {
    Offense {
        shard: u32,
        offense: Offense,
    },
    /// Everything up to `upto_ms` (log time) has been processed by this shard; offenses with an
    /// earlier time follow only from late hits. State older than `settled_ms` may be forgotten:
    /// no hit older than that is expected any more.
    Tick {
        shard: u32,
        upto_ms: i64,
        settled_ms: i64,
        /// The shard's counters so far (`keys_at_end`: keys tracked now), so that a long run
        /// (watch's metrics) sees them without waiting for `Finished`. A copy of a few words.
        stats: ShardStats,
    },
    Finished {
        shard: u32,
        stats: ShardStats,
    },
}
