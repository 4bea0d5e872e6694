//! The follower thread: reads the fleet's stream (`XREAD BLOCK`) from the last entry it saw and
//! hands the watch loop, through a channel and the loop's waker, the other nodes' messages;
//! the loop applies them. Each time it connects (at start, after an outage) it first reads the
//! fleet's table of active bans, so a node that starts late or was cut off gets the current
//! set, then goes on from its last entry: nothing the stream still holds is missed, and what
//! arrives twice is applied once.
//!
//! [`RECHECK_AFTER`] after each connection it reads the table once more and hands it over whole:
//! the loop ends the other nodes' bans it holds that the table no longer has. That is how an
//! unban lost with a Redis restarted empty (published while this server could not read it)
//! still reaches this server: by then every node whose publisher is back has written its own
//! active bans into the table again.
//!
//! Everything read is outside data: an entry that is not a valid message is counted and
//! skipped (the first one of a run is logged), never a panic.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use redis::{Connection, RedisResult, Value};

use super::link::{Link, IO_TIMEOUT};
use super::message::{DecodeError, Kind, Message};
use super::{Inbound, Names, Shared};
use crate::clock::wall_ms;

/// How long one read waits in Redis for new entries (also how often the stop flag is seen).
const BLOCK_MS: u64 = 500;
/// Entries per read.
const COUNT: usize = 1024;
/// Entries of the active-ban table this long past their end are removed when read.
const PRUNE_AFTER_MS: i64 = 60_000;
/// How long after a connection the table is read again whole (publishers retry within 2 s).
pub const RECHECK_AFTER: Duration = Duration::from_secs(10);

pub struct Follower {
    pub link: Link,
    pub names: Arc<Names>,
    pub shared: Arc<Shared>,
    /// The last stream entry seen; `None`: start from the stream's end (after reading the
    /// active bans).
    pub cursor: Option<String>,
    pub tx: Sender<Inbound>,
    pub waker: Arc<mio::Waker>,
    pub reported_malformed: bool,
}

impl Follower {
    pub fn run(mut self) {
        let read_timeout = IO_TIMEOUT + Duration::from_millis(BLOCK_MS);
        let mut synced = false;
        let mut recheck_at: Option<Instant> = None;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let Some(conn) = self.link.get(read_timeout, &self.shared.stop) else {
                synced = false;
                continue;
            };
            if synced && recheck_at.is_some_and(|t| Instant::now() >= t) {
                match active_table(conn, &self.names) {
                    Ok(table) => {
                        recheck_at = None;
                        let msgs = table.iter().filter_map(|v| self.message(Some(v))).collect();
                        if self.tx.send(Inbound::Table(msgs)).is_err() {
                            return;
                        }
                        let _ = self.waker.wake();
                    }
                    Err(e) => {
                        self.link.failed(&e);
                        synced = false;
                    }
                }
                continue;
            }
            if !synced {
                recheck_at = Some(Instant::now() + RECHECK_AFTER);
            }
            let step = match synced {
                false => sync(conn, &self.names, &mut self.cursor).map(|m| (m, Vec::new())),
                true => read(conn, &self.names, self.cursor.as_deref().unwrap_or("$"))
                    .map(|e| (Vec::new(), e)),
            };
            match step {
                Ok((active, entries)) => {
                    synced = true;
                    if !self.hand_over(active, entries) {
                        return;
                    }
                }
                Err(e) => {
                    self.link.failed(&e);
                    synced = false;
                }
            }
        }
    }

    /// Passes what was read to the loop; false when the loop is gone.
    fn hand_over(&mut self, active: Vec<Value>, entries: Vec<(String, Option<Value>)>) -> bool {
        if active.is_empty() && entries.is_empty() {
            return true;
        }
        let mut out = Vec::with_capacity(active.len() + entries.len());
        for v in active {
            if let Some(m) = self.message(Some(&v)) {
                out.push(Inbound::Active(m));
            }
        }
        for (id, v) in entries {
            self.cursor = Some(id.clone());
            out.push(match self.message(v.as_ref()) {
                Some(m) => Inbound::Entry { id, msg: m },
                None => Inbound::Seen { id },
            });
        }
        for m in out {
            if self.tx.send(m).is_err() {
                return false;
            }
        }
        let _ = self.waker.wake();
        true
    }

    /// The message in `v`, unless it is this node's own or not a valid message (counted).
    fn message(&mut self, v: Option<&Value>) -> Option<Message> {
        let decoded = match v {
            Some(Value::BulkString(b)) => Message::decode(b),
            Some(Value::SimpleString(s)) => Message::decode(s.as_bytes()),
            _ => Err(DecodeError::NoEventField),
        };
        match decoded {
            Ok(m) if *m.node == *self.names.node => None,
            Ok(m) => Some(m),
            Err(e) => {
                self.shared.malformed.fetch_add(1, Ordering::Relaxed);
                if !self.reported_malformed {
                    self.reported_malformed = true;
                    log::warn!(
                        "fleet: skipping an entry of {} that is not a fleet message ({e}); \
                         further ones are only counted",
                        self.names.stream
                    );
                }
                None
            }
        }
    }
}

/// At (re)connection: where to start reading when there is no cursor yet (the stream's last
/// entry, taken before the table so that nothing falls between the two), then the active bans'
/// messages, pruning entries long over.
fn sync(
    conn: &mut Connection,
    names: &Names,
    cursor: &mut Option<String>,
) -> RedisResult<Vec<Value>> {
    if cursor.is_none() {
        let last: Value = redis::cmd("XREVRANGE")
            .arg(&names.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(conn)?;
        let id = match last {
            Value::Array(entries) => entries.into_iter().next().and_then(entry_id),
            _ => None,
        };
        *cursor = Some(id.unwrap_or_else(|| "0-0".to_string()));
    }
    active_table(conn, names)
}

/// The active-ban table's messages, pruning entries long over.
fn active_table(conn: &mut Connection, names: &Names) -> RedisResult<Vec<Value>> {
    let table: Value = redis::cmd("HGETALL").arg(&names.bans).query(conn)?;
    let now = wall_ms();
    let mut active = Vec::new();
    let mut over = Vec::new();
    for (field, value) in pairs(table) {
        let ended = match &value {
            Value::BulkString(b) => Message::decode(b)
                .is_ok_and(|m| m.kind == Kind::Ban && m.until_ms < now - PRUNE_AFTER_MS),
            _ => false,
        };
        match ended {
            true => over.extend(field),
            false => active.push(value),
        }
    }
    if !over.is_empty() {
        redis::cmd("HDEL")
            .arg(&names.bans)
            .arg(over)
            .query::<()>(conn)?;
    }
    Ok(active)
}

/// New entries after `cursor`, as (id, `event` field); empty when none came within the block.
fn read(
    conn: &mut Connection,
    names: &Names,
    cursor: &str,
) -> RedisResult<Vec<(String, Option<Value>)>> {
    let reply: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(COUNT)
        .arg("BLOCK")
        .arg(BLOCK_MS)
        .arg("STREAMS")
        .arg(&names.stream)
        .arg(cursor)
        .query(conn)?;
    let mut out = Vec::new();
    // [[stream, [[id, [field, value, ...]], ...]]] (a map of streams in RESP3).
    let streams = match reply {
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => Vec::new(),
    };
    for s in streams {
        let Value::Array(mut parts) = s else { continue };
        let Some(Value::Array(entries)) = parts.pop() else {
            continue;
        };
        for e in entries {
            let Value::Array(mut e) = e else { continue };
            let fields = match e.len() {
                2 => e.pop(),
                _ => None,
            };
            let Some(id) = e.pop().and_then(text).filter(|id| is_entry_id(id)) else {
                continue;
            };
            let event = fields.and_then(|f| {
                pairs(f)
                    .into_iter()
                    .find(|(k, _)| k.as_deref() == Some("event"))
                    .map(|(_, v)| v)
            });
            out.push((id, event));
        }
    }
    Ok(out)
}

/// The id of one `[id, fields]` entry.
fn entry_id(entry: Value) -> Option<String> {
    match entry {
        Value::Array(mut e) if !e.is_empty() => text(e.swap_remove(0)).filter(|id| is_entry_id(id)),
        _ => None,
    }
}

/// A flat `[k, v, k, v…]` array (or a map) as (key text, value) pairs.
fn pairs(v: Value) -> Vec<(Option<String>, Value)> {
    match v {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((text(k), v));
            }
            out
        }
        Value::Map(m) => m.into_iter().map(|(k, v)| (text(k), v)).collect(),
        _ => Vec::new(),
    }
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A stream entry id, `MS-SEQ`: the only thing saved as the place to resume from.
pub fn is_entry_id(id: &str) -> bool {
    id.split_once('-')
        .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn entry_ids_and_odd_replies() {
        assert!(is_entry_id("1764064805000-0"));
        for bad in ["", "-", "1-", "a-1", "1-2-3", "1 -2"] {
            assert!(!is_entry_id(bad), "{bad}");
        }
        assert_eq!(
            entry_id(Value::Array(vec![bulk("5-1"), Value::Nil])),
            Some("5-1".into())
        );
        assert_eq!(entry_id(Value::Array(vec![bulk("nope")])), None);
        assert_eq!(entry_id(Value::Nil), None);
        let p = pairs(Value::Array(vec![bulk("node"), bulk("a"), bulk("event")]));
        assert_eq!(p.len(), 1, "an odd field out is ignored");
        assert!(pairs(Value::Int(3)).is_empty());
    }
}
