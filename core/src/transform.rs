//! Header changes from `transform` policies, compiled once and applied per request.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{ConfigError, HeaderChanges, QueryChanges};

/// Header changes with names and values already validated.
#[derive(Debug, Clone, Default)]
pub struct CompiledHeaderChanges {
    rename: Vec<(HeaderName, HeaderName)>,
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl CompiledHeaderChanges {
    /// Validates `changes`, reporting each invalid name or value under `path`.
    pub fn compile(changes: &HeaderChanges, path: &str, errors: &mut Vec<ConfigError>) -> Self {
        let mut compiled = Self::default();
        for (from, to) in &changes.rename {
            let entry_path = format!("{path}.rename.{from}");
            let from = header_name(from, &entry_path, errors);
            let to = header_name(to, &entry_path, errors);
            if let (Some(from), Some(to)) = (from, to) {
                compiled.rename.push((from, to));
            }
        }
        for (index, name) in changes.remove.iter().enumerate() {
            if let Some(name) = header_name(name, &format!("{path}.remove[{index}]"), errors) {
                compiled.remove.push(name);
            }
        }
        for (list, entries, target) in [
            ("set", &changes.set, &mut compiled.set),
            ("add", &changes.add, &mut compiled.add),
        ] {
            for (name, value) in entries {
                let entry_path = format!("{path}.{list}.{name}");
                let Some(name) = header_name(name, &entry_path, errors) else {
                    continue;
                };
                match HeaderValue::from_str(value) {
                    Ok(value) => target.push((name, value)),
                    Err(_) => errors.push(
                        ConfigError::new(entry_path, "invalid header value")
                            .with_hint("use visible ASCII characters, spaces and tabs only"),
                    ),
                }
            }
        }
        compiled
    }

    /// Returns whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.rename.is_empty()
            && self.remove.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
    }

    /// Applies the changes in the order rename, remove, set, add.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (from, to) in &self.rename {
            // Renaming moves every value, in order, and replaces values of the new name.
            let values: Vec<HeaderValue> = headers.get_all(from).iter().cloned().collect();
            if values.is_empty() {
                continue;
            }
            headers.remove(from);
            headers.remove(to);
            for value in values {
                headers.append(to.clone(), value);
            }
        }
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }

    /// Returns the names of headers this change removes or sets, which must not be
    /// hop-by-hop headers the proxy manages itself.
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.rename
            .iter()
            .map(|(_, to)| to)
            .chain(self.remove.iter())
            .chain(self.set.iter().map(|(name, _)| name))
            .chain(self.add.iter().map(|(name, _)| name))
    }
}

/// Query parameter changes with names and values percent-encoded once, at compile time.
#[derive(Debug, Clone, Default)]
pub struct CompiledQueryChanges {
    remove: Vec<String>,
    set: Vec<(String, String)>,
}

impl CompiledQueryChanges {
    /// Validates `changes`, reporting empty names under `path`.
    pub fn compile(changes: &QueryChanges, path: &str, errors: &mut Vec<ConfigError>) -> Self {
        let mut compiled = Self::default();
        for (index, name) in changes.remove.iter().enumerate() {
            if name.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.remove[{index}]"),
                    "empty parameter name",
                ));
            }
            compiled.remove.push(name.clone());
        }
        for (name, value) in &changes.set {
            if name.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.set"),
                    "empty parameter name",
                ));
            }
            compiled.set.push((name.clone(), value.clone()));
        }
        compiled
    }

    /// Returns whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty()
    }

    /// Rewrites a raw query string. Parameters the changes do not name keep their
    /// original bytes and order; set parameters are appended, percent-encoded.
    pub fn apply(&self, query: Option<&str>) -> Option<String> {
        let mut pairs: Vec<&str> = query
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .collect();
        pairs.retain(|pair| {
            let raw_name = pair.split_once('=').map_or(*pair, |(name, _)| name);
            let name = decode_component(raw_name);
            let removed = self.remove.contains(&name);
            let replaced = self.set.iter().any(|(set, _)| *set == name);
            !(removed || replaced)
        });
        let mut rewritten: Vec<String> = pairs.into_iter().map(str::to_owned).collect();
        for (name, value) in &self.set {
            rewritten.push(format!(
                "{}={}",
                encode_component(name),
                encode_component(value)
            ));
        }
        (!rewritten.is_empty()).then(|| rewritten.join("&"))
    }
}

/// Decodes `%XX` escapes and `+` (a space in form encoding); invalid escapes stay as
/// they are, since the comparison only needs to recognize the configured names.
fn decode_component(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let escaped = (byte == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (byte, escaped) {
            (_, Some(value)) => {
                decoded.push(value);
                index += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                index += 1;
            }
            (other, None) => {
                decoded.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode_component(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn header_name(name: &str, path: &str, errors: &mut Vec<ConfigError>) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            errors.push(
                ConfigError::new(path, format!("invalid header name {name:?}"))
                    .with_hint("header names are tokens such as `x-tenant-id`"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn applies_remove_then_set_then_add() {
        let changes = HeaderChanges {
            rename: BTreeMap::new(),
            remove: vec!["x-internal".into()],
            set: BTreeMap::from([("x-tenant".into(), "acme".into())]),
            add: BTreeMap::from([("x-tag".into(), "two".into())]),
        };
        let mut errors = Vec::new();
        let compiled =
            CompiledHeaderChanges::compile(&changes, "policies.p.transform.request", &mut errors);
        assert!(errors.is_empty());

        let mut headers = HeaderMap::new();
        headers.insert("x-internal", "secret".parse().unwrap());
        headers.insert("x-tenant", "forged".parse().unwrap());
        headers.insert("x-tag", "one".parse().unwrap());
        compiled.apply(&mut headers);
        assert!(!headers.contains_key("x-internal"));
        assert_eq!(headers["x-tenant"], "acme");
        let tags: Vec<_> = headers.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["one", "two"]);
    }

    #[test]
    fn rename_moves_every_value() {
        let changes = HeaderChanges {
            rename: BTreeMap::from([("x-old".into(), "x-new".into())]),
            ..HeaderChanges::default()
        };
        let mut errors = Vec::new();
        let compiled = CompiledHeaderChanges::compile(&changes, "p", &mut errors);
        let mut headers = HeaderMap::new();
        headers.append("x-old", "1".parse().unwrap());
        headers.append("x-old", "2".parse().unwrap());
        headers.insert("x-new", "stale".parse().unwrap());
        compiled.apply(&mut headers);
        assert!(!headers.contains_key("x-old"));
        let values: Vec<_> = headers.get_all("x-new").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn query_remove_and_set() {
        let changes = QueryChanges {
            remove: vec!["debug".into()],
            set: BTreeMap::from([("version".into(), "2 beta".into())]),
        };
        let mut errors = Vec::new();
        let compiled = CompiledQueryChanges::compile(&changes, "p", &mut errors);
        assert!(errors.is_empty());
        assert_eq!(
            compiled
                .apply(Some("a=1&debug=true&version=1&d%65bug=x&b=%2F"))
                .as_deref(),
            Some("a=1&b=%2F&version=2%20beta")
        );
        assert_eq!(compiled.apply(None).as_deref(), Some("version=2%20beta"));
    }

    #[test]
    fn query_without_parameters_left_is_none() {
        let changes = QueryChanges {
            remove: vec!["only".into()],
            set: BTreeMap::new(),
        };
        let compiled = CompiledQueryChanges::compile(&changes, "p", &mut Vec::new());
        assert_eq!(compiled.apply(Some("only=1")), None);
    }

    #[test]
    fn reports_each_invalid_entry() {
        let changes = HeaderChanges {
            rename: BTreeMap::new(),
            remove: vec!["bad name".into()],
            set: BTreeMap::from([("x-ok".into(), "line\nbreak".into())]),
            add: BTreeMap::new(),
        };
        let mut errors = Vec::new();
        CompiledHeaderChanges::compile(&changes, "p", &mut errors);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["p.remove[0]", "p.set.x-ok"]);
    }
}
