//! The `validate` policy: request checks before the upstream sees the request.

use std::fmt;
use std::sync::Arc;

use http::Request;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, TRANSFER_ENCODING};
use http_body::Body as _;

use crate::body::{ReadBody, read_up_to, request_read_error};
use crate::config::{ConfigError, ValidateConfig};
use crate::error::{Error, ErrorKind, ErrorSource};
use crate::platform::Platform;

/// A compiled `validate` policy.
#[derive(Debug, Clone, Default)]
pub struct ValidatePolicy {
    content_types: Vec<String>,
    require_headers: Vec<HeaderName>,
    require_query: Vec<String>,
    max_body_bytes: Option<u64>,
    json_schema: Option<Arc<CompiledSchema>>,
}

/// A JSON Schema compiled once, when the config is loaded.
#[cfg(feature = "json-schema")]
struct CompiledSchema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledSchema").finish_non_exhaustive()
    }
}

/// A JSON Schema, in a build without JSON Schema support: it never compiles.
#[cfg(not(feature = "json-schema"))]
struct CompiledSchema;

#[cfg(not(feature = "json-schema"))]
impl CompiledSchema {
    fn compile(_schema: &serde_json::Value, _location: &str) -> Result<Self, String> {
        Err(
            "this build of gatehouse has no JSON Schema support, which the Cloudflare \
             Worker leaves out to stay within its size limit"
                .to_owned(),
        )
    }

    fn check(&self, _value: &serde_json::Value) -> Result<(), (String, String)> {
        Ok(())
    }
}

#[cfg(feature = "json-schema")]
impl CompiledSchema {
    /// Compiles `schema` in the draft its `$schema` names, or else draft 2020-12.
    /// References may point only inside the schema: no loader reads files or URLs.
    fn compile(schema: &serde_json::Value, location: &str) -> Result<Self, String> {
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        // A gateway checks input, so `format` (email, date-time, uuid, ...) is an
        // assertion in every draft, not only in draft 7 and earlier.
        compiler.enable_format_assertions();
        compiler.use_loader(Box::new(NoLoader));
        let mut schemas = boon::Schemas::new();
        compiler
            .add_resource(location, schema.clone())
            .map_err(|error| error.to_string())?;
        let index = compiler
            .compile(location, &mut schemas)
            .map_err(|error| format!("{error:#}"))?;
        Ok(Self { schemas, index })
    }

    /// Checks `value`, returning the JSON pointer of the first failing location and
    /// the reason.
    fn check(&self, value: &serde_json::Value) -> Result<(), (String, String)> {
        let Err(error) = self.schemas.validate(value, self.index) else {
            return Ok(());
        };
        // The top error only reports that validation failed. The first leaf of its
        // causes names the keyword that failed and where.
        let mut leaf = &error;
        while let Some(cause) = leaf.causes.first() {
            leaf = cause;
        }
        Err((leaf.instance_location.to_string(), leaf.kind.to_string()))
    }
}

/// A loader that loads nothing, so that a `$ref` to a file or URL is a config error
/// instead of a read or a request at load time.
#[cfg(feature = "json-schema")]
struct NoLoader;

#[cfg(feature = "json-schema")]
impl boon::UrlLoader for NoLoader {
    fn load(&self, url: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        Err(format!(
            "{url} is not part of the schema; only references inside the schema are supported"
        )
        .into())
    }
}

impl ValidatePolicy {
    /// Validates `config`, reporting problems under `path`.
    pub fn compile(config: &ValidateConfig, path: &str, errors: &mut Vec<ConfigError>) -> Self {
        let mut content_types = Vec::new();
        for (index, media_type) in config.content_types.iter().enumerate() {
            let normalized = media_type.trim().to_ascii_lowercase();
            let valid = normalized
                .split_once('/')
                .is_some_and(|(kind, subtype)| is_token(kind) && is_token(subtype));
            if valid {
                content_types.push(normalized);
            } else {
                errors.push(
                    ConfigError::new(
                        format!("{path}.content_types[{index}]"),
                        format!("invalid media type {media_type:?}"),
                    )
                    .with_hint("use type/subtype without parameters, such as \"application/json\""),
                );
            }
        }
        let mut require_headers = Vec::new();
        for (index, name) in config.require_headers.iter().enumerate() {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => require_headers.push(name),
                Err(_) => errors.push(ConfigError::new(
                    format!("{path}.require_headers[{index}]"),
                    format!("invalid header name {name:?}"),
                )),
            }
        }
        for (index, name) in config.require_query.iter().enumerate() {
            if name.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.require_query[{index}]"),
                    "empty parameter name",
                ));
            }
        }
        if config.max_body_bytes == Some(0) {
            errors.push(
                ConfigError::new(format!("{path}.max_body_bytes"), "must be greater than 0")
                    .with_hint("to reject every body, use content_types = [] with a method condition instead"),
            );
        }
        if config.json_schema_file.is_some() && config.json_schema.is_none() {
            errors.push(
                ConfigError::new(
                    format!("{path}.json_schema_file"),
                    "schema files are read only by the native runtime when it loads a config file",
                )
                .with_hint("put the schema inline with json_schema"),
            );
        }
        let json_schema = config.json_schema.as_ref().and_then(|schema| {
            let location = format!("urn:gatehouse:{path}.json_schema");
            match CompiledSchema::compile(schema, &location) {
                Ok(compiled) => Some(Arc::new(compiled)),
                Err(problem) => {
                    errors.push(
                        ConfigError::new(
                            format!("{path}.json_schema"),
                            format!("invalid JSON Schema: {problem}"),
                        )
                        .with_hint("write a JSON Schema (draft 2020-12 unless $schema names another) whose $ref values point inside it"),
                    );
                    None
                }
            }
        });
        Self {
            content_types,
            require_headers,
            require_query: config.require_query.clone(),
            max_body_bytes: config.max_body_bytes,
            json_schema,
        }
    }

    /// Returns whether this policy checks the request body against a JSON Schema.
    pub fn has_json_schema(&self) -> bool {
        self.json_schema.is_some()
    }

    /// Returns the largest request body this policy accepts, in bytes.
    pub fn max_body_bytes(&self) -> Option<u64> {
        self.max_body_bytes
    }

    /// Checks `request`: the declared body size (413), its media type (415), and the required
    /// headers and query parameters (400).
    pub fn check<B>(&self, request: &Request<B>) -> Result<(), Error> {
        let headers = request.headers();
        let declared_length = headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        // The admit phase already rejected malformed or conflicting lengths.
        let has_body = headers.contains_key(TRANSFER_ENCODING)
            || declared_length.is_some_and(|length| length > 0);

        if let (Some(max), Some(length)) = (self.max_body_bytes, declared_length)
            && length > max
        {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                ErrorSource::Client,
                format!("the request body is {length} bytes; this route accepts at most {max}"),
            ));
        }
        if has_body && !self.content_types.is_empty() {
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
            let accepted = media_type.as_deref().is_some_and(|media_type| {
                self.content_types
                    .iter()
                    .any(|allowed| allowed == media_type)
            });
            if !accepted {
                return Err(Error::new(
                    ErrorKind::UnsupportedMediaType,
                    ErrorSource::Client,
                    format!(
                        "the request body must be one of: {}",
                        self.content_types.join(", ")
                    ),
                ));
            }
        }
        if let Some(missing) = self
            .require_headers
            .iter()
            .find(|name| !headers.contains_key(*name))
        {
            return Err(Error::bad_request(format!(
                "the request is missing the {missing} header"
            )));
        }
        let query = request.uri().query().unwrap_or_default();
        let present = |name: &str| {
            query.split('&').any(|pair| {
                let key = pair.split_once('=').map_or(pair, |(key, _)| key);
                key == name
            })
        };
        if let Some(missing) = self.require_query.iter().find(|name| !present(name)) {
            return Err(Error::bad_request(format!(
                "the request is missing the {missing:?} query parameter"
            )));
        }
        Ok(())
    }
}

/// Reads the request body, up to `limit` bytes, and checks it against the JSON Schema
/// of each policy that has one. Returns the request with the body rebuilt from the
/// bytes read. A request without a body is not checked.
pub(crate) async fn check_json_body<P: Platform>(
    policies: &[Arc<ValidatePolicy>],
    request: Request<P::Body>,
    limit: u64,
) -> Result<Request<P::Body>, Error> {
    let has_schema = policies.iter().any(|policy| policy.has_json_schema());
    if !has_schema || request.body().is_end_stream() {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let max_bytes = usize::try_from(limit).unwrap_or(usize::MAX);
    let bytes = match read_up_to(body, max_bytes)
        .await
        .map_err(request_read_error)?
    {
        ReadBody::Complete(bytes) => bytes,
        ReadBody::Partial { .. } => {
            return Err(crate::body::BodyTooLarge { limit }.to_error());
        }
    };
    if !bytes.is_empty() {
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|error| {
            Error::bad_request(format!("the request body is not valid JSON: {error}"))
        })?;
        let schemas = policies
            .iter()
            .filter_map(|policy| policy.json_schema.as_deref());
        for schema in schemas {
            if let Err((location, reason)) = schema.check(&value) {
                let location = if location.is_empty() {
                    "the document root".to_owned()
                } else {
                    format!("{location:?}")
                };
                return Err(Error::bad_request(format!(
                    "the request body does not match the JSON Schema at {location}: {reason}"
                )));
            }
        }
    }
    Ok(Request::from_parts(parts, P::Body::from(bytes)))
}

/// Returns whether `text` is an HTTP token (RFC 9110, section 5.6.2).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(config: ValidateConfig) -> ValidatePolicy {
        let mut errors = Vec::new();
        let compiled = ValidatePolicy::compile(&config, "p", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        compiled
    }

    fn post(content_type: Option<&str>, length: usize) -> Request<()> {
        let mut builder = Request::post("/items?page=1").header(CONTENT_LENGTH, length);
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn content_type_checked_for_bodies() {
        let json_only = policy(ValidateConfig {
            content_types: vec!["application/json".into()],
            ..ValidateConfig::default()
        });
        assert!(
            json_only
                .check(&post(Some("application/json; charset=utf-8"), 2))
                .is_ok()
        );
        assert!(json_only.check(&post(Some("Application/JSON"), 2)).is_ok());
        let error = json_only.check(&post(Some("text/plain"), 2)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::UnsupportedMediaType);
        let error = json_only.check(&post(None, 2)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::UnsupportedMediaType);
        // Without a body, there is no media type to check.
        assert!(json_only.check(&post(None, 0)).is_ok());
    }

    #[test]
    fn body_size_limit() {
        let small = policy(ValidateConfig {
            max_body_bytes: Some(10),
            ..ValidateConfig::default()
        });
        assert!(small.check(&post(None, 10)).is_ok());
        let error = small.check(&post(None, 11)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::PayloadTooLarge);
    }

    #[test]
    fn required_headers_and_query() {
        let strict = policy(ValidateConfig {
            require_headers: vec!["x-api-version".into()],
            require_query: vec!["page".into(), "size".into()],
            ..ValidateConfig::default()
        });
        let error = strict.check(&post(None, 0)).unwrap_err();
        assert_eq!(
            error.detail(),
            "the request is missing the x-api-version header"
        );
        let request = Request::get("/items?page=1&sizes=2")
            .header("x-api-version", "2")
            .body(())
            .unwrap();
        let error = strict.check(&request).unwrap_err();
        assert_eq!(
            error.detail(),
            "the request is missing the \"size\" query parameter"
        );
        let request = Request::get("/items?page=1&size=2")
            .header("x-api-version", "2")
            .body(())
            .unwrap();
        assert!(strict.check(&request).is_ok());
    }

    fn schema_policy(schema: serde_json::Value) -> ValidatePolicy {
        policy(ValidateConfig {
            json_schema: Some(schema),
            ..ValidateConfig::default()
        })
    }

    #[test]
    fn json_schema_names_failing_location() {
        let policy = schema_policy(serde_json::json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": { "type": "string" },
                "items": { "type": "array", "items": { "type": "integer" } }
            }
        }));
        let schema = policy.json_schema.as_deref().expect("the schema compiles");
        assert!(schema.check(&serde_json::json!({ "name": "pen" })).is_ok());
        let (location, reason) = schema
            .check(&serde_json::json!({ "name": "pen", "items": [1, "two"] }))
            .unwrap_err();
        assert_eq!(location, "/items/1");
        assert!(reason.contains("string"), "{reason}");
        let (location, reason) = schema.check(&serde_json::json!({})).unwrap_err();
        assert_eq!(location, "");
        assert!(reason.contains("name"), "{reason}");
    }

    #[test]
    fn json_schema_follows_local_references() {
        let policy = schema_policy(serde_json::json!({
            "$defs": { "price": { "type": "number", "minimum": 0 } },
            "properties": { "price": { "$ref": "#/$defs/price" } }
        }));
        let schema = policy.json_schema.as_deref().expect("the schema compiles");
        assert!(schema.check(&serde_json::json!({ "price": 3 })).is_ok());
        let (location, _) = schema
            .check(&serde_json::json!({ "price": -1 }))
            .unwrap_err();
        assert_eq!(location, "/price");
    }

    #[test]
    fn invalid_config_reported() {
        let config = ValidateConfig {
            content_types: vec!["json".into()],
            require_headers: vec!["bad header".into()],
            require_query: vec![String::new()],
            max_body_bytes: Some(0),
            json_schema: Some(
                serde_json::json!({ "type": "object", "$ref": "https://example.com/s.json" }),
            ),
            json_schema_file: None,
        };
        let mut errors = Vec::new();
        ValidatePolicy::compile(&config, "p", &mut errors);
        let paths: Vec<&str> = errors.iter().map(|error| error.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "p.content_types[0]",
                "p.require_headers[0]",
                "p.require_query[0]",
                "p.max_body_bytes",
                "p.json_schema"
            ]
        );
    }
}
