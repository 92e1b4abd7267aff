//! gRPC requests: how the gateway recognizes them, the deadline a client sets with
//! `grpc-timeout`, and the gRPC status codes that gateway errors become.
//!
//! gRPC runs over HTTP/2 and reports the outcome of a call in the `grpc-status` and
//! `grpc-message` trailers, so a gRPC client reads an HTTP error status as a
//! transport failure. The gateway therefore responds to its own errors on gRPC requests
//! with HTTP 200 and a trailers-only response (see [`crate::respond`]).

pub mod web;

use std::time::Duration;

use http::HeaderMap;
use http::header::CONTENT_TYPE;

use crate::error::{Error, ErrorKind};

/// Name of the header that carries the call's deadline.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";
/// Name of the header or trailer that carries the status code.
pub const GRPC_STATUS: &str = "grpc-status";
/// Name of the header or trailer that carries the status message.
pub const GRPC_MESSAGE: &str = "grpc-message";

/// The gRPC variant a request speaks, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC over HTTP/2: `application/grpc`, `application/grpc+proto` and the like.
    Grpc,
    /// gRPC-Web with binary frames: `application/grpc-web` and its `+proto` forms.
    GrpcWeb,
    /// gRPC-Web with base64 frames: `application/grpc-web-text`.
    GrpcWebText,
}

impl Protocol {
    /// Returns the variant of a request with these headers, or `None` when it is not
    /// a gRPC request.
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let content_type = headers.get(CONTENT_TYPE)?.to_str().ok()?;
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let subtype = essence.strip_prefix("application/")?;
        // `grpc` may be followed by `+codec`; `grpc-web` and `grpc-web-text` likewise.
        let base = subtype.split('+').next().unwrap_or_default();
        match base {
            "grpc" => Some(Self::Grpc),
            "grpc-web" => Some(Self::GrpcWeb),
            "grpc-web-text" => Some(Self::GrpcWebText),
            _ => None,
        }
    }

    /// Returns whether this is one of the gRPC-Web variants.
    pub fn is_web(self) -> bool {
        matches!(self, Self::GrpcWeb | Self::GrpcWebText)
    }

    /// Returns the media type of the gateway's own responses in this variant.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Grpc => "application/grpc",
            Self::GrpcWeb => "application/grpc-web",
            Self::GrpcWebText => "application/grpc-web-text",
        }
    }
}

/// gRPC status codes, as defined by the gRPC protocol (`grpc/doc/statuscodes.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The call succeeded (0).
    Ok = 0,
    /// The call was cancelled (1).
    Cancelled = 1,
    /// An error with no better code (2).
    Unknown = 2,
    /// The request is invalid whatever the server's state (3).
    InvalidArgument = 3,
    /// The deadline passed before the call completed (4).
    DeadlineExceeded = 4,
    /// The requested entity was not found (5).
    NotFound = 5,
    /// The entity the call would create exists already (6).
    AlreadyExists = 6,
    /// The caller is not allowed to make the call (7).
    PermissionDenied = 7,
    /// A quota or a resource such as a size limit ran out (8).
    ResourceExhausted = 8,
    /// The system is not in the state the call needs (9).
    FailedPrecondition = 9,
    /// The call was aborted, typically by a concurrency conflict (10).
    Aborted = 10,
    /// A value was outside its valid range (11).
    OutOfRange = 11,
    /// The method or the feature is not implemented or not supported (12).
    Unimplemented = 12,
    /// An invariant of the system broke (13).
    Internal = 13,
    /// The service is unavailable for now; retrying may succeed (14).
    Unavailable = 14,
    /// Data was lost or corrupted (15).
    DataLoss = 15,
    /// The request carries no valid credentials (16).
    Unauthenticated = 16,
}

impl Code {
    /// Returns the code a gateway error of `kind` is sent with.
    ///
    /// It follows the HTTP-to-gRPC mapping of the gRPC project
    /// (`grpc/doc/http-grpc-status-mapping.md`: 401, 403, 404, 502, 503 and 504),
    /// with two refinements where the error kind is more precise than a status code:
    /// rate limits and size limits are `RESOURCE_EXHAUSTED` and timeouts are
    /// `DEADLINE_EXCEEDED`, which is what a gRPC server reports in those cases.
    pub fn for_kind(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::BadRequest | ErrorKind::UriTooLong | ErrorKind::UnsupportedMediaType => {
                Self::InvalidArgument
            }
            ErrorKind::Unauthorized => Self::Unauthenticated,
            ErrorKind::Forbidden => Self::PermissionDenied,
            ErrorKind::NotFound | ErrorKind::NotImplemented => Self::Unimplemented,
            ErrorKind::PayloadTooLarge
            | ErrorKind::HeadersTooLarge
            | ErrorKind::TooManyRequests
            | ErrorKind::QuotaExceeded => Self::ResourceExhausted,
            ErrorKind::BadGateway | ErrorKind::Unavailable | ErrorKind::CircuitOpen => {
                Self::Unavailable
            }
            ErrorKind::GatewayTimeout => Self::DeadlineExceeded,
            ErrorKind::Internal => Self::Internal,
        }
    }

    /// Returns the number sent in `grpc-status`.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Reads the deadline of a request from its `grpc-timeout` header, or `None` when it
/// has none.
///
/// The value is 1 to 8 ASCII digits followed by a unit: `H` hours, `M` minutes, `S`
/// seconds, `m` milliseconds, `u` microseconds or `n` nanoseconds. Any other value
/// is a 400 error.
pub fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, Error> {
    let Some(value) = headers.get(GRPC_TIMEOUT) else {
        return Ok(None);
    };
    parse_timeout(value.as_bytes())
        .map(Some)
        .ok_or_else(|| {
            Error::bad_request(
                "invalid grpc-timeout header: expected 1 to 8 digits and a unit (H, M, S, m, u or n), such as 250m",
            )
        })
}

fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Eight digits fit in a u64 many times over, so the sum cannot overflow.
    let amount = digits
        .iter()
        .fold(0_u64, |sum, digit| sum * 10 + u64::from(digit - b'0'));
    match unit {
        b'H' => Some(Duration::from_secs(amount * 3_600)),
        b'M' => Some(Duration::from_secs(amount * 60)),
        b'S' => Some(Duration::from_secs(amount)),
        b'm' => Some(Duration::from_millis(amount)),
        b'u' => Some(Duration::from_micros(amount)),
        b'n' => Some(Duration::from_nanos(amount)),
        _ => None,
    }
}

/// Percent-encodes a status message for `grpc-message`, as the gRPC protocol
/// requires: bytes outside printable ASCII (0x20 to 0x7E) and `%` become `%XX` of
/// their UTF-8 bytes.
pub fn encode_message(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push('%');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    encoded
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers_with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn protocol_from_content_type() {
        let cases = [
            ("application/grpc", Some(Protocol::Grpc)),
            ("application/grpc+proto", Some(Protocol::Grpc)),
            ("Application/GRPC+json; charset=utf-8", Some(Protocol::Grpc)),
            ("application/grpc-web", Some(Protocol::GrpcWeb)),
            ("application/grpc-web+proto", Some(Protocol::GrpcWeb)),
            ("application/grpc-web-text", Some(Protocol::GrpcWebText)),
            (
                "application/grpc-web-text+proto",
                Some(Protocol::GrpcWebText),
            ),
            ("application/grpcx", None),
            ("application/json", None),
            ("text/grpc", None),
        ];
        for (content_type, expected) in cases {
            let headers = headers_with("content-type", content_type);
            assert_eq!(Protocol::of(&headers), expected, "{content_type}");
        }
        assert_eq!(Protocol::of(&HeaderMap::new()), None);
    }

    #[test]
    fn timeout_units() {
        let cases = [
            ("2H", Duration::from_secs(7_200)),
            ("3M", Duration::from_secs(180)),
            ("10S", Duration::from_secs(10)),
            ("250m", Duration::from_millis(250)),
            ("1500u", Duration::from_micros(1_500)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ];
        for (value, expected) in cases {
            let headers = headers_with(GRPC_TIMEOUT, value);
            assert_eq!(timeout(&headers).unwrap(), Some(expected), "{value}");
        }
        assert_eq!(timeout(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn timeout_rejects_invalid_values() {
        for value in ["", "m", "100", "123456789m", "10s", "-1S", "1.5S", "10 S"] {
            let mut headers = HeaderMap::new();
            headers.insert(GRPC_TIMEOUT, HeaderValue::from_str(value).unwrap());
            let error = timeout(&headers).expect_err(value);
            assert_eq!(error.kind(), ErrorKind::BadRequest, "{value}");
        }
    }

    #[test]
    fn codes_for_gateway_errors() {
        let cases = [
            (ErrorKind::Unauthorized, 16),
            (ErrorKind::Forbidden, 7),
            (ErrorKind::NotFound, 12),
            (ErrorKind::TooManyRequests, 8),
            (ErrorKind::QuotaExceeded, 8),
            (ErrorKind::PayloadTooLarge, 8),
            (ErrorKind::BadGateway, 14),
            (ErrorKind::Unavailable, 14),
            (ErrorKind::CircuitOpen, 14),
            (ErrorKind::GatewayTimeout, 4),
            (ErrorKind::NotImplemented, 12),
            (ErrorKind::Internal, 13),
            (ErrorKind::BadRequest, 3),
        ];
        for (kind, code) in cases {
            assert_eq!(Code::for_kind(kind).as_u8(), code, "{kind:?}");
        }
    }

    #[test]
    fn message_is_percent_encoded() {
        assert_eq!(encode_message("no route"), "no route");
        assert_eq!(encode_message("100% done"), "100%25 done");
        assert_eq!(encode_message("line\nbreak"), "line%0Abreak");
        assert_eq!(encode_message("caf\u{e9}"), "caf%C3%A9");
    }
}
