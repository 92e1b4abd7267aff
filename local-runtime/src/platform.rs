//! [`NativePlatform`]: the core's platform traits on Tokio and hyper-util.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gatehouse_core::cache::MemoryResponseCache;
use gatehouse_core::config::KeyValueConfig;
use gatehouse_core::config::{ServerConfig, UpstreamProtocol, UpstreamTlsConfig};
use gatehouse_core::grpc::web::WebBody;
use gatehouse_core::key_value::MemoryKeyValue;
use gatehouse_core::platform::{Clock, Platform, Upstream, UpstreamTarget};
use gatehouse_core::{Error, ErrorSource, body};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::ServerName;

use crate::body::NativeBody;
use crate::cache_store::{NativeResponseCache, RedisResponseCaches};
use crate::counters::NativeCounters;
use crate::http1_pool::{Http1Pool, SendError};

/// How long an idle pooled upstream connection is kept, the same as hyper-util's
/// default. An upstream that closes idle connections sooner can race with reuse, and
/// hyper-util then retries a request that failed before any of it was written.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Interval of TCP keep-alive probes on upstream connections, so a peer that vanished
/// without closing is noticed on idle pooled connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The native runtime's implementation of the core's [`Platform`].
#[derive(Debug)]
pub struct NativePlatform {
    clock: NativeClock,
    upstream: NativeUpstream,
    key_value: Arc<MemoryKeyValue<NativeClock>>,
    cache: Arc<MemoryResponseCache>,
    /// `cache`, as the pipeline uses it.
    memory_cache: NativeResponseCache,
    shared_caches: RedisResponseCaches,
    counters: NativeCounters,
}

impl Default for NativePlatform {
    fn default() -> Self {
        Self::with_key_value(&KeyValueConfig::default())
    }
}

impl NativePlatform {
    /// Creates a platform with a fresh clock origin, empty connection pools, an empty
    /// key-value store and response cache of the default sizes, and no shared counter
    /// stores.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a platform whose in-memory key-value store holds up to
    /// `config.memory_max_entries` entries.
    ///
    /// NOTE: the store is created once per process, so a reload that changes
    /// `memory_max_entries` takes effect only after a restart.
    pub fn with_key_value(config: &KeyValueConfig) -> Self {
        let clock = NativeClock::default();
        let cache = Arc::new(MemoryResponseCache::new(
            ServerConfig::default().cache_max_bytes,
        ));
        Self {
            clock,
            upstream: NativeUpstream::default(),
            key_value: Arc::new(MemoryKeyValue::new(clock, config.memory_max_entries)),
            memory_cache: NativeResponseCache::Memory(Arc::clone(&cache)),
            cache,
            shared_caches: RedisResponseCaches::default(),
            counters: NativeCounters::default(),
        }
    }

    /// Returns the in-memory key-value store, for loading entries at start.
    pub fn memory_key_value(&self) -> &MemoryKeyValue<NativeClock> {
        &self.key_value
    }

    /// Returns the in-memory key-value store, shared with the admin listener, which
    /// reads and writes its entries, and with `key_value` discovery.
    pub fn shared_key_value(&self) -> Arc<MemoryKeyValue<NativeClock>> {
        Arc::clone(&self.key_value)
    }

    /// Returns the response cache, for purges and metrics outside the pipeline.
    pub fn shared_response_cache(&self) -> Arc<MemoryResponseCache> {
        Arc::clone(&self.cache)
    }

    /// Sets the byte budget of the response cache to the config's
    /// `server.cache_max_bytes`, when it differs, so a reload can resize it.
    pub fn sync_cache_budget(&self, max_bytes: u64) {
        if self.cache.max_bytes() != max_bytes {
            self.cache.set_max_bytes(max_bytes);
        }
    }

    /// Returns every response cache, memory and Redis, for purges.
    pub fn all_response_caches(&self) -> Vec<NativeResponseCache> {
        let mut caches = vec![self.memory_cache.clone()];
        caches.extend(self.shared_caches.all());
        caches
    }

    /// Returns the Redis response caches.
    pub fn redis_response_caches(&self) -> &RedisResponseCaches {
        &self.shared_caches
    }

    /// Returns this platform with `caches` as the response caches of `cache` policies
    /// that name a store.
    pub fn with_response_caches(self, caches: RedisResponseCaches) -> Self {
        Self {
            shared_caches: caches,
            ..self
        }
    }

    /// Returns this platform with `counters` as its shared counter stores.
    pub fn with_counters(self, counters: NativeCounters) -> Self {
        Self { counters, ..self }
    }
}

impl Platform for NativePlatform {
    type Body = NativeBody;
    type Clock = NativeClock;
    type Upstream = NativeUpstream;
    type KeyValue = MemoryKeyValue<NativeClock>;
    type ResponseCache = NativeResponseCache;
    type Counters = NativeCounters;

    fn clock(&self) -> &NativeClock {
        &self.clock
    }

    fn response_cache(&self) -> &NativeResponseCache {
        &self.memory_cache
    }

    fn store_response_cache(&self, store: &str) -> Option<&NativeResponseCache> {
        self.shared_caches.get(store)
    }

    fn upstream(&self) -> &NativeUpstream {
        &self.upstream
    }

    fn key_value(&self) -> Option<&MemoryKeyValue<NativeClock>> {
        Some(&*self.key_value)
    }

    fn limit_body(&self, body: NativeBody, max_bytes: u64) -> NativeBody {
        NativeBody::wrap(body::Limit::new(body, max_bytes))
    }

    fn chain_body(&self, prefix: Bytes, rest: NativeBody) -> NativeBody {
        NativeBody::wrap(body::Chain::new(prefix, rest))
    }

    fn counters(&self) -> &NativeCounters {
        &self.counters
    }

    fn grpc_web_body(&self, body: WebBody<NativeBody>) -> Result<NativeBody, Error> {
        Ok(NativeBody::wrap(body))
    }

    /// The server relays upgraded connections (see [`crate::websocket`]), and the
    /// HTTP/1.1 client hands over the upstream's upgraded connection with a `101`.
    fn supports_websocket(&self) -> bool {
        true
    }

    fn random_u64(&self) -> u64 {
        fastrand::u64(..)
    }

    /// Reads the environment variable `name`. The value is never logged.
    fn secret(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Time from the operating system, with sleeps on Tokio's timer.
#[derive(Debug, Clone, Copy)]
pub struct NativeClock {
    origin: Instant,
}

impl Default for NativeClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Clock for NativeClock {
    fn unix_millis(&self) -> u64 {
        // A system clock set before 1970 reads as the epoch rather than failing.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    }

    fn unix_micros(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_micros() as u64)
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(duration)
    }
}

/// Pools are per client and each client has one connect timeout, so there is one
/// client per protocol and connect timeout in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ClientKey {
    protocol: UpstreamProtocol,
    connect_timeout: Duration,
}

type PlainClient = Client<HttpConnector, NativeBody>;
type TlsClient = Client<HttpsConnector<HttpConnector>, NativeBody>;

/// A TLS client with the settings and file stamps it was built from, so that a
/// changed CA or client certificate file builds a new client.
struct TlsClientEntry {
    key: ClientKey,
    tls: UpstreamTlsConfig,
    client: TlsClient,
    stamps: Vec<FileStamp>,
    checked_at: Instant,
}

type FileStamp = Option<(SystemTime, u64)>;

/// The HTTP client for upstream requests: hyper-util's pooled client, over plain TCP
/// (HTTP/1.1 with keep-alive, or HTTP/2 with prior knowledge) or over rustls (HTTP/1.1
/// or HTTP/2 through ALPN).
///
/// NOTE: endpoints shared by upstreams with different connect timeouts get separate
/// connection pools, one per timeout.
pub struct NativeUpstream {
    /// Plain HTTP/1.1 to endpoints with a socket address: the proxy's common case.
    http1: Http1Pool,
    clients: Mutex<HashMap<ClientKey, PlainClient>>,
    tls_clients: Mutex<Vec<TlsClientEntry>>,
}

impl Default for NativeUpstream {
    fn default() -> Self {
        Self {
            http1: Http1Pool::new(POOL_IDLE_TIMEOUT, TCP_KEEPALIVE),
            clients: Mutex::default(),
            tls_clients: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for NativeUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clients = self.clients.lock().map_or(0, |clients| clients.len());
        let tls_clients = self.tls_clients.lock().map_or(0, |clients| clients.len());
        f.debug_struct("NativeUpstream")
            .field("clients", &clients)
            .field("tls_clients", &tls_clients)
            .finish()
    }
}

impl NativeUpstream {
    /// Starts `request` on the plain client for `key`. The returned future owns what it
    /// needs, so the lock is released before it is polled, and no client is cloned.
    fn request_plain(&self, key: ClientKey, request: Request<NativeBody>) -> ResponseFuture {
        // A panic while the lock was held cannot leave the map half-updated, because
        // the only write is a single insert, so a poisoned lock is still usable.
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients
            .entry(key)
            .or_insert_with(|| build_client(key))
            .request(request)
    }

    /// Returns the TLS client for `key` and `tls`, building it when there is none yet
    /// or when one of its files changed. Files are checked at most once per
    /// [`TLS_FILE_CHECK_INTERVAL`].
    fn tls_client(
        &self,
        key: ClientKey,
        tls: &UpstreamTlsConfig,
        upstream: &str,
    ) -> Result<TlsClient, Error> {
        let mut clients = self
            .tls_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let position = clients
            .iter()
            .position(|entry| entry.key == key && entry.tls == *tls);
        if let Some(position) = position {
            let entry = &mut clients[position];
            if entry.checked_at.elapsed() < TLS_FILE_CHECK_INTERVAL {
                return Ok(entry.client.clone());
            }
            entry.checked_at = Instant::now();
            if file_stamps(tls) == entry.stamps {
                return Ok(entry.client.clone());
            }
        }

        let stamps = file_stamps(tls);
        let config = crate::tls::upstream::client_config(tls, &format!("upstreams.{upstream}.tls"))
            .map_err(|problems| {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                tracing::error!(
                    upstream,
                    ?problems,
                    "failed to load the upstream's TLS files"
                );
                Error::bad_gateway(format!(
                    "the TLS settings of upstream {upstream:?} could not be loaded"
                ))
            })?;
        let client = build_tls_client(key, tls, config)?;
        let entry = TlsClientEntry {
            key,
            tls: tls.clone(),
            client: client.clone(),
            stamps,
            checked_at: Instant::now(),
        };
        match position {
            Some(position) => {
                tracing::info!(
                    upstream,
                    "upstream TLS files changed; new connections use them"
                );
                clients[position] = entry;
            }
            None => clients.push(entry),
        }
        Ok(client)
    }
}

fn http_connector(connect_timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(TCP_KEEPALIVE));
    connector
}

fn client_builder(protocol: UpstreamProtocol) -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if protocol != UpstreamProtocol::Http1 {
        builder.http2_only(true);
    }
    builder
}

fn build_client(key: ClientKey) -> PlainClient {
    client_builder(key.protocol).build(http_connector(key.connect_timeout))
}

fn build_tls_client(
    key: ClientKey,
    tls: &UpstreamTlsConfig,
    config: rustls::ClientConfig,
) -> Result<TlsClient, Error> {
    let mut connector = http_connector(key.connect_timeout);
    // The TLS connector passes `https` URIs to this connector.
    connector.enforce_http(false);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let builder = match &tls.server_name {
        Some(name) => {
            let name = ServerName::try_from(name.clone()).map_err(|error| {
                Error::internal(format!("invalid TLS server name {name:?}")).with_cause(error)
            })?;
            builder.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let https = match key.protocol {
        UpstreamProtocol::H2 => builder.enable_http2().wrap_connector(connector),
        UpstreamProtocol::Http1 | UpstreamProtocol::H2c => {
            builder.enable_http1().wrap_connector(connector)
        }
    };
    Ok(client_builder(key.protocol).build(https))
}

/// How often a TLS client's CA and client certificate files are checked for changes.
const TLS_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

fn file_stamps(tls: &UpstreamTlsConfig) -> Vec<FileStamp> {
    tls.files()
        .map(|file| {
            let metadata = std::fs::metadata(file).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
}

impl Upstream for NativeUpstream {
    type Body = NativeBody;

    async fn send(
        &self,
        request: Request<NativeBody>,
        target: &UpstreamTarget<'_>,
    ) -> Result<Response<NativeBody>, Error> {
        if let (None, UpstreamProtocol::Http1, Some(address)) =
            (target.tls, target.protocol, target.socket_addr)
        {
            return self.send_pooled(address, request, target).await;
        }
        let key = ClientKey {
            protocol: target.protocol,
            connect_timeout: target.connect_timeout,
        };
        let (client, scheme) = match target.tls {
            Some(tls) => (
                Some(self.tls_client(key, tls, target.upstream)?),
                Scheme::HTTPS,
            ),
            None => (None, Scheme::HTTP),
        };
        let (mut parts, body) = request.into_parts();
        parts.uri = absolute_uri(scheme, target.authority, &parts.uri).map_err(|error| {
            Error::internal(format!(
                "the address of upstream {:?} is not a valid URI authority",
                target.upstream
            ))
            .with_cause(error)
        })?;

        // The gateway races this call against the attempt's deadline, so it needs no
        // timer here.
        let request = Request::from_parts(parts, body);
        let sent = match client {
            Some(client) => client.request(request).await,
            None => self.request_plain(key, request).await,
        };
        sent.map(|response| response.map(NativeBody::from))
            .map_err(|error| logged(classify(error, target), target))
    }

    async fn fetch(
        &self,
        request: Request<Bytes>,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Response<Bytes>, Error> {
        self.fetch_bytes(request, timeout, max_body_bytes).await
    }
}

impl NativeUpstream {
    /// Sends a request on the pool of plain HTTP/1.1 connections to `address`.
    async fn send_pooled(
        &self,
        address: SocketAddr,
        mut request: Request<NativeBody>,
        target: &UpstreamTarget<'_>,
    ) -> Result<Response<NativeBody>, Error> {
        // HTTP/1.1 requires `Host`; the gateway sets it unless the client sent none.
        if !request.headers().contains_key(http::header::HOST) {
            let host = HeaderValue::from_str(target.authority).map_err(|error| {
                Error::internal(format!(
                    "the address of upstream {:?} is not a valid Host header",
                    target.upstream
                ))
                .with_cause(error)
            })?;
            request.headers_mut().insert(http::header::HOST, host);
        }
        self.http1
            .send(address, target.connect_timeout, request)
            .await
            .map_err(|error| logged(classify_pooled(error, target), target))
    }

    /// Sends a gateway-originated request (an absolute `http://` URI) on the pooled
    /// HTTP/1.1 client and reads at most `max_body_bytes` of the response body.
    async fn fetch_bytes(
        &self,
        request: Request<Bytes>,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Response<Bytes>, Error> {
        let key = ClientKey {
            protocol: UpstreamProtocol::Http1,
            connect_timeout: timeout,
        };
        let host = request.uri().host().unwrap_or_default().to_owned();
        let sent = self.request_plain(key, request.map(NativeBody::from));
        let exchange = async {
            let response = sent.await.map_err(|error| {
                Error::bad_gateway(format!("could not fetch from {host:?}")).with_cause(error)
            })?;
            let (parts, body) = response.into_parts();
            let limited = http_body_util::Limited::new(body, max_body_bytes);
            let collected = limited.collect().await.map_err(|error| {
                Error::bad_gateway(format!(
                    "the response from {host:?} is larger than {max_body_bytes} bytes or broke off"
                ))
                .with_cause(error)
            })?;
            Ok::<_, Error>(Response::from_parts(parts, collected.to_bytes()))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => {
                if let Err(error) = &result {
                    tracing::warn!(
                        host = %host,
                        error = error.kind().slug(),
                        cause = %error.cause().map(|cause| error_chain(cause)).unwrap_or_default(),
                        "gateway fetch failed"
                    );
                }
                result
            }
            Err(_elapsed) => {
                tracing::warn!(host = %host, timeout_ms = timeout.as_millis() as u64, "gateway fetch timed out");
                Err(Error::gateway_timeout(format!(
                    "{host:?} did not respond within {} ms",
                    timeout.as_millis()
                )))
            }
        }
    }
}

/// Builds `{scheme}://{authority}{path_and_query}` from the origin-form URI the core
/// sends.
fn absolute_uri(scheme: Scheme, authority: &str, origin: &Uri) -> Result<Uri, http::Error> {
    let path_and_query = origin
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let authority = Authority::try_from(authority)?;
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
}

/// Turns a client error into the core's classification. Details name the upstream but
/// never the endpoint address, because they are sent to the client.
fn classify(error: hyper_util::client::legacy::Error, target: &UpstreamTarget<'_>) -> Error {
    let upstream = target.upstream;
    // The client's body passed its limit while it was being sent: the client's fault.
    if let Some(too_large) = body::too_large_in(&error) {
        return too_large.with_cause(error);
    }
    if error.is_connect() {
        // Nothing was sent on a connection that failed to open, so any method may be
        // retried on another endpoint.
        let classified = if has_io_kind(&error, io::ErrorKind::TimedOut) {
            Error::gateway_timeout(format!(
                "timed out connecting to upstream {upstream:?} after {} ms",
                target.connect_timeout.as_millis()
            ))
        } else if has_tls_error(&error) {
            Error::bad_gateway(format!(
                "the TLS handshake with upstream {upstream:?} failed"
            ))
        } else {
            Error::bad_gateway(format!("could not connect to upstream {upstream:?}"))
        };
        return classified.with_retry_safe(true).with_cause(error);
    }
    Error::bad_gateway(format!(
        "upstream {upstream:?} closed the connection or sent an invalid response"
    ))
    .with_cause(error)
}

/// Classifies a failure of the HTTP/1.1 pool the way [`classify`] does hyper-util's.
fn classify_pooled(error: SendError, target: &UpstreamTarget<'_>) -> Error {
    let upstream = target.upstream;
    match error {
        SendError::Connect(error) => {
            Error::bad_gateway(format!("could not connect to upstream {upstream:?}"))
                .with_retry_safe(true)
                .with_cause(error)
        }
        SendError::ConnectTimeout => Error::gateway_timeout(format!(
            "timed out connecting to upstream {upstream:?} after {} ms",
            target.connect_timeout.as_millis()
        ))
        .with_retry_safe(true)
        .with_cause(io::Error::from(io::ErrorKind::TimedOut)),
        SendError::Exchange { error, sent } => {
            if let Some(too_large) = body::too_large_in(&error) {
                return too_large.with_cause(error);
            }
            // A request that never left may go to another endpoint, whatever its method.
            Error::bad_gateway(format!(
                "upstream {upstream:?} closed the connection or sent an invalid response"
            ))
            .with_retry_safe(!sent)
            .with_cause(error)
        }
    }
}

/// Logs an upstream failure, unless it was the client's, which the access log records.
fn logged(error: Error, target: &UpstreamTarget<'_>) -> Error {
    if error.error_source() != ErrorSource::Client {
        tracing::warn!(
            upstream = target.upstream,
            endpoint = target.authority,
            error = error.kind().slug(),
            cause = %error.cause().map(|cause| error_chain(cause)).unwrap_or_default(),
            "upstream request failed"
        );
    }
    error
}

/// Returns whether a rustls error is in the source chain. hyper-rustls reports a
/// handshake failure as an I/O error that wraps tokio-rustls's I/O error, which wraps
/// the rustls error, and an I/O error's `source` skips the error it wraps.
fn has_tls_error(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if is_tls_error(error) {
            return true;
        }
        current = error.source();
    }
    false
}

fn is_tls_error(error: &(dyn StdError + 'static)) -> bool {
    if error.is::<rustls::Error>() {
        return true;
    }
    match error.downcast_ref::<io::Error>() {
        Some(io_error) => io_error.get_ref().is_some_and(|inner| is_tls_error(inner)),
        None => false,
    }
}

fn has_io_kind(error: &(dyn StdError + 'static), kind: io::ErrorKind) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error
            .downcast_ref::<io::Error>()
            .is_some_and(|io_error| io_error.kind() == kind)
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// Formats an error and its causes as `outer: inner: innermost`, for logs.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        current = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_uri_keeps_path_and_query() {
        let origin: Uri = "/v1/orders/7?expand=items"
            .parse()
            .expect("valid origin URI");
        let uri = absolute_uri(Scheme::HTTP, "127.0.0.1:9004", &origin).expect("valid authority");
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:9004/v1/orders/7?expand=items"
        );
    }

    #[test]
    fn absolute_uri_rejects_invalid_authority() {
        let origin: Uri = "/".parse().expect("valid origin URI");
        assert!(absolute_uri(Scheme::HTTP, "bad host:80", &origin).is_err());
    }

    #[test]
    fn io_kind_is_found_in_source_chain() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let timed_out = Wrapper(io::Error::new(io::ErrorKind::TimedOut, "connect timeout"));
        assert!(has_io_kind(&timed_out, io::ErrorKind::TimedOut));
        let refused = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(!has_io_kind(&refused, io::ErrorKind::TimedOut));
        assert_eq!(
            error_chain(&timed_out),
            "tcp connect error: connect timeout"
        );
    }

    #[test]
    fn clock_is_monotonic() {
        let clock = NativeClock::default();
        let first = clock.monotonic();
        let second = clock.monotonic();
        assert!(second >= first);
        assert!(clock.unix_millis() > 1_600_000_000_000);
    }
}
