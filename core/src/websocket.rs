//! WebSocket upgrades (RFC 6455) on routes with `websocket`.
//!
//! The core decides whether an upgrade request may pass: it runs routing, access
//! policies, authentication and rate limits like for any request, then forwards the
//! upgrade with its `Upgrade` and `Connection` headers. When the upstream responds with
//! `101 Switching Protocols`, the response carries a [`Relay`] extension, and the
//! runtime joins the client's and the upstream's upgraded connections.

use std::time::Duration;

use http::header::{CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{Method, Request, Response, StatusCode, Version};

/// The instruction to relay bytes between the two upgraded connections, found in the
/// extensions of a `101` response the gateway returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay {
    /// Time without a byte in either direction after which both connections close.
    pub idle_timeout: Duration,
}

/// Close code a relay that passes messages sends to one side when the other ended
/// without a close frame, or when the relay was idle: 1001 (Going Away, RFC 6455
/// section 7.4.1).
pub const GOING_AWAY: u16 = 1001;

/// Returns the close code and reason that a relay passing messages (the Worker's)
/// sends to one side after the other side closed with `code` and `reason`.
///
/// Codes that a close frame may carry pass unchanged (RFC 6455 section 7.4: 1000-1003,
/// 1007-1014 and the ranges 3000-4999). 1005, which reports a close frame without a
/// code, becomes `None`: a close frame without a code. Codes that only describe a
/// connection, such as 1006 (it ended without a close frame), become [`GOING_AWAY`].
pub fn forwarded_close(code: u16, reason: &str) -> (Option<u16>, &str) {
    match code {
        1005 => (None, ""),
        1000..=1003 | 1007..=1014 | 3000..=4999 => (Some(code), reason),
        _ => (Some(GOING_AWAY), "the other side closed abnormally"),
    }
}

/// Returns whether `request` is a WebSocket handshake: a `GET` over HTTP/1.x with
/// `Upgrade: websocket`, or with a `Sec-WebSocket-Key` header when no `Upgrade`
/// header is present.
///
/// The `Connection` header is not required, and a missing `Upgrade` header is
/// tolerated, because wasi:http hosts (Spin) withhold both from the guest and Workers
/// remove `Connection`. `Sec-WebSocket-Key` still marks the handshake there.
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    if request.method() != Method::GET || request.version() >= Version::HTTP_2 {
        return false;
    }
    let headers = request.headers();
    if headers.contains_key(UPGRADE) {
        has_token(headers, UPGRADE, "websocket")
    } else {
        headers.contains_key(SEC_WEBSOCKET_KEY)
    }
}

fn has_token(headers: &HeaderMap, name: http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Puts back the upgrade headers on the request sent upstream, after the hop-by-hop
/// headers were removed.
pub(crate) fn restore_request_headers(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Prepares the upstream's response to an upgrade: a `101` gets its upgrade headers
/// back (taken from `upgrade`, the upstream's `Upgrade` value, before the hop-by-hop
/// headers were removed) and the [`Relay`] extension. Any other status passes as a
/// plain response.
pub(crate) fn accept_upgrade<B>(
    response: &mut Response<B>,
    upgrade: Option<HeaderValue>,
    idle_timeout: Duration,
) {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(
        UPGRADE,
        upgrade.unwrap_or_else(|| HeaderValue::from_static("websocket")),
    );
    response.extensions_mut().insert(Relay { idle_timeout });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request(headers: &[(&'static str, &'static str)]) -> Request<()> {
        let mut builder = Request::builder().method(Method::GET);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn upgrade_is_recognized() {
        let full = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert!(is_upgrade(&upgrade_request(&full)));
        assert!(
            is_upgrade(&upgrade_request(&full[1..])),
            "without Connection"
        );
        assert!(is_upgrade(&upgrade_request(&full[2..])), "key alone");
        assert!(!is_upgrade(&upgrade_request(&[("upgrade", "h2c")])));
        assert!(!is_upgrade(&upgrade_request(&[
            ("upgrade", "h2c"),
            ("sec-websocket-key", "x")
        ])));
        assert!(!is_upgrade(&upgrade_request(&[("connection", "upgrade")])));
        let mut post = upgrade_request(&full);
        *post.method_mut() = Method::POST;
        assert!(!is_upgrade(&post));
        let mut http2 = upgrade_request(&full);
        *http2.version_mut() = Version::HTTP_2;
        assert!(!is_upgrade(&http2));
    }

    #[test]
    fn close_codes_forwarded() {
        assert_eq!(forwarded_close(1000, "bye"), (Some(1000), "bye"));
        assert_eq!(forwarded_close(1011, "oops"), (Some(1011), "oops"));
        assert_eq!(forwarded_close(4999, "app"), (Some(4999), "app"));
        assert_eq!(forwarded_close(1005, ""), (None, ""));
        for never_sent in [1004, 1006, 1015, 2000, 5000] {
            let (code, _) = forwarded_close(never_sent, "");
            assert_eq!(code, Some(GOING_AWAY), "code {never_sent}");
        }
    }

    #[test]
    fn switching_protocols_gets_relay() {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let idle = Duration::from_secs(30);
        accept_upgrade(
            &mut response,
            Some(HeaderValue::from_static("websocket")),
            idle,
        );
        assert_eq!(response.headers()[CONNECTION], "upgrade");
        assert_eq!(response.headers()[UPGRADE], "websocket");
        assert_eq!(
            response.extensions().get::<Relay>(),
            Some(&Relay { idle_timeout: idle })
        );

        let mut refused = Response::new(());
        *refused.status_mut() = StatusCode::FORBIDDEN;
        accept_upgrade(&mut refused, None, idle);
        assert!(refused.extensions().get::<Relay>().is_none());
        assert!(!refused.headers().contains_key(UPGRADE));
    }
}
