//! A shard's busiest keys, sampled on request (`floodwatch top`, the dashboard): the entries
//! whose bucket is fullest and those with the highest request rate, at most `k` of each.
//!
//! Nothing here runs per hit. A sample is one pass over the shard's maps when watch asks
//! ([`ShardMsg::Top`](crate::engine::ShardMsg::Top), about once a second while someone
//! looks), keeping the best `k` in two small heaps. The pass goes a slice of maps at a time
//! (see [`KeyTable::top_slice`](crate::engine::table::KeyTable::top_slice)), between batches
//! of hits or while the shard has nothing else to do, so that a table of millions of keys
//! (several milliseconds for the whole pass) never holds up a batch for long.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::engine::Key;

/// One (key, rule) entry as sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopEntry {
    pub key: Key,
    /// The rule's id (as offenses name it).
    pub rule: u16,
    /// The bucket's level at the sample's time, in thousandths of the rule's burst (1000: full;
    /// 0 for a rule with no burst).
    pub fill_milli: u32,
    /// Requests counted since `first_seen_ms` (saturating): rates come from two samples'
    /// difference.
    pub count: u32,
    pub first_seen_ms: i64,
    /// Reports are suppressed (the key overflowed within its rule's ban length).
    pub over: bool,
}

impl TopEntry {
    /// Requests per second over the key's tracking period, in milli-requests, taking at least a
    /// second as the period (two requests a millisecond apart are not a flood).
    pub fn average_milli(&self, at_ms: i64) -> u64 {
        let period = at_ms.saturating_sub(self.first_seen_ms).max(1000) as u64;
        u64::from(self.count) * 1_000_000 / period
    }
}

/// One shard's sample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardTop {
    pub shard: u32,
    /// The shard's processed log time: what the levels and rates are as of.
    pub at_ms: i64,
    /// (key, rule) entries the shard tracks.
    pub tracked: u64,
    pub entries: Vec<TopEntry>,
}

/// Keeps the best `k` entries by fill and the best `k` by average rate.
pub struct Picker {
    k: usize,
    at_ms: i64,
    by_fill: BinaryHeap<Reverse<(u32, u64, Slot)>>,
    by_rate: BinaryHeap<Reverse<(u64, u32, Slot)>>,
    entries: Vec<TopEntry>,
}

/// An index into `Picker::entries`, ordered last in the heaps' tuples.
type Slot = usize;

impl Picker {
    pub fn new(k: usize, at_ms: i64) -> Picker {
        Picker {
            k,
            at_ms,
            by_fill: BinaryHeap::with_capacity(k + 1),
            by_rate: BinaryHeap::with_capacity(k + 1),
            entries: Vec::new(),
        }
    }

    /// Offers one entry; kept when it is among the best `k` so far by either measure.
    #[inline]
    pub fn offer(&mut self, e: TopEntry) {
        if self.k == 0 {
            return;
        }
        // Most keys of a big table made one request: once both heaps hold better ones, such a
        // key (at most 1 r/s on average) is passed over without the division below.
        let full = self.by_fill.len() == self.k && self.by_rate.len() == self.k;
        if full && e.count <= 1 {
            let fill_min = self.by_fill.peek().map_or(0, |Reverse(m)| m.0);
            let rate_min = self.by_rate.peek().map_or(0, |Reverse(m)| m.0);
            if e.fill_milli <= fill_min && rate_min >= 1000 {
                return;
            }
        }
        let rate = e.average_milli(self.at_ms);
        let fill_in = self.by_fill.len() < self.k
            || self
                .by_fill
                .peek()
                .is_some_and(|Reverse(m)| (e.fill_milli, rate) > (m.0, m.1));
        let rate_in = self.by_rate.len() < self.k
            || self
                .by_rate
                .peek()
                .is_some_and(|Reverse(m)| (rate, e.fill_milli) > (m.0, m.1));
        if !fill_in && !rate_in {
            return;
        }
        let slot = self.entries.len();
        self.entries.push(e);
        if fill_in {
            self.by_fill.push(Reverse((e.fill_milli, rate, slot)));
            if self.by_fill.len() > self.k {
                self.by_fill.pop();
            }
        }
        if rate_in {
            self.by_rate.push(Reverse((rate, e.fill_milli, slot)));
            if self.by_rate.len() > self.k {
                self.by_rate.pop();
            }
        }
    }

    /// The time the levels and rates are taken at.
    pub fn at_ms(&self) -> i64 {
        self.at_ms
    }

    /// The entries kept, each once, best fill first.
    pub fn finish(self) -> Vec<TopEntry> {
        let mut slots: Vec<Slot> = (self.by_fill.into_iter().map(|Reverse(t)| t.2))
            .chain(self.by_rate.into_iter().map(|Reverse(t)| t.2))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        let mut out: Vec<TopEntry> = slots.into_iter().map(|s| self.entries[s]).collect();
        out.sort_by_key(|e| (Reverse(e.fill_milli), Reverse(e.count), e.key, e.rule));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Addr, Cidr};
    use crate::hit::NO_VHOST;

    fn entry(a: u32, fill_milli: u32, count: u32) -> TopEntry {
        TopEntry {
            key: Key {
                net: Cidr {
                    addr: Addr::from_v4(a),
                    prefix: 32,
                },
                vhost: NO_VHOST,
            },
            rule: 0,
            fill_milli,
            count,
            first_seen_ms: 0,
            over: false,
        }
    }

    #[test]
    fn keeps_the_fullest_and_the_fastest_each_once() {
        let mut p = Picker::new(2, 10_000);
        for (a, fill, count) in [
            (1, 100, 5),
            (2, 900, 10),
            (3, 950, 10),
            (4, 10, 5000),
            (5, 0, 1),
            (6, 500, 4000),
        ] {
            p.offer(entry(a, fill, count));
        }
        let got: Vec<u32> = p.finish().iter().map(|e| e.key.net.addr.0 as u32).collect();
        // Fullest: 3 and 2; fastest: 4 and 6.
        assert_eq!(got, [3, 2, 6, 4]);
    }

    #[test]
    fn single_requests_do_not_push_out_busier_keys() {
        let mut p = Picker::new(1, 10_000);
        p.offer(entry(1, 500, 50));
        p.offer(entry(2, 500, 1));
        p.offer(entry(3, 0, 1));
        let got: Vec<u32> = p.finish().iter().map(|e| e.key.net.addr.0 as u32).collect();
        assert_eq!(got, [1]);
    }

    #[test]
    fn a_short_period_counts_as_a_second() {
        let e = TopEntry {
            first_seen_ms: 9_999,
            ..entry(1, 0, 2)
        };
        assert_eq!(e.average_milli(10_000), 2000);
        assert_eq!(entry(1, 0, 100).average_milli(10_000), 10_000);
        assert!(Picker::new(0, 0).finish().is_empty());
    }
}
