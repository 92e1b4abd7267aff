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
use super::{AccessRecord, AttemptSpan, Gateway};
use crate::auth::{self, Authenticated};
use crate::balance::{Claim, PickInput};
use crate::circuit::{CircuitState, Permit, Rejection, Slot};
use crate::config::{HashOn, TimeoutsConfig, UpstreamProtocol};
use crate::error::{Error, ErrorKind, ErrorSource};
use crate::forward::{self, Downstream};
use crate::grpc;
use crate::health::Outcome;
use crate::locality::Scope;
use crate::platform::{Clock, Platform, Upstream, UpstreamTarget};
use crate::retry;
use crate::trace;
use crate::transform;
use crate::websocket;

/// The decisions of the earlier phases about a request that is about to be forwarded.
#[derive(Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    pub route: &'a CompiledRoute,
    /// The index of `route` in the compiled routes.
    pub route_index: usize,
    /// The normalized path the client requested, before any rewrite.
    pub path: &'a str,
    pub upstream_path: &'a str,
    pub downstream: &'a Downstream<'a>,
    pub client_ip: IpAddr,
    pub request_id: &'a str,
    /// The identity established by the route's authentication policy.
    pub authenticated: Option<&'a Authenticated>,
    /// The deadline a gRPC client set in `grpc-timeout`, which caps the route's
    /// timeouts.
    pub grpc_deadline: Option<Duration>,
    /// The idle timeout of the relay when the request is a WebSocket upgrade on a
    /// route that relays them.
    pub websocket_idle: Option<Duration>,
}

pub(crate) async fn proxy<P: Platform>(
    gateway: &Gateway,
    request: Request<P::Body>,
    outgoing: Outgoing<'_>,
    platform: &P,
    access: &mut AccessRecord,
) -> Result<Response<P::Body>, Error> {
    let upstream = &gateway.compiled.upstreams[outgoing.route.upstream];
    let hash = hash_key(upstream, &request, &outgoing);
    let request = upstream_request(gateway, request, upstream, &outgoing)?;
    let exchange = Exchange {
        upstream: outgoing.route.upstream,
        timeouts: outgoing.route.timeouts,
        grpc_deadline: outgoing.grpc_deadline,
        hash,
    };
    let mut response = send(gateway, request, &exchange, platform, access).await?;
    let upgrade = response.headers().get(http::header::UPGRADE).cloned();
    prepare_response(gateway, &mut response, outgoing.route);
    if let Some(idle_timeout) = outgoing.websocket_idle {
        websocket::accept_upgrade(&mut response, upgrade, idle_timeout);
        // Body transforms skip handshakes: after a 101 the connection is no longer HTTP.
        return Ok(response);
    }
    let changes = &outgoing.route.policies.response_body_changes;
    if !changes.is_empty() {
        let (mut parts, body) = response.into_parts();
        let body = Box::pin(transform::rewrite_json_body(
            platform,
            &mut parts.headers,
            body,
            changes,
            transform::BodyDirection::Response,
        ))
        .await?;
        response = Response::from_parts(parts, body);
    }
    Ok(response)
}

/// Where [`send`] sends a request and within what time.
pub(crate) struct Exchange {
    /// The index of the upstream in the compiled upstreams.
    pub upstream: usize,
    pub timeouts: TimeoutsConfig,
    /// The deadline a gRPC client set in `grpc-timeout`, which caps `timeouts`.
    pub grpc_deadline: Option<Duration>,
    /// The consistent-hashing key, when the upstream hashes and the request has one.
    pub hash: Option<u64>,
}

/// Sends a request prepared by [`upstream_request`] to an endpoint of the upstream,
/// through its circuit breakers and request limit, with retries to other endpoints,
/// and records the outcome for outlier detection. Returns the response head with
/// the body still streaming.
pub(crate) async fn send<P: Platform>(
    gateway: &Gateway,
    request: Request<P::Body>,
    exchange: &Exchange,
    platform: &P,
    access: &mut AccessRecord,
) -> Result<Response<P::Body>, Error> {
    let clock = platform.clock();
    let started = clock.monotonic();
    let upstream = &gateway.compiled.upstreams[exchange.upstream];
    access.upstream = Some(Arc::clone(&upstream.name));
    let timeouts = exchange.timeouts;
    let (total, per_try) = capped_timeouts(
        timeouts.total.get(),
        timeouts.per_try.get(),
        exchange.grpc_deadline,
    );
    let total_deadline = started + total;
    check_grpc_protocol(&request, upstream)?;

    // The upstream's breaker and request limit come first, so a rejected request
    // costs the upstream nothing and the client gets its 503 at once.
    let upstream_permit = upstream
        .breaker
        .admit(started)
        .map_err(|rejection| upstream_rejected(upstream, rejection))?;
    // A free slot is taken without waiting. The wait is boxed because it is rare.
    let _slot = match upstream.limit.try_slot() {
        Some(slot) => slot,
        None => Box::pin(wait_for_slot(upstream, platform, total)).await?,
    };
    let started = clock.monotonic();
    upstream.budget.deposit(started);

    let hash = exchange.hash;
    // Only a request without a body can be sent again, because a streamed body is
    // consumed by the first attempt, and only to another endpoint, so a single-endpoint
    // upstream keeps no copy.
    let can_retry = upstream.retry.max_retries > 0 && upstream.endpoints.len() > 1;
    let replay = (can_retry && !has_body(&request)).then(|| RequestHead::of(&request));
    let idempotent = retry::is_idempotent(request.method());
    let local_zone = gateway.compiled.server.local_zone(platform.location());
    let pick = |tried: &[usize], now: Duration| {
        pick_endpoint(
            upstream,
            hash,
            tried,
            platform.random_u64(),
            now,
            local_zone,
        )
    };

    let mut request = Some(request);
    let mut tried: Vec<usize> = Vec::new();
    let mut retries = 0;
    let (mut claim, mut permit) = pick(&tried, started)?;
    // The first attempt starts when the slot was taken; later ones read the clock.
    let mut attempt_start = Some(started);
    let mut last_finished = started;
    let result = loop {
        let now = attempt_start.take().unwrap_or_else(|| clock.monotonic());
        let index = claim.index();
        let endpoint = &upstream.endpoints[index];
        access.endpoint = Some(endpoint.authority.clone());

        let remaining = total_deadline.saturating_sub(now);
        if remaining.is_zero() {
            break Err(timed_out(upstream, total));
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
            tls: upstream.tls.as_deref(),
            connect_timeout: timeouts.connect.get(),
            try_timeout: per_try,
        };
        // The timer runs for what is left, but the error names the limit the client or
        // the route set, not the remainder after the time spent queueing.
        let (deadline, limit) = if per_try <= remaining {
            (per_try, per_try)
        } else {
            (remaining, total)
        };
        let mut attempt = attempt;
        let span_id = trace::new_span_id(&mut || platform.random_u64());
        let attempt_started_ms = clock.unix_millis();
        if let Some(record) = &access.trace {
            record.context.apply(attempt.headers_mut(), span_id);
        }

        let result = send_with_deadline(platform, attempt, &target, deadline, limit).await;
        let finished_at = clock.monotonic();
        last_finished = finished_at;
        let latency = finished_at.saturating_sub(now);
        claim.finish(latency, finished_at);
        access.upstream_micros = Some(latency.as_micros() as u64);
        if let Some(record) = &mut access.trace {
            record.attempts.push(AttemptSpan {
                span_id,
                endpoint: endpoint.authority.clone(),
                start_unix_ms: attempt_started_ms,
                duration_micros: latency.as_micros() as u64,
                status: result
                    .as_ref()
                    .ok()
                    .map(|response| response.status().as_u16()),
            });
        }
        record_outcome(upstream, index, permit, &result, finished_at);

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
            pick(&tried, finished_at)
                .ok()
                .filter(|_| finished_at + wait < total_deadline)
                .filter(|_| upstream.budget.withdraw(finished_at))
                .map(|next| (next, wait))
        } else {
            None
        };
        let Some((next, wait)) = next else {
            break result;
        };
        (claim, permit) = next;
        Box::pin(clock.sleep(wait)).await;
    };
    let finished_at = last_finished;
    match outcome_of(&result) {
        Some(outcome) => {
            if let Some(state) = upstream
                .breaker
                .record(upstream_permit, outcome, finished_at)
            {
                tracing::warn!(
                    upstream = %upstream.name,
                    state = state.as_str(),
                    "upstream circuit changed state"
                );
            }
        }
        None => drop(upstream_permit),
    }
    result
}

/// Returns the total and per-try timeouts of a request, lowered to the deadline a
/// gRPC client set, if any.
fn capped_timeouts(
    total: Duration,
    per_try: Duration,
    grpc_deadline: Option<Duration>,
) -> (Duration, Duration) {
    match grpc_deadline {
        Some(deadline) => (total.min(deadline), per_try.min(deadline)),
        None => (total, per_try),
    }
}

/// Rejects a gRPC request to an HTTP/1.1 upstream: gRPC needs HTTP/2 trailers, and
/// gRPC servers refuse HTTP/1.1.
fn check_grpc_protocol<B>(request: &Request<B>, upstream: &CompiledUpstream) -> Result<(), Error> {
    if upstream.protocol == UpstreamProtocol::Http1
        && grpc::Protocol::of(request.headers()) == Some(grpc::Protocol::Grpc)
    {
        return Err(Error::new(
            ErrorKind::NotImplemented,
            ErrorSource::Config,
            format!(
                "upstream {:?} speaks HTTP/1.1, and gRPC needs HTTP/2 (protocol = \"h2c\" or \"h2\")",
                upstream.name
            ),
        ));
    }
    Ok(())
}

/// Waits within `max_wait` for one of the upstream's request slots, when
/// `max_requests` are in flight and fewer than `max_pending` wait already.
async fn wait_for_slot<'u, P: Platform>(
    upstream: &'u CompiledUpstream,
    platform: &P,
    max_wait: Duration,
) -> Result<Slot<'u>, Error> {
    let (max_requests, max_pending) = upstream.limit.limits();
    let Some((waiting, slot)) = upstream.limit.wait() else {
        return Err(Error::circuit_open(format!(
            "upstream {:?} has {max_requests} requests in flight and {max_pending} waiting",
            upstream.name
        ))
        .with_retry_after(Duration::from_secs(1)));
    };
    let timer = pin!(platform.clock().sleep(max_wait));
    let result = match select(pin!(slot), timer).await {
        Either::Left((slot, _)) => Ok(slot),
        Either::Right(((), _)) => Err(Error::circuit_open(format!(
            "no request slot of upstream {:?} became free within {} ms",
            upstream.name,
            max_wait.as_millis()
        ))
        .with_retry_after(Duration::from_secs(1))),
    };
    drop(waiting);
    result
}

fn upstream_rejected(upstream: &CompiledUpstream, rejection: Rejection) -> Error {
    let detail = match rejection.state {
        CircuitState::HalfOpen => format!(
            "the circuit of upstream {:?} is half-open and its probe requests are in flight",
            upstream.name
        ),
        _ => format!("the circuit of upstream {:?} is open", upstream.name),
    };
    Error::circuit_open(detail).with_retry_after(retry_after(rejection.retry_after))
}

/// Returns the `Retry-After` delay for a wait, at least one second.
fn retry_after(wait: Duration) -> Duration {
    wait.max(Duration::from_secs(1))
}

/// Picks an eligible endpoint and admits the request through its breaker.
///
/// Eligible means not tried by this request, its breaker admitting, and healthy (not
/// ejected and not failing active checks) unless so few endpoints are healthy that
/// health is ignored (the panic threshold). Zone and priority narrow the choice. When
/// the narrowed set has nothing left, as on a retry, any eligible endpoint may take
/// the request.
fn pick_endpoint<'u>(
    upstream: &'u CompiledUpstream,
    hash: Option<u64>,
    tried: &[usize],
    random: u64,
    now: Duration,
    local_zone: Option<&str>,
) -> Result<(Claim<'u>, Permit<'u>), Error> {
    let count = upstream.endpoints.len();
    let healthy = |index: usize| {
        !upstream.outlier.is_ejected(index, now) && !upstream.active[index].is_unhealthy()
    };
    let up = (0..count).filter(|index| healthy(*index)).count();
    let panic = up < upstream.outlier.panic_below();
    let admits = |index: usize| upstream.circuits[index].would_admit(now);
    let scope = if panic {
        Scope::All
    } else {
        upstream
            .locality
            .choose(&|index| healthy(index) && admits(index), local_zone, random)
    };
    let mut refused: Vec<usize> = Vec::new();
    // A breaker may reject between the check and the admission, when another request
    // takes its last probe slot. A few more picks then skip that endpoint.
    for round in 0..4_u64 {
        let mut picked = None;
        for scope in [scope, Scope::All] {
            // The pick input lives only in this block. `PickInput` contains a `&dyn
            // Fn`, which is not `Send`, so keeping it across an await would make the
            // dispatch future not `Send`, and the native runtime's HTTP/2 server
            // requires `Send`.
            picked = upstream.balancer.claim(&PickInput {
                hash,
                random: random.rotate_left(16 * round as u32),
                now,
                eligible: &|index| {
                    !tried.contains(&index)
                        && !refused.contains(&index)
                        && (panic || healthy(index))
                        && admits(index)
                        && upstream.locality.contains(scope, index, local_zone)
                },
            });
            if picked.is_some() || scope == Scope::All {
                break;
            }
        }
        let Some(claim) = picked else {
            break;
        };
        match upstream.circuits[claim.index()].admit(now) {
            Ok(permit) => return Ok((claim, permit)),
            // Dropping the claim takes back its start.
            Err(_) => refused.push(claim.index()),
        }
    }
    let open: Vec<Duration> = (0..count)
        .filter(|index| !tried.contains(index) && (panic || healthy(*index)) && !admits(*index))
        .filter_map(|index| upstream.circuits[index].admit(now).err())
        .map(|rejection| rejection.retry_after)
        .collect();
    if !open.is_empty() {
        let soonest = open.into_iter().min().unwrap_or_default();
        return Err(Error::circuit_open(format!(
            "every endpoint of upstream {:?} that could take the request has an open circuit",
            upstream.name
        ))
        .with_retry_after(retry_after(soonest)));
    }
    Err(Error::unavailable(format!(
        "upstream {:?} has no healthy endpoint",
        upstream.name
    ))
    .with_retry_after(Duration::from_secs(1)))
}

/// Classifies a result for health and breakers as a gateway failure (connect failure,
/// reset, timeout, 502, 503, 504) or a success. Returns `None` for errors that are not
/// the upstream's doing.
fn outcome_of<B>(result: &Result<Response<B>, Error>) -> Option<Outcome> {
    match result {
        Ok(response) if matches!(response.status().as_u16(), 502..=504) => Some(Outcome::Failure),
        Ok(_) => Some(Outcome::Success),
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::BadGateway | ErrorKind::GatewayTimeout
            ) =>
        {
            Some(Outcome::Failure)
        }
        Err(_) => None,
    }
}

fn record_outcome<B>(
    upstream: &CompiledUpstream,
    index: usize,
    permit: Permit<'_>,
    result: &Result<Response<B>, Error>,
    now: Duration,
) {
    let Some(outcome) = outcome_of(result) else {
        return;
    };
    let endpoint = &upstream.endpoints[index].authority;
    if let Some(state) = upstream.circuits[index].record(permit, outcome, now) {
        tracing::warn!(
            upstream = %upstream.name,
            endpoint = %endpoint,
            state = state.as_str(),
            "endpoint circuit changed state"
        );
    }
    if let Some(ejection) = upstream.outlier.record(index, outcome, now) {
        tracing::info!(
            upstream = %upstream.name,
            endpoint = %endpoint,
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
    limit: Duration,
) -> Result<Response<P::Body>, Error> {
    // The platform's exchange is boxed because it contains a request and its client's
    // state, which every enclosing future would otherwise copy.
    let send = Box::pin(platform.upstream().send(request, target));
    let timer = pin!(platform.clock().sleep(deadline));
    match select(send, timer).await {
        Either::Left((result, _)) => result,
        Either::Right(((), _)) => Err(Error::gateway_timeout(format!(
            "upstream {:?} did not respond within {} ms",
            target.upstream,
            limit.as_millis()
        ))),
    }
}

/// Rewrites the client request into the request sent upstream: origin-form target,
/// hop-by-hop headers removed, forwarding headers and policies applied.
pub(crate) fn upstream_request<B>(
    gateway: &Gateway,
    request: Request<B>,
    upstream: &CompiledUpstream,
    outgoing: &Outgoing<'_>,
) -> Result<Request<B>, Error> {
    let server = &gateway.compiled.server;
    let (mut parts, body) = request.into_parts();

    let query_changes = &outgoing.route.policies.query_changes;
    let unchanged = query_changes.is_empty() && parts.uri.path() == outgoing.upstream_path;
    parts.uri = match parts.uri.path_and_query() {
        // The common case keeps the client's target as parsed, with no copy.
        Some(path_and_query) if unchanged => Uri::from(path_and_query.clone()),
        _ => {
            let mut query = parts.uri.query().map(str::to_owned);
            for changes in query_changes {
                query = changes.apply(query.as_deref());
            }
            let target = match query {
                Some(query) => format!("{}?{query}", outgoing.upstream_path),
                None => outgoing.upstream_path.to_owned(),
            };
            Uri::try_from(target).map_err(|error| {
                Error::bad_request("the rewritten request target is invalid").with_cause(error)
            })?
        }
    };
    parts.version = match upstream.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => Version::HTTP_2,
    };

    let headers = &mut parts.headers;
    forward::remove_hop_by_hop(headers, true);
    if outgoing.websocket_idle.is_some() {
        websocket::restore_request_headers(headers);
    }
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
    server.via.append(headers, outgoing.downstream.version);
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
    server.via.append(headers, version);
    for changes in &route.policies.response_changes {
        changes.apply(headers);
    }
}

/// Computes the consistent-hashing key of a request, or `None` when the upstream does
/// not hash or the request lacks the key (the balancer then picks at random).
pub(crate) fn hash_key<B>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Format;

    const KINDS: [&str; 6] = [
        "round_robin",
        "weighted_round_robin",
        "random",
        "least_outstanding",
        "p2c_ewma",
        "consistent_hash",
    ];

    fn zoned_gateway(balancer: &str) -> Gateway {
        let hash_on = if balancer == "consistent_hash" {
            "hash_on = \"path\""
        } else {
            ""
        };
        let text = format!(
            r#"
            [server]
            zone = "zone-a"

            [upstreams.zoned]
            balancer = "{balancer}"
            {hash_on}
            endpoints = [
              {{ address = "10.0.0.1:80", zone = "zone-b" }},
              {{ address = "10.0.0.2:80", zone = "zone-a" }},
              {{ address = "10.0.0.3:80", zone = "zone-a", weight = 3 }},
              {{ address = "10.0.0.4:80", zone = "zone-b" }},
              {{ address = "10.0.0.5:80", priority = 1 }},
            ]
            outlier = {{ consecutive_failures = 1, max_ejected_percent = 100, panic_threshold_percent = 0 }}

            [[routes]]
            upstream = "zoned"
            "#
        );
        Gateway::from_text(&text, Format::Toml).expect("valid config")
    }

    /// Picks `count` times with varied random numbers and hashes, and returns the
    /// picked endpoint indexes.
    fn picks(upstream: &CompiledUpstream, count: u64, now: Duration) -> Vec<usize> {
        (0..count)
            .map(|draw| {
                let random = draw.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let (claim, permit) = pick_endpoint(
                    upstream,
                    Some(random.rotate_left(7)),
                    &[],
                    random,
                    now,
                    Some("zone-a"),
                )
                .expect("an endpoint is available");
                drop(permit);
                claim.index()
            })
            .collect()
    }

    #[test]
    fn every_balancer_prefers_local_zone() {
        let now = Duration::from_secs(1);
        for kind in KINDS {
            let gateway = zoned_gateway(kind);
            let upstream = &gateway.compiled.upstreams[0];
            let picked = picks(upstream, 200, now);
            assert!(
                picked.iter().all(|index| [1, 2].contains(index)),
                "{kind}: {picked:?}"
            );
        }
    }

    #[test]
    fn every_balancer_fails_over_by_zone_then_tier() {
        let now = Duration::from_secs(1);
        for kind in KINDS {
            let gateway = zoned_gateway(kind);
            let upstream = &gateway.compiled.upstreams[0];
            // The local zone is ejected: zone-b of the first tier takes over. With 2 of
            // its 4 endpoints healthy, the first tier keeps 2 / 4 * 140% = 70% and the
            // second tier takes the other 30%.
            for index in [1, 2] {
                upstream.outlier.record(index, Outcome::Failure, now);
            }
            let picked = picks(upstream, 200, now);
            assert!(
                picked.iter().all(|index| [0, 3, 4].contains(index)),
                "{kind}: {picked:?}"
            );
            let second_tier = picked.iter().filter(|index| **index == 4).count();
            assert!((40..=80).contains(&second_tier), "{kind}: {picked:?}");
            // The whole first tier is ejected: the second tier takes over.
            for index in [0, 3] {
                upstream.outlier.record(index, Outcome::Failure, now);
            }
            let picked = picks(upstream, 50, now);
            assert!(picked.iter().all(|index| *index == 4), "{kind}: {picked:?}");
        }
    }

    #[test]
    fn open_endpoint_circuits_give_circuit_open_error() {
        let text = r#"
            [upstreams.pair]
            endpoints = [{ address = "10.0.0.1:80" }, { address = "10.0.0.2:80" }]
            circuit = { consecutive_failures = 1, open_duration = "30s" }

            [[routes]]
            upstream = "pair"
        "#;
        let gateway = Gateway::from_text(text, Format::Toml).expect("valid config");
        let upstream = &gateway.compiled.upstreams[0];
        let now = Duration::from_secs(1);
        let (first, permit) = pick_endpoint(upstream, None, &[], 1, now, None).expect("closed");
        let first = first.index();
        record_outcome::<()>(
            upstream,
            first,
            permit,
            &Err(Error::bad_gateway("refused")),
            now,
        );
        // The other endpoint still admits requests.
        let (second, permit) = pick_endpoint(upstream, None, &[], 1, now, None).expect("closed");
        let second = second.index();
        assert_ne!(first, second);
        record_outcome::<()>(
            upstream,
            second,
            permit,
            &Err(Error::bad_gateway("refused")),
            now,
        );

        let later = now + Duration::from_secs(10);
        let error = pick_endpoint(upstream, None, &[], 1, later, None)
            .map(|(index, _)| index)
            .expect_err("every circuit is open");
        assert_eq!(error.kind(), ErrorKind::CircuitOpen);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(20)));

        // After the open time one probe passes, and a second must wait for it.
        let reopen = now + Duration::from_secs(30);
        let (_, probe) = pick_endpoint(upstream, None, &[], 1, reopen, None).expect("probe");
        let (_, other_probe) =
            pick_endpoint(upstream, None, &[], 1, reopen, None).expect("other endpoint's probe");
        let error = pick_endpoint(upstream, None, &[], 1, reopen, None)
            .map(|(index, _)| index)
            .expect_err("both probe slots are taken");
        assert_eq!(error.kind(), ErrorKind::CircuitOpen);
        drop((probe, other_probe));
    }
}
