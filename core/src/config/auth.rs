//! Config types of the authentication and authorization policies and of `[consumers]`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConfigDuration;

/// One value or a list of values, so `issuer = "a"` and `issuer = ["a", "b"]` both parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// Returns the values as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(value) => vec![value.clone()],
            Self::Many(values) => values.clone(),
        }
    }
}

/// An API client identified by an API key, with the metadata that authorization and
/// rate limits use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Lowercase or uppercase hex SHA-256 of each API key of this consumer; several
    /// keys let a consumer rotate without downtime. Only hashes are stored, so the
    /// config never contains a usable key.
    pub api_key_sha256: Option<OneOrMany>,
    /// Plan name, such as `"free"` or `"gold"`.
    pub plan: Option<String>,
    /// Groups that `authorize` policies can require.
    pub groups: Vec<String>,
}

/// The place in a request a credential is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `Authorization: Bearer TOKEN` (RFC 6750).
    Bearer,
    /// The whole value of the named request header.
    Header(String),
    /// The value of the named cookie.
    Cookie(String),
    /// The value of the named query parameter.
    Query(String),
}

/// Settings of a `jwt` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct JwtConfig {
    /// Where the token is read from, in order. A request that carries a token in more
    /// than one of them, or more than one `Authorization` header, is rejected with 400.
    pub token_from: Vec<TokenSource>,
    /// Static verification keys.
    pub keys: Vec<JwtKeyConfig>,
    /// A JWKS document fetched from a URL and cached.
    pub jwks: Option<JwksConfig>,
    /// Accepted `iss` values; when set, a token without a listed `iss` is rejected.
    pub issuer: Option<OneOrMany>,
    /// Accepted audiences; when set, the token's `aud` (a string or a list) must
    /// contain at least one of them.
    pub audience: Option<OneOrMany>,
    /// Clock skew allowed when checking `exp` and `nbf`.
    pub leeway: ConfigDuration,
    /// Claims every token must carry, such as `["sub"]`. `exp` here makes tokens
    /// without an expiry invalid.
    pub required_claims: Vec<String>,
    /// Whether the token is forwarded to the upstream unchanged, so services can
    /// verify it themselves.
    pub forward_token: bool,
    /// Whether the identity is sent upstream in `x-auth-subject`, `x-auth-consumer`,
    /// `x-auth-scopes` and `x-auth-groups`.
    pub identity_headers: bool,
    /// The cache of tokens whose signature was already checked.
    pub verified_cache: VerifiedCacheConfig,
}

/// Settings of a `jwt` policy's cache of verified tokens.
///
/// A token seen again within `max_age` skips its signature check; its claims (`exp`,
/// `nbf`, `iss`, `aud`, required claims) are still checked on every request, and an
/// entry never outlives the token's `exp`. Only tokens that passed the signature check
/// enter, so a client sending random tokens cannot push valid ones out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct VerifiedCacheConfig {
    /// Most tokens kept per policy; 0 turns the cache off.
    pub max_tokens: usize,
    /// How long a verified token is trusted without a new signature check. It bounds
    /// how long a token stays accepted after its key was removed from the JWKS or its
    /// HMAC secret was changed.
    pub max_age: ConfigDuration,
}

/// Keeps 10,000 tokens for up to 60 seconds.
impl Default for VerifiedCacheConfig {
    fn default() -> Self {
        Self {
            max_tokens: 10_000,
            max_age: ConfigDuration::from_millis(60_000),
        }
    }
}

/// Accepts only `Authorization: Bearer` by default, allows 60 seconds of clock skew,
/// forwards the token and sets the identity headers.
impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            token_from: vec![TokenSource::Bearer],
            keys: Vec::new(),
            jwks: None,
            issuer: None,
            audience: None,
            leeway: ConfigDuration::from_millis(60_000),
            required_claims: Vec::new(),
            forward_token: true,
            identity_headers: true,
            verified_cache: VerifiedCacheConfig::default(),
        }
    }
}

/// A static JWT verification key. The algorithm is pinned: a token whose header names
/// another algorithm is never checked against this key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Key id; a token whose header has a `kid` uses only the key with that id.
    #[serde(default)]
    pub kid: Option<String>,
    /// Algorithm: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512,
    /// ES256 or EdDSA.
    pub alg: String,
    /// A public key as a JSON Web Key (RSA, EC P-256 or OKP Ed25519). Symmetric keys
    /// are not accepted inline; use `secret`.
    #[serde(default)]
    pub jwk: Option<serde_json::Value>,
    /// Name of the platform secret holding an HMAC key (HS* algorithms only): an
    /// environment variable natively, a Worker secret or a Spin variable on the edge.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A JWKS URL and how its keys are cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct JwksConfig {
    /// Absolute `http://` or `https://` URL of the JWKS document.
    pub url: String,
    /// Algorithms allowed for keys without an `alg` member; a key with `alg` is
    /// pinned to it. HMAC algorithms are never accepted from a JWKS.
    pub algorithms: Vec<String>,
    /// How long fetched keys are used when the response has no `Cache-Control: max-age`.
    pub ttl: ConfigDuration,
    /// Lower bound on a `max-age` from the JWKS response.
    pub min_ttl: ConfigDuration,
    /// Upper bound on a `max-age` from the JWKS response.
    pub max_ttl: ConfigDuration,
    /// Minimum time between two fetches, whatever the reason: expiry, an unknown
    /// `kid` or a failed fetch. It bounds the fetches a flood of random `kid`s causes.
    pub refetch_interval: ConfigDuration,
    /// How long expired keys are still used while fetching fails.
    pub stale_grace: ConfigDuration,
    /// Maximum time for one fetch.
    pub timeout: ConfigDuration,
}

/// Defaults: keys kept 5 minutes (1 minute to 1 day when the server says), at most
/// one fetch per 30 seconds, expired keys usable for 1 hour while the endpoint is down.
impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            algorithms: vec!["RS256".to_owned(), "ES256".to_owned(), "EdDSA".to_owned()],
            ttl: ConfigDuration::from_millis(300_000),
            min_ttl: ConfigDuration::from_millis(60_000),
            max_ttl: ConfigDuration::from_millis(86_400_000),
            refetch_interval: ConfigDuration::from_millis(30_000),
            stale_grace: ConfigDuration::from_millis(3_600_000),
            timeout: ConfigDuration::from_millis(5_000),
        }
    }
}

/// Settings of an `api_key` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Where the key is read from: `{ header = "NAME" }` or `{ query = "NAME" }`.
    /// A request with keys in more than one place is rejected with 400.
    pub key_from: Vec<TokenSource>,
    /// Consumers from `[consumers]` this policy accepts; empty accepts all.
    pub consumers: Vec<String>,
    /// Whether the key header is forwarded to the upstream. Off by default, so
    /// services never see client keys.
    pub forward_key: bool,
    /// Whether the identity is sent upstream in the `x-auth-*` headers.
    pub identity_headers: bool,
    /// Looks keys that `[consumers]` does not list up in the platform's key-value
    /// store, under this prefix followed by the lowercase hex SHA-256 of the key, such
    /// as `"api-key:"`. The entry is a JSON consumer record:
    /// `{"name": "acme", "plan": "gold", "groups": ["partners"]}`. Unset, only
    /// `[consumers]` is used.
    pub key_value_prefix: Option<String>,
}

/// Reads `x-api-key`, accepts every consumer, strips the key and sets identity headers.
impl Default for ApiKeyConfig {
    fn default() -> Self {
        Self {
            key_from: vec![TokenSource::Header("x-api-key".to_owned())],
            consumers: Vec::new(),
            forward_key: false,
            identity_headers: true,
            key_value_prefix: None,
        }
    }
}

/// Requirements of an `authorize` policy on the identity that a `jwt` or `api_key`
/// policy of the same route established. All listed requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct AuthorizeConfig {
    /// Scopes that must all be granted (`scope` or `scp` claim).
    pub scopes: Vec<String>,
    /// Roles of which at least one must be in the `roles` claim.
    pub roles: Vec<String>,
    /// Claims that must have these values; a list claim must contain the value.
    pub claims: BTreeMap<String, serde_json::Value>,
    /// Consumer groups of which at least one must be the consumer's.
    pub groups: Vec<String>,
    /// Consumers of which the caller must be one.
    pub consumers: Vec<String>,
}
