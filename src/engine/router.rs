//! A producer's side of the shards: hits are sorted into per-shard batches by a hash of the
//! client's routing prefix and sent over the shards' channels.
//!
//! Routing hashes the address masked to the coarsest prefix of all rules
//! ([`CompiledRules::route_prefixes`](crate::engine::rule::CompiledRules::route_prefixes)), so
//! every key of every rule lives in exactly one shard. The hash has fixed seeds: the same input
//! goes to the same shards on every run, which keeps runs reproducible. (Someone who knows the
//! seeds can aim addresses at one shard, which only unbalances load: each shard still enforces
//! its own key cap.)

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::addr::Addr;
use crate::engine::rule::CompiledRules;
use crate::engine::ShardMsg;
use crate::hit::{Hit, RuleMask};

/// Hits per batch: large enough that the channel costs nothing per hit, small enough that a
/// batch (4096 × 48 bytes) stays in L2.
pub const BATCH: usize = 4096;

/// Fixed seeds (digits of π): routing must not depend on the process.
const SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// Which shard an address belongs to, for `shards` shards and the rules' routing prefixes.
#[derive(Clone)]
pub struct ShardOf {
    hasher: ahash::RandomState,
    shards: usize,
    v4_prefix: u8,
    v6_prefix: u8,
}

impl ShardOf {
    pub fn new(shards: usize, (v4_prefix, v6_prefix): (u8, u8)) -> ShardOf {
        ShardOf {
            hasher: ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]),
            shards: shards.max(1),
            v4_prefix,
            v6_prefix,
        }
    }

    #[inline]
    pub fn shard(&self, addr: Addr) -> usize {
        if self.shards == 1 {
            return 0;
        }
        let prefix = if addr.is_v4() {
            self.v4_prefix
        } else {
            self.v6_prefix
        };
        let h = self.hasher.hash_one(addr.masked(prefix).0);
        // Multiply-shift maps the hash onto 0..shards without a division.
        ((u128::from(h) * self.shards as u128) >> 64) as usize
    }
}

/// One producer's router. Dropping it without [`Router::finish`] leaves the shards waiting
/// for this producer until every sender is gone.
pub struct Router {
    senders: Vec<Sender<ShardMsg>>,
    batches: Vec<Vec<Hit>>,
    shard_of: ShardOf,
    producer: u32,
    batch: usize,
    /// The low mark so far (sent with every batch).
    low: i64,
    /// The settled mark so far, when the producer keeps one apart from the low mark (watch).
    settled: Option<i64>,
    /// Rules whose hits are also copied aside (watch's fleet-wide counting), and the copies.
    tap_mask: RuleMask,
    tapped: Vec<Hit>,
}

impl Router {
    pub fn new(senders: Vec<Sender<ShardMsg>>, producer: u32, route_prefixes: (u8, u8)) -> Router {
        let n = senders.len();
        Router {
            batches: (0..n).map(|_| Vec::with_capacity(BATCH)).collect(),
            shard_of: ShardOf::new(n, route_prefixes),
            senders,
            producer,
            batch: BATCH,
            low: i64::MIN,
            settled: None,
            tap_mask: 0,
            tapped: Vec::new(),
        }
    }

    /// From now on, copies aside the hits of the rules in `mask` (see [`Router::take_tapped`]).
    pub fn tap(&mut self, mask: RuleMask) {
        self.tap_mask = mask;
    }

    /// The hits copied aside since the last call.
    pub fn take_tapped(&mut self) -> Vec<Hit> {
        std::mem::take(&mut self.tapped)
    }

    /// Sends batches of `n` hits instead of [`BATCH`] (tests use small ones).
    pub fn with_batch_size(mut self, n: usize) -> Router {
        self.batch = n.max(1);
        self
    }

    /// Queues a hit for its shard; a hit that matches no rule is dropped here.
    #[inline]
    pub fn push(&mut self, hit: Hit) {
        if hit.rules == 0 || self.senders.is_empty() {
            return;
        }
        if hit.rules & self.tap_mask != 0 {
            self.tapped.push(hit);
        }
        let s = self.shard_of.shard(hit.addr);
        let batch = &mut self.batches[s];
        batch.push(hit);
        if batch.len() >= self.batch {
            self.send(s);
        }
    }

    /// Sends every shard its partial batch (an empty one too, so its watermark can move) with
    /// the promise that this producer sends no hit older than `low_ms` minus the lateness from
    /// now on. A lower mark than one already promised is ignored.
    pub fn flush(&mut self, low_ms: i64) {
        self.low = self.low.max(low_ms);
        for s in 0..self.senders.len() {
            self.send(s);
        }
    }

    /// Sets the settled mark sent from now on (see [`ShardMsg::Hits`]); without it, the low
    /// mark is also the settled one (replay, where it is a promise). A lower mark than one
    /// already set is ignored. Sent with the next batch or flush.
    pub fn settle(&mut self, settled_ms: i64) {
        self.settled = Some(self.settled.map_or(settled_ms, |s| s.max(settled_ms)));
    }

    /// Hands the shards the rules of a reload, after every hit batched for the old ones (only
    /// for a single producer: another's hits in flight would meet the new rules with old bits).
    /// The routing stays when it still keeps each new rule's keys within one shard (every new
    /// prefix at least as fine as the routing's), and the shards keep their buckets; otherwise
    /// addresses move between shards, so the routing follows the new rules and the shards forget
    /// their buckets. Returns whether they had to.
    pub fn set_rules(&mut self, rules: Arc<CompiledRules>) -> bool {
        self.flush(self.low);
        let (v4, v6) = rules.route_prefixes();
        let coarser = v4 < self.shard_of.v4_prefix || v6 < self.shard_of.v6_prefix;
        let reset = coarser && self.senders.len() > 1;
        if coarser {
            self.shard_of = ShardOf::new(self.senders.len(), (v4, v6));
        }
        for tx in &self.senders {
            let rules = rules.clone();
            // A shard that is gone has panicked; its join reports that.
            let _ = tx.send(ShardMsg::Rules { rules, reset });
        }
        reset
    }

    /// Asks every shard for its busiest `k` entries, answered on `reply` (see
    /// [`crate::engine::top`]); waits like a batch when a shard's queue is full.
    pub fn ask_top(&self, k: usize, reply: &Sender<crate::engine::top::ShardTop>) {
        for tx in &self.senders {
            let _ = tx.send(ShardMsg::Top {
                k,
                reply: reply.clone(),
            });
        }
    }

    /// Shards this router feeds.
    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// Flushes and tells every shard this producer is done.
    pub fn finish(mut self) {
        self.flush(self.low);
        for tx in &self.senders {
            // A shard that is gone has panicked; its join reports that.
            let _ = tx.send(ShardMsg::Done {
                producer: self.producer,
            });
        }
    }

    fn send(&mut self, s: usize) {
        let cap = if self.batches[s].is_empty() {
            0
        } else {
            self.batch
        };
        let hits = std::mem::replace(&mut self.batches[s], Vec::with_capacity(cap));
        // A shard that is gone has panicked; its join reports that.
        let _ = self.senders[s].send(ShardMsg::Hits {
            producer: self.producer,
            low_ms: self.low,
            settled_ms: self.settled.map_or(self.low, |s| s.min(self.low)),
            hits,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::unbounded;

    fn hit(a: u32, t: i64) -> Hit {
        Hit {
            addr: Addr::from_v4(a),
            time_ms: t,
            vhost: 0,
            rules: 1,
            flags: 0,
        }
    }

    #[test]
    fn same_prefix_same_shard_and_spread_over_shards() {
        let by16 = ShardOf::new(3, (16, 48));
        let mut seen = [0usize; 3];
        for net in 0..300u32 {
            let a = Addr::from_v4(net << 16 | 0x0101);
            let s = by16.shard(a);
            assert_eq!(s, by16.shard(Addr::from_v4(net << 16 | 0xfffe)));
            seen[s] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        let six = Addr::parse(b"2001:db8:1::1").unwrap();
        let same = Addr::parse(b"2001:db8:1:ffff::2").unwrap();
        assert_eq!(by16.shard(six), by16.shard(same));
        // Fixed seeds: a fresh router agrees.
        assert_eq!(ShardOf::new(3, (16, 48)).shard(six), by16.shard(six));
        assert_eq!(ShardOf::new(1, (32, 64)).shard(six), 0);
    }

    #[test]
    fn batches_flushes_and_done() {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..2).map(|_| unbounded()).unzip();
        let mut r = Router::new(txs, 4, (32, 64)).with_batch_size(2);
        let which = r.shard_of.clone();
        let a = (1..100)
            .find(|&a| which.shard(Addr::from_v4(a)) == 0)
            .unwrap();
        r.push(hit(a, 1));
        r.push(Hit {
            rules: 0,
            ..hit(a, 1)
        });
        assert!(rxs[0].is_empty(), "a rule-less hit is dropped");
        r.push(hit(a, 2));
        match rxs[0].try_recv().unwrap() {
            ShardMsg::Hits {
                producer,
                low_ms,
                hits,
                ..
            } => {
                assert_eq!((producer, low_ms, hits.len()), (4, i64::MIN, 2));
            }
            m => panic!("{m:?}"),
        }
        r.push(hit(a, 3));
        r.flush(10);
        r.flush(5);
        r.finish();
        let msgs: Vec<_> = rxs[1].try_iter().collect();
        assert_eq!(msgs.len(), 4, "three (empty) flushes and done: {msgs:?}");
        assert!(matches!(msgs[3], ShardMsg::Done { producer: 4 }));
        let lows: Vec<_> = rxs[0]
            .try_iter()
            .filter_map(|m| match m {
                ShardMsg::Hits { low_ms, hits, .. } => Some((low_ms, hits.len())),
                ShardMsg::Done { .. } | ShardMsg::Rules { .. } | ShardMsg::Top { .. } => None,
            })
            .collect();
        assert_eq!(lows, [(10, 1), (10, 0), (10, 0)]);
    }
}
