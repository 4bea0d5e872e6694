//! Requests per vhost, by status class: what `floodwatch top` and the dashboard show as each
//! vhost's lines per second and share of 4xx and 5xx. Counted on the reading thread (watch's
//! loop), one indexed add per line, and only where asked for (watch, not replay).

use crate::hit::{VhostId, NO_VHOST};

/// Requests of one vhost since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VhostCount {
    pub requests: u64,
    pub client_errors: u64,
    pub server_errors: u64,
}

/// Counts per vhost id; the lines with no vhost apart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VhostCounts {
    by_id: Vec<VhostCount>,
    no_vhost: VhostCount,
}

impl VhostCounts {
    /// One well-formed request of `vhost` answered with `status`.
    #[inline]
    pub fn count(&mut self, vhost: VhostId, status: u16) {
        let c = if vhost == NO_VHOST {
            &mut self.no_vhost
        } else {
            let i = vhost as usize;
            if i >= self.by_id.len() {
                self.by_id.resize(i + 1, VhostCount::default());
            }
            &mut self.by_id[i]
        };
        c.requests += 1;
        c.client_errors += u64::from((400..500).contains(&status));
        c.server_errors += u64::from(status >= 500);
    }

    /// Every vhost seen, with [`NO_VHOST`] for lines without one.
    pub fn iter(&self) -> impl Iterator<Item = (VhostId, VhostCount)> + '_ {
        let named = (self.by_id.iter().enumerate())
            .filter(|(_, c)| c.requests > 0)
            .map(|(i, c)| (i as VhostId, *c));
        let none = (self.no_vhost.requests > 0).then_some((NO_VHOST, self.no_vhost));
        named.chain(none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_vhost_and_status_class() {
        let mut v = VhostCounts::default();
        for (vhost, status) in [(2, 200), (2, 404), (2, 503), (NO_VHOST, 0), (0, 499)] {
            v.count(vhost, status);
        }
        let got: Vec<_> = v.iter().collect();
        let c = |requests, client_errors, server_errors| VhostCount {
            requests,
            client_errors,
            server_errors,
        };
        assert_eq!(
            got,
            [(0, c(1, 1, 0)), (2, c(3, 1, 1)), (NO_VHOST, c(1, 0, 0))]
        );
    }
}
