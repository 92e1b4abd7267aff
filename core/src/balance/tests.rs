use std::collections::VecDeque;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;

use super::random::SplitMix64;
use super::{Balancer, PickInput, hash_key};
use crate::config::BalancerKind;

const ALL_KINDS: [BalancerKind; 6] = [
    BalancerKind::RoundRobin,
    BalancerKind::WeightedRoundRobin,
    BalancerKind::Random,
    BalancerKind::LeastOutstanding,
    BalancerKind::P2cEwma,
    BalancerKind::ConsistentHash,
];

fn endpoint_ids(count: usize) -> Vec<String> {
    (0..count)
        .map(|index| format!("10.0.{}.{}:8080", index / 256, index % 256))
        .collect()
}

fn build_with_ids(kind: BalancerKind, ids: &[String], weights: &[u32]) -> Balancer {
    let endpoints: Vec<(&str, u32)> = ids
        .iter()
        .map(String::as_str)
        .zip(weights.iter().copied())
        .collect();
    Balancer::new(kind, &endpoints)
}

fn build(kind: BalancerKind, weights: &[u32]) -> Balancer {
    build_with_ids(kind, &endpoint_ids(weights.len()), weights)
}

fn every_endpoint(_: usize) -> bool {
    true
}

fn pick(balancer: &Balancer, random: u64, now: Duration) -> Option<usize> {
    balancer.pick(&PickInput {
        hash: None,
        random,
        now,
        eligible: &every_endpoint,
    })
}

fn pick_hashed(balancer: &Balancer, hash: u64, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
    balancer.pick(&PickInput {
        hash: Some(hash),
        random: 0,
        now: Duration::ZERO,
        eligible,
    })
}

fn keys(count: usize) -> Vec<u64> {
    (0..count)
        .map(|key| hash_key(format!("user-{key}").as_bytes()))
        .collect()
}

/// Counts where picks land when each request finishes before the next pick starts.
fn count_sequential(balancer: &Balancer, endpoints: usize, picks: u64, seed: u64) -> Vec<u64> {
    let mut rng = SplitMix64::new(seed);
    let mut counts = vec![0; endpoints];
    for step in 0..picks {
        let now = Duration::from_millis(step);
        let index = pick(balancer, rng.next_u64(), now).expect("every endpoint is eligible");
        balancer.on_start(index);
        balancer.on_finish(index, Duration::from_millis(1), now);
        counts[index] += 1;
    }
    counts
}

/// Counts where picks land with `concurrency` requests in flight that finish in the
/// order they started, so every request stays in flight for the same number of picks.
fn count_concurrent(
    balancer: &Balancer,
    endpoints: usize,
    picks: u64,
    concurrency: usize,
    seed: u64,
) -> Vec<u64> {
    let mut rng = SplitMix64::new(seed);
    let mut counts = vec![0; endpoints];
    let mut in_flight = VecDeque::new();
    for step in 0..picks {
        let now = Duration::from_millis(step);
        if in_flight.len() == concurrency {
            let finished = in_flight.pop_front().expect("queue is full");
            balancer.on_finish(finished, Duration::from_millis(1), now);
        }
        let index = pick(balancer, rng.next_u64(), now).expect("every endpoint is eligible");
        balancer.on_start(index);
        in_flight.push_back(index);
        counts[index] += 1;
    }
    counts
}

/// Asserts that each endpoint's share of `counts` is within `tolerance`, relative,
/// of its share of the total weight. Run with `--nocapture` to see the shares.
fn assert_shares(label: &str, counts: &[u64], weights: &[u32], tolerance: f64) {
    let total_count: u64 = counts.iter().sum();
    let total_weight: u32 = weights.iter().sum();
    let shares: Vec<f64> = counts
        .iter()
        .map(|count| *count as f64 / total_count as f64)
        .collect();
    println!("{label}: weights {weights:?}, counts {counts:?}, shares {shares:.4?}");
    for (index, (share, weight)) in shares.iter().zip(weights).enumerate() {
        let expected = f64::from(*weight) / f64::from(total_weight);
        let error = (share - expected).abs() / expected;
        assert!(
            error <= tolerance,
            "{label}: endpoint {index} got share {share:.4}, expected {expected:.4} within {tolerance} relative (counts {counts:?})"
        );
    }
}

#[test]
fn balancer_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Balancer>();
}

#[test]
fn empty_endpoint_list_picks_none() {
    for kind in ALL_KINDS {
        let balancer = build(kind, &[]);
        assert_eq!(pick(&balancer, 7, Duration::ZERO), None, "{kind:?}");
        balancer.on_start(0);
        balancer.on_finish(0, Duration::from_millis(5), Duration::ZERO);
    }
}

#[test]
fn all_ineligible_picks_none() {
    for kind in ALL_KINDS {
        let balancer = build(kind, &[1, 2, 3]);
        for random in 0..20 {
            let input = PickInput {
                hash: Some(random),
                random,
                now: Duration::ZERO,
                eligible: &|_| false,
            };
            assert_eq!(balancer.pick(&input), None, "{kind:?}");
        }
    }
}

#[test]
fn extreme_weights_do_not_panic() {
    // Three maximum weights sum past u32::MAX, and a zero weight counts as 1.
    let weights = [u32::MAX, 0, u32::MAX, u32::MAX];
    for kind in ALL_KINDS {
        let balancer = build(kind, &weights);
        let counts = count_sequential(&balancer, weights.len(), 1_000, 3);
        assert_eq!(counts.iter().sum::<u64>(), 1_000, "{kind:?}");
        let only_zero_weight = PickInput {
            hash: Some(9),
            random: 9,
            now: Duration::ZERO,
            eligible: &|index| index == 1,
        };
        assert_eq!(balancer.pick(&only_zero_weight), Some(1), "{kind:?}");
    }
}

#[test]
fn random_splits_weights_beyond_u32() {
    let weights = [u32::MAX, u32::MAX, u32::MAX];
    let balancer = build(BalancerKind::Random, &weights);
    let counts = count_sequential(&balancer, weights.len(), 30_000, 5);
    assert_shares("random with maximum weights", &counts, &[1, 1, 1], 0.05);
}

#[test]
fn out_of_range_index_is_ignored() {
    for kind in ALL_KINDS {
        let balancer = build(kind, &[1, 1]);
        balancer.on_start(2);
        balancer.on_start(usize::MAX);
        balancer.on_finish(usize::MAX, Duration::MAX, Duration::MAX);
        assert!(pick(&balancer, 1, Duration::MAX).is_some(), "{kind:?}");
    }
}

#[test]
fn round_robin_exact_order() {
    let balancer = build(BalancerKind::RoundRobin, &[5, 1, 1]);
    let picks: Vec<Option<usize>> = (0..7)
        .map(|random| pick(&balancer, random, Duration::ZERO))
        .collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0].map(Some));
}

#[test]
fn round_robin_skip_gives_no_double_turn() {
    let balancer = build(BalancerKind::RoundRobin, &[1, 1, 1, 1]);
    let without_one = |index: usize| index != 1;
    let picks: Vec<Option<usize>> = (0..6)
        .map(|_| {
            balancer.pick(&PickInput {
                hash: None,
                random: 0,
                now: Duration::ZERO,
                eligible: &without_one,
            })
        })
        .collect();
    assert_eq!(picks, [0, 2, 3, 0, 2, 3].map(Some));
    // Endpoint 1 was skipped in place, so the order resumes after the last pick.
    assert_eq!(pick(&balancer, 0, Duration::ZERO), Some(0));
    assert_eq!(pick(&balancer, 0, Duration::ZERO), Some(1));
}

#[test]
fn round_robin_stays_exact_across_threads() {
    let balancer = build(BalancerKind::RoundRobin, &[1, 1, 1, 1]);
    let per_thread = 2_500;
    let counts = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut counts = [0u64; 4];
                    for _ in 0..per_thread {
                        counts[pick(&balancer, 0, Duration::ZERO).expect("eligible")] += 1;
                    }
                    counts
                })
            })
            .collect();
        workers.into_iter().fold([0u64; 4], |mut total, worker| {
            let counts = worker.join().expect("worker panicked");
            for (sum, count) in total.iter_mut().zip(counts) {
                *sum += count;
            }
            total
        })
    });
    assert_eq!(counts, [2_500; 4]);
}

#[test]
fn smooth_weighted_matches_nginx_sequence() {
    let balancer = build(BalancerKind::WeightedRoundRobin, &[5, 1, 1]);
    let picks: Vec<Option<usize>> = (0..14)
        .map(|_| pick(&balancer, 0, Duration::ZERO))
        .collect();
    // a a b a c a a, twice: the sequence that the nginx commit "Upstream: smooth
    // weighted round-robin balancing" gives for weights a=5, b=1, c=1.
    let expected = [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0].map(Some);
    assert_eq!(picks, expected);
}

#[test]
fn smooth_weighted_exact_shares() {
    let weights = [1, 2, 3, 4];
    let balancer = build(BalancerKind::WeightedRoundRobin, &weights);
    // Every cycle of 10 picks gives each endpoint exactly its weight.
    let counts = count_sequential(&balancer, weights.len(), 10_000, 0);
    assert_eq!(counts, [1_000, 2_000, 3_000, 4_000]);
}

#[test]
fn smooth_weighted_interleaves_heavy_endpoint() {
    let balancer = build(BalancerKind::WeightedRoundRobin, &[3, 3]);
    let picks: Vec<Option<usize>> = (0..6).map(|_| pick(&balancer, 0, Duration::ZERO)).collect();
    assert_eq!(picks, [0, 1, 0, 1, 0, 1].map(Some));
}

#[test]
fn smooth_weighted_skips_ineligible() {
    let weights = [5, 1, 1];
    let balancer = build(BalancerKind::WeightedRoundRobin, &weights);
    let without_first = |index: usize| index != 0;
    let mut counts = [0u64; 3];
    for _ in 0..100 {
        let input = PickInput {
            hash: None,
            random: 0,
            now: Duration::ZERO,
            eligible: &without_first,
        };
        counts[balancer.pick(&input).expect("two are eligible")] += 1;
    }
    assert_eq!(counts, [0, 50, 50]);
}

#[test]
fn smooth_weighted_exact_across_threads() {
    let weights = [1, 2, 3, 4];
    let balancer = build(BalancerKind::WeightedRoundRobin, &weights);
    let counts = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| count_sequential(&balancer, weights.len(), 2_500, 0)))
            .collect();
        workers
            .into_iter()
            .fold(vec![0u64; 4], |mut total, worker| {
                let counts = worker.join().expect("worker panicked");
                for (sum, count) in total.iter_mut().zip(counts) {
                    *sum += count;
                }
                total
            })
    });
    assert_eq!(counts, [1_000, 2_000, 3_000, 4_000]);
}

#[test]
fn random_follows_weights() {
    let weights = [1, 2, 3, 4];
    let balancer = build(BalancerKind::Random, &weights);
    let counts = count_sequential(&balancer, weights.len(), 100_000, 11);
    assert_shares("random", &counts, &weights, 0.03);
}

#[test]
fn random_follows_weights_among_eligible() {
    let weights = [1, 2, 3, 4];
    let balancer = build(BalancerKind::Random, &weights);
    let without_last = |index: usize| index != 3;
    let mut rng = SplitMix64::new(13);
    let mut counts = vec![0u64; 3];
    for _ in 0..60_000 {
        let input = PickInput {
            hash: None,
            random: rng.next_u64(),
            now: Duration::ZERO,
            eligible: &without_last,
        };
        counts[balancer.pick(&input).expect("three are eligible")] += 1;
    }
    assert_shares("random without endpoint 3", &counts, &weights[..3], 0.03);
}

#[test]
fn least_outstanding_prefers_idle_endpoint() {
    let balancer = build(BalancerKind::LeastOutstanding, &[1, 1, 1]);
    balancer.on_start(0);
    balancer.on_start(1);
    for random in 0..100 {
        assert_eq!(pick(&balancer, random, Duration::ZERO), Some(2));
    }
    balancer.on_finish(0, Duration::from_millis(1), Duration::ZERO);
    let picks: Vec<Option<usize>> = (0..100)
        .map(|random| pick(&balancer, random, Duration::ZERO))
        .collect();
    assert!(picks.contains(&Some(0)), "idle endpoint 0 was never picked");
    assert!(picks.contains(&Some(2)), "idle endpoint 2 was never picked");
    assert!(!picks.contains(&Some(1)), "busy endpoint 1 was picked");
}

#[test]
fn least_outstanding_scales_by_weight() {
    let balancer = build(BalancerKind::LeastOutstanding, &[1, 3]);
    balancer.on_start(0);
    balancer.on_start(1);
    balancer.on_start(1);
    // Endpoint 1 has 2 in flight per 3 units of weight, below endpoint 0's 1 per 1.
    for random in 0..100 {
        assert_eq!(pick(&balancer, random, Duration::ZERO), Some(1));
    }
}

#[test]
fn least_outstanding_unmatched_finish_keeps_zero() {
    let balancer = build(BalancerKind::LeastOutstanding, &[1, 1]);
    balancer.on_finish(0, Duration::from_millis(1), Duration::ZERO);
    balancer.on_finish(0, Duration::from_millis(1), Duration::ZERO);
    balancer.on_start(1);
    // Had the count of endpoint 0 wrapped below zero, endpoint 1 would win.
    for random in 0..100 {
        assert_eq!(pick(&balancer, random, Duration::ZERO), Some(0));
    }
}

#[test]
fn least_outstanding_claims_spread_simultaneous_requests() {
    // Four threads claim at the same moment and hold their claims. Each sees the
    // others' claims, so every endpoint gets exactly one, whatever the interleaving.
    const THREADS: usize = 4;
    for round in 0..300_u64 {
        let balancer = build(BalancerKind::LeastOutstanding, &[1; THREADS]);
        let barrier = std::sync::Barrier::new(THREADS);
        let claimed: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS as u64)
                .map(|thread| {
                    let balancer = &balancer;
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        let claim = balancer
                            .claim(&PickInput {
                                hash: None,
                                random: round * 31 + thread,
                                now: Duration::ZERO,
                                eligible: &every_endpoint,
                            })
                            .expect("every endpoint is eligible");
                        let index = claim.index();
                        // Hold the claim until every thread has claimed.
                        barrier.wait();
                        index
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("claiming thread"))
                .collect()
        });
        let mut sorted = claimed.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..THREADS).collect::<Vec<_>>(), "round {round}");
    }
}

#[test]
fn dropped_claim_takes_back_its_start() {
    let balancer = build(BalancerKind::LeastOutstanding, &[1, 1]);
    let input = PickInput {
        hash: None,
        random: 3,
        now: Duration::ZERO,
        eligible: &every_endpoint,
    };
    let mut sent = balancer.claim(&input).expect("eligible");
    let unsent = balancer.claim(&input).expect("eligible");
    assert_ne!(sent.index(), unsent.index());
    let unsent_index = unsent.index();
    drop(unsent);
    // The unsent claim no longer counts, so its endpoint is the idle one.
    for random in 0..50 {
        assert_eq!(pick(&balancer, random, Duration::ZERO), Some(unsent_index));
    }
    sent.finish(Duration::from_millis(1), Duration::ZERO);
    sent.finish(Duration::from_millis(1), Duration::ZERO);
    drop(sent);
    let picks: Vec<Option<usize>> = (0..50)
        .map(|random| pick(&balancer, random, Duration::ZERO))
        .collect();
    assert!(
        picks.contains(&Some(0)) && picks.contains(&Some(1)),
        "{picks:?}"
    );
}

#[test]
fn least_outstanding_follows_weights_sequentially() {
    let weights = [1, 2, 3, 4];
    let balancer = build(BalancerKind::LeastOutstanding, &weights);
    let counts = count_sequential(&balancer, weights.len(), 100_000, 17);
    assert_shares("least outstanding, sequential", &counts, &weights, 0.03);
}

#[test]
fn least_outstanding_follows_weights_concurrently() {
    let weights = [1, 2, 3, 4];
    let balancer = build(BalancerKind::LeastOutstanding, &weights);
    let counts = count_concurrent(&balancer, weights.len(), 100_000, 50, 19);
    assert_shares("least outstanding, 50 in flight", &counts, &weights, 0.03);
}

/// Runs sequential P2C requests one millisecond apart from `start`, each finishing
/// with the latency `latency_of` gives its endpoint, and returns the pick counts.
fn run_p2c(
    balancer: &Balancer,
    endpoints: usize,
    start: Duration,
    picks: u64,
    latency_of: &dyn Fn(usize) -> Duration,
    rng: &mut SplitMix64,
) -> Vec<u64> {
    let mut counts = vec![0; endpoints];
    for step in 0..picks {
        let now = start + Duration::from_millis(step);
        let index = pick(balancer, rng.next_u64(), now).expect("every endpoint is eligible");
        balancer.on_start(index);
        balancer.on_finish(index, latency_of(index), now);
        counts[index] += 1;
    }
    counts
}

#[test]
fn p2c_prefers_fast_endpoint() {
    let balancer = build(BalancerKind::P2cEwma, &[1, 1]);
    let latency_of = |index: usize| Duration::from_millis(if index == 0 { 100 } else { 10 });
    let mut rng = SplitMix64::new(23);
    let counts = run_p2c(&balancer, 2, Duration::ZERO, 10_000, &latency_of, &mut rng);
    println!("p2c, 100 ms against 10 ms over 10 s: counts {counts:?}");
    assert!(counts[1] >= 9_900, "fast endpoint got only {counts:?}");
}

#[test]
fn p2c_compares_two_distinct_endpoints() {
    let balancer = build(BalancerKind::P2cEwma, &[1, 1]);
    let now = Duration::from_secs(1);
    balancer.on_start(0);
    balancer.on_finish(0, Duration::from_millis(100), now);
    balancer.on_start(1);
    balancer.on_finish(1, Duration::from_millis(1), now);
    // Drawing the slow endpoint twice would pick it a quarter of the time.
    let mut rng = SplitMix64::new(29);
    for _ in 0..1_000 {
        assert_eq!(pick(&balancer, rng.next_u64(), now), Some(1));
    }
}

#[test]
fn p2c_retries_recovered_endpoint() {
    let balancer = build(BalancerKind::P2cEwma, &[1, 1]);
    let mut rng = SplitMix64::new(31);
    let slow_first = |index: usize| Duration::from_millis(if index == 0 { 100 } else { 10 });
    run_p2c(&balancer, 2, Duration::ZERO, 30_000, &slow_first, &mut rng);

    // Endpoint 0 recovers and becomes the faster one. Its estimate only changes once
    // it receives requests again, which the decay of its idle estimate brings about.
    let recovered = |index: usize| Duration::from_millis(if index == 0 { 5 } else { 10 });
    let early = run_p2c(
        &balancer,
        2,
        Duration::from_secs(30),
        30_000,
        &recovered,
        &mut rng,
    );
    let late = run_p2c(
        &balancer,
        2,
        Duration::from_secs(60),
        30_000,
        &recovered,
        &mut rng,
    );
    println!("p2c after recovery: 30 to 60 s {early:?}, 60 to 90 s {late:?}");
    assert!(early[0] > 0, "recovered endpoint got no traffic: {early:?}");
    assert!(
        late[0] > late[1],
        "recovered faster endpoint is not preferred: {late:?}"
    );
    assert!(late[1] > 0, "slower endpoint was starved: {late:?}");
}

#[test]
fn p2c_idle_estimate_decays() {
    let balancer = build(BalancerKind::P2cEwma, &[1, 1]);
    balancer.on_start(0);
    balancer.on_finish(0, Duration::from_millis(30), Duration::ZERO);
    balancer.on_start(1);
    balancer.on_finish(1, Duration::from_millis(10), Duration::ZERO);

    // Picks every 100 ms keep endpoint 1 active, so its estimate stays near 10 ms,
    // while the 30 ms of idle endpoint 0 decays as 30 * exp(-t / 10 s). That drops
    // below 10 * exp(-0.1 s / 10 s) = 9.9 ms once t exceeds 10 s * ln(30 / 9.9), 11.09 s.
    let first_retry = (1..=300)
        .map(|step| Duration::from_millis(100 * step))
        .find(|now| pick(&balancer, 0, *now) == Some(0));
    assert_eq!(first_retry, Some(Duration::from_millis(11_100)));
}

/// Sends 1,000 sequential 10 ms requests to endpoints 0 and 1 of a three-endpoint P2C
/// balancer, so that endpoint 2 is the only one without samples.
fn warm_up_all_but_last(balancer: &Balancer, rng: &mut SplitMix64) {
    let warm = |index: usize| index != 2;
    let mut counts = [0u64; 3];
    for step in 0..1_000 {
        let now = Duration::from_millis(step);
        let input = PickInput {
            hash: None,
            random: rng.next_u64(),
            now,
            eligible: &warm,
        };
        let index = balancer.pick(&input).expect("two are eligible");
        balancer.on_start(index);
        balancer.on_finish(index, Duration::from_millis(10), now);
        counts[index] += 1;
    }
    assert!(
        counts[0] > 0,
        "warm-up never sampled endpoint 0: {counts:?}"
    );
    assert!(
        counts[1] > 0,
        "warm-up never sampled endpoint 1: {counts:?}"
    );
}

#[test]
fn p2c_new_endpoint_burst_share() {
    let balancer = build(BalancerKind::P2cEwma, &[1, 1, 1]);
    let mut rng = SplitMix64::new(37);
    warm_up_all_but_last(&balancer, &mut rng);

    // A burst of 30 requests that all stay in flight, so no sample reaches endpoint 2.
    let mut counts = [0u64; 3];
    for _ in 0..30 {
        let index = pick(&balancer, rng.next_u64(), Duration::from_secs(1)).expect("eligible");
        balancer.on_start(index);
        counts[index] += 1;
    }
    println!("p2c burst with a new endpoint: counts {counts:?}");
    assert!(counts[2] >= 5, "new endpoint starved: {counts:?}");
    assert!(counts[2] <= 15, "new endpoint flooded: {counts:?}");
}

#[test]
fn p2c_new_endpoint_sequential_share() {
    let balancer = build(BalancerKind::P2cEwma, &[1, 1, 1]);
    let mut rng = SplitMix64::new(43);
    warm_up_all_but_last(&balancer, &mut rng);

    let same_latency = |_: usize| Duration::from_millis(10);
    let counts = run_p2c(
        &balancer,
        3,
        Duration::from_secs(1),
        3_000,
        &same_latency,
        &mut rng,
    );
    println!("p2c sequential with a new endpoint: counts {counts:?}");
    assert!(counts[2] >= 750, "new endpoint starved: {counts:?}");
    assert!(counts[2] <= 1_250, "new endpoint flooded: {counts:?}");
}

#[test]
fn consistent_hash_same_key_same_endpoint() {
    let balancer = build(BalancerKind::ConsistentHash, &[1, 1, 1, 1, 1]);
    for hash in keys(1_000) {
        let first = pick_hashed(&balancer, hash, &every_endpoint);
        let input = PickInput {
            hash: Some(hash),
            random: !hash,
            now: Duration::from_secs(9),
            eligible: &every_endpoint,
        };
        assert_eq!(balancer.pick(&input), first);
    }
}

#[test]
fn consistent_hash_follows_weights() {
    let weights = [1, 2, 3, 4];
    let balancer = build(BalancerKind::ConsistentHash, &weights);
    let mut counts = vec![0u64; weights.len()];
    for hash in keys(100_000) {
        counts[pick_hashed(&balancer, hash, &every_endpoint).expect("eligible")] += 1;
    }
    assert_shares("consistent hash", &counts, &weights, 0.15);
}

#[test]
fn consistent_hash_without_key_spreads() {
    let weights = [1, 1, 1, 1];
    let balancer = build(BalancerKind::ConsistentHash, &weights);
    let counts = count_sequential(&balancer, weights.len(), 40_000, 41);
    assert_shares("consistent hash without key", &counts, &weights, 0.15);
}

/// Maps each key to the id of its endpoint.
fn ring_owners(ids: &[String], keys: &[u64]) -> Vec<String> {
    let balancer = build_with_ids(BalancerKind::ConsistentHash, ids, &vec![1; ids.len()]);
    keys.iter()
        .map(|hash| {
            let index = pick_hashed(&balancer, *hash, &every_endpoint).expect("eligible");
            ids[index].clone()
        })
        .collect()
}

#[test]
fn consistent_hash_removal_moves_only_its_keys() {
    let ids = endpoint_ids(10);
    let keys = keys(10_000);
    let before = ring_owners(&ids, &keys);
    let removed = &ids[3];
    let remaining: Vec<String> = ids.iter().filter(|id| *id != removed).cloned().collect();
    let after = ring_owners(&remaining, &keys);

    let mut moved = 0;
    for (old, new) in before.iter().zip(&after) {
        if old == removed {
            moved += 1;
        } else {
            assert_eq!(old, new, "a key of a remaining endpoint moved");
        }
    }
    let moved_fraction = f64::from(moved) / keys.len() as f64;
    println!("consistent hash: removing 1 of 10 endpoints moved {moved_fraction:.4} of keys");
    assert!(
        moved_fraction >= 0.05,
        "only {moved_fraction} of keys moved"
    );
    assert!(moved_fraction <= 0.15, "{moved_fraction} of keys moved");

    // Adding the endpoint back, even at another position in the list, restores every key.
    let mut restored_ids = remaining.clone();
    restored_ids.push(removed.clone());
    assert_eq!(ring_owners(&restored_ids, &keys), before);
}

#[test]
fn consistent_hash_walks_past_ineligible_owner() {
    let balancer = build(BalancerKind::ConsistentHash, &[1, 1, 1, 1, 1]);
    let without_two = |index: usize| index != 2;
    let mut rerouted = 0;
    for hash in keys(2_000) {
        let owner = pick_hashed(&balancer, hash, &every_endpoint).expect("eligible");
        let fallback = pick_hashed(&balancer, hash, &without_two).expect("four are eligible");
        if owner == 2 {
            assert_ne!(fallback, 2);
            assert_eq!(
                pick_hashed(&balancer, hash, &without_two),
                Some(fallback),
                "fallback is not stable"
            );
            rerouted += 1;
        } else {
            assert_eq!(fallback, owner, "a key of an eligible owner moved");
        }
    }
    assert!(rerouted > 0, "no key belonged to endpoint 2");
}

#[test]
fn consistent_hash_frozen_mapping() {
    // These values pin the ring layout on every platform. If this test fails, the
    // change remaps keys of deployed gateways, which must be a deliberate decision.
    assert_eq!(hash_key(b"user-0"), 17_000_898_432_830_873_972);
    let balancer = build(BalancerKind::ConsistentHash, &[1, 1, 1, 1, 1]);
    let owners: Vec<usize> = keys(8)
        .into_iter()
        .map(|hash| pick_hashed(&balancer, hash, &every_endpoint).expect("eligible"))
        .collect();
    assert_eq!(owners, [1, 2, 3, 4, 0, 3, 0, 3]);
    let weighted = build(BalancerKind::ConsistentHash, &[1, 2, 3]);
    let weighted_owners: Vec<usize> = keys(8)
        .into_iter()
        .map(|hash| pick_hashed(&weighted, hash, &every_endpoint).expect("eligible"))
        .collect();
    assert_eq!(weighted_owners, [2, 2, 1, 1, 2, 1, 1, 2]);
}

fn weight_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 1u32..=10_000, 1 => Just(0), 1 => Just(u32::MAX)]
}

proptest! {
    #[test]
    fn pick_respects_eligibility(
        kind in proptest::sample::select(ALL_KINDS.to_vec()),
        weights in vec(weight_strategy(), 0..12),
        mask in vec(any::<bool>(), 12),
        randoms in vec(any::<u64>(), 1..16),
        hashed in any::<bool>(),
    ) {
        let balancer = build(kind, &weights);
        let eligible = |index: usize| mask.get(index).copied().unwrap_or(false);
        let any_eligible = (0..weights.len()).any(eligible);
        for (step, random) in randoms.iter().enumerate() {
            let now = Duration::from_millis(*random % 100_000);
            let hash = hashed.then_some(random.rotate_left(17));
            let picked = balancer.pick(&PickInput { hash, random: *random, now, eligible: &eligible });
            match picked {
                Some(index) => {
                    prop_assert!(eligible(index), "{kind:?} picked ineligible endpoint {index}");
                    balancer.on_start(index);
                    if step % 2 == 0 {
                        balancer.on_finish(index, Duration::from_millis(*random % 1_000), now);
                    }
                }
                None => prop_assert!(!any_eligible, "{kind:?} picked none with an eligible endpoint"),
            }
        }
    }
}
