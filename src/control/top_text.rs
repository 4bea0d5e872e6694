//! `floodwatch top`'s words and numbers, shared by the plain frame (`top --once`) and the
//! terminal view: the header lines, the rows of vhosts and keys, their sorting and filtering.
//! Every text from the logs (keys, vhosts) is shown as it is, cut to its column and stripped of
//! control characters, which a terminal would obey.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use super::render::span;
use super::top::{KeyState, Top, TopKey, TopVhost};

/// How the keys are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortBy {
    /// Rate over the last ten seconds, then fill.
    #[default]
    Rate,
    /// Fill of the tightest bucket, then rate.
    Fill,
}

impl SortBy {
    pub fn next(self) -> SortBy {
        match self {
            SortBy::Rate => SortBy::Fill,
            SortBy::Fill => SortBy::Rate,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SortBy::Rate => "rate",
            SortBy::Fill => "fill",
        }
    }
}

/// The keys to show: those of `vhost` (when filtering), ordered by `sort`.
pub fn keys<'a>(top: &'a Top, sort: SortBy, vhost: Option<&str>) -> Vec<&'a TopKey> {
    let mut keys: Vec<&TopKey> = (top.keys.iter())
        .filter(|k| vhost.is_none_or(|v| k.vhost.as_deref() == Some(v)))
        .collect();
    keys.sort_by(|a, b| {
        let rate = b.rate_10s.total_cmp(&a.rate_10s);
        let fill = b.fill.total_cmp(&a.fill);
        match sort {
            SortBy::Rate => rate.then(fill),
            SortBy::Fill => fill.then(rate),
        }
        .then(a.key.cmp(&b.key))
    });
    keys
}

/// Text from the logs made safe for a terminal: control characters replaced, at most `width`
/// characters (an ellipsis marks a cut).
pub fn clean(s: &str, width: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if out.chars().count() > width {
        out = out.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
    }
    out
}

/// `1234`, `12.3k`, `1.2M`: a rate in at most six characters.
pub fn rate(r: f64) -> String {
    match r {
        r if r >= 999_500.0 => format!("{:.1}M", r / 1e6),
        r if r >= 9_999.5 => format!("{:.1}k", r / 1e3),
        r if r >= 99.5 => format!("{r:.0}"),
        r => format!("{r:.1}"),
    }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// The first header line: uptime, lines/s, files, read lag, bans (active, and decided since
/// start).
pub fn header(t: &Top) -> String {
    format!(
        "up {} · lines/s {} (10s {}) · files {} · lag {}s · bans {} ({} new)",
        span(Duration::from_secs(t.uptime_seconds)),
        rate(t.lines_per_second_1s),
        rate(t.lines_per_second_10s),
        t.files,
        t.read_lag_seconds,
        t.bans.active,
        t.bans.since_start,
    )
}

/// The second header line: each sink's health, the keys tracked.
pub fn sinks_line(t: &Top) -> String {
    let mut out = String::from("sinks:");
    if t.sinks.is_empty() {
        out.push_str(" none (events on stdout)");
    }
    for s in &t.sinks {
        let health = match (&s.failing_since, s.pending) {
            (Some(since), _) => format!("FAILING since {}", clock(since)),
            (None, 0) => "ok".into(),
            (None, n) => format!("ok, {n} pending"),
        };
        let _ = write!(out, " {} {health} ·", clean(&s.name, 24));
    }
    let out = out.trim_end_matches(" ·").to_string();
    format!("{out} · {} keys tracked", t.keys_tracked)
}

/// `10:12:03` of an RFC 3339 time (the whole text when it is not one).
fn clock(rfc3339: &str) -> String {
    match rfc3339.get(11..19) {
        Some(hms) if humantime::parse_rfc3339(rfc3339).is_ok() => hms.to_string(),
        _ => clean(rfc3339, 25),
    }
}

/// A key's state as a short text: `banned 9m 59s`, `near`...
pub fn state(k: &TopKey, now: Option<SystemTime>) -> String {
    let left = (k.until.as_deref())
        .and_then(|u| humantime::parse_rfc3339(u).ok())
        .zip(now)
        .map(|(end, now)| span(end.duration_since(now).unwrap_or_default()));
    match (k.state, left) {
        (KeyState::Banned | KeyState::Pardoned, Some(left)) => {
            format!("{} {left}", k.state.as_str())
        }
        (s, _) => s.as_str().to_string(),
    }
}

/// The vhosts' columns: name, 1 s and 10 s rates, 4xx and 5xx shares, bans.
pub const VHOST_HEADS: [&str; 6] = ["VHOST", "1s", "10s", "4xx", "5xx", "BANS"];

pub fn vhost_row(v: &TopVhost, width: usize) -> [String; 6] {
    [
        clean(&v.vhost, width),
        rate(v.rate_1s),
        rate(v.rate_10s),
        percent(v.share_4xx),
        percent(v.share_5xx),
        v.bans.to_string(),
    ]
}

/// The keys' columns: key, vhost, rule, 1 s and 10 s rates, fill, state.
pub const KEY_HEADS: [&str; 7] = ["KEY", "VHOST", "RULE", "1s", "10s", "FILL", "STATE"];

pub fn key_row(k: &TopKey, now: Option<SystemTime>) -> [String; 7] {
    [
        clean(&k.key, 39),
        clean(k.vhost.as_deref().unwrap_or("-"), 16),
        clean(&k.rule, 10),
        rate(k.rate_1s),
        rate(k.rate_10s),
        format!("{:.0}%", k.fill),
        state(k, now),
    ]
}

/// One plain frame (`top --once`): the header, the vhosts, the keys.
pub fn frame(t: &Top, sort: SortBy, vhost: Option<&str>, rows: usize) -> String {
    let now = humantime::parse_rfc3339(&t.now).ok();
    let mut out = format!(
        "floodwatch {} · {}\n{}\n{}\n\n",
        clean(&t.version, 16),
        t.now,
        header(t),
        sinks_line(t)
    );
    let mut vrows = vec![VHOST_HEADS.map(String::from)];
    vrows.extend(t.vhosts.iter().take(rows).map(|v| vhost_row(v, 32)));
    if t.vhosts.is_empty() {
        out.push_str("no lines read in the last seconds\n");
    } else {
        out.push_str(&columns(&vrows, &[false, true, true, true, true, true]));
    }
    out.push('\n');
    let keys = keys(t, sort, vhost);
    if keys.is_empty() {
        out.push_str("no key counted in the last seconds\n");
    } else {
        let mut krows = vec![KEY_HEADS.map(String::from)];
        krows.extend(keys.iter().take(rows).map(|k| key_row(k, now)));
        let right = [false, false, false, true, true, true, false];
        out.push_str(&columns(&krows, &right));
    }
    out
}

/// Rows as columns two spaces apart, numbers (`right`) aligned right.
fn columns<const N: usize>(rows: &[[String; N]], right: &[bool; N]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let w = widths[i];
            let _ = match right[i] {
                true => write!(line, "{cell:>w$}  "),
                false => write!(line, "{cell:<w$}  "),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::control::top::{TopBans, TopVhost};
    use crate::control::SinkStatus;

    pub(crate) fn sample() -> Top {
        Top {
            version: "0.1.0".into(),
            now: "2026-11-25T10:00:00Z".into(),
            uptime_seconds: 192,
            lines_per_second_1s: 12_345.0,
            lines_per_second_10s: 11_000.0,
            files: 12,
            read_lag_seconds: 0,
            read_lag_bytes: 0,
            keys_tracked: 4321,
            bans: TopBans {
                active: 1,
                since_start: 3,
                pardoned: 0,
            },
            sinks: vec![SinkStatus {
                name: "deny".into(),
                ..SinkStatus::default()
            }],
            vhosts: vec![TopVhost {
                vhost: "shop.example".into(),
                rate_1s: 900.0,
                rate_10s: 850.5,
                share_4xx: 0.25,
                share_5xx: 0.01,
                bans: 1,
            }],
            keys: vec![
                TopKey {
                    key: "203.0.113.7".into(),
                    vhost: Some("shop.example".into()),
                    rule: "flood".into(),
                    rate_1s: 480.0,
                    rate_10s: 450.0,
                    fill: 100.0,
                    requests: 5000,
                    state: KeyState::Banned,
                    until: Some("2026-11-25T10:10:00Z".into()),
                },
                TopKey {
                    key: "198.51.100.2\u{1b}[2J".into(),
                    rule: "flood".into(),
                    rate_1s: 3.0,
                    rate_10s: 2.5,
                    fill: 85.0,
                    requests: 40,
                    state: KeyState::Near,
                    ..TopKey::default()
                },
            ],
            sample_age_ms: Some(200),
        }
    }

    #[test]
    fn a_plain_frame_shows_the_header_vhosts_and_keys_within_80_columns() {
        let text = frame(&sample(), SortBy::Rate, None, 20);
        assert!(
            text.contains(
                "up 3m 12s · lines/s 12.3k (10s 11.0k) · files 12 · lag 0s · bans 1 (3 new)"
            ),
            "{text}"
        );
        assert!(
            text.contains("sinks: deny ok · 4321 keys tracked"),
            "{text}"
        );
        assert!(
            text.contains("shop.example  900  850  25%   1%     1"),
            "{text}"
        );
        assert!(text.contains("203.0.113.7"), "{text}");
        assert!(text.contains("banned 10m 0s"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "no escape reaches the terminal: {text:?}"
        );
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    }

    #[test]
    fn keys_sort_by_rate_or_fill_and_filter_by_vhost() {
        let mut t = sample();
        t.keys[1].fill = 100.0;
        t.keys[0].fill = 50.0;
        let order = |sort, vhost| -> Vec<String> {
            keys(&t, sort, vhost)
                .iter()
                .map(|k| k.key.clone())
                .collect()
        };
        assert_eq!(order(SortBy::Rate, None)[0], "203.0.113.7");
        assert_eq!(order(SortBy::Fill, None)[0], "198.51.100.2\u{1b}[2J");
        assert_eq!(order(SortBy::Rate, Some("shop.example")), ["203.0.113.7"]);
        assert!(order(SortBy::Rate, Some("other")).is_empty());
        assert_eq!(rate(0.25), "0.2");
        assert_eq!(rate(1_234_567.0), "1.2M");
        assert_eq!(clean("abcdef", 4), "abc…");
    }
}
