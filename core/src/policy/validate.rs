//! The `validate` policy: request checks before the upstream sees the request.

use http::Request;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, TRANSFER_ENCODING};

use crate::config::{ConfigError, ValidateConfig};
use crate::error::{Error, ErrorKind, ErrorSource};

/// A compiled `validate` policy.
#[derive(Debug, Clone, Default)]
pub struct ValidatePolicy {
    content_types: Vec<String>,
    require_headers: Vec<HeaderName>,
    require_query: Vec<String>,
    max_body_bytes: Option<u64>,
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
        Self {
            content_types,
            require_headers,
            require_query: config.require_query.clone(),
            max_body_bytes: config.max_body_bytes,
        }
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

    #[test]
    fn invalid_config_reported() {
        let config = ValidateConfig {
            content_types: vec!["json".into()],
            require_headers: vec!["bad header".into()],
            require_query: vec![String::new()],
            max_body_bytes: Some(0),
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
                "p.max_body_bytes"
            ]
        );
    }
}
