//! The messages between a gateway and a counter store that runs the limit algorithms
//! itself, such as a Durable Object: the call, the reply and the state the store keeps.
//!
//! Both ends are built from this crate, so the JSON forms only have to agree within
//! one build. Times are integer microseconds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::quota::QuotaState;
use super::window::WindowState;
use super::{CalendarPeriod, CalendarQuota, Decision, GcraLimit, Limit, WindowLimit};

/// One decision as the gateway sends it to the store of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCall {
    /// The algorithm and its parameters.
    pub limit: RemoteLimit,
    /// Units the request costs.
    pub cost: u64,
}

impl RemoteCall {
    /// Creates the call of a request of `cost` units under `limit`.
    pub fn new(limit: &Limit, cost: u64) -> Self {
        Self {
            limit: RemoteLimit::from(limit),
            cost,
        }
    }
}

/// A [`Limit`] in the form it is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case")]
pub enum RemoteLimit {
    /// [`Limit::Gcra`].
    Gcra {
        /// Requests per period.
        limit: u64,
        /// Period length in microseconds.
        period_micros: u64,
        /// Requests a key may send at once.
        burst: u64,
    },
    /// [`Limit::Window`].
    Window {
        /// Units per window.
        limit: u64,
        /// Window length in microseconds.
        window_micros: u64,
    },
    /// [`Limit::Calendar`].
    Calendar {
        /// Units per period.
        limit: u64,
        /// The UTC calendar period.
        period: RemotePeriod,
    },
}

/// A [`CalendarPeriod`] in the form it is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs, reason = "the variants are those of CalendarPeriod")]
pub enum RemotePeriod {
    Minute,
    Hour,
    Day,
    Month,
}

impl From<&Limit> for RemoteLimit {
    fn from(limit: &Limit) -> Self {
        match limit {
            Limit::Gcra(gcra) => Self::Gcra {
                limit: gcra.limit(),
                period_micros: u64::try_from(gcra.period().as_micros()).unwrap_or(u64::MAX),
                burst: gcra.burst(),
            },
            Limit::Window(window) => Self::Window {
                limit: window.limit(),
                window_micros: window.window_micros(),
            },
            Limit::Calendar(quota) => Self::Calendar {
                limit: quota.limit(),
                period: match quota.period() {
                    CalendarPeriod::Minute => RemotePeriod::Minute,
                    CalendarPeriod::Hour => RemotePeriod::Hour,
                    CalendarPeriod::Day => RemotePeriod::Day,
                    CalendarPeriod::Month => RemotePeriod::Month,
                },
            },
        }
    }
}

impl RemoteLimit {
    /// Returns the limit, or `None` when its parameters are invalid (zero or out of
    /// range), which only a caller of another build could send.
    pub fn to_limit(self) -> Option<Limit> {
        match self {
            Self::Gcra {
                limit,
                period_micros,
                burst,
            } => {
                GcraLimit::new(limit, Duration::from_micros(period_micros), burst).map(Limit::Gcra)
            }
            Self::Window {
                limit,
                window_micros,
            } => WindowLimit::new(limit, Duration::from_micros(window_micros)).map(Limit::Window),
            Self::Calendar { limit, period } => {
                let period = match period {
                    RemotePeriod::Minute => CalendarPeriod::Minute,
                    RemotePeriod::Hour => CalendarPeriod::Hour,
                    RemotePeriod::Day => CalendarPeriod::Day,
                    RemotePeriod::Month => CalendarPeriod::Month,
                };
                CalendarQuota::new(limit, period).map(Limit::Calendar)
            }
        }
    }
}

/// A [`Decision`] in the form the store replies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteDecision {
    /// Whether the request was admitted.
    pub allowed: bool,
    /// Units left after this request.
    pub remaining: u64,
    /// Microseconds until a request of the same cost could be admitted.
    pub retry_after_micros: u64,
    /// Microseconds until the key's budget is whole again.
    pub reset_after_micros: u64,
}

impl From<Decision> for RemoteDecision {
    fn from(decision: Decision) -> Self {
        let micros = |duration: Duration| u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        Self {
            allowed: decision.allowed,
            remaining: decision.remaining,
            retry_after_micros: micros(decision.retry_after),
            reset_after_micros: micros(decision.reset_after),
        }
    }
}

impl From<RemoteDecision> for Decision {
    fn from(decision: RemoteDecision) -> Self {
        Self {
            allowed: decision.allowed,
            remaining: decision.remaining,
            retry_after: Duration::from_micros(decision.retry_after_micros),
            reset_after: Duration::from_micros(decision.reset_after_micros),
        }
    }
}

/// The state a store keeps for one key. It names its algorithm, so a key whose
/// policy changed algorithm starts afresh instead of reading a state of another shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case")]
pub enum StoredCounter {
    /// The theoretical arrival time of a GCRA key, in Unix microseconds.
    Gcra {
        /// See [`GcraLimit::decide`].
        tat: u64,
    },
    /// The counts of a sliding-window key.
    Window {
        /// See [`WindowState::window_start`].
        window_start: u64,
        /// See [`WindowState::current`].
        current: u64,
        /// See [`WindowState::previous`].
        previous: u64,
    },
    /// The usage of a calendar quota key.
    Calendar {
        /// See [`QuotaState::period_start`].
        period_start: u64,
        /// See [`QuotaState::used`].
        used: u64,
    },
}

/// Decides a request of `cost` units under `limit` at `now_micros`, from the key's
/// `stored` state, and returns the decision with the state to store. This is the
/// same computation as [`super::MemoryCounters::decide`].
pub fn decide_stored(
    limit: &Limit,
    stored: Option<StoredCounter>,
    cost: u64,
    now_micros: u64,
) -> (Decision, StoredCounter) {
    match limit {
        Limit::Gcra(gcra) => {
            let tat = match stored {
                Some(StoredCounter::Gcra { tat }) => tat,
                _ => 0,
            };
            let (decision, tat) = gcra.decide(tat, now_micros, cost);
            (decision, StoredCounter::Gcra { tat })
        }
        Limit::Window(window) => {
            let counts = match stored {
                Some(StoredCounter::Window {
                    window_start,
                    current,
                    previous,
                }) => WindowState {
                    window_start,
                    current,
                    previous,
                },
                _ => WindowState::default(),
            };
            let (decision, counts) = window.decide(counts, now_micros, cost);
            let stored = StoredCounter::Window {
                window_start: counts.window_start,
                current: counts.current,
                previous: counts.previous,
            };
            (decision, stored)
        }
        Limit::Calendar(quota) => {
            let usage = match stored {
                Some(StoredCounter::Calendar { period_start, used }) => {
                    QuotaState { period_start, used }
                }
                _ => QuotaState::default(),
            };
            let (decision, usage) = quota.decide(usage, now_micros, cost);
            let stored = StoredCounter::Calendar {
                period_start: usage.period_start,
                used: usage.used,
            };
            (decision, stored)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::MemoryCounters;

    const SECOND: u64 = 1_000_000;

    fn limits() -> Vec<Limit> {
        vec![
            Limit::Gcra(GcraLimit::new(5, Duration::from_secs(10), 3).unwrap()),
            Limit::Window(WindowLimit::new(4, Duration::from_secs(10)).unwrap()),
            Limit::Calendar(CalendarQuota::new(3, CalendarPeriod::Hour).unwrap()),
            Limit::Calendar(CalendarQuota::new(7, CalendarPeriod::Month).unwrap()),
        ]
    }

    #[test]
    fn limit_round_trips_through_json() {
        for limit in limits() {
            let call = RemoteCall::new(&limit, 2);
            let text = serde_json::to_string(&call).unwrap();
            let parsed: RemoteCall = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed.cost, 2, "{text}");
            assert_eq!(parsed.limit.to_limit(), Some(limit), "{text}");
        }
    }

    #[test]
    fn invalid_remote_limit_rejected() {
        let zero = RemoteLimit::Gcra {
            limit: 0,
            period_micros: SECOND,
            burst: 1,
        };
        assert_eq!(zero.to_limit(), None);
        let text = r#"{"limit":{"algorithm":"leaky","limit":1},"cost":1}"#;
        assert!(serde_json::from_str::<RemoteCall>(text).is_err());
    }

    #[test]
    fn stored_decisions_match_memory_store() {
        let start = 1_790_000_000 * SECOND;
        for limit in limits() {
            let memory = MemoryCounters::new(16);
            let mut stored: Option<StoredCounter> = None;
            for step in 0..40_u64 {
                let now = start + step * SECOND / 2;
                let cost = 1 + step % 2;
                let expected = memory.decide("key", &limit, cost, now);
                let text = stored.map(|state| serde_json::to_string(&state).unwrap());
                let loaded = text.map(|text| serde_json::from_str(&text).unwrap());
                let (decision, state) = decide_stored(&limit, loaded, cost, now);
                assert_eq!(decision, expected, "{limit:?} at step {step}");
                stored = Some(state);
            }
        }
    }

    #[test]
    fn state_of_other_algorithm_ignored() {
        let limit = Limit::Window(WindowLimit::new(1, Duration::from_secs(10)).unwrap());
        let stale = StoredCounter::Gcra { tat: u64::MAX / 2 };
        let (decision, _) = decide_stored(&limit, Some(stale), 1, SECOND);
        assert!(decision.allowed);
    }

    #[test]
    fn decision_round_trips() {
        let decision = Decision {
            allowed: false,
            remaining: 3,
            retry_after: Duration::from_micros(1_500),
            reset_after: Duration::from_secs(9),
        };
        let remote = RemoteDecision::from(decision);
        let text = serde_json::to_string(&remote).unwrap();
        let parsed: RemoteDecision = serde_json::from_str(&text).unwrap();
        assert_eq!(Decision::from(parsed), decision);
    }
}
