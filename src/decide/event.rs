//! Events as JSON lines (docs/guide.md, Events): one compact object each, fixed field order.
//!
//! Serialisation goes through serde_json so that any text a log can put in a vhost or a config
//! in a rule name is escaped correctly; keys and times are written through their `Display`
//! straight into the output buffer (no intermediate strings).

use std::fmt::Display;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use super::{Ban, Event, Origin, Unban};

/// Appends `ev` as one JSON object and a newline to `out`.
pub fn write_json_line(ev: &Event, out: &mut Vec<u8>) {
    let written = match ev {
        Event::Ban(b) => serde_json::to_writer(&mut *out, &BanJson::from(b)),
        Event::Unban(u) => serde_json::to_writer(&mut *out, &UnbanJson::from(u)),
    };
    // Writing into a Vec cannot fail and every field serialises infallibly (times are clamped
    // into the printable range), so an error here would be a bug, not bad input.
    debug_assert!(written.is_ok(), "event serialisation failed: {written:?}");
    out.push(b'\n');
}

/// Appends the ban event of `b` as one JSON object, without a newline (watch's `/bans` lists
/// the active bans as the events that started them).
pub fn write_ban_json(b: &Ban, out: &mut Vec<u8>) {
    let written = serde_json::to_writer(&mut *out, &BanJson::from(b));
    debug_assert!(written.is_ok(), "ban serialisation failed: {written:?}");
}

/// `ev` as one JSON line (with its newline), for tests and simple callers.
pub fn to_json_line(ev: &Event) -> String {
    let mut out = Vec::with_capacity(320);
    write_json_line(ev, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Serialize)]
struct BanJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: Rfc3339,
    key: Text<&'a crate::addr::Cidr>,
    rule: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    vhost: Option<&'a str>,
    /// What was counted: none for a manual ban.
    #[serde(flatten)]
    counted: Option<Counted<'a>>,
    ban_seconds: u64,
    until: Rfc3339,
    #[serde(skip_serializing_if = "Option::is_none")]
    offense: Option<u32>,
    #[serde(skip_serializing_if = "is_false")]
    via_proxy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// The node of the fleet that decided it (none for this server's own bans).
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'a str>,
}

#[derive(Serialize)]
struct Counted<'a> {
    rate: &'a str,
    burst: u32,
    requests: u64,
    first_seen: Rfc3339,
}

impl<'a> From<&'a Ban> for BanJson<'a> {
    fn from(b: &'a Ban) -> Self {
        let detected = b.origin == Origin::Detected;
        BanJson {
            kind: "ban",
            time: Rfc3339(b.time_ms),
            key: Text(&b.key.net),
            rule: &b.rule,
            vhost: b.vhost.as_deref(),
            counted: detected.then_some(Counted {
                rate: &b.rate,
                burst: b.burst,
                requests: b.requests,
                first_seen: Rfc3339(b.first_seen_ms),
            }),
            ban_seconds: b.ban_ms / 1000,
            until: Rfc3339(b.until_ms),
            offense: detected.then_some(b.offense),
            via_proxy: b.via_proxy,
            reason: (b.origin == Origin::Manual).then_some("manual"),
            origin: b.origin.node(),
        }
    }
}

#[derive(Serialize)]
struct UnbanJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: Rfc3339,
    key: Text<&'a crate::addr::Cidr>,
    rule: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

impl<'a> From<&'a Unban> for UnbanJson<'a> {
    fn from(u: &'a Unban) -> Self {
        UnbanJson {
            kind: "unban",
            time: Rfc3339(u.time_ms),
            key: Text(&u.key.net),
            rule: &u.rule,
            reason: u.reason.name(),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Serialises a value as the JSON string of its `Display`.
struct Text<T>(T);

impl<T: Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Milliseconds since the epoch as an RFC 3339 UTC time with second precision.
pub struct Rfc3339(pub i64);

/// The last millisecond humantime can print (9999-12-31T23:59:59.999Z). Log times come from
/// hostile input and ban ends can be far off, so times are clamped into 1970..=9999 rather than
/// letting the formatter fail.
const MAX_PRINTABLE_MS: i64 = 253_402_300_799_999;

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.clamp(0, MAX_PRINTABLE_MS) as u64;
        let t = UNIX_EPOCH + Duration::from_millis(ms);
        write!(f, "{}", humantime::format_rfc3339_seconds(t))
    }
}

/// One event as a line of the log (stderr, the journal), as fail2ban logs its bans: the key
/// first, then `name=value` pairs. The vhost comes from log lines, so it is quoted and escaped.
pub struct LogLine<'a>(pub &'a Event);

impl Display for LogLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Event::Ban(b) if b.origin == Origin::Manual => write!(
                f,
                "ban {} rule={} reason=manual for={}s until={}",
                b.key.net,
                b.rule,
                b.ban_ms / 1000,
                Rfc3339(b.until_ms)
            ),
            Event::Ban(b) if b.origin.node().is_some() => write!(
                f,
                "ban {} rule={} origin={} for={}s until={}",
                b.key.net,
                b.rule,
                b.origin.node().unwrap_or_default(),
                b.ban_ms / 1000,
                Rfc3339(b.until_ms)
            ),
            Event::Ban(b) => {
                write!(f, "ban {} rule={}", b.key.net, b.rule)?;
                if let Some(v) = &b.vhost {
                    write!(f, " vhost={v:?}")?;
                }
                write!(
                    f,
                    " requests={} since={} offense={} for={}s until={}",
                    b.requests,
                    Rfc3339(b.first_seen_ms),
                    b.offense,
                    b.ban_ms / 1000,
                    Rfc3339(b.until_ms)
                )
            }
            Event::Unban(u) => {
                write!(f, "unban {} rule={}", u.key.net, u.rule)?;
                if let Some(reason) = u.reason.name() {
                    write!(f, " reason={reason}")?;
                }
                write!(f, " at={}", Rfc3339(u.time_ms))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::Key;
    use crate::hit::NO_VHOST;

    fn ms(rfc3339: &str) -> i64 {
        let t = humantime::parse_rfc3339(rfc3339).unwrap();
        t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
    }

    fn key(s: &str) -> Key {
        Key {
            net: s.parse().unwrap(),
            vhost: NO_VHOST,
        }
    }

    fn ban() -> Ban {
        Ban {
            time_ms: ms("2026-11-25T10:00:05Z") + 730,
            key: key("203.0.113.7"),
            rule: Arc::from("default"),
            vhost: Some(Arc::from("example.com")),
            rate: Arc::from("20r/s"),
            burst: 100,
            requests: 412,
            first_seen_ms: ms("2026-11-25T10:00:01Z"),
            ban_ms: 600_000,
            until_ms: ms("2026-11-25T10:10:05Z") + 730,
            offense: 1,
            via_proxy: false,
            origin: Default::default(),
        }
    }

    #[test]
    fn ban_matches_the_design_example() {
        assert_eq!(
            to_json_line(&Event::Ban(ban())),
            concat!(
                r#"{"type":"ban","time":"2026-11-25T10:00:05Z","key":"203.0.113.7","#,
                r#""rule":"default","vhost":"example.com","rate":"20r/s","burst":100,"#,
                r#""requests":412,"first_seen":"2026-11-25T10:00:01Z","ban_seconds":600,"#,
                r#""until":"2026-11-25T10:10:05Z","offense":1}"#,
                "\n"
            )
        );
    }

    #[test]
    fn a_ban_alone_is_its_event_line_without_the_newline() {
        let mut out = Vec::new();
        write_ban_json(&ban(), &mut out);
        let line = to_json_line(&Event::Ban(ban()));
        assert_eq!(String::from_utf8(out).unwrap(), line.trim_end());
    }

    #[test]
    fn unban_matches_the_design_example() {
        let u = Unban {
            time_ms: ms("2026-11-25T10:10:05Z"),
            key: key("203.0.113.7"),
            rule: Arc::from("default"),
            reason: Default::default(),
        };
        assert_eq!(
            to_json_line(&Event::Unban(u)),
            "{\"type\":\"unban\",\"time\":\"2026-11-25T10:10:05Z\",\"key\":\"203.0.113.7\",\"rule\":\"default\"}\n"
        );
    }

    #[test]
    fn vhost_omitted_when_unknown_and_via_proxy_only_when_set() {
        let mut b = ban();
        b.vhost = None;
        b.via_proxy = true;
        b.key = key("2001:db8:1:2::/64");
        b.offense = 3;
        b.ban_ms = 2_400_000;
        b.until_ms = b.time_ms + 2_400_000;
        assert_eq!(
            to_json_line(&Event::Ban(b)),
            concat!(
                r#"{"type":"ban","time":"2026-11-25T10:00:05Z","key":"2001:db8:1:2::/64","#,
                r#""rule":"default","rate":"20r/s","burst":100,"#,
                r#""requests":412,"first_seen":"2026-11-25T10:00:01Z","ban_seconds":2400,"#,
                r#""until":"2026-11-25T10:40:05Z","offense":3,"via_proxy":true}"#,
                "\n"
            )
        );
    }

    #[test]
    fn hostile_text_is_escaped() {
        let mut b = ban();
        b.vhost = Some(Arc::from("ev\"il\\.com\n\u{1}\u{e9}"));
        b.rule = Arc::from("r\"1");
        let line = to_json_line(&Event::Ban(b));
        assert!(
            line.contains(r#""rule":"r\"1","vhost":"ev\"il\\.com\n\u0001é","#),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["vhost"], "ev\"il\\.com\n\u{1}\u{e9}");
    }

    #[test]
    fn out_of_range_times_are_clamped_not_fatal() {
        let u = Unban {
            time_ms: i64::MIN,
            key: key("::1"),
            rule: Arc::from("default"),
            reason: Default::default(),
        };
        assert!(to_json_line(&Event::Unban(u)).contains(r#""time":"1970-01-01T00:00:00Z""#));
        let mut b = ban();
        b.until_ms = i64::MAX;
        assert!(to_json_line(&Event::Ban(b)).contains(r#""until":"9999-12-31T23:59:59Z""#));
    }

    #[test]
    fn appends_to_existing_buffer() {
        let mut out = b"x\n".to_vec();
        let u = Event::Unban(Unban {
            time_ms: 0,
            key: key("10.0.0.1"),
            rule: Arc::from("a"),
            reason: Default::default(),
        });
        write_json_line(&u, &mut out);
        write_json_line(&u, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with("\"rule\":\"a\"}\n"));
    }

    #[test]
    fn log_lines_name_the_key_first_and_escape_the_vhost() {
        let ban = Ban {
            time_ms: 1_764_064_805_000,
            key: Key {
                net: "203.0.113.7".parse().unwrap(),
                vhost: NO_VHOST,
            },
            rule: Arc::from("flood"),
            vhost: Some(Arc::from("evil\n.example \"x\"")),
            rate: Arc::from("20r/s"),
            burst: 100,
            requests: 412,
            first_seen_ms: 1_764_064_801_000,
            ban_ms: 600_000,
            until_ms: 1_764_065_405_000,
            offense: 2,
            via_proxy: false,
            origin: Default::default(),
        };
        assert_eq!(
            LogLine(&Event::Ban(ban.clone())).to_string(),
            r#"ban 203.0.113.7 rule=flood vhost="evil\n.example \"x\"" requests=412 since=2025-11-25T10:00:01Z offense=2 for=600s until=2025-11-25T10:10:05Z"#
        );
        let unban = Unban {
            time_ms: ban.until_ms,
            key: ban.key,
            rule: ban.rule,
            reason: Default::default(),
        };
        assert_eq!(
            LogLine(&Event::Unban(unban)).to_string(),
            "unban 203.0.113.7 rule=flood at=2025-11-25T10:10:05Z"
        );
    }
}
