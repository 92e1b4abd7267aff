//! Conversions between `wasi:http` 0.2 resources and `http` types.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use futures::StreamExt;
use gatehouse_core::{Error, ErrorKind, ErrorSource};
use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version};
use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam, Scheme};

use super::platform::SpinBody;

/// Header in which Spin passes the client's address to the component.
const CLIENT_ADDRESS_HEADER: &str = "spin-client-addr";

/// Headers that Spin adds to incoming requests to describe its routing. They come from
/// the platform, not the client, so they are removed before the gateway runs.
const SPIN_HEADERS: [&str; 7] = [
    CLIENT_ADDRESS_HEADER,
    "spin-full-url",
    "spin-path-info",
    "spin-matched-route",
    "spin-raw-component-route",
    "spin-component-route",
    "spin-base-path",
];

/// Prefix of the headers that carry the values of wildcard route segments.
const SPIN_PATH_MATCH_PREFIX: &str = "spin-path-match-";

/// An incoming request converted for the core, with the facts about its connection.
pub(super) struct Incoming {
    pub request: Request<SpinBody>,
    pub peer: IpAddr,
    pub secure: bool,
}

/// Converts an incoming `wasi:http` request, reading its body into memory.
///
/// NOTE: the body is buffered, up to `max_body_bytes`, because the core's body type
/// must be one value for both directions and Spin's streams are resources tied to one
/// request. A larger body is rejected with 413 without being read to its end.
pub(super) async fn incoming(
    request: IncomingRequest,
    max_body_bytes: u64,
) -> Result<Incoming, Error> {
    let method = http::Method::from_bytes(request.method().to_string().as_bytes())
        .map_err(|_| Error::bad_request("the request method is invalid"))?;
    let path_and_query = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    let secure = matches!(request.scheme(), Some(Scheme::Https));
    let authority = request.authority();

    let mut headers = header_map(&request.headers());
    let peer = client_address(&headers);
    remove_spin_headers(&mut headers);
    // wasi:http hosts may withhold `Host` from the guest and pass it as the authority.
    if !headers.contains_key(HOST)
        && let Some(value) = authority.and_then(|authority| HeaderValue::try_from(authority).ok())
    {
        headers.insert(HOST, value);
    }

    let body = read_body(request, max_body_bytes).await?;
    let mut converted = Request::new(SpinBody::from(body));
    *converted.method_mut() = method;
    *converted.uri_mut() = path_and_query
        .parse()
        .map_err(|_| Error::bad_request("the request target is not a valid URI"))?;
    // NOTE: wasi:http 0.2 does not tell the guest the HTTP version of the client
    // connection, so every request is treated as HTTP/1.1.
    *converted.version_mut() = Version::HTTP_11;
    *converted.headers_mut() = headers;
    Ok(Incoming {
        request: converted,
        peer,
        secure,
    })
}

async fn read_body(request: IncomingRequest, max_body_bytes: u64) -> Result<Bytes, Error> {
    let mut stream = request.into_body_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            Error::bad_request("failed to read the request body").with_cause(format!("{error:?}"))
        })?;
        body.extend_from_slice(&chunk);
        if body.len() as u64 > max_body_bytes {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                ErrorSource::Client,
                format!("the request body is larger than the limit of {max_body_bytes} bytes"),
            ));
        }
    }
    Ok(Bytes::from(body))
}

/// Reads the client address from Spin's header, as `IP:PORT` or `IP`, or returns
/// 127.0.0.1 when the host sets none (hosts other than Spin, such as `wasmtime serve`).
fn client_address(headers: &HeaderMap) -> IpAddr {
    let value = headers
        .get(CLIENT_ADDRESS_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim);
    value
        .and_then(|text| {
            text.parse::<SocketAddr>()
                .map(|address| address.ip())
                .or_else(|_| text.parse::<IpAddr>())
                .ok()
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn remove_spin_headers(headers: &mut HeaderMap) {
    let path_matches: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(SPIN_PATH_MATCH_PREFIX))
        .cloned()
        .collect();
    for name in path_matches {
        headers.remove(name);
    }
    for name in SPIN_HEADERS {
        headers.remove(name);
    }
}

/// Converts `wasi:http` fields to a header map. Names and values came through the
/// host's HTTP parser, so an entry that `http` rejects is dropped rather than failing
/// the request.
pub(super) fn header_map(fields: &Fields) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in fields.entries() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    headers
}

/// Converts a header map to `wasi:http` fields, leaving out the headers the host
/// forbids guests to set (such as `Host`, `Connection` and `Transfer-Encoding` on
/// wasmtime-based hosts). The host sets those itself from the request's authority and
/// body framing.
pub(super) fn fields(headers: &HeaderMap) -> Fields {
    let fields = Fields::new();
    for (name, value) in headers {
        // `append` rejects forbidden and malformed headers one at a time, so the other
        // headers still go through.
        let _ = fields.append(name.as_str(), value.as_bytes());
    }
    fields
}

/// Sends the core's response to the client. A failure here cannot be reported to the
/// client, because the response head may already be on its way, so it is logged.
pub(super) async fn send_response(response: Response<SpinBody>, response_out: ResponseOutparam) {
    let (parts, body) = response.into_parts();
    let outgoing = OutgoingResponse::new(fields(&parts.headers));
    if outgoing.set_status_code(parts.status.as_u16()).is_err() {
        eprintln!(
            "gatehouse: the host rejected the response status {}",
            parts.status
        );
    }
    if let Err(error) = response_out
        .set_with_body(outgoing, body.into_bytes().to_vec())
        .await
    {
        eprintln!("gatehouse: failed to send the response body: {error:?}");
    }
}
