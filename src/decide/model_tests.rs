//! The decider against a reference model of bans: random offense sequences through real shard
//! streams and the real [`BanTable`](super::ban_table::BanTable) must give exactly the bans and
//! unbans of a plain, obviously-correct model.
//!
//! The model keeps, per (key, rule), the time of every ban it made and the end of the active
//! one, in a `BTreeMap`, forever; it writes escalation as repeated multiplication with integers
//! and the recidive window as a literal comparison. The table keeps only what still counts,
//! computes lengths in floating point and orders its expiries in a set; none of that may show.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::ban_table::tests::{offense, rule};
use super::decider::tests::through_shards;
use super::Event;
use crate::engine::{Key, Offense};

/// A rule as the model sees it, in whole seconds; the factor is an integer.
#[derive(Clone, Copy)]
struct ModelRule {
    ban: i64,
    factor: i64,
    max: i64,
    window: i64,
}

const RULES: [(&str, ModelRule); 2] = [
    (
        "a",
        ModelRule {
            ban: 30,
            factor: 2,
            max: 200,
            window: 900,
        },
    ),
    (
        "b",
        ModelRule {
            ban: 45,
            factor: 3,
            max: 100,
            window: 120,
        },
    ),
];

/// The decider's tests allowlist 127.0.0.0/8; the other keys are plain addresses and prefixes.
const KEYS: [&str; 5] = [
    "192.0.2.1",
    "192.0.2.2",
    "127.0.0.1",
    "2001:db8::/64",
    "10.0.0.0/24",
];

fn allowlisted(key: &str) -> bool {
    key.starts_with("127.")
}

/// What is compared: `ban key rule at until #n` or `unban key rule at`, times in seconds.
type Line = String;

#[derive(Default)]
struct Slot {
    /// Every ban's offense time, in order.
    bans: Vec<i64>,
    /// The end of the active ban.
    until: Option<i64>,
}

/// Bans per (key, rule), decided one offense at a time in time order.
struct Model {
    slots: BTreeMap<(Key, u16), Slot>,
    out: Vec<Line>,
}

impl Model {
    /// Ends the bans whose end is at or before `now`, soonest first (ties by key, then rule),
    /// each at its own end.
    fn expire(&mut self, now: i64) {
        let mut ending: Vec<(i64, Key, u16)> = self
            .slots
            .iter()
            .filter_map(|(&(key, rule), s)| match s.until {
                Some(until) if until <= now => Some((until, key, rule)),
                _ => None,
            })
            .collect();
        ending.sort();
        for (until, key, rule) in ending {
            if let Some(s) = self.slots.get_mut(&(key, rule)) {
                s.until = None;
            }
            self.out.push(format!(
                "unban {} {} {until}",
                key.net,
                RULES[usize::from(rule)].0
            ));
        }
    }

    fn offense(&mut self, key: Key, rule: u16, at: i64) {
        if allowlisted(&key.net.to_string()) {
            return;
        }
        let (name, r) = RULES[usize::from(rule)];
        let slot = self.slots.entry((key, rule)).or_default();
        if slot.until.is_some() {
            return; // banned already: suppressed
        }
        let earlier = slot
            .bans
            .iter()
            .filter(|&&t| at - r.window <= t && t <= at)
            .count();
        let mut length = r.ban.min(r.max);
        for _ in 0..earlier {
            length = (length * r.factor).min(r.max);
        }
        slot.bans.push(at);
        slot.until = Some(at + length);
        self.out.push(format!(
            "ban {} {name} {at} {} #{}",
            key.net,
            at + length,
            earlier + 1
        ));
    }
}

/// The model's events for `offenses` (key index, rule, second), then expiry up to `end`.
fn model(offenses: &[Offense], end: i64) -> Vec<Line> {
    let mut sorted: Vec<&Offense> = offenses.iter().collect();
    sorted.sort_by_key(|o| (o.time_ms, o.key, o.rule));
    let mut m = Model {
        slots: BTreeMap::new(),
        out: Vec::new(),
    };
    for o in sorted {
        let at = o.time_ms / 1000;
        m.expire(at);
        m.offense(o.key, o.rule, at);
    }
    m.expire(end);
    m.out
}

fn line(ev: &Event) -> Line {
    match ev {
        Event::Ban(b) => format!(
            "ban {} {} {} {} #{}",
            b.key.net,
            b.rule,
            b.time_ms / 1000,
            b.until_ms / 1000,
            b.offense
        ),
        Event::Unban(u) => format!("unban {} {} {}", u.key.net, u.rule, u.time_ms / 1000),
    }
}

/// A sanity check of the model itself against lengths worked out by hand.
#[test]
fn the_model_escalates_caps_and_forgets_as_written() {
    let a = |t: i64| offense("192.0.2.1", 0, t);
    // Rule a: 30 s, ×2, at most 200 s, window 900 s.
    let got = model(
        &[a(0), a(10), a(30), a(90), a(210), a(410), a(1000), a(1320)],
        2000,
    );
    assert_eq!(
        got,
        [
            "ban 192.0.2.1 a 0 30 #1",
            // 10: banned, suppressed.
            "unban 192.0.2.1 a 30",
            "ban 192.0.2.1 a 30 90 #2",
            "unban 192.0.2.1 a 90",
            "ban 192.0.2.1 a 90 210 #3",
            "unban 192.0.2.1 a 210",
            "ban 192.0.2.1 a 210 410 #4",
            "unban 192.0.2.1 a 410",
            "ban 192.0.2.1 a 410 610 #5",
            "unban 192.0.2.1 a 610",
            // The bans at 0, 30 and 90 are out of the window [100, 1000].
            "ban 192.0.2.1 a 1000 1120 #3",
            "unban 192.0.2.1 a 1120",
            "ban 192.0.2.1 a 1320 1380 #2",
            "unban 192.0.2.1 a 1380",
        ]
    );
    let b = |t: i64| offense("127.0.0.1", 1, t);
    assert!(model(&[b(0), b(1)], 100).is_empty(), "allowlisted");
}

proptest! {
    #![proptest_config(crate::proptest_config(256))]

    /// Random offenses (few keys, both rules, times spread over several windows), split over
    /// random shards whose messages interleave at random: the decider's events are the model's.
    #[test]
    fn the_decider_bans_escalates_and_expires_as_the_model(
        raw in proptest::collection::vec((0usize..KEYS.len(), 0u16..2, 0i64..2000, any::<bool>()), 0..80),
        shards in 1usize..5,
        choices in proptest::collection::vec(any::<u8>(), 200),
    ) {
        let rules: Vec<_> = RULES
            .iter()
            .map(|(name, r)| rule(name, r.ban as u64, r.factor as f64, r.max as u64, r.window as u64))
            .collect();
        let all: Vec<(usize, Offense)> = raw
            .iter()
            .enumerate()
            .map(|(i, &(k, r, t, _))| (i, offense(KEYS[k], r, t)))
            .collect();
        let shard_of: Vec<(usize, bool)> = raw.iter().map(|&(k, _, _, tick)| (k, tick)).collect();
        let end = 3000;
        let (events, _) = through_shards(&rules, &all, &shard_of, shards, &choices, end * 1000);
        let got: Vec<Line> = events.iter().map(line).collect();
        let offenses: Vec<Offense> = all.iter().map(|(_, o)| *o).collect();
        prop_assert_eq!(got, model(&offenses, end));
    }
}
