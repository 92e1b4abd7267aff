//! The compiled `cache` policy.

use std::collections::BTreeMap;
use std::time::Duration;

use http::HeaderName;

use crate::config::{CacheConfig, CacheQuery, ConfigError, StoreConfig, closest_name};

/// A `cache` policy with its names parsed.
#[derive(Debug, Clone)]
pub(crate) struct CachePolicy {
    pub default_ttl: Option<Duration>,
    pub query: CacheQuery,
    pub ignore_params: Vec<String>,
    pub authenticated: bool,
    pub store_set_cookie: bool,
    pub max_object_bytes: usize,
    pub status_header: HeaderName,
    pub keep_stale: Duration,
    pub lock_timeout: Duration,
    /// The `[stores]` entry that keeps the responses, or `None` for the platform's
    /// own cache.
    pub store: Option<String>,
}

impl CachePolicy {
    /// Compiles `config`, reporting problems under `path`. `stores` are the config's
    /// `[stores]`, which `store` must name.
    pub fn compile(
        config: &CacheConfig,
        stores: &BTreeMap<String, StoreConfig>,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        if let Some(name) = &config.store {
            check_store(name, stores, path, errors);
        }
        let status_header =
            HeaderName::from_bytes(config.status_header.as_bytes()).unwrap_or_else(|_| {
                errors.push(
                    ConfigError::new(
                        format!("{path}.status_header"),
                        format!("invalid header name {:?}", config.status_header),
                    )
                    .with_hint("use a token such as \"x-cache-status\""),
                );
                HeaderName::from_static("x-cache-status")
            });
        if config.max_object_bytes == 0 {
            errors.push(
                ConfigError::new(format!("{path}.max_object_bytes"), "must be greater than 0")
                    .with_hint("remove the policy from a route to stop caching it"),
            );
        }
        for (index, name) in config.ignore_params.iter().enumerate() {
            if name.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.ignore_params[{index}]"),
                    "must not be empty",
                ));
            }
        }
        if config.default_ttl.is_some_and(|ttl| ttl.get().is_zero()) {
            errors.push(
                ConfigError::new(format!("{path}.default_ttl"), "must be greater than 0")
                    .with_hint("omit default_ttl to store only responses that state a lifetime"),
            );
        }
        Self {
            default_ttl: config.default_ttl.map(|ttl| ttl.get()),
            query: config.query,
            ignore_params: config.ignore_params.clone(),
            authenticated: config.authenticated,
            store_set_cookie: config.store_set_cookie,
            max_object_bytes: usize::try_from(config.max_object_bytes).unwrap_or(usize::MAX),
            status_header,
            keep_stale: config.keep_stale.get(),
            lock_timeout: config.lock_timeout.get(),
            store: config.store.clone(),
        }
    }
}

/// Checks that `name` is a Redis store of `stores`, the only kind that keeps responses.
fn check_store(
    name: &str,
    stores: &BTreeMap<String, StoreConfig>,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    let field = format!("{path}.store");
    match stores.get(name) {
        Some(StoreConfig::Redis(_)) => {}
        Some(other) => errors.push(
            ConfigError::new(
                field,
                format!(
                    "store {name:?} is a {} store, which cannot keep responses",
                    other.kind()
                ),
            )
            .with_hint("name a [stores.NAME.redis] store, or remove store to cache in the platform's own cache"),
        ),
        None => {
            let names: Vec<&String> = stores.keys().collect();
            let hint = match closest_name(name, &names) {
                Some(close) => format!("did you mean {close:?}?"),
                None => format!(
                    "define it as [stores.{name}.redis] with url = \"redis://HOST:PORT\", \
                     or remove store to cache in the platform's own cache"
                ),
            };
            errors.push(
                ConfigError::new(field, format!("store {name:?} is not defined")).with_hint(hint),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Gateway;
    use crate::config::Format;

    fn problems(policies: &str, route_policies: &str) -> Vec<String> {
        let text = format!(
            r#"
[upstreams.api]
endpoints = [{{ address = "127.0.0.1:9001" }}]

{policies}

[[routes]]
upstream = "api"
policies = {route_policies}
"#
        );
        match Gateway::from_text(&text, Format::Toml) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn valid_policy_compiles() {
        let found = problems(
            "[policies.pages.cache]\ndefault_ttl = \"30s\"\nquery = \"sort\"",
            r#"["pages"]"#,
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn invalid_fields_are_reported() {
        let found = problems(
            "[policies.pages.cache]\nstatus_header = \"x cache\"\nmax_object_bytes = 0\ndefault_ttl = \"0s\"\nignore_params = [\"\"]",
            r#"["pages"]"#,
        );
        for expected in [
            "policies.pages.cache.status_header: invalid header name",
            "policies.pages.cache.max_object_bytes: must be greater than 0",
            "policies.pages.cache.default_ttl: must be greater than 0",
            "policies.pages.cache.ignore_params[0]: must not be empty",
        ] {
            assert!(
                found.iter().any(|problem| problem.starts_with(expected)),
                "{expected} in {found:?}"
            );
        }
        assert_eq!(found.len(), 4, "{found:?}");
    }

    #[test]
    fn authenticated_needs_authentication() {
        let found = problems(
            "[policies.pages.cache]\nauthenticated = true",
            r#"["pages"]"#,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .starts_with("routes[0].policies: has a cache policy with authenticated = true"),
            "{found:?}"
        );
    }

    #[test]
    fn store_must_be_defined_redis_store() {
        let found = problems(
            "[stores.shared.redis]\nurl = \"redis://127.0.0.1:6379\"\n[policies.pages.cache]\nstore = \"shraed\"",
            r#"["pages"]"#,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("policies.pages.cache.store: store \"shraed\" is not defined"),
            "{found:?}"
        );
        assert!(found[0].contains("did you mean \"shared\"?"), "{found:?}");

        let found = problems(
            "[stores.objects.durable_object]\n[policies.pages.cache]\nstore = \"objects\"",
            r#"["pages"]"#,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(
                "policies.pages.cache.store: store \"objects\" is a durable_object store, which cannot keep responses"
            ),
            "{found:?}"
        );

        let found = problems(
            "[stores.shared.redis]\nurl = \"redis://127.0.0.1:6379\"\n[policies.pages.cache]\nstore = \"shared\"",
            r#"["pages"]"#,
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn second_cache_policy_rejected() {
        let found = problems(
            "[policies.one.cache]\n[policies.two.cache]",
            r#"["one", "two"]"#,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("routes[0].policies[1]: a second cache policy"),
            "{found:?}"
        );
    }

    #[test]
    fn unknown_key_rejected() {
        let found = problems("[policies.pages.cache]\nttl = \"30s\"", r#"["pages"]"#);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("ttl"), "{found:?}");
    }
}
