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
    #![proptest_config(ProptestConfig::with_cases(200))]

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
