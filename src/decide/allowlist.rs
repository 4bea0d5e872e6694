//! The allowlist: address ranges that are never banned (loopback, the server's own addresses,
//! configured CIDRs, trusted proxies).
//!
//! A key is protected when its range *overlaps* an allowlisted range, in either direction: an
//! address inside an allowed /8 is protected, and so is a /64 key that contains one allowed
//! address (banning the /64 would ban that address too). Two CIDR ranges overlap exactly when one
//! contains the other, so each range is turned into an interval of the address space, the
//! intervals of each family are merged into a sorted, disjoint list, and a lookup is one binary
//! search: O(log n) per offense however many ranges are configured.

use crate::addr::{Addr, Cidr};

/// A set of address ranges, queried per offense.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    /// Disjoint, sorted, non-adjacent inclusive intervals of IPv4 addresses (as held in [`Addr`]).
    v4: Vec<(u128, u128)>,
    /// The same for IPv6. Kept apart from IPv4 because an IPv6 range such as `::/0` covers the
    /// IPv4-mapped block numerically but not semantically ([`Cidr::contains`] checks the family).
    v6: Vec<(u128, u128)>,
    /// The ranges as given, for display.
    ranges: Vec<Cidr>,
}

impl Allowlist {
    pub fn new(ranges: Vec<Cidr>) -> Allowlist {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for c in &ranges {
            let iv = interval(c);
            if c.addr.is_v4() {
                v4.push(iv);
            } else {
                v6.push(iv);
            }
        }
        Allowlist {
            v4: merge(v4),
            v6: merge(v6),
            ranges,
        }
    }

    /// Whether banning `key` would ban an allowlisted address.
    pub fn covers(&self, key: &Cidr) -> bool {
        let (lo, hi) = interval(key);
        let list = if key.addr.is_v4() { &self.v4 } else { &self.v6 };
        // The first interval that ends at or after `lo` is the only candidate: earlier ones end
        // before the key starts, later ones start after this one ends.
        let i = list.partition_point(|&(_, end)| end < lo);
        list.get(i).is_some_and(|&(start, _)| start <= hi)
    }

    /// Whether one address is allowlisted.
    pub fn covers_addr(&self, addr: Addr) -> bool {
        let single = if addr.is_v4() { 32 } else { 128 };
        self.covers(&Cidr::new(addr, single))
    }

    /// The ranges as given (not merged).
    pub fn ranges(&self) -> &[Cidr] {
        &self.ranges
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// The inclusive interval of held addresses a range spans.
fn interval(c: &Cidr) -> (u128, u128) {
    let family_bits: u32 = if c.addr.is_v4() { 32 } else { 128 };
    let host_bits = family_bits - u32::from(c.prefix).min(family_bits);
    let host_mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let lo = c.addr.0 & !host_mask;
    (lo, lo | host_mask)
}

/// Sorts intervals and merges overlapping or adjacent ones.
fn merge(mut ivs: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ivs.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(ivs.len());
    for (lo, hi) in ivs {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn list(ranges: &[&str]) -> Allowlist {
        Allowlist::new(ranges.iter().map(|s| cidr(s)).collect())
    }

    #[test]
    fn address_inside_allowed_range_is_covered() {
        let a = list(&["127.0.0.0/8", "::1/128", "192.0.2.0/24"]);
        assert!(a.covers(&cidr("127.0.0.1")));
        assert!(a.covers(&cidr("127.255.255.255")));
        assert!(a.covers(&cidr("192.0.2.77")));
        assert!(!a.covers(&cidr("128.0.0.0")));
        assert!(!a.covers(&cidr("192.0.3.0")));
        assert!(!a.covers(&cidr("126.255.255.255")));
        assert!(a.covers(&cidr("::1")));
        assert!(!a.covers(&cidr("::2")));
    }

    #[test]
    fn key_containing_an_allowed_address_is_covered() {
        let a = list(&["2001:db8:1:2::53", "198.51.100.10"]);
        assert!(a.covers(&cidr("2001:db8:1:2::/64")));
        assert!(!a.covers(&cidr("2001:db8:1:3::/64")));
        assert!(a.covers(&cidr("198.51.100.0/24")));
        assert!(!a.covers(&cidr("198.51.101.0/24")));
    }

    #[test]
    fn families_do_not_mix() {
        // `::/0` numerically spans the IPv4-mapped block; it must still not protect IPv4 keys.
        let a = list(&["::/0"]);
        assert!(a.covers(&cidr("2001:db8::1")));
        assert!(!a.covers(&cidr("203.0.113.7")));
        let b = list(&["0.0.0.0/0"]);
        assert!(b.covers(&cidr("203.0.113.7")));
        assert!(!b.covers(&cidr("::1")));
        assert!(!b.covers(&cidr("::/0")));
    }

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let a = list(&["10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "10.0.0.5"]);
        assert_eq!(a.v4.len(), 1);
        assert!(a.covers(&cidr("10.200.1.1")));
        assert!(!a.covers(&cidr("11.0.0.0")));
        assert_eq!(a.len(), 4);
        assert!(list(&[]).is_empty());
        assert!(!list(&[]).covers(&cidr("1.2.3.4")));
    }

    /// The obvious definition: some range contains the other's network address.
    fn naive(ranges: &[Cidr], key: &Cidr) -> bool {
        ranges
            .iter()
            .any(|r| r.contains(key.addr) || key.contains(r.addr))
    }

    fn arb_cidr() -> impl Strategy<Value = Cidr> {
        // Few distinct high bits so that ranges often overlap.
        prop_oneof![
            (0u32..16, 0u8..=32).prop_map(|(x, p)| Cidr::new(Addr::from_v4(x << 26 | x), p)),
            (0u128..16, 0u8..=128).prop_map(|(x, p)| Cidr::new(Addr(x << 122 | x), p)),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]

        #[test]
        fn agrees_with_naive_overlap(
            ranges in proptest::collection::vec(arb_cidr(), 0..20),
            keys in proptest::collection::vec(arb_cidr(), 1..20),
        ) {
            let a = Allowlist::new(ranges.clone());
            for k in &keys {
                prop_assert_eq!(a.covers(k), naive(&ranges, k), "key {}", k);
            }
        }
    }
}
