//! The request pipeline: admit, identify the client, route, check access,
//! authenticate and authorize, transform, dispatch, transform the response and record
//! it.

mod admit;
mod compile;
mod dispatch;

use std::net::IpAddr;
use std::sync::Arc;

use http::{Request, Response, Version};

use crate::client_ip;
use crate::config::{self, Config, ConfigErrors, Format};
use crate::error::Error;
use crate::forward::{self, Downstream};
use crate::platform::{Clock, Platform};
use crate::policy::CorsPolicy;
use crate::policy::rate_limit::KeySource;
use crate::respond::problem_response;
use crate::route::RequestView;
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
}

/// The response to send and its access record.
#[derive(Debug)]
pub struct Handled<B> {
    /// The response, with its body possibly still streaming from the upstream.
    pub response: Response<B>,
    /// The record of the request, for the access log.
    pub access: AccessRecord,
}

/// Headers the pipeline adds to whatever response the request ends with, including
/// the gateway's own error responses.
#[derive(Debug, Default)]
struct ResponseExtras {
    cors: Option<Arc<CorsPolicy>>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
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
    pub fn from_text(text: &str, format: Format) -> Result<Self, ConfigErrors> {
        let (config, mut errors) = config::parse(text, format);
        let Some(config) = config else {
            return Err(ConfigErrors(errors));
        };
        match compile::compile(&config) {
            Ok(compiled) if errors.is_empty() => Ok(Self { config, compiled }),
            Ok(_) => Err(ConfigErrors(errors)),
            Err(compile_errors) => {
                errors.extend(compile_errors);
                Err(ConfigErrors(errors))
            }
        }
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
        let mut access = AccessRecord {
            request_id,
            start_unix_ms: clock.unix_millis(),
            method: request.method().as_str().to_owned(),
            version: version_name(request.version()),
            ..AccessRecord::default()
        };

        let origin = request.headers().get(http::header::ORIGIN).cloned();
        let mut extras = ResponseExtras::default();
        let result = self
            .run(request, connection, platform, &mut access, &mut extras)
            .await;
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                access.error = Some(error.kind().slug());
                problem_response(&error, &server.request_id_header, &access.request_id)
            }
        };
        // Errors carry CORS headers too, so that pages can read why a call failed.
        for (name, value) in extras.headers {
            response.headers_mut().append(name, value);
        }
        if let Some(cors) = extras.cors {
            cors.apply(origin.as_ref(), response.headers_mut());
        }
        if let Ok(value) = http::HeaderValue::from_str(&access.request_id) {
            response
                .headers_mut()
                .insert(server.request_id_header.clone(), value);
        }
        access.status = response.status().as_u16();
        access.head_micros = micros_since(clock, started);
        Handled { response, access }
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
        let admitted = admit::admit(&request, server)?;
        let path = admitted.path.into_owned();
        access.host = admitted.host.clone();
        access.path = path.clone();

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
            host: &admitted.host,
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
                authenticator
                    .authenticate(request.headers(), request.uri().query(), platform)
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
        if !route.policies.rate_limits.is_empty() {
            let now_micros = platform.clock().monotonic().as_micros() as u64;
            let source = KeySource {
                request: &request,
                client_ip,
                route: &route.name,
                subject: authenticated
                    .as_ref()
                    .and_then(|authenticated| authenticated.identity.subject.as_deref()),
            };
            for policy in &route.policies.rate_limits {
                policy.check(
                    &source,
                    &self.compiled.counters,
                    now_micros,
                    &mut extras.headers,
                )?;
            }
        }

        let upstream_path = self.compiled.table.upstream_path(route_index, &path);
        let downstream = Downstream {
            peer,
            peer_trusted,
            secure: connection.secure,
            host: (!admitted.host_header.is_empty()).then_some(admitted.host_header.as_str()),
            version: request.version(),
        };
        let request_id = access.request_id.clone();
        let outgoing = dispatch::Outgoing {
            route,
            path: &path,
            upstream_path: &upstream_path,
            downstream: &downstream,
            client_ip,
            request_id: &request_id,
            authenticated: authenticated.as_ref(),
        };
        dispatch::proxy(self, request, outgoing, platform, access).await
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
}
