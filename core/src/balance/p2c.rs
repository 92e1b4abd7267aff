//! Power of two choices over a peak EWMA latency estimate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::least::InFlight;
use super::random::SplitMix64;
use super::weights::WeightTable;

/// Time constant of the P2C latency estimate.
///
/// It plays two roles. A sample lower than the estimate replaces a fraction
/// `1 - exp(-t / EWMA_DECAY)` of it, where `t` is the time since the previous sample,
/// so falling latency pulls the estimate down over roughly 10 s whatever the request
/// rate. And the estimate of an endpoint that receives no requests shrinks by a factor
/// e every 10 s, so an endpoint that looked 10 times slower than its rival is retried
/// after about 23 s (10 s times ln 10) and can show that it has recovered. A shorter
/// constant retries slow endpoints sooner but lets a few samples swing the estimate.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Bit pattern of a NaN, which no sample produces, marking an estimate without samples.
const NO_SAMPLE: u64 = u64::MAX;

/// Latency estimate of one endpoint.
///
/// The fields are separate atomics. A sample stores its time before its estimate,
/// with release and acquire ordering, so a pick that reads the new estimate also reads
/// the new time. A pick that runs during the update may read the new time with the old
/// estimate, which then misses its idle decay and overstates that one cost.
#[derive(Debug)]
struct LatencyEstimate {
    /// Peak EWMA of latency in seconds, stored as `f64` bits, or `NO_SAMPLE`.
    ewma: AtomicU64,
    /// Time of the latest sample, in nanoseconds of `PickInput::now`.
    last_sample: AtomicU64,
    /// Time of the latest sample or pick, in nanoseconds of `PickInput::now`.
    last_activity: AtomicU64,
}

impl LatencyEstimate {
    fn new() -> Self {
        Self {
            ewma: AtomicU64::new(NO_SAMPLE),
            last_sample: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
        }
    }

    /// Adds a sample. A sample above the estimate replaces it (the peak rule), so a
    /// slowing endpoint loses traffic at once. A lower one is blended in with a weight
    /// that grows with the time since the previous sample.
    fn record(&self, latency: Duration, now: u64) {
        let sample = latency.as_secs_f64();
        let previous = self.last_sample.fetch_max(now, Ordering::Relaxed);
        let keep = decay_factor(now.saturating_sub(previous));
        self.last_activity.fetch_max(now, Ordering::Relaxed);
        // The closure always returns `Some`, so the update cannot fail.
        let _ = self
            .ewma
            .fetch_update(Ordering::Release, Ordering::Relaxed, |bits| {
                let estimate = f64::from_bits(bits);
                let updated = if bits == NO_SAMPLE || sample > estimate {
                    sample
                } else {
                    estimate * keep + sample * (1.0 - keep)
                };
                Some(updated.to_bits())
            });
    }

    /// Returns the estimate decayed over the time since the endpoint was last picked
    /// or sampled, or `None` before the first sample.
    fn decayed(&self, now: u64) -> Option<f64> {
        let bits = self.ewma.load(Ordering::Acquire);
        if bits == NO_SAMPLE {
            return None;
        }
        let idle = now.saturating_sub(self.last_activity.load(Ordering::Relaxed));
        Some(f64::from_bits(bits) * decay_factor(idle))
    }
}

/// Returns `exp(-elapsed / EWMA_DECAY)` for `elapsed` in nanoseconds.
fn decay_factor(elapsed_nanos: u64) -> f64 {
    (-(elapsed_nanos as f64) / EWMA_DECAY.as_nanos() as f64).exp()
}

/// Converts a time to nanoseconds, saturating after about 584 years.
fn to_nanos(time: Duration) -> u64 {
    u64::try_from(time.as_nanos()).unwrap_or(u64::MAX)
}

/// Power of two choices with peak EWMA: draws two distinct eligible endpoints at
/// random, weighted by endpoint weight, and picks the one with the lower cost, the
/// decayed latency estimate times (in-flight requests + 1).
///
/// NOTE: a failure counts as a latency sample like a response does, so an endpoint
/// that fails fast looks fast. Health checks must make such an endpoint ineligible.
#[derive(Debug)]
pub(crate) struct PowerOfTwoChoices {
    weights: WeightTable,
    in_flight: InFlight,
    /// Shared through `Arc` like the in-flight counts, for the same reason.
    estimates: Vec<Arc<LatencyEstimate>>,
}

impl PowerOfTwoChoices {
    pub(crate) fn new(weights: WeightTable) -> Self {
        let count = weights.len();
        Self {
            weights,
            in_flight: InFlight::new(count),
            estimates: (0..count)
                .map(|_| Arc::new(LatencyEstimate::new()))
                .collect(),
        }
    }

    pub(crate) fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// Shares the in-flight count and latency estimate of endpoint `old_index` of
    /// `old` as those of `index`.
    pub(crate) fn share_endpoint(&mut self, index: usize, old: &Self, old_index: usize) {
        self.in_flight.share(index, &old.in_flight, old_index);
        if let (Some(estimate), Some(old_estimate)) =
            (self.estimates.get_mut(index), old.estimates.get(old_index))
        {
            *estimate = Arc::clone(old_estimate);
        }
    }

    /// Picks the cheaper of two drawn endpoints, or the only eligible one. The pick
    /// counts as activity, so an endpoint whose estimate had decayed gets its full
    /// estimate back and receives one probe at a time instead of a flood.
    pub(crate) fn pick(
        &self,
        random: u64,
        now: Duration,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut rng = SplitMix64::new(random);
        let first = self.weights.sample(&mut rng, eligible, None)?;
        let now = to_nanos(now);
        let chosen = match self.weights.sample(&mut rng, eligible, Some(first)) {
            None => first,
            Some(second) => {
                let prefer_first_on_tie = rng.next_u64() & 1 == 0;
                self.choose_cheaper(first, second, now, prefer_first_on_tie)
            }
        };
        self.estimates[chosen]
            .last_activity
            .fetch_max(now, Ordering::Relaxed);
        Some(chosen)
    }

    /// Compares the costs of two endpoints.
    ///
    /// An endpoint without samples borrows its rival's estimate, so the in-flight
    /// counts decide. A new endpoint then wins while it has fewer requests in flight
    /// than its rival, which neither starves it nor floods it before its first sample.
    fn choose_cheaper(
        &self,
        first: usize,
        second: usize,
        now: u64,
        prefer_first_on_tie: bool,
    ) -> usize {
        let (first_latency, second_latency) = match (
            self.estimates[first].decayed(now),
            self.estimates[second].decayed(now),
        ) {
            (Some(first), Some(second)) => (first, second),
            (Some(known), None) | (None, Some(known)) => (known, known),
            (None, None) => (1.0, 1.0),
        };
        let first_cost = first_latency * (self.in_flight.get(first) as f64 + 1.0);
        let second_cost = second_latency * (self.in_flight.get(second) as f64 + 1.0);
        if first_cost < second_cost || (first_cost == second_cost && prefer_first_on_tie) {
            first
        } else {
            second
        }
    }

    /// Records a finished request's latency as a sample, ignoring an index out of range.
    pub(crate) fn record(&self, index: usize, latency: Duration, now: Duration) {
        if let Some(estimate) = self.estimates.get(index) {
            estimate.record(latency, to_nanos(now));
        }
    }
}
