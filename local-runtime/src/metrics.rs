//! Prometheus metrics of the native runtime, served by the admin listener.
//!
//! Requests are counted once, when their access-log record is complete (see
//! [`crate::access_log`]). Labels come only from config names and response statuses, so
//! the number of series is bounded by the config and never grows with client input.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_core::cache::CacheStats;
use gatehouse_core::{AccessRecord, ErrorKind, Gateway};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Media type of the Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency histogram buckets, in seconds: 1 ms to 30 s, which
/// covers a cache hit through the default 15 s upstream timeout.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

// Route and upstream names are shared with the gateway's own copies instead of
// copied into each label set, because a config can have thousands of routes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    upstream: Arc<str>,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    route: Arc<str>,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    upstream: String,
    endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CheckLabels {
    upstream: String,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// The outcome of a config reload, the `result` label of
/// `gatehouse_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new config was valid and now serves requests.
    Success,
    /// The new config was unreadable or invalid, and the old one kept serving.
    Failure,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the process and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RouteLabels>,
    upstream_duration: HistogramFamily<UpstreamLabels>,
    response_bytes: Family<RouteLabels, Counter>,
    retries: Family<UpstreamLabels, Counter>,
    endpoint_ejected: Family<EndpointLabels, Gauge>,
    endpoint_circuit: Family<EndpointLabels, Gauge>,
    endpoint_healthy: Family<EndpointLabels, Gauge>,
    upstream_circuit: Family<UpstreamLabels, Gauge>,
    upstream_in_flight: Family<UpstreamLabels, Gauge>,
    upstream_pending: Family<UpstreamLabels, Gauge>,
    circuit_rejections: Family<UpstreamLabels, Counter>,
    health_checks: Family<CheckLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    discovery_updates: Family<UpstreamLabels, Counter>,
    discovery_failures: Family<UpstreamLabels, Counter>,
    discovery_endpoints: Family<UpstreamLabels, Gauge>,
    last_reload_success: Gauge<f64, AtomicU64>,
    connections_open: Gauge,
    cache_responses: Family<CacheLabels, Counter>,
    cache_bytes: Gauge,
    cache_entries: Gauge,
    cache_evictions: Counter,
    /// The label value of a missing route or upstream name, kept so that requests
    /// without one allocate no label.
    empty_label: Arc<str>,
    /// The registry, locked during a scrape so that two scrapes cannot interleave
    /// their refresh of the endpoint gauges.
    registry: Mutex<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates every metric at zero and registers it.
    pub fn new() -> Self {
        let metrics = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            response_bytes: Family::default(),
            retries: Family::default(),
            endpoint_ejected: Family::default(),
            endpoint_circuit: Family::default(),
            endpoint_healthy: Family::default(),
            upstream_circuit: Family::default(),
            upstream_in_flight: Family::default(),
            upstream_pending: Family::default(),
            circuit_rejections: Family::default(),
            health_checks: Family::default(),
            reloads: Family::default(),
            discovery_updates: Family::default(),
            discovery_failures: Family::default(),
            discovery_endpoints: Family::default(),
            last_reload_success: Gauge::default(),
            connections_open: Gauge::default(),
            cache_responses: Family::default(),
            cache_bytes: Gauge::default(),
            cache_entries: Gauge::default(),
            cache_evictions: Counter::default(),
            empty_label: Arc::from(""),
            registry: Mutex::new(Registry::default()),
        };
        let registry = metrics.register_all();
        Self {
            registry: Mutex::new(registry),
            ..metrics
        }
    }

    fn register_all(&self) -> Registry {
        let mut registry = Registry::default();
        // Counter names get `_total` appended by the encoder.
        registry.register(
            "gatehouse_discovery_updates",
            "Changed endpoint sets of discovered upstreams put into service, by upstream",
            self.discovery_updates.clone(),
        );
        registry.register(
            "gatehouse_discovery_failures",
            "Failed reads of discovery sources, by upstream; the last good set keeps serving",
            self.discovery_failures.clone(),
        );
        registry.register(
            "gatehouse_discovery_endpoints",
            "Endpoints in the last good set of each discovered upstream",
            self.discovery_endpoints.clone(),
        );
        registry.register(
            "gatehouse_requests",
            "Requests completed, by route, upstream and response status",
            self.requests.clone(),
        );
        registry.register(
            "gatehouse_request_duration_seconds",
            "Time from the arrival of a request to its response head",
            self.request_duration.clone(),
        );
        registry.register(
            "gatehouse_upstream_request_duration_seconds",
            "Time from sending the last attempt upstream to its response head",
            self.upstream_duration.clone(),
        );
        registry.register(
            "gatehouse_response_bytes",
            "Response body bytes sent to clients",
            self.response_bytes.clone(),
        );
        registry.register(
            "gatehouse_retries",
            "Attempts sent again to another endpoint",
            self.retries.clone(),
        );
        registry.register(
            "gatehouse_endpoint_ejected",
            "1 while outlier detection has ejected the endpoint, else 0",
            self.endpoint_ejected.clone(),
        );
        registry.register(
            "gatehouse_endpoint_circuit_state",
            "State of the endpoint's circuit breaker: 0 closed, 1 open, 2 half-open",
            self.endpoint_circuit.clone(),
        );
        registry.register(
            "gatehouse_endpoint_healthy",
            "Verdict of active health checks: 1 healthy, 0 unhealthy; absent before the first check",
            self.endpoint_healthy.clone(),
        );
        registry.register(
            "gatehouse_upstream_circuit_state",
            "State of the upstream's own circuit breaker: 0 closed, 1 open, 2 half-open",
            self.upstream_circuit.clone(),
        );
        registry.register(
            "gatehouse_upstream_requests_in_flight",
            "Requests holding one of the upstream's max_requests slots",
            self.upstream_in_flight.clone(),
        );
        registry.register(
            "gatehouse_upstream_requests_pending",
            "Requests waiting for one of the upstream's max_requests slots",
            self.upstream_pending.clone(),
        );
        registry.register(
            "gatehouse_circuit_rejections",
            "Requests refused at once by a circuit breaker or request limit",
            self.circuit_rejections.clone(),
        );
        registry.register(
            "gatehouse_health_checks",
            "Active health checks run, by upstream and result",
            self.health_checks.clone(),
        );
        registry.register(
            "gatehouse_config_reloads",
            "Config reloads, by result",
            self.reloads.clone(),
        );
        registry.register(
            "gatehouse_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load, including the one at start",
            self.last_reload_success.clone(),
        );
        registry.register(
            "gatehouse_connections_open",
            "Client connections open on the gateway's listeners",
            self.connections_open.clone(),
        );
        registry.register(
            "gatehouse_cache_responses",
            "Responses of routes with a cache policy, by route and cache status (hit, miss, stale, bypass, revalidated)",
            self.cache_responses.clone(),
        );
        registry.register(
            "gatehouse_cache_bytes",
            "Estimated bytes held by the in-memory response cache",
            self.cache_bytes.clone(),
        );
        registry.register(
            "gatehouse_cache_entries",
            "Entries held by the in-memory response cache, Vary markers included",
            self.cache_entries.clone(),
        );
        registry.register(
            "gatehouse_cache_evictions",
            "Entries the in-memory response cache removed to stay within its byte budget",
            self.cache_evictions.clone(),
        );
        // Both results are shown from the start, so a rate over them is defined
        // before the first failure.
        for result in ["success", "failure"] {
            let _ = self.reloads.get_or_create(&ReloadLabels { result });
        }
        registry
    }

    /// Registers the failure counters of the shared rate-limit stores as
    /// `gatehouse_rate_limit_store_errors_total`.
    pub fn register_store_errors(&self, errors: crate::counters::StoreErrorMetrics) {
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        registry.register(
            "gatehouse_rate_limit_store_errors",
            "Failed or timed-out decisions of shared rate-limit stores, by store and reason",
            errors,
        );
    }

    /// Registers the failure counters of the Redis response cache stores as
    /// `gatehouse_cache_store_errors_total`.
    pub fn register_cache_store_errors(&self, errors: crate::counters::StoreErrorMetrics) {
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        registry.register(
            "gatehouse_cache_store_errors",
            "Failed or timed-out commands of Redis response cache stores, by store and reason; failed lookups count as misses",
            errors,
        );
    }

    /// Returns the label value of an optional name. Requests that matched no route, or
    /// got a response before reaching an upstream, get an empty value.
    fn label(&self, name: Option<&Arc<str>>) -> Arc<str> {
        Arc::clone(name.unwrap_or(&self.empty_label))
    }

    /// Counts one finished request from its completed access record.
    pub fn record_request(&self, record: &AccessRecord) {
        let route = self.label(record.route.as_ref());
        let upstream = self.label(record.upstream.as_ref());
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                upstream: upstream.clone(),
                status: record.status,
            })
            .inc();
        let route = RouteLabels { route };
        self.request_duration
            .get_or_create(&route)
            .observe(seconds(record.head_micros));
        if let Some(bytes) = record.response_bytes {
            self.response_bytes.get_or_create(&route).inc_by(bytes);
        }
        if let Some(status) = record.cache {
            self.cache_responses
                .get_or_create(&CacheLabels {
                    route: route.route.clone(),
                    status,
                })
                .inc();
        }
        if record.upstream.is_some() {
            let upstream = UpstreamLabels { upstream };
            if record.error == Some(ErrorKind::CircuitOpen.slug()) {
                self.circuit_rejections.get_or_create(&upstream).inc();
            }
            if let Some(micros) = record.upstream_micros {
                self.upstream_duration
                    .get_or_create(&upstream)
                    .observe(seconds(micros));
            }
            if record.retries > 0 {
                self.retries
                    .get_or_create(&upstream)
                    .inc_by(u64::from(record.retries));
            }
        }
    }

    /// Sets the response cache gauges from a snapshot of the store.
    pub fn set_cache_stats(&self, stats: CacheStats) {
        self.cache_bytes
            .set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
        self.cache_entries
            .set(i64::try_from(stats.entries).unwrap_or(i64::MAX));
        // The store counts evictions itself; the counter catches up to it.
        let counted = self.cache_evictions.get();
        if stats.evictions > counted {
            self.cache_evictions.inc_by(stats.evictions - counted);
        }
    }

    /// Counts a config reload. A success also sets the last-success time to
    /// `unix_seconds`.
    pub fn record_health_check(&self, upstream: &str, passed: bool) {
        self.health_checks
            .get_or_create(&CheckLabels {
                upstream: upstream.to_owned(),
                result: if passed { "pass" } else { "fail" },
            })
            .inc();
    }

    pub fn record_reload(&self, result: ReloadResult, unix_seconds: f64) {
        let label = match result {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        };
        self.reloads
            .get_or_create(&ReloadLabels { result: label })
            .inc();
        if result == ReloadResult::Success {
            self.set_last_load(unix_seconds);
        }
    }

    /// Counts a changed endpoint set of `upstream` put into service, with `endpoints`
    /// endpoints.
    pub fn record_discovery_update(&self, upstream: &str, endpoints: usize) {
        let labels = UpstreamLabels {
            upstream: upstream.into(),
        };
        self.discovery_updates.get_or_create(&labels).inc();
        self.discovery_endpoints
            .get_or_create(&labels)
            .set(i64::try_from(endpoints).unwrap_or(i64::MAX));
    }

    /// Counts a failed read of the discovery source of `upstream`.
    pub fn record_discovery_failure(&self, upstream: &str) {
        self.discovery_failures
            .get_or_create(&UpstreamLabels {
                upstream: upstream.into(),
            })
            .inc();
    }

    /// Sets the time of the last successful config load, such as the one at start.
    pub fn set_last_load(&self, unix_seconds: f64) {
        self.last_reload_success.set(unix_seconds);
    }

    /// Counts a client connection as open until the returned guard is dropped.
    pub fn open_connection(&self) -> ConnectionGuard {
        self.connections_open.inc();
        ConnectionGuard {
            gauge: self.connections_open.clone(),
        }
    }

    /// Encodes every metric in the Prometheus text format, with the endpoint gauges
    /// read from `gateway` at monotonic time `now`.
    pub fn encode(&self, gateway: &Gateway, now: Duration) -> Result<String, std::fmt::Error> {
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Endpoints removed by a reload must disappear, so the family is rebuilt from
        // the current gateway on every scrape.
        // Gauges are rebuilt from the serving gateway, so endpoints removed by a
        // reload disappear.
        self.endpoint_ejected.clear();
        self.endpoint_circuit.clear();
        self.endpoint_healthy.clear();
        for health in gateway.endpoint_health(now) {
            let labels = EndpointLabels {
                upstream: health.upstream.to_string(),
                endpoint: health.endpoint,
            };
            self.endpoint_ejected
                .get_or_create(&labels)
                .set(i64::from(health.ejected));
            self.endpoint_circuit
                .get_or_create(&labels)
                .set(health.circuit as i64);
            if let Some(healthy) = health.active_healthy {
                self.endpoint_healthy
                    .get_or_create(&labels)
                    .set(i64::from(healthy));
            }
        }
        self.upstream_circuit.clear();
        self.upstream_in_flight.clear();
        self.upstream_pending.clear();
        for health in gateway.upstream_health(now) {
            let labels = UpstreamLabels {
                upstream: health.upstream.as_ref().into(),
            };
            self.upstream_circuit
                .get_or_create(&labels)
                .set(health.circuit as i64);
            self.upstream_in_flight
                .get_or_create(&labels)
                .set(i64::from(health.in_flight));
            self.upstream_pending
                .get_or_create(&labels)
                .set(i64::from(health.pending));
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// Keeps `gatehouse_connections_open` counting one connection while it lives.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gatehouse_core::config::Format;

    use super::*;

    #[test]
    fn request_is_counted_with_its_labels() {
        let metrics = Metrics::new();
        metrics.record_request(&AccessRecord {
            route: Some(Arc::from("users")),
            upstream: Some(Arc::from("users-svc")),
            status: 200,
            head_micros: 1_500,
            upstream_micros: Some(1_000),
            response_bytes: Some(42),
            retries: 2,
            cache: Some("hit"),
            ..AccessRecord::default()
        });
        metrics.set_cache_stats(CacheStats {
            entries: 3,
            bytes: 4_096,
            evictions: 2,
        });
        let gateway = Gateway::from_text("", Format::Toml).expect("an empty config is valid");
        let text = metrics
            .encode(&gateway, Duration::ZERO)
            .expect("encoding succeeds");
        for line in [
            r#"gatehouse_requests_total{route="users",upstream="users-svc",status="200"} 1"#,
            r#"gatehouse_response_bytes_total{route="users"} 42"#,
            r#"gatehouse_retries_total{upstream="users-svc"} 2"#,
            r#"gatehouse_request_duration_seconds_count{route="users"} 1"#,
            r#"gatehouse_upstream_request_duration_seconds_count{upstream="users-svc"} 1"#,
            r#"gatehouse_config_reloads_total{result="failure"} 0"#,
            "gatehouse_connections_open 0",
            r#"gatehouse_cache_responses_total{route="users",status="hit"} 1"#,
            "gatehouse_cache_bytes 4096",
            "gatehouse_cache_entries 3",
            "gatehouse_cache_evictions_total 2",
        ] {
            assert!(
                text.lines().any(|found| found == line),
                "{line} in:\n{text}"
            );
        }
    }

    #[test]
    fn connection_guard_decrements() {
        let metrics = Metrics::new();
        let first = metrics.open_connection();
        let second = metrics.open_connection();
        assert_eq!(metrics.connections_open.get(), 2);
        drop(first);
        drop(second);
        assert_eq!(metrics.connections_open.get(), 0);
    }
}
