//! The simulator's admin listener: the report and the shared key-value store as each
//! location sees it.
//!
//! - `GET /simulator`: the per-location report as JSON.
//! - `GET`, `PUT` or `DELETE /simulator/key-value/LOCATION/KEY`: reads, writes or
//!   removes `KEY` as location `LOCATION` does. A write is visible at once in that
//!   location and after `kv_propagation` in the others. `PUT` takes an optional
//!   `ttl=SECONDS` query parameter.
//! - `GET /healthz`: 200 while the simulator runs.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::Simulator;
use super::key_value::MAX_VALUE_BYTES;
use crate::server::HEADER_READ_TIMEOUT;

/// Path prefix of key-value entries; the rest is `LOCATION/KEY`.
const KEY_VALUE_PATH: &str = "/simulator/key-value/";

type AdminResponse = Response<Full<Bytes>>;

/// Accepts admin connections until the task is aborted.
pub async fn serve(listener: TcpListener, simulator: Arc<Simulator>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin listener failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let simulator = Arc::clone(&simulator);
        let service = service_fn(move |request| {
            let simulator = Arc::clone(&simulator);
            async move { Ok::<_, Infallible>(respond(&simulator, request).await) }
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

async fn respond(simulator: &Simulator, request: Request<Incoming>) -> AdminResponse {
    let path = request.uri().path().to_owned();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/simulator") => match serde_json::to_vec_pretty(&simulator.report()) {
            Ok(body) => json(StatusCode::OK, body),
            Err(error) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("failed to serialize the report: {error}"),
            ),
        },
        _ if path.starts_with(KEY_VALUE_PATH) => key_value(simulator, request).await,
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; the simulator's admin paths are GET /healthz, GET /simulator and \
             GET, PUT or DELETE /simulator/key-value/LOCATION/KEY",
        ),
    }
}

async fn key_value(simulator: &Simulator, request: Request<Incoming>) -> AdminResponse {
    let rest = &request.uri().path()[KEY_VALUE_PATH.len()..];
    let Some((location_name, key)) = rest.split_once('/') else {
        return text(
            StatusCode::BAD_REQUEST,
            "the path names no key; use /simulator/key-value/LOCATION/KEY",
        );
    };
    let key = match percent_encoding::percent_decode_str(key).decode_utf8() {
        Ok(key) => key.into_owned(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "the key is not valid UTF-8"),
    };
    let Some(location) = simulator.location(location_name) else {
        return text(
            StatusCode::NOT_FOUND,
            &format!(
                "no location {location_name:?}; the locations are {}",
                simulator.location_names().join(", ")
            ),
        );
    };
    let store = location.key_value();
    let ttl = match ttl_parameter(request.uri().query()) {
        Ok(ttl) => ttl,
        Err(message) => return text(StatusCode::BAD_REQUEST, &message),
    };
    match request.method().clone() {
        Method::GET => match store.read(&key) {
            Ok(read) => match read.value {
                Some(value) => {
                    let mut response = Response::new(Full::new(value));
                    if read.stale {
                        response.headers_mut().insert(
                            "gatehouse-simulator-stale",
                            http::HeaderValue::from_static("true"),
                        );
                    }
                    response
                }
                None => text(
                    StatusCode::NOT_FOUND,
                    &format!("location {location_name:?} sees no entry {key:?}"),
                ),
            },
            Err(error) => text(error.kind().status(), error.detail()),
        },
        Method::PUT => {
            let body = match Limited::new(request.into_body(), MAX_VALUE_BYTES + 1)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(error) => {
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("failed to read the value: {error}"),
                    );
                }
            };
            match store.write(&key, Some(body), ttl) {
                Ok(()) => text(StatusCode::NO_CONTENT, ""),
                Err(error) => text(error.kind().status(), error.detail()),
            }
        }
        Method::DELETE => match store.write(&key, None, None) {
            Ok(()) => text(StatusCode::NO_CONTENT, ""),
            Err(error) => text(error.kind().status(), error.detail()),
        },
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, PUT or DELETE on a key-value entry",
        ),
    }
}

/// Reads the optional `ttl=SECONDS` query parameter of a write.
fn ttl_parameter(query: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(query) = query else {
        return Ok(None);
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name == "ttl" {
            let seconds: u64 = value
                .parse()
                .map_err(|_| format!("invalid ttl {value:?}: expected whole seconds"))?;
            return Ok(Some(Duration::from_secs(seconds)));
        }
    }
    Ok(None)
}

fn text(status: StatusCode, message: &str) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from(if message.is_empty() {
        String::new()
    } else {
        format!("{message}\n")
    })));
    *response.status_mut() = status;
    if !message.is_empty() {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

fn json(status: StatusCode, body: Vec<u8>) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
