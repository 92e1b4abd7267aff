//! Validation of route configs, which reports every problem with its config path.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use http::{HeaderName, HeaderValue, Method};

use super::conditions::{Conditions, HeaderCondition, QueryCondition};
use super::forward::{Forward, parse_rewrite};
use super::host::{HostPattern, parse_host};
use super::path_pattern::{PathPattern, parse_template, prefix_segments};
use super::{Precedence, Route};
use crate::config::{ConfigError, MatchConfig, RouteConfig, ValueMatch};
use crate::path::{self, normalize};

/// A problem in one config value, before its path is known.
#[derive(Debug)]
pub(super) struct Problem {
    message: String,
    hint: String,
}

impl Problem {
    pub(super) fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Returns the message and the hint.
    pub(super) fn into_parts(self) -> (String, String) {
        (self.message, self.hint)
    }

    /// Prefixes the message with the invalid value, as in `invalid rewrite "/{": …`.
    pub(super) fn in_value(mut self, what: &str, value: &str) -> Self {
        self.message = format!("invalid {what} {value:?}: {}", self.message);
        self
    }
}

/// A route that passed validation, with what the table needs to index it.
#[derive(Debug)]
pub(super) struct CompiledRoute {
    pub(super) route: Route,
    /// Host patterns without duplicates; empty matches any host.
    pub(super) hosts: Vec<HostPattern>,
    pub(super) path: PathPattern,
}

/// Collects the problems of one route, each at a path under `routes[INDEX]`.
struct Report<'e> {
    base: String,
    errors: &'e mut Vec<ConfigError>,
    failed: bool,
}

impl Report<'_> {
    fn add(&mut self, field: &str, problem: Problem) {
        let path = format!("{}.{field}", self.base);
        self.errors
            .push(ConfigError::new(path, problem.message).with_hint(problem.hint));
        self.failed = true;
    }
}

/// Validates and compiles every route. Returns all problems, in config order, if
/// any route is invalid.
pub(super) fn compile_routes(
    configs: &[RouteConfig],
) -> Result<Vec<CompiledRoute>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut names = HashMap::new();
    let mut compiled = Vec::with_capacity(configs.len());
    for (index, config) in configs.iter().enumerate() {
        let mut report = Report {
            base: format!("routes[{index}]"),
            errors: &mut errors,
            failed: false,
        };
        let name = check_name(index, config, &mut names, &mut report);
        compiled.extend(compile_route(index, config, name, &mut report));
    }
    if errors.is_empty() {
        Ok(compiled)
    } else {
        Err(errors)
    }
}

/// Returns the route's name, reporting an empty name and a name used before.
fn check_name(
    index: usize,
    config: &RouteConfig,
    names: &mut HashMap<String, usize>,
    report: &mut Report<'_>,
) -> String {
    let name = match &config.name {
        Some(name) => name.clone(),
        None => format!("routes[{index}]"),
    };
    if name.is_empty() {
        let hint = format!("remove name to use the default, routes[{index}]");
        report.add("name", Problem::new("empty route name", hint));
        return name;
    }
    match names.entry(name.clone()) {
        Entry::Occupied(first) => {
            let hint = format!(
                "routes[{}] has the same name, so give each route a distinct name",
                first.get()
            );
            report.add(
                "name",
                Problem::new(format!("duplicate route name {name:?}"), hint),
            );
        }
        Entry::Vacant(slot) => {
            slot.insert(index);
        }
    }
    name
}

fn compile_route(
    index: usize,
    config: &RouteConfig,
    name: String,
    report: &mut Report<'_>,
) -> Option<CompiledRoute> {
    let matcher = &config.matcher;
    let hosts = compile_hosts(&matcher.hosts, report);
    let conditions = Conditions {
        methods: compile_methods(&matcher.methods, report),
        headers: compile_headers(&matcher.headers, report),
        query: compile_query(&matcher.query, report),
    };
    let path = compile_path(matcher, report);
    let forward = compile_forward(config, path.as_ref(), report);
    if report.failed {
        return None;
    }
    let path = path?;
    let (path_kind, path_rank) = path.precedence();
    let precedence = Precedence {
        path_kind,
        path_rank,
        has_methods: !conditions.methods.is_empty(),
        header_count: conditions.headers.len(),
        query_count: conditions.query.len(),
        declaration: Reverse(index),
    };
    let route = Route {
        name,
        conditions,
        forward,
        precedence,
    };
    Some(CompiledRoute { route, hosts, path })
}

fn compile_hosts(hosts: &[String], report: &mut Report<'_>) -> Vec<HostPattern> {
    let mut patterns = Vec::with_capacity(hosts.len());
    for (index, text) in hosts.iter().enumerate() {
        match parse_host(text) {
            Ok(pattern) if patterns.contains(&pattern) => {}
            Ok(pattern) => patterns.push(pattern),
            Err(problem) => report.add(&format!("match.hosts[{index}]"), problem),
        }
    }
    patterns
}

/// Uppercases and parses methods. Any RFC 9110 token is accepted, so extension
/// methods such as `PURGE` work.
fn compile_methods(methods: &[String], report: &mut Report<'_>) -> Vec<Method> {
    let mut parsed = Vec::with_capacity(methods.len());
    for (index, text) in methods.iter().enumerate() {
        match Method::from_bytes(text.to_ascii_uppercase().as_bytes()) {
            Ok(method) if parsed.contains(&method) => {}
            Ok(method) => parsed.push(method),
            Err(_) => report.add(
                &format!("match.methods[{index}]"),
                Problem::new(
                    format!("invalid method {text:?}"),
                    "a method is a token such as GET, POST or PURGE, without spaces",
                ),
            ),
        }
    }
    parsed
}

fn compile_headers(headers: &[ValueMatch], report: &mut Report<'_>) -> Vec<HeaderCondition> {
    headers
        .iter()
        .enumerate()
        .filter_map(|(index, header)| compile_header(index, header, report))
        .collect()
}

fn compile_header(
    index: usize,
    header: &ValueMatch,
    report: &mut Report<'_>,
) -> Option<HeaderCondition> {
    let name = HeaderName::from_bytes(header.name.as_bytes());
    if name.is_err() {
        let problem = Problem::new(
            format!("invalid header name {:?}", header.name),
            "a header name is a token such as x-tenant, without spaces or ':'",
        );
        report.add(&format!("match.headers[{index}].name"), problem);
    }
    let value = match &header.value {
        None => Ok(None),
        Some(text) => HeaderValue::from_bytes(text.as_bytes()).map(Some),
    };
    if value.is_err() {
        let problem = Problem::new(
            format!(
                "invalid header value {:?}",
                header.value.as_deref().unwrap_or_default()
            ),
            "a header value cannot contain control characters such as line breaks",
        );
        report.add(&format!("match.headers[{index}].value"), problem);
    }
    Some(HeaderCondition {
        name: name.ok()?,
        value: value.ok()?,
    })
}

fn compile_query(query: &[ValueMatch], report: &mut Report<'_>) -> Vec<QueryCondition> {
    let mut conditions = Vec::with_capacity(query.len());
    for (index, parameter) in query.iter().enumerate() {
        if parameter.name.is_empty() {
            let problem = Problem::new(
                "empty query parameter name",
                "set the parameter name, as in name = \"version\"",
            );
            report.add(&format!("match.query[{index}].name"), problem);
            continue;
        }
        conditions.push(QueryCondition {
            name: parameter.name.clone(),
            value: parameter.value.clone(),
        });
    }
    conditions
}

/// Compiles the path condition. Returns `None` if it is invalid.
fn compile_path(matcher: &MatchConfig, report: &mut Report<'_>) -> Option<PathPattern> {
    let fields = [
        ("path", &matcher.path),
        ("path_prefix", &matcher.path_prefix),
        ("path_template", &matcher.path_template),
    ];
    let set: Vec<(&str, &str)> = fields
        .iter()
        .filter_map(|(field, value)| value.as_deref().map(|value| (*field, value)))
        .collect();
    let patterns: Vec<Option<PathPattern>> = set
        .iter()
        .map(|&(field, text)| compile_path_field(field, text, report))
        .collect();
    if let Some(((last, _), others)) = set.split_last().filter(|(_, others)| !others.is_empty()) {
        let others: Vec<&str> = others.iter().map(|(field, _)| *field).collect();
        let problem = Problem::new(
            format!(
                "{} and {last} are set, but a route takes at most one path condition",
                others.join(", ")
            ),
            "keep only one of them, or split the route into one route per path condition",
        );
        report.add("match", problem);
        return None;
    }
    patterns
        .into_iter()
        .next()
        .unwrap_or(Some(PathPattern::Any))
}

fn compile_path_field(field: &str, text: &str, report: &mut Report<'_>) -> Option<PathPattern> {
    let location = format!("match.{field}");
    if let Err(problem) = check_normal(text) {
        report.add(&location, problem);
        return None;
    }
    if field == "path_template" {
        return match parse_template(text) {
            Ok(segments) => Some(PathPattern::Template {
                text: text.to_owned(),
                segments,
            }),
            Err(problems) => {
                problems
                    .into_iter()
                    .for_each(|problem| report.add(&location, problem));
                None
            }
        };
    }
    if text.contains(['{', '}']) {
        let problem = Problem::new(
            format!("invalid path {text:?}: contains '{{' or '}}'"),
            "use path_template for parameters, or write a literal brace as %7B or %7D",
        );
        report.add(&location, problem);
        return None;
    }
    match field {
        "path" => Some(PathPattern::Exact(text.to_owned())),
        _ => Some(PathPattern::Prefix(text.to_owned())),
    }
}

/// Checks that a configured path starts with `/` and is in the normal form that
/// [`normalize`] gives request paths, because a route could never match another form.
pub(super) fn check_normal(text: &str) -> Result<(), Problem> {
    if !text.starts_with('/') {
        return Err(Problem::new(
            format!("invalid path {text:?}: must start with '/'"),
            format!("write \"/{text}\""),
        ));
    }
    match normalize(text) {
        Ok(Cow::Borrowed(_)) => Ok(()),
        Ok(Cow::Owned(normal)) => Err(Problem::new(
            format!("path {text:?} is not in normal form"),
            format!("write {normal:?}, because request paths are normalized before matching"),
        )),
        Err(error) => {
            let detail = error.detail();
            let problem = detail.strip_prefix(path::DETAIL_PREFIX).unwrap_or(detail);
            Err(Problem::new(
                format!("invalid path {text:?}: {problem}"),
                "remove or fix it, because requests with such a path are rejected before routing",
            ))
        }
    }
}

/// Compiles `strip_prefix` and `rewrite`. `path` is `None` when the path condition
/// is invalid, which skips the checks against it.
fn compile_forward(
    config: &RouteConfig,
    path: Option<&PathPattern>,
    report: &mut Report<'_>,
) -> Forward {
    let strip = config
        .strip_prefix
        .as_deref()
        .and_then(|prefix| compile_strip_prefix(prefix, path, report));
    let rewrite = config
        .rewrite
        .as_deref()
        .and_then(|rewrite| compile_rewrite(rewrite, path, report));
    if config.strip_prefix.is_some() && config.rewrite.is_some() {
        let problem = Problem::new(
            "strip_prefix and rewrite are both set",
            "remove strip_prefix, because rewrite replaces the whole path",
        );
        report.add("rewrite", problem);
    }
    strip.or(rewrite).unwrap_or_default()
}

fn compile_strip_prefix(
    prefix: &str,
    path: Option<&PathPattern>,
    report: &mut Report<'_>,
) -> Option<Forward> {
    if let Err(problem) = check_normal(prefix) {
        report.add("strip_prefix", problem);
        return None;
    }
    let path = path?;
    let stripped = prefix.strip_suffix('/').unwrap_or(prefix);
    let required: Vec<&str> = prefix_segments(prefix).collect();
    let available = path.literal_segments();
    if available.starts_with(&required) {
        return Some(Forward::StripPrefix(stripped.to_owned()));
    }
    let problem = match path.describe() {
        None => Problem::new(
            format!("strip_prefix {prefix:?} needs a path condition that starts with it"),
            format!("add match.path_prefix = {prefix:?}"),
        ),
        Some((field, value)) => Problem::new(
            format!("strip_prefix {prefix:?} is not a prefix of the route's {field} {value:?}"),
            "strip_prefix must equal whole leading segments of the path condition, as /api does for /api/users",
        ),
    };
    report.add("strip_prefix", problem);
    None
}

fn compile_rewrite(
    rewrite: &str,
    path: Option<&PathPattern>,
    report: &mut Report<'_>,
) -> Option<Forward> {
    if let Err(problem) = check_normal(rewrite) {
        report.add("rewrite", problem);
        return None;
    }
    let template = path.map(|path| match path {
        PathPattern::Template { segments, .. } => segments.as_slice(),
        _ => &[],
    });
    match parse_rewrite(rewrite, template) {
        Ok(parts) => path.map(|_| Forward::Rewrite(parts)),
        Err(problems) => {
            problems
                .into_iter()
                .for_each(|problem| report.add("rewrite", problem));
            None
        }
    }
}
