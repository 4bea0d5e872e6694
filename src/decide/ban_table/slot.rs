//! The ban table's unit, a key under a rule, packed into 24 bytes: every active ban, past ban
//! and pending end holds one, where `(Key, u16)` takes 64 (a `u128` address is 16-aligned).

use crate::addr::{Addr, Cidr};
use crate::engine::Key;

/// A key and a rule index. Ordered as `(Key, u16)` is (address, prefix, vhost, rule): expiry
/// ties come out in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Slot {
    /// The address's high and low 64 bits.
    hi: u64,
    lo: u64,
    prefix: u8,
    vhost: u32,
    rule: u16,
}

impl Slot {
    pub(super) fn new(key: Key, rule: u16) -> Slot {
        let addr = key.net.addr.0;
        Slot {
            hi: (addr >> 64) as u64,
            lo: addr as u64,
            prefix: key.net.prefix,
            vhost: key.vhost,
            rule,
        }
    }

    pub(super) fn key(self) -> Key {
        Key {
            net: Cidr {
                addr: Addr(u128::from(self.hi) << 64 | u128::from(self.lo)),
                prefix: self.prefix,
            },
            vhost: self.vhost,
        }
    }

    pub(super) fn rule(self) -> u16 {
        self.rule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(net: &str, vhost: u32) -> Key {
        Key {
            net: net.parse().unwrap(),
            vhost,
        }
    }

    #[test]
    fn a_slot_is_small_keeps_its_key_and_rule_and_orders_as_the_pair() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
        let keys = [
            key("192.0.2.1", 0),
            key("192.0.2.1", 3),
            key("192.0.2.0/24", 0),
            key("2001:db8::/64", 1),
            key("2001:db8::1", u32::MAX),
            key("::", 0),
        ];
        let mut pairs = Vec::new();
        for k in keys {
            for rule in [0, 7, u16::MAX] {
                let s = Slot::new(k, rule);
                assert_eq!((s.key(), s.rule()), (k, rule));
                pairs.push((k, rule));
            }
        }
        let mut by_pair = pairs.clone();
        by_pair.sort();
        let mut by_slot: Vec<Slot> = pairs.iter().map(|&(k, r)| Slot::new(k, r)).collect();
        by_slot.sort();
        let back: Vec<(Key, u16)> = by_slot.iter().map(|s| (s.key(), s.rule())).collect();
        assert_eq!(back, by_pair);
    }
}
