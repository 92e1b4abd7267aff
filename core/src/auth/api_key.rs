//! The `api_key` policy and the `[consumers]` table it looks keys up in.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::credential::{self, Found, Source};
use super::{Authenticated, Identity, ambiguous_credentials, unauthorized};
use crate::cache::encode::KEY_VALUE_PREFIX;
use crate::config::{ApiKeyConfig, ConfigError, ConsumerConfig};
use crate::error::{Error, ErrorKind, ErrorSource};
use crate::platform::{KeyValue, Platform};

const SCHEME: &str = "ApiKey";

/// Bytes of the SHA-256 prefix that index the table.
const PREFIX_BYTES: usize = 8;

/// Maximum length of `key_value_prefix`, which leaves room for the 64 hex digits of
/// the hash within the smallest key limit of the supported stores (512 bytes on
/// Workers KV).
const MAX_PREFIX_BYTES: usize = 256;

#[derive(Debug, Clone)]
struct Consumer {
    name: Arc<str>,
    plan: Option<String>,
    groups: Vec<String>,
}

/// A consumer record stored in the key-value store as JSON. Members other than these
/// are ignored, so records can carry the operator's own notes.
#[derive(Debug, Deserialize)]
struct StoredConsumer {
    name: String,
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

/// The consumers of a config, indexed by the SHA-256 of their API keys.
///
/// Lookup hashes the presented key, finds candidates by the first 8 bytes of the
/// hash, and compares full hashes in constant time. The index lookup's timing depends
/// only on a hash of the presented key, so it reveals nothing an attacker could use
/// without SHA-256 preimages.
#[derive(Debug, Default)]
pub struct ConsumerTable {
    by_prefix: HashMap<[u8; PREFIX_BYTES], Vec<([u8; 32], usize)>>,
    consumers: Vec<Consumer>,
    names: HashSet<String>,
}

impl ConsumerTable {
    /// Validates `[consumers]`, reporting problems under `consumers.NAME`.
    pub fn compile(
        consumers: &BTreeMap<String, ConsumerConfig>,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let mut table = Self::default();
        let mut owners: HashMap<[u8; 32], &str> = HashMap::new();
        for (name, consumer) in consumers {
            let path = format!("consumers.{name}");
            let index = table.consumers.len();
            let hashes = consumer
                .api_key_sha256
                .as_ref()
                .map(crate::config::OneOrMany::to_vec)
                .unwrap_or_default();
            for (position, hex) in hashes.iter().enumerate() {
                let entry_path = match consumer.api_key_sha256 {
                    Some(crate::config::OneOrMany::Many(_)) => {
                        format!("{path}.api_key_sha256[{position}]")
                    }
                    _ => format!("{path}.api_key_sha256"),
                };
                let Some(hash) = parse_hash(hex) else {
                    errors.push(
                        ConfigError::new(
                            entry_path,
                            "must be 64 hexadecimal digits, the SHA-256 of the key",
                        )
                        .with_hint("compute it with: printf %s \"$KEY\" | sha256sum"),
                    );
                    continue;
                };
                if let Some(owner) = owners.insert(hash, name) {
                    errors.push(
                        ConfigError::new(
                            entry_path,
                            format!("the same key hash is also listed for consumer {owner:?}"),
                        )
                        .with_hint("give each consumer its own keys"),
                    );
                    continue;
                }
                table.insert(hash, index);
            }
            table.consumers.push(Consumer {
                name: Arc::from(name.as_str()),
                plan: consumer.plan.clone(),
                groups: consumer.groups.clone(),
            });
            table.names.insert(name.clone());
        }
        table
    }

    fn insert(&mut self, hash: [u8; 32], index: usize) {
        let mut prefix = [0; PREFIX_BYTES];
        prefix.copy_from_slice(&hash[..PREFIX_BYTES]);
        self.by_prefix
            .entry(prefix)
            .or_default()
            .push((hash, index));
    }

    /// Returns whether a consumer named `name` is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Returns the names of the defined consumers, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.consumers.iter().map(|consumer| &*consumer.name)
    }

    fn find(&self, hash: &[u8; 32]) -> Option<&Consumer> {
        let mut prefix = [0; PREFIX_BYTES];
        prefix.copy_from_slice(&hash[..PREFIX_BYTES]);
        let candidates = self.by_prefix.get(&prefix)?;
        let mut found = None;
        for (stored, index) in candidates {
            if bool::from(stored.ct_eq(hash)) {
                found = Some(*index);
            }
        }
        found.map(|index| &self.consumers[index])
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut hash = [0; 32];
    for (index, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(hash)
}

/// A compiled `api_key` policy.
#[derive(Debug)]
pub struct ApiKeyPolicy {
    sources: Vec<Source>,
    table: Arc<ConsumerTable>,
    /// Consumers accepted; `None` accepts all.
    allowed: Option<HashSet<String>>,
    forward_key: bool,
    identity_headers: bool,
    /// Prefix of key-value entries to look keys up under; `None` uses only the table.
    key_value_prefix: Option<String>,
}

impl ApiKeyPolicy {
    /// Validates `config` against the consumer table, reporting problems under `path`.
    pub fn compile(
        config: &ApiKeyConfig,
        table: &Arc<ConsumerTable>,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let sources =
            Source::compile_all(&config.key_from, &format!("{path}.key_from"), false, errors);
        let key_value_prefix = compile_prefix(config, path, errors);
        for (index, name) in config.consumers.iter().enumerate() {
            // Consumers of the key-value store are not known until a request names
            // them, so only a policy without one can check the list.
            if key_value_prefix.is_none() && !table.contains(name) {
                let defined: Vec<&str> = table.names().collect();
                errors.push(
                    ConfigError::new(
                        format!("{path}.consumers[{index}]"),
                        format!("consumer {name:?} is not defined"),
                    )
                    .with_hint(if defined.is_empty() {
                        format!("define it under [consumers.{name}]")
                    } else {
                        format!("defined in [consumers]: {}", defined.join(", "))
                    }),
                );
            }
        }
        if table.consumers.is_empty() && key_value_prefix.is_none() {
            errors.push(
                ConfigError::new(path, "no consumers are defined, so no key can pass").with_hint(
                    "add [consumers.NAME] with api_key_sha256 = \"HEX\", or set \
                         key_value_prefix to look keys up in the key-value store",
                ),
            );
        }
        Self {
            sources,
            table: Arc::clone(table),
            allowed: (!config.consumers.is_empty())
                .then(|| config.consumers.iter().cloned().collect()),
            forward_key: config.forward_key,
            identity_headers: config.identity_headers,
            key_value_prefix,
        }
    }

    /// Looks up the request's key, in `[consumers]` and then in the key-value store
    /// when the policy names a prefix, and returns the consumer's identity.
    pub(crate) async fn authenticate<P: Platform>(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        platform: &P,
    ) -> Result<Authenticated, Error> {
        let (key, source) = match credential::find(&self.sources, headers, query) {
            Found::None => {
                return Err(unauthorized(SCHEME, None, "the request carries no API key"));
            }
            Found::Several => {
                return Err(ambiguous_credentials(
                    SCHEME,
                    "the request carries more than one API key",
                ));
            }
            Found::One { value, source } => (value, source),
        };
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let consumer = match self.table.find(&hash) {
            Some(consumer) => Some(Cow::Borrowed(consumer)),
            None => match &self.key_value_prefix {
                Some(prefix) => self.lookup_stored(prefix, &hash, platform).await?,
                None => None,
            },
        };
        let consumer = consumer
            .filter(|consumer| {
                self.allowed
                    .as_ref()
                    .is_none_or(|allowed| allowed.contains(&*consumer.name))
            })
            .ok_or_else(|| {
                unauthorized(SCHEME, Some("invalid_token"), "the API key is not valid")
            })?;

        let mut claims = Map::new();
        if let Some(plan) = &consumer.plan {
            claims.insert("plan".to_owned(), Value::String(plan.clone()));
        }
        Ok(Authenticated {
            identity: Identity {
                subject: Some(consumer.name.to_string()),
                consumer: Some(consumer.name.to_string()),
                api_key_id: Some(key_id(&key)),
                scopes: Vec::new(),
                groups: consumer.groups.clone(),
                claims,
            },
            scheme: SCHEME,
            identity_headers: self.identity_headers,
            // NOTE: a key in the query string is forwarded even with forward_key off,
            // because the upstream query is passed through unchanged.
            remove_header: if self.forward_key {
                None
            } else {
                source.header()
            },
        })
    }

    /// Reads the consumer record stored under `prefix` and the hex `hash`.
    ///
    /// The store is addressed by the key's hash, so no secret is compared here, and
    /// the lookup's timing depends only on whether the hash exists, which reveals
    /// nothing useful to an attacker without SHA-256 preimages.
    ///
    /// NOTE: every unknown key costs one store read; nothing caches misses, so a flood
    /// of random keys reaches the store. A rate limit keyed on the client address in
    /// front of this policy bounds it.
    async fn lookup_stored<P: Platform>(
        &self,
        prefix: &str,
        hash: &[u8; 32],
        platform: &P,
    ) -> Result<Option<Cow<'_, Consumer>>, Error> {
        let Some(store) = platform.key_value() else {
            return Err(Error::new(
                ErrorKind::NotImplemented,
                ErrorSource::Platform,
                "API keys in the key-value store need a platform with one",
            ));
        };
        let entry = format!("{prefix}{}", hex(hash));
        let Some(record) = store.get(&entry).await? else {
            return Ok(None);
        };
        let record: StoredConsumer = serde_json::from_slice(&record).map_err(|error| {
            Error::new(
                ErrorKind::Internal,
                ErrorSource::Platform,
                "the stored consumer record of this API key is invalid",
            )
            .with_cause(format!("key-value entry {entry:?}: {error}"))
        })?;
        if record.name.is_empty() {
            return Err(Error::new(
                ErrorKind::Internal,
                ErrorSource::Platform,
                "the stored consumer record of this API key is invalid",
            )
            .with_cause(format!("key-value entry {entry:?}: the name is empty")));
        }
        Ok(Some(Cow::Owned(Consumer {
            name: Arc::from(record.name),
            plan: record.plan,
            groups: record.groups,
        })))
    }
}

/// Checks `key_value_prefix`, which becomes part of store keys.
fn compile_prefix(
    config: &ApiKeyConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let prefix = config.key_value_prefix.as_ref()?;
    // Workers KV keys are at most 512 bytes; the hash takes 64 of them.
    if prefix.len() > MAX_PREFIX_BYTES || prefix.chars().any(char::is_control) {
        errors.push(
            ConfigError::new(
                format!("{path}.key_value_prefix"),
                format!("must be at most {MAX_PREFIX_BYTES} bytes without control characters"),
            )
            .with_hint("use a short printable prefix such as \"api-key:\""),
        );
    }
    if prefix.starts_with(KEY_VALUE_PREFIX) {
        errors.push(
            ConfigError::new(
                format!("{path}.key_value_prefix"),
                format!(
                    "{prefix:?} starts with {KEY_VALUE_PREFIX:?}, which the response cache \
                     reserves for its entries"
                ),
            )
            .with_hint("use another prefix, such as \"api-key:\""),
        );
    }
    Some(prefix.clone())
}

/// Formats `hash` as lowercase hexadecimal, the form of keys in the key-value store.
pub fn hex(hash: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(64);
    for byte in hash {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Returns the first 8 bytes of the key's SHA-256 in hex: enough to keep the keys of one
/// gateway apart in rate-limit counters, and useless for recovering the key.
fn key_id(key: &str) -> String {
    let hash = Sha256::digest(key.as_bytes());
    hash[..8].iter().map(|byte| format!("{byte:02x}")).collect()
}
