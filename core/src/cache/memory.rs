//! [`MemoryResponseCache`]: a least-recently-used response store with a byte budget.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::CacheEntry;
use crate::error::Error;
use crate::platform::ResponseCache;

/// Bytes counted for each key in addition to its length, for the map nodes.
const KEY_OVERHEAD: u64 = 64;

/// A response store in process memory, evicting the least recently used entries to
/// stay within a byte budget.
///
/// Keys are kept in order, so purging a prefix visits only the matching keys. One
/// lock guards the store: lookups are short (a map lookup and a clone of reference
/// counted bytes), so contention stays low at the request rates of one gateway.
#[derive(Debug)]
pub struct MemoryResponseCache {
    inner: Mutex<Lru>,
    max_bytes: AtomicU64,
    evictions: AtomicU64,
}

/// A snapshot of a memory store's size and eviction count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries stored.
    pub entries: u64,
    /// Estimated bytes stored.
    pub bytes: u64,
    /// Entries removed to make room since the store was created.
    pub evictions: u64,
}

#[derive(Debug, Default)]
struct Lru {
    entries: BTreeMap<String, Slot>,
    /// Keys by the tick of their last use, oldest first.
    order: BTreeMap<u64, String>,
    next_tick: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Slot {
    entry: CacheEntry,
    expires_unix_ms: u64,
    weight: u64,
    tick: u64,
}

impl MemoryResponseCache {
    /// Creates an empty store holding at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            inner: Mutex::new(Lru::default()),
            max_bytes: AtomicU64::new(max_bytes),
            evictions: AtomicU64::new(0),
        }
    }

    /// Changes the byte budget, evicting entries at once when it shrinks.
    pub fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        let evicted = self.lock().evict_to(max_bytes);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Returns the byte budget.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// Returns the current size and the evictions so far.
    pub fn stats(&self) -> CacheStats {
        let lru = self.lock();
        CacheStats {
            entries: lru.entries.len() as u64,
            bytes: lru.bytes,
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // Every change to the maps completes before the lock is released, except on
        // allocation failure, so a poisoned lock still holds a consistent store.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Lru {
    fn remove(&mut self, key: &str) -> bool {
        match self.entries.remove(key) {
            Some(slot) => {
                self.order.remove(&slot.tick);
                self.bytes -= slot.weight;
                true
            }
            None => false,
        }
    }

    /// Removes the least recently used entries until at most `max_bytes` remain,
    /// returning how many were removed.
    fn evict_to(&mut self, max_bytes: u64) -> u64 {
        let mut evicted = 0;
        while self.bytes > max_bytes {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some(slot) = self.entries.remove(&key) {
                self.bytes -= slot.weight;
                evicted += 1;
            }
        }
        evicted
    }

    fn touch(&mut self, key: &str) -> Option<&Slot> {
        let tick = self.next_tick;
        let slot = self.entries.get_mut(key)?;
        self.next_tick += 1;
        if let Some(old) = self.order.remove(&slot.tick) {
            self.order.insert(tick, old);
        }
        slot.tick = tick;
        Some(slot)
    }
}

impl ResponseCache for MemoryResponseCache {
    async fn lookup(&self, key: &str, now_unix_ms: u64) -> Result<Option<CacheEntry>, Error> {
        let mut lru = self.lock();
        let expired = match lru.entries.get(key) {
            None => return Ok(None),
            Some(slot) => slot.expires_unix_ms <= now_unix_ms,
        };
        if expired {
            lru.remove(key);
            return Ok(None);
        }
        Ok(lru.touch(key).map(|slot| slot.entry.clone()))
    }

    async fn store(
        &self,
        key: &str,
        entry: CacheEntry,
        now_unix_ms: u64,
        ttl: Duration,
    ) -> Result<(), Error> {
        let weight = entry.size_bytes() + key.len() as u64 + KEY_OVERHEAD;
        let max_bytes = self.max_bytes.load(Ordering::Relaxed);
        let mut lru = self.lock();
        lru.remove(key);
        if weight > max_bytes {
            return Ok(());
        }
        let tick = lru.next_tick;
        lru.next_tick += 1;
        lru.bytes += weight;
        lru.order.insert(tick, key.to_owned());
        let expires_unix_ms = now_unix_ms.saturating_add(ttl.as_millis() as u64);
        lru.entries.insert(
            key.to_owned(),
            Slot {
                entry,
                expires_unix_ms,
                weight,
                tick,
            },
        );
        let evicted = lru.evict_to(max_bytes);
        drop(lru);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        Ok(self.lock().remove(key))
    }

    async fn purge_prefix(&self, prefix: &str) -> Result<u64, Error> {
        let mut lru = self.lock();
        let keys: Vec<String> = lru
            .entries
            .range(prefix.to_owned()..)
            .map(|(key, _)| key)
            .take_while(|key| key.starts_with(prefix))
            .cloned()
            .collect();
        for key in &keys {
            lru.remove(key);
        }
        Ok(keys.len() as u64)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests report failures by panicking")]
mod tests {
    use bytes::Bytes;
    use futures::executor::block_on;
    use http::{HeaderMap, StatusCode};

    use super::*;
    use crate::cache::CachedResponse;

    const TTL: Duration = Duration::from_secs(60);

    fn response(body_bytes: usize) -> CacheEntry {
        CacheEntry::Response(CachedResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body_bytes]),
            response_unix_ms: 0,
            initial_age_secs: 0,
            fresh_for: TTL,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            no_stale: false,
            always_revalidate: false,
        })
    }

    #[test]
    fn lookup_returns_stored_until_expiry() {
        let cache = MemoryResponseCache::new(1 << 20);
        block_on(cache.store("a", response(10), 1_000, TTL)).unwrap();
        assert!(block_on(cache.lookup("a", 1_000)).unwrap().is_some());
        assert!(block_on(cache.lookup("a", 60_999)).unwrap().is_some());
        assert!(block_on(cache.lookup("a", 61_000)).unwrap().is_none());
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(cache.stats().bytes, 0);
    }

    #[test]
    fn least_recently_used_is_evicted() {
        let one = response(1_000).size_bytes() + 1 + KEY_OVERHEAD;
        let cache = MemoryResponseCache::new(one * 2);
        block_on(cache.store("a", response(1_000), 0, TTL)).unwrap();
        block_on(cache.store("b", response(1_000), 0, TTL)).unwrap();
        // Using "a" makes "b" the least recently used.
        assert!(block_on(cache.lookup("a", 0)).unwrap().is_some());
        block_on(cache.store("c", response(1_000), 0, TTL)).unwrap();
        assert!(block_on(cache.lookup("a", 0)).unwrap().is_some());
        assert!(block_on(cache.lookup("b", 0)).unwrap().is_none());
        assert!(block_on(cache.lookup("c", 0)).unwrap().is_some());
        let stats = cache.stats();
        assert_eq!(stats.entries, 2);
        assert_eq!(stats.evictions, 1);
        assert_eq!(stats.bytes, one * 2);
    }

    #[test]
    fn oversized_entry_is_declined() {
        let cache = MemoryResponseCache::new(100);
        block_on(cache.store("a", response(1_000), 0, TTL)).unwrap();
        assert!(block_on(cache.lookup("a", 0)).unwrap().is_none());
        assert_eq!(cache.stats().evictions, 0);
    }

    #[test]
    fn replacing_keeps_byte_count() {
        let cache = MemoryResponseCache::new(1 << 20);
        block_on(cache.store("a", response(100), 0, TTL)).unwrap();
        block_on(cache.store("a", response(300), 0, TTL)).unwrap();
        let expected = response(300).size_bytes() + 1 + KEY_OVERHEAD;
        assert_eq!(cache.stats().bytes, expected);
        assert_eq!(cache.stats().entries, 1);
    }

    #[test]
    fn purge_prefix_removes_subtree() {
        let cache = MemoryResponseCache::new(1 << 20);
        for key in [
            "host/a/1\nGET",
            "host/a/2\nGET",
            "host/ab\nGET",
            "host/b\nGET",
        ] {
            block_on(cache.store(key, response(1), 0, TTL)).unwrap();
        }
        assert_eq!(block_on(cache.purge_prefix("host/a/")).unwrap(), 2);
        assert!(block_on(cache.lookup("host/ab\nGET", 0)).unwrap().is_some());
        assert!(
            block_on(cache.lookup("host/a/1\nGET", 0))
                .unwrap()
                .is_none()
        );
        assert!(block_on(cache.delete("host/b\nGET")).unwrap());
        assert!(!block_on(cache.delete("host/b\nGET")).unwrap());
        assert_eq!(cache.stats().entries, 1);
    }

    #[test]
    fn shrinking_budget_evicts() {
        let cache = MemoryResponseCache::new(1 << 20);
        block_on(cache.store("a", response(1_000), 0, TTL)).unwrap();
        block_on(cache.store("b", response(1_000), 0, TTL)).unwrap();
        cache.set_max_bytes(1_500);
        let stats = cache.stats();
        assert_eq!(stats.entries, 1);
        assert_eq!(stats.evictions, 1);
        assert!(block_on(cache.lookup("b", 0)).unwrap().is_some());
    }
}
