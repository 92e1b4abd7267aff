//! Proxying through the `gatehouse` binary over real sockets on 127.0.0.1.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body::Frame;
use tokio::sync::mpsc;

/// Builds a request body that arrives in `chunks` with a pause between them, so the
/// gateway must stream it rather than see it whole. It has no length, so HTTP/1.1
/// sends it chunked.
fn streamed_body(chunks: Vec<&'static [u8]>) -> NativeBody {
    let (sender, receiver) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for chunk in chunks {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if sender.send(Bytes::from_static(chunk)).await.is_err() {
                return;
            }
        }
    });
    NativeBody::wrap(ChannelBody(receiver))
}

/// A body whose data frames come from a channel; it ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn get(url: &str) -> Request<NativeBody> {
    Request::get(url)
        .body(NativeBody::empty())
        .expect("valid request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_get_reaches_upstream() {
    bounded(async {
        let upstream = demo_upstream().await;
        let gateway = Gatehouse::start(&config_for(&upstream.address().to_string(), ""));

        let (head, body) = send(&http1_client(), get(&gateway.url("/users/42?expand=1"))).await;
        assert_eq!(head.status, StatusCode::OK);
        assert!(head.headers.contains_key("x-request-id"));
        let echo = json(&body);
        assert_eq!(echo["method"], "GET");
        assert_eq!(echo["path"], "/users/42");
        assert_eq!(echo["query"], "expand=1");
        assert_eq!(echo["version"], "HTTP/1.1");
        assert_eq!(echo["upstream"], upstream.address().to_string());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_post_streams_body() {
    bounded(async {
        let upstream = demo_upstream().await;
        let gateway = Gatehouse::start(&config_for(&upstream.address().to_string(), ""));

        let request = Request::post(gateway.url("/upload"))
            .body(streamed_body(vec![b"first,", b"second,", b"third"]))
            .expect("valid request");
        let (head, body) = send(&http1_client(), request).await;
        assert_eq!(head.status, StatusCode::OK);
        let echo = json(&body);
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["body_bytes"], 18);
        // Without Content-Length the client sends chunks. Transfer-Encoding is
        // hop-by-hop, so the gateway removes it and hyper frames the upstream request
        // itself, again without a Content-Length.
        assert_eq!(echo["headers"].get("content-length"), None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_get_and_post_reach_upstream() {
    bounded(async {
        let upstream = demo_upstream().await;
        let gateway = Gatehouse::start(&config_for(&upstream.address().to_string(), ""));
        let client = http2_client();

        let (head, body) = send(&client, get(&gateway.url("/items?page=2"))).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, http::Version::HTTP_2);
        let echo = json(&body);
        assert_eq!(echo["path"], "/items");
        assert_eq!(echo["query"], "page=2");
        // The upstream speaks HTTP/1.1 by default, whatever the client spoke.
        assert_eq!(echo["version"], "HTTP/1.1");

        let request = Request::builder()
            .method(Method::POST)
            .uri(gateway.url("/items"))
            .body(streamed_body(vec![b"abc", b"defg"]))
            .expect("valid request");
        let (head, body) = send(&client, request).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(json(&body)["body_bytes"], 7);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_receives_http2() {
    bounded(async {
        let upstream = demo_upstream().await;
        let gateway = Gatehouse::start(&config_for(
            &upstream.address().to_string(),
            r#"protocol = "h2c""#,
        ));

        let request = Request::post(gateway.url("/grpc-like"))
            .body(streamed_body(vec![b"12345"]))
            .expect("valid request");
        let (head, body) = send(&http1_client(), request).await;
        assert_eq!(head.status, StatusCode::OK);
        let echo = json(&body);
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(echo["body_bytes"], 5);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connection_is_reused() {
    bounded(async {
        let upstream = demo_upstream().await;
        let gateway = Gatehouse::start(&config_for(&upstream.address().to_string(), ""));
        let client = http1_client();

        for _ in 0..5 {
            let (head, _) = send(&client, get(&gateway.url("/ping"))).await;
            assert_eq!(head.status, StatusCode::OK);
        }
        assert_eq!(upstream.accepted_connections(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_rewritten() {
    bounded(async {
        let upstream = demo_upstream().await;
        let gateway = Gatehouse::start(&config_for(&upstream.address().to_string(), ""));

        let request = Request::get(gateway.url("/headers"))
            .header("connection", "x-connection-scoped")
            .header("x-connection-scoped", "secret")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-request-id", "client-chosen-id-123")
            .header("x-custom", "kept")
            .body(NativeBody::empty())
            .expect("valid request");
        let (head, body) = send(&http1_client(), request).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(
            head.headers.get("x-request-id").map(|v| v.as_bytes()),
            Some(&b"client-chosen-id-123"[..])
        );

        let headers = &json(&body)["headers"];
        assert_eq!(headers.get("x-connection-scoped"), None);
        assert_eq!(headers.get("keep-alive"), None);
        assert_eq!(headers.get("proxy-authorization"), None);
        assert_eq!(headers["x-custom"], "kept");
        // The client is not a trusted proxy, so its X-Forwarded-For is replaced.
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["via"], "1.1 gatehouse");
        assert_eq!(headers["x-request-id"], "client-chosen-id-123");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_is_502_problem() {
    bounded(async {
        let address = closed_port().await;
        let gateway = Gatehouse::start(&config_for(&address.to_string(), ""));

        let (head, body) = send(&http1_client(), get(&gateway.url("/"))).await;
        assert_eq!(head.status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            head.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/problem+json"[..])
        );
        let problem = json(&body);
        assert_eq!(problem["status"], 502);
        assert_eq!(problem["type"], "urn:gatehouse:problem:bad-gateway");
        let detail = problem["detail"].as_str().expect("detail is a string");
        assert!(detail.contains("backend"), "{detail}");
        // The detail reaches the client, so it must not reveal the internal address.
        assert!(!detail.contains(&address.port().to_string()), "{detail}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504() {
    bounded(async {
        // The upstream responds long after the bound below, so the bound can be generous.
        let (address, _requests) = slow_upstream(Duration::from_secs(10)).await;
        let gateway = Gatehouse::start(&config_for(
            &address.to_string(),
            r#"timeouts = { per_try = "300ms", total = "300ms" }"#,
        ));

        let started = Instant::now();
        let (head, body) = send(&http1_client(), get(&gateway.url("/slow"))).await;
        assert_eq!(head.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(json(&body)["type"], "urn:gatehouse:problem:gateway-timeout");
        // A bound far above the 300 ms timeout and far below the upstream's 10 s, which
        // only shows the gateway did not wait for the upstream.
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(5),
            "answered after {elapsed:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_upstream_is_502() {
    bounded(async {
        let address = closing_upstream().await;
        let gateway = Gatehouse::start(&config_for(&address.to_string(), ""));

        let (head, body) = send(&http1_client(), get(&gateway.url("/"))).await;
        assert_eq!(head.status, StatusCode::BAD_GATEWAY);
        assert_eq!(json(&body)["type"], "urn:gatehouse:problem:bad-gateway");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_idle_connection_is_not_reused() {
    bounded(async {
        let (address, accepted) = short_keep_alive_upstream().await;
        let gateway = Gatehouse::start(&config_for(&address.to_string(), ""));
        let client = http1_client();

        for round in 1..=3 {
            let (head, body) = send(&client, get(&gateway.url("/"))).await;
            assert_eq!(head.status, StatusCode::OK, "request {round}");
            assert_eq!(&body[..], b"ok");
            // The upstream closes its side after 50 ms; the pooled connection is dead.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_request_gets_upstream_host() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    bounded(async {
        let upstream = demo_upstream().await;
        let gateway = Gatehouse::start(&config_for(&upstream.address().to_string(), ""));
        let mut stream = tokio::net::TcpStream::connect(gateway.address)
            .await
            .expect("connect to the gateway");
        stream
            .write_all(b"GET /headers HTTP/1.0\r\n\r\n")
            .await
            .expect("send the request");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read until the gateway closes");
        let response = String::from_utf8(response).expect("a text response");
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        let body = &response[response.find("\r\n\r\n").expect("a head") + 4..];
        let echo: serde_json::Value = serde_json::from_str(body).expect("a JSON echo");
        assert_eq!(echo["headers"]["host"], upstream.address().to_string());
    })
    .await;
}
