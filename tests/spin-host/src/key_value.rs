//! Spin's `fermyon:spin/key-value@2.0.0` interface, on stores kept in the host's
//! memory and shared by every request, as Spin's default SQLite store is shared by
//! every instance of an application.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use wasmtime::component::{HasSelf, Linker, Resource};

use crate::RequestState;

wasmtime::component::bindgen!({
    inline: "
        package fermyon:spin@2.0.0;

        interface key-value {
            resource store {
                open: static func(label: string) -> result<store, error>;
                get: func(key: string) -> result<option<list<u8>>, error>;
                set: func(key: string, value: list<u8>) -> result<_, error>;
                delete: func(key: string) -> result<_, error>;
                exists: func(key: string) -> result<bool, error>;
                get-keys: func() -> result<list<string>, error>;
            }

            variant error {
                store-table-full,
                no-such-store,
                access-denied,
                other(string),
            }
        }

        world spin-key-value {
            import key-value;
        }
    ",
    with: {
        "fermyon:spin/key-value.store": OpenStore,
    },
});

use fermyon::spin::key_value::{Error, Host, HostStore};

/// Label of the store Spin provides when a manifest lists `key_value_stores =
/// ["default"]`.
pub const DEFAULT_STORE: &str = "default";

/// Maximum stores one instance may hold open at once, so a component that opens
/// stores in a loop gets `store-table-full` instead of exhausting the host.
const MAX_OPEN_STORES: usize = 16;

/// A store the component opened: the label it was opened with.
#[derive(Debug)]
pub struct OpenStore {
    label: String,
}

/// The key-value stores of the host, by label, shared by every request.
#[derive(Debug)]
pub struct KeyValueStores {
    stores: Mutex<HashMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl KeyValueStores {
    /// Creates an empty store for each label in `labels`; `open` rejects other labels
    /// with `no-such-store`, as Spin does for labels missing from the manifest.
    pub fn new(labels: &BTreeSet<String>) -> Self {
        let stores = labels
            .iter()
            .map(|label| (label.clone(), BTreeMap::new()))
            .collect();
        Self {
            stores: Mutex::new(stores),
        }
    }

    /// Loads the JSON object at `path` (key to string value) into the store `label`.
    pub fn seed(&self, label: &str, path: &Path) -> Result<usize, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("failed to read {}: {error}", path.display()))?;
        let entries: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|error| {
            format!(
                "{} is not a JSON object of string values: {error}",
                path.display()
            )
        })?;
        let mut stores = self.lock();
        let store = stores
            .get_mut(label)
            .ok_or_else(|| format!("there is no key-value store {label:?} to seed"))?;
        let count = entries.len();
        store.extend(
            entries
                .into_iter()
                .map(|(key, value)| (key, value.into_bytes())),
        );
        Ok(count)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<String, Vec<u8>>>> {
        // Each critical section is one map operation, so a poisoned lock is consistent.
        self.stores.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `operation` on the store `label`.
    fn with_store<T>(
        &self,
        label: &str,
        operation: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> T,
    ) -> Result<T, Error> {
        let mut stores = self.lock();
        let store = stores.get_mut(label).ok_or(Error::NoSuchStore)?;
        Ok(operation(store))
    }
}

/// Adds the key-value interface to `linker`.
pub fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    fermyon::spin::key_value::add_to_linker::<RequestState, HasSelf<RequestState>>(
        linker,
        |state| state,
    )
}

impl Host for RequestState {}

impl RequestState {
    /// Returns the label of an open store. A handle missing from the table is a host
    /// bug, reported to the component as `other`.
    fn store_label(&self, store: &Resource<OpenStore>) -> Result<String, Error> {
        self.table
            .get(store)
            .map(|open| open.label.clone())
            .map_err(|error| Error::Other(error.to_string()))
    }
}

impl HostStore for RequestState {
    fn open(&mut self, label: String) -> Result<Resource<OpenStore>, Error> {
        if !self.key_value.lock().contains_key(&label) {
            return Err(Error::NoSuchStore);
        }
        if self.open_stores >= MAX_OPEN_STORES {
            return Err(Error::StoreTableFull);
        }
        let store = self
            .table
            .push(OpenStore { label })
            .map_err(|error| Error::Other(error.to_string()))?;
        self.open_stores += 1;
        Ok(store)
    }

    fn get(&mut self, store: Resource<OpenStore>, key: String) -> Result<Option<Vec<u8>>, Error> {
        let label = self.store_label(&store)?;
        self.key_value
            .with_store(&label, |entries| entries.get(&key).cloned())
    }

    fn set(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        let label = self.store_label(&store)?;
        self.key_value.with_store(&label, |entries| {
            entries.insert(key, value);
        })
    }

    fn delete(&mut self, store: Resource<OpenStore>, key: String) -> Result<(), Error> {
        let label = self.store_label(&store)?;
        self.key_value.with_store(&label, |entries| {
            entries.remove(&key);
        })
    }

    fn exists(&mut self, store: Resource<OpenStore>, key: String) -> Result<bool, Error> {
        let label = self.store_label(&store)?;
        self.key_value
            .with_store(&label, |entries| entries.contains_key(&key))
    }

    fn get_keys(&mut self, store: Resource<OpenStore>) -> Result<Vec<String>, Error> {
        let label = self.store_label(&store)?;
        self.key_value
            .with_store(&label, |entries| entries.keys().cloned().collect())
    }

    fn drop(&mut self, store: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        self.open_stores = self.open_stores.saturating_sub(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores() -> KeyValueStores {
        KeyValueStores::new(&BTreeSet::from([DEFAULT_STORE.to_owned()]))
    }

    #[test]
    fn seed_loads_string_values() {
        let path = std::env::temp_dir().join(format!("spin-host-seed-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"a": "1", "b": "{\"name\":\"acme\"}"}"#).unwrap();
        let stores = stores();
        assert_eq!(stores.seed(DEFAULT_STORE, &path).unwrap(), 2);
        let value = stores
            .with_store(DEFAULT_STORE, |entries| entries.get("b").cloned())
            .unwrap();
        assert_eq!(value.as_deref(), Some(&br#"{"name":"acme"}"#[..]));
        assert!(stores.seed("other", &path).is_err());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unknown_label_is_no_such_store() {
        let result = stores().with_store("other", |_| ());
        assert!(matches!(result, Err(Error::NoSuchStore)));
    }
}
