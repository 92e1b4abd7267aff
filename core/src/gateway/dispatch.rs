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
use crate::error::{Error, ErrorKind};
use crate::forward::{self, Downstream};
use crate::health::Outcome;
use crate::platform::{Clock, Platform, Upstream, UpstreamTarget};
use crate::retry;
use crate::transform;

/// The decisions of the earlier phases about a request that is about to be forwarded.
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
    let started = clock.monotonic();
    let upstream = &gateway.compiled.upstreams[outgoing.route.upstream];
    access.upstream = Some(Arc::clone(&upstream.name));
    upstream.budget.deposit(started);

    let hash = hash_key(upstream, &request, &outgoing);
    let request = upstream_request(gateway, request, upstream, &outgoing)?;
    // Only a request without a body can be sent again, because a streamed body is
    // consumed by the first attempt, and only to another endpoint, so a single-endpoint
    // upstream keeps no copy.
    let can_retry = upstream.retry.max_retries > 0 && upstream.endpoints.len() > 1;
    let replay = (can_retry && !has_body(&request)).then(|| RequestHead::of(&request));
    let idempotent = retry::is_idempotent(request.method());
    let timeouts = outgoing.route.timeouts;
    let total_deadline = started + timeouts.total.get();

    let mut request = Some(request);
    let mut tried: Vec<usize> = Vec::new();
    let mut retries = 0;
    let mut index = pick_endpoint(upstream, hash, &tried, platform, started)?;
    loop {
        let now = clock.monotonic();
        let endpoint = &upstream.endpoints[index];
        access.endpoint = Some(endpoint.authority.clone());

        let remaining = total_deadline.saturating_sub(now);
        if remaining.is_zero() {
            return Err(timed_out(upstream, timeouts.total.get()));
        }
        let attempt = match request.take() {
            Some(first) => first,
            None => match &replay {
                Some(head) => head.rebuild(),
                None => return Err(Error::internal("a request with a body cannot be retried")),
            },
        };
        let target = UpstreamTarget {
            upstream: &upstream.name,
            authority: &endpoint.authority,
            socket_addr: endpoint.socket_addr,
            protocol: upstream.protocol,
            connect_timeout: timeouts.connect.get(),
            try_timeout: timeouts.per_try.get(),
        };
        let deadline = timeouts.per_try.get().min(remaining);

        upstream.balancer.on_start(index);
        let result = send_with_deadline(platform, attempt, &target, deadline).await;
        let finished_at = clock.monotonic();
        let latency = finished_at.saturating_sub(now);
        upstream.balancer.on_finish(index, latency, finished_at);
        access.upstream_micros = Some(latency.as_micros() as u64);
        record_outcome(upstream, index, &result, finished_at);

        let retryable = match &result {
            Ok(response) => {
                idempotent
                    && upstream
                        .retry
                        .on_statuses
                        .contains(&response.status().as_u16())
            }
            Err(error) => is_retryable(error, idempotent),
        };
        let next = if retryable && replay.is_some() && retries < upstream.retry.max_retries {
            tried.push(index);
            // A retry goes to another endpoint, within the budget and the total timeout.
            retries += 1;
            access.retries = retries;
            let wait = retry::backoff(
                upstream.retry.backoff,
                upstream.retry.max_backoff,
                retries,
                platform.random_u64(),
            );
            pick_endpoint(upstream, hash, &tried, platform, finished_at)
                .ok()
                .filter(|_| finished_at + wait < total_deadline)
                .filter(|_| upstream.budget.withdraw(finished_at))
                .map(|next| (next, wait))
        } else {
            None
        };
        let Some((next, wait)) = next else {
            let mut response = result?;
            prepare_response(gateway, &mut response, outgoing.route);
            let changes = &outgoing.route.policies.response_body_changes;
            if !changes.is_empty() {
                let (mut parts, body) = response.into_parts();
                let body = transform::rewrite_json_body(
                    platform,
                    &mut parts.headers,
                    body,
                    changes,
                    transform::BodyDirection::Response,
                )
                .await?;
                response = Response::from_parts(parts, body);
            }
            return Ok(response);
        };
        index = next;
        clock.sleep(wait).await;
    }
}

/// Picks an eligible endpoint: not tried by this request and not ejected, unless so
/// few endpoints are healthy that health is ignored (the panic threshold).
fn pick_endpoint<P: Platform>(
    upstream: &CompiledUpstream,
    hash: Option<u64>,
    tried: &[usize],
    platform: &P,
    now: Duration,
) -> Result<usize, Error> {
    let panic = upstream.outlier.in_panic(now);
    // The pick input lives only in this function. `PickInput` contains a `&dyn Fn`,
    // which is not `Send`, so keeping it across an await would make the dispatch
    // future not `Send`, and the native runtime's HTTP/2 server requires `Send`.
    let picked = upstream.balancer.pick(&PickInput {
        hash,
        random: platform.random_u64(),
        now,
        eligible: &|index| {
            !tried.contains(&index) && (panic || !upstream.outlier.is_ejected(index, now))
        },
    });
    picked.ok_or_else(|| {
        Error::unavailable(format!(
            "upstream {:?} has no healthy endpoint",
            upstream.name
        ))
        .with_retry_after(Duration::from_secs(1))
    })
}

fn record_outcome<B>(
    upstream: &CompiledUpstream,
    index: usize,
    result: &Result<Response<B>, Error>,
    now: Duration,
) {
    let outcome = match result {
        Ok(response) if matches!(response.status().as_u16(), 502..=504) => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::BadGateway | ErrorKind::GatewayTimeout
            ) =>
        {
            Outcome::Failure
        }
        Err(_) => return,
    };
    if let Some(ejection) = upstream.outlier.record(index, outcome, now) {
        tracing::info!(
            upstream = %upstream.name,
            endpoint = %upstream.endpoints[index].authority,
            ejection_ms = ejection.as_millis() as u64,
            "endpoint ejected after consecutive failures"
        );
    }
}

/// Returns whether a failed attempt may be sent again: a failed connect sent nothing,
/// so any method may; a reset or timeout may have reached the upstream, so only an
/// idempotent method may.
fn is_retryable(error: &Error, idempotent: bool) -> bool {
    match error.kind() {
        ErrorKind::BadGateway | ErrorKind::GatewayTimeout => error.is_retry_safe() || idempotent,
        _ => false,
    }
}

fn timed_out(upstream: &CompiledUpstream, total: Duration) -> Error {
    Error::gateway_timeout(format!(
        "upstream {:?} did not respond within {} ms",
        upstream.name,
        total.as_millis()
    ))
}

fn has_body<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0")
}

/// The head of a request without a body, kept to send it again.
struct RequestHead {
    method: http::Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
}

impl RequestHead {
    fn of<B>(request: &Request<B>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        }
    }

    fn rebuild<B: From<bytes::Bytes>>(&self) -> Request<B> {
        let mut request = Request::new(B::from(bytes::Bytes::new()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
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
            "upstream {:?} did not respond within {} ms",
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

    let mut query = parts.uri.query().map(str::to_owned);
    for changes in &outgoing.route.policies.query_changes {
        query = changes.apply(query.as_deref());
    }
    let target = match query {
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
