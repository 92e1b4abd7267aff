//! Cache keys. A key starts with the host and the normalized path, so that a purge by
//! prefix can remove a host or a subtree, and continues with lines for the query-free
//! rest: `HOST PATH [?QUERY] \n METHOD [\n consumer=SUBJECT]`, then, for a response
//! that varies, one line per `Vary` header with the request's value.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, Method};

use crate::config::CacheQuery;

/// The request facts a key is built from.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Host the client asked for, lowercase and without the port.
    pub host: &'a str,
    /// Normalized request path.
    pub path: &'a str,
    /// Query string without `?`.
    pub query: Option<&'a str>,
    /// Authenticated subject, for routes that cache authenticated requests.
    pub consumer: Option<&'a str>,
}

/// Builds the key of a request, before `Vary` is known.
pub fn primary_key(parts: &KeyParts<'_>, query_mode: CacheQuery, ignore: &[String]) -> String {
    let mut key = String::with_capacity(parts.host.len() + parts.path.len() + 32);
    key.push_str(parts.host);
    key.push_str(parts.path);
    if let Some(query) = parts
        .query
        .and_then(|query| cache_query(query, query_mode, ignore))
    {
        key.push('?');
        key.push_str(&query);
    }
    key.push('\n');
    key.push_str(parts.method.as_str());
    if let Some(consumer) = parts.consumer {
        key.push_str("\nconsumer=");
        // Escaping keeps a subject from forging the lines that follow it.
        for c in consumer.chars() {
            match c {
                '%' => key.push_str("%25"),
                '\n' => key.push_str("%0A"),
                '\r' => key.push_str("%0D"),
                c => key.push(c),
            }
        }
    }
    key
}

/// Extends `primary` with the request's values of the `Vary` headers `names`. A
/// missing header and an empty one are different variants.
pub fn variant_key(primary: &str, names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = primary.to_owned();
    for name in names {
        let _ = write!(key, "\n{name}");
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            continue;
        }
        key.push('=');
        for (index, value) in values.enumerate() {
            if index > 0 {
                key.push_str(", ");
            }
            // Header values cannot contain line breaks, so lossy text is enough.
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
    key
}

/// Returns the query as it enters the key, or `None` when nothing of it remains.
fn cache_query(query: &str, mode: CacheQuery, ignore: &[String]) -> Option<String> {
    if mode == CacheQuery::Ignore {
        return None;
    }
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
            !ignore.iter().any(|ignored| ignored == name)
        })
        .collect();
    if mode == CacheQuery::Sort {
        // A stable sort by name keeps the order of repeated parameters, which
        // applications may read as a list.
        pairs.sort_by_key(|pair| pair.split_once('=').map_or(*pair, |(name, _)| name));
    }
    (!pairs.is_empty()).then(|| pairs.join("&"))
}

/// Returns the key prefix that covers every stored entry of one URL (`HOST PATH` with
/// an optional `?QUERY`), whatever its method, consumer or variant.
pub fn url_prefix(url: &str) -> String {
    format!("{url}\n")
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn parts<'a>(query: Option<&'a str>, consumer: Option<&'a str>) -> KeyParts<'a> {
        KeyParts {
            method: &Method::GET,
            host: "example.com",
            path: "/items",
            query,
            consumer,
        }
    }

    #[test]
    fn key_keeps_query_by_default() {
        let key = primary_key(&parts(Some("b=2&a=1"), None), CacheQuery::Keep, &[]);
        assert_eq!(key, "example.com/items?b=2&a=1\nGET");
    }

    #[test]
    fn key_sorts_query_stably() {
        let key = primary_key(&parts(Some("b=2&a=1&b=1"), None), CacheQuery::Sort, &[]);
        assert_eq!(key, "example.com/items?a=1&b=2&b=1\nGET");
    }

    #[test]
    fn key_drops_ignored_params() {
        let ignore = ["utm_source".to_owned()];
        let key = primary_key(
            &parts(Some("utm_source=x&id=7"), None),
            CacheQuery::Keep,
            &ignore,
        );
        assert_eq!(key, "example.com/items?id=7\nGET");
        let only_ignored = primary_key(
            &parts(Some("utm_source=x"), None),
            CacheQuery::Keep,
            &ignore,
        );
        assert_eq!(only_ignored, "example.com/items\nGET");
        let ignored_mode = primary_key(&parts(Some("id=7"), None), CacheQuery::Ignore, &[]);
        assert_eq!(ignored_mode, "example.com/items\nGET");
    }

    #[test]
    fn consumer_is_escaped() {
        let key = primary_key(&parts(None, Some("a\nGET%")), CacheQuery::Keep, &[]);
        assert_eq!(key, "example.com/items\nGET\nconsumer=a%0AGET%25");
    }

    #[test]
    fn variant_key_separates_missing_and_empty() {
        let names = [HeaderName::from_static("accept-language")];
        let mut headers = HeaderMap::new();
        let missing = variant_key("k", &names, &headers);
        headers.insert("accept-language", HeaderValue::from_static(""));
        let empty = variant_key("k", &names, &headers);
        headers.insert("accept-language", HeaderValue::from_static("de"));
        let german = variant_key("k", &names, &headers);
        assert_eq!(missing, "k\naccept-language");
        assert_eq!(empty, "k\naccept-language=");
        assert_eq!(german, "k\naccept-language=de");
    }

    #[test]
    fn url_prefix_covers_methods_only_of_that_url() {
        let prefix = url_prefix("example.com/items");
        assert!("example.com/items\nGET".starts_with(&prefix));
        assert!(!"example.com/items?id=1\nGET".starts_with(&prefix));
    }
}
