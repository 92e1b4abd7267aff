//! `Cache-Control`, `Expires`, `Age` and `Vary`: what a shared cache may store and for
//! how long, following RFC 9111 sections 3, 4.2 and 5.

use std::time::{Duration, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{AGE, CACHE_CONTROL, DATE, EXPIRES, HeaderName, VARY};

/// The directives of a `Cache-Control` header that a shared cache acts on. Unknown
/// directives are ignored, as RFC 9111 section 5.2 requires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (with or without field names, which are treated as unqualified).
    pub no_cache: bool,
    /// `private` (with or without field names, treated as unqualified).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate` or `proxy-revalidate`: no stale responses after expiry.
    pub must_revalidate: bool,
    /// `max-age`, in seconds.
    pub max_age: Option<u64>,
    /// `s-maxage`, in seconds.
    pub s_maxage: Option<u64>,
    /// `stale-while-revalidate` (RFC 5861), in seconds.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861), in seconds.
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` field line of `headers`.
    ///
    /// A directive whose delta-seconds value is invalid counts as absent, except that
    /// an invalid `max-age` or `s-maxage` counts as 0, so the response is stale
    /// rather than fresh for a guessed time (RFC 9111 section 4.2.1).
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut control = Self::default();
        let lines = headers
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|value| value.to_str().ok());
        for directive in lines.flat_map(split_list) {
            let (name, value) = match directive.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (directive, None),
            };
            let seconds = || value.and_then(|value| value.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "no-store" => control.no_store = true,
                "no-cache" => control.no_cache = true,
                "private" => control.private = true,
                "public" => control.public = true,
                "must-revalidate" | "proxy-revalidate" => control.must_revalidate = true,
                "max-age" => control.max_age = Some(seconds().unwrap_or(0)),
                "s-maxage" => control.s_maxage = Some(seconds().unwrap_or(0)),
                "stale-while-revalidate" => control.stale_while_revalidate = seconds(),
                "stale-if-error" => control.stale_if_error = seconds(),
                _ => {}
            }
        }
        control
    }
}

/// Splits a comma-separated field value into trimmed, non-empty members. Commas
/// inside quoted strings are not special-cased, which only matters for the field-name
/// lists of `private` and `no-cache`, whose names are ignored here anyway.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Returns the freshness lifetime of a response (RFC 9111 section 4.2.1): `s-maxage`,
/// then `max-age`, then `Expires` minus `Date`, then `default_ttl`. `None` means the
/// response states no lifetime and the route gives no default.
///
/// `received_unix_ms` replaces a missing or invalid `Date`.
pub fn freshness_lifetime(
    control: &CacheControl,
    headers: &HeaderMap,
    received_unix_ms: u64,
    default_ttl: Option<Duration>,
) -> Option<Duration> {
    if let Some(seconds) = control.s_maxage.or(control.max_age) {
        return Some(Duration::from_secs(seconds));
    }
    if let Some(expires) = headers.get(EXPIRES) {
        // An invalid Expires, such as "0", means already expired.
        let Some(expires) = http_date_unix_ms(expires.to_str().ok()?) else {
            return Some(Duration::ZERO);
        };
        let date = headers
            .get(DATE)
            .and_then(|date| date.to_str().ok())
            .and_then(http_date_unix_ms)
            .unwrap_or(received_unix_ms);
        return Some(Duration::from_millis(expires.saturating_sub(date)));
    }
    default_ttl
}

/// Returns the `Age` header value in seconds, or 0 when it is missing or invalid.
pub fn age_seconds(headers: &HeaderMap) -> u64 {
    headers
        .get(AGE)
        .and_then(|age| age.to_str().ok())
        .and_then(|age| age.trim().parse().ok())
        .unwrap_or(0)
}

/// The `Vary` of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// The request header names, lowercase and in order; empty without `Vary`.
    Names(Vec<HeaderName>),
    /// `Vary: *`, which makes a response unusable for any later request.
    Any,
}

/// Reads the `Vary` field lines of a response.
pub fn vary(headers: &HeaderMap) -> Vary {
    let mut names = Vec::new();
    let lines = headers
        .get_all(VARY)
        .iter()
        .filter_map(|value| value.to_str().ok());
    for name in lines.flat_map(split_list) {
        if name == "*" {
            return Vary::Any;
        }
        // A name that is not a valid header token cannot match any request header;
        // HeaderName parsing also lowercases.
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes())
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    Vary::Names(names)
}

/// Parses an HTTP-date (RFC 9110 section 5.6.7, all three formats) into milliseconds
/// since the Unix epoch. Dates before the epoch read as `None`.
pub fn http_date_unix_ms(value: &str) -> Option<u64> {
    let time = httpdate::parse_http_date(value.trim()).ok()?;
    let since = time.duration_since(UNIX_EPOCH).ok()?;
    Some(since.as_millis() as u64)
}

/// Formats milliseconds since the Unix epoch as an IMF-fixdate.
pub fn format_http_date(unix_ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(unix_ms))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests report failures by panicking")]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn directives_parse_across_lines() {
        let map = headers(&[
            ("cache-control", "public, max-age=60"),
            (
                "cache-control",
                "S-MAXAGE=\"120\", stale-while-revalidate=30, x-unknown",
            ),
            ("cache-control", "stale-if-error=300, must-revalidate"),
        ]);
        let control = CacheControl::parse(&map);
        assert!(control.public);
        assert_eq!(control.max_age, Some(60));
        assert_eq!(control.s_maxage, Some(120));
        assert_eq!(control.stale_while_revalidate, Some(30));
        assert_eq!(control.stale_if_error, Some(300));
        assert!(control.must_revalidate);
        assert!(!control.no_store);
    }

    #[test]
    fn invalid_max_age_is_zero() {
        let control = CacheControl::parse(&headers(&[("cache-control", "max-age=soon")]));
        assert_eq!(control.max_age, Some(0));
    }

    #[test]
    fn qualified_private_and_no_cache_count() {
        let control = CacheControl::parse(&headers(&[(
            "cache-control",
            "private=\"x-user\", no-cache=\"set-cookie\"",
        )]));
        assert!(control.private);
        assert!(control.no_cache);
    }

    #[test]
    fn lifetime_prefers_s_maxage() {
        let map = headers(&[("cache-control", "max-age=10, s-maxage=20")]);
        let control = CacheControl::parse(&map);
        let lifetime = freshness_lifetime(&control, &map, 0, Some(Duration::from_secs(5)));
        assert_eq!(lifetime, Some(Duration::from_secs(20)));
    }

    #[test]
    fn lifetime_from_expires_and_date() {
        let map = headers(&[
            ("date", "Tue, 14 Nov 2023 22:13:20 GMT"),
            ("expires", "Tue, 14 Nov 2023 22:14:20 GMT"),
        ]);
        let lifetime = freshness_lifetime(&CacheControl::parse(&map), &map, 0, None);
        assert_eq!(lifetime, Some(Duration::from_secs(60)));
    }

    #[test]
    fn invalid_expires_is_expired() {
        let map = headers(&[("expires", "0")]);
        let lifetime = freshness_lifetime(
            &CacheControl::parse(&map),
            &map,
            0,
            Some(Duration::from_secs(5)),
        );
        assert_eq!(lifetime, Some(Duration::ZERO));
    }

    #[test]
    fn lifetime_falls_back_to_default() {
        let map = HeaderMap::new();
        let control = CacheControl::parse(&map);
        assert_eq!(freshness_lifetime(&control, &map, 0, None), None);
        assert_eq!(
            freshness_lifetime(&control, &map, 0, Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn vary_star_and_names() {
        let map = headers(&[
            ("vary", "Accept-Encoding, accept-language"),
            ("vary", "Accept-Encoding"),
        ]);
        let expected = ["accept-encoding", "accept-language"].map(HeaderName::from_static);
        assert_eq!(vary(&map), Vary::Names(expected.to_vec()));
        assert_eq!(vary(&headers(&[("vary", "accept, *")])), Vary::Any);
    }

    #[test]
    fn http_dates_round_trip() {
        let unix_ms = 1_700_000_000_000;
        let text = format_http_date(unix_ms);
        assert_eq!(text, "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(http_date_unix_ms(&text), Some(unix_ms));
        assert_eq!(
            http_date_unix_ms("Tuesday, 14-Nov-23 22:13:20 GMT"),
            Some(unix_ms)
        );
        assert_eq!(http_date_unix_ms("yesterday"), None);
    }
}
