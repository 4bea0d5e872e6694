//! The control commands' answers as an admin reads them: aligned tables and plain sentences.
//! `--json` prints the answers themselves instead (see [`super`]).

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{FileHealth, Status, Unbanned};

/// The time in an RFC 3339 text, if it is one.
fn time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text).ok()
}

/// `3h 12m`, `45s`: the two largest units of a length of time.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match () {
        _ if days > 0 => format!("{days}d {hours}h"),
        _ if hours > 0 => format!("{hours}h {mins}m"),
        _ if mins > 0 => format!("{mins}m {secs}s"),
        _ => format!("{secs}s"),
    }
}

/// A `bans` answer as the client reads it: each ban's JSON left where it lies in the answer
/// (a tree of values for 200,000 bans would take seconds and hundreds of megabytes).
#[derive(Debug, Deserialize)]
pub struct BansAnswer<'a> {
    #[serde(borrow, default)]
    pub now: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub bans: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    pub pardons: Option<&'a RawValue>,
}

/// A `bans` answer read for the table: what it shows of each ban, read in the same pass as the
/// answer (the `--json` output keeps each ban whole instead: [`BansAnswer`]).
#[derive(Debug, Deserialize)]
pub struct BansTable<'a> {
    #[serde(borrow, default)]
    pub now: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub bans: Vec<BanRow<'a>>,
    #[serde(borrow, default)]
    pub pardons: Option<&'a RawValue>,
}

impl BansTable<'_> {
    /// The pardons with the answer's time, as [`pardons`] reads them.
    pub fn pardons_answer(&self) -> Value {
        let pardons = (self.pardons)
            .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
            .unwrap_or(Value::Null);
        serde_json::json!({"now": self.now, "pardons": pardons})
    }
}

/// What the table shows of a ban (its event's fields; any missing is shown as `-`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BanRow<'a> {
    #[serde(borrow)]
    key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    rule: Option<Cow<'a, str>>,
    #[serde(borrow)]
    vhost: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    until: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    origin: Option<Cow<'a, str>>,
}

/// The active bans of a `bans` answer as a table, soonest end first (the order watch gives).
pub fn bans(answer: &BansTable) -> String {
    let list = &answer.bans;
    if list.is_empty() {
        return "no active bans\n".into();
    }
    let now = answer.now.as_deref().and_then(time);
    // Cells borrow the answer where they can: 200,000 bans are 1.4 million cells.
    fn cell<'a>(t: &'a Option<Cow<'_, str>>) -> Cow<'a, str> {
        Cow::Borrowed(t.as_deref().unwrap_or("-"))
    }
    let mut rows: Vec<[Cow<str>; 7]> = Vec::with_capacity(list.len() + 1);
    rows.push(["KEY", "RULE", "VHOST", "SINCE", "UNTIL", "LEFT", "ORIGIN"].map(Cow::Borrowed));
    let (mut manual, mut fleet) = (0, 0);
    for b in list {
        let until = cell(&b.until);
        let left = match (now, time(&until)) {
            (Some(now), Some(end)) => Cow::Owned(span(end.duration_since(now).unwrap_or_default())),
            _ => Cow::Borrowed("-"),
        };
        let origin = match (b.reason.as_deref(), b.origin.as_deref()) {
            (Some("manual"), _) => {
                manual += 1;
                Cow::Borrowed("manual")
            }
            (_, Some(node)) => {
                fleet += 1;
                Cow::Borrowed(node)
            }
            _ => Cow::Borrowed("detected"),
        };
        rows.push([
            cell(&b.key),
            cell(&b.rule),
            cell(&b.vhost),
            cell(&b.time),
            until,
            left,
            origin,
        ]);
    }
    let mut out = table(&rows);
    let n = list.len();
    let _ = write!(
        out,
        "{n} active ban{} ({} detected, {manual} manual",
        if n == 1 { "" } else { "s" },
        n - manual - fleet
    );
    let _ = match fleet {
        0 => writeln!(out, ")"),
        _ => writeln!(out, ", {fleet} from the fleet)"),
    };
    out
}

/// Rows as columns padded to their widest cell, two spaces apart.
fn table<const N: usize, S: AsRef<str>>(rows: &[[S; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.as_ref().chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let start = out.len();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            let cell = cell.as_ref();
            out.push_str(cell);
            if i + 1 < N {
                let pad = w - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.truncate(start + out[start..].trim_end().len());
        out.push('\n');
    }
    out
}

/// The `bans` answer's list as `--json` prints it: the array `/bans` serves, one ban per line.
pub fn bans_json(answer: &BansAnswer) -> String {
    if answer.bans.is_empty() {
        return "[]\n".into();
    }
    let mut out = String::with_capacity(answer.bans.iter().map(|b| b.get().len() + 2).sum());
    out.push_str("[\n");
    for (i, b) in answer.bans.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        out.push_str(b.get());
    }
    out.push_str("\n]\n");
    out
}

/// `bans --all --json`: the bans and the pardons, one object on one line.
pub fn bans_and_pardons_json(answer: &BansAnswer) -> String {
    let bans: Vec<&str> = answer.bans.iter().map(|b| b.get()).collect();
    let pardons = answer.pardons.map_or("null", |p| p.get());
    format!("{{\"bans\":[{}],\"pardons\":{pardons}}}\n", bans.join(","))
}

/// A manual ban's answer: what was banned, for how long.
pub fn ban(answer: &Value) -> String {
    let b = &answer["ban"];
    let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("?");
    let secs = b.get("ban_seconds").and_then(Value::as_u64).unwrap_or(0);
    format!(
        "banned {} under rule {} for {} (until {}); every sink applies it as any ban \
         (`floodwatch status` shows how they are doing)\n",
        s("key"),
        s("rule"),
        span(Duration::from_secs(secs)),
        s("until"),
    )
}

/// Why an unban lifted nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotLifted {
    #[error("{0} is not banned")]
    NotBanned(String),
    /// Only wider ranges hold the key: what they are, one line each.
    #[error("{0}")]
    OnlyWider(String),
}

/// An unban's answer; `Err` saying why when nothing was lifted.
pub fn unban(key: &str, u: &Unbanned) -> Result<String, NotLifted> {
    let mut out = String::new();
    for b in &u.lifted {
        let _ = writeln!(
            out,
            "lifted {} (rule {}, would have ended {})",
            b.key, b.rule, b.until
        );
    }
    let detected: Vec<_> = u.lifted.iter().filter(|b| !b.manual).collect();
    if !detected.is_empty() {
        let _ =
            writeln!(
            out,
            "The flood that caused {} is forgiven, not forgotten: its lines already read or still \
             coming do not ban the key again under that rule before the lifted ban would have \
             ended (above); a flood after that bans it again, as a first offense. To never ban \
             it, add it to [allow] and reload.",
            if detected.len() == 1 { "this ban" } else { "these bans" }
        );
    }
    for b in &u.wider {
        let _ = writeln!(
            out,
            "not lifted: {} (rule {}, until {}) contains {key}; `floodwatch unban {}` lifts it for \
             the whole range",
            b.key, b.rule, b.until, b.key
        );
    }
    match (u.lifted.is_empty(), u.wider.is_empty()) {
        (true, true) => Err(NotLifted::NotBanned(key.to_string())),
        (true, false) => Err(NotLifted::OnlyWider(out.trim_end().to_string())),
        _ => Ok(out),
    }
}

/// The pardons of a `bans --all` answer as a table, soonest end first.
pub fn pardons(answer: &Value) -> String {
    let empty = Vec::new();
    let list = (answer.get("pardons").and_then(Value::as_array)).unwrap_or(&empty);
    if list.is_empty() {
        return "no pardoned keys\n".into();
    }
    let now = answer.get("now").and_then(Value::as_str).and_then(time);
    let text = |b: &Value, k: &str| b.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let mut rows = vec![["PARDONED", "RULE", "VHOST", "UNTIL", "LEFT"].map(String::from)];
    for p in list {
        let until = text(p, "until");
        let left = match (now, time(&until)) {
            (Some(now), Some(end)) => span(end.duration_since(now).unwrap_or_default()),
            _ => "-".into(),
        };
        rows.push([
            text(p, "key"),
            text(p, "rule"),
            text(p, "vhost"),
            until,
            left,
        ]);
    }
    let mut out = String::from("\n");
    out.push_str(&table(&rows));
    let n = list.len();
    let _ = writeln!(
        out,
        "{n} pardoned key{}: unbanned by hand, not banned again by that rule before the lifted \
         ban's term ends (a ban by hand ends the pardon)",
        if n == 1 { "" } else { "s" }
    );
    out
}

/// A `status` answer as a page of text: the watch, then its files when they were asked for.
pub fn status(s: &Status) -> String {
    let mut out = status_page(s);
    if let Some(files) = &s.file_health {
        out.push_str(&file_health(files));
    }
    out
}

/// Each followed file's line: counts, age of its newest line, bytes unread; then the warnings.
fn file_health(files: &[FileHealth]) -> String {
    let mut rows = vec![[
        "FILE",
        "LINES",
        "MALFORMED",
        "NOT-AN-ADDRESS",
        "NEWEST LINE",
        "UNREAD",
    ]
    .map(String::from)];
    for f in files {
        let age = match f.newest_line_age_seconds {
            Some(a) => format!("{} ago", span(Duration::from_secs(a))),
            None => "-".into(),
        };
        let unread = match (f.open, f.unread_bytes) {
            (false, _) => "not open".into(),
            (true, Some(b)) => format!("{b} bytes"),
            (true, None) => "-".into(),
        };
        rows.push([
            format!("  {}", f.path),
            f.lines.to_string(),
            f.malformed.to_string(),
            f.not_an_address.to_string(),
            age,
            unread,
        ]);
    }
    let mut out = format!("per file:  {} followed\n", files.len());
    out.push_str(&table(&rows));
    for w in files.iter().filter_map(|f| f.warning.as_deref()) {
        let _ = writeln!(out, "  UNUSABLE LINES: {w}");
    }
    out
}

fn status_page(s: &Status) -> String {
    let mut out = String::new();
    let up = span(Duration::from_secs(s.uptime_seconds));
    let _ = writeln!(
        out,
        "floodwatch {}, pid {}, up {up} (since {})",
        s.version, s.pid, s.started
    );
    let loaded = match &s.config_loaded {
        Some(t) => format!(" (loaded {t})"),
        None => String::new(),
    };
    let _ = match &s.config {
        Some(c) => writeln!(out, "config:    {c}{loaded}"),
        None => writeln!(out, "config:    built-in defaults{loaded}"),
    };
    if s.config_changed && s.reload_refused.is_none() {
        out.push_str(
            "           the file changed since: not reloaded yet (SIGHUP, or systemctl reload)\n",
        );
    }
    if let Some(r) = &s.reload_refused {
        let error = r.error.trim_end().replace('\n', "\n           ");
        let _ = writeln!(
            out,
            "           RELOAD REFUSED at {} (the config above is still in force): {error}",
            r.at
        );
    }
    let _ = writeln!(
        out,
        "files:     {} followed in {} folders",
        s.files, s.folders
    );
    let _ = writeln!(
        out,
        "lines:     {} read, {:.0}/s now; {} malformed, {} late, {} too old to count",
        s.lines, s.lines_per_second, s.malformed, s.late, s.stale
    );
    let _ = writeln!(out, "keys:      {} tracked", s.keys_tracked);
    let lag = &s.read_lag;
    let _ = writeln!(
        out,
        "read lag:  {} bytes unread (file most behind: {} bytes, its newest line read {} ago)",
        lag.total_bytes,
        lag.worst_bytes,
        span(Duration::from_secs(lag.worst_seconds))
    );
    let _ = writeln!(
        out,
        "bans:      {} active, {} since start",
        s.bans.active, s.bans.since_start
    );
    let mut rows = Vec::new();
    for r in &s.bans.by_rule {
        rows.push([
            format!("  {}", r.rule),
            format!("{} active", r.active),
            format!("{} since start", r.since_start),
        ]);
    }
    out.push_str(&table(&rows));
    if s.bans.pardoned > 0 {
        let _ = writeln!(
            out,
            "pardoned:  {} key{} unbanned by hand, not banned again before their term ends \
             (`floodwatch bans --all`)",
            s.bans.pardoned,
            if s.bans.pardoned == 1 { "" } else { "s" }
        );
    }
    if let Some(f) = &s.fleet {
        let _ = writeln!(
            out,
            "fleet:     node {}, {}; {} published, {} queued, {} dropped, {} reconnects; \
             {} applied ({} active), {} duplicates, {} refused; lag {} ms (p50 {} ms, p99 {} ms)",
            f.node,
            match (f.connected, &f.unreachable_since, &f.last_error) {
                (true, ..) => "connected".to_string(),
                (false, Some(since), Some(error)) => {
                    format!("REDIS UNREACHABLE since {since} ({error})")
                }
                (false, ..) => "REDIS UNREACHABLE".to_string(),
            },
            f.counts.published,
            f.counts.queued,
            f.counts.dropped,
            f.counts.reconnects,
            f.counts.applied,
            f.active,
            f.counts.duplicates,
            f.counts.refused,
            f.lag_last_ms,
            f.lag_p50_ms,
            f.lag_p99_ms
        );
        if let Some(c) = &f.counting {
            fleet_counting(&mut out, c);
        }
    }
    if s.sinks.is_empty() {
        out.push_str("sinks:     none (events go to stdout)\n");
        return out;
    }
    out.push_str("sinks:\n");
    let mut rows = Vec::new();
    for k in &s.sinks {
        let health = match &k.failing_since {
            Some(since) => format!("FAILING since {since}"),
            None => "ok".into(),
        };
        rows.push([
            format!("  {}", k.name),
            health,
            format!(
                "{} delivered, {} failed, {} dropped, {} retries, {} pending",
                k.delivered, k.failed, k.dropped, k.retries, k.pending
            ),
        ]);
    }
    out.push_str(&table(&rows));
    for k in s.sinks.iter().filter(|k| k.last_error.is_some()) {
        let _ = writeln!(
            out,
            "  {} last failed: {}",
            k.name,
            k.last_error.as_deref().unwrap_or_default()
        );
    }
    out
}

/// The `status` line of fleet-wide counting: which rules, and whether they count with the
/// fleet now or, Redis away, with this server's requests only.
fn fleet_counting(out: &mut String, c: &crate::fleet::counting::CountingStats) {
    let mode = match (c.mode.as_str(), &c.last_error) {
        ("fleet", _) => format!(
            "counting with the fleet{}",
            if c.cluster { " (Redis Cluster)" } else { "" }
        ),
        (_, Some(e)) => format!("LOCAL COUNTING ONLY, Redis unreachable ({e})"),
        _ => "LOCAL COUNTING ONLY, Redis not reached yet".to_string(),
    };
    let _ = writeln!(
        out,
        "counting:  {} every {} ms: {mode}; {} exchanges, {} offenses, {} fallbacks to local, \
         {} keys; {} commands, {} bytes out, {} bytes in; clock {:+} ms from Redis's",
        c.rules.join(", "),
        c.interval_ms,
        c.exchanges,
        c.offenses,
        c.fallbacks,
        c.keys,
        c.commands,
        c.bytes_out,
        c.bytes_in,
        -c.clock_offset_ms
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{BanCounts, LiftedBan, RuleBans, SinkStatus};
    use serde_json::json;

    #[test]
    fn fleet_counting_says_whether_it_counts_with_the_fleet() {
        let mut c = crate::fleet::counting::CountingStats {
            rules: vec!["spread".into()],
            mode: "fleet".into(),
            cluster: true,
            clock_offset_ms: -2000,
            interval_ms: 200,
            ..Default::default()
        };
        let mut out = String::new();
        fleet_counting(&mut out, &c);
        assert!(
            out.starts_with(
                "counting:  spread every 200 ms: counting with the fleet (Redis Cluster);"
            ),
            "{out}"
        );
        assert!(out.contains("clock +2000 ms from Redis's"), "{out}");
        c.mode = "local".into();
        c.last_error = Some("Connection refused".into());
        let mut out = String::new();
        fleet_counting(&mut out, &c);
        assert!(
            out.contains("LOCAL COUNTING ONLY, Redis unreachable (Connection refused)"),
            "{out}"
        );
    }

    #[test]
    fn spans_keep_two_units() {
        let s = |n| span(Duration::from_secs(n));
        assert_eq!(
            [s(0), s(59), s(61), s(3599), s(3661), s(90_061)],
            ["0s", "59s", "1m 1s", "59m 59s", "1h 1m", "1d 1h"]
        );
    }

    #[test]
    fn bans_are_a_table_with_time_left_and_origin() {
        let answer = json!({"ok": true, "now": "2026-11-25T10:00:00Z", "bans": [
            {"type":"ban","time":"2026-11-25T09:59:00Z","key":"203.0.113.7","rule":"default",
             "vhost":"example.com","until":"2026-11-25T10:09:00Z","ban_seconds":600},
            {"type":"ban","time":"2026-11-25T09:00:00Z","key":"198.51.100.0/24","rule":"manual",
             "until":"2026-11-26T09:00:00Z","ban_seconds":86400,"reason":"manual"}
        ]});
        let text = answer.to_string();
        let t = bans(&serde_json::from_str(&text).unwrap());
        let answer: BansAnswer = serde_json::from_str(&text).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "KEY              RULE     VHOST        SINCE                 UNTIL                 LEFT    ORIGIN");
        assert_eq!(lines[1], "203.0.113.7      default  example.com  2026-11-25T09:59:00Z  2026-11-25T10:09:00Z  9m 0s   detected");
        assert_eq!(lines[2], "198.51.100.0/24  manual   -            2026-11-25T09:00:00Z  2026-11-26T09:00:00Z  23h 0m  manual");
        assert_eq!(lines[3], "2 active bans (1 detected, 1 manual)");
        let empty = r#"{"ok": true, "bans": []}"#;
        assert_eq!(
            bans(&serde_json::from_str(empty).unwrap()),
            "no active bans\n"
        );
        let none: BansAnswer = serde_json::from_str(empty).unwrap();
        assert_eq!(bans_json(&none), "[]\n");
        let j = bans_json(&answer);
        let back: Value = serde_json::from_str(&j).unwrap();
        let whole: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, whole["bans"]);
        assert_eq!(j.lines().count(), 4, "one ban per line: {j}");
    }

    #[test]
    fn an_unban_says_what_was_lifted_and_what_was_not() {
        let lifted = |key: &str, manual| LiftedBan {
            key: key.into(),
            rule: "default".into(),
            until: "2026-11-25T10:10:05Z".into(),
            manual,
        };
        let u = Unbanned {
            lifted: vec![lifted("203.0.113.7", false)],
            wider: vec![],
        };
        let t = unban("203.0.113.7", &u).unwrap();
        assert!(t.starts_with(
            "lifted 203.0.113.7 (rule default, would have ended 2026-11-25T10:10:05Z)\n"
        ));
        assert!(t.contains("forgiven, not forgotten"), "{t}");
        let u = Unbanned {
            lifted: vec![lifted("203.0.113.7", true)],
            wider: vec![],
        };
        assert!(!unban("203.0.113.7", &u).unwrap().contains("forgiven"));
        let u = Unbanned {
            lifted: vec![],
            wider: vec![lifted("203.0.113.0/24", false)],
        };
        let e = unban("203.0.113.9", &u).unwrap_err().to_string();
        assert!(e.starts_with("not lifted: 203.0.113.0/24 (rule default, until 2026-11-25T10:10:05Z) contains 203.0.113.9; `floodwatch unban 203.0.113.0/24`"), "{e}");
        assert_eq!(
            unban("192.0.2.1", &Unbanned::default())
                .unwrap_err()
                .to_string(),
            "192.0.2.1 is not banned"
        );
    }

    #[test]
    fn status_shows_the_config_a_refused_reload_and_each_file() {
        let s = Status {
            config: Some("/etc/fw.toml".into()),
            config_loaded: Some("2026-11-25T08:00:00Z".into()),
            reload_refused: Some(crate::control::RefusedReload {
                at: "2026-11-25T09:00:00Z".into(),
                error: "/etc/fw.toml:3:1: bad\nsecond line".into(),
            }),
            file_health: Some(vec![FileHealth {
                path: "/l/a".into(),
                open: true,
                lines: 40,
                malformed: 40,
                newest_line_age_seconds: Some(61),
                unread_bytes: Some(0),
                warning: Some("/l/a: 100 % of the lines".into()),
                ..FileHealth::default()
            }]),
            ..Status::default()
        };
        let t = status(&s);
        for want in [
            "config:    /etc/fw.toml (loaded 2026-11-25T08:00:00Z)\n",
            "           RELOAD REFUSED at 2026-11-25T09:00:00Z (the config above is still in force): /etc/fw.toml:3:1: bad\n           second line\n",
            "per file:  1 followed\nFILE    LINES  MALFORMED  NOT-AN-ADDRESS  NEWEST LINE  UNREAD\n  /l/a  40     40         0               1m 1s ago    0 bytes\n",
            "  UNUSABLE LINES: /l/a: 100 % of the lines\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in:\n{t}");
        }
        assert!(!t.contains("pardoned"), "{t}");
        let mut s = Status::default();
        s.bans.pardoned = 2;
        let t = status(&s);
        assert!(t.contains("config:    built-in defaults\n"), "{t}");
        assert!(t.contains("\npardoned:  2 keys unbanned by hand"), "{t}");
        assert!(!t.contains("per file"), "{t}");
    }

    #[test]
    fn status_shows_rules_and_failing_sinks() {
        let s = Status {
            version: "0.1.0".into(),
            pid: 42,
            started: "2026-11-25T08:00:00Z".into(),
            uptime_seconds: 7200,
            files: 2000,
            folders: 1000,
            lines: 123,
            lines_per_second: 12.4,
            bans: BanCounts {
                active: 3,
                since_start: 5,
                by_rule: vec![RuleBans {
                    rule: "default".into(),
                    active: 3,
                    since_start: 5,
                }],
                pardoned: 2,
            },
            sinks: vec![SinkStatus {
                name: "cf".into(),
                failing_since: Some("2026-11-25T09:58:00Z".into()),
                last_error: Some("2026-11-25T09:59:00Z delivering: HTTP 500".into()),
                pending: 2,
                ..SinkStatus::default()
            }],
            ..Status::default()
        };
        let t = status(&s);
        for want in [
            "floodwatch 0.1.0, pid 42, up 2h 0m (since 2026-11-25T08:00:00Z)\n",
            "files:     2000 followed in 1000 folders\n",
            "lines:     123 read, 12/s now; 0 malformed, 0 late, 0 too old to count\n",
            "bans:      3 active, 5 since start\n  default  3 active  5 since start\n",
            "  cf  FAILING since 2026-11-25T09:58:00Z  0 delivered, 0 failed, 0 dropped, 0 retries, 2 pending\n",
            "  cf last failed: 2026-11-25T09:59:00Z delivering: HTTP 500\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in:\n{t}");
        }
    }
}
