//! The seam between the suite and the ways of running the gateway.
//!
//! A [`Target`] starts a gateway for one scenario; the [`Instance`] it returns takes
//! requests until it is dropped. The in-process target calls the core directly; process
//! targets (native today, the Worker and Spin later) implement the smaller
//! [`crate::process::Launcher`] and share the socket upstreams and the HTTP client.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{HOST, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri, Version};

use crate::scenario::{CloseFrame, Scenario, Step, WebSocketAction, WebSocketMessage};

/// Host sent when a step names none.
pub const DEFAULT_HOST: &str = "localhost";

/// Size of the chunks of a step's body sent with `chunked = true`.
pub const CHUNK_BYTES: usize = 8;

/// Request extension that asks the client to send the body in chunks of
/// [`CHUNK_BYTES`], without a declared length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunked;

/// Splits `body` into the chunks a `chunked = true` step sends.
pub fn body_chunks(body: &Bytes) -> Vec<Bytes> {
    (0..body.len())
        .step_by(CHUNK_BYTES)
        .map(|start| body.slice(start..body.len().min(start + CHUNK_BYTES)))
        .collect()
}

/// A way of running the gateway that the scenarios can be sent to.
pub trait Target {
    /// Name of the target, the key of a scenario's `skip` table.
    fn name(&self) -> &'static str;

    /// Starts the scenario's test upstreams and a gateway serving its config.
    fn start(&mut self, scenario: &Scenario) -> Result<Box<dyn Instance + '_>, String>;
}

/// A gateway started for one scenario, with its test upstreams. Dropping it stops both.
pub trait Instance {
    /// Sends `request` `count` times, one after another or all at once, and returns
    /// one outcome per request in sending order. Each request is bounded in time.
    fn send(
        &mut self,
        request: &Request<Bytes>,
        count: usize,
        concurrent: bool,
    ) -> Vec<Result<Exchange, String>>;

    /// Returns how many connections each test upstream accepted. In process, where
    /// there are no connections, it counts requests.
    fn upstream_connections(&self) -> BTreeMap<String, usize>;

    /// Returns how many requests each test upstream has received.
    fn upstream_requests(&self) -> BTreeMap<String, usize>;

    /// Lets `duration` pass before the next request.
    fn wait(&mut self, duration: std::time::Duration) -> Result<(), String>;

    /// Sends the WebSocket handshake `request`, runs `actions` after a `101` and reads
    /// until the connection ends. Targets without sockets cannot.
    fn websocket(
        &mut self,
        request: &Request<Bytes>,
        actions: &[WebSocketAction],
    ) -> Result<WebSocketExchange, String> {
        let _ = (request, actions);
        Err("this target cannot open WebSocket connections; skip the scenario here".to_owned())
    }

    /// Returns lines that help explain a failure, such as the gateway's log output.
    fn diagnostics(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Response status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

/// A WebSocket handshake and what arrived after it.
#[derive(Debug, Clone)]
pub struct WebSocketExchange {
    /// The handshake response; its body is empty after a `101`.
    pub handshake: Exchange,
    /// What arrived after a `101`; `None` for any other status.
    pub session: Option<WebSocketSession>,
}

/// What a WebSocket client received after its handshake.
#[derive(Debug, Clone, Default)]
pub struct WebSocketSession {
    /// Data messages, in order.
    pub messages: Vec<WebSocketMessage>,
    /// The close frame received, if any: its code and reason.
    pub close: Option<CloseFrame>,
    /// The error that ended the connection, such as a reset without a close frame;
    /// `None` after a closing handshake.
    pub failure: Option<String>,
    /// Whether the connection was still open at the read deadline.
    pub timed_out: bool,
    /// Time from the handshake to the end of the connection.
    pub open_for: std::time::Duration,
}

/// Builds the request of a step as a client sends it.
///
/// HTTP/1.1 requests carry the path in origin form and a `Host` header. HTTP/2 requests
/// carry the host as the `:authority` of an absolute URI and no `Host` header, which is
/// how hyper presents an HTTP/2 request to a server.
pub fn build_request(step: &Step) -> Result<Request<Bytes>, String> {
    let host = match step.headers.get("host") {
        Some(values) => values.combined(),
        None => DEFAULT_HOST.to_owned(),
    };
    let target = if step.http2 {
        format!("http://{host}{}", step.path)
    } else {
        step.path.clone()
    };
    let uri = Uri::try_from(target.as_str())
        .map_err(|error| format!("request target {target:?} is not a valid URI: {error}"))?;

    let mut request = Request::new(Bytes::from(step.body.clone().unwrap_or_default()));
    *request.method_mut() = http::Method::from_bytes(step.method.as_bytes())
        .map_err(|_| format!("invalid method {:?}", step.method))?;
    *request.uri_mut() = uri;
    *request.version_mut() = if step.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };

    let headers = request.headers_mut();
    for (name, values) in &step.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        for value in values.lines() {
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value of header {name:?}"))?;
            headers.append(name.clone(), value);
        }
    }
    if step.websocket.is_some() {
        add_handshake_headers(headers);
    }
    if step.http2 {
        headers.remove(HOST);
    } else if !headers.contains_key(HOST) {
        headers.insert(HOST, HeaderValue::from_static(DEFAULT_HOST));
    }
    if step.chunked {
        if !step.http2 {
            headers.insert(
                http::header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        request.extensions_mut().insert(Chunked);
    } else if step.body.is_some() && !headers.contains_key(http::header::CONTENT_LENGTH) {
        let length = request.body().len();
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(request)
}

/// Adds the headers of a WebSocket handshake (RFC 6455 section 4.1) that `headers`
/// lacks, with a fixed `Sec-WebSocket-Key`: the key only proves that the server read
/// the handshake, so it need not be random in a test.
fn add_handshake_headers(headers: &mut HeaderMap) {
    let defaults = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}
