//! The local tier of a shared store: per key, the store's last answer and the
//! requests this gateway has in flight to the store.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_core::limit::Decision;

/// Shards of the key map, so concurrent decisions on different keys rarely contend.
const SHARDS: usize = 32;

/// Keys per shard past which idle keys are dropped. An idle key has nothing in flight,
/// so dropping it only costs its next request a round trip.
const MAX_KEYS_PER_SHARD: usize = 4_096;

#[derive(Debug, Default)]
struct KeyState {
    /// Units the store reported left after its last answer; `None` before any answer.
    remaining: Option<u64>,
    /// Instant when the store's count starts again: the latest reset the store reported.
    /// Replies to concurrent calls arrive in any order, and the store never moves its
    /// reset earlier, so the latest reset is the current one.
    reset_at: Option<Instant>,
    /// Requests, and their units, sent to the store and not yet answered.
    in_flight: u32,
    in_flight_units: u64,
    /// Until when requests of at least `blocked_cost` units are rejected locally,
    /// because the store rejected one and its `retry_after` has not passed.
    blocked_until: Option<Instant>,
    blocked_cost: u64,
    blocked_remaining: u64,
}

impl KeyState {
    fn reset_after(&self, now: Instant) -> Duration {
        self.reset_at
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
    }
}

/// The local tier of one store.
#[derive(Debug)]
pub(super) struct LocalTier {
    shards: Vec<Mutex<HashMap<String, KeyState>>>,
    hasher: RandomState,
}

impl Default for LocalTier {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

/// A request in flight to the store, to be passed to [`LocalTier::finish`].
#[derive(Debug)]
pub(super) struct Ticket {
    key: String,
    cost: u64,
}

impl LocalTier {
    /// Returns a rejection when the store rejected a request of at most `cost` units
    /// for `key` and its `retry_after` has not passed. Rejections never change a
    /// store's state and later admissions only move the retry time later, so this is
    /// exact: the store would reject too.
    pub(super) fn blocked(&self, key: &str, cost: u64, now: Instant) -> Option<Decision> {
        let shard = self.shard(key);
        let state = shard.get(key)?;
        let until = state.blocked_until?;
        if now >= until || cost < state.blocked_cost {
            return None;
        }
        let retry_after = until - now;
        Some(Decision {
            allowed: false,
            remaining: state.blocked_remaining,
            retry_after,
            reset_after: state.reset_after(now).max(retry_after),
        })
    }

    /// Admits a request without waiting for the store when the store's last answer
    /// left at least `cost` units beyond those already in flight and fewer than
    /// `max_in_flight` requests are in flight. The caller must send the request to the
    /// store and then call [`LocalTier::finish`] with the ticket.
    pub(super) fn try_admit(
        &self,
        key: &str,
        cost: u64,
        max_in_flight: u32,
        now: Instant,
    ) -> Option<(Decision, Ticket)> {
        let mut shard = self.shard(key);
        let state = shard.get_mut(key)?;
        let remaining = state.remaining?;
        if state.blocked_until.is_some_and(|until| now < until)
            || state.in_flight >= max_in_flight
            || remaining < state.in_flight_units.saturating_add(cost)
        {
            return None;
        }
        state.in_flight += 1;
        state.in_flight_units += cost;
        let decision = Decision {
            allowed: true,
            remaining: remaining - state.in_flight_units,
            retry_after: Duration::ZERO,
            reset_after: state.reset_after(now),
        };
        Some((
            decision,
            Ticket {
                key: key.to_owned(),
                cost,
            },
        ))
    }

    /// Records a request sent to the store, so that local admissions count it.
    pub(super) fn start(&self, key: &str, cost: u64) -> Ticket {
        let mut shard = self.shard(key);
        if shard.len() >= MAX_KEYS_PER_SHARD && !shard.contains_key(key) {
            let now = Instant::now();
            shard.retain(|_, state| {
                state.in_flight > 0 || state.blocked_until.is_some_and(|until| now < until)
            });
        }
        let state = shard.entry(key.to_owned()).or_default();
        state.in_flight += 1;
        state.in_flight_units += cost;
        Ticket {
            key: key.to_owned(),
            cost,
        }
    }

    /// Records the store's answer to a request, or its failure (`None`).
    pub(super) fn finish(&self, ticket: Ticket, answer: Option<&Decision>, now: Instant) {
        let mut shard = self.shard(&ticket.key);
        let Some(state) = shard.get_mut(&ticket.key) else {
            return;
        };
        state.in_flight = state.in_flight.saturating_sub(1);
        state.in_flight_units = state.in_flight_units.saturating_sub(ticket.cost);
        let Some(answer) = answer else {
            // While the store fails, requests must wait for it and meet
            // `on_store_error`, rather than spend a remaining count it may have lost.
            state.remaining = None;
            return;
        };
        state.remaining = Some(answer.remaining);
        let reset_at = now + answer.reset_after;
        state.reset_at = Some(
            state
                .reset_at
                .map_or(reset_at, |current| current.max(reset_at)),
        );
        if !answer.allowed {
            let until = now + answer.retry_after;
            // A later block or a smaller blocked cost wins, so the block only grows.
            if state.blocked_until.is_none_or(|current| current <= now) {
                state.blocked_cost = ticket.cost;
            } else {
                state.blocked_cost = state.blocked_cost.min(ticket.cost);
            }
            state.blocked_until = Some(
                state
                    .blocked_until
                    .map_or(until, |current| current.max(until)),
            );
            state.blocked_remaining = answer.remaining;
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<String, KeyState>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A panic while a shard was locked leaves at worst one key's counts stale.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(allowed: bool, remaining: u64, retry_after_ms: u64) -> Decision {
        Decision {
            allowed,
            remaining,
            retry_after: Duration::from_millis(retry_after_ms),
            reset_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn unknown_key_waits_for_store() {
        let tier = LocalTier::default();
        assert!(tier.try_admit("k", 1, 8, Instant::now()).is_none());
        assert!(tier.blocked("k", 1, Instant::now()).is_none());
    }

    #[test]
    fn admits_up_to_remaining_and_in_flight() {
        let tier = LocalTier::default();
        let now = Instant::now();
        let ticket = tier.start("k", 1);
        tier.finish(ticket, Some(&answer(true, 3, 0)), now);
        let admitted: Vec<Ticket> = (0..5)
            .filter_map(|_| tier.try_admit("k", 1, 8, now).map(|(_, ticket)| ticket))
            .collect();
        assert_eq!(admitted.len(), 3, "no more than the store's remaining");

        let tier = LocalTier::default();
        let ticket = tier.start("k", 1);
        tier.finish(ticket, Some(&answer(true, 100, 0)), now);
        let admitted = (0..5)
            .filter_map(|_| tier.try_admit("k", 1, 2, now))
            .count();
        assert_eq!(admitted, 2, "no more than max_in_flight");
    }

    #[test]
    fn rejection_blocks_until_retry_after() {
        let tier = LocalTier::default();
        let now = Instant::now();
        let ticket = tier.start("k", 2);
        tier.finish(ticket, Some(&answer(false, 1, 500)), now);
        let blocked = tier
            .blocked("k", 2, now + Duration::from_millis(100))
            .unwrap();
        assert!(!blocked.allowed);
        assert_eq!(blocked.retry_after, Duration::from_millis(400));
        assert!(
            tier.blocked("k", 1, now).is_none(),
            "a smaller cost may fit"
        );
        assert!(
            tier.blocked("k", 2, now + Duration::from_millis(500))
                .is_none()
        );
        assert!(tier.try_admit("k", 1, 8, now).is_none());
    }

    #[test]
    fn older_answer_arriving_last_keeps_the_later_reset() {
        let tier = LocalTier::default();
        let now = Instant::now();
        let admitted = tier.start("k", 1);
        let rejected = tier.start("k", 1);
        let rejection = Decision {
            reset_after: Duration::from_secs(60),
            ..answer(false, 0, 12_000)
        };
        let admission = Decision {
            reset_after: Duration::from_secs(48),
            ..answer(true, 0, 0)
        };
        tier.finish(rejected, Some(&rejection), now);
        tier.finish(admitted, Some(&admission), now);
        let blocked = tier.blocked("k", 1, now).unwrap();
        assert_eq!(blocked.reset_after, Duration::from_secs(60));
    }

    #[test]
    fn answer_releases_in_flight() {
        let tier = LocalTier::default();
        let now = Instant::now();
        let ticket = tier.start("k", 1);
        tier.finish(ticket, Some(&answer(true, 1, 0)), now);
        let (_, ticket) = tier.try_admit("k", 1, 8, now).unwrap();
        assert!(tier.try_admit("k", 1, 8, now).is_none());
        tier.finish(ticket, Some(&answer(true, 1, 0)), now);
        assert!(tier.try_admit("k", 1, 8, now).is_some());
    }

    #[test]
    fn failure_sends_requests_to_store() {
        let tier = LocalTier::default();
        let now = Instant::now();
        let ticket = tier.start("k", 1);
        tier.finish(ticket, Some(&answer(true, 10, 0)), now);
        let (_, ticket) = tier.try_admit("k", 1, 8, now).unwrap();
        tier.finish(ticket, None, now);
        assert!(tier.try_admit("k", 1, 8, now).is_none());
    }
}
