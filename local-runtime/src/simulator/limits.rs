//! Per-request platform limits: subrequests, simultaneous upstream connections and
//! request body size, and the measure of time spent running a request's code.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_core::config::SimulatorLimits;
use gatehouse_core::platform::{Upstream, UpstreamTarget};
use gatehouse_core::{Error, ErrorKind, ErrorSource};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::report::LocationStats;
use crate::body::NativeBody;
use crate::platform::NativeUpstream;

/// The limits of one client request and what it has used of them.
#[derive(Debug)]
pub struct RequestBudget {
    max_subrequests: u32,
    subrequests: AtomicU32,
    connections: Arc<Semaphore>,
    stats: Arc<LocationStats>,
}

impl RequestBudget {
    /// Creates the budget of a new request, which records into `stats`.
    pub fn new(limits: &SimulatorLimits, stats: Arc<LocationStats>) -> Self {
        Self {
            max_subrequests: limits.subrequests,
            subrequests: AtomicU32::new(0),
            // A limit of 0 would block every upstream request forever, so at least one
            // connection is allowed.
            connections: Arc::new(Semaphore::new(limits.connections.max(1) as usize)),
            stats,
        }
    }

    /// Counts one subrequest, or fails when the request already made the maximum.
    fn start_subrequest(&self) -> Result<(), Error> {
        let started = self.subrequests.fetch_add(1, Ordering::Relaxed) + 1;
        if started <= self.max_subrequests {
            return Ok(());
        }
        self.stats.record_violation("subrequests");
        if started == self.max_subrequests + 1 {
            tracing::warn!(
                limit = self.max_subrequests,
                "a request broke the subrequest limit; later upstream requests fail"
            );
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            ErrorSource::Platform,
            format!(
                "platform limit broken: subrequests, at most {} upstream requests per \
                 client request ([simulator.limits] subrequests)",
                self.max_subrequests
            ),
        ))
    }

    /// Waits for a free connection of this request, counting a wait.
    async fn open_connection(&self) -> Result<OwnedSemaphorePermit, Error> {
        let semaphore = Arc::clone(&self.connections);
        if let Ok(permit) = Arc::clone(&semaphore).try_acquire_owned() {
            return Ok(permit);
        }
        self.stats.connection_waits.fetch_add(1, Ordering::Relaxed);
        semaphore
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("the connection limit of the request was closed"))
    }
}

/// Error of a request body over the platform's limit: 413, naming the limit.
pub fn body_too_large(length: u64, max_bytes: u64) -> Error {
    Error::new(
        ErrorKind::PayloadTooLarge,
        ErrorSource::Client,
        format!(
            "platform limit broken: request body of {length} bytes is over {max_bytes} \
             bytes ([simulator.limits] max_body_bytes)"
        ),
    )
}

/// The HTTP client as one request sees it: each call counts as a subrequest and
/// holds one of the request's connections until its response body ends.
#[derive(Debug)]
pub struct BudgetedUpstream {
    inner: Arc<NativeUpstream>,
    budget: Arc<RequestBudget>,
}

impl BudgetedUpstream {
    /// Wraps the shared client `inner` for the request of `budget`.
    pub fn new(inner: Arc<NativeUpstream>, budget: Arc<RequestBudget>) -> Self {
        Self { inner, budget }
    }
}

impl Upstream for BudgetedUpstream {
    type Body = NativeBody;

    async fn send(
        &self,
        request: Request<NativeBody>,
        target: &UpstreamTarget<'_>,
    ) -> Result<Response<NativeBody>, Error> {
        self.budget.start_subrequest()?;
        let permit = self.budget.open_connection().await?;
        let response = self.inner.send(request, target).await?;
        Ok(response.map(|body| {
            NativeBody::wrap(PermitBody {
                body,
                _permit: permit,
            })
        }))
    }

    async fn fetch(
        &self,
        request: Request<Bytes>,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Result<Response<Bytes>, Error> {
        self.budget.start_subrequest()?;
        let _permit = self.budget.open_connection().await?;
        self.inner.fetch(request, timeout, max_body_bytes).await
    }
}

/// A response body that keeps its request's connection slot until it is dropped.
struct PermitBody {
    body: NativeBody,
    _permit: OwnedSemaphorePermit,
}

impl Body for PermitBody {
    type Data = Bytes;
    type Error = <NativeBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A future that adds up the time spent inside its `poll`: the time the request's
/// own code ran, without the time it waited for the network or timers.
///
/// NOTE: this is wall time on the polling thread, so it includes time the thread was
/// descheduled; on a busy machine it overstates CPU time.
pub struct CpuTimed<F> {
    inner: Pin<Box<F>>,
    spent: Duration,
}

impl<F> CpuTimed<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            spent: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for CpuTimed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let started = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        self.spent += started.elapsed();
        polled.map(|output| (output, self.spent))
    }
}
