//! A shared store with the local tier in front: the decision path of both store
//! modes, whichever store decides behind it (Redis natively, the coordinator in
//! `gatehouse dev`).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use gatehouse_core::Error;
use gatehouse_core::config::StoreMode;
use gatehouse_core::limit::Decision;
use gatehouse_core::platform::CounterRequest;

use super::local::{LocalTier, Ticket};

/// The store behind the local tier: one decision per call, within
/// `request.timeout`.
pub trait StoreCall: Send + Sync + 'static {
    /// Sends `request` to the store and returns its decision.
    fn call(
        &self,
        request: &CounterRequest<'_>,
    ) -> impl Future<Output = Result<Decision, Error>> + Send;
}

/// One store as one gateway uses it: the local tier and the store behind it.
#[derive(Debug)]
pub struct TieredStore<S> {
    store: Arc<S>,
    local: Arc<LocalTier>,
    max_in_flight: u32,
}

impl<S: StoreCall> TieredStore<S> {
    /// Puts a local tier in front of `store`, admitting at most `max_in_flight`
    /// requests per key without waiting in `async` mode (at least 1).
    pub fn new(store: S, max_in_flight: u32) -> Self {
        Self {
            store: Arc::new(store),
            local: Arc::new(LocalTier::default()),
            max_in_flight: max_in_flight.max(1),
        }
    }

    /// Returns the store behind the tier.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Decides `request` in the mode it names, as the module documentation of
    /// [`crate::counters`] describes.
    pub async fn decide(&self, request: &CounterRequest<'_>) -> Result<Decision, Error> {
        let now = Instant::now();
        if let Some(rejection) = self.local.blocked(request.key, request.cost, now) {
            return Ok(rejection);
        }
        if request.mode == StoreMode::Async {
            let admitted = self
                .local
                .try_admit(request.key, request.cost, self.max_in_flight, now);
            if let Some((decision, ticket)) = admitted {
                self.decide_in_background(request, ticket);
                return Ok(decision);
            }
        }
        let ticket = self.local.start(request.key, request.cost);
        let result = self.store.call(request).await;
        self.local
            .finish(ticket, result.as_ref().ok(), Instant::now());
        result
    }

    fn decide_in_background(&self, request: &CounterRequest<'_>, ticket: Ticket) {
        let store = Arc::clone(&self.store);
        let local = Arc::clone(&self.local);
        let key = request.key.to_owned();
        let limit = *request.limit;
        let (cost, timeout, now) = (request.cost, request.timeout, request.now_unix_micros);
        let name = request.store.to_owned();
        tokio::spawn(async move {
            let request = CounterRequest {
                store: &name,
                key: &key,
                limit: &limit,
                cost,
                mode: StoreMode::Async,
                timeout,
                now_unix_micros: now,
            };
            let result = store.call(&request).await;
            local.finish(ticket, result.as_ref().ok(), Instant::now());
        });
    }
}
