//! Header handling between the client and the upstream: hop-by-hop headers, the
//! `X-Forwarded-*`, `Forwarded` and `Via` headers, and request ids.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::Version;
use http::header::{
    CONNECTION, FORWARDED, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VIA,
};

/// Headers that describe one connection and never cross a proxy (RFC 9110, section
/// 7.6.1). They are names, not strings, so that removing them parses nothing.
const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including those the `Connection` header names.
///
/// `Upgrade` is removed too, because this proxy does not tunnel upgraded connections.
/// `TE: trailers` survives on requests: it is how gRPC clients announce that they
/// accept trailers, and HTTP/2 allows exactly that value.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // Most messages carry none of them: one pass over the names finds that out for
    // less than a lookup per hop-by-hop name.
    if !headers
        .keys()
        .any(|name| name == UPGRADE || HOP_BY_HOP.contains(name))
    {
        return;
    }
    let named_by_connection: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let te_trailers = keep_te_trailers
        && headers
            .get_all(TE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("trailers"));

    for name in named_by_connection {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(UPGRADE);
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Facts about the downstream side of a request that forwarding headers carry.
#[derive(Debug, Clone, Copy)]
pub struct Downstream<'a> {
    /// The socket peer (or the platform's client address on the edge).
    pub peer: IpAddr,
    /// Whether `peer` is a trusted proxy whose forwarding headers are kept and extended.
    pub peer_trusted: bool,
    /// Whether the client connection used TLS.
    pub secure: bool,
    /// The host the client asked for, if any.
    pub host: Option<&'a str>,
    /// The HTTP version the client spoke.
    pub version: Version,
}

impl Downstream<'_> {
    fn proto(&self) -> &'static str {
        if self.secure { "https" } else { "http" }
    }
}

/// Sets `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`.
///
/// From a trusted proxy, the peer is appended to the existing chain and the proxy's
/// protocol and host are kept. From anyone else, all three are replaced, so a client
/// cannot plant a forged chain for the upstream to believe.
pub fn set_x_forwarded(headers: &mut HeaderMap, downstream: &Downstream<'_>) {
    let mut chain = String::new();
    if downstream.peer_trusted {
        for existing in headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
        {
            chain.push_str(existing);
            chain.push_str(", ");
        }
    }
    push_ip(&mut chain, downstream.peer);
    set_text(headers, X_FORWARDED_FOR, &chain);

    if !(downstream.peer_trusted && headers.contains_key(X_FORWARDED_PROTO)) {
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(downstream.proto()),
        );
    }
    if !(downstream.peer_trusted && headers.contains_key(X_FORWARDED_HOST)) {
        headers.remove(X_FORWARDED_HOST);
        if let Some(host) = downstream.host {
            set_text(headers, X_FORWARDED_HOST, host);
        }
    }
}

/// Sets the `Forwarded` header (RFC 7239), extending a trusted proxy's header and
/// replacing anyone else's.
pub fn set_forwarded(headers: &mut HeaderMap, downstream: &Downstream<'_>) {
    let mut element = String::with_capacity(64);
    element.push_str("for=");
    match downstream.peer {
        IpAddr::V4(_) => push_ip(&mut element, downstream.peer),
        IpAddr::V6(v6) => {
            let _ = write!(element, "\"[{v6}]\"");
        }
    }
    element.push_str(";proto=");
    element.push_str(downstream.proto());
    if let Some(host) = downstream.host {
        // Host is a token or needs quoting; a host with a port contains ':' and must be quoted.
        element.push_str(";host=\"");
        element.push_str(host);
        element.push('"');
    }

    let value = if downstream.peer_trusted {
        let existing: Vec<&str> = headers
            .get_all(FORWARDED)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        if existing.is_empty() {
            element
        } else {
            format!("{}, {element}", existing.join(", "))
        }
    } else {
        element
    };
    set_text(headers, FORWARDED, &value);
}

/// This gateway's `Via` entries, `<version> <pseudonym>`, built once per config for each
/// HTTP version, so that appending one per request formats nothing.
#[derive(Debug, Clone, Default)]
pub struct Via {
    /// HTTP/0.9, 1.0, 1.1, 2 and 3, or `None` when `Via` is omitted.
    entries: Option<Box<[HeaderValue; 5]>>,
}

impl Via {
    /// Builds the entries for `pseudonym`; an empty pseudonym, or one that is not a
    /// valid header value, omits `Via`.
    pub fn new(pseudonym: &str) -> Self {
        if pseudonym.is_empty() {
            return Self::default();
        }
        let entry = |protocol: &str| HeaderValue::from_str(&format!("{protocol} {pseudonym}"));
        let entries = (|| {
            Ok::<_, http::header::InvalidHeaderValue>(Box::new([
                entry("0.9")?,
                entry("1.0")?,
                entry("1.1")?,
                entry("2")?,
                entry("3")?,
            ]))
        })();
        Self {
            entries: entries.ok(),
        }
    }

    /// Appends this gateway's entry for a message of `version` to `Via`.
    pub fn append(&self, headers: &mut HeaderMap, version: Version) {
        let Some(entries) = &self.entries else {
            return;
        };
        let index = match version {
            Version::HTTP_09 => 0,
            Version::HTTP_10 => 1,
            Version::HTTP_2 => 3,
            Version::HTTP_3 => 4,
            _ => 2,
        };
        headers.append(VIA, entries[index].clone());
    }
}

/// Returns the incoming request id if it is safe to propagate: 1 to 128 characters of
/// letters, digits and `-_.:`. Anything else is replaced, so ids cannot smuggle
/// separators into logs.
pub fn valid_request_id(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let valid = (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b':'));
    valid.then_some(text)
}

/// Formats two random numbers as a version 4 UUID.
pub fn new_request_id(high: u64, low: u64) -> String {
    let high = (high & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
    let low = (low & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    // 8-4-4-4-12 hex digits: the big-endian bytes of `high` then `low`, with dashes
    // between the groups.
    let high = high.to_be_bytes();
    let low = low.to_be_bytes();
    let mut id = String::with_capacity(36);
    crate::trace::push_hex(&mut id, &high[..4]);
    id.push('-');
    crate::trace::push_hex(&mut id, &high[4..6]);
    id.push('-');
    crate::trace::push_hex(&mut id, &high[6..]);
    id.push('-');
    crate::trace::push_hex(&mut id, &low[..2]);
    id.push('-');
    crate::trace::push_hex(&mut id, &low[2..]);
    id
}

/// Appends `ip` in its usual text form; IPv4 without the formatting machinery, because
/// it runs for every forwarded request.
fn push_ip(text: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(text, "{v6}");
        }
    }
}

fn set_text(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downstream(peer: &str, trusted: bool) -> Downstream<'static> {
        Downstream {
            peer: peer.parse().unwrap(),
            peer_trusted: trusted,
            secure: false,
            host: Some("api.example.com"),
            version: Version::HTTP_11,
        }
    }

    #[test]
    fn hop_by_hop_headers_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, "keep-alive, x-secret-hop".parse().unwrap());
        headers.insert("x-secret-hop", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("upgrade", "websocket".parse().unwrap());
        headers.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut headers, true);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn te_trailers_kept_for_grpc() {
        let mut headers = HeaderMap::new();
        headers.insert(TE, "trailers, deflate".parse().unwrap());
        remove_hop_by_hop(&mut headers, true);
        assert_eq!(headers[TE], "trailers");
        remove_hop_by_hop(&mut headers, false);
        assert!(!headers.contains_key(TE));
    }

    #[test]
    fn untrusted_peer_replaces_forwarding_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        headers.insert("x-forwarded-host", "evil.example".parse().unwrap());
        headers.insert(FORWARDED, "for=6.6.6.6".parse().unwrap());
        let client = downstream("203.0.113.5", false);
        set_x_forwarded(&mut headers, &client);
        set_forwarded(&mut headers, &client);
        assert_eq!(headers["x-forwarded-for"], "203.0.113.5");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "api.example.com");
        assert_eq!(
            headers[FORWARDED],
            "for=203.0.113.5;proto=http;host=\"api.example.com\""
        );
    }

    #[test]
    fn trusted_peer_extends_forwarding_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "198.51.100.1".parse().unwrap());
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        headers.insert(FORWARDED, "for=198.51.100.1;proto=https".parse().unwrap());
        let proxy = downstream("10.0.0.1", true);
        set_x_forwarded(&mut headers, &proxy);
        set_forwarded(&mut headers, &proxy);
        assert_eq!(headers["x-forwarded-for"], "198.51.100.1, 10.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(
            headers[FORWARDED],
            "for=198.51.100.1;proto=https, for=10.0.0.1;proto=http;host=\"api.example.com\""
        );
    }

    #[test]
    fn forwarded_quotes_ipv6() {
        let mut headers = HeaderMap::new();
        set_forwarded(&mut headers, &downstream("2001:db8::1", false));
        assert!(
            headers[FORWARDED]
                .to_str()
                .unwrap()
                .starts_with("for=\"[2001:db8::1]\";")
        );
    }

    #[test]
    fn addresses_print_as_their_display_form() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "203.0.113.5",
            "255.255.255.255",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut text = String::from("x");
            push_ip(&mut text, ip);
            assert_eq!(text, format!("x{ip}"));
        }
    }

    #[test]
    fn via_names_version_and_pseudonym() {
        let mut headers = HeaderMap::new();
        headers.insert(VIA, "1.1 edge".parse().unwrap());
        Via::new("gatehouse").append(&mut headers, Version::HTTP_2);
        Via::new("").append(&mut headers, Version::HTTP_11);
        let values: Vec<&str> = headers
            .get_all(VIA)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(values, ["1.1 edge", "2 gatehouse"]);
    }

    #[test]
    fn request_id_validation() {
        assert_eq!(
            valid_request_id(&"abc-123_x.y:z".parse().unwrap()),
            Some("abc-123_x.y:z")
        );
        assert_eq!(valid_request_id(&"has space".parse().unwrap()), None);
        assert_eq!(valid_request_id(&"a\"b".parse().unwrap()), None);
        assert_eq!(valid_request_id(&"x".repeat(129).parse().unwrap()), None);
    }

    #[test]
    fn request_id_is_uuid_v4() {
        let id = new_request_id(u64::MAX, 0);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    }

    #[test]
    fn request_id_keeps_every_digit() {
        let id = new_request_id(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        assert_eq!(id, "01234567-89ab-4def-bedc-ba9876543210");
    }
}
