//! Talking to a running watch: `floodwatch bans`, `ban`, `unban`, `status` and `top`.
//!
//! A watch with a control socket (`[state] socket`, by default `control.sock` in `[state] dir`)
//! serves it on its own event loop (`server`). The protocol is one JSON request per
//! connection, a line such as `{"command":"unban","key":"203.0.113.7"}`, answered by one JSON
//! object, `{"ok":true,...}` or `{"ok":false,"error":"..."}`, after which watch closes the
//! connection. The socket is the admin's: mode 0600, and watch answers only root and the user
//! it runs as (checked on the connection's peer credentials). This module holds the requests
//! and answers both sides share; [`client`] connects and asks, [`render`] shows the answers.

pub mod client;
pub mod cmd;
pub mod key;
pub mod reach;
pub mod render;
pub mod server;
pub mod top;
pub mod top_text;
pub mod tui;

use crate::fleet::FleetCounts;
use serde::{Deserialize, Serialize};

/// The longest request watch reads (a request is a few dozen bytes).
pub const MAX_REQUEST: usize = 4096;

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// The active bans; with `all`, the pardoned keys too (see [`Pardon`]).
    Bans {
        #[serde(default, skip_serializing_if = "is_false")]
        all: bool,
    },
    /// How the watch is doing; with `files`, each followed file's health too.
    Status {
        #[serde(default, skip_serializing_if = "is_false")]
        files: bool,
    },
    /// A manual ban of `key` (an address or CIDR) for `seconds`, under `rule` or a rule of its
    /// own (`manual`). A range wider than /16 (IPv4) or /48 (IPv6) is refused unless `force`
    /// (see [`key`]).
    Ban {
        key: String,
        seconds: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        force: bool,
    },
    /// Lift the bans of `key` (an address or CIDR: the keys inside it) under every rule.
    Unban { key: String },
    /// One frame of `floodwatch top` ([`top::Top`]): at most `limit` keys and vhosts.
    Top {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A key an admin lifted a detected ban of (`unban`): until `until` (RFC 3339), the end of the
/// lifted ban's term, the rule does not ban it again (the flood that caused it is forgiven). A
/// manual ban of the key ends the pardon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pardon {
    pub key: String,
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    pub until: String,
}

/// The answer to `unban`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbanned {
    /// The bans lifted.
    pub lifted: Vec<LiftedBan>,
    /// Bans of wider ranges that contain the key, left in place (lifting them would let in
    /// every address of the range): the admin lifts them by their own key.
    pub wider: Vec<LiftedBan>,
}

/// One ban named in an [`Unbanned`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiftedBan {
    pub key: String,
    pub rule: String,
    /// RFC 3339: when it would have ended. A lifted ban detected by a rule keeps covering its
    /// term: the same flood (lines read late, or still coming) does not ban the key again
    /// under that rule before then.
    pub until: String,
    /// Whether an admin made the ban (then no pardon is needed: nothing was counted).
    #[serde(default)]
    pub manual: bool,
}

/// The answer to `status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    /// RFC 3339.
    pub started: String,
    pub uptime_seconds: u64,
    /// The config file in force (none: the built-in defaults).
    pub config: Option<String>,
    /// RFC 3339: when the config in force was read (at start, or by the last reload taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_loaded: Option<String>,
    /// Whether the config file was modified after it was loaded (a SIGHUP would read it).
    #[serde(default)]
    pub config_changed: bool,
    /// The last SIGHUP's config, when it was refused (the running one kept); cleared by a
    /// reload that is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_refused: Option<RefusedReload>,
    pub files: usize,
    pub folders: usize,
    pub lines: u64,
    /// Over the last ten seconds or so.
    pub lines_per_second: f64,
    pub malformed: u64,
    pub late: u64,
    pub stale: u64,
    pub keys_tracked: u64,
    pub read_lag: ReadLag,
    pub bans: BanCounts,
    pub sinks: Vec<SinkStatus>,
    /// `[fleet]`: bans shared with other servers (none without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
    /// Each followed file's health, when asked (`status --files`, `--json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_health: Option<Vec<FileHealth>>,
}

/// A config a SIGHUP read and did not take.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedReload {
    /// RFC 3339.
    pub at: String,
    pub error: String,
}

/// One followed file, as `status --files` shows it. Counts are of the lines read since watch
/// started (or since the file was first followed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHealth {
    pub path: String,
    /// Whether the file is open (a named path may not exist yet).
    pub open: bool,
    pub lines: u64,
    pub malformed: u64,
    /// Well-formed lines whose client is not an address.
    pub not_an_address: u64,
    /// How old its newest line read is (none before a line with a time was read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_line_age_seconds: Option<u64>,
    /// Its size less what was read of it (none when it is not open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread_bytes: Option<u64>,
    /// The last unusable-lines warning about it, if any (see `source::unusable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The fleet's part of `status` (see [`crate::fleet::FleetStats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    pub node: String,
    pub connected: bool,
    /// Written in line with the other fields, as they were before they were shared.
    #[serde(flatten)]
    pub counts: FleetCounts,
    /// Other servers' bans in force here.
    pub active: u64,
    /// From publication there to application here, milliseconds.
    pub lag_last_ms: u64,
    pub lag_p50_ms: u64,
    pub lag_p99_ms: u64,
    /// While Redis cannot be reached (RFC 3339), and the last error of that outage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Fleet-wide counting, when a rule has `scope = "fleet"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counting: Option<crate::fleet::counting::CountingStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadLag {
    /// Unread bytes of the file most behind, and of all files.
    pub worst_bytes: u64,
    pub total_bytes: u64,
    /// How old the newest line read of a file with unread bytes is.
    pub worst_seconds: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanCounts {
    pub active: u64,
    /// Bans decided since start (restored ones not included), manual ones included.
    pub since_start: u64,
    /// Per rule, in config order; `manual` last when it has active bans.
    pub by_rule: Vec<RuleBans>,
    /// Keys pardoned by `unban` whose pardon still runs (`bans --all` lists them).
    #[serde(default)]
    pub pardoned: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleBans {
    pub rule: String,
    pub active: u64,
    /// Bans the rule decided since start.
    pub since_start: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStatus {
    pub name: String,
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
    pub retries: u64,
    /// Events handed to the sink that it has not delivered yet.
    pub pending: u64,
    /// RFC 3339: since when deliveries fail and are being retried; none while it works.
    pub failing_since: Option<String>,
    /// The last failure and when it happened, even if the sink has worked since.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `status --json`'s fleet object keeps its fields in line and in order, as scripts read it.
    #[test]
    fn the_fleet_status_is_written_with_its_counts_in_line() {
        let f = FleetStatus {
            node: "web-01".into(),
            connected: false,
            counts: FleetCounts {
                published: 7,
                queued: 2,
                dropped: 3,
                reconnects: 1,
                applied: 5,
                duplicates: 4,
                refused: 6,
            },
            active: 8,
            lag_last_ms: 1250,
            lag_p50_ms: 900,
            lag_p99_ms: 2000,
            unreachable_since: Some("2026-11-25T10:00:00Z".into()),
            last_error: Some("connection refused".into()),
            counting: None,
        };
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(
            json,
            "{\"node\":\"web-01\",\"connected\":false,\"published\":7,\"queued\":2,\
             \"dropped\":3,\"reconnects\":1,\"applied\":5,\"duplicates\":4,\"refused\":6,\
             \"active\":8,\"lag_last_ms\":1250,\"lag_p50_ms\":900,\"lag_p99_ms\":2000,\
             \"unreachable_since\":\"2026-11-25T10:00:00Z\",\"last_error\":\"connection refused\"}"
        );
        assert_eq!(serde_json::from_str::<FleetStatus>(&json).unwrap(), f);
        let connected = FleetStatus {
            connected: true,
            unreachable_since: None,
            last_error: None,
            ..f
        };
        let json = serde_json::to_string(&connected).unwrap();
        assert!(json.ends_with("\"lag_p99_ms\":2000}"), "{json}");
        assert_eq!(
            serde_json::from_str::<FleetStatus>(&json).unwrap(),
            connected
        );
    }
}
