//! The admit phase: size limits, unambiguous framing and host, and the normalized path
//! that routing, policies and the upstream all see.

use std::borrow::Cow;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, Request};

use super::compile::CompiledServer;
use crate::error::{Error, ErrorKind, ErrorSource};
use crate::path;

/// The parts of an accepted request that the admit phase extracted.
#[derive(Debug)]
pub(crate) struct Admitted<'r> {
    /// Lowercase host without port, for routing; empty when the request names none.
    pub host: String,
    /// The host as the client sent it, with port, for forwarding headers.
    pub host_header: String,
    /// The normalized path.
    pub path: Cow<'r, str>,
}

pub(crate) fn admit<'r, B>(
    request: &'r Request<B>,
    server: &CompiledServer,
) -> Result<Admitted<'r>, Error> {
    check_sizes(request, server)?;
    check_framing(request, server)?;
    if request.method() == Method::CONNECT {
        return Err(Error::new(
            ErrorKind::NotImplemented,
            ErrorSource::Client,
            "CONNECT tunnels are not supported",
        ));
    }
    let host_header = request_host(request)?;
    let host = routing_host(&host_header);
    let path = path::normalize(request.uri().path())?;
    Ok(Admitted {
        host,
        host_header,
        path,
    })
}

fn check_sizes<B>(request: &Request<B>, server: &CompiledServer) -> Result<(), Error> {
    let target_length = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target_length > server.max_uri_bytes {
        return Err(Error::new(
            ErrorKind::UriTooLong,
            ErrorSource::Client,
            format!(
                "the request target is {target_length} bytes; the limit is {}",
                server.max_uri_bytes
            ),
        ));
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > server.max_header_bytes {
        return Err(Error::new(
            ErrorKind::HeadersTooLarge,
            ErrorSource::Client,
            format!(
                "the request headers are {header_bytes} bytes; the limit is {}",
                server.max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// Rejects requests whose body length two parties could read differently, the root of
/// request smuggling: `Content-Length` with `Transfer-Encoding`, conflicting or invalid
/// lengths, and transfer codings that do not end in `chunked`.
fn check_framing<B>(request: &Request<B>, server: &CompiledServer) -> Result<(), Error> {
    let headers = request.headers();
    let has_transfer_encoding = headers.contains_key(TRANSFER_ENCODING);
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let first_length = lengths.next();

    if has_transfer_encoding && first_length.is_some() {
        return Err(Error::bad_request(
            "the request has both Content-Length and Transfer-Encoding",
        ));
    }
    if has_transfer_encoding {
        let last_coding = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                value
                    .rsplit(',')
                    .map(str::trim)
                    .find(|coding| !coding.is_empty())
            });
        if !last_coding.is_some_and(|coding| coding.eq_ignore_ascii_case("chunked")) {
            return Err(Error::bad_request(
                "the request's Transfer-Encoding does not end with chunked",
            ));
        }
    }
    let Some(first_length) = first_length else {
        return Ok(());
    };
    let length = parse_content_length(first_length.as_bytes())?;
    for other in lengths {
        if parse_content_length(other.as_bytes())? != length {
            return Err(Error::bad_request(
                "the request has conflicting Content-Length values",
            ));
        }
    }
    if length > server.max_body_bytes {
        return Err(Error::new(
            ErrorKind::PayloadTooLarge,
            ErrorSource::Client,
            format!(
                "the request body is {length} bytes; the limit is {}",
                server.max_body_bytes
            ),
        ));
    }
    Ok(())
}

/// Parses a `Content-Length` value: digits only, no sign, no list.
fn parse_content_length(value: &[u8]) -> Result<u64, Error> {
    let invalid = || Error::bad_request("the request has an invalid Content-Length");
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(invalid)
}

/// Returns the host the request names: the target's authority (absolute-form or
/// HTTP/2 `:authority`) or the single `Host` header. Both present and different, or
/// several `Host` headers, is ambiguous and rejected.
fn request_host<B>(request: &Request<B>) -> Result<String, Error> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(Error::bad_request(
            "the request has more than one Host header",
        ));
    }
    let header = match header {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Error::bad_request("the request's Host header is not valid ASCII"))?,
        ),
        None => None,
    };
    let authority = request
        .uri()
        .authority()
        .map(|authority| authority.as_str());
    if let (Some(header), Some(authority)) = (header, authority)
        && !header.eq_ignore_ascii_case(authority)
    {
        return Err(Error::bad_request(
            "the request's Host header differs from the authority of its target",
        ));
    }
    let host = authority.or(header).unwrap_or_default();
    if host.contains('@') || !host.bytes().all(is_host_byte) {
        return Err(Error::bad_request("the request's host is invalid"));
    }
    if host.is_empty() && request.version() == http::Version::HTTP_11 {
        return Err(Error::bad_request(
            "the HTTP/1.1 request has no Host header",
        ));
    }
    Ok(host.to_owned())
}

fn is_host_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b':' | b'[' | b']')
}

/// Lowercases the host and removes its port; IPv6 literals keep their brackets.
fn routing_host(host: &str) -> String {
    let without_port = if host.starts_with('[') {
        host.split_once(']')
            .map_or(host, |(v6, _)| &host[..v6.len() + 1])
    } else {
        host.split_once(':').map_or(host, |(name, _)| name)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_host_strips_port_and_case() {
        assert_eq!(routing_host("API.Example.com:8080"), "api.example.com");
        assert_eq!(routing_host("[::1]:8080"), "[::1]");
        assert_eq!(routing_host("example.com."), "example.com");
    }

    #[test]
    fn content_length_must_be_digits() {
        assert_eq!(parse_content_length(b"42").unwrap(), 42);
        for invalid in [
            &b""[..],
            b"+1",
            b"-1",
            b"1,1",
            b" 1",
            b"99999999999999999999",
        ] {
            assert!(parse_content_length(invalid).is_err(), "{invalid:?}");
        }
    }
}
