//! Aggregate dispatch: a route with `dispatch = "aggregate"` sends several upstream
//! calls, at most `max_in_flight` at once and each through the same balancer,
//! breakers, retries and timeouts as a proxied request, and responds with their JSON
//! bodies merged into one object.
//!
//! A call whose path uses a field of another call starts once that call finished.
//! A failed `required` call fails the whole response with 502 and cancels the calls
//! still in flight; a failed `optional` call leaves `null` under its key and an entry
//! in the `errors` member.

mod compile;
mod merge;
#[cfg(test)]
mod tests;

use std::pin::pin;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::{Either, select};
use futures::stream::FuturesUnordered;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use serde_json::{Value, json};

use super::dispatch::{self, Exchange, Outgoing};
use super::{AccessRecord, Gateway, TraceRecord};
use crate::body::{ReadBody, read_up_to};
use crate::config::{CallMerge, OnCallError, TimeoutsConfig};
use crate::error::Error;
use crate::platform::{Clock, Platform};
use crate::respond::PROBLEM_TYPE_PREFIX;
use crate::route::CallTemplate;
use crate::transform;
pub(crate) use compile::{check_unused_route_keys, compile_aggregate};
use merge::{MergePart, merge_parts};

/// The compiled `aggregate` table of a route.
#[derive(Debug)]
pub(crate) struct CompiledAggregate {
    calls: Vec<CompiledCall>,
    max_in_flight: usize,
    max_body_bytes: usize,
}

/// One compiled call of an aggregate route.
#[derive(Debug)]
struct CompiledCall {
    name: String,
    /// The index of the upstream in the compiled upstreams.
    upstream: usize,
    upstream_name: String,
    method: Method,
    template: CallTemplate,
    timeouts: TimeoutsConfig,
    on_error: OnCallError,
    merge: CallMerge,
    key: String,
    /// Indexes of the calls whose fields the path uses; this call waits for them.
    uses: Vec<usize>,
}

/// The failure of a call: the error and the upstream's status.
#[derive(Debug)]
struct CallFailure {
    error: Error,
    /// The upstream's status, when it responded with one outside 200 to 299.
    status: Option<u16>,
}

impl From<Error> for CallFailure {
    fn from(error: Error) -> Self {
        Self {
            error,
            status: None,
        }
    }
}

type CallResult = Result<Value, CallFailure>;

/// Request headers that are not sent with calls: calls have no body, must not be
/// conditional or partial, and must come back uncompressed so they can be parsed.
const DROPPED_HEADERS: [HeaderName; 11] = [
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
    header::EXPECT,
    header::ACCEPT_ENCODING,
    header::RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_RANGE,
];

/// The state shared by every call of one client request.
struct CallContext<'a, P: Platform> {
    gateway: &'a Gateway,
    aggregate: &'a CompiledAggregate,
    outgoing: Outgoing<'a>,
    platform: &'a P,
    headers: HeaderMap,
    version: Version,
}

/// Sends the calls of `aggregate` for `request` and returns the merged response.
pub(crate) async fn respond<P: Platform>(
    gateway: &Gateway,
    aggregate: &CompiledAggregate,
    request: Request<P::Body>,
    outgoing: Outgoing<'_>,
    platform: &P,
    access: &mut AccessRecord,
) -> Result<Response<P::Body>, Error> {
    let (parts, _body) = request.into_parts();
    let mut headers = parts.headers;
    for name in &DROPPED_HEADERS {
        headers.remove(name);
    }
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let context = CallContext {
        gateway,
        aggregate,
        outgoing,
        platform,
        headers,
        version: parts.version,
    };

    let results = run_calls(&context, parts.uri.query(), access).await?;
    let merged = merge_results(aggregate, results);
    let body = serde_json::to_vec(&merged)
        .map_err(|error| Error::internal("failed to encode the merged body").with_cause(error))?;
    let mut response = Response::new(P::Body::from(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let route = outgoing.route;
    for changes in &route.policies.response_changes {
        changes.apply(response.headers_mut());
    }
    if route.policies.response_body_changes.is_empty() {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let body = transform::rewrite_json_body(
        platform,
        &mut parts.headers,
        body,
        &route.policies.response_body_changes,
        transform::BodyDirection::Response,
    )
    .await?;
    Ok(Response::from_parts(parts, body))
}

/// Runs every call, starting each once the calls it uses finished and a slot of
/// `max_in_flight` is free. Returns the result of each call in config order, or the
/// 502 error of the first required call that failed.
async fn run_calls<P: Platform>(
    context: &CallContext<'_, P>,
    query: Option<&str>,
    access: &mut AccessRecord,
) -> Result<Vec<CallResult>, Error> {
    let calls = &context.aggregate.calls;
    let mut results: Vec<Option<CallResult>> = calls.iter().map(|_| None).collect();
    let mut started = vec![false; calls.len()];
    let mut running = FuturesUnordered::new();
    loop {
        // Starting a call can settle others at once (a failed dependency or an
        // invalid field), which may make more calls ready, so repeat until none is.
        loop {
            let mut progressed = false;
            for (index, call) in calls.iter().enumerate() {
                if started[index] || running.len() >= context.aggregate.max_in_flight {
                    continue;
                }
                if !call.uses.iter().all(|used| results[*used].is_some()) {
                    continue;
                }
                started[index] = true;
                progressed = true;
                match render_target(context, call, query, &results) {
                    Ok(target) => {
                        let trace = access.trace.as_ref().map(|record| TraceRecord {
                            context: record.context.clone(),
                            attempts: Vec::new(),
                        });
                        running.push(send_call(context, index, target, trace));
                    }
                    Err(failure) => results[index] = Some(Err(check_required(call, failure)?)),
                }
            }
            if !progressed {
                break;
            }
        }

        let Some((index, result, record)) = running.next().await else {
            break;
        };
        absorb(access, record);
        let call = &calls[index];
        results[index] = Some(match result {
            Ok(body) => Ok(body),
            Err(failure) => {
                let failure = check_required(call, failure)?;
                tracing::debug!(
                    request_id = %context.outgoing.request_id,
                    route = %context.outgoing.route.name,
                    call = %call.name,
                    upstream = %call.upstream_name,
                    error = %failure.error.detail(),
                    "optional aggregate call failed"
                );
                Err(failure)
            }
        });
    }
    results
        .into_iter()
        .enumerate()
        .map(|(index, result)| {
            result.ok_or_else(|| {
                Error::internal(format!(
                    "aggregate call {:?} never became ready",
                    calls[index].name
                ))
            })
        })
        .collect()
}

/// Returns the failure of an optional call, or the 502 error that a failed required
/// call makes of the whole response.
fn check_required(call: &CompiledCall, failure: CallFailure) -> Result<CallFailure, Error> {
    match call.on_error {
        OnCallError::Optional => Ok(failure),
        OnCallError::Required => Err(Error::bad_gateway(format!(
            "required aggregate call {:?} to upstream {:?} failed: {}",
            call.name,
            call.upstream_name,
            failure.error.detail()
        ))),
    }
}

/// Builds the request target of `call`, or the failure when a call it uses failed or
/// lacks a field its path needs.
fn render_target<P: Platform>(
    context: &CallContext<'_, P>,
    call: &CompiledCall,
    query: Option<&str>,
    results: &[Option<CallResult>],
) -> Result<String, CallFailure> {
    let calls = &context.aggregate.calls;
    if let Some(failed) = call
        .uses
        .iter()
        .find(|used| matches!(results[**used], Some(Err(_))))
    {
        return Err(Error::bad_gateway(format!(
            "call {:?}, whose response its path uses, failed",
            calls[*failed].name
        ))
        .into());
    }
    let field = |name: &str, pointer: &str| -> Result<String, String> {
        let body = calls
            .iter()
            .position(|call| call.name == name)
            .and_then(|index| results[index].as_ref())
            .and_then(|result| result.as_ref().ok());
        let Some(body) = body else {
            return Err(format!("call {name:?} has no response body"));
        };
        field_text(body, name, pointer)
    };
    call.template
        .render(context.outgoing.path, query, &field)
        .map_err(|message| Error::bad_gateway(message).into())
}

/// Returns the text of the field at `pointer` in `body` to insert into a path.
fn field_text(body: &Value, call: &str, pointer: &str) -> Result<String, String> {
    match body.pointer(pointer) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Number(number)) => Ok(number.to_string()),
        Some(Value::Bool(flag)) => Ok(flag.to_string()),
        Some(Value::Null) => Err(format!("field {pointer:?} of call {call:?} is null")),
        Some(_) => Err(format!(
            "field {pointer:?} of call {call:?} is an object or array, not a string, number or boolean"
        )),
        None => Err(format!(
            "the response of call {call:?} has no field {pointer:?}"
        )),
    }
}

/// Sends call `index` to `target` within the call's total timeout, which also bounds
/// reading the body. Returns the index, the result and the call's access record.
async fn send_call<P: Platform>(
    context: &CallContext<'_, P>,
    index: usize,
    target: String,
    trace: Option<TraceRecord>,
) -> (usize, CallResult, AccessRecord) {
    let call = &context.aggregate.calls[index];
    let mut access = AccessRecord {
        trace,
        ..AccessRecord::default()
    };
    let deadline = call.timeouts.total.get();
    let result = {
        let work = pin!(exchange_call(context, call, &target, &mut access));
        let timer = pin!(context.platform.clock().sleep(deadline));
        match select(work, timer).await {
            Either::Left((result, _)) => result,
            Either::Right(((), _)) => Err(Error::gateway_timeout(format!(
                "call {:?} to upstream {:?} did not finish within {} ms",
                call.name,
                call.upstream_name,
                deadline.as_millis()
            ))
            .into()),
        }
    };
    (index, result, access)
}

async fn exchange_call<P: Platform>(
    context: &CallContext<'_, P>,
    call: &CompiledCall,
    target: &str,
    access: &mut AccessRecord,
) -> CallResult {
    let gateway = context.gateway;
    let uri = Uri::try_from(target).map_err(|error| {
        Error::bad_gateway(format!("call {:?} has an invalid target", call.name)).with_cause(error)
    })?;
    let path = uri.path().to_owned();
    let mut request = Request::new(P::Body::from(Bytes::new()));
    *request.method_mut() = call.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = context.version;
    *request.headers_mut() = context.headers.clone();

    let outgoing = Outgoing {
        upstream_path: &path,
        ..context.outgoing
    };
    let upstream = &gateway.compiled.upstreams[call.upstream];
    let hash = dispatch::hash_key(upstream, &request, &outgoing);
    let request = dispatch::upstream_request(gateway, request, upstream, &outgoing)?;
    let exchange = Exchange {
        upstream: call.upstream,
        timeouts: call.timeouts,
        grpc_deadline: None,
        hash,
    };
    let response = dispatch::send(gateway, request, &exchange, context.platform, access).await?;

    let status = response.status();
    if !status.is_success() {
        return Err(CallFailure {
            error: Error::bad_gateway(format!(
                "upstream {:?} answered call {:?} with status {}",
                call.upstream_name,
                call.name,
                status.as_u16()
            )),
            status: Some(status.as_u16()),
        });
    }
    read_json(response.into_body(), call, context.aggregate.max_body_bytes).await
}

async fn read_json<B>(body: B, call: &CompiledCall, max_bytes: usize) -> CallResult
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<crate::error::BoxError>,
{
    let bytes = match read_up_to(body, max_bytes).await {
        Ok(ReadBody::Complete(bytes)) => bytes,
        Ok(ReadBody::Partial { .. }) => {
            return Err(Error::bad_gateway(format!(
                "the response body of call {:?} is larger than max_body_bytes ({max_bytes})",
                call.name
            ))
            .into());
        }
        Err(error) => {
            return Err(Error::bad_gateway(format!(
                "the response body of call {:?} broke off",
                call.name
            ))
            .with_cause(error)
            .into());
        }
    };
    let body: Value = serde_json::from_slice(&bytes).map_err(|error| {
        Error::bad_gateway(format!(
            "the response body of call {:?} is not valid JSON: {error}",
            call.name
        ))
    })?;
    if call.merge == CallMerge::Deep && !body.is_object() {
        return Err(Error::bad_gateway(format!(
            "call {:?} has merge = \"deep\" but its response body is not a JSON object",
            call.name
        ))
        .into());
    }
    Ok(body)
}

/// Adds what a call recorded to the request's access record: its attempt spans and
/// retries.
// NOTE: a call's upstream, endpoint and latency are dropped here, because the record
// has room for one upstream, so per-upstream metrics do not count aggregate calls.
fn absorb(access: &mut AccessRecord, call: AccessRecord) {
    access.retries += call.retries;
    if let (Some(record), Some(call_record)) = (&mut access.trace, call.trace) {
        record.attempts.extend(call_record.attempts);
    }
}

fn merge_results(aggregate: &CompiledAggregate, results: Vec<CallResult>) -> Value {
    let mut errors = Vec::new();
    let mut parts = Vec::with_capacity(results.len());
    for (call, result) in aggregate.calls.iter().zip(results) {
        let body = match result {
            Ok(body) => Some(body),
            Err(failure) => {
                errors.push(error_entry(call, &failure));
                None
            }
        };
        parts.push(MergePart {
            merge: call.merge,
            key: &call.key,
            body,
        });
    }
    merge_parts(parts, errors)
}

/// Describes a failed optional call in the `errors` member, with the problem type the
/// failure would have as a response of its own.
fn error_entry(call: &CompiledCall, failure: &CallFailure) -> Value {
    json!({
        "call": call.name,
        "upstream": call.upstream_name,
        "status": failure.status,
        "type": format!("{PROBLEM_TYPE_PREFIX}{}", failure.error.kind().slug()),
        "detail": failure.error.detail(),
    })
}
