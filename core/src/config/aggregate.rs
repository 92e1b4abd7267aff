//! Settings of routes with `dispatch = "aggregate"`, which respond with one JSON
//! object built from several upstream calls.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConfigDuration;

/// The handling of a request after its route's policies passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Dispatch {
    /// Forward the request to the route's `upstream` and return its response.
    #[default]
    Proxy,
    /// Send the calls of the route's `aggregate` table and return their JSON bodies
    /// merged into one object.
    Aggregate,
    /// Remove cached responses named by the JSON request body, `{"url": "HOST/PATH"}`
    /// or `{"prefix": "HOST/PATH"}`. The route must have a `jwt` or `api_key` policy.
    Purge,
}

impl Dispatch {
    /// Returns whether this is the default, `proxy`, which serialized configs omit.
    pub fn is_proxy(&self) -> bool {
        *self == Self::Proxy
    }
}

/// The calls of an aggregate route and how their responses are combined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The upstream calls, merged into the response in this order.
    pub calls: Vec<AggregateCallConfig>,
    /// Maximum calls of one request in flight at once; the others wait for a free
    /// slot.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Maximum length of a chain of calls that use fields of earlier calls. A call
    /// that uses no other call has depth 1.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Largest response body of one call, in bytes; a larger one fails the call.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

/// Cloudflare Workers allow 6 simultaneous outgoing connections per request (the
/// Workers limits page), so a larger default would queue calls there anyway.
pub const DEFAULT_AGGREGATE_MAX_IN_FLIGHT: usize = 6;

fn default_max_in_flight() -> usize {
    DEFAULT_AGGREGATE_MAX_IN_FLIGHT
}

/// Each level of a chain adds a full upstream round trip to the response time, so
/// chains stay short unless the config raises the limit.
pub const DEFAULT_AGGREGATE_MAX_DEPTH: usize = 3;

fn default_max_depth() -> usize {
    DEFAULT_AGGREGATE_MAX_DEPTH
}

/// 1 MiB per call bounds the memory of one aggregate request to
/// `calls × 1 MiB` plus the merged copy.
pub const DEFAULT_AGGREGATE_MAX_BODY_BYTES: usize = 1024 * 1024;

fn default_max_body_bytes() -> usize {
    DEFAULT_AGGREGATE_MAX_BODY_BYTES
}

/// One upstream request of an aggregate route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AggregateCallConfig {
    /// Name of the call, unique within the route: letters, digits and `_`. Errors
    /// name it, and later calls refer to its response as `{NAME:/json/pointer}`.
    pub name: String,
    /// Name of the upstream in `[upstreams]` that the call is sent to.
    pub upstream: String,
    /// Request method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path and optional query sent upstream. `{param}` inserts a parameter of the
    /// route's `match.path_template`, `{query.NAME}` a query parameter of the client
    /// request, and `{CALL:/pointer}` a string, number or boolean at a JSON pointer
    /// into the response body of call CALL, which makes this call wait for it.
    pub path: String,
    /// Maximum time for the call, from sending it to reading its whole body; the
    /// route's or the upstream's timeouts when absent.
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// What a failure of this call does to the response.
    #[serde(default)]
    pub on_error: OnCallError,
    /// Where the response body goes in the merged object.
    #[serde(default)]
    pub merge: CallMerge,
    /// Member of the merged object that holds the body with `merge = "key"`; the
    /// call's name when absent.
    #[serde(default)]
    pub key: Option<String>,
}

fn default_method() -> String {
    "GET".to_owned()
}

/// What a failed call does to the aggregate response. A call fails when it gets no
/// response, a status outside 200 to 299, a body larger than `max_body_bytes` or a
/// body that is not JSON, or when a call it uses failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnCallError {
    /// The whole response fails with 502, naming the call.
    #[default]
    Required,
    /// The call's key becomes `null` and the `errors` member describes the failure.
    Optional,
}

/// How a call's response body enters the merged object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallMerge {
    /// The body becomes the value of member `key`.
    #[default]
    Key,
    /// The body, a JSON object, is merged member by member into the merged object:
    /// objects merge recursively, and any other value replaces what an earlier call
    /// put there.
    Deep,
    /// The body is not merged; later calls can still use its fields.
    None,
}
