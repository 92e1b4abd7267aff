//! [`WorkerPlatform`]: the core's platform traits on the Workers runtime.

use std::cell::{Cell, OnceCell, RefCell};
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{Either, select};
use gatehouse_core::config::UpstreamProtocol;
use gatehouse_core::platform::{Clock, Platform, Upstream, UpstreamTarget};
use gatehouse_core::{Error, ErrorKind, ErrorSource, body};
use http::{Request, Response, StatusCode};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::{Delay, Env};

use super::body::{BodyFailure, WorkerBody, js_message};
use super::cache::WorkerResponseCache;
use super::convert::{header_map_from_js, headers_to_js, response_from_js};
use super::counters::WorkerCounters;
use super::key_value::WorkerKeyValue;
use super::websocket::upstream_socket;

#[wasm_bindgen]
extern "C" {
    /// `crypto.getRandomValues`, which fills `bytes` from a cryptographically strong
    /// source.
    #[wasm_bindgen(js_namespace = crypto, js_name = getRandomValues)]
    fn get_random_values(bytes: &mut [u8]);
}

/// Random numbers drawn from one `crypto.getRandomValues` call, so that a request
/// does not cross into JavaScript for each of its few random numbers.
const RANDOM_BATCH: usize = 32;

/// The Worker's implementation of the core's [`Platform`]. One instance serves every
/// request of an isolate, so the clock origin and balancer timings are shared.
#[derive(Debug)]
pub struct WorkerPlatform {
    clock: WorkerClock,
    upstream: WorkerUpstream,
    random: RefCell<Vec<u64>>,
    key_value: Option<WorkerKeyValue>,
    counters: WorkerCounters,
    /// The Worker's bindings, where its secrets are.
    env: Option<Env>,
    /// The data center of the isolate (`request.cf.colo`), from its first request
    /// that carried one. An isolate runs in one data center, so it never changes.
    location: OnceCell<String>,
    /// Responses cached in the data center, shared by its isolates.
    cache: WorkerResponseCache,
}

impl WorkerPlatform {
    /// Creates the platform with the Workers KV namespace `key_value`, if bound, the
    /// shared counter stores, and the bindings of `env` for secrets.
    pub fn new(key_value: Option<WorkerKeyValue>, counters: WorkerCounters, env: Env) -> Self {
        Self {
            key_value,
            counters,
            env: Some(env),
            ..Self::default()
        }
    }
}

impl Default for WorkerPlatform {
    fn default() -> Self {
        Self {
            clock: WorkerClock::default(),
            upstream: WorkerUpstream,
            random: RefCell::default(),
            key_value: None,
            counters: WorkerCounters::default(),
            env: None,
            location: OnceCell::new(),
            cache: WorkerResponseCache::default(),
        }
    }
}

impl WorkerPlatform {
    /// Records the data center a request arrived in, unless one is already known.
    pub fn record_location(&self, colo: Option<String>) {
        if let Some(colo) = colo.filter(|colo| !colo.is_empty()) {
            let _ = self.location.set(colo);
        }
    }
}

impl Platform for WorkerPlatform {
    type Body = WorkerBody;
    type Clock = WorkerClock;
    type Upstream = WorkerUpstream;
    type KeyValue = WorkerKeyValue;

    fn key_value(&self) -> Option<&WorkerKeyValue> {
        self.key_value.as_ref()
    }

    /// Reads a Worker secret, or a text variable of the same name, from the bindings.
    fn secret(&self, name: &str) -> Option<String> {
        let secret = self.env.as_ref()?.secret(name).ok()?;
        Some(secret.to_string())
    }
    type ResponseCache = WorkerResponseCache;
    type Counters = WorkerCounters;

    fn wakes_across_requests(&self) -> bool {
        false
    }

    /// `fetch` opens the upstream WebSocket when the request carries
    /// `Upgrade: websocket`, and the `fetch` handler relays it (see
    /// [`super::websocket`]).
    fn supports_websocket(&self) -> bool {
        true
    }

    fn location(&self) -> Option<&str> {
        self.location.get().map(String::as_str)
    }

    fn clock(&self) -> &WorkerClock {
        &self.clock
    }

    fn response_cache(&self) -> &WorkerResponseCache {
        &self.cache
    }

    fn upstream(&self) -> &WorkerUpstream {
        &self.upstream
    }

    fn limit_body(&self, body: WorkerBody, max_bytes: u64) -> WorkerBody {
        WorkerBody::boxed(body::Limit::new(body, max_bytes))
    }

    fn chain_body(&self, prefix: Bytes, rest: WorkerBody) -> WorkerBody {
        WorkerBody::boxed(body::Chain::new(prefix, rest))
    }

    fn counters(&self) -> &WorkerCounters {
        &self.counters
    }

    fn random_u64(&self) -> u64 {
        let mut random = self.random.borrow_mut();
        if random.is_empty() {
            let mut bytes = [0_u8; RANDOM_BATCH * 8];
            get_random_values(&mut bytes);
            random.extend(
                bytes
                    .chunks_exact(8)
                    .map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap_or_default())),
            );
        }
        random.pop().unwrap_or_default()
    }
}

/// Time from JavaScript's `Date.now()`, with sleeps on `setTimeout`.
///
/// Workers advance `Date.now()` only while the isolate waits for I/O, which is when
/// the gateway measures anything. `Date.now()` follows the system clock, so the
/// monotonic reading never returns less than it did before.
#[derive(Debug)]
pub struct WorkerClock {
    origin_millis: f64,
    latest_millis: Cell<f64>,
}

impl Default for WorkerClock {
    fn default() -> Self {
        Self {
            origin_millis: js_sys::Date::now(),
            latest_millis: Cell::new(0.0),
        }
    }
}

impl Clock for WorkerClock {
    fn unix_millis(&self) -> u64 {
        js_sys::Date::now() as u64
    }

    fn monotonic(&self) -> Duration {
        let elapsed = (js_sys::Date::now() - self.origin_millis).max(self.latest_millis.get());
        self.latest_millis.set(elapsed);
        Duration::from_micros((elapsed * 1000.0) as u64)
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        // `setTimeout` takes a signed 32-bit count of milliseconds (about 24.8 days);
        // a longer delay would wrap around and fire at once.
        Delay::from(duration.min(Duration::from_millis(i32::MAX as u64)))
    }
}

/// The HTTP client for upstream requests: the runtime's `fetch`.
///
/// `fetch` reports neither when a connection opened nor why it failed, so the
/// connect timeout is not applied separately: the try timeout covers the connect.
///
/// NOTE: `fetch` sets `Host` from the URL, which names the endpoint address, and drops
/// the `Host` header the core sets. Neither the client's host nor an upstream's
/// `host_header` reaches the endpoint. `X-Forwarded-Host` and `Forwarded` carry the
/// client's host.
/// NOTE: a failed `fetch` is not marked retry-safe, because its error does not say
/// whether any of the request reached the upstream.
#[derive(Debug, Default)]
pub struct WorkerUpstream;

impl Upstream for WorkerUpstream {
    type Body = WorkerBody;

    async fn send(
        &self,
        request: Request<WorkerBody>,
        target: &UpstreamTarget<'_>,
    ) -> Result<Response<WorkerBody>, Error> {
        if target.protocol == UpstreamProtocol::H2c {
            return Err(Error::new(
                ErrorKind::NotImplemented,
                ErrorSource::Config,
                format!(
                    "upstream {:?} speaks h2c, which the Workers fetch API cannot send",
                    target.upstream
                ),
            ));
        }

        if let Some(setting) = target.tls.and_then(|tls| tls.native_only_setting()) {
            return Err(Error::new(
                ErrorKind::NotImplemented,
                ErrorSource::Config,
                format!(
                    "upstream {:?} sets tls.{setting}, which the Workers fetch API cannot \
                     apply; Workers verify upstream certificates with their own roots",
                    target.upstream
                ),
            ));
        }

        let request = buffer_request_body(request).await?;
        let (abort, signal) = AbortOnDrop::new().map_err(|cause| {
            Error::internal("the runtime could not create an AbortController")
                .with_cause(js_message(&cause))
        })?;
        let body_failure = BodyFailure::default();
        let fetch_request =
            build_fetch_request(request, target, &signal, &body_failure).map_err(|cause| {
                let error = Error::internal(format!(
                    "the request to upstream {:?} could not be built",
                    target.upstream
                ));
                log_failure(target, &error, &js_message(&cause));
                error.with_cause(js_message(&cause))
            })?;

        let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let fetch = pin!(JsFuture::from(global.fetch_with_request(&fetch_request)));
        // The core races this call against the same deadline, so this timer only
        // matters to callers that use the client directly.
        let timer = pin!(Delay::from(target.try_timeout));
        match select(fetch, timer).await {
            Either::Left((Ok(value), _)) => {
                // The response body streams from the same fetch, so it must not be
                // aborted from here on.
                abort.disarm();
                let response: web_sys::Response = value.unchecked_into();
                let mut converted = response_from_js(&response).map_err(|cause| {
                    let error = Error::bad_gateway(format!(
                        "upstream {:?} sent an invalid response",
                        target.upstream
                    ));
                    log_failure(target, &error, &cause);
                    error.with_cause(cause)
                })?;
                if let Some(socket) = upstream_socket(&response) {
                    converted.extensions_mut().insert(socket);
                }
                Ok(converted)
            }
            Either::Left((Err(cause), _)) => {
                // The client's body passed its limit while `fetch` sent it.
                if let Some(too_large) = body_failure.borrow_mut().take() {
                    return Err(too_large.with_cause(js_message(&cause)));
                }
                let error = Error::bad_gateway(format!(
                    "could not reach upstream {:?} or it closed the connection",
                    target.upstream
                ));
                let cause = js_message(&cause);
                log_failure(target, &error, &cause);
                Err(error.with_cause(cause))
            }
            Either::Right(((), _)) => Err(Error::gateway_timeout(format!(
                "upstream {:?} did not respond within {} ms",
                target.upstream,
                target.try_timeout.as_millis()
            ))),
        }
    }

    async fn fetch(
        &self,
        request: Request<Bytes>,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Response<Bytes>, Error> {
        let (abort, signal) = AbortOnDrop::new().map_err(|cause| {
            Error::internal("the runtime could not create an AbortController")
                .with_cause(js_message(&cause))
        })?;
        let host = request.uri().host().unwrap_or_default().to_owned();
        let exchange = pin!(Self::fetch_whole(request, max_body_bytes, &signal));
        let timer = pin!(Delay::from(timeout));
        match select(exchange, timer).await {
            Either::Left((Ok(response), _)) => {
                abort.disarm();
                Ok(response)
            }
            Either::Left((Err(cause), _)) => {
                // The host may be internal, so it goes to the log and not to clients.
                worker::console_warn!("gateway request failed: host={host:?} cause={cause:?}");
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

impl WorkerUpstream {
    /// Sends a gateway-originated request and reads the whole response, the body
    /// bounded by `max_body_bytes`. Errors are plain messages for the caller to classify.
    async fn fetch_whole(
        request: Request<Bytes>,
        max_body_bytes: usize,
        signal: &web_sys::AbortSignal,
    ) -> Result<Response<Bytes>, String> {
        let init = web_sys::RequestInit::new();
        init.set_method(request.method().as_str());
        init.set_headers(
            &headers_to_js(request.headers())
                .map_err(|cause| js_message(&cause))?
                .into(),
        );
        init.set_redirect(web_sys::RequestRedirect::Manual);
        init.set_signal(Some(signal));
        if !request.body().is_empty() {
            init.set_body(&js_sys::Uint8Array::from(request.body().as_ref()).into());
        }
        let url = request.uri().to_string();
        let fetch_request = web_sys::Request::new_with_str_and_init(&url, &init)
            .map_err(|cause| js_message(&cause))?;

        let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let value = JsFuture::from(global.fetch_with_request(&fetch_request))
            .await
            .map_err(|cause| js_message(&cause))?;
        let response: web_sys::Response = value.unchecked_into();
        let status = StatusCode::from_u16(response.status())
            .map_err(|_| format!("the response status {} is invalid", response.status()))?;
        let headers = header_map_from_js(&response.headers())?;
        let buffer = JsFuture::from(
            response
                .array_buffer()
                .map_err(|cause| js_message(&cause))?,
        )
        .await
        .map_err(|cause| js_message(&cause))?;
        let body = js_sys::Uint8Array::new(&buffer);
        if body.length() as usize > max_body_bytes {
            return Err(format!(
                "the response body is larger than {max_body_bytes} bytes"
            ));
        }

        let mut converted = Response::new(Bytes::from(body.to_vec()));
        *converted.status_mut() = status;
        *converted.headers_mut() = headers;
        Ok(converted)
    }
}

/// Builds the `fetch` request to `http://{authority}{path}`, or `https://` with `tls`,
/// with manual redirects so that the client receives the upstream's 3xx responses as
/// they are.
fn build_fetch_request(
    request: Request<WorkerBody>,
    target: &UpstreamTarget<'_>,
    signal: &web_sys::AbortSignal,
    body_failure: &BodyFailure,
) -> Result<web_sys::Request, JsValue> {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |path_and_query| path_and_query.as_str());
    let scheme = if target.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}{path}", target.authority);

    let init = web_sys::RequestInit::new();
    init.set_method(parts.method.as_str());
    init.set_headers(&headers_to_js(&parts.headers)?.into());
    init.set_redirect(web_sys::RequestRedirect::Manual);
    init.set_signal(Some(signal));
    if let Some(body) = body.into_js_observed(Some(body_failure.clone())) {
        init.set_body(&body);
    }
    web_sys::Request::new_with_str_and_init(&url, &init)
}

/// Aborts a `fetch` when dropped, unless disarmed once the response head arrived.
/// The core drops the send future when its deadline passes; without the abort, the
/// request would go on in the background.
struct AbortOnDrop(Option<web_sys::AbortController>);

impl AbortOnDrop {
    /// Creates the controller and returns it with the signal to pass to `fetch`.
    fn new() -> Result<(Self, web_sys::AbortSignal), JsValue> {
        let controller = web_sys::AbortController::new()?;
        let signal = controller.signal();
        Ok((Self(Some(controller)), signal))
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(controller) = self.0.take() {
            controller.abort();
        }
    }
}

/// Logs a failed upstream request once, with its cause. The endpoint address goes to
/// the log only, never to the client.
fn log_failure(target: &UpstreamTarget<'_>, error: &Error, cause: &str) {
    worker::console_warn!(
        "upstream request failed: upstream={:?} endpoint={:?} error={} cause={cause:?}",
        target.upstream,
        target.authority,
        error.kind().slug()
    );
}

/// Reads a request body that streams through WebAssembly (a limited or chained body)
/// into memory before it is sent.
///
/// workerd does not fail `fetch` when the stream of a request body errors: it ends the
/// upstream request early, so a body stopped at its size limit would reach the
/// upstream as if it were whole. Reading it first turns that limit into a 413 before
/// anything is sent.
// NOTE: a chained body has no limit of its own, so it is held in memory whole.
async fn buffer_request_body(request: Request<WorkerBody>) -> Result<Request<WorkerBody>, Error> {
    if !request.body().is_read_in_rust() {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map_err(gatehouse_core::body::request_read_error)?
        .to_bytes();
    Ok(Request::from_parts(parts, WorkerBody::from(bytes)))
}
