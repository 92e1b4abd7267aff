//! The `rate_limit` policy: a rate limit or quota per key, decided in the gateway's
//! memory or in a shared store.
//!
//! Counter keys start with the policy name, so two policies never share a counter.
//! Responses carry the `RateLimit-Policy` and `RateLimit` headers of the IETF
//! httpapi draft ("RateLimit header fields for HTTP", structured-field form):
//! `RateLimit-Policy: "name";q=100;w=60` and `RateLimit: "name";r=42;t=12`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use http::Request;
use http::header::{HeaderName, HeaderValue};

use crate::auth::Identity;
use crate::config::{
    CalendarPeriodConfig, ConfigError, OnStoreError, RateLimitAlgorithm, RateLimitConfig,
    RateLimitKey, StoreConfig, StoreMode, closest_name,
};
use crate::error::{Error, ErrorKind, ErrorSource};
use crate::limit::{
    CalendarPeriod, CalendarQuota, Decision, GcraLimit, Limit, MemoryCounters, WindowLimit,
};
use crate::platform::{CounterRequest, Counters};

/// Name of the header that describes the policy.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Name of the header that reports the remaining quota.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

#[derive(Debug, Clone)]
enum KeyPart {
    ClientIp,
    Route,
    Subject,
    Consumer,
    ApiKey,
    Claim(String),
    Header(HeaderName),
}

/// A limit with its `RateLimit-Policy` header value.
#[derive(Debug, Clone)]
struct PlanLimit {
    /// `None` when the limit failed validation; a gateway is never built with one.
    limit: Option<Limit>,
    policy_value: Option<HeaderValue>,
}

/// The shared store a policy counts in.
#[derive(Debug, Clone)]
struct SharedStore {
    name: String,
    mode: StoreMode,
    timeout: Duration,
}

/// A compiled `rate_limit` policy.
#[derive(Debug, Clone)]
pub struct RateLimitPolicy {
    name: String,
    default_limit: PlanLimit,
    plans: HashMap<String, PlanLimit>,
    key: Vec<KeyPart>,
    cost: u64,
    route_cost: HashMap<String, u64>,
    headers: bool,
    quota: bool,
    store: Option<SharedStore>,
    on_store_error: OnStoreError,
}

/// The request properties that rate-limit keys are built from.
#[derive(Debug, Clone, Copy)]
pub struct KeySource<'a, B> {
    /// The request.
    pub request: &'a Request<B>,
    /// The client address after trusted-proxy resolution.
    pub client_ip: IpAddr,
    /// The matched route's name.
    pub route: &'a str,
    /// The authenticated identity, if the route authenticates.
    pub identity: Option<&'a Identity>,
}

/// The stores a decision may use: the gateway's memory and the platform's shared ones.
#[derive(Debug)]
pub struct Stores<'a, C> {
    /// The process-local store of policies without `store`.
    pub local: &'a MemoryCounters,
    /// The platform's shared stores.
    pub shared: &'a C,
    /// The gateway's clock, in Unix microseconds.
    pub now_unix_micros: u64,
}

impl RateLimitPolicy {
    /// Validates `config`, reporting problems under `path`. `stores` are the
    /// config's `[stores]`, which `store` must name.
    pub fn compile(
        name: &str,
        config: &RateLimitConfig,
        stores: &BTreeMap<String, StoreConfig>,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        check_periods(config, path, errors);
        let default_limit = compile_limit(name, config, config.limit, config.burst, path, errors);
        let plans = config
            .plans
            .iter()
            .map(|(plan, limit)| {
                let plan_path = format!("{path}.plans.{plan}");
                let compiled =
                    compile_limit(name, config, limit.limit, limit.burst, &plan_path, errors);
                (plan.clone(), compiled)
            })
            .collect();
        if config.cost == 0 {
            errors.push(ConfigError::new(
                format!("{path}.cost"),
                "must be greater than 0",
            ));
        }
        for (route, cost) in &config.route_cost {
            if *cost == 0 {
                errors.push(ConfigError::new(
                    format!("{path}.route_cost.{route}"),
                    "must be greater than 0",
                ));
            }
        }

        Self {
            name: name.to_owned(),
            default_limit,
            plans,
            key: compile_key(&config.key, path, errors),
            cost: config.cost.max(1),
            route_cost: config
                .route_cost
                .iter()
                .map(|(route, cost)| (route.clone(), (*cost).max(1)))
                .collect(),
            headers: config.headers,
            quota: config.algorithm == RateLimitAlgorithm::Quota,
            store: compile_store(config, stores, path, errors),
            on_store_error: config.on_store_error,
        }
    }

    /// Decides `request` in its store: `Ok` with the headers to add to the response
    /// when admitted, or a 429 error that carries them. When the shared store fails,
    /// `on_store_error` decides, and a rejection is a 503.
    pub async fn check<B, C: Counters>(
        &self,
        source: &KeySource<'_, B>,
        stores: &Stores<'_, C>,
        headers_out: &mut Vec<(HeaderName, HeaderValue)>,
    ) -> Result<(), Error> {
        let plan = self.plan_for(source.identity);
        let Some(limit) = &plan.limit else {
            return Err(Error::internal("an invalid rate limit was compiled"));
        };
        let key = self.counter_key(source);
        let cost = self
            .route_cost
            .get(source.route)
            .copied()
            .unwrap_or(self.cost);

        let decision = match &self.store {
            None => stores
                .local
                .decide(&key, limit, cost, stores.now_unix_micros),
            Some(store) => {
                let request = CounterRequest {
                    store: &store.name,
                    key: &key,
                    limit,
                    cost,
                    mode: store.mode,
                    timeout: store.timeout,
                    now_unix_micros: stores.now_unix_micros,
                };
                match stores.shared.decide(&request).await {
                    Ok(decision) => decision,
                    Err(error) => return self.store_failed(error),
                }
            }
        };
        if self.headers {
            push_headers(&self.name, plan, &decision, headers_out);
        }
        if decision.allowed {
            return Ok(());
        }
        let (kind, message) = if self.quota {
            (ErrorKind::QuotaExceeded, "quota")
        } else {
            (ErrorKind::TooManyRequests, "rate limit")
        };
        Err(Error::new(
            kind,
            ErrorSource::Client,
            format!("{message} {:?} exceeded", self.name),
        )
        .with_retry_after(decision.retry_after))
    }

    /// Applies `on_store_error`. The store logs its failures at a bounded rate and
    /// counts them, so this logs nothing per request.
    fn store_failed(&self, error: Error) -> Result<(), Error> {
        match self.on_store_error {
            OnStoreError::Allow => Ok(()),
            OnStoreError::Deny => Err(Error::new(
                ErrorKind::Unavailable,
                ErrorSource::Platform,
                format!(
                    "the counter store of rate limit {:?} is unavailable",
                    self.name
                ),
            )
            .with_cause(error.to_string())),
        }
    }

    fn plan_for(&self, identity: Option<&Identity>) -> &PlanLimit {
        identity
            .and_then(|identity| identity.claims.get("plan"))
            .and_then(serde_json::Value::as_str)
            .and_then(|plan| self.plans.get(plan))
            .unwrap_or(&self.default_limit)
    }

    fn counter_key<B>(&self, source: &KeySource<'_, B>) -> String {
        // The unit separator cannot appear in header values, so parts cannot be
        // shifted into each other to collide.
        let mut key = self.name.clone();
        let identity = source.identity;
        for part in &self.key {
            key.push('\u{1f}');
            match part {
                KeyPart::ClientIp => {
                    let _ = write!(key, "{}", source.client_ip);
                }
                KeyPart::Route => key.push_str(source.route),
                KeyPart::Subject => {
                    key.push_str(identity.and_then(|id| id.subject.as_deref()).unwrap_or(""));
                }
                KeyPart::Consumer => {
                    key.push_str(identity.and_then(|id| id.consumer.as_deref()).unwrap_or(""));
                }
                KeyPart::ApiKey => {
                    key.push_str(
                        identity
                            .and_then(|id| id.api_key_id.as_deref())
                            .unwrap_or(""),
                    );
                }
                KeyPart::Claim(claim) => match identity.and_then(|id| id.claims.get(claim)) {
                    Some(serde_json::Value::String(value)) => key.push_str(value),
                    Some(value) => {
                        let _ = write!(key, "{value}");
                    }
                    None => {}
                },
                KeyPart::Header(name) => {
                    if let Some(value) = source.request.headers().get(name) {
                        key.push_str(&String::from_utf8_lossy(value.as_bytes()));
                    }
                }
            }
        }
        key
    }
}

fn push_headers(
    name: &str,
    plan: &PlanLimit,
    decision: &Decision,
    headers_out: &mut Vec<(HeaderName, HeaderValue)>,
) {
    if let Some(policy) = &plan.policy_value {
        headers_out.push((RATELIMIT_POLICY, policy.clone()));
    }
    let reset = decision.reset_after.as_millis().div_ceil(1000);
    let value = format!("\"{name}\";r={};t={reset}", decision.remaining);
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers_out.push((RATELIMIT, value));
    }
}

/// Checks that the algorithm has the period settings it uses and no others.
fn check_periods(config: &RateLimitConfig, path: &str, errors: &mut Vec<ConfigError>) {
    match config.algorithm {
        RateLimitAlgorithm::Gcra | RateLimitAlgorithm::SlidingWindow => {
            if config.period.is_none() {
                errors.push(
                    ConfigError::new(format!("{path}.period"), "is missing")
                        .with_hint("set the period of the limit, for example period = \"1m\""),
                );
            }
            if config.calendar.is_some() {
                errors.push(
                    ConfigError::new(
                        format!("{path}.calendar"),
                        "is only used with algorithm = \"quota\"",
                    )
                    .with_hint("remove calendar, or use the quota algorithm"),
                );
            }
        }
        RateLimitAlgorithm::Quota => {
            if config.period.is_some() == config.calendar.is_some() {
                errors.push(
                    ConfigError::new(path, "a quota needs exactly one of calendar and period")
                        .with_hint("calendar = \"month\" counts per UTC calendar month; period = \"24h\" counts over a rolling 24 hours"),
                );
            }
        }
    }
    if config.burst.is_some() && config.algorithm != RateLimitAlgorithm::Gcra {
        errors.push(
            ConfigError::new(
                format!("{path}.burst"),
                "is only used with algorithm = \"gcra\"",
            )
            .with_hint("remove burst, or use the gcra algorithm"),
        );
    }
}

fn compile_limit(
    name: &str,
    config: &RateLimitConfig,
    units: u64,
    burst: Option<u64>,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> PlanLimit {
    let period = config.period.map(|period| period.get());
    let limit = match (config.algorithm, period, config.calendar) {
        (RateLimitAlgorithm::Gcra, Some(period), _) => {
            GcraLimit::new(units, period, burst.unwrap_or(units)).map(Limit::Gcra)
        }
        (RateLimitAlgorithm::SlidingWindow | RateLimitAlgorithm::Quota, Some(period), None) => {
            WindowLimit::new(units, period).map(Limit::Window)
        }
        (RateLimitAlgorithm::Quota, None, Some(calendar)) => {
            let period = match calendar {
                CalendarPeriodConfig::Minute => CalendarPeriod::Minute,
                CalendarPeriodConfig::Hour => CalendarPeriod::Hour,
                CalendarPeriodConfig::Day => CalendarPeriod::Day,
                CalendarPeriodConfig::Month => CalendarPeriod::Month,
            };
            CalendarQuota::new(units, period).map(Limit::Calendar)
        }
        // The missing or conflicting period was reported by `check_periods`.
        _ => {
            return PlanLimit {
                limit: None,
                policy_value: None,
            };
        }
    };
    if limit.is_none() {
        errors.push(
            ConfigError::new(
                path,
                "limit, burst and period must be greater than 0, with at most one request per microsecond",
            )
            .with_hint("for example limit = 100 and period = \"1m\""),
        );
    }
    let policy_value = limit.and_then(|limit| {
        HeaderValue::from_str(&format!(
            "\"{name}\";q={};w={}",
            limit.quota_units(),
            limit.window_seconds()
        ))
        .ok()
    });
    PlanLimit {
        limit,
        policy_value,
    }
}

fn compile_key(parts: &[RateLimitKey], path: &str, errors: &mut Vec<ConfigError>) -> Vec<KeyPart> {
    let mut key = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        match part {
            RateLimitKey::ClientIp => key.push(KeyPart::ClientIp),
            RateLimitKey::Route => key.push(KeyPart::Route),
            RateLimitKey::Subject => key.push(KeyPart::Subject),
            RateLimitKey::Consumer => key.push(KeyPart::Consumer),
            RateLimitKey::ApiKey => key.push(KeyPart::ApiKey),
            RateLimitKey::Claim(claim) if claim.is_empty() => errors.push(
                ConfigError::new(format!("{path}.key[{index}].claim"), "is empty")
                    .with_hint("name a JWT claim, for example claim = \"tenant\""),
            ),
            RateLimitKey::Claim(claim) => key.push(KeyPart::Claim(claim.clone())),
            RateLimitKey::Header(header) => match HeaderName::from_bytes(header.as_bytes()) {
                Ok(header) => key.push(KeyPart::Header(header)),
                Err(_) => errors.push(ConfigError::new(
                    format!("{path}.key[{index}].header"),
                    format!("invalid header name {header:?}"),
                )),
            },
        }
    }
    key
}

fn compile_store(
    config: &RateLimitConfig,
    stores: &BTreeMap<String, StoreConfig>,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<SharedStore> {
    let Some(name) = &config.store else {
        if config.mode != StoreMode::Strict || config.store_timeout.is_some() {
            errors.push(
                ConfigError::new(
                    path,
                    "mode and store_timeout apply only to a policy with a store",
                )
                .with_hint("set store = \"NAME\" of a store in [stores], or remove them"),
            );
        }
        return None;
    };
    let Some(store) = stores.get(name) else {
        let names: Vec<&String> = stores.keys().collect();
        let hint = match closest_name(name, &names) {
            Some(close) => format!("did you mean {close:?}?"),
            None => format!(
                "define it as [stores.{name}.redis] with url = \"redis://HOST:PORT\" natively \
                 or on Spin, or as [stores.{name}.durable_object] on a Cloudflare Worker"
            ),
        };
        errors.push(
            ConfigError::new(
                format!("{path}.store"),
                format!("store {name:?} is not defined"),
            )
            .with_hint(hint),
        );
        return None;
    };
    let timeout = config
        .store_timeout
        .unwrap_or_else(|| store.timeout())
        .get();
    if timeout.is_zero() {
        errors.push(ConfigError::new(
            format!("{path}.store_timeout"),
            "must be greater than 0",
        ));
    }
    // TODO: async mode needs a local tier and a background call that outlives the
    // response (`waitUntil`); the Worker's store has neither yet.
    if config.mode == StoreMode::Async && matches!(store, StoreConfig::DurableObject(_)) {
        errors.push(
            ConfigError::new(
                format!("{path}.mode"),
                format!("durable_object store {name:?} supports only strict mode"),
            )
            .with_hint("remove mode, or set mode = \"strict\""),
        );
    }
    Some(SharedStore {
        name: name.clone(),
        mode: config.mode,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use serde_json::Value;

    use super::*;
    use crate::config::{ConfigDuration, PlanLimitConfig, RedisStoreConfig};
    use crate::limit::quota::days_from_civil;
    use crate::platform::NoSharedStores;

    const SECOND: u64 = 1_000_000;

    fn base_config() -> RateLimitConfig {
        RateLimitConfig {
            algorithm: RateLimitAlgorithm::Gcra,
            limit: 2,
            period: Some(ConfigDuration::from_millis(60_000)),
            calendar: None,
            burst: None,
            plans: BTreeMap::new(),
            key: vec![RateLimitKey::ClientIp],
            cost: 1,
            route_cost: BTreeMap::new(),
            headers: true,
            store: None,
            mode: StoreMode::Strict,
            on_store_error: OnStoreError::Allow,
            store_timeout: None,
        }
    }

    fn compile(name: &str, config: &RateLimitConfig) -> RateLimitPolicy {
        let mut errors = Vec::new();
        let compiled = RateLimitPolicy::compile(name, config, &redis_store(), "p", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        compiled
    }

    fn policy(configure: impl FnOnce(&mut RateLimitConfig)) -> RateLimitPolicy {
        let mut config = base_config();
        configure(&mut config);
        compile("per-client", &config)
    }

    fn redis_store() -> BTreeMap<String, StoreConfig> {
        let redis = RedisStoreConfig {
            url: "redis://127.0.0.1:6379".into(),
            password: None,
            username: None,
            pool_size: 1,
            timeout: ConfigDuration::from_millis(50),
            async_max_in_flight: 8,
            error_log_interval: ConfigDuration::from_millis(10_000),
        };
        BTreeMap::from([("shared".to_owned(), StoreConfig::Redis(redis))])
    }

    /// A request of one client, with an optional identity, at a time.
    struct Call<'a> {
        client: &'a str,
        header: Option<&'a str>,
        identity: Option<&'a Identity>,
        route: &'a str,
        now: u64,
    }

    impl Default for Call<'_> {
        fn default() -> Self {
            Self {
                client: "192.0.2.1",
                header: None,
                identity: None,
                route: "orders",
                now: SECOND,
            }
        }
    }

    fn send(
        policy: &RateLimitPolicy,
        store: &MemoryCounters,
        call: Call<'_>,
    ) -> (Result<(), Error>, Vec<(HeaderName, HeaderValue)>) {
        let mut builder = Request::get("/");
        if let Some(value) = call.header {
            builder = builder.header("x-api-key", value);
        }
        let request = builder.body(()).unwrap();
        let source = KeySource {
            request: &request,
            client_ip: call.client.parse().unwrap(),
            route: call.route,
            identity: call.identity,
        };
        let stores = Stores {
            local: store,
            shared: &NoSharedStores,
            now_unix_micros: call.now,
        };
        let mut headers = Vec::new();
        let result = block_on(policy.check(&source, &stores, &mut headers));
        (result, headers)
    }

    fn check(
        policy: &RateLimitPolicy,
        store: &MemoryCounters,
        client: &str,
        header: Option<&str>,
    ) -> (Result<(), Error>, Vec<(HeaderName, HeaderValue)>) {
        send(
            policy,
            store,
            Call {
                client,
                header,
                ..Call::default()
            },
        )
    }

    fn consumer(name: &str, plan: Option<&str>) -> Identity {
        let mut identity = Identity {
            subject: Some(name.to_owned()),
            consumer: Some(name.to_owned()),
            ..Identity::default()
        };
        if let Some(plan) = plan {
            identity
                .claims
                .insert("plan".to_owned(), Value::String(plan.to_owned()));
        }
        identity
    }

    #[test]
    fn limits_each_client_separately() {
        let policy = policy(|_| {});
        let store = MemoryCounters::new(100);
        assert!(check(&policy, &store, "192.0.2.1", None).0.is_ok());
        assert!(check(&policy, &store, "192.0.2.1", None).0.is_ok());
        let (result, _) = check(&policy, &store, "192.0.2.1", None);
        let error = result.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::TooManyRequests);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(30)));
        assert!(check(&policy, &store, "192.0.2.2", None).0.is_ok());
    }

    #[test]
    fn headers_report_policy_and_remaining() {
        let policy = policy(|_| {});
        let store = MemoryCounters::new(100);
        let (_, headers) = check(&policy, &store, "192.0.2.1", None);
        assert_eq!(
            headers[0],
            (
                RATELIMIT_POLICY,
                HeaderValue::from_static("\"per-client\";q=2;w=60")
            )
        );
        assert_eq!(
            headers[1],
            (
                RATELIMIT,
                HeaderValue::from_static("\"per-client\";r=1;t=30")
            )
        );
    }

    #[test]
    fn policies_never_share_counters() {
        let first = policy(|_| {});
        let mut config = base_config();
        config.headers = false;
        let second = compile("other", &config);
        let store = MemoryCounters::new(100);
        check(&first, &store, "192.0.2.1", None).0.unwrap();
        check(&first, &store, "192.0.2.1", None).0.unwrap();
        assert!(check(&first, &store, "192.0.2.1", None).0.is_err());
        assert!(check(&second, &store, "192.0.2.1", None).0.is_ok());
    }

    #[test]
    fn header_key_separates_callers() {
        let policy = policy(|config| config.key = vec![RateLimitKey::Header("x-api-key".into())]);
        let store = MemoryCounters::new(100);
        for _ in 0..2 {
            check(&policy, &store, "192.0.2.1", Some("alpha"))
                .0
                .unwrap();
        }
        assert!(
            check(&policy, &store, "192.0.2.9", Some("alpha"))
                .0
                .is_err()
        );
        assert!(check(&policy, &store, "192.0.2.1", Some("beta")).0.is_ok());
    }

    #[test]
    fn consumer_api_key_and_claim_keys() {
        let store = MemoryCounters::new(100);
        let by_consumer = policy(|config| {
            config.limit = 1;
            config.key = vec![RateLimitKey::Consumer];
        });
        let mut first_key = consumer("acme", None);
        first_key.api_key_id = Some("00aa".into());
        let mut second_key = first_key.clone();
        second_key.api_key_id = Some("00bb".into());
        let call = |identity| Call {
            identity: Some(identity),
            ..Call::default()
        };
        assert!(send(&by_consumer, &store, call(&first_key)).0.is_ok());
        // Another key of the same consumer, from another address, shares the counter.
        let other_client = Call {
            client: "192.0.2.7",
            ..call(&second_key)
        };
        assert!(send(&by_consumer, &store, other_client).0.is_err());

        let by_key = compile("by-key", &{
            let mut config = base_config();
            config.limit = 1;
            config.key = vec![RateLimitKey::ApiKey];
            config
        });
        assert!(send(&by_key, &store, call(&first_key)).0.is_ok());
        assert!(send(&by_key, &store, call(&second_key)).0.is_ok());
        assert!(send(&by_key, &store, call(&first_key)).0.is_err());

        let by_tenant = compile("by-tenant", &{
            let mut config = base_config();
            config.limit = 1;
            config.key = vec![RateLimitKey::Claim("tenant".into())];
            config
        });
        let mut red = Identity::default();
        red.claims
            .insert("tenant".into(), Value::String("red".into()));
        let mut blue = Identity::default();
        blue.claims
            .insert("tenant".into(), Value::String("blue".into()));
        assert!(send(&by_tenant, &store, call(&red)).0.is_ok());
        assert!(send(&by_tenant, &store, call(&blue)).0.is_ok());
        assert!(send(&by_tenant, &store, call(&red)).0.is_err());
    }

    #[test]
    fn plan_picks_the_limit() {
        let policy = policy(|config| {
            config.limit = 1;
            config.key = vec![RateLimitKey::Consumer];
            config.plans.insert(
                "gold".into(),
                PlanLimitConfig {
                    limit: 3,
                    burst: None,
                },
            );
        });
        let store = MemoryCounters::new(100);
        let free = consumer("free-user", Some("unknown-plan"));
        let gold = consumer("gold-user", Some("gold"));
        let admitted = |identity: &Identity| {
            (0..5)
                .filter(|_| {
                    let call = Call {
                        identity: Some(identity),
                        ..Call::default()
                    };
                    send(&policy, &store, call).0.is_ok()
                })
                .count()
        };
        assert_eq!(admitted(&free), 1, "an unknown plan gets the default limit");
        assert_eq!(admitted(&gold), 3);
        let (_, headers) = send(
            &policy,
            &store,
            Call {
                identity: Some(&gold),
                ..Call::default()
            },
        );
        assert_eq!(
            headers[0].1,
            HeaderValue::from_static("\"per-client\";q=3;w=60")
        );
    }

    #[test]
    fn plan_change_keeps_usage() {
        // Upgrading a consumer mid-period keeps what it used: the counter key does not
        // depend on the plan, only the limit does.
        let policy = policy(|config| {
            config.algorithm = RateLimitAlgorithm::Quota;
            config.period = None;
            config.calendar = Some(CalendarPeriodConfig::Day);
            config.limit = 2;
            config.key = vec![RateLimitKey::Consumer];
            config.plans.insert(
                "pro".into(),
                PlanLimitConfig {
                    limit: 5,
                    burst: None,
                },
            );
        });
        let store = MemoryCounters::new(100);
        let basic = consumer("acme", Some("basic"));
        let pro = consumer("acme", Some("pro"));
        let send_as = |identity: &Identity| {
            let call = Call {
                identity: Some(identity),
                ..Call::default()
            };
            send(&policy, &store, call).0.is_ok()
        };
        assert!(send_as(&basic));
        assert!(send_as(&basic));
        assert!(!send_as(&basic));
        let upgraded = (0..5).filter(|_| send_as(&pro)).count();
        assert_eq!(upgraded, 3, "5 for the pro plan, of which 2 were used");
        // A downgrade below the usage rejects until the period ends.
        assert!(!send_as(&basic));
    }

    #[test]
    fn quota_exhaustion_has_its_own_problem_type() {
        let policy = policy(|config| {
            config.algorithm = RateLimitAlgorithm::Quota;
            config.period = None;
            config.calendar = Some(CalendarPeriodConfig::Month);
            config.limit = 1;
        });
        let store = MemoryCounters::new(100);
        let day = 86_400 * SECOND;
        let march_31 = days_from_civil(2026, 3, 31) * day;
        let at = |now| Call {
            now,
            ..Call::default()
        };
        let (first, headers) = send(&policy, &store, at(march_31));
        assert!(first.is_ok());
        assert_eq!(
            headers[0].1,
            HeaderValue::from_static("\"per-client\";q=1;w=2592000")
        );
        let (second, _) = send(&policy, &store, at(march_31 + day / 2));
        let error = second.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::QuotaExceeded);
        assert_eq!(error.kind().slug(), "quota-exceeded");
        assert_eq!(error.retry_after(), Some(Duration::from_secs(43_200)));
        assert!(send(&policy, &store, at(march_31 + day)).0.is_ok());
    }

    #[test]
    fn route_cost_weighs_requests() {
        let policy = policy(|config| {
            config.limit = 10;
            config.route_cost.insert("reports".into(), 4);
        });
        let store = MemoryCounters::new(100);
        let on = |route| Call {
            route,
            ..Call::default()
        };
        assert!(send(&policy, &store, on("reports")).0.is_ok());
        assert!(send(&policy, &store, on("reports")).0.is_ok());
        let (result, headers) = send(&policy, &store, on("orders"));
        assert!(result.is_ok());
        assert_eq!(
            headers[1].1,
            HeaderValue::from_static("\"per-client\";r=1;t=54")
        );
        assert!(send(&policy, &store, on("reports")).0.is_err());
    }

    #[test]
    fn store_error_follows_on_store_error() {
        let store = MemoryCounters::new(100);
        let allow = policy(|config| config.store = Some("shared".into()));
        assert!(check(&allow, &store, "192.0.2.1", None).0.is_ok());
        let deny = policy(|config| {
            config.store = Some("shared".into());
            config.on_store_error = OnStoreError::Deny;
        });
        let error = check(&deny, &store, "192.0.2.1", None).0.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(
            store.is_empty(),
            "a shared-store policy must not count locally"
        );
    }

    #[test]
    fn invalid_config_reported() {
        let mut config = base_config();
        config.algorithm = RateLimitAlgorithm::SlidingWindow;
        config.limit = 0;
        config.period = Some(ConfigDuration::from_millis(1_000));
        config.burst = Some(3);
        config.key = vec![RateLimitKey::Header("bad header".into())];
        config.cost = 0;
        let mut errors = Vec::new();
        RateLimitPolicy::compile(
            "p",
            &config,
            &BTreeMap::new(),
            "policies.p.rate_limit",
            &mut errors,
        );
        let paths: Vec<&str> = errors.iter().map(|error| error.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "policies.p.rate_limit.burst",
                "policies.p.rate_limit",
                "policies.p.rate_limit.cost",
                "policies.p.rate_limit.key[0].header"
            ]
        );
    }

    type Configure = fn(&mut RateLimitConfig);

    #[test]
    fn store_settings_validated() {
        // (change to a valid config, path of the error, part of its message)
        let cases: [(Configure, &str, &str); 4] = [
            (
                |config| config.store = Some("sharde".into()),
                "policies.p.rate_limit.store",
                "did you mean \"shared\"?",
            ),
            (
                |config| config.mode = StoreMode::Async,
                "policies.p.rate_limit",
                "set store",
            ),
            (
                |config| {
                    config.algorithm = RateLimitAlgorithm::Quota;
                    config.calendar = Some(CalendarPeriodConfig::Day);
                },
                "policies.p.rate_limit",
                "calendar = \"month\"",
            ),
            (
                |config| config.period = None,
                "policies.p.rate_limit.period",
                "period = \"1m\"",
            ),
        ];
        for (configure, path, hint) in cases {
            let mut config = base_config();
            configure(&mut config);
            let mut errors = Vec::new();
            RateLimitPolicy::compile(
                "p",
                &config,
                &redis_store(),
                "policies.p.rate_limit",
                &mut errors,
            );
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].path, path);
            let shown = errors[0].to_string();
            assert!(shown.contains(hint), "{shown:?} lacks {hint:?}");
        }
    }

    #[test]
    fn durable_object_store_is_strict_only() {
        let text = "[stores.shared.durable_object]\n";
        let config: crate::config::Config = toml::from_str(text).unwrap();
        let stores = config.stores;
        let StoreConfig::DurableObject(object) = &stores["shared"] else {
            panic!("parsed as another store type: {stores:?}");
        };
        assert_eq!(object.binding, "GATEHOUSE_COUNTERS");
        assert_eq!(object.timeout.get(), Duration::from_millis(200));

        let mut config = base_config();
        config.store = Some("shared".into());
        let mut errors = Vec::new();
        RateLimitPolicy::compile("p", &config, &stores, "policies.p.rate_limit", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");

        config.mode = StoreMode::Async;
        RateLimitPolicy::compile("p", &config, &stores, "policies.p.rate_limit", &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "policies.p.rate_limit.mode");
        assert!(errors[0].to_string().contains("strict"), "{errors:?}");
    }
}
