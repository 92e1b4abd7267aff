//! The declarative configuration, `gatehouse.toml` (or the same document as JSON).
//!
//! These types mirror the file. They are checked for shape by serde while loading
//! ([`load`]) and for meaning while compiling into a [`crate::Gateway`], and both steps
//! report every problem they find with its path, such as
//! `routes[2].match.path_prefix: must start with '/'`.

mod auth;
mod duration;
mod load;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use auth::{
    ApiKeyConfig, AuthorizeConfig, ConsumerConfig, JwksConfig, JwtConfig, JwtKeyConfig, OneOrMany,
    TokenSource,
};
pub use duration::ConfigDuration;
pub(crate) use load::closest_name;
pub use load::{ConfigError, ConfigErrors, Format, json_schema, load, parse};

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
}

/// A socket the native runtime serves HTTP/1.1 and HTTP/2 (prior knowledge) on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// Address and port to bind, for example `127.0.0.1:8080` or `[::]:8080`.
    pub address: String,
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
        }
    }
}

/// A named group of endpoints and how to balance requests among them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The servers of this upstream.
    pub endpoints: Vec<EndpointConfig>,
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
    /// Zone label for zone-aware routing.
    #[serde(default)]
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
    /// Name of the upstream that serves this route.
    pub upstream: String,
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
    pub timeouts: Option<TimeoutsConfig>,
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
    /// The period of the limit.
    pub period: ConfigDuration,
    /// Largest number of requests admitted at once with `gcra`; defaults to `limit`.
    #[serde(default)]
    pub burst: Option<u64>,
    /// The parts of the counter key; the default counts per client address.
    #[serde(default = "default_rate_limit_key")]
    pub key: Vec<RateLimitKey>,
    /// Units one request costs.
    #[serde(default = "default_cost")]
    pub cost: u64,
    /// Whether to send the `RateLimit-Policy` and `RateLimit` headers.
    #[serde(default = "default_true")]
    pub headers: bool,
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
