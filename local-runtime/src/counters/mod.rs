//! The native runtime's shared counter stores: Redis, with a local tier in front.
//!
//! Each decision is one Lua script ([`DECIDE_SCRIPT`], shared with the Spin component)
//! run with `EVALSHA`;
//! the `redis` crate loads the script again when the server replies `NOSCRIPT`. The
//! script reads the server's clock with `TIME`, so the clocks of gateway hosts never
//! have to agree. Decisions that queue on one connection while a call is in flight
//! are sent together as one call of the script with several keys (see [`batch`]).
//!
//! The local tier remembers, per key, the store's last answer:
//!
//! - `strict`: a key the store rejected is rejected locally until the store's
//!   `retry_after` has passed, without a round trip. Admissions always wait for the
//!   store, so the count is exact.
//! - `async`: a request is admitted at once when the store's last answer left more
//!   units than this gateway has in flight for the key and fewer than
//!   `async_max_in_flight` requests are in flight; the script then runs in the
//!   background. Otherwise the request waits for the store as in `strict` mode.

mod batch;
mod local;
mod tiered;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use gatehouse_core::config::{RedisStoreConfig, StoreConfig};
use gatehouse_core::limit::Decision;
use gatehouse_core::limit::redis_script::{DECIDE_SCRIPT, script_arguments, script_key};
use gatehouse_core::platform::{CounterRequest, Counters};
use gatehouse_core::{Error, ErrorKind, ErrorSource};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, Script, ServerErrorKind, Value};

use batch::{Claim, Entry, Lane, Outcome, ReplyError};

pub use tiered::{StoreCall, TieredStore};

/// Labels of `gatehouse_rate_limit_store_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StoreErrorLabels {
    /// The store's name in `[stores]`.
    pub store: String,
    /// `timeout`, `connection`, `script` or `command`.
    pub reason: &'static str,
}

/// Failures of shared stores, by store and reason, for the metrics endpoint.
pub type StoreErrorMetrics = Family<StoreErrorLabels, Counter>;

/// The shared stores of one process, by name, built once from the config at start.
#[derive(Debug, Default)]
pub struct NativeCounters {
    stores: HashMap<String, TieredStore<RedisStore>>,
    /// The config the stores were built from, to tell a reload that changes them.
    config: BTreeMap<String, StoreConfig>,
    errors: StoreErrorMetrics,
}

impl NativeCounters {
    /// Builds the stores of `config`. Connections open on first use, so a store that
    /// is down at start does not stop the gateway. Passwords are read from the
    /// environment now; a missing one is an error naming the variable.
    pub fn from_config(config: &BTreeMap<String, StoreConfig>) -> Result<Self, String> {
        let errors = StoreErrorMetrics::default();
        let mut stores = HashMap::new();
        for (name, store) in config {
            let redis = match store {
                StoreConfig::Redis(redis) => redis,
                StoreConfig::DurableObject(_) => {
                    return Err(format!(
                        "store {name:?}: durable_object stores run only on a Cloudflare \
                         Worker; use a redis store natively"
                    ));
                }
            };
            let store = RedisStore::new(name, redis, errors.clone())?;
            let store = TieredStore::new(store, redis.async_max_in_flight);
            stores.insert(name.clone(), store);
        }
        Ok(Self {
            stores,
            config: config.clone(),
            errors,
        })
    }

    /// Returns the config the stores were built from.
    pub fn config(&self) -> &BTreeMap<String, StoreConfig> {
        &self.config
    }

    /// Returns the store failure counters, to register with the metrics registry.
    pub fn error_metrics(&self) -> StoreErrorMetrics {
        self.errors.clone()
    }
}

impl Counters for NativeCounters {
    async fn decide(&self, request: &CounterRequest<'_>) -> Result<Decision, Error> {
        match self.stores.get(request.store) {
            Some(store) => store.decide(request).await,
            None => Err(unavailable(format!(
                "store {:?} is not running; stores change only on restart",
                request.store
            ))),
        }
    }
}

/// One Redis store: a fixed pool of multiplexed connections, each with a lane that
/// batches the decisions queued on it (see [`batch`]).
pub struct RedisStore {
    shared: Arc<RedisShared>,
}

/// The parts of a store that the tasks sending batches share.
pub(crate) struct RedisShared {
    name: String,
    connections: Connections,
    /// One per connection slot, with the same index.
    lanes: Vec<Lane>,
    script: Script,
    log: ErrorLog,
}

impl fmt::Debug for RedisStore {
    // Written by hand so the client, whose connection info contains the password, is
    // never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("name", &self.shared.name)
            .field("connections", &self.shared.connections.slots.len())
            .finish_non_exhaustive()
    }
}

/// A fixed pool of multiplexed connections to one Redis server, each opened on first
/// use and opened again after it fails.
pub(crate) struct Connections {
    client: Client,
    slots: Vec<Slot>,
    next: AtomicUsize,
    connection_timeout: Duration,
}

#[derive(Default)]
pub(crate) struct Slot {
    connection: ArcSwapOption<MultiplexedConnection>,
    connecting: tokio::sync::Mutex<()>,
}

/// The cause of a failed store call, for the metric label and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Timeout,
    Connection,
    /// The server rejected a script or returned a reply of an unexpected shape.
    Script,
    /// The server rejected a command.
    Command,
}

impl Failure {
    fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Script => "script",
            Self::Command => "command",
        }
    }

    /// Classifies `error` and, when the connection is broken, clears `slot` so the
    /// next call opens a fresh one. `other` is the cause of any other error.
    pub(crate) fn classify(error: &redis::RedisError, slot: &Slot, other: Self) -> Self {
        if error.is_timeout() {
            Self::Timeout
        } else if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error()
        {
            slot.connection.store(None);
            Self::Connection
        } else {
            other
        }
    }
}

impl Connections {
    /// Creates the client of `config`, reading the password from the environment
    /// now; a missing one is an error naming the variable. Connections open later.
    pub(crate) fn new(name: &str, config: &RedisStoreConfig) -> Result<Self, String> {
        // The URL was checked to carry no password, so it may appear in this message.
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|error| format!("store {name:?}: invalid url {:?}: {error}", config.url))?;
        let mut settings = info.redis_settings().clone();
        if let Some(password) = &config.password {
            let value = std::env::var(&password.secret).map_err(|_| {
                format!(
                    "store {name:?}: the password variable {:?} is not set",
                    password.secret
                )
            })?;
            settings = settings.set_password(value);
        }
        if let Some(username) = &config.username {
            settings = settings.set_username(username);
        }
        let client = Client::open(info.set_redis_settings(settings))
            .map_err(|error| format!("store {name:?}: {error}"))?;
        Ok(Self {
            client,
            slots: (0..config.pool_size.max(1))
                .map(|_| Slot::default())
                .collect(),
            next: AtomicUsize::new(0),
            connection_timeout: config.timeout.get(),
        })
    }

    /// Returns the next slot, round robin.
    pub(crate) fn slot(&self) -> &Slot {
        &self.slots[self.next_index()]
    }

    /// Returns the index of the next slot, round robin.
    pub(crate) fn next_index(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()
    }

    /// Returns the connection of `slot`, opening it first if needed.
    pub(crate) async fn connection(
        &self,
        slot: &Slot,
    ) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(connection) = slot.connection.load_full() {
            return Ok((*connection).clone());
        }
        // One task connects per slot while the others wait for its result.
        let _connecting = slot.connecting.lock().await;
        if let Some(connection) = slot.connection.load_full() {
            return Ok((*connection).clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(None);
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        slot.connection.store(Some(Arc::new(connection.clone())));
        Ok(connection)
    }
}

impl RedisStore {
    fn new(
        name: &str,
        config: &RedisStoreConfig,
        errors: StoreErrorMetrics,
    ) -> Result<Self, String> {
        let connections = Connections::new(name, config)?;
        let lanes = connections.slots.iter().map(|_| Lane::default()).collect();
        Ok(Self {
            shared: Arc::new(RedisShared {
                name: name.to_owned(),
                connections,
                lanes,
                script: Script::new(DECIDE_SCRIPT),
                log: ErrorLog::new(
                    name,
                    config.error_log_interval.get(),
                    errors,
                    "rate-limit store failed; policies apply on_store_error",
                ),
            }),
        })
    }
}

impl StoreCall for RedisStore {
    /// Runs the script for `request` within `request.timeout`: at once when its
    /// connection has no call in flight, else in the next batch on that connection.
    async fn call(&self, request: &CounterRequest<'_>) -> Result<Decision, Error> {
        let shared = &self.shared;
        let entry = Entry {
            key: script_key(request.key, request.limit),
            arguments: script_arguments(request.limit, request.cost),
        };
        let index = shared.connections.next_index();
        let deadline = tokio::time::Instant::now() + request.timeout;
        let outcome = match batch::claim(shared, index, entry, deadline) {
            Claim::Send(busy, entry) => {
                let outcome =
                    tokio::time::timeout_at(deadline, shared.evaluate(index, &[entry])).await;
                // Hands the lane to what queued meanwhile, before this caller goes on.
                drop(busy);
                match outcome {
                    Ok(mut outcomes) => outcomes.pop(),
                    Err(_) => None,
                }
            }
            Claim::Queued(receiver) => match tokio::time::timeout_at(deadline, receiver).await {
                Ok(Ok(outcome)) => Some(outcome),
                Ok(Err(_)) => Some(Err(format!(
                    "store {:?}: the decision was dropped unsent because the runtime \
                     is shutting down",
                    shared.name
                ))),
                Err(_) => None,
            },
        };
        match outcome {
            Some(outcome) => outcome.map_err(unavailable),
            None => {
                shared.log.record(Failure::Timeout, None);
                Err(unavailable(format!(
                    "store {:?} did not answer within {:?}",
                    shared.name, request.timeout
                )))
            }
        }
    }
}

impl RedisShared {
    /// Runs the script once for `entries` on the connection of slot `index`, and
    /// returns one outcome per entry. Failures are recorded here.
    async fn evaluate(&self, index: usize, entries: &[Entry]) -> Vec<Outcome> {
        let reply = match self.send(index, entries).await {
            Ok(reply) => reply,
            Err((failure, error)) => {
                return entries
                    .iter()
                    .map(|_| {
                        self.log.record(failure, Some(&error));
                        Err(format!("store {:?}: {error}", self.name))
                    })
                    .collect();
            }
        };
        batch::read_reply(reply, entries.len())
            .into_iter()
            .map(|result| match result {
                Ok(decision) => Ok(decision),
                Err(ReplyError::Server(error)) => {
                    self.log.record(Failure::Script, Some(&error));
                    Err(format!("store {:?}: {error}", self.name))
                }
                Err(ReplyError::Shape) => {
                    self.log.record(Failure::Script, None);
                    Err(format!(
                        "store {:?} returned an unexpected reply",
                        self.name
                    ))
                }
            })
            .collect()
    }

    /// Sends the script call of `entries`, connecting first if needed, and loads the
    /// script when the server replies `NOSCRIPT`. A server error is left in the reply,
    /// because with one entry it is that decision's error.
    async fn send(
        &self,
        index: usize,
        entries: &[Entry],
    ) -> Result<Value, (Failure, redis::RedisError)> {
        let slot = &self.connections.slots[index];
        let classify =
            |error: redis::RedisError| (Failure::classify(&error, slot, Failure::Command), error);
        let mut connection = self
            .connections
            .connection(slot)
            .await
            .map_err(|error| (Failure::Connection, error))?;
        let command = batch::script_call(self.script.get_hash(), entries);
        let reply = connection
            .send_packed_command(&command)
            .await
            .map_err(classify)?;
        match reply {
            Value::ServerError(error) if error.kind() == Some(ServerErrorKind::NoScript) => {
                self.script
                    .load_async(&mut connection)
                    .await
                    .map_err(classify)?;
                connection
                    .send_packed_command(&command)
                    .await
                    .map_err(classify)
            }
            reply => Ok(reply),
        }
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

/// Counts every store failure and logs at most one warning per interval, with the
/// number of failures since the last one.
pub(crate) struct ErrorLog {
    store: String,
    /// The warning logged, naming the failed store's kind and the consequence.
    message: &'static str,
    interval_micros: u64,
    origin: Instant,
    /// Microseconds after `origin` when the next warning may be logged.
    next_log: AtomicU64,
    suppressed: AtomicU64,
    errors: StoreErrorMetrics,
}

impl ErrorLog {
    pub(crate) fn new(
        store: &str,
        interval: Duration,
        errors: StoreErrorMetrics,
        message: &'static str,
    ) -> Self {
        Self {
            store: store.to_owned(),
            message,
            interval_micros: interval.as_micros() as u64,
            origin: Instant::now(),
            next_log: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            errors,
        }
    }

    pub(crate) fn record(&self, failure: Failure, error: Option<&redis::RedisError>) {
        self.errors
            .get_or_create(&StoreErrorLabels {
                store: self.store.clone(),
                reason: failure.label(),
            })
            .inc();
        let now = self.origin.elapsed().as_micros() as u64;
        let due = self.next_log.load(Ordering::Relaxed);
        let claimed = now >= due
            && self
                .next_log
                .compare_exchange(
                    due,
                    now + self.interval_micros,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if !claimed {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        // The redis crate's errors name the server address but never the password.
        let error = error
            .map(ToString::to_string)
            .unwrap_or_else(|| "no answer in time".to_owned());
        tracing::warn!(
            store = %self.store,
            reason = failure.label(),
            %error,
            failures_not_logged = suppressed,
            "{}",
            self.message
        );
    }
}
