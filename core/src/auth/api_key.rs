//! The `api_key` policy and the `[consumers]` table it looks keys up in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use http::HeaderMap;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::credential::{self, Found, Source};
use super::{Authenticated, Identity, ambiguous_credentials, unauthorized};
use crate::config::{ApiKeyConfig, ConfigError, ConsumerConfig};
use crate::error::Error;

const SCHEME: &str = "ApiKey";

/// Bytes of the SHA-256 prefix that index the table.
const PREFIX_BYTES: usize = 8;

#[derive(Debug)]
struct Consumer {
    name: Arc<str>,
    plan: Option<String>,
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

    fn find(&self, key: &str) -> Option<&Consumer> {
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut prefix = [0; PREFIX_BYTES];
        prefix.copy_from_slice(&hash[..PREFIX_BYTES]);
        let candidates = self.by_prefix.get(&prefix)?;
        let mut found = None;
        for (stored, index) in candidates {
            if bool::from(stored.ct_eq(&hash)) {
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
        for (index, name) in config.consumers.iter().enumerate() {
            if !table.contains(name) {
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
        if table.consumers.is_empty() {
            errors.push(
                ConfigError::new(path, "no consumers are defined, so no key can pass")
                    .with_hint("add [consumers.NAME] with api_key_sha256 = \"HEX\""),
            );
        }
        Self {
            sources,
            table: Arc::clone(table),
            allowed: (!config.consumers.is_empty())
                .then(|| config.consumers.iter().cloned().collect()),
            forward_key: config.forward_key,
            identity_headers: config.identity_headers,
        }
    }

    /// Looks up the request's key and returns the consumer's identity.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
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
        let consumer = self
            .table
            .find(&key)
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
}

/// Returns the first 8 bytes of the key's SHA-256 in hex: enough to keep the keys of one
/// gateway apart in rate-limit counters, and useless for recovering the key.
fn key_id(key: &str) -> String {
    let hash = Sha256::digest(key.as_bytes());
    hash[..8].iter().map(|byte| format!("{byte:02x}")).collect()
}
