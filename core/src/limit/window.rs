//! The sliding-window counter: two fixed-window counts per key, weighted by how much
//! of the previous window still overlaps the sliding one.
//!
//! The estimate `previous * (1 - elapsed / window) + current` assumes requests of the
//! previous window were spread evenly. It errs by at most the previous window's
//! uneven share, and never admits more than `limit` within one fixed window.

use std::time::Duration;

use super::gcra::Decision;

/// A sliding-window limit: `limit` units per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimit {
    limit: u64,
    window_micros: u64,
}

/// The counts of one key: the start of its current fixed window and two counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowState {
    /// Start of the current fixed window, in microseconds.
    pub window_start: u64,
    /// Units admitted in the current fixed window.
    pub current: u64,
    /// Units admitted in the fixed window before it.
    pub previous: u64,
}

impl WindowLimit {
    /// Creates a limit, or returns `None` when `limit` or `window` is zero or the window
    /// is too long to count in microseconds.
    pub fn new(limit: u64, window: Duration) -> Option<Self> {
        let window_micros = u64::try_from(window.as_micros()).ok()?;
        (limit > 0 && window_micros > 0).then_some(Self {
            limit,
            window_micros,
        })
    }

    /// Returns the number of units allowed per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Returns the window length in microseconds.
    pub fn window_micros(&self) -> u64 {
        self.window_micros
    }

    /// Returns the window length.
    pub fn window(&self) -> Duration {
        Duration::from_micros(self.window_micros)
    }

    /// Decides a request of `cost` units at `now_micros` and returns the state to
    /// store, which only rolls the windows forward when the request is rejected. A
    /// time before the stored window counts as its start, so a clock that stepped
    /// back never clears the counts.
    pub fn decide(
        &self,
        state: WindowState,
        now_micros: u64,
        cost: u64,
    ) -> (Decision, WindowState) {
        let now_micros = now_micros.max(state.window_start);
        let state = self.roll(state, now_micros);
        let elapsed = now_micros - state.window_start;
        let remaining_share = self.window_micros - elapsed;
        // Integer arithmetic: previous * remaining_share / window, rounded up so the
        // estimate never undercounts.
        let weighted_previous = (u128::from(state.previous) * u128::from(remaining_share))
            .div_ceil(u128::from(self.window_micros)) as u64;
        let estimate = weighted_previous.saturating_add(state.current);
        let reset_after = Duration::from_micros(remaining_share);

        if estimate.saturating_add(cost) > self.limit {
            let decision = Decision {
                allowed: false,
                remaining: self.limit.saturating_sub(estimate),
                retry_after: self.retry_after(state, elapsed, cost),
                reset_after,
            };
            return (decision, state);
        }
        let admitted = WindowState {
            current: state.current + cost,
            ..state
        };
        let decision = Decision {
            allowed: true,
            remaining: self.limit - estimate - cost,
            retry_after: Duration::ZERO,
            reset_after,
        };
        (decision, admitted)
    }

    /// Moves the state to the fixed window that contains `now_micros`.
    fn roll(&self, state: WindowState, now_micros: u64) -> WindowState {
        let window_start = now_micros - now_micros % self.window_micros;
        if window_start == state.window_start {
            state
        } else if window_start == state.window_start + self.window_micros {
            WindowState {
                window_start,
                current: 0,
                previous: state.current,
            }
        } else {
            WindowState {
                window_start,
                current: 0,
                previous: 0,
            }
        }
    }

    /// Computes when a rejected request of `cost` would fit: later in this window, as
    /// the previous window's weight slides out, or in the next one.
    fn retry_after(&self, state: WindowState, elapsed: u64, cost: u64) -> Duration {
        let window = self.window_micros;
        if cost > self.limit {
            return Duration::from_micros(window);
        }
        let until_next_window = window - elapsed;
        if state.current + cost > self.limit {
            // In the next window this window's count becomes the previous one.
            let wait = slide_out(state.current, self.limit - cost, window);
            return Duration::from_micros(until_next_window + wait);
        }
        let at = slide_out(state.previous, self.limit - state.current - cost, window);
        Duration::from_micros(at.saturating_sub(elapsed).max(1))
    }
}

/// Returns the offset into a window from which `count` units of the previous window
/// weigh at most `spare`, using the rounded-up weighting of [`WindowLimit::decide`].
fn slide_out(count: u64, spare: u64, window: u64) -> u64 {
    if count <= spare {
        return 0;
    }
    let keep = u128::from(spare) * u128::from(window) / u128::from(count);
    window - keep as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    fn per_second(limit: u64) -> WindowLimit {
        WindowLimit::new(limit, Duration::from_secs(1)).unwrap()
    }

    fn send(limit: &WindowLimit, state: &mut WindowState, now: u64, count: u64) -> u64 {
        let mut admitted = 0;
        for _ in 0..count {
            let (decision, next) = limit.decide(*state, now, 1);
            *state = next;
            admitted += u64::from(decision.allowed);
        }
        admitted
    }

    #[test]
    fn admits_limit_in_one_window() {
        let limit = per_second(10);
        let mut state = WindowState::default();
        assert_eq!(send(&limit, &mut state, 10 * SECOND, 15), 10);
    }

    #[test]
    fn previous_window_weighs_in() {
        let limit = per_second(10);
        let mut state = WindowState::default();
        send(&limit, &mut state, 10 * SECOND + 900_000, 10);
        // 25% into the next window, 75% of the previous 10 still count: 2 fit.
        assert_eq!(send(&limit, &mut state, 11 * SECOND + 250_000, 5), 2);
        // 75% in, 25% of 10 = 3 (rounded up) count with the 2 just admitted: 5 fit.
        assert_eq!(send(&limit, &mut state, 11 * SECOND + 750_000, 10), 5);
    }

    #[test]
    fn idle_key_starts_fresh() {
        let limit = per_second(3);
        let mut state = WindowState::default();
        send(&limit, &mut state, SECOND, 3);
        assert_eq!(send(&limit, &mut state, 5 * SECOND, 5), 3);
    }

    #[test]
    fn boundary_burst_is_bounded() {
        // Filling the end of one window and the start of the next admits at most the
        // limit plus the previous window's weight, never twice the limit at once.
        let limit = per_second(100);
        let mut state = WindowState::default();
        let late = send(&limit, &mut state, 2 * SECOND - 1, 100);
        let early = send(&limit, &mut state, 2 * SECOND, 100);
        assert_eq!(late, 100);
        assert_eq!(early, 0);
    }

    #[test]
    fn clock_step_back_keeps_counts() {
        let limit = per_second(2);
        let mut state = WindowState::default();
        send(&limit, &mut state, 7 * SECOND, 2);
        assert_eq!(send(&limit, &mut state, 3 * SECOND, 1), 0);
    }

    #[test]
    fn remaining_and_reset_reported() {
        let limit = per_second(4);
        let (decision, _) = limit.decide(WindowState::default(), 3 * SECOND + 250_000, 1);
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 3);
        assert_eq!(decision.reset_after, Duration::from_millis(750));
    }

    #[test]
    fn retry_after_lands_when_request_fits() {
        let limit = per_second(10);
        let mut state = WindowState::default();
        send(&limit, &mut state, 10 * SECOND + 500_000, 10);
        let now = 11 * SECOND + 50_000;
        let (rejected, state) = limit.decide(state, now, 1);
        assert!(!rejected.allowed);
        let retry_at = now + rejected.retry_after.as_micros() as u64;
        let (later, _) = limit.decide(state, retry_at, 1);
        assert!(
            later.allowed,
            "retry_after {:?} was too early",
            rejected.retry_after
        );
        let (earlier, _) = limit.decide(state, retry_at - 1_000, 1);
        assert!(
            !earlier.allowed,
            "retry_after {:?} was too late",
            rejected.retry_after
        );
    }
}
