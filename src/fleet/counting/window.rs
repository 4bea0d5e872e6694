//! One key's fleet-wide bucket: nginx's `limit_req` arithmetic applied to the fleet's request
//! counts per window, recomputed from a settled base at every exchange.
//!
//! The fleet's counts come per window of `count_interval` (windows of Redis's clock). A window's
//! total may still grow after it closed: another server ships later, or a line is read late. So
//! the bucket is not stepped once per window but **recomputed** at each exchange from its state
//! at the end of the oldest window still read (the *base*), through the windows after it; only
//! a window that leaves the read span is folded into the base for good. Counts can only grow and
//! the step is monotone in them, so a window once found overflowing stays so: a report is never
//! taken back.
//!
//! The step on a window of `n` requests is nginx's on `n` requests arriving together at its end:
//! `excess = max(0, excess + 1000·n − rate·interval)`, overflowing when `excess > burst` (the
//! rejected requests are then not counted: excess is held at `burst`). Against the same requests
//! one by one it differs by at most one window's drain (`rate · interval`) either way: the
//! tolerance of "decisions equal a replay of the merged logs, within one interval".

use std::collections::VecDeque;

/// A rule's numbers, per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowLimits {
    /// Milli-requests drained per window: `rate (milli-requests/s) × interval / 1000`.
    pub drain: u64,
    /// `burst × 1000`.
    pub burst: u64,
}

/// One window's step: the excess after `n` requests, and whether they overflowed.
#[inline]
pub fn step(excess: u64, n: u64, lim: WindowLimits) -> (u64, bool) {
    let after = excess
        .saturating_add(n.saturating_mul(1000))
        .saturating_sub(lim.drain);
    if n > 0 && after > lim.burst {
        (lim.burst, true)
    } else {
        (after, false)
    }
}

/// A key's fleet counts: the settled base and the windows still read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyWindows {
    /// The last window folded into `base_excess`.
    base: i64,
    base_excess: u64,
    /// Requests folded into the base since tracking began.
    base_requests: u64,
    /// The fleet's totals of windows `base + 1 ..`, as last read.
    totals: VecDeque<u64>,
    /// Reports are quiet up to this window (the rule's ban length after the last report).
    quiet_until: i64,
}

/// What [`KeyWindows::evaluate`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// The first window overflowing outside the quiet span, if any.
    pub overflow: Option<i64>,
    /// The excess after the last window.
    pub excess: u64,
    /// The largest window total read.
    pub peak: u64,
    /// Requests counted since tracking began.
    pub requests: u64,
}

impl KeyWindows {
    /// A key first seen with windows after `base` (nothing known before).
    pub fn new(base: i64) -> KeyWindows {
        KeyWindows {
            base,
            base_excess: 0,
            base_requests: 0,
            totals: VecDeque::new(),
            quiet_until: i64::MIN,
        }
    }

    /// Takes the fleet's total of `window` as read; an older or lower total than the one known
    /// is kept as known (counts never go down, so a lower reply is a window that expired).
    pub fn set_total(&mut self, window: i64, total: u64) {
        let Some(i) = window
            .checked_sub(self.base + 1)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        if i >= self.totals.len() {
            self.totals.resize(i + 1, 0);
        }
        self.totals[i] = self.totals[i].max(total);
    }

    /// Folds the windows up to `upto` into the base: their totals are final from now on.
    pub fn settle(&mut self, upto: i64, lim: WindowLimits) {
        while self.base < upto {
            let n = self.totals.pop_front().unwrap_or(0);
            self.base_excess = step(self.base_excess, n, lim).0;
            self.base_requests = self.base_requests.saturating_add(n);
            self.base += 1;
        }
    }

    /// Steps the bucket from the base through the windows up to `upto`; an overflow outside
    /// the quiet span starts one of `quiet_windows`.
    pub fn evaluate(&mut self, upto: i64, lim: WindowLimits, quiet_windows: i64) -> Evaluation {
        let mut excess = self.base_excess;
        let mut overflow = None;
        let mut peak = 0;
        let mut requests = self.base_requests;
        for w in self.base + 1..=upto {
            let i = usize::try_from(w - self.base - 1).unwrap_or(usize::MAX);
            let n = self.totals.get(i).copied().unwrap_or(0);
            peak = peak.max(n);
            requests = requests.saturating_add(n);
            let (after, over) = step(excess, n, lim);
            excess = after;
            if over && overflow.is_none() && w >= self.quiet_until {
                overflow = Some(w);
            }
        }
        if let Some(w) = overflow {
            self.quiet_until = w.saturating_add(quiet_windows.max(1));
        }
        Evaluation {
            overflow,
            excess,
            peak,
            requests,
        }
    }

    /// Whether nothing is left to count: the base drained and no window total read.
    pub fn is_idle(&self) -> bool {
        self.base_excess == 0 && self.totals.iter().all(|&n| n == 0)
    }

    pub fn base(&self) -> i64 {
        self.base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: WindowLimits = WindowLimits {
        // 30r/s over 200 ms windows: 6 requests drained per window.
        drain: 6000,
        burst: 10_000,
    };

    #[test]
    fn a_key_within_the_rate_stays_empty_and_one_above_overflows() {
        let mut k = KeyWindows::new(0);
        for w in 1..=50 {
            k.set_total(w, 5);
        }
        let e = k.evaluate(50, LIM, 10);
        assert_eq!((e.overflow, e.excess, e.requests), (None, 0, 250));
        let mut k = KeyWindows::new(0);
        for w in 1..=50 {
            k.set_total(w, 9);
        }
        // +3000 per window: 9000 after 3, 12000 > 10000 at the 4th.
        assert_eq!(k.evaluate(50, LIM, 10).overflow, Some(4));
    }

    #[test]
    fn a_late_count_changes_the_past_window_and_a_report_stays_quiet() {
        let mut k = KeyWindows::new(0);
        k.set_total(1, 8);
        assert_eq!(k.evaluate(2, LIM, 10).overflow, None);
        // Another server's share of window 1 arrives later.
        k.set_total(1, 17);
        let e = k.evaluate(2, LIM, 10);
        assert_eq!(e.overflow, Some(1));
        // Within the quiet span: no second report.
        k.set_total(2, 30);
        assert_eq!(k.evaluate(3, LIM, 10).overflow, None);
        // A lower reply (an expired hash) does not take counts back.
        k.set_total(2, 0);
        k.settle(2, LIM);
        assert_eq!(k.base(), 2);
        assert!(!k.is_idle());
        k.settle(10, LIM);
        assert!(k.is_idle());
    }

    #[test]
    fn windows_before_the_base_are_ignored() {
        let mut k = KeyWindows::new(5);
        k.set_total(3, 100);
        k.set_total(5, 100);
        assert_eq!(k.evaluate(8, LIM, 1).overflow, None);
    }
}
