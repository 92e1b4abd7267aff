//! Pooled HTTP/1.1 connections to plain-TCP upstream endpoints with a known address.
//!
//! This is the proxy's hot path. hyper-util's general client still serves every other
//! upstream request: TLS, HTTP/2, host names and the gateway's own fetches. That client
//! spawns a task per request to return the connection to its pool, and it hashes scheme
//! and authority at checkout and at return. Here the connection goes back to the pool
//! from the response body, when its last frame has been read, and the pool is keyed by
//! socket address.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::NativeBody;

/// How often idle connections past their idle timeout are closed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// The idle connections to each endpoint, most recently used last.
#[derive(Debug)]
pub(crate) struct Http1Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    idle: Mutex<Idle>,
    idle_timeout: Duration,
    tcp_keepalive: Duration,
}

#[derive(Debug, Default)]
struct Idle {
    endpoints: HashMap<SocketAddr, VecDeque<IdleConnection>>,
    sweeping: bool,
}

#[derive(Debug)]
struct IdleConnection {
    sender: SendRequest<NativeBody>,
    since: Instant,
}

/// The failure of an exchange.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened; nothing was sent.
    Connect(io::Error),
    /// The connect did not finish within the connect timeout; nothing was sent.
    ConnectTimeout,
    /// hyper failed the exchange. `sent` is false when the request never left, which
    /// makes it safe to send again.
    Exchange { error: hyper::Error, sent: bool },
}

impl Http1Pool {
    /// Creates an empty pool whose connections close after `idle_timeout` unused and
    /// probe their peer with TCP keep-alive every `tcp_keepalive`.
    pub fn new(idle_timeout: Duration, tcp_keepalive: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                idle: Mutex::new(Idle::default()),
                idle_timeout,
                tcp_keepalive,
            }),
        }
    }

    /// Sends `request` on an idle connection to `address`, or on a new one. A pooled
    /// connection the upstream closed meanwhile is skipped, and a request that failed
    /// on one before any of it was written goes out again on the next.
    pub async fn send(
        &self,
        address: SocketAddr,
        connect_timeout: Duration,
        mut request: Request<NativeBody>,
    ) -> Result<Response<NativeBody>, SendError> {
        loop {
            let (mut sender, reused) = match self.checkout(address) {
                Some(sender) => (sender, true),
                // Connecting is boxed: it is rare next to reuse, and its state would
                // otherwise grow the future of every request.
                None => (
                    Box::pin(self.connect(address, connect_timeout)).await?,
                    false,
                ),
            };
            if reused && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.track(address, sender, response)),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => request = unsent,
                    unsent => {
                        return Err(SendError::Exchange {
                            sent: unsent.is_none(),
                            error: failed.into_error(),
                        });
                    }
                },
            }
        }
    }

    /// Takes the most recently used open connection to `address`.
    fn checkout(&self, address: SocketAddr) -> Option<SendRequest<NativeBody>> {
        let now = Instant::now();
        let mut idle = self.shared.lock();
        let connections = idle.endpoints.get_mut(&address)?;
        while let Some(connection) = connections.pop_back() {
            if now.duration_since(connection.since) >= self.shared.idle_timeout {
                // The newest is too old, so every older one is too.
                connections.clear();
                return None;
            }
            if !connection.sender.is_closed() {
                return Some(connection.sender);
            }
        }
        None
    }

    async fn connect(
        &self,
        address: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<SendRequest<NativeBody>, SendError> {
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_elapsed| SendError::ConnectTimeout)?
            .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(self.shared.tcp_keepalive);
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&keepalive)
            .map_err(SendError::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| SendError::Exchange { error, sent: false })?;
        tokio::spawn(async move {
            // The connection ends when either side closes it or its last request
            // finished; its errors reach the request that was on it.
            let _ = connection.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Returns the response with a body that gives the connection back to the pool
    /// once read to its end. A connection that switched protocols is never reused.
    fn track(
        &self,
        address: SocketAddr,
        sender: SendRequest<NativeBody>,
        response: Response<Incoming>,
    ) -> Response<NativeBody> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return response.map(NativeBody::from);
        }
        let checkin = Checkin {
            shared: Arc::downgrade(&self.shared),
            address,
            sender,
        };
        if response.body().is_end_stream() {
            checkin.finish();
            return response.map(NativeBody::from);
        }
        response.map(|body| {
            NativeBody::pooled(PooledBody {
                body,
                checkin: Some(checkin),
            })
        })
    }
}

impl Shared {
    /// Locks the idle lists. Every change under the lock is a single push, pop or
    /// retain, so a panic elsewhere cannot leave them inconsistent and a poisoned lock
    /// is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes connections idle for longer than the idle timeout, and drops the
    /// handles of those the upstream closed. Returns whether any remain.
    fn sweep(&self) -> bool {
        let now = Instant::now();
        let mut idle = self.lock();
        idle.endpoints.retain(|_, connections| {
            connections.retain(|connection| {
                now.duration_since(connection.since) < self.idle_timeout
                    && !connection.sender.is_closed()
            });
            !connections.is_empty()
        });
        let remaining = !idle.endpoints.is_empty();
        idle.sweeping = remaining;
        remaining
    }
}

/// A connection on its way back to the pool.
#[derive(Debug)]
struct Checkin {
    shared: Weak<Shared>,
    address: SocketAddr,
    sender: SendRequest<NativeBody>,
}

impl Checkin {
    fn finish(self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        if self.sender.is_closed() {
            return;
        }
        let start_sweeper = {
            let mut idle = shared.lock();
            idle.endpoints
                .entry(self.address)
                .or_default()
                .push_back(IdleConnection {
                    sender: self.sender,
                    since: Instant::now(),
                });
            !std::mem::replace(&mut idle.sweeping, true)
        };
        if start_sweeper {
            let weak = Arc::downgrade(&shared);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(SWEEP_INTERVAL).await;
                    let Some(shared) = weak.upgrade() else { return };
                    if !shared.sweep() {
                        return;
                    }
                }
            });
        }
    }
}

/// A response body from a pooled connection. Its last frame returns the connection to
/// the pool; dropped before that, the connection closes with it.
#[derive(Debug)]
pub(crate) struct PooledBody {
    body: Incoming,
    checkin: Option<Checkin>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.body.is_end_stream(),
            // A broken body leaves the connection unusable; it closes when dropped.
            Poll::Ready(Some(Err(_))) => {
                self.checkin = None;
                false
            }
            Poll::Pending => false,
        };
        if ended {
            if let Some(checkin) = self.checkin.take() {
                checkin.finish();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::demo::DemoUpstream;

    fn ping(upstream: &DemoUpstream) -> Request<NativeBody> {
        Request::get("/ping")
            .header(http::header::HOST, upstream.address().to_string())
            .body(NativeBody::empty())
            .expect("valid request")
    }

    async fn get(pool: &Http1Pool, upstream: &DemoUpstream) -> StatusCode {
        let response = match pool
            .send(upstream.address(), Duration::from_secs(2), ping(upstream))
            .await
        {
            Ok(response) => response,
            Err(error) => panic!("the request failed: {error:?}"),
        };
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .expect("the body arrives whole");
        status
    }

    async fn demo_upstream() -> DemoUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        DemoUpstream::start(listener).expect("start the demo upstream")
    }

    #[tokio::test]
    async fn read_body_returns_the_connection() {
        let upstream = demo_upstream().await;
        let pool = Http1Pool::new(Duration::from_secs(60), Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(get(&pool, &upstream).await, StatusCode::OK);
        }
        assert_eq!(upstream.accepted_connections(), 1);
    }

    #[tokio::test]
    async fn unread_body_closes_the_connection() {
        let upstream = demo_upstream().await;
        let pool = Http1Pool::new(Duration::from_secs(60), Duration::from_secs(60));
        let response = pool
            .send(upstream.address(), Duration::from_secs(2), ping(&upstream))
            .await
            .expect("a response");
        drop(response);
        assert_eq!(get(&pool, &upstream).await, StatusCode::OK);
        assert_eq!(upstream.accepted_connections(), 2);
    }

    #[tokio::test]
    async fn expired_connection_is_not_reused() {
        let upstream = demo_upstream().await;
        let pool = Http1Pool::new(Duration::from_millis(50), Duration::from_secs(60));
        assert_eq!(get(&pool, &upstream).await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get(&pool, &upstream).await, StatusCode::OK);
        assert_eq!(upstream.accepted_connections(), 2);
    }

    #[tokio::test]
    async fn sweep_closes_expired_connections() {
        let upstream = demo_upstream().await;
        let pool = Http1Pool::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(get(&pool, &upstream).await, StatusCode::OK);
        assert!(pool.shared.sweep(), "a fresh connection stays");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(!pool.shared.sweep(), "an expired connection goes");
        assert!(pool.shared.lock().endpoints.is_empty());
    }

    #[tokio::test]
    async fn refused_connect_is_a_connect_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("bound address");
        drop(listener);
        let pool = Http1Pool::new(Duration::from_secs(60), Duration::from_secs(60));
        let request = Request::get("/")
            .body(NativeBody::empty())
            .expect("valid request");
        let result = pool.send(address, Duration::from_secs(2), request).await;
        assert!(matches!(result, Err(SendError::Connect(_))), "{result:?}");
    }
}
