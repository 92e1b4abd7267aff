//! The admin listener: health, readiness, metrics, the active config and reloads, on
//! a port of its own, over HTTP/1.1.
//!
//! It has no authentication, which is why the config accepts only a loopback address
//! for it unless `allow_remote` is set.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use gatehouse_core::cache::MemoryResponseCache;
use gatehouse_core::cache::key as cache_key;
use gatehouse_core::key_value::MemoryKeyValue;
use gatehouse_core::platform::Clock;
use gatehouse_core::platform::ResponseCache;
use gatehouse_core::respond::{PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_PREFIX};
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::metrics::{self, Metrics};
use crate::platform::NativeClock;
use crate::redact::redact;
use crate::reload::{Reloader, Trigger};
use crate::server::{HEADER_READ_TIMEOUT, SharedGateway};

/// Whether the gateway should receive traffic, as `/readyz` reports it: starting
/// (the default), ready, or draining.
#[derive(Debug, Default)]
pub struct Readiness(AtomicU8);

const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Readiness {
    /// Marks the gateway ready: listeners bound and a config loaded.
    pub fn set_ready(&self) {
        self.0.store(READY, Ordering::Relaxed);
    }

    /// Marks the gateway as shutting down, so load balancers in front of it stop
    /// sending new requests while in-flight ones finish.
    pub fn set_draining(&self) {
        self.0.store(DRAINING, Ordering::Relaxed);
    }

    fn state(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            READY => "ready",
            DRAINING => "shutting down",
            _ => "starting",
        }
    }
}

/// Everything the admin endpoints read or change.
#[derive(Debug)]
pub struct AdminState {
    /// The serving gateway.
    pub gateway: SharedGateway,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// The clock of the gateway's platform, for the endpoint health gauges.
    pub clock: NativeClock,
    /// The response cache, for purges and its metrics.
    pub cache: Arc<MemoryResponseCache>,
    /// Every response cache a purge empties: `cache` and the Redis stores.
    pub purge_caches: Vec<crate::cache_store::NativeResponseCache>,
    /// The in-memory key-value store, whose entries `/key-value/KEY` reads and writes.
    pub key_value: Arc<MemoryKeyValue<NativeClock>>,
    /// Reloads the config file.
    pub reloader: Arc<Reloader>,
    /// The state `/readyz` reports.
    pub readiness: Arc<Readiness>,
}

/// The admin listener, bound and ready to serve.
#[derive(Debug)]
pub struct AdminListener {
    listener: TcpListener,
    address: SocketAddr,
}

impl AdminListener {
    /// Binds `address`.
    pub async fn bind(address: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        Ok(Self { listener, address })
    }

    /// Returns the bound address, with the real port when the config asked for port 0.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Accepts connections until the task is aborted.
    pub async fn serve(self, state: Arc<AdminState>) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Waiting avoids spinning while descriptors are exhausted.
                    tracing::warn!(address = %self.address, %error, "admin listener failed to accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let state = Arc::clone(&state);
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(respond(state, request).await) }
            });
            tokio::spawn(async move {
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "admin connection ended with an error");
                }
            });
        }
    }
}

/// The paths of the admin listener, listed in its 404 response.
const ADMIN_PATHS: &str = "the admin listener serves /healthz, /readyz, /metrics, /config, \
     POST /reload, POST /cache/purge and GET, PUT or DELETE /key-value/KEY";

async fn respond(state: Arc<AdminState>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if let Some(key) = path.strip_prefix(KEY_VALUE_PATH) {
        return key_value(&state, key, request).await;
    }
    let expected = match path.as_str() {
        "/healthz" | "/readyz" | "/metrics" | "/config" => Method::GET,
        "/reload" | "/cache/purge" => Method::POST,
        _ => {
            return problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not Found",
                ADMIN_PATHS,
                None,
            );
        }
    };
    let allowed = method == expected || (expected == Method::GET && method == Method::HEAD);
    if !allowed {
        let mut response = problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method Not Allowed",
            &format!("{path} accepts {expected} only"),
            None,
        );
        if let Ok(value) = HeaderValue::from_str(expected.as_str()) {
            response.headers_mut().insert(ALLOW, value);
        }
        return response;
    }

    match path.as_str() {
        "/healthz" => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
        "/readyz" => {
            let readiness = state.readiness.state();
            let status = if readiness == "ready" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(
                status,
                "text/plain; charset=utf-8",
                format!("{readiness}\n"),
            )
        }
        "/metrics" => {
            let gateway = state.gateway.load();
            state.metrics.set_cache_stats(state.cache.stats());
            match state.metrics.encode(&gateway, state.clock.monotonic()) {
                Ok(body) => text(StatusCode::OK, metrics::CONTENT_TYPE, body),
                Err(error) => {
                    tracing::error!(%error, "failed to encode the metrics");
                    problem(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "Internal Server Error",
                        "failed to encode the metrics",
                        None,
                    )
                }
            }
        }
        "/config" => config(&state),
        "/cache/purge" => purge(&state, request).await,
        _ => reload(&state).await,
    }
}

fn config(state: &AdminState) -> Response<Full<Bytes>> {
    let gateway = state.gateway.load();
    let mut value = match serde_json::to_value(gateway.config()) {
        Ok(value) => value,
        Err(error) => {
            tracing::error!(%error, "failed to serialize the active config");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal Server Error",
                "failed to serialize the active config",
                None,
            );
        }
    };
    redact(&mut value);
    json_response(StatusCode::OK, "application/json", &value)
}

async fn reload(state: &AdminState) -> Response<Full<Bytes>> {
    let reloader = Arc::clone(&state.reloader);
    // Reading and compiling a large config is blocking work.
    let result = tokio::task::spawn_blocking(move || reloader.reload(Trigger::Admin)).await;
    match result {
        Ok(Ok(summary)) => json_response(
            StatusCode::OK,
            "application/json",
            &json!({
                "status": "reloaded",
                "summary": summary.summary,
                "state_kept": summary.state_kept,
                "restart_required": summary.restart_required,
            }),
        ),
        Ok(Err(error)) => problem(
            StatusCode::BAD_REQUEST,
            "invalid-config",
            "Invalid Config",
            &format!(
                "the config file has {} problem{}; the previous config keeps serving",
                error.problems.len(),
                if error.problems.len() == 1 { "" } else { "s" }
            ),
            Some(error.problems),
        ),
        Err(error) => {
            tracing::error!(%error, "the reload task failed");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal Server Error",
                "the reload failed; the previous config keeps serving",
                None,
            )
        }
    }
}

/// Largest purge request body, in bytes: one URL or prefix fits many times over.
const MAX_PURGE_BODY_BYTES: usize = 16 * 1024;

/// A purge request: exactly one of the fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    /// One URL as the cache keys it, `HOST/PATH` with an optional `?QUERY`: every
    /// method, consumer and variant of it is removed.
    url: Option<String>,
    /// A key prefix, such as `HOST/` for a whole host or `HOST/api/` for a subtree.
    prefix: Option<String>,
}

/// Removes cached responses by URL or key prefix.
async fn purge(state: &AdminState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let invalid = |detail: &str| {
        problem(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad Request",
            detail,
            None,
        )
    };
    let body = match Limited::new(request.into_body(), MAX_PURGE_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return invalid(&format!(
                "the purge request body is unreadable or larger than {MAX_PURGE_BODY_BYTES} bytes"
            ));
        }
    };
    let parsed: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(error) => {
            return invalid(&format!(
                "invalid purge request: {error}; send {{\"url\": \"HOST/PATH\"}} or {{\"prefix\": \"HOST/PATH\"}}"
            ));
        }
    };
    let prefix = match (parsed.url, parsed.prefix) {
        (Some(url), None) if !url.is_empty() => cache_key::url_prefix(&url),
        (None, Some(prefix)) if !prefix.is_empty() => prefix,
        _ => {
            return invalid("a purge request needs exactly one non-empty field: url or prefix");
        }
    };
    match purge_all(&state.purge_caches, &prefix).await {
        Ok(removed) => {
            tracing::info!(prefix = %prefix.trim_end(), removed, "purged cached responses");
            json_response(
                StatusCode::OK,
                "application/json",
                &json!({ "status": "purged", "removed": removed }),
            )
        }
        Err(error) => {
            tracing::error!(%error, "cache purge failed");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal Server Error",
                "the cache purge failed",
                None,
            )
        }
    }
}

/// Purges `prefix` from every cache in `caches`, returning the entries removed. Every
/// cache is tried even when one fails, and then the first error is returned.
async fn purge_all(
    caches: &[crate::cache_store::NativeResponseCache],
    prefix: &str,
) -> Result<u64, gatehouse_core::Error> {
    let mut removed = 0;
    let mut first_error = None;
    for cache in caches {
        match cache.purge_prefix(prefix).await {
            Ok(count) => removed += count,
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(removed),
    }
}

/// Path prefix of the key-value entries; the rest of the path is the key,
/// percent-decoded.
const KEY_VALUE_PATH: &str = "/key-value/";

/// Maximum key length, in bytes: the limit of Workers KV, so that entries written here can
/// be copied to the edge unchanged.
const MAX_KEY_BYTES: usize = 512;

/// Maximum value size, in bytes. Consumer records and endpoint lists are far smaller.
const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Reads (`GET`), writes (`PUT`, with an optional `?ttl=SECONDS`) or removes
/// (`DELETE`) one entry of the in-memory key-value store, such as the consumer record
/// of an API key under `api-key:SHA256`.
///
/// Values are never logged, because they may be credentials or consumer data.
async fn key_value(
    state: &AdminState,
    encoded_key: &str,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let bad_request = |detail: &str| {
        problem(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad Request",
            detail,
            None,
        )
    };
    let key = match percent_encoding::percent_decode_str(encoded_key).decode_utf8() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_BYTES => key.into_owned(),
        Ok(key) if key.is_empty() => {
            return bad_request("the path names no key; use /key-value/KEY");
        }
        Ok(_) => {
            return bad_request(&format!("the key is longer than {MAX_KEY_BYTES} bytes"));
        }
        Err(_) => return bad_request("the key is not UTF-8 after percent-decoding"),
    };
    let method = request.method().clone();
    match method {
        Method::GET | Method::HEAD => match state.key_value.lookup(&key) {
            Some(value) => {
                let mut response = Response::new(Full::new(value));
                let headers = response.headers_mut();
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            None => problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not Found",
                &format!("the key-value store has no entry {key:?}"),
                None,
            ),
        },
        Method::PUT => {
            let ttl = match ttl_of(request.uri().query()) {
                Ok(ttl) => ttl,
                Err(detail) => return bad_request(&detail),
            };
            let value = match Limited::new(request.into_body(), MAX_VALUE_BYTES)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    return problem(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload-too-large",
                        "Payload Too Large",
                        &format!("the value is unreadable or larger than {MAX_VALUE_BYTES} bytes"),
                        None,
                    );
                }
            };
            let bytes = value.len();
            match state.key_value.insert(&key, value, ttl) {
                Ok(()) => {
                    tracing::info!(key = %key, bytes, "stored a key-value entry");
                    json_response(
                        StatusCode::OK,
                        "application/json",
                        &json!({ "status": "stored", "key": key, "bytes": bytes }),
                    )
                }
                Err(error) => problem(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "store-full",
                    "Insufficient Storage",
                    error.detail(),
                    None,
                ),
            }
        }
        Method::DELETE => {
            let existed = state.key_value.lookup(&key).is_some();
            state.key_value.remove(&key);
            tracing::info!(key = %key, existed, "removed a key-value entry");
            json_response(
                StatusCode::OK,
                "application/json",
                &json!({ "status": "removed", "key": key, "existed": existed }),
            )
        }
        _ => {
            let mut response = problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method Not Allowed",
                &format!("{KEY_VALUE_PATH}KEY accepts GET, HEAD, PUT and DELETE"),
                None,
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD, PUT, DELETE"));
            response
        }
    }
}

/// Reads the optional `ttl=SECONDS` query parameter of a key-value write.
fn ttl_of(query: Option<&str>) -> Result<Option<std::time::Duration>, String> {
    let mut ttl = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if name != "ttl" {
            return Err(format!(
                "unknown query parameter {name:?}; a write accepts only ttl=SECONDS"
            ));
        }
        match value.parse::<u64>() {
            Ok(seconds) if seconds > 0 => ttl = Some(std::time::Duration::from_secs(seconds)),
            _ => {
                return Err(format!(
                    "ttl must be a whole number of seconds above 0, not {value:?}"
                ));
            }
        }
    }
    Ok(ttl)
}

fn problem(
    status: StatusCode,
    slug: &str,
    title: &str,
    detail: &str,
    problems: Option<Vec<String>>,
) -> Response<Full<Bytes>> {
    let mut body = json!({
        "type": format!("{PROBLEM_TYPE_PREFIX}{slug}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(problems) = problems {
        body["problems"] = json!(problems);
    }
    json_response(status, PROBLEM_CONTENT_TYPE, &body)
}

fn json_response(
    status: StatusCode,
    content_type: &'static str,
    body: &serde_json::Value,
) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_string_pretty(body).unwrap_or_default();
    body.push('\n');
    text(status, content_type, body)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
