//! The proxy dispatch: pick an endpoint, send the request with its timeouts, and
//! prepare the response for the client.

use std::net::IpAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{Either, select};
use http::header::{COOKIE, HOST, HeaderValue};
use http::{Request, Response, Uri, Version};

use super::compile::{CompiledRoute, CompiledUpstream};
use super::{AccessRecord, Gateway};
use crate::auth::{self, Authenticated};
use crate::balance::PickInput;
use crate::config::{HashOn, UpstreamProtocol};
use crate::error::Error;
use crate::forward::{self, Downstream};
use crate::platform::{Clock, Platform, Upstream, UpstreamTarget};

/// What the earlier phases decided about a request that is about to be forwarded.
pub(crate) struct Outgoing<'a> {
    pub route: &'a CompiledRoute,
    /// The normalized path the client requested, before any rewrite.
    pub path: &'a str,
    pub upstream_path: &'a str,
    pub downstream: &'a Downstream<'a>,
    pub client_ip: IpAddr,
    pub request_id: &'a str,
    /// The identity established by the route's authentication policy.
    pub authenticated: Option<&'a Authenticated>,
}

pub(crate) async fn proxy<P: Platform>(
    gateway: &Gateway,
    request: Request<P::Body>,
    outgoing: Outgoing<'_>,
    platform: &P,
    access: &mut AccessRecord,
) -> Result<Response<P::Body>, Error> {
    let clock = platform.clock();
    let upstream = &gateway.compiled.upstreams[outgoing.route.upstream];
    access.upstream = Some(Arc::clone(&upstream.name));

    let hash = hash_key(upstream, &request, &outgoing);
    // The pick input lives only in this expression. `PickInput` contains a `&dyn Fn`,
    // which is not `Send`, so keeping it across the await below would make this
    // future not `Send`, and the native runtime's HTTP/2 server requires `Send`.
    let picked = upstream.balancer.pick(&PickInput {
        hash,
        random: platform.random_u64(),
        now: clock.monotonic(),
        eligible: &|_| true,
    });
    let Some(index) = picked else {
        return Err(Error::unavailable(format!(
            "upstream {:?} has no endpoint available",
            upstream.name
        )));
    };
    let endpoint = &upstream.endpoints[index];
    access.endpoint = Some(endpoint.authority.clone());

    let request = upstream_request(gateway, request, upstream, &outgoing)?;
    let timeouts = outgoing.route.timeouts;
    let target = UpstreamTarget {
        upstream: &upstream.name,
        authority: &endpoint.authority,
        socket_addr: endpoint.socket_addr,
        protocol: upstream.protocol,
        connect_timeout: timeouts.connect.get(),
        try_timeout: timeouts.per_try.get(),
    };
    // With one try per request, the try ends at whichever timeout comes first.
    let deadline = timeouts.per_try.get().min(timeouts.total.get());

    upstream.balancer.on_start(index);
    let sent_at = clock.monotonic();
    let result = send_with_deadline(platform, request, &target, deadline).await;
    let finished_at = clock.monotonic();
    let latency = finished_at.saturating_sub(sent_at);
    upstream.balancer.on_finish(index, latency, finished_at);
    access.upstream_micros = Some(latency.as_micros() as u64);

    let mut response = result?;
    prepare_response(gateway, &mut response, outgoing.route);
    Ok(response)
}

async fn send_with_deadline<P: Platform>(
    platform: &P,
    request: Request<P::Body>,
    target: &UpstreamTarget<'_>,
    deadline: Duration,
) -> Result<Response<P::Body>, Error> {
    let send = pin!(platform.upstream().send(request, target));
    let timer = pin!(platform.clock().sleep(deadline));
    match select(send, timer).await {
        Either::Left((result, _)) => result,
        Either::Right(((), _)) => Err(Error::gateway_timeout(format!(
            "upstream {:?} did not answer within {} ms",
            target.upstream,
            deadline.as_millis()
        ))),
    }
}

/// Rewrites the client request into the request sent upstream: origin-form target,
/// hop-by-hop headers removed, forwarding headers and policies applied.
fn upstream_request<B>(
    gateway: &Gateway,
    request: Request<B>,
    upstream: &CompiledUpstream,
    outgoing: &Outgoing<'_>,
) -> Result<Request<B>, Error> {
    let server = &gateway.compiled.server;
    let (mut parts, body) = request.into_parts();

    let target = match parts.uri.query() {
        Some(query) => format!("{}?{query}", outgoing.upstream_path),
        None => outgoing.upstream_path.to_owned(),
    };
    parts.uri = Uri::try_from(target).map_err(|error| {
        Error::bad_request("the rewritten request target is invalid").with_cause(error)
    })?;
    parts.version = match upstream.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::H2c => Version::HTTP_2,
    };

    let headers = &mut parts.headers;
    forward::remove_hop_by_hop(headers, true);
    // Identity headers come only from the gateway: client copies go on every route,
    // including routes without authentication, where a service might still read them.
    auth::strip_identity_headers(headers);
    if let Some(authenticated) = outgoing.authenticated {
        authenticated.apply(headers);
    }
    for changes in &outgoing.route.policies.request_changes {
        changes.apply(headers);
    }
    match (&upstream.host_header, outgoing.downstream.host) {
        (Some(host), _) => {
            headers.insert(HOST, host.clone());
        }
        (None, Some(host)) => {
            if let Ok(value) = HeaderValue::from_str(host) {
                headers.insert(HOST, value);
            }
        }
        (None, None) => {}
    }
    if server.x_forwarded {
        forward::set_x_forwarded(headers, outgoing.downstream);
    }
    if server.forwarded {
        forward::set_forwarded(headers, outgoing.downstream);
    }
    forward::append_via(headers, outgoing.downstream.version, &server.via);
    if let Ok(value) = HeaderValue::from_str(outgoing.request_id) {
        headers.insert(server.request_id_header.clone(), value);
    }
    Ok(Request::from_parts(parts, body))
}

fn prepare_response<B>(gateway: &Gateway, response: &mut Response<B>, route: &CompiledRoute) {
    let server = &gateway.compiled.server;
    let version = response.version();
    let headers = response.headers_mut();
    forward::remove_hop_by_hop(headers, false);
    forward::append_via(headers, version, &server.via);
    for changes in &route.policies.response_changes {
        changes.apply(headers);
    }
}

/// Computes the consistent-hashing key of a request, or `None` when the upstream does
/// not hash or the request lacks the key (the balancer then picks at random).
fn hash_key<B>(
    upstream: &CompiledUpstream,
    request: &Request<B>,
    outgoing: &Outgoing<'_>,
) -> Option<u64> {
    let hash = |bytes: &[u8]| xxhash_rust::xxh3::xxh3_64(bytes);
    match upstream.hash_on.as_ref()? {
        HashOn::Header(name) => request
            .headers()
            .get(name.as_str())
            .map(|value| hash(value.as_bytes())),
        HashOn::Cookie(name) => cookie_value(request, name).map(|value| hash(value.as_bytes())),
        HashOn::ClientIp => Some(match outgoing.client_ip {
            IpAddr::V4(v4) => hash(&v4.octets()),
            IpAddr::V6(v6) => hash(&v6.octets()),
        }),
        HashOn::Path => Some(hash(outgoing.path.as_bytes())),
    }
}

fn cookie_value<'r, B>(request: &'r Request<B>, name: &str) -> Option<&'r str> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.trim_matches('"'))
        })
}
