//! The counter coordinator: one owner of every shared counter, placed in one
//! location, like a Durable Object. It decides the `redis` and `durable_object` stores
//! of the config for every location.
//!
//! Each location reaches it through the native runtime's local tier
//! ([`TieredStore`]), as a gateway reaches Redis: in `strict` mode every admission
//! waits for the coordinator, so a limit is exact across locations; in `async` mode a
//! location admits from the coordinator's last decision and the call runs in the
//! background, so the limit can be exceeded by what the locations admit before the
//! coordinator's rejections reach them. Decisions run at the owner one at a time per
//! key (the core's [`MemoryCounters`] decides each key under a lock). Calls from other
//! locations wait the configured round-trip latency, half before the decision and half
//! after it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_core::config::StoreConfig;
use gatehouse_core::limit::{Decision, MemoryCounters};
use gatehouse_core::platform::{CounterRequest, Counters};
use gatehouse_core::{Error, ErrorKind, ErrorSource};

use super::report::LocationStats;
use super::tally::LimitTally;
use crate::counters::{StoreCall, TieredStore};

/// The owner of the shared counters.
#[derive(Debug)]
pub struct Coordinator {
    location: usize,
    latency: Duration,
    counters: MemoryCounters,
    /// The `async_max_in_flight` of each store of the config; 1 for stores that
    /// allow only `strict` mode.
    max_in_flight: BTreeMap<String, u32>,
    tally: Arc<LimitTally>,
}

impl Coordinator {
    /// Creates the coordinator owned by location index `location`, deciding the
    /// stores of `stores`, keeping up to `max_keys` counters and counting its
    /// decisions in `tally`.
    pub fn new(
        location: usize,
        latency: Duration,
        stores: &BTreeMap<String, StoreConfig>,
        max_keys: usize,
        tally: Arc<LimitTally>,
    ) -> Self {
        Self {
            location,
            latency,
            counters: MemoryCounters::new(max_keys),
            max_in_flight: stores
                .iter()
                .map(|(name, store)| {
                    let max_in_flight = match store {
                        StoreConfig::Redis(redis) => redis.async_max_in_flight.max(1),
                        StoreConfig::DurableObject(_) => 1,
                    };
                    (name.clone(), max_in_flight)
                })
                .collect(),
            tally,
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

    /// Returns the `async_max_in_flight` of each store.
    pub fn max_in_flight(&self) -> &BTreeMap<String, u32> {
        &self.max_in_flight
    }

    /// Returns the admissions per shared key.
    pub fn tally(&self) -> &LimitTally {
        &self.tally
    }

    /// Decides `request` for a caller in location `caller`.
    async fn decide(&self, caller: usize, request: &CounterRequest<'_>) -> Decision {
        self.tally.record_call(request);
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
        self.tally.record_decided(request, decision.allowed);
        if remote {
            tokio::time::sleep(self.latency - self.latency / 2).await;
        }
        decision
    }
}

/// The coordinator as the local tier of one location calls it.
#[derive(Debug)]
pub struct CoordinatorCall {
    location: usize,
    coordinator: Arc<Coordinator>,
    stats: Arc<LocationStats>,
}

impl StoreCall for CoordinatorCall {
    /// Decides at the coordinator within the request's store timeout. A call that
    /// takes longer fails, as a slow Redis or Durable Object call does, so the
    /// policy's `on_store_error` applies. The coordinator still decides a call that
    /// timed out, as a store still runs a call it received, so a timeout can only
    /// make a limit admit fewer requests.
    async fn call(&self, request: &CounterRequest<'_>) -> Result<Decision, Error> {
        self.stats.coordinator_calls.fetch_add(1, Ordering::Relaxed);
        let coordinator = Arc::clone(&self.coordinator);
        let caller = self.location;
        let (store, key, limit) = (
            request.store.to_owned(),
            request.key.to_owned(),
            *request.limit,
        );
        let (cost, mode, now) = (request.cost, request.mode, request.now_unix_micros);
        let timeout = request.timeout;
        let call = tokio::spawn(async move {
            let request = CounterRequest {
                store: &store,
                key: &key,
                limit: &limit,
                cost,
                mode,
                timeout,
                now_unix_micros: now,
            };
            coordinator.decide(caller, &request).await
        });
        match tokio::time::timeout(request.timeout, call).await {
            Ok(Ok(decision)) => Ok(decision),
            Ok(Err(error)) => {
                Err(Error::internal("the coordinator call failed").with_cause(error.to_string()))
            }
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

/// The shared stores as one location uses them: the platform's [`Counters`].
#[derive(Debug)]
pub struct LocationCounters {
    location: usize,
    stores: HashMap<String, TieredStore<CoordinatorCall>>,
    tally: Arc<LimitTally>,
}

impl LocationCounters {
    /// Creates the counters of location index `location`, which records into `stats`.
    pub fn new(location: usize, coordinator: Arc<Coordinator>, stats: Arc<LocationStats>) -> Self {
        let stores = coordinator
            .max_in_flight
            .iter()
            .map(|(name, max_in_flight)| {
                let call = CoordinatorCall {
                    location,
                    coordinator: Arc::clone(&coordinator),
                    stats: Arc::clone(&stats),
                };
                (name.clone(), TieredStore::new(call, *max_in_flight))
            })
            .collect();
        Self {
            location,
            stores,
            tally: Arc::clone(&coordinator.tally),
        }
    }
}

impl Counters for LocationCounters {
    /// Decides through the location's local tier of the store, which calls the
    /// coordinator, and counts the admission in the simulation's tally.
    async fn decide(&self, request: &CounterRequest<'_>) -> Result<Decision, Error> {
        let Some(store) = self.stores.get(request.store) else {
            return Err(Error::new(
                ErrorKind::Unavailable,
                ErrorSource::Platform,
                "the rate-limit store is not available",
            )
            .with_cause(format!("store {:?} is not in [stores]", request.store)));
        };
        let decision = store.decide(request).await?;
        if decision.allowed {
            self.tally.record_admitted(self.location, request);
        }
        Ok(decision)
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
        let tally = Arc::new(LimitTally::new(3));
        Arc::new(Coordinator::new(0, latency, &stores, 100, tally))
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
