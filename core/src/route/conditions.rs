//! Method, header and query conditions of a route, checked after its host and path
//! matched.

use http::{HeaderName, HeaderValue, Method};

use super::RequestView;

/// The non-path conditions of one route. All of them must hold.
#[derive(Debug)]
pub(super) struct Conditions {
    /// Accepted methods; empty accepts any method.
    pub(super) methods: Vec<Method>,
    pub(super) headers: Vec<HeaderCondition>,
    pub(super) query: Vec<QueryCondition>,
}

/// A header that must be present, with one of its field lines equal to `value` when
/// `value` is set.
#[derive(Debug)]
pub(super) struct HeaderCondition {
    pub(super) name: HeaderName,
    pub(super) value: Option<HeaderValue>,
}

/// A query parameter that must be present, with one of its occurrences equal to
/// `value` after percent-decoding when `value` is set.
#[derive(Debug)]
pub(super) struct QueryCondition {
    pub(super) name: String,
    pub(super) value: Option<String>,
}

impl Conditions {
    /// Returns whether every condition holds for `request`, without allocating.
    pub(super) fn matches(&self, request: &RequestView<'_>) -> bool {
        let method_matches = self.methods.is_empty() || self.methods.contains(request.method);
        method_matches
            && self
                .headers
                .iter()
                .all(|condition| condition.matches(request))
            && self
                .query
                .iter()
                .all(|condition| condition.matches(request.query))
    }
}

impl HeaderCondition {
    // Each field line is compared whole. A comma-separated list in one line is not
    // split, because commas are part of values such as dates and cookies.
    fn matches(&self, request: &RequestView<'_>) -> bool {
        let mut values = request.headers.get_all(&self.name).iter();
        match &self.value {
            None => values.next().is_some(),
            Some(expected) => values.any(|value| value == expected),
        }
    }
}

impl QueryCondition {
    fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else {
            return false;
        };
        query.split('&').any(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !decoded_equals(name, &self.name) {
                return false;
            }
            match &self.value {
                None => true,
                Some(expected) => decoded_equals(value, expected),
            }
        })
    }
}

/// Returns whether `raw` equals `expected` after `application/x-www-form-urlencoded`
/// decoding: `+` is a space and `%XX` is a byte. An invalid escape stays as written.
pub(super) fn decoded_equals(raw: &str, expected: &str) -> bool {
    FormDecoded {
        bytes: raw.as_bytes(),
    }
    .eq(expected.bytes())
}

/// The bytes of a form-urlencoded string, decoded one at a time so that comparing
/// needs no buffer.
struct FormDecoded<'a> {
    bytes: &'a [u8],
}

impl Iterator for FormDecoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        match first {
            b'+' => Some(b' '),
            b'%' => match rest {
                [high, low, tail @ ..] => match (hex_value(*high), hex_value(*low)) {
                    (Some(high), Some(low)) => {
                        self.bytes = tail;
                        Some((high << 4) | low)
                    }
                    _ => Some(b'%'),
                },
                _ => Some(b'%'),
            },
            byte => Some(byte),
        }
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}
