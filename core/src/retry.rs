//! Retry decisions: which failures may be retried, the backoff between attempts, and
//! the budget that keeps retries a bounded share of the traffic.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use http::Method;

use crate::config::RetryConfig;

/// Retries as a bounded share of requests: every request deposits `budget_percent`
/// hundredths of a token, every retry withdraws one, and `min_retries_per_second`
/// tokens accrue with time. With the default 20%, an upstream failing every request
/// receives at most 1.2 times the client traffic plus `min_retries_per_second`, never
/// `max_retries + 1` times the traffic.
#[derive(Debug)]
pub struct RetryBudget {
    /// Balance in hundredths of a retry.
    balance: AtomicI64,
    /// Monotonic milliseconds of the last time-based deposit.
    refilled_at_ms: AtomicU64,
    deposit_per_request: i64,
    per_second: i64,
    cap: i64,
}

impl RetryBudget {
    /// Creates a budget that starts with one second's worth of minimum retries.
    pub fn new(config: &RetryConfig) -> Self {
        let per_second = i64::from(config.min_retries_per_second) * 100;
        // Savings are capped at ten seconds of minimum retries, so a long quiet period
        // cannot fund a retry storm.
        let cap = (per_second * 10).max(100);
        Self {
            balance: AtomicI64::new(per_second.min(cap)),
            refilled_at_ms: AtomicU64::new(0),
            deposit_per_request: i64::from(config.budget_percent.min(100)),
            per_second,
            cap,
        }
    }

    /// Records a new request at monotonic time `now`.
    pub fn deposit(&self, now: Duration) {
        self.refill(now);
        self.add(self.deposit_per_request);
    }

    /// Takes one retry from the budget, or returns false when it is spent.
    pub fn withdraw(&self, now: Duration) -> bool {
        self.refill(now);
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                (balance >= 100).then_some(balance - 100)
            })
            .is_ok()
    }

    fn refill(&self, now: Duration) {
        let now_ms = now.as_millis() as u64;
        let last = self.refilled_at_ms.load(Ordering::Relaxed);
        let elapsed_ms = now_ms.saturating_sub(last);
        // Whole hundredths only; the remainder waits for the next call.
        let earned = (elapsed_ms as i64).saturating_mul(self.per_second) / 1000;
        if earned > 0
            && self
                .refilled_at_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.add(earned);
        }
    }

    fn add(&self, amount: i64) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                Some(balance.saturating_add(amount).min(self.cap))
            });
    }
}

/// Returns whether `method` is idempotent (RFC 9110, section 9.2.2), so that sending
/// it twice has the same effect as once.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Returns the wait before retry number `retry` (1 for the first retry): exponential
/// from `base`, capped at `max`, with "equal jitter" (half fixed, half random) so that
/// clients that failed together do not retry together.
pub fn backoff(base: Duration, max: Duration, retry: u32, random: u64) -> Duration {
    let exponential = base
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(max);
    let half = exponential / 2;
    let jitter_micros = half.as_micros() as u64;
    let jitter = if jitter_micros == 0 {
        Duration::ZERO
    } else {
        Duration::from_micros(random % (jitter_micros + 1))
    };
    half + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(percent: u32, per_second: u32) -> RetryBudget {
        RetryBudget::new(&RetryConfig {
            budget_percent: percent,
            min_retries_per_second: per_second,
            ..RetryConfig::default()
        })
    }

    #[test]
    fn budget_allows_share_of_requests() {
        let budget = budget(20, 0);
        let now = Duration::from_secs(1);
        let mut retries = 0;
        for _ in 0..1_000 {
            budget.deposit(now);
            if budget.withdraw(now) {
                retries += 1;
            }
        }
        // No time-based minimum, so exactly 20% of 1,000 requests.
        assert_eq!(retries, 200);
    }

    #[test]
    fn minimum_accrues_with_time() {
        let budget = budget(0, 10);
        let start = Duration::from_secs(100);
        let mut retries = 0;
        while budget.withdraw(start) {
            retries += 1;
        }
        // Ten seconds' worth saved from the start of the clock, at the cap.
        assert_eq!(retries, 100);
        assert!(!budget.withdraw(start + Duration::from_millis(50)));
        assert!(budget.withdraw(start + Duration::from_millis(100)));
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        let base = Duration::from_millis(20);
        let max = Duration::from_millis(100);
        assert_eq!(backoff(base, max, 1, 0), Duration::from_millis(10));
        assert_eq!(
            backoff(base, max, 1, u64::MAX),
            Duration::from_micros(10_000 + u64::MAX % 10_001)
        );
        assert_eq!(backoff(base, max, 2, 0), Duration::from_millis(20));
        assert_eq!(backoff(base, max, 9, 0), Duration::from_millis(50));
        for random in [0, 1, 12_345, u64::MAX] {
            let wait = backoff(base, max, 3, random);
            assert!(
                wait >= Duration::from_millis(40) && wait <= Duration::from_millis(80),
                "{wait:?}"
            );
        }
    }

    #[test]
    fn idempotent_methods() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
