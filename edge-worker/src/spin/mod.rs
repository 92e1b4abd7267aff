//! The Spin component adapter: a `wasi:http/incoming-handler@0.2.0` component built
//! with spin-sdk 5.2 for `wasm32-wasip2`.
//!
//! Each request is converted to `http` types, handled by the core and converted back.
//! The gateway is built once per component instance, from the `gatehouse_config` Spin
//! variable when it is set and not empty, or else from the config embedded at build
//! time. Spin creates a new instance for every request, so state that the core keeps
//! in memory (balancer positions, passive health) lasts for one request only. Rate
//! limits that must hold across requests use a `redis` store, which the component
//! reaches through Spin's outbound Redis. `key_value` service discovery reads its
//! key on every request for the same reason.
//!
//! NOTE: round robin therefore sends every request to the first endpoint on Spin, and
//! least outstanding and P2C choose without knowing the other requests.
//! `gatehouse check --target spin` warns about such upstreams.

mod cache;
mod convert;
mod counters;
mod key_value;
mod platform;

use std::sync::OnceLock;

use gatehouse_core::config::ConfigErrors;
use gatehouse_core::discovery::KeyValueDiscovery;
use gatehouse_core::platform::{Clock, Platform};
use gatehouse_core::respond::problem_response;
use gatehouse_core::{BackgroundTask, ConnectionInfo, Error, ErrorKind, ErrorSource, Gateway};
use http::HeaderName;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

use crate::embedded;
use convert::Incoming;
use counters::SpinCounters;
use platform::{SpinBody, SpinPlatform};

/// Name of the Spin variable that replaces the embedded config with TOML text. Spin
/// variable names are lowercase, so this is `GATEHOUSE_CONFIG` in lowercase.
pub const CONFIG_VARIABLE: &str = "gatehouse_config";

/// Header of problem responses sent before a gateway exists, when the config override
/// is invalid. It is the default of `server.request_id_header`.
const FALLBACK_REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The gateway of this instance, or the message explaining why none could be built.
static GATEWAY: OnceLock<Result<Gateway, String>> = OnceLock::new();

#[http_component]
async fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
    let configured = match GATEWAY.get_or_init(build_gateway) {
        Ok(gateway) => gateway,
        Err(detail) => {
            let platform = SpinPlatform::new();
            let error = Error::new(ErrorKind::Internal, ErrorSource::Config, detail.clone());
            let request_id = platform.new_request_id();
            let response = problem_response(&error, &FALLBACK_REQUEST_ID_HEADER, &request_id);
            convert::send_response(response, response_out).await;
            return;
        }
    };
    let config = configured.config();
    let platform = SpinPlatform::with_key_value(&config.key_value.spin_store)
        .with_response_cache(config.key_value.spin_cache_store());
    let counters = SpinCounters::from_config(&config.stores, |name| platform.secret(name));
    let platform = platform.with_counters(counters);

    let discovered = discover(configured, &platform).await;
    let gateway = discovered.as_ref().unwrap_or(configured);
    let (response, background) = handle_with(gateway, request, &platform).await;
    convert::send_response(response, response_out).await;
    // The instance lives until this handler returns, so work after the response,
    // such as a cache revalidation, runs here.
    if let Some(task) = background {
        gateway.run_background(task, &platform).await;
    }
}

/// Reads the `key_value` discovery sources and returns the gateway rebuilt with the
/// discovered endpoints, or `None` when every upstream keeps its configured ones.
///
/// A new instance serves every request, so every key is read on every request, and
/// the gateway is rebuilt whenever an entry differs from the config. Failed reads are
/// logged and keep the configured endpoints. Changes are not logged, because they
/// would repeat on every request.
async fn discover(gateway: &Gateway, platform: &SpinPlatform) -> Option<Gateway> {
    let key_value = platform.key_value()?;
    let now = platform.clock().monotonic();
    let (next, reads) = KeyValueDiscovery::new()
        .refresh(gateway, key_value, now)
        .await;
    for (upstream, read) in reads {
        if let Some(line) = read.log_line(&upstream)
            && read.is_failure()
        {
            eprintln!("{line}");
        }
    }
    next
}

/// Converts the request, runs it through the gateway and logs what happened.
async fn handle_with(
    gateway: &Gateway,
    request: IncomingRequest,
    platform: &SpinPlatform,
) -> (http::Response<SpinBody>, Option<BackgroundTask>) {
    let max_body_bytes = gateway.config().server.max_body_bytes;
    let Incoming {
        request,
        peer,
        secure,
    } = match convert::incoming(request, max_body_bytes).await {
        Ok(incoming) => incoming,
        Err(error) => {
            let header = gateway.config().server.request_id_header.as_str();
            let header = HeaderName::try_from(header).unwrap_or(FALLBACK_REQUEST_ID_HEADER);
            let response = problem_response(&error, &header, &platform.new_request_id());
            return (response, None);
        }
    };
    let connection = ConnectionInfo { peer, secure };
    let handled = gateway.handle(request, &connection, platform).await;
    if let Some(slug) = handled.access.error {
        // Spin components log to standard error. One line per failed request, without
        // the query string or header values, which may carry credentials.
        eprintln!(
            "gatehouse: {} {} {} -> {} ({slug}), request id {}",
            handled.access.method,
            handled.access.host,
            handled.access.path,
            handled.access.status,
            handled.access.request_id
        );
    }
    (handled.response, handled.background)
}

/// Builds the gateway from the config variable when it is set and not empty, or else
/// from the embedded config.
fn build_gateway() -> Result<Gateway, String> {
    let override_text = match spin_sdk::variables::get(CONFIG_VARIABLE) {
        Ok(text) if !text.trim().is_empty() => Some(text),
        Ok(_) | Err(spin_sdk::variables::Error::Undefined(_)) => None,
        Err(error) => {
            return Err(format!(
                "failed to read the Spin variable {CONFIG_VARIABLE}: {error}"
            ));
        }
    };
    embedded::build_gateway(override_text.as_deref())
        .map_err(|errors| describe_override_errors(&errors))
}

/// Lists every problem of an invalid override on one line, for the problem detail.
fn describe_override_errors(errors: &ConfigErrors) -> String {
    let problems: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    let message = format!(
        "the config in the Spin variable {CONFIG_VARIABLE} is invalid ({} problem{}): {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.join("; ")
    );
    eprintln!("gatehouse: {message}");
    message
}
