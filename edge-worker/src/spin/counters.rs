//! The Spin component's shared counter stores: `redis` stores of `[stores]`, reached
//! through Spin's outbound Redis interface (`fermyon:spin/redis@2.0.0`).
//!
//! Each decision runs the script of the native runtime's Redis store
//! ([`DECIDE_SCRIPT`]) with `EVALSHA`, and with `EVAL` when the server does not have
//! it yet, on the same keys. Spin and native gateways that share a server therefore
//! count together and decide alike, at the server's clock.
//!
//! Spin creates a new instance for every request, so there is no local tier: every
//! decision is one round trip, in `async` mode as in `strict` mode, and each request
//! opens its own connection.
//!
//! NOTE: Spin's Redis calls block until the host returns, so the store's `timeout` is
//! not applied. A server that accepts connections but never replies holds the request
//! until the host gives up.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::OnceLock;

use gatehouse_core::config::{RedisStoreConfig, StoreConfig};
use gatehouse_core::limit::Decision;
use gatehouse_core::limit::redis_script::{
    DECIDE_SCRIPT, ScriptArgument, decision_from_reply, script_arguments, script_key,
    url_with_credentials,
};
use gatehouse_core::platform::{CounterRequest, Counters};
use gatehouse_core::{Error, ErrorKind, ErrorSource};
use spin_sdk::redis::{Connection, Error as RedisError, RedisParameter, RedisResult};

/// The `redis` stores of the config, by name, for one request.
#[derive(Debug, Default)]
pub struct SpinCounters {
    stores: HashMap<String, RedisStore>,
}

impl SpinCounters {
    /// Prepares the `redis` stores of `stores`, reading each password from the Spin
    /// variable that `secret` returns for its secret name. Connections open on first
    /// use, so a request that decides nothing opens none.
    pub fn from_config(
        stores: &BTreeMap<String, StoreConfig>,
        secret: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let stores = stores
            .iter()
            .filter_map(|(name, store)| match store {
                StoreConfig::Redis(redis) => {
                    Some((name.clone(), RedisStore::new(name, redis, &secret)))
                }
                // Other store types were rejected when the config was loaded.
                StoreConfig::DurableObject(_) => None,
            })
            .collect();
        Self { stores }
    }
}

impl Counters for SpinCounters {
    async fn decide(&self, request: &CounterRequest<'_>) -> Result<Decision, Error> {
        let Some(store) = self.stores.get(request.store) else {
            return Err(unavailable(format!(
                "store {:?} is not a redis store of this component",
                request.store
            )));
        };
        store.decide(request).map_err(|cause| {
            // One line per failed decision: each request is its own instance, so there
            // is no earlier failure to count against.
            eprintln!(
                "gatehouse: rate-limit store {:?} failed; policies apply on_store_error: {cause}",
                request.store
            );
            unavailable(format!("store {:?}: {cause}", request.store))
        })
    }
}

/// One `redis` store: the address to open and the connection once opened.
struct RedisStore {
    /// The address passed to [`Connection::open`], with the credentials in it when
    /// the store has a password, or the reason none could be built.
    address: Result<String, String>,
    connection: RefCell<Option<Connection>>,
}

impl fmt::Debug for RedisStore {
    // Written by hand so the address, which may contain the password, is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("connected", &self.connection.borrow().is_some())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    fn new(
        name: &str,
        config: &RedisStoreConfig,
        secret: &impl Fn(&str) -> Option<String>,
    ) -> Self {
        let address = match &config.password {
            None => Ok(config.url.clone()),
            Some(password) => match secret(&password.secret) {
                Some(value) => {
                    url_with_credentials(&config.url, config.username.as_deref(), &value)
                }
                None => Err(format!(
                    "the Spin variable {:?} (the password of store {name:?}) is not set",
                    password.secret.to_ascii_lowercase()
                )),
            },
        };
        Self {
            address,
            connection: RefCell::new(None),
        }
    }

    /// Runs the script for `request`. Errors are plain messages without the password.
    fn decide(&self, request: &CounterRequest<'_>) -> Result<Decision, String> {
        let mut slot = self.connection.borrow_mut();
        let connection = match slot.take() {
            Some(connection) => connection,
            None => {
                let address = self.address.as_ref().map_err(Clone::clone)?;
                Connection::open(address)
                    .map_err(|error| format!("failed to connect: {}", describe(&error)))?
            }
        };
        let key = script_key(request.key, request.limit);
        let arguments = script_arguments(request.limit, request.cost);
        let reply = run_script(&connection, &key, &arguments)?;
        // The connection is kept only after a call that succeeded, so a broken one is
        // opened afresh by the next decision.
        *slot = Some(connection);
        let numbers: Option<Vec<i64>> = reply
            .iter()
            .map(|value| match value {
                RedisResult::Int64(number) => Some(*number),
                _ => None,
            })
            .collect();
        numbers
            .as_deref()
            .and_then(decision_from_reply)
            .ok_or_else(|| format!("the script returned an unexpected reply {reply:?}"))
    }
}

/// Runs the script with `EVALSHA`, loading it with `EVAL` when the server replies
/// `NOSCRIPT`, as after a restart or on a server that never ran it.
fn run_script(
    connection: &Connection,
    key: &str,
    arguments: &[ScriptArgument],
) -> Result<Vec<RedisResult>, String> {
    static HASH: OnceLock<String> = OnceLock::new();
    let hash = HASH.get_or_init(|| sha1_smol::Sha1::from(DECIDE_SCRIPT).digest().to_string());
    match connection.execute("EVALSHA", &parameters(hash, key, arguments)) {
        Ok(reply) => Ok(reply),
        Err(error) if is_no_script(&error) => connection
            .execute("EVAL", &parameters(DECIDE_SCRIPT, key, arguments))
            .map_err(|error| format!("the script failed: {}", describe(&error))),
        Err(error) => Err(format!("the script failed: {}", describe(&error))),
    }
}

/// Returns the parameters of `EVAL`/`EVALSHA`: the script or its hash, one key and
/// the arguments.
fn parameters(script: &str, key: &str, arguments: &[ScriptArgument]) -> Vec<RedisParameter> {
    let mut parameters = Vec::with_capacity(arguments.len() + 3);
    parameters.push(RedisParameter::Binary(script.as_bytes().to_vec()));
    parameters.push(RedisParameter::Int64(1));
    parameters.push(RedisParameter::Binary(key.as_bytes().to_vec()));
    for argument in arguments {
        parameters.push(match argument {
            ScriptArgument::Text(text) => RedisParameter::Binary(text.as_bytes().to_vec()),
            // Every argument is a count or a duration in microseconds of a validated
            // limit, far below i64::MAX; larger values would be sent as text.
            ScriptArgument::Integer(number) => match i64::try_from(*number) {
                Ok(number) => RedisParameter::Int64(number),
                Err(_) => RedisParameter::Binary(number.to_string().into_bytes()),
            },
        });
    }
    parameters
}

/// Tells whether the server replied `NOSCRIPT`. Spin passes server errors as the
/// Redis client's message, which names the error code (`NOSCRIPT`) or its kind
/// (`NoScriptError`), depending on the client version.
fn is_no_script(error: &RedisError) -> bool {
    matches!(error, RedisError::Other(message) if message.to_ascii_lowercase().contains("noscript"))
}

fn describe(error: &RedisError) -> String {
    match error {
        RedisError::InvalidAddress => "the address is invalid or not in allowed_outbound_hosts \
                                       of spin.toml"
            .to_owned(),
        RedisError::TooManyConnections => "the host has too many open connections".to_owned(),
        RedisError::TypeError => "a value has the wrong type".to_owned(),
        RedisError::Other(message) => message.clone(),
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
