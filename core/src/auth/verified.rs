//! The cache of verified tokens of a `jwt` policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::keys::CustomClaims;

/// The claims of a token whose signature was checked.
pub(crate) type VerifiedClaims = Arc<jwt_compact::Claims<CustomClaims>>;

/// Number of independently locked parts, so threads checking different tokens
/// rarely wait for each other.
const SHARDS: usize = 16;

/// A bounded map from a token's SHA-256 to its verified claims.
///
/// Entries expire at a deadline set on insertion, which the caller keeps at or before
/// the token's `exp`. A full shard first drops its expired entries and then, if still
/// full, an arbitrary one: every entry is a valid token, so which one goes only costs a
/// signature check later.
#[derive(Debug)]
pub(crate) struct VerifiedTokens {
    shards: Vec<Mutex<HashMap<[u8; 32], Entry>>>,
    per_shard: usize,
}

#[derive(Debug)]
struct Entry {
    claims: VerifiedClaims,
    /// Unix time in milliseconds after which the entry is not used.
    deadline_ms: u64,
}

impl VerifiedTokens {
    /// Creates a cache of about `max_tokens` entries, or `None` when `max_tokens` is 0.
    pub(crate) fn new(max_tokens: usize) -> Option<Self> {
        if max_tokens == 0 {
            return None;
        }
        let per_shard = max_tokens.div_ceil(SHARDS);
        Some(Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
        })
    }

    /// Returns the digest under which `token` is kept.
    pub(crate) fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// Returns the claims of a token verified before, unless its entry expired.
    pub(crate) fn get(&self, digest: &[u8; 32], now_ms: u64) -> Option<VerifiedClaims> {
        let mut shard = self.shard(digest);
        match shard.get(digest) {
            Some(entry) if now_ms < entry.deadline_ms => Some(Arc::clone(&entry.claims)),
            Some(_) => {
                shard.remove(digest);
                None
            }
            None => None,
        }
    }

    /// Keeps `claims` until `deadline_ms`. A deadline not after `now_ms` keeps nothing.
    pub(crate) fn insert(
        &self,
        digest: [u8; 32],
        claims: VerifiedClaims,
        now_ms: u64,
        deadline_ms: u64,
    ) {
        if deadline_ms <= now_ms {
            return;
        }
        let mut shard = self.shard(&digest);
        if shard.len() >= self.per_shard && !shard.contains_key(&digest) {
            shard.retain(|_, entry| now_ms < entry.deadline_ms);
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.keys().next().copied()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(
            digest,
            Entry {
                claims,
                deadline_ms,
            },
        );
    }

    fn shard(&self, digest: &[u8; 32]) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A panic while holding the lock cannot leave a map half-updated in a way that
        // matters here, so a poisoned lock is used as it is.
        self.shards[usize::from(digest[0]) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> VerifiedClaims {
        Arc::new(jwt_compact::Claims::new(CustomClaims::new()))
    }

    #[test]
    fn entry_is_used_until_its_deadline_only() {
        let cache = VerifiedTokens::new(10).expect("enabled");
        let digest = VerifiedTokens::digest("a.b.c");
        cache.insert(digest, claims(), 1_000, 2_000);
        assert!(cache.get(&digest, 1_999).is_some());
        assert!(cache.get(&digest, 2_000).is_none());
        // The expired entry was removed on the way.
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn past_deadline_keeps_nothing() {
        let cache = VerifiedTokens::new(10).expect("enabled");
        let digest = VerifiedTokens::digest("a.b.c");
        cache.insert(digest, claims(), 2_000, 2_000);
        assert!(cache.get(&digest, 1_000).is_none());
    }

    #[test]
    fn size_stays_bounded() {
        let cache = VerifiedTokens::new(64).expect("enabled");
        for token in 0..10_000 {
            let digest = VerifiedTokens::digest(&format!("token-{token}"));
            cache.insert(digest, claims(), 0, u64::MAX);
        }
        assert!(cache.len() <= 64, "{} entries", cache.len());
        // The newest entry is always kept.
        assert!(
            cache
                .get(&VerifiedTokens::digest("token-9999"), 0)
                .is_some()
        );
    }

    #[test]
    fn full_shard_drops_expired_entries_first() {
        // Two entries per shard: a third token in the same shard must make room.
        let cache = VerifiedTokens::new(2 * SHARDS).expect("enabled");
        let [expired, live, new] = same_shard_digests();
        cache.insert(expired, claims(), 0, 10);
        cache.insert(live, claims(), 0, 1_000);
        cache.insert(new, claims(), 20, 1_000);
        assert!(cache.get(&live, 20).is_some(), "a live entry was dropped");
        assert!(cache.get(&new, 20).is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn zero_tokens_disables_cache() {
        assert!(VerifiedTokens::new(0).is_none());
    }

    fn same_shard_digests() -> [[u8; 32]; 3] {
        let shard = |digest: &[u8; 32]| usize::from(digest[0]) % SHARDS;
        let first = VerifiedTokens::digest("token-0");
        let mut rest = (1..)
            .map(|index| VerifiedTokens::digest(&format!("token-{index}")))
            .filter(|digest| shard(digest) == shard(&first));
        let second = rest.next().expect("some digest shares the shard");
        let third = rest.next().expect("some digest shares the shard");
        [first, second, third]
    }
}
