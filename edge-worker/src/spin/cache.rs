//! [`SpinResponseCache`]: the core's response cache on Spin key-value
//! (`fermyon:spin/key-value@2.0.0`), shared by every instance of the component.

use std::cell::OnceCell;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::Error;
use gatehouse_core::cache::CacheEntry;
use gatehouse_core::cache::encode::{
    KEY_VALUE_PREFIX, decode_key_value, encode_key_value, key_of_key_value, key_value_key,
};
use gatehouse_core::key_value::store_failed;
use gatehouse_core::platform::ResponseCache;
use spin_sdk::key_value::Store;

/// Maximum bytes of one stored value. The Spin key-value API guide promises "values as
/// large as 1 megabyte"; 1,000,000 bytes is within both the decimal and binary reading.
const MAX_VALUE_BYTES: usize = 1_000_000;

/// The response cache of a Spin application, in the key-value store that
/// `key_value.spin_cache_store` names, or else `key_value.spin_store`, which it then
/// shares with `api_key` records.
///
/// Each entry is stored under [`key_value_key`] (the reserved prefix
/// [`KEY_VALUE_PREFIX`] and the SHA-256 of the cache key, which keeps keys within
/// Spin's 256-byte limit), with the cache key and expiry time inside the value. Spin
/// key-value has no expiry, so a lookup checks the entry's expiry at the gateway's
/// clock and deletes an expired entry it finds. Entries that do not fit
/// [`MAX_VALUE_BYTES`] are not stored.
///
/// NOTE: an expired entry that is never looked up again stays in the store, and on
/// Fermyon Cloud it counts against the store's key limit.
#[derive(Debug)]
pub struct SpinResponseCache {
    /// The store label, or `None` for a cache that stores nothing.
    label: Option<String>,
    store: OnceCell<Result<Store, String>>,
}

impl SpinResponseCache {
    /// Creates the cache in the store labelled `label`, which is opened on first use
    /// and must be listed in the component's `key_value_stores` in `spin.toml`.
    pub fn new(label: &str) -> Self {
        Self {
            label: Some(label.to_owned()),
            store: OnceCell::new(),
        }
    }

    /// Creates a cache without a store: every lookup misses and nothing is stored.
    pub fn disabled() -> Self {
        Self {
            label: None,
            store: OnceCell::new(),
        }
    }

    /// Returns the open store, or `None` for a disabled cache.
    fn store(&self, operation: &str) -> Result<Option<&Store>, Error> {
        let Some(label) = &self.label else {
            return Ok(None);
        };
        let opened = self.store.get_or_init(|| {
            Store::open(label)
                .map_err(|error| format!("failed to open the store {label:?}: {error:?}"))
        });
        match opened {
            Ok(store) => Ok(Some(store)),
            Err(cause) => Err(self.failed(operation, cause)),
        }
    }

    /// Creates the error of a failed store operation and logs its cause. The core
    /// treats a failed lookup as a miss and a failed store as not stored.
    fn failed(&self, operation: &str, cause: &str) -> Error {
        let label = self.label.as_deref().unwrap_or_default();
        eprintln!(
            "gatehouse: response cache {operation} on key-value store {label:?} failed: {cause}"
        );
        store_failed(operation, cause)
    }

    /// Deletes the entry under `stored_key`, logging a failure: removing a useless
    /// entry only saves space.
    fn delete_quietly(&self, store: &Store, stored_key: &str, reason: &str) {
        if let Err(error) = store.delete(stored_key) {
            let label = self.label.as_deref().unwrap_or_default();
            eprintln!(
                "gatehouse: failed to delete {reason} response cache entry from key-value \
                 store {label:?}: {error:?}"
            );
        }
    }
}

impl ResponseCache for SpinResponseCache {
    async fn lookup(&self, key: &str, now_unix_ms: u64) -> Result<Option<CacheEntry>, Error> {
        let Some(store) = self.store("lookup")? else {
            return Ok(None);
        };
        let stored_key = key_value_key(key);
        let Some(value) = store
            .get(&stored_key)
            .map_err(|error| self.failed("lookup", &format!("{error:?}")))?
        else {
            return Ok(None);
        };
        match decode_key_value(Bytes::from(value)) {
            // A different key under the same hash would be a SHA-256 collision.
            Some((stored, _, _)) if stored != key => Ok(None),
            Some((_, entry, expires_unix_ms)) if expires_unix_ms > now_unix_ms => Ok(Some(entry)),
            Some(_) => {
                self.delete_quietly(store, &stored_key, "an expired");
                Ok(None)
            }
            None => {
                // Entries in another version of the layout also decode as `None`.
                eprintln!(
                    "gatehouse: a response cache entry in Spin key-value is unreadable, so it \
                     counts as a miss and is deleted"
                );
                self.delete_quietly(store, &stored_key, "an unreadable");
                Ok(None)
            }
        }
    }

    async fn store(
        &self,
        key: &str,
        entry: CacheEntry,
        now_unix_ms: u64,
        ttl: Duration,
    ) -> Result<(), Error> {
        let Some(store) = self.store("store")? else {
            return Ok(());
        };
        let stored_key = key_value_key(key);
        let expires_unix_ms =
            now_unix_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let value = encode_key_value(key, &entry, expires_unix_ms);
        if value.len() > MAX_VALUE_BYTES {
            // The entry replaces any earlier one, so the earlier one goes too. The key may
            // hold a credential in its query, so the message leaves it out.
            eprintln!(
                "gatehouse: debug: response not cached: its entry is {} bytes, over the \
                 {MAX_VALUE_BYTES}-byte limit of a Spin key-value value",
                value.len()
            );
            self.delete_quietly(store, &stored_key, "a replaced");
            return Ok(());
        }
        store
            .set(&stored_key, &value)
            .map_err(|error| self.failed("store", &format!("{error:?}")))
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        let Some(store) = self.store("delete")? else {
            return Ok(false);
        };
        let stored_key = key_value_key(key);
        let existed = store
            .exists(&stored_key)
            .map_err(|error| self.failed("delete", &format!("{error:?}")))?;
        if existed {
            store
                .delete(&stored_key)
                .map_err(|error| self.failed("delete", &format!("{error:?}")))?;
        }
        Ok(existed)
    }

    /// Lists the store's keys and reads every cache entry to find its cache key, so it
    /// costs one read per cached response.
    async fn purge_prefix(&self, prefix: &str) -> Result<u64, Error> {
        let Some(store) = self.store("purge")? else {
            return Ok(0);
        };
        let keys = store
            .get_keys()
            .map_err(|error| self.failed("purge", &format!("{error:?}")))?;
        let mut purged = 0;
        for stored_key in keys.iter().filter(|key| key.starts_with(KEY_VALUE_PREFIX)) {
            let value = store
                .get(stored_key)
                .map_err(|error| self.failed("purge", &format!("{error:?}")))?;
            let matches = value
                .and_then(|value| key_of_key_value(Bytes::from(value)))
                .is_some_and(|key| key.starts_with(prefix));
            if matches {
                store
                    .delete(stored_key)
                    .map_err(|error| self.failed("purge", &format!("{error:?}")))?;
                purged += 1;
            }
        }
        Ok(purged)
    }
}
