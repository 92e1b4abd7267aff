//! The platform of one simulated location and of one request in it.

use std::sync::Arc;

use bytes::Bytes;
use gatehouse_core::cache::MemoryResponseCache;
use gatehouse_core::config::SimulatorLimits;
use gatehouse_core::grpc::web::WebBody;
use gatehouse_core::platform::Platform;
use gatehouse_core::{Error, Gateway, body};

use super::coordinator::LocationCounters;
use super::key_value::LocationKeyValue;
use super::limits::{BudgetedUpstream, RequestBudget};
use super::report::LocationStats;
use crate::body::NativeBody;
use crate::platform::{NativeClock, NativeUpstream};

/// One simulated location: its own gateway, with its local rate-limit counters and
/// passive health state, its own response cache, and its views of the shared stores.
#[derive(Debug)]
pub struct Location {
    /// The location's name, reported as the platform location.
    pub name: String,
    /// The gateway built for this location alone.
    pub gateway: Gateway,
    /// The counters of this location's report.
    pub stats: Arc<LocationStats>,
    /// The per-request limits.
    pub limits: SimulatorLimits,
    clock: NativeClock,
    upstream: Arc<NativeUpstream>,
    cache: MemoryResponseCache,
    key_value: LocationKeyValue,
    counters: LocationCounters,
}

impl Location {
    /// Assembles a location from its parts.
    #[allow(
        clippy::too_many_arguments,
        reason = "each part is built by the simulator"
    )]
    pub fn new(
        name: String,
        gateway: Gateway,
        stats: Arc<LocationStats>,
        limits: SimulatorLimits,
        clock: NativeClock,
        upstream: Arc<NativeUpstream>,
        key_value: LocationKeyValue,
        counters: LocationCounters,
    ) -> Self {
        let cache = MemoryResponseCache::new(gateway.config().server.cache_max_bytes);
        Self {
            name,
            gateway,
            stats,
            limits,
            clock,
            upstream,
            cache,
            key_value,
            counters,
        }
    }

    /// Returns this location's view of the shared key-value store.
    pub fn key_value(&self) -> &LocationKeyValue {
        &self.key_value
    }
}

/// The platform one request runs on: its location's state, and an HTTP client that
/// counts the request's subrequests and connections.
#[derive(Debug)]
pub struct RequestPlatform {
    location: Arc<Location>,
    upstream: BudgetedUpstream,
}

impl RequestPlatform {
    /// Creates the platform of one request in `location` with `budget`.
    pub fn new(location: Arc<Location>, budget: Arc<RequestBudget>) -> Self {
        let upstream = BudgetedUpstream::new(Arc::clone(&location.upstream), budget);
        Self { location, upstream }
    }
}

impl Platform for RequestPlatform {
    type Body = NativeBody;
    type Clock = NativeClock;
    type Upstream = BudgetedUpstream;
    type KeyValue = LocationKeyValue;
    type ResponseCache = MemoryResponseCache;
    type Counters = LocationCounters;

    fn clock(&self) -> &NativeClock {
        &self.location.clock
    }

    fn upstream(&self) -> &BudgetedUpstream {
        &self.upstream
    }

    fn limit_body(&self, body: NativeBody, max_bytes: u64) -> NativeBody {
        NativeBody::wrap(body::Limit::new(body, max_bytes))
    }

    fn chain_body(&self, prefix: Bytes, rest: NativeBody) -> NativeBody {
        NativeBody::wrap(body::Chain::new(prefix, rest))
    }

    fn grpc_web_body(&self, body: WebBody<NativeBody>) -> Result<NativeBody, Error> {
        Ok(NativeBody::wrap(body))
    }

    fn response_cache(&self) -> &MemoryResponseCache {
        &self.location.cache
    }

    /// Keeps the responses of policies that name a Redis store in the location's
    /// memory cache, as the simulator ignores Redis URLs.
    fn store_response_cache(&self, _store: &str) -> Option<&MemoryResponseCache> {
        Some(&self.location.cache)
    }

    fn counters(&self) -> &LocationCounters {
        &self.location.counters
    }

    fn random_u64(&self) -> u64 {
        fastrand::u64(..)
    }

    /// Reads the environment variable `name`, as `gatehouse run` does. The value is
    /// never logged.
    fn secret(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn location(&self) -> Option<&str> {
        Some(&self.location.name)
    }

    /// Returns `false`, as the Worker does, so concurrent cache misses of one key
    /// each go to the upstream instead of waiting for one fetch, as they do on
    /// Workers.
    fn wakes_across_requests(&self) -> bool {
        false
    }

    fn key_value(&self) -> Option<&LocationKeyValue> {
        Some(&self.location.key_value)
    }
}
