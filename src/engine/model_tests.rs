//! The engine against a reference model: random hit streams through real routers and shard
//! threads must give exactly the offenses of a plain, obviously-correct `limit_req` model.
//!
//! The model keeps every key forever in a `BTreeMap`, uses `i64` absolute times and writes
//! nginx's arithmetic literally. The engine evicts idle buckets, stores `u32` time offsets, moves
//! its epoch, splits keys over shards and merges producers by watermark; none of that may show.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_channel::unbounded;
use proptest::prelude::*;

use crate::addr::{Addr, Cidr};
use crate::engine::router::Router;
use crate::engine::rule::tests::spec;
use crate::engine::rule::CompiledRules;
use crate::engine::shard::tests::collect;
use crate::engine::shard::{spawn_shards, ShardConfig};
use crate::engine::{Key, Offense, RuleSpec};
use crate::hit::{Hit, NO_VHOST};

/// What is compared: key, rule, time, requests, first seen.
type Seen = (Key, u16, i64, u64, i64);

fn seen(o: &Offense) -> Seen {
    (o.key, o.rule, o.time_ms, o.requests, o.first_seen_ms)
}

struct State {
    excess: i64,
    last: i64,
    first: i64,
    count: u64,
    quiet_until: Option<i64>,
}

/// The reference: hits in time order (stable), every rule, nginx's formula as written.
fn model(rules: &[RuleSpec], hits: &[Hit]) -> Vec<Seen> {
    let mut order: Vec<&Hit> = hits.iter().collect();
    order.sort_by_key(|h| h.time_ms);
    let mut states: BTreeMap<(Key, usize), State> = BTreeMap::new();
    let mut out = Vec::new();
    for h in order {
        let t = h.time_ms;
        for (i, r) in rules.iter().enumerate() {
            if h.rules & (1 << i) == 0 {
                continue;
            }
            let prefix = if h.addr.is_v4() {
                r.ipv4_prefix
            } else {
                r.ipv6_prefix
            };
            let key = Key {
                net: Cidr::new(h.addr, prefix),
                vhost: if r.key_by_vhost { h.vhost } else { NO_VHOST },
            };
            let fresh = State {
                excess: 0,
                last: t,
                first: t,
                count: 1,
                quiet_until: None,
            };
            let Some(s) = states.get_mut(&(key, i)) else {
                states.insert((key, i), fresh);
                continue;
            };
            let rate = r.rate.milli_per_sec as i64;
            let ms = (t - s.last).max(0);
            let excess = s.excess - rate * ms / 1000 + 1000;
            let quiet = s.quiet_until.is_some_and(|q| t < q);
            if excess <= 0 && !quiet {
                // Would store 0, like a new key: a new tracking period.
                *s = fresh;
                continue;
            }
            s.count += 1;
            let excess = excess.max(0);
            if excess > i64::from(r.burst) * 1000 {
                if !quiet {
                    out.push((key, i as u16, t, s.count, s.first));
                    s.quiet_until = Some(t + r.ban_ms as i64);
                }
            } else {
                s.excess = excess;
                s.last = t;
            }
        }
    }
    out.sort();
    out
}

/// One producer's stream: hits in push order, and after which of them to flush.
struct Feed {
    hits: Vec<(usize, Hit, bool)>,
}

/// Runs the feed through real routers and shards; returns the sorted offenses and total late.
fn engine(
    rules: &[RuleSpec],
    feed: &Feed,
    shards: usize,
    producers: usize,
    lateness_ms: i64,
    batch: usize,
    max_keys: usize,
) -> (Vec<Seen>, u64) {
    let compiled = Arc::new(CompiledRules::new(rules).unwrap());
    let cfg = ShardConfig {
        shards,
        producers,
        lateness_ms,
        max_keys,
    };
    let (out, rx) = unbounded();
    let (txs, handles) = spawn_shards(&cfg, compiled.clone(), out).unwrap();
    let mut routers: Vec<Router> = (0..producers)
        .map(|p| {
            Router::new(txs.clone(), p as u32, compiled.route_prefixes()).with_batch_size(batch)
        })
        .collect();
    drop(txs);
    let mut lows = vec![i64::MIN; producers];
    for &(p, hit, flush) in &feed.hits {
        routers[p].push(hit);
        lows[p] = lows[p].max(hit.time_ms);
        if flush {
            routers[p].flush(lows[p]);
        }
    }
    for r in routers {
        r.finish();
    }
    for h in handles {
        h.join().unwrap();
    }
    let o = collect(rx, shards);
    let mut got: Vec<Seen> = o.offenses.iter().map(seen).collect();
    got.sort();
    let matching = feed.hits.iter().filter(|(_, h, _)| h.rules != 0).count() as u64;
    assert_eq!(o.stats.iter().map(|s| s.hits).sum::<u64>(), matching);
    let reported: u64 = o.stats.iter().map(|s| s.offenses).sum();
    assert_eq!(reported, got.len() as u64);
    (got, o.stats.iter().map(|s| s.late).sum())
}

const ADDRS: [&str; 7] = [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.1.1",
    "10.1.0.1",
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8:0:1::1",
];
const DAY: i64 = 86_400_000;

fn rule_strategy() -> impl Strategy<Value = RuleSpec> {
    (
        prop_oneof![Just(500u64), Just(1000), Just(20_000), 1u64..=50_000],
        0u32..=4,
        prop_oneof![Just(0u64), 1u64..=20_000],
        prop_oneof![Just(32u8), Just(24), Just(16)],
        prop_oneof![Just(128u8), Just(64), Just(48)],
        any::<bool>(),
    )
        .prop_map(|(rate, burst, ban_ms, v4, v6, by_vhost)| RuleSpec {
            ban_ms,
            ipv4_prefix: v4,
            ipv6_prefix: v6,
            key_by_vhost: by_vhost,
            ..spec("p", rate, burst)
        })
}

/// (address, vhost, rule bits, gap to the previous hit, jitter, producer, flush after)
type RawHit = (usize, u32, u32, i64, u16, usize, bool);

fn hit_strategy() -> impl Strategy<Value = RawHit> {
    (
        0..ADDRS.len(),
        0u32..2,
        0u32..8,
        prop_oneof![
            4 => Just(0i64),
            4 => 1i64..300,
            2 => 300i64..3000,
            1 => 5_000i64..40_000,
            1 => 30 * DAY..60 * DAY,
        ],
        any::<u16>(),
        0usize..2,
        prop::bool::weighted(0.2),
    )
}

/// Builds each producer's time-ordered stream, with hits up to `lateness_ms` out of order (the
/// most a producer may send behind its own low mark).
fn build_feed(raw: &[RawHit], producers: usize, lateness_ms: i64) -> Feed {
    let mut base = 1_700_000_000_000i64;
    let hits = raw
        .iter()
        .map(|&(a, vhost, rules, gap, jitter, p, flush)| {
            base += gap;
            let hit = Hit {
                addr: Addr::parse(ADDRS[a].as_bytes()).unwrap(),
                time_ms: base - i64::from(jitter) % (lateness_ms + 1),
                vhost,
                rules,
                flags: 0,
            };
            (p % producers, hit, flush)
        })
        .collect();
    Feed { hits }
}

proptest! {
    #![proptest_config(crate::proptest_config(200))]

    #[test]
    fn engine_matches_reference_model(
        rules in prop::collection::vec(rule_strategy(), 1..=3),
        raw in prop::collection::vec(hit_strategy(), 1..200),
        shards in 1usize..=3,
        producers in 1usize..=2,
        lateness_ms in prop_oneof![Just(0i64), Just(50), Just(2000)],
        batch in 1usize..=8,
    ) {
        let feed = build_feed(&raw, producers, lateness_ms);
        let hits: Vec<Hit> = feed.hits.iter().map(|&(_, h, _)| h).collect();
        let want = model(&rules, &hits);
        // Room for every entry (≤ 42) in one shard, and sweeps from 8 entries on.
        let max_keys = 64 * shards;
        let (got, late) = engine(&rules, &feed, shards, producers, lateness_ms, batch, max_keys);
        prop_assert_eq!(late, 0);
        prop_assert_eq!(got, want);
    }
}

/// A deterministic pseudo-random log: a few flooders among many normal clients on two vhosts.
fn two_vhost_log() -> Vec<Hit> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut t = 1_700_000_000_000i64;
    (0..20_000)
        .map(|_| {
            let r = next();
            // About 64 lines per second of one-second log resolution.
            if r & 63 == 0 {
                t += 1000;
            }
            let flooder = r >> 8 & 3 == 0;
            let addr = if flooder {
                Addr::from_v4(0xc000_0200 + (r >> 12 & 1) as u32)
            } else {
                Addr::from_v4(0x0a00_0000 + (r >> 12 & 0x3ff) as u32)
            };
            Hit {
                addr,
                time_ms: t,
                vhost: (r >> 30 & 1) as u32,
                rules: 0b111,
                flags: 0,
            }
        })
        .collect()
}

#[test]
fn one_log_split_by_vhost_over_two_producers_gives_the_same_offenses() {
    let rules = [
        RuleSpec {
            ban_ms: 60_000,
            ..spec("fast", 5_000, 10)
        },
        RuleSpec {
            ban_ms: 0,
            ipv4_prefix: 24,
            ..spec("net", 10_000, 50)
        },
        RuleSpec {
            key_by_vhost: true,
            ban_ms: 5_000,
            ..spec("host", 2_000, 5)
        },
    ];
    let log = two_vhost_log();
    let single = Feed {
        hits: log
            .iter()
            .enumerate()
            .map(|(i, &h)| (0, h, i % 500 == 499))
            .collect(),
    };
    // Each vhost file's producer flushes on its own schedule with its own newest time.
    let split = Feed {
        hits: log
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                let p = h.vhost as usize;
                (p, h, i % (300 + 400 * p) == 7)
            })
            .collect(),
    };
    let (one, late1) = engine(&rules, &single, 2, 1, 0, 256, 1 << 20);
    let (two, late2) = engine(&rules, &split, 2, 2, 0, 256, 1 << 20);
    assert_eq!((late1, late2), (0, 0));
    assert!(one.len() > 10, "the log must contain floods: {}", one.len());
    assert!(one.iter().any(|o| o.1 == 2) && one.iter().any(|o| o.1 == 1));
    assert_eq!(one, two);
    assert_eq!(one, model(&rules, &log));
}

/// Rules whose buckets recover within a minute (so that a file silent for the settled mark's
/// [`QUIET_MS`](crate::watch::marks::QUIET_MS) cannot matter) and suppress reports up to 20 s.
fn prompt_rule_strategy() -> impl Strategy<Value = RuleSpec> {
    (
        prop_oneof![Just(500u64), Just(1000), Just(20_000), 200u64..=50_000],
        0u32..=4,
        prop_oneof![Just(0u64), 1u64..=20_000],
        prop_oneof![Just(32u8), Just(16)],
        any::<bool>(),
    )
        .prop_map(|(rate, burst, ban_ms, v4, by_vhost)| RuleSpec {
            ban_ms,
            ipv4_prefix: v4,
            ipv6_prefix: 48,
            key_by_vhost: by_vhost,
            ..spec("p", rate, burst)
        })
}

/// The file an address is logged in: addresses that share a key under any rule above (the
/// same /16 or /48) share a file, so that each key's lines come in its own order.
fn file_of(addr: usize) -> usize {
    match addr {
        0..=2 => 0,
        3 => 1,
        _ => 2,
    }
}

/// How one file's lines reach watch: written `delay_ms` after their log time (negative: the
/// writer's clock is ahead), in chunks every `flush_ms` (0: at once, a live log; else a
/// buffered one).
#[derive(Clone, Copy, Debug)]
struct Writer {
    delay_ms: i64,
    flush_ms: i64,
}

fn writer_strategy() -> impl Strategy<Value = Writer> {
    (
        prop_oneof![
            2 => Just(0i64),
            3 => -3_000i64..60_000,
            1 => 600_000i64..3_600_000, // older lines appended
        ],
        prop_oneof![2 => Just(0i64), 1 => 1_000i64..10_000],
    )
        .prop_map(|(delay_ms, flush_ms)| Writer { delay_ms, flush_ms })
}

/// Runs a time-ordered log through one router (watch's single producer) as the files are
/// written on the simulated wall clock, with watch's own marks (`watch::marks`) after each round
/// of reads and on idle lifts, a stall (nothing read between `stall.0` and `stall.1`, then the
/// backlog at once). Returns the sorted offenses and the late count.
fn watch_like(
    rules: &[RuleSpec],
    log: &[(usize, Hit)],
    writers: &[Writer; 3],
    stall: (i64, i64),
    shards: usize,
    batch: usize,
) -> (Vec<Seen>, u64) {
    use crate::watch::marks::{low_mark, settled_mark, FileMark};
    let compiled = Arc::new(CompiledRules::new(rules).unwrap());
    let cfg = ShardConfig {
        shards,
        producers: 1,
        lateness_ms: 0,
        // Room for every entry (≤ 42) in one shard, and sweeps from 8 entries on: idle state
        // is forgotten often, so a settled mark too far on would show.
        max_keys: 64 * shards,
    };
    let (out, rx) = unbounded();
    let (txs, handles) = spawn_shards(&cfg, compiled.clone(), out).unwrap();
    let mut router = Router::new(txs, 0, compiled.route_prefixes()).with_batch_size(batch);

    // When each line is read: written at its time + delay, rounded up to the file's next
    // flush, held back by the stall; files keep their own order.
    let mut reads: Vec<(i64, usize, Hit)> = log
        .iter()
        .map(|&(f, h)| {
            let w = writers[f];
            let mut at = h.time_ms + w.delay_ms;
            if w.flush_ms > 0 {
                at = (at.div_euclid(w.flush_ms) + 1) * w.flush_ms;
            }
            if (stall.0..stall.1).contains(&at) {
                at = stall.1;
            }
            (at, f, h)
        })
        .collect();
    for f in 0..3 {
        // Monotone per file (rounding keeps order, the stall too); make it explicit.
        let mut last = i64::MIN;
        for r in reads.iter_mut().filter(|r| r.1 == f) {
            r.0 = r.0.max(last);
            last = r.0;
        }
    }
    reads.sort_by_key(|r| r.0);

    let mut files = [FileMark::NEW; 3];
    let mut newest = i64::MIN;
    let flush = |router: &mut Router, files: &[FileMark; 3], newest: i64, now: i64| {
        let low = low_mark(newest, now);
        router.settle(settled_mark(files.iter().copied(), low, 0, now));
        router.flush(low);
    };
    let mut i = 0;
    let mut now = reads.first().map_or(0, |r| r.0);
    while i < reads.len() {
        // One round: everything written by `now`.
        let mut got = [i64::MIN; 3];
        while i < reads.len() && reads[i].0 <= now {
            let (_, f, h) = reads[i];
            router.push(h);
            got[f] = got[f].max(h.time_ms);
            newest = newest.max(h.time_ms);
            i += 1;
        }
        for f in 0..3 {
            files[f].read(got[f], now);
        }
        flush(&mut router, &files, newest, now);
        // Idle lifts once a second until the next write (at most 30 of them).
        let next = reads.get(i).map_or(now + 2_000, |r| r.0);
        let step = ((next - now) / 30).max(1_000);
        let mut t = now + step;
        while t < next {
            flush(&mut router, &files, newest, t);
            t += step;
        }
        now = next;
    }
    router.finish();
    for h in handles {
        h.join().unwrap();
    }
    let o = collect(rx, shards);
    let mut got: Vec<Seen> = o.offenses.iter().map(seen).collect();
    got.sort();
    (got, o.stats.iter().map(|s| s.late).sum())
}

proptest! {
    #![proptest_config(crate::proptest_config(200))]

    /// However the files are written (live, buffered, lagging, a clock ahead, older lines
    /// appended, a stall then a backlog), watch's marks give the offenses of the reference
    /// model on the final files: each key's lines come in order, so late ones count exactly.
    #[test]
    fn late_lines_count_as_in_order_whatever_the_schedule(
        rules in prop::collection::vec(prompt_rule_strategy(), 1..=3),
        raw in prop::collection::vec(
            (0..ADDRS.len(), 0u32..2, 0u32..8, prop_oneof![
                4 => Just(0i64), 4 => 1i64..300, 2 => 300i64..3000, 1 => 5_000i64..40_000,
            ]),
            1..300,
        ),
        writers in [writer_strategy(), writer_strategy(), writer_strategy()],
        stall in (0i64..120_000, 0i64..60_000),
        shards in 1usize..=3,
        batch in 1usize..=8,
    ) {
        let mut t = 1_700_000_000_000i64;
        let log: Vec<(usize, Hit)> = raw
            .iter()
            .map(|&(a, vhost, rules, gap)| {
                t += gap;
                let hit = Hit {
                    addr: Addr::parse(ADDRS[a].as_bytes()).unwrap(),
                    time_ms: t,
                    vhost,
                    rules,
                    flags: 0,
                };
                (file_of(a), hit)
            })
            .collect();
        let hits: Vec<Hit> = log.iter().map(|&(_, h)| h).collect();
        let want = model(&rules, &hits);
        let stall = (1_700_000_000_000 + stall.0, 1_700_000_000_000 + stall.0 + stall.1);
        let (got, _late) = watch_like(&rules, &log, &writers, stall, shards, batch);
        prop_assert_eq!(got, want);
    }
}

/// The case that banned innocent clients before late lines counted at their own time: a
/// buffered vhost (flushed every 3 s) beside a live one. 8 r/s under a 10r/s burst 15 rule is
/// no offense; counted at the watermark, each 3-second chunk of 24 requests was one instant.
#[test]
fn a_client_under_the_rate_on_a_buffered_log_is_not_an_offense() {
    let rules = [RuleSpec {
        ban_ms: 60_000,
        ..spec("r", 10_000, 15)
    }];
    let t0 = 1_700_000_000_000i64;
    let mut log = Vec::new();
    for i in 0..400 {
        // The slow client on the buffered file, a busy client on the live one.
        log.push((
            0,
            Hit {
                addr: Addr::parse(b"10.0.0.1").unwrap(),
                time_ms: t0 + i * 125,
                vhost: 0,
                rules: 1,
                flags: 0,
            },
        ));
        log.push((
            1,
            Hit {
                addr: Addr::parse(b"10.1.0.1").unwrap(),
                time_ms: t0 + i * 125 + 60,
                vhost: 1,
                rules: 1,
                flags: 0,
            },
        ));
    }
    let writers = [
        Writer {
            delay_ms: 0,
            flush_ms: 3_000,
        },
        Writer {
            delay_ms: 0,
            flush_ms: 0,
        },
        Writer {
            delay_ms: 0,
            flush_ms: 0,
        },
    ];
    let (got, late) = watch_like(&rules, &log, &writers, (0, 0), 2, 64);
    assert!(late > 300, "the buffered file's lines come late: {late}");
    assert!(got.is_empty(), "{got:?}");
}
