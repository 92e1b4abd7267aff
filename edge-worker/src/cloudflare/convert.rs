//! Conversions between the Workers runtime's `Request`/`Response`/`Headers` objects and
//! the `http` types the core uses.
//!
//! Header values in JavaScript are ByteStrings: every code unit is one byte (0-255).
//! The conversions map each byte to the character with the same code, both ways, so
//! values that are not UTF-8 (obs-text) pass through unchanged.

use gatehouse_core::Error;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use js_sys::{Array, Reflect};
use wasm_bindgen::{JsCast, JsValue};

use super::body::WorkerBody;

/// A client request converted for the core, with the facts the connection info needs.
pub(super) struct IncomingRequest {
    pub request: Request<WorkerBody>,
    /// Whether the client used `https`, from the scheme of the request URL.
    pub secure: bool,
}

/// Converts the request the runtime passes to the `fetch` handler.
///
/// The URI becomes origin form (path and query), so the core takes the host from the
/// `Host` header, as it does for HTTP/1.1 on the native runtime. The fragment, which
/// clients do not send, is dropped.
pub(super) fn request_from_js(request: &web_sys::Request) -> Result<IncomingRequest, Error> {
    let method = Method::from_bytes(request.method().as_bytes())
        .map_err(|_| Error::bad_request("the request method is invalid"))?;
    let url = request.url();
    let (scheme, target) = split_url(&url);
    let uri = Uri::try_from(target)
        .map_err(|error| Error::bad_request("the request target is invalid").with_cause(error))?;

    let mut converted = Request::new(WorkerBody::from_stream(request.body()));
    *converted.method_mut() = method;
    *converted.uri_mut() = uri;
    *converted.version_mut() = http_version(request);
    *converted.headers_mut() = header_map_from_js(&request.headers())
        .map_err(|detail| Error::bad_request(format!("the request {detail}")))?;
    Ok(IncomingRequest {
        request: converted,
        secure: scheme.eq_ignore_ascii_case("https"),
    })
}

/// Splits an absolute URL into its scheme and its origin-form target: path and query,
/// with `/` as the path when the URL has none.
fn split_url(url: &str) -> (&str, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let without_fragment = rest.split_once('#').map_or(rest, |(before, _)| before);
    let target = without_fragment
        .find(['/', '?'])
        .map_or("", |start| &without_fragment[start..]);
    let target = if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("/{target}")
    };
    (scheme, target)
}

/// Reads the HTTP version the client used from `request.cf.httpProtocol`, which the
/// runtime sets to strings such as `HTTP/1.1`, `HTTP/2` and `HTTP/3`. A request
/// without it counts as HTTP/1.1.
fn http_version(request: &web_sys::Request) -> Version {
    match cf_string(request, "httpProtocol").as_deref() {
        Some("HTTP/1.0") => Version::HTTP_10,
        Some("HTTP/2") => Version::HTTP_2,
        Some("HTTP/3") => Version::HTTP_3,
        _ => Version::HTTP_11,
    }
}

/// Returns the code of the Cloudflare data center that received the request
/// (`request.cf.colo`, such as `"DFW"`), or `None` when the runtime gives none.
pub(super) fn colo_of(request: &web_sys::Request) -> Option<String> {
    cf_string(request, "colo")
}

/// Returns the string property `name` of the request's `cf` object.
fn cf_string(request: &web_sys::Request, name: &str) -> Option<String> {
    Reflect::get(request, &JsValue::from_str("cf"))
        .ok()
        .filter(JsValue::is_object)
        .and_then(|cf| Reflect::get(&cf, &JsValue::from_str(name)).ok())
        .and_then(|value| value.as_string())
}

/// Converts a response of `fetch` for the core. The caller classifies the error.
pub(super) fn response_from_js(
    response: &web_sys::Response,
) -> Result<Response<WorkerBody>, String> {
    let status = StatusCode::from_u16(response.status())
        .map_err(|_| format!("the response status {} is invalid", response.status()))?;
    let mut converted = Response::new(WorkerBody::from_stream(response.body()));
    *converted.status_mut() = status;
    *converted.headers_mut() = header_map_from_js(&response.headers())
        .map_err(|detail| format!("the response {detail}"))?;
    Ok(converted)
}

/// Converts a response of the core into the object the `fetch` handler returns.
pub(super) fn response_to_js(response: Response<WorkerBody>) -> Result<web_sys::Response, JsValue> {
    let (parts, body) = response.into_parts();
    let init = web_sys::ResponseInit::new();
    init.set_status(parts.status.as_u16());
    init.set_headers(&headers_to_js(&parts.headers)?.into());
    // The Response constructor throws for a body on these statuses, even an empty one.
    let body = match parts.status.as_u16() {
        101 | 204 | 205 | 304 => None,
        _ => body.into_js(),
    };
    match body {
        Some(body) if body.is_instance_of::<web_sys::ReadableStream>() => {
            web_sys::Response::new_with_opt_readable_stream_and_init(
                Some(body.unchecked_ref()),
                &init,
            )
        }
        Some(body) => web_sys::Response::new_with_opt_buffer_source_and_init(
            Some(body.unchecked_ref()),
            &init,
        ),
        None => web_sys::Response::new_with_opt_readable_stream_and_init(None, &init),
    }
}

/// Builds a JavaScript `Headers` object, keeping repeated fields as separate lines.
pub(super) fn headers_to_js(headers: &HeaderMap) -> Result<web_sys::Headers, JsValue> {
    let converted = web_sys::Headers::new()?;
    for (name, value) in headers {
        converted.append(name.as_str(), &byte_string(value.as_bytes()))?;
    }
    Ok(converted)
}

/// Copies a JavaScript `Headers` object into a header map. Errors name the invalid
/// header, without its value, which may carry credentials.
pub(super) fn header_map_from_js(headers: &web_sys::Headers) -> Result<HeaderMap, String> {
    let mut converted = HeaderMap::new();
    for entry in headers.entries() {
        let entry: Array = entry
            .map_err(|_| "headers could not be read".to_owned())?
            .unchecked_into();
        let name = entry.get(0).as_string().unwrap_or_default();
        let value = entry.get(1).as_string().unwrap_or_default();
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {name:?} is invalid"))?;
        let header_value = bytes_of(&value)
            .and_then(|bytes| HeaderValue::from_bytes(&bytes).ok())
            .ok_or_else(|| format!("header {name:?} has an invalid value"))?;
        converted.append(header_name, header_value);
    }
    Ok(converted)
}

/// Maps each byte to the character with the same code, the form of a JavaScript
/// ByteString.
fn byte_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&byte| char::from(byte)).collect()
}

/// Reverses [`byte_string`]. Returns `None` if a character is above U+00FF, which a
/// ByteString never contains.
fn bytes_of(text: &str) -> Option<Vec<u8>> {
    text.chars().map(|c| u8::try_from(c).ok()).collect()
}

// These run under Node with `wasm-bindgen-test-runner`, because this module exists only
// for wasm32-unknown-unknown.
#[cfg(test)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    #[wasm_bindgen_test]
    fn split_url_keeps_path_and_query() {
        let cases = [
            ("https://api.example.com/a/b?x=1#top", "https", "/a/b?x=1"),
            ("http://localhost:8787", "http", "/"),
            ("http://localhost?q", "http", "/?q"),
            ("http://localhost//a//b", "http", "//a//b"),
        ];
        for (url, scheme, target) in cases {
            assert_eq!(split_url(url), (scheme, target.to_owned()), "{url}");
        }
    }

    #[wasm_bindgen_test]
    fn byte_strings_round_trip() {
        let bytes = [b'a', 0x80, 0xff, b' '];
        assert_eq!(bytes_of(&byte_string(&bytes)), Some(bytes.to_vec()));
        assert_eq!(bytes_of("\u{100}"), None);
    }
}
