//! Header changes from `transform` policies, compiled once and applied per request.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{ConfigError, HeaderChanges};

/// Header changes with names and values already validated.
#[derive(Debug, Clone, Default)]
pub struct CompiledHeaderChanges {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl CompiledHeaderChanges {
    /// Validates `changes`, reporting each invalid name or value under `path`.
    pub fn compile(changes: &HeaderChanges, path: &str, errors: &mut Vec<ConfigError>) -> Self {
        let mut compiled = Self::default();
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
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the changes in the order remove, set, add.
    pub fn apply(&self, headers: &mut HeaderMap) {
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
        self.remove
            .iter()
            .chain(self.set.iter().map(|(name, _)| name))
            .chain(self.add.iter().map(|(name, _)| name))
    }
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
    fn reports_each_invalid_entry() {
        let changes = HeaderChanges {
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
