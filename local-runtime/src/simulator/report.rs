//! Per-location counters of the simulator, served as JSON on the admin listener's
//! `GET /simulator` and printed as a summary on exit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::tally::LimitsReport;

/// Latency and CPU samples kept per location; older ones are overwritten, so the
/// percentiles describe the most recent requests.
const MAX_SAMPLES: usize = 65_536;

/// A ring of the most recent samples, in microseconds.
#[derive(Debug, Default)]
struct Samples {
    values: Vec<u64>,
    next: usize,
}

impl Samples {
    fn push(&mut self, value: u64) {
        if self.values.len() < MAX_SAMPLES {
            self.values.push(value);
        } else {
            self.values[self.next] = value;
            self.next = (self.next + 1) % MAX_SAMPLES;
        }
    }

    fn summary(&self) -> Percentiles {
        let mut sorted = self.values.clone();
        sorted.sort_unstable();
        Percentiles {
            p50_ms: percentile_ms(&sorted, 50),
            p99_ms: percentile_ms(&sorted, 99),
            max_ms: percentile_ms(&sorted, 100),
        }
    }
}

/// Returns the nearest-rank percentile of `sorted` microseconds, in milliseconds.
fn percentile_ms(sorted: &[u64], percent: usize) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    Some(sorted[rank - 1] as f64 / 1_000.0)
}

/// Percentiles of a set of durations, `None` before the first request.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile, in milliseconds.
    pub p99_ms: Option<f64>,
    /// Maximum, in milliseconds.
    pub max_ms: Option<f64>,
}

/// The counters of one simulated location, updated by its requests.
#[derive(Debug, Default)]
pub struct LocationStats {
    /// Requests served, gateway errors included.
    pub requests: AtomicU64,
    /// Responses of routes with a `cache` policy served from the cache (`hit`,
    /// `stale` or `revalidated`).
    pub cache_hits: AtomicU64,
    /// Responses of routes with a `cache` policy fetched from the upstream (`miss`).
    pub cache_misses: AtomicU64,
    /// Responses that passed a rate limit: they carry a `RateLimit` header and are
    /// not 429.
    pub rate_limit_allowed: AtomicU64,
    /// Requests rejected by a rate limit or quota (429).
    pub rate_limit_denied: AtomicU64,
    /// Counter decisions sent to the coordinator.
    pub coordinator_calls: AtomicU64,
    /// Key-value reads.
    pub kv_reads: AtomicU64,
    /// Key-value reads that returned an older version than the newest write, because
    /// that write had not reached this location yet.
    pub kv_stale_reads: AtomicU64,
    /// Key-value writes.
    pub kv_writes: AtomicU64,
    /// Upstream connections that waited for another of the same request to close.
    pub connection_waits: AtomicU64,
    violations: Mutex<BTreeMap<&'static str, u64>>,
    latency: Mutex<Samples>,
    cpu: Mutex<Samples>,
}

impl LocationStats {
    /// Counts one broken platform limit, by the limit's name in `[simulator.limits]`
    /// or `kv_size`.
    pub fn record_violation(&self, limit: &'static str) {
        let mut violations = self
            .violations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *violations.entry(limit).or_default() += 1;
    }

    /// Records the time to the response head and the time spent running the
    /// request's code.
    pub fn record_timing(&self, latency: Duration, cpu: Duration) {
        self.latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(latency.as_micros() as u64);
        self.cpu
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(cpu.as_micros() as u64);
    }

    /// Returns a snapshot of the counters of location `name`.
    pub fn report(&self, name: &str, address: &str) -> LocationReport {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let hits = load(&self.cache_hits);
        let misses = load(&self.cache_misses);
        let looked_up = hits + misses;
        LocationReport {
            location: name.to_owned(),
            address: address.to_owned(),
            requests: load(&self.requests),
            cache_hits: hits,
            cache_misses: misses,
            cache_hit_ratio: (looked_up > 0).then(|| hits as f64 / looked_up as f64),
            rate_limit_allowed: load(&self.rate_limit_allowed),
            rate_limit_denied: load(&self.rate_limit_denied),
            coordinator_calls: load(&self.coordinator_calls),
            kv_reads: load(&self.kv_reads),
            kv_stale_reads: load(&self.kv_stale_reads),
            kv_writes: load(&self.kv_writes),
            connection_waits: load(&self.connection_waits),
            limit_violations: self
                .violations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(limit, count)| ((*limit).to_owned(), *count))
                .collect(),
            latency: self
                .latency
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .summary(),
            cpu: self
                .cpu
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .summary(),
        }
    }
}

/// The report of one location, as served by `GET /simulator`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LocationReport {
    /// The location's name.
    pub location: String,
    /// The address of its first listener.
    pub address: String,
    /// Requests served.
    pub requests: u64,
    /// Responses served from the location's response cache.
    pub cache_hits: u64,
    /// Responses of cached routes fetched from the upstream.
    pub cache_misses: u64,
    /// `cache_hits / (cache_hits + cache_misses)`, `None` before the first lookup.
    pub cache_hit_ratio: Option<f64>,
    /// Responses that passed a rate limit.
    pub rate_limit_allowed: u64,
    /// Requests rejected with 429 by a rate limit or quota.
    pub rate_limit_denied: u64,
    /// Counter decisions sent to the coordinator.
    pub coordinator_calls: u64,
    /// Key-value reads.
    pub kv_reads: u64,
    /// Key-value reads that missed a newer write from another location.
    pub kv_stale_reads: u64,
    /// Key-value writes.
    pub kv_writes: u64,
    /// Upstream connections that waited for the per-request connection limit.
    pub connection_waits: u64,
    /// Broken platform limits, by limit name.
    pub limit_violations: BTreeMap<String, u64>,
    /// Time from arrival to the response head.
    pub latency: Percentiles,
    /// Time spent running the request's code up to the response head: wall time
    /// inside the request's future, an estimate of CPU time.
    pub cpu: Percentiles,
}

/// The report of the whole simulation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Delay until a key-value write reaches the other locations, in milliseconds.
    pub kv_propagation_ms: u64,
    /// The location owning shared counters.
    pub coordinator_location: String,
    /// Round-trip time added to coordinator calls from other locations, in
    /// milliseconds.
    pub coordinator_latency_ms: u64,
    /// The locations, in config order.
    pub locations: Vec<LocationReport>,
    /// Each shared limit key: units admitted across all locations against those the
    /// coordinator admitted, and the documented bound of the difference.
    pub limits: LimitsReport,
}

impl Report {
    /// Formats the report as a table for the terminal.
    pub fn summary(&self) -> String {
        let mut text = String::from(
            "location  requests  cache_hit  rl_allowed  rl_denied  kv_stale  violations  p50_ms  p99_ms\n",
        );
        for location in &self.locations {
            let violations: u64 = location.limit_violations.values().sum();
            let ratio = location
                .cache_hit_ratio
                .map_or("-".to_owned(), |ratio| format!("{:.0}%", ratio * 100.0));
            let millis = |value: Option<f64>| value.map_or("-".to_owned(), |ms| format!("{ms:.1}"));
            let _ = writeln!(
                text,
                "{:<9} {:>8}  {:>9}  {:>10}  {:>9}  {:>8}  {:>10}  {:>6}  {:>6}",
                location.location,
                location.requests,
                ratio,
                location.rate_limit_allowed,
                location.rate_limit_denied,
                location.kv_stale_reads,
                violations,
                millis(location.latency.p50_ms),
                millis(location.latency.p99_ms),
            );
            for (limit, count) in &location.limit_violations {
                let _ = writeln!(text, "          {count} request(s) broke the {limit} limit");
            }
        }
        if !self.limits.keys.is_empty() {
            text.push_str(
                "\nshared limit key                 mode    limit  window_s  admitted  store_admitted  overshoot  bound\n",
            );
        }
        for key in &self.limits.keys {
            let _ = writeln!(
                text,
                "{:<32} {:<6} {:>6}  {:>8}  {:>8}  {:>14}  {:>9}  {:>5}",
                // Key parts are joined by a control character, shown escaped.
                format!("{}/{}", key.store, key.key.escape_debug()),
                key.mode,
                key.limit,
                key.window_seconds,
                key.admitted,
                key.store_admitted,
                key.overshoot,
                key.overshoot_bound,
            );
            if key.overshoot > key.overshoot_bound {
                let _ = writeln!(
                    text,
                    "          over the bound: the key ran out more than once, or calls \
                     to the coordinator are still in flight"
                );
            }
        }
        if self.limits.untracked_keys > 0 {
            let _ = writeln!(
                text,
                "{} more shared key(s) not tallied",
                self.limits.untracked_keys
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1_000).collect();
        assert_eq!(percentile_ms(&sorted, 50), Some(50.0));
        assert_eq!(percentile_ms(&sorted, 99), Some(99.0));
        assert_eq!(percentile_ms(&sorted, 100), Some(100.0));
        assert_eq!(percentile_ms(&[], 50), None);
        assert_eq!(percentile_ms(&[7_000], 99), Some(7.0));
    }

    #[test]
    fn samples_keep_most_recent() {
        let mut samples = Samples::default();
        for value in 0..(MAX_SAMPLES as u64 + 10) {
            samples.push(value);
        }
        assert_eq!(samples.values.len(), MAX_SAMPLES);
        assert!(!samples.values.contains(&0));
        assert!(samples.values.contains(&(MAX_SAMPLES as u64 + 9)));
    }
}
