//! Rate-limit algorithms, pure functions of a stored state and the time, so every
//! store (memory, Redis, Durable Objects) applies exactly the same rules.

pub mod gcra;
pub mod memory;
pub mod quota;
pub mod redis_script;
pub mod remote;
pub mod window;

use std::time::Duration;

pub use gcra::{Decision, GcraLimit};
pub use memory::MemoryCounters;
pub use quota::{CalendarPeriod, CalendarQuota, QuotaState};
pub use window::{WindowLimit, WindowState};

/// One limit with its algorithm and parameters, as a counter store receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A rolling rate with a burst.
    Gcra(GcraLimit),
    /// A sliding-window count; also the form of rolling quotas.
    Window(WindowLimit),
    /// A count per UTC calendar period.
    Calendar(CalendarQuota),
}

impl Limit {
    /// Returns the units allowed per period, for the `q` parameter of
    /// `RateLimit-Policy`.
    pub fn quota_units(&self) -> u64 {
        match self {
            Self::Gcra(limit) => limit.limit(),
            Self::Window(limit) => limit.limit(),
            Self::Calendar(quota) => quota.limit(),
        }
    }

    /// Returns the length of the period in whole seconds (at least 1), for the `w`
    /// parameter of `RateLimit-Policy`.
    pub fn window_seconds(&self) -> u64 {
        let period = match self {
            Self::Gcra(limit) => limit.period(),
            Self::Window(limit) => limit.window(),
            Self::Calendar(quota) => Duration::from_secs(quota.period().nominal_seconds()),
        };
        period.as_secs().max(1)
    }

    /// Returns how long an untouched key keeps state that matters, from its last
    /// decision: stores may drop the key after it.
    pub fn idle_expiry(&self) -> Duration {
        match self {
            Self::Gcra(limit) => limit.period().max(Duration::from_micros(1)),
            Self::Window(limit) => limit.window().saturating_mul(2),
            // A month is at most 31 days.
            Self::Calendar(quota) => match quota.period() {
                CalendarPeriod::Month => Duration::from_secs(31 * 86_400),
                period => Duration::from_secs(period.nominal_seconds()),
            },
        }
    }
}
