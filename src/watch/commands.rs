//! What watch does with a control request (see [`crate::control`]): list the bans, report how
//! it is doing, ban or lift a key by hand. Runs on the watch loop between two turns, with the
//! loop's own state: nothing is copied to another thread, and the shards, which own the
//! buckets, go on counting meanwhile.
//!
//! A manual ban or unban is an event like any other: it goes through the output to every sink
//! (the nginx file rewritten, the Cloudflare rule made or deleted, the exec command run), to
//! the log, and into the state saved about once a second.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::clock::wall_ms;
use crate::control::key::KeyError;
use crate::control::{
    self, BanCounts, FleetStatus, LiftedBan, Pardon, ReadLag, RefusedReload, Request, RuleBans,
    SinkStatus, Status, Unbanned,
};
use crate::decide::ban_table::{ManualBanError, TableStats, MANUAL_RULE_NAME};
use crate::decide::event::{write_ban_json, Rfc3339};
use crate::decide::{Ban, Event, Origin};
use crate::pipeline::detector::Detector;
use crate::pipeline::output::Output;
use crate::sink::SinkHealth;

use super::files::Files;
use super::live::{LiveView, Sources};
use super::reload::ConfigState;
use crate::control::server::refuse;
use crate::control::top::{DEFAULT_LIMIT, MAX_LIMIT};

/// The longest manual ban (ten years: "for good" without overflowing any clock).
const MAX_MANUAL_MS: u64 = 3653 * 86_400_000;

/// Lines read per second over the last ten seconds or so: a sample of the line count about
/// once a second, kept by the loop.
#[derive(Debug, Default)]
pub(super) struct LineRate {
    samples: VecDeque<(Instant, u64)>,
}

impl LineRate {
    const KEEP: usize = 11;

    /// Records `lines` (the total so far) if a second has passed since the last sample.
    pub(super) fn sample(&mut self, now: Instant, lines: u64) {
        let due = self
            .samples
            .back()
            .is_none_or(|&(t, _)| now.duration_since(t) >= Duration::from_secs(1));
        if due {
            if self.samples.len() == Self::KEEP {
                self.samples.pop_front();
            }
            self.samples.push_back((now, lines));
        }
    }

    pub(super) fn per_second(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, n0)), Some(&(t1, n1))) if t1 > t0 => {
                n1.saturating_sub(n0) as f64 / t1.duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// When watch started.
#[derive(Clone, Copy, Debug)]
pub(super) struct Started {
    pub wall_ms: i64,
    pub at: Instant,
}

/// The loop's state a request may read or change.
pub(super) struct Ctx<'a, 'o> {
    pub detector: &'a mut Detector,
    pub output: &'a mut Output<'o>,
    pub files: &'a Files,
    pub started: Started,
    /// The ban table's counters at start.
    pub started_stats: TableStats,
    pub config_path: Option<&'a Path>,
    pub config_state: &'a ConfigState,
    pub rate: &'a LineRate,
    pub fleet: Option<&'a crate::fleet::Fleet>,
    pub live: &'a mut LiveView,
}

/// Answers `req`, appending the answer (one JSON object and a newline) to `out`.
pub(super) fn answer(req: Request, cx: Ctx, out: &mut Vec<u8>) {
    match req {
        Request::Bans { all } => bans(&cx, all, out),
        Request::Status { files } => {
            let s = status(cx, files);
            ok(out, "status", &s);
        }
        Request::Ban {
            key,
            seconds,
            rule,
            force,
        } => match ban(cx, &key, seconds, rule.as_deref(), force) {
            Ok(b) => {
                out.extend_from_slice(b"{\"ok\":true,\"ban\":");
                write_ban_json(&b, out);
                out.extend_from_slice(b"}\n");
            }
            Err(e) => refuse(&e.to_string(), out),
        },
        Request::Unban { key } => match unban(cx, &key) {
            Ok(u) => ok(out, "unbanned", &u),
            Err(e) => refuse(&e.to_string(), out),
        },
        Request::Top { limit } => {
            let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
            let top = top(cx, limit);
            ok(out, "top", &top);
        }
    }
}

fn ok(out: &mut Vec<u8>, name: &str, value: &impl serde::Serialize) {
    let v = serde_json::json!({"ok": true, name: value});
    out.extend_from_slice(v.to_string().as_bytes());
    out.push(b'\n');
}

/// The active bans, soonest end first, each as the ban event that started it (as `/bans`);
/// with `all`, the pardoned keys too (`"pardons"`).
fn bans(cx: &Ctx, all: bool, out: &mut Vec<u8>) {
    let table = cx.detector.table();
    let now = wall_ms();
    let _ = write!(out, "{{\"ok\":true,\"now\":\"{}\",\"bans\":", Rfc3339(now));
    super::metrics::render_bans(table, out);
    if all {
        let pardons: Vec<Pardon> = (table.pardons(now).into_iter())
            .map(|p| Pardon {
                key: p.key.net.to_string(),
                rule: p.rule.to_string(),
                vhost: p.vhost.map(|v| v.to_string()),
                until: Rfc3339(p.until_ms).to_string(),
            })
            .collect();
        out.extend_from_slice(b",\"pardons\":");
        let _ = serde_json::to_writer(&mut *out, &pardons);
    }
    out.extend_from_slice(b"}\n");
}

/// Why a manual ban or unban is refused (the client is told, the loop goes on).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("a ban lasts from 1 second to 10 years, not {0} s")]
    Duration(u64),
    #[error(transparent)]
    Table(#[from] ManualBanError),
}

fn ban(cx: Ctx, key: &str, seconds: u64, rule: Option<&str>, force: bool) -> Result<Ban, Refused> {
    let net = control::key::exact(key)?;
    control::key::not_too_wide(&net, force)?;
    let ms = seconds.saturating_mul(1000);
    if ms == 0 || ms > MAX_MANUAL_MS {
        return Err(Refused::Duration(seconds));
    }
    let b = cx
        .detector
        .table_mut()
        .ban_manually(net, rule, wall_ms(), ms)?;
    cx.output.emit(&Event::Ban(b.clone()));
    Ok(b)
}

fn unban(cx: Ctx, key: &str) -> Result<Unbanned, KeyError> {
    let net = control::key::exact(key)?;
    let lifted = cx.detector.table_mut().lift(&net, wall_ms());
    let named = |b: &Ban| LiftedBan {
        key: b.key.net.to_string(),
        rule: b.rule.to_string(),
        until: Rfc3339(b.until_ms).to_string(),
        manual: b.origin != Origin::Detected,
    };
    let mut answer = Unbanned {
        lifted: Vec::with_capacity(lifted.lifted.len()),
        wider: lifted.wider.iter().map(named).collect(),
    };
    for (b, u) in &lifted.lifted {
        answer.lifted.push(named(b));
        cx.output.emit(&Event::Unban(u.clone()));
    }
    Ok(answer)
}

fn status(cx: Ctx, per_file: bool) -> Status {
    let now_ms = wall_ms();
    let table = cx.detector.table();
    let stats = table.stats();
    let ingest = cx.files.ingest_stats();
    let shards = cx.detector.live_stats();
    let lag = cx.files.read_lag(now_ms);
    let names: Vec<&str> = table.rule_names().collect();
    let mut by_rule: Vec<RuleBans> = names
        .iter()
        .zip(table.bans_by_rule())
        .map(|(name, &since_start)| RuleBans {
            rule: name.to_string(),
            active: 0,
            since_start,
        })
        .collect();
    let mut manual = RuleBans {
        rule: MANUAL_RULE_NAME.into(),
        active: 0,
        since_start: table.manual_bans(),
    };
    for b in table.active().filter(|b| b.origin.node().is_none()) {
        let row = match names.iter().position(|n| *n == &*b.rule) {
            Some(i) => &mut by_rule[i],
            None => &mut manual,
        };
        row.active += 1;
    }
    if manual.active + manual.since_start > 0 {
        by_rule.push(manual);
    }
    let (_, folders) = cx.files.counts();
    Status {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        started: Rfc3339(cx.started.wall_ms).to_string(),
        uptime_seconds: cx.started.at.elapsed().as_secs(),
        config: cx.config_path.map(|p| p.display().to_string()),
        config_loaded: Some(Rfc3339(cx.config_state.loaded_ms).to_string()),
        config_changed: cx
            .config_path
            .is_some_and(|p| modified_after(p, cx.config_state.loaded_ms)),
        reload_refused: (cx.config_state.refused.as_ref()).map(|(at, error)| RefusedReload {
            at: Rfc3339(*at).to_string(),
            error: error.clone(),
        }),
        files: cx.files.open_files(),
        folders,
        lines: ingest.lines,
        lines_per_second: cx.rate.per_second(),
        malformed: ingest.malformed.total(),
        late: shards.late,
        stale: shards.stale,
        keys_tracked: shards.keys_at_end,
        read_lag: ReadLag {
            worst_bytes: lag.worst_bytes,
            total_bytes: lag.total_bytes,
            worst_seconds: lag.worst_ms / 1000,
        },
        bans: BanCounts {
            active: table.active_len() as u64,
            since_start: stats.bans - cx.started_stats.bans,
            by_rule,
            pardoned: table.pardons(now_ms).len() as u64,
        },
        sinks: cx.output.sink_health().iter().map(sink_status).collect(),
        fleet: cx.fleet.map(|f| fleet_status(f.stats(), table)),
        file_health: per_file.then(|| cx.files.health(now_ms)),
    }
}

/// Whether the file at `path` was modified after `ms` (wall clock); false when it cannot be
/// told.
fn modified_after(path: &Path, ms: i64) -> bool {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let since_epoch = modified.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    since_epoch.is_some_and(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX) > ms)
}

fn fleet_status(
    f: crate::fleet::FleetStats,
    table: &crate::decide::ban_table::BanTable,
) -> FleetStatus {
    FleetStatus {
        node: f.node,
        connected: f.connected,
        counts: f.counts,
        active: table.active().filter(|b| b.origin.node().is_some()).count() as u64,
        lag_last_ms: f.lag_last_ms,
        lag_p50_ms: f.lag_p50_ms,
        lag_p99_ms: f.lag_p99_ms,
        unreachable_since: f.trouble.as_ref().map(|t| Rfc3339(t.since_ms).to_string()),
        last_error: f.trouble.map(|t| t.error),
        counting: f.counting,
    }
}

/// One frame of `top`: the shards' busiest keys (a fresh sample, waited for when the last
/// one is old: see `live`), the vhosts' rates, the header's figures.
fn top(cx: Ctx, limit: usize) -> crate::control::top::Top {
    cx.live.want(Instant::now(), cx.files.router());
    let table = cx.detector.table();
    let lag = cx.files.read_lag(wall_ms());
    let src = Sources {
        table,
        lines: cx.files.ingest_stats().lines,
        vhost_counts: cx.files.vhost_counts(),
        key_vhosts: cx.files.key_vhosts(),
        files: cx.files.open_files(),
        read_lag_ms: lag.worst_ms,
        read_lag_bytes: lag.worst_bytes,
        uptime: cx.started.at.elapsed(),
        bans_since_start: table.stats().bans.saturating_sub(cx.started_stats.bans),
        sinks: cx.output.sink_health().iter().map(sink_status).collect(),
    };
    cx.live.top(limit, src)
}

pub(super) fn sink_status(h: &SinkHealth) -> SinkStatus {
    let c = &h.counters;
    SinkStatus {
        name: h.name.clone(),
        delivered: c.delivered,
        failed: c.failed,
        dropped: c.dropped,
        retries: c.retries,
        pending: h.pending,
        failing_since: h.trouble.failing_since_ms.map(|t| Rfc3339(t).to_string()),
        last_error: (h.trouble.last_error.as_ref()).map(|(t, e)| format!("{} {e}", Rfc3339(*t))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_rate_is_taken_over_the_last_samples() {
        let mut r = LineRate::default();
        let t0 = Instant::now();
        assert_eq!(r.per_second(), 0.0);
        for s in 0..30u64 {
            r.sample(t0 + Duration::from_secs(s), s * 100);
            // More often than once a second: ignored.
            r.sample(t0 + Duration::from_millis(s * 1000 + 500), 1_000_000);
        }
        assert_eq!(r.per_second(), 100.0);
        r.sample(t0 + Duration::from_secs(30), 2900);
        assert_eq!(r.per_second(), 0.0 + (2900.0 - 2000.0) / 10.0);
    }
}
