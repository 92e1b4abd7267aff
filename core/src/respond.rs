//! Turns an [`Error`] into the response the client receives.
//!
//! This is the only place where a failure becomes a status code and a body, so every
//! target returns the same response for the same failure. Bodies are RFC 9457 problem details
//! (`application/problem+json`) with a stable `type` per [`crate::ErrorKind`].

use bytes::Bytes;
use http::Response;
use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use serde::Serialize;

use crate::error::Error;
use crate::grpc::{self, Code};

/// Prefix of the problem `type` URI; the kind's slug follows it.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:gatehouse:problem:";

/// Media type of problem responses.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Builds the response for `error` on a request of gRPC variant `grpc`: a gRPC
/// status response when it is `Some`, a problem response otherwise.
pub fn error_response<B: From<Bytes>>(
    error: &Error,
    grpc: Option<grpc::Protocol>,
    request_id_header: &HeaderName,
    request_id: &str,
) -> Response<B> {
    match grpc {
        Some(protocol) => grpc_status_response(error, protocol, request_id_header, request_id),
        None => problem_response(error, request_id_header, request_id),
    }
}

/// Builds the gRPC response for `error`: HTTP 200, an empty body and the status in
/// `grpc-status` (see [`Code::for_kind`]) and `grpc-message` (the error's detail,
/// percent-encoded), which gRPC calls a trailers-only response. gRPC-Web clients read
/// the same headers.
///
/// `Retry-After` and `WWW-Authenticate` are sent as on problem responses, for clients
/// that read them as metadata.
pub fn grpc_status_response<B: From<Bytes>>(
    error: &Error,
    protocol: grpc::Protocol,
    request_id_header: &HeaderName,
    request_id: &str,
) -> Response<B> {
    let code = Code::for_kind(error.kind());
    let mut response = Response::new(B::from(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(protocol.content_type()),
    );
    headers.insert(
        grpc::GRPC_STATUS,
        HeaderValue::from(u16::from(code.as_u8())),
    );
    // The encoded message is printable ASCII, so it is always a valid header value.
    if let Ok(message) = HeaderValue::from_str(&grpc::encode_message(error.detail())) {
        headers.insert(grpc::GRPC_MESSAGE, message);
    }
    add_common_headers(&mut response, error, request_id_header, request_id);
    response
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    problem_type: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    request_id: &'a str,
}

/// Builds the problem response for `error`, tagged with the request id.
///
/// `request_id_header` names the header that echoes the id, so clients can quote it
/// when they report a failure.
pub fn problem_response<B: From<Bytes>>(
    error: &Error,
    request_id_header: &HeaderName,
    request_id: &str,
) -> Response<B> {
    let kind = error.kind();
    let status = kind.status();
    let problem = Problem {
        problem_type: format!("{PROBLEM_TYPE_PREFIX}{}", kind.slug()),
        title: kind.title(),
        status: status.as_u16(),
        detail: error.detail(),
        request_id,
    };
    // serde_json fails only on maps with non-string keys and failing Serialize impls,
    // and this struct has neither.
    let body = serde_json::to_vec(&problem).unwrap_or_default();

    let mut response = Response::new(B::from(Bytes::from(body.clone())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    add_common_headers(&mut response, error, request_id_header, request_id);
    response
}

/// Adds the headers every error response carries: no caching, the request id, and
/// `Retry-After` and `WWW-Authenticate` when the error has them.
fn add_common_headers<B>(
    response: &mut Response<B>,
    error: &Error,
    request_id_header: &HeaderName,
    request_id: &str,
) {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(request_id_header.clone(), value);
    }
    if let Some(retry_after) = error.retry_after() {
        // Retry-After takes whole seconds; round up so clients never retry too early.
        let seconds = retry_after.as_millis().div_ceil(1000);
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds as u64));
    }
    if let Some(challenge) = error.challenge()
        && let Ok(value) = HeaderValue::from_str(&challenge.header_value())
    {
        headers.insert(WWW_AUTHENTICATE, value);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::{ErrorKind, ErrorSource};

    fn body_json(response: &Response<Bytes>) -> serde_json::Value {
        serde_json::from_slice(response.body()).unwrap()
    }

    #[test]
    fn not_found_is_problem_json() {
        let header = HeaderName::from_static("x-request-id");
        let response: Response<Bytes> =
            problem_response(&Error::not_found("no route for GET /x"), &header, "abc");
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_CONTENT_TYPE);
        assert_eq!(response.headers()["x-request-id"], "abc");
        let body = body_json(&response);
        assert_eq!(body["type"], "urn:gatehouse:problem:not-found");
        assert_eq!(body["title"], "Not Found");
        assert_eq!(body["status"], 404);
        assert_eq!(body["detail"], "no route for GET /x");
        assert_eq!(body["request_id"], "abc");
        assert_eq!(
            response.headers()[CONTENT_LENGTH],
            response.body().len().to_string().as_str()
        );
    }

    #[test]
    fn retry_after_rounds_up_to_seconds() {
        let header = HeaderName::from_static("x-request-id");
        let error = Error::new(ErrorKind::TooManyRequests, ErrorSource::Client, "slow down")
            .with_retry_after(Duration::from_millis(1200));
        let response: Response<Bytes> = problem_response(&error, &header, "id");
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
    }

    #[test]
    fn challenge_becomes_www_authenticate() {
        let header = HeaderName::from_static("x-request-id");
        let error = Error::new(ErrorKind::Unauthorized, ErrorSource::Client, "expired")
            .with_challenge(crate::error::Challenge {
                scheme: "Bearer",
                error: Some("invalid_token"),
            });
        let response: Response<Bytes> = problem_response(&error, &header, "id");
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"gatehouse\", error=\"invalid_token\""
        );
    }

    #[test]
    fn grpc_error_is_trailers_only() {
        let header = HeaderName::from_static("x-request-id");
        let error = Error::new(ErrorKind::TooManyRequests, ErrorSource::Client, "100% used")
            .with_retry_after(Duration::from_secs(3));
        let response: Response<Bytes> =
            error_response(&error, Some(grpc::Protocol::Grpc), &header, "id");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(response.headers()["grpc-status"], "8");
        assert_eq!(response.headers()["grpc-message"], "100%25 used");
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        assert_eq!(response.headers()["x-request-id"], "id");
        assert!(response.body().is_empty());
    }

    #[test]
    fn grpc_web_error_has_web_media_type() {
        let header = HeaderName::from_static("x-request-id");
        let error = Error::not_found("no route matches POST /pkg.Svc/Call");
        let response: Response<Bytes> =
            error_response(&error, Some(grpc::Protocol::GrpcWebText), &header, "id");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/grpc-web-text"
        );
        assert_eq!(response.headers()["grpc-status"], "12");
        assert_eq!(
            response.headers()["grpc-message"],
            "no route matches POST /pkg.Svc/Call"
        );
    }

    #[test]
    fn plain_error_stays_problem_json() {
        let header = HeaderName::from_static("x-request-id");
        let response: Response<Bytes> =
            error_response(&Error::not_found("no route"), None, &header, "id");
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_CONTENT_TYPE);
    }

    #[test]
    fn cause_never_reaches_body() {
        let header = HeaderName::from_static("x-request-id");
        let error = Error::bad_gateway("upstream refused the connection")
            .with_cause(std::io::Error::other("connect 10.1.2.3:8080: refused"));
        let response: Response<Bytes> = problem_response(&error, &header, "id");
        let text = String::from_utf8(response.body().to_vec()).unwrap();
        assert!(!text.contains("10.1.2.3"), "{text}");
    }
}
