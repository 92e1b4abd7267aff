//! The HTTP client of process targets: one new connection per request, HTTP/1.1 or
//! HTTP/2 with prior knowledge, with the request target sent exactly as written, and
//! the WebSocket client of `websocket` steps.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body::Frame;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame as WireCloseFrame, Role};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::scenario::{CloseFrame, WebSocketAction, WebSocketMessage};
use crate::target::{Chunked, Exchange, WebSocketExchange, WebSocketSession, body_chunks};

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

/// Sends the WebSocket handshake `request` to `address` over HTTP/1.1. After a `101` it
/// runs `actions` while it reads, and it reads until the connection ends, at most
/// [`REQUEST_TIMEOUT`] after the last action.
pub async fn websocket(
    address: SocketAddr,
    request: Request<Bytes>,
    actions: &[WebSocketAction],
) -> Result<WebSocketExchange, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|error| format!("failed to connect to {address}: {error}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP/1.1 handshake failed: {error}"))?;
    tokio::spawn(connection.with_upgrades());
    let response =
        tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(request.map(Full::new)))
            .await
            .map_err(|_| {
                format!(
                    "no handshake response within {} s",
                    REQUEST_TIMEOUT.as_secs()
                )
            })?
            .map_err(|error| format!("request failed: {error}"))?;

    let status = response.status().as_u16();
    let headers = response.headers().clone();
    if status != 101 {
        let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| "the response body did not end in time".to_owned())?
            .map_err(|error| format!("failed to read the response body: {error}"))?
            .to_bytes();
        let handshake = Exchange {
            status,
            headers,
            body,
        };
        return Ok(WebSocketExchange {
            handshake,
            session: None,
        });
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|error| format!("the 101 response did not upgrade the connection: {error}"))?;
    let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    let session = run_session(socket, actions).await;
    let handshake = Exchange {
        status,
        headers,
        body: Bytes::new(),
    };
    Ok(WebSocketExchange {
        handshake,
        session: Some(session),
    })
}

/// Runs `actions` on an open WebSocket while a second task reads, and returns what
/// arrived once the connection ended or the read deadline passed.
async fn run_session<S>(socket: WebSocketStream<S>, actions: &[WebSocketAction]) -> WebSocketSession
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures::{SinkExt, StreamExt};

    let started = Instant::now();
    let waits: u64 = actions
        .iter()
        .map(|action| match action {
            WebSocketAction::WaitMs(millis) => *millis,
            _ => 0,
        })
        .sum();
    let deadline = started + Duration::from_millis(waits) + REQUEST_TIMEOUT;
    let (mut write, mut read) = socket.split();
    let reader = tokio::spawn(async move {
        let mut session = WebSocketSession::default();
        loop {
            match tokio::time::timeout_at(deadline, read.next()).await {
                Err(_) => {
                    session.timed_out = true;
                    session.failure = Some(format!(
                        "the connection was still open {} ms after the handshake",
                        deadline.duration_since(started).as_millis()
                    ));
                    break;
                }
                Ok(None | Some(Err(WsError::ConnectionClosed))) => break,
                Ok(Some(Err(error))) => {
                    session.failure = Some(error.to_string());
                    break;
                }
                Ok(Some(Ok(message))) => match message {
                    Message::Text(text) => {
                        session
                            .messages
                            .push(WebSocketMessage::Text(text.to_string()));
                    }
                    Message::Binary(bytes) => {
                        session
                            .messages
                            .push(WebSocketMessage::Binary(bytes.to_vec()));
                    }
                    Message::Close(frame) => {
                        session.close = frame.map(|frame| CloseFrame {
                            code: u16::from(frame.code),
                            reason: frame.reason.to_string(),
                        });
                    }
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                },
            }
        }
        session.open_for = started.elapsed();
        session
    });

    for action in actions {
        let sent = match action {
            WebSocketAction::Text(text) => write.send(Message::text(text.clone())).await,
            WebSocketAction::Binary(bytes) => write.send(Message::binary(bytes.clone())).await,
            WebSocketAction::Close(frame) => {
                let frame = WireCloseFrame {
                    code: frame.code.into(),
                    reason: frame.reason.clone().into(),
                };
                write.send(Message::Close(Some(frame))).await
            }
            WebSocketAction::WaitMs(millis) => {
                tokio::time::sleep(Duration::from_millis(*millis)).await;
                Ok(())
            }
        };
        // The reader reports how the connection ended, which explains a failed send.
        if sent.is_err() {
            break;
        }
    }
    let session = reader.await.unwrap_or_else(|error| WebSocketSession {
        failure: Some(format!("the reading task failed: {error}")),
        ..WebSocketSession::default()
    });
    drop(write);
    session
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
