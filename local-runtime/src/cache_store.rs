//! The native runtime's response caches: process memory, and Redis stores of
//! `[stores]` that several gateways share.
//!
//! A Redis entry is stored under [`KEY_VALUE_PREFIX`] followed by the cache key
//! itself, so a purge by prefix can find entries with `SCAN ... MATCH`. Its value is
//! the core's key-value encoding ([`encode_key_value`]), which repeats the cache key
//! and the expiry time, and its Redis TTL is the time the core keeps the entry:
//! freshness plus the stale windows. Redis keys are binary-safe, so cache keys of any
//! length and bytes fit.
//!
//! No memory tier sits in front of Redis: every lookup is one `GET`, so a purge on any
//! gateway takes effect on all of them at once.
//!
//! A lookup or store that fails or times out counts as a miss (the request goes
//! upstream) and is counted in `gatehouse_cache_store_errors_total`, with at most one
//! warning per `error_log_interval`. Purges return the error, so the admin listener
//! reports a purge that did not happen.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::cache::encode::{KEY_VALUE_PREFIX, decode_key_value, encode_key_value};
use gatehouse_core::cache::{CacheEntry, MemoryResponseCache};
use gatehouse_core::config::{RedisStoreConfig, StoreConfig};
use gatehouse_core::platform::ResponseCache;
use gatehouse_core::{Error, ErrorKind, ErrorSource};
use redis::aio::MultiplexedConnection;

use crate::counters::{Connections, ErrorLog, Failure, StoreErrorMetrics};

/// Keys that one `SCAN` call of a purge examines, as the `COUNT` hint, which Redis may
/// exceed a little, so also about the max keys one `UNLINK` removes.
const SCAN_BATCH: usize = 500;

/// A response cache of the native runtime: the process's memory cache or a Redis
/// store.
#[derive(Debug, Clone)]
pub enum NativeResponseCache {
    /// The in-process least-recently-used cache.
    Memory(Arc<MemoryResponseCache>),
    /// A Redis store shared with other gateways.
    Redis(Arc<RedisResponseCache>),
}

impl ResponseCache for NativeResponseCache {
    async fn lookup(&self, key: &str, now_unix_ms: u64) -> Result<Option<CacheEntry>, Error> {
        match self {
            Self::Memory(cache) => cache.lookup(key, now_unix_ms).await,
            Self::Redis(cache) => cache.lookup(key, now_unix_ms).await,
        }
    }

    async fn store(
        &self,
        key: &str,
        entry: CacheEntry,
        now_unix_ms: u64,
        ttl: Duration,
    ) -> Result<(), Error> {
        match self {
            Self::Memory(cache) => cache.store(key, entry, now_unix_ms, ttl).await,
            Self::Redis(cache) => cache.store(key, entry, now_unix_ms, ttl).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        match self {
            Self::Memory(cache) => cache.delete(key).await,
            Self::Redis(cache) => cache.delete(key).await,
        }
    }

    async fn purge_prefix(&self, prefix: &str) -> Result<u64, Error> {
        match self {
            Self::Memory(cache) => cache.purge_prefix(prefix).await,
            Self::Redis(cache) => cache.purge_prefix(prefix).await,
        }
    }
}

/// The Redis response caches of one process, one per Redis store of `[stores]`.
#[derive(Debug, Default)]
pub struct RedisResponseCaches {
    caches: HashMap<String, NativeResponseCache>,
    errors: StoreErrorMetrics,
}

impl RedisResponseCaches {
    /// Builds a cache for each Redis store of `config`. Connections open on first use,
    /// so a store that is down at start does not stop the gateway, and a store no
    /// `cache` policy names never connects.
    pub fn from_config(config: &BTreeMap<String, StoreConfig>) -> Result<Self, String> {
        let errors = StoreErrorMetrics::default();
        let mut caches = HashMap::new();
        for (name, store) in config {
            if let StoreConfig::Redis(redis) = store {
                let cache = RedisResponseCache::new(name, redis, errors.clone())?;
                caches.insert(name.clone(), NativeResponseCache::Redis(Arc::new(cache)));
            }
        }
        Ok(Self { caches, errors })
    }

    /// Returns the cache of the store named `name`.
    pub fn get(&self, name: &str) -> Option<&NativeResponseCache> {
        self.caches.get(name)
    }

    /// Returns every cache, for purges.
    pub fn all(&self) -> Vec<NativeResponseCache> {
        self.caches.values().cloned().collect()
    }

    /// Returns the store failure counters, to register with the metrics registry.
    pub fn error_metrics(&self) -> StoreErrorMetrics {
        self.errors.clone()
    }
}

/// A response cache in one Redis store.
pub struct RedisResponseCache {
    name: String,
    connections: Connections,
    timeout: Duration,
    log: ErrorLog,
}

impl fmt::Debug for RedisResponseCache {
    // Written by hand so the client, whose connection info contains the password, is
    // never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisResponseCache")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisResponseCache {
    fn new(
        name: &str,
        config: &RedisStoreConfig,
        errors: StoreErrorMetrics,
    ) -> Result<Self, String> {
        Ok(Self {
            name: name.to_owned(),
            connections: Connections::new(name, config)?,
            timeout: config.timeout.get(),
            log: ErrorLog::new(
                name,
                config.error_log_interval.get(),
                errors,
                "response cache store failed; lookups miss and responses are not stored",
            ),
        })
    }

    /// Runs `command` on a pooled connection within the store's timeout, counting and
    /// logging a failure.
    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, Error> {
        let slot = self.connections.slot();
        let outcome = tokio::time::timeout(self.timeout, async {
            let mut connection: MultiplexedConnection = self
                .connections
                .connection(slot)
                .await
                .map_err(|error| (Failure::Connection, error))?;
            command
                .query_async::<T>(&mut connection)
                .await
                .map_err(|error| (Failure::classify(&error, slot, Failure::Command), error))
        })
        .await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err((failure, error))) => {
                self.log.record(failure, Some(&error));
                Err(unavailable(format!("store {:?}: {error}", self.name)))
            }
            Err(_) => {
                self.log.record(Failure::Timeout, None);
                Err(unavailable(format!(
                    "store {:?} did not answer within {:?}",
                    self.name, self.timeout
                )))
            }
        }
    }
}

impl ResponseCache for RedisResponseCache {
    async fn lookup(&self, key: &str, now_unix_ms: u64) -> Result<Option<CacheEntry>, Error> {
        let value: Option<Vec<u8>> = match self.run(redis::cmd("GET").arg(redis_key(key))).await {
            Ok(value) => value,
            Err(_) => return Ok(None),
        };
        let Some((stored_key, entry, expires_unix_ms)) =
            value.and_then(|bytes| decode_key_value(Bytes::from(bytes)))
        else {
            return Ok(None);
        };
        Ok((stored_key == key && expires_unix_ms > now_unix_ms).then_some(entry))
    }

    async fn store(
        &self,
        key: &str,
        entry: CacheEntry,
        now_unix_ms: u64,
        ttl: Duration,
    ) -> Result<(), Error> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let expires_unix_ms = now_unix_ms.saturating_add(ttl_ms);
        let value = encode_key_value(key, &entry, expires_unix_ms);
        let mut command = redis::cmd("SET");
        command
            .arg(redis_key(key))
            .arg(value.as_ref())
            .arg("PX")
            .arg(ttl_ms);
        // A failed store leaves the entry uncached, which the next request repairs.
        let _ = self.run::<()>(&command).await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        let removed: u64 = self.run(redis::cmd("DEL").arg(redis_key(key))).await?;
        Ok(removed > 0)
    }

    /// Walks the whole keyspace with `SCAN` (`MATCH` on the prefix) and unlinks each
    /// batch of matches, so the cost grows with the number of keys in the database,
    /// not with the number of matches.
    async fn purge_prefix(&self, prefix: &str) -> Result<u64, Error> {
        let pattern = format!("{}*", glob_escape(&redis_key(prefix)));
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let (next, keys): (u64, Vec<Vec<u8>>) = self.run(&scan).await?;
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                for key in &keys {
                    unlink.arg(key.as_slice());
                }
                removed += self.run::<u64>(&unlink).await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

fn redis_key(key: &str) -> String {
    format!("{KEY_VALUE_PREFIX}{key}")
}

/// Escapes the characters that Redis glob patterns give a meaning, so `MATCH` takes
/// them literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for character in text.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(character);
    }
    out
}

fn unavailable(cause: String) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        ErrorSource::Platform,
        "the response cache store is unavailable",
    )
    .with_cause(cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escape_quotes_pattern_characters() {
        assert_eq!(glob_escape("a*b?c[d]e\\f"), "a\\*b\\?c\\[d\\]e\\\\f");
        assert_eq!(glob_escape("example.com/a\nGET"), "example.com/a\nGET");
    }
}
