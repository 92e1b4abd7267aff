//! Response caching in a real `redis-server` shared by two `gatehouse` processes: an
//! entry stored through one is a hit on the other, a purge on one removes it for both,
//! and a Redis that stops turns lookups into misses while requests still succeed.
//!
//! The tests skip with a message when `redis-server` is not on `PATH`, and fail
//! instead when `GATEHOUSE_REQUIRE_REDIS=1`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::redis_server::RedisServer;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Starts an upstream that counts its requests and responds 200 with
/// `Cache-Control: max-age=60`.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
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
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(b"shared body")));
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

/// Builds a config with a listener, an admin listener and one route cached in the
/// Redis store `shared` at `redis_url`.
fn shared_cache_config(upstream: SocketAddr, redis_url: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"

[upstreams.backend]
endpoints = [{{ address = "{upstream}" }}]

[stores.shared.redis]
url = "{redis_url}"
timeout = "250ms"
error_log_interval = "1s"

[policies.pages.cache]
store = "shared"

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

fn purge(admin: SocketAddr, body: &'static str) -> Request<NativeBody> {
    Request::post(format!("http://{admin}/cache/purge"))
        .body(NativeBody::from(Bytes::from_static(body.as_bytes())))
        .expect("valid request")
}

fn cache_status(parts: &http::response::Parts) -> &str {
    parts
        .headers
        .get("x-cache-status")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_shared_and_purged_across_gateways() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    bounded(async {
        let (upstream, requests) = counting_upstream().await;
        let config = shared_cache_config(upstream, &redis.url());
        let first = Gatehouse::start(&config);
        let second = Gatehouse::start(&config);
        let client = http1_client();

        let (parts, body) = send(&client, get(&first.url("/docs/a"))).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(cache_status(&parts), "miss");
        assert_eq!(&body[..], b"shared body");
        let (parts, body) = send(&client, get(&second.url("/docs/a"))).await;
        assert_eq!(cache_status(&parts), "hit");
        assert_eq!(&body[..], b"shared body");
        assert_eq!(requests.load(Ordering::SeqCst), 1);

        // A purge by url on the first gateway removes the entry for the second.
        let (parts, body) = send(
            &client,
            purge(first.admin_address(), r#"{"url": "127.0.0.1/docs/a"}"#),
        )
        .await;
        assert_eq!(parts.status, StatusCode::OK, "{body:?}");
        assert_eq!(json(&body)["removed"], 1);
        let (parts, _) = send(&client, get(&second.url("/docs/a"))).await;
        assert_eq!(cache_status(&parts), "miss");
        assert_eq!(requests.load(Ordering::SeqCst), 2);

        // A purge by prefix on the second gateway removes entries for the first.
        let (parts, _) = send(&client, get(&first.url("/docs/b"))).await;
        assert_eq!(cache_status(&parts), "miss");
        let (parts, _) = send(&client, get(&first.url("/other"))).await;
        assert_eq!(cache_status(&parts), "miss");
        let (parts, body) = send(
            &client,
            purge(second.admin_address(), r#"{"prefix": "127.0.0.1/docs/"}"#),
        )
        .await;
        assert_eq!(parts.status, StatusCode::OK, "{body:?}");
        assert_eq!(json(&body)["removed"], 2);
        let (parts, _) = send(&client, get(&first.url("/docs/b"))).await;
        assert_eq!(cache_status(&parts), "miss");
        let (parts, _) = send(&client, get(&first.url("/other"))).await;
        assert_eq!(cache_status(&parts), "hit");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_gives_misses() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    bounded(async {
        let (upstream, requests) = counting_upstream().await;
        let gateway = Gatehouse::start(&shared_cache_config(upstream, &redis.url()));
        let client = http1_client();

        let (parts, _) = send(&client, get(&gateway.url("/page"))).await;
        assert_eq!(cache_status(&parts), "miss");
        let (parts, _) = send(&client, get(&gateway.url("/page"))).await;
        assert_eq!(cache_status(&parts), "hit");

        redis.kill();
        for attempt in 0..5 {
            let started = Instant::now();
            let (parts, body) = send(&client, get(&gateway.url("/page"))).await;
            assert_eq!(parts.status, StatusCode::OK, "attempt {attempt}");
            assert_eq!(cache_status(&parts), "miss", "attempt {attempt}");
            assert_eq!(&body[..], b"shared body");
            // A lookup and a store, each bounded by the 250 ms store timeout.
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "attempt {attempt} took {:?}",
                started.elapsed()
            );
        }
        assert_eq!(requests.load(Ordering::SeqCst), 6);

        let admin = gateway.admin_address();
        let (_, body) = send(&client, get(&format!("http://{admin}/metrics"))).await;
        let text = String::from_utf8(body.to_vec()).expect("metrics are UTF-8");
        let errors: u64 = text
            .lines()
            .filter(|line| line.starts_with("gatehouse_cache_store_errors_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(errors >= 5, "store errors counted: {errors}\n{text}");
        assert!(
            gateway.wait_for_stderr("response cache store failed", Duration::from_secs(5)),
            "no warning logged; stderr:\n{}",
            gateway.stderr()
        );

        // A purge reports the failure instead of claiming success.
        let (parts, body) = send(&client, purge(admin, r#"{"prefix": "127.0.0.1/"}"#)).await;
        assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR, "{body:?}");
    })
    .await;
}
