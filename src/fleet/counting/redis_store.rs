//! The fleet's counts in Redis: one server, or a Redis Cluster whose slot map is read at
//! connection (`CLUSTER SLOTS`; a server without cluster support answers with an error, and is
//! then the only node). An exchange's commands are grouped by the node that owns their hash's
//! slot and sent as one pipeline per node; a redirection (`MOVED`, `ASK`), a node down or any
//! error drops every connection, and the next exchange connects and reads the map again.
//!
//! It also keeps the offset between this server's clock and Redis's (`TIME`, at connection
//! and every 30 s): windows are numbered on Redis's clock, so that servers whose clocks differ
//! still put the same moment in the same window.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, ConnectionInfo, ConnectionLike, Value};

use super::slot::slot;
use super::store::{Op, Reply, Store};
use crate::clock::wall_ms;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An exchange that takes longer is a Redis gone: the counts go to local counting.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
const CLOCK_EVERY: Duration = Duration::from_secs(30);

type Node = (String, u16);

/// Traffic counters, for metrics and the bench.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub commands: u64,
    pub bytes_out: u64,
    /// As encoded in RESP (counted from the replies).
    pub bytes_in: u64,
    pub pipelines: u64,
}

pub struct RedisStore {
    base: ConnectionInfo,
    /// None until connected.
    nodes: Option<Nodes>,
    /// Redis's clock minus this server's, milliseconds.
    offset_ms: i64,
    clock_read: Option<Instant>,
    pub traffic: Traffic,
}

struct Nodes {
    /// The node connected first (the URL's); the only one without a cluster.
    first: Node,
    conns: HashMap<Node, redis::Connection>,
    /// (first slot, last slot, node), or empty without a cluster.
    slots: Vec<(u16, u16, Node)>,
}

impl RedisStore {
    /// The store `cfg` names; fails when the client cannot be built (the key and why).
    pub fn new(cfg: &crate::config::Fleet) -> Result<RedisStore, (&'static str, String)> {
        let client = crate::config::fleet::client(&cfg.url, &cfg.tls)?;
        Ok(RedisStore {
            base: client.get_connection_info().clone(),
            nodes: None,
            offset_ms: 0,
            clock_read: None,
            traffic: Traffic::default(),
        })
    }

    /// Whether connections are up (after a successful exchange or [`RedisStore::connect`]).
    pub fn is_connected(&self) -> bool {
        self.nodes.is_some()
    }

    /// Redis's clock minus this server's (0 before the first connection).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// Whether the store is a cluster (as read at the last connection).
    pub fn is_cluster(&self) -> bool {
        self.nodes.as_ref().is_some_and(|n| !n.slots.is_empty())
    }

    fn info_for(&self, node: &Node) -> ConnectionInfo {
        let (host, port) = node.clone();
        let addr = match &self.base.addr {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        ConnectionInfo {
            addr,
            redis: self.base.redis.clone(),
        }
    }

    fn open(info: ConnectionInfo) -> Result<redis::Connection, String> {
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        let c = client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| c.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// Connects to the URL's node, reads Redis's clock and the cluster's slot map.
    pub fn connect(&mut self) -> Result<(), String> {
        self.nodes = None;
        let first: Node = match &self.base.addr {
            ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
            ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            ConnectionAddr::Unix(_) => (String::new(), 0),
        };
        let mut conn = match &self.base.addr {
            ConnectionAddr::Unix(_) => Self::open(self.base.clone())?,
            _ => Self::open(self.info_for(&first))?,
        };
        self.offset_ms = redis_offset(&mut conn)?;
        self.clock_read = Some(Instant::now());
        let slots = match redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(&mut conn) {
            Ok(v) => parse_slots(&v, &first.0)?,
            // "cluster support disabled": a single server.
            Err(_) => Vec::new(),
        };
        let mut conns = HashMap::new();
        conns.insert(first.clone(), conn);
        self.nodes = Some(Nodes {
            first,
            conns,
            slots,
        });
        Ok(())
    }

    /// Asks the first node `PING` (an idle counter's check that Redis is still there); an
    /// error drops the connections, as a failed exchange does.
    pub fn ping(&mut self) -> Result<(), String> {
        let r = (|| {
            if self.nodes.is_none() {
                self.connect()?;
            }
            let nodes = self.nodes.as_mut().ok_or("not connected")?;
            let conn = nodes.conns.get_mut(&nodes.first).ok_or("not connected")?;
            redis::cmd("PING")
                .query::<String>(conn)
                .map(drop)
                .map_err(|e| e.to_string())
        })();
        if r.is_err() {
            self.nodes = None;
        }
        r
    }

    fn node_of(nodes: &Nodes, hash: &str) -> Node {
        if nodes.slots.is_empty() {
            return nodes.first.clone();
        }
        let s = slot(hash.as_bytes());
        nodes
            .slots
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&s))
            .map_or_else(|| nodes.first.clone(), |(_, _, n)| n.clone())
    }

    fn try_exchange(&mut self, ops: &[Op]) -> Result<Vec<Reply>, String> {
        if self.nodes.is_none() {
            self.connect()?;
        }
        if self.clock_read.is_none_or(|t| t.elapsed() >= CLOCK_EVERY) {
            let nodes = self.nodes.as_mut().ok_or("not connected")?;
            let conn = nodes.conns.get_mut(&nodes.first).ok_or("not connected")?;
            self.offset_ms = redis_offset(conn)?;
            self.clock_read = Some(Instant::now());
        }
        let Some(nodes) = &self.nodes else {
            return Err("not connected".into());
        };
        let mut by_node: HashMap<Node, Vec<usize>> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            by_node
                .entry(Self::node_of(nodes, op.hash()))
                .or_default()
                .push(i);
        }
        let mut replies: Vec<Option<Reply>> = vec![None; ops.len()];
        for (node, idx) in by_node {
            let mut packed = Vec::with_capacity(idx.len() * 64);
            for &i in &idx {
                encode(&mut packed, &ops[i]);
            }
            let info = self.info_for(&node);
            let nodes = self.nodes.as_mut().ok_or("not connected")?;
            let conn = match nodes.conns.entry(node.clone()) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(Self::open(info)?),
            };
            let values = conn
                .req_packed_commands(&packed, 0, idx.len())
                .map_err(|e| format!("{}:{}: {e}", node.0, node.1))?;
            self.traffic.pipelines += 1;
            self.traffic.commands += idx.len() as u64;
            self.traffic.bytes_out += packed.len() as u64;
            for (&i, v) in idx.iter().zip(values) {
                self.traffic.bytes_in += resp_len(&v);
                replies[i] =
                    Some(reply(&ops[i], v).map_err(|e| format!("{}:{}: {e}", node.0, node.1))?);
            }
        }
        replies
            .into_iter()
            .map(|r| r.ok_or_else(|| "a command got no reply".to_string()))
            .collect()
    }
}

impl Store for RedisStore {
    fn exchange(&mut self, ops: &[Op]) -> Result<Vec<Reply>, String> {
        let r = self.try_exchange(ops);
        if r.is_err() {
            // Connections and slot map are made again at the next exchange.
            self.nodes = None;
        }
        r
    }
}

/// Redis's clock minus this server's (`TIME`, taken as read halfway through the round trip).
fn redis_offset(conn: &mut redis::Connection) -> Result<i64, String> {
    let before = wall_ms();
    let (secs, micros): (i64, i64) = redis::cmd("TIME")
        .query(conn)
        .map_err(|e| format!("TIME: {e}"))?;
    let after = wall_ms();
    let redis_ms = secs.saturating_mul(1000).saturating_add(micros / 1000);
    Ok(redis_ms - (before + (after - before) / 2))
}

/// The reply to `op` from Redis's value; an error reply (a redirection) is an error.
fn reply(op: &Op, v: Value) -> Result<Reply, String> {
    if let Value::ServerError(e) = &v {
        return Err(format!("{} {}", e.code(), e.details().unwrap_or_default()));
    }
    Ok(match op {
        Op::Incr { .. } => Reply::Total(count(&v)),
        Op::Expire { .. } => Reply::Done,
        Op::Get { fields, .. } => match v {
            Value::Array(items) if items.len() == fields.len() => {
                Reply::Totals(items.iter().map(count).collect())
            }
            other => return Err(format!("HMGET answered {other:?}")),
        },
    })
}

/// A count as Redis answers it (an integer, or a string of digits; anything else: 0).
fn count(v: &Value) -> u64 {
    match v {
        Value::Int(n) => u64::try_from(*n).unwrap_or(0),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// About how many bytes `v` took in RESP.
fn resp_len(v: &Value) -> u64 {
    let digits = |n: u64| n.checked_ilog10().map_or(1, |d| u64::from(d) + 1);
    match v {
        Value::Nil => 5,
        Value::Int(n) => 3 + digits(n.unsigned_abs()),
        Value::BulkString(b) => 5 + digits(b.len() as u64) + b.len() as u64,
        Value::Array(items) => {
            3 + digits(items.len() as u64) + items.iter().map(resp_len).sum::<u64>()
        }
        _ => 5,
    }
}

/// `CLUSTER SLOTS`: (first, last, master) per range; an empty host is the node asked.
fn parse_slots(v: &Value, asked: &str) -> Result<Vec<(u16, u16, Node)>, String> {
    let bad = || format!("CLUSTER SLOTS answered {v:?}");
    let Value::Array(ranges) = v else {
        return Err(bad());
    };
    let mut out = Vec::new();
    for r in ranges {
        let Value::Array(parts) = r else {
            return Err(bad());
        };
        let (Some(Value::Int(lo)), Some(Value::Int(hi)), Some(Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            return Err(bad());
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => return Err(bad()),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return Err(bad());
        };
        let host = if host.is_empty() {
            asked.to_string()
        } else {
            host
        };
        let to_u16 = |n: i64| u16::try_from(n).map_err(|_| bad());
        out.push((to_u16(*lo)?, to_u16(*hi)?, (host, to_u16(*port)?)));
    }
    Ok(out)
}

/// Appends `op` to `buf` in RESP, as a client sends commands (written here rather than through
/// the client's command builder: an exchange holds a command per active key, and building each
/// as the client's own value cost more than the rest of the exchange).
fn encode(buf: &mut Vec<u8>, op: &Op) {
    use std::io::Write;
    let bulk = |buf: &mut Vec<u8>, b: &[u8]| {
        let _ = write!(buf, "${}\r\n", b.len());
        buf.extend_from_slice(b);
        buf.extend_from_slice(b"\r\n");
    };
    match op {
        Op::Incr { hash, field, by } => {
            buf.extend_from_slice(b"*4\r\n$7\r\nHINCRBY\r\n");
            bulk(buf, hash.as_bytes());
            bulk(buf, field.as_bytes());
            bulk(buf, by.to_string().as_bytes());
        }
        Op::Expire { hash, ms } => {
            buf.extend_from_slice(b"*3\r\n$7\r\nPEXPIRE\r\n");
            bulk(buf, hash.as_bytes());
            bulk(buf, ms.to_string().as_bytes());
        }
        Op::Get { hash, fields } => {
            let _ = write!(buf, "*{}\r\n$5\r\nHMGET\r\n", fields.len() + 2);
            bulk(buf, hash.as_bytes());
            for f in fields {
                bulk(buf, f.as_bytes());
            }
        }
    }
}
