//! [`SpinKeyValue`]: the core's key-value store on Spin's key-value interface
//! (`fermyon:spin/key-value@2.0.0`).

use std::cell::OnceCell;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_core::Error;
use gatehouse_core::key_value::{Opened, open_envelope, seal_envelope, store_failed};
use gatehouse_core::platform::{Clock, KeyValue};
use spin_sdk::key_value::Store;

use super::platform::WasiClock;

/// A Spin key-value store, opened by its label on first use.
///
/// Spin stores have no expiry, so a value put with a TTL is wrapped in the core's
/// expiry envelope ([`seal_envelope`]) and dropped when read after it expired. Values
/// written by other tools, such as `spin` or a Spin application's key-value
/// explorer, are read as they are.
///
/// NOTE: an expired entry that is never read again stays in the store.
#[derive(Debug)]
pub struct SpinKeyValue {
    label: String,
    store: OnceCell<Result<Store, String>>,
}

impl SpinKeyValue {
    /// Creates the store for the label `label`, which must be listed in the
    /// component's `key_value_stores` in `spin.toml`.
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            store: OnceCell::new(),
        }
    }

    fn store(&self, operation: &str) -> Result<&Store, Error> {
        let opened = self.store.get_or_init(|| {
            Store::open(&self.label)
                .map_err(|error| format!("failed to open the store {:?}: {error:?}", self.label))
        });
        opened
            .as_ref()
            .map_err(|cause| failed(operation, &self.label, cause))
    }
}

/// Creates the 503 of a failed operation and logs its cause, which is never sent to
/// the client.
fn failed(operation: &str, label: &str, cause: &str) -> Error {
    eprintln!("gatehouse: key-value {operation} on store {label:?} failed: {cause}");
    store_failed(operation, cause)
}

impl KeyValue for SpinKeyValue {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        let store = self.store("get")?;
        let Some(stored) = store
            .get(key)
            .map_err(|error| failed("get", &self.label, &format!("{error:?}")))?
        else {
            return Ok(None);
        };
        match open_envelope(Bytes::from(stored), WasiClock.unix_millis()) {
            Opened::Live(value) => Ok(Some(value)),
            Opened::Expired => {
                // Removing the expired entry only saves space, so a failure is logged.
                if let Err(error) = store.delete(key) {
                    eprintln!(
                        "gatehouse: failed to delete an expired key-value entry from store \
                         {:?}: {error:?}",
                        self.label
                    );
                }
                Ok(None)
            }
        }
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), Error> {
        let store = self.store("put")?;
        let stored = match ttl {
            Some(ttl) => seal_envelope(&value, WasiClock.unix_millis(), ttl),
            None => value,
        };
        store
            .set(key, &stored)
            .map_err(|error| failed("put", &self.label, &format!("{error:?}")))
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.store("delete")?
            .delete(key)
            .map_err(|error| failed("delete", &self.label, &format!("{error:?}")))
    }
}
