//! Cost of one pick for each balancing algorithm over 10 and 100 endpoints.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gatehouse_benches::endpoints;
use gatehouse_core::balance::{Balancer, PickInput};
use gatehouse_core::config::BalancerKind;

const KINDS: [(&str, BalancerKind); 6] = [
    ("round_robin", BalancerKind::RoundRobin),
    ("weighted_round_robin", BalancerKind::WeightedRoundRobin),
    ("random", BalancerKind::Random),
    ("least_outstanding", BalancerKind::LeastOutstanding),
    ("p2c_ewma", BalancerKind::P2cEwma),
    ("consistent_hash", BalancerKind::ConsistentHash),
];

fn balancer_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer_pick");
    for count in [10, 100] {
        let owned = endpoints(count);
        let ids: Vec<(&str, u32)> = owned
            .iter()
            .map(|(id, weight)| (id.as_str(), *weight))
            .collect();
        for (name, kind) in KINDS {
            let balancer = Balancer::new(kind, &ids);
            let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
            group.bench_function(BenchmarkId::new(name, count), |b| {
                b.iter(|| {
                    // A cheap xorshift replaces the platform's random source.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let input = PickInput {
                        hash: Some(state),
                        random: state,
                        now: Duration::from_secs(1),
                        eligible: &|_| true,
                    };
                    black_box(balancer.pick(black_box(&input)))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, balancer_pick);
criterion_main!(benches);
