//! The declarative configuration, `gatehouse.toml` (or the same document as JSON).
//!
//! These types mirror the file. They are checked for shape by serde while loading
//! ([`load`]) and for meaning while compiling into a [`crate::Gateway`], and both steps
//! report every problem they find with its path, such as
//! `routes[2].match.path_prefix: must start with '/'`.

mod aggregate;
mod auth;
mod discovery;
mod duration;
mod key_value;
mod load;
mod simulator;
mod stores;
mod tls;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use aggregate::{
    AggregateCallConfig, AggregateConfig, CallMerge, DEFAULT_AGGREGATE_MAX_BODY_BYTES,
    DEFAULT_AGGREGATE_MAX_DEPTH, DEFAULT_AGGREGATE_MAX_IN_FLIGHT, Dispatch, OnCallError,
};
pub use auth::{
    ApiKeyConfig, AuthorizeConfig, ConsumerConfig, JwksConfig, JwtConfig, JwtKeyConfig, OneOrMany,
    TokenSource, VerifiedCacheConfig,
};
pub use discovery::{DiscoveryConfig, DiscoverySource, EndpointList, ResolverConfig};
pub use duration::ConfigDuration;
pub use key_value::KeyValueConfig;
pub(crate) use load::closest_name;
pub use load::{ConfigError, ConfigErrors, Format, json_schema, load, parse};
pub use simulator::{CoordinatorConfig, SimulatorConfig, SimulatorLimits};
pub use stores::{
    CalendarPeriodConfig, DEFAULT_DURABLE_OBJECT_BINDING, DurableObjectStoreConfig,
    NATIVE_PLATFORM, OnStoreError, PlanLimitConfig, RedisStoreConfig, SecretRef, StoreConfig,
    StoreMode, check_store_support,
};
pub use tls::{CertificateConfig, ListenerTlsConfig, UpstreamTlsConfig};
pub(crate) use tls::{check_listener_tls, check_upstream_tls};

/// The whole gateway configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Config {
    /// Sockets the native runtime accepts connections on. Edge platforms ignore them.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// The native runtime's admin listener (health, readiness, metrics, config,
    /// reload); off when absent. Edge platforms ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminConfig>,
    /// Settings that apply to every request.
    #[serde(default)]
    pub server: ServerConfig,
    /// Named groups of endpoints that routes send requests to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, matched most specific first and then in declaration order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Named policies that routes refer to by name.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyConfig>,
    /// API clients, identified by the hashes of their API keys.
    #[serde(default)]
    pub consumers: BTreeMap<String, ConsumerConfig>,
    /// Where each platform keeps its key-value store.
    #[serde(default)]
    pub key_value: KeyValueConfig,
    /// Span export of the native runtime. Trace context is propagated without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
    /// Shared counter stores that `rate_limit` policies name in `store`.
    #[serde(default)]
    pub stores: BTreeMap<String, StoreConfig>,
    /// The DNS resolver of `dns` and `srv` discovery (native runtime).
    #[serde(default)]
    pub resolver: ResolverConfig,
    /// Settings of `gatehouse dev`, the local edge simulator. Other runtimes ignore
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulator: Option<SimulatorConfig>,
}

/// Tracing settings of the native runtime. Edge platforms ignore them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct TracingConfig {
    /// Exports the gateway's spans to an OpenTelemetry collector; off when absent.
    pub otlp: Option<OtlpConfig>,
}

/// OpenTelemetry span export over OTLP/HTTP with JSON bodies.
///
/// Export never delays requests: spans wait in a bounded queue, and when the queue is
/// full, for example because the collector is down, new spans are dropped and counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's traces URL, such as `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// The `service.name` resource attribute of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Maximum time for one export request.
    #[serde(default = "default_otlp_timeout")]
    pub timeout: ConfigDuration,
    /// Spans held while waiting for export; past it, new spans are dropped.
    #[serde(default = "default_otlp_queue")]
    pub max_queue_spans: usize,
}

fn default_service_name() -> String {
    "gatehouse".to_owned()
}

/// The OTLP exporter's usual default timeout.
fn default_otlp_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(10_000)
}

/// The OpenTelemetry batch span processor's default queue size.
fn default_otlp_queue() -> usize {
    2048
}

/// A socket the native runtime serves HTTP/1.1 and HTTP/2 on: with prior knowledge
/// in cleartext, or negotiated through ALPN with `tls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// Address and port to bind, for example `127.0.0.1:8080` or `[::]:8080`.
    pub address: String,
    /// TLS termination; the listener serves cleartext HTTP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTlsConfig>,
}

/// The admin listener of the native runtime, on its own port.
///
/// It exposes the active config and accepts reloads without authentication, so it
/// belongs on a loopback address. Any other address is rejected unless
/// `allow_remote` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address and port to bind, for example `127.0.0.1:9901`.
    pub address: String,
    /// Allows an address other than loopback, for a network where only operators can
    /// reach that port.
    #[serde(default)]
    pub allow_remote: bool,
}

/// Request handling settings shared by all routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct ServerConfig {
    /// Peers (addresses or CIDR blocks) whose `X-Forwarded-For` and `Forwarded` headers
    /// are believed. Requests from any other peer use the socket address as the client.
    pub trusted_proxies: Vec<String>,
    /// Maximum length of the request target (path and query), in bytes.
    pub max_uri_bytes: usize,
    /// Maximum total size of the request header names and values, in bytes.
    pub max_header_bytes: usize,
    /// Maximum request body size, in bytes, checked against `Content-Length`.
    pub max_body_bytes: u64,
    /// Header that carries the request id; a valid incoming value is kept.
    pub request_id_header: String,
    /// Name this gateway gives itself in the `Via` header; empty disables `Via`.
    pub via: String,
    /// Whether to set `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`.
    pub x_forwarded: bool,
    /// Whether to set the standard `Forwarded` header (RFC 7239).
    pub forwarded: bool,
    /// Names of policies from `[policies]` applied to every route, before the route's own.
    pub policies: Vec<String>,
    /// Keys the local rate-limit store keeps; past it, keys that refilled are dropped
    /// first, then the least recently used.
    pub max_rate_limit_keys: usize,
    /// Zone this gateway runs in; upstreams prefer endpoints of the same zone. An edge
    /// platform may supply its own location instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Zones by platform location, such as a Cloudflare data center code (`"DFW"`).
    /// A location that is not listed is the zone itself.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub location_zones: BTreeMap<String, String>,
    /// Byte budget of the in-memory response cache, shared by every `cache` policy;
    /// past it, the least recently used responses are evicted.
    pub cache_max_bytes: u64,
}

/// Default limits follow common server defaults: an 8 KiB request line is what nginx
/// and Apache accept, and 10 MiB bodies cover API payloads while bounding memory.
impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 64 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            request_id_header: "x-request-id".to_owned(),
            via: "gatehouse".to_owned(),
            x_forwarded: true,
            forwarded: true,
            policies: Vec::new(),
            // An estimate of about 100 bytes a key puts this near 10 MB.
            max_rate_limit_keys: 100_000,
            zone: None,
            location_zones: BTreeMap::new(),
            cache_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A named group of endpoints and how to balance requests among them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The servers of this upstream. With `discovery`, they serve until the first
    /// successful read of the source, and may be empty.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// Reads the endpoints from DNS, a file or the key-value store and follows their
    /// changes; the endpoints are only those of `endpoints` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryConfig>,
    /// The algorithm that picks an endpoint for each request.
    #[serde(default)]
    pub balancer: BalancerKind,
    /// The request property consistent hashing uses as its key. Required with
    /// `balancer = "consistent_hash"`.
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    /// Protocol spoken to the endpoints.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Connection and request timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Sends this value as the `Host` header instead of the client's.
    #[serde(default)]
    pub host_header: Option<String>,
    /// When a failed attempt is sent again, to another endpoint.
    #[serde(default)]
    pub retries: RetryConfig,
    /// Passive health: ejecting endpoints that keep failing.
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// Circuit breaking: failing fast instead of sending to an endpoint or upstream
    /// that keeps failing, and limits on requests in flight.
    #[serde(default)]
    pub circuit: CircuitConfig,
    /// Zone preference and priority failover among the endpoints.
    #[serde(default)]
    pub locality: LocalityConfig,
    /// Active health checks, sent by the native runtime in the background. Edge
    /// platforms cannot run background tasks and ignore them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    /// TLS to the endpoints (native runtime); cleartext when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsConfig>,
}

/// Circuit breaker settings of an upstream.
///
/// Each endpoint has a breaker, and the upstream has one of its own. A breaker is
/// closed (requests pass), open (requests are rejected at once with 503) or half-open.
/// After `open_duration` an open breaker becomes half-open and lets up to
/// `half_open_probes` requests through. A success closes it and a failure opens it
/// again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Consecutive gateway failures (connect failure, reset, timeout, 502, 503, 504)
    /// that open an endpoint's breaker; 0 disables endpoint breakers.
    pub consecutive_failures: u32,
    /// Percentage of failed attempts within `window` that opens the upstream's
    /// breaker; 0 disables it.
    pub failure_percent: u32,
    /// Attempts within `window` needed before `failure_percent` applies.
    pub min_requests: u32,
    /// Length of the window the upstream's failure percentage is measured over.
    pub window: ConfigDuration,
    /// Time a breaker stays open before it lets probes through.
    pub open_duration: ConfigDuration,
    /// Requests let through at once while half-open.
    pub half_open_probes: u32,
    /// Requests in flight to the upstream at once, up to their response head;
    /// 0 means no limit.
    pub max_requests: u32,
    /// Requests that may wait for a free slot when `max_requests` are in flight;
    /// further ones are refused at once. Waiting ends at the route's total timeout.
    pub max_pending: u32,
}

/// Every breaker and limit is off until its threshold is set; the timings are Envoy's
/// and resilience4j's usual ones.
impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 0,
            failure_percent: 0,
            min_requests: 20,
            window: ConfigDuration::from_millis(10_000),
            open_duration: ConfigDuration::from_millis(5_000),
            half_open_probes: 1,
            max_requests: 0,
            max_pending: 0,
        }
    }
}

/// Zone preference and priority failover among an upstream's endpoints.
///
/// Endpoints of the lowest `priority` take the traffic while enough of them are
/// healthy. As their healthy share falls, a matching part of the traffic fails over
/// to the next tier. Within a tier, endpoints in the gateway's zone
/// (`server.zone`) are preferred while at least `local_min_healthy_percent` of them
/// are healthy; below that, traffic spills to the other zones in proportion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct LocalityConfig {
    /// Share of the local zone's endpoints that must be healthy for the local zone to
    /// take all of a tier's traffic, in percent.
    pub local_min_healthy_percent: u32,
    /// A tier whose healthy share times this factor (in percent) reaches 100 takes all
    /// the traffic; 140 lets a tier with 72% healthy endpoints keep it.
    pub overprovisioning_percent: u32,
}

/// Envoy's defaults: zone spill below 70%, overprovisioning factor 1.4.
impl Default for LocalityConfig {
    fn default() -> Self {
        Self {
            local_min_healthy_percent: 70,
            overprovisioning_percent: 140,
        }
    }
}

/// Active health checks of an upstream's endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http` sends a request and checks its response; `tcp` only opens a connection.
    pub kind: HealthCheckKind,
    /// Request path of an HTTP check.
    pub path: String,
    /// `Host` header of an HTTP check; the endpoint address when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Response statuses that count as healthy; empty means 200 to 399.
    pub expected_statuses: Vec<u16>,
    /// Text the response body must contain (first 64 KiB) to count as healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// Time between two checks of one endpoint.
    pub interval: ConfigDuration,
    /// Random share of `interval` added or removed on each wait, in percent, so
    /// that checks of many endpoints do not line up.
    pub jitter_percent: u32,
    /// Maximum time for one check.
    pub timeout: ConfigDuration,
    /// Consecutive passed checks that mark an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failed checks that mark a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            kind: HealthCheckKind::Http,
            path: "/healthz".to_owned(),
            host: None,
            expected_statuses: Vec::new(),
            body_contains: None,
            interval: ConfigDuration::from_millis(5_000),
            jitter_percent: 10,
            timeout: ConfigDuration::from_millis(1_000),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// Kind of active health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// An HTTP/1.1 GET of `path`.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
}

/// Retry settings of an upstream.
///
/// A request is sent again only when that cannot duplicate its effect: after a failed
/// connect (nothing was sent) for any method, and after a reset, a timeout or a listed
/// status only for idempotent methods. Requests with a body are never sent twice,
/// because the body streamed to the first endpoint is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts after the first; 0 disables retries.
    pub max_retries: u32,
    /// Response statuses that make an idempotent request go to another endpoint.
    pub on_statuses: Vec<u16>,
    /// Wait before the first retry; each further retry waits twice as long, with jitter.
    pub backoff: ConfigDuration,
    /// Maximum wait between two attempts.
    pub max_backoff: ConfigDuration,
    /// Retries allowed as a percentage of requests, so that retries cannot multiply
    /// the load on an upstream that is already failing.
    pub budget_percent: u32,
    /// Retries per second always allowed, so that a quiet upstream can still retry.
    pub min_retries_per_second: u32,
}

/// One retry of connect failures, as a default that never duplicates a request.
impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 1,
            on_statuses: Vec::new(),
            backoff: ConfigDuration::from_millis(25),
            max_backoff: ConfigDuration::from_millis(250),
            budget_percent: 20,
            min_retries_per_second: 10,
        }
    }
}

/// Passive health settings of an upstream: outlier detection from live traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive gateway failures (connect failure, reset, timeout, 502, 503, 504)
    /// that eject an endpoint; 0 disables ejection.
    pub consecutive_failures: u32,
    /// Ejection time of a first ejection; each repeated ejection doubles it.
    pub base_ejection: ConfigDuration,
    /// Maximum ejection time.
    pub max_ejection: ConfigDuration,
    /// Largest share of endpoints ejected at once, in percent.
    pub max_ejected_percent: u32,
    /// When the share of endpoints not ejected falls below this percentage, health is
    /// ignored and load spreads over all endpoints rather than crushing the last
    /// healthy ones.
    pub panic_threshold_percent: u32,
}

/// Envoy's outlier detection defaults: 5 failures, 30 s, at most half the endpoints.
impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: ConfigDuration::from_millis(30_000),
            max_ejection: ConfigDuration::from_millis(300_000),
            max_ejected_percent: 50,
            panic_threshold_percent: 50,
        }
    }
}

/// One server of an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EndpointConfig {
    /// `host:port`, where host is an IP address or a DNS name.
    pub address: String,
    /// Relative share of requests for weighted balancers, 1 to 10000.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Zone the endpoint runs in, compared with the gateway's `server.zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Priority tier; 0 is preferred and higher tiers take traffic on failover.
    #[serde(default)]
    pub priority: u32,
}

fn default_weight() -> u32 {
    1
}

/// Load-balancing algorithm of an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BalancerKind {
    /// Each endpoint in turn, ignoring weights.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin: shares follow weights without bursts.
    WeightedRoundRobin,
    /// A weighted random endpoint.
    Random,
    /// The endpoint with the fewest requests in flight relative to its weight.
    LeastOutstanding,
    /// The better of two random endpoints by latency (EWMA) times load.
    P2cEwma,
    /// A hash ring: the same key reaches the same endpoint while it is healthy.
    ConsistentHash,
}

/// The request property that consistent hashing uses as its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// The value of a request header.
    Header(String),
    /// The value of a cookie.
    Cookie(String),
    /// The client address, after trusted-proxy resolution.
    ClientIp,
    /// The normalized request path.
    Path,
}

/// Protocol between the gateway and an upstream's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over TCP, with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 over cleartext TCP with prior knowledge (h2c).
    H2c,
    /// HTTP/2 over TLS, negotiated through ALPN; requires `tls`.
    H2,
}

/// Timeouts for requests to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// Maximum time to open a connection to an endpoint.
    pub connect: ConfigDuration,
    /// Maximum time for one attempt, from sending the request to the response head.
    pub per_try: ConfigDuration,
    /// Maximum time for the whole request, from arrival to the response head.
    pub total: ConfigDuration,
}

/// Defaults close to Envoy's: a short connect timeout so a dead endpoint fails fast,
/// and 15 seconds for a response.
impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect: ConfigDuration::from_millis(2_000),
            per_try: ConfigDuration::from_millis(15_000),
            total: ConfigDuration::from_millis(15_000),
        }
    }
}

/// A route: which requests it takes, what it does to them and where it sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in logs and metrics; defaults to `routes[INDEX]`.
    #[serde(default)]
    pub name: Option<String>,
    /// Conditions a request must meet; all must hold.
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Name of the upstream that serves this route. Required with `dispatch = "proxy"`;
    /// aggregate routes name an upstream in each call instead.
    #[serde(default)]
    pub upstream: String,
    /// What the route does with a request: `proxy` forwards it to `upstream`,
    /// `aggregate` sends the calls of `aggregate` and merges their responses.
    #[serde(default, skip_serializing_if = "Dispatch::is_proxy")]
    pub dispatch: Dispatch,
    /// The calls of a route with `dispatch = "aggregate"`.
    // Boxed, like `timeouts`, because most routes leave it out and a config may have
    // thousands of routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Box<AggregateConfig>>,
    /// Removes this path prefix before forwarding (`/api` turns `/api/users` into `/users`).
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Replaces the path before forwarding; `{name}` inserts a template parameter.
    #[serde(default)]
    pub rewrite: Option<String>,
    /// Names of policies from `[policies]`, applied in this order.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Overrides the upstream's timeouts for this route.
    #[serde(default)]
    pub timeouts: Option<Box<TimeoutsConfig>>,
    /// Translates gRPC-Web requests (`application/grpc-web` and
    /// `application/grpc-web-text`) into gRPC for the upstream, which must speak
    /// HTTP/2, and the responses back into gRPC-Web.
    #[serde(default)]
    pub grpc_web: bool,
    /// Relays WebSocket upgrades on this route; without it, `Upgrade` is removed and
    /// the request is forwarded as a plain request.
    #[serde(default)]
    pub websocket: Option<WebSocketConfig>,
}

/// WebSocket relaying of a route.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Closes both connections of a relayed WebSocket after this long without a byte
    /// in either direction.
    pub idle_timeout: ConfigDuration,
}

/// Five minutes: long enough for applications that send a ping every minute or so,
/// short enough that abandoned connections do not pile up.
impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            idle_timeout: ConfigDuration::from_millis(300_000),
        }
    }
}

/// Request conditions of a route. At most one of `path`, `path_prefix` and
/// `path_template` may be set; with none, every path matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct MatchConfig {
    /// Hosts, exact (`api.example.com`) or wildcard (`*.example.com`); empty matches any.
    pub hosts: Vec<String>,
    /// Methods; empty matches any.
    pub methods: Vec<String>,
    /// The exact normalized path.
    pub path: Option<String>,
    /// A path prefix that ends at a segment boundary: `/api` matches `/api` and
    /// `/api/users` but not `/apis`.
    pub path_prefix: Option<String>,
    /// A path with `{name}` segments that each match one non-empty segment.
    pub path_template: Option<String>,
    /// Header conditions; all must hold.
    pub headers: Vec<ValueMatch>,
    /// Query parameter conditions; all must hold.
    pub query: Vec<ValueMatch>,
}

/// A condition on a header or query parameter: with `value`, one of its values must be
/// equal to it; without, the name must be present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ValueMatch {
    /// Header name (case-insensitive) or query parameter name (case-sensitive).
    pub name: String,
    /// Exact value; omit to require only presence.
    #[serde(default)]
    pub value: Option<String>,
}

/// A named, reusable policy, written as a table with one key naming its type:
/// `[policies.tenant.transform]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyConfig {
    /// Header changes on the request sent upstream and the response sent back.
    Transform(TransformConfig),
    /// Client address allow and deny lists.
    Ip(IpPolicyConfig),
    /// Cross-origin resource sharing: the gateway responds to preflights and adds CORS
    /// headers to responses.
    Cors(CorsConfig),
    /// Request checks: body media type and size, required headers and parameters.
    Validate(ValidateConfig),
    /// A rate limit per client, route or other key.
    RateLimit(RateLimitConfig),
    /// Authentication with JSON Web Tokens.
    Jwt(JwtConfig),
    /// Authentication with API keys of `[consumers]`.
    ApiKey(ApiKeyConfig),
    /// Requirements on the authenticated identity: scopes, roles, claims, groups.
    Authorize(AuthorizeConfig),
    /// HTTP response caching of GET and HEAD requests.
    Cache(CacheConfig),
}

/// Settings of a `cache` policy: which responses of a route are stored, for how long,
/// and how requests map to stored responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct CacheConfig {
    /// Freshness lifetime of a cacheable response that states none (no `s-maxage`,
    /// `max-age` or `Expires`). Without it, such responses are not stored.
    pub default_ttl: Option<ConfigDuration>,
    /// How the query string enters the cache key.
    pub query: CacheQuery,
    /// Query parameters left out of the cache key, such as tracking parameters.
    pub ignore_params: Vec<String>,
    /// Caches requests that carry `Authorization` or pass the route's authentication,
    /// each consumer in its own entries. Requires a `jwt` or `api_key` policy on the
    /// route.
    pub authenticated: bool,
    /// Stores responses that carry `Set-Cookie`, cookies included, and sends them to
    /// every client that gets the cached response.
    pub store_set_cookie: bool,
    /// Largest response body stored, in bytes; larger responses pass through uncached.
    pub max_object_bytes: u64,
    /// Response header that reports the cache status: `hit`, `miss`, `stale`,
    /// `bypass` or `revalidated`.
    pub status_header: String,
    /// How long a response stays stored after it turns stale when it has an `ETag`
    /// or `Last-Modified` validator, so that it can be revalidated upstream.
    pub keep_stale: ConfigDuration,
    /// Time a request waits for a concurrent request of the same key to fill the
    /// cache before it goes upstream itself.
    pub lock_timeout: ConfigDuration,
    /// A Redis store of `[stores]` that keeps the responses, shared by every gateway
    /// that names it (native runtime only). Without it, responses stay in the
    /// platform's own cache: process memory natively.
    pub store: Option<String>,
}

/// One megabyte keeps a full cache of the default size at over 60 objects; 5 seconds
/// is nginx's default `proxy_cache_lock_timeout`.
impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            default_ttl: None,
            query: CacheQuery::Keep,
            ignore_params: Vec::new(),
            authenticated: false,
            store_set_cookie: false,
            max_object_bytes: 1024 * 1024,
            status_header: "x-cache-status".to_owned(),
            keep_stale: ConfigDuration::from_millis(600_000),
            lock_timeout: ConfigDuration::from_millis(5_000),
            store: None,
        }
    }
}

/// How a `cache` policy puts the query string into the cache key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheQuery {
    /// The query as sent, so `?a=1&b=2` and `?b=2&a=1` are separate entries.
    #[default]
    Keep,
    /// Parameters sorted by name, so their order does not matter.
    Sort,
    /// No query at all: every query of a path shares one entry.
    Ignore,
}

/// Settings of a `rate_limit` policy. Each policy counts in its own keys, so two
/// policies never share a counter, even with the same key parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The counting algorithm.
    #[serde(default)]
    pub algorithm: RateLimitAlgorithm,
    /// Requests (or cost units) allowed per period.
    pub limit: u64,
    /// The period of the limit; with `quota`, the length of a rolling quota.
    #[serde(default)]
    pub period: Option<ConfigDuration>,
    /// The UTC calendar period of a `quota` that starts again at each period's start.
    #[serde(default)]
    pub calendar: Option<CalendarPeriodConfig>,
    /// Largest number of requests admitted at once with `gcra`; defaults to `limit`.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Limits by plan: an authenticated consumer whose plan (the consumer's `plan`, or
    /// a JWT's `plan` claim) is listed gets that limit instead of `limit`.
    #[serde(default)]
    pub plans: BTreeMap<String, PlanLimitConfig>,
    /// The parts of the counter key; the default counts per client address.
    #[serde(default = "default_rate_limit_key")]
    pub key: Vec<RateLimitKey>,
    /// Units one request costs.
    #[serde(default = "default_cost")]
    pub cost: u64,
    /// Units one request costs on the named routes, instead of `cost`.
    #[serde(default)]
    pub route_cost: BTreeMap<String, u64>,
    /// Whether to send the `RateLimit-Policy` and `RateLimit` headers.
    #[serde(default = "default_true")]
    pub headers: bool,
    /// Name of a shared store from `[stores]`; without it, counters live in the
    /// gateway's memory, exact within one process.
    #[serde(default)]
    pub store: Option<String>,
    /// How the shared store is used.
    #[serde(default)]
    pub mode: StoreMode,
    /// What to do with a request when the shared store fails or times out.
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// Maximum time to wait for the shared store; defaults to the store's `timeout`.
    #[serde(default)]
    pub store_timeout: Option<ConfigDuration>,
}

fn default_rate_limit_key() -> Vec<RateLimitKey> {
    vec![RateLimitKey::ClientIp]
}

fn default_cost() -> u64 {
    1
}

fn default_true() -> bool {
    true
}

/// Rate-limit algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitAlgorithm {
    /// Generic cell rate algorithm: a rolling rate with bursts up to `burst`.
    #[default]
    Gcra,
    /// Sliding-window counter: at most about `limit` per sliding `period`.
    SlidingWindow,
    /// A quota of `limit` per `calendar` period, or per rolling `period`. Exhaustion is
    /// answered with the `quota-exceeded` problem type.
    Quota,
}

/// One part of a rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// The client address, after trusted-proxy resolution.
    ClientIp,
    /// The matched route's name.
    Route,
    /// The authenticated subject: the JWT `sub` claim, or the consumer of an API key.
    /// Requests without one (routes without authentication) share one counter.
    Subject,
    /// The consumer of an API key; requests without one share one counter.
    Consumer,
    /// The API key presented, as a short hash, so each key of a consumer counts apart.
    ApiKey,
    /// The value of a verified JWT claim, such as `tenant`; strings as they are, other
    /// values as JSON. Requests without the claim share one counter.
    Claim(String),
    /// The value of a request header; requests without it share one counter.
    Header(String),
}

/// Client address lists of an `ip` policy. The address is the client address after
/// trusted-proxy resolution, so a forged `X-Forwarded-For` cannot change it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct IpPolicyConfig {
    /// Addresses or CIDR blocks allowed; when not empty, every other client is rejected.
    pub allow: Vec<String>,
    /// Addresses or CIDR blocks rejected, even when `allow` lists them.
    pub deny: Vec<String>,
}

/// Settings of a `cors` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins: exact (`https://app.example.com`), a pattern whose first host
    /// label is `*` (`https://*.example.com`, one or more labels), or `*` for any
    /// origin, which cannot be combined with `allow_credentials`.
    pub allow_origins: Vec<String>,
    /// Methods a cross-origin request may use.
    pub allow_methods: Vec<String>,
    /// Request headers a cross-origin request may send, beyond the CORS-safelisted ones.
    pub allow_headers: Vec<String>,
    /// Response headers the browser may expose to the page.
    pub expose_headers: Vec<String>,
    /// Whether requests with cookies or credentials are allowed.
    pub allow_credentials: bool,
    /// Time browsers may cache a preflight response.
    pub max_age: Option<ConfigDuration>,
}

/// By default, the methods of simple requests (GET, HEAD, POST) and no extra headers.
impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            allow_methods: vec!["GET".to_owned(), "HEAD".to_owned(), "POST".to_owned()],
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: None,
        }
    }
}

/// Header changes applied by a `transform` policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct TransformConfig {
    /// Header changes to the request before it is forwarded.
    pub request: HeaderChanges,
    /// Header changes to the response before it is returned.
    pub response: HeaderChanges,
    /// Query parameter changes to the request before it is forwarded.
    pub query: QueryChanges,
    /// Field changes to a JSON request body before it is forwarded.
    pub request_body: JsonBodyChanges,
    /// Field changes to a JSON response body before it is returned.
    pub response_body: JsonBodyChanges,
    /// Largest body, in bytes, that `request_body` and `response_body` rewrite; a
    /// larger body passes unchanged. Defaults to 1 MiB.
    pub max_body_bytes: Option<u64>,
}

/// Field edits of a JSON body, by JSON pointer (RFC 6901), applied in the order
/// remove, set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct JsonBodyChanges {
    /// Pointers of fields to remove; a missing field is left alone.
    pub remove: Vec<String>,
    /// Fields to set, from pointer to JSON value, creating missing parent objects.
    pub set: BTreeMap<String, serde_json::Value>,
}

/// Header edits, applied in the order rename, remove, set, add.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct HeaderChanges {
    /// Headers to rename, from the old name to the new one, keeping their values.
    pub rename: BTreeMap<String, String>,
    /// Header names to remove.
    pub remove: Vec<String>,
    /// Headers to set, replacing any existing values.
    pub set: BTreeMap<String, String>,
    /// Headers to append, keeping existing values.
    pub add: BTreeMap<String, String>,
}

/// Query parameter edits, applied in the order remove, set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct QueryChanges {
    /// Parameter names to remove, every occurrence.
    pub remove: Vec<String>,
    /// Parameters to set, replacing every existing occurrence.
    pub set: BTreeMap<String, String>,
}

/// Request checks of a `validate` policy. A failed check rejects the request before it
/// reaches the upstream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct ValidateConfig {
    /// Media types a request body may have, such as `application/json`; a body of any
    /// other type, or without `Content-Type`, is rejected with 415.
    pub content_types: Vec<String>,
    /// Headers every request must carry; a missing one is rejected with 400.
    pub require_headers: Vec<String>,
    /// Query parameters every request must carry; a missing one is rejected with 400.
    pub require_query: Vec<String>,
    /// Largest request body, checked against `Content-Length` and, for bodies of
    /// unknown length, while the body streams; larger is 413.
    pub max_body_bytes: Option<u64>,
    /// JSON Schema that a request body must satisfy. A body that is not JSON or does
    /// not match is rejected with 400 naming the failing location. The body is read
    /// into memory first, up to `max_body_bytes` or `server.max_body_bytes`.
    pub json_schema: Option<serde_json::Value>,
    /// Path of a JSON file with the schema, relative to the config file, instead of
    /// `json_schema`. The native runtime reads it when the config loads; the edge
    /// targets, which have no files, need `json_schema`.
    pub json_schema_file: Option<String>,
}

impl Config {
    /// Reads the files the config names (`json_schema_file` of `validate` policies)
    /// with `read_file`, which takes the path as written and returns the file's text,
    /// and puts their contents in place. Returns a problem for each file that cannot
    /// be read or parsed.
    pub fn read_files(
        &mut self,
        read_file: &dyn Fn(&str) -> Result<String, String>,
    ) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (name, policy) in &mut self.policies {
            let PolicyConfig::Validate(validate) = policy else {
                continue;
            };
            let Some(file) = &validate.json_schema_file else {
                continue;
            };
            let path = format!("policies.{name}.validate.json_schema_file");
            if validate.json_schema.is_some() {
                errors.push(
                    ConfigError::new(path, "both json_schema and json_schema_file are set")
                        .with_hint("keep one of them"),
                );
                continue;
            }
            let parsed = read_file(file).and_then(|text| {
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|error| format!("{file} is not valid JSON: {error}"))
            });
            match parsed {
                Ok(schema) => validate.json_schema = Some(schema),
                Err(problem) => {
                    errors.push(ConfigError::new(path, problem));
                    // Reported here, so compiling does not report the missing schema again.
                    validate.json_schema_file = None;
                }
            }
        }
        errors
    }
}
