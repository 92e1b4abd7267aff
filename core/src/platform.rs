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

use crate::config::{StoreMode, UpstreamProtocol};
use crate::error::Error;
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
    /// Maximum time to establish a connection.
    pub connect_timeout: Duration,
    /// Maximum time from sending the request to receiving the response head.
    pub try_timeout: Duration,
}

/// Sends HTTP requests to upstream endpoints.
///
/// The request URI is in origin form (path and query); the implementation connects to
/// `target.authority`. Errors must be classified: a failed connect is
/// [`crate::ErrorKind::BadGateway`] and retry-safe, an elapsed `try_timeout` is
/// [`crate::ErrorKind::GatewayTimeout`].
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
    /// creates itself, such as problem responses, are built from bytes.
    type Body: From<Bytes>;
    /// The platform's clock.
    type Clock: Clock;
    /// The platform's HTTP client.
    type Upstream: Upstream<Body = Self::Body>;
    /// The platform's shared counter stores, those of `[stores]`.
    type Counters: Counters;

    /// Returns the clock.
    fn clock(&self) -> &Self::Clock;

    /// Returns the HTTP client used for upstream requests.
    fn upstream(&self) -> &Self::Upstream;

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
}
