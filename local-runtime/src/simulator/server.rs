//! The listeners of the simulated locations: each location serves its own ports, and
//! every request runs the core pipeline on that location's platform.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gatehouse_core::ConnectionInfo;
use gatehouse_core::policy::rate_limit::RATELIMIT;
use gatehouse_core::respond::problem_response;
use http::header::CONTENT_LENGTH;
use http::{HeaderName, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::limits::{CpuTimed, RequestBudget, body_too_large};
use super::platform::{Location, RequestPlatform};
use crate::access_log::AccessLogBody;
use crate::body::NativeBody;
use crate::server::{HEADER_READ_TIMEOUT, SHUTDOWN_GRACE};

/// One bound listener of one location.
#[derive(Debug)]
pub struct LocationListener {
    /// The location it serves.
    pub location: Arc<Location>,
    /// The listener's name in the config.
    pub name: String,
    /// The bound address.
    pub address: SocketAddr,
    /// The socket.
    pub listener: TcpListener,
}

/// Serves every listener until `stop` turns true, then waits up to
/// [`SHUTDOWN_GRACE`] for open connections to finish.
pub async fn serve(listeners: Vec<LocationListener>, mut stop: watch::Receiver<bool>) {
    let graceful = Arc::new(GracefulShutdown::new());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    let tasks: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(accept_loop(
                listener,
                Arc::clone(&builder),
                Arc::clone(&graceful),
                stop.clone(),
            ))
        })
        .collect();
    let _ = stop.wait_for(|stopped| *stopped).await;
    for task in tasks {
        if let Err(error) = task.await {
            tracing::error!(%error, "an accept loop of the simulator panicked");
        }
    }
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        tracing::error!("connections are still being accepted; shutting down without draining");
        return;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "connections still open after the shutdown grace period; closing them"
        );
    }
}

async fn accept_loop(
    bound: LocationListener,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let LocationListener {
        location,
        name,
        address,
        listener,
    } = bound;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Waiting avoids spinning while descriptors are exhausted.
                tracing::warn!(location = %location.name, listener = %name, %error, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer_ip = peer.ip().to_canonical();
        let location = Arc::clone(&location);
        let service = service_fn(move |request| {
            let location = Arc::clone(&location);
            async move { Ok::<_, Infallible>(handle(location, peer_ip, request).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    tracing::info!(location = %location.name, listener = %name, %address, "listener closed");
}

/// Runs one request through the location's gateway within the platform limits.
async fn handle(
    location: Arc<Location>,
    peer: IpAddr,
    request: Request<Incoming>,
) -> Response<AccessLogBody> {
    let started = Instant::now();
    let stats = Arc::clone(&location.stats);
    stats.requests.fetch_add(1, Ordering::Relaxed);

    let max_body_bytes = location.limits.max_body_bytes;
    let declared_length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = declared_length
        && length > max_body_bytes
    {
        stats.record_violation("max_body_bytes");
        let error = body_too_large(length, max_body_bytes);
        let header = HeaderName::from_bytes(
            location
                .gateway
                .config()
                .server
                .request_id_header
                .as_bytes(),
        )
        .unwrap_or(HeaderName::from_static("x-request-id"));
        let request_id = format!("{:032x}", fastrand::u128(..));
        let response: Response<NativeBody> = problem_response(&error, &header, &request_id);
        stats.record_timing(started.elapsed(), Duration::ZERO);
        let record = gatehouse_core::AccessRecord {
            request_id,
            client_ip: Some(peer),
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            status: StatusCode::PAYLOAD_TOO_LARGE.as_u16(),
            error: Some(error.kind().slug()),
            ..Default::default()
        };
        return response.map(|body| AccessLogBody::new(body, record, started));
    }

    // A body without Content-Length fails when it streams past the limit, which the
    // core turns into a 413.
    let request = request.map(|body| {
        NativeBody::wrap(gatehouse_core::body::Limit::new(
            NativeBody::from(body),
            max_body_bytes,
        ))
    });
    let budget = Arc::new(RequestBudget::new(&location.limits, Arc::clone(&stats)));
    let platform = RequestPlatform::new(Arc::clone(&location), Arc::clone(&budget));
    let connection = ConnectionInfo {
        peer,
        secure: false,
    };
    let (handled, cpu) =
        CpuTimed::new(location.gateway.handle(request, &connection, &platform)).await;
    if let Some(task) = handled.background {
        // Work after the response, such as a revalidation, shares the request's
        // limits, as `waitUntil` work does on Workers.
        let location = Arc::clone(&location);
        tokio::spawn(async move {
            let platform = RequestPlatform::new(Arc::clone(&location), budget);
            location.gateway.run_background(task, &platform).await;
        });
    }

    let response = handled.response;
    match handled.access.cache {
        Some("hit" | "stale" | "revalidated") => {
            stats.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        Some("miss") => {
            stats.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    match handled.access.error {
        Some("too-many-requests" | "quota-exceeded") => {
            stats.rate_limit_denied.fetch_add(1, Ordering::Relaxed);
        }
        _ if response.headers().contains_key(RATELIMIT) => {
            stats.rate_limit_allowed.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    stats.record_timing(started.elapsed(), cpu);

    let (parts, body) = response.into_parts();
    Response::from_parts(parts, AccessLogBody::new(body, handled.access, started))
}
