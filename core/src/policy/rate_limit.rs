//! The `rate_limit` policy: a limit per key, decided in the process-local store.
//!
//! Counter keys start with the policy name, so two policies never share a counter.
//! Responses carry the `RateLimit-Policy` and `RateLimit` headers of the IETF
//! httpapi draft ("RateLimit header fields for HTTP", structured-field form):
//! `RateLimit-Policy: "name";q=100;w=60` and `RateLimit: "name";r=42;t=12`.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::Request;
use http::header::{HeaderName, HeaderValue};

use crate::config::{ConfigError, RateLimitAlgorithm, RateLimitConfig, RateLimitKey};
use crate::error::{Error, ErrorKind, ErrorSource};
use crate::limit::{Decision, GcraLimit, MemoryCounters, WindowLimit};

/// Name of the header that describes the policy.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Name of the header that reports the remaining quota.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

#[derive(Debug, Clone, Copy)]
enum Limit {
    Gcra(GcraLimit),
    Window(WindowLimit),
    /// A limit that failed validation; a gateway is never built with one.
    Invalid,
}

#[derive(Debug, Clone)]
enum KeyPart {
    ClientIp,
    Route,
    Subject,
    Header(HeaderName),
}

/// A compiled `rate_limit` policy.
#[derive(Debug, Clone)]
pub struct RateLimitPolicy {
    name: String,
    limit: Limit,
    key: Vec<KeyPart>,
    cost: u64,
    headers: bool,
    policy_value: Option<HeaderValue>,
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
    /// The authenticated subject (JWT `sub`, or the API key's consumer), if any.
    pub subject: Option<&'a str>,
}

impl RateLimitPolicy {
    /// Validates `config`, reporting problems under `path`.
    pub fn compile(
        name: &str,
        config: &RateLimitConfig,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let period = config.period.get();
        let limit = match config.algorithm {
            RateLimitAlgorithm::Gcra => {
                let burst = config.burst.unwrap_or(config.limit);
                GcraLimit::new(config.limit, period, burst).map(Limit::Gcra)
            }
            RateLimitAlgorithm::SlidingWindow => {
                if config.burst.is_some() {
                    errors.push(
                        ConfigError::new(
                            format!("{path}.burst"),
                            "is only used with algorithm = \"gcra\"",
                        )
                        .with_hint("remove burst, or use the gcra algorithm"),
                    );
                }
                WindowLimit::new(config.limit, period).map(Limit::Window)
            }
        };
        let limit = limit.unwrap_or_else(|| {
            errors.push(
                ConfigError::new(
                    path,
                    "limit, burst and period must be greater than 0, with at most one request per microsecond",
                )
                .with_hint("for example limit = 100 and period = \"1m\""),
            );
            Limit::Invalid
        });
        if config.cost == 0 {
            errors.push(ConfigError::new(
                format!("{path}.cost"),
                "must be greater than 0",
            ));
        }

        let mut key = Vec::new();
        for (index, part) in config.key.iter().enumerate() {
            match part {
                RateLimitKey::ClientIp => key.push(KeyPart::ClientIp),
                RateLimitKey::Route => key.push(KeyPart::Route),
                RateLimitKey::Subject => key.push(KeyPart::Subject),
                RateLimitKey::Header(header) => match HeaderName::from_bytes(header.as_bytes()) {
                    Ok(header) => key.push(KeyPart::Header(header)),
                    Err(_) => errors.push(ConfigError::new(
                        format!("{path}.key[{index}].header"),
                        format!("invalid header name {header:?}"),
                    )),
                },
            }
        }

        let policy_value = HeaderValue::from_str(&format!(
            "\"{name}\";q={};w={}",
            config.limit,
            period.as_secs().max(1)
        ))
        .ok();
        Self {
            name: name.to_owned(),
            limit,
            key,
            cost: config.cost.max(1),
            headers: config.headers,
            policy_value,
        }
    }

    /// Decides `request` against the store: `Ok` with the headers to add to the
    /// response when admitted, or a 429 error that carries them.
    pub fn check<B>(
        &self,
        source: &KeySource<'_, B>,
        store: &MemoryCounters,
        now_micros: u64,
        headers_out: &mut Vec<(HeaderName, HeaderValue)>,
    ) -> Result<(), Error> {
        let key = self.counter_key(source);
        let decision = match &self.limit {
            Limit::Gcra(limit) => store.gcra(&key, limit, self.cost, now_micros),
            Limit::Window(limit) => store.window(&key, limit, self.cost, now_micros),
            Limit::Invalid => return Err(Error::internal("an invalid rate limit was compiled")),
        };
        if self.headers {
            self.push_headers(&decision, headers_out);
        }
        if decision.allowed {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::TooManyRequests,
            ErrorSource::Client,
            format!("rate limit {:?} exceeded", self.name),
        )
        .with_retry_after(decision.retry_after))
    }

    fn counter_key<B>(&self, source: &KeySource<'_, B>) -> String {
        // The unit separator cannot appear in header values, so parts cannot be
        // shifted into each other to collide.
        let mut key = self.name.clone();
        for part in &self.key {
            key.push('\u{1f}');
            match part {
                KeyPart::ClientIp => {
                    let _ = write!(key, "{}", source.client_ip);
                }
                KeyPart::Route => key.push_str(source.route),
                KeyPart::Subject => key.push_str(source.subject.unwrap_or_default()),
                KeyPart::Header(name) => {
                    if let Some(value) = source.request.headers().get(name) {
                        key.push_str(&String::from_utf8_lossy(value.as_bytes()));
                    }
                }
            }
        }
        key
    }

    fn push_headers(&self, decision: &Decision, headers_out: &mut Vec<(HeaderName, HeaderValue)>) {
        if let Some(policy) = &self.policy_value {
            headers_out.push((RATELIMIT_POLICY, policy.clone()));
        }
        let reset = decision.reset_after.as_millis().div_ceil(1000);
        let value = format!("\"{}\";r={};t={reset}", self.name, decision.remaining);
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers_out.push((RATELIMIT, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ConfigDuration;

    fn policy(configure: impl FnOnce(&mut RateLimitConfig)) -> RateLimitPolicy {
        let mut config = RateLimitConfig {
            algorithm: RateLimitAlgorithm::Gcra,
            limit: 2,
            period: ConfigDuration::from_millis(60_000),
            burst: None,
            key: vec![RateLimitKey::ClientIp],
            cost: 1,
            headers: true,
        };
        configure(&mut config);
        let mut errors = Vec::new();
        let compiled = RateLimitPolicy::compile("per-client", &config, "p", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        compiled
    }

    fn check(
        policy: &RateLimitPolicy,
        store: &MemoryCounters,
        client: &str,
        header: Option<&str>,
    ) -> (Result<(), Error>, Vec<(HeaderName, HeaderValue)>) {
        let mut builder = Request::get("/");
        if let Some(value) = header {
            builder = builder.header("x-api-key", value);
        }
        let request = builder.body(()).unwrap();
        let source = KeySource {
            request: &request,
            client_ip: client.parse().unwrap(),
            route: "orders",
            subject: None,
        };
        let mut headers = Vec::new();
        let result = policy.check(&source, store, 1_000_000, &mut headers);
        (result, headers)
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
        let config = RateLimitConfig {
            algorithm: RateLimitAlgorithm::Gcra,
            limit: 2,
            period: ConfigDuration::from_millis(60_000),
            burst: None,
            key: vec![RateLimitKey::ClientIp],
            cost: 1,
            headers: false,
        };
        let second = RateLimitPolicy::compile("other", &config, "p", &mut Vec::new());
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
    fn invalid_config_reported() {
        let config = RateLimitConfig {
            algorithm: RateLimitAlgorithm::SlidingWindow,
            limit: 0,
            period: ConfigDuration::from_millis(1_000),
            burst: Some(3),
            key: vec![RateLimitKey::Header("bad header".into())],
            cost: 0,
            headers: true,
        };
        let mut errors = Vec::new();
        RateLimitPolicy::compile("p", &config, "policies.p.rate_limit", &mut errors);
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
}
