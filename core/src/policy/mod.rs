//! Named policies and the set of them that applies to each route.
//!
//! A route's policies run in fixed pipeline phases, whatever their order in the
//! config: access (`ip`, `cors` preflights), then authentication (`jwt` or `api_key`)
//! and authorization (`authorize`), then `validate`, then `rate_limit`, then the
//! `cache` lookup, then request transforms just before forwarding, response transforms,
//! the cache store and CORS headers on the way back. Within a
//! phase, policies run in the order listed, `server.policies` first.

pub mod cors;
pub mod ip;
pub mod rate_limit;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auth::{ApiKeyPolicy, Authenticator, AuthorizePolicy, ConsumerTable, JwtPolicy};
use crate::cache::CachePolicy;
use crate::config::{ConfigError, PolicyConfig};
use crate::transform::{CompiledBodyChanges, CompiledHeaderChanges, CompiledQueryChanges};
pub use cors::CorsPolicy;
pub use ip::IpPolicy;
pub use rate_limit::RateLimitPolicy;
pub use validate::ValidatePolicy;

/// One compiled named policy.
#[derive(Debug, Clone)]
pub(crate) enum CompiledPolicy {
    Transform {
        request: Arc<CompiledHeaderChanges>,
        response: Arc<CompiledHeaderChanges>,
        query: Arc<CompiledQueryChanges>,
        request_body: Arc<CompiledBodyChanges>,
        response_body: Arc<CompiledBodyChanges>,
    },
    Ip(Arc<IpPolicy>),
    Cors(Arc<CorsPolicy>),
    Validate(Arc<ValidatePolicy>),
    RateLimit(Arc<RateLimitPolicy>),
    Authenticate(Authenticator),
    Authorize(Arc<AuthorizePolicy>),
    Cache(Arc<CachePolicy>),
}

/// The policies of one route, grouped by the phase they run in.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicySet {
    pub ip: Vec<Arc<IpPolicy>>,
    pub cors: Option<Arc<CorsPolicy>>,
    pub validate: Vec<Arc<ValidatePolicy>>,
    pub rate_limits: Vec<Arc<RateLimitPolicy>>,
    pub query_changes: Vec<Arc<CompiledQueryChanges>>,
    pub authenticate: Option<Authenticator>,
    pub authorize: Vec<Arc<AuthorizePolicy>>,
    pub request_changes: Vec<Arc<CompiledHeaderChanges>>,
    pub response_changes: Vec<Arc<CompiledHeaderChanges>>,
    pub cache: Option<Arc<CachePolicy>>,
    pub request_body_changes: Vec<Arc<CompiledBodyChanges>>,
    pub response_body_changes: Vec<Arc<CompiledBodyChanges>>,
}

impl PolicySet {
    /// Adds `policy`, reporting a second `cors` policy at `path`: two sets of allowed
    /// origins on one route would leave it unclear which one handles a preflight.
    pub fn add(&mut self, policy: &CompiledPolicy, path: &str, errors: &mut Vec<ConfigError>) {
        match policy {
            CompiledPolicy::Transform {
                request,
                response,
                query,
                request_body,
                response_body,
            } => {
                if !request_body.is_empty() {
                    self.request_body_changes.push(Arc::clone(request_body));
                }
                if !response_body.is_empty() {
                    self.response_body_changes.push(Arc::clone(response_body));
                }
                if !query.is_empty() {
                    self.query_changes.push(Arc::clone(query));
                }
                if !request.is_empty() {
                    self.request_changes.push(Arc::clone(request));
                }
                if !response.is_empty() {
                    self.response_changes.push(Arc::clone(response));
                }
            }
            CompiledPolicy::Ip(ip) => self.ip.push(Arc::clone(ip)),
            CompiledPolicy::Validate(validate) => self.validate.push(Arc::clone(validate)),
            CompiledPolicy::RateLimit(limit) => self.rate_limits.push(Arc::clone(limit)),
            CompiledPolicy::Cors(cors) => {
                if self.cors.is_some() {
                    errors.push(
                        ConfigError::new(path, "a second cors policy applies to this route")
                            .with_hint("merge the origins into one cors policy"),
                    );
                }
                self.cors = Some(Arc::clone(cors));
            }
            CompiledPolicy::Authenticate(authenticator) => {
                if self.authenticate.is_some() {
                    errors.push(
                        ConfigError::new(path, "a second authentication policy applies to this route")
                            .with_hint("a route takes one jwt or api_key policy; use separate routes for different credentials"),
                    );
                }
                self.authenticate = Some(authenticator.clone());
            }
            CompiledPolicy::Authorize(authorize) => self.authorize.push(Arc::clone(authorize)),
            CompiledPolicy::Cache(cache) => {
                if self.cache.is_some() {
                    errors.push(
                        ConfigError::new(path, "a second cache policy applies to this route")
                            .with_hint("keep one cache policy per route"),
                    );
                }
                self.cache = Some(Arc::clone(cache));
            }
        }
    }
}

/// Compiles every named policy, reporting problems under `policies.NAME.TYPE`.
pub(crate) fn compile_policies(
    policies: &BTreeMap<String, PolicyConfig>,
    consumers: &Arc<ConsumerTable>,
    stores: &BTreeMap<String, crate::config::StoreConfig>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, CompiledPolicy> {
    policies
        .iter()
        .map(|(name, policy)| {
            (
                name.clone(),
                compile_policy(name, policy, consumers, stores, errors),
            )
        })
        .collect()
}

fn compile_policy(
    name: &str,
    policy: &PolicyConfig,
    consumers: &Arc<ConsumerTable>,
    stores: &BTreeMap<String, crate::config::StoreConfig>,
    errors: &mut Vec<ConfigError>,
) -> CompiledPolicy {
    match policy {
        PolicyConfig::Transform(transform) => {
            let path = format!("policies.{name}.transform");
            let request = CompiledHeaderChanges::compile(
                &transform.request,
                &format!("{path}.request"),
                errors,
            );
            let response = CompiledHeaderChanges::compile(
                &transform.response,
                &format!("{path}.response"),
                errors,
            );
            let query =
                CompiledQueryChanges::compile(&transform.query, &format!("{path}.query"), errors);
            if transform.max_body_bytes == Some(0) {
                errors.push(ConfigError::new(
                    format!("{path}.max_body_bytes"),
                    "must be greater than 0",
                ));
            }
            let request_body = CompiledBodyChanges::compile(
                &transform.request_body,
                transform.max_body_bytes,
                &format!("{path}.request_body"),
                errors,
            );
            let response_body = CompiledBodyChanges::compile(
                &transform.response_body,
                transform.max_body_bytes,
                &format!("{path}.response_body"),
                errors,
            );
            CompiledPolicy::Transform {
                request: Arc::new(request),
                response: Arc::new(response),
                query: Arc::new(query),
                request_body: Arc::new(request_body),
                response_body: Arc::new(response_body),
            }
        }
        PolicyConfig::Ip(ip) => CompiledPolicy::Ip(Arc::new(IpPolicy::compile(
            ip,
            &format!("policies.{name}.ip"),
            errors,
        ))),
        PolicyConfig::Cors(cors) => CompiledPolicy::Cors(Arc::new(CorsPolicy::compile(
            cors,
            &format!("policies.{name}.cors"),
            errors,
        ))),
        PolicyConfig::Validate(validate) => CompiledPolicy::Validate(Arc::new(
            ValidatePolicy::compile(validate, &format!("policies.{name}.validate"), errors),
        )),
        PolicyConfig::RateLimit(limit) => {
            CompiledPolicy::RateLimit(Arc::new(RateLimitPolicy::compile(
                name,
                limit,
                stores,
                &format!("policies.{name}.rate_limit"),
                errors,
            )))
        }
        PolicyConfig::Jwt(jwt) => CompiledPolicy::Authenticate(Authenticator::Jwt(Arc::new(
            JwtPolicy::compile(jwt, &format!("policies.{name}.jwt"), errors),
        ))),
        PolicyConfig::ApiKey(api_key) => {
            CompiledPolicy::Authenticate(Authenticator::ApiKey(Arc::new(ApiKeyPolicy::compile(
                api_key,
                consumers,
                &format!("policies.{name}.api_key"),
                errors,
            ))))
        }
        PolicyConfig::Authorize(authorize) => CompiledPolicy::Authorize(Arc::new(
            AuthorizePolicy::compile(authorize, &format!("policies.{name}.authorize"), errors),
        )),
        PolicyConfig::Cache(cache) => CompiledPolicy::Cache(Arc::new(CachePolicy::compile(
            cache,
            stores,
            &format!("policies.{name}.cache"),
            errors,
        ))),
    }
}
