//! Reading a credential from the request: bearer token, header, cookie or query.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HeaderName};

use crate::config::{ConfigError, TokenSource};

/// A compiled [`TokenSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Bearer,
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

/// The credential the request carries.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    None,
    One { value: String, source: Source },
    Several,
}

impl Source {
    /// Compiles `sources`, reporting problems under `path`.
    pub(crate) fn compile_all(
        sources: &[TokenSource],
        path: &str,
        allow_bearer: bool,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<Self> {
        if sources.is_empty() {
            errors.push(
                ConfigError::new(path, "lists no credential source")
                    .with_hint("add \"bearer\", { header = \"NAME\" }, { cookie = \"NAME\" } or { query = \"NAME\" }"),
            );
        }
        let mut compiled = Vec::new();
        for (index, source) in sources.iter().enumerate() {
            let entry_path = format!("{path}[{index}]");
            let source = match source {
                TokenSource::Bearer if !allow_bearer => {
                    errors.push(
                        ConfigError::new(entry_path, "\"bearer\" is not a source of API keys")
                            .with_hint("use { header = \"x-api-key\" } or { query = \"NAME\" }"),
                    );
                    continue;
                }
                TokenSource::Bearer => Self::Bearer,
                TokenSource::Header(name) => match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(name) => Self::Header(name),
                    Err(_) => {
                        errors.push(ConfigError::new(
                            format!("{entry_path}.header"),
                            format!("invalid header name {name:?}"),
                        ));
                        continue;
                    }
                },
                TokenSource::Cookie(name) | TokenSource::Query(name) if name.is_empty() => {
                    errors.push(ConfigError::new(entry_path, "name must not be empty"));
                    continue;
                }
                TokenSource::Cookie(name) => Self::Cookie(name.clone()),
                TokenSource::Query(name) => Self::Query(name.clone()),
            };
            if compiled.contains(&source) {
                errors.push(ConfigError::new(entry_path, "is listed twice"));
            }
            compiled.push(source);
        }
        compiled
    }

    /// Returns the header to remove when the credential must not be forwarded.
    pub(crate) fn header(&self) -> Option<HeaderName> {
        match self {
            Self::Bearer => Some(AUTHORIZATION),
            Self::Header(name) => Some(name.clone()),
            Self::Cookie(_) | Self::Query(_) => None,
        }
    }
}

/// Collects the credentials of every source; more than one in total is [`Found::Several`].
pub(crate) fn find(sources: &[Source], headers: &HeaderMap, query: Option<&str>) -> Found {
    let mut found = Found::None;
    let mut add = |value: String, source: &Source| {
        found = match found {
            Found::None => Found::One {
                value,
                source: source.clone(),
            },
            _ => Found::Several,
        };
    };
    for source in sources {
        match source {
            Source::Bearer => {
                for credentials in header_elements(headers, &AUTHORIZATION) {
                    let Some((scheme, token)) = credentials.split_once(' ') else {
                        continue;
                    };
                    if scheme.eq_ignore_ascii_case("bearer") {
                        add(token.trim().to_owned(), source);
                    }
                }
            }
            Source::Header(name) => {
                for value in header_elements(headers, name) {
                    add(value.to_owned(), source);
                }
            }
            Source::Cookie(name) => {
                let pairs = headers
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|value| value.to_str().ok())
                    .flat_map(|value| value.split(';'));
                for pair in pairs {
                    if let Some((key, value)) = pair.trim().split_once('=')
                        && key == name
                    {
                        add(value.trim_matches('"').to_owned(), source);
                    }
                }
            }
            Source::Query(name) => {
                let pairs = query.unwrap_or_default().split('&');
                for pair in pairs {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if percent_decode(key).as_deref() == Some(name.as_str()) {
                        // An undecodable value is passed on as is and fails the check.
                        add(percent_decode(value).unwrap_or_default(), source);
                    }
                }
            }
        }
    }
    found
}

/// Returns the comma-separated elements of every `name` field line, trimmed.
///
/// Runtimes and proxies may join repeated field lines into one value with commas, as
/// the Workers runtime does, so two credentials can arrive as `Bearer a, Bearer b`.
/// Splitting makes them count as two. Bearer tokens cannot contain commas (RFC 6750
/// allows letters, digits and `-._~+/=` only), and neither can API keys here.
fn header_elements<'h>(headers: &'h HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or_default().split(','))
        .map(str::trim)
        .filter(|element| !element.is_empty())
}

/// Decodes `%XX` escapes. `+` is kept, because API keys and tokens are base64url or
/// hex and never contain spaces. Returns `None` for invalid escapes or UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}
