//! Routes with `dispatch = "purge"`: an authenticated way to remove cached responses
//! on every target, with the request body of the native admin listener's
//! `POST /cache/purge`.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use super::Gateway;
use crate::body::ReadBody;
use crate::cache::key;
use crate::error::{Error, ErrorKind, ErrorSource};
use crate::platform::{Platform, ResponseCache};

/// Largest purge request body read, in bytes: a URL or prefix and the JSON around it.
const MAX_PURGE_BODY_BYTES: usize = 64 * 1024;

/// The request body: exactly one of the fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    url: Option<String>,
    prefix: Option<String>,
}

/// The entries one purge removes.
enum Target {
    /// Every entry of one URL (`HOST/PATH?QUERY`).
    Url(String),
    /// Every entry whose key starts with `HOST/PATH`.
    Prefix(String),
}

/// Removes the cached responses that the request body names from the platform's own
/// cache and from every store a `cache` policy names, and returns
/// `{"status": "purged", "removed": N}`.
pub(crate) async fn respond<P: Platform>(
    gateway: &Gateway,
    request: Request<P::Body>,
    platform: &P,
) -> Result<Response<P::Body>, Error> {
    if request.method() != Method::POST {
        return Err(Error::bad_request(format!(
            "a purge route accepts only POST, not {}; send {{\"url\": \"HOST/PATH\"}} or {{\"prefix\": \"HOST/PATH\"}}",
            request.method()
        )));
    }
    let target = read_target(request.into_body()).await?;
    let mut removed = purge(platform.response_cache(), &target).await?;
    for name in cache_store_names(gateway) {
        if let Some(store) = platform.store_response_cache(&name) {
            removed += purge(store, &target).await?;
        }
    }
    let body = json!({ "status": "purged", "removed": removed }).to_string();
    let mut response = Response::new(P::Body::from(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Returns the distinct stores that the routes' `cache` policies name.
fn cache_store_names(gateway: &Gateway) -> std::collections::BTreeSet<String> {
    gateway
        .compiled
        .routes
        .iter()
        .filter_map(|route| route.policies.cache.as_ref()?.store.clone())
        .collect()
}

async fn read_target<B>(body: B) -> Result<Target, Error>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<crate::error::BoxError>,
{
    let bytes = match crate::body::read_up_to(body, MAX_PURGE_BODY_BYTES).await {
        Ok(ReadBody::Complete(bytes)) => bytes,
        Ok(ReadBody::Partial { .. }) => {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                ErrorSource::Client,
                format!("the purge request body is larger than {MAX_PURGE_BODY_BYTES} bytes"),
            ));
        }
        Err(error) => {
            return Err(Error::bad_request("the purge request body broke off").with_cause(error));
        }
    };
    let parsed: PurgeRequest = serde_json::from_slice(&bytes).map_err(|error| {
        Error::bad_request(format!(
            "invalid purge request: {error}; send {{\"url\": \"HOST/PATH\"}} or {{\"prefix\": \"HOST/PATH\"}}"
        ))
    })?;
    match (parsed.url, parsed.prefix) {
        (Some(url), None) if !url.is_empty() => Ok(Target::Url(url)),
        (None, Some(prefix)) if !prefix.is_empty() => Ok(Target::Prefix(prefix)),
        _ => Err(Error::bad_request(
            "a purge request needs exactly one non-empty field: url or prefix",
        )),
    }
}

/// Purges `target` from `store`. A store that cannot list its keys (the Workers Cache
/// API) still purges a URL by deleting the keys of anonymous `GET` and `HEAD`
/// requests, which include any `Vary` marker, and rejects a prefix with 501.
async fn purge<C: ResponseCache>(store: &C, target: &Target) -> Result<u64, Error> {
    let prefix = match target {
        Target::Url(url) => key::url_prefix(url),
        Target::Prefix(prefix) => prefix.clone(),
    };
    match store.purge_prefix(&prefix).await {
        Ok(removed) => Ok(removed),
        Err(error) if error.kind() == ErrorKind::NotImplemented => match target {
            Target::Url(_) => {
                let mut removed = 0;
                for method in [Method::GET, Method::HEAD] {
                    let key = format!("{prefix}{method}");
                    if store.delete(&key).await? {
                        removed += 1;
                    }
                }
                Ok(removed)
            }
            Target::Prefix(_) => Err(Error::new(
                ErrorKind::NotImplemented,
                ErrorSource::Platform,
                "this platform's cache cannot list its entries, so it cannot purge by prefix; purge each URL with {\"url\": \"HOST/PATH\"}",
            )),
        },
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use crate::Gateway;
    use crate::config::Format;

    fn problems(route: &str) -> Vec<String> {
        let text = format!(
            r#"
[upstreams.api]
endpoints = [{{ address = "127.0.0.1:9001" }}]

[consumers.operator]
api_key_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"

[policies.keys.api_key]
key_from = [{{ header = "x-api-key" }}]

[policies.pages.cache]

[[routes]]
match.path = "/_purge"
dispatch = "purge"
{route}
"#
        );
        match Gateway::from_text(&text, Format::Toml) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn authenticated_purge_route_compiles() {
        let found = problems(r#"policies = ["keys"]"#);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn purge_route_without_authentication_rejected() {
        let found = problems("");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(
                "routes[0].policies: a route with dispatch = \"purge\" has no jwt or api_key policy"
            ),
            "{found:?}"
        );
    }

    #[test]
    fn purge_route_with_upstream_or_cache_rejected() {
        let found = problems("upstream = \"api\"\npolicies = [\"keys\", \"pages\"]");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found.iter().any(|problem| problem
                .starts_with("routes[0].upstream: upstream is set but dispatch is \"purge\"")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|problem| problem.starts_with("routes[0].policies: has a cache policy")),
            "{found:?}"
        );
    }
}
