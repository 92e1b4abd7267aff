//! In-flight request counts and the least-outstanding-requests algorithm.

use std::cmp::Ordering as Comparison;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::random::SplitMix64;
use super::weights::WeightTable;

/// Number of requests in flight to each endpoint, kept by `on_start` and `on_finish`.
///
/// Each count is shared through `Arc`, so that a balancer built for a changed endpoint
/// list can take over the count of an endpoint that stayed, and requests started on
/// the old balancer still take themselves off it when they finish.
#[derive(Debug)]
pub(crate) struct InFlight {
    counts: Vec<Arc<AtomicU64>>,
}

impl InFlight {
    pub(crate) fn new(count: usize) -> Self {
        Self {
            counts: (0..count).map(|_| Arc::default()).collect(),
        }
    }

    /// Shares the count of endpoint `old_index` of `old` as the count of `index`.
    pub(crate) fn share(&mut self, index: usize, old: &InFlight, old_index: usize) {
        if let (Some(count), Some(old_count)) =
            (self.counts.get_mut(index), old.counts.get(old_index))
        {
            *count = Arc::clone(old_count);
        }
    }

    /// Returns the count of endpoint `index`, or 0 for an index out of range.
    pub(crate) fn get(&self, index: usize) -> u64 {
        self.counts
            .get(index)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    /// Adds one to the count of endpoint `index` if it still equals `expected`, and
    /// returns whether it did.
    fn increment_from(&self, index: usize, expected: u64) -> bool {
        self.counts.get(index).is_some_and(|count| {
            count
                .compare_exchange(expected, expected + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        })
    }

    pub(crate) fn increment(&self, index: usize) {
        if let Some(count) = self.counts.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Decrements the count, leaving it at 0 when a finish has no matching start.
    pub(crate) fn decrement(&self, index: usize) {
        if let Some(count) = self.counts.get(index) {
            // An `Err` means the count is already 0, which is the result we want.
            let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |value| {
                value.checked_sub(1)
            });
        }
    }
}

/// Least outstanding requests: the eligible endpoint with the fewest requests in
/// flight per unit of weight.
///
/// Ties, such as every endpoint being idle, are broken by a random draw weighted by
/// endpoint weight. Under light load, where most picks are ties, shares therefore
/// still follow the weights.
#[derive(Debug)]
pub(crate) struct LeastOutstanding {
    weights: WeightTable,
    in_flight: InFlight,
}

impl LeastOutstanding {
    pub(crate) fn new(weights: WeightTable) -> Self {
        let in_flight = InFlight::new(weights.len());
        Self { weights, in_flight }
    }

    pub(crate) fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    pub(crate) fn in_flight_mut(&mut self) -> &mut InFlight {
        &mut self.in_flight
    }

    /// Scans every endpoint once, keeping the least loaded so far. Among endpoints
    /// tied with it, each replaces it with probability weight / (sum of tied weights
    /// so far), which leaves every tied endpoint chosen in proportion to its weight.
    pub(crate) fn pick(&self, random: u64, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.scan(random, eligible).map(|(index, _)| index)
    }

    /// Picks like [`LeastOutstanding::pick`] and counts the pick as in flight in the
    /// same step.
    ///
    /// Two threads that scan at the same moment would otherwise both see the same
    /// endpoint idle and both send to it. The count is raised only if it still equals
    /// the value the scan saw; when another thread raised it first, the scan runs
    /// again. After a few lost races the pick is counted regardless, so a burst on many
    /// threads cannot keep one request scanning.
    pub(crate) fn claim(&self, random: u64, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        const SCANS: u32 = 4;
        let mut index = None;
        for scan in 0..SCANS {
            let (picked, seen) = self.scan(random.rotate_left(8 * scan), eligible)?;
            if self.in_flight.increment_from(picked, seen) {
                return Some(picked);
            }
            index = Some(picked);
        }
        let index = index?;
        self.in_flight.increment(index);
        Some(index)
    }

    /// Returns the picked endpoint and the in-flight count the scan saw for it.
    fn scan(&self, random: u64, eligible: &dyn Fn(usize) -> bool) -> Option<(usize, u64)> {
        let mut rng = SplitMix64::new(random);
        let mut best: Option<(usize, u64)> = None;
        let mut tied_weight = 0u64;
        for index in (0..self.weights.len()).filter(|index| eligible(*index)) {
            let weight = self.weights.weight(index);
            let count = self.in_flight.get(index);
            let comparison = match best {
                None => Comparison::Less,
                Some((best, best_count)) => self.compare_load(index, count, best, best_count),
            };
            match comparison {
                Comparison::Less => {
                    best = Some((index, count));
                    tied_weight = weight;
                }
                Comparison::Equal => {
                    tied_weight = tied_weight.saturating_add(weight);
                    if rng.below(tied_weight) < weight {
                        best = Some((index, count));
                    }
                }
                Comparison::Greater => {}
            }
        }
        best
    }

    /// Compares in-flight count per unit of weight by cross-multiplying, which is
    /// exact because a `u64` times a `u64` fits in a `u128`.
    fn compare_load(
        &self,
        left: usize,
        left_count: u64,
        right: usize,
        right_count: u64,
    ) -> Comparison {
        let left_load = u128::from(left_count) * u128::from(self.weights.weight(right));
        let right_load = u128::from(right_count) * u128::from(self.weights.weight(left));
        left_load.cmp(&right_load)
    }
}
