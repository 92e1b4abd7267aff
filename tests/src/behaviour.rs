//! The responses of test upstreams, shared by the socket servers and the simulated
//! upstreams of the in-process runner so that both send the same bytes.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::scenario::UpstreamBehaviour;

/// Response header naming the test upstream, for responses whose body is not the echo.
pub const UPSTREAM_HEADER: &str = "x-conformance-upstream";

/// A request as a test upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request method.
    pub method: String,
    /// Path exactly as received, without the query.
    pub path: String,
    /// Query without `?`, if any.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
}

impl Received {
    /// Takes the parts of a request that the echo reports.
    pub fn new(parts: &http::request::Parts, body: Bytes) -> Self {
        Self {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body,
        }
    }
}

/// The response a test upstream sends, before any delay.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Response status.
    pub status: http::StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

/// Builds the reply of upstream `name` to `received`.
///
/// Fails only on a behaviour the scenario loader would have let through but that HTTP
/// cannot express, such as an invalid header name.
/// `number` counts the requests the upstream received, this one included, for
/// `fail_after`.
pub fn reply(
    name: &str,
    behaviour: &UpstreamBehaviour,
    received: &Received,
    number: usize,
) -> Result<Reply, String> {
    let failing = behaviour.fail_after.is_some_and(|after| number > after);
    let status = if failing {
        http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        http::StatusCode::from_u16(behaviour.status.unwrap_or(200))
            .map_err(|error| format!("upstream {name:?}: invalid status: {error}"))?
    };
    let mut headers = HeaderMap::new();
    let body = match (&behaviour.body, behaviour.body_bytes) {
        (_, Some(length)) => Bytes::from(vec![b'x'; length]),
        (Some(body), None) => Bytes::from(body.clone()),
        (None, None) => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Bytes::from(echo_json(name, received).to_string())
        }
    };
    let upstream_value = HeaderValue::from_str(name)
        .map_err(|_| format!("upstream name {name:?} is not a valid header value"))?;
    headers.insert(HeaderName::from_static(UPSTREAM_HEADER), upstream_value);
    for (header, values) in &behaviour.headers {
        let header_name = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("upstream {name:?}: invalid header name {header:?}"))?;
        for value in values.lines() {
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("upstream {name:?}: invalid value of header {header:?}"))?;
            headers.append(header_name.clone(), value);
        }
    }
    if behaviour.conditional && !failing && validators_match(&headers, received) {
        return Ok(Reply {
            status: http::StatusCode::NOT_MODIFIED,
            headers,
            body: Bytes::new(),
        });
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Returns whether a conditional request names the reply's current validator. Equal
/// strings are enough here: the upstream's validators never change during a scenario.
fn validators_match(reply: &HeaderMap, received: &Received) -> bool {
    let same = |reply_header: http::HeaderName, request_header: http::HeaderName| match (
        reply.get(reply_header),
        received.headers.get(request_header),
    ) {
        (Some(current), Some(requested)) => current == requested,
        _ => false,
    };
    same(http::header::ETAG, http::header::IF_NONE_MATCH)
        || same(http::header::LAST_MODIFIED, http::header::IF_MODIFIED_SINCE)
}

/// Describes `received` as JSON: `{"upstream", "method", "path", "query", "headers",
/// "body"}`. Header names are lowercase; a repeated header becomes an array of its values
/// in order. Bytes that are not UTF-8 are replaced, which only matters for scenarios that
/// send binary data.
pub fn echo_json(name: &str, received: &Received) -> Value {
    let mut headers = Map::new();
    for header in received.headers.keys() {
        let values: Vec<Value> = received
            .headers
            .get_all(header)
            .iter()
            .map(|value| Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        let value = match <[Value; 1]>::try_from(values) {
            Ok([single]) => single,
            Err(values) => Value::Array(values),
        };
        headers.insert(header.as_str().to_owned(), value);
    }
    json!({
        "upstream": name,
        "method": received.method,
        "path": received.path,
        "query": received.query,
        "headers": headers,
        "body": String::from_utf8_lossy(&received.body),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests report failures by panicking")]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scenario::HeaderValues;

    fn received() -> Received {
        let (parts, ()) = http::Request::post("/a%2Fb?x=1")
            .header("x-one", "1")
            .header("x-two", "a")
            .header("x-two", "b")
            .body(())
            .unwrap()
            .into_parts();
        Received::new(&parts, Bytes::from_static(b"hello"))
    }

    #[test]
    fn echo_reports_request() {
        let echo = echo_json("a", &received());
        assert_eq!(echo["upstream"], "a");
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], "/a%2Fb");
        assert_eq!(echo["query"], "x=1");
        assert_eq!(echo["headers"]["x-one"], "1");
        assert_eq!(echo["headers"]["x-two"], json!(["a", "b"]));
        assert_eq!(echo["body"], "hello");
    }

    #[test]
    fn status_behaviour_keeps_echo_body() {
        let behaviour = UpstreamBehaviour {
            status: Some(503),
            headers: BTreeMap::from([("x-from".to_owned(), HeaderValues::One("b".to_owned()))]),
            ..UpstreamBehaviour::default()
        };
        let reply = reply("b", &behaviour, &received(), 1).unwrap();
        assert_eq!(reply.status, 503);
        assert_eq!(reply.headers["x-from"], "b");
        assert_eq!(reply.headers[UPSTREAM_HEADER], "b");
        let echo: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(echo["upstream"], "b");
    }

    #[test]
    fn body_behaviour_replaces_echo() {
        let behaviour = UpstreamBehaviour {
            body: Some("plain".to_owned()),
            ..UpstreamBehaviour::default()
        };
        let reply = reply("c", &behaviour, &received(), 1).unwrap();
        assert_eq!(reply.body, "plain");
        assert!(!reply.headers.contains_key(CONTENT_TYPE));
    }
}
