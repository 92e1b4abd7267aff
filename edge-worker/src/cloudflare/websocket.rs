//! WebSocket relaying on the Workers runtime.
//!
//! The core routes, authenticates and rate-limits a handshake like any request and
//! forwards it with `Upgrade: websocket`. workerd's `fetch` then opens the upstream
//! WebSocket itself and returns a `101` response whose `webSocket` property is the
//! upstream end. [`UpstreamSocket`] carries that end through the core, and
//! [`respond`] creates a `WebSocketPair`, relays messages between the pair's server
//! end and the upstream, and hands the client end to the runtime in the `101`
//! response.
//!
//! workerd terminates both WebSocket connections, so the relay passes messages, not
//! bytes: each text or binary message and each close code and reason is sent again on
//! the other connection. Pings and pongs stay on their own connection, where workerd
//! replies to pings.

use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;
use futures::future::{Either, select};
use gatehouse_core::Error;
use gatehouse_core::websocket::{GOING_AWAY, Relay, forwarded_close};
use http::Response;
use http::header::{
    CONNECTION, HeaderMap, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, UPGRADE,
};
use js_sys::Reflect;
use wasm_bindgen::{JsCast, JsValue};
use worker::{Delay, WebSocket, WebSocketPair, WebsocketEvent, console_warn};

use super::body::{WorkerBody, js_message};
use super::convert::headers_to_js;

/// Close code 1011 (Internal Error, RFC 6455 section 7.4.1), sent to the client when
/// the relay cannot start after its `101`.
const INTERNAL_ERROR: u16 = 1011;

/// The upstream end of a WebSocket that workerd's `fetch` opened, in the extensions of
/// the upstream's `101` response.
#[derive(Debug, Clone)]
pub(super) struct UpstreamSocket(pub WebSocket);

/// Returns the `webSocket` property of a `fetch` response, which workerd sets when the
/// upstream accepted a WebSocket upgrade.
pub(super) fn upstream_socket(response: &web_sys::Response) -> Option<UpstreamSocket> {
    let value = Reflect::get(response, &JsValue::from_str("webSocket")).ok()?;
    if value.is_null() || value.is_undefined() {
        return None;
    }
    Some(UpstreamSocket(WebSocket::from(
        value.unchecked_into::<web_sys::WebSocket>(),
    )))
}

/// Turns the gateway's `101` response to a WebSocket handshake into the response the
/// `fetch` handler returns: it accepts the upstream socket, starts the relay and
/// returns the client end of a new `WebSocketPair` in a `101` response.
///
/// Fails when the response lacks the upstream socket or the runtime rejects a step. The
/// caller then sends a problem response, because the client has not received its `101`.
pub(super) fn respond(
    mut response: Response<WorkerBody>,
    relay: Relay,
    request_id: String,
) -> Result<web_sys::Response, Error> {
    let Some(UpstreamSocket(upstream)) = response.extensions_mut().remove::<UpstreamSocket>()
    else {
        return Err(Error::bad_gateway(
            "the upstream accepted the WebSocket upgrade, but the runtime returned no \
             WebSocket for it",
        ));
    };
    let pair = WebSocketPair::new().map_err(runtime_error)?;
    let server = pair.server;
    let init = response_init(response.headers(), &pair.client).map_err(|cause| {
        Error::internal("the WebSocket handshake response could not be built")
            .with_cause(js_message(&cause))
    })?;
    let accepted =
        web_sys::Response::new_with_opt_readable_stream_and_init(None, &init).map_err(|cause| {
            Error::internal("the WebSocket handshake response could not be built")
                .with_cause(js_message(&cause))
        })?;
    // The relay runs on after the handler returned: workerd keeps the request's
    // context alive while its WebSockets are open. It listens before it accepts, and
    // workerd delivers no message before `accept`, so none is lost.
    wasm_bindgen_futures::spawn_local(async move {
        run(server, upstream, relay.idle_timeout, &request_id).await;
    });
    Ok(accepted)
}

/// Builds the `ResponseInit` of the `101`: the gateway's response headers without those
/// of the upstream's own handshake, which workerd writes for the client's connection,
/// and the client end of the pair.
fn response_init(
    headers: &HeaderMap,
    client: &WebSocket,
) -> Result<web_sys::ResponseInit, JsValue> {
    let mut headers = headers.clone();
    for name in [
        CONNECTION,
        UPGRADE,
        SEC_WEBSOCKET_ACCEPT,
        SEC_WEBSOCKET_EXTENSIONS,
    ] {
        headers.remove(name);
    }
    let init = web_sys::ResponseInit::new();
    init.set_status(101);
    init.set_headers(&headers_to_js(&headers)?.into());
    Reflect::set(&init, &JsValue::from_str("webSocket"), client.as_ref())?;
    Ok(init)
}

/// Accepts `socket` for relaying: in half-open mode, and with binary messages as
/// `ArrayBuffer`s.
///
/// From compatibility date 2026-04-07 (flag `web_socket_auto_reply_to_close`), workerd
/// replies to a close frame itself unless `accept` gets `{ allowHalfOpen: true }`. The
/// relay must answer with the other side's close instead. From 2026-03-17 (flag
/// `websocket_standard_binary_type`), binary messages arrive as `Blob`s unless
/// `binaryType` is `"arraybuffer"`, and the relay reads them as bytes.
fn accept_for_relay(socket: &WebSocket) -> Result<(), JsValue> {
    let socket: &web_sys::WebSocket = socket.as_ref();
    Reflect::set(
        socket,
        &JsValue::from_str("binaryType"),
        &JsValue::from_str("arraybuffer"),
    )?;
    let options = js_sys::Object::new();
    Reflect::set(
        &options,
        &JsValue::from_str("allowHalfOpen"),
        &JsValue::TRUE,
    )?;
    let accept: js_sys::Function =
        Reflect::get(socket, &JsValue::from_str("accept"))?.dyn_into()?;
    accept.call1(socket, &options)?;
    Ok(())
}

fn runtime_error(cause: worker::Error) -> Error {
    Error::internal("the runtime could not create a WebSocketPair").with_cause(cause.to_string())
}

/// One of the two WebSocket connections the relay joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Upstream => "upstream",
        }
    }
}

/// Relays messages between `client` and `upstream` until both have closed, or until
/// neither sent a message for `idle_timeout`; then it closes both with 1001.
/// Failures are logged, because the client already received its `101`.
async fn run(client: WebSocket, upstream: WebSocket, idle_timeout: Duration, request_id: &str) {
    let listened = client.events().and_then(|client_events| {
        let upstream_events = upstream.events()?;
        Ok((client_events, upstream_events))
    });
    let (client_events, upstream_events) = match listened {
        Ok(streams) => streams,
        Err(error) => {
            console_warn!(
                "WebSocket relay could not listen: request_id={request_id} error={error}"
            );
            return;
        }
    };
    if let Err(cause) = accept_for_relay(&client).and_then(|()| accept_for_relay(&upstream)) {
        console_warn!(
            "WebSocket relay could not accept: request_id={request_id} error={}",
            js_message(&cause)
        );
        let _ = client.close(Some(INTERNAL_ERROR), Some("the gateway could not relay"));
        let _ = upstream.close(Some(GOING_AWAY), Some("the gateway could not relay"));
        return;
    }

    let mut events = futures::stream::select(
        client_events.map(|event| (Side::Client, event)),
        upstream_events.map(|event| (Side::Upstream, event)),
    );
    let idle_millis = idle_timeout.as_secs_f64() * 1000.0;
    let mut last_activity = js_sys::Date::now();
    // One timer at a time: when it fires early because messages passed meanwhile, it
    // is set again for the rest of the idle timeout, so busy relays do not create a
    // timer per message.
    let mut timer = Delay::from(idle_timeout);
    loop {
        let next = pin!(events.next());
        match select(next, &mut timer).await {
            Either::Left((Some((from, event)), _)) => {
                last_activity = js_sys::Date::now();
                let to = match from {
                    Side::Client => &upstream,
                    Side::Upstream => &client,
                };
                forward(from, event, to, request_id);
            }
            // Both sides closed, and their event streams ended.
            Either::Left((None, _)) => return,
            Either::Right(((), _)) => {
                let quiet = js_sys::Date::now() - last_activity;
                if quiet >= idle_millis {
                    let _ = client.close(Some(GOING_AWAY), Some("idle timeout"));
                    let _ = upstream.close(Some(GOING_AWAY), Some("idle timeout"));
                    return;
                }
                timer = Delay::from(Duration::from_secs_f64(
                    (idle_millis - quiet).max(1.0) / 1000.0,
                ));
            }
        }
    }
}

/// Sends a message or a close received from `from` on to `to`. A failed send means
/// that `to` is closing, and its own close event ends its part of the relay.
fn forward(from: Side, event: worker::Result<WebsocketEvent>, to: &WebSocket, request_id: &str) {
    let sent = match event {
        Ok(WebsocketEvent::Message(message)) => {
            if let Some(text) = message.text() {
                to.send_with_str(text)
            } else if let Some(bytes) = message.bytes() {
                to.send_with_bytes(bytes)
            } else {
                Ok(())
            }
        }
        Ok(WebsocketEvent::Close(close)) => {
            // A failed close means that `to` closed already: it replied on its own, or
            // its close frame crossed this one.
            let _ = close_like(to, close.code(), &close.reason());
            Ok(())
        }
        // A close event that follows the error passes the close on. Without one, the
        // idle timeout ends the relay.
        Err(error) => {
            console_warn!(
                "WebSocket relay error: request_id={request_id} side={} error={error}",
                from.name()
            );
            Ok(())
        }
    };
    if let Err(error) = sent {
        console_warn!(
            "WebSocket relay could not forward: request_id={request_id} from={} error={error}",
            from.name()
        );
    }
}

/// Closes `socket` with the code and reason that the other side closed with, as far as
/// a close frame can carry them (see [`forwarded_close`]).
fn close_like(socket: &WebSocket, code: u16, reason: &str) -> worker::Result<()> {
    match forwarded_close(code, reason) {
        (Some(code), reason) => socket.close(Some(code), Some(reason)),
        (None, _) => socket.close::<&str>(None, None),
    }
}
