//! The in-memory counter store: exact within one process, shared by all its threads.
//!
//! Keys are spread over shards, each behind its own mutex, so threads deciding for
//! different keys rarely contend. Memory is bounded: a shard that reaches its share of
//! `max_keys` first drops the keys whose state has fully refilled (they carry no
//! information), and only then its oldest keys.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};

use super::Limit;
use super::gcra::{Decision, GcraLimit};
use super::quota::QuotaState;
use super::window::{WindowLimit, WindowState};

/// Shard count; a power of two well above the core counts this store is shared by.
const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy)]
enum State {
    Gcra { tat: u64 },
    Window(WindowState),
    Quota(QuotaState),
}

/// The stored form of a key's state. The kind of state shares a word with the order
/// of last use, which makes an entry 40 bytes instead of the 48 that `State`, with
/// its own tag word, and two more words would take.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The state's fields: `[tat, 0, 0]` for GCRA, `[window_start, current,
    /// previous]` for a window and `[period_start, used, 0]` for a quota.
    words: [u64; 3],
    /// When the entry stops mattering: a refilled GCRA key or a window that rolled out.
    expires_at: u64,
    /// The order of last use, for evicting the oldest keys when no entry has expired,
    /// shifted left by [`KIND_BITS`], with the kind of state in the low bits. Orders
    /// come from a counter of updates that cannot reach 2^62.
    used_and_kind: u64,
}

const KIND_BITS: u32 = 2;
const KIND_GCRA: u64 = 0;
const KIND_WINDOW: u64 = 1;
const KIND_QUOTA: u64 = 2;

impl Entry {
    fn new(state: State, expires_at: u64, used: u64) -> Self {
        let (kind, words) = match state {
            State::Gcra { tat } => (KIND_GCRA, [tat, 0, 0]),
            State::Window(window) => (
                KIND_WINDOW,
                [window.window_start, window.current, window.previous],
            ),
            State::Quota(quota) => (KIND_QUOTA, [quota.period_start, quota.used, 0]),
        };
        Self {
            words,
            expires_at,
            used_and_kind: (used << KIND_BITS) | kind,
        }
    }

    fn state(&self) -> State {
        let [first, second, third] = self.words;
        match self.used_and_kind & ((1 << KIND_BITS) - 1) {
            KIND_WINDOW => State::Window(WindowState {
                window_start: first,
                current: second,
                previous: third,
            }),
            KIND_QUOTA => State::Quota(QuotaState {
                period_start: first,
                used: second,
            }),
            _ => State::Gcra { tat: first },
        }
    }

    fn used(&self) -> u64 {
        self.used_and_kind >> KIND_BITS
    }
}

/// Bytes of the longest key stored inline, so that a key takes 32 bytes.
const INLINE_KEY_BYTES: usize = 30;

/// A key, stored inline up to [`INLINE_KEY_BYTES`] bytes, which saves an allocation
/// for the usual key: a policy name and a client address or id. Keys compare and hash
/// as their bytes, so a map of them is searched with `&[u8]`.
#[derive(Debug, Clone)]
enum Key {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(key: &str) -> Self {
        let key = key.as_bytes();
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_KEY_BYTES => {
                let mut bytes = [0; INLINE_KEY_BYTES];
                bytes[..key.len()].copy_from_slice(key);
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(key.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<Key, Entry, FixedState>,
    clock: u64,
}

/// A fixed, seedless hasher state, so the store needs no random source on wasm.
/// Keys are derived from client input, but each shard is bounded, so a flood of
/// colliding keys costs the attacker the same budget it costs the store.
#[derive(Debug, Default, Clone, Copy)]
struct FixedState;

impl BuildHasher for FixedState {
    type Hasher = xxhash_rust::xxh3::Xxh3;

    fn build_hasher(&self) -> Self::Hasher {
        xxhash_rust::xxh3::Xxh3::with_seed(0x6761_7465_686f_7573)
    }
}

/// Rate-limit counters in memory.
#[derive(Debug)]
pub struct MemoryCounters {
    shards: Vec<Mutex<Shard>>,
    max_keys_per_shard: usize,
}

impl MemoryCounters {
    /// Creates a store that keeps at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            max_keys_per_shard: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// Decides a request of `cost` for `key` under `limit` at `now_micros`, the
    /// caller's clock reading in microseconds.
    pub fn decide(&self, key: &str, limit: &Limit, cost: u64, now_micros: u64) -> Decision {
        match limit {
            Limit::Gcra(limit) => self.gcra(key, limit, cost, now_micros),
            Limit::Window(limit) => self.window(key, limit, cost, now_micros),
            Limit::Calendar(quota) => self.update(key, now_micros, |state| {
                let usage = match state {
                    Some(State::Quota(usage)) => usage,
                    _ => QuotaState::default(),
                };
                let (decision, usage) = quota.decide(usage, now_micros, cost);
                let expires_at = quota.period().bounds(usage.period_start).1;
                (decision, State::Quota(usage), expires_at)
            }),
        }
    }

    /// Decides a GCRA request of `cost` for `key` at `now_micros`.
    pub fn gcra(&self, key: &str, limit: &GcraLimit, cost: u64, now_micros: u64) -> Decision {
        self.update(key, now_micros, |state| {
            let tat = match state {
                Some(State::Gcra { tat }) => tat,
                _ => 0,
            };
            let (decision, tat) = limit.decide(tat, now_micros, cost);
            (decision, State::Gcra { tat }, tat)
        })
    }

    /// Decides a sliding-window request of `cost` for `key` at `now_micros`.
    pub fn window(&self, key: &str, limit: &WindowLimit, cost: u64, now_micros: u64) -> Decision {
        let window = limit.window().as_micros() as u64;
        self.update(key, now_micros, |state| {
            let counts = match state {
                Some(State::Window(counts)) => counts,
                _ => WindowState::default(),
            };
            let (decision, counts) = limit.decide(counts, now_micros, cost);
            // Counts matter until the current window has also become the previous one.
            let expires_at = counts.window_start.saturating_add(window.saturating_mul(2));
            (decision, State::Window(counts), expires_at)
        })
    }

    /// Returns the number of keys stored.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).entries.len())
            .sum()
    }

    /// Returns whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn update(
        &self,
        key: &str,
        now_micros: u64,
        decide: impl FnOnce(Option<State>) -> (Decision, State, u64),
    ) -> Decision {
        let mut shard = lock(&self.shards[shard_index(key)]);
        shard.clock += 1;
        let used = shard.clock;
        let current = shard
            .entries
            .get(key.as_bytes())
            .filter(|entry| entry.expires_at > now_micros)
            .map(Entry::state);
        let (decision, state, expires_at) = decide(current);

        if let Some(entry) = shard.entries.get_mut(key.as_bytes()) {
            *entry = Entry::new(state, expires_at, used);
            return decision;
        }
        if shard.entries.len() >= self.max_keys_per_shard {
            shard.evict(now_micros);
        }
        shard
            .entries
            .insert(Key::new(key), Entry::new(state, expires_at, used));
        decision
    }
}

impl Shard {
    /// Drops expired entries, or, when none expired, the least recently used eighth.
    fn evict(&mut self, now_micros: u64) {
        let before = self.entries.len();
        self.entries
            .retain(|_, entry| entry.expires_at > now_micros);
        if self.entries.len() < before {
            return;
        }
        let mut uses: Vec<u64> = self.entries.values().map(Entry::used).collect();
        let cut = (uses.len() / 8).max(1);
        let (_, threshold, _) = uses.select_nth_unstable(cut - 1);
        let threshold = *threshold;
        self.entries.retain(|_, entry| entry.used() > threshold);
    }
}

fn shard_index(key: &str) -> usize {
    (FixedState.hash_one(key) as usize) % SHARDS
}

/// Locks a shard; a panic in another thread while it held the lock leaves at worst one
/// entry stale, which is harmless for rate limiting, so poisoning is ignored.
fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn keys_are_independent() {
        let store = MemoryCounters::new(1_000);
        let limit = GcraLimit::new(1, Duration::from_secs(1), 1).unwrap();
        assert!(store.gcra("a", &limit, 1, 1_000_000).allowed);
        assert!(!store.gcra("a", &limit, 1, 1_000_000).allowed);
        assert!(store.gcra("b", &limit, 1, 1_000_000).allowed);
    }

    #[test]
    fn entry_keeps_every_state_kind() {
        let window = WindowState {
            window_start: 1,
            current: 2,
            previous: 3,
        };
        let quota = QuotaState {
            period_start: 4,
            used: 5,
        };
        let states = [
            State::Gcra { tat: u64::MAX },
            State::Window(window),
            State::Quota(quota),
        ];
        for state in states {
            let entry = Entry::new(state, 6, 7);
            assert_eq!(entry.used(), 7);
            assert_eq!(entry.expires_at, 6);
            match (entry.state(), state) {
                (State::Gcra { tat }, State::Gcra { tat: expected }) => assert_eq!(tat, expected),
                (State::Window(found), State::Window(expected)) => assert_eq!(found, expected),
                (State::Quota(found), State::Quota(expected)) => assert_eq!(found, expected),
                (found, expected) => panic!("stored {expected:?}, read {found:?}"),
            }
        }
        assert_eq!(std::mem::size_of::<Entry>(), 40);
    }

    #[test]
    fn inline_and_heap_keys_independent() {
        let store = MemoryCounters::new(1_000);
        let limit = GcraLimit::new(1, Duration::from_secs(1), 1).unwrap();
        let inline = "k".repeat(INLINE_KEY_BYTES);
        let heap = "k".repeat(INLINE_KEY_BYTES + 1);
        assert!(store.gcra(&inline, &limit, 1, 1_000_000).allowed);
        assert!(store.gcra(&heap, &limit, 1, 1_000_000).allowed);
        assert!(!store.gcra(&inline, &limit, 1, 1_000_000).allowed);
        assert!(!store.gcra(&heap, &limit, 1, 1_000_000).allowed);
        assert_eq!(store.len(), 2);
        assert_eq!(std::mem::size_of::<Key>(), 32);
    }

    #[test]
    fn exact_under_concurrency() {
        let store = Arc::new(MemoryCounters::new(1_000));
        let limit = GcraLimit::new(1_000, Duration::from_secs(60), 1_000).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| store.gcra("shared", &limit, 1, 5_000_000).allowed)
                        .count()
                })
            })
            .collect();
        let admitted: usize = threads
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .sum();
        assert_eq!(admitted, 1_000);
    }

    #[test]
    fn memory_stays_bounded() {
        let store = MemoryCounters::new(640);
        let limit = GcraLimit::new(10, Duration::from_secs(1), 10).unwrap();
        for key in 0..10_000 {
            store.gcra(&format!("client-{key}"), &limit, 1, 1_000_000);
        }
        assert!(store.len() <= 640, "{} keys kept", store.len());
    }

    #[test]
    fn refilled_keys_evicted_first() {
        let store = MemoryCounters::new(640);
        let slow = GcraLimit::new(1, Duration::from_secs(10_000), 1).unwrap();
        let fast = GcraLimit::new(1, Duration::from_secs(1), 1).unwrap();
        // 10 keys per shard, so every shard evicts. The busy key stays used up for
        // 10,000 s and must survive the eviction of
        // idle keys, each of which has refilled by the time the next one arrives.
        assert!(store.gcra("busy", &slow, 1, 0).allowed);
        for key in 1..=1_000_u64 {
            store.gcra(&format!("idle-{key}"), &fast, 1, key * 2_000_000);
        }
        assert!(!store.gcra("busy", &slow, 1, 2_001_000_000).allowed);
    }

    #[test]
    fn window_counts_shared_per_key() {
        let store = MemoryCounters::new(1_000);
        let limit = WindowLimit::new(2, Duration::from_secs(1)).unwrap();
        let admitted = (0..5)
            .filter(|_| store.window("k", &limit, 1, 3_000_000).allowed)
            .count();
        assert_eq!(admitted, 2);
        assert!(store.window("k", &limit, 1, 5_000_000).allowed);
    }
}
