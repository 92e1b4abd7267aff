//! Parts of the [`KeyValue`] store shared by the platforms: the in-memory store, the
//! error of a failed store, and the expiry envelope for stores without TTLs.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, ErrorKind, ErrorSource};
use crate::platform::{Clock, KeyValue};

/// Creates the 503 for a key-value store that failed to complete `operation` (`get`,
/// `put` or `delete`). The cause is logged and never sent to the client.
pub fn store_failed(operation: &str, cause: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        ErrorSource::Platform,
        "the key-value store is unavailable",
    )
    .with_cause(format!("key-value {operation} failed: {cause}"))
}

// ---------------------------------------------------------------------------------
// Memory store

#[derive(Debug)]
struct Entry {
    value: Bytes,
    /// Unix milliseconds after which the entry is gone; `None` keeps it.
    expires_at: Option<u64>,
}

impl Entry {
    fn is_live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// A key-value store in memory, shared by every thread of a process and bounded by
/// entry count.
///
/// A put of a new key into a full store first drops expired entries. When the store
/// is still full, the put fails with 503 rather than evicting a live entry, because
/// entries such as API keys must not vanish without an operator noticing.
#[derive(Debug)]
pub struct MemoryKeyValue<C> {
    clock: C,
    entries: Mutex<HashMap<String, Entry>>,
    max_entries: usize,
}

impl<C: Clock> MemoryKeyValue<C> {
    /// Creates an empty store of at most `max_entries` entries, with expiry
    /// times from `clock`.
    pub fn new(clock: C, max_entries: usize) -> Self {
        Self {
            clock,
            entries: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    /// Stores `value` under `key`, as [`KeyValue::put`] does but without waiting.
    pub fn insert(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), Error> {
        let now = self.clock.unix_millis();
        let expires_at = ttl.map(|ttl| now.saturating_add(duration_millis(ttl)));
        let mut entries = self.lock();
        if !entries.contains_key(key) && entries.len() >= self.max_entries {
            entries.retain(|_, entry| entry.is_live(now));
            if entries.len() >= self.max_entries {
                return Err(store_failed(
                    "put",
                    format!("the memory store is full ({} entries)", self.max_entries),
                ));
            }
        }
        entries.insert(key.to_owned(), Entry { value, expires_at });
        Ok(())
    }

    /// Returns the live value under `key`, dropping it when it expired.
    pub fn lookup(&self, key: &str) -> Option<Bytes> {
        let now = self.clock.unix_millis();
        let mut entries = self.lock();
        match entries.get(key) {
            Some(entry) if entry.is_live(now) => Some(entry.value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Removes `key`.
    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Returns the number of entries, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Returns whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Every critical section is a single map operation, so a panic elsewhere
        // cannot leave the map half-updated and a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<C: Clock> KeyValue for MemoryKeyValue<C> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        Ok(self.lookup(key))
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), Error> {
        self.insert(key, value, ttl)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.remove(key);
        Ok(())
    }
}

fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------
// Expiry envelope

/// First bytes of a value stored with an expiry in a store that has no TTLs of its own
/// (Spin key-value). The leading NUL byte cannot start a JSON or UTF-8 text value, so
/// values written by other tools, such as JSON consumer records, are read unchanged.
const ENVELOPE_MAGIC: &[u8; 8] = b"\0gh-ttl\0";

/// Length of the envelope header: the magic and the expiry as big-endian Unix
/// milliseconds.
const ENVELOPE_HEADER: usize = ENVELOPE_MAGIC.len() + 8;

/// Wraps `value` with the time it expires, `now_millis + ttl`, for a store without
/// TTLs. [`open_envelope`] reverses it.
pub fn seal_envelope(value: &[u8], now_millis: u64, ttl: Duration) -> Bytes {
    let expires_at = now_millis.saturating_add(duration_millis(ttl));
    let mut sealed = BytesMut::with_capacity(ENVELOPE_HEADER + value.len());
    sealed.put_slice(ENVELOPE_MAGIC);
    sealed.put_u64(expires_at);
    sealed.put_slice(value);
    sealed.freeze()
}

/// The outcome of reading a stored value through [`open_envelope`].
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// A value without an expiry, or one that has not expired yet.
    Live(Bytes),
    /// A value whose expiry has passed; the caller should delete it.
    Expired,
}

/// Unwraps a value that [`seal_envelope`] may have wrapped, checking its expiry
/// against `now_millis`. A value without the envelope is returned unchanged.
pub fn open_envelope(stored: Bytes, now_millis: u64) -> Opened {
    if stored.len() < ENVELOPE_HEADER || !stored.starts_with(ENVELOPE_MAGIC) {
        return Opened::Live(stored);
    }
    let mut expiry = [0; 8];
    expiry.copy_from_slice(&stored[ENVELOPE_MAGIC.len()..ENVELOPE_HEADER]);
    if now_millis >= u64::from_be_bytes(expiry) {
        Opened::Expired
    } else {
        Opened::Live(stored.slice(ENVELOPE_HEADER..))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests report failures by panicking")]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    #[derive(Debug, Clone, Default)]
    struct HandClock(Rc<Cell<u64>>);

    impl Clock for HandClock {
        fn unix_millis(&self) -> u64 {
            self.0.get()
        }

        fn monotonic(&self) -> Duration {
            Duration::from_millis(self.0.get())
        }

        async fn sleep(&self, _duration: Duration) {}
    }

    fn store(max_entries: usize) -> (HandClock, MemoryKeyValue<HandClock>) {
        let clock = HandClock::default();
        clock.0.set(1_000);
        (clock.clone(), MemoryKeyValue::new(clock, max_entries))
    }

    #[test]
    fn memory_put_get_delete() {
        let (_, store) = store(10);
        futures::executor::block_on(async {
            assert_eq!(store.get("a").await.unwrap(), None);
            store.put("a", Bytes::from("1"), None).await.unwrap();
            assert_eq!(store.get("a").await.unwrap(), Some(Bytes::from("1")));
            store.put("a", Bytes::from("2"), None).await.unwrap();
            assert_eq!(store.get("a").await.unwrap(), Some(Bytes::from("2")));
            store.delete("a").await.unwrap();
            assert_eq!(store.get("a").await.unwrap(), None);
            store.delete("a").await.unwrap();
        });
    }

    #[test]
    fn memory_entries_expire() {
        let (clock, store) = store(10);
        store
            .insert("a", Bytes::from("1"), Some(Duration::from_secs(5)))
            .unwrap();
        clock.0.set(5_999);
        assert_eq!(store.lookup("a"), Some(Bytes::from("1")));
        clock.0.set(6_000);
        assert_eq!(store.lookup("a"), None);
        assert!(store.is_empty(), "an expired entry is dropped when read");
    }

    #[test]
    fn full_memory_store_drops_expired_first() {
        let (clock, store) = store(2);
        store
            .insert("short", Bytes::new(), Some(Duration::from_secs(1)))
            .unwrap();
        store.insert("kept", Bytes::new(), None).unwrap();
        clock.0.set(2_000);
        store.insert("new", Bytes::new(), None).unwrap();
        assert_eq!(store.len(), 2);
        assert!(store.lookup("kept").is_some());
        assert!(store.lookup("new").is_some());
    }

    #[test]
    fn full_memory_store_rejects_new_keys() {
        let (_, store) = store(1);
        store.insert("a", Bytes::new(), None).unwrap();
        let error = store.insert("b", Bytes::new(), None).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert_eq!(error.error_source(), ErrorSource::Platform);
        store
            .insert("a", Bytes::from("replaced"), None)
            .expect("replacing an existing key needs no room");
        assert_eq!(store.lookup("b"), None);
    }

    #[test]
    fn envelope_round_trip() {
        let sealed = seal_envelope(b"value", 1_000, Duration::from_secs(2));
        assert_eq!(
            open_envelope(sealed.clone(), 2_999),
            Opened::Live(Bytes::from("value"))
        );
        assert_eq!(open_envelope(sealed, 3_000), Opened::Expired);
    }

    #[test]
    fn plain_values_pass_through_envelope() {
        for plain in [&b"{\"name\":\"acme\"}"[..], b"", b"\0gh-ttl\0short"] {
            let plain = Bytes::copy_from_slice(plain);
            assert_eq!(open_envelope(plain.clone(), 0), Opened::Live(plain));
        }
    }

    #[test]
    fn store_failure_is_503_from_platform() {
        let error = store_failed("get", "connection reset");
        assert_eq!(error.kind().status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.error_source(), ErrorSource::Platform);
        assert!(!error.detail().contains("reset"), "the cause stays in logs");
    }
}
