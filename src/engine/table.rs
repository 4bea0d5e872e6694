//! One shard's keys: per rule, a map from key to [`Bucket`], plus the shard's time base,
//! eviction of idle buckets and the cap on tracked entries.
//!
//! [`KeyTable`] is the single-threaded core of a shard (the thread around it only orders hits by
//! time): it takes hits, mostly in time order, and reports offenses.
//!
//! **Two clocks.** A hit counts at its own time against its key's bucket, whatever the table
//! has seen of other keys: a late line (its key's lines all came in order, but after other
//! keys' newer lines) is counted exactly as if it had come in order. What may *forget* state is
//! the *settled* time ([`KeyTable::settle`]), the oldest time a line may still come at: idle
//! buckets are dropped only when they are idle at that time, so a late line never finds its
//! key's bucket gone while replay would still have had it. Rebasing follows the newest hit;
//! a hit older than the oldest time the table can represent (about 24 days before the newest) is
//! *stale*: counted as such and skipped, never moved to another time.
//!
//! Memory is the design constraint (≤ 64 bytes per tracked key, map overhead included), so a
//! map entry is small: a 20-byte [`Bucket`] with times stored as `u32` offsets from the table's
//! epoch, keyed by an 8-byte `Slot4` (IPv4 address and vhost) in the maps of IPv4 keys, or a
//! 20-byte `Slot6` (address and vhost as `u32`s, no 16-byte alignment) in those of IPv6 keys.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::addr::Cidr;
use crate::engine::bucket::{Bucket, Limits, Ms, Step};
use crate::engine::rule::CompiledRules;
use crate::engine::top::{Picker, TopEntry};
use crate::engine::RuleSpec;
use crate::engine::{Key, Offense};
use crate::hit::{Hit, RuleMask, VhostId, MAX_RULES, NO_VHOST};

/// How often (in log time) the table considers a sweep of idle buckets.
pub const SWEEP_EVERY_MS: i64 = 10_000;
/// The most entries a table may hold without ever sweeping (see [`KeyTable::new`]).
const SWEEP_FLOOR_MAX: usize = 1 << 16;
/// When the cap is reached, an extra sweep may run, at most this often (in log time), so a flood
/// of new keys does not turn every hit into a full sweep.
const CAP_SWEEP_EVERY_MS: i64 = 1_000;
/// The epoch moves forward once offsets pass this (37 days), leaving [`KEEP_MS`] of history.
const REBASE_AT_MS: i64 = (1 << 32) - (1 << 30);
/// How far before the newest hit times stay representable (2³¹ ms, about 24.8 days): the first
/// epoch is set this far before the first hit, and every epoch move keeps this much.
const KEEP_MS: i64 = 1 << 31;

/// An IPv4 key in its map: the masked address and, when the rule keys on it, the vhost. Most
/// keys are IPv4, so they get maps of their own with 8-byte keys: an entry is 28 bytes (29 with
/// its control byte) where one wide enough for IPv6 would be 40.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Slot4 {
    addr: u32,
    vhost: VhostId,
}

/// An IPv6 key in its map: the address as `u32`s, so that the entry keeps 4-byte alignment
/// (an `Addr` would pad it to 16-byte alignment), and the vhost.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Slot6 {
    addr: [u32; 4],
    vhost: VhostId,
}

/// What the maps need of a slot: hashing, equality, and which of a rule's maps holds it.
trait MapSlot: Copy + Eq + Hash {
    /// Which of a rule's [`SEGMENTS`] maps of its family holds this key. Any mix that spreads
    /// keys does: the maps hash with their own random state, so an uneven split only makes
    /// some slices of a sweep longer.
    fn segment(&self) -> usize;
}

impl Hash for Slot4 {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Two writes, not one of both packed in a `u64`: with ahash's portable hasher the
        // packed write spread neighbouring addresses worse (a step on the 20k-key bench took
        // 44 ns instead of 27).
        h.write_u32(self.addr);
        h.write_u32(self.vhost);
    }
}

impl MapSlot for Slot4 {
    #[inline]
    fn segment(&self) -> usize {
        let mix = (self.addr ^ self.vhost.rotate_left(16)).wrapping_mul(0x9E37_79B9);
        (mix >> 28) as usize % SEGMENTS
    }
}

impl Hash for Slot6 {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        let [a, b, c, d] = self.addr.map(u64::from);
        h.write_u64(a | b << 32);
        h.write_u64(c | d << 32);
        h.write_u32(self.vhost);
    }
}

impl MapSlot for Slot6 {
    #[inline]
    fn segment(&self) -> usize {
        let [a, b, c, d] = self.addr;
        let mix = (a ^ b.rotate_left(8) ^ c.rotate_left(16) ^ d.rotate_left(24) ^ self.vhost)
            .wrapping_mul(0x9E37_79B9);
        (mix >> 28) as usize % SEGMENTS
    }
}

/// A key's slot in the maps of its family.
#[derive(Clone, Copy)]
enum Slot {
    V4(Slot4),
    V6(Slot6),
}

impl Slot {
    #[inline]
    fn of(key: &Key) -> Slot {
        let a = key.net.addr;
        if a.is_v4() {
            Slot::V4(Slot4 {
                addr: a.0 as u32,
                vhost: key.vhost,
            })
        } else {
            let a = a.0;
            Slot::V6(Slot6 {
                addr: [
                    a as u32,
                    (a >> 32) as u32,
                    (a >> 64) as u32,
                    (a >> 96) as u32,
                ],
                vhost: key.vhost,
            })
        }
    }
}

type Map<S> = HashMap<S, Bucket, ahash::RandomState>;

/// How many maps one rule's buckets of each address family are split into, by a mix of the
/// key's bits: a sweep of a large table goes a few maps at a time, between batches (see
/// [`KeyTable::sweep_slice`]), so that a table of millions of keys (a botnet of new addresses)
/// never stalls its shard for a whole pass (tens of milliseconds).
const SEGMENTS: usize = 16;

/// About how many entries one slice of a sweep looks at (a millisecond or two).
const SLICE_ENTRIES: usize = 1 << 16;

/// One rule's buckets, in [`SEGMENTS`] maps per address family.
#[derive(Default)]
struct Segmented {
    v4: [Map<Slot4>; SEGMENTS],
    v6: [Map<Slot6>; SEGMENTS],
}

impl Segmented {
    /// One request of `slot` at `off`: steps its bucket, or starts one (`true`: a new entry).
    #[inline(always)]
    fn step(&mut self, slot: Slot, off: Ms, lim: &Limits) -> (Did, bool) {
        match slot {
            Slot::V4(s) => step_in(&mut self.v4[s.segment()], s, off, lim),
            Slot::V6(s) => step_in(&mut self.v6[s.segment()], s, off, lim),
        }
    }

    /// Steps the bucket of `slot` if it has one.
    fn step_existing(&mut self, slot: Slot, off: Ms, lim: &Limits) -> Option<Did> {
        let b = match slot {
            Slot::V4(s) => self.v4[s.segment()].get_mut(&s),
            Slot::V6(s) => self.v6[s.segment()].get_mut(&s),
        }?;
        Some(step(b, off, lim))
    }

    fn insert(&mut self, slot: Slot, b: Bucket) {
        match slot {
            Slot::V4(s) => self.v4[s.segment()].insert(s, b),
            Slot::V6(s) => self.v6[s.segment()].insert(s, b),
        };
    }

    fn len(&self) -> usize {
        self.v4.iter().map(Map::len).sum::<usize>() + self.v6.iter().map(Map::len).sum::<usize>()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Bucket> {
        let v4 = self.v4.iter_mut().flat_map(|m| m.values_mut());
        v4.chain(self.v6.iter_mut().flat_map(|m| m.values_mut()))
    }

    /// The number of maps, counted by [`KeyTable::sweep_slice`].
    const MAPS: usize = 2 * SEGMENTS;

    /// Entries in map `n` (of [`Self::MAPS`]).
    fn len_of(&self, n: usize) -> usize {
        match n.checked_sub(SEGMENTS) {
            None => self.v4[n].len(),
            Some(m) => self.v6[m].len(),
        }
    }

    /// Sweeps map `n` (of [`Self::MAPS`]) at `off`; returns how many entries went.
    fn sweep(&mut self, n: usize, off: Ms, lim: &Limits) -> usize {
        match n.checked_sub(SEGMENTS) {
            None => sweep_map(&mut self.v4[n], off, lim),
            Some(m) => sweep_map(&mut self.v6[m], off, lim),
        }
    }

    fn heap_bytes(&self) -> usize {
        self.v4.iter().map(map_bytes).sum::<usize>() + self.v6.iter().map(map_bytes).sum::<usize>()
    }
}

/// One request of `slot` in `map` (see [`Segmented::step`]).
#[inline(always)]
fn step_in<S: MapSlot>(map: &mut Map<S>, slot: S, off: Ms, lim: &Limits) -> (Did, bool) {
    match map.entry(slot) {
        Entry::Occupied(mut e) => (step(e.get_mut(), off, lim), false),
        Entry::Vacant(e) => {
            e.insert(Bucket::new(off));
            (Did::Counted, true)
        }
    }
}

/// One rule's buckets and how its keys are formed.
struct RuleTable {
    /// What offenses name the rule by.
    id: u16,
    map: Segmented,
    limits: Limits,
    v4_prefix: u8,
    v6_prefix: u8,
    by_vhost: bool,
}

impl RuleTable {
    fn new(id: u16, s: &RuleSpec) -> RuleTable {
        RuleTable {
            id,
            map: Segmented::default(),
            limits: Limits::new(s),
            v4_prefix: s.ipv4_prefix.min(32),
            v6_prefix: s.ipv6_prefix.min(128),
            by_vhost: s.key_by_vhost,
        }
    }

    /// Whether `other` forms the same keys from a hit (then buckets can move to it).
    fn same_keys(&self, other: &RuleTable) -> bool {
        (self.v4_prefix, self.v6_prefix, self.by_vhost)
            == (other.v4_prefix, other.v6_prefix, other.by_vhost)
    }

    /// The key of `hit` under this rule.
    #[inline]
    fn key(&self, hit: &Hit) -> Key {
        let prefix = if hit.addr.is_v4() {
            self.v4_prefix
        } else {
            self.v6_prefix
        };
        Key {
            net: Cidr {
                addr: hit.addr.masked(prefix),
                prefix,
            },
            vhost: if self.by_vhost { hit.vhost } else { NO_VHOST },
        }
    }
}

/// Counters kept by a [`KeyTable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub keys_peak: u64,
    pub evicted: u64,
    pub cap_refused: u64,
    pub offenses: u64,
    pub overflows: u64,
    /// Hits older than the epoch: skipped (see the module documentation).
    pub stale: u64,
}

/// The buckets of one shard, for every rule.
pub struct KeyTable {
    rules: Vec<RuleTable>,
    /// Bits of the rules that exist.
    known: RuleMask,
    /// Absolute log time of offset 0; set by the first hit, [`KEEP_MS`] before it.
    epoch: Option<i64>,
    /// Hits at or past this move the epoch first.
    rebase_at: i64,
    /// The settled time: no hit older than this is expected (see the module documentation).
    settled: i64,
    next_sweep: i64,
    last_sweep: i64,
    /// The sweep in progress: the next map to sweep, counted over rules × [`Segmented::MAPS`].
    sweeping: Option<usize>,
    len: usize,
    cap: usize,
    /// A due sweep runs only when `len >= max(sweep_floor, 2 * kept)`.
    sweep_floor: usize,
    /// Entries left by the last sweep.
    kept: usize,
    stats: TableStats,
    /// Who to name in the cap warning (printed once).
    shard: u32,
    warned: bool,
}

impl KeyTable {
    /// A table for `rules` holding at most `cap` (key, rule) entries.
    ///
    /// Eviction only bounds memory, and in replay nearly every key is idle again before it
    /// returns, so a sweep every 10 s of log time re-inserts and evicts a key per hit (about a
    /// third of the engine's time in `benches/engine.rs`). Sweeps are therefore amortised: one
    /// runs when it is due and the table has at least doubled since the last one kept its
    /// entries, and holds at least `min(cap / 8, 65536)` entries (a few MB; the cap itself
    /// forces a sweep whenever it would refuse a key).
    pub fn new(rules: &CompiledRules, cap: usize, shard: u32) -> KeyTable {
        let tables = rules
            .specs()
            .iter()
            .enumerate()
            .map(|(i, s)| RuleTable::new(rules.id(i), s))
            .collect::<Vec<_>>();
        KeyTable {
            known: known_bits(tables.len()),
            rules: tables,
            epoch: None,
            rebase_at: i64::MIN,
            settled: i64::MIN,
            next_sweep: i64::MIN,
            last_sweep: i64::MIN,
            sweeping: None,
            len: 0,
            cap,
            sweep_floor: (cap / 8).min(SWEEP_FLOOR_MAX),
            kept: 0,
            stats: TableStats::default(),
            shard,
            warned: false,
        }
    }

    /// Counts one request at its own time against its keys' buckets (a time earlier than a
    /// key's last request counts at that last one, as nginx does); each overflow outside report
    /// suppression goes to `report`. A hit before the epoch is stale: skipped.
    #[inline]
    pub fn hit(&mut self, hit: &Hit, report: &mut impl FnMut(Offense)) {
        let t = hit.time_ms;
        if t >= self.rebase_at {
            self.rebase(t);
        }
        let epoch = self.epoch.unwrap_or(t);
        if t < epoch {
            self.stale(t);
            return;
        }
        let off = offset(t, epoch);
        let mut bits = hit.rules & self.known;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let key = self.rules[i].key(hit);
            let slot = Slot::of(&key);
            let did = if self.len < self.cap {
                let rt = &mut self.rules[i];
                let (did, new) = rt.map.step(slot, off, &rt.limits);
                self.len += usize::from(new);
                did
            } else {
                self.step_at_cap(i, slot, off)
            };
            if self.len as u64 > self.stats.keys_peak {
                self.stats.keys_peak = self.len as u64;
            }
            match did {
                Did::Counted => {}
                Did::Suppressed => self.stats.overflows += 1,
                Did::Report { first_seen, count } => {
                    self.stats.overflows += 1;
                    self.stats.offenses += 1;
                    report(Offense {
                        key,
                        rule: self.rules[i].id,
                        time_ms: t,
                        first_seen_ms: epoch + i64::from(first_seen),
                        requests: u64::from(count),
                        vhost: hit.vhost,
                        flags: hit.flags,
                    });
                }
            }
        }
    }

    #[cold]
    fn stale(&mut self, t: i64) {
        if self.stats.stale == 0 {
            log::warn!(
                "shard {}: a line dated {} is more than 24 days older than lines already counted: \
                 too old to count; such lines are skipped (counted as stale)",
                self.shard,
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.max(0) as u64)
                ),
            );
        }
        self.stats.stale += 1;
    }

    /// The slow path when the table is full: existing keys step as usual; for a new key, the
    /// buckets idle at the settled time are swept first (at most once per
    /// [`CAP_SWEEP_EVERY_MS`] of it), else it is refused.
    #[cold]
    fn step_at_cap(&mut self, i: usize, slot: Slot, off: Ms) -> Did {
        let rt = &mut self.rules[i];
        if let Some(did) = rt.map.step_existing(slot, off, &rt.limits) {
            return did;
        }
        let settled = self.settled;
        if settled >= self.last_sweep.saturating_add(CAP_SWEEP_EVERY_MS) {
            self.sweep_all(settled);
        }
        if self.len < self.cap {
            self.rules[i].map.insert(slot, Bucket::new(off));
            self.len += 1;
            return Did::Counted;
        }
        self.stats.cap_refused += 1;
        if !self.warned {
            self.warned = true;
            log::warn!(
                "shard {}: {} tracked keys reached the cap; new keys are not counted \
                 until idle ones expire (raise the key limit)",
                self.shard,
                self.cap
            );
        }
        Did::Counted
    }

    /// Takes the rules of a reload. A rule whose id was there before keeps its buckets (with
    /// the new rate and burst applied from its next request) unless it now forms other keys
    /// (prefix, vhost keying) or `reset`; buckets of rules that are gone are dropped. Returns how
    /// the rule bits of hits made for the old rules map onto the new ones.
    pub fn set_rules(&mut self, rules: &CompiledRules, reset: bool) -> BitRemap {
        let mut old: Vec<Option<RuleTable>> = self.rules.drain(..).map(Some).collect();
        let mut remap = BitRemap([0; MAX_RULES]);
        for (j, spec) in rules.specs().iter().enumerate() {
            let mut table = RuleTable::new(rules.id(j), spec);
            let before = old
                .iter()
                .position(|t| t.as_ref().is_some_and(|t| t.id == table.id));
            if let Some(i) = before {
                remap.0[i] = 1 << j;
                if let Some(prev) = old[i].take() {
                    if !reset && prev.same_keys(&table) {
                        table.map = prev.map;
                    }
                }
            }
            self.rules.push(table);
        }
        self.known = known_bits(self.rules.len());
        self.len = self.rules.iter().map(|rt| rt.map.len()).sum();
        self.kept = self.len;
        // The maps' numbering changed: a sweep in progress starts again when next due.
        self.sweeping = None;
        remap
    }

    /// Sweeps whenever one is due, however small the table (tests and benchmarks).
    pub fn with_sweep_floor(mut self, entries: usize) -> KeyTable {
        self.sweep_floor = entries;
        self
    }

    /// Moves the settled time to `t` (never back): no hit older than `t` is expected any more,
    /// so buckets idle at `t` may go. Sweeps when one is due.
    pub fn settle(&mut self, t: i64) {
        if t <= self.settled {
            return;
        }
        self.settled = t;
        if self.sweeping.is_some() {
            self.sweep_slice(t);
        } else if t >= self.next_sweep && self.epoch.is_some() {
            if self.len >= self.sweep_floor.max(self.kept.saturating_mul(2)) {
                self.sweeping = Some(0);
                self.sweep_slice(t);
            }
            self.next_sweep = t.saturating_add(SWEEP_EVERY_MS);
        }
    }

    /// Sets the epoch at the first hit, and moves it when `t` would leave the range of an
    /// offset, keeping [`KEEP_MS`] before `t`.
    #[cold]
    fn rebase(&mut self, t: i64) {
        let new_epoch = t.saturating_sub(KEEP_MS);
        if let Some(epoch) = self.epoch {
            let delta = new_epoch.abs_diff(epoch);
            for rt in &mut self.rules {
                let rate = rt.limits.rate;
                rt.map.values_mut().for_each(|b| b.rebase(delta, rate));
            }
        }
        self.epoch = Some(new_epoch);
        self.rebase_at = new_epoch.saturating_add(REBASE_AT_MS);
    }

    /// Sweeps the next maps of the sweep in progress at `t` (see [`SEGMENTS`]), about
    /// [`SLICE_ENTRIES`] entries' worth, at least one map; the last one ends the sweep. Each map
    /// is swept at the settled time of its turn, which only moves forward: a bucket idle then
    /// stays idle until a new hit, so the slices together drop what one pass at the first time
    /// would have, and more. A table smaller than a slice is swept at once.
    fn sweep_slice(&mut self, t: i64) {
        let off = offset(t, self.epoch.unwrap_or(t));
        let mut done = 0;
        while let Some(n) = self.sweeping {
            if done >= SLICE_ENTRIES {
                return;
            }
            let (rule, map) = (n / Segmented::MAPS, n % Segmented::MAPS);
            if let Some(rt) = self.rules.get_mut(rule) {
                done += rt.map.len_of(map).max(1);
                let removed = rt.map.sweep(map, off, &rt.limits);
                self.len -= removed;
                self.stats.evicted += removed as u64;
            }
            if n + 1 >= self.rules.len() * Segmented::MAPS {
                self.sweeping = None;
                self.kept = self.len;
                self.last_sweep = t;
            } else {
                self.sweeping = Some(n + 1);
            }
        }
    }

    /// Sweeps everything at `t` at once (a full table makes room for a new key now).
    fn sweep_all(&mut self, t: i64) {
        self.sweeping = Some(0);
        while self.sweeping.is_some() {
            self.sweep_slice(t);
        }
    }

    /// (key, rule) entries tracked now.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Heap bytes held by the maps, from their capacity and hashbrown's layout (one entry and
    /// one control byte per bucket, buckets a power of two at most 7/8 full, plus one group of
    /// trailing control bytes).
    pub fn heap_bytes(&self) -> usize {
        self.rules.iter().map(|rt| rt.map.heap_bytes()).sum()
    }

    /// Offers the entries of the next maps to `picker` (the busiest at its time: see
    /// [`crate::engine::top`]), about `SLICE_ENTRIES` (65536) of them and at least one map, from map
    /// `from` (counted over rules × the 32 maps of each, as sweeps count). Returns the map to go
    /// on from, or `None` once every map was offered: a shard samples a slice between batches
    /// of hits, never all its keys at once.
    pub fn top_slice(&self, picker: &mut Picker, from: usize) -> Option<usize> {
        let epoch = self.epoch?;
        let at_ms = picker.at_ms();
        let off = offset(at_ms, epoch);
        let (mut n, mut done) = (from, 0);
        while done < SLICE_ENTRIES {
            let (rule, map) = (n / Segmented::MAPS, n % Segmented::MAPS);
            let rt = self.rules.get(rule)?;
            done += rt.map.len_of(map).max(1);
            let lim = &rt.limits;
            let mut offer = |net: Cidr, vhost: VhostId, b: &Bucket| {
                let level = b.level(off, lim.rate);
                picker.offer(TopEntry {
                    key: Key { net, vhost },
                    rule: rt.id,
                    fill_milli: match lim.burst {
                        0 => 0,
                        burst => (level.saturating_mul(1000) / burst).min(1000) as u32,
                    },
                    count: b.count(),
                    first_seen_ms: epoch + i64::from(b.first_seen()),
                    over: b.quiet(off),
                });
            };
            match map.checked_sub(SEGMENTS) {
                None => {
                    for (s, b) in &rt.map.v4[map] {
                        let addr = crate::addr::Addr::from_v4(s.addr);
                        offer(
                            Cidr {
                                addr,
                                prefix: rt.v4_prefix,
                            },
                            s.vhost,
                            b,
                        );
                    }
                }
                Some(m) => {
                    for (s, b) in &rt.map.v6[m] {
                        let [a, b1, c, d] = s.addr.map(u128::from);
                        let addr = crate::addr::Addr(a | b1 << 32 | c << 64 | d << 96);
                        offer(
                            Cidr {
                                addr,
                                prefix: rt.v6_prefix,
                            },
                            s.vhost,
                            b,
                        );
                    }
                }
            }
            n += 1;
        }
        (n < self.rules.len() * Segmented::MAPS).then_some(n)
    }
}

/// The bits of `n` rules.
fn known_bits(n: usize) -> RuleMask {
    match n {
        n if n >= MAX_RULES => RuleMask::MAX,
        n => (1 << n) - 1,
    }
}

/// Old rule bit → new rule bit, from [`KeyTable::set_rules`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitRemap([RuleMask; MAX_RULES]);

impl BitRemap {
    /// The new rules' bits for a mask of the old ones (rules that are gone drop out).
    pub fn apply(&self, mut old: RuleMask) -> RuleMask {
        let mut new = 0;
        while old != 0 {
            let i = old.trailing_zeros() as usize;
            old &= old - 1;
            new |= self.0.get(i).copied().unwrap_or(0);
        }
        new
    }
}

/// Drops every bucket of `map` that is idle at `off`; idle buckets equal absent ones, and no hit
/// older than the settled time is expected, so this changes no decision. Returns how many went.
fn sweep_map<S: MapSlot>(map: &mut Map<S>, off: Ms, lim: &Limits) -> usize {
    let before = map.len();
    let idle = map.values().filter(|b| b.idle(off, lim)).count();
    let survivors = before - idle;
    if survivors * 8 < before {
        // Nearly all idle (the usual case in replay: most clients come back after more than a
        // sweep interval). Erasing entry by entry stalls on each control-byte write, so empty
        // the map (keeping its memory) and put the few survivors back. With more survivors
        // (watch keeps what the files being written may still need: seconds of new keys in a
        // flood of them), putting them back costs a random probe each, far more than erasing
        // the idle ones in one pass.
        let keep: Vec<(S, Bucket)> = map.drain().filter(|(_, b)| !b.idle(off, lim)).collect();
        map.extend(keep);
    } else if idle > 0 {
        map.retain(|_, b| !b.idle(off, lim));
    }
    before - map.len()
}

/// See [`KeyTable::heap_bytes`].
fn map_bytes<S>(map: &Map<S>) -> usize {
    let cap = map.capacity();
    if cap == 0 {
        return 0;
    }
    let buckets = if cap < 8 {
        cap + 1
    } else {
        (cap * 8 / 7).next_power_of_two()
    };
    buckets * (std::mem::size_of::<(S, Bucket)>() + 1) + 16
}

/// What a hit did to one bucket, with just what a report needs (copying the whole bucket out
/// on every step cost a store-forwarding stall: 43 → 31 ns per step in `benches/engine.rs`).
enum Did {
    Counted,
    Suppressed,
    Report { first_seen: Ms, count: u32 },
}

#[inline]
fn step(b: &mut Bucket, t: Ms, lim: &Limits) -> Did {
    match b.step(t, lim) {
        Step::Passed => Did::Counted,
        Step::Suppressed => Did::Suppressed,
        Step::Report => Did::Report {
            first_seen: b.first_seen(),
            count: b.count(),
        },
    }
}

/// `t` as an offset from `epoch`; [`KeyTable::hit`] keeps it in range (a hit before the epoch
/// is stale, one too far after moves the epoch).
#[inline]
fn offset(t: i64, epoch: i64) -> Ms {
    t.saturating_sub(epoch).clamp(0, i64::from(u32::MAX)) as Ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Addr;
    use crate::engine::rule::tests::spec;
    use crate::engine::RuleSpec;

    fn hit(addr: &str, time_ms: i64, rules: RuleMask) -> Hit {
        Hit {
            addr: Addr::parse(addr.as_bytes()).unwrap(),
            time_ms,
            vhost: 7,
            rules,
            flags: 0,
        }
    }

    #[test]
    fn a_sample_goes_slice_by_slice_and_finds_the_busiest() {
        let mut t = table_of(spec("r", 1000, 10));
        let mut none = |_| {};
        for a in 0..70_000u32 {
            t.hit(
                &Hit {
                    addr: Addr::from_v4(0x0a00_0000 + a),
                    ..hit("10.0.0.1", 1000, 1)
                },
                &mut none,
            );
        }
        for i in 0..8 {
            t.hit(&hit("203.0.113.7", 1000 + i, 1), &mut none);
        }
        t.hit(&hit("2001:db8::1", 1000, 1), &mut none);
        let mut picker = Picker::new(3, 1010);
        let (mut slices, mut next) = (0, Some(0));
        while let Some(from) = next {
            next = t.top_slice(&mut picker, from);
            slices += 1;
        }
        assert!(slices > 1, "a table larger than a slice takes several");
        let got = picker.finish();
        let flooder = got
            .iter()
            .find(|e| e.key.net.to_string() == "203.0.113.7")
            .unwrap();
        // 8 requests within 7 ms: 7000 milli-requests over the first, less 7 ms of drain.
        assert_eq!(
            (flooder.count, flooder.fill_milli, flooder.over),
            (8, 699, false)
        );
        assert_eq!(got[0], *flooder, "the fullest first");
        assert!(got.len() <= 6);
        // An empty table has nothing to offer.
        let empty = table_of(spec("r", 1000, 10));
        assert_eq!(empty.top_slice(&mut Picker::new(3, 0), 0), None);
    }

    /// A table of one rule that sweeps whenever one is due.
    fn table_of(rule: RuleSpec) -> KeyTable {
        let rules = CompiledRules::new(&[rule]).unwrap();
        KeyTable::new(&rules, usize::MAX, 0).with_sweep_floor(0)
    }

    /// Hits in order, each settling the table at its time first (as a shard does for lines
    /// that come in order).
    fn run(table: &mut KeyTable, hits: &[Hit]) -> Vec<Offense> {
        let mut out = Vec::new();
        for h in hits {
            table.settle(h.time_ms);
            table.hit(h, &mut |o| out.push(o));
        }
        out
    }

    /// Hits without moving the settled time.
    fn run_late(table: &mut KeyTable, hits: &[Hit]) -> Vec<Offense> {
        let mut out = Vec::new();
        for h in hits {
            table.hit(h, &mut |o| out.push(o));
        }
        out
    }

    #[test]
    fn a_late_hit_counts_at_its_own_time_against_its_keys_bucket() {
        let mut t = table_of(RuleSpec {
            ban_ms: 0,
            ..spec("r", 1000, 1)
        });
        let t0 = 1_700_000_000_000;
        // Another key has moved the table 30 s on; 1.1.1.1's three requests, 400 ms apart,
        // come after it. Counted at their own times: 0, then 1000 - 400 + 1000 = 1600 > 1000
        // overflows at the third. (At one instant, the second would already overflow.)
        run(&mut t, &[hit("2.2.2.2", t0 + 30_000, 1)]);
        let late: Vec<Hit> = (0..3).map(|i| hit("1.1.1.1", t0 + 400 * i, 1)).collect();
        let out = run_late(&mut t, &late);
        let got: Vec<_> = out.iter().map(|o| (o.time_ms, o.requests)).collect();
        assert_eq!(got, [(t0 + 800, 3)]);
    }

    #[test]
    fn buckets_are_kept_until_idle_at_the_settled_time() {
        let mut t = table_of(RuleSpec {
            ban_ms: 0,
            ..spec("r", 1000, 1)
        });
        let t0 = 1_700_000_000_000;
        run(
            &mut t,
            &[hit("1.1.1.1", t0, 1), hit("1.1.1.1", t0 + 100, 1)],
        );
        // Newer lines of other keys are processed, but the settled time stays behind.
        run_late(&mut t, &[hit("2.2.2.2", t0 + 60_000, 1)]);
        t.settle(t0 + 500);
        assert_eq!(t.stats().evicted, 0);
        // 1.1.1.1's next line, late: its bucket (excess 1000 at t0 + 100) is still there.
        let out = run_late(&mut t, &[hit("1.1.1.1", t0 + 600, 1)]);
        assert_eq!(out.len(), 1, "1000 - 500 + 1000 > 1000");
        t.settle(t0 + 60_000);
        assert_eq!(t.stats().evicted, 1, "1.1.1.1 idle at the settled time");
    }

    #[test]
    fn hits_older_than_the_tables_range_are_stale_not_moved() {
        let mut t = table_of(RuleSpec {
            ban_ms: 0,
            ..spec("r", 1000, 0)
        });
        let t0 = 1_700_000_000_000;
        run(&mut t, &[hit("2.2.2.2", t0, 1)]);
        // 24 days back is still in range; 30 days back is not: those two would overflow
        // (burst 0) if they were counted at any one time.
        let in_range = t0 - 24 * 86_400_000;
        let out = run_late(
            &mut t,
            &[hit("1.1.1.1", in_range, 1), hit("1.1.1.1", in_range, 1)],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].time_ms, in_range);
        let old = t0 - 30 * 86_400_000;
        let out = run_late(&mut t, &[hit("3.3.3.3", old, 1), hit("3.3.3.3", old, 1)]);
        assert!(out.is_empty());
        assert_eq!(t.stats().stale, 2);
    }

    #[test]
    fn a_reload_keeps_the_buckets_of_rules_still_there_under_their_ids() {
        let before = CompiledRules::new(&[spec("a", 1000, 5), spec("b", 1000, 5)]).unwrap();
        let mut t = KeyTable::new(&before, usize::MAX, 0);
        let t0 = 1_700_000_000_000;
        // 5 quick requests each: both buckets are full but nothing overflowed yet.
        let five: Vec<Hit> = (0..5).map(|i| hit("192.0.2.1", t0 + i, 0b11)).collect();
        assert!(run(&mut t, &five).is_empty());

        // "b" moves first with a new burst, "a" is dropped, "c" (id 2) is new; b's
        // prefix stays, so its bucket stays.
        let after = CompiledRules::new(&[spec("b", 1000, 4), spec("c", 1000, 0)])
            .unwrap()
            .with_ids(vec![1, 2]);
        let remap = t.set_rules(&after, false);
        assert_eq!(
            remap.apply(0b11),
            0b01,
            "old b (bit 1) is bit 0 now; a is gone"
        );
        assert_eq!(t.len(), 1);
        // b's excess (4000 after five requests) is kept and meets the new burst 4: the sixth
        // request overflows under b's id (a fresh bucket would take five more); c starts empty
        // and overflows at its second request (burst 0).
        let more = [
            hit("192.0.2.1", t0 + 5, 0b11),
            hit("192.0.2.1", t0 + 6, 0b11),
        ];
        let got: Vec<(u16, u64)> = run(&mut t, &more)
            .iter()
            .map(|o| (o.rule, o.requests))
            .collect();
        assert_eq!(got, [(1, 6), (2, 2)]);
    }

    #[test]
    fn a_reload_that_changes_a_rules_keys_or_resets_starts_it_afresh() {
        let before = CompiledRules::new(&[spec("a", 1000, 2), spec("b", 1000, 2)]).unwrap();
        let mut t = KeyTable::new(&before, usize::MAX, 0);
        let t0 = 1_700_000_000_000;
        let two: Vec<Hit> = (0..2).map(|i| hit("192.0.2.1", t0 + i, 0b11)).collect();
        run(&mut t, &two);
        let per_24 = RuleSpec {
            ipv4_prefix: 24,
            ..spec("a", 1000, 2)
        };
        let after = CompiledRules::new(&[per_24, spec("b", 1000, 2)]).unwrap();
        t.set_rules(&after, false);
        assert_eq!(t.len(), 1, "only b keeps its bucket");
        t.set_rules(&after, true);
        assert!(t.is_empty());
        // Fresh buckets: two more requests pass under both rules.
        assert!(run(
            &mut t,
            &[
                hit("192.0.2.1", t0 + 2, 0b11),
                hit("192.0.2.1", t0 + 3, 0b11)
            ]
        )
        .is_empty());
    }

    #[test]
    fn entries_are_twenty_eight_and_forty_bytes() {
        assert_eq!(std::mem::size_of::<(Slot4, Bucket)>(), 28);
        assert_eq!(std::mem::size_of::<(Slot6, Bucket)>(), 40);
    }

    #[test]
    fn memory_per_key_with_twenty_thousand_keys() {
        let rules = CompiledRules::new(&[spec("r", 20_000, 10)]).unwrap();
        let mut t = KeyTable::new(&rules, usize::MAX, 0);
        for i in 0..20_000u32 {
            let h = Hit {
                addr: Addr::from_v4(0x0a00_0000 + i),
                time_ms: 1_700_000_000_000,
                vhost: NO_VHOST,
                rules: 1,
                flags: 0,
            };
            t.hit(&h, &mut |_| {});
        }
        assert_eq!(t.len(), 20_000);
        let per_key = t.heap_bytes() as f64 / 20_000.0;
        assert!(per_key <= 64.0, "{per_key} bytes per key");
        // Worst case, just after a map doubled: one entry and one control byte per bucket at
        // 7/16 load; IPv6 keys cost more.
        let worst_v4 = (std::mem::size_of::<(Slot4, Bucket)>() + 1) as f64 * 16.0 / 7.0;
        let worst_v6 = (std::mem::size_of::<(Slot6, Bucket)>() + 1) as f64 * 16.0 / 7.0;
        assert!(worst_v4 <= 67.0, "{worst_v4} bytes per key");
        assert!(worst_v6 <= 100.0, "{worst_v6} bytes per key");
    }

    #[test]
    fn keys_follow_each_rules_prefix_and_vhost() {
        let by24 = RuleSpec {
            ipv4_prefix: 24,
            ..spec("by24", 1000, 0)
        };
        let host = RuleSpec {
            key_by_vhost: true,
            ..spec("host", 1000, 0)
        };
        let rules = CompiledRules::new(&[by24, host]).unwrap();
        let mut t = KeyTable::new(&rules, usize::MAX, 0);
        let mut h2 = hit("10.1.2.4", 0, 0b11);
        h2.vhost = 8;
        let out = run(&mut t, &[hit("10.1.2.3", 0, 0b11), h2]);
        // Same /24, so rule 0 overflows; different vhosts, so rule 1 does not.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key.net.to_string(), "10.1.2.0/24");
        assert_eq!(out[0].key.vhost, NO_VHOST);
        assert_eq!(out[0].vhost, 8);
        assert_eq!((out[0].rule, out[0].requests, out[0].time_ms), (0, 2, 0));
        assert_eq!(t.len(), 3);
        let six = run(
            &mut t,
            &[hit("2001:db8::1", 5, 1), hit("2001:db8::2", 5, 1)],
        );
        assert_eq!(six[0].key.net.to_string(), "2001:db8::/64");
    }

    #[test]
    fn ipv4_and_ipv6_keys_live_in_their_own_maps_and_are_swept_alike() {
        let mut t = table_of(RuleSpec {
            ban_ms: 0,
            ..spec("r", 1000, 1)
        });
        let base = 1_000_000;
        // The IPv4 address and the IPv6 one share their low 32 bits: different keys.
        let out = run(
            &mut t,
            &[
                hit("10.0.0.1", base, 1),
                hit("::a00:1", base, 1),
                hit("10.0.0.1", base, 1),
                hit("::a00:1", base, 1),
                hit("::a00:1", base, 1),
            ],
        );
        let got: Vec<_> = out.iter().map(|o| o.key.net.to_string()).collect();
        assert_eq!(got, ["::/64"]);
        assert_eq!(t.len(), 2);
        assert!(t.heap_bytes() > 0);
        t.settle(base + 60_000);
        assert!(t.is_empty(), "both maps swept");
        assert_eq!(t.stats().evicted, 2);
    }

    #[test]
    fn idle_buckets_are_swept_every_ten_seconds() {
        let mut t = table_of(RuleSpec {
            ban_ms: 60_000,
            ..spec("r", 1000, 1)
        });
        let base = 1_000_000;
        let out = run(
            &mut t,
            &[
                hit("1.1.1.1", base, 1),
                hit("1.1.1.1", base, 1),
                hit("1.1.1.1", base, 1), // overflow: suppressed until base + 60 s
                hit("2.2.2.2", base, 1),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(t.len(), 2);
        run(&mut t, &[hit("3.3.3.3", base + SWEEP_EVERY_MS, 1)]);
        assert_eq!(t.stats().evicted, 1, "2.2.2.2 idle, 1.1.1.1 suppressed");
        assert_eq!(t.len(), 2);
        t.settle(base + 60_000);
        assert_eq!(t.stats().evicted, 3);
        assert!(t.is_empty());
        assert_eq!(t.stats().keys_peak, 2);
    }

    #[test]
    fn sweeps_wait_until_the_table_doubles() {
        let rules = CompiledRules::new(&[spec("r", 1000, 5)]).unwrap();
        // Cap 80: sweeps need at least 10 entries.
        let mut t = KeyTable::new(&rules, 80, 0);
        let at = |a: u32, time_ms: i64| Hit {
            addr: Addr::from_v4(a),
            time_ms,
            vhost: NO_VHOST,
            rules: 1,
            flags: 0,
        };
        // Eight keys come once, one keeps coming (and is suppressed after its overflow).
        let mut hits: Vec<Hit> = (0..8).map(|a| at(a, 0)).collect();
        hits.extend((0..40).map(|i| at(100, i * 500)));
        hits.sort_by_key(|h| h.time_ms);
        assert_eq!(run(&mut t, &hits).len(), 1);
        assert_eq!(
            t.stats().evicted,
            0,
            "9 entries at 10 s: below the floor of 10"
        );
        run(&mut t, &[at(50, 20_000)]);
        assert_eq!((t.stats().evicted, t.len()), (0, 10));
        t.settle(30_000);
        assert_eq!(
            (t.stats().evicted, t.len()),
            (9, 1),
            "the suppressed key stays"
        );
        // Next sweep again at 10 entries (the floor is above twice the one kept).
        run(
            &mut t,
            &(200..208).map(|a| at(a, 40_000)).collect::<Vec<_>>(),
        );
        t.settle(50_000);
        assert_eq!((t.stats().evicted, t.len()), (9, 9));
        run(&mut t, &[at(300, 55_000)]);
        t.settle(60_000);
        assert_eq!((t.stats().evicted, t.len()), (18, 1));
    }

    #[test]
    fn a_large_table_is_swept_in_slices_between_batches() {
        let rules = CompiledRules::new(&[spec("r", 1000, 5)]).unwrap();
        let mut t = KeyTable::new(&rules, 10_000_000, 0);
        let n: u32 = 300_000;
        let hits: Vec<Hit> = (0..n)
            .map(|a| Hit {
                addr: Addr::from_v4(0x0a00_0000 + a),
                time_ms: 1_000,
                vhost: NO_VHOST,
                rules: 1,
                flags: 0,
            })
            .collect();
        run(&mut t, &hits);
        assert_eq!(t.len(), n as usize);
        // Every key is idle from 2 s on; each settle sweeps about one slice.
        let mut settles = 0;
        let mut seen = vec![];
        while !t.is_empty() {
            settles += 1;
            t.settle(20_000 + settles);
            seen.push(t.len());
            assert!(settles < 100, "{seen:?}");
        }
        assert!(
            (4..=SEGMENTS as i64).contains(&settles),
            "{settles} slices: {seen:?}"
        );
        let removed_first = n as usize - seen[0];
        assert!(removed_first < 2 * SLICE_ENTRIES, "{removed_first}");
        assert_eq!(t.stats().evicted, u64::from(n));
    }

    #[test]
    fn cap_refuses_new_keys_but_sweeps_first() {
        let rules = CompiledRules::new(&[RuleSpec {
            ban_ms: 0,
            ..spec("r", 1000, 0)
        }])
        .unwrap();
        let mut t = KeyTable::new(&rules, 2, 0);
        let hits = [
            hit("1.1.1.1", 0, 1),
            hit("2.2.2.2", 0, 1),
            hit("3.3.3.3", 0, 1), // refused
            hit("1.1.1.1", 10, 1),
            hit("4.4.4.4", 500, 1),  // refused: the sweep at 0 is too recent
            hit("5.5.5.5", 2000, 1), // a sweep frees both (drained after 1 s)
        ];
        let out = run(&mut t, &hits);
        assert_eq!(out.len(), 1, "existing keys still count at the cap");
        let s = t.stats();
        assert_eq!((s.cap_refused, s.evicted, t.len()), (2, 2, 1));
    }

    #[test]
    fn epoch_moves_after_weeks_without_changing_decisions() {
        let mut t = table_of(RuleSpec {
            ban_ms: 0,
            ..spec("r", 1000, 2)
        });
        let day = 86_400_000i64;
        let mut all = Vec::new();
        for d in [0, 20, 40, 45, 80, 200, 200_000] {
            let at = 1_600_000_000_000 + d * day;
            // Four at once: the fourth overflows each time, with a fresh tracking period.
            let hits: Vec<_> = (0..4).map(|_| hit("9.9.9.9", at, 1)).collect();
            let out = run(&mut t, &hits);
            assert_eq!(out.len(), 1, "day {d}");
            assert_eq!((out[0].first_seen_ms, out[0].requests), (at, 4));
            all.extend(out);
        }
        assert_eq!(all.len(), 7);
    }

    #[test]
    fn a_bucket_that_never_drains_survives_epoch_moves() {
        // Rate 0: the bucket never drains, so it is kept; its period start is clamped to the
        // history the table keeps (documented in `Bucket::rebase`).
        let mut t = table_of(RuleSpec {
            ban_ms: 0,
            ..spec("r", 0, 1)
        });
        let start = 1_600_000_000_000i64;
        let late = start + 60 * 86_400_000;
        let out = run(
            &mut t,
            &[
                hit("9.9.9.9", start, 1),
                hit("9.9.9.9", start + 1, 1),
                hit("9.9.9.9", late, 1),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].requests, 3);
        assert_eq!(out[0].first_seen_ms, late - KEEP_MS);
    }
}
