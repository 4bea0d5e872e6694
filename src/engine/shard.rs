//! Shard threads: each owns the buckets of its keys ([`KeyTable`]) and feeds them hits in log-time
//! order, merged from several producers by a watermark.
//!
//! Producers (one per group of sources) send batches with two marks (see [`ShardMsg::Hits`]). A
//! shard buffers what arrives and processes, in time order, the hits up to its watermark: the
//! minimum low mark over the producers still running, minus the lateness. Because every
//! producer's hits are merged by time before they touch a bucket, one log split across several
//! files (vhosts) gives the same decisions as the single file. The buffer holds what lies
//! between the slowest producer and the others; producers must keep roughly in step (the replay
//! merges its sources).
//!
//! **Late hits.** A hit older than what the shard has processed is *late*: counted as such and
//! processed at once at its own time against its key's bucket ([`KeyTable::hit`]), never at
//! the watermark; the table forgets idle buckets only up to the settled mark. Why, and the
//! contract watch relies on: docs/design.md (Time).

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::engine::rule::CompiledRules;
use crate::engine::table::KeyTable;
use crate::engine::top::{Picker, ShardTop};
use crate::engine::{ShardMsg, ShardOut, ShardStats};
use crate::hit::Hit;

/// Batches a shard's channel holds before producers wait (backpressure).
const QUEUE: usize = 16;

/// One sender per shard and the shards' threads.
pub type Spawned = (Vec<Sender<ShardMsg>>, Vec<JoinHandle<()>>);

/// How the shards are set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardConfig {
    pub shards: usize,
    /// Producers that will each send [`ShardMsg::Done`], with ids `0..producers`.
    pub producers: usize,
    /// How far behind its own low mark a producer may still send hits.
    pub lateness_ms: i64,
    /// Cap on (key, rule) entries, total across shards.
    pub max_keys: usize,
}

/// Starts `cfg.shards` shard threads. Returns one sender per shard (give each producer's
/// [`Router`](crate::engine::router::Router) clones of all of them) and the threads' handles.
/// Each shard ends with [`ShardOut::Finished`] once every producer is done (or every sender is
/// dropped). Fails when the OS refuses a thread (the shards already started end, their senders
/// dropped).
pub fn spawn_shards(
    cfg: &ShardConfig,
    rules: Arc<CompiledRules>,
    out: Sender<ShardOut>,
) -> std::io::Result<Spawned> {
    let shards = cfg.shards.max(1);
    let cap = (cfg.max_keys / shards).max(1);
    let mut senders = Vec::with_capacity(shards);
    let mut handles = Vec::with_capacity(shards);
    for id in 0..shards {
        let (tx, rx) = bounded(QUEUE);
        let shard = Shard::new(
            id as u32,
            cfg,
            KeyTable::new(&rules, cap, id as u32),
            rx,
            out.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || shard.run())?;
        senders.push(tx);
        handles.push(handle);
    }
    Ok((senders, handles))
}

struct Shard {
    id: u32,
    rx: Receiver<ShardMsg>,
    out: Sender<ShardOut>,
    table: KeyTable,
    /// Latest low and settled marks per producer (`i64::MIN` until known).
    lows: Vec<i64>,
    settles: Vec<i64>,
    done: Vec<bool>,
    live: usize,
    lateness: i64,
    /// Hits not yet processed; sorted by time (stable) whenever they are processed.
    pending: Vec<Hit>,
    /// Whether `pending` holds hits at or before `upto`: late ones, or ones at exactly the
    /// time already processed (a line of the same second or millisecond read in a later round).
    /// They are processed at the next message, watermark or not: nothing they could be ordered
    /// after is still to come.
    due_waiting: bool,
    /// Everything up to this time has been processed.
    upto: i64,
    /// The settled time handed to the table.
    settled: i64,
    hits: u64,
    late: u64,
    /// A sample of the busiest entries in progress (`top`), taken a slice at a time.
    sampling: Option<Sampling>,
}

/// A sample being taken: the entries kept so far, the next map, who asked.
struct Sampling {
    picker: Picker,
    k: usize,
    next: usize,
    replies: Vec<Sender<ShardTop>>,
}

impl Shard {
    fn new(
        id: u32,
        cfg: &ShardConfig,
        table: KeyTable,
        rx: Receiver<ShardMsg>,
        out: Sender<ShardOut>,
    ) -> Shard {
        let producers = cfg.producers.max(1);
        Shard {
            id,
            rx,
            out,
            table,
            lows: vec![i64::MIN; producers],
            settles: vec![i64::MIN; producers],
            done: vec![false; producers],
            live: producers,
            lateness: cfg.lateness_ms.max(0),
            pending: Vec::new(),
            due_waiting: false,
            upto: i64::MIN,
            settled: i64::MIN,
            hits: 0,
            late: 0,
            sampling: None,
        }
    }

    fn run(mut self) {
        while self.live > 0 {
            // A sample in progress goes on while no message waits, a slice at a time.
            let msg = match &self.sampling {
                Some(_) => match self.rx.try_recv() {
                    Err(crossbeam_channel::TryRecvError::Empty) => {
                        self.sample_slice();
                        continue;
                    }
                    got => got.map_err(|_| crossbeam_channel::RecvError),
                },
                None => self.rx.recv(),
            };
            match msg {
                Ok(ShardMsg::Hits {
                    producer,
                    low_ms,
                    settled_ms,
                    hits,
                }) => {
                    self.accept(hits);
                    let p = producer as usize;
                    if let (Some(low), Some(settled)) =
                        (self.lows.get_mut(p), self.settles.get_mut(p))
                    {
                        *low = (*low).max(low_ms);
                        *settled = (*settled).max(settled_ms);
                    }
                }
                Ok(ShardMsg::Rules { rules, reset }) => {
                    let remap = self.table.set_rules(&rules, reset);
                    // The maps were renumbered: a sample in progress starts again.
                    if let Some(s) = &mut self.sampling {
                        s.picker = Picker::new(s.k, self.upto);
                        s.next = 0;
                    }
                    // Waiting hits were matched against the old rules.
                    for h in &mut self.pending {
                        h.rules = remap.apply(h.rules);
                    }
                }
                Ok(ShardMsg::Top { k, reply }) => self.ask_top(k, reply),
                Ok(ShardMsg::Done { producer }) => {
                    if let Some(d) = self.done.get_mut(producer as usize) {
                        if !*d {
                            *d = true;
                            self.live -= 1;
                        }
                    }
                }
                // Every producer dropped its sender: nothing more can come.
                Err(_) => break,
            }
            if self.live > 0 {
                let open = (0..self.lows.len()).filter(|&p| !self.done[p]);
                let low = open.clone().map(|p| self.lows[p]).min();
                let settled = open.map(|p| self.settles[p]).min();
                let lateness = self.lateness;
                let back = |m: Option<i64>| m.unwrap_or(i64::MIN).saturating_sub(lateness);
                self.advance(back(low), back(settled));
            }
            // And a slice between two messages, however busy the shard.
            if self.sampling.is_some() {
                self.sample_slice();
            }
        }
        self.finish();
    }

    fn accept(&mut self, hits: Vec<Hit>) {
        self.hits += hits.len() as u64;
        let upto = self.upto;
        let (mut late, mut due) = (0u64, false);
        for h in &hits {
            late += u64::from(h.time_ms < upto);
            due |= h.time_ms <= upto;
        }
        self.late += late;
        self.due_waiting |= due;
        if self.pending.is_empty() && self.pending.capacity() <= hits.capacity() {
            // Take the batch as it is; a larger buffer is kept instead (dropping it would fault
            // its pages in again as it regrows).
            self.pending = hits;
        } else {
            self.pending.extend_from_slice(&hits);
        }
    }

    /// Processes everything up to `watermark` (late hits included), lets the table forget what
    /// is idle at `settled`, and reports the progress.
    fn advance(&mut self, watermark: i64, settled: i64) {
        let upto = watermark.max(self.upto);
        let moved = upto > self.upto;
        if moved || self.due_waiting {
            self.process(upto);
            self.due_waiting = false;
            self.upto = upto;
        }
        // Settled only after: hits held back until now may be older than the settled time,
        // and must meet their keys' buckets before idle ones go.
        let settled = settled.min(upto);
        let settles = settled > self.settled;
        if settles {
            self.settled = settled;
            self.table.settle(settled);
        }
        if moved || settles {
            self.tick();
        }
    }

    fn tick(&self) {
        let _ = self.out.send(ShardOut::Tick {
            shard: self.id,
            upto_ms: self.upto,
            settled_ms: self.settled,
            stats: self.stats(),
        });
    }

    /// Runs the pending hits with time ≤ `upto` through the table, in time order.
    fn process(&mut self, upto: i64) {
        // Stable and adaptive: the pending tail is already sorted, new batches are nearly so.
        self.pending.sort_by_key(|h| h.time_ms);
        let n = self.pending.partition_point(|h| h.time_ms <= upto);
        let (id, out, table) = (self.id, &self.out, &mut self.table);
        let mut report = |offense| {
            // A decider that has gone away no longer cares; keep draining the producers.
            let _ = out.send(ShardOut::Offense { shard: id, offense });
        };
        for h in &self.pending[..n] {
            table.hit(h, &mut report);
        }
        self.pending.drain(..n);
    }

    fn finish(mut self) {
        // Everything left, including hits at exactly the last watermark (not late, but not
        // past it either).
        if let Some(last) = self.pending.iter().map(|h| h.time_ms).max() {
            // Every producer is done: nothing older than what is left can come.
            if let Some(first) = self.pending.iter().map(|h| h.time_ms).min() {
                self.table.settle(first);
            }
            self.process(last);
            if last > self.upto {
                self.upto = last;
                self.settled = last;
                self.tick();
            }
        }
        let _ = self.out.send(ShardOut::Finished {
            shard: self.id,
            stats: self.stats(),
        });
    }

    /// Starts a sample of the busiest entries as of the time processed (see
    /// [`crate::engine::top`]), or adds `reply` to the one in progress.
    fn ask_top(&mut self, k: usize, reply: Sender<ShardTop>) {
        match &mut self.sampling {
            Some(s) => s.replies.push(reply),
            None => {
                self.sampling = Some(Sampling {
                    picker: Picker::new(k, self.upto),
                    k,
                    next: 0,
                    replies: vec![reply],
                })
            }
        }
    }

    /// Samples the next slice of maps; the last one sends the sample to whoever asked.
    fn sample_slice(&mut self) {
        let Some(s) = &mut self.sampling else {
            return;
        };
        if let Some(next) = self.table.top_slice(&mut s.picker, s.next) {
            s.next = next;
            return;
        }
        if let Some(s) = self.sampling.take() {
            let at_ms = s.picker.at_ms();
            let top = ShardTop {
                shard: self.id,
                at_ms,
                tracked: self.table.len() as u64,
                entries: s.picker.finish(),
            };
            for reply in s.replies {
                // Whoever asked may have given up waiting.
                let _ = reply.send(top.clone());
            }
        }
    }

    /// The counters so far; `keys_at_end` is the number of keys tracked now.
    fn stats(&self) -> ShardStats {
        let t = self.table.stats();
        ShardStats {
            hits: self.hits,
            late: self.late,
            stale: t.stale,
            keys_peak: t.keys_peak,
            keys_at_end: self.table.len() as u64,
            evicted: t.evicted,
            cap_refused: t.cap_refused,
            offenses: t.offenses,
            overflows: t.overflows,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::addr::Addr;
    use crate::engine::router::Router;
    use crate::engine::rule::tests::spec;
    use crate::engine::{Offense, RuleSpec};
    use crossbeam_channel::unbounded;

    /// Runs the shards until they finish: (offenses, ticks per shard, stats per shard).
    pub(crate) struct Outcome {
        pub offenses: Vec<Offense>,
        pub ticks: Vec<Vec<i64>>,
        /// The counters each tick carried, per shard.
        pub tick_stats: Vec<Vec<ShardStats>>,
        pub stats: Vec<ShardStats>,
    }

    pub(crate) fn collect(rx: Receiver<ShardOut>, shards: usize) -> Outcome {
        let mut o = Outcome {
            offenses: vec![],
            ticks: vec![vec![]; shards],
            tick_stats: vec![vec![]; shards],
            stats: vec![ShardStats::default(); shards],
        };
        let mut finished = 0;
        while finished < shards {
            match rx.recv().unwrap() {
                // An offense older than the shard's last tick comes from a late hit.
                ShardOut::Offense { offense, .. } => o.offenses.push(offense),
                ShardOut::Tick {
                    shard,
                    upto_ms,
                    settled_ms,
                    stats,
                } => {
                    assert!(settled_ms <= upto_ms);
                    let ticks = &mut o.ticks[shard as usize];
                    assert!(ticks.last().is_none_or(|&t| upto_ms >= t));
                    if ticks.last() != Some(&upto_ms) {
                        ticks.push(upto_ms);
                    }
                    o.tick_stats[shard as usize].push(stats);
                }
                ShardOut::Finished { shard, stats } => {
                    o.stats[shard as usize] = stats;
                    finished += 1;
                }
            }
        }
        o
    }

    fn hit(a: u32, t: i64) -> Hit {
        Hit {
            addr: Addr::from_v4(a),
            time_ms: t,
            vhost: 0,
            rules: 1,
            flags: 0,
        }
    }

    fn setup(
        rules: &[RuleSpec],
        shards: usize,
        producers: usize,
        lateness_ms: i64,
        max_keys: usize,
    ) -> (Vec<Router>, Vec<JoinHandle<()>>, Receiver<ShardOut>) {
        let rules = Arc::new(CompiledRules::new(rules).unwrap());
        let cfg = ShardConfig {
            shards,
            producers,
            lateness_ms,
            max_keys,
        };
        let (out, rx) = unbounded();
        let (txs, handles) = spawn_shards(&cfg, rules.clone(), out).unwrap();
        let routers = (0..producers)
            .map(|p| Router::new(txs.clone(), p as u32, rules.route_prefixes()).with_batch_size(3))
            .collect();
        (routers, handles, rx)
    }

    #[test]
    fn late_hits_count_at_their_own_time_not_at_the_watermark() {
        let rule = RuleSpec {
            ban_ms: 0,
            ..spec("r", 1000, 0)
        };
        let (mut routers, handles, rx) = setup(&[rule], 1, 1, 1000, 1000);
        let mut r = routers.pop().unwrap();
        r.push(hit(1, 10_000));
        r.flush(10_000); // watermark 9000: the hit at 10_000 waits
        r.push(hit(1, 9_500)); // within lateness, not late; sorted before 10_000
        r.push(hit(2, 7_000)); // late, and pushed before an older one of its key's...
        r.push(hit(2, 5_000)); // ...but the late hits of a batch are taken in time order
        r.push(hit(2, 9_000)); // not late (equal to the watermark)
        r.flush(20_000);
        r.finish();
        for h in handles {
            h.join().unwrap();
        }
        let o = collect(rx, 1);
        assert_eq!(o.stats[0].late, 2);
        assert_eq!(o.stats[0].hits, 5);
        let got: Vec<_> = o
            .offenses
            .iter()
            .map(|x| (x.key.net.addr, x.time_ms))
            .collect();
        // 1: 9500 then 10_000 (500 ms at 1r/s: 1000 - 500 + 1000 > 1000). 2: 5000, 7000 and
        // 9000 are 2 s apart and all pass; counted at the watermark, the two late ones would
        // have overflowed at 9000.
        assert_eq!(got, [(Addr::from_v4(1), 10_000)]);
        assert_eq!(o.ticks[0], [9_000, 19_000]);
    }

    #[test]
    fn late_hits_are_processed_without_waiting_for_the_watermark() {
        let (mut routers, handles, rx) = setup(&[spec("r", 1000, 0)], 1, 1, 0, 1000);
        let mut r = routers.pop().unwrap();
        r.flush(10_000);
        r.push(hit(3, 4_000));
        r.push(hit(3, 4_100));
        r.flush(10_000); // the watermark stays
                         // The offense arrives before the shard is done: read it while the router still runs.
        let mut seen = None;
        for msg in rx.iter() {
            if let ShardOut::Offense { offense, .. } = msg {
                seen = Some(offense.time_ms);
                break;
            }
        }
        assert_eq!(seen, Some(4_100));
        r.finish();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn hits_at_the_time_already_processed_are_processed_without_waiting() {
        // Watch reads a line of the same second (or millisecond) in a later round: it is not
        // late, and nothing it must be ordered after can still come.
        let (mut routers, handles, rx) = setup(&[spec("r", 1000, 0)], 1, 1, 0, 1000);
        let mut r = routers.pop().unwrap();
        r.push(hit(3, 10_000));
        r.flush(10_000);
        r.push(hit(3, 10_000));
        r.flush(10_000); // the watermark stays
        let mut seen = None;
        // Against a hang: before, the hit waited for a watermark that never came.
        while let Ok(msg) = rx.recv_timeout(std::time::Duration::from_secs(10)) {
            if let ShardOut::Offense { offense, .. } = msg {
                seen = Some(offense.time_ms);
                break;
            }
        }
        assert_eq!(seen, Some(10_000));
        r.finish();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn waiting_hits_meet_the_rules_of_a_reload_by_id() {
        let (mut routers, handles, rx) =
            setup(&[spec("a", 1000, 0), spec("b", 1000, 0)], 2, 1, 1000, 1000);
        let mut r = routers.pop().unwrap();
        for t in [10_000, 10_001] {
            r.push(Hit {
                rules: 0b11,
                ..hit(1, t)
            });
        }
        r.flush(10_000); // watermark 9000: both hits wait in their shard
        let b_only = CompiledRules::new(&[spec("b", 1000, 0)])
            .unwrap()
            .with_ids(vec![1]);
        assert!(
            !r.set_rules(Arc::new(b_only)),
            "same prefixes: buckets kept"
        );
        r.finish();
        for h in handles {
            h.join().unwrap();
        }
        let o = collect(rx, 2);
        let got: Vec<_> = o.offenses.iter().map(|x| (x.rule, x.time_ms)).collect();
        assert_eq!(got, [(1, 10_001)], "a is gone; b's offense carries b's id");
    }

    #[test]
    fn a_coarser_routing_prefix_resets_the_buckets_of_every_shard() {
        let by = |name: &str, prefix: u8| RuleSpec {
            ipv4_prefix: prefix,
            ..spec(name, 1000, 1)
        };
        for (other, reset) in [(by("b", 24), false), (by("c", 16), true)] {
            let (mut routers, handles, rx) = setup(&[by("a", 32), by("b", 24)], 2, 1, 0, 1000);
            let mut r = routers.pop().unwrap();
            r.push(hit(1, 0));
            r.push(hit(1, 1));
            r.flush(1); // processed: a's bucket is full (burst 1)
            let rules = CompiledRules::new(&[by("a", 32), other]).unwrap();
            assert_eq!(r.set_rules(Arc::new(rules.with_ids(vec![0, 2]))), reset);
            r.push(hit(1, 2)); // overflows a's bucket unless it was reset
            r.finish();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(collect(rx, 2).offenses.is_empty(), reset);
        }
    }

    #[test]
    fn hits_at_the_last_watermark_are_processed_at_the_end() {
        let (mut routers, handles, rx) = setup(&[spec("r", 1000, 0)], 1, 1, 0, 1000);
        let mut r = routers.pop().unwrap();
        r.push(hit(1, 500));
        r.flush(500);
        r.push(hit(1, 500));
        r.finish();
        for h in handles {
            h.join().unwrap();
        }
        let o = collect(rx, 1);
        assert_eq!(o.offenses.len(), 1);
        assert_eq!(o.ticks[0], [500]);
    }

    #[test]
    fn watermark_waits_for_the_slowest_producer() {
        let (mut routers, handles, rx) = setup(&[spec("r", 1000, 0)], 1, 2, 0, 1000);
        let mut b = routers.pop().unwrap();
        let mut a = routers.pop().unwrap();
        a.push(hit(1, 100));
        a.flush(100);
        b.push(hit(1, 50));
        b.flush(50);
        a.push(hit(1, 200));
        a.finish();
        b.flush(300);
        b.finish();
        for h in handles {
            h.join().unwrap();
        }
        let o = collect(rx, 1);
        assert_eq!(o.stats[0].late, 0);
        assert_eq!(o.ticks[0], [50, 300]);
        // 50, then 100 overflows (0 - 50 + 1000 > 0) and so does 200 (0 - 150 + 1000).
        let times: Vec<_> = o.offenses.iter().map(|x| x.time_ms).collect();
        assert_eq!(times, [100]);
        assert_eq!(o.stats[0].overflows, 2, "the second one is suppressed");
    }

    #[test]
    fn cap_is_split_over_shards_and_refusals_counted() {
        let (mut routers, handles, rx) = setup(&[spec("r", 1000, 5)], 2, 1, 0, 4);
        let mut r = routers.pop().unwrap();
        for a in 0..40 {
            r.push(hit(a, 0));
        }
        r.finish();
        for h in handles {
            h.join().unwrap();
        }
        let o = collect(rx, 2);
        let refused: u64 = o.stats.iter().map(|s| s.cap_refused).sum();
        let kept: u64 = o.stats.iter().map(|s| s.keys_at_end).sum();
        assert_eq!(refused + kept, 40);
        assert!(o
            .stats
            .iter()
            .all(|s| s.keys_peak == 2 && s.keys_at_end == 2));
        assert_eq!(o.stats.iter().map(|s| s.hits).sum::<u64>(), 40);
    }

    #[test]
    fn eviction_shows_in_stats_only() {
        // A cap of 40 lets sweeps run from 5 entries on.
        let (mut routers, handles, rx) = setup(&[spec("r", 1000, 1)], 1, 1, 0, 40);
        let mut r = routers.pop().unwrap();
        for a in 0..10 {
            r.push(hit(a, 0));
        }
        r.flush(0);
        // Twice as many keys: the next sweep is due, and finds the first ten idle.
        for a in 10..20 {
            r.push(hit(a, 20_000));
        }
        r.flush(20_000);
        r.push(hit(99, 30_000));
        r.finish();
        for h in handles {
            h.join().unwrap();
        }
        let o = collect(rx, 1);
        let s = o.stats[0];
        assert_eq!((s.evicted, s.keys_peak, s.keys_at_end), (10, 20, 11));
        assert!(o.offenses.is_empty());
        // The ticks carry the counters as they go: 10 keys after the first flush, 10 after
        // the second (10 new, 10 evicted), then what the end reports.
        let ticks = &o.tick_stats[0];
        assert_eq!(ticks.len(), 3);
        assert_eq!(
            (ticks[0].keys_at_end, ticks[0].hits, ticks[0].evicted),
            (10, 10, 0)
        );
        assert_eq!(
            (ticks[1].keys_at_end, ticks[1].hits, ticks[1].evicted),
            (10, 20, 10)
        );
        assert_eq!(ticks[2], s);
    }

    #[test]
    fn a_top_request_is_answered_with_the_busiest_keys_while_hits_flow() {
        let (mut routers, handles, rx) = setup(&[spec("r", 1000, 5)], 2, 1, 0, 1000);
        let mut r = routers.pop().unwrap();
        for t in 0..5 {
            r.push(hit(7, 1000 + t));
            r.push(hit(100 + t as u32, 1000));
        }
        r.flush(2000);
        let (tx, replies) = unbounded();
        r.ask_top(4, &tx);
        r.ask_top(4, &tx);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(
                replies
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .unwrap(),
            );
        }
        let mut shards: Vec<u32> = got.iter().map(|t| t.shard).collect();
        shards.sort_unstable();
        assert_eq!(shards, [0, 0, 1, 1], "each shard answers each request");
        let tracked: u64 = got
            .iter()
            .filter(|t| t.shard == 0)
            .map(|t| t.tracked)
            .sum::<u64>()
            + got
                .iter()
                .filter(|t| t.shard == 1)
                .map(|t| t.tracked)
                .sum::<u64>();
        assert_eq!(tracked, 12, "6 keys, counted twice");
        let seven = (got.iter().flat_map(|t| &t.entries))
            .find(|e| e.key.net.addr == Addr::from_v4(7))
            .unwrap();
        assert_eq!(seven.count, 5);
        r.finish();
        for h in handles {
            h.join().unwrap();
        }
        drop(rx);
    }

    #[test]
    fn dropped_senders_end_the_shard() {
        let (routers, handles, rx) = setup(&[spec("r", 1000, 1)], 2, 1, 0, 1000);
        drop(routers);
        for h in handles {
            h.join().unwrap();
        }
        let o = collect(rx, 2);
        assert_eq!(o.stats, vec![ShardStats::default(); 2]);
    }
}
