//! Cost of one rate-limit decision: in the process-local store, uncontended and from
//! several threads at once, and in Redis (`strict` mode) next to a plain `INCR` round
//! trip on the same server, measured in the same run.
//!
//! The Redis benchmarks start `redis-server` on a free loopback port and stop it by
//! its PID afterwards. Without `redis-server` on `PATH`, they are skipped with a
//! message.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gatehouse::counters::NativeCounters;
use gatehouse_core::config::{ConfigDuration, RedisStoreConfig, StoreConfig, StoreMode};
use gatehouse_core::limit::{GcraLimit, Limit, MemoryCounters};
use gatehouse_core::platform::{CounterRequest, Counters};

/// Returns a limit that never rejects during a benchmark, so every decision writes
/// state.
fn generous_limit() -> Limit {
    Limit::Gcra(GcraLimit::new(1_000_000, Duration::from_secs(1), 1_000_000_000).unwrap())
}

fn local_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_limit_local");
    let limit = generous_limit();
    let store = MemoryCounters::new(100_000);
    let mut now = 1_000_000_u64;
    group.bench_function("uncontended", |b| {
        b.iter(|| {
            now += 1;
            black_box(store.decide(black_box("policy\u{1f}192.0.2.1"), &limit, 1, now))
        })
    });

    // Each thread decides for its own keys, as clients of one gateway do. The store is
    // shared, so this shows whether decisions scale without a global lock.
    let store = Arc::new(MemoryCounters::new(100_000));
    for threads in [1, 2, 4] {
        group.bench_with_input(
            BenchmarkId::new("threads", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iterations| {
                    let per_thread = iterations.div_ceil(threads);
                    let started = Instant::now();
                    std::thread::scope(|scope| {
                        for thread in 0..threads {
                            let store = Arc::clone(&store);
                            scope.spawn(move || {
                                for index in 0..per_thread {
                                    let key = format!("policy\u{1f}client-{thread}-{}", index % 64);
                                    black_box(store.decide(&key, &limit, 1, 1_000_000 + index));
                                }
                            });
                        }
                    });
                    // Wall time for all decisions of all threads, so criterion reports
                    // the time per decision of the whole process: perfect scaling halves
                    // it when the threads double, up to the number of cores.
                    started.elapsed()
                })
            },
        );
    }
    group.finish();
}

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Option<Self> {
        let path = std::env::var_os("PATH")?;
        let binary = std::env::split_paths(&path)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Self { child, port };
        let client = redis::Client::open(server.url()).ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut connection) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut connection).is_ok() {
                    return Some(server);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_decision(c: &mut Criterion) {
    let Some(server) = RedisServer::start() else {
        eprintln!("skipped rate_limit_redis: redis-server is not on PATH or did not start");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("Tokio runtime");
    let store = RedisStoreConfig {
        url: server.url(),
        password: None,
        username: None,
        pool_size: 1,
        timeout: ConfigDuration::from_millis(1_000),
        async_max_in_flight: 8,
        error_log_interval: ConfigDuration::from_millis(10_000),
    };
    let stores = BTreeMap::from([("bench".to_owned(), StoreConfig::Redis(store))]);
    let counters = Arc::new(NativeCounters::from_config(&stores).expect("store"));
    let client = redis::Client::open(server.url()).expect("url");
    let connection = runtime
        .block_on(client.get_multiplexed_async_connection())
        .expect("connect");
    let limit = generous_limit();

    let mut group = c.benchmark_group("rate_limit_redis");
    for concurrency in [1_u64, 16] {
        group.bench_with_input(
            BenchmarkId::new("incr_round_trip", concurrency),
            &concurrency,
            |b, &concurrency| {
                b.to_async(&runtime).iter_custom(|iterations| {
                    let connection = connection.clone();
                    async move {
                        let started = Instant::now();
                        run_concurrently(iterations, concurrency, move |_| {
                            let mut connection = connection.clone();
                            async move {
                                let _: i64 = redis::cmd("INCR")
                                    .arg("bench-incr")
                                    .query_async(&mut connection)
                                    .await
                                    .expect("INCR");
                            }
                        })
                        .await;
                        started.elapsed()
                    }
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("strict_decision", concurrency),
            &concurrency,
            |b, &concurrency| {
                b.to_async(&runtime).iter_custom(|iterations| {
                    let counters = Arc::clone(&counters);
                    async move {
                        let started = Instant::now();
                        run_concurrently(iterations, concurrency, move |index| {
                            let counters = Arc::clone(&counters);
                            async move {
                                let key = format!("bench\u{1f}client-{}", index % 64);
                                let request = CounterRequest {
                                    store: "bench",
                                    key: &key,
                                    limit: &limit,
                                    cost: 1,
                                    mode: StoreMode::Strict,
                                    timeout: Duration::from_secs(1),
                                    now_unix_micros: 0,
                                };
                                counters.decide(&request).await.expect("decision");
                            }
                        })
                        .await;
                        started.elapsed()
                    }
                })
            },
        );
    }
    group.finish();
}

/// Runs `iterations` calls of `operation` with `concurrency` of them in flight, so
/// that with more than one the multiplexed connection pipelines them.
async fn run_concurrently<F, Fut>(iterations: u64, concurrency: u64, operation: F)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let operation = operation.clone();
            tokio::spawn(async move {
                let mut index = worker;
                while index < iterations {
                    operation(index).await;
                    index += concurrency;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("benchmark task");
    }
}

criterion_group!(benches, local_decision, redis_decision);
criterion_main!(benches);
