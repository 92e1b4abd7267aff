//! Header, query and JSON body changes from `transform` policies, compiled once and
//! applied per request.

use http::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
    TRANSFER_ENCODING,
};
use serde_json::Value;

use crate::body::{ReadBody, read_up_to, request_read_error};
use crate::config::{ConfigError, HeaderChanges, JsonBodyChanges, QueryChanges};
use crate::error::Error;
use crate::platform::Platform;

/// Largest body that JSON body changes rewrite when the policy sets no limit.
pub const DEFAULT_BODY_CHANGE_BYTES: u64 = 1024 * 1024;

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
pub(crate) fn decode_component(raw: &str) -> String {
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
pub(crate) fn encode_component(text: &str) -> String {
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

/// JSON body changes with their pointers parsed, and the largest body they rewrite.
#[derive(Debug, Clone, Default)]
pub struct CompiledBodyChanges {
    remove: Vec<Vec<String>>,
    set: Vec<(Vec<String>, Value)>,
    max_bytes: u64,
}

impl CompiledBodyChanges {
    /// Parses the pointers of `changes`, reporting each invalid one under `path`.
    pub fn compile(
        changes: &JsonBodyChanges,
        max_bytes: Option<u64>,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let mut compiled = Self {
            max_bytes: max_bytes.unwrap_or(DEFAULT_BODY_CHANGE_BYTES),
            ..Self::default()
        };
        for (index, pointer) in changes.remove.iter().enumerate() {
            let entry_path = format!("{path}.remove[{index}]");
            if let Some(tokens) = pointer_tokens(pointer, &entry_path, errors) {
                compiled.remove.push(tokens);
            }
        }
        for (pointer, value) in &changes.set {
            let entry_path = format!("{path}.set.{pointer:?}");
            if let Some(tokens) = pointer_tokens(pointer, &entry_path, errors) {
                compiled.set.push((tokens, value.clone()));
            }
        }
        compiled
    }

    /// Returns whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty()
    }

    /// Applies the changes to `document`: removals, then sets.
    pub fn apply(&self, document: &mut Value) {
        for tokens in &self.remove {
            remove_field(document, tokens);
        }
        for (tokens, value) in &self.set {
            set_field(document, tokens, value.clone());
        }
    }
}

/// Parses a JSON pointer (RFC 6901) into its unescaped reference tokens. The empty
/// pointer, the whole document, is rejected: a transform edits fields.
fn pointer_tokens(pointer: &str, path: &str, errors: &mut Vec<ConfigError>) -> Option<Vec<String>> {
    let Some(rest) = pointer.strip_prefix('/') else {
        errors.push(
            ConfigError::new(path, format!("invalid JSON pointer {pointer:?}"))
                .with_hint("start the pointer with '/', such as \"/user/id\""),
        );
        return None;
    };
    let mut tokens = Vec::new();
    for token in rest.split('/') {
        let mut unescaped = String::with_capacity(token.len());
        let mut chars = token.chars();
        while let Some(c) = chars.next() {
            if c != '~' {
                unescaped.push(c);
                continue;
            }
            match chars.next() {
                Some('0') => unescaped.push('~'),
                Some('1') => unescaped.push('/'),
                _ => {
                    errors.push(
                        ConfigError::new(path, format!("invalid JSON pointer {pointer:?}"))
                            .with_hint("write '~' as \"~0\" and '/' inside a name as \"~1\""),
                    );
                    return None;
                }
            }
        }
        tokens.push(unescaped);
    }
    Some(tokens)
}

/// Returns the array index a pointer token names, if it is one (no sign, no leading
/// zero).
fn array_index(token: &str) -> Option<usize> {
    let digits = token.bytes().all(|byte| byte.is_ascii_digit());
    if token.is_empty() || !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

fn remove_field(document: &mut Value, tokens: &[String]) {
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut current = document;
    for token in parents {
        let next = match current {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => array_index(token).and_then(|index| items.get_mut(index)),
            _ => None,
        };
        let Some(next) = next else {
            return;
        };
        current = next;
    }
    match current {
        Value::Object(map) => {
            map.remove(last);
        }
        Value::Array(items) => {
            if let Some(index) = array_index(last).filter(|index| *index < items.len()) {
                items.remove(index);
            }
        }
        _ => {}
    }
}

/// Sets the field at `tokens`, creating missing parent objects. A parent that is a
/// scalar, or an array index out of range, leaves the document unchanged. A last
/// token of `-` appends to an array.
fn set_field(document: &mut Value, tokens: &[String], value: Value) {
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut current = document;
    for token in parents {
        let next = match current {
            Value::Object(map) => Some(
                map.entry(token.clone())
                    .or_insert_with(|| Value::Object(serde_json::Map::new())),
            ),
            Value::Array(items) => array_index(token).and_then(|index| items.get_mut(index)),
            _ => None,
        };
        let Some(next) = next else {
            return;
        };
        current = next;
    }
    match current {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) => {
            if last == "-" {
                items.push(value);
            } else if let Some(index) = array_index(last) {
                if let Some(item) = items.get_mut(index) {
                    *item = value;
                } else if index == items.len() {
                    items.push(value);
                }
            }
        }
        _ => {}
    }
}

/// The message a body belongs to, for classifying a body that fails while read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyDirection {
    Request,
    Response,
}

/// Returns whether `headers` describe an uncompressed JSON body: `application/json` or
/// a `+json` media type, without `Content-Encoding`.
fn is_plain_json(headers: &HeaderMap) -> bool {
    let encoded = headers
        .get(CONTENT_ENCODING)
        .is_some_and(|value| !value.as_bytes().eq_ignore_ascii_case(b"identity"));
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    !encoded
        && media_type.is_some_and(|media_type| {
            media_type == "application/json"
                || (media_type.starts_with("application/") && media_type.ends_with("+json"))
        })
}

/// Applies `changes` to a JSON body and fixes `Content-Length`.
///
/// A body that is not declared as uncompressed JSON, that does not parse, or that is
/// larger than the smallest `max_body_bytes` of `changes` passes unchanged. A larger
/// body is given back whole, streaming on after the part that was read.
pub(crate) async fn rewrite_json_body<P: Platform>(
    platform: &P,
    headers: &mut HeaderMap,
    body: P::Body,
    changes: &[std::sync::Arc<CompiledBodyChanges>],
    direction: BodyDirection,
) -> Result<P::Body, Error> {
    use http_body::Body as _;

    if changes.is_empty() || body.is_end_stream() || !is_plain_json(headers) {
        return Ok(body);
    }
    let max_bytes = changes
        .iter()
        .map(|change| change.max_bytes)
        .min()
        .unwrap_or(DEFAULT_BODY_CHANGE_BYTES);
    let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let read = read_up_to(body, max_bytes)
        .await
        .map_err(|error| match direction {
            BodyDirection::Request => request_read_error(error),
            BodyDirection::Response => {
                Error::bad_gateway("the upstream's response body broke off").with_cause(error)
            }
        })?;
    let bytes = match read {
        ReadBody::Complete(bytes) => bytes,
        ReadBody::Partial { prefix, rest } => return Ok(platform.chain_body(prefix, rest)),
    };
    let Ok(mut document) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(P::Body::from(bytes));
    };
    for change in changes {
        change.apply(&mut document);
    }
    let rewritten = match serde_json::to_vec(&document) {
        Ok(rewritten) => bytes::Bytes::from(rewritten),
        Err(_) => return Ok(P::Body::from(bytes)),
    };
    headers.remove(TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
    Ok(P::Body::from(rewritten))
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

    fn body_changes(remove: &[&str], set: &[(&str, Value)]) -> CompiledBodyChanges {
        let config = JsonBodyChanges {
            remove: remove.iter().map(|pointer| (*pointer).to_owned()).collect(),
            set: set
                .iter()
                .map(|(pointer, value)| ((*pointer).to_owned(), value.clone()))
                .collect(),
        };
        let mut errors = Vec::new();
        let compiled = CompiledBodyChanges::compile(&config, None, "t", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        compiled
    }

    #[test]
    fn body_changes_remove_then_set() {
        let changes = body_changes(
            &["/secret", "/items/0", "/missing/field"],
            &[
                ("/source", serde_json::json!("gateway")),
                ("/meta/version", serde_json::json!(2)),
                ("/items/-", serde_json::json!("c")),
                ("/a~1b", serde_json::json!(true)),
            ],
        );
        let mut document = serde_json::json!({
            "secret": "x",
            "items": ["a", "b"],
            "source": "client"
        });
        changes.apply(&mut document);
        assert_eq!(
            document,
            serde_json::json!({
                "items": ["b", "c"],
                "source": "gateway",
                "meta": { "version": 2 },
                "a/b": true
            })
        );
    }

    #[test]
    fn body_changes_skip_scalar_parents() {
        let changes = body_changes(&[], &[("/name/first", serde_json::json!("x"))]);
        let mut document = serde_json::json!({ "name": "pen" });
        changes.apply(&mut document);
        assert_eq!(document, serde_json::json!({ "name": "pen" }));
    }

    #[test]
    fn body_changes_report_invalid_pointers() {
        let config = JsonBodyChanges {
            remove: vec!["secret".to_owned(), "/a~2".to_owned()],
            set: BTreeMap::from([(String::new(), serde_json::json!(1))]),
        };
        let mut errors = Vec::new();
        CompiledBodyChanges::compile(&config, None, "t", &mut errors);
        let paths: Vec<&str> = errors.iter().map(|error| error.path.as_str()).collect();
        assert_eq!(paths, ["t.remove[0]", "t.remove[1]", "t.set.\"\""]);
    }
}
