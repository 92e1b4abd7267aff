//! The `cors` policy: the gateway responds to preflights and adds CORS headers to
//! responses.
//!
//! Origins match exactly or by a pattern anchored to a whole host suffix, so
//! `https://*.example.com` accepts `https://app.example.com` but neither
//! `https://evil-example.com` nor `https://example.com.evil.test`.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, HeaderMap, HeaderName,
    HeaderValue, ORIGIN, VARY,
};
use http::{Method, Request};

use crate::config::{ConfigError, CorsConfig};
use crate::error::{Error, ErrorKind, ErrorSource};

/// Request headers a browser may send cross-origin without listing them in a preflight.
const SAFELISTED_HEADERS: [&str; 4] = [
    "accept",
    "accept-language",
    "content-language",
    "content-type",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginPattern {
    /// `scheme://host[:port]`, lowercase.
    Exact(String),
    /// `scheme://*.suffix[:port]`: `prefix` is `scheme://`, `suffix` is `.suffix[:port]`.
    Subdomains { prefix: String, suffix: String },
}

impl OriginPattern {
    fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Exact(exact) => origin.eq_ignore_ascii_case(exact),
            Self::Subdomains { prefix, suffix } => {
                let origin = origin.to_ascii_lowercase();
                let Some(rest) = origin.strip_prefix(prefix.as_str()) else {
                    return false;
                };
                let Some(labels) = rest.strip_suffix(suffix.as_str()) else {
                    return false;
                };
                !labels.is_empty()
                    && labels.split('.').all(|label| {
                        !label.is_empty()
                            && label
                                .bytes()
                                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                    })
            }
        }
    }
}

/// A compiled `cors` policy.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    origins: Vec<OriginPattern>,
    any_origin: bool,
    methods: Vec<Method>,
    methods_value: HeaderValue,
    headers: Vec<HeaderName>,
    any_header: bool,
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    credentials: bool,
    max_age_value: Option<HeaderValue>,
}

impl CorsPolicy {
    /// Validates `config`, reporting problems under `path`.
    pub fn compile(config: &CorsConfig, path: &str, errors: &mut Vec<ConfigError>) -> Self {
        let mut origins = Vec::new();
        let mut any_origin = false;
        for (index, origin) in config.allow_origins.iter().enumerate() {
            if origin == "*" {
                any_origin = true;
                continue;
            }
            match parse_origin_pattern(origin) {
                Ok(pattern) => origins.push(pattern),
                Err(message) => errors.push(
                    ConfigError::new(format!("{path}.allow_origins[{index}]"), message)
                        .with_hint("use scheme://host[:port], scheme://*.domain[:port] or \"*\""),
                ),
            }
        }
        if config.allow_origins.is_empty() {
            errors.push(
                ConfigError::new(format!("{path}.allow_origins"), "lists no origins")
                    .with_hint("add the origins of the pages that call this API, such as \"https://app.example.com\""),
            );
        }
        if any_origin && config.allow_credentials {
            errors.push(
                ConfigError::new(format!("{path}.allow_origins"), "\"*\" cannot be combined with allow_credentials = true")
                    .with_hint("list the trusted origins explicitly; any site could otherwise read responses with the user's cookies"),
            );
        }

        let mut methods = Vec::new();
        for (index, method) in config.allow_methods.iter().enumerate() {
            match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
                Ok(method) => methods.push(method),
                Err(_) => errors.push(ConfigError::new(
                    format!("{path}.allow_methods[{index}]"),
                    format!("invalid method {method:?}"),
                )),
            }
        }
        let methods_value = join_value(methods.iter().map(Method::as_str));

        let any_header = config.allow_headers.iter().any(|header| header == "*");
        if any_header && config.allow_credentials {
            errors.push(
                ConfigError::new(
                    format!("{path}.allow_headers"),
                    "\"*\" cannot be combined with allow_credentials = true",
                )
                .with_hint("list the allowed request headers explicitly"),
            );
        }
        let headers = header_names(
            &config.allow_headers,
            &format!("{path}.allow_headers"),
            errors,
        );
        let expose = header_names(
            &config.expose_headers,
            &format!("{path}.expose_headers"),
            errors,
        );

        Self {
            origins,
            any_origin,
            methods_value: methods_value.unwrap_or_else(|| HeaderValue::from_static("GET")),
            methods,
            headers_value: join_value(headers.iter().map(HeaderName::as_str)),
            headers,
            any_header,
            expose_value: join_value(expose.iter().map(HeaderName::as_str)),
            credentials: config.allow_credentials,
            max_age_value: config
                .max_age
                .map(|max_age| HeaderValue::from(max_age.get().as_secs())),
        }
    }

    /// Returns the method a CORS preflight requests, or `None` when `request` is not a
    /// preflight (an `OPTIONS` request with `Origin` and `Access-Control-Request-Method`).
    pub fn preflight_method<B>(request: &Request<B>) -> Option<Method> {
        if request.method() != Method::OPTIONS || !request.headers().contains_key(ORIGIN) {
            return None;
        }
        let requested = request.headers().get(ACCESS_CONTROL_REQUEST_METHOD)?;
        Method::from_bytes(requested.as_bytes()).ok()
    }

    /// Checks a preflight and returns the headers of a 204 response when origin, method and
    /// headers are allowed, or a 403 error naming what was not.
    pub fn preflight(
        &self,
        request_headers: &HeaderMap,
        method: &Method,
    ) -> Result<HeaderMap, Error> {
        let origin = request_headers
            .get(ORIGIN)
            .and_then(|value| value.to_str().ok());
        let Some(allow_origin) = origin.and_then(|origin| self.allow_origin_value(origin)) else {
            return Err(rejected("the origin is not allowed"));
        };
        if !self.methods.contains(method) {
            return Err(rejected("the method is not allowed"));
        }
        let requested_headers = request_headers
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty());
        for name in requested_headers {
            if !self.header_allowed(name) {
                return Err(rejected("a requested header is not allowed"));
            }
        }

        let mut headers = HeaderMap::new();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, self.methods_value.clone());
        if self.any_header {
            if let Some(requested) = request_headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
                headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
            }
        } else if let Some(value) = &self.headers_value {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, value.clone());
        }
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(max_age) = &self.max_age_value {
            headers.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        headers.insert(
            VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        Ok(headers)
    }

    /// Adds the CORS headers of an actual (non-preflight) response. A request from a
    /// disallowed origin gets none, so the browser withholds the response from the page.
    pub fn apply(&self, origin: Option<&HeaderValue>, response_headers: &mut HeaderMap) {
        response_headers.append(VARY, HeaderValue::from_static("Origin"));
        let origin = origin.and_then(|value| value.to_str().ok());
        let Some(allow_origin) = origin.and_then(|origin| self.allow_origin_value(origin)) else {
            return;
        };
        response_headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            response_headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose_value {
            response_headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    /// Returns the `Access-Control-Allow-Origin` value for `origin`, or `None` when the
    /// origin is not allowed. A wildcard policy without credentials returns `*`.
    fn allow_origin_value(&self, origin: &str) -> Option<HeaderValue> {
        if self.any_origin && !self.credentials {
            return Some(HeaderValue::from_static("*"));
        }
        // `null` (sandboxed frames, file URLs) is never matched by a pattern.
        if origin == "null" {
            return None;
        }
        self.origins
            .iter()
            .any(|pattern| pattern.matches(origin))
            .then(|| HeaderValue::from_str(origin).ok())
            .flatten()
    }

    fn header_allowed(&self, name: &str) -> bool {
        self.any_header
            || SAFELISTED_HEADERS
                .iter()
                .any(|safe| safe.eq_ignore_ascii_case(name))
            || self
                .headers
                .iter()
                .any(|allowed| allowed.as_str().eq_ignore_ascii_case(name))
    }
}

fn rejected(detail: &'static str) -> Error {
    Error::new(
        ErrorKind::Forbidden,
        ErrorSource::Client,
        format!("CORS preflight rejected: {detail}"),
    )
}

fn parse_origin_pattern(origin: &str) -> Result<OriginPattern, String> {
    let invalid = |reason: &str| format!("invalid origin {origin:?}: {reason}");
    let lowercase = origin.to_ascii_lowercase();
    let (scheme, authority) = lowercase
        .split_once("://")
        .ok_or_else(|| invalid("expected scheme://host"))?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.'))
    {
        return Err(invalid("invalid scheme"));
    }
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(invalid("an origin has no path, query or user information"));
    }
    match authority.strip_prefix("*.") {
        Some(suffix) => {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(invalid("'*' must be followed by a domain"));
            }
            Ok(OriginPattern::Subdomains {
                prefix: format!("{scheme}://"),
                suffix: format!(".{suffix}"),
            })
        }
        None if authority.contains('*') => {
            Err(invalid("'*' is allowed only as the whole first host label"))
        }
        None => Ok(OriginPattern::Exact(format!("{scheme}://{authority}"))),
    }
}

fn header_names(names: &[String], path: &str, errors: &mut Vec<ConfigError>) -> Vec<HeaderName> {
    names
        .iter()
        .enumerate()
        .filter(|(_, name)| name.as_str() != "*")
        .filter_map(
            |(index, name)| match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    errors.push(ConfigError::new(
                        format!("{path}[{index}]"),
                        format!("invalid header name {name:?}"),
                    ));
                    None
                }
            },
        )
        .collect()
}

fn join_value<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let joined = items.collect::<Vec<_>>().join(", ");
    if joined.is_empty() {
        return None;
    }
    HeaderValue::from_str(&joined).ok()
}

#[cfg(test)]
mod tests;
