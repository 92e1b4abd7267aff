//! Response caching through the `gatehouse` binary over real sockets on 127.0.0.1:
//! request coalescing, purges through the admin listener and the cache metrics.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Starts an upstream that counts its requests, waits `delay` and responds 200 with
/// `Cache-Control: max-age=60` and the body `cached body`.
async fn counting_upstream(delay: Duration) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(delay).await;
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(b"cached body")));
                        response.headers_mut().insert(
                            http::header::CACHE_CONTROL,
                            http::HeaderValue::from_static("max-age=60"),
                        );
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, requests)
}

/// Builds a config with a listener, an admin listener and one cached route.
fn cached_config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"

[upstreams.backend]
endpoints = [{{ address = "{upstream}" }}]

[policies.pages.cache]

[[routes]]
name = "all"
upstream = "backend"
policies = ["pages"]
"#
    )
}

fn get(url: &str) -> Request<NativeBody> {
    Request::get(url)
        .body(NativeBody::empty())
        .expect("valid request")
}

fn cache_status(parts: &http::response::Parts) -> &str {
    parts
        .headers
        .get("x-cache-status")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("(none)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_request() {
    bounded(async {
        let (upstream, requests) = counting_upstream(Duration::from_millis(300)).await;
        let gateway = Gatehouse::start(&cached_config(upstream));
        let client = http1_client();

        let mut tasks = Vec::new();
        for _ in 0..8 {
            let client = client.clone();
            let url = gateway.url("/popular");
            tasks.push(tokio::spawn(async move { send(&client, get(&url)).await }));
        }
        let mut statuses = Vec::new();
        for task in tasks {
            let (parts, body) = task.await.expect("client task");
            assert_eq!(parts.status, StatusCode::OK);
            assert_eq!(body, "cached body");
            statuses.push(cache_status(&parts).to_owned());
        }
        assert_eq!(requests.load(Ordering::SeqCst), 1, "statuses: {statuses:?}");
        let misses = statuses.iter().filter(|status| *status == "miss").count();
        let hits = statuses.iter().filter(|status| *status == "hit").count();
        assert_eq!(misses, 1, "statuses: {statuses:?}");
        assert_eq!(hits, 7, "statuses: {statuses:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_url_and_prefix() {
    bounded(async {
        let (upstream, requests) = counting_upstream(Duration::ZERO).await;
        let gateway = Gatehouse::start(&cached_config(upstream));
        let admin = gateway.admin_address();
        let client = http1_client();

        for path in ["/docs/a", "/docs/b", "/other"] {
            let (parts, _) = send(&client, get(&gateway.url(path))).await;
            assert_eq!(cache_status(&parts), "miss", "{path}");
            let (parts, _) = send(&client, get(&gateway.url(path))).await;
            assert_eq!(cache_status(&parts), "hit", "{path}");
        }
        assert_eq!(requests.load(Ordering::SeqCst), 3);

        let purge = |body: &'static str| {
            Request::post(format!("http://{admin}/cache/purge"))
                .body(NativeBody::from(Bytes::from_static(body.as_bytes())))
                .expect("valid request")
        };
        let (parts, body) = send(&client, purge(r#"{"url": "127.0.0.1/docs/a"}"#)).await;
        assert_eq!(parts.status, StatusCode::OK, "{body:?}");
        assert_eq!(json(&body)["removed"], 1);
        let (parts, _) = send(&client, get(&gateway.url("/docs/a"))).await;
        assert_eq!(cache_status(&parts), "miss");
        let (parts, _) = send(&client, get(&gateway.url("/docs/b"))).await;
        assert_eq!(cache_status(&parts), "hit");

        let (parts, body) = send(&client, purge(r#"{"prefix": "127.0.0.1/docs/"}"#)).await;
        assert_eq!(parts.status, StatusCode::OK, "{body:?}");
        assert_eq!(json(&body)["removed"], 2);
        let (parts, _) = send(&client, get(&gateway.url("/docs/b"))).await;
        assert_eq!(cache_status(&parts), "miss");
        let (parts, _) = send(&client, get(&gateway.url("/other"))).await;
        assert_eq!(cache_status(&parts), "hit");

        let (parts, body) = send(&client, purge(r#"{"url": "", "prefix": "x"}"#)).await;
        assert_eq!(parts.status, StatusCode::BAD_REQUEST, "{body:?}");
        let (parts, body) = send(&client, purge("not json")).await;
        assert_eq!(parts.status, StatusCode::BAD_REQUEST, "{body:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_cache_outcomes() {
    bounded(async {
        let (upstream, _requests) = counting_upstream(Duration::ZERO).await;
        let gateway = Gatehouse::start(&cached_config(upstream));
        let admin = gateway.admin_address();
        let client = http1_client();
        for _ in 0..3 {
            send(&client, get(&gateway.url("/counted"))).await;
        }
        let (_, body) = send(&client, get(&format!("http://{admin}/metrics"))).await;
        let text = String::from_utf8(body.to_vec()).expect("metrics are UTF-8");
        for line in [
            r#"gatehouse_cache_responses_total{route="all",status="miss"} 1"#,
            r#"gatehouse_cache_responses_total{route="all",status="hit"} 2"#,
            "gatehouse_cache_entries 1",
            "gatehouse_cache_evictions_total 0",
        ] {
            assert!(
                text.lines().any(|found| found == line),
                "{line} in:\n{text}"
            );
        }
        let bytes_line = text
            .lines()
            .find(|line| line.starts_with("gatehouse_cache_bytes "))
            .expect("gatehouse_cache_bytes is reported");
        assert_ne!(bytes_line, "gatehouse_cache_bytes 0");
    })
    .await;
}
