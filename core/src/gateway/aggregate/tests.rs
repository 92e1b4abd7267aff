//! Config checks of aggregate routes.

use crate::Gateway;
use crate::config::Format;

const UPSTREAMS: &str = r#"
    [upstreams.users]
    endpoints = [{ address = "127.0.0.1:9001" }]

    [upstreams.orders]
    endpoints = [{ address = "127.0.0.1:9002" }]
"#;

/// Returns each problem of the config made of [`UPSTREAMS`] and `routes` as
/// `path: message (hint)`.
fn problems(routes: &str) -> Vec<String> {
    let text = format!("{UPSTREAMS}\n{routes}");
    match Gateway::from_text(&text, Format::Toml) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

fn assert_problem(problems: &[String], path: &str, contains: &str) {
    assert!(
        problems
            .iter()
            .any(|problem| problem.starts_with(path) && problem.contains(contains)),
        "expected {path}: ...{contains}... in {problems:#?}"
    );
}

#[test]
fn valid_aggregate_route_compiles() {
    let found = problems(
        r#"
        [[routes]]
        match.path_template = "/profile/{id}"
        dispatch = "aggregate"
        aggregate.max_in_flight = 2
        aggregate.calls = [
          { name = "user", upstream = "users", path = "/users/{id}" },
          { name = "orders", upstream = "orders", path = "/orders?user={user:/id}", on_error = "optional", timeout = "1s" },
          { name = "extra", upstream = "users", path = "/extra", merge = "deep" },
        ]
        "#,
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn missing_calls_and_unused_keys_reported() {
    let found = problems(
        r#"
        [[routes]]
        dispatch = "aggregate"
        upstream = "users"
        rewrite = "/x"
        aggregate = { calls = [], max_in_flight = 0 }

        [[routes]]
        dispatch = "aggregate"
        match.path = "/b"

        [[routes]]
        match.path = "/c"
        "#,
    );
    assert_problem(
        &found,
        "routes[0].upstream",
        "not used by a route with dispatch",
    );
    assert_problem(
        &found,
        "routes[0].rewrite",
        "not used by a route with dispatch",
    );
    assert_problem(&found, "routes[0].aggregate.calls", "no calls");
    assert_problem(&found, "routes[0].aggregate.max_in_flight", "at least 1");
    assert_problem(&found, "routes[1].aggregate", "aggregate table is missing");
    assert_problem(&found, "routes[2].upstream", "missing upstream");
}

#[test]
fn call_problems_reported_with_paths() {
    let found = problems(
        r#"
        [[routes]]
        match.path_template = "/p/{id}"
        dispatch = "aggregate"
        aggregate.calls = [
          { name = "user", upstream = "user", path = "/users/{uid}" },
          { name = "user", upstream = "orders", path = "/o", method = "G T" },
          { name = "bad name", upstream = "orders", path = "o" },
          { name = "a", upstream = "orders", path = "/a", key = "shared" },
          { name = "b", upstream = "orders", path = "/b", key = "shared" },
          { name = "errors", upstream = "orders", path = "/e" },
          { name = "c", upstream = "orders", path = "/c", merge = "deep", key = "x" },
          { name = "d", upstream = "orders", path = "/d/{nobody:/id}", timeout = "0s" },
        ]
        "#,
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[0].upstream",
        "did you mean \"users\"",
    );
    assert_problem(&found, "routes[0].aggregate.calls[0].path", "{uid}");
    assert_problem(
        &found,
        "routes[0].aggregate.calls[1].name",
        "duplicate call name",
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[1].method",
        "invalid method",
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[2].name",
        "invalid call name",
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[2].path",
        "must start with '/'",
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[4].key",
        "duplicate key \"shared\"",
    );
    assert_problem(&found, "routes[0].aggregate.calls[5].name", "\"errors\"");
    assert_problem(
        &found,
        "routes[0].aggregate.calls[6].key",
        "merge is not \"key\"",
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[7].timeout",
        "greater than zero",
    );
}

#[test]
fn unknown_call_reference_reported() {
    let found = problems(
        r#"
        [[routes]]
        dispatch = "aggregate"
        aggregate.calls = [
          { name = "user", upstream = "users", path = "/u" },
          { name = "team", upstream = "users", path = "/t/{usr:/team}" },
        ]
        "#,
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[1].path",
        "\"usr\", which is not defined",
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[1].path",
        "did you mean \"user\"",
    );
}

#[test]
fn cycle_reported_once() {
    let found = problems(
        r#"
        [[routes]]
        dispatch = "aggregate"
        aggregate.calls = [
          { name = "a", upstream = "users", path = "/a/{b:/id}" },
          { name = "b", upstream = "users", path = "/b/{a:/id}" },
          { name = "c", upstream = "users", path = "/c/{c:/id}" },
        ]
        "#,
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(
        &found,
        "routes[0].aggregate.calls[0].path",
        "cycle: a -> b -> a",
    );
    assert_problem(&found, "routes[0].aggregate.calls[2].path", "cycle: c -> c");
}

#[test]
fn chain_over_max_depth_reported() {
    let routes = |max_depth: usize| {
        format!(
            r#"
            [[routes]]
            dispatch = "aggregate"
            aggregate.max_depth = {max_depth}
            aggregate.calls = [
              {{ name = "a", upstream = "users", path = "/a" }},
              {{ name = "b", upstream = "users", path = "/b/{{a:/id}}" }},
              {{ name = "c", upstream = "users", path = "/c/{{b:/id}}?a={{a:/id}}" }},
            ]
            "#
        )
    };
    let found = problems(&routes(2));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(
        &found,
        "routes[0].aggregate.calls[2].path",
        "the chain of calls a -> b -> c has depth 3, over max_depth = 2",
    );
    assert!(found[0].contains("max_depth = 3"), "{found:#?}");
    assert!(problems(&routes(3)).is_empty());
}

#[test]
fn cache_policy_rejected_on_aggregate_route() {
    let found = problems(
        r#"
        [policies.cached.cache]

        [[routes]]
        dispatch = "aggregate"
        policies = ["cached"]
        aggregate.calls = [{ name = "a", upstream = "users", path = "/a" }]
        "#,
    );
    assert_problem(&found, "routes[0].policies", "cache policy");
}
