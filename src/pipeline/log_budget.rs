//! How many events a second are written to the log one by one (see
//! [`crate::pipeline::output::Output::log_events`]): under a botnet, a log line per ban would
//! cost a write per ban and flood the journal (which drops lines past its own rate limit
//! anyway); past the budget, one line a second says how many were held back. The events
//! themselves (sinks, stdout) and `floodwatch bans` have every one.

/// Lines a second logged one by one.
pub const PER_SECOND: u32 = 100;

#[derive(Debug, Default)]
pub struct LogBudget {
    /// The wall-clock second being counted.
    second: i64,
    logged: u32,
    held_back: u64,
    /// The second of the last event held back.
    held_in: i64,
}

impl LogBudget {
    /// Whether an event at wall-clock `now_ms` is logged one by one.
    pub fn allow(&mut self, now_ms: i64) -> bool {
        let second = now_ms.div_euclid(1000);
        if second != self.second {
            self.second = second;
            self.logged = 0;
        }
        if self.logged < PER_SECOND {
            self.logged += 1;
            return true;
        }
        self.held_back += 1;
        self.held_in = second;
        false
    }

    /// Once the second of the last event held back is over, how many were held back (to log);
    /// taken once.
    pub fn report(&mut self, now_ms: i64) -> Option<u64> {
        if self.held_back == 0 || now_ms.div_euclid(1000) <= self.held_in {
            return None;
        }
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hundred_a_second_then_a_count_once_the_second_is_over() {
        let mut b = LogBudget::default();
        let allowed = (0..250).filter(|_| b.allow(5_100)).count();
        assert_eq!(allowed, 100);
        assert_eq!(b.report(5_999), None, "not before the second is over");
        assert_eq!(b.report(6_000), Some(150));
        assert_eq!(b.report(7_000), None, "said once");
        // A new second starts afresh, and what the last one held back is still reported.
        let mut b = LogBudget::default();
        (0..101).for_each(|_| {
            b.allow(1_000);
        });
        assert!(b.allow(2_000));
        assert_eq!(b.report(2_500), Some(1));
    }
}
