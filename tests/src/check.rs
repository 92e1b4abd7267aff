//! Compares the responses of a step with its expectations and describes every
//! difference as expected versus actual.

use std::collections::BTreeMap;

use http::HeaderMap;
use serde_json::Value;

use crate::behaviour::UPSTREAM_HEADER;
use crate::scenario::{Expect, HeaderValues, ValueFormat, WebSocketExpect};
use crate::target::{Exchange, WebSocketSession};

/// Maximum differences listed per step; a balancing step with 30 repeats that all fail
/// alike would otherwise bury the rest of the report.
const MAX_LISTED: usize = 8;

/// Returns every difference between `outcomes` (one per repeat) and `expect`.
pub fn check_step(expect: &Expect, outcomes: &[Result<Exchange, String>]) -> Vec<String> {
    let mut differences = Vec::new();
    let mut answered_by = Vec::with_capacity(outcomes.len());
    for (index, outcome) in outcomes.iter().enumerate() {
        let label = if outcomes.len() > 1 {
            format!("request {}/{}: ", index + 1, outcomes.len())
        } else {
            String::new()
        };
        match outcome {
            Ok(exchange) => {
                let echo = Echo::parse(exchange);
                answered_by.push(echo.upstream.clone());
                for difference in check_response(expect, exchange, &echo) {
                    differences.push(format!("{label}{difference}"));
                }
            }
            Err(error) => {
                answered_by.push(None);
                differences.push(format!("{label}request failed: {error}"));
            }
        }
    }
    differences.extend(check_distribution(expect, &answered_by));
    if let Some(expected) = &expect.status_counts {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for outcome in outcomes {
            let key = match outcome {
                Ok(exchange) => exchange.status.to_string(),
                Err(_) => "error".to_owned(),
            };
            *counts.entry(key).or_default() += 1;
        }
        if counts != *expected {
            differences.push(format!(
                "status counts: expected {expected:?}, actual {counts:?}"
            ));
        }
    }

    if differences.len() > MAX_LISTED {
        let more = differences.len() - MAX_LISTED;
        differences.truncate(MAX_LISTED);
        differences.push(format!("... and {more} more differences"));
    }
    differences
}

/// Returns every difference between what a WebSocket client received after its
/// handshake and `expect`. A connection that stayed open past the read deadline is
/// always a difference, because every WebSocket step waits for the end.
pub fn check_websocket(
    expect: &WebSocketExpect,
    session: Option<&WebSocketSession>,
) -> Vec<String> {
    let Some(session) = session else {
        return vec!["websocket: expected a 101 and an open connection".to_owned()];
    };
    let mut differences = Vec::new();
    if session.timed_out {
        let failure = session
            .failure
            .as_deref()
            .unwrap_or("the read deadline passed");
        differences.push(format!("websocket: {failure}"));
    }
    if let Some(expected) = &expect.messages
        && *expected != session.messages
    {
        differences.push(format!(
            "websocket messages: expected {expected:?}, actual {:?}",
            session.messages
        ));
    }
    if let Some(expected) = &expect.close
        && session.close.as_ref() != Some(expected)
    {
        let ending = session.failure.as_deref().unwrap_or("no error");
        differences.push(format!(
            "websocket close: expected {expected:?}, actual {:?} ({ending})",
            session.close
        ));
    }
    if let Some(minimum) = expect.open_at_least_ms
        && session.open_for < std::time::Duration::from_millis(minimum)
    {
        differences.push(format!(
            "websocket: expected the connection to stay open for at least {minimum} ms, \
             it ended after {} ms",
            session.open_for.as_millis()
        ));
    }
    differences
}

/// What the upstream reported about the request it received, when the response came
/// from a test upstream.
#[derive(Debug, Default)]
struct Echo {
    upstream: Option<String>,
    /// The echo JSON; `None` when the body is not an echo (a gateway error, or an
    /// upstream configured with its own body).
    body: Option<Value>,
}

impl Echo {
    fn parse(exchange: &Exchange) -> Self {
        let body = serde_json::from_slice::<Value>(&exchange.body)
            .ok()
            .filter(|value| value.get("upstream").is_some_and(Value::is_string));
        let upstream = body
            .as_ref()
            .and_then(|body| body["upstream"].as_str().map(str::to_owned))
            .or_else(|| {
                exchange
                    .headers
                    .get(UPSTREAM_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
            });
        Self { upstream, body }
    }

    /// Returns the echo body or the reason it is missing.
    fn body(&self, exchange: &Exchange) -> Result<&Value, String> {
        self.body.as_ref().ok_or_else(|| {
            format!(
                "no echo from a test upstream; the response was {} with body {}",
                exchange.status,
                excerpt(&exchange.body)
            )
        })
    }

    /// Returns the combined value of `name` as the upstream received it.
    fn header(body: &Value, name: &str) -> Option<String> {
        match &body["headers"][name.to_ascii_lowercase()] {
            Value::String(value) => Some(value.clone()),
            Value::Array(values) => Some(
                values
                    .iter()
                    .map(|value| value.as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            _ => None,
        }
    }
}

fn check_response(expect: &Expect, exchange: &Exchange, echo: &Echo) -> Vec<String> {
    let mut differences = Vec::new();
    if let Some(status) = expect.status
        && status != exchange.status
    {
        differences.push(format!(
            "status: expected {status}, actual {} (body {})",
            exchange.status,
            excerpt(&exchange.body)
        ));
    }
    check_headers(
        "response header",
        &expect.headers,
        &expect.headers_absent,
        &expect.header_formats,
        |name| combined(&exchange.headers, name),
        &mut differences,
    );
    for (name, pattern) in &expect.header_patterns {
        let actual_value = combined(&exchange.headers, name);
        if !actual_value
            .as_deref()
            .is_some_and(|value| matches_pattern(pattern, value))
        {
            differences.push(format!(
                "response header {name}: expected {pattern:?}, actual {}",
                describe(actual_value.as_deref())
            ));
        }
    }
    if let Some(expected) = &expect.problem_type {
        differences.extend(check_problem(expected, exchange));
    }
    if let Some(expected) = expect.body_length
        && expected != exchange.body.len()
    {
        differences.push(format!(
            "body length: expected {expected}, actual {}",
            exchange.body.len()
        ));
    }
    if let Some(expected) = &expect.body {
        let actual = String::from_utf8_lossy(&exchange.body);
        if !same_body(expected, &actual) {
            differences.push(format!(
                "response body: expected {expected:?}, actual {actual:?}"
            ));
        }
    }
    if !expect.body_json.is_empty() {
        differences.extend(check_body_json(&expect.body_json, exchange));
    }
    if let Some(expected) = &expect.problem_detail_contains {
        let detail = serde_json::from_slice::<Value>(&exchange.body)
            .ok()
            .and_then(|body| body["detail"].as_str().map(str::to_owned));
        if !detail
            .as_deref()
            .is_some_and(|detail| detail.contains(expected))
        {
            differences.push(format!(
                "problem detail: expected text {expected:?}, actual {}",
                describe(detail.as_deref())
            ));
        }
    }
    if let Some(expected) = &expect.upstream
        && echo.upstream.as_ref() != Some(expected)
    {
        differences.push(format!(
            "upstream: expected {expected:?}, actual {} (status {})",
            describe(echo.upstream.as_deref()),
            exchange.status
        ));
    }

    let needs_echo = expect.upstream_path.is_some()
        || expect.upstream_query.is_some()
        || !expect.upstream_headers.is_empty()
        || !expect.upstream_headers_absent.is_empty()
        || !expect.upstream_header_formats.is_empty()
        || expect.upstream_body.is_some();
    if !needs_echo {
        return differences;
    }
    let body = match echo.body(exchange) {
        Ok(body) => body,
        Err(reason) => {
            differences.push(format!("upstream request: {reason}"));
            return differences;
        }
    };
    if let Some(expected) = &expect.upstream_path {
        let actual = body["path"].as_str();
        if actual != Some(expected.as_str()) {
            differences.push(format!(
                "upstream path: expected {expected:?}, actual {}",
                describe(actual)
            ));
        }
    }
    if let Some(expected) = &expect.upstream_query {
        let actual = body["query"].as_str();
        if actual != Some(expected.as_str()) {
            differences.push(format!(
                "upstream query: expected {expected:?}, actual {}",
                describe(actual)
            ));
        }
    }
    if let Some(expected) = &expect.upstream_body {
        let actual = body["body"].as_str().unwrap_or_default();
        if !same_body(expected, actual) {
            differences.push(format!(
                "upstream body: expected {expected:?}, actual {actual:?}"
            ));
        }
    }
    check_headers(
        "upstream request header",
        &expect.upstream_headers,
        &expect.upstream_headers_absent,
        &expect.upstream_header_formats,
        |name| Echo::header(body, name),
        &mut differences,
    );
    differences
}

/// Compares bodies as JSON values when `expected` is JSON, so key order and spacing
/// do not matter, and as text otherwise.
/// Compares the values at JSON pointers into the response body with the expected
/// JSON texts.
fn check_body_json(expected: &BTreeMap<String, String>, exchange: &Exchange) -> Vec<String> {
    let body = match serde_json::from_slice::<Value>(&exchange.body) {
        Ok(body) => body,
        Err(error) => {
            return vec![format!(
                "response body is not JSON ({error}), so body_json cannot be checked: {}",
                excerpt(&exchange.body)
            )];
        }
    };
    let mut differences = Vec::new();
    for (pointer, text) in expected {
        // The scenario loader checked that every expected value is JSON text.
        let expected_value = serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        match body.pointer(pointer) {
            Some(actual) if *actual == expected_value => {}
            Some(actual) => differences.push(format!(
                "response body at {pointer:?}: expected {text}, actual {actual}"
            )),
            None => differences.push(format!(
                "response body has no value at {pointer:?}; expected {text}; body {}",
                excerpt(&exchange.body)
            )),
        }
    }
    differences
}

fn same_body(expected: &str, actual: &str) -> bool {
    match serde_json::from_str::<Value>(expected) {
        Ok(expected) => {
            serde_json::from_str::<Value>(actual).is_ok_and(|actual| actual == expected)
        }
        Err(_) => expected == actual,
    }
}

fn check_headers(
    subject: &str,
    expected: &BTreeMap<String, HeaderValues>,
    absent: &[String],
    formats: &BTreeMap<String, ValueFormat>,
    actual: impl Fn(&str) -> Option<String>,
    differences: &mut Vec<String>,
) {
    for (name, values) in expected {
        let expected_value = values.combined();
        let actual_value = actual(name);
        if actual_value.as_deref() != Some(expected_value.as_str()) {
            differences.push(format!(
                "{subject} {name}: expected {expected_value:?}, actual {}",
                describe(actual_value.as_deref())
            ));
        }
    }
    for name in absent {
        if let Some(value) = actual(name) {
            differences.push(format!(
                "{subject} {name}: expected absent, actual {value:?}"
            ));
        }
    }
    for (name, format) in formats {
        let actual_value = actual(name);
        if !actual_value
            .as_deref()
            .is_some_and(|value| format.matches(value))
        {
            differences.push(format!(
                "{subject} {name}: expected a {format:?} value, actual {}",
                describe(actual_value.as_deref())
            ));
        }
    }
}

/// Returns whether `value` matches `pattern`, in which each `{MIN..MAX}` matches a
/// whole number from MIN to MAX inclusive and all other text matches itself. A `{`
/// that does not start such a range is literal text.
fn matches_pattern(pattern: &str, value: &str) -> bool {
    let Some(start) = pattern.find('{') else {
        return pattern == value;
    };
    let (literal, rest) = pattern.split_at(start);
    let Some(value) = value.strip_prefix(literal) else {
        return false;
    };
    let range = rest[1..].split_once('}').and_then(|(range, after)| {
        let (min, max) = range.split_once("..")?;
        Some((min.parse::<u64>().ok()?, max.parse::<u64>().ok()?, after))
    });
    let Some((min, max, pattern_after)) = range else {
        // Not a range: the brace is literal text.
        return value
            .strip_prefix('{')
            .is_some_and(|value| matches_pattern(&rest[1..], value));
    };
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (number, value_after) = value.split_at(digits);
    number
        .parse::<u64>()
        .is_ok_and(|number| (min..=max).contains(&number))
        && matches_pattern(pattern_after, value_after)
}

fn check_problem(expected: &str, exchange: &Exchange) -> Vec<String> {
    let problem_type = serde_json::from_slice::<Value>(&exchange.body)
        .ok()
        .and_then(|body| body["type"].as_str().map(str::to_owned));
    if problem_type.as_deref() != Some(expected) {
        return vec![format!(
            "problem type: expected {expected:?}, actual {}",
            describe(problem_type.as_deref())
        )];
    }
    // Only a body with the right type is worth checking further; otherwise the line
    // above already names the problem.
    let content_type = combined(&exchange.headers, "content-type");
    if content_type.as_deref() != Some(gatehouse_core::respond::PROBLEM_CONTENT_TYPE) {
        return vec![format!(
            "content-type: expected {:?} for a problem, actual {}",
            gatehouse_core::respond::PROBLEM_CONTENT_TYPE,
            describe(content_type.as_deref())
        )];
    }
    Vec::new()
}

/// Checks the expectations about which upstreams responded to the repeats.
fn check_distribution(expect: &Expect, answered_by: &[Option<String>]) -> Vec<String> {
    let mut differences = Vec::new();
    let names: Vec<&str> = answered_by
        .iter()
        .map(|name| name.as_deref().unwrap_or("(none)"))
        .collect();

    if let Some(expected) = &expect.upstream_sequence
        && names != *expected
    {
        differences.push(format!(
            "upstream sequence: expected {expected:?}, actual {names:?}"
        ));
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &names {
        *counts.entry(name).or_default() += 1;
    }
    if let Some(expected) = &expect.upstream_counts {
        let mut all_names: Vec<&str> = expected.keys().map(String::as_str).collect();
        all_names.extend(counts.keys().copied());
        all_names.sort_unstable();
        all_names.dedup();
        let within = all_names.iter().all(|name| {
            let want = expected.get(*name).copied().unwrap_or(0);
            let got = counts.get(name).copied().unwrap_or(0);
            want.abs_diff(got) <= expect.counts_tolerance
        });
        if !within {
            differences.push(format!(
                "upstream counts: expected {expected:?} (tolerance {}), actual {counts:?}",
                expect.counts_tolerance
            ));
        }
    }
    for name in &expect.upstreams_reached {
        if !counts.contains_key(name.as_str()) {
            differences.push(format!(
                "upstreams reached: expected {name:?} to answer at least once, actual {counts:?}"
            ));
        }
    }
    if expect.same_upstream && counts.len() > 1 {
        differences.push(format!(
            "same upstream: expected one upstream to answer every repeat, actual {counts:?}"
        ));
    }
    differences
}

/// Returns the values of header `name`, joined with `", "` as HTTP combines field lines.
fn combined(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn describe(value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "absent".to_owned(),
    }
}

/// Shows the start of a body in a difference message.
fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let ellipsis = if body.len() > MAX { "..." } else { "" };
    format!("{text:?}{ellipsis}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests report failures by panicking")]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn exchange(status: u16, body: &str) -> Exchange {
        Exchange {
            status,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        }
    }

    fn echo_from(upstream: &str) -> Result<Exchange, String> {
        Ok(exchange(
            200,
            &format!(
                r#"{{"upstream":"{upstream}","path":"/x","headers":{{"via":["1.0 a","1.1 gatehouse"]}}}}"#
            ),
        ))
    }

    #[test]
    fn matching_step_has_no_differences() {
        let expect = Expect {
            status: Some(200),
            upstream: Some("a".to_owned()),
            upstream_path: Some("/x".to_owned()),
            upstream_headers: BTreeMap::from([(
                "via".to_owned(),
                HeaderValues::One("1.0 a, 1.1 gatehouse".to_owned()),
            )]),
            ..Expect::default()
        };
        assert_eq!(check_step(&expect, &[echo_from("a")]), Vec::<String>::new());
    }

    #[test]
    fn body_json_pointers_checked() {
        let expect = Expect {
            body_json: BTreeMap::from([
                ("/user/id".to_owned(), "7".to_owned()),
                ("/orders".to_owned(), "null".to_owned()),
                ("/team".to_owned(), "null".to_owned()),
                ("/user/name".to_owned(), r#""ada""#.to_owned()),
            ]),
            ..Expect::default()
        };
        let body = r#"{"user": {"id": 7, "name": "bob"}, "orders": null}"#;
        let differences = check_step(&expect, &[Ok(exchange(200, body))]);
        assert_eq!(differences.len(), 2, "{differences:?}");
        assert!(
            differences[0].contains("no value at \"/team\""),
            "{differences:?}"
        );
        assert!(
            differences[1].contains(r#"expected "ada", actual "bob""#),
            "{differences:?}"
        );
    }

    #[test]
    fn header_pattern_ranges_inclusive() {
        let pattern = r#""client";r=0;t={55..60}"#;
        for value in [r#""client";r=0;t=55"#, r#""client";r=0;t=60"#] {
            assert!(matches_pattern(pattern, value), "{value}");
        }
        for value in [
            r#""client";r=0;t=54"#,
            r#""client";r=0;t=61"#,
            r#""client";r=1;t=58"#,
            r#""client";r=0;t="#,
            r#""client";r=0;t=58;x"#,
        ] {
            assert!(!matches_pattern(pattern, value), "{value}");
        }
        assert!(matches_pattern("{0..1}", "0"));
        assert!(!matches_pattern("{0..1}", "two"));
        assert!(matches_pattern("a{b}", "a{b}"));
        assert!(!matches_pattern("a{b}", "a{c}"));
    }

    #[test]
    fn header_pattern_difference_reported() {
        let expect = Expect {
            header_patterns: BTreeMap::from([("age".to_owned(), "{2..5}".to_owned())]),
            ..Expect::default()
        };
        let with_age = |age: &str| {
            let mut response = exchange(200, "");
            response
                .headers
                .insert("age", age.parse().expect("header value"));
            Ok(response)
        };
        let differences = check_step(&expect, &[with_age("3")]);
        assert_eq!(differences, Vec::<String>::new());
        let differences = check_step(&expect, &[with_age("6")]);
        assert_eq!(differences.len(), 1, "{differences:?}");
        assert!(
            differences[0].contains(r#"expected "{2..5}", actual "6""#),
            "{differences:?}"
        );
        let differences = check_step(&expect, &[Ok(exchange(200, ""))]);
        assert_eq!(differences.len(), 1, "{differences:?}");
        assert!(differences[0].ends_with("actual absent"), "{differences:?}");
    }

    #[test]
    fn each_difference_reported() {
        let expect = Expect {
            status: Some(404),
            upstream_path: Some("/y".to_owned()),
            upstream_headers_absent: vec!["via".to_owned()],
            ..Expect::default()
        };
        let differences = check_step(&expect, &[echo_from("a")]);
        assert_eq!(differences.len(), 3, "{differences:?}");
        assert!(differences[0].starts_with("status: expected 404, actual 200"));
        assert!(differences[1].contains("expected \"/y\", actual \"/x\""));
        assert!(differences[2].contains("expected absent"));
    }

    #[test]
    fn sequence_and_counts_checked() {
        let expect = Expect {
            upstream_sequence: Some(vec!["a".to_owned(), "b".to_owned()]),
            upstream_counts: Some(BTreeMap::from([("a".to_owned(), 2)])),
            same_upstream: true,
            ..Expect::default()
        };
        let differences = check_step(&expect, &[echo_from("a"), echo_from("a")]);
        assert_eq!(differences.len(), 1, "{differences:?}");
        assert!(differences[0].starts_with("upstream sequence"));
    }

    #[test]
    fn problem_requires_media_type() {
        let expect = Expect {
            problem_type: Some("urn:gatehouse:problem:not-found".to_owned()),
            ..Expect::default()
        };
        let outcome = Ok(exchange(
            404,
            r#"{"type":"urn:gatehouse:problem:not-found"}"#,
        ));
        let differences = check_step(&expect, &[outcome]);
        assert_eq!(differences.len(), 1, "{differences:?}");
        assert!(differences[0].starts_with("content-type"));
    }
}
