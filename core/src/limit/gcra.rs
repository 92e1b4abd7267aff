//! The generic cell rate algorithm (GCRA): a rolling rate limit with a burst, kept as
//! one timestamp per key.
//!
//! A limit of `limit` requests per `period` admits one request every
//! `emission = period / limit` on average. The state is the theoretical arrival time
//! (TAT): when the key's budget would be fully refilled. A request of cost `n` is
//! admitted when, after adding `n * emission` to the TAT, the TAT lies no further than
//! `burst * emission` ahead of now. No refill process runs; time alone refills.
//!
//! Times are integer microseconds, so the arithmetic is exact and the same on every
//! target and in every store (the Redis script repeats it with the server's clock).

use std::time::Duration;

/// A GCRA limit: `limit` requests per `period`, with bursts of up to `burst` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraLimit {
    emission_micros: u64,
    tolerance_micros: u64,
    limit: u64,
    period: Duration,
    burst: u64,
}

impl GcraLimit {
    /// Creates a limit, or returns `None` when `limit`, `burst` or `period` is zero,
    /// when the rate exceeds one request per microsecond, or when the period is too
    /// long to count in microseconds.
    pub fn new(limit: u64, period: Duration, burst: u64) -> Option<Self> {
        if limit == 0 || burst == 0 {
            return None;
        }
        let period_micros = u64::try_from(period.as_micros()).ok()?;
        // Below one request per microsecond the interval cannot be represented.
        if period_micros < limit {
            return None;
        }
        // Rounding the interval up keeps the admitted rate at or below the limit.
        let emission_micros = period_micros.div_ceil(limit);
        let tolerance_micros = emission_micros.checked_mul(burst)?;
        Some(Self {
            emission_micros,
            tolerance_micros,
            limit,
            period,
            burst,
        })
    }

    /// Returns the number of requests allowed per period.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Returns the period of the limit.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Returns the largest number of requests admitted at once.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Returns the interval between requests at the sustained rate, in microseconds.
    pub fn emission_micros(&self) -> u64 {
        self.emission_micros
    }

    /// Returns how far the TAT may run ahead of now, in microseconds
    /// (`burst * emission`).
    pub fn tolerance_micros(&self) -> u64 {
        self.tolerance_micros
    }

    /// Decides a request of `cost` units at `now_micros` for a key whose stored TAT is
    /// `tat_micros` (0 for a key never seen). Returns the decision and the TAT to
    /// store, which is unchanged when the request is rejected.
    pub fn decide(&self, tat_micros: u64, now_micros: u64, cost: u64) -> (Decision, u64) {
        let tat = tat_micros.max(now_micros);
        let increment = self.emission_micros.saturating_mul(cost);
        let new_tat = tat.saturating_add(increment);
        let allow_at = new_tat.saturating_sub(self.tolerance_micros);

        if now_micros < allow_at || cost > self.burst {
            let retry_after = if cost > self.burst {
                // Such a request can never pass: report the full refill time.
                Duration::from_micros(self.tolerance_micros)
            } else {
                Duration::from_micros(allow_at - now_micros)
            };
            let decision = Decision {
                allowed: false,
                remaining: self.remaining(tat, now_micros),
                retry_after,
                reset_after: Duration::from_micros(tat - now_micros),
            };
            return (decision, tat_micros);
        }

        let decision = Decision {
            allowed: true,
            remaining: self.remaining(new_tat, now_micros),
            retry_after: Duration::ZERO,
            reset_after: Duration::from_micros(new_tat - now_micros),
        };
        (decision, new_tat)
    }

    /// Returns the whole requests still admitted at once when the TAT is `tat`.
    fn remaining(&self, tat: u64, now_micros: u64) -> u64 {
        let used = tat.saturating_sub(now_micros);
        self.tolerance_micros.saturating_sub(used) / self.emission_micros
    }
}

/// The outcome of one rate-limit decision, with what the `RateLimit` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Requests still admitted right now, after this one.
    pub remaining: u64,
    /// Time until a rejected request of the same cost would be admitted; zero when
    /// admitted.
    pub retry_after: Duration,
    /// Time until the full burst is available again.
    pub reset_after: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    fn limit(per_second: u64, burst: u64) -> GcraLimit {
        GcraLimit::new(per_second, Duration::from_secs(1), burst).unwrap()
    }

    /// Sends `count` requests of cost 1 at `now`, returning how many were admitted.
    fn admit_many(limit: &GcraLimit, tat: &mut u64, now: u64, count: u64) -> u64 {
        let mut admitted = 0;
        for _ in 0..count {
            let (decision, new_tat) = limit.decide(*tat, now, 1);
            *tat = new_tat;
            admitted += u64::from(decision.allowed);
        }
        admitted
    }

    #[test]
    fn burst_admitted_at_once() {
        let limit = limit(10, 5);
        let mut tat = 0;
        assert_eq!(admit_many(&limit, &mut tat, SECOND, 8), 5);
    }

    #[test]
    fn refills_at_the_rate() {
        let limit = limit(10, 5);
        let mut tat = 0;
        admit_many(&limit, &mut tat, SECOND, 5);
        // One emission interval (100 ms) later, exactly one more request passes.
        assert_eq!(admit_many(&limit, &mut tat, SECOND + 100_000, 3), 1);
        // Just before the next interval, none.
        assert_eq!(admit_many(&limit, &mut tat, SECOND + 199_999, 1), 0);
        assert_eq!(admit_many(&limit, &mut tat, SECOND + 200_000, 1), 1);
    }

    #[test]
    fn sustained_rate_never_exceeds_limit() {
        let limit = limit(100, 10);
        let mut tat = 0;
        let mut admitted = 0;
        // Offer 1,000 requests per second for 10 seconds, one every millisecond.
        for millisecond in 0..10_000 {
            admitted += admit_many(&limit, &mut tat, millisecond * 1_000, 1);
        }
        // n requests fit in [0, 9.999 s] when n * 10 ms <= 9.999 s + the 100 ms burst
        // tolerance, so n = 1009: the rate times the span plus the burst, rounded down.
        assert_eq!(admitted, 1_009);
    }

    #[test]
    fn retry_after_is_exact() {
        let limit = limit(10, 1);
        let (first, tat) = limit.decide(0, SECOND, 1);
        assert!(first.allowed);
        let (second, unchanged) = limit.decide(tat, SECOND + 30_000, 1);
        assert!(!second.allowed);
        assert_eq!(unchanged, tat, "a rejection must not consume budget");
        assert_eq!(second.retry_after, Duration::from_millis(70));
    }

    #[test]
    fn remaining_counts_down() {
        let limit = limit(10, 3);
        let mut tat = 0;
        let mut remaining = Vec::new();
        for _ in 0..4 {
            let (decision, new_tat) = limit.decide(tat, SECOND, 1);
            tat = new_tat;
            remaining.push((decision.allowed, decision.remaining));
        }
        assert_eq!(remaining, [(true, 2), (true, 1), (true, 0), (false, 0)]);
    }

    #[test]
    fn cost_counts_as_several_requests() {
        let limit = limit(10, 10);
        let (decision, tat) = limit.decide(0, SECOND, 4);
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 6);
        let (decision, _) = limit.decide(tat, SECOND, 7);
        assert!(!decision.allowed);
    }

    #[test]
    fn cost_above_burst_never_passes() {
        let limit = limit(10, 5);
        let (decision, tat) = limit.decide(0, SECOND, 6);
        assert!(!decision.allowed);
        assert_eq!(tat, 0);
        assert_eq!(decision.retry_after, Duration::from_millis(500));
    }

    #[test]
    fn invalid_limits_rejected() {
        assert!(GcraLimit::new(0, Duration::from_secs(1), 1).is_none());
        assert!(GcraLimit::new(1, Duration::from_secs(1), 0).is_none());
        assert!(GcraLimit::new(1, Duration::ZERO, 1).is_none());
        assert!(GcraLimit::new(2_000_000, Duration::from_secs(1), 1).is_none());
    }

    #[test]
    fn clock_far_ahead_of_stale_tat() {
        let limit = limit(1, 1);
        let (decision, tat) = limit.decide(5, u64::MAX - 10, 1);
        assert!(decision.allowed);
        assert!(tat >= u64::MAX - 10);
    }
}
