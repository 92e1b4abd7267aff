//! The cache phase of a route with a `cache` policy: serve a stored response, revalidate
//! a stale one, or forward the request and store what comes back.
//!
//! The gateway is a shared cache in the sense of RFC 9111: it never stores `private`
//! or `no-store` responses, prefers `s-maxage` to `max-age`, and serves stale
//! responses only within `stale-while-revalidate` or `stale-if-error`.

use std::net::IpAddr;
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select;
use http::header::{
    AGE, AUTHORIZATION, CONTENT_LENGTH, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, SET_COOKIE,
    TRANSFER_ENCODING,
};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};

use super::dispatch::{self, Outgoing};
use super::{AccessRecord, Gateway};
use crate::auth::Authenticated;
use crate::body::ReadBody;
use crate::cache::coalesce::Turn;
use crate::cache::control::{self, CacheControl};
use crate::cache::key::{self, KeyParts};
use crate::cache::{CacheEntry, CachePolicy, CacheStatus, CachedResponse};
use crate::error::Error;
use crate::forward::Downstream;
use crate::platform::{Clock, Platform, ResponseCache};

/// Statuses a response may be stored with on a route default lifetime alone: the
/// heuristically cacheable ones of RFC 9110 section 15.1, without 206, because
/// partial responses are not stored.
const HEURISTIC_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Upstream statuses that count as errors for `stale-if-error`.
const ERROR_STATUSES: [u16; 4] = [500, 502, 503, 504];

/// The outcome of the cache phase: the response or error, and the status to report.
pub(crate) struct CacheOutcome<B> {
    pub result: Result<Response<B>, Error>,
    pub status: CacheStatus,
    /// A revalidation to run after the response is sent.
    pub background: Option<BackgroundTask>,
}

/// Work the pipeline leaves for after the response: revalidating a stale response
/// that was served under `stale-while-revalidate`. Runtimes pass it to
/// [`Gateway::run_background`]: natively on a spawned task, on Workers through
/// `waitUntil`, and on Spin after the response is sent.
#[derive(Debug)]
pub struct BackgroundTask {
    route: usize,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    path: String,
    upstream_path: String,
    peer: IpAddr,
    peer_trusted: bool,
    secure: bool,
    host: Option<String>,
    client_ip: IpAddr,
    request_id: String,
    authenticated: Option<Authenticated>,
    keys: Keys,
    stale: CachedResponse,
}

/// The keys of one request: the primary key, and the variant key when the stored
/// responses of the primary key vary on request headers.
#[derive(Debug, Clone)]
struct Keys {
    primary: String,
    variant: Option<String>,
}

impl Keys {
    /// Returns the key the response of this request is stored under, as far as known.
    fn storage(&self) -> &str {
        self.variant.as_deref().unwrap_or(&self.primary)
    }
}

/// Runs the cache phase for a request on a route with `policy`.
///
/// A response served from the cache answers the client's own `If-None-Match` or
/// `If-Modified-Since` with 304 when they match it.
pub(crate) async fn handle<P: Platform>(
    gateway: &Gateway,
    policy: &CachePolicy,
    request: Request<P::Body>,
    outgoing: Outgoing<'_>,
    platform: &P,
    access: &mut AccessRecord,
) -> CacheOutcome<P::Body> {
    let if_none_match = request.headers().get(IF_NONE_MATCH).cloned();
    let if_modified_since = request.headers().get(IF_MODIFIED_SINCE).cloned();
    let mut outcome = lookup_or_fetch(gateway, policy, request, outgoing, platform, access).await;
    let from_cache = matches!(
        outcome.status,
        CacheStatus::Hit | CacheStatus::Stale | CacheStatus::Revalidated
    );
    if let (true, Ok(response)) = (from_cache, &mut outcome.result)
        && response.status() == StatusCode::OK
        && is_not_modified(
            response.headers(),
            if_none_match.as_ref(),
            if_modified_since.as_ref(),
        )
    {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.body_mut() = P::Body::from(Bytes::new());
        response.headers_mut().remove(CONTENT_LENGTH);
    }
    outcome
}

/// Returns whether a client's validators match a response (RFC 9110 section 13.1):
/// `If-None-Match` by weak comparison of entity tags, or else `If-Modified-Since`
/// against `Last-Modified`.
fn is_not_modified(
    headers: &HeaderMap,
    if_none_match: Option<&HeaderValue>,
    if_modified_since: Option<&HeaderValue>,
) -> bool {
    if let Some(if_none_match) = if_none_match {
        let Some(etag) = headers
            .get(http::header::ETAG)
            .and_then(|etag| etag.to_str().ok())
        else {
            return false;
        };
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
        let current = opaque(etag);
        return if_none_match
            .to_str()
            .map(|list| {
                list.split(',')
                    .any(|tag| tag.trim() == "*" || opaque(tag) == current)
            })
            .unwrap_or(false);
    }
    let date = |value: Option<&HeaderValue>| {
        value
            .and_then(|value| value.to_str().ok())
            .and_then(control::http_date_unix_ms)
    };
    match (
        date(headers.get(http::header::LAST_MODIFIED)),
        date(if_modified_since),
    ) {
        (Some(last_modified), Some(since)) => last_modified <= since,
        _ => false,
    }
}

async fn lookup_or_fetch<P: Platform>(
    gateway: &Gateway,
    policy: &CachePolicy,
    mut request: Request<P::Body>,
    outgoing: Outgoing<'_>,
    platform: &P,
    access: &mut AccessRecord,
) -> CacheOutcome<P::Body> {
    // A policy whose store the platform lacks passes requests through uncached.
    let eligible = eligibility(policy, &request, outgoing.authenticated);
    let (store, consumer) = match (policy_store(platform, policy), eligible) {
        (Some(store), Ok(consumer)) => (store, consumer),
        _ => {
            let result = dispatch::proxy(gateway, request, outgoing, platform, access).await;
            return CacheOutcome {
                result,
                status: CacheStatus::Bypass,
                background: None,
            };
        }
    };
    let parts = KeyParts {
        method: request.method(),
        host: access.host.as_str(),
        path: outgoing.path,
        query: request.uri().query(),
        consumer: consumer.as_deref(),
    };
    let mut keys = Keys {
        primary: key::primary_key(&parts, policy.query, &policy.ignore_params),
        variant: None,
    };
    let request_control = CacheControl::parse(request.headers());
    // A client's `no-cache` (or `max-age=0`) requests a response validated upstream.
    let must_validate = request_control.no_cache || request_control.max_age == Some(0);
    let now = platform.clock().unix_millis();

    let stored = lookup(store, &mut keys, request.headers(), now).await;
    // The client's own validators are for its copy, not the gateway's, so they are
    // not forwarded. The gateway sends its own when it revalidates.
    request.headers_mut().remove(IF_NONE_MATCH);
    request.headers_mut().remove(IF_MODIFIED_SINCE);

    if let Some(entry) = stored {
        match entry.staleness(now) {
            None if !must_validate => {
                return served(entry, now, CacheStatus::Hit, request.method());
            }
            Some(stale_by)
                if !must_validate && !entry.no_stale && stale_by < entry.stale_while_revalidate =>
            {
                let background = (!gateway.compiled.in_flight.is_fetching(keys.storage()))
                    .then(|| BackgroundTask::new(&request, &outgoing, &keys, entry.clone()));
                let mut outcome = served(entry, now, CacheStatus::Stale, request.method());
                outcome.background = background;
                return outcome;
            }
            _ => {}
        }
        // Revalidation goes upstream at once, without waiting for a concurrent
        // fetch, because the stale entry can stand in if the upstream fails.
        return fetch(
            gateway,
            policy,
            request,
            outgoing,
            platform,
            access,
            &keys,
            Some(entry),
        )
        .await;
    }

    // Without wakeups across requests, each miss fetches on its own.
    if !platform.wakes_across_requests() {
        return fetch(
            gateway, policy, request, outgoing, platform, access, &keys, None,
        )
        .await;
    }
    match gateway.compiled.in_flight.begin(keys.storage()) {
        Turn::Lead(guard) => {
            let outcome = fetch(
                gateway, policy, request, outgoing, platform, access, &keys, None,
            )
            .await;
            drop(guard);
            outcome
        }
        Turn::Wait(done) => {
            let timeout = pin!(platform.clock().sleep(policy.lock_timeout));
            let _ = select(done, timeout).await;
            let now = platform.clock().unix_millis();
            if let Some(entry) = lookup(store, &mut keys, request.headers(), now).await
                && entry.staleness(now).is_none()
            {
                return served(entry, now, CacheStatus::Hit, request.method());
            }
            fetch(
                gateway, policy, request, outgoing, platform, access, &keys, None,
            )
            .await
        }
    }
}

impl Gateway {
    /// Runs work that a response left for later, such as revalidating the stale
    /// response it served. Failures are logged and otherwise ignored, because the
    /// client already has its response.
    pub async fn run_background<P: Platform>(&self, task: BackgroundTask, platform: &P) {
        let Some(route) = self.compiled.routes.get(task.route) else {
            return;
        };
        let Some(policy) = &route.policies.cache else {
            return;
        };
        // A fetch of the key already running refreshes the entry for this task.
        let Turn::Lead(guard) = self.compiled.in_flight.begin(task.keys.storage()) else {
            return;
        };
        let mut request = Request::new(P::Body::from(Bytes::new()));
        *request.method_mut() = task.method;
        *request.uri_mut() = task.uri;
        *request.version_mut() = task.version;
        *request.headers_mut() = task.headers;
        let downstream = Downstream {
            peer: task.peer,
            peer_trusted: task.peer_trusted,
            secure: task.secure,
            host: task.host.as_deref(),
            version: task.version,
        };
        let outgoing = Outgoing {
            route,
            route_index: task.route,
            path: &task.path,
            upstream_path: &task.upstream_path,
            downstream: &downstream,
            client_ip: task.client_ip,
            request_id: &task.request_id,
            authenticated: task.authenticated.as_ref(),
            grpc_deadline: None,
            websocket_idle: None,
        };
        let mut access = AccessRecord::default();
        let outcome = fetch(
            self,
            policy,
            request,
            outgoing,
            platform,
            &mut access,
            &task.keys,
            Some(task.stale),
        )
        .await;
        drop(guard);
        match outcome.result {
            Ok(_) => tracing::debug!(
                route = %route.name,
                status = outcome.status.as_str(),
                "revalidated a stale response in the background"
            ),
            Err(error) => tracing::warn!(
                route = %route.name,
                error = error.kind().slug(),
                "background revalidation failed"
            ),
        }
    }
}

impl BackgroundTask {
    fn new<B>(
        request: &Request<B>,
        outgoing: &Outgoing<'_>,
        keys: &Keys,
        stale: CachedResponse,
    ) -> Self {
        Self {
            route: outgoing.route_index,
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            path: outgoing.path.to_owned(),
            upstream_path: outgoing.upstream_path.to_owned(),
            peer: outgoing.downstream.peer,
            peer_trusted: outgoing.downstream.peer_trusted,
            secure: outgoing.downstream.secure,
            host: outgoing.downstream.host.map(str::to_owned),
            client_ip: outgoing.client_ip,
            request_id: outgoing.request_id.to_owned(),
            authenticated: outgoing.authenticated.cloned(),
            keys: keys.clone(),
            stale,
        }
    }
}

/// Returns the store that keeps `policy`'s responses, or `None` when the platform has
/// no store of the name the policy gives.
fn policy_store<'a, P: Platform>(
    platform: &'a P,
    policy: &CachePolicy,
) -> Option<&'a P::ResponseCache> {
    match &policy.store {
        None => Some(platform.response_cache()),
        Some(name) => platform.store_response_cache(name),
    }
}

/// Decides whether a request may use the cache. Returns the consumer that keys its
/// entries (`None` for anonymous requests), or `Err` to bypass the cache.
fn eligibility<B>(
    policy: &CachePolicy,
    request: &Request<B>,
    authenticated: Option<&Authenticated>,
) -> Result<Option<String>, ()> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(());
    }
    if CacheControl::parse(request.headers()).no_store {
        return Err(());
    }
    let has_credentials = request.headers().contains_key(AUTHORIZATION) || authenticated.is_some();
    if !has_credentials {
        return Ok(None);
    }
    if !policy.authenticated {
        return Err(());
    }
    // Without a verified identity there is nothing to key the entries by safely.
    let identity = &authenticated.ok_or(())?.identity;
    identity
        .consumer
        .clone()
        .or_else(|| identity.subject.clone())
        .map(Some)
        .ok_or(())
}

/// Looks up the stored response for a request, following a `Vary` marker to the
/// variant key. Store failures count as misses.
async fn lookup<C: ResponseCache>(
    store: &C,
    keys: &mut Keys,
    headers: &HeaderMap,
    now: u64,
) -> Option<CachedResponse> {
    let entry = match store.lookup(&keys.primary, now).await {
        Ok(entry) => entry?,
        Err(error) => {
            tracing::warn!(error = %error, "cache lookup failed");
            return None;
        }
    };
    let names = match entry {
        CacheEntry::Response(response) => return Some(response),
        CacheEntry::Variants(names) => names,
    };
    let variant = key::variant_key(&keys.primary, &names, headers);
    let found = store.lookup(&variant, now).await;
    keys.variant = Some(variant);
    match found {
        Ok(Some(CacheEntry::Response(response))) => Some(response),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(error = %error, "cache lookup failed");
            None
        }
    }
}

/// Builds the response to a request from a stored response.
fn served<B: From<Bytes>>(
    entry: CachedResponse,
    now: u64,
    status: CacheStatus,
    method: &Method,
) -> CacheOutcome<B> {
    let age = entry.age(now).as_secs();
    let body = if *method == Method::HEAD {
        Bytes::new()
    } else {
        entry.body
    };
    let mut response = Response::new(B::from(body));
    *response.status_mut() = entry.status;
    *response.headers_mut() = entry.headers;
    response.headers_mut().insert(AGE, HeaderValue::from(age));
    CacheOutcome {
        result: Ok(response),
        status,
        background: None,
    }
}

/// Forwards a request upstream, conditionally when `stale` has a validator, and
/// stores the response when it may be stored.
#[allow(
    clippy::too_many_arguments,
    reason = "the phase's inputs, passed through from the pipeline"
)]
async fn fetch<P: Platform>(
    gateway: &Gateway,
    policy: &CachePolicy,
    mut request: Request<P::Body>,
    outgoing: Outgoing<'_>,
    platform: &P,
    access: &mut AccessRecord,
    keys: &Keys,
    stale: Option<CachedResponse>,
) -> CacheOutcome<P::Body> {
    if let Some(stale) = &stale {
        let (etag, last_modified) = stale.validators();
        if let Some(etag) = etag {
            request.headers_mut().insert(IF_NONE_MATCH, etag.clone());
        }
        if let Some(last_modified) = last_modified {
            request
                .headers_mut()
                .insert(IF_MODIFIED_SINCE, last_modified.clone());
        }
    }
    let method = request.method().clone();
    // `Vary` names request headers as the client sent them.
    let request_headers = request.headers().clone();
    let result = dispatch::proxy(gateway, request, outgoing, platform, access).await;
    let now = platform.clock().unix_millis();
    let stale_for_error = |stale: &CachedResponse| {
        !stale.no_stale
            && stale
                .staleness(now)
                .is_some_and(|stale_by| stale_by < stale.stale_if_error)
    };

    let response = match result {
        Ok(response) => response,
        Err(error) => {
            return match stale {
                Some(stale) if stale_for_error(&stale) => {
                    tracing::info!(
                        error = error.kind().slug(),
                        "serving a stale response after an upstream error"
                    );
                    served(stale, now, CacheStatus::Stale, &method)
                }
                _ => CacheOutcome {
                    result: Err(error),
                    status: CacheStatus::Miss,
                    background: None,
                },
            };
        }
    };
    let status = response.status();
    if let Some(stale) = stale {
        if status == StatusCode::NOT_MODIFIED && stale.has_validator() {
            let refreshed = refresh(stale, response.headers(), policy, now);
            if let Some(store) = policy_store(platform, policy) {
                save(store, keys, &[], &refreshed, policy, now).await;
            }
            return served(refreshed, now, CacheStatus::Revalidated, &method);
        }
        if ERROR_STATUSES.contains(&status.as_u16()) && stale_for_error(&stale) {
            return served(stale, now, CacheStatus::Stale, &method);
        }
    }

    let Some(decision) = storable(policy, &response, now) else {
        return CacheOutcome {
            result: Ok(response),
            status: CacheStatus::Miss,
            background: None,
        };
    };
    let (parts, body) = response.into_parts();
    let body = match read_body::<P>(platform, body, policy.max_object_bytes).await {
        Ok(BodyRead::Complete(bytes)) => bytes,
        Ok(BodyRead::TooLarge(body)) => {
            return CacheOutcome {
                result: Ok(Response::from_parts(parts, body)),
                status: CacheStatus::Miss,
                background: None,
            };
        }
        Err(error) => {
            return CacheOutcome {
                result: Err(error),
                status: CacheStatus::Miss,
                background: None,
            };
        }
    };
    let entry = decision.entry(&parts, body.clone(), now);
    let variant;
    let keys = if decision.vary.is_empty() || keys.variant.is_some() {
        keys
    } else {
        variant = Keys {
            primary: keys.primary.clone(),
            variant: Some(key::variant_key(
                &keys.primary,
                &decision.vary,
                &request_headers,
            )),
        };
        &variant
    };
    if let Some(store) = policy_store(platform, policy) {
        save(store, keys, &decision.vary, &entry, policy, now).await;
    }
    CacheOutcome {
        result: Ok(Response::from_parts(parts, P::Body::from(body))),
        status: CacheStatus::Miss,
        background: None,
    }
}

/// A response body read for storing.
enum BodyRead<B> {
    /// The whole body, within the limit.
    Complete(Bytes),
    /// The body is larger than the limit. It is returned whole, to be sent uncached.
    TooLarge(B),
}

/// Reads `body` up to `limit` bytes. A larger body is returned whole, its read
/// part chained before the rest.
async fn read_body<P: Platform>(
    platform: &P,
    body: P::Body,
    limit: usize,
) -> Result<BodyRead<P::Body>, Error> {
    match crate::body::read_up_to(body, limit).await {
        Ok(ReadBody::Complete(bytes)) => Ok(BodyRead::Complete(bytes)),
        Ok(ReadBody::Partial { prefix, rest }) => {
            Ok(BodyRead::TooLarge(platform.chain_body(prefix, rest)))
        }
        Err(error) => Err(Error::bad_gateway(
            "the upstream response body broke off before it was complete",
        )
        .with_cause(error)),
    }
}

/// The lifetime, directives and `Vary` names of a response that may be stored.
struct Storable {
    control: CacheControl,
    fresh_for: Duration,
    vary: Vec<http::HeaderName>,
}

impl Storable {
    fn entry(&self, parts: &http::response::Parts, body: Bytes, now: u64) -> CachedResponse {
        let mut headers = parts.headers.clone();
        let initial_age_secs = control::age_seconds(&headers);
        headers.remove(AGE);
        headers.remove(TRANSFER_ENCODING);
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let seconds = |value: Option<u64>| Duration::from_secs(value.unwrap_or(0));
        CachedResponse {
            status: parts.status,
            headers,
            body,
            response_unix_ms: now,
            initial_age_secs,
            fresh_for: self.fresh_for,
            stale_while_revalidate: seconds(self.control.stale_while_revalidate),
            stale_if_error: seconds(self.control.stale_if_error),
            no_stale: self.control.must_revalidate || self.control.no_cache,
            always_revalidate: self.control.no_cache,
        }
    }
}

/// Decides whether a response may be stored (RFC 9111 section 3), or `None`.
fn storable<B>(policy: &CachePolicy, response: &Response<B>, now: u64) -> Option<Storable> {
    let headers = response.headers();
    let control = CacheControl::parse(headers);
    if control.no_store || control.private {
        return None;
    }
    if headers.contains_key(SET_COOKIE) && !policy.store_set_cookie {
        return None;
    }
    let control::Vary::Names(vary) = control::vary(headers) else {
        return None;
    };
    let status = response.status().as_u16();
    let explicit = control.s_maxage.is_some()
        || control.max_age.is_some()
        || headers.contains_key(http::header::EXPIRES);
    let allowed = if explicit {
        (200..600).contains(&status) && status != 206 && status != 304
    } else {
        HEURISTIC_STATUSES.contains(&status)
    };
    if !allowed {
        return None;
    }
    // A `no-cache` response is revalidated before every use, so it needs no lifetime.
    let fresh_for = control::freshness_lifetime(&control, headers, now, policy.default_ttl)
        .or(control.no_cache.then_some(Duration::ZERO))?;
    Some(Storable {
        control,
        fresh_for,
        vary,
    })
}

/// Applies the headers of a 304 to a stored response (RFC 9111 section 4.3.4) and
/// restarts its freshness.
fn refresh(
    mut stale: CachedResponse,
    headers: &HeaderMap,
    policy: &CachePolicy,
    now: u64,
) -> CachedResponse {
    for name in headers.keys() {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == AGE {
            continue;
        }
        stale.headers.remove(name);
        for value in headers.get_all(name) {
            stale.headers.append(name.clone(), value.clone());
        }
    }
    let control = CacheControl::parse(&stale.headers);
    stale.fresh_for =
        control::freshness_lifetime(&control, &stale.headers, now, policy.default_ttl)
            .unwrap_or(Duration::ZERO);
    stale.response_unix_ms = now;
    stale.initial_age_secs = control::age_seconds(headers);
    let seconds = |value: Option<u64>| Duration::from_secs(value.unwrap_or(0));
    stale.stale_while_revalidate = seconds(control.stale_while_revalidate);
    stale.stale_if_error = seconds(control.stale_if_error);
    stale.no_stale = control.must_revalidate || control.no_cache;
    stale.always_revalidate = control.no_cache;
    stale
}

/// Stores `entry` under the request's keys: with `vary` names, a marker at the primary
/// key and the response at the variant key, which `keys` must then contain. Failures
/// are logged.
async fn save<C: ResponseCache>(
    store: &C,
    keys: &Keys,
    vary: &[http::HeaderName],
    entry: &CachedResponse,
    policy: &CachePolicy,
    now: u64,
) {
    let mut keep = entry.fresh_for + entry.stale_while_revalidate.max(entry.stale_if_error);
    if entry.has_validator() {
        keep = keep.max(entry.fresh_for + policy.keep_stale);
    }
    if keep.is_zero() {
        return;
    }
    let response = CacheEntry::Response(entry.clone());
    let result = if vary.is_empty() {
        // A refreshed variant keeps its variant key, and a new response without Vary
        // replaces any marker at the primary key.
        let key = keys.variant.as_deref().unwrap_or(&keys.primary);
        store.store(key, response, now, keep).await
    } else {
        let variant = keys.storage();
        let marker = CacheEntry::Variants(vary.to_vec());
        match store.store(&keys.primary, marker, now, keep).await {
            Ok(()) => store.store(variant, response, now, keep).await,
            Err(error) => Err(error),
        }
    };
    if let Err(error) = result {
        tracing::warn!(error = %error, "cache store failed");
    }
}
