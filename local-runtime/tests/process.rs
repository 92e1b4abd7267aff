//! The `gatehouse` process: subcommands, exit codes, the access log and graceful
//! shutdown.

mod common;

use std::time::Duration;

use common::*;
use http::{Request, StatusCode};

#[test]
fn check_accepts_example_config() {
    let example = example("gatehouse.toml");
    let (status, stdout, _) = run_command(&["check", &example.to_string_lossy()]);
    assert_eq!(status.code(), Some(0), "{stdout}");
    assert_eq!(stdout, "config OK: 3 routes, 3 upstreams, 1 listener\n");
}

#[test]
fn check_lists_every_problem() {
    let example = example("invalid.toml");
    let (status, stdout, _) = run_command(&["check", &example.to_string_lossy()]);
    assert_eq!(status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    for expected in [
        "upstreams.sessions.retry: unknown key",
        "listeners[0].address: invalid socket address",
        "upstreams.sessions.hash_on: is required",
        "upstreams.users.endpoints[0].weight: must be between 1 and 10000",
        "upstreams.users.endpoints[1].address: duplicate endpoint",
        "upstreams.users.timeouts.per_try: is longer than total",
        "routes[0].upstream: upstream \"user\" is not defined",
    ] {
        assert!(
            lines.iter().any(|line| line.starts_with(expected)),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn check_reports_unknown_keys() {
    let dir = TempDir::new();
    let path = dir.write(
        "typo.toml",
        r#"
[upstreams.api]
balancr = "random"
endpoints = [{ address = "127.0.0.1:9001" }]
"#,
    );
    let (status, stdout, _) = run_command(&["check", &path.to_string_lossy()]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        stdout,
        "upstreams.api.balancr: unknown key (did you mean `balancer`?)\n"
    );
}

#[test]
fn check_spin_accepts_repository_manifest() {
    let example = example("gatehouse.toml");
    let manifest = example.with_file_name("../spin.toml");
    let (status, stdout, _) = run_command(&[
        "check",
        "--target",
        "spin",
        &example.to_string_lossy(),
        "--manifest",
        &manifest.to_string_lossy(),
    ]);
    assert_eq!(status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(
        lines[0].starts_with("warning: upstreams.orders.balancer: \"weighted_round_robin\""),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("warning: upstreams.users.balancer: \"round_robin\""),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("warning: upstreams.users.health_check: "),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("warning: upstreams.users.circuit: "),
        "{stdout}"
    );
    assert!(lines[4].starts_with("config OK for Spin: "), "{stdout}");
}

#[test]
fn check_spin_names_missing_endpoint() {
    let dir = TempDir::new();
    let manifest = dir.write(
        "spin.toml",
        r#"
spin_manifest_version = 2
[application]
name = "gatehouse"
[component.gatehouse]
source = "gatehouse_edge.wasm"
allowed_outbound_hosts = ["http://127.0.0.1:9001", "*://127.0.0.1:9004", "http://*:9005", "http://127.0.0.1:*"]
"#,
    );
    let config = dir.write(
        "gatehouse.toml",
        r#"
[upstreams.api]
balancer = "random"
endpoints = [{ address = "127.0.0.1:9001" }, { address = "10.0.0.7:9002" }]
[upstreams.orders]
balancer = "random"
endpoints = [{ address = "127.0.0.1:9004" }, { address = "orders.internal:9005" }]
[[routes]]
upstream = "api"
"#,
    );
    let (status, stdout, _) = run_command(&[
        "check",
        "--target",
        "spin",
        &config.to_string_lossy(),
        "--manifest",
        &manifest.to_string_lossy(),
    ]);
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout,
        "upstreams.api.endpoints[1].address: 10.0.0.7:9002 is missing from \
         allowed_outbound_hosts of component \"gatehouse\"; add \"http://10.0.0.7:9002\" to \
         [component.gatehouse] allowed_outbound_hosts\n"
    );
}

#[test]
fn check_spin_names_missing_redis_store() {
    let dir = TempDir::new();
    let manifest = dir.write(
        "spin.toml",
        r#"
spin_manifest_version = 2
[application]
name = "gatehouse"
[component.gatehouse]
source = "gatehouse_edge.wasm"
allowed_outbound_hosts = ["http://127.0.0.1:9001", "redis://127.0.0.1"]
"#,
    );
    let config = dir.write(
        "gatehouse.toml",
        r#"
[stores.local.redis]
url = "redis://127.0.0.1/0"
[stores.shared.redis]
url = "redis://10.0.0.9:6380/1"
[upstreams.api]
balancer = "random"
endpoints = [{ address = "127.0.0.1:9001" }]
[policies.limit.rate_limit]
limit = 10
period = "1m"
store = "shared"
[[routes]]
upstream = "api"
policies = ["limit"]
"#,
    );
    let (status, stdout, _) = run_command(&[
        "check",
        "--target",
        "spin",
        &config.to_string_lossy(),
        "--manifest",
        &manifest.to_string_lossy(),
    ]);
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout,
        "stores.shared.redis.url: 10.0.0.9:6380 is missing from allowed_outbound_hosts of \
         component \"gatehouse\"; add \"redis://10.0.0.9:6380\" to [component.gatehouse] \
         allowed_outbound_hosts\n"
    );
}

#[test]
fn check_reports_missing_file() {
    let (status, stdout, _) = run_command(&["check", "/nonexistent/gatehouse.toml"]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stdout.starts_with("failed to read /nonexistent/gatehouse.toml: "),
        "{stdout}"
    );
}

#[test]
fn run_with_invalid_config_exits_2() {
    let example = example("invalid.toml");
    let (status, stdout, stderr) = run_command(&["run", "--config", &example.to_string_lossy()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains(": 7 problems"), "{stderr}");
    assert!(
        stderr.contains("upstreams.sessions.retry: unknown key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("routes[0].upstream: upstream \"user\" is not defined"),
        "{stderr}"
    );
}

#[test]
fn schema_is_json() {
    let (status, stdout, _) = run_command(&["schema"]);
    assert_eq!(status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_str(&stdout).expect("schema is JSON");
    assert!(schema["properties"]["routes"].is_object(), "{stdout}");
}

#[test]
fn listener_line_parses() {
    assert_eq!(
        parse_listener_line("gatehouse: listener public on http://127.0.0.1:8080"),
        Some(([127, 0, 0, 1], 8080).into())
    );
    assert_eq!(
        parse_listener_line("gatehouse: listener v6 on http://[::1]:80"),
        Some("[::1]:80".parse().expect("valid address"))
    );
    assert_eq!(parse_listener_line("something else"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_line_per_request() {
    bounded(async {
        let upstream = demo_upstream().await;
        let gateway = Gatehouse::start(&config_for(&upstream.address().to_string(), ""));

        let request = Request::get(gateway.url("/orders/7?token=secret-value"))
            .header("authorization", "Bearer secret-token")
            .body(NativeBody::empty())
            .expect("valid request");
        let (head, body) = send(&http1_client(), request).await;
        assert_eq!(head.status, StatusCode::OK);
        let request_id = head
            .headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .expect("response has a request id")
            .to_owned();

        // The line is written when the response body ends, which may be a moment after
        // the client has read it.
        let mut line = None;
        for _ in 0..100 {
            line = gateway
                .stderr()
                .lines()
                .find(|line| line.contains(&request_id))
                .map(str::to_owned);
            if line.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let line = line.expect("access-log line for the request");
        let record: serde_json::Value =
            serde_json::from_str(&line).expect("access-log line is JSON");
        assert_eq!(record["method"], "GET");
        assert_eq!(record["path"], "/orders/7");
        assert_eq!(record["status"], 200);
        assert_eq!(record["route"], "all");
        assert_eq!(record["upstream"], "backend");
        assert_eq!(record["response_bytes"], body.len() as u64);
        assert_eq!(record["body_complete"], true);
        assert!(record["duration_micros"].is_u64());
        assert!(!line.contains("secret-value"), "{line}");
        assert!(!line.contains("secret-token"), "{line}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_inflight_request() {
    bounded(async {
        let (address, mut requests, gate) = held_upstream().await;
        let mut gateway = Gatehouse::start(&config_for(&address.to_string(), ""));

        let client = http1_client();
        let request = Request::get(gateway.url("/slow"))
            .body(NativeBody::empty())
            .expect("valid request");
        let in_flight = tokio::spawn(async move { send(&client, request).await });

        // Signal only once the upstream has received the request, so it is truly in flight.
        requests
            .recv()
            .await
            .expect("upstream received the request");
        gateway.terminate();

        // The upstream delays its response until the gateway has logged the signal.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gateway.stderr().contains("received SIGTERM") {
            assert!(
                std::time::Instant::now() < deadline,
                "no SIGTERM logged; stderr:\n{}",
                gateway.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!in_flight.is_finished(), "answered before the upstream");
        gate.release();

        let (head, body) = in_flight.await.expect("request task");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(&body[..], b"held");

        let status = tokio::task::spawn_blocking(move || {
            let status = gateway.wait_for_exit(Duration::from_secs(10));
            (status, gateway.stderr())
        })
        .await
        .expect("wait task");
        let (status, stderr) = status;
        let status = status.unwrap_or_else(|| panic!("gatehouse did not exit; stderr:\n{stderr}"));
        assert_eq!(status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("received SIGTERM"), "{stderr}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_every_request() {
    drain_under_load(&[]).await;
}

/// The same drain with every task on one thread, the runtime `--workers 1` builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_on_one_thread() {
    drain_under_load(&["--workers", "1"]).await;
}

/// Sends requests on separate connections to an upstream that delays its responses,
/// sends SIGTERM once all of them are in flight and checks that new connections are
/// refused while they run, that each one gets its response and is logged once the
/// upstream releases them, and that the process exits 0.
async fn drain_under_load(args: &[&str]) {
    const IN_FLIGHT: usize = 50;
    // How long the listener may take to close after SIGTERM. The upstream delays every
    // response until the check is over, so this bound does not race the responses.
    const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

    bounded(async {
        let (address, mut requests, gate) = held_upstream().await;
        let mut gateway =
            Gatehouse::start_with_files(&config_for(&address.to_string(), ""), &[], args);
        let listener = gateway.address;

        // Each request on its own connection, so every connection is busy at SIGTERM.
        let in_flight: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let request = Request::get(gateway.url("/slow"))
                    .body(NativeBody::empty())
                    .expect("valid request");
                tokio::spawn(async move { send(&http1_client(), request).await })
            })
            .collect();
        for _ in 0..IN_FLIGHT {
            requests
                .recv()
                .await
                .expect("upstream received the request");
        }
        let signalled = std::time::Instant::now();
        gateway.terminate();

        // The listener closes while the requests are still running.
        let mut refused = false;
        while signalled.elapsed() < CLOSE_TIMEOUT {
            if tokio::net::TcpStream::connect(listener).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "new connections still accepted after SIGTERM");
        assert!(
            in_flight.iter().all(|task| !task.is_finished()),
            "a request finished before the upstream answered"
        );

        gate.release();
        for task in in_flight {
            let (head, body) = task.await.expect("request task");
            assert_eq!(head.status, StatusCode::OK);
            assert_eq!(&body[..], b"held");
        }

        let (status, stderr) = tokio::task::spawn_blocking(move || {
            // The drain timeout is 30 s, and every request already has its response.
            let status = gateway.wait_for_exit(Duration::from_secs(10));
            (status, gateway.stderr())
        })
        .await
        .expect("wait task");
        let status = status.unwrap_or_else(|| panic!("gatehouse did not exit; stderr:\n{stderr}"));
        assert_eq!(status.code(), Some(0), "{stderr}");
        let served = stderr
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|record| record["path"] == "/slow" && record["status"] == 200)
            .count();
        assert_eq!(served, IN_FLIGHT, "{stderr}");
    })
    .await;
}
