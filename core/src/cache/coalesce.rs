//! Request coalescing: while one request fetches a key from the upstream, concurrent
//! requests for the same key wait for it and then read the cache, so N concurrent
//! misses send one upstream request.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use futures::channel::oneshot;

/// The keys being fetched and the requests waiting for each.
#[derive(Debug, Default)]
pub struct InFlight {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

/// The role of a request in fetching a key.
#[derive(Debug)]
pub enum Turn<'a> {
    /// The request fetches the key; the guard wakes the waiters when dropped.
    Lead(LeadGuard<'a>),
    /// Another request fetches the key; the receiver completes when it is done,
    /// whether it stored a response or not.
    Wait(oneshot::Receiver<()>),
}

/// Held by the request that fetches a key. Dropping it, after storing or on any
/// failure or cancellation, releases the key and wakes every waiter.
#[derive(Debug)]
pub struct LeadGuard<'a> {
    in_flight: &'a InFlight,
    key: String,
}

impl InFlight {
    /// Makes the caller the fetcher of `key`, or a waiter when a fetch is running.
    pub fn begin(&self, key: &str) -> Turn<'_> {
        let mut waiting = self.lock();
        if let Some(waiters) = waiting.get_mut(key) {
            let (sender, receiver) = oneshot::channel();
            waiters.push(sender);
            return Turn::Wait(receiver);
        }
        waiting.insert(key.to_owned(), Vec::new());
        Turn::Lead(LeadGuard {
            in_flight: self,
            key: key.to_owned(),
        })
    }

    /// Returns whether a fetch of `key` is running.
    pub fn is_fetching(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<()>>>> {
        // The map is changed by single insert and remove calls, so a poisoned lock
        // still holds a consistent map.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for LeadGuard<'_> {
    fn drop(&mut self) {
        let waiters = self.in_flight.lock().remove(&self.key);
        for waiter in waiters.into_iter().flatten() {
            // A waiter that gave up has dropped its receiver, which is fine.
            let _ = waiter.send(());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests report failures by panicking")]
mod tests {
    use futures::executor::block_on;

    use super::*;

    #[test]
    fn second_request_waits_for_first() {
        let in_flight = InFlight::default();
        let Turn::Lead(guard) = in_flight.begin("k") else {
            panic!("the first request must lead");
        };
        let Turn::Wait(waiter) = in_flight.begin("k") else {
            panic!("the second request must wait");
        };
        assert!(matches!(in_flight.begin("other"), Turn::Lead(_)));
        assert!(in_flight.is_fetching("k"));
        drop(guard);
        assert!(block_on(waiter).is_ok());
        assert!(!in_flight.is_fetching("k"));
        assert!(matches!(in_flight.begin("k"), Turn::Lead(_)));
    }
}
