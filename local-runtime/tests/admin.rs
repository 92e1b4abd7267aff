//! The admin listener and hot reload, against the real binary: metrics checked against
//! the traffic sent, reloads under load, by SIGHUP and by file watch, readiness during
//! shutdown and secret redaction.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use prometheus_parse::{Scrape, Value};

/// Builds a config with a listener and an admin listener on ephemeral ports, then `rest`.
fn config_with_admin(rest: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"
{rest}
"#
    )
}

fn get(url: String) -> Request<NativeBody> {
    Request::get(url)
        .body(NativeBody::empty())
        .expect("valid request")
}

async fn admin_get(
    client: &Client,
    admin: SocketAddr,
    path: &str,
) -> (http::response::Parts, Bytes) {
    send(client, get(format!("http://{admin}{path}"))).await
}

async fn reload(client: &Client, admin: SocketAddr) -> (StatusCode, serde_json::Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{admin}/reload"))
        .body(NativeBody::empty())
        .expect("valid request");
    let (parts, body) = send(client, request).await;
    (parts.status, json(&body))
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    NativeBody,
>;

async fn scrape(client: &Client, admin: SocketAddr) -> Scrape {
    let (parts, body) = admin_get(client, admin, "/metrics").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        parts.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(body.to_vec()).expect("metrics are UTF-8");
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("metrics parse")
}

/// Returns the value of the counter, gauge or untyped sample `name` with exactly
/// `labels`, or the count of the histogram `name` with those labels.
fn sample(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found = scrape.samples.iter().find(|sample| {
        sample.metric == name
            && labels
                .iter()
                .all(|(key, value)| sample.labels.get(key) == Some(value))
            && sample.labels.len() == labels.len()
    })?;
    match &found.value {
        Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => Some(*value),
        Value::Histogram(buckets) => buckets
            .iter()
            .find(|bucket| bucket.less_than.is_infinite())
            .map(|bucket| bucket.count),
        Value::Summary(_) => None,
    }
}

/// Polls `condition` every 50 ms until it is true or `timeout` passes.
async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

#[tokio::test]
async fn health_endpoints_and_unknown_paths() {
    bounded(async {
        let gatehouse = Gatehouse::start(&config_with_admin(""));
        let admin = gatehouse.admin_address();
        let client = http1_client();

        let (parts, _) = admin_get(&client, admin, "/healthz").await;
        assert_eq!(parts.status, StatusCode::OK);
        let (parts, body) = admin_get(&client, admin, "/readyz").await;
        assert_eq!(parts.status, StatusCode::OK, "{body:?}");

        let (parts, body) = admin_get(&client, admin, "/nowhere").await;
        assert_eq!(parts.status, StatusCode::NOT_FOUND);
        assert_eq!(parts.headers["content-type"], "application/problem+json");
        assert_eq!(json(&body)["status"], 404);

        let (parts, _) = admin_get(&client, admin, "/reload").await;
        assert_eq!(parts.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(parts.headers["allow"], "POST");
    })
    .await;
}

#[tokio::test]
async fn metrics_match_traffic_sent() {
    bounded(async {
        let demo = demo_upstream().await;
        let dead_a = closed_port().await;
        let dead_b = closed_port().await;
        let half_dead = closed_port().await;
        let config = config_with_admin(&format!(
            r#"
[upstreams.backend]
endpoints = [{{ address = "{demo}" }}]

# Every attempt fails to connect, so each request is retried once and gets 502.
[upstreams.dead]
endpoints = [{{ address = "{dead_a}" }}, {{ address = "{dead_b}" }}]
outlier = {{ consecutive_failures = 0 }}

# One failure ejects the closed endpoint; its request is retried on the demo.
[upstreams.half]
endpoints = [{{ address = "{half_dead}" }}, {{ address = "{demo}" }}]
outlier = {{ consecutive_failures = 1 }}

[[routes]]
name = "users"
match.path_prefix = "/users"
upstream = "backend"

[[routes]]
name = "dead"
match.path_prefix = "/dead"
upstream = "dead"

[[routes]]
name = "half"
match.path_prefix = "/half"
upstream = "half"
"#,
            demo = demo.address()
        ));
        let gatehouse = Gatehouse::start(&config);
        let admin = gatehouse.admin_address();
        let client = http1_client();

        let mut user_bytes = 0;
        for index in 0..6 {
            let (parts, body) = send(&client, get(gatehouse.url(&format!("/users/{index}")))).await;
            assert_eq!(parts.status, StatusCode::OK);
            user_bytes += body.len();
        }
        for _ in 0..3 {
            let (parts, _) = send(&client, get(gatehouse.url("/nowhere"))).await;
            assert_eq!(parts.status, StatusCode::NOT_FOUND);
        }
        for _ in 0..4 {
            let (parts, _) = send(&client, get(gatehouse.url("/dead"))).await;
            assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
        }
        for _ in 0..2 {
            let (parts, _) = send(&client, get(gatehouse.url("/half"))).await;
            assert_eq!(parts.status, StatusCode::OK);
        }
        // Requests are recorded when their response body ends, which the client may
        // see a moment before the gateway does.
        let mut metrics = scrape(&client, admin).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while sample(
            &metrics,
            "gatehouse_requests_total",
            &[("route", "half"), ("upstream", "half"), ("status", "200")],
        ) != Some(2.0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            metrics = scrape(&client, admin).await;
        }

        let requests = |route: &str, upstream: &str, status: &str| {
            sample(
                &metrics,
                "gatehouse_requests_total",
                &[("route", route), ("upstream", upstream), ("status", status)],
            )
        };
        assert_eq!(requests("users", "backend", "200"), Some(6.0));
        assert_eq!(requests("", "", "404"), Some(3.0));
        assert_eq!(requests("dead", "dead", "502"), Some(4.0));
        assert_eq!(requests("half", "half", "200"), Some(2.0));
        assert_eq!(
            sample(
                &metrics,
                "gatehouse_request_duration_seconds",
                &[("route", "users")]
            ),
            Some(6.0)
        );
        assert_eq!(
            sample(
                &metrics,
                "gatehouse_upstream_request_duration_seconds",
                &[("upstream", "backend")]
            ),
            Some(6.0)
        );
        assert_eq!(
            sample(
                &metrics,
                "gatehouse_response_bytes_total",
                &[("route", "users")]
            ),
            Some(user_bytes as f64)
        );
        assert_eq!(
            sample(&metrics, "gatehouse_retries_total", &[("upstream", "dead")]),
            Some(4.0)
        );
        assert_eq!(
            sample(&metrics, "gatehouse_retries_total", &[("upstream", "half")]),
            Some(1.0)
        );
        let half_dead = half_dead.to_string();
        let demo_address = demo.address().to_string();
        assert_eq!(
            sample(
                &metrics,
                "gatehouse_endpoint_ejected",
                &[("upstream", "half"), ("endpoint", &half_dead)]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &metrics,
                "gatehouse_endpoint_ejected",
                &[("upstream", "half"), ("endpoint", &demo_address)]
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &metrics,
                "gatehouse_config_reloads_total",
                &[("result", "success")]
            ),
            Some(0.0)
        );
        let loaded_at = sample(
            &metrics,
            "gatehouse_config_last_reload_success_timestamp_seconds",
            &[],
        )
        .expect("last load time is set");
        assert!(loaded_at > 1_600_000_000.0, "{loaded_at}");
        // The client's pool keeps its connection to the gateway open.
        let open = sample(&metrics, "gatehouse_connections_open", &[]).expect("gauge exists");
        assert!(open >= 1.0, "{open}");

        assert_metrics_documented(&metrics);
    })
    .await;
}

/// Checks that every metric family of `scrape` has a row in docs/operations.md.
fn assert_metrics_documented(scrape: &Scrape) {
    let docs_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
    let docs = std::fs::read_to_string(&docs_path).expect("docs/operations.md is readable");
    assert!(scrape.docs.len() >= 10, "{:?}", scrape.docs.keys());
    // Counters are declared without the `_total` suffix that their samples carry.
    let undocumented: Vec<&String> = scrape
        .docs
        .keys()
        .filter(|family| {
            !docs.contains(&format!("`{family}`")) && !docs.contains(&format!("`{family}_total`"))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing from the table in docs/operations.md: {undocumented:?}"
    );
}

#[tokio::test]
async fn config_redacts_secrets() {
    bounded(async {
        let demo = demo_upstream().await;
        let config = config_with_admin(&format!(
            r#"
[upstreams.backend]
endpoints = [{{ address = "{}" }}]

[[routes]]
name = "all"
upstream = "backend"
policies = ["credentials"]

[policies.credentials.transform]
request.set = {{ "x-api-key" = "abc123", "authorization" = "Bearer xyz789", "x-team" = "ops" }}
"#,
            demo.address()
        ));
        let gatehouse = Gatehouse::start(&config);
        let admin = gatehouse.admin_address();
        let client = http1_client();

        let (parts, body) = admin_get(&client, admin, "/config").await;
        assert_eq!(parts.status, StatusCode::OK);
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("abc123"), "{text}");
        assert!(!text.contains("xyz789"), "{text}");
        let config = json(&body);
        let set = &config["policies"]["credentials"]["transform"]["request"]["set"];
        assert_eq!(set["x-api-key"], "[redacted]");
        assert_eq!(set["authorization"], "[redacted]");
        assert_eq!(set["x-team"], "ops");
        assert_eq!(config["routes"][0]["name"], "all");
    })
    .await;
}

/// Builds a config whose routes are `/users` and, with `v2`, also `/v2`.
fn reloadable_config(demo: SocketAddr, v2: bool) -> String {
    let v2_route = if v2 {
        "[[routes]]\nname = \"v2\"\nmatch.path_prefix = \"/v2\"\nupstream = \"backend\"\n"
    } else {
        ""
    };
    config_with_admin(&format!(
        r#"
[upstreams.backend]
endpoints = [{{ address = "{demo}" }}]

[[routes]]
name = "users"
match.path_prefix = "/users"
upstream = "backend"

{v2_route}
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_nothing() {
    const CONNECTIONS: usize = 64;
    const LOAD_TIME: Duration = Duration::from_secs(12);

    tokio::time::timeout(Duration::from_secs(60), async {
        let demo = demo_upstream().await;
        let gatehouse = Gatehouse::start(&reloadable_config(demo.address(), false));
        let admin = gatehouse.admin_address();
        let client = http1_client();

        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop_at = Instant::now() + LOAD_TIME;
        let url = gatehouse.url("/users/1");
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let (sent, failed, url) = (Arc::clone(&sent), Arc::clone(&failed), url.clone());
                tokio::spawn(async move {
                    // One client per worker, so each keeps its own connection.
                    let client = http1_client();
                    while Instant::now() < stop_at {
                        let ok = match client.request(get(url.clone())).await {
                            Ok(response) => {
                                let status = response.status();
                                let body =
                                    http_body_util::BodyExt::collect(response.into_body()).await;
                                status == StatusCode::OK && body.is_ok()
                            }
                            Err(_) => false,
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();

        let path = gatehouse.config_path().to_owned();
        let valid = |v2: bool| reloadable_config(demo.address(), v2);
        // Two problems: an upstream without endpoints and a route to a missing one.
        let two_problems = valid(true)
            + "\n[upstreams.broken]\nendpoints = []\n\n[[routes]]\nupstream = \"missing\"\n";
        let syntax_error = valid(false) + "\n[[routes]\nupstream = \"backend\"\n";
        let unknown_key = valid(false).replace("[[routes]]", "[[routes]]\nupstreem = \"x\"");
        // Each step: the file, the number of problems when it is rejected (0 when it
        // is accepted), and the status of /v2 afterwards. A rejected file leaves the
        // previous step's /v2 route as it was.
        let steps = [
            (valid(true), 0, StatusCode::OK),
            (two_problems.clone(), 2, StatusCode::OK),
            (valid(false), 0, StatusCode::NOT_FOUND),
            (syntax_error, 1, StatusCode::NOT_FOUND),
            (valid(true), 0, StatusCode::OK),
            (unknown_key, 1, StatusCode::OK),
            (valid(false), 0, StatusCode::NOT_FOUND),
            (two_problems, 2, StatusCode::NOT_FOUND),
            (valid(true), 0, StatusCode::OK),
            (valid(true), 0, StatusCode::OK),
        ];
        let rejected = steps
            .iter()
            .filter(|(_, problems, _)| *problems > 0)
            .count();
        for (index, (text, problems, v2_status)) in steps.into_iter().enumerate() {
            tokio::time::sleep(LOAD_TIME / 12).await;
            std::fs::write(&path, text).expect("write config");
            let (status, body) = reload(&client, admin).await;
            if problems == 0 {
                assert_eq!(status, StatusCode::OK, "step {index}: {body}");
                assert_eq!(body["state_kept"], serde_json::json!(["backend"]), "{body}");
            } else {
                assert_eq!(status, StatusCode::BAD_REQUEST, "step {index}: {body}");
                let listed = body["problems"].as_array().expect("problems listed");
                assert_eq!(listed.len(), problems, "step {index}: {body}");
            }
            let (parts, _) = send(&client, get(gatehouse.url("/v2/x"))).await;
            assert_eq!(parts.status, v2_status, "step {index}");
        }
        for worker in workers {
            worker.await.expect("load worker finished");
        }

        let sent = sent.load(Ordering::Relaxed);
        assert_eq!(failed.load(Ordering::Relaxed), 0, "of {sent} requests");
        assert!(sent >= CONNECTIONS as u64, "only {sent} requests sent");

        let metrics = scrape(&client, admin).await;
        // The file watch may pick up a written file before the POST does, so a file
        // can be loaded twice.
        let successes = sample(
            &metrics,
            "gatehouse_config_reloads_total",
            &[("result", "success")],
        )
        .expect("counter exists");
        let failures = sample(
            &metrics,
            "gatehouse_config_reloads_total",
            &[("result", "failure")],
        )
        .expect("counter exists");
        assert!(successes >= 6.0, "{successes}");
        assert!(failures >= rejected as f64, "{failures}");
        let served = sample(
            &metrics,
            "gatehouse_requests_total",
            &[
                ("route", "users"),
                ("upstream", "backend"),
                ("status", "200"),
            ],
        )
        .expect("counter exists");
        assert!(served >= sent as f64, "{served} < {sent}");
        let stderr = gatehouse.stderr();
        let rejections = stderr
            .lines()
            .filter(|line| line.contains("config reload rejected"))
            .count();
        assert!(
            rejections >= rejected,
            "{rejections} rejections logged:\n{stderr}"
        );
    })
    .await
    .expect("test finished within 60 s");
}

#[tokio::test]
async fn sighup_reloads_config() {
    bounded(async {
        let demo = demo_upstream().await;
        let gatehouse = Gatehouse::start(&reloadable_config(demo.address(), false));
        let _admin = gatehouse.admin_address();
        let client = http1_client();
        let (parts, _) = send(&client, get(gatehouse.url("/v2/x"))).await;
        assert_eq!(parts.status, StatusCode::NOT_FOUND);

        std::fs::write(
            gatehouse.config_path(),
            reloadable_config(demo.address(), true),
        )
        .expect("write config");
        gatehouse.signal("HUP");
        let logged = eventually(Duration::from_secs(10), || {
            gatehouse
                .stderr()
                .lines()
                .any(|line| line.contains("config reloaded") && line.contains("SIGHUP"))
        })
        .await;
        assert!(logged, "{}", gatehouse.stderr());
        let (parts, _) = send(&client, get(gatehouse.url("/v2/x"))).await;
        assert_eq!(parts.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn file_watch_reloads_config() {
    bounded(async {
        let demo = demo_upstream().await;
        let gatehouse = Gatehouse::start(&reloadable_config(demo.address(), false));
        let _admin = gatehouse.admin_address();
        let client = http1_client();

        // Changes in the same second as the start could keep the modification time,
        // but the size differs, so the watch still sees them.
        std::fs::write(
            gatehouse.config_path(),
            reloadable_config(demo.address(), true),
        )
        .expect("write config");
        let logged = eventually(Duration::from_secs(10), || {
            gatehouse
                .stderr()
                .lines()
                .any(|line| line.contains("config reloaded") && line.contains("file watch"))
        })
        .await;
        assert!(logged, "{}", gatehouse.stderr());
        let (parts, _) = send(&client, get(gatehouse.url("/v2/x"))).await;
        assert_eq!(parts.status, StatusCode::OK);

        // A listener change is applied only on restart, and the reload says so.
        let moved =
            reloadable_config(demo.address(), true).replacen("127.0.0.1:0", "127.0.0.1:1", 1);
        std::fs::write(gatehouse.config_path(), moved).expect("write config");
        let warned = eventually(Duration::from_secs(10), || {
            gatehouse
                .stderr()
                .contains("takes effect only after a restart")
        })
        .await;
        assert!(warned, "{}", gatehouse.stderr());
        let (parts, _) = send(&client, get(gatehouse.url("/users/1"))).await;
        assert_eq!(parts.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_draining() {
    bounded(async {
        let (slow, mut arrived, gate) = held_upstream().await;
        let config = config_with_admin(&format!(
            r#"
[upstreams.slow]
endpoints = [{{ address = "{slow}" }}]

[[routes]]
upstream = "slow"
"#
        ));
        let mut gatehouse = Gatehouse::start(&config);
        let admin = gatehouse.admin_address();
        let client = http1_client();

        let in_flight = tokio::spawn({
            let client = client.clone();
            let url = gatehouse.url("/slow");
            async move { send(&client, get(url)).await }
        });
        arrived
            .recv()
            .await
            .expect("the request reached the upstream");
        gatehouse.terminate();

        let admin_client = http1_client();
        // The upstream responds only after the gate opens, so the drain lasts until then.
        let mut draining = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let (parts, _) = admin_get(&admin_client, admin, "/readyz").await;
            if parts.status == StatusCode::SERVICE_UNAVAILABLE {
                draining = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(draining, "readyz never returned 503");
        let (health, _) = admin_get(&admin_client, admin, "/healthz").await;
        assert_eq!(health.status, StatusCode::OK);

        gate.release();
        let (parts, body) = in_flight.await.expect("client task finished");
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(body, "held");
        let status = gatehouse.wait_for_exit(Duration::from_secs(10));
        assert_eq!(status.and_then(|status| status.code()), Some(0));
    })
    .await;
}

fn key_value_request(method: Method, url: String, body: &'static str) -> Request<NativeBody> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(NativeBody::from(Bytes::from_static(body.as_bytes())))
        .expect("valid request")
}

#[tokio::test]
async fn key_value_entries_add_and_remove_api_keys() {
    bounded(async {
        let demo = demo_upstream().await;
        let gatehouse = Gatehouse::start(&config_with_admin(&format!(
            r#"
[upstreams.api]
endpoints = [{{ address = "{demo}" }}]

[policies.keys.api_key]
key_value_prefix = "api-key:"

[[routes]]
upstream = "api"
policies = ["keys"]
"#,
            demo = demo.address()
        )));
        let admin = gatehouse.admin_address();
        let client = http1_client();
        // SHA-256 of "stored-key-1"; the key itself never reaches the admin listener.
        let entry = format!(
            "http://{admin}/key-value/api-key%3A5c055e78747d3ccc90a52a8336311578fd292156d9c5d628dee02b2717f1288c"
        );
        let call = || {
            let request = Request::get(gatehouse.url("/data"))
                .header("x-api-key", "stored-key-1")
                .body(NativeBody::empty())
                .expect("valid request");
            send(&client, request)
        };

        let (parts, _) = call().await;
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED);

        let record = r#"{ "name": "initech", "plan": "free", "note": "value-marker-7" }"#;
        let (parts, body) = send(&client, key_value_request(Method::PUT, entry.clone(), record)).await;
        assert_eq!(parts.status, StatusCode::OK, "{body:?}");
        assert_eq!(json(&body)["bytes"], record.len());
        let (parts, body) = send(&client, get(entry.clone())).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(body, Bytes::from_static(record.as_bytes()));
        let (parts, _) = call().await;
        assert_eq!(parts.status, StatusCode::OK);

        let (parts, body) = send(&client, key_value_request(Method::DELETE, entry.clone(), "")).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(json(&body)["existed"], true);
        let (parts, _) = send(&client, get(entry.clone())).await;
        assert_eq!(parts.status, StatusCode::NOT_FOUND);
        let (parts, _) = call().await;
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED);

        // Bad writes are refused with a reason and change nothing.
        for (url, status, detail) in [
            (format!("{entry}?ttl=soon"), StatusCode::BAD_REQUEST, "ttl must be"),
            (format!("{entry}?ttl=0"), StatusCode::BAD_REQUEST, "ttl must be"),
            (format!("{entry}?expires=1"), StatusCode::BAD_REQUEST, "unknown query parameter"),
            (format!("http://{admin}/key-value/"), StatusCode::BAD_REQUEST, "names no key"),
            (format!("http://{admin}/key-value/%FF"), StatusCode::BAD_REQUEST, "not UTF-8"),
        ] {
            let (parts, body) = send(&client, key_value_request(Method::PUT, url.clone(), record)).await;
            assert_eq!(parts.status, status, "{url}");
            let problem = json(&body);
            assert!(
                problem["detail"].as_str().is_some_and(|text| text.contains(detail)),
                "{url}: {problem}"
            );
        }
        let (parts, _) = send(&client, get(entry.clone())).await;
        assert_eq!(parts.status, StatusCode::NOT_FOUND);

        let oversized: &'static str = Box::leak("x".repeat(1024 * 1024 + 1).into_boxed_str());
        let (parts, _) = send(&client, key_value_request(Method::PUT, entry.clone(), oversized)).await;
        assert_eq!(parts.status, StatusCode::PAYLOAD_TOO_LARGE);
        let (parts, _) = send(&client, key_value_request(Method::POST, entry, record)).await;
        assert_eq!(parts.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(parts.headers["allow"], "GET, HEAD, PUT, DELETE");

        // The log names the key and the size of a write, never the value.
        let log = gatehouse.stderr();
        assert!(log.contains("stored a key-value entry"), "{log}");
        assert!(!log.contains("value-marker-7"), "a value reached the log: {log}");
    })
    .await;
}
