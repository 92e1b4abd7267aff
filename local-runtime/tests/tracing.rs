//! W3C Trace Context through the `gatehouse` binary: the trace of a request reaches
//! the upstream with the gateway's span as its parent, and the access log names it.

mod common;

use std::time::Duration;

use common::*;
use http::{Request, StatusCode};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// Splits a version 00 `traceparent` into its trace id, parent id and flags.
fn fields(traceparent: &str) -> (String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    assert_eq!(parts[1].len(), 32, "{traceparent}");
    assert_eq!(parts[2].len(), 16, "{traceparent}");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

fn get(url: String, headers: &[(&str, &str)]) -> Request<NativeBody> {
    let mut builder = Request::get(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(NativeBody::empty()).expect("valid request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_reaches_upstream_with_new_parent() {
    bounded(async {
        let upstream = demo_upstream().await;
        let gateway = Gatehouse::start(&config_for(&upstream.address().to_string(), ""));
        let client = http1_client();

        let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
        let (parts, body) = send(
            &client,
            get(
                gateway.url("/traced"),
                &[
                    ("traceparent", &traceparent),
                    ("tracestate", "vendor=opaque-value"),
                ],
            ),
        )
        .await;
        assert_eq!(parts.status, StatusCode::OK);
        let headers = &json(&body)["headers"];
        let sent = headers["traceparent"].as_str().expect("traceparent sent");
        let (trace_id, parent_id, flags) = fields(sent);
        assert_eq!(trace_id, TRACE_ID, "the trace continues");
        assert_ne!(parent_id, CLIENT_SPAN, "the gateway's span is the parent");
        assert_ne!(parent_id, "0000000000000000");
        assert_eq!(flags, "01");
        assert_eq!(headers["tracestate"], "vendor=opaque-value");

        assert!(
            gateway.wait_for_stderr(
                &format!("\"trace_id\":\"{TRACE_ID}\""),
                Duration::from_secs(5)
            ),
            "the access log does not name the trace; stderr:\n{}",
            gateway.stderr()
        );

        // A second request in the same trace gets another span id.
        let (_, body) = send(
            &client,
            get(gateway.url("/traced"), &[("traceparent", &traceparent)]),
        )
        .await;
        let second = json(&body)["headers"]["traceparent"]
            .as_str()
            .expect("traceparent sent")
            .to_owned();
        let (_, second_parent, _) = fields(&second);
        assert_ne!(second_parent, parent_id);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_traceparent_starts_a_trace() {
    bounded(async {
        let upstream = demo_upstream().await;
        let gateway = Gatehouse::start(&config_for(&upstream.address().to_string(), ""));
        let client = http1_client();

        let (_, body) = send(&client, get(gateway.url("/new"), &[])).await;
        let sent = json(&body)["headers"]["traceparent"]
            .as_str()
            .expect("traceparent sent")
            .to_owned();
        let (trace_id, _, flags) = fields(&sent);
        assert_ne!(trace_id, "0".repeat(32));
        assert_eq!(flags, "01");

        // Uppercase hex is invalid, so the trace is replaced and its state dropped.
        let malformed = format!("00-{}-{CLIENT_SPAN}-01", TRACE_ID.to_uppercase());
        let (_, body) = send(
            &client,
            get(
                gateway.url("/malformed"),
                &[("traceparent", &malformed), ("tracestate", "vendor=value")],
            ),
        )
        .await;
        let headers = &json(&body)["headers"];
        let sent = headers["traceparent"].as_str().expect("traceparent sent");
        let (trace_id, parent_id, _) = fields(sent);
        assert_ne!(trace_id, TRACE_ID.to_uppercase());
        assert_ne!(trace_id, TRACE_ID);
        assert_ne!(parent_id, CLIENT_SPAN);
        assert!(headers.get("tracestate").is_none(), "{headers}");
    })
    .await;
}

/// Starts an OTLP/HTTP collector on 127.0.0.1 that sends each request body it
/// receives on the returned channel and responds 200.
async fn collector() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>,
) {
    use http_body_util::BodyExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("local address");
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sender = sender.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let sender = sender.clone();
                        async move {
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|collected| collected.to_bytes())
                                .unwrap_or_default();
                            let _ = sender.send(body);
                            let mut response = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"{}"),
                            ));
                            response.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, receiver)
}

fn otlp_config(upstream: &str, endpoint: &str) -> String {
    config_for(upstream, "")
        + &format!(
            "\n[tracing.otlp]\nendpoint = \"{endpoint}\"\nservice_name = \"gatehouse-test\"\ntimeout = \"2s\"\n"
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_reaches_collector() {
    let upstream = demo_upstream().await;
    let (collector, mut bodies) = collector().await;
    let gateway = Gatehouse::start(&otlp_config(
        &upstream.address().to_string(),
        &format!("http://{collector}/v1/traces"),
    ));
    let client = http1_client();
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let (parts, body) = bounded(send(
        &client,
        get(gateway.url("/exported"), &[("traceparent", &traceparent)]),
    ))
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    let sent = json(&body)["headers"]["traceparent"]
        .as_str()
        .expect("traceparent sent")
        .to_owned();
    let (_, attempt_span, _) = fields(&sent);

    // The exporter sends a batch at least every 5 s.
    let mut spans: Vec<serde_json::Value> = Vec::new();
    let mut service_names: Vec<serde_json::Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while spans.len() < 2 {
        let body = match tokio::time::timeout_at(deadline, bodies.recv()).await {
            Ok(Some(body)) => body,
            _ => panic!(
                "the collector received {} spans; stderr:\n{}",
                spans.len(),
                gateway.stderr()
            ),
        };
        let export: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|error| panic!("the export is not JSON ({error}): {body:?}"));
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            service_names.extend(
                resource["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|attribute| attribute["key"] == "service.name")
                    .map(|attribute| attribute["value"]["stringValue"].clone()),
            );
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }

    assert!(
        service_names.iter().all(|name| name == "gatehouse-test"),
        "{service_names:?}"
    );
    let attempt = spans
        .iter()
        .find(|span| span["spanId"] == attempt_span.as_str())
        .unwrap_or_else(|| panic!("no span with the id sent upstream: {spans:?}"));
    assert_eq!(attempt["traceId"], TRACE_ID);
    let request_span = attempt["parentSpanId"]
        .as_str()
        .expect("attempt has a parent");
    let request = spans
        .iter()
        .find(|span| span["spanId"] == request_span)
        .unwrap_or_else(|| panic!("no request span: {spans:?}"));
    assert_eq!(request["traceId"], TRACE_ID);
    assert_eq!(
        request["parentSpanId"], CLIENT_SPAN,
        "the caller's span is the parent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_collector_fails_no_request() {
    let upstream = demo_upstream().await;
    let closed = closed_port().await;
    let gateway = Gatehouse::start(&otlp_config(
        &upstream.address().to_string(),
        &format!("http://{closed}/v1/traces"),
    ));
    let client = http1_client();
    for index in 0..20 {
        let (parts, _) = bounded(send(
            &client,
            get(gateway.url(&format!("/request/{index}")), &[]),
        ))
        .await;
        assert_eq!(parts.status, StatusCode::OK);
    }
    assert!(
        gateway.wait_for_stderr("failed to export spans over OTLP", Duration::from_secs(20)),
        "no export failure logged; stderr:\n{}",
        gateway.stderr()
    );
    // Requests keep working after the failed export.
    let (parts, _) = bounded(send(&client, get(gateway.url("/after"), &[]))).await;
    assert_eq!(parts.status, StatusCode::OK);
}
