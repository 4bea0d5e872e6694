//! Which vhost each of the busiest clients hits most (`floodwatch top`'s VHOST column for keys
//! whose rule does not key on the vhost). Counted on the reading thread only while someone
//! looks, and only for the few addresses `top` shows: a line pays one bit test in a 64 Kibit
//! map of the watched addresses' low 16 bits, and the rare line whose bit is set a map lookup.

use std::collections::HashMap;

use crate::addr::Addr;
use crate::hit::VhostId;

/// Bits in the filter: one per value of an address's low 16 bits.
const BITS: usize = 1 << 16;

pub struct KeyVhosts {
    filter: Vec<u64>,
    /// Per watched address, requests per vhost (halved at each renewal: recent ones weigh).
    counts: HashMap<Addr, Vec<(VhostId, u32)>>,
}

impl KeyVhosts {
    pub fn new() -> KeyVhosts {
        KeyVhosts {
            filter: vec![0; BITS / 64],
            counts: HashMap::new(),
        }
    }

    /// Watches `addrs` from now on: the counts of those already watched are kept (halved), the
    /// others forgotten.
    pub fn renew(&mut self, addrs: &[Addr]) {
        let mut counts = HashMap::with_capacity(addrs.len());
        self.filter.iter_mut().for_each(|w| *w = 0);
        for &a in addrs {
            let i = a.0 as u16 as usize;
            self.filter[i / 64] |= 1 << (i % 64);
            let mut kept = self.counts.remove(&a).unwrap_or_default();
            kept.iter_mut().for_each(|(_, n)| *n /= 2);
            kept.retain(|(_, n)| *n > 0);
            counts.insert(a, kept);
        }
        self.counts = counts;
    }

    /// One request of `addr` to `vhost`.
    #[inline]
    pub fn count(&mut self, addr: Addr, vhost: VhostId) {
        let i = addr.0 as u16 as usize;
        if self.filter[i / 64] & (1 << (i % 64)) == 0 {
            return;
        }
        self.count_slow(addr, vhost);
    }

    #[cold]
    fn count_slow(&mut self, addr: Addr, vhost: VhostId) {
        let Some(by) = self.counts.get_mut(&addr) else {
            return;
        };
        match by.iter().position(|(v, _)| *v == vhost) {
            Some(i) => by[i].1 = by[i].1.saturating_add(1),
            // A client spread over many vhosts keeps the first few.
            None if by.len() < 16 => by.push((vhost, 1)),
            None => {}
        }
    }

    /// The vhost `addr` sent most requests to lately, if it is watched and sent any.
    pub fn busiest(&self, addr: Addr) -> Option<VhostId> {
        let by = self.counts.get(&addr)?;
        by.iter()
            .max_by_key(|(v, n)| (*n, std::cmp::Reverse(*v)))
            .map(|(v, _)| *v)
    }
}

impl Default for KeyVhosts {
    fn default() -> KeyVhosts {
        KeyVhosts::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_watched_and_keeps_recent_counts_across_renewals() {
        let (a, b, c) = (
            Addr::from_v4(7),
            Addr::from_v4(8),
            Addr::from_v4(0x0001_0007),
        );
        let mut k = KeyVhosts::new();
        k.renew(&[a, b]);
        for _ in 0..3 {
            k.count(a, 1);
        }
        k.count(a, 2);
        k.count(c, 2); // same low bits as `a`, not watched
        assert_eq!(k.busiest(a), Some(1));
        assert_eq!(k.busiest(b), None);
        assert_eq!(k.busiest(c), None);
        k.renew(&[a]);
        // Halved: 1 for vhost 1, 0 (dropped) for vhost 2.
        k.count(a, 2);
        k.count(a, 2);
        assert_eq!(k.busiest(a), Some(2));
        k.renew(&[]);
        assert_eq!(k.busiest(a), None);
    }
}
