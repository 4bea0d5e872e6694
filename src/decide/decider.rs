//! The decide thread: merges the shards' offenses into one time-ordered stream and turns it
//! into ban and unban events.
//!
//! Each shard sends its offenses in time order and promises with a `Tick` that nothing older
//! follows; across shards they arrive in any order. The decider therefore buffers offenses and
//! only decides those older than "now", the minimum over unfinished shards of their latest
//! tick. Offenses *at* now wait for the next tick: whether a tick promises "nothing older" or
//! "nothing at or older" is then irrelevant, and offenses with equal times are always decided
//! together, sorted by key, then rule, then arrival (one key always comes from one shard, so
//! arrival order among equal keys is that shard's order). The resulting event stream is sorted
//! by time with unbans before bans at equal times, and does not depend on the shard count or
//! on how the shards' messages interleave.
//!
//! **Eager** ([`Decider::eager`], watch): offenses *at* now are decided at once rather than at
//! the next tick. A tick comes only with the next round of reads (or the second-long lift when
//! the logs are idle), so waiting for it would hold every ban back by the gap between two lines
//! of the logs, up to a second. The cost: an offense of another key with the same millisecond
//! that comes from a later read is decided after it rather than sorted before it. Which keys
//! are banned, at what time and with what offense number does not change (each key's offenses
//! come from one shard, in order; the ban table judges each at its own time); only the order of
//! events with equal times may.
//!
//! A *late* offense (from a late hit, see `engine::shard`) is older than "now" when it arrives:
//! it is decided at once, at its own time ([`BanTable::offense`] judges it against the bans
//! its slot had then). Past bans are forgotten only up to the shards' settled time, so that
//! such an offense is suppressed or escalated exactly as it would have been in time order.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crossbeam_channel::Receiver;

use super::ban_table::BanTable;
use super::Event;
use crate::engine::{Key, Offense, ShardOut, ShardStats};

/// What the decide stage counted, with the shards' own counters summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecideStats {
    /// Sum over shards. `keys_peak` is the sum of each shard's peak, an upper bound of the
    /// number of keys tracked at once.
    pub shards: ShardStats,
    /// Offenses decided (every offense received, once the run is complete).
    pub offenses: u64,
    pub bans: u64,
    pub unbans: u64,
    /// Offenses of allowlisted keys.
    pub allowlisted: u64,
    /// Offenses of keys already banned under the same rule.
    pub suppressed: u64,
}

/// The merge state: message by message ([`Decider::handle`], watch's loop) or until every
/// shard has finished ([`Decider::run`], replay and bench).
pub struct Decider {
    /// Latest tick per shard: processed and settled times.
    ticks: Vec<i64>,
    settles: Vec<i64>,
    finished: Vec<bool>,
    open: usize,
    pending: BinaryHeap<Reverse<Pending>>,
    /// Arrival counter, the last tie-breaker.
    seq: u64,
    /// The watermark: everything older has been decided. Never `i64::MAX`, so that it can
    /// bound expiry at the end.
    now: i64,
    /// The latest log time any shard reported: the end of the run's time.
    last_ms: i64,
    shard_stats: ShardStats,
    /// Each shard's latest counters (from its ticks, then its end), for [`Decider::live_stats`].
    latest: Vec<ShardStats>,
    /// Offenses at the watermark are decided without waiting for the next tick.
    eager: bool,
}

impl Decider {
    pub fn new(shards: usize) -> Decider {
        Decider {
            ticks: vec![i64::MIN; shards],
            settles: vec![i64::MIN; shards],
            finished: vec![false; shards],
            open: shards,
            pending: BinaryHeap::new(),
            seq: 0,
            now: i64::MIN,
            last_ms: i64::MIN,
            shard_stats: ShardStats::default(),
            latest: vec![ShardStats::default(); shards],
            eager: false,
        }
    }

    /// Decides offenses at the watermark at once (see the module documentation): watch.
    pub fn eager(mut self) -> Decider {
        self.eager = true;
        self
    }

    /// Whether an offense at `time_ms` may be decided with the watermark at `now`.
    fn due(&self, time_ms: i64, now: i64) -> bool {
        time_ms < now || (self.eager && time_ms == now && now > i64::MIN)
    }

    pub fn handle(&mut self, msg: ShardOut, table: &mut BanTable, emit: &mut dyn FnMut(&Event)) {
        match msg {
            ShardOut::Offense { offense, .. } => {
                self.last_ms = self.last_ms.max(offense.time_ms);
                if self.due(offense.time_ms, self.now) {
                    decide(&offense, table, emit);
                    return;
                }
                self.seq += 1;
                self.pending.push(Reverse(Pending {
                    seq: self.seq,
                    offense,
                }));
                return;
            }
            ShardOut::Tick {
                shard,
                upto_ms,
                settled_ms,
                stats,
            } => {
                let i = shard as usize;
                let (Some(t), Some(s), Some(l)) = (
                    self.ticks.get_mut(i),
                    self.settles.get_mut(i),
                    self.latest.get_mut(i),
                ) else {
                    debug_assert!(false, "tick from unknown shard {shard}");
                    return;
                };
                *t = (*t).max(upto_ms);
                *s = (*s).max(settled_ms);
                *l = stats;
                self.last_ms = self.last_ms.max(upto_ms);
            }
            ShardOut::Finished { shard, stats } => {
                let Some(f) = self.finished.get_mut(shard as usize) else {
                    debug_assert!(false, "finish from unknown shard {shard}");
                    return;
                };
                if let Some(l) = self.latest.get_mut(shard as usize) {
                    *l = stats;
                }
                if !*f {
                    *f = true;
                    self.open -= 1;
                    add(&mut self.shard_stats, &stats);
                }
            }
        }
        let now = self.watermark();
        if now > self.now {
            self.advance(now, table, emit);
        }
        let settled = self.settled();
        if settled < i64::MAX {
            table.forget_before(settled);
        }
    }

    /// Decides what `rx` brings until every shard has finished (or every sender is gone), then
    /// what is still buffered, and returns the counters of this run. Bans still active at the
    /// end stay active: nothing is unbanned beyond the latest log time the shards reported.
    pub fn run(
        &mut self,
        rx: &Receiver<ShardOut>,
        table: &mut BanTable,
        emit: &mut dyn FnMut(&Event),
    ) -> DecideStats {
        let before = table.stats();
        while !self.is_done() {
            match rx.recv() {
                Ok(msg) => self.handle(msg, table, emit),
                // A shard died without finishing; decide what arrived rather than hang.
                Err(_) => break,
            }
        }
        self.finish(table, emit);
        let after = table.stats();
        DecideStats {
            shards: self.shard_stats(),
            offenses: after.offenses - before.offenses,
            bans: after.bans - before.bans,
            unbans: after.unbans - before.unbans,
            allowlisted: after.allowlisted - before.allowlisted,
            suppressed: after.suppressed - before.suppressed,
        }
    }

    /// Whether every shard has finished.
    pub fn is_done(&self) -> bool {
        self.open == 0
    }

    /// Decides everything still buffered, then ends the bans that ended by the last reported
    /// log time.
    pub fn finish(&mut self, table: &mut BanTable, emit: &mut dyn FnMut(&Event)) {
        while let Some(Reverse(p)) = self.pending.pop() {
            decide(&p.offense, table, emit);
        }
        self.now = self.now.max(self.last_ms);
        expire(self.now, table, emit);
    }

    /// The shards' counters summed once they have all finished.
    pub fn shard_stats(&self) -> ShardStats {
        self.shard_stats
    }

    /// The shards' latest counters summed, while they run: `keys_at_end` is the number of keys
    /// tracked at their last tick.
    pub fn live_stats(&self) -> ShardStats {
        let mut sum = ShardStats::default();
        for s in &self.latest {
            add(&mut sum, s);
        }
        sum
    }

    /// The minimum latest tick over unfinished shards (`i64::MAX` when all have finished).
    fn watermark(&self) -> i64 {
        open_min(&self.ticks, &self.finished)
    }

    /// The minimum settled time over unfinished shards (`i64::MAX` when all have finished).
    fn settled(&self) -> i64 {
        open_min(&self.settles, &self.finished)
    }

    fn advance(&mut self, now: i64, table: &mut BanTable, emit: &mut dyn FnMut(&Event)) {
        while let Some(Reverse(p)) = self.pending.peek() {
            if !self.due(p.offense.time_ms, now) {
                break;
            }
            if let Some(Reverse(p)) = self.pending.pop() {
                decide(&p.offense, table, emit);
            }
        }
        // With every shard finished the watermark is infinite; expiry then waits for `finish`,
        // which stops at the last log time.
        if now < i64::MAX {
            self.now = now;
            expire(now, table, emit);
        }
    }
}

/// Ends the bans that are over by the offense's time, then decides the offense.
fn decide(o: &Offense, table: &mut BanTable, emit: &mut dyn FnMut(&Event)) {
    expire(o.time_ms, table, emit);
    if let Some(ban) = table.offense(o) {
        emit(&Event::Ban(ban));
    }
}

fn expire(now: i64, table: &mut BanTable, emit: &mut dyn FnMut(&Event)) {
    for u in table.expire(now) {
        emit(&Event::Unban(u));
    }
}

fn open_min(marks: &[i64], finished: &[bool]) -> i64 {
    marks
        .iter()
        .zip(finished)
        .filter(|(_, &done)| !done)
        .map(|(&t, _)| t)
        .min()
        .unwrap_or(i64::MAX)
}

fn add(sum: &mut ShardStats, s: &ShardStats) {
    // Destructured, so that a counter added to `ShardStats` cannot be left out here.
    let ShardStats {
        hits,
        late,
        stale,
        keys_peak,
        keys_at_end,
        evicted,
        cap_refused,
        offenses,
        overflows,
    } = *s;
    sum.hits += hits;
    sum.late += late;
    sum.stale += stale;
    sum.keys_peak += keys_peak;
    sum.keys_at_end += keys_at_end;
    sum.evicted += evicted;
    sum.cap_refused += cap_refused;
    sum.offenses += offenses;
    sum.overflows += overflows;
}

/// A buffered offense, ordered by (time, key, rule, arrival).
struct Pending {
    seq: u64,
    offense: Offense,
}

impl Pending {
    fn order(&self) -> (i64, Key, u16, u64) {
        let o = &self.offense;
        (o.time_ms, o.key, o.rule, self.seq)
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order().cmp(&other.order())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::decide::allowlist::Allowlist;
    use crate::decide::ban_table::tests::{offense, rule};
    use crate::decide::event::to_json_line;
    use crate::engine::RuleSpec;
    use crate::vhost::Vhosts;

    fn table(rules: &[RuleSpec]) -> BanTable {
        let allow = Allowlist::new(vec!["127.0.0.0/8".parse().unwrap()]);
        BanTable::new(rules, allow, Vhosts::new())
    }

    /// Events as `ban|unban key@seconds[#offense]`, for readable expectations.
    fn short(ev: &Event) -> String {
        match ev {
            Event::Ban(b) => format!(
                "ban {}@{}#{}/{}s",
                b.key.net,
                b.time_ms / 1000,
                b.offense,
                b.ban_ms / 1000
            ),
            Event::Unban(u) => format!("unban {}@{}", u.key.net, u.time_ms / 1000),
        }
    }

    fn off(shard: u32, key: &str, t: i64) -> ShardOut {
        ShardOut::Offense {
            shard,
            offense: offense(key, 0, t),
        }
    }

    fn tick(shard: u32, t: i64) -> ShardOut {
        ShardOut::Tick {
            shard,
            upto_ms: t * 1000,
            settled_ms: t * 1000,
            stats: ShardStats::default(),
        }
    }

    fn done(shard: u32, hits: u64) -> ShardOut {
        ShardOut::Finished {
            shard,
            stats: ShardStats {
                hits,
                offenses: hits / 10,
                ..ShardStats::default()
            },
        }
    }

    #[test]
    fn late_offenses_are_decided_at_once_and_at_their_own_time() {
        let mut d = Decider::new(1);
        let mut t = table(&[rule("r", 60, 2.0, 3600, 3600)]);
        let mut got = vec![];
        let mut feed = |msg| d.handle(msg, &mut t, &mut |e| got.push(short(e)));
        // The shard has processed up to 1000 s (a live log), but a buffered one's lines
        // still come from 100 s on (settled there).
        feed(ShardOut::Tick {
            shard: 0,
            upto_ms: 1_000_000,
            settled_ms: 100_000,
            stats: ShardStats::default(),
        });
        feed(off(0, "192.0.2.1", 100));
        // The ban (until 160 s) ends.
        feed(tick(0, 1_100));
        // Inside that ban, which has ended since: suppressed as it was then.
        feed(off(0, "192.0.2.1", 130));
        // After it: the second offense, twice as long.
        feed(off(0, "192.0.2.1", 200));
        feed(tick(0, 1_200));
        assert_eq!(
            got,
            [
                "ban 192.0.2.1@100#1/60s",
                "unban 192.0.2.1@160",
                "ban 192.0.2.1@200#2/120s",
                "unban 192.0.2.1@320",
            ]
        );
        assert_eq!(t.stats().suppressed, 1);
    }

    #[test]
    fn live_stats_sum_each_shards_latest_counters() {
        let mut d = Decider::new(2);
        let mut t = table(&[rule("r", 600, 2.0, 3600, 3600)]);
        let counted = |keys, late| ShardStats {
            keys_at_end: keys,
            late,
            ..ShardStats::default()
        };
        let mut tick_with = |shard, keys, late| {
            let msg = ShardOut::Tick {
                shard,
                upto_ms: 0,
                settled_ms: 0,
                stats: counted(keys, late),
            };
            d.handle(msg, &mut t, &mut |_| {});
        };
        tick_with(0, 5, 1);
        tick_with(1, 7, 0);
        tick_with(0, 3, 2);
        let live = d.live_stats();
        assert_eq!(
            (live.keys_at_end, live.late),
            (10, 2),
            "latest, not summed over ticks"
        );
        assert_eq!(
            d.shard_stats(),
            ShardStats::default(),
            "nothing finished yet"
        );
        d.handle(done(1, 40), &mut t, &mut |_| {});
        assert_eq!(d.live_stats().hits, 40);
        assert_eq!(
            d.live_stats().keys_at_end,
            3,
            "shard 1's end replaces its ticks"
        );
    }

    #[test]
    fn merges_three_shards_in_time_order() {
        let msgs = vec![
            off(2, "192.0.2.3", 100),
            off(0, "192.0.2.1", 50),
            tick(0, 200),
            off(1, "192.0.2.2", 50),
            off(1, "192.0.2.2", 50),
            off(2, "127.0.0.1", 150),
            tick(2, 300),
            // now = 110: everything before is decided, bans ending at 110 are lifted.
            tick(1, 110),
            off(0, "192.0.2.1", 200),
            off(1, "192.0.2.2", 110),
            done(1, 20),
            done(0, 10),
            done(2, 30),
        ];
        let (tx, rx) = crossbeam_channel::unbounded();
        for m in msgs {
            tx.send(m).unwrap();
        }
        let mut t = table(&[rule("default", 60, 2.0, 3600, 86_400)]);
        let mut events = vec![];
        let stats = Decider::new(3).run(&rx, &mut t, &mut |e| events.push(short(e)));
        assert_eq!(
            events,
            [
                "ban 192.0.2.1@50#1/60s",
                "ban 192.0.2.2@50#1/60s",
                "ban 192.0.2.3@100#1/60s",
                "unban 192.0.2.1@110",
                "unban 192.0.2.2@110",
                "ban 192.0.2.2@110#2/120s",
                "unban 192.0.2.3@160",
                "ban 192.0.2.1@200#2/120s",
                // The run's log time ends at 300: A's ban (until 320) stays active.
                "unban 192.0.2.2@230",
            ]
        );
        assert_eq!(
            stats,
            DecideStats {
                shards: ShardStats {
                    hits: 60,
                    offenses: 6,
                    ..ShardStats::default()
                },
                offenses: 7,
                bans: 5,
                unbans: 4,
                allowlisted: 1,
                suppressed: 1,
            }
        );
        assert_eq!(t.active_len(), 1);
    }

    #[test]
    fn decides_nothing_until_every_shard_has_ticked() {
        let mut t = table(&[rule("default", 60, 2.0, 3600, 86_400)]);
        let mut d = Decider::new(2);
        let mut ev = vec![];
        let msgs = [
            off(0, "192.0.2.1", 10),
            tick(0, 100),
            tick(1, 10),
            // An offense at exactly the watermark may still have company from another shard.
            off(1, "192.0.2.0", 10),
        ];
        for m in msgs {
            d.handle(m, &mut t, &mut |e| ev.push(short(e)));
        }
        assert!(ev.is_empty());
        d.handle(tick(1, 11), &mut t, &mut |e| ev.push(short(e)));
        assert_eq!(ev, ["ban 192.0.2.0@10#1/60s", "ban 192.0.2.1@10#1/60s"]);
        d.handle(done(0, 0), &mut t, &mut |e| ev.push(short(e)));
        d.handle(done(0, 0), &mut t, &mut |e| ev.push(short(e)));
        assert!(!d.is_done());
        d.handle(done(1, 0), &mut t, &mut |e| ev.push(short(e)));
        assert!(d.is_done());
        d.finish(&mut t, &mut |e| ev.push(short(e)));
        assert_eq!(ev.len(), 4, "{ev:?}");
        assert_eq!(ev[2], "unban 192.0.2.0@70");
    }

    #[test]
    fn eager_decides_at_the_watermark_without_waiting_for_the_next_tick() {
        let mut t = table(&[rule("default", 60, 2.0, 3600, 86_400)]);
        let mut d = Decider::new(2).eager();
        let mut ev = vec![];
        for m in [off(0, "192.0.2.1", 10), tick(0, 100)] {
            d.handle(m, &mut t, &mut |e| ev.push(short(e)));
        }
        assert!(ev.is_empty(), "shard 1 has not processed 10 yet");
        d.handle(tick(1, 10), &mut t, &mut |e| ev.push(short(e)));
        assert_eq!(ev, ["ban 192.0.2.1@10#1/60s"]);
        // Company at the same time from a later read: decided as it comes, at its own time.
        d.handle(off(1, "192.0.2.0", 10), &mut t, &mut |e| ev.push(short(e)));
        assert_eq!(ev[1], "ban 192.0.2.0@10#1/60s");
        d.handle(off(1, "192.0.2.0", 11), &mut t, &mut |e| ev.push(short(e)));
        assert_eq!(ev.len(), 2, "11 waits for both shards");
        d.handle(tick(1, 11), &mut t, &mut |e| ev.push(short(e)));
        assert_eq!(ev.len(), 2, "already banned: suppressed");
        assert_eq!(t.stats().suppressed, 1);
    }

    #[test]
    fn ends_when_senders_vanish() {
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(off(0, "192.0.2.1", 10)).unwrap();
        drop(tx);
        let mut t = table(&[rule("default", 60, 2.0, 3600, 86_400)]);
        let mut events = vec![];
        let stats = Decider::new(2).run(&rx, &mut t, &mut |e| events.push(short(e)));
        assert_eq!(events, ["ban 192.0.2.1@10#1/60s"]);
        assert_eq!(stats.bans, 1);
    }

    /// What the decider must produce: all offenses decided one by one in (time, key, rule)
    /// order on one table, expiring up to each offense, then up to the end of log time.
    fn reference(rules: &[RuleSpec], mut all: Vec<(usize, Offense)>, end_ms: i64) -> Vec<String> {
        let mut t = table(rules);
        let mut out = vec![];
        all.sort_by_key(|(i, o)| (o.time_ms, o.key, o.rule, *i));
        for (_, o) in &all {
            for u in t.expire(o.time_ms) {
                out.push(to_json_line(&Event::Unban(u)));
            }
            if let Some(b) = t.offense(o) {
                out.push(to_json_line(&Event::Ban(b)));
            }
        }
        for u in t.expire(end_ms) {
            out.push(to_json_line(&Event::Unban(u)));
        }
        out
    }

    /// Runs `all` (indexed as `shard_of`: each offense's shard seed and whether a tick follows
    /// it) through a decider fed by `shards` shards whose messages interleave as `choices`
    /// says, with a table of `rules`; the events in the order it emitted them.
    pub(crate) fn through_shards(
        rules: &[RuleSpec],
        all: &[(usize, Offense)],
        shard_of: &[(usize, bool)],
        shards: usize,
        choices: &[u8],
        end_ms: i64,
    ) -> (Vec<Event>, DecideStats) {
        // Each shard's stream: its keys' offenses in time order, ticks that promise no
        // earlier offense follows, a last tick at the end of log time, then Finished.
        let mut streams: Vec<Vec<ShardOut>> = (0..shards).map(|_| Vec::new()).collect();
        let mut per_shard: Vec<Vec<(usize, Offense)>> = vec![vec![]; shards];
        for (i, o) in all {
            per_shard[shard_of[*i].0 % shards].push((*i, *o));
        }
        for (s, offs) in per_shard.iter_mut().enumerate() {
            offs.sort_by_key(|(i, o)| (o.time_ms, *i));
            for (j, (i, o)) in offs.iter().enumerate() {
                streams[s].push(ShardOut::Offense {
                    shard: s as u32,
                    offense: *o,
                });
                if shard_of[*i].1 {
                    let next = offs.get(j + 1).map_or(end_ms, |(_, n)| n.time_ms);
                    streams[s].push(ShardOut::Tick {
                        shard: s as u32,
                        upto_ms: next,
                        settled_ms: next,
                        stats: ShardStats::default(),
                    });
                }
            }
            streams[s].push(ShardOut::Tick {
                shard: s as u32,
                upto_ms: end_ms,
                settled_ms: end_ms,
                stats: ShardStats::default(),
            });
            streams[s].push(ShardOut::Finished {
                shard: s as u32,
                stats: ShardStats::default(),
            });
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut next = vec![0usize; shards];
        let mut c = 0;
        loop {
            let live: Vec<usize> = (0..shards)
                .filter(|&s| next[s] < streams[s].len())
                .collect();
            if live.is_empty() {
                break;
            }
            let s = live[usize::from(choices[c % choices.len()]) % live.len()];
            c += 1;
            let msg = std::mem::replace(
                &mut streams[s][next[s]],
                ShardOut::Tick {
                    shard: 0,
                    upto_ms: 0,
                    settled_ms: 0,
                    stats: ShardStats::default(),
                },
            );
            next[s] += 1;
            tx.send(msg).unwrap();
        }
        drop(tx);

        let mut t = table(rules);
        let mut got = vec![];
        let stats = Decider::new(shards).run(&rx, &mut t, &mut |e| got.push(e.clone()));
        (got, stats)
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]

        /// Whatever the shard count and however the shards' messages interleave, the events
        /// are those of the sequential reference.
        #[test]
        fn output_independent_of_shards_and_interleaving(
            raw in proptest::collection::vec((0u8..6, 0u16..2, 0i64..400, any::<bool>()), 0..60),
            shards in 1usize..5,
            choices in proptest::collection::vec(any::<u8>(), 200),
        ) {
            let rules = [rule("a", 30, 2.0, 600, 3600), rule("b", 45, 3.0, 400, 120)];
            let keys = ["192.0.2.1", "192.0.2.2", "127.0.0.1", "2001:db8::/64", "10.0.0.0/24", "192.0.2.3"];
            let all: Vec<(usize, Offense)> = raw
                .iter()
                .enumerate()
                .map(|(i, &(k, r, t, _))| {
                    let mut o = offense(keys[k as usize], r, t);
                    o.requests = i as u64;
                    (i, o)
                })
                .collect();
            let end_ms = 500_000;
            let want = reference(&rules, all.clone(), end_ms);

            let shard_of: Vec<(usize, bool)> = raw.iter().map(|&(k, _, _, tick)| (usize::from(k), tick)).collect();
            let (got, stats) = through_shards(&rules, &all, &shard_of, shards, &choices, end_ms);
            let got: Vec<String> = got.iter().map(to_json_line).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(stats.offenses, all.len() as u64);
        }
    }
}
