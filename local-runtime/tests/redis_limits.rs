//! Rate limits shared through a real `redis-server`, started by each test on a free
//! loopback port and stopped by its PID: exactness across three `gatehouse`
//! processes, the `async` mode bound, and what requests do while Redis is down.
//!
//! The tests skip with a message when `redis-server` is not on `PATH`, and fail
//! instead when `GATEHOUSE_REQUIRE_REDIS=1`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::*;
use http::{Request, StatusCode};

/// Store settings of tests of exactness. A store timeout on a loaded machine would turn
/// an admission into a 503, so this timeout is far above any round trip here.
const GENEROUS_TIMEOUT: &str = "timeout = \"10s\"";

/// Builds a config with a listener, an upstream, the Redis store `shared` with the
/// extra settings `store`, and `policies` with their routes.
fn limited_config(upstream: SocketAddr, redis_url: &str, store: &str, policies: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[upstreams.backend]
endpoints = [{{ address = "{upstream}" }}]

[stores.shared.redis]
url = "{redis_url}"
{store}

{policies}
"#
    )
}

/// Sends `total` GET requests for `path` spread over `gateways` from `clients`
/// concurrent tasks, and returns the count of each status.
async fn flood(
    gateways: &[&Gatehouse],
    path: &str,
    clients: usize,
    total: usize,
) -> std::collections::BTreeMap<u16, usize> {
    let urls: Arc<Vec<String>> =
        Arc::new(gateways.iter().map(|gateway| gateway.url(path)).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let urls = Arc::clone(&urls);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let client = http1_client();
            let mut statuses = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let request = Request::get(&urls[index % urls.len()])
                    .body(NativeBody::empty())
                    .unwrap();
                let (parts, _) = send(&client, request).await;
                statuses.push(parts.status.as_u16());
            }
            statuses
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for task in tasks {
        for status in task.await.expect("client task") {
            *counts.entry(status).or_insert(0) += 1;
        }
    }
    counts
}

/// Builds a GCRA policy of `limit` requests with a burst of `limit` that refills one
/// request per 100 hours. Nothing refills during a test, so exactly `limit` may pass.
fn no_refill_policy(name: &str, limit: u64, mode: &str, on_error: &str) -> String {
    format!(
        r#"
[policies.{name}.rate_limit]
limit = {limit}
period = "{hours}h"
key = []
store = "shared"
mode = "{mode}"
on_store_error = "{on_error}"
"#,
        hours = 100 * limit
    )
}

fn route(path: &str, policy: &str) -> String {
    format!(
        r#"
[[routes]]
name = "{policy}"
match.path_prefix = "{path}"
upstream = "backend"
policies = ["{policy}"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_mode_exact_across_gateways() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = demo_upstream().await;
    let policies =
        no_refill_policy("shared-limit", 40, "strict", "deny") + &route("/", "shared-limit");
    let config = limited_config(
        upstream.address(),
        &redis.url(),
        GENEROUS_TIMEOUT,
        &policies,
    );
    let gateways: Vec<Gatehouse> = (0..3).map(|_| Gatehouse::start(&config)).collect();
    let gateways: Vec<&Gatehouse> = gateways.iter().collect();

    let counts = bounded(flood(&gateways, "/", 12, 240)).await;
    assert_eq!(counts.get(&200), Some(&40), "{counts:?}");
    assert_eq!(counts.get(&429), Some(&200), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_mode_overshoot_within_bound() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = demo_upstream().await;
    let max_in_flight = 4;
    let store = format!("async_max_in_flight = {max_in_flight}\n{GENEROUS_TIMEOUT}");
    let policies =
        no_refill_policy("shared-limit", 40, "async", "deny") + &route("/", "shared-limit");
    let config = limited_config(upstream.address(), &redis.url(), &store, &policies);
    let gateways: Vec<Gatehouse> = (0..3).map(|_| Gatehouse::start(&config)).collect();
    let gateways: Vec<&Gatehouse> = gateways.iter().collect();

    let counts = bounded(flood(&gateways, "/", 12, 240)).await;
    let admitted = counts.get(&200).copied().unwrap_or(0);
    // Each gateway admits at most max_in_flight requests that Redis then rejects.
    let bound = 40 + 3 * max_in_flight;
    assert!(admitted >= 40, "fewer than the limit admitted: {counts:?}");
    assert!(
        admitted <= bound,
        "{admitted} admitted, bound {bound}: {counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), 240, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_exact_under_concurrency() {
    let upstream = demo_upstream().await;
    let config = format!(
        r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[upstreams.backend]
endpoints = [{{ address = "{}" }}]

[policies.local.rate_limit]
limit = 50
period = "5000h"
key = []
{}
"#,
        upstream.address(),
        route("/", "local")
    );
    let gateway = Gatehouse::start(&config);
    let counts = bounded(flood(&[&gateway], "/", 16, 200)).await;
    assert_eq!(counts.get(&200), Some(&50), "{counts:?}");
    assert_eq!(counts.get(&429), Some(&150), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_follows_on_store_error() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let upstream = demo_upstream().await;
    let store_timeout = Duration::from_millis(200);
    let store = "timeout = \"200ms\"\nerror_log_interval = \"1h\"";
    let policies = [
        no_refill_policy("fail-open", 1_000, "strict", "allow"),
        no_refill_policy("fail-closed", 1_000, "strict", "deny"),
        route("/open", "fail-open"),
        route("/closed", "fail-closed"),
    ]
    .concat();
    let config = limited_config(upstream.address(), &redis.url(), store, &policies)
        + "\n[admin]\naddress = \"127.0.0.1:0\"\n";
    let gateway = Gatehouse::start(&config);
    let admin = gateway.admin_address();
    let client = http1_client();
    let get = |path: &str| {
        let request = Request::get(gateway.url(path))
            .body(NativeBody::empty())
            .unwrap();
        let client = client.clone();
        async move {
            let started = Instant::now();
            let (parts, body) = send(&client, request).await;
            (parts.status, body, started.elapsed())
        }
    };

    for path in ["/open", "/closed"] {
        let (status, _, _) = bounded(get(path)).await;
        assert_eq!(status, StatusCode::OK, "{path} with Redis up");
    }

    redis.kill();
    // A hang guard, far above the store timeout so a loaded machine cannot trip it.
    let hang_limit = store_timeout + Duration::from_secs(5);
    for _ in 0..10 {
        let (status, _, elapsed) = bounded(get("/open")).await;
        assert_eq!(status, StatusCode::OK, "on_store_error = allow admits");
        assert!(elapsed < hang_limit, "/open took {elapsed:?}");
        let (status, body, elapsed) = bounded(get("/closed")).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "on_store_error = deny rejects"
        );
        assert_eq!(json(&body)["type"], "urn:gatehouse:problem:unavailable");
        assert!(elapsed < hang_limit, "/closed took {elapsed:?}");
    }

    let metrics_request = Request::get(format!("http://{admin}/metrics"))
        .body(NativeBody::empty())
        .unwrap();
    let (_, metrics) = bounded(send(&client, metrics_request)).await;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let errors: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("gatehouse_rate_limit_store_errors_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(errors >= 20.0, "store errors counted: {errors}\n{metrics}");
    let warnings = gateway.stderr().matches("rate-limit store failed").count();
    assert_eq!(
        warnings,
        1,
        "one warning per interval:\n{}",
        gateway.stderr()
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = bounded(get("/closed")).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis restarted: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_window_decided_in_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let upstream = demo_upstream().await;
    let policies = [
        r#"
[policies.daily.rate_limit]
algorithm = "quota"
calendar = "day"
limit = 3
key = []
store = "shared"
"#,
        r#"
[policies.hourly.rate_limit]
algorithm = "sliding_window"
limit = 2
period = "1h"
key = []
store = "shared"
"#,
        &route("/daily", "daily"),
        &route("/hourly", "hourly"),
    ]
    .concat();
    let config = limited_config(
        upstream.address(),
        &redis.url(),
        GENEROUS_TIMEOUT,
        &policies,
    );
    let first = Gatehouse::start(&config);
    let second = Gatehouse::start(&config);
    let client = http1_client();

    let mut statuses = Vec::new();
    for index in 0..5 {
        let gateway = if index % 2 == 0 { &first } else { &second };
        let request = Request::get(gateway.url("/daily"))
            .body(NativeBody::empty())
            .unwrap();
        let (parts, body) = bounded(send(&client, request)).await;
        statuses.push(parts.status.as_u16());
        if parts.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(json(&body)["type"], "urn:gatehouse:problem:quota-exceeded");
            let retry_after: u64 = parts.headers["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                (1..=86_400).contains(&retry_after),
                "Retry-After runs to the end of the UTC day: {retry_after}"
            );
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);

    let counts = bounded(flood(&[&first, &second], "/hourly", 4, 20)).await;
    // A boundary of the hour may pass during the test and weigh in the previous
    // window, which admits at most the limit again.
    let admitted = counts.get(&200).copied().unwrap_or(0);
    assert!((2..=4).contains(&admitted), "{counts:?}");
}
