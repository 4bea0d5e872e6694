//! The publisher thread: sends the outbox's messages to Redis in order, in pipelined batches,
//! and removes them from the outbox only once Redis took them. Each message is one stream entry
//! (`XADD … MAXLEN ~`, fields `node` and `event`) and, for a ban, an entry of the fleet's
//! table of active bans (a hash, field `KEY NODE`), which a node starting late or coming back
//! reads first; an admin's unban removes the key's entries from it. A batch cut by a failure is
//! sent again whole: an entry may then be in the stream twice, which the nodes applying it
//! take once (a ban of a key already banned as long changes nothing).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::{Connection, RedisResult};

use super::link::{Link, IO_TIMEOUT};
use super::message::{Kind, Message};
use super::outbox::Outbox;
use super::{Names, Shared};
use crate::clock::wall_ms;

/// Messages per pipeline: one round trip for a flood's worth of bans.
const BATCH: usize = 512;
/// How long the thread waits for a message before looking at the stop flag again.
const IDLE_WAIT: Duration = Duration::from_millis(200);

pub struct Publisher {
    pub link: Link,
    pub outbox: Arc<Outbox>,
    pub names: Arc<Names>,
    pub shared: Arc<Shared>,
}

impl Publisher {
    /// Runs until the stop flag is set and the outbox is empty or Redis away.
    pub fn run(mut self) {
        // Connected from the start, so that `status` tells at once whether Redis is reachable.
        self.link.get(IO_TIMEOUT, &self.shared.stop);
        loop {
            let stopping = self.shared.stop.load(Ordering::Relaxed);
            let batch = self.outbox.front(BATCH, IDLE_WAIT);
            if batch.is_empty() {
                if stopping {
                    return;
                }
                continue;
            }
            let Some(conn) = self.link.get(IO_TIMEOUT, &self.shared.stop) else {
                if stopping {
                    return;
                }
                continue;
            };
            match send(conn, &self.names, &batch) {
                Ok(()) => {
                    self.outbox.remove_front(batch.len());
                    let n = batch.iter().filter(|m| m.kind != Kind::Refresh).count() as u64;
                    self.shared.published.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.link.failed(&e);
                    if stopping {
                        return;
                    }
                }
            }
        }
    }
}

/// Sends `batch` in one pipeline (after one read per admin's unban of a range), as one
/// transaction: a follower reading the table of active bans never sees a stream entry whose
/// table change is still to come (it would end that ban as lifted; see `follower`).
fn send(conn: &mut Connection, names: &Names, batch: &[Message]) -> RedisResult<()> {
    let sent = wall_ms();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for m in batch {
        let event = m.encode(sent);
        if m.kind != Kind::Refresh {
            pipe.cmd("XADD")
                .arg(&names.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(names.max_len)
                .arg("*")
                .arg("node")
                .arg(&*m.node)
                .arg("event")
                .arg(&event)
                .ignore();
        }
        match m.kind {
            Kind::Ban => {
                let field = format!("{} {}", m.key, m.node);
                pipe.cmd("HSET")
                    .arg(&names.bans)
                    .arg(field)
                    .arg(&event)
                    .ignore();
            }
            Kind::Refresh => {
                let field = format!("{} {}", m.key, m.node);
                let ban = m.encode_as(Kind::Ban, sent);
                pipe.cmd("HSET")
                    .arg(&names.bans)
                    .arg(field)
                    .arg(ban)
                    .ignore();
            }
            Kind::Unban => {
                for field in fields_within(conn, names, m)? {
                    pipe.cmd("HDEL").arg(&names.bans).arg(field).ignore();
                }
            }
        }
    }
    pipe.query::<()>(conn)
}

/// The fields of the active-ban table whose key lies within the unban's key.
fn fields_within(conn: &mut Connection, names: &Names, m: &Message) -> RedisResult<Vec<String>> {
    let fields: Vec<String> = redis::cmd("HKEYS").arg(&names.bans).query(conn)?;
    Ok(fields
        .into_iter()
        .filter(|f| {
            let key = f.split(' ').next().unwrap_or_default();
            key.parse::<crate::addr::Cidr>()
                .is_ok_and(|k| k.within(&m.key))
        })
        .collect())
}
