//! [`WorkerKeyValue`]: the core's key-value store on a Workers KV namespace.

use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::Error;
use gatehouse_core::key_value::store_failed;
use gatehouse_core::platform::KeyValue;
use worker::kv::KvStore;
use worker::{Env, console_error};

/// The shortest expiry Workers KV accepts, in seconds; shorter TTLs are raised to it.
const MIN_TTL_SECONDS: u64 = 60;

/// A Workers KV namespace, bound to the Worker in `wrangler.toml`.
///
/// Workers KV is eventually consistent: a write is visible at once in the location
/// that made it and can take up to a minute to reach the others.
#[derive(Debug)]
pub struct WorkerKeyValue {
    store: KvStore,
}

impl WorkerKeyValue {
    /// Returns the namespace bound as `binding`, or `None` when the Worker has no
    /// such binding.
    pub fn from_env(env: &Env, binding: &str) -> Option<Self> {
        env.kv(binding).ok().map(|store| Self { store })
    }
}

/// Creates the 503 of a failed operation and logs its cause, which is never sent to
/// the client.
fn failed(operation: &str, cause: impl std::fmt::Display) -> Error {
    console_error!("gatehouse: Workers KV {operation} failed: {cause}");
    store_failed(operation, cause)
}

impl KeyValue for WorkerKeyValue {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        let value = self
            .store
            .get(key)
            .bytes()
            .await
            .map_err(|error| failed("get", error))?;
        Ok(value.map(Bytes::from))
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), Error> {
        let mut put = self
            .store
            .put_bytes(key, &value)
            .map_err(|error| failed("put", error))?;
        if let Some(ttl) = ttl {
            let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
            put = put.expiration_ttl(seconds.max(MIN_TTL_SECONDS));
        }
        put.execute().await.map_err(|error| failed("put", error))
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.store
            .delete(key)
            .await
            .map_err(|error| failed("delete", error))
    }
}
