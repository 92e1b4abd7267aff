//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): reading `traceparent`
//! and `tracestate` from a client request and sending them upstream.
//!
//! The gateway is a participant in the trace: each request gets its own span id, and
//! each upstream attempt another one, sent as the parent id in the `traceparent` of
//! that attempt. A request without a valid `traceparent` starts a new trace, and its
//! `tracestate` is dropped, as the specification requires.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The `traceparent` header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The only version this gateway sends.
const VERSION: &str = "00";
/// The `sampled` bit of the trace flags.
const FLAG_SAMPLED: u8 = 0x01;
/// The specification's limit on `tracestate` list members.
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Longest `tracestate` this gateway forwards, which is the minimum length the
/// specification requires participants to propagate.
const MAX_TRACESTATE_BYTES: usize = 512;

/// The trace a request belongs to and the gateway's span in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The 16-byte trace id, never all zeros.
    pub trace_id: [u8; 16],
    /// The span id of the caller, when the request carried a valid `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    /// The gateway's span for this request.
    pub span_id: [u8; 8],
    /// The trace flags, forwarded as received; a new trace is sampled.
    pub flags: u8,
    /// The `tracestate` to forward, when the request carried a valid one.
    pub tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// Continues the trace of `headers`, or starts a new one when `traceparent` is
    /// missing or invalid. `random` supplies the new ids.
    pub fn from_headers(headers: &HeaderMap, mut random: impl FnMut() -> u64) -> Self {
        let span_id = new_span_id(&mut random);
        match parse_traceparent(headers) {
            Some(parent) => Self {
                trace_id: parent.trace_id,
                parent_span_id: Some(parent.parent_id),
                span_id,
                flags: parent.flags,
                tracestate: parse_tracestate(headers),
            },
            None => Self {
                trace_id: new_trace_id(&mut random),
                parent_span_id: None,
                span_id,
                flags: FLAG_SAMPLED,
                tracestate: None,
            },
        }
    }

    /// Returns the trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// Returns the `traceparent` of an upstream attempt whose span is `span_id`.
    pub fn traceparent(&self, span_id: [u8; 8]) -> HeaderValue {
        // `00-` + 32 + `-` + 16 + `-` + 2 characters.
        let mut text = String::with_capacity(55);
        text.push_str(VERSION);
        text.push('-');
        push_hex(&mut text, &self.trace_id);
        text.push('-');
        push_hex(&mut text, &span_id);
        text.push('-');
        push_hex(&mut text, &[self.flags]);
        // Hex digits and dashes are always a valid header value.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Replaces the trace headers of an upstream request with this trace and the
    /// attempt's span id.
    pub fn apply(&self, headers: &mut HeaderMap, span_id: [u8; 8]) {
        headers.insert(TRACEPARENT, self.traceparent(span_id));
        headers.remove(TRACESTATE);
        if let Some(state) = &self.tracestate {
            headers.insert(TRACESTATE, state.clone());
        }
    }
}

/// A valid `traceparent`'s fields.
struct Parent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// Parses the one `traceparent` header. A repeated header, an unknown version `ff`,
/// uppercase hex, an all-zero id or a version 00 value of the wrong length is
/// invalid. A higher version is read by its first four fields, as the specification
/// requires, when what follows them starts with a dash.
fn parse_traceparent(headers: &HeaderMap) -> Option<Parent> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?.trim_matches([' ', '\t']);
    if text.len() < 55 {
        return None;
    }
    let version = parse_hex::<1>(&text[0..2])?[0];
    if version == 0xff || (version == 0 && text.len() != 55) {
        return None;
    }
    if text.len() > 55 && !text[55..].starts_with('-') {
        return None;
    }
    let bytes = text.as_bytes();
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let trace_id = parse_hex::<16>(&text[3..35])?;
    let parent_id = parse_hex::<8>(&text[36..52])?;
    let flags = parse_hex::<1>(&text[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    // Flags other than `sampled` are defined by later versions and not forwarded
    // under version 00.
    let flags = flags & FLAG_SAMPLED;
    Some(Parent {
        trace_id,
        parent_id,
        flags,
    })
}

/// Joins the `tracestate` headers into one list and returns it when every member is
/// well formed and there are at most 32; otherwise the state is dropped, which the
/// specification allows for an invalid list.
fn parse_tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut members: Vec<&str> = Vec::new();
    for value in headers.get_all(TRACESTATE) {
        let text = value.to_str().ok()?;
        members.extend(
            text.split(',')
                .map(|member| member.trim_matches([' ', '\t']))
                .filter(|member| !member.is_empty()),
        );
    }
    if members.is_empty() || members.len() > MAX_TRACESTATE_MEMBERS {
        return None;
    }
    if !members.iter().all(|member| is_tracestate_member(member)) {
        return None;
    }
    let joined = members.join(",");
    if joined.len() > MAX_TRACESTATE_BYTES {
        return None;
    }
    HeaderValue::from_str(&joined).ok()
}

/// Checks `key=value`: a key of lowercase letters, digits and `_-*/`, optionally
/// `tenant@system`, and a value of printable ASCII without `,` and `=` that does not
/// end in a space.
fn is_tracestate_member(member: &str) -> bool {
    let Some((key, value)) = member.split_once('=') else {
        return false;
    };
    let key_char =
        |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-*/".contains(&byte);
    let key_valid = match key.split_once('@') {
        Some((tenant, system)) => {
            (1..=241).contains(&tenant.len())
                && (1..=14).contains(&system.len())
                && tenant.bytes().all(key_char)
                && system.bytes().all(key_char)
        }
        None => (1..=256).contains(&key.len()) && key.bytes().all(key_char),
    };
    let value_valid = (1..=256).contains(&value.len())
        && value
            .bytes()
            .all(|byte| (0x20..=0x7e).contains(&byte) && byte != b',' && byte != b'=')
        && !value.ends_with(' ');
    key_valid
        && key
            .bytes()
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit())
        && value_valid
}

/// Returns a random, non-zero span id.
pub fn new_span_id(random: &mut impl FnMut() -> u64) -> [u8; 8] {
    loop {
        let id = random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

fn new_trace_id(random: &mut impl FnMut() -> u64) -> [u8; 16] {
    loop {
        let high = random();
        let low = random();
        if high != 0 || low != 0 {
            let mut id = [0; 16];
            id[..8].copy_from_slice(&high.to_be_bytes());
            id[8..].copy_from_slice(&low.to_be_bytes());
            return id;
        }
    }
}

/// Parses exactly `N` bytes of lowercase hex.
fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |digit: u8| match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    };
    let mut bytes = [0; N];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = nibble(digits[2 * index])? << 4 | nibble(digits[2 * index + 1])?;
    }
    Some(bytes)
}

/// Formats bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    push_hex(&mut text, bytes);
    text
}

/// Appends bytes to `text` as lowercase hex. A table lookup per nibble, because this
/// runs several times per proxied request and `write!` costs far more.
pub fn push_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("valid name"),
                HeaderValue::from_str(value).expect("valid value"),
            );
        }
        map
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut next = 0x1000;
        move || {
            next += 1;
            next
        }
    }

    #[test]
    fn valid_traceparent_is_continued() {
        let context = TraceContext::from_headers(
            &headers(&[("traceparent", VALID), ("tracestate", "congo=t61rcWkgMzE")]),
            counter(),
        );
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            context.parent_span_id.map(|id| hex(&id)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(context.flags, 1);
        assert_eq!(
            context.tracestate,
            Some(HeaderValue::from_static("congo=t61rcWkgMzE"))
        );
        let sent = context.traceparent([0, 0, 0, 0, 0, 0, 0x12, 0x34]);
        assert_eq!(
            sent,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000001234-01"
        );
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for invalid in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let context = TraceContext::from_headers(
                &headers(&[("traceparent", invalid), ("tracestate", "a=b")]),
                counter(),
            );
            assert_eq!(context.parent_span_id, None, "{invalid:?} was accepted");
            assert_eq!(context.tracestate, None, "tracestate kept for {invalid:?}");
            assert_ne!(context.trace_id, [0; 16]);
            assert_eq!(context.flags, FLAG_SAMPLED);
        }
    }

    #[test]
    fn repeated_traceparent_is_invalid() {
        let context = TraceContext::from_headers(
            &headers(&[("traceparent", VALID), ("traceparent", VALID)]),
            counter(),
        );
        assert_eq!(context.parent_span_id, None);
    }

    #[test]
    fn higher_version_is_read_by_its_first_fields() {
        let context = TraceContext::from_headers(
            &headers(&[(
                "traceparent",
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-the-future-holds",
            )]),
            counter(),
        );
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // Only the sampled flag is defined in version 00.
        assert_eq!(context.flags, 1);
    }

    #[test]
    fn tracestate_members_are_joined_and_checked() {
        let joined = TraceContext::from_headers(
            &headers(&[
                ("traceparent", VALID),
                ("tracestate", "rojo=00f067aa0ba902b7, "),
                ("tracestate", "tenant@vendor=x y"),
            ]),
            counter(),
        );
        assert_eq!(
            joined.tracestate,
            Some(HeaderValue::from_static(
                "rojo=00f067aa0ba902b7,tenant@vendor=x y"
            ))
        );
        for invalid in ["Upper=1", "novalue", "a=b=c", "=x"] {
            let context = TraceContext::from_headers(
                &headers(&[("traceparent", VALID), ("tracestate", invalid)]),
                counter(),
            );
            assert_eq!(context.tracestate, None, "{invalid:?} was kept");
        }
        let too_many: Vec<String> = (0..33).map(|index| format!("k{index}=v")).collect();
        let context = TraceContext::from_headers(
            &headers(&[("traceparent", VALID), ("tracestate", &too_many.join(","))]),
            counter(),
        );
        assert_eq!(context.tracestate, None);
    }

    #[test]
    fn apply_replaces_client_headers() {
        let context = TraceContext::from_headers(&headers(&[]), counter());
        let mut upstream = headers(&[("traceparent", VALID), ("tracestate", "a=b")]);
        context.apply(&mut upstream, [1; 8]);
        let sent = upstream[TRACEPARENT].to_str().expect("ASCII");
        assert!(sent.starts_with("00-"), "{sent}");
        assert!(sent.ends_with("-0101010101010101-01"), "{sent}");
        assert!(!upstream.contains_key(TRACESTATE));
    }
}
