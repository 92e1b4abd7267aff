//! Load-balancing algorithms, which choose the endpoint of an upstream that receives
//! each request.
//!
//! A [`Balancer`] is built once per upstream and shared by every worker thread, so its
//! state lives in atomics. Smooth weighted round robin is the exception and takes a
//! short lock, because each of its picks updates every endpoint's state together.
//! Balancers read no clock and no random source of their own. The caller passes both
//! in [`PickInput`], which keeps the algorithms identical on native and WebAssembly
//! targets and deterministic under test.

mod least;
mod p2c;
mod random;
mod ring;
mod round_robin;
mod weights;

#[cfg(test)]
mod tests;

use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::config::BalancerKind;
use least::LeastOutstanding;
use p2c::PowerOfTwoChoices;
use ring::HashRing;
use round_robin::{RoundRobin, SmoothWeighted};
use weights::{WeightTable, effective_weight};

pub use p2c::EWMA_DECAY;

/// Inputs to one pick.
pub struct PickInput<'a> {
    /// Hash of the request key, for consistent hashing; [`hash_key`] computes it.
    /// `None` makes consistent hashing use `random` instead.
    pub hash: Option<u64>,
    /// A fresh random number. Algorithms that need more derive them from this one.
    pub random: u64,
    /// Current monotonic time, measured from an origin that stays fixed for the
    /// balancer's lifetime.
    pub now: Duration,
    /// Whether an endpoint may be picked, such as being healthy and not yet tried by
    /// this request. It may be called several times per endpoint and must not call
    /// back into the same balancer, because smooth weighted round robin calls it
    /// while holding its lock.
    pub eligible: &'a dyn Fn(usize) -> bool,
}

impl std::fmt::Debug for PickInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickInput")
            .field("hash", &self.hash)
            .field("random", &self.random)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// Hashes a request key, such as a header value or client address, for
/// [`PickInput::hash`].
///
/// The hash is xxh3 with a fixed seed, so a key maps to the same endpoint on every
/// platform and in every release that keeps the seed.
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, ring::HASH_SEED)
}

/// A load balancer over a fixed list of endpoints, shared across threads.
///
/// Picks return indexes into the endpoint list given to [`Balancer::new`]. A pick
/// returns `None` only when no endpoint is eligible. Weights of 0, which configuration
/// validation rejects, count as 1.
///
/// Each [`BalancerKind`] treats weights and load as follows:
/// - `RoundRobin` takes eligible endpoints in config order and ignores weights.
/// - `WeightedRoundRobin` is nginx's smooth weighted round robin.
/// - `Random` draws an eligible endpoint with probability proportional to its weight.
/// - `LeastOutstanding` picks the fewest in-flight requests per unit of weight and
///   breaks ties with a draw weighted like `Random`.
/// - `P2cEwma` draws two distinct eligible endpoints weighted like `Random` and picks
///   the one with the lower latency estimate times (in-flight requests + 1). The
///   estimate decays with the time constant [`EWMA_DECAY`].
/// - `ConsistentHash` places `160 * weight` virtual nodes per endpoint on a hash ring,
///   with fewer per unit of weight when the total would exceed 2^18 points.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
}

#[derive(Debug)]
enum Algorithm {
    RoundRobin(RoundRobin),
    WeightedRoundRobin(SmoothWeighted),
    Random(WeightTable),
    LeastOutstanding(LeastOutstanding),
    P2cEwma(PowerOfTwoChoices),
    ConsistentHash(HashRing),
}

impl Balancer {
    /// Creates a balancer over endpoints given as `(id, weight)` in config order, where
    /// the id is `host:port`.
    ///
    /// Only consistent hashing reads the ids, to place endpoints on the ring. The
    /// other algorithms know endpoints by index.
    pub fn new(kind: BalancerKind, endpoints: &[(&str, u32)]) -> Self {
        let weights = || {
            endpoints
                .iter()
                .map(|(_, weight)| effective_weight(*weight))
        };
        let algorithm = match kind {
            BalancerKind::RoundRobin => Algorithm::RoundRobin(RoundRobin::new(endpoints.len())),
            BalancerKind::WeightedRoundRobin => {
                Algorithm::WeightedRoundRobin(SmoothWeighted::new(weights()))
            }
            BalancerKind::Random => Algorithm::Random(WeightTable::new(weights())),
            BalancerKind::LeastOutstanding => {
                Algorithm::LeastOutstanding(LeastOutstanding::new(WeightTable::new(weights())))
            }
            BalancerKind::P2cEwma => {
                Algorithm::P2cEwma(PowerOfTwoChoices::new(WeightTable::new(weights())))
            }
            BalancerKind::ConsistentHash => {
                let ring_endpoints: Vec<(&str, u64)> = endpoints
                    .iter()
                    .map(|(id, weight)| (*id, effective_weight(*weight)))
                    .collect();
                Algorithm::ConsistentHash(HashRing::new(&ring_endpoints))
            }
        };
        Self { algorithm }
    }

    /// Picks an eligible endpoint and returns its index, or `None` when no endpoint is
    /// eligible.
    ///
    /// Round robin and smooth weighted round robin advance their position, and P2C
    /// marks the chosen endpoint as active. Follow a pick that sends a request with
    /// [`Balancer::on_start`].
    pub fn pick(&self, input: &PickInput<'_>) -> Option<usize> {
        let eligible = input.eligible;
        match &self.algorithm {
            Algorithm::RoundRobin(round_robin) => round_robin.pick(eligible),
            Algorithm::WeightedRoundRobin(smooth) => smooth.pick(eligible),
            Algorithm::Random(table) => {
                table.sample(&mut random::SplitMix64::new(input.random), eligible, None)
            }
            Algorithm::LeastOutstanding(least) => least.pick(input.random, eligible),
            Algorithm::P2cEwma(p2c) => p2c.pick(input.random, input.now, eligible),
            Algorithm::ConsistentHash(ring) => {
                ring.pick(input.hash.unwrap_or(input.random), eligible)
            }
        }
    }

    /// Picks an eligible endpoint and records that a request to it started, as one
    /// step, or returns `None` when no endpoint is eligible.
    ///
    /// Least outstanding requests counts the request in the same atomic step as the
    /// pick, so concurrent requests on different threads see each other and spread
    /// out. Dropping the claim without [`Claim::finish`] takes the count back.
    pub fn claim(&self, input: &PickInput<'_>) -> Option<Claim<'_>> {
        let index = match &self.algorithm {
            Algorithm::LeastOutstanding(least) => least.claim(input.random, input.eligible)?,
            _ => {
                let index = self.pick(input)?;
                self.on_start(index);
                index
            }
        };
        Some(Claim {
            balancer: self,
            index,
            open: true,
        })
    }

    /// Returns the requests in flight to endpoint `index`, for algorithms that count
    /// them (least outstanding requests and P2C), or `None` for the others.
    pub fn in_flight(&self, index: usize) -> Option<u64> {
        match &self.algorithm {
            Algorithm::LeastOutstanding(least) => Some(least.in_flight().get(index)),
            Algorithm::P2cEwma(p2c) => Some(p2c.in_flight().get(index)),
            _ => None,
        }
    }

    /// Takes over the per-endpoint state of endpoint `old_index` of `old` for endpoint
    /// `index`: the in-flight count of least outstanding requests, and the in-flight
    /// count and latency estimate of P2C. Both balancers must use the same algorithm;
    /// otherwise, and for algorithms without per-endpoint state, nothing changes.
    ///
    /// The state is shared, not copied, so requests still running on `old` update it
    /// when they finish. Returns whether any state was taken over.
    pub fn share_endpoint(&mut self, index: usize, old: &Balancer, old_index: usize) -> bool {
        match (&mut self.algorithm, &old.algorithm) {
            (Algorithm::LeastOutstanding(least), Algorithm::LeastOutstanding(old)) => {
                least
                    .in_flight_mut()
                    .share(index, old.in_flight(), old_index);
                true
            }
            (Algorithm::P2cEwma(p2c), Algorithm::P2cEwma(old)) => {
                p2c.share_endpoint(index, old, old_index);
                true
            }
            _ => false,
        }
    }

    /// Records that a request to endpoint `index` started. Indexes out of range are
    /// ignored.
    pub fn on_start(&self, index: usize) {
        match &self.algorithm {
            Algorithm::LeastOutstanding(least) => least.in_flight().increment(index),
            Algorithm::P2cEwma(p2c) => p2c.in_flight().increment(index),
            _ => {}
        }
    }

    /// Takes back a start whose request was never sent.
    fn release(&self, index: usize) {
        match &self.algorithm {
            Algorithm::LeastOutstanding(least) => least.in_flight().decrement(index),
            Algorithm::P2cEwma(p2c) => p2c.in_flight().decrement(index),
            _ => {}
        }
    }

    /// Records that a request to endpoint `index` finished, because its response head
    /// arrived or it failed, `latency` after it started. Call it once per
    /// [`Balancer::on_start`]. Indexes out of range are ignored.
    pub fn on_finish(&self, index: usize, latency: Duration, now: Duration) {
        match &self.algorithm {
            Algorithm::LeastOutstanding(least) => least.in_flight().decrement(index),
            Algorithm::P2cEwma(p2c) => {
                p2c.in_flight().decrement(index);
                p2c.record(index, latency, now);
            }
            _ => {}
        }
    }
}

/// A request counted as started on one endpoint, from [`Balancer::claim`].
#[derive(Debug)]
pub struct Claim<'b> {
    balancer: &'b Balancer,
    index: usize,
    /// Whether the start is still counted, so that drop must take it back.
    open: bool,
}

impl Claim<'_> {
    /// Index of the claimed endpoint.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Records that the request finished `latency` after it started, as
    /// [`Balancer::on_finish`] does. Later calls do nothing.
    pub fn finish(&mut self, latency: Duration, now: Duration) {
        if std::mem::take(&mut self.open) {
            self.balancer.on_finish(self.index, latency, now);
        }
    }
}

impl Drop for Claim<'_> {
    /// Takes back the start of a request that was never sent, without a latency sample.
    fn drop(&mut self) {
        if std::mem::take(&mut self.open) {
            self.balancer.release(self.index);
        }
    }
}
