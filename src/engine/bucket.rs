//! One (key, rule) bucket: nginx `limit_req`'s per-key state and its step, in 20 bytes.
//!
//! The arithmetic is nginx's own (`ngx_http_limit_req_lookup`), in milli-requests and
//! milliseconds: on a request `ms` after the last accepted one,
//! `excess = max(0, excess - rate * ms / 1000 + 1000)`; the request overflows when
//! `excess > burst * 1000`, and then the state is left as it was. Note the order: the decay and the
//! new request's 1000 are summed *before* the floor at 0, so a key that keeps to the rate stays
//! at 0 and `burst = 0` lets requests through that are at least `1/rate` apart, as nginx does.
//!
//! A key's *tracking period* (what `first_seen` and the request count cover) ends when the key is
//! **idle**: its next request would store `excess = 0` anyway (the decay covers `excess + 1000`)
//! and no report suppression is running. An idle bucket then behaves exactly like an absent one
//! (a key's first request also stores 0), so shards may drop idle buckets whenever they like
//! without changing any decision: eviction is invisible in the output.
//!
//! Times are `u32` milliseconds since the owning shard's epoch ([`Ms`]), which keeps a map entry
//! at 40 bytes; the shard moves its epoch forward (see [`Bucket::rebase`]) long before an offset
//! could overflow.

use crate::engine::RuleSpec;

/// Log time as a shard stores it: milliseconds since the shard's epoch.
pub type Ms = u32;

/// The largest `burst` whose milli-requests fit a bucket's `u32` excess.
pub const MAX_BURST: u32 = u32::MAX / 1000 - 1;

/// A rule's numbers, as the step function wants them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Milli-requests per second.
    pub rate: u64,
    /// Burst in milli-requests (`burst * 1000`).
    pub burst: u64,
    /// How long further reports are suppressed after one: the rule's ban length, capped to what
    /// an [`Ms`] offset can hold (a longer suppression only ends early, costing one more report).
    pub quiet_ms: Ms,
}

impl Limits {
    pub fn new(spec: &RuleSpec) -> Limits {
        Limits {
            rate: spec.rate.milli_per_sec,
            burst: u64::from(spec.burst.min(MAX_BURST)) * 1000,
            quiet_ms: spec.ban_ms.min(u64::from(u32::MAX / 2)) as Ms,
        }
    }
}

/// What one request did to its bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Accepted (nginx would have served it).
    Passed,
    /// Overflowed: report it as an offense.
    Report,
    /// Overflowed while reports for this bucket are suppressed.
    Suppressed,
}

/// The state of one key under one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Time of the last accepted request.
    last: Ms,
    /// Milli-requests; never above the rule's burst (≤ [`MAX_BURST`] * 1000).
    excess: u32,
    /// Start of the current tracking period.
    first_seen: Ms,
    /// Requests since `first_seen`, overflowing ones included (saturating).
    count: u32,
    /// Reports are suppressed while `t < quiet_until`; 0 when no suppression ever started.
    quiet_until: Ms,
}

impl Bucket {
    /// The state after a key's first request.
    #[inline]
    pub fn new(t: Ms) -> Bucket {
        Bucket {
            last: t,
            excess: 0,
            first_seen: t,
            count: 1,
            quiet_until: 0,
        }
    }

    /// One request at time `t`. A `t` earlier than the last accepted request (a key whose own
    /// lines came out of order) counts at that last time: no time elapsed, as nginx clamps it,
    /// and the bucket's clock does not go back.
    #[inline]
    pub fn step(&mut self, t: Ms, lim: &Limits) -> Step {
        let drained = self.drained(t, lim.rate);
        let quiet = t < self.quiet_until;
        if !quiet && drained >= u64::from(self.excess) + 1000 {
            // Idle: the same as a new key, and the start of a new tracking period.
            *self = Bucket::new(t);
            return Step::Passed;
        }
        self.count = self.count.saturating_add(1);
        let excess = (u64::from(self.excess) + 1000).saturating_sub(drained);
        if excess > lim.burst {
            if quiet {
                return Step::Suppressed;
            }
            self.quiet_until = t.saturating_add(lim.quiet_ms);
            return Step::Report;
        }
        // `excess <= burst <= u32::MAX` (see `MAX_BURST`).
        self.excess = excess as u32;
        self.last = self.last.max(t);
        Step::Passed
    }

    /// Milli-requests drained since the last accepted request.
    #[inline]
    fn drained(&self, t: Ms, rate: u64) -> u64 {
        // Saturation is harmless: a saturated drain exceeds any excess, as the true one would.
        rate.saturating_mul(u64::from(t.saturating_sub(self.last))) / 1000
    }

    /// Whether a request at `t` would store `excess = 0` (the bucket has fully drained).
    #[inline]
    pub fn recovered(&self, t: Ms, rate: u64) -> bool {
        self.drained(t, rate) >= u64::from(self.excess) + 1000
    }

    /// The level at `t`: the excess left after the drain since the last accepted request,
    /// in milli-requests (what `top` shows against the burst).
    #[inline]
    pub fn level(&self, t: Ms, rate: u64) -> u64 {
        u64::from(self.excess).saturating_sub(self.drained(t, rate))
    }

    /// Whether reports are suppressed at `t`.
    #[inline]
    pub fn quiet(&self, t: Ms) -> bool {
        t < self.quiet_until
    }

    /// Recovered and not suppressed: the bucket is equivalent to no bucket and may be dropped.
    #[inline]
    pub fn idle(&self, t: Ms, lim: &Limits) -> bool {
        !self.quiet(t) && self.recovered(t, lim.rate)
    }

    pub fn first_seen(&self) -> Ms {
        self.first_seen
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Re-expresses the times relative to an epoch `delta` ms later.
    ///
    /// Times before the new epoch are clamped to it. That is exact for a bucket that has drained
    /// (it stays drained: the shard keeps ≥ 24 days between the new epoch and now). An undrained
    /// bucket that old (a rule that needs weeks to drain its burst) is first drained up to the new
    /// epoch, which can round by one milli-request. A tracking period older than the new epoch
    /// reports the epoch as its `first_seen`; a suppression that ended before it is forgotten.
    pub fn rebase(&mut self, delta: u64, rate: u64) {
        let shift = |t: Ms| u64::from(t).saturating_sub(delta) as Ms;
        if u64::from(self.last) < delta {
            let drained = rate.saturating_mul(delta - u64::from(self.last)) / 1000;
            self.excess = u64::from(self.excess).saturating_sub(drained) as u32;
        }
        self.last = shift(self.last);
        self.first_seen = shift(self.first_seen);
        self.quiet_until = shift(self.quiet_until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn lim(rate: u64, burst: u64, quiet_ms: Ms) -> Limits {
        Limits {
            rate,
            burst: burst * 1000,
            quiet_ms,
        }
    }

    #[test]
    fn bucket_is_twenty_bytes() {
        assert_eq!(std::mem::size_of::<Bucket>(), 20);
        assert_eq!(std::mem::align_of::<Bucket>(), 4);
    }

    #[test]
    fn burst_requests_pass_then_overflow() {
        // 1r/s, burst 2: the first request stores 0, the next two add 1000 each, the fourth
        // (at the same instant) would make 3000 > 2000.
        let l = lim(1000, 2, 0);
        let mut b = Bucket::new(0);
        assert_eq!(b.step(0, &l), Step::Passed);
        assert_eq!(b.step(0, &l), Step::Passed);
        assert_eq!(b.excess, 2000);
        assert_eq!(b.step(0, &l), Step::Report);
        assert_eq!(b.excess, 2000, "an overflow leaves the state alone");
        assert_eq!(b.count(), 4, "overflowing requests are counted");
        // One second drains one request's worth: 2000 - 1000 + 1000 fits again.
        assert_eq!(b.step(1000, &l), Step::Passed);
        assert_eq!(b.excess, 2000);
    }

    #[test]
    fn decay_and_floor_follow_nginx_order() {
        // 2r/s, burst 0: requests 500 ms apart are fine (0 - 1000 + 1000 = 0), closer ones are not.
        let l = lim(2000, 0, 0);
        let mut b = Bucket::new(0);
        assert_eq!(b.step(500, &l), Step::Passed);
        assert_eq!(b.excess, 0);
        assert_eq!(b.step(999, &l), Step::Report); // 0 - 998 + 1000 = 2 > 0
                                                   // Integer division as nginx: 2000 * 1 / 1000 = 2 drained in 1 ms.
        let mut b = Bucket {
            last: 0,
            excess: 5000,
            first_seen: 0,
            count: 3,
            quiet_until: 0,
        };
        let l = lim(2000, 10, 0);
        assert_eq!(b.step(1, &l), Step::Passed);
        assert_eq!(b.excess, 5000 - 2 + 1000);
        let l = lim(1500, 10, 0);
        let mut c = Bucket { excess: 0, ..b };
        c.last = 0;
        assert_eq!(c.step(1, &l), Step::Passed);
        assert_eq!(c.excess, 1000 - 1, "1500 * 1 / 1000 rounds down to 1");
    }

    #[test]
    fn idle_bucket_restarts_tracking_period() {
        let l = lim(1000, 5, 0);
        let mut b = Bucket::new(100);
        b.step(100, &l);
        b.step(100, &l);
        assert_eq!(b.excess, 2000);
        assert!(!b.recovered(2999, l.rate));
        assert!(b.recovered(3100, l.rate), "3 s drain 2000 + 1000");
        assert_eq!(b.step(2999, &l), Step::Passed);
        assert_eq!((b.first_seen(), b.count()), (100, 4));
        assert!(b.idle(2999 + 2000, &l));
        assert_eq!(b.step(2999 + 2000, &l), Step::Passed);
        assert_eq!(b, Bucket::new(4999));
    }

    #[test]
    fn reports_are_suppressed_for_the_ban_length() {
        let l = lim(1000, 0, 10_000);
        let mut b = Bucket::new(0);
        assert_eq!(b.step(0, &l), Step::Report);
        assert_eq!(b.step(5, &l), Step::Suppressed);
        assert!(b.recovered(1000, l.rate));
        assert!(!b.idle(1000, &l), "suppression keeps the bucket");
        // Drained but suppressed: a normal step, the tracking period goes on.
        assert_eq!(b.step(1000, &l), Step::Passed);
        assert_eq!(b.count(), 4);
        assert_eq!(b.step(1001, &l), Step::Suppressed);
        assert_eq!(b.step(9_999, &l), Step::Passed);
        assert_eq!(b.step(10_000, &l), Step::Report, "suppression is over");
        assert_eq!(b.quiet_until, 20_000);
        // Without a ban length nothing is suppressed.
        let l0 = lim(1000, 0, 0);
        let mut c = Bucket::new(0);
        assert_eq!(c.step(0, &l0), Step::Report);
        assert_eq!(c.step(0, &l0), Step::Report);
    }

    #[test]
    fn huge_rates_and_gaps_saturate_instead_of_wrapping() {
        let l = lim(u64::MAX, 1, 0);
        let mut b = Bucket::new(0);
        b.step(0, &l);
        assert_eq!(b.step(u32::MAX, &l), Step::Passed);
        assert_eq!(b.first_seen(), u32::MAX, "drained: new period");
        let zero = lim(0, 1, u32::MAX);
        let mut c = Bucket::new(u32::MAX - 1);
        c.step(u32::MAX - 1, &zero);
        assert_eq!(c.step(u32::MAX, &zero), Step::Report);
        assert_eq!(c.quiet_until, u32::MAX);
        let mut d = Bucket::new(5);
        assert_eq!(
            d.step(1, &l),
            Step::Passed,
            "an earlier time counts as no time"
        );
    }

    #[test]
    fn rebase_shifts_times_and_keeps_drained_state_drained() {
        let l = lim(1000, 5, 60_000);
        let mut b = Bucket::new(1_000_000);
        b.step(1_000_000, &l);
        b.step(1_000_500, &l);
        let before = b;
        b.rebase(400_000, l.rate);
        assert_eq!(b.last, before.last - 400_000);
        assert_eq!(b.first_seen, before.first_seen - 400_000);
        assert_eq!(b.excess, before.excess);
        // Older than the new epoch: drained up to it, times clamped.
        let mut c = Bucket {
            last: 1000,
            excess: 4000,
            first_seen: 500,
            count: 9,
            quiet_until: 2000,
        };
        c.rebase(3000, l.rate); // 2 s drain 2000
        assert_eq!(c.excess, 2000);
        assert_eq!((c.last, c.first_seen, c.quiet_until), (0, 0, 0));
        let mut d = Bucket { excess: 1000, ..c };
        d.last = 0;
        d.rebase(u64::MAX, l.rate);
        assert_eq!((d.excess, d.last), (0, 0));
        assert!(d.recovered(1 << 31, l.rate));
    }

    #[test]
    fn limits_cap_burst_and_quiet() {
        let spec = crate::engine::rule::tests::spec("x", 20_000, u32::MAX);
        let l = Limits::new(&RuleSpec {
            ban_ms: u64::MAX,
            ..spec
        });
        assert_eq!(l.burst, u64::from(MAX_BURST) * 1000);
        assert!(l.burst + 1000 <= u64::from(u32::MAX));
        assert_eq!(l.quiet_ms, u32::MAX / 2);
        assert_eq!(l.rate, 20_000);
    }
}
