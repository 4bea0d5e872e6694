//! What `floodwatch top` and the dashboard show, kept by the watch loop: the shards' samples
//! of their busiest keys (asked for about once a second while someone looks, see
//! `engine::top`), the lines read per vhost sampled every second, and 15 minutes of history
//! in 10-second steps (with `[metrics] dashboard`). Memory is bounded: a few samples per key
//! the shards reported in the last seconds, 11 per-second samples of the vhosts' counts and
//! 90 history points.
//!
//! **Cost.** Nothing here runs per line but the vhost counts (`source::vhost_counts`, and
//! while someone looks `source::key_vhosts`, a bit test for lines not of a shown key). The
//! shards pass over their keys only when asked: each second while a `top` or a dashboard
//! polls (interest lasts [`INTEREST`] after the last request), every history step with the
//! dashboard on, never otherwise. The first request after nobody looked, finding no fresh
//! sample, waits for one, at most [`WAIT_FRESH`]: the loop's only wait, bounded, and never
//! while someone keeps looking.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::addr::Addr;
use crate::clock::wall_ms;
use crate::control::top::{
    History, KeyState, Point, Rated, Top, TopBans, TopKey, TopVhost, NEAR_PERCENT,
};
use crate::control::SinkStatus;
use crate::decide::ban_table::{BanTable, FLEET_RULE, MANUAL_RULE};
use crate::decide::event::Rfc3339;
use crate::engine::router::Router;
use crate::engine::top::ShardTop;
use crate::engine::Key;
use crate::hit::{VhostId, NO_VHOST};
use crate::source::key_vhosts::KeyVhosts;
use crate::source::vhost_counts::{VhostCount, VhostCounts};
use crate::vhost::Vhosts;

/// Entries each shard reports per measure (fill, rate).
const PER_SHARD: usize = 64;
/// How often samples are taken while someone looks.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How long a request keeps the samples coming.
pub(super) const INTEREST: Duration = Duration::from_secs(10);
/// A sample older than this is not shown without asking for a new one first.
const STALE: Duration = Duration::from_secs(3);
/// How long a request waits for a fresh sample.
pub(super) const WAIT_FRESH: Duration = Duration::from_millis(250);
/// Samples kept per key, and how long a key no sample names is remembered.
const TRAIL: usize = 12;
const FORGET: Duration = Duration::from_secs(15);
/// The history: a point every `STEP`, `POINTS` of them (15 minutes).
const STEP: Duration = Duration::from_secs(10);
const POINTS: usize = 90;
/// Vhosts and keys named in a history point (the rest of the vhosts summed as `other`).
const POINT_VHOSTS: usize = 6;
const POINT_KEYS: usize = 5;

/// A key's samples: (log time, requests, start of its spell).
struct Trail {
    seen: Instant,
    samples: VecDeque<(i64, u32, i64)>,
}

impl Trail {
    /// Requests per second over about `window_ms` before the last sample: the difference with
    /// the oldest sample of the same spell within 1.5 windows, else the average over the spell.
    fn rate(&self, window_ms: i64) -> f64 {
        let Some(&(at, count, first)) = self.samples.back() else {
            return 0.0;
        };
        let base = (self.samples.iter())
            .find(|&&(t, _, f)| f == first && t < at && at - t <= window_ms + window_ms / 2);
        match base {
            Some(&(t, c, _)) => f64::from(count.saturating_sub(c)) * 1000.0 / (at - t) as f64,
            None => f64::from(count) * 1000.0 / (at - first).max(1000) as f64,
        }
    }
}

/// One per-second sample of the counts.
struct Counts {
    at: Instant,
    lines: u64,
    vhosts: Vec<(VhostId, VhostCount)>,
}

/// The totals at the start of a history step.
struct StepBase {
    lines: u64,
    bans: u64,
    vhosts: HashMap<VhostId, u64>,
}

pub(super) struct LiveView {
    tx: Sender<ShardTop>,
    rx: Receiver<ShardTop>,
    /// The latest sample of each shard, and when it came.
    shards: Vec<Option<(Instant, ShardTop)>>,
    asked: Option<Instant>,
    wanted_until: Option<Instant>,
    trails: HashMap<(Key, u16), Trail>,
    counts: VecDeque<Counts>,
    /// `[metrics] dashboard`: history kept, samples taken every step.
    history: Option<VecDeque<Point>>,
    next_step: Instant,
    step_base: Option<StepBase>,
    vhosts: Vhosts,
    /// When the addresses whose vhosts are counted are next renewed.
    next_renew: Instant,
}

/// What a frame is made from, lent by the loop.
pub(super) struct Sources<'a> {
    pub table: &'a BanTable,
    pub lines: u64,
    pub vhost_counts: Option<&'a VhostCounts>,
    /// The vhosts the busiest clients hit (while someone looks).
    pub key_vhosts: Option<&'a KeyVhosts>,
    pub files: usize,
    pub read_lag_ms: u64,
    pub read_lag_bytes: u64,
    pub uptime: Duration,
    pub bans_since_start: u64,
    pub sinks: Vec<SinkStatus>,
}

impl LiveView {
    pub(super) fn new(shards: usize, dashboard: bool, vhosts: Vhosts) -> LiveView {
        let (tx, rx) = crossbeam_channel::unbounded();
        LiveView {
            tx,
            rx,
            shards: vec![None; shards],
            asked: None,
            wanted_until: None,
            trails: HashMap::new(),
            counts: VecDeque::new(),
            history: dashboard.then(VecDeque::new),
            next_step: Instant::now() + STEP,
            step_base: None,
            vhosts,
            next_renew: Instant::now(),
        }
    }

    /// Once per loop round: takes the shards' answers, samples the counts each second, asks
    /// the shards again when someone looks (or a history step needs them), closes history steps.
    pub(super) fn tick(&mut self, now: Instant, router: &Router, src: &Sources) {
        self.take_answers(now);
        let due = self
            .counts
            .back()
            .is_none_or(|c| now >= c.at + SAMPLE_EVERY);
        if due {
            if self.counts.len() == 11 {
                self.counts.pop_front();
            }
            self.counts.push_back(Counts {
                at: now,
                lines: src.lines,
                vhosts: src
                    .vhost_counts
                    .map_or_else(Vec::new, |v| v.iter().collect()),
            });
            self.trails
                .retain(|_, t| now.duration_since(t.seen) < FORGET);
        }
        let looking = self.wanted_until.is_some_and(|u| now < u);
        let every = if looking { SAMPLE_EVERY } else { STEP };
        let ask =
            (looking || self.history.is_some()) && self.asked.is_none_or(|a| now >= a + every);
        if ask {
            self.ask(now, router);
        }
        if self.history.is_some() && now >= self.next_step {
            self.next_step = now + STEP;
            self.close_step(src);
        }
    }

    /// Once a second: the addresses whose vhosts to count (those of the sampled keys that are
    /// single addresses) while someone looks, `Some(None)` once nobody does, `None` between.
    pub(super) fn watched(&mut self, now: Instant) -> Option<Option<Vec<Addr>>> {
        if now < self.next_renew {
            return None;
        }
        self.next_renew = now + SAMPLE_EVERY;
        if self.wanted_until.is_none_or(|u| now >= u) {
            return Some(None);
        }
        let mut addrs: Vec<Addr> = (self.shards.iter().flatten())
            .flat_map(|(_, s)| s.entries.iter())
            .filter(|e| e.key.net.prefix == if e.key.net.addr.is_v4() { 32 } else { 128 })
            .map(|e| e.key.net.addr)
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        Some(Some(addrs))
    }

    /// Someone looks: samples keep coming for [`INTEREST`]. When the sample at hand is missing,
    /// or stale while nobody was looking, asks for one and waits for it, at most
    /// [`WAIT_FRESH`]. While someone keeps looking the loop never waits: the samples asked
    /// for every second come when the shards have made them (a pass over millions of keys on
    /// a busy machine may take longer than a second), and the frame says how old its sample is.
    pub(super) fn want(&mut self, now: Instant, router: &Router) {
        let looking = self.wanted_until.is_some_and(|u| now < u);
        self.wanted_until = Some(now + INTEREST);
        self.take_answers(now);
        let fresh =
            |s: &Option<(Instant, ShardTop)>| s.as_ref().is_some_and(|(at, _)| now < *at + STALE);
        let have_all = self.shards.iter().all(Option::is_some);
        if self.shards.iter().all(fresh) || (looking && have_all) {
            return;
        }
        self.ask(now, router);
        let deadline = now + WAIT_FRESH;
        while !self
            .shards
            .iter()
            .all(|s| s.as_ref().is_some_and(|(at, _)| *at >= now))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(top) => self.take(Instant::now(), top),
                Err(_) => break,
            }
        }
    }

    fn ask(&mut self, now: Instant, router: &Router) {
        if self.shards.len() != router.shards() {
            self.shards = vec![None; router.shards()];
        }
        router.ask_top(PER_SHARD, &self.tx);
        self.asked = Some(now);
    }

    fn take_answers(&mut self, now: Instant) {
        while let Ok(top) = self.rx.try_recv() {
            self.take(now, top);
        }
    }

    fn take(&mut self, now: Instant, top: ShardTop) {
        for e in &top.entries {
            let trail = self.trails.entry((e.key, e.rule)).or_insert_with(|| Trail {
                seen: now,
                samples: VecDeque::with_capacity(TRAIL),
            });
            trail.seen = now;
            let sample = (top.at_ms, e.count, e.first_seen_ms);
            match trail.samples.back_mut() {
                Some(last) if last.0 >= top.at_ms => *last = sample,
                _ => {
                    if trail.samples.len() == TRAIL {
                        trail.samples.pop_front();
                    }
                    trail.samples.push_back(sample);
                }
            }
        }
        if let Some(slot) = self.shards.get_mut(top.shard as usize) {
            *slot = Some((now, top));
        }
    }

    /// One frame: at most `limit` keys and vhosts, busiest first.
    pub(super) fn top(&self, limit: usize, src: Sources) -> Top {
        let now = Instant::now();
        let now_ms = wall_ms();
        let table = src.table;
        let (rate_1s, rate_10s) = self.line_rates();
        let mut vhosts = self.vhost_rows(table);
        vhosts.truncate(limit);
        let mut keys = self.key_rows(table, src.key_vhosts, now_ms);
        keys.truncate(limit);
        let oldest = (self.shards.iter().flatten()).map(|(at, _)| *at).min();
        Top {
            version: env!("CARGO_PKG_VERSION").into(),
            now: Rfc3339(now_ms).to_string(),
            uptime_seconds: src.uptime.as_secs(),
            lines_per_second_1s: rate_1s,
            lines_per_second_10s: rate_10s,
            files: src.files,
            read_lag_seconds: src.read_lag_ms / 1000,
            read_lag_bytes: src.read_lag_bytes,
            keys_tracked: (self.shards.iter().flatten()).map(|(_, s)| s.tracked).sum(),
            bans: TopBans {
                active: table.active_len() as u64,
                since_start: src.bans_since_start,
                pardoned: table.pardons(now_ms).len() as u64,
            },
            sinks: src.sinks,
            vhosts,
            keys,
            sample_age_ms: oldest.map(|at| now.duration_since(at).as_millis() as u64),
        }
    }

    /// Lines per second over the last second and the last ten.
    fn line_rates(&self) -> (f64, f64) {
        let per_s = |a: &Counts, b: &Counts| {
            let secs = b.at.duration_since(a.at).as_secs_f64();
            match secs > 0.0 {
                true => b.lines.saturating_sub(a.lines) as f64 / secs,
                false => 0.0,
            }
        };
        let n = self.counts.len();
        match (
            self.counts.front(),
            n.checked_sub(2).map(|i| &self.counts[i]),
            self.counts.back(),
        ) {
            (Some(first), Some(prev), Some(last)) => (per_s(prev, last), per_s(first, last)),
            _ => (0.0, 0.0),
        }
    }

    fn vhost_rows(&self, table: &BanTable) -> Vec<TopVhost> {
        let n = self.counts.len();
        let (Some(first), Some(last)) = (self.counts.front(), self.counts.back()) else {
            return Vec::new();
        };
        let prev = n.checked_sub(2).map_or(first, |i| &self.counts[i]);
        let by_id =
            |c: &Counts| -> HashMap<VhostId, VhostCount> { c.vhosts.iter().copied().collect() };
        let (first_map, prev_map) = (by_id(first), by_id(prev));
        let mut bans: HashMap<Arc<str>, u64> = HashMap::new();
        for b in table.active() {
            if let Some(v) = &b.vhost {
                *bans.entry(v.clone()).or_default() += 1;
            }
        }
        let secs = |a: &Counts| last.at.duration_since(a.at).as_secs_f64();
        let mut rows: Vec<TopVhost> = (last.vhosts.iter())
            .map(|&(id, c)| {
                let zero = VhostCount::default();
                let f = first_map.get(&id).unwrap_or(&zero);
                let p = prev_map.get(&id).unwrap_or(&zero);
                let rate = |base: &VhostCount, s: f64| match s > 0.0 {
                    true => c.requests.saturating_sub(base.requests) as f64 / s,
                    false => 0.0,
                };
                let requests = c.requests.saturating_sub(f.requests);
                let share = |now: u64, then: u64| match requests {
                    0 => 0.0,
                    r => now.saturating_sub(then) as f64 / r as f64,
                };
                let name = self.vhost_name(id);
                TopVhost {
                    rate_1s: rate(p, secs(prev)),
                    rate_10s: rate(f, secs(first)),
                    share_4xx: share(c.client_errors, f.client_errors),
                    share_5xx: share(c.server_errors, f.server_errors),
                    bans: bans.get(name.as_str()).copied().unwrap_or(0),
                    vhost: name,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.rate_10s
                .total_cmp(&a.rate_10s)
                .then(a.vhost.cmp(&b.vhost))
        });
        rows
    }

    fn vhost_name(&self, id: VhostId) -> String {
        match id {
            NO_VHOST => "-".into(),
            id => self
                .vhosts
                .name(id)
                .map_or_else(|| "-".into(), |n| n.to_string()),
        }
    }

    /// The sampled keys, one row per key: its tightest rule (fullest bucket), its fastest rate.
    fn key_rows(&self, table: &BanTable, by: Option<&KeyVhosts>, now_ms: i64) -> Vec<TopKey> {
        let rules: Vec<&str> = table.rule_names().collect();
        let pardons: HashMap<Key, i64> = (table.pardons(now_ms).into_iter())
            .map(|p| (p.key, p.until_ms))
            .collect();
        let mut rows: HashMap<Key, (TopKey, u32)> = HashMap::new();
        for (_, top) in self.shards.iter().flatten() {
            for e in &top.entries {
                let trail = self.trails.get(&(e.key, e.rule));
                let r1 = trail.map_or(0.0, |t| t.rate(1000));
                let r10 = trail.map_or(0.0, |t| t.rate(10_000));
                let ban = table.active_ban(&e.key, e.rule);
                let state = if ban.is_some() {
                    KeyState::Banned
                } else if e.over {
                    KeyState::Over
                } else if f64::from(e.fill_milli) / 10.0 >= NEAR_PERCENT {
                    KeyState::Near
                } else {
                    KeyState::Counting
                };
                let row = rows.entry(e.key).or_insert_with(|| {
                    // The rule's own vhost, else the one the client hits most lately.
                    let vhost = match e.key.vhost {
                        NO_VHOST => by.and_then(|k| k.busiest(e.key.net.addr)),
                        v => Some(v),
                    };
                    let key = TopKey {
                        key: e.key.net.to_string(),
                        vhost: vhost.map(|v| self.vhost_name(v)),
                        ..TopKey::default()
                    };
                    (key, 0)
                });
                let (k, best_fill) = row;
                if k.rule.is_empty() || e.fill_milli > *best_fill {
                    *best_fill = e.fill_milli;
                    k.rule = rules.get(usize::from(e.rule)).unwrap_or(&"?").to_string();
                    k.fill = f64::from(e.fill_milli) / 10.0;
                }
                k.rate_1s = k.rate_1s.max(r1);
                k.rate_10s = k.rate_10s.max(r10);
                k.requests = k.requests.max(u64::from(e.count));
                if let Some(b) = ban {
                    k.until = Some(Rfc3339(b.until_ms).to_string());
                    if k.vhost.is_none() {
                        k.vhost = b.vhost.as_ref().map(|v| v.to_string());
                    }
                }
                if rank(state) > rank(k.state) {
                    k.state = state;
                }
            }
        }
        let mut out: Vec<TopKey> = rows
            .into_iter()
            .map(|(key, (mut k, _))| {
                // A ban under another rule than the sampled ones: a manual one, the fleet's.
                let ids = (0..rules.len() as u16).chain([MANUAL_RULE, FLEET_RULE]);
                let other =
                    (ids.filter_map(|id| table.active_ban(&key, id))).max_by_key(|b| b.until_ms);
                if table.allowlisted(&key.net) {
                    k.state = KeyState::Allowlisted;
                    k.until = None;
                } else if let (Some(b), false) = (other, k.state == KeyState::Banned) {
                    k.state = KeyState::Banned;
                    k.until = Some(Rfc3339(b.until_ms).to_string());
                } else if k.state != KeyState::Banned {
                    if let Some(&until) = pardons.get(&key) {
                        k.state = KeyState::Pardoned;
                        k.until = Some(Rfc3339(until).to_string());
                    }
                }
                k
            })
            .collect();
        out.sort_by(|a, b| {
            (b.rate_10s.total_cmp(&a.rate_10s))
                .then(b.fill.total_cmp(&a.fill))
                .then(a.key.cmp(&b.key))
        });
        out
    }

    /// The last 15 minutes (empty without `[metrics] dashboard`).
    pub(super) fn history(&self) -> History {
        History {
            step_seconds: STEP.as_secs(),
            points: self.history.iter().flatten().cloned().collect(),
        }
    }

    /// Ends a history step: its lines per second (in all, and for the busiest vhosts), its
    /// bans, and the busiest keys' rates now.
    fn close_step(&mut self, src: &Sources) {
        let vhosts: HashMap<VhostId, u64> = (src.vhost_counts.into_iter())
            .flat_map(|v| v.iter())
            .map(|(id, c)| (id, c.requests))
            .collect();
        let bans = src.table.stats().bans;
        let base = self.step_base.replace(StepBase {
            lines: src.lines,
            bans,
            vhosts: vhosts.clone(),
        });
        let Some(base) = base else {
            return;
        };
        let secs = STEP.as_secs_f64();
        let mut rated: Vec<(u64, VhostId)> = (vhosts.iter())
            .map(|(id, n)| {
                (
                    n.saturating_sub(base.vhosts.get(id).copied().unwrap_or(0)),
                    *id,
                )
            })
            .filter(|(n, _)| *n > 0)
            .collect();
        rated.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut named: Vec<Rated> = (rated.iter().take(POINT_VHOSTS))
            .map(|&(n, id)| Rated {
                name: self.vhost_name(id),
                rate: n as f64 / secs,
            })
            .collect();
        let other: u64 = rated.iter().skip(POINT_VHOSTS).map(|(n, _)| n).sum();
        if other > 0 {
            named.push(Rated {
                name: "other".into(),
                rate: other as f64 / secs,
            });
        }
        let keys = self
            .key_rows(src.table, src.key_vhosts, wall_ms())
            .into_iter()
            .filter(|k| k.rate_10s > 0.0)
            .take(POINT_KEYS)
            .map(|k| Rated {
                name: k.key,
                rate: k.rate_10s,
            })
            .collect();
        let point = Point {
            t: wall_ms(),
            lines_per_second: src.lines.saturating_sub(base.lines) as f64 / secs,
            vhosts: named,
            bans: bans.saturating_sub(base.bans),
            keys,
        };
        if let Some(h) = &mut self.history {
            if h.len() == POINTS {
                h.pop_front();
            }
            h.push_back(point);
        }
    }
}

/// Which state a key shows when its rules disagree: the most pressing.
fn rank(s: KeyState) -> u8 {
    match s {
        KeyState::Counting => 0,
        KeyState::Near => 1,
        KeyState::Over => 2,
        KeyState::Pardoned => 3,
        KeyState::Banned => 4,
        KeyState::Allowlisted => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail(samples: &[(i64, u32, i64)]) -> Trail {
        Trail {
            seen: Instant::now(),
            samples: samples.iter().copied().collect(),
        }
    }

    #[test]
    fn a_key_rate_is_the_difference_of_two_samples_of_one_spell() {
        let t = trail(&[(1000, 10, 0), (2000, 60, 0), (3000, 260, 0)]);
        assert_eq!(t.rate(1000), 200.0);
        assert_eq!(t.rate(10_000), 125.0);
        // A new spell: the samples of the old one do not count.
        let t = trail(&[(1000, 500, 0), (2000, 30, 1500)]);
        assert_eq!(t.rate(1000), 30.0);
        // One sample: the average since its first request, over at least a second.
        assert_eq!(trail(&[(5000, 40, 4900)]).rate(1000), 40.0);
        assert_eq!(trail(&[(5000, 40, 1000)]).rate(10_000), 10.0);
        assert_eq!(trail(&[]).rate(1000), 0.0);
    }
}
