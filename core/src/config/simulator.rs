//! Config of `gatehouse dev`, the local edge simulator, `[simulator]`. Every runtime
//! other than `gatehouse dev` ignores it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConfigDuration;

/// Settings of the local edge simulator: the simulated locations, the shared stores
/// between them and the platform limits applied to each request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Names of the simulated locations, such as `["fra", "iad", "sin"]`. Each one is
    /// the platform location of its gateway, looked up in `server.location_zones`.
    /// `gatehouse dev --locations` replaces this list.
    pub locations: Vec<String>,
    /// Time until a key-value write made in one location is visible in the others.
    /// The writing location sees it at once, as with Workers KV.
    pub kv_propagation: ConfigDuration,
    /// The owner of shared counters, which decides `redis` and `durable_object`
    /// stores for every location.
    pub coordinator: CoordinatorConfig,
    /// Platform limits applied to each request.
    pub limits: SimulatorLimits,
}

/// Workers KV documents that writes can take up to 60 seconds to reach other
/// locations, so the default shows the worst case.
impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            locations: Vec::new(),
            kv_propagation: ConfigDuration::from_millis(60_000),
            coordinator: CoordinatorConfig::default(),
            limits: SimulatorLimits::default(),
        }
    }
}

/// Placement of the counter coordinator, like a Durable Object that lives in one
/// data center.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Location that owns the counters; the first of `locations` when unset.
    pub location: Option<String>,
    /// Round-trip time added to each call from another location, half before the
    /// decision and half after it.
    pub latency: ConfigDuration,
}

/// The first location, with no added latency.
impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            location: None,
            latency: ConfigDuration::from_millis(0),
        }
    }
}

/// Per-request platform limits, with Cloudflare Workers' values as defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct SimulatorLimits {
    /// Maximum upstream requests (subrequests) one client request may make.
    pub subrequests: u32,
    /// Maximum upstream connections one client request may have open at once; later
    /// ones wait until one closes.
    pub connections: u32,
    /// Maximum request body size, in bytes.
    pub max_body_bytes: u64,
}

/// Workers' limits on the free plan: 50 subrequests, 6 simultaneous open connections
/// and a 100 MB request body.
impl Default for SimulatorLimits {
    fn default() -> Self {
        Self {
            subrequests: 50,
            connections: 6,
            max_body_bytes: 100_000_000,
        }
    }
}
