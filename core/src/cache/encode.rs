//! A byte encoding of [`CacheEntry`] with its expiry time, for stores that keep bytes
//! outside the process, such as the Cloudflare Cache API and Spin key-value, and the
//! keys and values of entries in a key-value store shared with other data.
//!
//! The layout is private to one build of the gateway: a version byte comes first, and
//! an entry of another version decodes as `None`, which the store treats as a miss.
//! Integers are big-endian. Header values are bytes, so values that are not UTF-8
//! survive. Every length is stored, and bytes missing or left over make the entry
//! decode as `None`, so a truncated entry is never served.
//!
//! NOTE: there is no checksum, so changed bytes inside a header value or the body that
//! keep the layout valid decode as a different response.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::{CacheEntry, CachedResponse};

/// The version of the layout; raise it whenever the layout changes.
const VERSION: u8 = 2;

/// Prefix of the keys that response-cache entries take in a key-value store shared
/// with other data. Config checks reject `api_key.key_value_prefix` values that start
/// with it, so API key records and cache entries never share a key.
pub const KEY_VALUE_PREFIX: &str = "gatehouse-cache:";

const KIND_RESPONSE: u8 = 0;
const KIND_VARIANTS: u8 = 1;

const FLAG_NO_STALE: u8 = 1;
const FLAG_ALWAYS_REVALIDATE: u8 = 2;

/// Encodes `entry`, which expires at `expires_unix_ms`.
pub fn encode_entry(entry: &CacheEntry, expires_unix_ms: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(entry.size_bytes() as usize + 64);
    out.put_u8(VERSION);
    out.put_u64(expires_unix_ms);
    match entry {
        CacheEntry::Variants(names) => {
            out.put_u8(KIND_VARIANTS);
            out.put_u32(names.len() as u32);
            for name in names {
                put_bytes(&mut out, name.as_str().as_bytes());
            }
        }
        CacheEntry::Response(response) => {
            out.put_u8(KIND_RESPONSE);
            out.put_u16(response.status.as_u16());
            out.put_u64(response.response_unix_ms);
            out.put_u64(response.initial_age_secs);
            for duration in [
                response.fresh_for,
                response.stale_while_revalidate,
                response.stale_if_error,
            ] {
                out.put_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
            }
            let mut flags = 0;
            if response.no_stale {
                flags |= FLAG_NO_STALE;
            }
            if response.always_revalidate {
                flags |= FLAG_ALWAYS_REVALIDATE;
            }
            out.put_u8(flags);
            out.put_u32(response.headers.len() as u32);
            for (name, value) in &response.headers {
                put_bytes(&mut out, name.as_str().as_bytes());
                put_bytes(&mut out, value.as_bytes());
            }
            out.put_u64(response.body.len() as u64);
            out.put_slice(&response.body);
        }
    }
    out.freeze()
}

/// Decodes an entry written by [`encode_entry`] and returns it with its expiry time,
/// or `None` when the bytes are of another version, truncated or otherwise damaged.
pub fn decode_entry(mut input: Bytes) -> Option<(CacheEntry, u64)> {
    if input.try_get_u8().ok()? != VERSION {
        return None;
    }
    let expires_unix_ms = input.try_get_u64().ok()?;
    let entry = match input.try_get_u8().ok()? {
        KIND_VARIANTS => {
            let count = input.try_get_u32().ok()?;
            let mut names = Vec::new();
            for _ in 0..count {
                let name = take_bytes(&mut input)?;
                names.push(HeaderName::from_bytes(&name).ok()?);
            }
            CacheEntry::Variants(names)
        }
        KIND_RESPONSE => CacheEntry::Response(decode_response(&mut input)?),
        _ => return None,
    };
    input.is_empty().then_some((entry, expires_unix_ms))
}

fn decode_response(input: &mut Bytes) -> Option<CachedResponse> {
    let status = StatusCode::from_u16(input.try_get_u16().ok()?).ok()?;
    let response_unix_ms = input.try_get_u64().ok()?;
    let initial_age_secs = input.try_get_u64().ok()?;
    let fresh_for = Duration::from_millis(input.try_get_u64().ok()?);
    let stale_while_revalidate = Duration::from_millis(input.try_get_u64().ok()?);
    let stale_if_error = Duration::from_millis(input.try_get_u64().ok()?);
    let flags = input.try_get_u8().ok()?;
    let count = input.try_get_u32().ok()?;
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let name = HeaderName::from_bytes(&take_bytes(input)?).ok()?;
        let value = HeaderValue::from_maybe_shared(take_bytes(input)?).ok()?;
        headers.append(name, value);
    }
    let body_length = usize::try_from(input.try_get_u64().ok()?).ok()?;
    if input.remaining() < body_length {
        return None;
    }
    Some(CachedResponse {
        status,
        headers,
        body: input.split_to(body_length),
        response_unix_ms,
        initial_age_secs,
        fresh_for,
        stale_while_revalidate,
        stale_if_error,
        no_stale: flags & FLAG_NO_STALE != 0,
        always_revalidate: flags & FLAG_ALWAYS_REVALIDATE != 0,
    })
}

/// Returns the key-value store key of the cache key `key`: [`KEY_VALUE_PREFIX`] and the
/// SHA-256 of `key` in lowercase hex, 80 bytes in all. Cache keys hold the whole path,
/// query and `Vary` values, so they can be longer than a store accepts (256 bytes on
/// Spin, 512 on Workers KV), while a hash has a fixed length.
pub fn key_value_key(key: &str) -> String {
    let mut out = String::with_capacity(KEY_VALUE_PREFIX.len() + 64);
    out.push_str(KEY_VALUE_PREFIX);
    for byte in Sha256::digest(key.as_bytes()) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Encodes `entry` for a key-value store, under [`key_value_key`] of `key`: `key`
/// itself, then the entry as [`encode_entry`] writes it. The stored key lets a reader
/// confirm the entry is the one it asked for and lets a purge by prefix find entries.
pub fn encode_key_value(key: &str, entry: &CacheEntry, expires_unix_ms: u64) -> Bytes {
    let encoded = encode_entry(entry, expires_unix_ms);
    let mut out = BytesMut::with_capacity(4 + key.len() + encoded.len());
    put_bytes(&mut out, key.as_bytes());
    out.put_slice(&encoded);
    out.freeze()
}

/// Decodes a value written by [`encode_key_value`] and returns its cache key, entry
/// and expiry time, or `None` when the bytes are damaged or of another version.
pub fn decode_key_value(mut input: Bytes) -> Option<(String, CacheEntry, u64)> {
    let key = String::from_utf8(take_bytes(&mut input)?.to_vec()).ok()?;
    let (entry, expires_unix_ms) = decode_entry(input)?;
    Some((key, entry, expires_unix_ms))
}

/// Returns the cache key stored in a value written by [`encode_key_value`], without
/// decoding the entry, or `None` when the value is damaged.
pub fn key_of_key_value(mut input: Bytes) -> Option<String> {
    String::from_utf8(take_bytes(&mut input)?.to_vec()).ok()
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn take_bytes(input: &mut Bytes) -> Option<Bytes> {
    let length = input.try_get_u32().ok()? as usize;
    (input.remaining() >= length).then(|| input.split_to(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        headers.insert("x-raw", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        CachedResponse {
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(b"hello\0world"),
            response_unix_ms: 1_790_000_000_123,
            initial_age_secs: 7,
            fresh_for: Duration::from_secs(30),
            stale_while_revalidate: Duration::from_millis(1_500),
            stale_if_error: Duration::ZERO,
            no_stale: true,
            always_revalidate: false,
        }
    }

    #[test]
    fn response_round_trips() {
        let entry = CacheEntry::Response(response());
        let decoded = decode_entry(encode_entry(&entry, 42)).unwrap();
        assert_eq!(decoded.1, 42);
        assert_eq!(decoded.0, entry);
    }

    #[test]
    fn variants_round_trip() {
        let entry = CacheEntry::Variants(vec![
            HeaderName::from_static("accept-encoding"),
            HeaderName::from_static("accept-language"),
        ]);
        let decoded = decode_entry(encode_entry(&entry, u64::MAX)).unwrap();
        assert_eq!(decoded, (entry, u64::MAX));
    }

    #[test]
    fn empty_body_round_trips() {
        let mut response = response();
        response.body = Bytes::new();
        response.headers.clear();
        let entry = CacheEntry::Response(response);
        assert_eq!(decode_entry(encode_entry(&entry, 1)).unwrap().0, entry);
    }

    #[test]
    fn damaged_entries_decode_as_none() {
        let encoded = encode_entry(&CacheEntry::Response(response()), 42);
        let mut other_version = encoded.to_vec();
        other_version[0] = VERSION + 1;
        assert!(decode_entry(Bytes::from(other_version)).is_none());
        // Cut inside the header list, before the body starts.
        assert!(decode_entry(encoded.slice(..50)).is_none());
        assert!(decode_entry(Bytes::new()).is_none());
    }

    #[test]
    fn every_truncation_decodes_as_none() {
        let entries = [
            CacheEntry::Response(response()),
            CacheEntry::Variants(vec![HeaderName::from_static("accept-language")]),
        ];
        for entry in entries {
            let encoded = encode_entry(&entry, 42);
            for length in 0..encoded.len() {
                assert!(
                    decode_entry(encoded.slice(..length)).is_none(),
                    "{length} of {} bytes decoded",
                    encoded.len()
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_decode_as_none() {
        for entry in [
            CacheEntry::Response(response()),
            CacheEntry::Variants(vec![HeaderName::from_static("accept")]),
        ] {
            let mut longer = encode_entry(&entry, 42).to_vec();
            longer.push(0);
            assert!(decode_entry(Bytes::from(longer)).is_none());
        }
    }

    #[test]
    fn changed_bytes_never_panic() {
        let encoded = encode_key_value("example.com/a", &CacheEntry::Response(response()), 42);
        for position in 0..encoded.len() {
            for replacement in [0x00, 0x7f, 0x80, 0xff] {
                let mut changed = encoded.to_vec();
                changed[position] = replacement;
                let changed = Bytes::from(changed);
                let _ = decode_key_value(changed.clone());
                let _ = key_of_key_value(changed.clone());
                let _ = decode_entry(changed);
            }
        }
    }

    #[test]
    fn huge_lengths_decode_as_none() {
        let mut header_count = encode_entry(&CacheEntry::Response(response()), 42).to_vec();
        // The header count follows the version, expiry, kind, status, times and flags.
        let count_at = 1 + 8 + 1 + 2 + 8 + 8 + 3 * 8 + 1;
        header_count[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_entry(Bytes::from(header_count)).is_none());

        let mut body_length = encode_entry(&CacheEntry::Response(response()), 42).to_vec();
        let body_at = body_length.len() - response().body.len() - 8;
        body_length[body_at..body_at + 8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode_entry(Bytes::from(body_length)).is_none());
    }

    #[test]
    fn key_value_entry_round_trips() {
        let entry = CacheEntry::Response(response());
        let encoded = encode_key_value("example.com/a?b=1", &entry, 42);
        let (key, decoded, expires_unix_ms) = decode_key_value(encoded.clone()).unwrap();
        assert_eq!(key, "example.com/a?b=1");
        assert_eq!(decoded, entry);
        assert_eq!(expires_unix_ms, 42);
        assert_eq!(key_of_key_value(encoded).unwrap(), "example.com/a?b=1");
    }

    #[test]
    fn truncated_key_value_entry_decodes_as_none() {
        let encoded = encode_key_value("example.com/a", &CacheEntry::Response(response()), 42);
        for length in 0..encoded.len() {
            assert!(decode_key_value(encoded.slice(..length)).is_none());
        }
        assert!(key_of_key_value(encoded.slice(..6)).is_none());
    }

    #[test]
    fn key_value_key_is_prefixed_hash() {
        let long_key = format!("example.com/{}", "a".repeat(4096));
        let key = key_value_key(&long_key);
        assert!(key.starts_with(KEY_VALUE_PREFIX));
        assert_eq!(key.len(), KEY_VALUE_PREFIX.len() + 64);
        assert!(
            key[KEY_VALUE_PREFIX.len()..]
                .bytes()
                .all(|byte| byte.is_ascii_hexdigit())
        );
        assert_eq!(key, key_value_key(&long_key));
        assert_ne!(key, key_value_key("example.com/a"));
    }
}
