//! Endpoint weights and weighted random sampling restricted to eligible endpoints.

use super::random::{SplitMix64, scale_to};

/// Number of weighted draws over all endpoints before sampling falls back to a scan
/// of the eligible ones. Draws cost O(log n) but are wasted on ineligible endpoints,
/// so a few of them suit the common case where most endpoints are eligible.
const FAST_DRAWS: usize = 4;

/// Converts a configured weight into the weight the algorithms use.
///
/// Configuration validation allows 1 to 10000. A zero would let an endpoint that is the
/// only eligible one never be picked, so it counts as 1.
pub(crate) fn effective_weight(weight: u32) -> u64 {
    u64::from(weight.max(1))
}

/// Weights of all endpoints with their running sums, for weighted random draws.
#[derive(Debug)]
pub(crate) struct WeightTable {
    weights: Vec<u64>,
    /// `cumulative[i]` is the sum of `weights[..=i]`, saturating at `u64::MAX`, which
    /// only lists of more than 2^32 endpoints could reach.
    cumulative: Vec<u64>,
}

impl WeightTable {
    pub(crate) fn new(weights: impl IntoIterator<Item = u64>) -> Self {
        let weights: Vec<u64> = weights.into_iter().collect();
        let mut sum = 0u64;
        let cumulative = weights
            .iter()
            .map(|weight| {
                sum = sum.saturating_add(*weight);
                sum
            })
            .collect();
        Self {
            weights,
            cumulative,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.weights.len()
    }

    pub(crate) fn weight(&self, index: usize) -> u64 {
        self.weights.get(index).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Draws an eligible endpoint other than `excluded`, with probability proportional
    /// to its weight among those endpoints. Returns `None` when there is none.
    ///
    /// Draws over all endpoints are retried while they land on an ineligible or
    /// excluded endpoint. Each accepted draw follows the weights restricted to the
    /// acceptable endpoints, and so does the exact fallback, so the result does too.
    pub(crate) fn sample(
        &self,
        rng: &mut SplitMix64,
        eligible: &dyn Fn(usize) -> bool,
        excluded: Option<usize>,
    ) -> Option<usize> {
        let acceptable = |index: usize| Some(index) != excluded && eligible(index);
        for _ in 0..FAST_DRAWS {
            let target = rng.below(self.total());
            let index = self.cumulative.partition_point(|sum| *sum <= target);
            if index < self.len() && acceptable(index) {
                return Some(index);
            }
        }
        self.sample_by_scan(rng, &acceptable)
    }

    /// Draws exactly by summing the acceptable weights in one pass and locating the
    /// draw in a second pass, so it costs O(n) calls to `acceptable`.
    fn sample_by_scan(
        &self,
        rng: &mut SplitMix64,
        acceptable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let acceptable_total = (0..self.len())
            .filter(|index| acceptable(*index))
            .fold(0u64, |sum, index| sum.saturating_add(self.weights[index]));
        if acceptable_total == 0 {
            return None;
        }
        let target = scale_to(rng.next_u64(), acceptable_total);
        let mut sum = 0u64;
        let mut last_acceptable = None;
        for index in (0..self.len()).filter(|index| acceptable(*index)) {
            sum = sum.saturating_add(self.weights[index]);
            if target < sum {
                return Some(index);
            }
            last_acceptable = Some(index);
        }
        // Reached only if `acceptable` returned different results in the two passes.
        last_acceptable
    }
}
