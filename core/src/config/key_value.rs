//! Config of the platform's key-value store, `[key_value]`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Settings of the key-value store that `api_key` policies with `key_value_prefix`
/// read, one per platform, and of the Spin store of the response cache. Each target
/// reads only its own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct KeyValueConfig {
    /// Name of the Workers KV namespace binding in `wrangler.toml` (Cloudflare).
    pub cloudflare_binding: String,
    /// Label of the Spin key-value store, listed in the component's
    /// `key_value_stores` in `spin.toml` (Spin).
    pub spin_store: String,
    /// Label of the Spin key-value store that `cache` policies keep responses in, when
    /// it is not `spin_store` (Spin).
    pub spin_cache_store: Option<String>,
    /// Maximum entries of the native runtime's in-memory store. A new key past it is
    /// rejected with 503, after expired entries are dropped.
    pub memory_max_entries: usize,
}

/// Binds `GATEHOUSE_KV` on Cloudflare, opens Spin's `default` store and keeps up to
/// 100,000 entries natively.
impl Default for KeyValueConfig {
    fn default() -> Self {
        Self {
            cloudflare_binding: "GATEHOUSE_KV".to_owned(),
            spin_store: "default".to_owned(),
            spin_cache_store: None,
            // An estimate of about 200 bytes an entry (key hash, JSON record) puts this
            // near 20 MB.
            memory_max_entries: 100_000,
        }
    }
}

impl KeyValueConfig {
    /// Returns the label of the Spin store of the response cache: `spin_cache_store`,
    /// or else `spin_store`.
    pub fn spin_cache_store(&self) -> &str {
        self.spin_cache_store.as_deref().unwrap_or(&self.spin_store)
    }

    /// Checks the settings, reporting problems under `key_value`.
    pub(crate) fn check(&self, errors: &mut Vec<ConfigError>) {
        if !is_binding_name(&self.cloudflare_binding) {
            errors.push(
                ConfigError::new(
                    "key_value.cloudflare_binding",
                    format!("{:?} is not a valid binding name", self.cloudflare_binding),
                )
                .with_hint(
                    "use letters, digits and underscores, starting with a letter, as in \
                     wrangler.toml's kv_namespaces binding",
                ),
            );
        }
        if self.spin_store.is_empty() {
            errors.push(
                ConfigError::new("key_value.spin_store", "must not be empty")
                    .with_hint("use \"default\" or a label from key_value_stores in spin.toml"),
            );
        }
        if self.spin_cache_store.as_deref() == Some("") {
            errors.push(
                ConfigError::new("key_value.spin_cache_store", "must not be empty").with_hint(
                    "remove the key to cache in spin_store, or use a label from \
                         key_value_stores in spin.toml",
                ),
            );
        }
        if self.memory_max_entries == 0 {
            errors.push(
                ConfigError::new("key_value.memory_max_entries", "must be > 0")
                    .with_hint("remove the key to keep up to 100000 entries"),
            );
        }
    }
}

/// Checks that `name` can be a JavaScript binding: ASCII letters, digits and `_`, not
/// starting with a digit.
fn is_binding_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes
        .first()
        .is_some_and(|first| first.is_ascii_alphabetic() || *first == b'_')
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_names() {
        assert!(is_binding_name("GATEHOUSE_KV"));
        assert!(is_binding_name("_kv2"));
        assert!(!is_binding_name(""));
        assert!(!is_binding_name("2KV"));
        assert!(!is_binding_name("MY-KV"));
    }

    #[test]
    fn invalid_settings_are_reported() {
        let config = KeyValueConfig {
            cloudflare_binding: "my kv".to_owned(),
            spin_store: String::new(),
            spin_cache_store: Some(String::new()),
            memory_max_entries: 0,
        };
        let mut errors = Vec::new();
        config.check(&mut errors);
        let paths: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(paths.len(), 4, "{paths:?}");
        assert!(paths[0].starts_with("key_value.cloudflare_binding: "));
        assert!(paths[1].starts_with("key_value.spin_store: "));
        assert!(paths[2].starts_with("key_value.spin_cache_store: "));
        assert!(paths[3].starts_with("key_value.memory_max_entries: "));
    }
}
