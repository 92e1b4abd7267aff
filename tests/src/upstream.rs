//! Test upstreams as real servers on 127.0.0.1, for targets that run the gateway in
//! another process. They respond with [`crate::behaviour`], as the in-process
//! simulation does, and count the connections they accept.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::behaviour::{self, Received, UPSTREAM_HEADER};
use crate::scenario::{UpstreamBehaviour, UpstreamProtocol};

/// Time a `close` upstream waits for the request head before closing, so it closes
/// after the gateway has sent the request, as a crashing server would.
const CLOSE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The test upstreams of one scenario. Dropping it stops every server and connection.
#[derive(Debug)]
pub struct SocketUpstreams {
    addresses: BTreeMap<String, SocketAddr>,
    connections: BTreeMap<String, Arc<AtomicUsize>>,
    requests: BTreeMap<String, Arc<AtomicUsize>>,
    servers: Vec<JoinHandle<()>>,
}

impl SocketUpstreams {
    /// Binds one server per upstream on 127.0.0.1 with a free port and starts serving.
    /// Must be called inside a Tokio runtime.
    pub async fn start(upstreams: &BTreeMap<String, UpstreamBehaviour>) -> Result<Self, String> {
        let mut started = Self {
            addresses: BTreeMap::new(),
            connections: BTreeMap::new(),
            requests: BTreeMap::new(),
            servers: Vec::new(),
        };
        for (name, behaviour) in upstreams {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|error| format!("failed to bind test upstream {name:?}: {error}"))?;
            let address = listener
                .local_addr()
                .map_err(|error| format!("failed to read address of {name:?}: {error}"))?;
            let counter = Arc::new(AtomicUsize::new(0));
            let requests = Arc::new(AtomicUsize::new(0));
            let server = Server {
                name: Arc::from(name.as_str()),
                behaviour: Arc::new(behaviour.clone()),
                connections: Arc::clone(&counter),
                requests: Arc::clone(&requests),
            };
            started.servers.push(tokio::spawn(server.run(listener)));
            started.addresses.insert(name.clone(), address);
            started.connections.insert(name.clone(), counter);
            started.requests.insert(name.clone(), requests);
        }
        Ok(started)
    }

    /// Returns the address of each upstream by name.
    pub fn addresses(&self) -> &BTreeMap<String, SocketAddr> {
        &self.addresses
    }

    /// Returns how many requests each upstream has received.
    pub fn requests(&self) -> BTreeMap<String, usize> {
        self.requests
            .iter()
            .map(|(name, counter)| (name.clone(), counter.load(Ordering::SeqCst)))
            .collect()
    }

    /// Returns how many connections each upstream has accepted.
    pub fn connections(&self) -> BTreeMap<String, usize> {
        self.connections
            .iter()
            .map(|(name, counter)| (name.clone(), counter.load(Ordering::SeqCst)))
            .collect()
    }
}

impl Drop for SocketUpstreams {
    fn drop(&mut self) {
        // Aborting an accept loop drops its JoinSet, which aborts its connections.
        for server in &self.servers {
            server.abort();
        }
    }
}

/// Returns a port on 127.0.0.1 that nothing listens on: bound, read and released.
/// Another process could take it in between, which is unlikely within one run.
pub fn unused_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|error| format!("failed to find an unused port: {error}"))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|error| format!("failed to find an unused port: {error}"))
}

struct Server {
    name: Arc<str>,
    behaviour: Arc<UpstreamBehaviour>,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    async fn run(self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            self.connections.fetch_add(1, Ordering::SeqCst);
            if self.behaviour.close {
                tasks.spawn(close_after_request_head(stream));
                continue;
            }
            let name = Arc::clone(&self.name);
            let behaviour = Arc::clone(&self.behaviour);
            let requests = Arc::clone(&self.requests);
            tasks.spawn(serve_connection(stream, name, behaviour, requests));
            // Reap finished connections so the set does not grow over a long scenario.
            while tasks.try_join_next().is_some() {}
        }
    }
}

async fn close_after_request_head(mut stream: TcpStream) {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    let read_head = async {
        while !buffer.windows(4).any(|window| window == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_READ_TIMEOUT, read_head).await;
    drop(stream);
}

async fn serve_connection(
    stream: TcpStream,
    name: Arc<str>,
    behaviour: Arc<UpstreamBehaviour>,
    requests: Arc<AtomicUsize>,
) {
    let io = TokioIo::new(stream);
    let protocol = behaviour.protocol;
    let service = service_fn(move |request| {
        let name = Arc::clone(&name);
        let behaviour = Arc::clone(&behaviour);
        let number = requests.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok::<_, Infallible>(answer(&name, &behaviour, request, number).await) }
    });
    // Errors here are the gateway closing a connection, as it does after a timeout.
    let _ = match protocol {
        UpstreamProtocol::Http1 => {
            hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await
        }
        UpstreamProtocol::H2c => {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await
        }
    };
}

async fn answer(
    name: &str,
    behaviour: &UpstreamBehaviour,
    mut request: http::Request<Incoming>,
    number: usize,
) -> http::Response<Full<Bytes>> {
    if behaviour.websocket
        && let Some(key) = request.headers().get(SEC_WEBSOCKET_KEY)
    {
        let accept = derive_accept_key(key.as_bytes());
        let protocol = first_subprotocol(request.headers());
        tokio::spawn(echo_websocket(hyper::upgrade::on(&mut request)));
        return switching_protocols(name, &accept, protocol);
    }
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return plain_response(400, format!("failed to read the body: {error}")),
    };
    let received = Received::new(&parts, body);
    if let Some(delay) = behaviour.delay {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match behaviour::reply(name, behaviour, &received, number) {
        Ok(reply) => {
            let mut response = http::Response::new(Full::new(reply.body));
            *response.status_mut() = reply.status;
            *response.headers_mut() = reply.headers;
            response
        }
        Err(error) => plain_response(500, error),
    }
}

fn plain_response(status: u16, text: String) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    response
}

/// Returns the first subprotocol the client offered in `Sec-WebSocket-Protocol`,
/// which the echo upstream selects.
fn first_subprotocol(headers: &http::HeaderMap) -> Option<http::HeaderValue> {
    let offered = headers.get(SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    let first = offered.split(',').next()?.trim();
    http::HeaderValue::from_str(first).ok()
}

/// Accepts a WebSocket handshake; `accept` is the `Sec-WebSocket-Accept` value and
/// `protocol` the selected subprotocol.
fn switching_protocols(
    name: &str,
    accept: &str,
    protocol: Option<http::HeaderValue>,
) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, http::HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, http::HeaderValue::from_static("websocket"));
    if let Ok(value) = http::HeaderValue::from_str(accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    if let Some(protocol) = protocol {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    if let Ok(value) = http::HeaderValue::from_str(name) {
        headers.insert(UPSTREAM_HEADER, value);
    }
    response
}

/// Echoes the messages of an upgraded connection (see
/// [`UpstreamBehaviour::websocket`]) until it closes.
async fn echo_websocket(upgrade: hyper::upgrade::OnUpgrade) {
    let Ok(upgraded) = upgrade.await else {
        return;
    };
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    // tungstenite replies to a close frame with the same code and reason on its own.
    while let Some(Ok(message)) = socket.next().await {
        let sent = match message {
            Message::Text(text) => match text.strip_prefix("close ") {
                Some(request) => {
                    let (code, reason) = request.split_once(' ').unwrap_or((request, ""));
                    let code = code.parse::<u16>().unwrap_or(1000);
                    let frame = CloseFrame {
                        code: code.into(),
                        reason: reason.to_owned().into(),
                    };
                    socket.close(Some(frame)).await
                }
                None => socket.send(Message::Text(text)).await,
            },
            Message::Binary(bytes) => socket.send(Message::Binary(bytes)).await,
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
}
