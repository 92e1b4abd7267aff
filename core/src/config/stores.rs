//! Config types of `[stores]`, the shared counter stores of `rate_limit` policies, and
//! of the settings a policy uses to reach one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConfigDuration;

/// A shared counter store, written as a table with one key naming its type:
/// `[stores.shared.redis]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreConfig {
    /// A Redis server (native runtime and Spin). Each decision is one Lua script that
    /// reads the server's clock.
    Redis(RedisStoreConfig),
    /// A Durable Object namespace (Cloudflare Worker only): one object per counter
    /// key decides at its own clock.
    DurableObject(DurableObjectStoreConfig),
}

impl StoreConfig {
    /// Returns the type name, as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::DurableObject(_) => "durable_object",
        }
    }

    /// Returns the default timeout of decisions in this store.
    pub fn timeout(&self) -> ConfigDuration {
        match self {
            Self::Redis(redis) => redis.timeout,
            Self::DurableObject(object) => object.timeout,
        }
    }
}

/// Settings of a Durable Object store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DurableObjectStoreConfig {
    /// The Worker's binding of the Durable Object namespace, as named in
    /// `wrangler.toml` under `[[durable_objects.bindings]]`.
    #[serde(default = "default_durable_object_binding")]
    pub binding: String,
    /// Maximum time of one decision, the call to the object included. A request never
    /// waits longer for the store; past it, the policy's `on_store_error` applies.
    #[serde(default = "default_durable_object_timeout")]
    pub timeout: ConfigDuration,
    /// Interval of the warning logged while the store fails; failures in between are
    /// not logged.
    #[serde(default = "default_error_log_interval")]
    pub error_log_interval: ConfigDuration,
}

/// The binding name in the repository's `wrangler.toml`.
pub const DEFAULT_DURABLE_OBJECT_BINDING: &str = "GATEHOUSE_COUNTERS";

fn default_durable_object_binding() -> String {
    DEFAULT_DURABLE_OBJECT_BINDING.to_owned()
}

/// A call to a Durable Object crosses the network when the object lives in another
/// data center than the Worker, so the default is above the Redis one.
// NOTE: 200 ms is an estimate, not a measured round trip; deployments whose objects
// live far from their traffic may need more.
fn default_durable_object_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(200)
}

/// Settings of a Redis store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RedisStoreConfig {
    /// `redis://host:port/db`, without a password: set `password` instead.
    pub url: String,
    /// The Redis password (`AUTH`), read from a platform secret: an environment
    /// variable natively, the Spin variable of the name in lowercase on Spin.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// The ACL user name, sent with the password.
    #[serde(default)]
    pub username: Option<String>,
    /// Connections opened to the server. Natively, decisions that queue on one
    /// connection while a call is in flight are sent together as one script call.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Maximum time of one decision, connecting included. A request never waits
    /// longer for the store; past it, the policy's `on_store_error` applies.
    #[serde(default = "default_store_timeout")]
    pub timeout: ConfigDuration,
    /// Requests per key one gateway may admit in `async` mode before the store has
    /// counted them. It bounds how far `async` mode can exceed a limit.
    #[serde(default = "default_async_max_in_flight")]
    pub async_max_in_flight: u32,
    /// Interval of the warning logged while the store fails; failures in between are
    /// counted in metrics only.
    #[serde(default = "default_error_log_interval")]
    pub error_log_interval: ConfigDuration,
}

/// A reference to a platform secret: an environment variable natively, a Worker
/// secret or a Spin variable on the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SecretRef {
    /// The secret's name.
    pub secret: String,
}

fn default_pool_size() -> u32 {
    2
}

/// Fifty milliseconds is far above a Redis round trip in one data center (well under
/// a millisecond) and short enough that a dead store barely delays requests.
fn default_store_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(50)
}

fn default_async_max_in_flight() -> u32 {
    8
}

fn default_error_log_interval() -> ConfigDuration {
    ConfigDuration::from_millis(10_000)
}

/// The way a policy uses a shared store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreMode {
    /// Decide after the store replies: exact across gateways, one store round trip per
    /// request.
    #[default]
    Strict,
    /// Decide from the store's last replies as this gateway saw them, and count in the
    /// store in the background: no round trip on the request path, and a bounded excess
    /// over the limit.
    Async,
}

/// The action a policy takes when its store fails or times out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Admit the request, so a store outage does not take the API down.
    #[default]
    Allow,
    /// Reject the request with 503.
    Deny,
}

/// A UTC calendar period of a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CalendarPeriodConfig {
    /// Each minute.
    Minute,
    /// Each hour.
    Hour,
    /// Each day, from 00:00 UTC.
    Day,
    /// Each month, from 00:00 UTC on its first day.
    Month,
}

/// The limit of one plan in a `rate_limit` policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PlanLimitConfig {
    /// Units allowed per period for consumers of this plan.
    pub limit: u64,
    /// Burst for consumers of this plan with `gcra`; defaults to `limit`.
    #[serde(default)]
    pub burst: Option<u64>,
}

/// The platform name the native runtime passes to [`check_store_support`]. Only there
/// can a `cache` policy keep responses in a Redis store.
pub const NATIVE_PLATFORM: &str = "the native runtime";

/// Returns an error for each store in `config` whose type the platform named
/// `platform` cannot reach, given the store types it `supported`s. Runtimes call it
/// after loading a config, because a policy whose store never replies would fall back
/// to `on_store_error` on every request.
pub fn check_store_support(
    config: &super::Config,
    platform: &str,
    supported: &[&str],
) -> Vec<super::ConfigError> {
    config
        .stores
        .iter()
        .filter(|(_, store)| !supported.contains(&store.kind()))
        .map(|(name, store)| {
            super::ConfigError::new(
                format!("stores.{name}.{}", store.kind()),
                format!("{} stores are not available on {platform}", store.kind()),
            )
            .with_hint(
                "remove the store and its policies' store setting, so their counters stay in memory",
            )
        })
        .chain(unsupported_cache_stores(config, platform))
        .collect()
}

/// Returns an error for each `cache` policy whose `store` names a Redis store on a
/// platform other than the native runtime, pointing at the policy so the fix is clear.
/// Spin reaches Redis for counters, but keeps responses in Spin key-value.
fn unsupported_cache_stores<'a>(
    config: &'a super::Config,
    platform: &'a str,
) -> impl Iterator<Item = super::ConfigError> + 'a {
    config.policies.iter().filter_map(move |(name, policy)| {
        let super::PolicyConfig::Cache(cache) = policy else {
            return None;
        };
        let store = config.stores.get(cache.store.as_deref()?)?;
        // Other kinds are rejected as cache stores when the policy compiles.
        if !matches!(store, super::StoreConfig::Redis(_)) || platform == NATIVE_PLATFORM {
            return None;
        }
        Some(
            super::ConfigError::new(
                format!("policies.{name}.cache.store"),
                format!(
                    "a {} response cache store is not available on {platform}",
                    store.kind()
                ),
            )
            .with_hint(format!(
                "remove store, so responses stay in the platform's own cache ({})",
                match platform {
                    p if p.contains("Worker") => "the Cache API",
                    p if p.contains("Spin") => "Spin key-value",
                    _ => "process memory",
                }
            )),
        )
    })
}
