//! [`NativePlatform`]: the core's platform traits on Tokio and hyper-util.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gatehouse_core::Error;
use gatehouse_core::config::UpstreamProtocol;
use gatehouse_core::platform::{Clock, Platform, Upstream, UpstreamTarget};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::NativeBody;
use crate::counters::NativeCounters;

/// How long an idle pooled upstream connection is kept, the same as hyper-util's
/// default. An upstream that closes idle connections sooner can race with reuse, and
/// hyper-util then retries a request that failed before any of it was written.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Interval of TCP keep-alive probes on upstream connections, so a peer that vanished
/// without closing is noticed on idle pooled connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The native runtime's implementation of the core's [`Platform`].
#[derive(Debug, Default)]
pub struct NativePlatform {
    clock: NativeClock,
    upstream: NativeUpstream,
    counters: NativeCounters,
}

impl NativePlatform {
    /// Creates a platform with a fresh clock origin, empty connection pools and no
    /// shared counter stores.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a platform whose shared counter stores are `counters`.
    pub fn with_counters(counters: NativeCounters) -> Self {
        Self {
            counters,
            ..Self::default()
        }
    }
}

impl Platform for NativePlatform {
    type Body = NativeBody;
    type Clock = NativeClock;
    type Upstream = NativeUpstream;
    type Counters = NativeCounters;

    fn clock(&self) -> &NativeClock {
        &self.clock
    }

    fn upstream(&self) -> &NativeUpstream {
        &self.upstream
    }

    fn counters(&self) -> &NativeCounters {
        &self.counters
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

type UpstreamClient = Client<HttpConnector, NativeBody>;

/// The HTTP client for upstream requests: hyper-util's pooled client over plain TCP,
/// HTTP/1.1 with keep-alive or HTTP/2 with prior knowledge (h2c).
///
/// NOTE: endpoints shared by upstreams with different connect timeouts get separate
/// connection pools, one per timeout.
#[derive(Default)]
pub struct NativeUpstream {
    clients: Mutex<HashMap<ClientKey, UpstreamClient>>,
}

impl std::fmt::Debug for NativeUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clients = self.clients.lock().map_or(0, |clients| clients.len());
        f.debug_struct("NativeUpstream")
            .field("clients", &clients)
            .finish()
    }
}

impl NativeUpstream {
    fn client(&self, key: ClientKey) -> UpstreamClient {
        // A panic while the lock was held cannot leave the map half-updated, because
        // the only write is a single insert, so a poisoned lock is still usable.
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients
            .entry(key)
            .or_insert_with(|| build_client(key))
            .clone()
    }
}

fn build_client(key: ClientKey) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(key.connect_timeout));
    connector.set_keepalive(Some(TCP_KEEPALIVE));

    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if key.protocol == UpstreamProtocol::H2c {
        builder.http2_only(true);
    }
    builder.build(connector)
}

impl Upstream for NativeUpstream {
    type Body = NativeBody;

    async fn send(
        &self,
        request: Request<NativeBody>,
        target: &UpstreamTarget<'_>,
    ) -> Result<Response<NativeBody>, Error> {
        let client = self.client(ClientKey {
            protocol: target.protocol,
            connect_timeout: target.connect_timeout,
        });
        let (mut parts, body) = request.into_parts();
        parts.uri = absolute_uri(target.authority, &parts.uri).map_err(|error| {
            Error::internal(format!(
                "the address of upstream {:?} is not a valid URI authority",
                target.upstream
            ))
            .with_cause(error)
        })?;

        // The core races this call against the same deadline, so this timeout only
        // matters to callers that use the client directly.
        let sent = tokio::time::timeout(
            target.try_timeout,
            client.request(Request::from_parts(parts, body)),
        )
        .await;
        match sent {
            Ok(Ok(response)) => Ok(response.map(NativeBody::from)),
            Ok(Err(error)) => {
                let classified = classify(error, target);
                tracing::warn!(
                    upstream = target.upstream,
                    endpoint = target.authority,
                    error = classified.kind().slug(),
                    cause = %classified.cause().map(|cause| error_chain(cause)).unwrap_or_default(),
                    "upstream request failed"
                );
                Err(classified)
            }
            Err(_elapsed) => Err(Error::gateway_timeout(format!(
                "upstream {:?} did not respond within {} ms",
                target.upstream,
                target.try_timeout.as_millis()
            ))),
        }
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
    /// Sends a gateway-originated request (an absolute `http://` URI) on the pooled
    /// HTTP/1.1 client and reads at most `max_body_bytes` of the response body.
    async fn fetch_bytes(
        &self,
        request: Request<Bytes>,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Response<Bytes>, Error> {
        let client = self.client(ClientKey {
            protocol: UpstreamProtocol::Http1,
            connect_timeout: timeout,
        });
        let host = request.uri().host().unwrap_or_default().to_owned();
        let request = request.map(NativeBody::from);
        let exchange = async {
            let response = client.request(request).await.map_err(|error| {
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

/// Builds `http://{authority}{path_and_query}` from the origin-form URI the core sends.
fn absolute_uri(authority: &str, origin: &Uri) -> Result<Uri, http::Error> {
    let path_and_query = origin
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let authority = Authority::try_from(authority)?;
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
}

/// Turns a client error into the core's classification. Details name the upstream but
/// never the endpoint address, because they are sent to the client.
fn classify(error: hyper_util::client::legacy::Error, target: &UpstreamTarget<'_>) -> Error {
    let upstream = target.upstream;
    if error.is_connect() {
        // Nothing was sent on a connection that failed to open, so any method may be
        // retried on another endpoint.
        let classified = if has_io_kind(&error, io::ErrorKind::TimedOut) {
            Error::gateway_timeout(format!(
                "timed out connecting to upstream {upstream:?} after {} ms",
                target.connect_timeout.as_millis()
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
        let uri = absolute_uri("127.0.0.1:9004", &origin).expect("valid authority");
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:9004/v1/orders/7?expand=items"
        );
    }

    #[test]
    fn absolute_uri_rejects_invalid_authority() {
        let origin: Uri = "/".parse().expect("valid origin URI");
        assert!(absolute_uri("bad host:80", &origin).is_err());
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
