//! Reading a config document and reporting every problem in it with its path.

use std::fmt;

use serde_json::Value;

use super::Config;

/// The syntax of a config document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML, the usual form of `gatehouse.toml`.
    Toml,
    /// JSON with the same structure.
    Json,
}

impl Format {
    /// Picks the format from a file name: `.json` is JSON, anything else TOML.
    pub fn from_file_name(name: &str) -> Self {
        if name.to_ascii_lowercase().ends_with(".json") {
            Self::Json
        } else {
            Self::Toml
        }
    }
}

/// One problem in a config, located by its path (`routes[2].match.path_prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The location of the problem, empty for the document as a whole.
    pub path: String,
    /// The description of the problem.
    pub message: String,
    /// How to fix it, when there is an obvious fix.
    pub hint: Option<String>,
}

impl ConfigError {
    /// Creates an error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint on how to fix the problem.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// All problems found in a config. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        writeln!(
            f,
            "invalid config: {count} problem{}",
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses a config document, rejecting unknown keys.
///
/// Every unknown key is reported, each with the closest known key as a hint. A value of
/// the wrong type stops parsing, so it is reported along with the unknown keys found
/// before it. Problems of meaning (an undefined upstream, an invalid address) are found
/// when the config is compiled; [`crate::Gateway::from_text`] reports both at once.
pub fn load(text: &str, format: Format) -> Result<Config, ConfigErrors> {
    match parse(text, format) {
        (Some(config), errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(ConfigErrors(errors)),
    }
}

/// Parses a config document and returns it, when its shape allowed parsing, together
/// with every problem found: unknown keys, and the first value of a wrong type.
pub fn parse(text: &str, format: Format) -> (Option<Config>, Vec<ConfigError>) {
    let mut unknown_keys = Vec::new();
    let parsed = match format {
        Format::Toml => match toml::Deserializer::parse(text) {
            Ok(deserializer) => {
                deserialize_tracked(deserializer, &mut unknown_keys).map_err(|error| {
                    type_error(
                        error.path(),
                        error.inner().message(),
                        text,
                        error.inner().span(),
                    )
                })
            }
            Err(error) => Err(syntax_error(error.message(), text, error.span())),
        },
        Format::Json => {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            deserialize_tracked(&mut deserializer, &mut unknown_keys).map_err(|error| {
                let located = format!("{}", error.inner());
                type_error(error.path(), &located, text, None)
            })
        }
    };

    let schema = json_schema();
    let mut errors: Vec<ConfigError> = unknown_keys
        .into_iter()
        .map(|path| unknown_key_error(&path, &schema))
        .collect();
    match parsed {
        Ok(config) => (Some(config), errors),
        Err(error) => {
            errors.push(error);
            (None, errors)
        }
    }
}

/// Returns the JSON Schema of the config document, for editors and `gatehouse schema`.
pub fn json_schema() -> Value {
    let schema = schemars::schema_for!(Config);
    schema.to_value()
}

fn deserialize_tracked<'de, D>(
    deserializer: D,
    unknown_keys: &mut Vec<Vec<PathSegment>>,
) -> Result<Config, serde_path_to_error::Error<D::Error>>
where
    D: serde::Deserializer<'de>,
{
    let mut record = |path: serde_ignored::Path<'_>| {
        unknown_keys.push(segments_of_ignored(&path));
    };
    let tracked = serde_ignored::Deserializer::new(deserializer, &mut record);
    serde_path_to_error::deserialize(tracked)
}

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathSegment {
    Key(String),
    Index(usize),
}

fn segments_of_ignored(path: &serde_ignored::Path<'_>) -> Vec<PathSegment> {
    use serde_ignored::Path;
    let mut segments = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments_of_ignored(parent),
    };
    match path {
        Path::Seq { index, .. } => segments.push(PathSegment::Index(*index)),
        Path::Map { key, .. } => segments.push(PathSegment::Key(key.clone())),
        _ => {}
    }
    segments
}

fn segments_of_tracked(path: &serde_path_to_error::Path) -> Vec<PathSegment> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(PathSegment::Index(*index)),
            Segment::Map { key } => Some(PathSegment::Key(key.clone())),
            Segment::Enum { variant } => Some(PathSegment::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

/// Formats segments as `routes[2].match.path`, quoting keys that are not identifiers.
fn display_path(segments: &[PathSegment]) -> String {
    let mut text = String::new();
    for segment in segments {
        match segment {
            PathSegment::Index(index) => text.push_str(&format!("[{index}]")),
            PathSegment::Key(key) => {
                let plain = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !text.is_empty() {
                    text.push('.');
                }
                if plain {
                    text.push_str(key);
                } else {
                    text.push_str(&format!("{key:?}"));
                }
            }
        }
    }
    text
}

fn unknown_key_error(path: &[PathSegment], schema: &Value) -> ConfigError {
    let error = ConfigError::new(display_path(path), "unknown key");
    let Some((PathSegment::Key(key), parent)) = path.split_last() else {
        return error;
    };
    let known = known_keys(schema, parent);
    match (closest_name(key, &known), known.is_empty()) {
        (Some(candidate), _) => error.with_hint(format!("did you mean `{candidate}`?")),
        (None, false) => error.with_hint(format!("expected one of: {}", known.join(", "))),
        (None, true) => error.with_hint("remove it"),
    }
}

/// Returns the candidate most similar to `name`, if one is similar enough to be a
/// likely misspelling (Jaro-Winkler similarity above 0.8).
pub(crate) fn closest_name<'c>(name: &str, candidates: &'c [impl AsRef<str>]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|candidate| {
            (
                strsim::jaro_winkler(name, candidate.as_ref()),
                candidate.as_ref(),
            )
        })
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// Lists the property names the schema allows at `path`, following `$ref`s, optional
/// values and map entries. Returns an empty list where the path cannot be followed.
fn known_keys(schema: &Value, path: &[PathSegment]) -> Vec<String> {
    let mut node = resolve(schema, schema);
    for segment in path {
        let next = match segment {
            PathSegment::Index(_) => node.get("items"),
            PathSegment::Key(key) => node
                .get("properties")
                .and_then(|properties| properties.get(key))
                .or_else(|| node.get("additionalProperties").filter(|v| v.is_object())),
        };
        match next {
            Some(next) => node = resolve(schema, next),
            None => return Vec::new(),
        }
    }
    node.get("properties")
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

/// Follows `$ref` and picks the object alternative of `anyOf`/`oneOf`, which is how the
/// schema spells optional values and enums with data.
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
            let pointer = reference.trim_start_matches('#');
            match root.pointer(pointer) {
                Some(target) => node = target,
                None => return node,
            }
            continue;
        }
        let alternatives = node
            .get("anyOf")
            .or_else(|| node.get("oneOf"))
            .and_then(Value::as_array);
        if let Some(alternatives) = alternatives {
            let object = alternatives.iter().find(|alternative| {
                alternative.get("$ref").is_some() || alternative.get("properties").is_some()
            });
            match object {
                Some(object) => {
                    node = object;
                    continue;
                }
                None => return node,
            }
        }
        return node;
    }
    node
}

fn type_error(
    path: &serde_path_to_error::Path,
    message: &str,
    text: &str,
    span: Option<std::ops::Range<usize>>,
) -> ConfigError {
    let segments = segments_of_tracked(path);
    let mut error = ConfigError::new(display_path(&segments), message.trim().to_owned());
    if let Some(span) = span {
        error = error.with_hint(format!("at {}", line_and_column(text, span.start)));
    }
    error
}

fn syntax_error(message: &str, text: &str, span: Option<std::ops::Range<usize>>) -> ConfigError {
    let location = span
        .map(|span| format!(" at {}", line_and_column(text, span.start)))
        .unwrap_or_default();
    ConfigError::new("", format!("invalid TOML{location}: {}", message.trim()))
}

fn line_and_column(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
    format!("line {line}, column {column}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(text: &str) -> Vec<String> {
        match load(text, Format::Toml) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn loads_minimal_config() {
        let config = load(
            r#"
            [upstreams.api]
            endpoints = [{ address = "127.0.0.1:9001" }]

            [[routes]]
            match.path_prefix = "/"
            upstream = "api"
            "#,
            Format::Toml,
        )
        .unwrap();
        assert_eq!(config.routes.len(), 1);
        assert_eq!(config.upstreams["api"].endpoints[0].weight, 1);
    }

    #[test]
    fn reports_every_unknown_key_with_hint() {
        let errors = errors_of(
            r#"
            [upstreams.api]
            endpoints = [{ address = "127.0.0.1:9001", wieght = 2 }]
            balancr = "random"

            [[routes]]
            match.path_prefx = "/"
            upstream = "api"
            "#,
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors.contains(
                &"upstreams.api.endpoints[0].wieght: unknown key (did you mean `weight`?)"
                    .to_owned()
            ),
            "{errors:?}"
        );
        assert!(
            errors.contains(
                &"upstreams.api.balancr: unknown key (did you mean `balancer`?)".to_owned()
            ),
            "{errors:?}"
        );
        assert!(
            errors.contains(
                &"routes[0].match.path_prefx: unknown key (did you mean `path_prefix`?)".to_owned()
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn reports_wrong_type_with_path() {
        let errors = errors_of(
            r#"
            [upstreams.api]
            endpoints = [{ address = "127.0.0.1:9001", weight = "heavy" }]
            "#,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("upstreams.api.endpoints[0].weight: "),
            "{errors:?}"
        );
        assert!(errors[0].contains("line 3"), "{errors:?}");
    }

    #[test]
    fn reports_unknown_policy_type() {
        let errors = errors_of(
            r#"
            [policies.tenant.transfrom]
            request.set = { "x-tenant" = "demo" }
            "#,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("policies.tenant"), "{errors:?}");
    }

    #[test]
    fn reports_syntax_error_with_line() {
        let errors = errors_of("[upstreams.api\nendpoints = []\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("line 1"), "{errors:?}");
    }

    #[test]
    fn loads_json_with_same_rules() {
        let errors = match load(r#"{"upstreams": {}, "routs": []}"#, Format::Json) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(errors, ["routs: unknown key (did you mean `routes`?)"]);
    }

    #[test]
    fn schema_forbids_unknown_keys() {
        let schema = json_schema();
        let route = resolve(&schema, &schema["properties"]["routes"]["items"]);
        assert_eq!(route["additionalProperties"], Value::Bool(false));
    }
}
