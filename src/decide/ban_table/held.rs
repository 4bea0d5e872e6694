//! An active ban as the table holds it: the [`Ban`] without what its slot already says (key,
//! rule) and with its vhost as an id, about 90 bytes where a `Ban` takes 150 (and a `Ban` is
//! rebuilt from it for whoever asks).

use std::sync::Arc;

use crate::decide::{Ban, Origin};
use crate::hit::VhostId;
use crate::vhost::Vhosts;

#[derive(Clone, Debug)]
pub(super) struct Held {
    pub time_ms: i64,
    pub first_seen_ms: i64,
    pub until_ms: i64,
    pub ban_ms: u64,
    pub requests: u64,
    /// Shared with the rule's text while it is the same.
    pub rate: Arc<str>,
    /// The vhost the offense was seen on ([`crate::hit::NO_VHOST`] for none).
    pub vhost: VhostId,
    pub burst: u32,
    pub offense: u32,
    pub via_proxy: bool,
    pub origin: Origin,
}

impl Held {
    /// `b` as held, its vhost `vhost` (the id of its name); `rate` is the rule's current text,
    /// shared when `b`'s is the same.
    pub(super) fn of(b: &Ban, rate: Option<&Arc<str>>, vhost: VhostId) -> Held {
        Held {
            time_ms: b.time_ms,
            first_seen_ms: b.first_seen_ms,
            until_ms: b.until_ms,
            ban_ms: b.ban_ms,
            requests: b.requests,
            rate: match rate {
                Some(r) if *r == b.rate => r.clone(),
                _ => b.rate.clone(),
            },
            vhost,
            burst: b.burst,
            offense: b.offense,
            via_proxy: b.via_proxy,
            origin: b.origin.clone(),
        }
    }

    /// The ban again, with its slot's key and rule name.
    pub(super) fn ban(&self, key: crate::engine::Key, rule: Arc<str>, vhosts: &Vhosts) -> Ban {
        Ban {
            time_ms: self.time_ms,
            key,
            rule,
            vhost: vhosts.name(self.vhost),
            rate: self.rate.clone(),
            burst: self.burst,
            requests: self.requests,
            first_seen_ms: self.first_seen_ms,
            ban_ms: self.ban_ms,
            until_ms: self.until_ms,
            offense: self.offense,
            via_proxy: self.via_proxy,
            origin: self.origin.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_ban_is_small_and_gives_the_ban_back() {
        assert!(
            std::mem::size_of::<Held>() <= 96,
            "{}",
            std::mem::size_of::<Held>()
        );
        let vhosts = Vhosts::new();
        vhosts.intern(b"other.example");
        let rate: Arc<str> = Arc::from("20r/s");
        let b = Ban {
            time_ms: 5,
            key: crate::engine::Key {
                net: "192.0.2.1".parse().unwrap(),
                vhost: crate::hit::NO_VHOST,
            },
            rule: Arc::from("flood"),
            vhost: Some(Arc::from("shop.example")),
            rate: Arc::from("20r/s"),
            burst: 10,
            requests: 12,
            first_seen_ms: 1,
            ban_ms: 600_000,
            until_ms: 600_005,
            offense: 2,
            via_proxy: true,
            origin: Origin::Fleet(Arc::from("web-02")),
        };
        let id = vhosts.intern(b"shop.example");
        let h = Held::of(&b, Some(&rate), id);
        assert!(Arc::ptr_eq(&h.rate, &rate), "shared with the rule");
        assert_eq!(h.ban(b.key, b.rule.clone(), &vhosts), b);
    }
}
