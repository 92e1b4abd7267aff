//! `gatehouse dev`: several simulated edge locations in one process, over real
//! sockets on 127.0.0.1. The simulator runs in process here, and once as the binary to
//! check its start lines and exit report.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse::simulator::{self, RunningSimulator};
use gatehouse_core::Gateway;
use gatehouse_core::config::Format;
use http::{Method, Request, StatusCode};
use sha2::{Digest, Sha256};

use common::{NativeBody, TempDir, bounded, demo_upstream, http1_client, json, send};

/// Starts the simulator on `config` (TOML) with its own `[simulator]` section.
async fn start(config: &str) -> RunningSimulator {
    let config = Gateway::from_text(config, Format::Toml)
        .unwrap_or_else(|errors| panic!("invalid test config: {errors}"))
        .config()
        .clone();
    let settings = simulator::settings(&config, None)
        .unwrap_or_else(|problems| panic!("invalid simulator settings: {problems:?}"));
    simulator::start(config, settings)
        .await
        .expect("start the simulator")
}

async fn get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Bytes) {
    let mut request = Request::builder().uri(format!("http://{address}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(NativeBody::empty()).expect("valid request");
    let (parts, body) = send(&http1_client(), request).await;
    (parts.status, body)
}

async fn admin(method: Method, address: SocketAddr, path: &str, body: &str) -> (StatusCode, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"))
        .body(NativeBody::from(body.to_owned()))
        .expect("valid request");
    let (parts, body) = send(&http1_client(), request).await;
    (parts.status, body)
}

fn location_report<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["locations"]
        .as_array()
        .expect("locations array")
        .iter()
        .find(|location| location["location"] == name)
        .unwrap_or_else(|| panic!("no location {name} in {report}"))
}

#[tokio::test]
async fn locations_keep_own_cache_and_zone() {
    bounded(async {
        let europe = demo_upstream().await;
        let america = demo_upstream().await;
        let config = format!(
            r#"
            [[listeners]]
            name = "main"
            address = "127.0.0.1:0"

            [admin]
            address = "127.0.0.1:0"

            [server]
            location_zones = {{ fra = "eu", iad = "us" }}

            [upstreams.app]
            endpoints = [
              {{ address = "{}", zone = "eu" }},
              {{ address = "{}", zone = "us" }},
            ]

            [policies.pages.cache]
            default_ttl = "60s"

            [[routes]]
            match.path_prefix = "/cached"
            upstream = "app"
            policies = ["pages"]

            [[routes]]
            match.path_prefix = "/"
            upstream = "app"

            [simulator]
            locations = ["fra", "iad"]
            "#,
            europe.address(),
            america.address()
        );
        let running = start(&config).await;
        let fra = running.address("fra").expect("fra listens");
        let iad = running.address("iad").expect("iad listens");
        assert_ne!(fra, iad);

        let (status, body) = get(fra, "/zone", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["upstream"], europe.address().to_string());
        let (status, body) = get(iad, "/zone", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["upstream"], america.address().to_string());

        // Each location has its own response cache: a hit in fra is a miss in iad.
        for _ in 0..2 {
            let (status, _) = get(fra, "/cached/page", &[]).await;
            assert_eq!(status, StatusCode::OK);
        }
        let (status, _) = get(iad, "/cached/page", &[]).await;
        assert_eq!(status, StatusCode::OK);

        let admin_address = running.admin_address().expect("admin listens");
        let (status, body) = admin(Method::GET, admin_address, "/simulator", "").await;
        assert_eq!(status, StatusCode::OK);
        let report = json(&body);
        let fra_report = location_report(&report, "fra");
        assert_eq!(fra_report["requests"], 3);
        assert_eq!(fra_report["cache_hits"], 1);
        assert_eq!(fra_report["cache_misses"], 1);
        assert_eq!(fra_report["cache_hit_ratio"], 0.5);
        assert!(fra_report["latency"]["p50_ms"].is_number(), "{fra_report}");
        let iad_report = location_report(&report, "iad");
        assert_eq!(iad_report["requests"], 2);
        assert_eq!(iad_report["cache_hits"], 0);
        assert_eq!(iad_report["cache_misses"], 1);

        let final_report = running.shutdown().await;
        assert_eq!(final_report.locations[0].requests, 3);
    })
    .await;
}

#[tokio::test]
async fn key_value_write_reaches_other_location_after_delay() {
    bounded(async {
        let upstream = demo_upstream().await;
        // Long enough that the first reads below fit in it on a loaded machine.
        let propagation = Duration::from_secs(5);
        let config = format!(
            r#"
            [[listeners]]
            name = "main"
            address = "127.0.0.1:0"

            [admin]
            address = "127.0.0.1:0"

            [upstreams.app]
            endpoints = [{{ address = "{}" }}]

            [policies.keys.api_key]
            key_value_prefix = "api-key:"

            [[routes]]
            match.path_prefix = "/"
            upstream = "app"
            policies = ["keys"]

            [simulator]
            locations = ["fra", "sin"]
            kv_propagation = "{}ms"
            "#,
            upstream.address(),
            propagation.as_millis()
        );
        let running = start(&config).await;
        let fra = running.address("fra").expect("fra listens");
        let sin = running.address("sin").expect("sin listens");
        let admin_address = running.admin_address().expect("admin listens");

        let key = "simulated-key-1";
        let hash = gatehouse_core::auth::api_key::hex(&Sha256::digest(key).into());
        let record = r#"{"name": "initech"}"#;
        let written = Instant::now();
        let (status, body) = admin(
            Method::PUT,
            admin_address,
            &format!("/simulator/key-value/fra/api-key:{hash}"),
            record,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body:?}");

        let (in_writer, _) = get(fra, "/", &[("x-api-key", key)]).await;
        let (elsewhere_before, _) = get(sin, "/", &[("x-api-key", key)]).await;
        let checked_before = written.elapsed();
        assert!(
            checked_before < propagation,
            "the first reads took {checked_before:?}, longer than the propagation delay"
        );
        assert_eq!(in_writer, StatusCode::OK);
        assert_eq!(elsewhere_before, StatusCode::UNAUTHORIZED);

        tokio::time::sleep_until((written + propagation + Duration::from_millis(300)).into()).await;
        let (elsewhere_after, _) = get(sin, "/", &[("x-api-key", key)]).await;
        assert_eq!(elsewhere_after, StatusCode::OK);

        let report = running.report();
        let sin_report = report
            .locations
            .iter()
            .find(|location| location.location == "sin")
            .expect("sin report");
        assert_eq!(sin_report.kv_stale_reads, 1);
        assert_eq!(sin_report.kv_reads, 2);
        assert_eq!(report.locations[0].kv_stale_reads, 0);

        // A key over the Workers KV limit is rejected and counted.
        let long_key = "k".repeat(simulator::MAX_KEY_BYTES + 1);
        let (status, body) = admin(
            Method::PUT,
            admin_address,
            &format!("/simulator/key-value/fra/{long_key}"),
            "v",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            String::from_utf8_lossy(&body).contains("512 bytes"),
            "{body:?}"
        );
        assert_eq!(running.report().locations[0].limit_violations["kv_size"], 1);
        running.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn coordinator_limit_is_exact_across_locations() {
    bounded(async {
        let upstream = demo_upstream().await;
        let latency = Duration::from_millis(300);
        let config = format!(
            r#"
            [[listeners]]
            name = "main"
            address = "127.0.0.1:0"

            [upstreams.app]
            endpoints = [{{ address = "{}" }}]

            [stores.shared.durable_object]
            timeout = "10s"

            [policies.global.rate_limit]
            limit = 10
            period = "1h"
            burst = 10
            key = []
            store = "shared"
            mode = "strict"
            on_store_error = "deny"

            [[routes]]
            match.path_prefix = "/"
            upstream = "app"
            policies = ["global"]

            [simulator]
            locations = ["fra", "iad", "sin"]
            coordinator = {{ location = "iad", latency = "{}ms" }}
            "#,
            upstream.address(),
            latency.as_millis()
        );
        let running = start(&config).await;
        let mut requests = Vec::new();
        for name in ["fra", "iad", "sin"] {
            let address = running.address(name).expect("location listens");
            for _ in 0..10 {
                requests.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let (status, _) = get(address, "/", &[]).await;
                    (name, status, started.elapsed())
                }));
            }
        }
        let mut allowed = 0;
        let mut denied = 0;
        for request in requests {
            let (name, status, elapsed) = request.await.expect("request task");
            match status {
                StatusCode::OK => allowed += 1,
                StatusCode::TOO_MANY_REQUESTS => denied += 1,
                other => panic!("unexpected status {other} from {name}"),
            }
            // An admission waits for the coordinator; a rejection may come from the
            // location's local tier, which remembers the coordinator's rejections.
            if name != "iad" && status == StatusCode::OK {
                assert!(
                    elapsed >= latency,
                    "a request in {name} took {elapsed:?}, less than the coordinator latency"
                );
            }
        }
        assert_eq!(allowed, 10, "the limit of 10 must hold across locations");
        assert_eq!(denied, 20);

        let report = running.shutdown().await;
        assert_eq!(report.coordinator_location, "iad");
        for location in &report.locations {
            assert!(
                (1..=10).contains(&location.coordinator_calls),
                "{}: {} calls",
                location.location,
                location.coordinator_calls
            );
            assert_eq!(
                location.rate_limit_allowed + location.rate_limit_denied,
                10,
                "{}",
                location.location
            );
        }
    })
    .await;
}

/// Limit of the shared key in the store-mode tests.
const SHARED_LIMIT: u64 = 20;
/// `async_max_in_flight` of the store in the store-mode tests.
const MAX_IN_FLIGHT: u64 = 4;
const FIVE_LOCATIONS: [&str; 5] = ["fra", "iad", "sin", "gru", "syd"];

/// Runs traffic over five locations against one global limit of `SHARED_LIMIT` in
/// store mode `mode`, and returns the responses admitted (200) with the
/// `GET /simulator` report once the coordinator has decided every call.
async fn shared_limit_traffic(mode: &str) -> (u64, serde_json::Value) {
    let upstream = demo_upstream().await;
    let config = format!(
        r#"
        [[listeners]]
        name = "main"
        address = "127.0.0.1:0"

        [admin]
        address = "127.0.0.1:0"

        [upstreams.app]
        endpoints = [{{ address = "{upstream}" }}]

        # gatehouse dev decides redis stores at its coordinator; nothing connects here.
        [stores.shared.redis]
        url = "redis://127.0.0.1:1"
        timeout = "10s"
        async_max_in_flight = {MAX_IN_FLIGHT}

        [policies.global.rate_limit]
        limit = {SHARED_LIMIT}
        period = "1h"
        burst = {SHARED_LIMIT}
        key = []
        store = "shared"
        mode = "{mode}"
        on_store_error = "deny"

        [[routes]]
        match.path_prefix = "/"
        upstream = "app"
        policies = ["global"]

        [simulator]
        locations = {locations:?}
        coordinator = {{ location = "fra", latency = "300ms" }}
        "#,
        upstream = upstream.address(),
        locations = FIVE_LOCATIONS,
    );
    let running = start(&config).await;
    let admin_address = running.admin_address().expect("admin listens");

    // First one request per location, so each location's local tier holds an answer
    // of the coordinator; then ten at once per location.
    let mut admitted = 0;
    for burst in [1, 10] {
        let mut requests = Vec::new();
        for name in FIVE_LOCATIONS {
            let address = running.address(name).expect("location listens");
            for _ in 0..burst {
                requests.push(tokio::spawn(async move {
                    (name, get(address, "/", &[]).await.0)
                }));
            }
        }
        for request in requests {
            let (name, status) = request.await.expect("request task");
            match status {
                StatusCode::OK => admitted += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("unexpected status {other} from {name}"),
            }
        }
    }

    // Background calls of async admissions may still be on their way.
    let report = loop {
        let (status, body) = admin(Method::GET, admin_address, "/simulator", "").await;
        assert_eq!(status, StatusCode::OK);
        let report = json(&body);
        let settled = report["limits"]["keys"]
            .as_array()
            .expect("keys array")
            .iter()
            .all(|key| key["in_flight"] == 0);
        if settled {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.shutdown().await;
    (admitted, report)
}

fn shared_key(report: &serde_json::Value) -> &serde_json::Value {
    let keys = report["limits"]["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 1, "{report}");
    &keys[0]
}

#[tokio::test]
async fn async_limit_overshoots_within_bound() {
    bounded(async {
        let (admitted, report) = shared_limit_traffic("async").await;
        let key = shared_key(&report);
        let bound = FIVE_LOCATIONS.len() as u64 * MAX_IN_FLIGHT;
        assert!(
            admitted > SHARED_LIMIT,
            "async mode admitted {admitted}, expected more than {SHARED_LIMIT}"
        );
        assert!(
            admitted <= SHARED_LIMIT + bound,
            "async mode admitted {admitted}, over the documented bound of {bound}: {key}"
        );
        assert_eq!(key["mode"], "async");
        assert_eq!(key["store"], "shared");
        assert_eq!(key["limit"], SHARED_LIMIT);
        assert_eq!(key["window_seconds"], 3600);
        assert_eq!(key["admitted"], admitted, "{key}");
        assert_eq!(key["store_admitted"], SHARED_LIMIT, "{key}");
        assert_eq!(key["overshoot"], admitted - SHARED_LIMIT, "{key}");
        assert_eq!(key["overshoot_bound"], bound);
        let by_location: u64 = key["admitted_by_location"]
            .as_object()
            .expect("admitted_by_location object")
            .values()
            .map(|units| units.as_u64().expect("a count"))
            .sum();
        assert_eq!(by_location, admitted);
    })
    .await;
}

#[tokio::test]
async fn strict_limit_never_overshoots() {
    bounded(async {
        let (admitted, report) = shared_limit_traffic("strict").await;
        let key = shared_key(&report);
        assert_eq!(admitted, SHARED_LIMIT);
        assert_eq!(key["mode"], "strict");
        assert_eq!(key["admitted"], SHARED_LIMIT, "{key}");
        assert_eq!(key["store_admitted"], SHARED_LIMIT, "{key}");
        assert_eq!(key["overshoot"], 0);
        assert_eq!(key["overshoot_bound"], 0);
    })
    .await;
}

#[tokio::test]
async fn subrequest_limit_fails_aggregate() {
    bounded(async {
        let upstream = demo_upstream().await;
        let config = format!(
            r#"
            [[listeners]]
            name = "main"
            address = "127.0.0.1:0"

            [upstreams.app]
            endpoints = [{{ address = "{}" }}]

            [[routes]]
            match.path = "/three"
            dispatch = "aggregate"
            aggregate.calls = [
              {{ name = "a", upstream = "app", path = "/a" }},
              {{ name = "b", upstream = "app", path = "/b" }},
              {{ name = "c", upstream = "app", path = "/c" }},
            ]

            [[routes]]
            match.path = "/four"
            dispatch = "aggregate"
            aggregate.calls = [
              {{ name = "a", upstream = "app", path = "/a" }},
              {{ name = "b", upstream = "app", path = "/b" }},
              {{ name = "c", upstream = "app", path = "/c" }},
              {{ name = "d", upstream = "app", path = "/d" }},
            ]

            [simulator]
            locations = ["fra"]
            limits = {{ subrequests = 3, connections = 2, max_body_bytes = 1000 }}
            "#,
            upstream.address()
        );
        let running = start(&config).await;
        let fra = running.address("fra").expect("fra listens");

        let (status, body) = get(fra, "/three", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body:?}");

        let (status, body) = get(fra, "/four", &[]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        let problem = json(&body);
        let detail = problem["detail"].as_str().expect("problem detail");
        assert!(
            detail.contains("platform limit broken: subrequests"),
            "{detail}"
        );
        assert!(detail.contains("at most 3"), "{detail}");

        // The declared body size is checked before the pipeline runs.
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{fra}/three"))
            .body(NativeBody::from(vec![b'x'; 2000]))
            .expect("valid request");
        let (parts, body) = send(&http1_client(), request).await;
        assert_eq!(parts.status, StatusCode::PAYLOAD_TOO_LARGE);
        let detail = json(&body)["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(detail.contains("max_body_bytes"), "{detail}");

        let report = running.shutdown().await;
        let fra_report = &report.locations[0];
        assert_eq!(fra_report.limit_violations["subrequests"], 1);
        assert_eq!(fra_report.limit_violations["max_body_bytes"], 1);
        // Three calls ran at once on two connections, so some waited.
        assert!(fra_report.connection_waits >= 1, "{fra_report:?}");
    })
    .await;
}

#[test]
fn dev_command_seeds_and_reports() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let upstream = runtime.block_on(demo_upstream());
    let dir = TempDir::new();
    let config = dir.write(
        "gatehouse.toml",
        &format!(
            r#"
            [[listeners]]
            name = "main"
            address = "127.0.0.1:0"

            [upstreams.app]
            endpoints = [{{ address = "{}" }}]

            [policies.keys.api_key]
            key_value_prefix = "api-key:"

            [[routes]]
            match.path_prefix = "/private"
            upstream = "app"
            policies = ["keys"]

            [[routes]]
            match.path_prefix = "/"
            upstream = "app"
            "#,
            upstream.address()
        ),
    );
    let key = "seeded-key-1";
    let hash = gatehouse_core::auth::api_key::hex(&Sha256::digest(key).into());
    let seed = dir.write(
        "seed.json",
        &format!(r#"{{"api-key:{hash}": {{"name": "initech"}}}}"#),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("dev")
        .arg("--config")
        .arg(&config)
        .args(["--locations", "fra,iad"])
        .arg("--key-value-seed")
        .arg(&seed)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the gatehouse binary");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut addresses = Vec::new();
    while addresses.len() < 2 {
        let line = lines
            .next()
            .expect("a start line before exit")
            .expect("read stdout");
        if let Some(rest) = line.strip_prefix("gatehouse: location ") {
            let (_, url) = rest
                .split_once(" on http://")
                .expect("listener line has a URL");
            addresses.push(url.parse::<SocketAddr>().expect("listener URL has IP:PORT"));
        }
    }
    let (status, _) = runtime.block_on(get(addresses[1], "/", &[]));
    assert_eq!(status, StatusCode::OK);
    // Seeded entries are in every location at once, with no propagation delay.
    let (status, _) = runtime.block_on(get(addresses[1], "/private", &[("x-api-key", key)]));
    assert_eq!(status, StatusCode::OK);

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().expect("wait for gatehouse");
    assert!(exit.success(), "{exit}");
    let report = rest.join("\n");
    assert!(report.contains("gatehouse: simulator report"), "{report}");
    let iad_line = rest
        .iter()
        .find(|line| line.starts_with("iad "))
        .unwrap_or_else(|| panic!("no iad line in {report}"));
    let requests: Vec<&str> = iad_line.split_whitespace().collect();
    assert_eq!(requests[1], "2", "{iad_line}");
}

#[tokio::test]
async fn default_subrequest_limit_is_fifty() {
    bounded(async {
        let upstream = demo_upstream().await;
        let calls = |count: usize| {
            (0..count)
                .map(|index| {
                    format!(r#"{{ name = "c{index}", upstream = "app", path = "/c/{index}" }}"#)
                })
                .collect::<Vec<_>>()
                .join(",\n")
        };
        let config = format!(
            r#"
            [[listeners]]
            name = "main"
            address = "127.0.0.1:0"

            [upstreams.app]
            endpoints = [{{ address = "{}" }}]

            [[routes]]
            match.path = "/fifty"
            dispatch = "aggregate"
            aggregate.calls = [{}]

            [[routes]]
            match.path = "/fifty-one"
            dispatch = "aggregate"
            aggregate.calls = [{}]

            [simulator]
            locations = ["iad"]
            "#,
            upstream.address(),
            calls(50),
            calls(51)
        );
        let running = start(&config).await;
        let iad = running.address("iad").expect("iad listens");

        let (status, body) = get(iad, "/fifty", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body:?}");

        let (status, body) = get(iad, "/fifty-one", &[]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        let detail = json(&body)["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(detail.contains("at most 50 upstream requests"), "{detail}");

        let report = running.shutdown().await;
        assert_eq!(report.locations[0].limit_violations["subrequests"], 1);
    })
    .await;
}

#[tokio::test]
async fn balancer_state_is_per_location() {
    bounded(async {
        let first = demo_upstream().await;
        let second = demo_upstream().await;
        let third = demo_upstream().await;
        let config = format!(
            r#"
            [[listeners]]
            name = "main"
            address = "127.0.0.1:0"

            [upstreams.app]
            balancer = "round_robin"
            endpoints = [{{ address = "{}" }}, {{ address = "{}" }}, {{ address = "{}" }}]

            [[routes]]
            match.path_prefix = "/"
            upstream = "app"

            [simulator]
            locations = ["fra", "iad"]
            "#,
            first.address(),
            second.address(),
            third.address()
        );
        let running = start(&config).await;
        let fra = running.address("fra").expect("fra listens");
        let iad = running.address("iad").expect("iad listens");

        let mut fra_upstreams = Vec::new();
        for _ in 0..2 {
            let (status, body) = get(fra, "/", &[]).await;
            assert_eq!(status, StatusCode::OK);
            fra_upstreams.push(json(&body)["upstream"].clone());
        }
        let (status, body) = get(iad, "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        let iad_upstream = json(&body)["upstream"].clone();

        // iad starts its own rotation, so it sends to fra's first endpoint rather
        // than to the third one a shared rotation would pick.
        assert_ne!(fra_upstreams[0], fra_upstreams[1]);
        assert_eq!(iad_upstream, fra_upstreams[0]);
        running.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn request_body_limit_applies_to_streams() {
    bounded(async {
        let upstream = demo_upstream().await;
        let config = format!(
            r#"
            [[listeners]]
            name = "main"
            address = "127.0.0.1:0"

            [upstreams.app]
            endpoints = [{{ address = "{}" }}]

            [[routes]]
            match.path_prefix = "/"
            upstream = "app"

            [simulator]
            locations = ["fra"]
            limits = {{ max_body_bytes = 1000 }}
            "#,
            upstream.address()
        );
        let running = start(&config).await;
        let fra = running.address("fra").expect("fra listens");

        // A body within the limit reaches the upstream whole.
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{fra}/upload"))
            .body(NativeBody::from(vec![b'x'; 1000]))
            .expect("valid request");
        let (parts, body) = send(&http1_client(), request).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(json(&body)["body_bytes"], 1000);

        // A body without Content-Length fails once it streams past the limit.
        let chunks = futures::stream::iter((0..4).map(|_| {
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![b'y'; 400])))
        }));
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{fra}/upload"))
            .body(NativeBody::wrap(http_body_util::StreamBody::new(chunks)))
            .expect("valid request");
        let (parts, _) = send(&http1_client(), request).await;
        assert_eq!(parts.status, StatusCode::PAYLOAD_TOO_LARGE);
        running.shutdown().await;
    })
    .await;
}
