//! Failure handling against the real binary, with upstreams on real sockets: an
//! upstream process killed under load and restarted, a slow upstream tripping
//! timeouts and then its circuit, and zone failover and the panic threshold driven by
//! active health checks.
//!
//! Upstreams that must die are child processes: this test binary started again with
//! `upstream_process` as its only test and the address in an environment variable.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Environment variable that turns this test binary into an upstream process.
const UPSTREAM_ENV: &str = "GATEHOUSE_FAULT_UPSTREAM";

/// Prefix of the line an upstream process prints once it listens.
const LISTENING: &str = "fault upstream listening on ";

/// How long an upstream process serves at most, so that none outlives a failed test.
const UPSTREAM_LIFETIME: Duration = Duration::from_secs(60);

/// Serves a demo upstream on the address in [`UPSTREAM_ENV`], as the body of an
/// upstream process. Without the variable, as in a normal test run, it does nothing.
#[test]
#[ignore = "runs only as a child process of the fault tests"]
fn upstream_process() {
    let Ok(address) = std::env::var(UPSTREAM_ENV) else {
        return;
    };
    let address: SocketAddr = address.parse().expect("valid upstream address");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("build runtime");
    runtime.block_on(async {
        let upstream = gatehouse::demo::DemoUpstream::bind(address)
            .await
            .expect("bind upstream address");
        println!("{LISTENING}{}", upstream.address());
        tokio::time::sleep(UPSTREAM_LIFETIME).await;
    });
}

/// An upstream in a child process, killed by its PID on drop.
struct UpstreamProcess {
    child: Child,
    address: SocketAddr,
}

impl UpstreamProcess {
    /// Starts an upstream process on `address` (port 0 for any free port).
    fn start(address: SocketAddr) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("test binary path"))
            .args(["--exact", "upstream_process", "--ignored", "--nocapture"])
            .env(UPSTREAM_ENV, address.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn upstream process");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = line.strip_prefix(LISTENING) {
                    let _ = sender.send(address.to_owned());
                }
            }
        });
        let address = receiver
            .recv_timeout(Duration::from_secs(15))
            .expect("upstream process listens")
            .parse()
            .expect("upstream prints IP:PORT");
        Self { child, address }
    }

    /// Kills the process by its PID and reaps it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UpstreamProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn get(url: String) -> Request<NativeBody> {
    Request::get(url)
        .body(NativeBody::empty())
        .expect("valid request")
}

/// Counts of one burst of requests: answers by upstream address and every failure.
#[derive(Debug, Default)]
struct Tally {
    by_upstream: BTreeMap<String, u64>,
    failures: Vec<String>,
}

impl Tally {
    fn count(&self, address: SocketAddr) -> u64 {
        self.by_upstream
            .get(&address.to_string())
            .copied()
            .unwrap_or(0)
    }
}

/// Sends `count` GET requests over `concurrency` connections and tallies who answered.
async fn burst(gateway: SocketAddr, count: u64, concurrency: u64) -> Tally {
    let client = http1_client();
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    match client.request(get(format!("http://{gateway}/load"))).await {
                        Ok(response) => {
                            let status = response.status();
                            let body = http_body_util::BodyExt::collect(response.into_body())
                                .await
                                .map(|body| body.to_bytes())
                                .unwrap_or_default();
                            if status != StatusCode::OK {
                                tally
                                    .failures
                                    .push(format!("{status}: {}", String::from_utf8_lossy(&body)));
                                continue;
                            }
                            let upstream = serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|echo| echo["upstream"].as_str().map(str::to_owned))
                                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                            *tally.by_upstream.entry(upstream).or_default() += 1;
                        }
                        Err(error) => tally.failures.push(format!("client error: {error}")),
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.expect("load task");
        for (upstream, count) in tally.by_upstream {
            *total.by_upstream.entry(upstream).or_default() += count;
        }
        total.failures.extend(tally.failures);
    }
    total
}

/// Reads one sample from the admin listener's `/metrics`, such as
/// `gatehouse_endpoint_ejected{upstream="u",endpoint="127.0.0.1:1"}`.
async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = send(&http1_client(), get(format!("http://{admin}/metrics"))).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

/// Polls `series` until it equals `value`, up to `timeout`; returns the time taken.
async fn wait_for_metric(
    admin: SocketAddr,
    series: &str,
    value: f64,
    timeout: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if metric(admin, series).await == Some(value) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn endpoint_series(name: &str, upstream: &str, endpoint: SocketAddr) -> String {
    format!("{name}{{upstream=\"{upstream}\",endpoint=\"{endpoint}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_upstream_is_ejected_without_client_errors_and_returns() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut upstreams: Vec<UpstreamProcess> = (0..3)
            .map(|_| UpstreamProcess::start("127.0.0.1:0".parse().expect("address")))
            .collect();
        let endpoints: Vec<String> = upstreams
            .iter()
            .map(|upstream| format!("{{ address = \"{}\" }}", upstream.address))
            .collect();
        // Ejection lasts 500 ms at most, so the restarted endpoint returns quickly.
        let config = format!(
            r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"

[upstreams.trio]
endpoints = [{}]
timeouts = {{ connect = "250ms", per_try = "2s", total = "5s" }}
retries = {{ max_retries = 2, backoff = "1ms", max_backoff = "5ms" }}
outlier = {{ consecutive_failures = 3, base_ejection = "500ms", max_ejection = "500ms" }}

[[routes]]
upstream = "trio"
"#,
            endpoints.join(", ")
        );
        let gatehouse = Gatehouse::start(&config);
        let admin = gatehouse.admin_address();

        let warm = burst(gatehouse.address, 300, 6).await;
        assert!(warm.failures.is_empty(), "{:?}", warm.failures);
        assert_eq!(warm.by_upstream.len(), 3, "{warm:?}");

        // Kill the second upstream while requests are in flight.
        let victim = upstreams[1].address;
        let load = tokio::spawn(burst(gatehouse.address, 2_000, 6));
        tokio::time::sleep(Duration::from_millis(150)).await;
        upstreams[1].kill();
        let ejected = endpoint_series("gatehouse_endpoint_ejected", "trio", victim);
        let ejection_seen = wait_for_metric(admin, &ejected, 1.0, Duration::from_secs(5)).await;
        let during = load.await.expect("load task");
        assert!(
            during.failures.is_empty(),
            "GET requests failed while an upstream died: {:?}",
            &during.failures[..during.failures.len().min(5)]
        );
        assert!(
            ejection_seen.is_some(),
            "the dead endpoint was never ejected"
        );

        // While it is dead, the other two take everything.
        let dead = burst(gatehouse.address, 500, 6).await;
        assert!(dead.failures.is_empty(), "{:?}", dead.failures);
        assert_eq!(dead.count(victim), 0, "{dead:?}");

        // Restarted on the same port, it takes traffic again once its ejection ends.
        upstreams[1] = UpstreamProcess::start(victim);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut back = 0;
        while back == 0 && Instant::now() < deadline {
            let tally = burst(gatehouse.address, 100, 4).await;
            assert!(tally.failures.is_empty(), "{:?}", tally.failures);
            back = tally.count(victim);
        }
        assert!(back > 0, "the restarted endpoint never took traffic again");
        let retries = metric(admin, "gatehouse_retries_total{upstream=\"trio\"}").await;
        assert!(
            retries.unwrap_or(0.0) > 0.0,
            "the dead endpoint's requests were retried"
        );
    })
    .await
    .expect("test finished within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_trips_timeouts_then_the_circuit() {
    bounded(async {
        let (address, mut received) = slow_upstream(Duration::from_secs(5)).await;
        let gatehouse = Gatehouse::start(&config_for(
            &address.to_string(),
            r#"timeouts = { connect = "1s", per_try = "1s", total = "1s" }
outlier = { consecutive_failures = 0 }
circuit = { consecutive_failures = 3, open_duration = "30s" }"#,
        ));
        let client = http1_client();
        for _ in 0..3 {
            let (parts, body) = send(&client, get(gatehouse.url("/slow"))).await;
            assert_eq!(parts.status, StatusCode::GATEWAY_TIMEOUT, "{body:?}");
        }
        for _ in 0..5 {
            let started = Instant::now();
            let (parts, body) = send(&client, get(gatehouse.url("/slow"))).await;
            assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
            assert_eq!(
                json(&body)["type"],
                "urn:gatehouse:problem:circuit-open",
                "{body:?}"
            );
            // The time left of the 30 s open state, rounded up, so it drops below 30
            // once a second has passed since the circuit opened.
            let retry_after: u64 = parts.headers["retry-after"]
                .to_str()
                .expect("ASCII Retry-After")
                .parse()
                .expect("Retry-After in seconds");
            assert!(
                (20..=30).contains(&retry_after),
                "Retry-After {retry_after}"
            );
            // Refused without waiting for the upstream, so below the 1 s try timeout.
            let elapsed = started.elapsed();
            assert!(
                elapsed < Duration::from_secs(1),
                "refused after {elapsed:?}"
            );
        }
        // Only the three timed-out attempts reached the upstream.
        let mut reached = 0;
        while received.try_recv().is_ok() {
            reached += 1;
        }
        assert_eq!(reached, 3);
    })
    .await;
}

/// An upstream whose `/healthz` answers 200 or 503 as `healthy` says, and which
/// answers every other path with 200 and its name, healthy or not.
async fn switchable_upstream(name: &'static str) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&healthy);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let flag = Arc::clone(&flag);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let status =
                        if request.uri().path() == "/healthz" && !flag.load(Ordering::Relaxed) {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        };
                    async move {
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, healthy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_failover_and_panic_threshold_follow_active_checks() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let names = ["a1", "a2", "b1", "b2"];
        let mut addresses = Vec::new();
        let mut switches = Vec::new();
        for name in names {
            let (address, healthy) = switchable_upstream(name).await;
            addresses.push(address);
            switches.push(healthy);
        }
        let zone = |index: usize| if index < 2 { "zone-a" } else { "zone-b" };
        let endpoints: Vec<String> = addresses
            .iter()
            .enumerate()
            .map(|(index, address)| {
                format!("{{ address = \"{address}\", zone = \"{}\" }}", zone(index))
            })
            .collect();
        let config = format!(
            r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"

[server]
zone = "zone-a"

[upstreams.zoned]
balancer = "least_outstanding"
endpoints = [{}]
outlier = {{ panic_threshold_percent = 50 }}
health_check = {{ path = "/healthz", interval = "100ms", timeout = "5s", healthy_threshold = 1, unhealthy_threshold = 1 }}

[[routes]]
upstream = "zoned"
"#,
            endpoints.join(", ")
        );
        let gatehouse = Gatehouse::start(&config);
        let admin = gatehouse.admin_address();
        let healthy_series =
            |index: usize| endpoint_series("gatehouse_endpoint_healthy", "zoned", addresses[index]);
        let set = |index: usize, healthy: bool| switches[index].store(healthy, Ordering::Relaxed);
        let wait_health = |index: usize, healthy: bool| {
            let series = healthy_series(index);
            async move {
                let value = if healthy { 1.0 } else { 0.0 };
                wait_for_metric(admin, &series, value, Duration::from_secs(5))
                    .await
                    .unwrap_or_else(|| panic!("{series} never became {value}"));
            }
        };
        let shares = |tally: &Tally| -> Vec<u64> {
            names
                .iter()
                .map(|name| tally.by_upstream.get(*name).copied().unwrap_or(0))
                .collect()
        };
        for index in 0..4 {
            wait_health(index, true).await;
        }

        // Everything healthy: the local zone takes all the traffic.
        let tally = burst(gatehouse.address, 200, 4).await;
        assert!(tally.failures.is_empty(), "{:?}", tally.failures);
        let counts = shares(&tally);
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");

        // Half of zone-a fails its checks: below 70% healthy, part of the traffic
        // spills to zone-b (about 0.5 / 0.7 stays local).
        set(0, false);
        wait_health(0, false).await;
        let tally = burst(gatehouse.address, 400, 4).await;
        assert!(tally.failures.is_empty(), "{:?}", tally.failures);
        let counts = shares(&tally);
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[2] + counts[3] > 0, "nothing spilled: {counts:?}");
        assert!(counts[1] > counts[2] + counts[3], "too much spilled: {counts:?}");

        // All of zone-a fails: zone-b takes everything.
        set(1, false);
        wait_health(1, false).await;
        let tally = burst(gatehouse.address, 200, 4).await;
        let counts = shares(&tally);
        assert_eq!(counts[0] + counts[1], 0, "{counts:?}");
        assert!(counts[2] > 0 && counts[3] > 0, "{counts:?}");

        // One healthy endpoint of four is below the 50% panic threshold: load spreads
        // over every endpoint rather than crushing the last healthy one.
        set(2, false);
        wait_health(2, false).await;
        let tally = burst(gatehouse.address, 400, 4).await;
        assert!(tally.failures.is_empty(), "{:?}", tally.failures);
        let counts = shares(&tally);
        assert!(counts.iter().all(|count| *count > 0), "{counts:?}");
        assert!(counts[3] < 300, "the last healthy endpoint was crushed: {counts:?}");

        // Recovery brings the traffic home.
        for index in 0..3 {
            set(index, true);
            wait_health(index, true).await;
        }
        let tally = burst(gatehouse.address, 200, 4).await;
        let counts = shares(&tally);
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
        assert!(counts[0] > 0 && counts[1] > 0, "{counts:?}");
    })
    .await
    .expect("test finished within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_restarts_checks_and_keeps_verdicts() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (sick, sick_switch) = switchable_upstream("sick").await;
        let (well, _) = switchable_upstream("well").await;
        let config = |extra_route: &str| {
            format!(
                r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"

[upstreams.pair]
endpoints = [{{ address = "{sick}" }}, {{ address = "{well}" }}]
health_check = {{ path = "/healthz", interval = "100ms", healthy_threshold = 3, unhealthy_threshold = 1 }}

[[routes]]
upstream = "pair"
{extra_route}
"#
            )
        };
        let gatehouse = Gatehouse::start(&config(""));
        let admin = gatehouse.admin_address();
        let sick_series = endpoint_series("gatehouse_endpoint_healthy", "pair", sick);
        sick_switch.store(false, Ordering::Relaxed);
        wait_for_metric(admin, &sick_series, 0.0, Duration::from_secs(5))
            .await
            .expect("the failing endpoint is marked unhealthy");

        // Reload with one more route; the endpoint stays, so its verdict does too.
        let route = "[[routes]]\nmatch.path_prefix = \"/other\"\nupstream = \"pair\"";
        std::fs::write(gatehouse.config_path(), config(route)).expect("rewrite config");
        let request = Request::post(format!("http://{admin}/reload"))
            .body(NativeBody::empty())
            .expect("valid request");
        let (parts, body) = send(&http1_client(), request).await;
        assert_eq!(parts.status, StatusCode::OK, "{body:?}");
        assert_eq!(metric(admin, &sick_series).await, Some(0.0));
        let checks = "gatehouse_health_checks_total{upstream=\"pair\",result=\"fail\"}";
        let before = metric(admin, checks).await.unwrap_or(0.0);
        let tally = burst(gatehouse.address, 100, 2).await;
        assert!(tally.failures.is_empty(), "{:?}", tally.failures);
        assert!(!tally.by_upstream.contains_key("sick"), "{tally:?}");

        // The restarted checks keep running: more failures are counted, and three
        // passes in a row bring the endpoint back.
        let deadline = Instant::now() + Duration::from_secs(5);
        while metric(admin, checks).await.unwrap_or(0.0) <= before {
            assert!(Instant::now() < deadline, "no check ran after the reload");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sick_switch.store(true, Ordering::Relaxed);
        wait_for_metric(admin, &sick_series, 1.0, Duration::from_secs(5))
            .await
            .expect("the recovered endpoint is marked healthy");
        let tally = burst(gatehouse.address, 100, 2).await;
        assert!(tally.by_upstream.contains_key("sick"), "{tally:?}");
    })
    .await
    .expect("test finished within 60 s");
}
