//! Active health checks: background tasks that probe each endpoint of upstreams with a
//! `health_check` table and write their verdicts where the gateway's balancers read
//! them (an atomic per endpoint, so requests take no lock).
//!
//! One task runs per endpoint. After each config reload every task stops and a new
//! set starts from the new config. Verdicts live in cells that the new gateway shares
//! with the old one for endpoints that stayed, so a restart keeps them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::config::{HealthCheckConfig, HealthCheckKind};
use gatehouse_core::{Gateway, HealthCheckTarget};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::server::SharedGateway;

/// The part of a check response searched for `body_contains`.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The running checks of one config version. Dropping it stops them.
#[derive(Debug, Default)]
pub struct HealthChecks {
    tasks: Vec<JoinHandle<()>>,
}

impl HealthChecks {
    /// Starts one task per endpoint of every upstream with active checks.
    pub fn start(gateway: &Gateway, metrics: &Arc<Metrics>) -> Self {
        let tasks = gateway
            .health_check_targets()
            .into_iter()
            .map(|target| tokio::spawn(run(target, Arc::clone(metrics))))
            .collect();
        Self { tasks }
    }

    /// Returns the number of endpoints being checked.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Returns whether no endpoint is checked.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Runs the checks of the serving config, restarting them whenever `reloaded` is
/// notified. Runs until dropped.
pub async fn supervise(gateway: SharedGateway, metrics: Arc<Metrics>, reloaded: Arc<Notify>) {
    loop {
        let checks = HealthChecks::start(&gateway.load(), &metrics);
        if !checks.is_empty() {
            tracing::debug!(endpoints = checks.len(), "active health checks started");
        }
        reloaded.notified().await;
        drop(checks);
    }
}

async fn run(target: HealthCheckTarget, metrics: Arc<Metrics>) {
    let check = &target.check;
    let interval = check.interval.get();
    // A random start spreads the checks of many endpoints over the interval.
    tokio::time::sleep(jittered(interval, 100) / 2).await;
    let mut passes = 0_u32;
    let mut failures = 0_u32;
    loop {
        let result = tokio::time::timeout(check.timeout.get(), probe(&target)).await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "no answer within {} ms",
                check.timeout.get().as_millis()
            )),
        };
        metrics.record_health_check(&target.upstream, outcome.is_ok());
        let verdict = match &outcome {
            Ok(()) => {
                passes += 1;
                failures = 0;
                // A status without a verdict yet counts as healthy, so the first pass
                // records it at once.
                (passes >= check.healthy_threshold || !target.status.is_checked()).then_some(true)
            }
            Err(_) => {
                failures += 1;
                passes = 0;
                (failures >= check.unhealthy_threshold).then_some(false)
            }
        };
        if let Some(healthy) = verdict
            && target.status.set_healthy(healthy)
        {
            match &outcome {
                Ok(()) => tracing::info!(
                    upstream = %target.upstream,
                    endpoint = %target.endpoint,
                    "endpoint passed its health checks and takes traffic again"
                ),
                Err(reason) => tracing::warn!(
                    upstream = %target.upstream,
                    endpoint = %target.endpoint,
                    reason = %reason,
                    "endpoint failed its health checks and takes no traffic"
                ),
            }
        }
        tokio::time::sleep(jittered(interval, check.jitter_percent)).await;
    }
}

/// Returns `interval` moved up or down by a random share of up to `percent`.
fn jittered(interval: Duration, percent: u32) -> Duration {
    let spread = interval.as_micros() as u64 * u64::from(percent.min(100)) / 100;
    if spread == 0 {
        return interval;
    }
    let offset = fastrand::u64(0..=2 * spread);
    (interval + Duration::from_micros(offset)).saturating_sub(Duration::from_micros(spread))
}

async fn probe(target: &HealthCheckTarget) -> Result<(), String> {
    let address = resolve(target).await?;
    let stream = TcpStream::connect(address)
        .await
        .map_err(|error| format!("connect failed: {error}"))?;
    match target.check.kind {
        HealthCheckKind::Tcp => Ok(()),
        HealthCheckKind::Http => http_check(stream, &target.endpoint, &target.check).await,
    }
}

async fn resolve(target: &HealthCheckTarget) -> Result<SocketAddr, String> {
    if let Some(address) = target.socket_addr {
        return Ok(address);
    }
    tokio::net::lookup_host(target.endpoint.as_str())
        .await
        .map_err(|error| format!("resolving failed: {error}"))?
        .next()
        .ok_or_else(|| "the name has no address".to_owned())
}

async fn http_check(
    stream: TcpStream,
    authority: &str,
    check: &HealthCheckConfig,
) -> Result<(), String> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake failed: {error}"))?;
    let connection = tokio::spawn(connection);
    let request = http::Request::get(check.path.as_str())
        .header(
            http::header::HOST,
            check.host.as_deref().unwrap_or(authority),
        )
        .header(http::header::USER_AGENT, "gatehouse-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|error| format!("invalid check request: {error}"))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("request failed: {error}"))?;
        let status = response.status().as_u16();
        let expected = if check.expected_statuses.is_empty() {
            (200..400).contains(&status)
        } else {
            check.expected_statuses.contains(&status)
        };
        if !expected {
            return Err(format!("unexpected status {status}"));
        }
        let Some(needle) = &check.body_contains else {
            return Ok(());
        };
        let body = read_prefix(response.into_body()).await?;
        if contains(&body, needle.as_bytes()) {
            Ok(())
        } else {
            Err("the body lacks the expected text".to_owned())
        }
    }
    .await;
    connection.abort();
    result
}

/// Reads the body up to [`MAX_BODY_BYTES`]; a longer body is cut there.
async fn read_prefix(mut body: hyper::body::Incoming) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_BODY_BYTES {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = MAX_BODY_BYTES - bytes.len();
                    bytes.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(error)) => return Err(format!("reading the body failed: {error}")),
        }
    }
    Ok(bytes)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds() {
        let interval = Duration::from_millis(1_000);
        for _ in 0..1_000 {
            let wait = jittered(interval, 10);
            assert!(
                wait >= Duration::from_millis(900) && wait <= Duration::from_millis(1_100),
                "{wait:?}"
            );
        }
        assert_eq!(jittered(interval, 0), interval);
    }

    #[test]
    fn finds_text_in_body() {
        assert!(contains(b"{\"status\":\"ok\"}", b"\"ok\""));
        assert!(!contains(b"degraded", b"ok!"));
        assert!(contains(b"", b""));
    }
}
