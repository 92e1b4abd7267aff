//! Core functions compiled for `wasm32-unknown-unknown` and run under Node by
//! `wasm-bindgen-test-runner`, so that a difference between the WebAssembly build and
//! the native one (integer widths, hashing, float formatting) shows up as a failure.
//!
//! The same tests run natively under `cargo test`. `scripts/test.sh` runs them for
//! WebAssembly with:
//!
//! ```text
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!     cargo test -p gatehouse-edge --target wasm32-unknown-unknown --test core_wasm
//! ```

use std::borrow::Cow;
use std::time::Duration;

use gatehouse_core::config::{Format, parse};
use gatehouse_core::path::normalize;
use gatehouse_core::route::{RequestView, RouteTable};
use gatehouse_core::{ErrorKind, Gateway};
use http::{HeaderMap, Method};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test;

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn normalize_resolves_dots_and_slashes() {
    let cases = [
        ("/a/./b/../c", "/a/c"),
        ("//a//b", "/a/b"),
        ("/%41bc", "/Abc"),
        ("/a%20b", "/a%20b"),
    ];
    for (raw, expected) in cases {
        let normalized = normalize(raw).unwrap_or_else(|error| panic!("{raw}: {error}"));
        assert_eq!(normalized, expected, "{raw}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn normalize_borrows_normal_path() {
    assert!(matches!(
        normalize("/users/42"),
        Ok(Cow::Borrowed("/users/42"))
    ));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn normalize_rejects_ambiguous_encodings() {
    for raw in ["/a%2Fb", "/a%5Cb", "/a%00b", "/../x", "/a/%zz"] {
        let error = normalize(raw).expect_err(raw);
        assert_eq!(error.kind(), ErrorKind::BadRequest, "{raw}");
    }
}

/// Parses `text` and compiles its routes, failing the test on any problem.
fn route_table(text: &str) -> RouteTable {
    let (config, problems) = parse(text, Format::Toml);
    assert!(problems.is_empty(), "{problems:?}");
    let config = config.expect("a config without problems parses");
    RouteTable::build(&config.routes).unwrap_or_else(|problems| panic!("{problems:?}"))
}

/// Returns the name of the route that `table` picks for `method path` on `host`.
fn find<'t>(table: &'t RouteTable, host: &str, method: &Method, path: &str) -> Option<&'t str> {
    let headers = HeaderMap::new();
    let view = RequestView {
        host,
        method,
        path,
        query: None,
        headers: &headers,
    };
    table.find(&view).map(|index| table.name(index))
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn route_lookup_prefers_specific_matches() {
    let table = route_table(
        r#"
        [upstreams.api]
        endpoints = [{ address = "127.0.0.1:9001" }]

        [[routes]]
        name = "prefix"
        match.path_prefix = "/users"
        upstream = "api"

        [[routes]]
        name = "template"
        match.path_template = "/users/{id}"
        upstream = "api"

        [[routes]]
        name = "exact"
        match.path = "/users/me"
        upstream = "api"

        [[routes]]
        name = "tenant"
        match.hosts = ["*.example.com"]
        match.path_prefix = "/"
        upstream = "api"
        "#,
    );
    let get = Method::GET;
    assert_eq!(find(&table, "", &get, "/users/me"), Some("exact"));
    assert_eq!(find(&table, "", &get, "/users/42"), Some("template"));
    assert_eq!(find(&table, "", &get, "/users/42/orders"), Some("prefix"));
    assert_eq!(
        find(&table, "eu.example.com", &get, "/users"),
        Some("tenant")
    );
    assert_eq!(find(&table, "", &get, "/other"), None);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn config_parse_reads_durations_and_defaults() {
    let gateway = Gateway::from_text(
        r#"
        [upstreams.api]
        endpoints = [{ address = "127.0.0.1:9001" }]
        timeouts = { per_try = "250ms", total = "2s" }

        [[routes]]
        upstream = "api"
        "#,
        Format::Toml,
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let config = gateway.config();
    let timeouts = config.upstreams["api"].timeouts;
    assert_eq!(timeouts.per_try.get(), Duration::from_millis(250));
    assert_eq!(timeouts.total.get(), Duration::from_secs(2));
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.server.max_body_bytes, 10 * 1024 * 1024);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn config_parse_reports_every_problem() {
    let errors = Gateway::from_text(
        r#"
        [upstreams.api]
        endpoints = [{ address = "127.0.0.1:9001" }]
        retry_count = 2

        [[routes]]
        upstream = "apy"
        "#,
        Format::Toml,
    )
    .expect_err("an unknown key and an undefined upstream");
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("upstreams.api.retry_count: unknown key"),
        "{lines:?}"
    );
    assert!(lines[1].starts_with("routes[0].upstream: "), "{lines:?}");
}
