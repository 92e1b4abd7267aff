//! Load-balancing algorithms.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::BalancerKind;

/// Inputs to one pick.
pub struct PickInput<'a> {
    /// Hash of the request key, for consistent hashing.
    pub hash: Option<u64>,
    /// A fresh random number.
    pub random: u64,
    /// Current monotonic time.
    pub now: Duration,
    /// Whether an endpoint may be picked.
    pub eligible: &'a dyn Fn(usize) -> bool,
}

impl std::fmt::Debug for PickInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickInput")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// A balancer over a fixed list of endpoints.
#[derive(Debug)]
pub struct Balancer {
    count: usize,
    next: AtomicUsize,
}

impl Balancer {
    /// Creates a balancer over endpoints given as `(id, weight)`.
    pub fn new(_kind: BalancerKind, endpoints: &[(&str, u32)]) -> Self {
        Self {
            count: endpoints.len(),
            next: AtomicUsize::new(0),
        }
    }

    /// Picks an eligible endpoint.
    pub fn pick(&self, input: &PickInput<'_>) -> Option<usize> {
        for _ in 0..self.count {
            let index = self.next.fetch_add(1, Ordering::Relaxed) % self.count;
            if (input.eligible)(index) {
                return Some(index);
            }
        }
        None
    }

    /// Records that a request to endpoint `index` started.
    pub fn on_start(&self, _index: usize) {}

    /// Records that a request to endpoint `index` finished after `latency`.
    pub fn on_finish(&self, _index: usize, _latency: Duration, _now: Duration) {}
}
