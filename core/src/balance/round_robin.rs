//! Round robin and smooth weighted round robin.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Plain round robin: each endpoint in config order, ignoring weights.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    count: usize,
    /// Index the next pick starts its search from, always below `count` (or 0).
    next: AtomicUsize,
}

impl RoundRobin {
    pub(crate) fn new(count: usize) -> Self {
        Self {
            count,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks the first eligible endpoint at or after the cursor and moves the cursor
    /// just past it. Moving past the skipped endpoints, rather than by one, keeps the
    /// endpoint after an ineligible one from receiving two turns in a row.
    pub(crate) fn pick(&self, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.count == 0 {
            return None;
        }
        let mut start = self.next.load(Ordering::Relaxed);
        loop {
            let chosen = (0..self.count)
                .map(|offset| (start + offset) % self.count)
                .find(|index| eligible(*index))?;
            let after = (chosen + 1) % self.count;
            match self.next.compare_exchange_weak(
                start,
                after,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(chosen),
                // Another pick moved the cursor, so search again from its new position
                // to keep the order strict under concurrency.
                Err(current) => start = current,
            }
        }
    }
}

/// Smooth weighted round robin, the algorithm of nginx's upstream module: every pick
/// adds each eligible endpoint's weight to its current weight, chooses the highest
/// current weight and subtracts the eligible total from it. While the eligible set is
/// unchanged, every cycle of picks as long as the weight total gives each endpoint
/// exactly its weight, with heavy endpoints interleaved among light ones instead of
/// receiving their turns in a burst.
#[derive(Debug)]
pub(crate) struct SmoothWeighted {
    weights: Vec<i64>,
    /// Current weights. One pick reads and writes all of them, and interleaved updates
    /// from concurrent picks would break the interleaving guarantee, so they sit
    /// behind one lock that is held for a single O(n) pass.
    current: Mutex<Vec<i64>>,
}

impl SmoothWeighted {
    pub(crate) fn new(weights: impl IntoIterator<Item = u64>) -> Self {
        let weights: Vec<i64> = weights
            .into_iter()
            .map(|weight| i64::try_from(weight).unwrap_or(i64::MAX))
            .collect();
        let current = Mutex::new(vec![0; weights.len()]);
        Self { weights, current }
    }

    /// Picks the eligible endpoint with the highest current weight, the first in
    /// config order on ties. Ineligible endpoints keep their current weight
    /// unchanged until they are eligible again.
    ///
    /// Saturating arithmetic keeps the current weights from overflowing whatever the
    /// weights are. It loses exactness only near the `i64` limits.
    pub(crate) fn pick(&self, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        // A poisoned lock only means a panic elsewhere while it was held, and the
        // current weights are valid integers whatever step that panic interrupted.
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (index, weight) in self.weights.iter().enumerate() {
            if !eligible(index) {
                continue;
            }
            current[index] = current[index].saturating_add(*weight);
            total = total.saturating_add(*weight);
            if best.is_none_or(|best| current[index] > current[best]) {
                best = Some(index);
            }
        }
        let chosen = best?;
        current[chosen] = current[chosen].saturating_sub(total);
        Some(chosen)
    }
}
