//! HTTP response caching for `cache` policies: the stored entry, the rules of RFC 9111
//! that decide what is stored and for how long ([`control`]), cache keys ([`key`]),
//! a memory store ([`MemoryResponseCache`]) and the lock that lets one request fill
//! an entry while concurrent requests for it wait ([`coalesce`]).
//!
//! The pipeline phase that uses them is in the gateway module; the store itself is
//! [`crate::platform::ResponseCache`], provided by each platform.

pub mod coalesce;
pub mod control;
pub mod encode;
pub mod key;
mod memory;
pub(crate) mod policy;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};

pub use memory::{CacheStats, MemoryResponseCache};
pub(crate) use policy::CachePolicy;

/// What a cache store keeps under one key.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheEntry {
    /// A complete response.
    Response(CachedResponse),
    /// A marker stored at a key without request header values: responses for it vary
    /// on these request headers, and each variant is stored under the key extended by
    /// the request's values of them ([`key::variant_key`]).
    Variants(Vec<HeaderName>),
}

impl CacheEntry {
    /// Returns an estimate of the memory the entry takes, in bytes, for byte budgets.
    pub fn size_bytes(&self) -> u64 {
        match self {
            Self::Response(response) => response.size_bytes(),
            Self::Variants(names) => names
                .iter()
                .map(|name| name.as_str().len() as u64 + 16)
                .sum(),
        }
    }
}

/// A stored response and the times that decide its freshness.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedResponse {
    /// Response status.
    pub status: StatusCode,
    /// Response headers as sent to the client, without hop-by-hop headers.
    pub headers: HeaderMap,
    /// The whole response body.
    pub body: Bytes,
    /// Wall-clock time the response was received, milliseconds since the Unix epoch.
    pub response_unix_ms: u64,
    /// Age of the response when it was received, from its `Age` header, in seconds.
    pub initial_age_secs: u64,
    /// Freshness lifetime.
    pub fresh_for: Duration,
    /// Time after expiry during which the response may be served while it is
    /// revalidated in the background (`stale-while-revalidate`).
    pub stale_while_revalidate: Duration,
    /// Time after expiry during which the response may be served when the upstream
    /// fails (`stale-if-error`).
    pub stale_if_error: Duration,
    /// Whether the response must never be served stale (`must-revalidate`,
    /// `proxy-revalidate`) and must be revalidated whenever used (`no-cache`).
    pub no_stale: bool,
    /// Whether the response must be revalidated before every use (`no-cache`).
    pub always_revalidate: bool,
}

impl CachedResponse {
    /// Returns the estimated memory the response takes, in bytes.
    pub fn size_bytes(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        (self.body.len() + headers + 128) as u64
    }

    /// Returns the current age (RFC 9111 section 4.2.3) at `now_unix_ms`.
    pub fn age(&self, now_unix_ms: u64) -> Duration {
        let resident = now_unix_ms.saturating_sub(self.response_unix_ms);
        Duration::from_secs(self.initial_age_secs) + Duration::from_millis(resident)
    }

    /// Returns how long past its freshness lifetime the response is at `now_unix_ms`,
    /// or `None` while it is fresh.
    pub fn staleness(&self, now_unix_ms: u64) -> Option<Duration> {
        let age = self.age(now_unix_ms);
        if age < self.fresh_for && !self.always_revalidate {
            None
        } else {
            Some(age.saturating_sub(self.fresh_for))
        }
    }

    /// Returns the validators a conditional request can send: the `ETag` and the
    /// `Last-Modified` value.
    pub fn validators(&self) -> (Option<&http::HeaderValue>, Option<&http::HeaderValue>) {
        (
            self.headers.get(http::header::ETAG),
            self.headers.get(http::header::LAST_MODIFIED),
        )
    }

    /// Returns whether the response has a validator to revalidate it with.
    pub fn has_validator(&self) -> bool {
        let (etag, last_modified) = self.validators();
        etag.is_some() || last_modified.is_some()
    }
}

/// The outcome of a cached route's request, sent in the cache status header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from a fresh stored response.
    Hit,
    /// Sent upstream: nothing usable was stored.
    Miss,
    /// Served from a stale stored response, while it is revalidated in the background
    /// or because the upstream failed.
    Stale,
    /// Not eligible for caching: another method, `no-store` in the request, or
    /// credentials on a route that does not cache authenticated requests.
    Bypass,
    /// Served from a stored response that the upstream confirmed with 304.
    Revalidated,
}

impl CacheStatus {
    /// Returns the header value and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
            Self::Revalidated => "revalidated",
        }
    }
}
