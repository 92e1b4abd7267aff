//! A byte encoding of [`CacheEntry`] with its expiry time, for stores that keep bytes
//! outside the process, such as the Cloudflare Cache API.
//!
//! The layout is private to one build of the gateway: a version byte comes first, and
//! an entry of another version decodes as `None`, which the store treats as a miss.
//! Integers are big-endian. Header values are bytes, so values that are not UTF-8
//! survive.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{CacheEntry, CachedResponse};

/// The version of the layout; raise it whenever the layout changes.
const VERSION: u8 = 1;

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
            out.put_slice(&response.body);
        }
    }
    out.freeze()
}

/// Decodes an entry written by [`encode_entry`] and returns it with its expiry time,
/// or `None` when the bytes are of another version or damaged.
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
    Some((entry, expires_unix_ms))
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
    Some(CachedResponse {
        status,
        headers,
        body: std::mem::take(input),
        response_unix_ms,
        initial_age_secs,
        fresh_for,
        stale_while_revalidate,
        stale_if_error,
        no_stale: flags & FLAG_NO_STALE != 0,
        always_revalidate: flags & FLAG_ALWAYS_REVALIDATE != 0,
    })
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
}
