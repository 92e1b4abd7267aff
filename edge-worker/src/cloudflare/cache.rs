//! [`WorkerResponseCache`]: the core's response cache on the Workers Cache API
//! (`caches.default`), shared by every isolate of the Worker in one data center.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::cache::CacheEntry;
use gatehouse_core::cache::encode::{decode_entry, encode_entry};
use gatehouse_core::platform::ResponseCache;
use gatehouse_core::{Error, ErrorKind, ErrorSource};
use worker::{Cache, CacheDeletionOutcome, Headers, Response, console_warn};

/// The response cache of a data center.
///
/// Each entry is stored as one response whose body is the entry in the core's byte
/// encoding, so the Cache API never reads the cached response's own headers (such as
/// `Set-Cookie`, `Vary` or `Cache-Control`, which change what it stores). The stored
/// response carries `Cache-Control: max-age` of the entry's TTL, so the cache drops it
/// when it expires. Lookups also check the entry's own expiry at the gateway's clock.
///
/// NOTE: the Cache API cannot list its keys, so `purge_prefix` is not available, and
/// Cloudflare may evict entries before they expire. On `*.workers.dev` hostnames the
/// Cache API stores nothing, so every lookup misses there.
#[derive(Debug, Default)]
pub struct WorkerResponseCache {
    cache: Cache,
}

impl ResponseCache for WorkerResponseCache {
    async fn lookup(&self, key: &str, now_unix_ms: u64) -> Result<Option<CacheEntry>, Error> {
        let url = key_url(key);
        let Some(mut response) = self
            .cache
            .get(url.as_str(), false)
            .await
            .map_err(|error| failed("match", &error))?
        else {
            return Ok(None);
        };
        let bytes = response
            .bytes()
            .await
            .map_err(|error| failed("match", &error))?;
        match decode_entry(Bytes::from(bytes)) {
            Some((entry, expires_unix_ms)) if expires_unix_ms > now_unix_ms => Ok(Some(entry)),
            Some(_) => Ok(None),
            None => {
                console_warn!("gatehouse: a Cache API entry is unreadable and counts as a miss");
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
        let expires_unix_ms =
            now_unix_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let encoded = encode_entry(&entry, expires_unix_ms);
        // Whole seconds, rounded up, so the cache never drops an entry before its time.
        let max_age = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let headers = Headers::new();
        headers
            .set("cache-control", &format!("max-age={max_age}"))
            .and_then(|()| headers.set("content-type", "application/octet-stream"))
            .map_err(|error| failed("put", &error))?;
        let response = Response::from_bytes(encoded.to_vec())
            .map_err(|error| failed("put", &error))?
            .with_headers(headers);
        self.cache
            .put(key_url(key).as_str(), response)
            .await
            .map_err(|error| failed("put", &error))
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        let outcome = self
            .cache
            .delete(key_url(key).as_str(), false)
            .await
            .map_err(|error| failed("delete", &error))?;
        Ok(matches!(outcome, CacheDeletionOutcome::Success))
    }

    async fn purge_prefix(&self, _prefix: &str) -> Result<u64, Error> {
        Err(Error::new(
            ErrorKind::NotImplemented,
            ErrorSource::Platform,
            "the Workers Cache API cannot list its entries, so it cannot purge by prefix",
        ))
    }
}

/// Returns the Cache API key of a core cache key: `https://HOST/` and the rest of the
/// key percent-encoded, so that its line breaks and query become one path segment.
/// The key starts with the request's host, so entries belong to the host they were
/// cached for.
fn key_url(key: &str) -> String {
    let (host, rest) = key.split_at(key.find('/').unwrap_or(key.len()));
    // A request without a host still gets a valid URL.
    let host = if host.is_empty() {
        "no-host.invalid"
    } else {
        host
    };
    let mut url = String::with_capacity(key.len() * 2 + 16);
    url.push_str("https://");
    url.push_str(host);
    url.push('/');
    for byte in rest.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            url.push(char::from(byte));
        } else {
            let _ = write!(url, "%{byte:02X}");
        }
    }
    url
}

/// Creates the error of a failed Cache API call and logs its cause. The core treats a
/// failed lookup as a miss and a failed store as not stored.
fn failed(operation: &str, cause: &worker::Error) -> Error {
    console_warn!("gatehouse: Cache API {operation} failed: {cause}");
    Error::new(
        ErrorKind::Unavailable,
        ErrorSource::Platform,
        format!("the Cache API {operation} failed"),
    )
    .with_cause(cause.to_string())
}
