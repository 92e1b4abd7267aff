//! gRPC and gRPC-Web through the native binary, on real sockets: a tonic server with
//! the standard health service (`grpc.health.v1.Health`, one unary and one
//! server-streaming method) as the upstream, and a tonic client or a plain HTTP/1.1
//! client for gRPC-Web.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use common::{Gatehouse, NativeBody, bounded, closed_port, http1_client, http2_client, send};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthReporter;

/// The service name the upstream reports as serving.
const SERVICE: &str = "gatehouse.test.Echo";

/// The API key of the `auth` case and its SHA-256.
const API_KEY: &str = "foo";
const API_KEY_SHA256: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

/// Starts a tonic server with the health service on an ephemeral loopback port.
async fn health_upstream() -> (SocketAddr, HealthReporter) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    tokio::spawn(async move {
        let incoming = TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    (address, reporter)
}

/// Starts an HTTP/2 server that keeps every request waiting for a minute without a response.
async fn hanging_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_request: Request<Incoming>| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// A gateway whose routes are chosen by the `x-case` header, one per behaviour. A
/// request without `x-case` matches no route.
fn start_gateway(health: SocketAddr, hanging: SocketAddr, closed: SocketAddr) -> Gatehouse {
    Gatehouse::start(&format!(
        r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[upstreams.health]
protocol = "h2c"
endpoints = [{{ address = "{health}" }}]

[upstreams.health_http1]
endpoints = [{{ address = "{health}" }}]

[upstreams.hanging]
protocol = "h2c"
endpoints = [{{ address = "{hanging}" }}]
timeouts = {{ connect = "1s", per_try = "30s", total = "30s" }}

[upstreams.closed]
protocol = "h2c"
endpoints = [{{ address = "{closed}" }}]
circuit = {{ consecutive_failures = 1, open_duration = "60s" }}

[consumers.client]
api_key_sha256 = "{API_KEY_SHA256}"

[policies.keys.api_key]

[policies.one-per-minute.rate_limit]
limit = 1
period = "1m"
key = []

[[routes]]
name = "pass"
match.headers = [{{ name = "x-case", value = "pass" }}]
upstream = "health"

[[routes]]
name = "auth"
match.headers = [{{ name = "x-case", value = "auth" }}]
upstream = "health"
policies = ["keys"]

[[routes]]
name = "limit"
match.headers = [{{ name = "x-case", value = "limit" }}]
upstream = "health"
policies = ["one-per-minute"]

[[routes]]
name = "hang"
match.headers = [{{ name = "x-case", value = "hang" }}]
upstream = "hanging"

[[routes]]
name = "closed"
match.headers = [{{ name = "x-case", value = "closed" }}]
upstream = "closed"

[[routes]]
name = "http1"
match.headers = [{{ name = "x-case", value = "http1" }}]
upstream = "health_http1"

[[routes]]
name = "web"
match.headers = [{{ name = "x-case", value = "web" }}]
upstream = "health"
grpc_web = true
"#
    ))
}

async fn client_for(gateway: &Gatehouse) -> HealthClient<Channel> {
    let channel = Channel::from_shared(gateway.url(""))
        .expect("valid URI")
        .connect()
        .await
        .expect("connect to gatehouse");
    HealthClient::new(channel)
}

fn check_request(case: &str, service: &str) -> tonic::Request<HealthCheckRequest> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    if !case.is_empty() {
        request
            .metadata_mut()
            .insert("x-case", case.parse().expect("valid metadata"));
    }
    request
}

#[tokio::test]
async fn unary_and_streaming_calls_pass() {
    let (health, reporter) = health_upstream().await;
    let gateway = start_gateway(health, hanging_upstream().await, closed_port().await);
    bounded(async {
        let mut client = client_for(&gateway).await;

        let response = client
            .check(check_request("pass", SERVICE))
            .await
            .expect("unary call succeeds");
        assert_eq!(response.get_ref().status, ServingStatus::Serving as i32);

        // Watch streams the current status, then each change.
        let mut stream = client
            .watch(check_request("pass", SERVICE))
            .await
            .expect("streaming call starts")
            .into_inner();
        let first = stream
            .message()
            .await
            .expect("first message")
            .expect("open");
        assert_eq!(first.status, ServingStatus::Serving as i32);
        reporter
            .set_service_status(SERVICE, ServingStatus::NotServing)
            .await;
        let second = stream
            .message()
            .await
            .expect("second message")
            .expect("open");
        assert_eq!(second.status, ServingStatus::NotServing as i32);
    })
    .await;
}

#[tokio::test]
async fn upstream_status_error_arrives_intact() {
    let (health, _reporter) = health_upstream().await;
    let gateway = start_gateway(health, hanging_upstream().await, closed_port().await);
    bounded(async {
        let mut client = client_for(&gateway).await;
        // The health service rejects an unknown service with NOT_FOUND in a
        // trailers-only response.
        let status = client
            .check(check_request("pass", "no.such.Service"))
            .await
            .expect_err("unknown service");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "service not registered");

        // In a stream, the status comes in the trailers after the headers.
        let mut stream = client.watch(check_request("pass", "no.such.Service")).await;
        let status = match &mut stream {
            Ok(response) => response
                .get_mut()
                .message()
                .await
                .expect_err("stream ends with an error"),
            Err(status) => status.clone(),
        };
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "service not registered");
    })
    .await;
}

#[tokio::test]
async fn gateway_errors_are_grpc_statuses() {
    let (health, _reporter) = health_upstream().await;
    let gateway = start_gateway(health, hanging_upstream().await, closed_port().await);
    bounded(async {
        let mut client = client_for(&gateway).await;
        let status_of = |result: Result<tonic::Response<HealthCheckResponse>, tonic::Status>| {
            result.expect_err("the gateway rejects the call")
        };

        let no_route = status_of(client.check(check_request("", SERVICE)).await);
        assert_eq!(no_route.code(), Code::Unimplemented, "{no_route:?}");
        assert!(
            no_route.message().starts_with("no route matches POST"),
            "{no_route:?}"
        );

        let missing_key = status_of(client.check(check_request("auth", SERVICE)).await);
        assert_eq!(missing_key.code(), Code::Unauthenticated, "{missing_key:?}");
        let mut with_key = check_request("auth", SERVICE);
        with_key
            .metadata_mut()
            .insert("x-api-key", API_KEY.parse().expect("valid metadata"));
        client.check(with_key).await.expect("a valid key passes");

        client
            .check(check_request("limit", SERVICE))
            .await
            .expect("the first call is within the limit");
        let limited = status_of(client.check(check_request("limit", SERVICE)).await);
        assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");

        let refused = status_of(client.check(check_request("closed", SERVICE)).await);
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        let open = status_of(client.check(check_request("closed", SERVICE)).await);
        assert_eq!(open.code(), Code::Unavailable, "{open:?}");
        assert!(open.message().contains("circuit"), "{open:?}");

        let http1 = status_of(client.check(check_request("http1", SERVICE)).await);
        assert_eq!(http1.code(), Code::Unimplemented, "{http1:?}");
        assert!(http1.message().contains("needs HTTP/2"), "{http1:?}");
    })
    .await;
}

/// Sends a unary health check over HTTP/2 with `grpc-timeout` set to `timeout` and
/// returns the response head. It uses a plain HTTP/2 client, because tonic's client
/// enforces the same deadline itself and would end the call first.
async fn call_with_grpc_timeout(
    gateway: &Gatehouse,
    case: &str,
    timeout: &str,
) -> http::response::Parts {
    let request = Request::post(gateway.url("/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .header("x-case", case)
        .body(NativeBody::from(check_frame(SERVICE)))
        .expect("valid request");
    let (parts, _body) = send(&http2_client(), request).await;
    parts
}

#[tokio::test]
async fn grpc_timeout_caps_route_timeout() {
    let (health, _reporter) = health_upstream().await;
    let gateway = start_gateway(health, hanging_upstream().await, closed_port().await);
    bounded(async {
        // The route allows 30 s; the client's deadline of 300 ms wins.
        let parts = call_with_grpc_timeout(&gateway, "hang", "300m").await;
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["grpc-status"], "4", "DEADLINE_EXCEEDED");
        let message = parts.headers["grpc-message"].to_str().expect("ASCII");
        assert!(message.contains("300 ms"), "{message}");

        let parts = call_with_grpc_timeout(&gateway, "pass", "soon").await;
        assert_eq!(parts.headers["grpc-status"], "3", "INVALID_ARGUMENT");

        // A deadline the upstream meets changes nothing.
        let parts = call_with_grpc_timeout(&gateway, "pass", "10S").await;
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["content-type"], "application/grpc");
        assert!(!parts.headers.contains_key("grpc-status"), "{parts:?}");
    })
    .await;
}

/// Encodes a `HealthCheckRequest` for `service` as one gRPC message frame.
fn check_frame(service: &str) -> Vec<u8> {
    // Field 1 (string): tag 0x0a, a one-byte length, the bytes.
    let mut message = vec![0x0a, service.len() as u8];
    message.extend_from_slice(service.as_bytes());
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// Splits a gRPC-Web body into its frames: (flag, payload).
fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while body.len() >= 5 {
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert!(body.len() >= 5 + length, "truncated frame in {body:?}");
        frames.push((body[0], body[5..5 + length].to_vec()));
        body = &body[5 + length..];
    }
    assert!(body.is_empty(), "bytes after the last frame: {body:?}");
    frames
}

async fn grpc_web_call(
    gateway: &Gatehouse,
    content_type: &str,
    body: Vec<u8>,
) -> (http::response::Parts, Bytes) {
    let request = Request::post(gateway.url("/grpc.health.v1.Health/Check"))
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .header("x-case", "web")
        .body(NativeBody::from(body))
        .expect("valid request");
    send(&http1_client(), request).await
}

#[tokio::test]
async fn grpc_web_is_translated() {
    let (health, _reporter) = health_upstream().await;
    let gateway = start_gateway(health, hanging_upstream().await, closed_port().await);
    bounded(async {
        // Binary: the message frame, then the trailers as a frame flagged 0x80.
        let (parts, body) =
            grpc_web_call(&gateway, "application/grpc-web+proto", check_frame(SERVICE)).await;
        assert_eq!(parts.status, 200);
        // The media type follows the upstream's, which names no codec.
        assert_eq!(parts.headers["content-type"], "application/grpc-web");
        let received = frames(&body);
        assert_eq!(received.len(), 2, "{received:?}");
        assert_eq!(received[0], (0, vec![0x08, 0x01]), "SERVING");
        assert_eq!(received[1].0, 0x80);
        let trailers = String::from_utf8(received[1].1.clone()).expect("text trailers");
        assert!(trailers.contains("grpc-status: 0\r\n"), "{trailers:?}");

        // Text: the same, base64-encoded both ways.
        let (parts, body) = grpc_web_call(
            &gateway,
            "application/grpc-web-text",
            STANDARD.encode(check_frame(SERVICE)).into_bytes(),
        )
        .await;
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["content-type"], "application/grpc-web-text");
        let decoded = STANDARD.decode(&body).expect("base64 body");
        let received = frames(&decoded);
        assert_eq!(received.len(), 2, "{received:?}");
        assert_eq!(received[0], (0, vec![0x08, 0x01]));
        assert_eq!(received[1].0, 0x80);

        // A text body that is not base64 is the client's error.
        let (parts, _) =
            grpc_web_call(&gateway, "application/grpc-web-text", b"AA*A".to_vec()).await;
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["grpc-status"], "3", "INVALID_ARGUMENT");

        // An upstream error without messages stays in the headers (trailers-only).
        let (parts, body) = grpc_web_call(
            &gateway,
            "application/grpc-web+proto",
            check_frame("no.such.Service"),
        )
        .await;
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["grpc-status"], "5");
        assert!(body.is_empty(), "{body:?}");
    })
    .await;
}
