//! Service discovery against the real binary: a DNS server in the test process whose
//! A and SRV records change while traffic flows, and an endpoint file rewritten under
//! load. Every request must succeed while the endpoint set changes.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::ServerFuture;
use hickory_server::authority::{Catalog, ZoneType};
use hickory_server::store::in_memory::InMemoryAuthority;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UdpSocket};

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    NativeBody,
>;

const ZONE: &str = "svc.test.";

/// A DNS server on 127.0.0.1 serving one in-memory zone whose records the test
/// replaces while it runs.
struct DnsServer {
    address: SocketAddr,
    zone: Arc<InMemoryAuthority>,
    server: ServerFuture<Catalog>,
}

impl DnsServer {
    async fn start() -> Self {
        let origin = Name::from_str(ZONE).expect("zone name");
        let soa = Record::from_rdata(
            origin.clone(),
            60,
            RData::SOA(SOA::new(
                Name::from_str("ns.svc.test.").expect("name"),
                Name::from_str("admin.svc.test.").expect("name"),
                1,
                60,
                60,
                60,
                1,
            )),
        );
        let records = BTreeMap::from([(
            RrKey::new(LowerName::new(&origin), RecordType::SOA),
            RecordSet::from(soa),
        )]);
        let zone = Arc::new(
            InMemoryAuthority::new(origin.clone(), records, ZoneType::Primary, false)
                .expect("valid zone"),
        );
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind DNS socket");
        let address = socket.local_addr().expect("local address");
        let mut server = ServerFuture::new(catalog);
        server.register_socket(socket);
        Self {
            address,
            zone,
            server,
        }
    }

    /// Replaces the records of `name` and `record_type` with `data`, each with a TTL
    /// of 1 s; empty `data` removes them.
    async fn set(&self, name: &str, record_type: RecordType, data: Vec<RData>) {
        let name = Name::from_str(name).expect("record name");
        let key = RrKey::new(LowerName::new(&name), record_type);
        let mut records = self.zone.records_mut().await;
        if data.is_empty() {
            records.remove(&key);
            return;
        }
        let mut set = RecordSet::with_ttl(name.clone(), record_type, 1);
        for rdata in data {
            set.insert(Record::from_rdata(name.clone(), 1, rdata), 1);
        }
        records.insert(key, Arc::new(set));
    }

    async fn set_a(&self, name: &str, addresses: &[Ipv4Addr]) {
        let data = addresses
            .iter()
            .map(|address| RData::A(A(*address)))
            .collect();
        self.set(name, RecordType::A, data).await;
    }

    async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// An upstream that responds 200 with its name, on a given address.
async fn named_upstream(address: SocketAddr, name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(address).await.expect("bind upstream");
    serve_named(listener, name)
}

/// Serves the named upstream on a bound listener and returns its address.
fn serve_named(listener: TcpListener, name: &'static str) -> SocketAddr {
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        name.as_bytes(),
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// Starts one named upstream on each loopback address `127.0.0.N` of `hosts`, all on
/// the same port, since A records carry no port. Returns the port.
async fn upstreams_on_one_port(hosts: &[(u8, &'static str)]) -> u16 {
    'attempt: for _ in 0..20 {
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind probe");
        let port = probe.local_addr().expect("local address").port();
        drop(probe);
        // The probe's port may be taken on another address meanwhile, so the
        // listeners are kept and served only once every address is bound.
        let mut listeners = Vec::new();
        for (host, name) in hosts {
            match TcpListener::bind((Ipv4Addr::new(127, 0, 0, *host), port)).await {
                Ok(listener) => listeners.push((listener, *name)),
                Err(_) => continue 'attempt,
            }
        }
        for (listener, name) in listeners {
            serve_named(listener, name);
        }
        return port;
    }
    panic!("no port free on every loopback address");
}

/// Traffic from several connections at once, recording which upstream served each
/// response and when its request started.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    served: Arc<Mutex<Vec<(Instant, String)>>>,
    /// When the load started, before any of its requests.
    created: Instant,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `connections` workers, each sending requests to `url` one after another
    /// until stopped or `max_time` passes.
    fn start(url: String, connections: usize, max_time: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(Mutex::new(Vec::new()));
        let created = Instant::now();
        let deadline = Instant::now() + max_time;
        let workers = (0..connections)
            .map(|_| {
                let (stop, sent, failures, served, url) = (
                    Arc::clone(&stop),
                    Arc::clone(&sent),
                    Arc::clone(&failures),
                    Arc::clone(&served),
                    url.clone(),
                );
                tokio::spawn(async move {
                    // One client per worker, so each keeps its own connection.
                    let client = http1_client();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let started = Instant::now();
                        let outcome = match client.request(get(url.clone())).await {
                            Ok(response) => {
                                let status = response.status();
                                let body =
                                    http_body_util::BodyExt::collect(response.into_body()).await;
                                match body {
                                    Ok(body) if status == StatusCode::OK => {
                                        Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
                                    }
                                    Ok(body) => Err(format!("{status}: {:?}", body.to_bytes())),
                                    Err(error) => Err(format!("body failed: {error}")),
                                }
                            }
                            Err(error) => Err(format!("request failed: {error}")),
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        match outcome {
                            Ok(name) => served.lock().unwrap().push((started, name)),
                            Err(failure) => failures.lock().unwrap().push(failure),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            failures,
            served,
            created,
            workers,
        }
    }

    /// Returns the responses per upstream to requests that started at `cutoff` or
    /// later, received since the last call, and clears every response.
    fn take_served_since(&self, cutoff: Instant) -> BTreeMap<String, u64> {
        let served = std::mem::take(&mut *self.served.lock().unwrap());
        let mut counts = BTreeMap::new();
        for (started, name) in served {
            if started >= cutoff {
                *counts.entry(name).or_default() += 1;
            }
        }
        counts
    }

    /// Waits until responses came from every upstream of `names`, within `timeout`.
    async fn wait_for(&self, names: &[&str], timeout: Duration) -> BTreeMap<String, u64> {
        self.wait_for_since(self.created, names, timeout).await
    }

    /// Waits until responses to requests that started at `cutoff` or later came from
    /// every upstream of `names`, within `timeout`. Once the gateway has applied a new
    /// endpoint set, such requests can only reach that set, however slow the machine.
    async fn wait_for_since(
        &self,
        cutoff: Instant,
        names: &[&str],
        timeout: Duration,
    ) -> BTreeMap<String, u64> {
        let deadline = Instant::now() + timeout;
        let mut seen = BTreeMap::new();
        loop {
            for (name, count) in self.take_served_since(cutoff) {
                *seen.entry(name).or_default() += count;
            }
            if names.iter().all(|name| seen.contains_key(*name)) || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the workers and returns the requests sent and the failures.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.expect("load worker finished");
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

fn get(url: String) -> Request<NativeBody> {
    Request::get(url)
        .body(NativeBody::empty())
        .expect("valid request")
}

/// Returns the value of a sample of the admin listener's metrics with the label
/// `upstream="NAME"`, or 0 when it is absent.
async fn upstream_metric(client: &Client, admin: SocketAddr, name: &str, upstream: &str) -> f64 {
    let (_, body) = send(client, get(format!("http://{admin}/metrics"))).await;
    let text = String::from_utf8(body.to_vec()).expect("metrics are UTF-8");
    let prefix = format!("{name}{{upstream=\"{upstream}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0.0, |value| value.trim().parse().expect("numeric sample"))
}

/// Polls the metric until it reaches `at_least`, within `timeout`.
async fn wait_for_metric(
    client: &Client,
    admin: SocketAddr,
    name: &str,
    at_least: f64,
    timeout: Duration,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let value = upstream_metric(client, admin, name, "api").await;
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns the endpoints of upstream `api` in the serving config, from the admin
/// listener.
async fn served_endpoints(client: &Client, admin: SocketAddr) -> Vec<serde_json::Value> {
    let (parts, body) = send(client, get(format!("http://{admin}/config"))).await;
    assert_eq!(parts.status, StatusCode::OK);
    json(&body)["upstreams"]["api"]["endpoints"]
        .as_array()
        .expect("endpoints listed")
        .clone()
}

fn gateway_config(upstream: &str, resolver: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"

{resolver}

[upstreams.api]
{upstream}

[[routes]]
name = "all"
upstream = "api"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_records_change_under_load() {
    const CONNECTIONS: usize = 20;

    tokio::time::timeout(Duration::from_secs(60), async {
        let port = upstreams_on_one_port(&[(2, "b"), (3, "c"), (4, "d")]).await;
        let dns = DnsServer::start().await;
        dns.set_a("api.svc.test.", &[Ipv4Addr::new(127, 0, 0, 2)])
            .await;
        let config = gateway_config(
            &format!(
                "discovery = {{ dns = \"api.svc.test:{port}\", min_ttl = \"100ms\", \
                 max_ttl = \"500ms\", interval = \"200ms\" }}"
            ),
            &format!(
                "[resolver]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"",
                dns.address
            ),
        );
        let gatehouse = Gatehouse::start(&config);
        let admin = gatehouse.admin_address();
        let client = http1_client();

        // The upstream has no endpoints until the first lookup.
        let load = Load::start(gatehouse.url("/"), 1, Duration::from_secs(10));
        let seen = load.wait_for(&["b"], Duration::from_secs(10)).await;
        assert!(seen.contains_key("b"), "first set never served: {seen:?}");
        let _ = load.finish().await;

        let load = Load::start(gatehouse.url("/"), CONNECTIONS, Duration::from_secs(60));
        let seen = load.wait_for(&["b"], Duration::from_secs(5)).await;
        assert!(seen.contains_key("b"), "{seen:?}");

        // New records: the endpoint that was there leaves, two others arrive.
        dns.set_a(
            "api.svc.test.",
            &[Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 4)],
        )
        .await;
        let seen = load.wait_for(&["c", "d"], Duration::from_secs(10)).await;
        assert!(
            seen.contains_key("c") && seen.contains_key("d"),
            "new records never served: {seen:?}"
        );
        // Requests that started before the change may still finish on b, but none
        // that started after c and d were both served can reach it.
        let changed = Instant::now();
        let after_change = load
            .wait_for_since(changed, &["c", "d"], Duration::from_secs(10))
            .await;
        assert!(!after_change.contains_key("b"), "{after_change:?}");
        assert!(!after_change.is_empty(), "no traffic after the change");

        // A name without records is an empty set, which keeps the last good one.
        let failures_before =
            upstream_metric(&client, admin, "gatehouse_discovery_failures_total", "api").await;
        dns.set("api.svc.test.", RecordType::A, Vec::new()).await;
        let failures = wait_for_metric(
            &client,
            admin,
            "gatehouse_discovery_failures_total",
            failures_before + 1.0,
            Duration::from_secs(10),
        )
        .await;
        assert!(failures > failures_before, "{failures}");
        let failed = Instant::now();
        let served = load
            .wait_for_since(failed, &["c", "d"], Duration::from_secs(10))
            .await;
        assert!(
            served.contains_key("c") && served.contains_key("d") && !served.contains_key("b"),
            "{served:?}"
        );

        // A name server that stops responding also keeps the last good set.
        dns.stop().await;
        let failures = wait_for_metric(
            &client,
            admin,
            "gatehouse_discovery_failures_total",
            failures + 1.0,
            Duration::from_secs(10),
        )
        .await;
        let stopped = Instant::now();
        let served = load
            .wait_for_since(stopped, &["c", "d"], Duration::from_secs(10))
            .await;
        assert!(
            served.contains_key("c") && served.contains_key("d"),
            "{served:?}"
        );

        let (sent, failed) = load.finish().await;
        assert!(
            failed.is_empty(),
            "{} of {sent} failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(sent >= CONNECTIONS as u64, "only {sent} requests sent");

        let updates =
            upstream_metric(&client, admin, "gatehouse_discovery_updates_total", "api").await;
        assert!(updates >= 2.0, "{updates}");
        let endpoints =
            upstream_metric(&client, admin, "gatehouse_discovery_endpoints", "api").await;
        assert_eq!(endpoints, 2.0);
        assert!(failures >= 2.0, "{failures}");
        let stderr = gatehouse.stderr();
        assert!(stderr.contains("discovered endpoints changed"), "{stderr}");
        assert!(stderr.contains("service discovery failed"), "{stderr}");
    })
    .await
    .expect("test finished within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_ports_and_weights() {
    bounded(async {
        let first = named_upstream("127.0.0.1:0".parse().unwrap(), "first").await;
        let second = named_upstream("127.0.0.1:0".parse().unwrap(), "second").await;
        let dns = DnsServer::start().await;
        dns.set_a("first.svc.test.", &[Ipv4Addr::LOCALHOST]).await;
        dns.set_a("second.svc.test.", &[Ipv4Addr::LOCALHOST]).await;
        let srv = |port: u16, weight: u16, target: &str| {
            RData::SRV(SRV::new(0, weight, port, Name::from_str(target).unwrap()))
        };
        dns.set(
            "_http._tcp.api.svc.test.",
            RecordType::SRV,
            vec![
                srv(first.port(), 3, "first.svc.test."),
                srv(second.port(), 1, "second.svc.test."),
            ],
        )
        .await;
        let config = gateway_config(
            "balancer = \"weighted_round_robin\"\n\
             discovery = { srv = \"_http._tcp.api.svc.test\", min_ttl = \"100ms\", \
             max_ttl = \"500ms\", interval = \"200ms\" }",
            &format!("[resolver]\nnameservers = [\"{}\"]", dns.address),
        );
        let gatehouse = Gatehouse::start(&config);
        let admin = gatehouse.admin_address();
        let client = http1_client();

        let deadline = Instant::now() + Duration::from_secs(10);
        let mut endpoints = Vec::new();
        while Instant::now() < deadline {
            endpoints = served_endpoints(&client, admin).await;
            if endpoints.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let by_address: BTreeMap<String, u64> = endpoints
            .iter()
            .map(|endpoint| {
                (
                    endpoint["address"].as_str().unwrap().to_owned(),
                    endpoint["weight"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            by_address,
            BTreeMap::from([(first.to_string(), 3), (second.to_string(), 1)])
        );

        // Smooth weighted round robin sends 3 of every 4 requests to the first.
        let mut counts = BTreeMap::<String, u32>::new();
        for _ in 0..40 {
            let (parts, body) = send(&client, get(gatehouse.url("/"))).await;
            assert_eq!(parts.status, StatusCode::OK);
            *counts
                .entry(String::from_utf8_lossy(&body).into_owned())
                .or_default() += 1;
        }
        assert_eq!(counts.get("first"), Some(&30), "{counts:?}");
        assert_eq!(counts.get("second"), Some(&10), "{counts:?}");
        dns.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_file_rewritten_under_load() {
    const CONNECTIONS: usize = 20;

    tokio::time::timeout(Duration::from_secs(60), async {
        let old = named_upstream("127.0.0.1:0".parse().unwrap(), "old").await;
        let new_a = named_upstream("127.0.0.1:0".parse().unwrap(), "new-a").await;
        let new_b = named_upstream("127.0.0.1:0".parse().unwrap(), "new-b").await;
        let endpoints_json = |addresses: &[SocketAddr]| -> String {
            let list: Vec<serde_json::Value> = addresses
                .iter()
                .map(|address| serde_json::json!({ "address": address.to_string() }))
                .collect();
            serde_json::json!({ "endpoints": list }).to_string()
        };
        let config = gateway_config(
            "balancer = \"least_outstanding\"\n\
             discovery = { file = \"endpoints.json\", interval = \"100ms\" }",
            "",
        );
        let gatehouse = Gatehouse::start(&config);
        let folder = gatehouse.config_path().parent().unwrap().to_owned();
        let file = folder.join("endpoints.json");
        let admin = gatehouse.admin_address();
        let client = http1_client();

        // The file is missing at first: a failure, and no endpoints to serve.
        let failures = wait_for_metric(
            &client,
            admin,
            "gatehouse_discovery_failures_total",
            1.0,
            Duration::from_secs(10),
        )
        .await;
        assert!(failures >= 1.0, "{failures}");
        let (parts, _) = send(&client, get(gatehouse.url("/"))).await;
        assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);

        std::fs::write(&file, endpoints_json(&[old])).unwrap();
        let load = Load::start(gatehouse.url("/"), 1, Duration::from_secs(10));
        let seen = load.wait_for(&["old"], Duration::from_secs(10)).await;
        assert!(seen.contains_key("old"), "{seen:?}");
        let (_, failed) = load.finish().await;
        // Requests before the file appeared may have failed; only this load counts.
        let _ = failed;

        let load = Load::start(gatehouse.url("/"), CONNECTIONS, Duration::from_secs(60));
        let seen = load.wait_for(&["old"], Duration::from_secs(5)).await;
        assert!(seen.contains_key("old"), "{seen:?}");
        // Written to a temporary name and renamed, as deployment tools do, so the
        // file is never read half written.
        let temporary = folder.join("endpoints.json.tmp");
        std::fs::write(&temporary, endpoints_json(&[new_a, new_b])).unwrap();
        std::fs::rename(&temporary, &file).unwrap();
        let seen = load
            .wait_for(&["new-a", "new-b"], Duration::from_secs(10))
            .await;
        assert!(
            seen.contains_key("new-a") && seen.contains_key("new-b"),
            "{seen:?}"
        );
        // Only requests that started before both new endpoints served may reach old.
        let changed = Instant::now();
        let served = load
            .wait_for_since(changed, &["new-a", "new-b"], Duration::from_secs(10))
            .await;
        assert!(
            !served.contains_key("old") && !served.is_empty(),
            "{served:?}"
        );

        // An invalid file is rejected and counted; the last good set keeps serving.
        let failures_before =
            upstream_metric(&client, admin, "gatehouse_discovery_failures_total", "api").await;
        std::fs::write(&file, r#"{"endpoints": [{"address": "no port"}]}"#).unwrap();
        let failures = wait_for_metric(
            &client,
            admin,
            "gatehouse_discovery_failures_total",
            failures_before + 1.0,
            Duration::from_secs(10),
        )
        .await;
        assert!(failures > failures_before, "{failures}");

        // A reload of the config keeps the discovered endpoints.
        let reloaded = gateway_config(
            "balancer = \"least_outstanding\"\n\
             discovery = { file = \"endpoints.json\", interval = \"100ms\" }",
            "",
        ) + "\n[[routes]]\nname = \"extra\"\nmatch.path_prefix = \"/extra\"\nupstream = \"api\"\n";
        std::fs::write(gatehouse.config_path(), reloaded).unwrap();
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{admin}/reload"))
            .body(NativeBody::empty())
            .unwrap();
        let (parts, body) = send(&client, request).await;
        assert_eq!(parts.status, StatusCode::OK, "{body:?}");
        let addresses: Vec<String> = served_endpoints(&client, admin)
            .await
            .iter()
            .map(|endpoint| endpoint["address"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(addresses, [new_a.to_string(), new_b.to_string()]);
        let reloaded_at = Instant::now();
        let served = load
            .wait_for_since(reloaded_at, &["new-a", "new-b"], Duration::from_secs(10))
            .await;
        assert!(
            served.contains_key("new-a") && served.contains_key("new-b"),
            "{served:?}"
        );

        let (sent, failed) = load.finish().await;
        assert!(
            failed.is_empty(),
            "{} of {sent} failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(sent >= CONNECTIONS as u64, "only {sent} requests sent");
    })
    .await
    .expect("test finished within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_entry_replaces_endpoints() {
    bounded(async {
        let configured = named_upstream("127.0.0.1:0".parse().unwrap(), "configured").await;
        let stored = named_upstream("127.0.0.1:0".parse().unwrap(), "stored").await;
        let config = gateway_config(
            &format!(
                "endpoints = [{{ address = \"{configured}\" }}]\n\
                 discovery = {{ key_value = \"upstreams/api\", interval = \"100ms\" }}"
            ),
            "",
        );
        let seed = serde_json::json!({
            "upstreams/api": { "endpoints": [{ "address": stored.to_string() }] }
        })
        .to_string();
        let gatehouse = Gatehouse::start_with_files(
            &config,
            &[("seed.json", &seed)],
            &["--key-value-seed", "seed.json"],
        );
        let admin = gatehouse.admin_address();
        let client = http1_client();

        let updates = wait_for_metric(
            &client,
            admin,
            "gatehouse_discovery_updates_total",
            1.0,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(updates, 1.0);
        for _ in 0..5 {
            let (parts, body) = send(&client, get(gatehouse.url("/"))).await;
            assert_eq!(parts.status, StatusCode::OK);
            assert_eq!(&body[..], b"stored");
        }
    })
    .await;
}
