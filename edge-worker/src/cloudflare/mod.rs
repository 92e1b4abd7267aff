//! The Cloudflare Worker adapter: the `fetch` event handler, which converts the
//! runtime's request for the core and the core's response back, and the core's
//! platform traits on the Workers runtime.

mod body;
mod cache;
mod convert;
mod counters;
mod key_value;
mod platform;
mod websocket;

use std::cell::{OnceCell, RefCell};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use gatehouse_core::discovery::KeyValueDiscovery;
use gatehouse_core::platform::{Clock, Platform};
use gatehouse_core::respond::problem_response;
use gatehouse_core::websocket::Relay;
use gatehouse_core::{BackgroundTask, ConnectionInfo, Error, Gateway, forward};
use http::header::HeaderName;
use http::{HeaderMap, Response};
use js_sys::Reflect;
use wasm_bindgen::JsValue;
use worker::{Context, Env, console_error, console_log, event};

use body::WorkerBody;
use counters::WorkerCounters;
use key_value::WorkerKeyValue;
use platform::WorkerPlatform;

use crate::embedded::{CONFIG_VARIABLE, build_gateway};

/// Header in which Cloudflare passes the address of the client that connected.
const CONNECTING_IP_HEADER: &str = "cf-connecting-ip";

/// Header that carries request ids on problem responses made before a gateway exists.
/// It is the default of the `request_id_header` setting.
const DEFAULT_REQUEST_ID_HEADER: &str = "x-request-id";

/// The gateway and platform of one isolate, built on its first request and kept for
/// the next ones.
struct Isolate {
    /// The gateway, or the error that explains why the config override is invalid.
    /// `key_value` discovery replaces the gateway when an upstream's endpoints
    /// change; requests already running keep the one they started with.
    gateway: Result<RefCell<Rc<Gateway>>, Error>,
    platform: WorkerPlatform,
    discovery: KeyValueDiscovery,
}

thread_local! {
    // An isolate runs on one thread, so this is one value per isolate.
    static ISOLATE: OnceCell<Rc<Isolate>> = const { OnceCell::new() };
}

/// Returns the isolate's gateway and platform, building them on the first request.
/// The environment is the same for every request of a deployment, so reading the
/// override once is enough.
fn isolate(env: &Env) -> Rc<Isolate> {
    ISOLATE.with(|cell| {
        Rc::clone(cell.get_or_init(|| {
            let gateway = gateway_from_env(env);
            let counters = match &gateway {
                Ok(gateway) => WorkerCounters::from_env(env, &gateway.config().stores),
                Err(_) => WorkerCounters::default(),
            };
            let platform =
                WorkerPlatform::new(key_value_from_env(env, &gateway), counters, env.clone());
            Rc::new(Isolate {
                gateway: gateway.map(|gateway| RefCell::new(Rc::new(gateway))),
                platform,
                discovery: KeyValueDiscovery::new(),
            })
        }))
    })
}

/// Returns the Workers KV namespace bound under the config's
/// `key_value.cloudflare_binding`, logging once per isolate when it is missing.
fn key_value_from_env(env: &Env, gateway: &Result<Gateway, Error>) -> Option<WorkerKeyValue> {
    let binding = match gateway {
        Ok(gateway) => gateway.config().key_value.cloudflare_binding.clone(),
        Err(_) => return None,
    };
    let key_value = WorkerKeyValue::from_env(env, &binding);
    if key_value.is_none() {
        console_log!(
            "gatehouse: no KV namespace is bound as {binding}; policies that read the \
             key-value store answer 501"
        );
    }
    key_value
}

/// Builds the gateway from the `GATEHOUSE_CONFIG` variable when it is set, or else
/// from the config embedded at build time. Problems of an invalid override are logged
/// here, once per isolate, and sent in every response.
fn gateway_from_env(env: &Env) -> Result<Gateway, Error> {
    let value = Reflect::get(env.as_ref(), &JsValue::from_str(CONFIG_VARIABLE))
        .unwrap_or(JsValue::UNDEFINED);
    let override_toml = if value.is_undefined() {
        None
    } else if let Some(text) = value.as_string() {
        Some(text)
    } else {
        let detail = format!("the {CONFIG_VARIABLE} variable must be a string of TOML");
        console_error!("gatehouse: {detail}");
        return Err(Error::internal(detail));
    };
    build_gateway(override_toml.as_deref()).map_err(|errors| {
        console_error!("gatehouse: {CONFIG_VARIABLE}: {errors}");
        let problems: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        Error::internal(format!(
            "the {CONFIG_VARIABLE} variable is an invalid config: {}",
            problems.join("; ")
        ))
    })
}

/// Handles every request of the Worker.
#[event(fetch)]
async fn fetch(
    request: web_sys::Request,
    env: Env,
    context: Context,
) -> worker::Result<web_sys::Response> {
    let isolate = isolate(&env);
    let response = match &isolate.gateway {
        Ok(cell) => {
            let gateway = discover(&isolate, cell).await;
            let (mut response, background, request_id) =
                serve(&gateway, &isolate.platform, &request).await;
            if let Some(relay) = response.extensions_mut().remove::<Relay>() {
                match websocket::respond(response, relay, request_id.clone()) {
                    Ok(accepted) => return Ok(accepted),
                    Err(error) => {
                        console_error!(
                            "gatehouse: the WebSocket relay could not start: \
                             request_id={request_id} error={error}"
                        );
                        let header = HeaderName::try_from(
                            gateway.config().server.request_id_header.as_str(),
                        )
                        .unwrap_or(HeaderName::from_static(DEFAULT_REQUEST_ID_HEADER));
                        response = problem_response(&error, &header, &request_id);
                    }
                }
            }
            if let Some(task) = background {
                // `waitUntil` keeps the isolate running the revalidation after the
                // response is sent.
                let isolate = Rc::clone(&isolate);
                context.wait_until(async move {
                    gateway.run_background(task, &isolate.platform).await;
                });
            }
            response
        }
        Err(error) => early_problem(
            error,
            &isolate.platform,
            request
                .headers()
                .get(DEFAULT_REQUEST_ID_HEADER)
                .ok()
                .flatten(),
        ),
    };
    match convert::response_to_js(response) {
        Ok(response) => Ok(response),
        Err(cause) => {
            console_error!("gatehouse: the response could not be converted: {cause:?}");
            let error = Error::internal("the gateway could not send the response");
            let problem = early_problem(&error, &isolate.platform, None);
            Ok(convert::response_to_js(problem)?)
        }
    }
}

/// Reads the `key_value` discovery sources that are due and returns the gateway for
/// this request, swapping in a new one when an upstream's endpoints changed.
async fn discover(isolate: &Isolate, cell: &RefCell<Rc<Gateway>>) -> Rc<Gateway> {
    let current = Rc::clone(&cell.borrow());
    let Some(key_value) = isolate.platform.key_value() else {
        return current;
    };
    let now = isolate.platform.clock().monotonic();
    let (next, reads) = isolate.discovery.refresh(&current, key_value, now).await;
    for (upstream, read) in reads {
        match read.log_line(&upstream) {
            Some(line) if read.is_failure() => console_error!("{line}"),
            Some(line) => console_log!("{line}"),
            None => {}
        }
    }
    match next {
        Some(next) => {
            let next = Rc::new(next);
            *cell.borrow_mut() = Rc::clone(&next);
            next
        }
        None => current,
    }
}

/// Runs one request through the gateway and logs its access record. Returns the
/// response, the background task to run after it and the request id.
async fn serve(
    gateway: &Gateway,
    platform: &WorkerPlatform,
    request: &web_sys::Request,
) -> (Response<WorkerBody>, Option<BackgroundTask>, String) {
    platform.record_location(convert::colo_of(request));
    let incoming = match convert::request_from_js(request) {
        Ok(incoming) => incoming,
        Err(error) => {
            let response = early_problem(&error, platform, None);
            return (response, None, String::new());
        }
    };
    let connection = ConnectionInfo {
        peer: connecting_ip(incoming.request.headers()),
        secure: incoming.secure,
    };
    let handled = gateway
        .handle(incoming.request, &connection, platform)
        .await;
    match serde_json::to_string(&handled.access) {
        Ok(line) => console_log!("{line}"),
        Err(error) => console_error!("gatehouse: the access record could not be written: {error}"),
    }
    (
        handled.response,
        handled.background,
        handled.access.request_id,
    )
}

/// Returns the client address from `CF-Connecting-IP`.
///
/// Cloudflare sets the header on every request it delivers, so it is missing only
/// under a local runtime, where the client is on the same machine: 127.0.0.1 then.
fn connecting_ip(headers: &HeaderMap) -> IpAddr {
    headers
        .get(CONNECTING_IP_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Builds the problem response for a request that failed before the gateway could
/// handle it, with the client's request id when given or a new one.
fn early_problem(
    error: &Error,
    platform: &WorkerPlatform,
    request_id: Option<String>,
) -> Response<WorkerBody> {
    let request_id = request_id
        .and_then(|id| {
            let value = http::HeaderValue::from_str(&id).ok()?;
            forward::valid_request_id(&value).map(str::to_owned)
        })
        .unwrap_or_else(|| forward::new_request_id(platform.random_u64(), platform.random_u64()));
    let header = HeaderName::from_static(DEFAULT_REQUEST_ID_HEADER);
    problem_response(error, &header, &request_id)
}
