//! [`SpinPlatform`]: the core's platform traits on WASI 0.2 clocks and random, and on
//! Spin's outbound HTTP.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{Either, select};
use futures::{SinkExt, StreamExt};
use gatehouse_core::body::BodyTooLarge;
use gatehouse_core::config::UpstreamProtocol;
use gatehouse_core::error::BoxError;
use gatehouse_core::forward::new_request_id;
use gatehouse_core::platform::{Clock, Platform, Upstream, UpstreamTarget};
use gatehouse_core::{Error, ErrorKind, ErrorSource};
use http::{Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use spin_executor::CancelOnDropToken;
use spin_sdk::http::{ErrorCode, IncomingResponse, Method, OutgoingRequest, Scheme, SendError};
use wasi::clocks::{monotonic_clock, wall_clock};

use super::cache::SpinResponseCache;
use super::convert::{fields, header_map};
use super::counters::SpinCounters;
use super::key_value::SpinKeyValue;

/// The body of requests and responses on Spin: bytes held in memory.
///
/// NOTE: bodies are buffered in both directions, because Spin's body streams are
/// resources owned by one request or response while the core passes one body type
/// both ways. Request bodies are limited by `server.max_body_bytes` while they are
/// read, but upstream response bodies are not limited.
#[derive(Debug, Default, Clone)]
pub struct SpinBody {
    bytes: Option<Bytes>,
    /// Set when the bytes are over a limit given to [`Platform::limit_body`]: reading
    /// or sending the body then fails with [`BodyTooLarge`].
    too_large: Option<BodyTooLarge>,
}

impl SpinBody {
    /// Returns the bytes of the body, whether or not they are over a limit.
    pub fn into_bytes(self) -> Bytes {
        self.bytes.unwrap_or_default()
    }
}

impl From<Bytes> for SpinBody {
    fn from(bytes: Bytes) -> Self {
        Self {
            bytes: Some(bytes),
            too_large: None,
        }
    }
}

impl http_body::Body for SpinBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(bytes) = this.bytes.take() else {
            return Poll::Ready(None);
        };
        if let Some(too_large) = this.too_large {
            return Poll::Ready(Some(Err(Box::new(too_large))));
        }
        Poll::Ready((!bytes.is_empty()).then(|| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes
            .as_ref()
            .is_none_or(|bytes| bytes.is_empty() && self.too_large.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
    }
}

/// The Spin component's implementation of the core's [`Platform`].
#[derive(Debug)]
pub struct SpinPlatform {
    clock: WasiClock,
    upstream: SpinUpstream,
    key_value: Option<SpinKeyValue>,
    cache: SpinResponseCache,
    counters: SpinCounters,
}

impl SpinPlatform {
    /// Creates the platform without a key-value store or response cache: cached routes
    /// always miss.
    pub fn new() -> Self {
        Self {
            clock: WasiClock,
            upstream: SpinUpstream,
            key_value: None,
            cache: SpinResponseCache::disabled(),
            counters: SpinCounters::default(),
        }
    }

    /// Creates the platform with the Spin key-value store labelled `store_label`,
    /// which is opened on first use.
    pub fn with_key_value(store_label: &str) -> Self {
        Self {
            key_value: Some(SpinKeyValue::new(store_label)),
            ..Self::new()
        }
    }

    /// Keeps cached responses in the Spin key-value store labelled `store_label`,
    /// which is opened on first use.
    pub fn with_response_cache(self, store_label: &str) -> Self {
        Self {
            cache: SpinResponseCache::new(store_label),
            ..self
        }
    }

    /// Sets the shared counter stores, the `redis` stores of `[stores]`.
    pub fn with_counters(self, counters: SpinCounters) -> Self {
        Self { counters, ..self }
    }

    /// Returns a new request id, for responses sent before the gateway runs.
    pub fn new_request_id(&self) -> String {
        new_request_id(self.random_u64(), self.random_u64())
    }
}

impl Platform for SpinPlatform {
    type Body = SpinBody;
    type Clock = WasiClock;
    type Upstream = SpinUpstream;
    type KeyValue = SpinKeyValue;
    type ResponseCache = SpinResponseCache;
    type Counters = SpinCounters;

    fn clock(&self) -> &WasiClock {
        &self.clock
    }

    /// Reads the Spin variable of the secret's name in lowercase, the only case Spin
    /// variable names allow: secret `JWT_KEY` is variable `jwt_key`.
    fn secret(&self, name: &str) -> Option<String> {
        spin_sdk::variables::get(&name.to_ascii_lowercase()).ok()
    }

    fn response_cache(&self) -> &SpinResponseCache {
        &self.cache
    }

    fn upstream(&self) -> &SpinUpstream {
        &self.upstream
    }

    fn limit_body(&self, body: SpinBody, max_bytes: u64) -> SpinBody {
        // The whole body is in memory, so whether it is over the limit is known now.
        let length = body.bytes.as_ref().map_or(0, |bytes| bytes.len() as u64);
        if length > max_bytes {
            SpinBody {
                too_large: Some(BodyTooLarge { limit: max_bytes }),
                ..body
            }
        } else {
            body
        }
    }

    fn chain_body(&self, prefix: Bytes, rest: SpinBody) -> SpinBody {
        let too_large = rest.too_large;
        let rest = rest.into_bytes();
        let bytes = if prefix.is_empty() {
            rest
        } else if rest.is_empty() {
            prefix
        } else {
            let mut joined = Vec::with_capacity(prefix.len() + rest.len());
            joined.extend_from_slice(&prefix);
            joined.extend_from_slice(&rest);
            Bytes::from(joined)
        };
        SpinBody {
            bytes: Some(bytes),
            too_large,
        }
    }

    fn counters(&self) -> &SpinCounters {
        &self.counters
    }

    fn random_u64(&self) -> u64 {
        wasi::random::random::get_random_u64()
    }

    fn key_value(&self) -> Option<&SpinKeyValue> {
        self.key_value.as_ref()
    }
}

/// Time from `wasi:clocks`: the wall clock for timestamps and the monotonic clock for
/// durations and sleeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct WasiClock;

impl Clock for WasiClock {
    fn unix_millis(&self) -> u64 {
        let now = wall_clock::now();
        now.seconds * 1000 + u64::from(now.nanoseconds / 1_000_000)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_nanos(monotonic_clock::now())
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Sleep {
            deadline: monotonic_clock::now().saturating_add(nanos),
            registration: None,
        }
    }
}

/// A sleep on the monotonic clock, driven by the Spin executor's poll loop.
struct Sleep {
    /// Monotonic-clock instant, in nanoseconds, at which the sleep ends.
    deadline: u64,
    /// The pollable registered with the executor; dropping it cancels the
    /// registration, so an abandoned sleep does not keep the executor polling.
    registration: Option<CancelOnDropToken>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if monotonic_clock::now() >= self.deadline {
            self.registration = None;
            return Poll::Ready(());
        }
        // The executor drops a pollable once it is ready, so each pending poll
        // registers a fresh one; replacing the token cancels the previous one.
        let pollable = monotonic_clock::subscribe_instant(self.deadline);
        let token = spin_executor::push_waker_and_get_token(pollable, context.waker().clone());
        self.registration = Some(CancelOnDropToken::from(token));
        Poll::Pending
    }
}

/// The HTTP client for upstream requests: Spin's outbound HTTP (`wasi:http`
/// outgoing-handler), HTTP/1.1 to `http://{authority}{path}`, or `https://` when the
/// upstream sets `tls`.
///
/// NOTE: the connect timeout is not passed to the host, so a connect that hangs ends
/// at the core's per-try deadline instead of `timeouts.connect`.
#[derive(Debug, Default)]
pub struct SpinUpstream;

impl Upstream for SpinUpstream {
    type Body = SpinBody;

    async fn send(
        &self,
        request: Request<SpinBody>,
        target: &UpstreamTarget<'_>,
    ) -> Result<Response<SpinBody>, Error> {
        let upstream = target.upstream;
        if target.protocol == UpstreamProtocol::H2c {
            return Err(Error::new(
                ErrorKind::NotImplemented,
                ErrorSource::Platform,
                format!(
                    "upstream {upstream:?} uses h2c, which Spin's outbound HTTP does not \
                     support; use protocol = \"http1\" on Spin"
                ),
            ));
        }

        if let Some(setting) = target.tls.and_then(|tls| tls.native_only_setting()) {
            return Err(Error::new(
                ErrorKind::NotImplemented,
                ErrorSource::Platform,
                format!(
                    "upstream {upstream:?} sets tls.{setting}, which Spin's outbound HTTP \
                     cannot apply; Spin verifies upstream certificates with the host's roots"
                ),
            ));
        }
        let scheme = if target.tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        };

        let (parts, body) = request.into_parts();
        if let Some(too_large) = body.too_large {
            return Err(too_large.to_error());
        }
        let outgoing = OutgoingRequest::new(fields(&parts.headers));
        let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
        let method = Method::from(parts.method.clone());
        let configured = outgoing.set_method(&method).is_ok()
            && outgoing.set_scheme(Some(&scheme)).is_ok()
            && outgoing.set_authority(Some(target.authority)).is_ok()
            && outgoing.set_path_with_query(Some(path)).is_ok();
        if !configured {
            return Err(Error::internal(format!(
                "the request to upstream {upstream:?} has an invalid method, address or path"
            )));
        }

        // The body is written while the host sends the request, because an upstream
        // may wait for the whole body before it answers.
        let mut body_sink = outgoing.take_body();
        let body = body.into_bytes();
        let write_body = async move {
            let written = if body.is_empty() {
                Ok(())
            } else {
                body_sink.send(body.to_vec()).await
            };
            // Dropping the sink finishes the body.
            drop(body_sink);
            written
        };
        let (response, written) = futures::join!(
            spin_sdk::http::send::<_, IncomingResponse>(outgoing),
            write_body
        );
        let response = response.map_err(|error| classify(error, target))?;
        if let Err(error) = written {
            return Err(Error::bad_gateway(format!(
                "failed to send the request body to upstream {upstream:?}"
            ))
            .with_cause(format!("{error:?}")));
        }

        let status = StatusCode::from_u16(response.status()).map_err(|_| {
            Error::bad_gateway(format!(
                "upstream {upstream:?} sent an invalid status code {}",
                response.status()
            ))
        })?;
        let headers = header_map(&response.headers());
        let bytes = response.into_body().await.map_err(|error| {
            Error::bad_gateway(format!(
                "upstream {upstream:?} closed the connection before the end of the body"
            ))
            .with_cause(format!("{error:?}"))
        })?;
        let mut converted = Response::new(SpinBody::from(Bytes::from(bytes)));
        *converted.status_mut() = status;
        *converted.headers_mut() = headers;
        Ok(converted)
    }

    async fn fetch(
        &self,
        request: Request<Bytes>,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Response<Bytes>, Error> {
        let host = request.uri().host().unwrap_or_default().to_owned();
        let exchange = pin!(fetch_whole(request, max_body_bytes));
        let timer = pin!(WasiClock.sleep(timeout));
        match select(exchange, timer).await {
            Either::Left((Ok(response), _)) => Ok(response),
            Either::Left((Err(cause), _)) => {
                // The host may be internal, so it goes to the log and not to clients.
                eprintln!("gatehouse: gateway request failed: host {host:?}, cause {cause}");
                Err(
                    Error::bad_gateway("a request the gateway made on its own behalf failed")
                        .with_cause(cause),
                )
            }
            Either::Right(((), _)) => Err(Error::gateway_timeout(format!(
                "a request the gateway made on its own behalf did not complete within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

/// Sends a gateway-originated request to its absolute URI and reads the whole
/// response, the body bounded by `max_body_bytes`. Errors are plain messages for the
/// caller to classify.
async fn fetch_whole(
    request: Request<Bytes>,
    max_body_bytes: usize,
) -> Result<Response<Bytes>, String> {
    let (parts, body) = request.into_parts();
    let scheme = match parts.uri.scheme_str() {
        Some("https") => Scheme::Https,
        Some("http") => Scheme::Http,
        _ => {
            return Err(format!(
                "{} is not an absolute http or https URI",
                parts.uri
            ));
        }
    };
    let authority = parts
        .uri
        .authority()
        .ok_or_else(|| format!("{} names no host", parts.uri))?;
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let outgoing = OutgoingRequest::new(fields(&parts.headers));
    let configured = outgoing
        .set_method(&Method::from(parts.method.clone()))
        .is_ok()
        && outgoing.set_scheme(Some(&scheme)).is_ok()
        && outgoing.set_authority(Some(authority.as_str())).is_ok()
        && outgoing.set_path_with_query(Some(path)).is_ok();
    if !configured {
        return Err(format!("{} is not a valid request target", parts.uri));
    }
    let mut body_sink = outgoing.take_body();
    let write_body = async move {
        let written = if body.is_empty() {
            Ok(())
        } else {
            body_sink.send(body.to_vec()).await
        };
        // Dropping the sink finishes the body.
        drop(body_sink);
        written
    };
    let (response, written) = futures::join!(
        spin_sdk::http::send::<_, IncomingResponse>(outgoing),
        write_body
    );
    let response = response.map_err(|error| format!("{error:?}"))?;
    written.map_err(|error| format!("failed to send the request body: {error:?}"))?;

    let status = StatusCode::from_u16(response.status())
        .map_err(|_| format!("invalid status code {}", response.status()))?;
    let headers = header_map(&response.headers());
    let mut stream = response.take_body_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| format!("failed to read the body: {error:?}"))?;
        if bytes.len() + chunk.len() > max_body_bytes {
            return Err(format!("the body is larger than {max_body_bytes} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    let mut converted = Response::new(Bytes::from(bytes));
    *converted.status_mut() = status;
    *converted.headers_mut() = headers;
    Ok(converted)
}

/// Turns an outbound HTTP failure into the core's classification. Details name the
/// upstream but never the endpoint address, because they are sent to the client.
fn classify(error: SendError, target: &UpstreamTarget<'_>) -> Error {
    let upstream = target.upstream;
    let classified = match &error {
        SendError::Http(code) => match code {
            // Nothing reached the upstream, so any method may be retried elsewhere.
            ErrorCode::ConnectionRefused
            | ErrorCode::DestinationNotFound
            | ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpProhibited
            | ErrorCode::DestinationIpUnroutable
            | ErrorCode::DnsTimeout
            | ErrorCode::DnsError(_)
            | ErrorCode::ConnectionLimitReached => {
                Error::bad_gateway(format!("could not connect to upstream {upstream:?}"))
                    .with_retry_safe(true)
            }
            ErrorCode::ConnectionTimeout => {
                Error::gateway_timeout(format!("timed out connecting to upstream {upstream:?}"))
                    .with_retry_safe(true)
            }
            ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
                Error::gateway_timeout(format!("upstream {upstream:?} did not respond in time"))
            }
            // The host refused to send the request. On Spin the usual cause is an
            // address missing from `allowed_outbound_hosts`.
            ErrorCode::HttpRequestDenied => Error::bad_gateway(format!(
                "the platform denied the request to upstream {upstream:?}; check that its \
                 endpoints are in allowed_outbound_hosts of spin.toml"
            ))
            .with_retry_safe(true),
            _ => Error::bad_gateway(format!(
                "upstream {upstream:?} closed the connection or sent an invalid response"
            )),
        },
        _ => Error::bad_gateway(format!("the request to upstream {upstream:?} failed")),
    };
    eprintln!(
        "gatehouse: upstream request failed: upstream {upstream:?}, endpoint {}, error {}, \
         cause {error:?}",
        target.authority,
        classified.kind().slug()
    );
    classified.with_cause(format!("{error:?}"))
}
