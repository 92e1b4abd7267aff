//! A key-value store shared by every simulated location, with the propagation delay
//! and size limits of Workers KV.
//!
//! Each key keeps its recent versions. A location reads the newest version it wrote
//! itself or that was written at least the propagation delay ago, so another
//! location sees a write only after the delay. A read that returns an older version
//! than the newest one is counted as a stale read of the reading location.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_core::platform::KeyValue;
use gatehouse_core::{Error, ErrorKind, ErrorSource};

use super::report::LocationStats;

/// Maximum key size of Workers KV, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// Maximum value size of Workers KV, in bytes (25 MiB).
pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;

/// Minimum expiration TTL Workers KV accepts; shorter ones are raised to it, as the
/// core's [`KeyValue`] contract states for Cloudflare.
pub const MIN_TTL: Duration = Duration::from_secs(60);

/// One write of a key: a value or, for a delete, `None`.
#[derive(Debug, Clone)]
struct Version {
    value: Option<Bytes>,
    expires_at: Option<Instant>,
    written_at: Instant,
    writer: usize,
    /// Whether every location sees the version at once, as for entries loaded at
    /// start.
    everywhere: bool,
}

/// The store every location reads and writes through a [`LocationKeyValue`].
#[derive(Debug)]
pub struct SharedKeyValue {
    propagation: Duration,
    max_keys: usize,
    entries: Mutex<HashMap<String, Vec<Version>>>,
}

/// What one location reads: the value it sees and whether a newer write exists that
/// has not reached it yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The value visible in the location, `None` when there is none.
    pub value: Option<Bytes>,
    /// Whether another location wrote a newer version that is not visible yet.
    pub stale: bool,
}

impl SharedKeyValue {
    /// Creates an empty store whose writes reach other locations after
    /// `propagation`, holding at most `max_keys` keys.
    pub fn new(propagation: Duration, max_keys: usize) -> Self {
        Self {
            propagation,
            max_keys,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the propagation delay.
    pub fn propagation(&self) -> Duration {
        self.propagation
    }

    /// Reads `key` as location `reader` reads it now.
    pub fn read(&self, reader: usize, key: &str) -> Result<Read, Error> {
        self.read_at(reader, key, Instant::now())
    }

    /// Reads `key` as location `reader` reads it at `now`.
    fn read_at(&self, reader: usize, key: &str, now: Instant) -> Result<Read, Error> {
        check_key(key)?;
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(versions) = entries.get(key) else {
            return Ok(Read {
                value: None,
                stale: false,
            });
        };
        let visible = versions
            .iter()
            .rposition(|version| self.is_visible(version, reader, now));
        let stale = match visible {
            Some(index) => index + 1 < versions.len(),
            None => !versions.is_empty(),
        };
        let value = visible
            .map(|index| &versions[index])
            .filter(|version| version.expires_at.is_none_or(|expires| expires > now))
            .and_then(|version| version.value.clone());
        Ok(Read { value, stale })
    }

    /// Writes `value` (or a delete, with `None`) to `key` from location `writer`.
    pub fn write(
        &self,
        writer: usize,
        key: &str,
        value: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        self.write_at(writer, key, value, ttl, Instant::now())
    }

    /// Writes `value` (or a delete, with `None`) to `key` from location `writer` at
    /// `now`.
    fn write_at(
        &self,
        writer: usize,
        key: &str,
        value: Option<Bytes>,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<(), Error> {
        check_key(key)?;

        if let Some(value) = &value
            && value.len() > MAX_VALUE_BYTES
        {
            return Err(limit_error(format!(
                "the value of key-value entry {key:?} is {} bytes, over the Workers KV \
                 limit of {MAX_VALUE_BYTES} bytes (25 MiB)",
                value.len()
            )));
        }

        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if !entries.contains_key(key) && entries.len() >= self.max_keys {
            self.drop_settled_deletes(&mut entries, now);
            if entries.len() >= self.max_keys {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    ErrorSource::Platform,
                    "the simulated key-value store is full",
                )
                .with_cause(format!(
                    "{} keys stored; raise key_value.memory_max_entries",
                    self.max_keys
                )));
            }
        }

        let versions = entries.entry(key.to_owned()).or_default();
        versions.push(Version {
            value,
            expires_at: ttl.map(|ttl| now + ttl.max(MIN_TTL)),
            written_at: now,
            writer,
            everywhere: false,
        });
        // Versions older than the newest one every location sees are never read again.
        let settled = versions.iter().rposition(|version| {
            version.everywhere || now.duration_since(version.written_at) >= self.propagation
        });
        if let Some(settled) = settled {
            versions.drain(..settled);
        }
        Ok(())
    }

    /// Stores `value` under `key` in every location at once, without expiry, for
    /// entries loaded at start.
    pub fn seed(&self, key: &str, value: Bytes) -> Result<(), Error> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(limit_error(format!(
                "the value of key-value entry {key:?} is {} bytes, over the Workers KV \
                 limit of {MAX_VALUE_BYTES} bytes (25 MiB)",
                value.len()
            )));
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if !entries.contains_key(key) && entries.len() >= self.max_keys {
            return Err(Error::unavailable(format!(
                "the simulated key-value store is full at {} keys; raise \
                 key_value.memory_max_entries",
                self.max_keys
            )));
        }
        entries.insert(
            key.to_owned(),
            vec![Version {
                value: Some(value),
                expires_at: None,
                written_at: Instant::now(),
                writer: usize::MAX,
                everywhere: true,
            }],
        );
        Ok(())
    }

    fn is_visible(&self, version: &Version, reader: usize, now: Instant) -> bool {
        version.everywhere
            || version.writer == reader
            || now.duration_since(version.written_at) >= self.propagation
    }

    /// Drops keys whose only version is a delete or an expired value that every
    /// location already sees.
    fn drop_settled_deletes(&self, entries: &mut HashMap<String, Vec<Version>>, now: Instant) {
        entries.retain(|_, versions| {
            let [only] = versions.as_slice() else {
                return true;
            };
            let settled =
                only.everywhere || now.duration_since(only.written_at) >= self.propagation;
            let empty = only.value.is_none() || only.expires_at.is_some_and(|at| at <= now);
            !(settled && empty)
        });
    }
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::bad_request("a key-value key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(limit_error(format!(
            "key-value key of {} bytes is over the Workers KV limit of {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// Builds the error of a broken Workers KV limit. Workers KV rejects such an
/// operation, and the core treats it as a failed store (503).
fn limit_error(detail: String) -> Error {
    Error::new(ErrorKind::Unavailable, ErrorSource::Platform, detail).with_cause(LIMIT_CAUSE)
}

/// The cause attached to errors of broken Workers KV limits, by which they are
/// counted as limit violations.
const LIMIT_CAUSE: &str = "Workers KV limit";

fn is_limit_error(error: &Error) -> bool {
    error
        .cause()
        .is_some_and(|cause| cause.to_string() == LIMIT_CAUSE)
}

/// The shared store as one location uses it, counting its stale reads and broken
/// limits.
#[derive(Debug, Clone)]
pub struct LocationKeyValue {
    location: usize,
    shared: Arc<SharedKeyValue>,
    stats: Arc<LocationStats>,
}

impl LocationKeyValue {
    /// Creates the view of location `location`, which records into `stats`.
    pub fn new(location: usize, shared: Arc<SharedKeyValue>, stats: Arc<LocationStats>) -> Self {
        Self {
            location,
            shared,
            stats,
        }
    }

    fn record_error(&self, error: &Error) {
        if is_limit_error(error) {
            self.stats.record_violation("kv_size");
            tracing::warn!(detail = %error.detail(), "a key-value operation broke a Workers KV limit");
        }
    }

    /// Reads `key` and counts a stale read.
    pub fn read(&self, key: &str) -> Result<Read, Error> {
        let read = self.shared.read(self.location, key);
        match &read {
            Ok(read) => {
                if read.stale {
                    self.stats.kv_stale_reads.fetch_add(1, Ordering::Relaxed);
                }
                self.stats.kv_reads.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => self.record_error(error),
        }
        read
    }

    /// Writes `value` or, with `None`, deletes `key`.
    pub fn write(
        &self,
        key: &str,
        value: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let result = self.shared.write(self.location, key, value, ttl);
        match &result {
            Ok(()) => {
                self.stats.kv_writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => self.record_error(error),
        }
        result
    }
}

impl KeyValue for LocationKeyValue {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        self.read(key).map(|read| read.value)
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), Error> {
        self.write(key, Some(value), ttl)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.write(key, None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_is_visible_at_once_in_writer() {
        let store = SharedKeyValue::new(Duration::from_secs(60), 10);
        store
            .write(0, "k", Some(Bytes::from_static(b"v")), None)
            .unwrap();
        let read = store.read(0, "k").unwrap();
        assert_eq!(read.value.as_deref(), Some(&b"v"[..]));
        assert!(!read.stale);
    }

    #[test]
    fn write_is_hidden_elsewhere_until_propagated() {
        let store = SharedKeyValue::new(Duration::from_millis(500), 10);
        let written = Instant::now();
        store
            .write_at(0, "k", Some(Bytes::from_static(b"v")), None, written)
            .unwrap();
        let before = store
            .read_at(1, "k", written + Duration::from_millis(499))
            .unwrap();
        assert_eq!(before.value, None);
        assert!(before.stale);
        let after = store
            .read_at(1, "k", written + Duration::from_millis(500))
            .unwrap();
        assert_eq!(after.value.as_deref(), Some(&b"v"[..]));
        assert!(!after.stale);
    }

    #[test]
    fn overwrite_shows_old_value_elsewhere() {
        let store = SharedKeyValue::new(Duration::from_secs(60), 10);
        store
            .write(1, "k", Some(Bytes::from_static(b"old")), None)
            .unwrap();
        store
            .write(0, "k", Some(Bytes::from_static(b"new")), None)
            .unwrap();
        let read = store.read(1, "k").unwrap();
        assert_eq!(read.value.as_deref(), Some(&b"old"[..]));
        assert!(read.stale);
    }

    #[test]
    fn key_and_value_limits_are_enforced() {
        let store = SharedKeyValue::new(Duration::ZERO, 10);
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        let error = store
            .write(0, &long_key, Some(Bytes::new()), None)
            .unwrap_err();
        assert!(error.detail().contains("512 bytes"), "{}", error.detail());
        assert!(
            store
                .write(0, &"k".repeat(MAX_KEY_BYTES), Some(Bytes::new()), None)
                .is_ok()
        );
        let big = Bytes::from(vec![0u8; MAX_VALUE_BYTES + 1]);
        let error = store.write(0, "k", Some(big), None).unwrap_err();
        assert!(error.detail().contains("25 MiB"), "{}", error.detail());
    }

    #[test]
    fn seeded_entry_is_visible_everywhere() {
        let store = SharedKeyValue::new(Duration::from_secs(60), 10);
        store.seed("k", Bytes::from_static(b"v")).unwrap();
        for location in 0..3 {
            let read = store.read(location, "k").unwrap();
            assert_eq!(read.value.as_deref(), Some(&b"v"[..]));
            assert!(!read.stale);
        }
    }

    #[test]
    fn store_rejects_keys_past_maximum() {
        let store = SharedKeyValue::new(Duration::ZERO, 1);
        store.write(0, "a", Some(Bytes::new()), None).unwrap();
        let error = store.write(0, "b", Some(Bytes::new()), None).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
    }
}
