//! The demo upstream: an HTTP server that responds to every request with JSON describing
//! what it received, over HTTP/1.1 and h2c on the same port.
//!
//! The JSON has `upstream` (the server's address), `method`, `version` (such as
//! `HTTP/1.1` or `HTTP/2.0`), `path`, `query` (`null` without one), `headers` (each
//! name to its value, or to an array of values when repeated) and `body_bytes`.
//!
//! `gatehouse demo` starts one on each loopback endpoint of the config, and the
//! integration tests use it as a real upstream.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running demo upstream. Dropping it stops accepting connections; connections
/// already open are served until their clients close them.
#[derive(Debug)]
pub struct DemoUpstream {
    address: SocketAddr,
    accepted: Arc<AtomicU64>,
    accept_task: JoinHandle<()>,
}

impl DemoUpstream {
    /// Binds `address` and starts serving. Must be called inside a Tokio runtime.
    pub async fn bind(address: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        Self::start(listener)
    }

    /// Starts serving on an already bound listener. Must be called inside a Tokio
    /// runtime.
    pub fn start(listener: TcpListener) -> io::Result<Self> {
        let address = listener.local_addr()?;
        let accepted = Arc::new(AtomicU64::new(0));
        let accept_task = tokio::spawn(accept_loop(listener, address, Arc::clone(&accepted)));
        Ok(Self {
            address,
            accepted,
            accept_task,
        })
    }

    /// Returns the address the upstream listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Returns how many TCP connections the upstream has accepted, which shows whether
    /// a client reuses its connections.
    pub fn accepted_connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for DemoUpstream {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, address: SocketAddr, accepted: Arc<AtomicU64>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let upstream = Arc::<str>::from(address.to_string());

    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Accept fails on resource exhaustion such as too many open files;
                // waiting briefly avoids spinning until a descriptor frees up.
                tracing::warn!(%address, %error, "demo upstream failed to accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%address, %error, "demo upstream failed to set TCP_NODELAY");
        }
        let builder = Arc::clone(&builder);
        let upstream = Arc::clone(&upstream);
        tokio::spawn(async move {
            let service = service_fn(move |request| describe(Arc::clone(&upstream), request));
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%address, %error, "demo upstream connection ended with an error");
            }
        });
    }
}

/// Responds with a JSON description of `request`, reading the whole body to count it.
async fn describe(
    upstream: Arc<str>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, mut body) = request.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(error) => {
                let description = json!({
                    "upstream": &*upstream,
                    "error": format!("failed to read the request body: {error}"),
                });
                return Ok(json_response(StatusCode::BAD_REQUEST, &description));
            }
        }
    }

    let description = json!({
        "upstream": &*upstream,
        "method": parts.method.as_str(),
        "version": format!("{:?}", parts.version),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers_json(&parts.headers),
        "body_bytes": body_bytes,
    });
    Ok(json_response(StatusCode::OK, &description))
}

/// Maps each header name to its value, or to an array when it has several.
fn headers_json(headers: &HeaderMap) -> Value {
    let mut object = Map::new();
    for name in headers.keys() {
        let mut values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|value| Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        let value = if values.len() == 1 {
            values.remove(0)
        } else {
            Value::Array(values)
        };
        object.insert(name.as_str().to_owned(), value);
    }
    Value::Object(object)
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_become_arrays() {
        let mut headers = HeaderMap::new();
        headers.append("x-one", http::HeaderValue::from_static("a"));
        headers.append("x-two", http::HeaderValue::from_static("b"));
        headers.append("x-two", http::HeaderValue::from_static("c"));
        let json = headers_json(&headers);
        assert_eq!(json["x-one"], "a");
        assert_eq!(json["x-two"], json!(["b", "c"]));
    }
}
