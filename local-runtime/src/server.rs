//! The HTTP server: one TCP listener per configured listener, each serving HTTP/1.1
//! with keep-alive and HTTP/2 on the same port (with prior knowledge in cleartext, or
//! through ALPN on TLS listeners), and a graceful shutdown that lets in-flight
//! requests finish.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use gatehouse_core::platform::Platform;
use gatehouse_core::websocket::Relay;
use gatehouse_core::{ConnectionInfo, Gateway};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::access_log::AccessLogBody;
use crate::body::NativeBody;
use crate::cache_store::NativeResponseCache;
use crate::metrics::Metrics;
use crate::otlp::SpanExport;
use crate::platform::{NativeClock, NativePlatform};
use crate::tls::{ListenerTls, TlsListeners};
use crate::websocket;
use gatehouse_core::cache::MemoryResponseCache;
use gatehouse_core::key_value::MemoryKeyValue;

/// Maximum time a client may take to send a request head. It bounds connections that
/// open and then trickle bytes, and matches hyper's default.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum time in-flight requests get to finish after a shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The gateway currently serving requests. A reload stores a new one; requests
/// already running keep the version they started with.
pub type SharedGateway = Arc<ArcSwap<Gateway>>;

/// A listener that failed to bind.
#[derive(Debug)]
pub struct BindError {
    /// The listener's name in the config.
    pub listener: String,
    /// The address as configured.
    pub address: String,
    /// The I/O error from binding.
    pub source: io::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "failed to bind listener {:?} on {}: {}",
            self.listener, self.address, self.source
        )
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A bound listener that has not started accepting yet.
#[derive(Debug)]
pub struct BoundListener {
    name: Arc<str>,
    address: SocketAddr,
    listener: TcpListener,
    /// The TLS settings, swapped when certificates are reloaded; `None` for cleartext.
    tls: Option<Arc<ArcSwap<ListenerTls>>>,
}

impl BoundListener {
    /// Returns the listener's name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the bound address, with the real port when the config asked for port 0.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Returns whether the listener terminates TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// The gateway's server with every listener bound, ready to serve.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<BoundListener>,
    tls: Arc<TlsListeners>,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    gateway: SharedGateway,
    platform: NativePlatform,
    metrics: Arc<Metrics>,
    /// The OTLP span export, when `[tracing.otlp]` is set at start.
    spans: Option<Arc<SpanExport>>,
}

impl Server {
    /// Loads the certificates of TLS listeners and binds every listener in the
    /// gateway's config. Must be called inside a Tokio runtime.
    pub async fn bind(gateway: Gateway, platform: NativePlatform) -> Result<Self, BindError> {
        let tls = TlsListeners::load(gateway.config()).map_err(|problems| {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            BindError {
                listener: "tls".to_owned(),
                address: String::new(),
                source: io::Error::new(io::ErrorKind::InvalidData, problems.join("; ")),
            }
        })?;
        let spans = match gateway
            .config()
            .tracing
            .as_ref()
            .and_then(|tracing| tracing.otlp.as_ref())
        {
            Some(otlp) => Some(Arc::new(SpanExport::start(otlp).map_err(|source| {
                BindError {
                    listener: "otlp".to_owned(),
                    address: otlp.endpoint.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        let mut listeners = Vec::with_capacity(gateway.config().listeners.len());
        for listener in &gateway.config().listeners {
            let bind_error = |source| BindError {
                listener: listener.name.clone(),
                address: listener.address.clone(),
                source,
            };
            // The core already rejected invalid addresses, so this only guards
            // against a config that skipped its checks.
            let address: SocketAddr = listener.address.parse().map_err(|_| {
                bind_error(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "invalid socket address",
                ))
            })?;
            let bound = TcpListener::bind(address).await.map_err(bind_error)?;
            let address = bound.local_addr().map_err(bind_error)?;
            listeners.push(BoundListener {
                name: Arc::from(listener.name.as_str()),
                address,
                listener: bound,
                tls: tls.get(&listener.name),
            });
        }
        let metrics = Metrics::new();
        metrics.register_store_errors(platform.counters().error_metrics());
        metrics.register_cache_store_errors(platform.redis_response_caches().error_metrics());
        Ok(Self {
            listeners,
            tls: Arc::new(tls),
            state: Arc::new(State {
                gateway: Arc::new(ArcSwap::from_pointee(gateway)),
                platform,
                metrics: Arc::new(metrics),
                spans,
            }),
        })
    }

    /// Returns the bound listeners, in config order.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// Returns the handle through which a reload replaces the serving gateway.
    pub fn gateway(&self) -> SharedGateway {
        Arc::clone(&self.state.gateway)
    }

    /// Returns the certificates of the TLS listeners, which a reload replaces.
    pub fn tls(&self) -> Arc<TlsListeners> {
        Arc::clone(&self.tls)
    }

    /// Returns the metrics that every request served here is recorded in.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.state.metrics)
    }

    /// Returns the platform's in-memory key-value store.
    pub fn key_value(&self) -> Arc<MemoryKeyValue<NativeClock>> {
        self.state.platform.shared_key_value()
    }

    /// Returns the platform's in-memory response cache.
    pub fn response_cache(&self) -> Arc<MemoryResponseCache> {
        self.state.platform.shared_response_cache()
    }

    /// Returns every response cache of the platform, memory and Redis, for purges.
    pub fn all_response_caches(&self) -> Vec<NativeResponseCache> {
        self.state.platform.all_response_caches()
    }

    /// Returns the clock whose monotonic time the gateway's health state uses.
    pub fn clock(&self) -> NativeClock {
        *self.state.platform.clock()
    }

    /// Serves until `shutdown` completes, then stops accepting and waits up to
    /// [`SHUTDOWN_GRACE`] for open connections to finish their requests.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let (stop_sender, stop_receiver) = watch::channel(false);
        let graceful = Arc::new(GracefulShutdown::new());
        let builder = Arc::new(connection_builder());

        let accept_tasks: Vec<JoinHandle<()>> = self
            .listeners
            .into_iter()
            .map(|listener| {
                tokio::spawn(accept_loop(
                    listener,
                    Arc::clone(&self.state),
                    Arc::clone(&builder),
                    Arc::clone(&graceful),
                    stop_receiver.clone(),
                ))
            })
            .collect();

        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        // Every accept loop owns a receiver, so sending fails only when all of them
        // have already ended.
        let _ = stop_sender.send(true);
        for task in accept_tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "an accept loop panicked");
            }
        }

        // The accept loops have ended and dropped their references.
        let Ok(graceful) = Arc::try_unwrap(graceful) else {
            tracing::error!("connections are still being accepted; shutting down without draining");
            return;
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await {
            Ok(()) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!(
                grace_secs = SHUTDOWN_GRACE.as_secs(),
                "connections still open after the shutdown grace period; closing them"
            ),
        }
    }
}

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    builder
}

async fn accept_loop(
    bound: BoundListener,
    state: Arc<State>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let BoundListener {
        name,
        address,
        listener,
        tls,
    } = bound;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Accept fails on resource exhaustion such as too many open files;
                // waiting briefly avoids spinning until a descriptor frees up.
                tracing::warn!(listener = %name, %address, %error, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "failed to set TCP_NODELAY");
        }
        let watcher = graceful.watcher();
        match &tls {
            Some(tls) => {
                let tls = tls.load_full();
                let state = Arc::clone(&state);
                let builder = Arc::clone(&builder);
                tokio::spawn(async move {
                    if let Some(stream) = handshake(stream, peer, &tls).await {
                        serve_connection(stream, peer, true, &state, &builder, watcher);
                    }
                });
            }
            None => serve_connection(stream, peer, false, &state, &builder, watcher),
        }
    }
    tracing::info!(listener = %name, %address, "listener closed");
}

/// Completes the TLS handshake within the listener's handshake timeout. A failed or
/// slow handshake closes the connection and is logged at debug level, because
/// scanners and clients with stale trust stores cause them all the time.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &ListenerTls,
) -> Option<TlsStream<TcpStream>> {
    let acceptor = TlsAcceptor::from(Arc::clone(&tls.config));
    match tokio::time::timeout(tls.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_elapsed) => {
            tracing::debug!(
                %peer,
                timeout_ms = tls.handshake_timeout.as_millis() as u64,
                "TLS handshake timed out"
            );
            None
        }
    }
}

fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    secure: bool,
    state: &Arc<State>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`; the canonical
    // form makes them match IPv4 trusted-proxy entries and log as IPv4.
    let peer_ip = peer.ip().to_canonical();
    let open = state.metrics.open_connection();
    let state = Arc::clone(state);
    let service = service_fn(move |request| handle(Arc::clone(&state), peer_ip, secure, request));
    // With upgrades, a `101` response hands the connection to the WebSocket relay.
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let connection = watcher.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
        drop(open);
    });
}

async fn handle(
    state: Arc<State>,
    peer: IpAddr,
    secure: bool,
    mut request: Request<Incoming>,
) -> Result<Response<AccessLogBody>, Infallible> {
    let started = Instant::now();
    let client_upgrade = request.extensions_mut().remove::<OnUpgrade>();
    let gateway = state.gateway.load_full();
    state
        .platform
        .sync_cache_budget(gateway.config().server.cache_max_bytes);
    let connection = ConnectionInfo { peer, secure };
    let handled = gateway
        .handle(request.map(NativeBody::from), &connection, &state.platform)
        .await;
    if let Some(task) = handled.background {
        // The client gets its response now; the revalidation finishes on its own.
        let state = Arc::clone(&state);
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move { gateway.run_background(task, &state.platform).await });
    }
    let mut response = handled.response;
    if let Some(relay) = response.extensions_mut().remove::<Relay>() {
        let upstream_upgrade = response.extensions_mut().remove::<OnUpgrade>();
        match (client_upgrade, upstream_upgrade) {
            (Some(client), Some(upstream)) => {
                let request_id = handled.access.request_id.clone();
                // NOTE: the graceful shutdown does not track relays, so a shutdown
                // closes open WebSockets without waiting for them.
                tokio::spawn(websocket::run(client, upstream, relay, request_id));
            }
            // hyper's client returns a 101 with its upgrade, but its server offers
            // one only when the client sent `Connection: upgrade`, which a handshake
            // recognized by `Sec-WebSocket-Key` alone lacks.
            _ => tracing::warn!(
                request_id = %handled.access.request_id,
                "a WebSocket upgrade was accepted without both upgradable connections"
            ),
        }
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(
        parts,
        AccessLogBody::new(body, handled.access, started)
            .with_metrics(Arc::clone(&state.metrics))
            .with_spans(state.spans.clone()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper's HTTP/2 server runs each request on its executor, which requires a
    /// `Send` future, so this fails to compile if a core type breaks `Send`.
    #[test]
    fn handle_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let state = Arc::new(State {
            gateway: Arc::new(ArcSwap::from_pointee(
                Gateway::new(gatehouse_core::config::Config::default())
                    .expect("an empty config is valid"),
            )),
            platform: NativePlatform::new(),
            metrics: Arc::new(Metrics::new()),
            spans: None,
        });
        let peer = IpAddr::from([127, 0, 0, 1]);
        let future = async move {
            let gateway = state.gateway.load_full();
            let connection = ConnectionInfo {
                peer,
                secure: false,
            };
            let request = Request::new(NativeBody::empty());
            gateway.handle(request, &connection, &state.platform).await
        };
        assert_send(&future);
    }
}
