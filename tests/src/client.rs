//! The HTTP client of process targets: one new connection per request, HTTP/1.1 or
//! HTTP/2 with prior knowledge, with the request target sent exactly as written.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body::Frame;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::target::{Chunked, Exchange, body_chunks};

/// Maximum time for one request, from connecting to the end of the response body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `request` to `address` and reads the whole response, within [`REQUEST_TIMEOUT`].
///
/// A fresh connection per request keeps requests independent, so one that leaves a
/// connection broken (an oversized header, a framing error) cannot affect the next.
pub async fn send(address: SocketAddr, request: Request<Bytes>) -> Result<Exchange, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange(address, request)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no complete response within {} s",
            REQUEST_TIMEOUT.as_secs()
        )),
    }
}

async fn exchange(address: SocketAddr, request: Request<Bytes>) -> Result<Exchange, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|error| format!("failed to connect to {address}: {error}"))?;
    let io = TokioIo::new(stream);
    let chunked = request.extensions().get::<Chunked>().is_some();
    let request = request.map(|body| {
        if chunked {
            // Several frames and no size hint: hyper sends them as chunks.
            let frames = body_chunks(&body)
                .into_iter()
                .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
            Either::Right(StreamBody::new(futures::stream::iter(frames)))
        } else {
            Either::Left(Full::new(body))
        }
    });

    let response = if request.version() == Version::HTTP_2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|error| format!("HTTP/2 handshake failed: {error}"))?;
        tokio::spawn(connection);
        sender.send_request(request).await
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|error| format!("HTTP/1.1 handshake failed: {error}"))?;
        tokio::spawn(connection);
        sender.send_request(request).await
    }
    .map_err(|error| format!("request failed: {error}"))?;

    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|error| format!("failed to read the response body: {error}"))?
        .to_bytes();
    Ok(Exchange {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests report failures by panicking")]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::*;
    use crate::scenario::{UpstreamBehaviour, UpstreamProtocol};
    use crate::upstream::SocketUpstreams;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn socket_upstream_echoes_raw_path() {
        runtime().block_on(async {
            let upstreams = BTreeMap::from([("a".to_owned(), UpstreamBehaviour::default())]);
            let servers = SocketUpstreams::start(&upstreams).await.unwrap();
            let request = Request::post("//x/./y%2F?q=1")
                .header("host", "localhost")
                .header("x-two", "1")
                .header("x-two", "2")
                .body(Bytes::from_static(b"payload"))
                .unwrap();
            let exchange = send(servers.addresses()["a"], request).await.unwrap();
            assert_eq!(exchange.status, 200);
            let echo: Value = serde_json::from_slice(&exchange.body).unwrap();
            assert_eq!(echo["upstream"], "a");
            assert_eq!(echo["path"], "//x/./y%2F");
            assert_eq!(echo["query"], "q=1");
            assert_eq!(echo["headers"]["x-two"], serde_json::json!(["1", "2"]));
            assert_eq!(echo["body"], "payload");
            assert_eq!(servers.connections()["a"], 1);
        });
    }

    #[test]
    fn socket_upstream_speaks_h2c() {
        runtime().block_on(async {
            let behaviour = UpstreamBehaviour {
                protocol: UpstreamProtocol::H2c,
                status: Some(201),
                ..UpstreamBehaviour::default()
            };
            let upstreams = BTreeMap::from([("h2".to_owned(), behaviour)]);
            let servers = SocketUpstreams::start(&upstreams).await.unwrap();
            let mut request = Request::get("http://localhost/svc")
                .body(Bytes::new())
                .unwrap();
            *request.version_mut() = Version::HTTP_2;
            let exchange = send(servers.addresses()["h2"], request).await.unwrap();
            assert_eq!(exchange.status, 201);
        });
    }

    #[test]
    fn closing_upstream_sends_nothing() {
        runtime().block_on(async {
            let behaviour = UpstreamBehaviour {
                close: true,
                ..UpstreamBehaviour::default()
            };
            let upstreams = BTreeMap::from([("dead".to_owned(), behaviour)]);
            let servers = SocketUpstreams::start(&upstreams).await.unwrap();
            let request = Request::get("/")
                .header("host", "localhost")
                .body(Bytes::new())
                .unwrap();
            let error = send(servers.addresses()["dead"], request)
                .await
                .unwrap_err();
            assert!(error.starts_with("request failed"), "{error}");
        });
    }
}
