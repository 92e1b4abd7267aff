//! Loading entries into the native in-memory key-value store at start, from a JSON
//! file given with `gatehouse run --key-value-seed FILE`.
//!
//! The file is one JSON object from store key to value. A string value is stored as
//! its UTF-8 bytes. Any other JSON value, such as a consumer record object, is stored
//! as its compact JSON text:
//!
//! ```json
//! { "api-key:9f86d081...": { "name": "acme", "plan": "gold", "groups": ["partners"] } }
//! ```

use std::path::Path;

use bytes::Bytes;
use gatehouse_core::key_value::MemoryKeyValue;
use gatehouse_core::platform::Clock;
use serde_json::{Map, Value};

/// Reads the seed file at `path` and stores every entry in `store`, without expiry.
/// Returns the number of entries stored.
pub fn load<C: Clock>(path: &Path, store: &MemoryKeyValue<C>) -> Result<usize, String> {
    let entries = read(path)?;
    for (key, value) in &entries {
        store.insert(key, value.clone(), None).map_err(|error| {
            format!(
                "{}: failed to store key {key:?}: {}",
                path.display(),
                error.detail()
            )
        })?;
    }
    Ok(entries.len())
}

/// Reads the entries of the seed file at `path`, as keys and stored bytes.
pub fn read(path: &Path) -> Result<Vec<(String, Bytes)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("failed to read {}: {error}", path.display()))?;
    let entries: Map<String, Value> = serde_json::from_str(&text).map_err(|error| {
        format!(
            "{} is not a JSON object of key-value entries: {error}",
            path.display()
        )
    })?;
    let entries = entries
        .into_iter()
        .map(|(key, value)| {
            let bytes = match value {
                Value::String(text) => Bytes::from(text.into_bytes()),
                other => Bytes::from(other.to_string()),
            };
            (key, bytes)
        })
        .collect();
    Ok(entries)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests report failures by panicking")]
mod tests {
    use super::*;
    use crate::platform::NativeClock;

    fn write_seed(text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "gatehouse-seed-{}-{}.json",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn strings_and_records_are_stored() {
        let path = write_seed(r#"{"plain": "text", "record": {"name": "acme"}}"#);
        let store = MemoryKeyValue::new(NativeClock::default(), 10);
        assert_eq!(load(&path, &store).unwrap(), 2);
        assert_eq!(store.lookup("plain"), Some(Bytes::from("text")));
        assert_eq!(
            store.lookup("record"),
            Some(Bytes::from(r#"{"name":"acme"}"#))
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn invalid_seed_is_reported() {
        let path = write_seed("[1, 2]");
        let store = MemoryKeyValue::new(NativeClock::default(), 10);
        let error = load(&path, &store).unwrap_err();
        assert!(error.contains("is not a JSON object"), "{error}");
        std::fs::remove_file(&path).unwrap();

        let error = load(&path, &store).unwrap_err();
        assert!(error.contains("failed to read"), "{error}");
    }

    #[test]
    fn seed_larger_than_store_is_reported() {
        let path = write_seed(r#"{"a": "1", "b": "2"}"#);
        let store = MemoryKeyValue::new(NativeClock::default(), 1);
        let error = load(&path, &store).unwrap_err();
        assert!(error.contains("failed to store key \"b\""), "{error}");
        std::fs::remove_file(path).unwrap();
    }
}
