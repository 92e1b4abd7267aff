//! Request path normalization, shared by routing and forwarding.
//!
//! Routing and forwarding use the same normalized path, so a route matches exactly
//! the path that the upstream receives and no encoding trick can reach a path that
//! a route was meant to exclude. [`normalize`] applies these rules in one pass:
//!
//! - The path must start with `/`.
//! - Percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`, RFC 3986 section
//!   2.3) are decoded. Every other escape stays encoded, with uppercase hex digits.
//! - These are rejected: an encoded slash (`%2F`), an encoded backslash (`%5C`), an
//!   encoded control character (`%00` to `%1F`, `%7F`), a raw backslash, a raw control
//!   character and an invalid escape (`%zz`, `%4`, a trailing `%`). Upstreams disagree
//!   on what these mean, so passing them on could bypass a route's path condition.
//! - Empty segments are removed, so `//` becomes `/`.
//! - `.` and `..` segments are resolved after decoding, so `%2e%2e` counts as `..`.
//!   A `..` that would climb above the root is rejected instead of being dropped.
//! - A trailing slash is kept: `/a/b/` stays as it is and `/a/.` becomes `/a/`.

use std::borrow::Cow;

use crate::error::Error;

/// The start of every error detail of [`normalize`], so that callers reporting the
/// problem in another context can remove it.
pub(crate) const DETAIL_PREFIX: &str = "invalid request path: ";

/// Maximum number of input characters quoted in an error detail, so that a detail
/// never echoes much of a hostile request.
const EXCERPT_CHARS: usize = 3;

/// Normalizes a request path, or rejects it with a 400 error.
///
/// `raw` is the path of the request target without the query. Returns
/// [`Cow::Borrowed`] without allocating when `raw` is already normal, so
/// `normalize(p)` returning a borrowed `p` is how callers check that a path is
/// normal. The output is a fixed point: normalizing it again returns it unchanged.
///
/// # Errors
///
/// Returns [`Error::bad_request`] with a detail that names the problem. A problem
/// with one escape or character also gives its byte offset and quotes at most three
/// characters of the input.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, Error> {
    if !raw.starts_with('/') {
        return Err(Error::bad_request(format!(
            "{DETAIL_PREFIX}must start with '/'"
        )));
    }
    if is_normal(raw)? {
        return Ok(Cow::Borrowed(raw));
    }
    rebuild(raw).map(Cow::Owned)
}

/// Validates every byte of `raw` and returns whether it is already normal.
fn is_normal(raw: &str) -> Result<bool, Error> {
    let bytes = raw.as_bytes();
    let mut normal = true;
    let mut segment_start = 1;
    let mut index = 1;
    while index < bytes.len() {
        match bytes[index] {
            b'/' => {
                normal &= !is_removable_segment(&raw[segment_start..index]);
                segment_start = index + 1;
            }
            b'%' => {
                let escape = parse_escape(raw, index)?;
                normal &= !escape.decodes && escape.uppercase;
                index += 3;
                continue;
            }
            _ => check_raw_byte(raw, index)?,
        }
        index += 1;
    }
    let last = &raw[segment_start..];
    Ok(normal && last != "." && last != "..")
}

/// Returns whether a segment before a `/` disappears in normal form: an empty
/// segment (from `//`) or a dot segment.
fn is_removable_segment(segment: &str) -> bool {
    segment.is_empty() || segment == "." || segment == ".."
}

/// Builds the normal form of a path that [`is_normal`] found valid but not normal.
fn rebuild(raw: &str) -> Result<String, Error> {
    let mut output = String::with_capacity(raw.len());
    let mut trailing_slash = false;
    for segment in raw[1..].split('/') {
        let segment_start = output.len();
        output.push('/');
        decode_segment(segment, &mut output);
        let decoded = &output[segment_start + 1..];
        trailing_slash = is_removable_segment(decoded);
        if decoded == ".." {
            output.truncate(segment_start);
            let Some(parent) = output.rfind('/') else {
                return Err(Error::bad_request(format!(
                    "{DETAIL_PREFIX}'..' climbs above the root"
                )));
            };
            output.truncate(parent);
        } else if trailing_slash {
            output.truncate(segment_start);
        }
    }
    // `trailing_slash` describes the last segment only: `/a//b` has no trailing slash.
    if output.is_empty() || trailing_slash {
        output.push('/');
    }
    Ok(output)
}

/// Appends `segment` to `output`, decoding unreserved escapes and uppercasing the
/// hex digits of the others. The segment must have passed [`is_normal`].
fn decode_segment(segment: &str, output: &mut String) {
    let mut rest = segment;
    while let Some(percent) = rest.find('%') {
        output.push_str(&rest[..percent]);
        let hex = &rest[percent + 1..percent + 3];
        match u8::from_str_radix(hex, 16) {
            Ok(value) if is_unreserved(value) => output.push(char::from(value)),
            _ => {
                output.push('%');
                output.push_str(&hex.to_ascii_uppercase());
            }
        }
        rest = &rest[percent + 3..];
    }
    output.push_str(rest);
}

/// A valid percent-escape found by [`parse_escape`].
struct Escape {
    /// Whether normal form decodes it, because it encodes an unreserved character.
    decodes: bool,
    /// Whether its hex digits are already uppercase.
    uppercase: bool,
}

/// Parses the escape that starts at the `%` at byte `index`, rejecting invalid and
/// forbidden escapes.
fn parse_escape(raw: &str, index: usize) -> Result<Escape, Error> {
    let bytes = raw.as_bytes();
    let digits = bytes.get(index + 1..index + 3);
    let value = match digits {
        Some(&[high, low]) => hex_value(high).zip(hex_value(low)),
        _ => None,
    };
    let Some((high, low)) = value else {
        return Err(reject(raw, index, "invalid percent-encoding"));
    };
    let value = (high << 4) | low;
    let problem = match value {
        b'/' => Some("encoded slash (%2F) is not allowed"),
        b'\\' => Some("encoded backslash (%5C) is not allowed"),
        0x00..=0x1F | 0x7F => Some("encoded control character is not allowed"),
        _ => None,
    };
    if let Some(problem) = problem {
        return Err(reject(raw, index, problem));
    }
    Ok(Escape {
        decodes: is_unreserved(value),
        uppercase: !bytes[index + 1..index + 3]
            .iter()
            .any(u8::is_ascii_lowercase),
    })
}

/// Rejects a raw backslash and raw control characters (C0, DEL and the UTF-8
/// encoded C1 range U+0080 to U+009F).
fn check_raw_byte(raw: &str, index: usize) -> Result<(), Error> {
    let bytes = raw.as_bytes();
    let byte = bytes[index];
    if byte == b'\\' {
        return Err(reject(raw, index, "backslash is not allowed"));
    }
    let c1_control = byte == 0xC2 && matches!(bytes.get(index + 1), Some(0x80..=0x9F));
    if byte < 0x20 || byte == 0x7F || c1_control {
        return Err(reject(raw, index, "control character is not allowed"));
    }
    Ok(())
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Creates the 400 error for a problem at byte `index`, quoting a short excerpt.
/// The excerpt is debug-formatted so that control characters appear escaped.
fn reject(raw: &str, index: usize, problem: &str) -> Error {
    let excerpt: String = raw[index..].chars().take(EXCERPT_CHARS).collect();
    Error::bad_request(format!(
        "{DETAIL_PREFIX}{problem} at byte {index} ({excerpt:?})"
    ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Returns the normal form of `raw`, panicking with the detail if it is rejected.
    fn normal(raw: &str) -> Cow<'_, str> {
        match normalize(raw) {
            Ok(path) => path,
            Err(error) => panic!("{raw:?} was rejected: {}", error.detail()),
        }
    }

    /// Returns the detail of the error for `raw`, panicking if it is accepted.
    fn rejection(raw: &str) -> String {
        match normalize(raw) {
            Ok(path) => panic!("{raw:?} was accepted as {path:?}"),
            Err(error) => {
                assert_eq!(error.kind(), crate::ErrorKind::BadRequest, "{raw:?}");
                error.detail().to_owned()
            }
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for raw in [
            "/",
            "/a",
            "/a/b",
            "/a/b/",
            "/a/%3A/%C3%A9",
            "/...",
            "/a.b/.c/..d",
            "/é",
            "/{id}",
        ] {
            let path = normal(raw);
            assert!(matches!(path, Cow::Borrowed(_)), "{raw:?} was copied");
            assert_eq!(path, raw);
        }
    }

    #[test]
    fn normal_path_does_not_allocate() {
        let info = allocation_counter::measure(|| {
            let path = normalize(std::hint::black_box("/api/v1/users/%3A42/"));
            assert!(path.is_ok());
        });
        assert_eq!(info.count_total, 0);

        // The counter works: a path that needs rewriting does allocate.
        let info = allocation_counter::measure(|| {
            let path = normalize(std::hint::black_box("/api//v1"));
            assert!(path.is_ok());
        });
        assert!(info.count_total > 0);
    }

    #[test]
    fn missing_leading_slash_is_rejected() {
        for raw in ["", "a/b", "*", "%2Fa", "http://example.com/"] {
            let detail = rejection(raw);
            assert_eq!(detail, "invalid request path: must start with '/'");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        let cases = [
            ("/%41%62%7a", "/Abz"),
            ("/%30%39", "/09"),
            ("/a%2Db%5Fc%7Ed%2Ee", "/a-b_c~d.e"),
            ("/%7e", "/~"),
        ];
        for (raw, expected) in cases {
            assert_eq!(normal(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn reserved_escapes_become_uppercase() {
        let cases = [
            ("/%3a", "/%3A"),
            ("/%c3%a9", "/%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/%25", "/%25"),
            ("/%3f%23", "/%3F%23"),
        ];
        for (raw, expected) in cases {
            assert_eq!(normal(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn encoded_slash_is_rejected() {
        for raw in ["/a%2Fb", "/a%2fb"] {
            let detail = rejection(raw);
            assert!(detail.contains("encoded slash (%2F)"), "{detail}");
            assert!(detail.contains("at byte 2"), "{detail}");
        }
    }

    #[test]
    fn encoded_backslash_is_rejected() {
        for raw in ["/a%5Cb", "/a%5cb"] {
            let detail = rejection(raw);
            assert!(detail.contains("encoded backslash (%5C)"), "{detail}");
        }
    }

    #[test]
    fn encoded_control_character_is_rejected() {
        for raw in ["/%00", "/a%0Ab", "/%0d%0a", "/%1F", "/%7f"] {
            let detail = rejection(raw);
            assert!(detail.contains("encoded control character"), "{detail}");
        }
    }

    #[test]
    fn raw_backslash_is_rejected() {
        let detail = rejection("/a\\b");
        assert_eq!(
            detail,
            r#"invalid request path: backslash is not allowed at byte 2 ("\\b")"#
        );
    }

    #[test]
    fn raw_control_character_is_rejected() {
        for raw in ["/a\nb", "/\0", "/a\tb", "/\u{7f}", "/\u{85}"] {
            let detail = rejection(raw);
            assert!(
                detail.contains("control character is not allowed"),
                "{detail}"
            );
        }
    }

    #[test]
    fn invalid_escape_is_rejected() {
        let cases = [
            ("/%zz", 1),
            ("/a%4", 2),
            ("/a%", 2),
            ("/%4g", 1),
            ("/%%41", 1),
            ("/%é1", 1),
        ];
        for (raw, offset) in cases {
            let detail = rejection(raw);
            assert!(detail.contains("invalid percent-encoding"), "{detail}");
            assert!(detail.contains(&format!("at byte {offset}")), "{detail}");
        }
    }

    #[test]
    fn error_excerpt_is_bounded() {
        let raw = format!("/%zz{}", "x".repeat(10_000));
        let detail = rejection(&raw);
        assert_eq!(
            detail,
            r#"invalid request path: invalid percent-encoding at byte 1 ("%zz")"#
        );
    }

    #[test]
    fn empty_segments_collapse() {
        let cases = [
            ("//", "/"),
            ("//a", "/a"),
            ("/a//b", "/a/b"),
            ("/a///b//", "/a/b/"),
        ];
        for (raw, expected) in cases {
            assert_eq!(normal(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn dot_segments_resolve() {
        let cases = [
            ("/.", "/"),
            ("/a/.", "/a/"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/a/..", "/"),
            ("/a/b/../../c/", "/c/"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/.%2E", "/"),
            ("/a/%2e/", "/a/"),
            ("/a/.../b", "/a/.../b"),
        ];
        for (raw, expected) in cases {
            assert_eq!(normal(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn climbing_above_root_is_rejected() {
        for raw in [
            "/..",
            "/../a",
            "/a/../..",
            "/%2e%2e/etc/passwd",
            "/a/./../../b",
        ] {
            let detail = rejection(raw);
            assert_eq!(detail, "invalid request path: '..' climbs above the root");
        }
    }

    #[test]
    fn trailing_slash_is_kept() {
        assert_eq!(normal("/a/b/"), "/a/b/");
        assert_eq!(normal("/a/b//"), "/a/b/");
        assert_eq!(normal("/a/b/./"), "/a/b/");
        assert_eq!(normal("/a/b"), "/a/b");
    }

    /// Pieces that exercise every rule when concatenated.
    fn path_piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "/", "/", "/", "a", "B", ".", "..", "%2e", "%2E", "%41", "%7e", "%3a", "%3A", "%2F",
            "%5c", "%00", "%zz", "%", "%4", "\\", "\n", "~", "é", "%C3%A9", "{x}",
        ])
    }

    proptest! {
        #[test]
        fn normal_form_is_fixed_point(
            pieces in prop::collection::vec(path_piece(), 0..16),
            slash in any::<bool>(),
        ) {
            let raw = format!("{}{}", if slash { "/" } else { "" }, pieces.concat());
            if let Ok(output) = normalize(&raw) {
                let again = normalize(&output);
                prop_assert!(matches!(again, Ok(Cow::Borrowed(_))), "{output:?}");
                prop_assert_eq!(matches!(output, Cow::Borrowed(_)), output == raw);
                prop_assert!(output.starts_with('/'));
                prop_assert!(!output.contains("//"), "{output:?}");
                prop_assert!(!output.contains("/./"), "{output:?}");
                prop_assert!(!output.contains("/../"), "{output:?}");
                prop_assert!(!output.ends_with("/.") && !output.ends_with("/.."));
            }
        }

        #[test]
        fn arbitrary_input_never_panics(raw in any::<String>()) {
            let _ = normalize(&raw);
            let _ = normalize(&format!("/{raw}"));
        }
    }
}
