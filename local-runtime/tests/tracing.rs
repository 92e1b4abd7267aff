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
