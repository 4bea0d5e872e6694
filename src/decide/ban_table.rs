//! The ban table: which keys are banned under which rule, until when, and how often they were
//! banned recently.
//!
//! Bans are per (key, rule): a key offending under a rule it is already banned by is suppressed,
//! while a second rule may still ban it (each rule's sinks and durations are its own).
//! Escalation counts per (key, rule) too, as fail2ban counts per jail: the n-th ban of a key
//! under a rule whose earlier bans' offenses lie within `recidive_window` lasts
//! `ban * factor^(n-1)`, at most `max_ban`. Counting across rules would let a cheap rule (say,
//! 404 scanning) escalate an unrelated one.
//!
//! Everything is driven by the caller's clock (log time in replay, wall time in watch): call
//! [`BanTable::expire`] up to an offense's time before handing it to [`BanTable::offense`].
//! Memory stays bounded: active bans end, and past bans are forgotten once they leave their
//! rule's recidive window.

use std::collections::BTreeSet;
use std::sync::Arc;

use ahash::{AHashMap, AHashSet};
use serde::{Deserialize, Serialize};

pub use slots::{SavedPast, SavedSlot};

use super::allowlist::Allowlist;
use super::{Ban, Origin, Unban, UnbanReason};
use crate::addr::Cidr;
use crate::engine::{Key, Offense, RuleSpec};
use crate::hit::{VhostId, HIT_VIA_PROXY, NO_VHOST};
use crate::vhost::Vhosts;

mod held;
mod slot;
mod slots;

use held::Held;
use slot::Slot;

/// The rule index of manual bans given no rule (`floodwatch ban KEY --for DUR`): a rule of its
/// own, so that such a ban neither suppresses nor is suppressed by what the rules detect.
pub const MANUAL_RULE: u16 = u16::MAX;
/// Its name in events and in the state folder (no configured rule may take it).
pub const MANUAL_RULE_NAME: &str = "manual";
/// The rule index of the bans other servers of the fleet decided ([`BanTable::ban_remote`]): one
/// slot per key whatever node and rule banned it there, so that a key banned by several nodes
/// at once is enforced once, and apart from this server's own rules (a remote rule may not
/// exist here).
pub const FLEET_RULE: u16 = u16::MAX - 1;
/// Its name in events and in the state folder (no configured rule may take it).
pub const FLEET_RULE_NAME: &str = "fleet";

/// Log time between two passes of [`BanTable::forget_before`] over the history, at most.
const FORGET_EVERY_MS: i64 = 60_000;

/// A past ban, while it still counts (see [`BanTable::forget_before`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Past {
    /// Its offense's log time.
    time: i64,
    /// When it ended or ends.
    until: i64,
    /// An admin lifted it: it still covers its term (the offense is forgiven, not forgotten)
    /// but does not escalate later bans.
    lifted: bool,
}

/// What the table needs of a rule, with its texts shared by every event.
#[derive(Debug)]
struct RuleInfo {
    name: Arc<str>,
    rate: Arc<str>,
    burst: u32,
    ban_ms: u64,
    factor: f64,
    max_ban_ms: u64,
    window_ms: u64,
}

impl RuleInfo {
    fn of(r: &RuleSpec) -> RuleInfo {
        RuleInfo {
            name: Arc::from(r.name.as_str()),
            rate: Arc::from(r.rate.text.as_str()),
            burst: r.burst,
            ban_ms: r.ban_ms,
            factor: r.ban_factor,
            max_ban_ms: r.max_ban_ms,
            window_ms: r.recidive_window_ms,
        }
    }
}

/// Counters since the table was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Offenses handed to [`BanTable::offense`].
    pub offenses: u64,
    pub bans: u64,
    pub unbans: u64,
    /// Offenses of keys that overlap the allowlist.
    pub allowlisted: u64,
    /// Offenses of keys already banned under the same rule.
    pub suppressed: u64,
    /// Bans of other servers taken ([`BanTable::ban_remote`]; not in `bans`).
    pub fleet_bans: u64,
}

pub struct BanTable {
    rules: Vec<RuleInfo>,
    allow: Allowlist,
    vhosts: Vhosts,
    active: AHashMap<Slot, Held>,
    /// Active bans ordered by end, then key and rule: expiry pops from the front, and ties come
    /// out in the same order whatever order the bans were made in.
    expiry: BTreeSet<(i64, Slot)>,
    /// Past bans per slot as (offense time, end), while they still count: inside the rule's
    /// recidive window, or not yet ended (a late offense inside a ban that already ended by the
    /// clock is suppressed as it would have been in time).
    history: AHashMap<Slot, Vec<Past>>,
    /// No remembered ban stops counting before this log time (`i64::MAX`: none is
    /// remembered): [`BanTable::forget_before`] sweeps `history` once the settled time passes
    /// it.
    next_forget: i64,
    stats: TableStats,
    /// Offenses handed to [`BanTable::offense`], per rule index (watch's metrics).
    offenses_by_rule: Vec<u64>,
    /// Bans decided, per rule index.
    bans_by_rule: Vec<u64>,
    /// Manual bans made (`floodwatch ban`), under any rule.
    manual_bans: u64,
    /// The slots whose ban or history changed since [`BanTable::drain_changed`] last took them,
    /// while someone keeps the table on disk ([`BanTable::track_changes`]).
    changed: Option<AHashSet<Slot>>,
}

impl BanTable {
    /// `rules` in config order (an offense's `rule` indexes them); `vhosts` names vhost ids in
    /// events.
    pub fn new(rules: &[RuleSpec], allow: Allowlist, vhosts: Vhosts) -> BanTable {
        let offenses_by_rule = vec![0; rules.len()];
        let bans_by_rule = vec![0; rules.len()];
        let rules = rules.iter().map(RuleInfo::of).collect();
        BanTable {
            rules,
            allow,
            vhosts,
            active: AHashMap::new(),
            expiry: BTreeSet::new(),
            history: AHashMap::new(),
            next_forget: i64::MAX,
            stats: TableStats::default(),
            offenses_by_rule,
            bans_by_rule,
            manual_bans: 0,
            changed: None,
        }
    }

    /// Takes the rules of a reload, each with its id (see
    /// [`RuleIds`](crate::engine::rule_ids::RuleIds)): a rule's new length, escalation and texts
    /// apply to its next bans, while its active bans keep the end they were announced with. A
    /// rule that is gone keeps its entry: its bans end as announced, and its history counts
    /// again if it comes back.
    pub fn set_rules(&mut self, rules: &[RuleSpec], ids: &[u16]) {
        for (spec, &id) in rules.iter().zip(ids) {
            let id = usize::from(id);
            if id < self.rules.len() {
                self.rules[id] = RuleInfo::of(spec);
            } else if id == self.rules.len() {
                self.rules.push(RuleInfo::of(spec));
                self.offenses_by_rule.push(0);
                self.bans_by_rule.push(0);
            } else {
                // Ids are handed out one after another; a gap would mean a lost reload.
                debug_assert!(false, "rule id {id} after {} rules", self.rules.len());
            }
        }
    }

    /// Takes a reloaded allowlist. Active bans of keys it now covers end at `now_ms` (an admin
    /// who allowlists a banned address wants it let in now); they are returned to be announced.
    pub fn set_allowlist(&mut self, allow: Allowlist, now_ms: i64) -> Vec<Unban> {
        self.allow = allow;
        let mut ended: Vec<(i64, Slot)> = self
            .active
            .iter()
            .filter(|(slot, _)| self.allow.covers(&slot.key().net))
            .map(|(&slot, b)| (b.until_ms, slot))
            .collect();
        ended.sort_unstable();
        ended
            .into_iter()
            .map(|(until, slot)| {
                self.expiry.remove(&(until, slot));
                self.active.remove(&slot);
                self.mark(slot);
                self.stats.unbans += 1;
                Unban {
                    time_ms: now_ms,
                    key: slot.key(),
                    rule: self.rule_name(slot.rule()),
                    reason: UnbanReason::Allowlisted,
                }
            })
            .collect()
    }

    /// An admin's ban of `net` for `length_ms` from `now_ms`, under `rule` (a configured rule's
    /// name) or, without one, under [`MANUAL_RULE_NAME`]. It reaches every sink as any ban
    /// does, ends on time, survives restarts, and does not count towards escalation (nothing
    /// offended). Refused for a key the allowlist or a trusted proxy covers, and for a key
    /// already banned under that rule (lift that ban first to change its length).
    pub fn ban_manually(
        &mut self,
        net: Cidr,
        rule: Option<&str>,
        now_ms: i64,
        length_ms: u64,
    ) -> Result<Ban, ManualBanError> {
        let rule_idx = match rule {
            None => MANUAL_RULE,
            Some(name) => self
                .rules
                .iter()
                .position(|r| &*r.name == name)
                .and_then(|i| u16::try_from(i).ok())
                .ok_or_else(|| ManualBanError::UnknownRule(name.to_string()))?,
        };
        if self.allow.covers(&net) {
            return Err(ManualBanError::Allowlisted(net));
        }
        let slot = Slot::new(
            Key {
                net,
                vhost: NO_VHOST,
            },
            rule_idx,
        );
        if let Some(b) = self.active.get(&slot) {
            return Err(ManualBanError::AlreadyBanned(Box::new(
                self.ban_of(slot, b),
            )));
        }
        let until_ms = now_ms.saturating_add(i64::try_from(length_ms).unwrap_or(i64::MAX));
        let ban = Ban {
            time_ms: now_ms,
            key: slot.key(),
            rule: self.rule_name(rule_idx),
            vhost: None,
            rate: Arc::from(""),
            burst: 0,
            requests: 0,
            first_seen_ms: now_ms,
            ban_ms: length_ms,
            until_ms,
            offense: 1,
            via_proxy: false,
            origin: Origin::Manual,
        };
        self.end_pardons(&net, now_ms);
        self.expiry.insert((until_ms, slot));
        self.hold(slot, &ban);
        self.mark(slot);
        self.stats.bans += 1;
        self.manual_bans += 1;
        Ok(ban)
    }

    /// Another server's ban of `r.net` (see [`crate::fleet`]), under [`FLEET_RULE_NAME`]. Not
    /// taken for a key the allowlist or a trusted proxy covers (the allowlist is this server's
    /// word), nor when a ban of the same key here already lasts as long (two nodes banning a
    /// key at once: enforced once). A longer remote ban of a key already banned by the fleet
    /// moves that ban's end later, silently: the sinks hold the key already, and its unban
    /// comes at the later end.
    pub fn ban_remote(&mut self, r: RemoteBan) -> RemoteOutcome {
        if self.allow.covers(&r.net) {
            return RemoteOutcome::Allowlisted;
        }
        let key = Key {
            net: r.net,
            vhost: NO_VHOST,
        };
        let rules = (0..self.rules.len()).filter_map(|i| u16::try_from(i).ok());
        let lasts = rules
            .chain([MANUAL_RULE, FLEET_RULE])
            .filter_map(|rule| self.active.get(&Slot::new(key, rule)))
            .map(|b| b.until_ms)
            .max();
        if lasts.is_some_and(|until| until >= r.until_ms) {
            return RemoteOutcome::Covered;
        }
        let slot = Slot::new(key, FLEET_RULE);
        if let Some(b) = self.active.get_mut(&slot) {
            self.expiry.remove(&(b.until_ms, slot));
            b.until_ms = r.until_ms;
            b.ban_ms = u64::try_from(r.until_ms.saturating_sub(b.time_ms)).unwrap_or(0);
            self.expiry.insert((r.until_ms, slot));
            self.mark(slot);
            self.stats.fleet_bans += 1;
            return RemoteOutcome::Extended;
        }
        let ban = Ban {
            time_ms: r.time_ms,
            key,
            rule: Arc::from(FLEET_RULE_NAME),
            vhost: None,
            rate: Arc::from(""),
            burst: 0,
            requests: 0,
            first_seen_ms: r.time_ms,
            ban_ms: u64::try_from(r.until_ms.saturating_sub(r.time_ms)).unwrap_or(0),
            until_ms: r.until_ms,
            offense: 1,
            via_proxy: false,
            origin: Origin::Fleet(r.node),
        };
        self.expiry.insert((r.until_ms, slot));
        self.hold(slot, &ban);
        self.mark(slot);
        self.stats.fleet_bans += 1;
        RemoteOutcome::Banned(ban)
    }

    /// Ends the fleet's ban of `net` here at `now_ms` (see [`crate::fleet`]: the fleet no longer
    /// holds it, and its unban was lost); bans of the key under this server's own rules stay.
    pub fn end_remote(&mut self, net: &Cidr, now_ms: i64) -> Option<Unban> {
        let slot = Slot::new(
            Key {
                net: *net,
                vhost: NO_VHOST,
            },
            FLEET_RULE,
        );
        let ban = self.active.remove(&slot)?;
        self.expiry.remove(&(ban.until_ms, slot));
        self.mark(slot);
        self.stats.unbans += 1;
        Some(Unban {
            time_ms: now_ms,
            key: slot.key(),
            rule: Arc::from(FLEET_RULE_NAME),
            reason: UnbanReason::Withdrawn,
        })
    }

    /// An admin's unban: ends at `now_ms` every active ban whose key lies within `net` (the key
    /// itself, or the keys inside a range), under every rule. Each lifted ban keeps covering
    /// the rest of its term: an offense timed before its end (the flood that caused it, read
    /// late or still going on) does not ban the key again, and it no longer escalates later
    /// bans. Bans of wider ranges that contain `net` are not lifted (that would let in every
    /// address of the range) but returned, for the admin to lift by their own key.
    pub fn lift(&mut self, net: &Cidr, now_ms: i64) -> Lifted {
        let mut slots: Vec<(i64, Slot)> = Vec::new();
        let mut wider = Vec::new();
        for (&slot, b) in &self.active {
            if slot.key().net.within(net) {
                slots.push((b.until_ms, slot));
            } else if net.within(&slot.key().net) {
                wider.push(self.ban_of(slot, b));
            }
        }
        slots.sort_unstable();
        wider.sort_by_key(|b| (b.until_ms, b.key, b.rule.clone()));
        let mut lifted = Vec::with_capacity(slots.len());
        for (until, slot) in slots {
            self.expiry.remove(&(until, slot));
            let Some(ban) = self.active.remove(&slot) else {
                continue;
            };
            if let Some(past) = self.history.get_mut(&slot) {
                for p in past.iter_mut().filter(|p| p.time == ban.time_ms) {
                    p.lifted = true;
                }
            }
            self.mark(slot);
            self.stats.unbans += 1;
            let unban = Unban {
                time_ms: now_ms,
                key: slot.key(),
                rule: self.rule_name(slot.rule()),
                reason: UnbanReason::Manual,
            };
            lifted.push((self.ban_of(slot, &ban), unban));
        }
        Lifted { lifted, wider }
    }

    /// The keys [`BanTable::lift`] pardoned whose pardon still runs at `now_ms` (the lifted
    /// ban's term): each with its rule and the pardon's end, soonest end first.
    pub fn pardons(&self, now_ms: i64) -> Vec<PardonedKey> {
        let mut out: Vec<PardonedKey> = (self.history.iter())
            .flat_map(|(&slot, past)| {
                let (key, rule) = (slot.key(), slot.rule());
                let running = past.iter().filter(|p| p.lifted && p.until > now_ms);
                running.map(move |p| (key, rule, p.until))
            })
            .map(|(key, rule, until_ms)| PardonedKey {
                key,
                rule: self.rule_name(rule),
                vhost: self.vhosts.name(key.vhost),
                until_ms,
            })
            .collect();
        out.sort_by(|a, b| (a.until_ms, a.key, &a.rule).cmp(&(b.until_ms, b.key, &b.rule)));
        out
    }

    /// Ends at `now_ms` the pardons of the keys within `net` (an admin bans them by hand: the
    /// rules judge them again from now on; offenses timed before stay forgiven).
    fn end_pardons(&mut self, net: &Cidr, now_ms: i64) {
        for (slot, past) in self.history.iter_mut() {
            if !slot.key().net.within(net) {
                continue;
            }
            for p in past.iter_mut().filter(|p| p.lifted && p.until > now_ms) {
                p.until = now_ms.max(p.time);
                if let Some(changed) = &mut self.changed {
                    changed.insert(*slot);
                }
            }
        }
    }

    /// Decides on one offense: a new ban, or `None` when the key is allowlisted or already
    /// banned under this rule at the offense's time. Call [`BanTable::expire`] up to `o.time_ms`
    /// first, so that a ban that has ended by then no longer suppresses the offense.
    ///
    /// A *late* offense (older than bans already ended, see `engine::shard`) is judged at its
    /// own time too: suppressed when a past ban of its slot covered that time, and escalated by
    /// the bans before it in its window, exactly as it would have been in time order.
    pub fn offense(&mut self, o: &Offense) -> Option<Ban> {
        self.stats.offenses += 1;
        let Some(rule) = self.rules.get(usize::from(o.rule)) else {
            debug_assert!(false, "offense for unknown rule {}", o.rule);
            return None;
        };
        if let Some(n) = self.offenses_by_rule.get_mut(usize::from(o.rule)) {
            *n += 1;
        }
        if self.allow.covers(&o.key.net) {
            self.stats.allowlisted += 1;
            return None;
        }
        let slot = Slot::new(o.key, o.rule);
        let past = self.history.get(&slot).map_or(&[][..], |h| &h[..]);
        let covered = past
            .iter()
            .any(|p| p.time <= o.time_ms && o.time_ms < p.until);
        if covered || self.active.contains_key(&slot) {
            self.stats.suppressed += 1;
            return None;
        }
        let window = i64::try_from(rule.window_ms).unwrap_or(i64::MAX);
        let earliest = o.time_ms.saturating_sub(window);
        let earlier = past
            .iter()
            .filter(|p| !p.lifted && p.time >= earliest && p.time <= o.time_ms)
            .count();
        let n = u32::try_from(earlier).unwrap_or(u32::MAX);
        let ban_ms = ban_length(rule, n);
        let until_ms = o
            .time_ms
            .saturating_add(i64::try_from(ban_ms).unwrap_or(i64::MAX));
        let ban = Ban {
            time_ms: o.time_ms,
            key: o.key,
            rule: rule.name.clone(),
            vhost: self.vhosts.name(o.vhost),
            rate: rule.rate.clone(),
            burst: rule.burst,
            requests: o.requests,
            first_seen_ms: o.first_seen_ms,
            ban_ms,
            until_ms,
            offense: n.saturating_add(1),
            via_proxy: o.flags & HIT_VIA_PROXY != 0,
            origin: Origin::Detected,
        };
        let past = Past {
            time: o.time_ms,
            until: until_ms,
            lifted: false,
        };
        self.remember(slot, past, window);
        self.expiry.insert((until_ms, slot));
        self.hold_seen_on(slot, &ban, o.vhost);
        self.mark(slot);
        self.stats.bans += 1;
        if let Some(n) = self.bans_by_rule.get_mut(usize::from(o.rule)) {
            *n += 1;
        }
        Some(ban)
    }

    /// Ends every ban whose end is at or before `now_ms`, in order of end time (ties by key,
    /// then rule). Each unban is timed at its ban's end, not at `now_ms`. Past bans are
    /// remembered until [`BanTable::forget_before`] says no offense that old can come.
    pub fn expire(&mut self, now_ms: i64) -> Vec<Unban> {
        let mut out = Vec::new();
        while let Some(&(until, slot)) = self.expiry.first() {
            if until > now_ms {
                break;
            }
            self.expiry.pop_first();
            if self.active.remove(&slot).is_some() {
                self.mark(slot);
                self.stats.unbans += 1;
                out.push(Unban {
                    time_ms: until,
                    key: slot.key(),
                    rule: self.rule_name(slot.rule()),
                    reason: UnbanReason::Expired,
                });
            }
        }
        out
    }

    /// When the next ban ends (to schedule a timer in watch mode).
    pub fn next_expiry(&self) -> Option<i64> {
        self.expiry.first().map(|&(until, _)| until)
    }

    /// Active bans, soonest end first.
    pub fn active(&self) -> impl Iterator<Item = Ban> + '_ {
        (self.expiry.iter())
            .filter_map(|&(_, slot)| Some(self.ban_of(slot, self.active.get(&slot)?)))
    }

    /// Holds `ban` as the active ban of `slot`.
    fn hold(&mut self, slot: Slot, ban: &Ban) {
        let vhost = (ban.vhost.as_deref()).map_or(NO_VHOST, |v| self.vhosts.intern(v.as_bytes()));
        self.hold_seen_on(slot, ban, vhost);
    }

    /// As [`BanTable::hold`], its vhost's id known.
    fn hold_seen_on(&mut self, slot: Slot, ban: &Ban, vhost: VhostId) {
        let rate = self.rules.get(usize::from(slot.rule())).map(|r| &r.rate);
        let held = Held::of(ban, rate, vhost);
        self.active.insert(slot, held);
    }

    /// The active ban `held` of `slot`, whole.
    fn ban_of(&self, slot: Slot, held: &Held) -> Ban {
        held.ban(slot.key(), self.rule_name(slot.rule()), &self.vhosts)
    }

    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    pub fn is_banned(&self, key: &Key, rule: u16) -> bool {
        self.active.contains_key(&Slot::new(*key, rule))
    }

    /// The active ban of `key` under rule id `rule`, rebuilt whole (`top` shows a few).
    pub fn active_ban(&self, key: &Key, rule: u16) -> Option<Ban> {
        let slot = Slot::new(*key, rule);
        self.active.get(&slot).map(|held| self.ban_of(slot, held))
    }

    /// Whether the allowlist (or a trusted proxy) covers `key`: never banned.
    pub fn allowlisted(&self, key: &Cidr) -> bool {
        self.allow.covers(key)
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// The rules' names, in config order (the order of the per-rule counts below).
    pub fn rule_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.rules.iter().map(|r| &*r.name)
    }

    /// Offenses handed to [`BanTable::offense`] per rule, allowlisted and suppressed ones
    /// included.
    pub fn offenses_by_rule(&self) -> &[u64] {
        &self.offenses_by_rule
    }

    /// Bans decided since the table was built, per rule (restored ones not included).
    pub fn bans_by_rule(&self) -> &[u64] {
        &self.bans_by_rule
    }

    /// Manual bans made since the table was built.
    pub fn manual_bans(&self) -> u64 {
        self.manual_bans
    }

    /// Active bans per rule.
    pub fn active_by_rule(&self) -> Vec<u64> {
        let mut n = vec![0; self.rules.len()];
        for slot in self.active.keys() {
            if let Some(c) = n.get_mut(usize::from(slot.rule())) {
                *c += 1;
            }
        }
        n
    }

    /// Slots with remembered past bans (for memory accounting).
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    fn rule_name(&self, rule: u16) -> Arc<str> {
        if rule == MANUAL_RULE {
            return Arc::from(MANUAL_RULE_NAME);
        }
        if rule == FLEET_RULE {
            return Arc::from(FLEET_RULE_NAME);
        }
        self.rules
            .get(usize::from(rule))
            .map_or_else(|| Arc::from("?"), |r| r.name.clone())
    }

    /// Notes that `slot` changed, for [`BanTable::drain_changed`].
    fn mark(&mut self, slot: Slot) {
        if let Some(changed) = &mut self.changed {
            changed.insert(slot);
        }
    }

    fn remember(&mut self, slot: Slot, past: Past, window: i64) {
        // Most slots are banned once: room for one past ban, where a first push makes four.
        let pasts = self.history.entry(slot);
        pasts.or_insert_with(|| Vec::with_capacity(1)).push(past);
        let until = counts_until(past.time, past.until, window);
        self.next_forget = self.next_forget.min(until);
    }

    /// Forgets past bans that no offense at or after `settled_ms` can meet: out of their
    /// recidive window and ended by then. `settled_ms` is the oldest log time an offense may
    /// still come at (the shards' settled time), not the clock: a late offense must find the
    /// history it would have found in time order.
    ///
    /// Forgetting is a pass over the whole history, made once the settled time passes the
    /// earliest end, then at most once per `FORGET_EVERY_MS` of log time: a flood's stream of
    /// ending bans would otherwise ask for one at every round. (An index by end, one entry per
    /// past ban, cost more memory than the history itself.)
    pub fn forget_before(&mut self, settled_ms: i64) {
        if settled_ms <= self.next_forget {
            return;
        }
        let rules = &self.rules;
        let mut next = i64::MAX;
        self.history.retain(|slot, past| {
            let window = (rules.get(usize::from(slot.rule())))
                .map_or(0, |r| i64::try_from(r.window_ms).unwrap_or(i64::MAX));
            past.retain(|p| {
                let until = counts_until(p.time, p.until, window);
                let kept = until >= settled_ms;
                if kept {
                    next = next.min(until);
                }
                kept
            });
            !past.is_empty()
        });
        self.next_forget = match next {
            i64::MAX => i64::MAX,
            next => next.max(settled_ms.saturating_add(FORGET_EVERY_MS)),
        };
    }

    /// The active bans and the recidive history, in a form that survives a restart (rules by
    /// name, vhosts by name, keys as text), sorted so that equal tables give equal snapshots.
    pub fn snapshot(&self) -> Snapshot {
        let bans = self
            .active()
            .map(|b| SavedBan::of(&b, &self.vhosts))
            .collect();
        let mut history: Vec<SavedHistory> = self
            .history
            .iter()
            .map(|(&slot, past)| {
                let (key, rule) = (slot.key(), slot.rule());
                let mut past = past.clone();
                past.sort_unstable();
                let lifted: Vec<bool> = past.iter().map(|p| p.lifted).collect();
                SavedHistory {
                    key: key.net.to_string(),
                    key_vhost: self.vhost_text(key.vhost),
                    rule: self.rule_name(rule).to_string(),
                    times_ms: past.iter().map(|p| p.time).collect(),
                    untils_ms: past.iter().map(|p| p.until).collect(),
                    lifted: if lifted.contains(&true) {
                        lifted
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        history
            .sort_by(|a, b| (&a.key, &a.key_vhost, &a.rule).cmp(&(&b.key, &b.key_vhost, &b.rule)));
        Snapshot { bans, history }
    }

    /// Adds a snapshot's bans and history to the table. Entries naming a rule that no longer
    /// exists, or a key that does not parse (the file is outside input), are skipped; a slot
    /// already banned keeps its current ban.
    pub fn restore(&mut self, snap: &Snapshot) -> RestoreStats {
        let mut st = RestoreStats::default();
        for b in &snap.bans {
            let Some((slot, rule)) = self.slot_of(&b.key, b.key_vhost.as_deref(), &b.rule) else {
                st.skipped += 1;
                continue;
            };
            if self.active.contains_key(&slot) {
                st.skipped += 1;
                continue;
            }
            let ban = b.to_ban(slot.key(), rule);
            self.expiry.insert((b.until_ms, slot));
            self.hold(slot, &ban);
            st.bans += 1;
        }
        for h in &snap.history {
            let Some((slot, _)) = self.slot_of(&h.key, h.key_vhost.as_deref(), &h.rule) else {
                st.skipped += 1;
                continue;
            };
            let Some(rule) = self.rules.get(usize::from(slot.rule())) else {
                st.skipped += 1;
                continue;
            };
            let window = i64::try_from(rule.window_ms).unwrap_or(i64::MAX);
            // Files written before ends were saved: a first ban's length is the best guess.
            let first_ban = i64::try_from(rule.ban_ms).unwrap_or(i64::MAX);
            let known: AHashSet<i64> = self
                .history
                .get(&slot)
                .map(|past| past.iter().map(|p| p.time).collect())
                .unwrap_or_default();
            for (i, &time) in h.times_ms.iter().enumerate() {
                let until =
                    (h.untils_ms.get(i).copied()).unwrap_or_else(|| time.saturating_add(first_ban));
                let lifted = h.lifted.get(i).copied().unwrap_or(false);
                if !known.contains(&time) {
                    self.remember(
                        slot,
                        Past {
                            time,
                            until,
                            lifted,
                        },
                        window,
                    );
                }
            }
            st.history += 1;
        }
        st
    }

    fn vhost_text(&self, id: u32) -> Option<String> {
        self.vhosts.name(id).map(|n| n.to_string())
    }

    fn slot_of(&self, key: &str, key_vhost: Option<&str>, rule: &str) -> Option<(Slot, Arc<str>)> {
        let net: Cidr = key.parse().ok()?;
        let vhost = key_vhost.map_or(NO_VHOST, |v| self.vhosts.intern(v.as_bytes()));
        let key = Key { net, vhost };
        if rule == MANUAL_RULE_NAME {
            return Some((Slot::new(key, MANUAL_RULE), Arc::from(MANUAL_RULE_NAME)));
        }
        if rule == FLEET_RULE_NAME {
            return Some((Slot::new(key, FLEET_RULE), Arc::from(FLEET_RULE_NAME)));
        }
        let idx = self.rules.iter().position(|r| &*r.name == rule)?;
        let rule_idx = u16::try_from(idx).ok()?;
        Some((Slot::new(key, rule_idx), self.rules[idx].name.clone()))
    }
}

/// Why [`BanTable::ban_manually`] refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ManualBanError {
    #[error("no rule is named {0:?}")]
    UnknownRule(String),
    #[error("{0} is allowlisted ([allow] or a trusted proxy): it is never banned")]
    Allowlisted(Cidr),
    #[error("{} is already banned under rule {} until {}", .0.key.net, .0.rule, crate::decide::event::Rfc3339(.0.until_ms))]
    AlreadyBanned(Box<Ban>),
}

/// A key whose detected ban an admin lifted, while its pardon runs (see [`BanTable::pardons`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PardonedKey {
    pub key: Key,
    pub rule: Arc<str>,
    pub vhost: Option<Arc<str>>,
    pub until_ms: i64,
}

/// Another server's ban, checked (see [`crate::fleet`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteBan {
    pub net: Cidr,
    /// The node that decided it.
    pub node: Arc<str>,
    /// Its offense's time there.
    pub time_ms: i64,
    pub until_ms: i64,
}

/// What [`BanTable::ban_remote`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum RemoteOutcome {
    /// A new ban, to announce.
    Banned(Ban),
    /// A fleet ban of the key now ends later.
    Extended,
    /// A ban of the key here already lasts as long.
    Covered,
    Allowlisted,
}

/// What [`BanTable::lift`] did.
#[derive(Debug, Default)]
pub struct Lifted {
    /// Each ban lifted, with its unban to announce.
    pub lifted: Vec<(Ban, Unban)>,
    /// Active bans of wider ranges that contain the key, left in place.
    pub wider: Vec<Ban>,
}

/// Until when a past ban can still matter to an offense: it escalates those inside its window,
/// and suppresses those before its end.
fn counts_until(time_ms: i64, until_ms: i64, window: i64) -> i64 {
    time_ms.saturating_add(window).max(until_ms)
}

/// `ban * factor^n`, at most `max_ban`, in whole milliseconds.
fn ban_length(rule: &RuleInfo, n: u32) -> u64 {
    let exp = i32::try_from(n).unwrap_or(i32::MAX);
    let len = rule.ban_ms as f64 * rule.factor.powi(exp);
    // A NaN (from a nonsensical factor) caps too.
    if len.is_nan() || len >= rule.max_ban_ms as f64 {
        rule.max_ban_ms
    } else {
        len.round() as u64
    }
}

/// The table's state for persistence (serde; the state directory stores it as JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub bans: Vec<SavedBan>,
    pub history: Vec<SavedHistory>,
}

/// One active ban, self-describing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedBan {
    /// Address or CIDR, as in events.
    pub key: String,
    /// The vhost of a client + vhost key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vhost: Option<String>,
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    pub rate: String,
    pub burst: u32,
    pub requests: u64,
    pub first_seen_ms: i64,
    pub time_ms: i64,
    pub ban_ms: u64,
    pub until_ms: i64,
    pub offense: u32,
    #[serde(default)]
    pub via_proxy: bool,
    /// An admin's ban (`floodwatch ban`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub manual: bool,
    /// The node of the fleet that decided it (none for this server's own bans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl SavedBan {
    /// `b` with its vhost ids turned into names.
    pub fn of(b: &Ban, vhosts: &Vhosts) -> SavedBan {
        SavedBan {
            key: b.key.net.to_string(),
            key_vhost: vhosts.name(b.key.vhost).map(|n| n.to_string()),
            rule: b.rule.to_string(),
            vhost: b.vhost.as_deref().map(str::to_string),
            rate: b.rate.to_string(),
            burst: b.burst,
            requests: b.requests,
            first_seen_ms: b.first_seen_ms,
            time_ms: b.time_ms,
            ban_ms: b.ban_ms,
            until_ms: b.until_ms,
            offense: b.offense,
            via_proxy: b.via_proxy,
            manual: b.origin == Origin::Manual,
            origin: b.origin.node().map(str::to_string),
        }
    }

    /// The ban again, with its key and rule name resolved by the caller.
    pub fn to_ban(&self, key: Key, rule: Arc<str>) -> Ban {
        Ban {
            time_ms: self.time_ms,
            key,
            rule,
            vhost: self.vhost.as_deref().map(Arc::from),
            rate: Arc::from(self.rate.as_str()),
            burst: self.burst,
            requests: self.requests,
            first_seen_ms: self.first_seen_ms,
            ban_ms: self.ban_ms,
            until_ms: self.until_ms,
            offense: self.offense,
            via_proxy: self.via_proxy,
            origin: match (&self.origin, self.manual) {
                (Some(node), _) => Origin::Fleet(Arc::from(node.as_str())),
                (None, true) => Origin::Manual,
                (None, false) => Origin::Detected,
            },
        }
    }
}

/// Offense times of a slot's past bans that still count (see [`BanTable::forget_before`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedHistory {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vhost: Option<String>,
    pub rule: String,
    pub times_ms: Vec<i64>,
    /// The end of each of those bans, in the same order (absent in files written before ends
    /// were kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untils_ms: Vec<i64>,
    /// Which of those bans an admin lifted (absent when none was).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifted: Vec<bool>,
}

/// What [`BanTable::restore`] took in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub bans: u64,
    pub history: u64,
    /// Entries for rules that no longer exist, unparsable keys, or slots already banned.
    pub skipped: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::RuleSpec;

    pub(crate) fn rule(name: &str, ban_s: u64, factor: f64, max_s: u64, window_s: u64) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            ban_ms: ban_s * 1000,
            ban_factor: factor,
            max_ban_ms: max_s * 1000,
            recidive_window_ms: window_s * 1000,
            ..crate::config::default_rule()
        }
    }

    pub(crate) fn offense(key: &str, rule: u16, time_s: i64) -> Offense {
        Offense {
            key: Key {
                net: key.parse().unwrap(),
                vhost: NO_VHOST,
            },
            rule,
            time_ms: time_s * 1000,
            first_seen_ms: time_s * 1000 - 4000,
            requests: 412,
            vhost: NO_VHOST,
            flags: 0,
        }
    }

    const DAY: u64 = 86_400;
    const WEEK: u64 = 7 * DAY;

    fn table(rules: &[RuleSpec], allow: &[&str]) -> BanTable {
        let allow = Allowlist::new(allow.iter().map(|s| s.parse().unwrap()).collect());
        BanTable::new(rules, allow, Vhosts::new())
    }

    #[test]
    fn a_reload_changes_later_bans_and_keeps_bans_of_removed_rules_to_their_end() {
        let mut t = table(
            &[rule("a", 60, 2.0, WEEK, DAY), rule("b", 60, 1.0, WEEK, DAY)],
            &[],
        );
        t.offense(&offense("203.0.113.7", 0, 1000)).unwrap();
        t.offense(&offense("203.0.113.8", 1, 1000)).unwrap();
        // "b" is gone; "a" (id 0) now bans for 5 minutes; "c" is new with id 2.
        t.set_rules(
            &[
                rule("c", 30, 1.0, WEEK, DAY),
                rule("a", 300, 2.0, WEEK, DAY),
            ],
            &[2, 0],
        );
        let again = t.offense(&offense("203.0.113.7", 0, 1100));
        assert!(again.is_none(), "still banned under a");
        let c = t.offense(&offense("203.0.113.7", 2, 1100)).unwrap();
        assert_eq!((&*c.rule, c.ban_ms), ("c", 30_000));
        let ended: Vec<_> = t
            .expire(1_060_000)
            .iter()
            .map(|u| u.rule.to_string())
            .collect();
        assert_eq!(
            ended,
            ["a", "b"],
            "b's ban ends as announced, under its name"
        );
        // a's second ban: the new length, escalated by its history from before the reload.
        let a = t.offense(&offense("203.0.113.7", 0, 2000)).unwrap();
        assert_eq!((a.ban_ms, a.offense), (600_000, 2));
    }

    #[test]
    fn allowlisting_a_banned_key_ends_its_bans_now() {
        let mut t = table(
            &[
                rule("a", 600, 1.0, WEEK, DAY),
                rule("b", 600, 1.0, WEEK, DAY),
            ],
            &[],
        );
        t.offense(&offense("203.0.113.7", 1, 1000)).unwrap();
        t.offense(&offense("203.0.113.7", 0, 1000)).unwrap();
        t.offense(&offense("198.51.100.1", 0, 1000)).unwrap();
        let allow = Allowlist::new(vec!["203.0.113.0/24".parse().unwrap()]);
        let ended = t.set_allowlist(allow, 1_200_000);
        let got: Vec<_> = ended
            .iter()
            .map(|u| (u.key.net.to_string(), u.rule.to_string(), u.time_ms))
            .collect();
        assert_eq!(
            got,
            [
                ("203.0.113.7".to_string(), "a".to_string(), 1_200_000),
                ("203.0.113.7".to_string(), "b".to_string(), 1_200_000)
            ]
        );
        assert_eq!(t.active_len(), 1);
        assert!(t.offense(&offense("203.0.113.7", 0, 1300)).is_none());
        let left: Vec<_> = t
            .expire(i64::MAX)
            .iter()
            .map(|u| u.key.net.to_string())
            .collect();
        assert_eq!(left, ["198.51.100.1"], "nothing is announced twice");
    }

    #[test]
    fn first_offense_bans_for_the_rule_duration() {
        let v = Vhosts::new();
        let site = v.intern(b"example.com");
        let mut t = BanTable::new(
            &[rule("default", 600, 2.0, WEEK, DAY)],
            Allowlist::default(),
            v,
        );
        let mut o = offense("203.0.113.7", 0, 1000);
        o.vhost = site;
        o.flags = HIT_VIA_PROXY;
        let b = t.offense(&o).unwrap();
        assert_eq!(b.ban_ms, 600_000);
        assert_eq!(b.until_ms, 1_600_000);
        assert_eq!(b.offense, 1);
        assert_eq!(b.requests, 412);
        assert_eq!(b.first_seen_ms, 996_000);
        assert_eq!(&*b.rule, "default");
        assert_eq!(&*b.rate, "20r/s");
        assert_eq!(b.burst, 100);
        assert_eq!(b.vhost.as_deref(), Some("example.com"));
        assert!(b.via_proxy);
        assert!(t.is_banned(&o.key, 0));
        assert_eq!(t.active().count(), 1);
    }

    #[test]
    fn no_second_ban_while_banned() {
        let mut t = table(&[rule("default", 600, 2.0, WEEK, DAY)], &[]);
        assert!(t.offense(&offense("203.0.113.7", 0, 1000)).is_some());
        assert!(t.offense(&offense("203.0.113.7", 0, 1001)).is_none());
        assert!(t.expire(1_599_999).is_empty());
        assert!(t.offense(&offense("203.0.113.7", 0, 1599)).is_none());
        assert_eq!(t.stats().suppressed, 2);
        // At its end time the ban is over and the key may be banned again.
        let u = t.expire(1_600_000);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].time_ms, 1_600_000);
        assert!(t.offense(&offense("203.0.113.7", 0, 1600)).is_some());
    }

    #[test]
    fn repeat_offenders_escalate_up_to_max_ban() {
        let mut t = table(&[rule("default", 600, 2.0, 3000, DAY)], &[]);
        let mut now = 0;
        let mut lengths = vec![];
        for _ in 0..5 {
            let b = t.offense(&offense("198.51.100.1", 0, now)).unwrap();
            lengths.push((b.offense, b.ban_ms / 1000));
            now = b.until_ms / 1000 + 10;
            t.expire(now * 1000);
        }
        assert_eq!(
            lengths,
            vec![(1, 600), (2, 1200), (3, 2400), (4, 3000), (5, 3000)]
        );
    }

    #[test]
    fn bans_outside_the_recidive_window_do_not_count() {
        let mut t = table(&[rule("default", 600, 2.0, WEEK, 3600)], &[]);
        t.offense(&offense("198.51.100.1", 0, 0)).unwrap();
        t.expire(600_000);
        // Exactly one window after the first offense: still counts.
        assert_eq!(
            t.offense(&offense("198.51.100.1", 0, 3600))
                .unwrap()
                .offense,
            2
        );
        t.expire(3_600_000 + 1_200_000);
        // 3601 s after the second offense, nothing is recent any more.
        let b = t.offense(&offense("198.51.100.1", 0, 7201)).unwrap();
        assert_eq!((b.offense, b.ban_ms), (1, 600_000));
    }

    #[test]
    fn escalation_counts_per_rule() {
        let rules = [
            rule("a", 600, 2.0, WEEK, DAY),
            rule("b", 60, 3.0, WEEK, DAY),
        ];
        let mut t = table(&rules, &[]);
        assert_eq!(t.offense(&offense("192.0.2.1", 0, 0)).unwrap().offense, 1);
        // Banned under `a` does not stop a ban under `b`, which is b's first.
        let b = t.offense(&offense("192.0.2.1", 1, 5)).unwrap();
        assert_eq!((b.offense, b.ban_ms, &*b.rule), (1, 60_000, "b"));
        t.expire(100_000);
        let b = t.offense(&offense("192.0.2.1", 1, 100)).unwrap();
        assert_eq!((b.offense, b.ban_ms), (2, 180_000));
    }

    #[test]
    fn allowlisted_keys_are_never_banned() {
        let mut t = table(
            &[rule("default", 600, 2.0, WEEK, DAY)],
            &["127.0.0.0/8", "2001:db8::53"],
        );
        assert!(t.offense(&offense("127.0.0.1", 0, 0)).is_none());
        assert!(t.offense(&offense("2001:db8::/64", 0, 0)).is_none());
        assert!(t.offense(&offense("2001:db8:0:1::/64", 0, 0)).is_some());
        let s = t.stats();
        assert_eq!((s.offenses, s.allowlisted, s.bans), (3, 2, 1));
    }

    #[test]
    fn offenses_and_active_bans_are_counted_per_rule() {
        let rules = [
            rule("a", 60, 2.0, WEEK, DAY),
            rule("b", 600, 2.0, WEEK, DAY),
        ];
        let mut t = table(&rules, &["127.0.0.0/8"]);
        t.offense(&offense("192.0.2.1", 1, 0)).unwrap();
        assert!(
            t.offense(&offense("192.0.2.1", 1, 1)).is_none(),
            "suppressed"
        );
        assert!(
            t.offense(&offense("127.0.0.1", 1, 1)).is_none(),
            "allowlisted"
        );
        t.offense(&offense("192.0.2.2", 0, 0)).unwrap();
        assert_eq!(t.rule_names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(t.offenses_by_rule(), [1, 3]);
        assert_eq!(t.active_by_rule(), [1, 1]);
        t.expire(60_000);
        assert_eq!(t.active_by_rule(), [0, 1]);
        assert_eq!(t.offenses_by_rule(), [1, 3], "counters, not gauges");
    }

    #[test]
    fn client_plus_vhost_keys_are_distinct() {
        let mut t = table(&[rule("default", 600, 2.0, WEEK, DAY)], &[]);
        let mut a = offense("192.0.2.1", 0, 0);
        a.key.vhost = 1;
        let mut b = a;
        b.key.vhost = 2;
        assert!(t.offense(&a).is_some());
        assert!(t.offense(&b).is_some());
        assert!(t.offense(&a).is_none());
    }

    #[test]
    fn expiry_is_in_time_order_with_ties_by_key_then_rule() {
        let rules = [rule("a", 60, 2.0, WEEK, DAY), rule("b", 60, 2.0, WEEK, DAY)];
        let mut t = table(&rules, &[]);
        t.offense(&offense("192.0.2.9", 1, 0));
        t.offense(&offense("192.0.2.9", 0, 0));
        t.offense(&offense("192.0.2.1", 1, 0));
        t.offense(&offense("10.0.0.1", 0, -30));
        assert_eq!(t.next_expiry(), Some(30_000));
        let got: Vec<_> = t
            .expire(60_000)
            .iter()
            .map(|u| (u.time_ms, u.key.net.to_string(), u.rule.to_string()))
            .collect();
        let want = [
            (30_000, "10.0.0.1", "a"),
            (60_000, "192.0.2.1", "b"),
            (60_000, "192.0.2.9", "a"),
            (60_000, "192.0.2.9", "b"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|&(t, k, r)| (t, k.to_string(), r.to_string()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(t.active_len(), 0);
        assert_eq!(t.next_expiry(), None);
        assert_eq!(t.stats().unbans, 4);
    }

    #[test]
    fn history_is_forgotten_after_the_window() {
        let mut t = table(&[rule("default", 60, 2.0, WEEK, 3600)], &[]);
        for i in 0..1000 {
            t.offense(&offense(&format!("10.0.{}.{}", i / 256, i % 256), 0, i));
        }
        t.expire(3000 * 1000);
        t.forget_before(3000 * 1000);
        assert_eq!(t.active_len(), 0);
        assert_eq!(t.history_len(), 1000);
        t.expire(7 * 86_400_000);
        assert_eq!(t.history_len(), 1000, "the clock alone forgets nothing");
        t.forget_before((999 + 3600) * 1000);
        assert_eq!(t.history_len(), 1);
        // The next pass comes a minute of log time after that one.
        t.forget_before((1000 + 3600) * 1000);
        assert_eq!(t.history_len(), 1);
        t.forget_before((999 + 3600) * 1000 + FORGET_EVERY_MS + 1);
        assert_eq!(t.history_len(), 0);
        assert_eq!(t.next_forget, i64::MAX);
    }

    #[test]
    fn pardons_are_listed_until_their_end_and_a_manual_ban_ends_them() {
        let mut t = table(&[rule("default", 600, 2.0, WEEK, DAY)], &[]);
        t.offense(&offense("203.0.113.7", 0, 1000)).unwrap();
        t.offense(&offense("203.0.113.8", 0, 1000)).unwrap();
        assert!(t.pardons(1_100_000).is_empty(), "nothing lifted yet");
        t.lift(&"203.0.113.7".parse().unwrap(), 1_100_000);
        let p = t.pardons(1_100_000);
        let got: Vec<_> = (p.iter())
            .map(|p| (p.key.net.to_string(), p.rule.to_string(), p.until_ms))
            .collect();
        assert_eq!(
            got,
            [("203.0.113.7".to_string(), "default".into(), 1_600_000)]
        );
        assert!(t.pardons(1_600_000).is_empty(), "ended with the term");
        // A ban by hand ends the pardon: from then on the rule judges the key again.
        let net = "203.0.113.7".parse().unwrap();
        t.ban_manually(net, None, 1_200_000, 60_000).unwrap();
        assert!(t.pardons(1_200_000).is_empty());
        assert!(
            t.offense(&offense("203.0.113.7", 0, 1100)).is_none(),
            "still forgiven"
        );
        assert!(
            t.offense(&offense("203.0.113.7", 0, 1300)).is_some(),
            "a new flood"
        );
        // Under the lifted ban's own rule too.
        t.lift(&"203.0.113.8".parse().unwrap(), 1_100_000);
        let net = "203.0.113.8".parse().unwrap();
        t.ban_manually(net, Some("default"), 1_200_000, 60_000)
            .unwrap();
        assert!(t.pardons(1_200_000).is_empty());
    }

    #[test]
    fn a_lifted_key_is_not_banned_again_for_the_same_offense_nor_escalated_by_it() {
        let mut t = table(&[rule("default", 600, 2.0, WEEK, DAY)], &[]);
        t.offense(&offense("203.0.113.7", 0, 1000)).unwrap();
        let out = t.lift(&"203.0.113.7".parse().unwrap(), 1_100_000);
        let [(ban, unban)] = &out.lifted[..] else {
            panic!("{out:?}")
        };
        assert_eq!((ban.until_ms, unban.time_ms), (1_600_000, 1_100_000));
        assert_eq!(unban.reason, UnbanReason::Manual);
        assert_eq!(t.active_len(), 0);
        assert_eq!(t.next_expiry(), None, "nothing left to expire");
        // The same flood, read late or still going: forgiven for the rest of the term.
        assert!(t.offense(&offense("203.0.113.7", 0, 1200)).is_none());
        assert!(t.offense(&offense("203.0.113.7", 0, 1599)).is_none());
        // After it, a flood bans again, as a first offense: the lifted ban does not escalate.
        let again = t.offense(&offense("203.0.113.7", 0, 1600)).unwrap();
        assert_eq!((again.offense, again.ban_ms), (1, 600_000));
        // Kept across a restart.
        let snap = t.snapshot();
        let mut back = table(&[rule("default", 600, 2.0, WEEK, DAY)], &[]);
        back.restore(&snap);
        assert_eq!(back.snapshot(), snap);
        let json = serde_json::to_string(&snap.history).unwrap();
        assert!(json.contains(r#""lifted":[true,false]"#), "{json}");
    }

    #[test]
    fn lifting_a_range_lifts_the_keys_inside_it_and_names_the_wider_bans() {
        let mut t = table(
            &[
                rule("a", 600, 1.0, WEEK, DAY),
                rule("b", 60, 1.0, WEEK, DAY),
            ],
            &[],
        );
        t.offense(&offense("203.0.113.7", 0, 1000)).unwrap();
        t.offense(&offense("203.0.113.7", 1, 1000)).unwrap();
        t.offense(&offense("203.0.113.9", 0, 1000)).unwrap();
        t.offense(&offense("198.51.100.0/24", 0, 1000)).unwrap();
        t.offense(&offense("2001:db8::/64", 0, 1000)).unwrap();
        let keys = |l: &Lifted| -> Vec<String> {
            l.lifted
                .iter()
                .map(|(_, u)| format!("{} {}", u.key.net, u.rule))
                .collect()
        };
        let out = t.lift(&"203.0.113.7".parse().unwrap(), 1_001_000);
        assert_eq!(
            keys(&out),
            ["203.0.113.7 b", "203.0.113.7 a"],
            "soonest end first"
        );
        let out = t.lift(&"198.51.100.5".parse().unwrap(), 1_001_000);
        assert!(out.lifted.is_empty());
        assert_eq!(out.wider[0].key.net.to_string(), "198.51.100.0/24");
        assert_eq!(t.active_len(), 3, "the /24 stays");
        let out = t.lift(&"0.0.0.0/0".parse().unwrap(), 1_001_000);
        assert_eq!(keys(&out), ["198.51.100.0/24 a", "203.0.113.9 a"]);
        assert!(t.lift(&"2001:db8::1".parse().unwrap(), 0).lifted.is_empty());
        assert_eq!(
            keys(&t.lift(&"2001:db8::/48".parse().unwrap(), 0)),
            ["2001:db8::/64 a"]
        );
        assert_eq!(t.stats().unbans, 5);
    }

    #[test]
    fn a_manual_ban_is_a_ban_of_its_own_rule_that_ends_and_survives_restarts() {
        let rules = [rule("default", 600, 2.0, WEEK, DAY)];
        let mut t = table(&rules, &["10.0.0.0/8"]);
        let net: Cidr = "203.0.113.0/24".parse().unwrap();
        let b = t.ban_manually(net, None, 5_000, 3_600_000).unwrap();
        assert_eq!(
            (&*b.rule, b.until_ms, b.origin),
            ("manual", 3_605_000, Origin::Manual)
        );
        let again = t.ban_manually(net, None, 6_000, 60_000).unwrap_err();
        assert!(
            again
                .to_string()
                .starts_with("203.0.113.0/24 is already banned under rule manual until"),
            "{again}"
        );
        // Detection bans under its own rules all the same, and escalation ignores manual bans.
        let d = t.offense(&offense("203.0.113.0/24", 0, 10)).unwrap();
        assert_eq!(d.offense, 1);
        let r = t
            .ban_manually(net, Some("default"), 6_000, 60_000)
            .unwrap_err();
        assert!(matches!(r, ManualBanError::AlreadyBanned(_)), "{r}");
        let r = t
            .ban_manually(net, Some("nope"), 6_000, 60_000)
            .unwrap_err();
        assert_eq!(r.to_string(), "no rule is named \"nope\"");
        let r = t
            .ban_manually("10.1.2.3".parse().unwrap(), None, 0, 1)
            .unwrap_err();
        assert!(r.to_string().contains("allowlisted"), "{r}");
        let snap = t.snapshot();
        let mut back = table(&rules, &[]);
        assert_eq!(back.restore(&snap).bans, 2);
        assert_eq!(back.snapshot(), snap);
        let ended: Vec<_> = back.expire(3_605_000).into_iter().map(|u| u.rule).collect();
        assert_eq!(ended, [Arc::from("default"), Arc::from("manual")]);
    }

    #[test]
    fn ending_a_remote_ban_leaves_the_keys_own_bans() {
        let mut t = table(&[rule("default", 600, 2.0, WEEK, DAY)], &[]);
        t.offense(&offense("198.51.100.1", 0, 1)).unwrap();
        for net in ["198.51.100.1", "198.51.100.2"] {
            let r = RemoteBan {
                net: net.parse().unwrap(),
                node: Arc::from("web-02"),
                time_ms: 1_000,
                until_ms: 10_000_000,
            };
            assert!(matches!(t.ban_remote(r), RemoteOutcome::Banned(_)), "{net}");
        }
        let u = t
            .end_remote(&"198.51.100.1".parse().unwrap(), 5_000)
            .unwrap();
        assert_eq!(
            (&*u.rule, u.time_ms, u.reason),
            ("fleet", 5_000, UnbanReason::Withdrawn)
        );
        assert!(t
            .end_remote(&"198.51.100.1".parse().unwrap(), 5_000)
            .is_none());
        let left: Vec<String> = t
            .active()
            .map(|b| format!("{} {}", b.key.net, b.rule))
            .collect();
        assert_eq!(left, ["198.51.100.1 default", "198.51.100.2 fleet"]);
        assert_eq!(t.next_expiry(), Some(601_000));
    }

    #[test]
    fn a_remote_ban_is_taken_once_per_key_bounded_by_the_allowlist_and_survives_restarts() {
        let rules = [rule("default", 600, 2.0, WEEK, DAY)];
        let mut t = table(&rules, &["10.0.0.0/8"]);
        let remote = |net: &str, node: &str, until_ms: i64| RemoteBan {
            net: net.parse().unwrap(),
            node: Arc::from(node),
            time_ms: 1_000,
            until_ms,
        };
        let RemoteOutcome::Banned(b) = t.ban_remote(remote("203.0.113.7", "web-02", 60_000)) else {
            panic!("not banned");
        };
        assert_eq!(
            (&*b.rule, b.until_ms, b.origin.node()),
            ("fleet", 60_000, Some("web-02"))
        );
        // The same ban again (a replay of the stream), or from a second node: enforced once.
        let again = t.ban_remote(remote("203.0.113.7", "web-03", 60_000));
        assert_eq!(again, RemoteOutcome::Covered);
        assert_eq!(
            t.ban_remote(remote("203.0.113.7", "web-03", 90_000)),
            RemoteOutcome::Extended
        );
        assert_eq!(
            t.ban_remote(remote("10.1.2.3", "web-02", 90_000)),
            RemoteOutcome::Allowlisted
        );
        // A local ban that lasts longer covers a remote one.
        t.offense(&offense("198.51.100.1", 0, 0)).unwrap();
        assert_eq!(
            t.ban_remote(remote("198.51.100.1", "web-02", 60_000)),
            RemoteOutcome::Covered
        );
        assert_eq!(
            (t.active_len(), t.stats().bans, t.stats().fleet_bans),
            (2, 1, 2)
        );

        let snap = t.snapshot();
        let json = serde_json::to_string(&snap).unwrap();
        assert!(json.contains(r#""rule":"fleet""#) && json.contains(r#""origin":"web-02""#));
        let mut back = table(&rules, &[]);
        assert_eq!(back.restore(&snap).bans, 2);
        assert_eq!(back.snapshot(), snap);
        let ended = back.expire(90_000);
        assert_eq!(ended.len(), 1);
        assert_eq!((&*ended[0].rule, ended[0].time_ms), ("fleet", 90_000));
        // An admin's unban lifts fleet bans as any other.
        let mut t = table(&rules, &[]);
        t.ban_remote(remote("192.0.2.9", "web-02", 60_000));
        let lifted = t.lift(&"192.0.2.0/24".parse().unwrap(), 2_000);
        assert_eq!(lifted.lifted.len(), 1);
        assert_eq!(t.active_len(), 0);
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let rules = [
            rule("a", 600, 2.0, WEEK, DAY),
            rule("b", 60, 2.0, WEEK, DAY),
        ];
        let v = Vhosts::new();
        v.intern(b"zzz.example");
        let site = v.intern(b"shop.example");
        let mut t = BanTable::new(&rules, Allowlist::default(), v);
        t.offense(&offense("192.0.2.1", 0, 0)).unwrap();
        t.expire(600_000);
        t.offense(&offense("192.0.2.1", 0, 700)).unwrap();
        let mut kv = offense("2001:db8:1:2::/64", 1, 710);
        kv.key.vhost = site;
        kv.vhost = site;
        kv.flags = HIT_VIA_PROXY;
        t.offense(&kv).unwrap();
        t.offense(&offense("198.51.100.3", 1, 0)).unwrap();
        t.expire(705_000);

        let snap = t.snapshot();
        assert_eq!(snap.bans.len(), 2);
        assert_eq!(snap.history.len(), 3);
        let json = serde_json::to_string(&snap).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);

        // A fresh process interns vhosts in another order: names, not ids, must carry over.
        let v2 = Vhosts::new();
        let site2 = v2.intern(b"shop.example");
        assert_ne!(site2, site);
        let mut t2 = BanTable::new(&rules, Allowlist::default(), v2);
        let st = t2.restore(&back);
        assert_eq!(
            st,
            RestoreStats {
                bans: 2,
                history: 3,
                skipped: 0
            }
        );
        assert_eq!(t2.snapshot(), snap);

        // The restored table behaves like the original.
        let mut kv2 = kv;
        kv2.key.vhost = site2;
        kv2.time_ms = 720_000;
        assert!(t2.offense(&kv2).is_none());
        let ends: Vec<_> = t2.expire(2_000_000).iter().map(|u| u.time_ms).collect();
        assert_eq!(ends, vec![770_000, 1_900_000]);
        let b = t2.offense(&offense("192.0.2.1", 0, 2000)).unwrap();
        assert_eq!(b.offense, 3);
        assert_eq!(b.ban_ms, 2_400_000);
    }

    #[test]
    fn restore_skips_what_no_longer_fits() {
        let mut t = table(&[rule("a", 600, 2.0, WEEK, DAY)], &[]);
        t.offense(&offense("192.0.2.1", 0, 0)).unwrap();
        let mut snap = t.snapshot();
        snap.bans[0].rule = "gone".into();
        snap.history[0].key = "not an address".into();
        let mut t2 = table(&[rule("a", 600, 2.0, WEEK, DAY)], &[]);
        assert_eq!(t2.restore(&snap).skipped, 2);
        assert_eq!(t2.active_len(), 0);
        // Restoring twice does not double the history.
        let snap = t.snapshot();
        t2.restore(&snap);
        t2.restore(&snap);
        assert_eq!(t2.snapshot(), snap);
    }
}
