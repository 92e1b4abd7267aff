//! Passive health: outlier detection from the outcomes of live requests.
//!
//! An endpoint that fails `consecutive_failures` times in a row is ejected: balancers
//! skip it until its ejection time passes. Each repeated ejection doubles that time, up
//! to a maximum. A success after an ejection halves the count of ejections, so an
//! endpoint that recovered is trusted back step by step. At most `max_ejected_percent` of the
//! endpoints are ejected at once. State lives in atomics, so the request path takes no
//! lock, and it is per process (per isolate on the edge).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::OutlierConfig;

#[derive(Debug, Default)]
struct EndpointHealth {
    consecutive_failures: AtomicU32,
    /// Monotonic milliseconds until which the endpoint is ejected; 0 when it is not.
    ejected_until_ms: AtomicU64,
    ejections: AtomicU32,
}

/// The outcome of one attempt, as far as endpoint health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint responded with a status that is not a gateway failure.
    Success,
    /// Connect failure, reset, timeout, or a 502, 503 or 504 response.
    Failure,
}

/// Outlier detection state of one upstream's endpoints.
#[derive(Debug)]
pub struct OutlierDetector {
    /// Per-endpoint state, each shareable with the next config's detector while its
    /// endpoint stays.
    endpoints: Vec<Arc<EndpointHealth>>,
    threshold: u32,
    base_ejection_ms: u64,
    max_ejection_ms: u64,
    max_ejected: usize,
    panic_below: usize,
}

impl OutlierDetector {
    /// Creates the state for `count` endpoints, all healthy.
    pub fn new(count: usize, config: &OutlierConfig) -> Self {
        let percent_of = |percent: u32| count * percent.min(100) as usize / 100;
        Self {
            endpoints: (0..count).map(|_| Arc::default()).collect(),
            threshold: config.consecutive_failures,
            base_ejection_ms: config.base_ejection.get().as_millis() as u64,
            max_ejection_ms: config.max_ejection.get().as_millis() as u64,
            max_ejected: percent_of(config.max_ejected_percent),
            panic_below: (count * config.panic_threshold_percent.min(100) as usize).div_ceil(100),
        }
    }

    /// Returns whether endpoint `index` is ejected at monotonic time `now`.
    pub fn is_ejected(&self, index: usize, now: Duration) -> bool {
        let now_ms = now.as_millis() as u64;
        self.endpoints
            .get(index)
            .is_some_and(|endpoint| endpoint.ejected_until_ms.load(Ordering::Relaxed) > now_ms)
    }

    /// Returns whether too few endpoints are healthy for health to matter (the panic
    /// threshold), in which case every endpoint should be eligible.
    pub fn in_panic(&self, now: Duration) -> bool {
        let healthy = (0..self.endpoints.len())
            .filter(|index| !self.is_ejected(*index, now))
            .count();
        healthy < self.panic_below
    }

    /// Makes endpoint `index` share the state of endpoint `old_index` of `old`, for an
    /// endpoint that stayed when the endpoint list changed. Out-of-range indexes are
    /// ignored.
    pub fn share_endpoint(&mut self, index: usize, old: &OutlierDetector, old_index: usize) {
        if let (Some(slot), Some(state)) =
            (self.endpoints.get_mut(index), old.endpoints.get(old_index))
        {
            *slot = Arc::clone(state);
        }
    }

    /// Returns the number of healthy endpoints below which health is ignored.
    pub fn panic_below(&self) -> usize {
        self.panic_below
    }

    /// Records the outcome of an attempt to endpoint `index` at monotonic time `now`.
    /// Returns the ejection time when this outcome ejected the endpoint, for logging.
    pub fn record(&self, index: usize, outcome: Outcome, now: Duration) -> Option<Duration> {
        let endpoint = self.endpoints.get(index)?;
        match outcome {
            Outcome::Success => {
                endpoint.consecutive_failures.store(0, Ordering::Relaxed);
                let _ = endpoint.ejections.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |count| Some(count / 2),
                );
                None
            }
            Outcome::Failure => {
                let failures = endpoint
                    .consecutive_failures
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if self.threshold == 0 || failures < self.threshold {
                    return None;
                }
                self.eject(index, endpoint, now)
            }
        }
    }

    fn eject(&self, index: usize, endpoint: &EndpointHealth, now: Duration) -> Option<Duration> {
        let now_ms = now.as_millis() as u64;
        let ejected_now = (0..self.endpoints.len())
            .filter(|other| *other != index && self.is_ejected(*other, now))
            .count();
        if ejected_now >= self.max_ejected {
            return None;
        }
        endpoint.consecutive_failures.store(0, Ordering::Relaxed);
        let ejections = endpoint.ejections.fetch_add(1, Ordering::Relaxed);
        let multiplier = 1_u64 << ejections.min(20);
        let ejection_ms = self
            .base_ejection_ms
            .saturating_mul(multiplier)
            .min(self.max_ejection_ms);
        endpoint
            .ejected_until_ms
            .store(now_ms.saturating_add(ejection_ms), Ordering::Relaxed);
        Some(Duration::from_millis(ejection_ms))
    }
}

/// The verdict of active health checks on one endpoint, written by the runtime that
/// runs the checks and read by every request without a lock.
///
/// An endpoint counts as healthy until checks prove otherwise, so that starting the
/// gateway or adding an endpoint does not wait for a first round of checks.
#[derive(Debug, Default)]
pub struct ActiveStatus {
    unhealthy: AtomicBool,
    checked: AtomicBool,
}

impl ActiveStatus {
    /// Returns whether the last verdict was unhealthy.
    pub fn is_unhealthy(&self) -> bool {
        self.unhealthy.load(Ordering::Relaxed)
    }

    /// Returns whether any verdict was recorded yet.
    pub fn is_checked(&self) -> bool {
        self.checked.load(Ordering::Relaxed)
    }

    /// Records a verdict. Returns whether it changed the endpoint's state.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.checked.store(true, Ordering::Relaxed);
        self.unhealthy.swap(!healthy, Ordering::Relaxed) == healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigDuration;

    fn detector(count: usize) -> OutlierDetector {
        OutlierDetector::new(
            count,
            &OutlierConfig {
                consecutive_failures: 3,
                base_ejection: ConfigDuration::from_millis(10_000),
                max_ejection: ConfigDuration::from_millis(25_000),
                max_ejected_percent: 50,
                panic_threshold_percent: 50,
            },
        )
    }

    fn at(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    #[test]
    fn ejects_after_consecutive_failures() {
        let health = detector(4);
        assert_eq!(health.record(0, Outcome::Failure, at(1)), None);
        assert_eq!(health.record(0, Outcome::Failure, at(1)), None);
        assert_eq!(health.record(0, Outcome::Failure, at(1)), Some(at(10)));
        assert!(health.is_ejected(0, at(5)));
        assert!(!health.is_ejected(0, at(11)));
    }

    #[test]
    fn success_resets_the_count() {
        let health = detector(4);
        health.record(0, Outcome::Failure, at(1));
        health.record(0, Outcome::Failure, at(1));
        health.record(0, Outcome::Success, at(1));
        assert_eq!(health.record(0, Outcome::Failure, at(1)), None);
        assert!(!health.is_ejected(0, at(1)));
    }

    #[test]
    fn repeated_ejection_backs_off_to_max() {
        let health = detector(4);
        let mut times = Vec::new();
        let mut now = 0;
        for _ in 0..3 {
            for _ in 0..3 {
                if let Some(time) = health.record(1, Outcome::Failure, at(now)) {
                    times.push(time);
                }
            }
            now += 100;
        }
        assert_eq!(times, [at(10), at(20), at(25)]);
    }

    #[test]
    fn at_most_half_ejected() {
        let health = detector(4);
        for index in 0..4 {
            for _ in 0..3 {
                health.record(index, Outcome::Failure, at(1));
            }
        }
        let ejected = (0..4)
            .filter(|index| health.is_ejected(*index, at(2)))
            .count();
        assert_eq!(ejected, 2);
    }

    #[test]
    fn panic_when_too_few_healthy() {
        let health = detector(3);
        assert!(!health.in_panic(at(1)));
        for _ in 0..3 {
            health.record(0, Outcome::Failure, at(1));
        }
        // 2 of 3 healthy is above the 50% threshold.
        assert!(!health.in_panic(at(2)));
        let lone = detector(1);
        for _ in 0..3 {
            lone.record(0, Outcome::Failure, at(1));
        }
        // A single endpoint is never ejected: 0% may be ejected of 1 endpoint.
        assert!(!lone.is_ejected(0, at(2)));
    }

    #[test]
    fn shared_endpoint_keeps_ejection() {
        let old = detector(2);
        for _ in 0..3 {
            old.record(1, Outcome::Failure, at(1));
        }
        let mut new = detector(3);
        new.share_endpoint(0, &old, 1);
        assert!(new.is_ejected(0, at(2)));
        assert!(!new.is_ejected(1, at(2)));
        // Out of range on either side changes nothing.
        new.share_endpoint(5, &old, 0);
        new.share_endpoint(1, &old, 9);
        assert!(!new.is_ejected(1, at(2)));
    }

    #[test]
    fn disabled_when_threshold_zero() {
        let health = OutlierDetector::new(
            2,
            &OutlierConfig {
                consecutive_failures: 0,
                ..OutlierConfig::default()
            },
        );
        for _ in 0..100 {
            health.record(0, Outcome::Failure, at(1));
        }
        assert!(!health.is_ejected(0, at(1)));
    }
}
