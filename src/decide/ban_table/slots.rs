//! The ban table one slot (a key under a rule) at a time, as the state folder's journal keeps it:
//! what changed since the last save, every slot for a compaction, and a slot put back on start.
//!
//! A slot's record is its whole state (its active ban, if any, and its remembered past bans), so
//! that replaying records in order, the last of each slot winning, rebuilds the table; a record
//! with neither is a slot that emptied. Past bans the table forgets (see
//! [`BanTable::forget_before`]) are not recorded as changes: a restored table forgets them again.

use ahash::AHashSet;

use super::{BanTable, Past, SavedBan, Slot};

/// One slot's whole state, with its key, rule and vhosts by name (as [`SavedBan`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SavedSlot {
    pub key: String,
    pub key_vhost: Option<String>,
    pub rule: String,
    /// Its active ban (whose own `key`, `key_vhost` and `rule` are the slot's).
    pub ban: Option<SavedBan>,
    /// Its past bans that still count, oldest first.
    pub past: Vec<SavedPast>,
}

/// A past ban of a slot (see [`BanTable::forget_before`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedPast {
    pub time_ms: i64,
    pub until_ms: i64,
    pub lifted: bool,
}

impl BanTable {
    /// From now on, notes which slots change, for [`BanTable::drain_changed`] (a table nobody
    /// saves would only collect them).
    pub fn track_changes(&mut self) {
        self.changed.get_or_insert_with(AHashSet::new);
    }

    /// Slots changed since the last call: how many there are, not taking them.
    pub fn changed_len(&self) -> usize {
        self.changed.as_ref().map_or(0, |c| c.len())
    }

    /// Hands each slot changed since the last call to `f`, and forgets that it changed.
    pub fn drain_changed(&mut self, mut f: impl FnMut(&SavedSlot)) {
        let Some(mut changed) = self.changed.take() else {
            return;
        };
        for &slot in &changed {
            f(&self.saved_slot(slot));
        }
        changed.clear();
        self.changed = Some(changed);
    }

    /// Hands every slot with an active ban or a remembered past ban to `f`.
    pub fn each_slot(&self, mut f: impl FnMut(&SavedSlot)) {
        for &slot in self.active.keys() {
            f(&self.saved_slot(slot));
        }
        for &slot in self.history.keys() {
            if !self.active.contains_key(&slot) {
                f(&self.saved_slot(slot));
            }
        }
    }

    /// Slots [`BanTable::each_slot`] would hand out.
    pub fn slots_len(&self) -> usize {
        let past_only = (self.history.keys())
            .filter(|slot| !self.active.contains_key(slot))
            .count();
        self.active.len() + past_only
    }

    fn saved_slot(&self, slot: Slot) -> SavedSlot {
        let mut past: Vec<SavedPast> = (self.history.get(&slot).into_iter().flatten())
            .map(|p| SavedPast {
                time_ms: p.time,
                until_ms: p.until,
                lifted: p.lifted,
            })
            .collect();
        past.sort_unstable_by_key(|p| (p.time_ms, p.until_ms, p.lifted));
        SavedSlot {
            key: slot.key().net.to_string(),
            key_vhost: self.vhost_text(slot.key().vhost),
            rule: self.rule_name(slot.rule()).to_string(),
            ban: (self.active.get(&slot))
                .map(|b| SavedBan::of(&self.ban_of(slot, b), &self.vhosts)),
            past,
        }
    }

    /// Puts a slot back as saved, replacing what the table holds for it. `false` when it no
    /// longer fits (a rule that is gone, a key that does not parse: the file is outside input).
    pub fn restore_slot(&mut self, s: &SavedSlot) -> bool {
        let Some((slot, rule_name)) = self.slot_of(&s.key, s.key_vhost.as_deref(), &s.rule) else {
            return false;
        };
        if let Some(old) = self.active.remove(&slot) {
            self.expiry.remove(&(old.until_ms, slot));
        }
        self.history.remove(&slot);
        if let Some(b) = &s.ban {
            self.expiry.insert((b.until_ms, slot));
            self.hold(slot, &b.to_ban(slot.key(), rule_name));
        }
        // Manual and fleet bans keep no history: a past ban of theirs is not restored either.
        if let Some(rule) = self.rules.get(usize::from(slot.rule())) {
            let window = i64::try_from(rule.window_ms).unwrap_or(i64::MAX);
            for p in &s.past {
                let past = Past {
                    time: p.time_ms,
                    until: p.until_ms,
                    lifted: p.lifted,
                };
                self.remember(slot, past, window);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{offense, rule};
    use super::*;
    use crate::decide::allowlist::Allowlist;
    use crate::vhost::Vhosts;

    const DAY: u64 = 86_400;

    fn table() -> BanTable {
        let rules = [
            rule("a", 600, 2.0, 7 * DAY, DAY),
            rule("b", 60, 2.0, DAY, DAY),
        ];
        BanTable::new(&rules, Allowlist::default(), Vhosts::new())
    }

    fn slots(t: &BanTable) -> Vec<SavedSlot> {
        let mut out = Vec::new();
        t.each_slot(|s| out.push(s.clone()));
        out.sort_by(|a, b| (&a.key, &a.rule).cmp(&(&b.key, &b.rule)));
        out
    }

    #[test]
    fn changes_are_tracked_only_when_asked_and_drained_once() {
        let mut t = table();
        t.offense(&offense("192.0.2.1", 0, 0)).unwrap();
        assert_eq!(t.changed_len(), 0, "no one saves this table");
        t.track_changes();
        t.offense(&offense("192.0.2.2", 0, 0)).unwrap();
        t.offense(&offense("192.0.2.2", 1, 0)).unwrap();
        let mut got = Vec::new();
        t.drain_changed(|s| got.push((s.key.clone(), s.rule.clone(), s.ban.is_some())));
        got.sort();
        assert_eq!(
            got,
            [
                ("192.0.2.2".into(), "a".into(), true),
                ("192.0.2.2".into(), "b".into(), true)
            ]
        );
        assert_eq!(t.changed_len(), 0);
        // An expiry changes the slot: its ban is gone, its past ban stays.
        t.expire(60_000);
        let mut got = Vec::new();
        t.drain_changed(|s| got.push(s.clone()));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].rule.as_str(), got[0].ban.is_none()), ("b", true));
        assert_eq!(got[0].past.len(), 1);
    }

    #[test]
    fn slots_replayed_in_order_rebuild_the_table() {
        let mut t = table();
        t.track_changes();
        let mut journal = Vec::new();
        t.offense(&offense("192.0.2.1", 0, 0)).unwrap();
        t.offense(&offense("2001:db8::/64", 1, 5)).unwrap();
        t.drain_changed(|s| journal.push(s.clone()));
        t.expire(65_000);
        t.lift(&"192.0.2.1".parse().unwrap(), 70_000);
        t.ban_manually("198.51.100.9".parse().unwrap(), None, 70_000, 1_000_000)
            .unwrap();
        t.drain_changed(|s| journal.push(s.clone()));

        let mut back = table();
        for s in &journal {
            assert!(back.restore_slot(s));
        }
        assert_eq!(slots(&back), slots(&t));
        assert_eq!(back.snapshot(), t.snapshot());
        assert_eq!(back.slots_len(), 3);
        // The restored table judges as the original: the lifted ban still forgives.
        assert!(back.offense(&offense("192.0.2.1", 0, 100)).is_none());
    }

    #[test]
    fn a_slot_that_no_longer_fits_is_refused() {
        let mut t = table();
        t.offense(&offense("192.0.2.1", 0, 0)).unwrap();
        let mut s = slots(&t).remove(0);
        s.rule = "gone".into();
        assert!(!table().restore_slot(&s));
        s.rule = "a".into();
        s.key = "not an address".into();
        assert!(!table().restore_slot(&s));
    }
}
