//! The Worker's shared counter stores: `durable_object` stores of `[stores]`, and the
//! Durable Object class [`GatehouseCounter`] that decides for them.
//!
//! Each counter key has one object (`idFromName(key)`), and the runtime runs one
//! object in one place at a time, handling its requests one after another. The object
//! applies the core's algorithms ([`decide_stored`]) at its own clock and keeps the
//! key's state in its storage, so decisions are exact across every isolate and
//! location of the Worker.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::pin::pin;
use std::time::Duration;

use futures::future::{Either, select};
use gatehouse_core::config::StoreConfig;
use gatehouse_core::limit::Decision;
use gatehouse_core::limit::remote::{RemoteCall, RemoteDecision, StoredCounter, decide_stored};
use gatehouse_core::platform::{CounterRequest, Counters};
use gatehouse_core::{Error, ErrorKind, ErrorSource};
use worker::durable::ObjectNamespace;
use worker::{
    Delay, DurableObject, Env, Method, Request, RequestInit, Response, State, console_error,
    console_warn, durable_object,
};

/// The URL of calls to a counter object. Calls to a Durable Object stub never leave
/// the runtime, so the host is only a placeholder.
const DECIDE_URL: &str = "https://counter.invalid/decide";

/// The storage key of a counter object's state.
const STATE_KEY: &str = "counter";

/// The shared counter stores of the Worker, by name, built once per isolate.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    stores: HashMap<String, ObjectStore>,
}

/// One `durable_object` store: its namespace, or `None` when the Worker has no such
/// binding, in which case every decision fails and `on_store_error` applies.
#[derive(Debug)]
struct ObjectStore {
    binding: String,
    namespace: Option<ObjectNamespace>,
    log: ErrorLog,
}

impl WorkerCounters {
    /// Finds the namespace of each `durable_object` store in `stores`, logging once
    /// per isolate each binding that is missing.
    pub fn from_env<'a>(
        env: &Env,
        stores: impl IntoIterator<Item = (&'a String, &'a StoreConfig)>,
    ) -> Self {
        let mut built = HashMap::new();
        for (name, store) in stores {
            let StoreConfig::DurableObject(config) = store else {
                // Other store types were rejected when the config was loaded.
                continue;
            };
            let namespace = env.durable_object(&config.binding).ok();
            if namespace.is_none() {
                console_error!(
                    "gatehouse: store {name:?}: no Durable Object namespace is bound as {}; \
                     its policies apply on_store_error",
                    config.binding
                );
            }
            let store = ObjectStore {
                binding: config.binding.clone(),
                namespace,
                log: ErrorLog::new(config.error_log_interval.get()),
            };
            built.insert(name.clone(), store);
        }
        Self { stores: built }
    }
}

impl Counters for WorkerCounters {
    async fn decide(&self, request: &CounterRequest<'_>) -> Result<Decision, Error> {
        let Some(store) = self.stores.get(request.store) else {
            return Err(unavailable(format!(
                "store {:?} is not a durable_object store of this Worker",
                request.store
            )));
        };
        let call = pin!(store.call(request));
        let timer = pin!(Delay::from(request.timeout));
        let result = match select(call, timer).await {
            Either::Left((result, _)) => result,
            Either::Right(((), _)) => Err(format!(
                "no reply within {} ms",
                request.timeout.as_millis()
            )),
        };
        result.map_err(|cause| {
            store.log.record(request.store, &store.binding, &cause);
            unavailable(format!("store {:?}: {cause}", request.store))
        })
    }
}

impl ObjectStore {
    /// Sends `request` to the object of its key and reads the decision. Errors are
    /// plain messages for the caller to log.
    async fn call(&self, request: &CounterRequest<'_>) -> Result<Decision, String> {
        let namespace = self
            .namespace
            .as_ref()
            .ok_or_else(|| format!("no Durable Object namespace is bound as {}", self.binding))?;
        let stub = namespace
            .get_by_name(request.key)
            .map_err(|error| format!("no object for the key: {error}"))?;
        let body = serde_json::to_string(&RemoteCall::new(request.limit, request.cost))
            .map_err(|error| format!("the call could not be encoded: {error}"))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let call = Request::new_with_init(DECIDE_URL, &init)
            .map_err(|error| format!("the call could not be built: {error}"))?;
        let mut response = stub
            .fetch_with_request(call)
            .await
            .map_err(|error| format!("the call failed: {error}"))?;
        let text = response
            .text()
            .await
            .map_err(|error| format!("the reply could not be read: {error}"))?;
        if response.status_code() != 200 {
            return Err(format!(
                "the object replied {}: {text}",
                response.status_code()
            ));
        }
        let decision: RemoteDecision = serde_json::from_str(&text)
            .map_err(|error| format!("the reply is invalid: {error}"))?;
        Ok(decision.into())
    }
}

fn unavailable(cause: String) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        ErrorSource::Platform,
        "the rate-limit store is unavailable",
    )
    .with_cause(cause)
}

/// Logs at most one warning per interval while a store fails, with the number of
/// failures since the last warning.
#[derive(Debug)]
struct ErrorLog {
    interval_millis: f64,
    /// `Date.now()` from which the next warning may be logged.
    next_log_millis: Cell<f64>,
    suppressed: Cell<u64>,
}

impl ErrorLog {
    fn new(interval: Duration) -> Self {
        Self {
            interval_millis: interval.as_secs_f64() * 1000.0,
            next_log_millis: Cell::new(0.0),
            suppressed: Cell::new(0),
        }
    }

    fn record(&self, store: &str, binding: &str, cause: &str) {
        let now = js_sys::Date::now();
        if now < self.next_log_millis.get() {
            self.suppressed.set(self.suppressed.get() + 1);
            return;
        }
        self.next_log_millis.set(now + self.interval_millis);
        let suppressed = self.suppressed.replace(0);
        console_warn!(
            "rate-limit store failed; policies apply on_store_error: store={store:?} \
             binding={binding:?} cause={cause:?} failures_not_logged={suppressed}"
        );
    }
}

/// The Durable Object class of `durable_object` counter stores: one object per
/// counter key. `wrangler.toml` binds it as a namespace and declares it in a
/// migration.
#[durable_object(fetch)]
#[derive(Debug)]
pub struct GatehouseCounter {
    state: State,
    /// The key's state once read from storage. The object is the only writer of its
    /// storage, so this copy stays current for the object's lifetime.
    counter: RefCell<Option<Option<StoredCounter>>>,
}

impl DurableObject for GatehouseCounter {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            counter: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut request: Request) -> worker::Result<Response> {
        let call: RemoteCall = match request.json().await {
            Ok(call) => call,
            Err(error) => return Response::error(format!("invalid call: {error}"), 400),
        };
        let Some(limit) = call.limit.to_limit() else {
            return Response::error("invalid call: the limit's parameters are invalid", 400);
        };
        self.load().await?;

        // Nothing is awaited from reading the state to updating it, so no other call
        // of this object can run in between and the decision is atomic.
        let now_micros = (js_sys::Date::now() * 1000.0) as u64;
        let stored = self.counter.borrow().flatten();
        let (decision, updated) = decide_stored(&limit, stored, call.cost, now_micros);
        *self.counter.borrow_mut() = Some(Some(updated));

        // The reply is sent only after this write completes, so an admission is never
        // reported for a count that could be lost.
        // NOTE: the state of an idle key stays in storage; only its next call or a
        // change of algorithm replaces it.
        if stored != Some(updated) {
            let text = serde_json::to_string(&updated)
                .map_err(|error| worker::Error::RustError(error.to_string()))?;
            self.state.storage().put(STATE_KEY, text).await?;
        }
        Response::from_json(&RemoteDecision::from(decision))
    }
}

impl GatehouseCounter {
    /// Reads the key's state from storage on the object's first call.
    async fn load(&self) -> worker::Result<()> {
        if self.counter.borrow().is_some() {
            return Ok(());
        }
        let text: Option<String> = self.state.storage().get(STATE_KEY).await?;
        let stored = text.and_then(|text| match serde_json::from_str(&text) {
            Ok(stored) => Some(stored),
            Err(error) => {
                // A state this build cannot read counts as none: the key starts afresh.
                console_warn!("gatehouse: a counter object's stored state is unreadable: {error}");
                None
            }
        });
        // Another call may have read it while this one waited.
        self.counter.borrow_mut().get_or_insert(stored);
        Ok(())
    }
}
