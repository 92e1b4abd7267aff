//! The scenario format: one TOML file per topic in `scenarios/`, each with several
//! `[[scenario]]` entries that give a gateway config, the behaviour of the test
//! upstreams, and requests with the responses they must get.
//!
//! Every type rejects unknown keys, so a misspelt expectation fails loudly instead of
//! silently checking nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Names of the targets a scenario may skip. A `skip` key outside this list is an error,
/// so a typo cannot turn a skip into a silent run or the reverse.
pub const TARGET_NAMES: [&str; 4] = ["in_process", "native", "worker", "spin"];

/// One scenario file: the scenarios of one topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// File name relative to the scenario folder, such as `routing.toml`; set by the loader.
    #[serde(skip)]
    pub file: String,
    /// The scenarios, run in file order.
    pub scenario: Vec<Scenario>,
}

/// A gateway config, its test upstreams and the requests sent to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name, unique within its file.
    pub name: String,
    /// `gatehouse.toml` text without listeners. `{{upstream.NAME}}` becomes the
    /// `127.0.0.1:PORT` address of test upstream NAME, `{{unused_port}}` a closed port
    /// and `{{redis.url}}` the URL of a `redis-server` started for this scenario.
    pub config: String,
    /// Test upstreams by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamBehaviour>,
    /// Requests, sent in order to one gateway instance.
    pub steps: Vec<Step>,
    /// Targets that cannot run this scenario, each with the reason printed when skipped.
    #[serde(default)]
    pub skip: BTreeMap<String, String>,
    /// Test-only platform secrets by name, such as an HMAC key that a `jwt` policy
    /// names with `secret = "NAME"`. The native target passes them as environment
    /// variables. `REDIS_PASSWORD` is also the password of the scenario's Redis server.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Test-only entries of the platform's key-value store, loaded before the first
    /// request. A string is stored as its UTF-8 bytes; any other value (such as a
    /// consumer record table) as its compact JSON text. Strings may contain
    /// `{{upstream.NAME}}` and `{{unused_port}}`, replaced as in `config`.
    #[serde(default)]
    pub key_value: BTreeMap<String, serde_json::Value>,
}

impl Scenario {
    /// Tells whether the config names `{{redis.url}}`, so the scenario needs a Redis
    /// server.
    pub fn uses_redis(&self) -> bool {
        placeholders(&self.config).is_ok_and(|keys| keys.contains(&crate::redis::URL_PLACEHOLDER))
    }

    /// Returns the scenario with `{{redis.url}}` replaced by `url` in its config.
    pub fn with_redis_url(&self, url: &str) -> Self {
        let mut config = String::with_capacity(self.config.len());
        let mut rest = self.config.as_str();
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                break;
            };
            config.push_str(&rest[..start]);
            if after[..end].trim() == crate::redis::URL_PLACEHOLDER {
                config.push_str(url);
            } else {
                config.push_str(&rest[start..start + 2 + end + 2]);
            }
            rest = &after[end + 2..];
        }
        config.push_str(rest);
        Self {
            config,
            ..self.clone()
        }
    }

    /// Returns the key-value entries as the text each target stores, with the
    /// placeholders in their strings replaced as in the config ([`render_config`]).
    pub fn key_value_entries(
        &self,
        upstreams: &BTreeMap<String, SocketAddr>,
        unused_port: u16,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut entries = BTreeMap::new();
        for (key, value) in &self.key_value {
            let mut value = value.clone();
            render_strings(&mut value, upstreams, unused_port)
                .map_err(|problem| format!("key-value entry {key:?}: {problem}"))?;
            let text = match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            entries.insert(key.clone(), text);
        }
        Ok(entries)
    }
}

/// Replaces the placeholders in every string of a JSON value.
fn render_strings(
    value: &mut serde_json::Value,
    upstreams: &BTreeMap<String, SocketAddr>,
    unused_port: u16,
) -> Result<(), String> {
    match value {
        serde_json::Value::String(text) => *text = render_config(text, upstreams, unused_port)?,
        serde_json::Value::Array(items) => {
            for item in items {
                render_strings(item, upstreams, unused_port)?;
            }
        }
        serde_json::Value::Object(fields) => {
            for field in fields.values_mut() {
                render_strings(field, upstreams, unused_port)?;
            }
        }
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {}
    }
    Ok(())
}

/// Collects every string of a JSON value.
fn json_strings<'v>(value: &'v serde_json::Value, strings: &mut Vec<&'v str>) {
    match value {
        serde_json::Value::String(text) => strings.push(text),
        serde_json::Value::Array(items) => {
            for item in items {
                json_strings(item, strings);
            }
        }
        serde_json::Value::Object(fields) => {
            for field in fields.values() {
                json_strings(field, strings);
            }
        }
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {}
    }
}

/// What a test upstream does with each request it receives.
///
/// Without `status` and `body` it is an echo server: it responds 200 with a JSON
/// description of the request (see [`crate::behaviour::echo_json`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamBehaviour {
    /// Response status; 200 when absent.
    pub status: Option<u16>,
    /// Response body; the echo JSON when absent.
    pub body: Option<String>,
    /// Extra response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    /// Time to wait before responding, in milliseconds.
    pub delay: Option<u64>,
    /// Accepts the connection and closes it without responding.
    #[serde(default)]
    pub close: bool,
    /// Protocol the upstream serves.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Response body of this many `x` bytes, in place of `body` or the echo.
    pub body_bytes: Option<usize>,
    /// Answers 304 without a body when the request's `If-None-Match` equals the
    /// upstream's `etag` header or its `If-Modified-Since` equals its `last-modified`
    /// header.
    #[serde(default)]
    pub conditional: bool,
    /// Answers this many requests as configured and every later one with 503.
    pub fail_after: Option<usize>,
    /// Accepts WebSocket handshakes (a request with `Sec-WebSocket-Key`) with `101`
    /// and echoes every text and binary message. It selects the first subprotocol the
    /// client offers in `Sec-WebSocket-Protocol`. A text message `close CODE REASON`
    /// makes it close with that code and reason instead, and it replies to a client's
    /// close with the same code and reason. Other requests get the usual reply.
    #[serde(default)]
    pub websocket: bool,
}

/// Protocol a test upstream serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 over cleartext TCP with prior knowledge.
    H2c,
}

/// One header value or several, in order. Comparisons join several values with `", "`,
/// which is how HTTP combines repeated field lines, so an expectation does not depend on
/// whether a target sends one line or several.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HeaderValues {
    /// A single value.
    One(String),
    /// Several values, sent as separate field lines.
    Many(Vec<String>),
}

impl HeaderValues {
    /// Returns the values as separate field lines.
    pub fn lines(&self) -> Vec<&str> {
        match self {
            Self::One(value) => vec![value.as_str()],
            Self::Many(values) => values.iter().map(String::as_str).collect(),
        }
    }

    /// Returns the values combined into one field value.
    pub fn combined(&self) -> String {
        self.lines().join(", ")
    }
}

/// A request to send, possibly several times, and what every response must show.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Request method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Request target (path and query), sent byte for byte without normalization.
    pub path: String,
    /// Request headers; `host` defaults to `localhost`.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    /// Request body.
    pub body: Option<String>,
    /// Sends the body in chunks of [`crate::target::CHUNK_BYTES`] without
    /// `Content-Length`: chunked transfer coding on HTTP/1.1, DATA frames on HTTP/2.
    #[serde(default)]
    pub chunked: bool,
    /// Sends the request over HTTP/2 with prior knowledge instead of HTTP/1.1.
    #[serde(default)]
    pub http2: bool,
    /// Number of times to send the request.
    #[serde(default = "default_repeat")]
    pub repeat: usize,
    /// Sends all repeats at once instead of one after another, so that they are in
    /// flight together (for balancers that look at outstanding requests).
    #[serde(default)]
    pub concurrent: bool,
    /// Time to let pass before sending, in milliseconds: the in-process clock
    /// advances by it, and targets in other processes sleep.
    #[serde(default)]
    pub wait_ms: u64,
    /// Opens a WebSocket: the request becomes a handshake (the runner adds
    /// `Connection`, `Upgrade`, `Sec-WebSocket-Version` and `Sec-WebSocket-Key`
    /// unless the step sets them), and after a `101` the actions run in order. The
    /// runner then reads until the connection ends, within
    /// [`crate::client::REQUEST_TIMEOUT`], and `expect.websocket` checks what arrived.
    pub websocket: Option<Vec<WebSocketAction>>,
    /// What each response, and the repeats together, must show.
    #[serde(default)]
    pub expect: Expect,
}

/// One thing a WebSocket step does after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WebSocketAction {
    /// Sends a text message.
    Text(String),
    /// Sends a binary message with these bytes.
    Binary(Vec<u8>),
    /// Sends a close frame; the runner keeps reading for the reply.
    Close(CloseFrame),
    /// Sends nothing for this many milliseconds.
    WaitMs(u64),
}

/// The code and reason of a WebSocket close frame.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseFrame {
    /// Close code (RFC 6455 section 7.4).
    pub code: u16,
    /// Close reason, at most 123 bytes.
    #[serde(default)]
    pub reason: String,
}

/// A WebSocket data message as received.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WebSocketMessage {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

/// What a WebSocket step must receive after its handshake. Absent fields are not
/// checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketExpect {
    /// Every data message received, in order.
    pub messages: Option<Vec<WebSocketMessage>>,
    /// The close frame received, whose code and reason must match.
    pub close: Option<CloseFrame>,
    /// Minimum time from the handshake to the end of the connection, in milliseconds.
    pub open_at_least_ms: Option<u64>,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_repeat() -> usize {
    1
}

/// Expectations on the responses of one step. Absent fields are not checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Response status.
    pub status: Option<u16>,
    /// Exact response header values.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    /// Response headers that must be missing.
    #[serde(default)]
    pub headers_absent: Vec<String>,
    /// Response headers whose value must have a format, for generated values.
    #[serde(default)]
    pub header_formats: BTreeMap<String, ValueFormat>,
    /// Response header values in which each `{MIN..MAX}` matches a whole number from
    /// MIN to MAX inclusive and all other text must match exactly, such as
    /// `'"per-client";r=0;t={55..60}'`. For numbers that count real seconds, such as
    /// `age` or `retry-after`, which a loaded machine can move off an exact value.
    #[serde(default)]
    pub header_patterns: BTreeMap<String, String>,
    /// The `type` of an `application/problem+json` body.
    pub problem_type: Option<String>,
    /// Text that the `detail` of an `application/problem+json` body must contain.
    pub problem_detail_contains: Option<String>,
    /// The response body: equal as JSON when this text is JSON, else byte for byte.
    pub body: Option<String>,
    /// Values at JSON pointers into the response body, each written as JSON text
    /// (`'"ada"'`, `'null'`, `'[1, 2]'`) and compared as JSON. A pointer the body
    /// lacks is a difference, even for `'null'`.
    #[serde(default)]
    pub body_json: BTreeMap<String, String>,
    /// The body the upstream received, compared like `body`.
    pub upstream_body: Option<String>,
    /// The test upstream that answered.
    pub upstream: Option<String>,
    /// The path the upstream received, without the query.
    pub upstream_path: Option<String>,
    /// The query the upstream received, without `?`.
    pub upstream_query: Option<String>,
    /// Exact header values the upstream received.
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, HeaderValues>,
    /// Headers the upstream must not have received.
    #[serde(default)]
    pub upstream_headers_absent: Vec<String>,
    /// Headers the upstream received whose value must have a format.
    #[serde(default)]
    pub upstream_header_formats: BTreeMap<String, ValueFormat>,
    /// The upstream that answered each repeat, in sending order.
    pub upstream_sequence: Option<Vec<String>>,
    /// How many repeats each upstream answered; unlisted upstreams must answer none.
    pub upstream_counts: Option<BTreeMap<String, usize>>,
    /// How many repeats got each status, keyed by the status as text; unlisted
    /// statuses must not occur. Requests that failed count under `"error"`.
    pub status_counts: Option<BTreeMap<String, usize>>,
    /// Allowed difference between an actual and an expected count in `upstream_counts`.
    #[serde(default)]
    pub counts_tolerance: usize,
    /// Upstreams that must each answer at least one repeat.
    #[serde(default)]
    pub upstreams_reached: Vec<String>,
    /// All repeats must be answered by one upstream.
    #[serde(default)]
    pub same_upstream: bool,
    /// Requests each listed upstream has received since the scenario started,
    /// counted after the step.
    pub upstream_requests: Option<BTreeMap<String, usize>>,
    /// Exact length of the response body, in bytes.
    pub body_length: Option<usize>,
    /// What a `websocket` step receives after its handshake.
    pub websocket: Option<WebSocketExpect>,
}

/// A format that a generated header value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// 36 characters: lowercase hex digits in groups of 8-4-4-4-12 joined by `-`.
    Uuid,
}

impl ValueFormat {
    /// Returns whether `value` has this format.
    pub fn matches(self, value: &str) -> bool {
        match self {
            Self::Uuid => {
                value.len() == 36
                    && value.char_indices().all(|(index, c)| match index {
                        8 | 13 | 18 | 23 => c == '-',
                        _ => matches!(c, '0'..='9' | 'a'..='f'),
                    })
            }
        }
    }
}

/// Returns the folder that contains the scenario files of this crate.
pub fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Loads and checks every `*.toml` file in `dir`, in file-name order.
///
/// Returns every problem found, each naming its file and scenario, rather than
/// stopping at the first.
pub fn load_dir(dir: &Path) -> Result<Vec<ScenarioFile>, Vec<String>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|error| vec![format!("failed to read {}: {error}", dir.display())])?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(vec![format!("no scenario files in {}", dir.display())]);
    }

    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse_file(&name, &text) {
                Ok(file) => files.push(file),
                Err(file_problems) => problems.extend(file_problems),
            },
            Err(error) => problems.push(format!("failed to read {}: {error}", path.display())),
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(problems)
    }
}

/// Parses and checks one scenario file; `name` prefixes every problem.
pub fn parse_file(name: &str, text: &str) -> Result<ScenarioFile, Vec<String>> {
    let mut file: ScenarioFile =
        toml::from_str(text).map_err(|error| vec![format!("{name}: {error}")])?;
    file.file = name.to_owned();

    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for scenario in &file.scenario {
        if !names.insert(scenario.name.as_str()) {
            problems.push(format!(
                "{name}: duplicate scenario name {:?}",
                scenario.name
            ));
        }
        for problem in check_scenario(scenario) {
            problems.push(format!("{name}: scenario {:?}: {problem}", scenario.name));
        }
    }
    if problems.is_empty() {
        Ok(file)
    } else {
        Err(problems)
    }
}

/// Finds references to undefined upstreams, unknown targets and impossible
/// expectations, which would otherwise make a scenario fail or pass for the wrong reason.
fn check_scenario(scenario: &Scenario) -> Vec<String> {
    let mut problems = Vec::new();
    let defined = |name: &str| scenario.upstreams.contains_key(name);

    for target in scenario.skip.keys() {
        if !TARGET_NAMES.contains(&target.as_str()) {
            problems.push(format!(
                "skip names unknown target {target:?}; known targets: {}",
                TARGET_NAMES.join(", ")
            ));
        }
    }
    match placeholders(&scenario.config) {
        Ok(keys) => {
            for key in keys {
                let known = match key.strip_prefix("upstream.") {
                    Some(upstream) => defined(upstream),
                    None => key == "unused_port" || key == crate::redis::URL_PLACEHOLDER,
                };
                if !known {
                    problems.push(format!(
                        "config uses {{{{{key}}}}}, which names no test upstream"
                    ));
                }
            }
        }
        Err(problem) => problems.push(problem),
    }
    for (entry, value) in &scenario.key_value {
        let mut strings = Vec::new();
        json_strings(value, &mut strings);
        for text in strings {
            match placeholders(text) {
                Ok(keys) => {
                    for key in keys {
                        let known = match key.strip_prefix("upstream.") {
                            Some(upstream) => defined(upstream),
                            None => key == "unused_port",
                        };
                        if !known {
                            problems.push(format!(
                                "key-value entry {entry:?} uses {{{{{key}}}}}, which names no \
                                 test upstream"
                            ));
                        }
                    }
                }
                Err(problem) => problems.push(format!("key-value entry {entry:?}: {problem}")),
            }
        }
    }
    for (upstream, behaviour) in &scenario.upstreams {
        if let Some(status) = behaviour.status
            && !(100..=999).contains(&status)
        {
            problems.push(format!("upstream {upstream:?} has invalid status {status}"));
        }
    }
    if scenario.steps.is_empty() {
        problems.push("has no steps".to_owned());
    }

    for (index, step) in scenario.steps.iter().enumerate() {
        let mut step_problem = |problem: String| {
            problems.push(format!("step {}: {problem}", index + 1));
        };
        if step.repeat == 0 {
            step_problem("repeat must be at least 1".to_owned());
        }
        if http::Method::from_bytes(step.method.as_bytes()).is_err() {
            step_problem(format!("invalid method {:?}", step.method));
        }
        if step.chunked && step.body.is_none() {
            step_problem("chunked needs a body".to_owned());
        }
        if let Some(actions) = &step.websocket {
            if step.repeat != 1 || step.concurrent || step.http2 || step.body.is_some() {
                step_problem(
                    "a websocket step takes no repeat, concurrent, http2 or body".to_owned(),
                );
            }
            for action in actions {
                if let WebSocketAction::Close(frame) = action
                    && frame.reason.len() > 123
                {
                    step_problem("a close reason has at most 123 bytes".to_owned());
                }
            }
        } else if step.expect.websocket.is_some() {
            step_problem("expect.websocket needs a websocket step".to_owned());
        }
        if !step.path.starts_with('/') {
            step_problem(format!("path {:?} must start with '/'", step.path));
        }
        let expect = &step.expect;
        let mut named: Vec<&String> = expect.upstream.iter().collect();
        named.extend(expect.upstream_sequence.iter().flatten());
        named.extend(
            expect
                .upstream_counts
                .iter()
                .flat_map(|counts| counts.keys()),
        );
        named.extend(&expect.upstreams_reached);
        named.extend(
            expect
                .upstream_requests
                .iter()
                .flat_map(|requests| requests.keys()),
        );
        for upstream in named {
            if !defined(upstream) {
                step_problem(format!(
                    "expects upstream {upstream:?}, which is not defined"
                ));
            }
        }
        if let Some(sequence) = &expect.upstream_sequence
            && sequence.len() != step.repeat
        {
            step_problem(format!(
                "upstream_sequence lists {} upstreams for {} repeats",
                sequence.len(),
                step.repeat
            ));
        }
        for (pointer, value) in &expect.body_json {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                step_problem(format!(
                    "body_json pointer {pointer:?} must be empty or start with '/'"
                ));
            }
            if let Err(error) = serde_json::from_str::<serde_json::Value>(value) {
                step_problem(format!(
                    "body_json value {value:?} at {pointer:?} is not JSON text: {error}"
                ));
            }
        }
        if let Some(counts) = &expect.upstream_counts
            && expect.counts_tolerance == 0
            && counts.values().sum::<usize>() != step.repeat
        {
            step_problem(format!(
                "upstream_counts add up to {} for {} repeats",
                counts.values().sum::<usize>(),
                step.repeat
            ));
        }
    }
    problems
}

/// Returns the keys of the `{{...}}` placeholders in `text`.
fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "config has a '{{' without a closing '}}'".to_owned())?;
        keys.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    Ok(keys)
}

/// Replaces the placeholders of a scenario config with the addresses of its upstreams.
pub fn render_config(
    config: &str,
    upstreams: &BTreeMap<String, SocketAddr>,
    unused_port: u16,
) -> Result<String, String> {
    let mut rendered = String::with_capacity(config.len());
    let mut rest = config;
    while let Some(start) = rest.find("{{") {
        rendered.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "config has a '{{' without a closing '}}'".to_owned())?;
        let key = after[..end].trim();
        if key == "unused_port" {
            let _ = write!(rendered, "{unused_port}");
        } else {
            let address = key
                .strip_prefix("upstream.")
                .and_then(|name| upstreams.get(name))
                .ok_or_else(|| format!("config placeholder {{{{{key}}}}} names no upstream"))?;
            let _ = write!(rendered, "{address}");
        }
        rest = &after[end + 2..];
    }
    rendered.push_str(rest);
    Ok(rendered)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests report failures by panicking")]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[scenario]]
        name = "echo"
        config = '''
        [upstreams.main]
        endpoints = [{ address = "{{upstream.a}}" }]
        '''
        [scenario.upstreams.a]
        [[scenario.steps]]
        path = "/"
        expect = { status = 200, upstream = "a" }
    "#;

    #[test]
    fn minimal_file_parses() {
        let file = parse_file("minimal.toml", MINIMAL).unwrap();
        let step = &file.scenario[0].steps[0];
        assert_eq!(step.method, "GET");
        assert_eq!(step.repeat, 1);
        assert_eq!(step.expect.upstream.as_deref(), Some("a"));
    }

    #[test]
    fn unknown_expectation_rejected() {
        let text = MINIMAL.replace("upstream = \"a\"", "upstrem = \"a\"");
        let problems = parse_file("typo.toml", &text).unwrap_err();
        assert!(problems[0].contains("upstrem"), "{problems:?}");
    }

    #[test]
    fn undefined_upstream_rejected() {
        let text = MINIMAL.replace("{{upstream.a}}", "{{upstream.b}}");
        let problems = parse_file("undefined.toml", &text).unwrap_err();
        assert!(problems[0].contains("upstream.b"), "{problems:?}");
    }

    #[test]
    fn unknown_skip_target_rejected() {
        let text = MINIMAL.replace(
            "[scenario.upstreams.a]",
            "skip = { nativ = \"x\" }\n[scenario.upstreams.a]",
        );
        let problems = parse_file("skip.toml", &text).unwrap_err();
        assert!(problems[0].contains("nativ"), "{problems:?}");
    }

    #[test]
    fn websocket_step_parses() {
        let text = MINIMAL.replace(
            "expect = { status = 200, upstream = \"a\" }",
            "websocket = [{ text = \"hi\" }, { binary = [0, 255] }, { wait_ms = 5 }, \
             { close = { code = 4000, reason = \"done\" } }]\n\
             expect = { status = 101, websocket = { messages = [{ text = \"hi\" }], \
             close = { code = 4000, reason = \"done\" } } }",
        );
        let file = parse_file("websocket.toml", &text).unwrap();
        let step = &file.scenario[0].steps[0];
        let actions = step.websocket.as_ref().unwrap();
        assert_eq!(actions[0], WebSocketAction::Text("hi".to_owned()));
        assert_eq!(actions[1], WebSocketAction::Binary(vec![0, 255]));
        assert_eq!(actions[2], WebSocketAction::WaitMs(5));
        let expected_close = CloseFrame {
            code: 4000,
            reason: "done".to_owned(),
        };
        assert_eq!(actions[3], WebSocketAction::Close(expected_close.clone()));
        let expect = step.expect.websocket.as_ref().unwrap();
        assert_eq!(expect.close, Some(expected_close));
    }

    #[test]
    fn websocket_expectation_needs_step() {
        let text = MINIMAL.replace(
            "expect = { status = 200, upstream = \"a\" }",
            "expect = { status = 101, websocket = { messages = [] } }",
        );
        let problems = parse_file("websocket.toml", &text).unwrap_err();
        assert!(problems[0].contains("expect.websocket"), "{problems:?}");
    }

    #[test]
    fn config_placeholders_rendered() {
        let upstreams = BTreeMap::from([("a".to_owned(), "127.0.0.1:4000".parse().unwrap())]);
        let rendered = render_config(
            "x = \"{{upstream.a}}\" y = {{ unused_port }}",
            &upstreams,
            9,
        )
        .unwrap();
        assert_eq!(rendered, "x = \"127.0.0.1:4000\" y = 9");
    }

    #[test]
    fn redis_placeholder_replaced_first() {
        let text = MINIMAL.replace(
            "[upstreams.main]",
            "[stores.shared.redis]\n        url = \"{{ redis.url }}\"\n        [upstreams.main]",
        );
        let file = parse_file("redis.toml", &text).unwrap();
        let scenario = &file.scenario[0];
        assert!(scenario.uses_redis());
        let rendered = scenario.with_redis_url("redis://127.0.0.1:7000/0");
        assert!(!rendered.uses_redis());
        assert!(
            rendered
                .config
                .contains("url = \"redis://127.0.0.1:7000/0\""),
            "{}",
            rendered.config
        );
        assert!(
            rendered.config.contains("{{upstream.a}}"),
            "{}",
            rendered.config
        );
        assert!(!parse_file("minimal.toml", MINIMAL).unwrap().scenario[0].uses_redis());
    }

    #[test]
    fn uuid_format_checked() {
        assert!(ValueFormat::Uuid.matches("123e4567-e89b-42d3-a456-426614174000"));
        assert!(!ValueFormat::Uuid.matches("123e4567e89b42d3a456426614174000"));
        assert!(!ValueFormat::Uuid.matches("123E4567-E89B-42D3-A456-426614174000"));
    }

    #[test]
    fn key_value_placeholders_rendered() {
        let text = format!(
            "{MINIMAL}\n        [scenario.key_value]\n        \
             \"plain\" = \"{{{{upstream.a}}}}\"\n        \
             \"record\" = {{ endpoints = [{{ address = \"{{{{upstream.a}}}}\" }}] }}\n"
        );
        let file = parse_file("key_value.toml", &text).unwrap();
        let address: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let upstreams = BTreeMap::from([("a".to_owned(), address)]);
        let entries = file.scenario[0].key_value_entries(&upstreams, 1).unwrap();
        assert_eq!(entries["plain"], "127.0.0.1:4000");
        assert_eq!(
            entries["record"],
            r#"{"endpoints":[{"address":"127.0.0.1:4000"}]}"#
        );
    }

    #[test]
    fn key_value_unknown_upstream_rejected() {
        let text = format!(
            "{MINIMAL}\n        [scenario.key_value]\n        \
             \"plain\" = \"{{{{upstream.zz}}}}\"\n"
        );
        let problems = parse_file("key_value.toml", &text).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("upstream.zz"), "{problems:?}");
    }
}
