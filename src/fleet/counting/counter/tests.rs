//! The fleet's counting against a replay of the merged log: a log split at random over 2 to 5
//! servers, each counting its part and exchanging through one store, bans the keys a replay of
//! the whole log bans, within the tolerance of counting by windows.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use proptest::prelude::*;

use super::*;
use crate::addr::Addr;
use crate::engine::bucket::{Bucket, Limits, Step};
use crate::engine::rule::tests::spec;
use crate::fleet::counting::store::MemoryStore;

const LOOKBACK: i64 = 10;

fn settings(interval_ms: u64) -> Settings {
    Settings {
        interval_ms,
        lookback: LOOKBACK,
        groups: 4,
        prefix: "t".into(),
    }
}

fn hit(key: u32, time_ms: i64) -> Hit {
    Hit {
        addr: Addr::from_v4(0x0a00_0000 + key),
        time_ms,
        vhost: NO_VHOST,
        rules: 1,
        flags: 0,
    }
}

/// The keys a replay of `log` (key, time) bans under `rule`: nginx's step, request by request.
fn replay_bans(log: &[(u32, i64)], rule: &RuleSpec) -> BTreeSet<u32> {
    let lim = Limits::new(rule);
    let mut buckets: HashMap<u32, Bucket> = HashMap::new();
    let mut banned = BTreeSet::new();
    let mut sorted = log.to_vec();
    sorted.sort_by_key(|&(k, t)| (t, k));
    for (k, t) in sorted {
        let t = t as u32;
        match buckets.get_mut(&k) {
            None => {
                buckets.insert(k, Bucket::new(t));
            }
            Some(b) => {
                if b.step(t, &lim) == Step::Report {
                    banned.insert(k);
                }
            }
        }
    }
    banned
}

/// The keys the fleet bans when server `i` reads the lines of `split[i]`, `delays[i]` windows
/// late, exchanging at every window in turn.
fn fleet_bans(
    log: &[(u32, i64)],
    split: &[usize],
    delays: &[i64],
    rule: &RuleSpec,
    interval_ms: u64,
) -> BTreeSet<u32> {
    let store = Rc::new(RefCell::new(MemoryStore::default()));
    let servers = delays.len();
    let mut counters: Vec<Counter> = (0..servers)
        .map(|_| {
            let r = CountRule::new(0, 0, rule, interval_ms);
            Counter::new(vec![r], settings(interval_ms))
        })
        .collect();
    let interval = interval_ms as i64;
    let end = log.iter().map(|&(_, t)| t).max().unwrap_or(0) / interval + 4 + LOOKBACK;
    let mut banned = BTreeSet::new();
    let names = |_| None;
    for now in 0..=end {
        for (s, counter) in counters.iter_mut().enumerate() {
            // Server s reads, before this exchange, the lines of the window `delay` back.
            let read = now - 1 - delays[s];
            for (&(k, t), _) in log.iter().zip(split).filter(|(_, &o)| o == s) {
                if t.div_euclid(interval) == read {
                    counter.hit(&hit(k, t), read, now, &names);
                }
            }
            let mut st = store.clone();
            for o in counter.exchange(now, &mut st).unwrap() {
                banned.insert(o.key.net.addr.0 as u32 - 0x0a00_0000);
            }
        }
    }
    banned
}

fn with_burst(rule: &RuleSpec, burst: i64) -> RuleSpec {
    RuleSpec {
        burst: burst.max(0) as u32,
        ..rule.clone()
    }
}

/// A log of up to 4 keys, each a run of requests at random gaps.
fn logs() -> impl Strategy<Value = Vec<(u32, i64)>> {
    prop::collection::vec(
        (
            0u32..4,
            0i64..2000,
            prop::collection::vec(0i64..120, 1..250),
        ),
        1..5,
    )
    .prop_map(|runs| {
        let mut log = Vec::new();
        for (key, start, gaps) in runs {
            let mut t = start;
            for g in gaps {
                t += g;
                log.push((key, t));
            }
        }
        log
    })
}

proptest! {
    #![proptest_config(crate::proptest_config(64))]

    #[test]
    fn fleet_bans_equal_replay_of_the_merged_log_within_the_windows(
        log in logs(),
        servers in 2usize..=5,
        seed in prop::collection::vec(0usize..1000, 1000),
        delays in prop::collection::vec(0i64..=2, 5),
        rate in 5u64..60,
        burst in 0u32..25,
        interval_ms in prop::sample::select(vec![100u64, 200, 500]),
    ) {
        let split: Vec<usize> = (0..log.len()).map(|i| seed[i % seed.len()] % servers).collect();
        let rule = spec("r", rate * 1000, burst);
        let fleet = fleet_bans(&log, &split, &delays[..servers], &rule, interval_ms);
        // One window's drain, twice (a window's requests counted at its end, and the peak
        // within a window), in requests: the tolerance of counting by windows.
        let tol = (2 * rate * interval_ms).div_ceil(1000) as i64 + 1;
        let strict = replay_bans(&log, &with_burst(&rule, i64::from(burst) - 1));
        let lenient = replay_bans(&log, &with_burst(&rule, i64::from(burst) + tol));
        prop_assert!(fleet.is_subset(&strict), "fleet {fleet:?} bans beyond replay {strict:?}");
        prop_assert!(lenient.is_subset(&fleet), "replay {lenient:?} bans beyond the fleet {fleet:?}");
    }
}

#[test]
fn a_flood_split_over_three_servers_is_banned_and_one_within_the_rate_is_not() {
    let rule = spec("r", 30_000, 10);
    // Key 1 at 45 r/s, key 2 at 27 r/s, for 10 s, spread round-robin over three servers.
    let mut log = Vec::new();
    for i in 0..450 {
        log.push((1, i * 1000 / 45));
    }
    for i in 0..270 {
        log.push((2, i * 1000 / 27));
    }
    let split: Vec<usize> = (0..log.len()).map(|i| i % 3).collect();
    let fleet = fleet_bans(&log, &split, &[0, 1, 0], &rule, 200);
    assert_eq!(fleet, BTreeSet::from([1]));
    // Each server alone sees 15 r/s and 9 r/s: nothing.
    for s in 0..3 {
        let part: Vec<_> = log
            .iter()
            .zip(&split)
            .filter(|(_, &o)| o == s)
            .map(|(l, _)| *l)
            .collect();
        assert!(replay_bans(&part, &rule).is_empty());
    }
}

#[test]
fn a_late_joiner_counts_from_the_current_window() {
    let rule = spec("r", 30_000, 10);
    let mut c = Counter::new(vec![CountRule::new(0, 0, &rule, 200)], settings(200));
    let mut store = MemoryStore::default();
    c.restart_at(100);
    // A backlog: 200 requests of window 90, read at window 100.
    for _ in 0..200 {
        c.hit(&hit(1, 90 * 200), 90, 100, &|_| None);
    }
    assert!(c.exchange(100, &mut store).unwrap().is_empty());
    assert_eq!(c.stats().too_old, 200);
    assert_eq!(store.commands, 0);
}

#[test]
fn keys_spread_over_the_groups_the_same_on_every_server() {
    // Fixed values: a change would split a fleet running two versions.
    assert_eq!(group_of("203.0.113.7", 16), 1);
    let mut seen = [0u32; 16];
    for k in 0..1600 {
        seen[group_of(&format!("10.0.{}.{}", k / 256, k % 256), 16) as usize] += 1;
    }
    assert!(seen.iter().all(|&n| (50..150).contains(&n)), "{seen:?}");
}

#[test]
fn keys_beyond_the_cap_are_left_to_local_counting() {
    let rule = spec("r", 30_000, 10);
    let mut c = Counter::new(vec![CountRule::new(0, 0, &rule, 200)], settings(200));
    c.restart_at(0);
    for k in 0..(MAX_KEYS as u32 + 10) {
        c.hit(&hit(k, 0), 0, 0, &|_| None);
    }
    let s = c.stats();
    assert_eq!((s.counted, s.refused), (MAX_KEYS as u64, 10));
}
