//! The counter coordinator: one owner of every shared counter, placed in one
//! location, like a Durable Object. It decides the `redis` and `durable_object` stores
//! of the config for every location.
//!
//! Decisions run at the owner one at a time per key (the core's
//! [`MemoryCounters`] decides each key under a lock), so a limit is exact across
//! locations in both store modes. Calls from other locations wait the configured
//! round-trip latency, half before the decision and half after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_core::config::StoreConfig;
use gatehouse_core::limit::{Decision, MemoryCounters};
use gatehouse_core::platform::{CounterRequest, Counters};
use gatehouse_core::{Error, ErrorKind, ErrorSource};

use super::report::LocationStats;

/// The owner of the shared counters.
#[derive(Debug)]
pub struct Coordinator {
    location: usize,
    latency: Duration,
    counters: MemoryCounters,
    /// The store names of the config, with their type.
    stores: BTreeMap<String, &'static str>,
}

impl Coordinator {
    /// Creates the coordinator owned by location index `location`, deciding the
    /// stores of `stores` and keeping up to `max_keys` counters.
    pub fn new(
        location: usize,
        latency: Duration,
        stores: &BTreeMap<String, StoreConfig>,
        max_keys: usize,
    ) -> Self {
        Self {
            location,
            latency,
            counters: MemoryCounters::new(max_keys),
            stores: stores
                .iter()
                .map(|(name, store)| (name.clone(), store.kind()))
                .collect(),
        }
    }

    /// Returns the index of the owning location.
    pub fn location(&self) -> usize {
        self.location
    }

    /// Returns the round-trip latency added to calls from other locations.
    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// Decides `request` for a caller in location `caller`.
    async fn decide(&self, caller: usize, request: &CounterRequest<'_>) -> Result<Decision, Error> {
        if !self.stores.contains_key(request.store) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                ErrorSource::Platform,
                "the rate-limit store is not available",
            )
            .with_cause(format!("store {:?} is not in [stores]", request.store)));
        }
        let remote = caller != self.location;
        if remote {
            tokio::time::sleep(self.latency / 2).await;
        }
        // The owner decides at its own clock, as a Durable Object does.
        let now_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_micros() as u64);
        let decision = self
            .counters
            .decide(request.key, request.limit, request.cost, now_micros);
        if remote {
            tokio::time::sleep(self.latency - self.latency / 2).await;
        }
        Ok(decision)
    }
}

/// The coordinator as one location calls it: the platform's [`Counters`].
#[derive(Debug, Clone)]
pub struct LocationCounters {
    location: usize,
    coordinator: Arc<Coordinator>,
    stats: Arc<LocationStats>,
}

impl LocationCounters {
    /// Creates the counters of location index `location`, which records into `stats`.
    pub fn new(location: usize, coordinator: Arc<Coordinator>, stats: Arc<LocationStats>) -> Self {
        Self {
            location,
            coordinator,
            stats,
        }
    }
}

impl Counters for LocationCounters {
    /// Decides at the coordinator within the request's store timeout. A call that
    /// takes longer fails, as a slow Durable Object call does, so the policy's
    /// `on_store_error` applies.
    async fn decide(&self, request: &CounterRequest<'_>) -> Result<Decision, Error> {
        self.stats.coordinator_calls.fetch_add(1, Ordering::Relaxed);
        let call = self.coordinator.decide(self.location, request);
        match tokio::time::timeout(request.timeout, call).await {
            Ok(decision) => decision,
            Err(_elapsed) => Err(Error::new(
                ErrorKind::Unavailable,
                ErrorSource::Platform,
                "the rate-limit store timed out",
            )
            .with_cause(format!(
                "the coordinator of store {:?} did not decide within {} ms; its \
                 latency is {} ms",
                request.store,
                request.timeout.as_millis(),
                self.coordinator.latency.as_millis()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_core::config::{DurableObjectStoreConfig, StoreMode};
    use gatehouse_core::limit::{GcraLimit, Limit};

    use super::*;

    fn coordinator(latency: Duration) -> Arc<Coordinator> {
        let store: StoreConfig = StoreConfig::DurableObject(
            serde_json::from_str::<DurableObjectStoreConfig>("{}").expect("defaults"),
        );
        let stores = BTreeMap::from([("shared".to_owned(), store)]);
        Arc::new(Coordinator::new(0, latency, &stores, 100))
    }

    fn request<'a>(store: &'a str, limit: &'a Limit, timeout: Duration) -> CounterRequest<'a> {
        CounterRequest {
            store,
            key: "policy:key",
            limit,
            cost: 1,
            mode: StoreMode::Strict,
            timeout,
            now_unix_micros: 0,
        }
    }

    #[tokio::test]
    async fn remote_call_past_timeout_fails() {
        let coordinator = coordinator(Duration::from_millis(200));
        let limit = Limit::Gcra(GcraLimit::new(5, Duration::from_secs(60), 5).expect("valid"));
        let remote = LocationCounters::new(1, Arc::clone(&coordinator), Arc::default());
        let error = remote
            .decide(&request("shared", &limit, Duration::from_millis(20)))
            .await
            .expect_err("the latency is over the timeout");
        assert_eq!(error.kind(), ErrorKind::Unavailable);

        // The owner's own location pays no latency, so the same timeout is enough.
        let local = LocationCounters::new(0, coordinator, Arc::default());
        let decision = local
            .decide(&request("shared", &limit, Duration::from_millis(20)))
            .await
            .expect("a local call within the timeout");
        assert!(decision.allowed);
    }

    #[tokio::test]
    async fn unknown_store_is_unavailable() {
        let coordinator = coordinator(Duration::ZERO);
        let limit = Limit::Gcra(GcraLimit::new(5, Duration::from_secs(60), 5).expect("valid"));
        let counters = LocationCounters::new(0, coordinator, Arc::default());
        let error = counters
            .decide(&request("missing", &limit, Duration::from_secs(1)))
            .await
            .expect_err("the store is not configured");
        assert_eq!(error.kind(), ErrorKind::Unavailable);
    }

    #[tokio::test]
    async fn limit_is_shared_by_locations() {
        let coordinator = coordinator(Duration::ZERO);
        let limit = Limit::Gcra(GcraLimit::new(3, Duration::from_secs(3600), 3).expect("valid"));
        let mut allowed = 0;
        for location in 0..3 {
            let counters =
                LocationCounters::new(location, Arc::clone(&coordinator), Arc::default());
            for _ in 0..2 {
                let decision = counters
                    .decide(&request("shared", &limit, Duration::from_secs(1)))
                    .await
                    .expect("a decision");
                allowed += u32::from(decision.allowed);
            }
        }
        assert_eq!(allowed, 3);
    }
}
