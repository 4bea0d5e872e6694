//! What one exchange asks of the store of fleet counts, and an in-memory store that answers
//! as Redis would (for tests and the bench's counting arithmetic).
//!
//! The counts live in per-window hashes, `{<stream>:count:<group>}:<rule>:<window>`, field = the
//! key (`203.0.113.7`, `198.51.100.0/24`, or `<cidr> <vhost>`), value = requests. The part in
//! braces is a Redis Cluster hash tag: all windows of a group sit in one slot, so the commands
//! of one group go to one node, and the groups spread the keys over the cluster's nodes.

use std::collections::HashMap;
use std::sync::Arc;

/// One command of an exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `HINCRBY hash field by`: answers the new total.
    Incr {
        hash: Arc<str>,
        field: Arc<str>,
        by: u64,
    },
    /// `PEXPIRE hash ms`: the window's hash goes when no server reads it any more.
    Expire { hash: Arc<str>, ms: u64 },
    /// `HMGET hash fields…`: answers a total per field (absent = 0).
    Get {
        hash: Arc<str>,
        fields: Vec<Arc<str>>,
    },
}

impl Op {
    /// The hash the command touches (its slot in a cluster).
    pub fn hash(&self) -> &str {
        match self {
            Op::Incr { hash, .. } | Op::Expire { hash, .. } | Op::Get { hash, .. } => hash,
        }
    }
}

/// The answer to one [`Op`], in the same order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Total(u64),
    Done,
    Totals(Vec<u64>),
}

/// Where the counts are exchanged: Redis (one server or a cluster), or memory in tests.
pub trait Store {
    /// Runs `ops` (as one pipeline per node) and answers each in order; an error means the
    /// store could not be reached or did not answer as expected.
    fn exchange(&mut self, ops: &[Op]) -> Result<Vec<Reply>, String>;
}

/// Redis's answers, from memory. Hashes do not expire (tests run for seconds).
#[derive(Default)]
pub struct MemoryStore {
    hashes: HashMap<String, HashMap<String, u64>>,
    pub commands: u64,
}

impl Store for MemoryStore {
    fn exchange(&mut self, ops: &[Op]) -> Result<Vec<Reply>, String> {
        self.commands += ops.len() as u64;
        Ok(ops
            .iter()
            .map(|op| match op {
                Op::Incr { hash, field, by } => {
                    let v = self
                        .hashes
                        .entry(hash.to_string())
                        .or_default()
                        .entry(field.to_string())
                        .or_default();
                    *v += by;
                    Reply::Total(*v)
                }
                Op::Expire { .. } => Reply::Done,
                Op::Get { hash, fields } => {
                    let h = self.hashes.get(&**hash);
                    Reply::Totals(
                        fields
                            .iter()
                            .map(|f| h.and_then(|h| h.get(&**f)).copied().unwrap_or(0))
                            .collect(),
                    )
                }
            })
            .collect())
    }
}

/// A shared in-memory store: several counters in one test exchange through it.
impl<S: Store> Store for std::rc::Rc<std::cell::RefCell<S>> {
    fn exchange(&mut self, ops: &[Op]) -> Result<Vec<Reply>, String> {
        self.borrow_mut().exchange(ops)
    }
}
