//! One fleet event as it travels: the JSON object a node writes into the stream entry's `event`
//! field (and, for a ban, into the fleet's table of active bans), and its checking on the way
//! in. Redis answers are outside data: whatever another node, an old version or a stranger with
//! access wrote there, a message is taken only with a valid node name, a parsed address or range
//! no wider than a rule's key may be, and times that fit; anything else is refused with a reason
//! (counted and skipped by the follower, never a panic).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::addr::Cidr;
use crate::decide::{Event, Origin, UnbanReason};

use crate::config::fleet::is_node_name;

/// The widest ranges a remote message may name: those a rule's key may have (`/8`, `/16`), so
/// that no message can cut off whole networks.
const MIN_PREFIX_V4: u8 = 8;
const MIN_PREFIX_V6: u16 = 16;
/// Times outside 2000..=9999 are not times any node wrote.
const MIN_TIME_MS: i64 = 946_684_800_000;
const MAX_TIME_MS: i64 = 253_402_300_799_999;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ban,
    /// An admin's unban (`floodwatch unban`): lifts the key on every node.
    Unban,
    /// One of this node's active bans written again into the fleet's table of active bans
    /// (not the stream) after the publisher connected: a Redis that came back empty learns
    /// them again for the nodes that start later.
    Refresh,
}

/// A fleet event, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    /// The node that decided it.
    pub node: Arc<str>,
    pub key: Cidr,
    /// The rule that banned there (informational: rules differ between nodes).
    pub rule: Arc<str>,
    /// The offense's time (ban) or the lift's (unban), at the node that decided it.
    pub time_ms: i64,
    /// When the ban ends; 0 for an unban.
    pub until_ms: i64,
    /// The publishing node's wall clock when it sent the message (0 until then): the fleet's
    /// propagation lag is measured from it.
    pub sent_ms: i64,
}

/// The JSON shape, as written and read.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    kind: Kind,
    #[serde(borrow)]
    node: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    rule: std::borrow::Cow<'a, str>,
    time: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    until: i64,
    #[serde(default)]
    sent: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Message {
    /// What of a local event the fleet hears: this server's own bans (detected or an admin's)
    /// and an admin's unbans. Expiries are not sent (every node ends a ban at its `until`),
    /// nor allowlist unbans (the allowlist is each server's own), nor anything that came from
    /// the fleet (no loops).
    pub fn of_local(ev: &Event, node: &Arc<str>) -> Option<Message> {
        match ev {
            Event::Ban(b) if !matches!(b.origin, Origin::Fleet(_)) => Some(Message {
                kind: Kind::Ban,
                node: node.clone(),
                key: b.key.net,
                rule: b.rule.clone(),
                time_ms: b.time_ms,
                until_ms: b.until_ms,
                sent_ms: 0,
            }),
            Event::Unban(u) if u.reason == UnbanReason::Manual => Some(Message {
                kind: Kind::Unban,
                node: node.clone(),
                key: u.key.net,
                rule: u.rule.clone(),
                time_ms: u.time_ms,
                until_ms: 0,
                sent_ms: 0,
            }),
            Event::Ban(_) | Event::Unban(_) => None,
        }
    }

    /// The JSON object, with `sent` as given.
    pub fn encode(&self, sent_ms: i64) -> String {
        self.encode_as(self.kind, sent_ms)
    }

    /// The JSON object as a message of `kind` (a refresh is written as the ban it is).
    pub fn encode_as(&self, kind: Kind, sent_ms: i64) -> String {
        let wire = Wire {
            kind,
            node: (&*self.node).into(),
            key: self.key.to_string().into(),
            rule: (&*self.rule).into(),
            time: self.time_ms,
            until: self.until_ms,
            sent: sent_ms,
        };
        // Strings and integers only: serialisation cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Reads and checks a message written by [`Message::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let w: Wire = serde_json::from_slice(bytes).map_err(DecodeError::NotAMessage)?;
        if !is_node_name(&w.node) {
            return Err(DecodeError::NodeName(w.node.into_owned()));
        }
        if !is_node_name(&w.rule) {
            return Err(DecodeError::RuleName(w.rule.into_owned()));
        }
        let key: Cidr = w.key.parse()?;
        let too_wide = match key.addr.is_v4() {
            true => key.prefix < MIN_PREFIX_V4,
            false => u16::from(key.prefix) < MIN_PREFIX_V6,
        };
        if too_wide {
            return Err(DecodeError::TooWide(key));
        }
        let in_range = |t: i64| (MIN_TIME_MS..=MAX_TIME_MS).contains(&t);
        let ban = w.kind != Kind::Unban;
        if !in_range(w.time) || (ban && !in_range(w.until)) {
            return Err(DecodeError::Times {
                time: w.time,
                until: w.until,
            });
        }
        if ban && w.until < w.time {
            return Err(DecodeError::EndsBeforeStart);
        }
        Ok(Message {
            kind: w.kind,
            node: Arc::from(&*w.node),
            key,
            rule: Arc::from(&*w.rule),
            time_ms: w.time,
            until_ms: if ban { w.until } else { 0 },
            sent_ms: w.sent,
        })
    }
}

/// Why bytes read from the fleet are not a message [`Message::decode`] takes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("not a message: {0}")]
    NotAMessage(serde_json::Error),
    #[error("bad node name {0:?}")]
    NodeName(String),
    #[error("bad rule name {0:?}")]
    RuleName(String),
    #[error(transparent)]
    Key(#[from] crate::addr::CidrError),
    #[error("{0} is wider than any key may be")]
    TooWide(Cidr),
    #[error("times out of range ({time}, {until})")]
    Times { time: i64, until: i64 },
    #[error("ends before it starts")]
    EndsBeforeStart,
    /// A stream entry without the message's field.
    #[error("no event field")]
    NoEventField,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Ban, Unban};
    use crate::engine::Key;
    use crate::hit::NO_VHOST;

    const T: i64 = 1_764_064_805_000;

    fn ban(origin: Origin) -> Event {
        Event::Ban(Ban {
            time_ms: T,
            key: Key {
                net: "203.0.113.7".parse().unwrap(),
                vhost: NO_VHOST,
            },
            rule: Arc::from("default"),
            vhost: None,
            rate: Arc::from("20r/s"),
            burst: 100,
            requests: 412,
            first_seen_ms: T - 4000,
            ban_ms: 600_000,
            until_ms: T + 600_000,
            offense: 1,
            via_proxy: false,
            origin,
        })
    }

    fn unban(reason: UnbanReason) -> Event {
        Event::Unban(Unban {
            time_ms: T,
            key: Key {
                net: "203.0.113.0/24".parse().unwrap(),
                vhost: NO_VHOST,
            },
            rule: Arc::from("fleet"),
            reason,
        })
    }

    #[test]
    fn local_bans_and_admin_unbans_are_sent_and_nothing_else() {
        let node: Arc<str> = Arc::from("web-01");
        let m = Message::of_local(&ban(Origin::Detected), &node).unwrap();
        assert_eq!(
            m.encode(T + 5),
            r#"{"type":"ban","node":"web-01","key":"203.0.113.7","rule":"default","time":1764064805000,"until":1764065405000,"sent":1764064805005}"#
        );
        assert_eq!(
            Message::decode(m.encode(T + 5).as_bytes()).unwrap(),
            Message {
                sent_ms: T + 5,
                ..m.clone()
            }
        );
        assert!(Message::of_local(&ban(Origin::Manual), &node).is_some());
        assert!(Message::of_local(&ban(Origin::Fleet(Arc::from("web-02"))), &node).is_none());
        let u = Message::of_local(&unban(UnbanReason::Manual), &node).unwrap();
        assert_eq!(
            u.encode(0),
            r#"{"type":"unban","node":"web-01","key":"203.0.113.0/24","rule":"fleet","time":1764064805000,"sent":0}"#
        );
        assert_eq!(Message::decode(u.encode(0).as_bytes()).unwrap(), u);
        let refresh = Message {
            kind: Kind::Refresh,
            ..m.clone()
        };
        assert!(refresh.encode(0).starts_with(r#"{"type":"refresh","#));
        assert_eq!(
            Message::decode(refresh.encode(0).as_bytes()).unwrap(),
            refresh
        );
        assert!(refresh
            .encode_as(Kind::Ban, 0)
            .starts_with(r#"{"type":"ban","#));
        for reason in [UnbanReason::Expired, UnbanReason::Allowlisted] {
            assert!(Message::of_local(&unban(reason), &node).is_none());
        }
    }

    #[test]
    fn what_no_node_would_write_is_refused() {
        let ok = r#"{"type":"ban","node":"web-01","key":"203.0.113.7","rule":"default","time":1764064805000,"until":1764065405000}"#;
        assert!(Message::decode(ok.as_bytes()).is_ok());
        for (bad, why) in [
            ("", "not a message"),
            ("[1]", "not a message"),
            (&ok.replace("ban\"", "kick\""), "not a message"),
            (&ok.replace("web-01", "web 01; rm -rf /"), "bad node name"),
            (&ok.replace("web-01", ""), "bad node name"),
            (&ok.replace("\"default\"", "\"a/b\""), "bad rule name"),
            (
                &ok.replace("203.0.113.7", "203.0.113.7; reboot"),
                "not an IP address",
            ),
            (&ok.replace("203.0.113.7", "0.0.0.0/0"), "wider than"),
            (&ok.replace("203.0.113.7", "2001::/12"), "wider than"),
            (&ok.replace("1764065405000", "-1"), "out of range"),
            (
                &ok.replace("1764065405000", "99999999999999999"),
                "out of range",
            ),
            (&ok.replace("1764065405000", "1764064804000"), "ends before"),
            (&ok.replace(",\"until\":1764065405000", ""), "out of range"),
        ] {
            let e = Message::decode(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
