//! Circuit breakers: failing fast instead of sending requests to an endpoint or an
//! upstream that keeps failing.
//!
//! A [`Breaker`] is closed (requests pass), open (requests are rejected) or half-open
//! (a few probe requests pass). In half-open state, the first probe to succeed closes
//! the breaker and a failed probe opens it again. Endpoint breakers open after consecutive failures;
//! the upstream breaker opens when the share of failed attempts in a window reaches a
//! threshold. State lives in atomics, so the request path takes no lock.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::CircuitConfig;
use crate::health::Outcome;

/// The state of a breaker, as reported to metrics (`0`, `1`, `2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests pass.
    Closed = 0,
    /// Requests are rejected until the open time ends.
    Open = 1,
    /// A limited number of probe requests pass.
    HalfOpen = 2,
}

impl CircuitState {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }

    /// Returns the lowercase name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// The condition that opens a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// This many consecutive failures, where 0 never opens.
    Consecutive(u32),
    /// This percentage of failed attempts among at least `min_requests` attempts
    /// within a window of `window_ms`. A percentage of 0 never opens.
    FailureRate {
        /// Percentage of failed attempts.
        percent: u32,
        /// Attempts needed in the window before the percentage applies.
        min_requests: u32,
        /// Window length in milliseconds.
        window_ms: u64,
    },
}

impl Trip {
    fn disabled(self) -> bool {
        matches!(
            self,
            Self::Consecutive(0) | Self::FailureRate { percent: 0, .. }
        )
    }
}

/// Permission to send one request, returned by [`Breaker::admit`]. Pass it back to
/// [`Breaker::record`]. Dropping it unrecorded frees its probe slot.
#[derive(Debug)]
#[must_use = "a permit must be recorded or dropped"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.probes.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The reason a breaker rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The state that rejected the request: open, or half-open with every probe slot
    /// taken.
    pub state: CircuitState,
    /// Time until the breaker lets probes through, zero when half-open.
    pub retry_after: Duration,
}

/// One circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    trip: Trip,
    open_ms: u64,
    max_probes: u32,
    state: AtomicU8,
    /// Monotonic milliseconds when the breaker last opened.
    opened_at_ms: AtomicU64,
    consecutive: AtomicU32,
    window_start_ms: AtomicU64,
    window_attempts: AtomicU32,
    window_failures: AtomicU32,
    probes: AtomicU32,
    opened: AtomicU64,
}

impl Breaker {
    /// Creates a closed breaker.
    pub fn new(trip: Trip, open_duration: Duration, half_open_probes: u32) -> Self {
        Self {
            trip,
            open_ms: open_duration.as_millis() as u64,
            max_probes: half_open_probes.max(1),
            state: AtomicU8::new(CircuitState::Closed as u8),
            opened_at_ms: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            window_start_ms: AtomicU64::new(0),
            window_attempts: AtomicU32::new(0),
            window_failures: AtomicU32::new(0),
            probes: AtomicU32::new(0),
            opened: AtomicU64::new(0),
        }
    }

    /// Creates an endpoint breaker from an upstream's settings.
    pub fn for_endpoint(config: &CircuitConfig) -> Self {
        Self::new(
            Trip::Consecutive(config.consecutive_failures),
            config.open_duration.get(),
            config.half_open_probes,
        )
    }

    /// Creates the breaker of a whole upstream from its settings.
    pub fn for_upstream(config: &CircuitConfig) -> Self {
        Self::new(
            Trip::FailureRate {
                percent: config.failure_percent,
                min_requests: config.min_requests,
                window_ms: config.window.get().as_millis().max(1) as u64,
            },
            config.open_duration.get(),
            config.half_open_probes,
        )
    }

    /// Returns whether the breaker can ever open.
    pub fn enabled(&self) -> bool {
        !self.trip.disabled()
    }

    /// Returns the state at monotonic time `now`. An open breaker whose open time
    /// has passed reports half-open, which it becomes on its next admission.
    pub fn state(&self, now: Duration) -> CircuitState {
        match CircuitState::from_u8(self.state.load(Ordering::Relaxed)) {
            CircuitState::Open if self.open_time_over(now) => CircuitState::HalfOpen,
            state => state,
        }
    }

    /// Returns how many times the breaker has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Returns whether a request would be admitted at `now`, without taking a probe
    /// slot. Endpoint selection uses it to skip endpoints whose breaker rejects.
    pub fn would_admit(&self, now: Duration) -> bool {
        match self.state(now) {
            CircuitState::Closed => true,
            CircuitState::Open => false,
            CircuitState::HalfOpen => self.probes.load(Ordering::Relaxed) < self.max_probes,
        }
    }

    /// Admits a request at monotonic time `now`, or rejects it.
    pub fn admit(&self, now: Duration) -> Result<Permit<'_>, Rejection> {
        loop {
            let raw = self.state.load(Ordering::Relaxed);
            match CircuitState::from_u8(raw) {
                CircuitState::Closed => {
                    return Ok(Permit {
                        breaker: self,
                        probe: false,
                    });
                }
                CircuitState::Open => {
                    if !self.open_time_over(now) {
                        let until = self
                            .opened_at_ms
                            .load(Ordering::Relaxed)
                            .saturating_add(self.open_ms);
                        return Err(Rejection {
                            state: CircuitState::Open,
                            retry_after: Duration::from_millis(
                                until.saturating_sub(now.as_millis() as u64),
                            ),
                        });
                    }
                    // Whoever wins the swap moves the breaker to half-open; everyone
                    // then competes for the probe slots.
                    let _ = self.state.compare_exchange(
                        raw,
                        CircuitState::HalfOpen as u8,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                CircuitState::HalfOpen => {
                    let taken = self
                        .probes
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |probes| {
                            (probes < self.max_probes).then_some(probes + 1)
                        })
                        .is_ok();
                    return if taken {
                        Ok(Permit {
                            breaker: self,
                            probe: true,
                        })
                    } else {
                        Err(Rejection {
                            state: CircuitState::HalfOpen,
                            retry_after: Duration::ZERO,
                        })
                    };
                }
            }
        }
    }

    /// Records the outcome of the request `permit` admitted, at monotonic time `now`.
    /// Returns the new state when this outcome opened or closed the breaker.
    pub fn record(
        &self,
        permit: Permit<'_>,
        outcome: Outcome,
        now: Duration,
    ) -> Option<CircuitState> {
        let probe = permit.probe;
        drop(permit);
        if probe {
            return match outcome {
                Outcome::Success => {
                    self.consecutive.store(0, Ordering::Relaxed);
                    self.reset_window(now.as_millis() as u64);
                    self.transition(CircuitState::HalfOpen, CircuitState::Closed, now)
                }
                Outcome::Failure => {
                    self.transition(CircuitState::HalfOpen, CircuitState::Open, now)
                }
            };
        }
        self.observe(outcome, now)
    }

    /// Counts an outcome of a request that was admitted while closed.
    fn observe(&self, outcome: Outcome, now: Duration) -> Option<CircuitState> {
        let should_open = match self.trip {
            Trip::Consecutive(0) => false,
            Trip::Consecutive(threshold) => match outcome {
                Outcome::Success => {
                    self.consecutive.store(0, Ordering::Relaxed);
                    false
                }
                Outcome::Failure => {
                    self.consecutive.fetch_add(1, Ordering::Relaxed) + 1 >= threshold
                }
            },
            Trip::FailureRate { percent: 0, .. } => false,
            Trip::FailureRate {
                percent,
                min_requests,
                window_ms,
            } => {
                let now_ms = now.as_millis() as u64;
                let start = self.window_start_ms.load(Ordering::Relaxed);
                if now_ms.saturating_sub(start) >= window_ms
                    && self
                        .window_start_ms
                        .compare_exchange(start, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    self.window_attempts.store(0, Ordering::Relaxed);
                    self.window_failures.store(0, Ordering::Relaxed);
                }
                let attempts = self.window_attempts.fetch_add(1, Ordering::Relaxed) + 1;
                let failures = match outcome {
                    Outcome::Failure => self.window_failures.fetch_add(1, Ordering::Relaxed) + 1,
                    Outcome::Success => self.window_failures.load(Ordering::Relaxed),
                };
                outcome == Outcome::Failure
                    && attempts >= min_requests.max(1)
                    && u64::from(failures) * 100 >= u64::from(percent) * u64::from(attempts)
            }
        };
        if should_open {
            self.transition(CircuitState::Closed, CircuitState::Open, now)
        } else {
            None
        }
    }

    fn transition(
        &self,
        from: CircuitState,
        to: CircuitState,
        now: Duration,
    ) -> Option<CircuitState> {
        if to == CircuitState::Open {
            self.opened_at_ms
                .store(now.as_millis() as u64, Ordering::Relaxed);
        }
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        match to {
            CircuitState::Open => {
                self.opened.fetch_add(1, Ordering::Relaxed);
            }
            CircuitState::Closed => self.consecutive.store(0, Ordering::Relaxed),
            CircuitState::HalfOpen => {}
        }
        Some(to)
    }

    fn reset_window(&self, now_ms: u64) {
        self.window_start_ms.store(now_ms, Ordering::Relaxed);
        self.window_attempts.store(0, Ordering::Relaxed);
        self.window_failures.store(0, Ordering::Relaxed);
    }

    fn open_time_over(&self, now: Duration) -> bool {
        let opened = self.opened_at_ms.load(Ordering::Relaxed);
        now.as_millis() as u64 >= opened.saturating_add(self.open_ms)
    }
}

/// The limit on requests in flight to one upstream, with a bounded number of
/// requests waiting for a slot.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    slots: Option<async_lock::Semaphore>,
    max_requests: u32,
    max_pending: u32,
    pending: AtomicU32,
}

/// A request slot, held until the response head arrives; `None` inside when the
/// upstream has no limit.
#[derive(Debug)]
pub struct Slot<'a>(#[allow(dead_code)] Option<async_lock::SemaphoreGuard<'a>>);

/// Marks one request as waiting for a slot while it lives.
#[derive(Debug)]
pub struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConcurrencyLimit {
    /// Creates a limit of `max_requests` in flight (0 for none) and `max_pending`
    /// waiting.
    pub fn new(max_requests: u32, max_pending: u32) -> Self {
        Self {
            slots: (max_requests > 0).then(|| async_lock::Semaphore::new(max_requests as usize)),
            max_requests,
            max_pending,
            pending: AtomicU32::new(0),
        }
    }

    /// Returns the configured limits, `(max_requests, max_pending)`.
    pub fn limits(&self) -> (u32, u32) {
        (self.max_requests, self.max_pending)
    }

    /// Takes a free slot at once, if there is one or there is no limit.
    pub fn try_slot(&self) -> Option<Slot<'_>> {
        match &self.slots {
            None => Some(Slot(None)),
            Some(slots) => slots.try_acquire().map(|guard| Slot(Some(guard))),
        }
    }

    /// Joins the requests waiting for a slot, or returns `None` when `max_pending`
    /// requests are already waiting or there is no limit.
    pub fn wait(&self) -> Option<(Waiting<'_>, impl Future<Output = Slot<'_>> + Send)> {
        let slots = self.slots.as_ref()?;
        self.pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |pending| {
                (pending < self.max_pending).then_some(pending + 1)
            })
            .ok()?;
        let acquire = slots.acquire();
        Some((
            Waiting(&self.pending),
            async move { Slot(Some(acquire.await)) },
        ))
    }

    /// Returns the number of requests in flight and waiting.
    pub fn load(&self) -> (u32, u32) {
        let in_flight = self.slots.as_ref().map_or(0, |slots| {
            self.max_requests
                .saturating_sub(slots.available_permits() as u32)
        });
        (in_flight, self.pending.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn fail(breaker: &Breaker, now: Duration) -> Option<CircuitState> {
        let permit = breaker.admit(now).expect("admitted");
        breaker.record(permit, Outcome::Failure, now)
    }

    #[test]
    fn opens_after_consecutive_failures_and_refuses() {
        let breaker = Breaker::new(Trip::Consecutive(3), at(1_000), 1);
        assert_eq!(fail(&breaker, at(0)), None);
        assert_eq!(fail(&breaker, at(0)), None);
        assert_eq!(fail(&breaker, at(10)), Some(CircuitState::Open));
        let rejection = breaker.admit(at(400)).expect_err("open");
        assert_eq!(rejection.state, CircuitState::Open);
        assert_eq!(rejection.retry_after, at(610));
        assert!(!breaker.would_admit(at(400)));
        assert_eq!(breaker.times_opened(), 1);
    }

    #[test]
    fn success_resets_consecutive_count() {
        let breaker = Breaker::new(Trip::Consecutive(2), at(1_000), 1);
        fail(&breaker, at(0));
        let permit = breaker.admit(at(0)).expect("closed");
        breaker.record(permit, Outcome::Success, at(0));
        assert_eq!(fail(&breaker, at(0)), None);
        assert_eq!(breaker.state(at(0)), CircuitState::Closed);
    }

    #[test]
    fn half_open_limits_probes_and_closes_on_success() {
        let breaker = Breaker::new(Trip::Consecutive(1), at(1_000), 2);
        fail(&breaker, at(0));
        assert_eq!(breaker.state(at(1_000)), CircuitState::HalfOpen);
        let first = breaker.admit(at(1_000)).expect("probe 1");
        let second = breaker.admit(at(1_000)).expect("probe 2");
        let rejection = breaker.admit(at(1_000)).expect_err("no third probe");
        assert_eq!(rejection.state, CircuitState::HalfOpen);
        // A probe that is dropped unrecorded, such as a cancelled request, frees its slot.
        drop(second);
        assert!(breaker.would_admit(at(1_000)));
        assert_eq!(
            breaker.record(first, Outcome::Success, at(1_001)),
            Some(CircuitState::Closed)
        );
        assert_eq!(breaker.state(at(1_001)), CircuitState::Closed);
    }

    #[test]
    fn failed_probe_opens_again() {
        let breaker = Breaker::new(Trip::Consecutive(1), at(1_000), 1);
        fail(&breaker, at(0));
        assert_eq!(fail(&breaker, at(1_500)), Some(CircuitState::Open));
        assert!(breaker.admit(at(2_000)).is_err());
        assert!(breaker.admit(at(2_500)).is_ok());
        assert_eq!(breaker.times_opened(), 2);
    }

    #[test]
    fn failure_rate_needs_minimum_requests() {
        let breaker = Breaker::new(
            Trip::FailureRate {
                percent: 50,
                min_requests: 4,
                window_ms: 10_000,
            },
            at(1_000),
            1,
        );
        let succeed = |now| {
            let permit = breaker.admit(now).expect("closed");
            breaker.record(permit, Outcome::Success, now)
        };
        assert_eq!(fail(&breaker, at(0)), None);
        assert_eq!(fail(&breaker, at(1)), None);
        assert_eq!(succeed(at(2)), None);
        // 3 of 4 failed.
        assert_eq!(fail(&breaker, at(3)), Some(CircuitState::Open));

        // A new window starts from zero.
        let breaker = Breaker::new(
            Trip::FailureRate {
                percent: 50,
                min_requests: 2,
                window_ms: 100,
            },
            at(1_000),
            1,
        );
        assert_eq!(fail(&breaker, at(0)), None);
        assert_eq!(fail(&breaker, at(150)), None);
        assert_eq!(breaker.state(at(150)), CircuitState::Closed);
    }

    #[test]
    fn concurrency_limit_with_pending_queue() {
        let limit = ConcurrencyLimit::new(1, 1);
        let first = limit.try_slot().expect("free slot");
        assert!(limit.try_slot().is_none());
        let (waiting, slot) = limit.wait().expect("room to wait");
        assert!(limit.wait().is_none(), "only one may wait");
        assert_eq!(limit.load(), (1, 1));
        drop(first);
        let second = futures::executor::block_on(slot);
        drop(waiting);
        assert_eq!(limit.load(), (1, 0));
        drop(second);
        assert_eq!(limit.load(), (0, 0));

        let unlimited = ConcurrencyLimit::new(0, 0);
        let slots: Vec<_> = (0..100).map(|_| unlimited.try_slot()).collect();
        assert!(slots.iter().all(Option::is_some));
    }

    #[test]
    fn disabled_breaker_never_opens() {
        let breaker = Breaker::new(Trip::Consecutive(0), at(1_000), 1);
        assert!(!breaker.enabled());
        for _ in 0..100 {
            assert_eq!(fail(&breaker, at(0)), None);
        }
    }
}
