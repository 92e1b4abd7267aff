//! Tests that compare [`RouteTable::find`] with a linear scan over the configs, on
//! random route sets and on a table of 10,000 routes.

use std::cmp::Reverse;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;

use super::RouteTable;
use super::tests::{Request, RouteBuilder, request, route, table};
use crate::config::{RouteConfig, ValueMatch};

/// Returns the route a linear scan picks: the matching route with the greatest
/// precedence key, computed straight from the configs as the module docs describe it.
fn reference_find(routes: &[RouteConfig], request: &Request) -> Option<usize> {
    routes
        .iter()
        .enumerate()
        .filter_map(|(index, route)| Some((reference_key(index, route, request)?, index)))
        .max()
        .map(|(_, index)| index)
}

/// Host rank, path rank, whether methods are set, header count, query count and the
/// reversed declaration index.
type ReferenceKey = ((u8, usize), (u8, usize), bool, usize, usize, Reverse<usize>);

/// Returns the precedence key of a matching route, or `None` if it does not match.
fn reference_key(index: usize, route: &RouteConfig, request: &Request) -> Option<ReferenceKey> {
    let matcher = &route.matcher;
    let host = reference_host_rank(&matcher.hosts, &request.host)?;
    let path = reference_path_rank(route, &request.path)?;
    let method_matches = matcher.methods.is_empty()
        || matcher
            .methods
            .iter()
            .any(|method| method.eq_ignore_ascii_case(request.method.as_str()));
    let headers_match = matcher
        .headers
        .iter()
        .all(|condition| reference_header(condition, &request.headers));
    let query_matches = matcher
        .query
        .iter()
        .all(|condition| reference_query(condition, request.query.as_deref()));
    if !(method_matches && headers_match && query_matches) {
        return None;
    }
    Some((
        host,
        path,
        !matcher.methods.is_empty(),
        matcher.headers.len(),
        matcher.query.len(),
        Reverse(index),
    ))
}

/// Ranks the best matching host pattern: 2 for exact, 1 with the suffix length for
/// a wildcard, 0 without hosts.
fn reference_host_rank(hosts: &[String], host: &str) -> Option<(u8, usize)> {
    if hosts.is_empty() {
        return Some((0, 0));
    }
    hosts
        .iter()
        .filter_map(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(suffix) => {
                    let label_end = host.len().checked_sub(suffix.len() + 1)?;
                    let matches = label_end > 0 && host.ends_with(&format!(".{suffix}"));
                    matches.then_some((1, suffix.len()))
                }
                None => (pattern == host).then_some((2, 0)),
            }
        })
        .max()
}

/// Ranks the path condition as (kind, rank): 3 exact, 2 template by literal
/// segments, 1 prefix by length, 0 none.
fn reference_path_rank(route: &RouteConfig, path: &str) -> Option<(u8, usize)> {
    let matcher = &route.matcher;
    if let Some(exact) = &matcher.path {
        return (exact == path).then_some((3, 0));
    }
    if let Some(template) = &matcher.path_template {
        let template_segments: Vec<&str> = template.split('/').collect();
        let path_segments: Vec<&str> = path.split('/').collect();
        if template_segments.len() != path_segments.len() {
            return None;
        }
        let mut literals = 0;
        for (expected, actual) in template_segments.iter().zip(&path_segments).skip(1) {
            if expected.starts_with('{') {
                if actual.is_empty() {
                    return None;
                }
            } else if expected == actual {
                literals += 1;
            } else {
                return None;
            }
        }
        return Some((2, literals));
    }
    if let Some(prefix) = &matcher.path_prefix {
        let matches = path == prefix
            || (path.starts_with(prefix.as_str())
                && (prefix.ends_with('/') || path[prefix.len()..].starts_with('/')));
        return matches.then_some((1, prefix.len()));
    }
    Some((0, 0))
}

fn reference_header(condition: &ValueMatch, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(condition.name.as_str()).iter();
    match &condition.value {
        None => values.next().is_some(),
        Some(expected) => values.any(|value| value.as_bytes() == expected.as_bytes()),
    }
}

fn reference_query(condition: &ValueMatch, query: Option<&str>) -> bool {
    let Some(query) = query else {
        return false;
    };
    query.split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name_matches = reference_decode(name) == condition.name.as_bytes();
        let value_matches = match &condition.value {
            None => true,
            Some(expected) => reference_decode(value) == expected.as_bytes(),
        };
        name_matches && value_matches
    })
}

/// Decodes form-urlencoded text into a buffer, independently of the table's
/// streaming decoder.
fn reference_decode(text: &str) -> Vec<u8> {
    let bytes = text.replace('+', " ").into_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escape = bytes
            .get(index + 1..index + 3)
            .filter(|_| bytes[index] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .filter(|hex| hex.bytes().all(|digit| digit.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    decoded
}

#[test]
fn reference_decode_handles_escapes() {
    assert_eq!(reference_decode("a+b%20c%2f"), b"a b c/");
    assert_eq!(reference_decode("100%"), b"100%");
    assert_eq!(reference_decode("%zz%4"), b"%zz%4");
}

const HOSTS: [&str; 6] = [
    "a.com",
    "b.a.com",
    "*.a.com",
    "*.b.a.com",
    "*.com",
    "c.b.a.com",
];
const REQUEST_HOSTS: [&str; 7] = [
    "a.com",
    "b.a.com",
    "c.b.a.com",
    "d.a.com",
    "com",
    "x.org",
    "",
];
const SEGMENTS: [&str; 3] = ["x", "y", "z"];
const REQUEST_SEGMENTS: [&str; 4] = ["x", "y", "z", "w"];

/// The path condition of a random route.
#[derive(Debug, Clone)]
enum PathChoice {
    None,
    Exact,
    Prefix,
    Template,
}

fn path_condition() -> impl Strategy<Value = (PathChoice, String)> {
    let kind = prop_oneof![
        Just(PathChoice::None),
        Just(PathChoice::Exact),
        Just(PathChoice::Prefix),
        Just(PathChoice::Template),
    ];
    let segments =
        prop::collection::vec((prop::sample::select(&SEGMENTS[..]), any::<bool>()), 0..4);
    (kind, segments, any::<bool>()).prop_map(|(kind, segments, trailing_slash)| {
        let mut path = String::new();
        for (position, (segment, param)) in segments.iter().enumerate() {
            path.push('/');
            if matches!(kind, PathChoice::Template) && *param {
                path.push_str(&format!("{{p{position}}}"));
            } else {
                path.push_str(segment);
            }
        }
        if trailing_slash || path.is_empty() {
            path.push('/');
        }
        (kind, path)
    })
}

fn random_route() -> impl Strategy<Value = RouteConfig> {
    let hosts = prop::collection::vec(prop::sample::select(&HOSTS[..]), 0..3);
    let methods = prop::collection::vec(prop::sample::select(&["GET", "post"][..]), 0..2);
    let headers = prop::collection::vec(
        (
            prop::sample::select(&["x-a", "X-B"][..]),
            prop::option::of(prop::sample::select(&["1", "2"][..])),
        ),
        0..3,
    );
    let query = prop::collection::vec(
        (
            prop::sample::select(&["q", "r"][..]),
            prop::option::of(prop::sample::select(&["1", "a b"][..])),
        ),
        0..3,
    );
    (hosts, methods, path_condition(), headers, query).prop_map(
        |(hosts, methods, (kind, path), headers, query)| {
            let mut builder = route();
            builder = match kind {
                PathChoice::None => builder,
                PathChoice::Exact => builder.path(&path),
                PathChoice::Prefix => builder.prefix(&path),
                PathChoice::Template => builder.template(&path),
            };
            for host in hosts {
                builder = builder.host(host);
            }
            for method in methods {
                builder = builder.method(method);
            }
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            for (name, value) in query {
                builder = builder.query(name, value);
            }
            builder.done()
        },
    )
}

fn random_request() -> impl Strategy<Value = Request> {
    let segments = prop::collection::vec(prop::sample::select(&REQUEST_SEGMENTS[..]), 0..5);
    let headers = prop::collection::vec(
        (
            prop::sample::select(&["x-a", "x-b"][..]),
            prop::sample::select(&["1", "2"][..]),
        ),
        0..3,
    );
    let query = prop::option::of(prop::sample::select(
        &[
            "q",
            "q=1",
            "r=a+b",
            "q=2&r=a%20b",
            "r=a%2Bb&q=1",
            "q=%31",
            "",
        ][..],
    ));
    let method = prop::sample::select(&["GET", "POST", "PUT"][..]);
    let host = prop::sample::select(&REQUEST_HOSTS[..]);
    (host, method, segments, any::<bool>(), headers, query).prop_map(
        |(host, method, segments, trailing_slash, headers, query)| {
            let mut path = format!("/{}", segments.join("/"));
            if trailing_slash && !segments.is_empty() {
                path.push('/');
            }
            let mut header_map = HeaderMap::new();
            for (name, value) in headers {
                header_map.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            Request {
                host: host.to_owned(),
                method: Method::from_bytes(method.as_bytes()).unwrap_or_default(),
                path,
                query: query.map(str::to_owned),
                headers: header_map,
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn find_agrees_with_linear_scan(
        routes in prop::collection::vec(random_route(), 1..16),
        requests in prop::collection::vec(random_request(), 1..24),
    ) {
        let table = match RouteTable::build(&routes) {
            Ok(table) => table,
            Err(errors) => return Err(TestCaseError::fail(format!("{errors:?}"))),
        };
        for request in &requests {
            let expected = reference_find(&routes, request);
            prop_assert_eq!(table.find(&request.view()), expected, "{:?}", request);
        }
    }
}

/// Returns route `index` of the 10,000-route table and a request that only this
/// route matches.
fn nth_route(index: usize) -> (RouteBuilder, Request) {
    let service = format!("/svc{index}");
    match index % 4 {
        0 => (
            route()
                .host(&format!("h{}.example.com", index % 50))
                .template(&format!("{service}/items/{{id}}")),
            request(
                &format!("h{}.example.com", index % 50),
                &format!("{service}/items/42"),
            ),
        ),
        1 => (
            route().prefix(&service),
            request("any.org", &format!("{service}/deep/path/")),
        ),
        2 => (
            route().path(&format!("{service}/status")).method("GET"),
            request("any.org", &format!("{service}/status")),
        ),
        _ => (
            route()
                .host(&format!("*.t{}.example.com", index % 100))
                .prefix(&format!("{service}/api"))
                .header("x-tenant", Some("acme")),
            request(
                &format!("a.b.t{}.example.com", index % 100),
                &format!("{service}/api/v1"),
            )
            .header("x-tenant", "acme"),
        ),
    }
}

#[test]
fn ten_thousand_routes_resolve() {
    const COUNT: usize = 10_000;
    let (routes, requests): (Vec<_>, Vec<_>) = (0..COUNT).map(nth_route).unzip();
    let table = table(routes);
    assert_eq!(table.len(), COUNT);
    for (index, request) in requests.iter().enumerate() {
        assert_eq!(table.find(&request.view()), Some(index), "{request:?}");
    }

    let wrong_host = request("h1.example.com", "/svc0/items/42");
    assert_eq!(table.find(&wrong_host.view()), None);
    let wrong_method = request("any.org", "/svc2/status").method(Method::POST);
    assert_eq!(table.find(&wrong_method.view()), None);
    let missing_header = request("x.t3.example.com", "/svc3/api");
    assert_eq!(table.find(&missing_header.view()), None);
    let unknown_service = request("any.org", "/svc10000");
    assert_eq!(table.find(&unknown_service.view()), None);
}
