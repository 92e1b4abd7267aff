//! The seam between the core and the runtime it runs on.
//!
//! The core reaches the outside world only through these traits. The native runtime,
//! the Cloudflare Worker and the Spin component each implement them once. Futures
//! returned here are not required to be `Send`, because Workers and Spin components
//! are single-threaded. The native runtime uses concrete types, so its futures are
//! `Send` when its implementations are.

#![allow(
    async_fn_in_trait,
    reason = "implementations choose whether their futures are Send"
)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::cache::CacheEntry;
use crate::config::{StoreMode, UpstreamProtocol, UpstreamTlsConfig};
use crate::error::{BoxError, Error};
use crate::grpc::web::WebBody;
use crate::limit::{Decision, Limit, MemoryCounters};

/// Wall-clock and monotonic time. All time in the core comes from here, so tests can
/// drive time by hand instead of sleeping.
pub trait Clock {
    /// Returns milliseconds since the Unix epoch.
    fn unix_millis(&self) -> u64;

    /// Returns the time elapsed since a fixed, arbitrary origin. Never goes backwards.
    fn monotonic(&self) -> Duration;

    /// Returns microseconds since the Unix epoch. The default has the resolution of
    /// [`Clock::unix_millis`]; clocks that can read microseconds override it.
    fn unix_micros(&self) -> u64 {
        self.unix_millis().saturating_mul(1_000)
    }

    /// Waits for `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()>;
}

/// One rate-limit or quota decision, as a counter store receives it.
#[derive(Debug, Clone, Copy)]
pub struct CounterRequest<'a> {
    /// The store's name in `[stores]`.
    pub store: &'a str,
    /// The counter key. It starts with the policy's name, so policies never share a
    /// counter.
    pub key: &'a str,
    /// The algorithm and its parameters.
    pub limit: &'a Limit,
    /// Units this request costs.
    pub cost: u64,
    /// Whether the store must answer from its global state (`Strict`) or may answer
    /// from a local tier and reconcile later (`Async`).
    pub mode: StoreMode,
    /// Maximum time the decision may take; past it, the store returns an error.
    pub timeout: Duration,
    /// The gateway's clock, in Unix microseconds. Stores that keep their own clock
    /// (Redis reads `TIME`, a Durable Object its own clock) ignore it, so the clocks of
    /// gateway hosts never have to agree.
    pub now_unix_micros: u64,
}

/// A store of rate-limit and quota counters, shared by gateway instances.
///
/// Each call decides one request atomically: the store reads the key's state, applies
/// [`Limit`]'s algorithm at its own clock, stores the new state when the request is
/// admitted, and returns the [`Decision`]. A Redis store runs one server-side script
/// per call; a Durable Object store sends the call to the one object of the key.
/// Errors (unreachable store, timeout) are returned as [`crate::ErrorKind::Unavailable`];
/// the policy then applies its `on_store_error` setting.
pub trait Counters {
    /// Decides `request` against the counter of `request.key`.
    async fn decide(&self, request: &CounterRequest<'_>) -> Result<Decision, Error>;
}

/// The process-local store decides at the gateway's clock, exactly, in every mode.
impl Counters for MemoryCounters {
    async fn decide(&self, request: &CounterRequest<'_>) -> Result<Decision, Error> {
        Ok(MemoryCounters::decide(
            self,
            request.key,
            request.limit,
            request.cost,
            request.now_unix_micros,
        ))
    }
}

/// The counter stores of a platform with no shared store: every named store is
/// unavailable. Policies without `store` still use the gateway's memory store.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSharedStores;

impl Counters for NoSharedStores {
    async fn decide(&self, request: &CounterRequest<'_>) -> Result<Decision, Error> {
        Err(Error::new(
            crate::ErrorKind::Unavailable,
            crate::ErrorSource::Platform,
            "this platform has no shared counter store",
        )
        .with_cause(format!("store {:?} is not available", request.store)))
    }
}

/// Where and how one upstream attempt is sent.
#[derive(Debug, Clone)]
pub struct UpstreamTarget<'a> {
    /// The upstream's name in the config, for logs and pooling.
    pub upstream: &'a str,
    /// The endpoint address as configured, `host:port`.
    pub authority: &'a str,
    /// The endpoint address when it is an IP literal, which saves a DNS lookup.
    pub socket_addr: Option<SocketAddr>,
    /// The protocol spoken to the endpoint.
    pub protocol: UpstreamProtocol,
    /// TLS to the endpoint; cleartext when `None`. Platforms that cannot apply a
    /// setting in it must fail with [`crate::ErrorKind::NotImplemented`] rather than
    /// send the request in cleartext.
    pub tls: Option<&'a UpstreamTlsConfig>,
    /// Maximum time to establish a connection.
    pub connect_timeout: Duration,
    /// Maximum time from sending the request to receiving the response head.
    pub try_timeout: Duration,
}

/// Sends HTTP requests to upstream endpoints.
///
/// The request URI is in origin form (path and query); the implementation connects to
/// `target.authority`. Errors must be classified: a failed connect is
/// [`crate::ErrorKind::BadGateway`] and retry-safe, and a request body that failed with
/// [`crate::body::BodyTooLarge`] is the client's [`crate::ErrorKind::PayloadTooLarge`]
/// (found with [`crate::body::too_large_in`]), not retry-safe. The gateway races each
/// call against `try_timeout` and the request's total deadline, and returns 504 itself
/// when time runs out, so an implementation needs no timer of its own for them.
pub trait Upstream {
    /// The body type of requests and responses on this platform.
    type Body;

    /// Sends `request` to the endpoint named in `target` and returns the response head
    /// with its body still streaming.
    async fn send(
        &self,
        request: http::Request<Self::Body>,
        target: &UpstreamTarget<'_>,
    ) -> Result<http::Response<Self::Body>, Error>;

    /// Sends a request the gateway makes on its own behalf, such as fetching a JWKS
    /// document, and reads the whole response body, up to `max_body_bytes`.
    ///
    /// `request` has an absolute URI (`http://host:port/path`); a larger body fails
    /// with [`crate::ErrorKind::BadGateway`]. Platforms that cannot make such requests
    /// keep this default, which fails with [`crate::ErrorKind::NotImplemented`].
    async fn fetch(
        &self,
        request: http::Request<Bytes>,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<http::Response<Bytes>, Error> {
        let _ = (request, timeout, max_body_bytes);
        Err(Error::new(
            crate::ErrorKind::NotImplemented,
            crate::ErrorSource::Platform,
            "this platform cannot send requests on the gateway's own behalf",
        ))
    }
}

/// Everything a runtime provides to the pipeline.
pub trait Platform {
    /// The body type of requests and responses on this platform. Bodies the gateway
    /// creates itself, such as problem responses, are built from bytes; bodies the
    /// gateway inspects are read through [`http_body::Body`].
    type Body: From<Bytes> + http_body::Body<Data = Bytes, Error = BoxError> + Unpin;
    /// The platform's clock.
    type Clock: Clock;
    /// The platform's HTTP client.
    type Upstream: Upstream<Body = Self::Body>;
    /// The platform's key-value store; [`NoKeyValue`] on a platform without one.
    type KeyValue: KeyValue;
    /// The store of cached responses.
    type ResponseCache: ResponseCache;
    /// The platform's shared counter stores, those of `[stores]`.
    type Counters: Counters;

    /// Returns the clock.
    fn clock(&self) -> &Self::Clock;

    /// Returns the HTTP client used for upstream requests.
    fn upstream(&self) -> &Self::Upstream;

    /// Wraps `body` so that it fails with [`crate::body::BodyTooLarge`] once more than
    /// `max_bytes` have streamed through it. [`crate::body::Limit`] does this for any
    /// body; the platform boxes it into its own body type. A platform that holds
    /// bodies in memory may instead fail at once, when the body is read or sent.
    fn limit_body(&self, body: Self::Body, max_bytes: u64) -> Self::Body;

    /// Returns a body that yields `prefix` and then `rest`, to give back a body that
    /// was partly read. [`crate::body::Chain`] does this for any body.
    fn chain_body(&self, prefix: Bytes, rest: Self::Body) -> Self::Body;

    /// Boxes a gRPC-Web translation of `body` into the platform's body type, like
    /// [`Platform::limit_body`]. Platforms that keep this default cannot translate
    /// gRPC-Web, and requests that need it fail with
    /// [`crate::ErrorKind::NotImplemented`].
    fn grpc_web_body(&self, body: WebBody<Self::Body>) -> Result<Self::Body, Error> {
        let _ = body;
        Err(Error::new(
            crate::ErrorKind::NotImplemented,
            crate::ErrorSource::Platform,
            "this platform cannot translate gRPC-Web requests",
        ))
    }

    /// Returns whether the platform relays WebSocket connections: whether its
    /// [`Upstream`] passes an upgrade request on with its `Upgrade` header, and its
    /// server then joins the two upgraded connections after a 101 from the upstream.
    /// Platforms that keep this default answer WebSocket upgrades on routes with
    /// `websocket` with [`crate::ErrorKind::NotImplemented`].
    fn supports_websocket(&self) -> bool {
        false
    }

    /// Returns the store that `cache` policies without a `store` keep responses in.
    fn response_cache(&self) -> &Self::ResponseCache;

    /// Returns the response store kept in the `[stores]` entry named `store`, for
    /// `cache` policies that name it, or `None` when the platform has no such store.
    /// Requests of a policy whose store is missing pass through uncached.
    fn store_response_cache(&self, store: &str) -> Option<&Self::ResponseCache> {
        let _ = store;
        None
    }
    /// Returns the shared counter stores. Every request names its store in
    /// [`CounterRequest::store`].
    fn counters(&self) -> &Self::Counters;

    /// Returns a random number, used by balancers and for request ids. It need not be
    /// cryptographically strong.
    fn random_u64(&self) -> u64;

    /// Returns the secret named `name` (an environment variable natively, a Worker
    /// secret or a Spin variable on the edge), or `None` when it is not set.
    /// Secrets are never logged and never sent to clients.
    fn secret(&self, name: &str) -> Option<String> {
        let _ = name;
        None
    }

    /// Returns the location the platform runs this gateway in, such as an edge data
    /// center, or `None` to use `server.zone`. `server.location_zones` maps it to a
    /// zone; upstreams prefer endpoints of the same zone.
    fn location(&self) -> Option<&str> {
        None
    }

    /// Returns whether a request may wait for another request of the same process or
    /// isolate, such as a cache miss waiting for a concurrent fetch of its key. The
    /// Workers runtime returns `false`: there, a request woken by another request's
    /// completion runs in that request's context, and the runtime cancels it as hung.
    fn wakes_across_requests(&self) -> bool {
        true
    }

    /// Returns the key-value store, or `None` when this platform or deployment has
    /// none. Policies that need a store then fail with
    /// [`crate::ErrorKind::NotImplemented`].
    fn key_value(&self) -> Option<&Self::KeyValue> {
        None
    }
}

// ---------------------------------------------------------------------------------
// KeyValue

/// A key-value store shared by every request of a deployment: memory in the native
/// process, Workers KV on Cloudflare, Spin key-value on Spin.
///
/// Values are bytes. A failure of the store itself (unreachable, rejected, timed out)
/// is [`crate::ErrorKind::Unavailable`] from [`crate::ErrorSource::Platform`], a 503:
/// the client did nothing wrong. See [`crate::key_value::store_failed`].
///
/// Consistency follows the platform: Workers KV is eventually consistent, so a write
/// can take up to a minute to reach other locations.
pub trait KeyValue {
    /// Returns the value stored under `key`, or `None` when there is none or it
    /// expired.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error>;

    /// Stores `value` under `key`, replacing any earlier value. With `ttl`, the entry
    /// expires after that time. Workers KV does not accept a TTL under 60 seconds, so
    /// shorter ones are raised to 60 seconds there.
    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), Error>;

    /// Removes `key`. Removing a key that does not exist succeeds.
    async fn delete(&self, key: &str) -> Result<(), Error>;
}

/// The key-value store of a platform that has none: every operation fails with
/// [`crate::ErrorKind::NotImplemented`]. Platforms using it return `None` from
/// [`Platform::key_value`], so the pipeline never calls it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKeyValue;

impl NoKeyValue {
    fn unsupported() -> Error {
        Error::new(
            crate::ErrorKind::NotImplemented,
            crate::ErrorSource::Platform,
            "this platform has no key-value store",
        )
    }
}

impl KeyValue for NoKeyValue {
    async fn get(&self, _key: &str) -> Result<Option<Bytes>, Error> {
        Err(Self::unsupported())
    }

    async fn put(&self, _key: &str, _value: Bytes, _ttl: Option<Duration>) -> Result<(), Error> {
        Err(Self::unsupported())
    }

    async fn delete(&self, _key: &str) -> Result<(), Error> {
        Err(Self::unsupported())
    }
}

/// A store of HTTP responses for `cache` policies: a memory LRU per process or
/// isolate, or a shared store such as Redis, the Cloudflare Cache API or Spin
/// key-value.
///
/// Keys are built by the core: they start with the host and path, so purging by
/// prefix removes a site or a subtree. Expiry times are passed in rather than read
/// from a clock, because the core's time comes only from [`Clock`]. Store failures
/// are errors for the core to log; a request then proceeds as if the cache missed.
pub trait ResponseCache {
    /// Returns the entry stored under `key`, or `None` when there is none or it
    /// expired by `now_unix_ms`.
    async fn lookup(&self, key: &str, now_unix_ms: u64) -> Result<Option<CacheEntry>, Error>;

    /// Stores `entry` under `key`, replacing any entry there, until `ttl` after
    /// `now_unix_ms`. A store may decline an entry, such as one larger than its whole
    /// budget, without an error.
    async fn store(
        &self,
        key: &str,
        entry: CacheEntry,
        now_unix_ms: u64,
        ttl: Duration,
    ) -> Result<(), Error>;

    /// Removes the entry stored under `key`, returning whether there was one.
    async fn delete(&self, key: &str) -> Result<bool, Error>;

    /// Removes every entry whose key starts with `prefix`, returning how many.
    async fn purge_prefix(&self, prefix: &str) -> Result<u64, Error>;
}
