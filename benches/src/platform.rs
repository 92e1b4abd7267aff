//! A platform for benchmarks of the whole pipeline in one thread: the system clock, an
//! upstream that answers at once from memory, and secrets from a map.
//!
//! With no sockets and no runtime, a benchmark over it measures the gateway's own work
//! per request: routing, policies and response preparation.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gatehouse_core::body::{Chain, Limit, LocalBody};
use gatehouse_core::cache::MemoryResponseCache;
use gatehouse_core::error::Error;
use gatehouse_core::platform::{
    Clock, NoKeyValue, NoSharedStores, Platform, Upstream, UpstreamTarget,
};
use gatehouse_core::{ConnectionInfo, Gateway};
use http::{Request, Response, StatusCode};

/// The system clock. Sleeps never finish: nothing in a benchmarked request waits, and a
/// timeout raced against the upstream must never win.
#[derive(Debug)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    }

    fn monotonic(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }

    async fn sleep(&self, _duration: Duration) {
        futures::future::pending::<()>().await;
    }
}

/// An upstream that answers every request with an empty 200.
#[derive(Debug)]
pub struct InstantUpstream;

impl Upstream for InstantUpstream {
    type Body = LocalBody;

    async fn send(
        &self,
        _request: Request<LocalBody>,
        _target: &UpstreamTarget<'_>,
    ) -> Result<Response<LocalBody>, Error> {
        Ok(Response::new(LocalBody::from(Bytes::new())))
    }

    async fn fetch(
        &self,
        _request: Request<Bytes>,
        _timeout: Duration,
        _max_body_bytes: usize,
    ) -> Result<Response<Bytes>, Error> {
        Err(Error::bad_gateway("benchmarks fetch nothing"))
    }
}

/// The benchmark platform.
pub struct BenchPlatform {
    clock: SystemClock,
    upstream: InstantUpstream,
    cache: MemoryResponseCache,
    secrets: BTreeMap<String, String>,
}

// Written by hand so that the secrets' values are never printed.
impl std::fmt::Debug for BenchPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchPlatform")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl BenchPlatform {
    /// Creates a platform with the given secrets, as `(name, value)`.
    pub fn new(secrets: &[(&str, &str)]) -> Self {
        Self {
            clock: SystemClock,
            upstream: InstantUpstream,
            cache: MemoryResponseCache::new(1 << 20),
            secrets: secrets
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }
}

impl Platform for BenchPlatform {
    type Body = LocalBody;
    type Clock = SystemClock;
    type Upstream = InstantUpstream;
    type KeyValue = NoKeyValue;
    type ResponseCache = MemoryResponseCache;
    type Counters = NoSharedStores;

    fn clock(&self) -> &SystemClock {
        &self.clock
    }

    fn upstream(&self) -> &InstantUpstream {
        &self.upstream
    }

    fn limit_body(&self, body: LocalBody, max_bytes: u64) -> LocalBody {
        LocalBody::boxed(Limit::new(body, max_bytes))
    }

    fn chain_body(&self, prefix: Bytes, rest: LocalBody) -> LocalBody {
        LocalBody::boxed(Chain::new(prefix, rest))
    }

    fn response_cache(&self) -> &MemoryResponseCache {
        &self.cache
    }

    fn counters(&self) -> &NoSharedStores {
        &NoSharedStores
    }

    fn random_u64(&self) -> u64 {
        4
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).cloned()
    }
}

/// Sends `request` through `gateway` on `platform` and returns the status, after the
/// background work of the request ran.
pub fn run(gateway: &Gateway, platform: &BenchPlatform, request: Request<LocalBody>) -> StatusCode {
    let connection = ConnectionInfo {
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        secure: false,
    };
    futures::executor::block_on(async {
        let handled = gateway.handle(request, &connection, platform).await;
        if let Some(task) = handled.background {
            gateway.run_background(task, platform).await;
        }
        handled.response.status()
    })
}
