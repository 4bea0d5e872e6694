//! Per-key request counts per second of log time, and from them each key's peak over sliding
//! windows (1 s, 10 s, 60 s) and the distribution of those peaks over all keys.
//!
//! Log times have one-second resolution in most formats, so per-second counts lose nothing.

use crate::addr::Cidr;

/// The windows reported, in seconds.
pub const WINDOWS: [i64; 3] = [1, 10, 60];

/// One key's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyPeaks {
    pub key: Cidr,
    pub requests: u64,
    /// Most requests in any window of [`WINDOWS`] seconds, in that order.
    pub peaks: [u64; 3],
    pub first_ms: i64,
    pub last_ms: i64,
}

impl KeyPeaks {
    /// Peak rate in requests per second over window `i` of [`WINDOWS`].
    pub fn peak_rps(&self, i: usize) -> f64 {
        self.peaks[i] as f64 / WINDOWS[i] as f64
    }

    /// The figures of requests at these log times (ms, sorted).
    pub fn of_sorted(key: Cidr, times: impl Iterator<Item = i64>) -> KeyPeaks {
        let mut seconds: Vec<(i64, u32)> = Vec::new();
        let mut requests = 0u64;
        for t in times {
            requests += 1;
            let sec = t.div_euclid(1000);
            match seconds.last_mut() {
                Some((s, n)) if *s == sec => *n += 1,
                _ => seconds.push((sec, 1)),
            }
        }
        let merged = merge_seconds(&seconds);
        KeyPeaks {
            key,
            requests,
            peaks: WINDOWS.map(|w| window_peak(&merged, w)),
            first_ms: merged.first().map_or(0, |e| e.0 * 1000),
            last_ms: merged.last().map_or(0, |e| e.0 * 1000),
        }
    }
}

fn merge_seconds(sorted: &[(i64, u32)]) -> Vec<(i64, u64)> {
    let mut out: Vec<(i64, u64)> = Vec::with_capacity(sorted.len());
    for &(s, n) in sorted {
        match out.last_mut() {
            Some((ls, ln)) if *ls == s => *ln += u64::from(n),
            _ => out.push((s, u64::from(n))),
        }
    }
    out
}

/// Most requests in any `w` consecutive seconds (`counts` sorted by second, unique seconds).
fn window_peak(counts: &[(i64, u64)], w: i64) -> u64 {
    let (mut lo, mut sum, mut best) = (0, 0u64, 0u64);
    for hi in 0..counts.len() {
        sum += counts[hi].1;
        while counts[hi].0 - counts[lo].0 >= w {
            sum -= counts[lo].1;
            lo += 1;
        }
        best = best.max(sum);
    }
    best
}

/// Percentiles of the keys' peak rates for one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Distribution {
    pub window_s: i64,
    /// (quantile, requests per second).
    pub percentiles: Vec<(f64, f64)>,
    pub max: f64,
}

/// The quantiles reported.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// Peak-rate distribution per window, from an hdrhistogram of each key's peak count.
pub fn distributions(keys: &[KeyPeaks]) -> Vec<Distribution> {
    WINDOWS
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            // 3 significant digits; counts of 1 or more, no upper bound needed up front.
            let mut h = match hdrhistogram::Histogram::<u64>::new(3) {
                Ok(h) => h,
                Err(_) => {
                    return Distribution {
                        window_s: w,
                        percentiles: Vec::new(),
                        max: 0.0,
                    }
                }
            };
            for k in keys {
                // Only fails for values the histogram cannot hold, which auto-resize rules out.
                let _ = h.record(k.peaks[i].max(1));
            }
            let rate = |v: u64| v as f64 / w as f64;
            Distribution {
                window_s: w,
                percentiles: QUANTILES
                    .iter()
                    .map(|&q| {
                        (
                            q,
                            if keys.is_empty() {
                                0.0
                            } else {
                                rate(h.value_at_quantile(q))
                            },
                        )
                    })
                    .collect(),
                max: if keys.is_empty() { 0.0 } else { rate(h.max()) },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Addr;

    fn key(s: &str) -> Cidr {
        Cidr::new(Addr::parse(s.as_bytes()).unwrap(), 32)
    }

    #[test]
    fn window_peak_slides_over_gaps() {
        let c = [(0, 5), (1, 5), (9, 5), (10, 7), (70, 1)];
        assert_eq!(window_peak(&c, 1), 7);
        // [1, 10] holds 5 + 5 + 7.
        assert_eq!(window_peak(&c, 10), 17);
        assert_eq!(window_peak(&c, 60), 22);
        assert_eq!(window_peak(&[], 10), 0);
    }

    #[test]
    fn peaks_count_each_second_once() {
        let a = KeyPeaks::of_sorted(
            key("192.0.2.1"),
            [1000, 1500, 1999, 2000, 61_000].into_iter(),
        );
        assert_eq!(a.requests, 5);
        assert_eq!(a.peaks, [3, 4, 4]);
        assert_eq!((a.first_ms, a.last_ms), (1000, 61_000));
        assert_eq!(a.peak_rps(1), 0.4);
    }

    #[test]
    fn distributions_report_each_window() {
        let keys: Vec<KeyPeaks> = (0..100u32)
            .map(|i| {
                let k = key(&format!("198.51.100.{i}"));
                KeyPeaks::of_sorted(k, (0..=i).map(|_| 0))
            })
            .collect();
        let d = distributions(&keys);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].max, 100.0);
        assert_eq!(d[0].percentiles[0], (0.5, 50.0));
        assert_eq!(d[1].max, 10.0);
    }
}
