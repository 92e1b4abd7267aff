//! Route lookup cost for tables of 1, 100 and 10,000 routes.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gatehouse_benches::{request_for, routes};
use gatehouse_core::route::{RequestView, RouteTable};
use http::{HeaderMap, Method};
use std::hint::black_box;

fn route_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    let headers = HeaderMap::new();
    for count in [1, 100, 10_000] {
        let table = RouteTable::build(&routes(count)).expect("benchmark routes are valid");
        // The last route is the worst case for any table that scans in order.
        let target = count - 1;
        let (host, path) = request_for(target);
        let view = RequestView {
            host: &host,
            method: &Method::GET,
            path: &path,
            query: None,
            headers: &headers,
        };
        assert_eq!(
            table.find(&view),
            Some(target),
            "benchmark request must match its route"
        );
        group.bench_with_input(BenchmarkId::from_parameter(count), &view, |b, view| {
            b.iter(|| table.find(black_box(view)))
        });
    }
    group.finish();
}

criterion_group!(benches, route_match);
criterion_main!(benches);
