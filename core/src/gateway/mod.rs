//! The request pipeline: admit, identify the client, route, check access,
//! authenticate and authorize, transform, dispatch, transform the response and record
//! it.

mod admit;
mod aggregate;
mod cache;
mod compile;
pub(crate) mod discovery;
mod dispatch;
mod purge;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, Version};

use crate::cache::CacheStatus;
use crate::circuit::CircuitState;
use crate::client_ip;
use crate::config::{self, Config, ConfigErrors, Format, HealthCheckConfig};
use crate::error::{Error, ErrorKind, ErrorSource};
use crate::forward::{self, Downstream};
use crate::grpc;
use crate::health::ActiveStatus;
use crate::platform::{Clock, Platform};
use crate::policy::rate_limit::{KeySource, Stores};
use crate::policy::{CorsPolicy, validate};
use crate::respond::error_response;
use crate::route::RequestView;
use crate::trace::TraceContext;
use crate::transform;
use crate::websocket;
pub use cache::BackgroundTask;
use compile::Compiled;

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The socket peer. On edge platforms, the client address the platform vouches
    /// for, such as `CF-Connecting-IP`.
    pub peer: IpAddr,
    /// Whether the client connection used TLS.
    pub secure: bool,
}

/// One access-log record, filled in by the pipeline and completed by the runtime,
/// which sees when the response body finished.
///
/// It never contains the query string or header values, which may carry credentials.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AccessRecord {
    /// Request id, propagated or generated.
    pub request_id: String,
    /// W3C trace id, from the request's `traceparent` or new, as 32 hex digits.
    pub trace_id: String,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub start_unix_ms: u64,
    /// Client address after trusted-proxy resolution.
    pub client_ip: Option<IpAddr>,
    /// Request method.
    pub method: String,
    /// Host the client asked for.
    pub host: String,
    /// Normalized request path, without the query.
    pub path: String,
    /// HTTP version of the client connection.
    pub version: &'static str,
    /// Name of the matched route.
    pub route: Option<Arc<str>>,
    /// Name of the upstream the request was sent to.
    pub upstream: Option<Arc<str>>,
    /// Endpoint address the request was sent to.
    pub endpoint: Option<String>,
    /// Response status.
    pub status: u16,
    /// Error slug when the gateway produced the response itself.
    pub error: Option<&'static str>,
    /// Time from arrival to the response head, in microseconds.
    pub head_micros: u64,
    /// Time from the upstream request to its response head, in microseconds.
    pub upstream_micros: Option<u64>,
    /// Response body bytes sent, filled in by the runtime.
    pub response_bytes: Option<u64>,
    /// Attempts sent after the first, each to another endpoint of the upstream.
    pub retries: u32,
    /// Cache status on routes with a `cache` policy: `hit`, `miss`, `stale`, `bypass`
    /// or `revalidated`.
    pub cache: Option<&'static str>,
    /// The trace and the gateway's spans, for runtimes that export spans.
    #[serde(skip)]
    pub trace: Option<TraceRecord>,
}

/// The gateway's spans of one request: the request's span and one per upstream
/// attempt.
#[derive(Debug, Clone)]
pub struct TraceRecord {
    /// The trace, the caller's span id and the request's span id.
    pub context: TraceContext,
    /// The upstream attempts, in order.
    pub attempts: Vec<AttemptSpan>,
}

/// One upstream attempt, as a child span of the request's span.
#[derive(Debug, Clone)]
pub struct AttemptSpan {
    /// The span id sent upstream as the parent id in `traceparent`.
    pub span_id: [u8; 8],
    /// The endpoint address.
    pub endpoint: String,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub start_unix_ms: u64,
    /// Time to the response head or the error, in microseconds.
    pub duration_micros: u64,
    /// The response status, or `None` when the attempt failed without one.
    pub status: Option<u16>,
}

/// The passive health of one endpoint at one moment, for metrics and admin pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    /// Name of the upstream.
    pub upstream: Arc<str>,
    /// Endpoint address as configured.
    pub endpoint: String,
    /// Whether outlier detection has ejected the endpoint.
    pub ejected: bool,
    /// State of the endpoint's circuit breaker.
    pub circuit: CircuitState,
    /// Verdict of active health checks: `None` when the upstream has none or no
    /// check has finished yet.
    pub active_healthy: Option<bool>,
}

/// The circuit state and load of one upstream at one moment, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamHealth {
    /// Name of the upstream.
    pub upstream: Arc<str>,
    /// State of the upstream's own circuit breaker.
    pub circuit: CircuitState,
    /// Requests in flight, counted when the upstream has `max_requests`.
    pub in_flight: u32,
    /// Requests waiting for a slot.
    pub pending: u32,
}

/// One endpoint to check actively, with the cell its verdicts go to. The native
/// runtime runs these checks; the gateway's balancers read the verdicts.
#[derive(Debug, Clone)]
pub struct HealthCheckTarget {
    /// Name of the upstream.
    pub upstream: Arc<str>,
    /// Endpoint address as configured.
    pub endpoint: String,
    /// The address when it is an IP address, so that no resolution is needed.
    pub socket_addr: Option<std::net::SocketAddr>,
    /// The upstream's check settings.
    pub check: HealthCheckConfig,
    /// Where verdicts go. It is shared with the next gateway after a reload while
    /// the endpoint stays, so a restarted check continues from the last verdict.
    pub status: Arc<ActiveStatus>,
}

/// The response to send and its access record.
#[derive(Debug)]
pub struct Handled<B> {
    /// The response, with its body possibly still streaming from the upstream.
    pub response: Response<B>,
    /// The record of the request, for the access log.
    pub access: AccessRecord,
    /// Work to run after the response is sent, with [`Gateway::run_background`].
    pub background: Option<BackgroundTask>,
}

/// Headers the pipeline adds to whatever response the request ends with, including
/// the gateway's own error responses.
#[derive(Debug, Default)]
struct ResponseExtras {
    cors: Option<Arc<CorsPolicy>>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The status header of a route with a `cache` policy and the status to send in it.
    cache_status: Option<(http::HeaderName, CacheStatus)>,
    background: Option<BackgroundTask>,
}

/// A gateway built from one config version. It is immutable; a reload builds a new one.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    compiled: Compiled,
}

impl Gateway {
    /// Checks `config` and compiles it, reporting every problem at once.
    pub fn new(config: Config) -> Result<Self, ConfigErrors> {
        let compiled = compile::compile(&config).map_err(ConfigErrors)?;
        Ok(Self { config, compiled })
    }

    /// Parses and compiles a config document, reporting every problem at once: unknown
    /// keys and problems of meaning together, so one `gatehouse check` shows them all.
    /// A config that names files (`json_schema_file`) needs
    /// [`Gateway::from_text_with_files`].
    pub fn from_text(text: &str, format: Format) -> Result<Self, ConfigErrors> {
        Self::from_text_with_files(text, format, &|file| {
            Err(format!("{file} cannot be read on this platform"))
        })
    }

    /// Parses and compiles a config document like [`Gateway::from_text`], reading the
    /// files it names with `read_file` (see [`Config::read_files`]).
    pub fn from_text_with_files(
        text: &str,
        format: Format,
        read_file: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Self, ConfigErrors> {
        let (config, mut errors) = config::parse(text, format);
        let Some(mut config) = config else {
            return Err(ConfigErrors(errors));
        };
        errors.extend(config.read_files(read_file));
        match compile::compile(&config) {
            Ok(compiled) if errors.is_empty() => Ok(Self { config, compiled }),
            Ok(_) => Err(ConfigErrors(errors)),
            Err(compile_errors) => {
                errors.extend(compile_errors);
                Err(ConfigErrors(errors))
            }
        }
    }

    /// Parses and compiles a config document like [`Gateway::from_text`], then takes
    /// over the runtime state of `previous` for upstreams that did not change (see
    /// [`Gateway::inherit_state`]).
    pub fn from_text_with_previous(
        text: &str,
        format: Format,
        previous: &Gateway,
    ) -> Result<Self, ConfigErrors> {
        let mut gateway = Self::from_text(text, format)?;
        gateway.inherit_state(previous);
        Ok(gateway)
    }

    /// Shares the balancer, outlier-detection, circuit-breaker, request-limit,
    /// active-health and retry-budget state of `previous` for each upstream of the
    /// same name whose settings for that state are unchanged, so a reload keeps
    /// ejections, open circuits, round-robin positions, latency estimates and the
    /// retry budget. Ejections, endpoint breakers and active-health verdicts follow
    /// each endpoint's address, so they survive changes to the endpoint list. Local rate-limit counters always carry over.
    ///
    /// Both gateways must read the same monotonic clock, because the state stores
    /// times from it. Returns the names of upstreams that took over at least one part.
    pub fn inherit_state(&mut self, previous: &Gateway) -> Vec<Arc<str>> {
        // Counter keys start with the policy name, so policies that were renamed or
        // removed simply stop matching their old keys, which then expire.
        self.compiled.counters = Arc::clone(&previous.compiled.counters);
        let mut inherited = Vec::new();
        for upstream in &mut self.compiled.upstreams {
            let Some(old) = previous
                .compiled
                .upstreams
                .iter()
                .find(|old| old.name == upstream.name)
            else {
                continue;
            };
            let (Some(new_config), Some(old_config)) = (
                self.config.upstreams.get(&*upstream.name),
                previous.config.upstreams.get(&*old.name),
            ) else {
                continue;
            };
            if upstream.inherit_state(new_config, old, old_config) {
                inherited.push(Arc::clone(&upstream.name));
            }
        }
        inherited
    }

    /// Returns whether each endpoint of each upstream is ejected at monotonic time
    /// `now`, read from the same clock the gateway's platform uses. Upstreams come in
    /// name order and endpoints in config order.
    pub fn endpoint_health(&self, now: std::time::Duration) -> Vec<EndpointHealth> {
        self.compiled
            .upstreams
            .iter()
            .flat_map(|upstream| {
                upstream
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(index, endpoint)| EndpointHealth {
                        upstream: Arc::clone(&upstream.name),
                        endpoint: endpoint.authority.clone(),
                        ejected: upstream.outlier.is_ejected(index, now),
                        circuit: upstream.circuits[index].state(now),
                        active_healthy: (upstream.health_check.is_some()
                            && upstream.active[index].is_checked())
                        .then(|| !upstream.active[index].is_unhealthy()),
                    })
            })
            .collect()
    }

    /// Returns each upstream's circuit state and load at monotonic time `now`, in
    /// name order.
    pub fn upstream_health(&self, now: std::time::Duration) -> Vec<UpstreamHealth> {
        self.compiled
            .upstreams
            .iter()
            .map(|upstream| {
                let (in_flight, pending) = upstream.limit.load();
                UpstreamHealth {
                    upstream: Arc::clone(&upstream.name),
                    circuit: upstream.breaker.state(now),
                    in_flight,
                    pending,
                }
            })
            .collect()
    }

    /// Returns the endpoints of every upstream with an active health check.
    pub fn health_check_targets(&self) -> Vec<HealthCheckTarget> {
        self.compiled
            .upstreams
            .iter()
            .filter_map(|upstream| Some((upstream, upstream.health_check.as_ref()?)))
            .flat_map(|(upstream, check)| {
                upstream
                    .endpoints
                    .iter()
                    .zip(&upstream.active)
                    .map(|(endpoint, status)| HealthCheckTarget {
                        upstream: Arc::clone(&upstream.name),
                        endpoint: endpoint.authority.clone(),
                        socket_addr: endpoint.socket_addr,
                        check: check.clone(),
                        status: Arc::clone(status),
                    })
            })
            .collect()
    }

    /// Returns the config this gateway was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Handles one request end to end. Every error becomes a problem response in
    /// [`crate::respond`], so the caller always gets a response to send.
    pub async fn handle<P: Platform>(
        &self,
        request: Request<P::Body>,
        connection: &ConnectionInfo,
        platform: &P,
    ) -> Handled<P::Body> {
        let clock = platform.clock();
        let started = clock.monotonic();
        let server = &self.compiled.server;

        let request_id = match request
            .headers()
            .get(&server.request_id_header)
            .and_then(forward::valid_request_id)
        {
            Some(id) => id.to_owned(),
            None => forward::new_request_id(platform.random_u64(), platform.random_u64()),
        };
        let trace = TraceContext::from_headers(request.headers(), || platform.random_u64());
        let mut access = AccessRecord {
            request_id,
            trace_id: trace.trace_id_hex(),
            trace: Some(TraceRecord {
                context: trace,
                attempts: Vec::new(),
            }),
            start_unix_ms: clock.unix_millis(),
            method: request.method().as_str().to_owned(),
            version: version_name(request.version()),
            ..AccessRecord::default()
        };

        let origin = request.headers().get(http::header::ORIGIN).cloned();
        let grpc = grpc::Protocol::of(request.headers());
        let mut extras = ResponseExtras::default();
        let result = self
            .run(request, connection, platform, &mut access, &mut extras)
            .await;
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                access.error = Some(error.kind().slug());
                error_response(&error, grpc, &server.request_id_header, &access.request_id)
            }
        };
        // Errors carry CORS headers too, so that pages can read why a call failed.
        for (name, value) in extras.headers {
            response.headers_mut().append(name, value);
        }
        if let Some(cors) = extras.cors {
            cors.apply(origin.as_ref(), response.headers_mut());
        }
        if let Some((name, status)) = extras.cache_status {
            access.cache = Some(status.as_str());
            response
                .headers_mut()
                .insert(name, http::HeaderValue::from_static(status.as_str()));
        }
        if let Ok(value) = http::HeaderValue::from_str(&access.request_id) {
            response
                .headers_mut()
                .insert(server.request_id_header.clone(), value);
        }
        access.status = response.status().as_u16();
        access.head_micros = micros_since(clock, started);
        Handled {
            response,
            access,
            background: extras.background,
        }
    }

    async fn run<P: Platform>(
        &self,
        request: Request<P::Body>,
        connection: &ConnectionInfo,
        platform: &P,
        access: &mut AccessRecord,
        extras: &mut ResponseExtras,
    ) -> Result<Response<P::Body>, Error> {
        let server = &self.compiled.server;
        let admit::Admitted {
            host,
            host_header,
            path,
        } = admit::admit(&request, server)?;
        let path = path.into_owned();
        access.host = host.clone();
        access.path = path.clone();
        // A malformed deadline is rejected with the other malformed input, before any
        // policy counts the request.
        let grpc = grpc::Protocol::of(request.headers());
        let grpc_deadline = match grpc {
            Some(_) => grpc::timeout(request.headers())?,
            None => None,
        };

        let peer = client_ip::canonical(connection.peer);
        let peer_trusted = server.trusted_proxies.contains(peer);
        let client_ip = server
            .trusted_proxies
            .client_address(peer, request.headers());
        access.client_ip = Some(client_ip);
        for policy in &self.compiled.server_ip {
            policy.check(client_ip)?;
        }

        // A preflight is routed by the method it requests, so that a route for PUT
        // handles the preflight of a PUT. When that route has no cors policy, the
        // OPTIONS request is routed as itself, like any other request.
        let view = RequestView {
            host: &host,
            method: request.method(),
            path: &path,
            query: request.uri().query(),
            headers: request.headers(),
        };
        let preflight = CorsPolicy::preflight_method(&request).and_then(|method| {
            let found = self.compiled.table.find(&RequestView {
                method: &method,
                ..view
            })?;
            let has_cors = self.compiled.routes[found].policies.cors.is_some();
            has_cors.then_some((method, found))
        });
        let found = match &preflight {
            Some((_, found)) => Some(*found),
            None => self.compiled.table.find(&view),
        };
        let Some(route_index) = found else {
            return Err(Error::not_found(format!(
                "no route matches {} {}",
                request.method(),
                truncate(&path, 200)
            )));
        };
        let route = &self.compiled.routes[route_index];
        access.route = Some(Arc::clone(&route.name));
        for policy in &route.policies.ip {
            policy.check(client_ip)?;
        }
        extras.cors = route.policies.cors.clone();
        // Requests that end before the cache phase, such as rejected ones, bypass it.
        if let Some(policy) = &route.policies.cache {
            extras.cache_status = Some((policy.status_header.clone(), CacheStatus::Bypass));
        }
        if let (Some((method, _)), Some(policy)) = (&preflight, &route.policies.cors) {
            // The CORS headers of a preflight come from `preflight` itself.
            extras.cors = None;
            let headers = policy.preflight(request.headers(), method)?;
            let mut response = Response::new(P::Body::from(bytes::Bytes::new()));
            *response.status_mut() = http::StatusCode::NO_CONTENT;
            *response.headers_mut() = headers;
            return Ok(response);
        }
        // Authenticate, then authorize, after the access policies and before validation
        // and rate limits, so that limits can be keyed by the verified subject.
        let authenticated = match &route.policies.authenticate {
            Some(authenticator) => Some(
                Box::pin(authenticator.authenticate(
                    request.headers(),
                    request.uri().query(),
                    platform,
                ))
                .await?,
            ),
            None => None,
        };
        if let Some(authenticated) = &authenticated {
            for policy in &route.policies.authorize {
                policy.check(&authenticated.identity, authenticated.scheme)?;
            }
        }

        for policy in &route.policies.validate {
            policy.check(&request)?;
        }
        let body_limit = route
            .policies
            .validate
            .iter()
            .filter_map(|policy| policy.max_body_bytes())
            .fold(server.max_body_bytes, u64::min);
        let request = limit_request_body(request, body_limit, platform);
        // Rarely taken steps are boxed, so their state does not grow the future of
        // every request, which the server moves when it starts one.
        let mut request = if route
            .policies
            .validate
            .iter()
            .any(|policy| policy.has_json_schema())
        {
            Box::pin(validate::check_json_body::<P>(
                &route.policies.validate,
                request,
                body_limit,
            ))
            .await?
        } else {
            request
        };
        if !route.policies.request_body_changes.is_empty() {
            let (mut parts, body) = request.into_parts();
            let body = Box::pin(transform::rewrite_json_body(
                platform,
                &mut parts.headers,
                body,
                &route.policies.request_body_changes,
                transform::BodyDirection::Request,
            ))
            .await?;
            request = Request::from_parts(parts, body);
        }
        if !route.policies.rate_limits.is_empty() {
            let source = KeySource {
                request: &request,
                client_ip,
                route: &route.name,
                identity: authenticated
                    .as_ref()
                    .map(|authenticated| &authenticated.identity),
            };
            let stores = Stores {
                local: &self.compiled.counters,
                shared: platform.counters(),
                now_unix_micros: platform.clock().unix_micros(),
            };
            for policy in &route.policies.rate_limits {
                Box::pin(policy.check(&source, &stores, &mut extras.headers)).await?;
            }
        }

        let web = grpc.filter(|protocol| route.grpc_web && protocol.is_web());
        let mut decode_failure = None;
        if let Some(protocol) = web {
            let translated = grpc_web_request(request, protocol, platform)?;
            request = translated.0;
            decode_failure = translated.1;
        }
        let websocket_idle = route
            .websocket_idle
            .filter(|_| websocket::is_upgrade(&request));
        if websocket_idle.is_some() && !platform.supports_websocket() {
            return Err(Error::new(
                ErrorKind::NotImplemented,
                ErrorSource::Platform,
                "this platform cannot relay WebSocket connections",
            ));
        }

        let upstream_path = self.compiled.table.upstream_path(route_index, &path);
        let downstream = Downstream {
            peer,
            peer_trusted,
            secure: connection.secure,
            host: (!host_header.is_empty()).then_some(host_header.as_str()),
            version: request.version(),
        };
        let request_id = access.request_id.clone();
        let outgoing = dispatch::Outgoing {
            route,
            route_index,
            path: &path,
            upstream_path: &upstream_path,
            downstream: &downstream,
            client_ip,
            request_id: &request_id,
            authenticated: authenticated.as_ref(),
            grpc_deadline,
            websocket_idle,
        };
        if route.purge {
            return Box::pin(purge::respond(self, request, platform)).await;
        }
        if let Some(aggregate) = &route.aggregate {
            return Box::pin(aggregate::respond(
                self, aggregate, request, outgoing, platform, access,
            ))
            .await;
        }
        let dispatched = match &route.policies.cache {
            // An upgraded connection is never cached.
            Some(policy) if websocket_idle.is_none() => {
                let outcome = Box::pin(cache::handle(
                    self, policy, request, outgoing, platform, access,
                ))
                .await;
                extras.cache_status = Some((policy.status_header.clone(), outcome.status));
                extras.background = outcome.background;
                outcome.result
            }
            _ => Box::pin(dispatch::proxy(self, request, outgoing, platform, access)).await,
        };
        // A text body that failed to decode broke the upstream request: the client's
        // error, whatever the upstream client reported.
        let invalid_text = decode_failure.as_ref().and_then(|failure| failure.get());
        let response = match (dispatched, invalid_text) {
            (Ok(response), _) => response,
            (Err(_), Some(invalid)) => return Err(invalid.to_error()),
            (Err(error), None) => return Err(error),
        };
        match web {
            Some(protocol) => grpc_web_response(response, protocol, platform),
            None => Ok(response),
        }
    }
}

/// Turns a gRPC-Web request into the gRPC request sent upstream. A text request
/// comes with the flag its body sets if it fails to decode.
fn grpc_web_request<P: Platform>(
    mut request: Request<P::Body>,
    protocol: grpc::Protocol,
    platform: &P,
) -> Result<(Request<P::Body>, Option<grpc::web::DecodeFailure>), Error> {
    grpc::web::translate_request_head(&mut request, protocol);
    if protocol != grpc::Protocol::GrpcWebText {
        // A binary body passes unchanged, but the response will need translating, so a
        // platform that cannot translate fails now, before the upstream runs the call.
        let probe = grpc::web::WebBody::encode_response(P::Body::from(Bytes::new()), protocol);
        platform.grpc_web_body(probe)?;
        return Ok((request, None));
    }
    let (parts, body) = request.into_parts();
    let (body, failure) = grpc::web::WebBody::decode_text_request(body);
    let body = platform.grpc_web_body(body)?;
    Ok((Request::from_parts(parts, body), Some(failure)))
}

/// Turns the upstream's gRPC response into the gRPC-Web response of `protocol`.
fn grpc_web_response<P: Platform>(
    mut response: Response<P::Body>,
    protocol: grpc::Protocol,
    platform: &P,
) -> Result<Response<P::Body>, Error> {
    if !grpc::web::translate_response_head(&mut response, protocol) {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = platform.grpc_web_body(grpc::web::WebBody::encode_response(body, protocol))?;
    Ok(Response::from_parts(parts, body))
}

/// Limits a request body of unknown length to `limit` bytes while it streams.
///
/// A declared `Content-Length` was checked against the limit in the admit phase and
/// by the validate policies, and the platform's HTTP server holds the body to that
/// length, so such bodies, and bodies that report a small enough size, pass
/// unwrapped. On the Worker that keeps them flowing without being copied.
fn limit_request_body<P: Platform>(
    request: Request<P::Body>,
    limit: u64,
    platform: &P,
) -> Request<P::Body> {
    use http_body::Body as _;

    let body = request.body();
    let bounded = request.headers().contains_key(http::header::CONTENT_LENGTH)
        || body.is_end_stream()
        || body.size_hint().upper().is_some_and(|upper| upper <= limit);
    if bounded {
        request
    } else {
        request.map(|body| platform.limit_body(body, limit))
    }
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn micros_since<C: Clock>(clock: &C, started: std::time::Duration) -> u64 {
    clock.monotonic().saturating_sub(started).as_micros() as u64
}

/// Cuts `text` to at most `max` bytes on a character boundary, for error details.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_text_reports_unknown_keys_and_meaning_together() {
        let text = r#"
            [upstreams.api]
            endpoints = [{ address = "127.0.0.1:9001" }]
            retry_count = 2

            [[routes]]
            upstream = "apy"
        "#;
        let errors = Gateway::from_text(text, Format::Toml).unwrap_err().0;
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("upstreams.api.retry_count: unknown key"),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            "routes[0].upstream: upstream \"apy\" is not defined (did you mean \"api\"?)"
        );
    }

    #[test]
    fn local_zone_prefers_mapped_location() {
        let mapped = r#"
            [server]
            zone = "home"
            location_zones = { DFW = "us-central", "" = "x" }
        "#;
        let errors = Gateway::from_text(mapped, Format::Toml).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "server.location_zones.");

        let mapped = mapped.replace(", \"\" = \"x\"", "");
        let gateway = Gateway::from_text(&mapped, Format::Toml).expect("valid config");
        let server = &gateway.compiled.server;
        assert_eq!(server.local_zone(Some("DFW")), Some("us-central"));
        assert_eq!(server.local_zone(Some("AMS")), Some("home"));
        assert_eq!(server.local_zone(None), Some("home"));

        let gateway = Gateway::from_text("", Format::Toml).expect("valid config");
        let server = &gateway.compiled.server;
        assert_eq!(server.local_zone(Some("AMS")), Some("AMS"));
        assert_eq!(server.local_zone(None), None);
    }

    #[test]
    fn durable_object_store_settings_checked() {
        let text = r#"
            [stores.counters.durable_object]
            binding = " "
            timeout = "0s"
        "#;
        let errors = Gateway::from_text(text, Format::Toml).unwrap_err().0;
        let paths: Vec<&str> = errors.iter().map(|error| error.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "stores.counters.durable_object.binding",
                "stores.counters.durable_object.timeout"
            ]
        );
    }

    const TWO_ENDPOINTS: &str = r#"
        [upstreams.api]
        endpoints = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]
        outlier = { consecutive_failures = 1, base_ejection = "60s" }

        [upstreams.web]
        endpoints = [{ address = "127.0.0.1:9003" }, { address = "127.0.0.1:9004" }]
        outlier = { consecutive_failures = 1, base_ejection = "60s" }

        [[routes]]
        upstream = "api"
    "#;

    fn eject_first_endpoint(gateway: &Gateway, upstream: &str, now: std::time::Duration) {
        let upstream = gateway
            .compiled
            .upstreams
            .iter()
            .find(|compiled| &*compiled.name == upstream)
            .expect("upstream exists");
        let ejection = upstream
            .outlier
            .record(0, crate::health::Outcome::Failure, now);
        assert!(ejection.is_some(), "one failure ejects with this config");
    }

    fn ejected(gateway: &Gateway, now: std::time::Duration) -> Vec<(String, String)> {
        gateway
            .endpoint_health(now)
            .into_iter()
            .filter(|health| health.ejected)
            .map(|health| (health.upstream.to_string(), health.endpoint))
            .collect()
    }

    #[test]
    fn endpoint_health_lists_every_endpoint() {
        let gateway = Gateway::from_text(TWO_ENDPOINTS, Format::Toml).expect("valid config");
        let now = std::time::Duration::from_secs(10);
        eject_first_endpoint(&gateway, "web", now);
        let health = gateway.endpoint_health(now);
        let listed: Vec<(&str, &str, bool)> = health
            .iter()
            .map(|health| (&*health.upstream, health.endpoint.as_str(), health.ejected))
            .collect();
        assert_eq!(
            listed,
            [
                ("api", "127.0.0.1:9001", false),
                ("api", "127.0.0.1:9002", false),
                ("web", "127.0.0.1:9003", true),
                ("web", "127.0.0.1:9004", false),
            ]
        );
        // The ejection lasts base_ejection (60 s).
        assert!(ejected(&gateway, now + std::time::Duration::from_secs(61)).is_empty());
    }

    #[test]
    fn reload_keeps_ejection_of_unchanged_upstream() {
        let old = Gateway::from_text(TWO_ENDPOINTS, Format::Toml).expect("valid config");
        let now = std::time::Duration::from_secs(10);
        eject_first_endpoint(&old, "api", now);

        let text = format!(
            "{TWO_ENDPOINTS}\n[[routes]]\nmatch.path_prefix = \"/web\"\nupstream = \"web\"\n"
        );
        let new =
            Gateway::from_text_with_previous(&text, Format::Toml, &old).expect("valid config");
        assert_eq!(
            ejected(&new, now),
            [("api".to_owned(), "127.0.0.1:9001".to_owned())]
        );
        assert_eq!(new.config().routes.len(), 2);
        // The state is shared, so an ejection recorded by the new gateway is seen by
        // requests still running on the old one.
        eject_first_endpoint(&new, "web", now);
        assert_eq!(ejected(&old, now).len(), 2);
    }

    #[test]
    fn reload_keeps_rate_limit_counters() {
        let old = Gateway::from_text(TWO_ENDPOINTS, Format::Toml).expect("valid config");
        let new = Gateway::from_text_with_previous(TWO_ENDPOINTS, Format::Toml, &old)
            .expect("valid config");
        assert!(Arc::ptr_eq(&old.compiled.counters, &new.compiled.counters));
    }

    #[test]
    fn reload_resets_state_of_changed_endpoints() {
        let old = Gateway::from_text(TWO_ENDPOINTS, Format::Toml).expect("valid config");
        let now = std::time::Duration::from_secs(10);
        eject_first_endpoint(&old, "api", now);
        eject_first_endpoint(&old, "web", now);

        // api gets a third endpoint and web a longer ejection. api's endpoints that
        // stayed keep their ejections, by address; web's detector follows other
        // settings, so it starts afresh.
        let text = TWO_ENDPOINTS
            .replace(
                r#"{ address = "127.0.0.1:9002" }]"#,
                r#"{ address = "127.0.0.1:9002" }, { address = "127.0.0.1:9005" }]"#,
            )
            .replacen(
                r#"outlier = { consecutive_failures = 1, base_ejection = "60s" }

        [[routes]]"#,
                r#"outlier = { consecutive_failures = 1, base_ejection = "90s" }

        [[routes]]"#,
                1,
            );
        let mut new = Gateway::from_text(&text, Format::Toml).expect("valid config");
        let inherited = new.inherit_state(&old);
        assert_eq!(
            ejected(&new, now),
            [("api".to_owned(), "127.0.0.1:9001".to_owned())]
        );
        // api's endpoints that stayed keep their breakers and active-health verdicts,
        // and web's balancer and retry budget still carry over.
        assert_eq!(
            inherited,
            [Arc::<str>::from("api"), Arc::<str>::from("web")]
        );
    }

    #[test]
    fn reload_keeps_open_circuit_of_endpoint_that_stayed() {
        let text = r#"
            [upstreams.api]
            endpoints = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]
            circuit = { consecutive_failures = 1, open_duration = "60s" }

            [[routes]]
            upstream = "api"
        "#;
        let old = Gateway::from_text(text, Format::Toml).expect("valid config");
        let now = std::time::Duration::from_secs(10);
        let breaker = &old.compiled.upstreams[0].circuits[1];
        let permit = breaker.admit(now).expect("closed");
        breaker.record(permit, crate::health::Outcome::Failure, now);

        // 9002 moves to the front and a new endpoint joins.
        let changed = text.replace(
            r#"[{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]"#,
            r#"[{ address = "127.0.0.1:9002" }, { address = "127.0.0.1:9003" }, { address = "127.0.0.1:9001" }]"#,
        );
        let new =
            Gateway::from_text_with_previous(&changed, Format::Toml, &old).expect("valid config");
        let states: Vec<(String, CircuitState)> = new
            .endpoint_health(now)
            .into_iter()
            .map(|health| (health.endpoint, health.circuit))
            .collect();
        assert_eq!(
            states,
            [
                ("127.0.0.1:9002".to_owned(), CircuitState::Open),
                ("127.0.0.1:9003".to_owned(), CircuitState::Closed),
                ("127.0.0.1:9001".to_owned(), CircuitState::Closed),
            ]
        );
    }

    #[test]
    fn circuit_and_locality_settings_are_checked() {
        let text = r#"
            [server]
            zone = ""

            [upstreams.api]
            endpoints = [{ address = "127.0.0.1:9001", zone = "" }]
            circuit = { failure_percent = 150, half_open_probes = 0, open_duration = "0s", max_pending = 5 }
            locality = { local_min_healthy_percent = 0, overprovisioning_percent = 50 }
            health_check = { kind = "tcp", path = "/x", body_contains = "ok", interval = "0s", jitter_percent = 80, healthy_threshold = 0 }

            [[routes]]
            upstream = "api"
        "#;
        let errors = Gateway::from_text(text, Format::Toml).unwrap_err().0;
        let paths: Vec<String> = errors.iter().map(|error| error.path.clone()).collect();
        assert_eq!(
            paths,
            [
                "server.zone",
                "upstreams.api.endpoints[0].zone",
                "upstreams.api.circuit.failure_percent",
                "upstreams.api.circuit.half_open_probes",
                "upstreams.api.circuit.open_duration",
                "upstreams.api.circuit.max_pending",
                "upstreams.api.locality.local_min_healthy_percent",
                "upstreams.api.locality.overprovisioning_percent",
                "upstreams.api.health_check.body_contains",
                "upstreams.api.health_check.interval",
                "upstreams.api.health_check.jitter_percent",
                "upstreams.api.health_check.healthy_threshold",
            ],
            "{errors:?}"
        );
    }

    #[test]
    fn protocol_options_need_matching_upstreams() {
        let text = r#"
            [upstreams.plain]
            endpoints = [{ address = "127.0.0.1:9001" }]

            [upstreams.grpc]
            protocol = "h2c"
            endpoints = [{ address = "127.0.0.1:9002" }]

            [[routes]]
            match.path_prefix = "/web"
            upstream = "plain"
            grpc_web = true

            [[routes]]
            match.path_prefix = "/socket"
            upstream = "grpc"
            websocket = { idle_timeout = "0s" }

            [[routes]]
            match.path_prefix = "/fine"
            upstream = "grpc"
            grpc_web = true

            [[routes]]
            match.path_prefix = "/chat"
            upstream = "plain"
            websocket = {}
        "#;
        let errors = Gateway::from_text(text, Format::Toml).unwrap_err().0;
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with(
                "routes[0].grpc_web: needs an HTTP/2 upstream, but upstream \"plain\" speaks HTTP/1.1"
            ),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("routes[1].websocket.idle_timeout: must be greater than 0"),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("routes[1].websocket: needs an HTTP/1.1 upstream"),
            "{lines:?}"
        );
    }

    #[test]
    fn admin_address_is_checked() {
        let problems = |admin: &str| -> Vec<String> {
            match Gateway::from_text(&format!("[admin]\n{admin}\n"), Format::Toml) {
                Ok(_) => Vec::new(),
                Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
            }
        };
        assert!(problems(r#"address = "127.0.0.1:9901""#).is_empty());
        assert!(problems(r#"address = "[::1]:9901""#).is_empty());
        assert!(problems("address = \"0.0.0.0:9901\"\nallow_remote = true").is_empty());

        let remote = problems(r#"address = "0.0.0.0:9901""#);
        assert_eq!(remote.len(), 1, "{remote:?}");
        assert!(
            remote[0].starts_with("admin.address: 0.0.0.0:9901 is not a loopback address"),
            "{remote:?}"
        );
        let invalid = problems(r#"address = "localhost:9901""#);
        assert_eq!(invalid.len(), 1, "{invalid:?}");
        assert!(
            invalid[0].starts_with("admin.address: invalid socket address"),
            "{invalid:?}"
        );
    }

    #[test]
    fn routes_with_same_policy_names_share_set() {
        let text = r#"
            [upstreams.api]
            endpoints = [{ address = "127.0.0.1:9001" }]

            [policies.per-client.rate_limit]
            algorithm = "gcra"
            limit = 10
            period = "1s"
            key = [{ header = "x-client" }]

            [policies.per-ip.rate_limit]
            algorithm = "gcra"
            limit = 10
            period = "1s"
            key = ["client_ip"]

            [[routes]]
            match.path = "/a"
            upstream = "api"
            policies = ["per-client"]

            [[routes]]
            match.path = "/b"
            upstream = "api"
            policies = ["per-client"]

            [[routes]]
            match.path = "/c"
            upstream = "api"
            policies = ["per-client", "per-ip"]

            [[routes]]
            match.path = "/d"
            upstream = "api"
            policies = ["per-ip", "per-client"]
        "#;
        let gateway = Gateway::from_text(text, Format::Toml).expect("valid config");
        let sets: Vec<&Arc<crate::policy::PolicySet>> = gateway
            .compiled
            .routes
            .iter()
            .map(|route| &route.policies)
            .collect();
        assert!(Arc::ptr_eq(sets[0], sets[1]));
        assert!(!Arc::ptr_eq(sets[0], sets[2]));
        assert!(!Arc::ptr_eq(sets[2], sets[3]));
        // Each list keeps its own order: per-client, then per-ip, or the reverse.
        let per_client = &sets[0].rate_limits[0];
        let per_ip = &sets[2].rate_limits[1];
        assert_eq!(sets[1].rate_limits.len(), 1);
        assert!(!Arc::ptr_eq(per_client, per_ip));
        assert!(Arc::ptr_eq(&sets[2].rate_limits[0], per_client));
        assert!(Arc::ptr_eq(&sets[3].rate_limits[0], per_ip));
        assert!(Arc::ptr_eq(&sets[3].rate_limits[1], per_client));
    }

    #[test]
    fn shared_policy_set_problems_reported_per_route() {
        let text = r#"
            [upstreams.api]
            endpoints = [{ address = "127.0.0.1:9001" }]

            [policies.web.cors]
            allow_origins = ["https://app.example.com"]

            [policies.other.cors]
            allow_origins = ["https://other.example.com"]

            [[routes]]
            match.path = "/a"
            upstream = "api"
            policies = ["web", "other"]

            [[routes]]
            match.path = "/b"
            upstream = "api"
            policies = ["web", "other"]
        "#;
        let errors = Gateway::from_text(text, Format::Toml).unwrap_err().0;
        let paths: Vec<&str> = errors.iter().map(|error| error.path.as_str()).collect();
        assert_eq!(paths, ["routes[0].policies[1]", "routes[1].policies[1]"]);
    }
}
