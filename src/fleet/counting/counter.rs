//! One server's side of fleet-wide counting: this server's requests of `scope = "fleet"` rules
//! counted per key and window, shipped to the store at each exchange, and the fleet's totals
//! read back for the keys near their limit, which [`KeyWindows`] turns into offenses.
//!
//! An exchange (every `count_interval`) is one pipeline:
//! - `HINCRBY` of each key's requests here into the hash of the window of their log time (on
//!   Redis's clock), whose reply is the fleet's total so far: every key active here is read
//!   back at no extra cost;
//! - `PEXPIRE` of each hash written: a window's hash lives as long as it can still be read;
//! - `HMGET` of the windows still read (`lookback`) for the keys *near their limit* (excess at
//!   least a quarter of the burst, or a window with half the rate's requests): their
//!   totals then include what other servers shipped after this one. A key far from its limit is
//!   known only by what its `HINCRBY` answered, a lower bound: the error is towards not banning.
//!
//! Windows older than `lookback` are settled: what reaches them later is not counted (towards
//! not banning). A counter that starts, or starts again after an outage, counts from the current
//! window: it neither reads nor ships anything older.

use std::collections::HashMap;
use std::sync::Arc;

use super::store::{Op, Reply, Store};
use super::window::{KeyWindows, WindowLimits};
use crate::addr::Cidr;
use crate::engine::{Key, Offense, RuleSpec};
use crate::hit::{Hit, RuleMask, VhostId, NO_VHOST};

/// The group of a key's field: FNV-1a, then a final mix, then multiply-shift onto
/// `0..groups`. Spelled out rather than taken from a hashing crate: every server of the fleet,
/// whatever its version, must put a key in the same group.
pub fn group_of(field: &str, groups: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in field.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finaliser: FNV's high bits alone are weak for short keys.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    ((u128::from(h) * u128::from(groups.max(1))) >> 64) as u32
}

/// The most keys a counter tracks: each costs a command per window, so a flood of distinct
/// sources (millions of addresses) would otherwise turn into pipelines Redis cannot take. Keys
/// beyond it are counted locally only (towards not banning), and counted in `refused`.
pub const MAX_KEYS: usize = 500_000;

/// A rule counted fleet-wide.
#[derive(Clone, Debug)]
pub struct CountRule {
    /// Its bit in [`Hit::rules`].
    pub bit: u8,
    /// Its id in offenses (see `engine::rule_ids`).
    pub id: u16,
    /// Its name: how the servers of the fleet agree on the rule in Redis.
    pub name: String,
    pub lim: WindowLimits,
    /// The ban length in windows: how long a key's reports are quiet after one.
    pub quiet_windows: i64,
    pub v4_prefix: u8,
    pub v6_prefix: u8,
    pub by_vhost: bool,
}

impl CountRule {
    pub fn new(bit: u8, id: u16, spec: &RuleSpec, interval_ms: u64) -> CountRule {
        let interval = interval_ms.max(1);
        CountRule {
            bit,
            id,
            name: spec.name.clone(),
            lim: WindowLimits {
                drain: spec.rate.milli_per_sec.saturating_mul(interval) / 1000,
                burst: u64::from(spec.burst).saturating_mul(1000),
            },
            quiet_windows: i64::try_from(spec.ban_ms.div_ceil(interval)).unwrap_or(i64::MAX),
            v4_prefix: spec.ipv4_prefix,
            v6_prefix: spec.ipv6_prefix,
            by_vhost: spec.key_by_vhost,
        }
    }

    fn key(&self, hit: &Hit) -> Key {
        let prefix = if hit.addr.is_v4() {
            self.v4_prefix
        } else {
            self.v6_prefix
        };
        Key {
            net: Cidr::new(hit.addr, prefix),
            vhost: if self.by_vhost { hit.vhost } else { NO_VHOST },
        }
    }
}

/// How the counter exchanges.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `[fleet] count_interval`.
    pub interval_ms: u64,
    /// Windows read back (the current one included); older ones are settled.
    pub lookback: i64,
    /// Hash-tag groups the keys are spread over.
    pub groups: u32,
    /// The names' common part: `[fleet] stream` (without braces).
    pub prefix: String,
}

impl Settings {
    /// How long a window's hash lives: while it can be read, and a little more.
    fn ttl_ms(&self) -> u64 {
        self.interval_ms
            .saturating_mul(u64::try_from(self.lookback + 2).unwrap_or(u64::MAX))
            .saturating_add(2000)
    }
}

/// A key this server counts.
struct Tracked {
    windows: KeyWindows,
    field: Arc<str>,
    group: u32,
    /// This server's requests not shipped yet, by window.
    pending: Vec<(i64, u64)>,
    /// The last window with requests here.
    last_local: i64,
    /// Read back every window at each exchange.
    near: bool,
    /// From this server's requests: the first and last log times, the last vhost and flags.
    first_ms: i64,
    last_ms: i64,
    vhost: VhostId,
    flags: u8,
}

/// What a counter counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterStats {
    /// Requests counted towards a fleet rule (one per rule they count for).
    pub counted: u64,
    /// Requests older than the windows still read (a backlog read after a restart), left to
    /// local counting.
    pub too_old: u64,
    /// Keys tracked now.
    pub keys: u64,
    /// Requests of new keys not counted fleet-wide because [`MAX_KEYS`] were tracked (left to
    /// local counting).
    pub refused: u64,
    /// Commands sent.
    pub commands: u64,
}

pub struct Counter {
    rules: Vec<CountRule>,
    mask: RuleMask,
    settings: Settings,
    /// The first window counted: windows before it are neither shipped nor read.
    start: i64,
    tracked: HashMap<(u8, Key), Tracked>,
    /// Keys with requests not shipped yet.
    dirty: Vec<(u8, Key)>,
    stats: CounterStats,
}

impl Counter {
    pub fn new(rules: Vec<CountRule>, mut settings: Settings) -> Counter {
        // The group's braces must be the first in a name: a stream named with a hash tag of
        // its own (`{fw}:events`, for the bans' commands) would put every group in one slot.
        settings.prefix.retain(|c| c != '{' && c != '}');
        let mask = rules.iter().fold(0, |m, r| m | (1 << r.bit));
        Counter {
            rules,
            mask,
            settings,
            start: i64::MIN,
            tracked: HashMap::new(),
            dirty: Vec::new(),
            stats: CounterStats::default(),
        }
    }

    /// The rule bits this counter counts.
    pub fn mask(&self) -> RuleMask {
        self.mask
    }

    /// Forgets everything and counts from `window` on (at start, and when the store is back
    /// after an outage: what was counted before is not known to be complete).
    pub fn restart_at(&mut self, window: i64) {
        self.tracked.clear();
        self.dirty.clear();
        self.start = window;
    }

    /// The oldest window still read when `now` is the current one.
    fn oldest(&self, now: i64) -> i64 {
        self.start.max(now - self.settings.lookback + 1)
    }

    /// Counts `hit` in `window` (its log time on the store's clock), `now` being the current
    /// window; `vhost_name` names vhosts for rules keyed on client + vhost.
    pub fn hit(
        &mut self,
        hit: &Hit,
        window: i64,
        now: i64,
        vhost_name: &dyn Fn(VhostId) -> Option<String>,
    ) {
        if hit.rules & self.mask == 0 {
            return;
        }
        // A line stamped ahead of the clock counts now.
        let window = window.min(now);
        for r in 0..self.rules.len() {
            let rule = &self.rules[r];
            if hit.rules & (1 << rule.bit) == 0 {
                continue;
            }
            if window < self.oldest(now) {
                self.stats.too_old += 1;
                continue;
            }
            let key = rule.key(hit);
            let id = (r as u8, key);
            let full = self.tracked.len() >= MAX_KEYS;
            let t = match self.tracked.get_mut(&id) {
                Some(t) => t,
                None if full => {
                    self.stats.refused += 1;
                    continue;
                }
                None => {
                    let field = match key.vhost {
                        NO_VHOST => key.net.to_string(),
                        v => match vhost_name(v) {
                            Some(name) => format!("{} {name}", key.net),
                            None => continue,
                        },
                    };
                    let group = group_of(&field, self.settings.groups);
                    self.tracked.entry(id).or_insert(Tracked {
                        windows: KeyWindows::new(window - 1),
                        field: Arc::from(field),
                        group,
                        pending: Vec::new(),
                        last_local: window,
                        near: false,
                        first_ms: hit.time_ms,
                        last_ms: hit.time_ms,
                        vhost: hit.vhost,
                        flags: hit.flags,
                    })
                }
            };
            if t.pending.is_empty() {
                self.dirty.push(id);
            }
            match t.pending.iter_mut().find(|(w, _)| *w == window) {
                Some((_, n)) => *n += 1,
                None => t.pending.push((window, 1)),
            }
            t.last_local = t.last_local.max(window);
            t.first_ms = t.first_ms.min(hit.time_ms);
            t.last_ms = t.last_ms.max(hit.time_ms);
            t.vhost = hit.vhost;
            t.flags = hit.flags;
            self.stats.counted += 1;
        }
    }

    /// The name of the hash of `rule`'s `group` in `window`, made once per exchange.
    fn hash(
        &self,
        names: &mut HashMap<(u8, u32, i64), Arc<str>>,
        rule: u8,
        group: u32,
        window: i64,
    ) -> Arc<str> {
        names
            .entry((rule, group, window))
            .or_insert_with(|| {
                let name = &self.rules[usize::from(rule)].name;
                Arc::from(format!(
                    "{{{}:count:{group}}}:{name}:{window}",
                    self.settings.prefix
                ))
            })
            .clone()
    }

    /// One exchange at `now` (the current window on the store's clock): ships what was counted,
    /// reads back the keys near their limit, and returns the offenses found. On an error the
    /// requests not shipped are dropped (local counting has them) and the error is returned.
    pub fn exchange(&mut self, now: i64, store: &mut dyn Store) -> Result<Vec<Offense>, String> {
        if self.start == i64::MIN {
            self.start = now;
        }
        let oldest = self.oldest(now);
        let mut ops = Vec::new();
        // What each reply is for: (key, window) per Incr; keys and window per Get.
        let mut incr_for: Vec<((u8, Key), i64)> = Vec::new();
        let mut gets: HashMap<(u8, u32, i64), Vec<(u8, Key)>> = HashMap::new();
        let mut names: HashMap<(u8, u32, i64), Arc<str>> = HashMap::new();
        let dirty = std::mem::take(&mut self.dirty);
        for id in &dirty {
            let Some(t) = self.tracked.get_mut(id) else {
                continue;
            };
            let pending = std::mem::take(&mut t.pending);
            let group = t.group;
            let field = t.field.clone();
            for (w, n) in pending {
                if w < oldest {
                    self.stats.too_old += n;
                    continue;
                }
                let hash = self.hash(&mut names, id.0, group, w);
                ops.push(Op::Incr {
                    hash,
                    field: field.clone(),
                    by: n,
                });
                incr_for.push((*id, w));
            }
        }
        for (id, t) in &self.tracked {
            if t.near {
                for w in oldest..=now {
                    gets.entry((id.0, t.group, w)).or_default().push(*id);
                }
            }
        }
        let ms = self.settings.ttl_ms();
        let mut written: Vec<Arc<str>> = names.values().cloned().collect();
        written.sort_unstable();
        for hash in written {
            ops.push(Op::Expire { hash, ms });
        }
        let mut get_for: Vec<(i64, Vec<(u8, Key)>)> = Vec::with_capacity(gets.len());
        for ((rule, group, w), ids) in gets {
            let fields = ids
                .iter()
                .filter_map(|id| self.tracked.get(id).map(|t| t.field.clone()))
                .collect();
            ops.push(Op::Get {
                hash: self.hash(&mut names, rule, group, w),
                fields,
            });
            get_for.push((w, ids));
        }
        if ops.is_empty() {
            self.forget(oldest);
            return Ok(Vec::new());
        }
        self.stats.commands += ops.len() as u64;
        let replies = store.exchange(&ops)?;
        if replies.len() != ops.len() {
            return Err(format!(
                "{} replies to {} commands",
                replies.len(),
                ops.len()
            ));
        }
        let mut touched: Vec<(u8, Key)> = Vec::new();
        let mut replies = replies.into_iter();
        for (id, w) in incr_for {
            if let Some(Reply::Total(n)) = replies.next() {
                if let Some(t) = self.tracked.get_mut(&id) {
                    t.windows.set_total(w, n);
                    touched.push(id);
                }
            }
        }
        let mut replies = replies.skip_while(|r| *r == Reply::Done);
        for (w, ids) in get_for {
            let Some(Reply::Totals(totals)) = replies.next() else {
                continue;
            };
            for (id, n) in ids.iter().zip(totals) {
                if let Some(t) = self.tracked.get_mut(id) {
                    t.windows.set_total(w, n);
                    touched.push(*id);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let mut offenses = Vec::new();
        for id in touched {
            let rule = &self.rules[usize::from(id.0)];
            let Some(t) = self.tracked.get_mut(&id) else {
                continue;
            };
            t.windows.settle(oldest - 1, rule.lim);
            let e = t.windows.evaluate(now, rule.lim, rule.quiet_windows);
            t.near = e.excess > 0 && e.excess.saturating_mul(4) >= rule.lim.burst
                || e.peak.saturating_mul(2000) >= rule.lim.drain;
            if e.overflow.is_some() {
                offenses.push(Offense {
                    key: id.1,
                    rule: rule.id,
                    time_ms: t.last_ms,
                    first_seen_ms: t.first_ms,
                    requests: e.requests,
                    vhost: t.vhost,
                    flags: t.flags,
                });
            }
        }
        self.forget(oldest);
        Ok(offenses)
    }

    /// Drops the keys with nothing left to count: no request here in the windows read, not
    /// near their limit, their bucket drained.
    fn forget(&mut self, oldest: i64) {
        let rules = &self.rules;
        self.tracked.retain(|id, t| {
            if t.last_local >= oldest || !t.pending.is_empty() {
                return true;
            }
            t.windows.settle(oldest - 1, rules[usize::from(id.0)].lim);
            t.near && !t.windows.is_idle() || !t.windows.is_idle()
        });
        self.stats.keys = self.tracked.len() as u64;
    }

    /// Drops what was counted and not shipped (the store is away: local counting has it).
    pub fn drop_pending(&mut self) {
        for id in std::mem::take(&mut self.dirty) {
            if let Some(t) = self.tracked.get_mut(&id) {
                t.pending.clear();
            }
        }
    }

    pub fn stats(&self) -> CounterStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
