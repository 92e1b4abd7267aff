//! Checks the `aggregate` table of a route and compiles its calls, reporting every
//! problem with its config path.

use std::collections::HashMap;

use http::Method;

use super::merge::ERRORS_MEMBER;
use super::{CompiledAggregate, CompiledCall};
use crate::config::{
    AggregateCallConfig, AggregateConfig, CallMerge, ConfigDuration, ConfigError, RouteConfig,
    TimeoutsConfig, UpstreamConfig,
};
use crate::route::CallTemplate;

/// Compiles the aggregate table of `route`, found at config path `base`
/// (`routes[INDEX].aggregate`). `upstreams` are the defined upstreams in compiled
/// order. Returns `None` after reporting problems.
pub(crate) fn compile_aggregate(
    route: &RouteConfig,
    aggregate: &AggregateConfig,
    base: &str,
    upstreams: &[(&String, &UpstreamConfig)],
    errors: &mut Vec<ConfigError>,
) -> Option<CompiledAggregate> {
    let before = errors.len();
    check_limits(aggregate, base, errors);
    if aggregate.calls.is_empty() {
        errors.push(
            ConfigError::new(format!("{base}.calls"), "an aggregate route has no calls").with_hint(
                "add at least one [[routes.aggregate.calls]] with name, upstream and path",
            ),
        );
    }

    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut keys: HashMap<&str, usize> = HashMap::new();
    let mut calls = Vec::with_capacity(aggregate.calls.len());
    for (index, call) in aggregate.calls.iter().enumerate() {
        let path = format!("{base}.calls[{index}]");
        check_call_name(call, index, &path, &mut names, errors);
        check_key(call, index, &path, &mut keys, errors);
        calls.extend(compile_call(route, call, &path, upstreams, errors));
    }
    if errors.len() > before {
        return None;
    }

    let uses = resolve_uses(&calls, &names, base, errors);
    check_depth(&calls, &uses, aggregate.max_depth, base, errors);
    if errors.len() > before {
        return None;
    }
    for (call, uses) in calls.iter_mut().zip(uses) {
        call.uses = uses;
    }
    Some(CompiledAggregate {
        calls,
        max_in_flight: aggregate.max_in_flight,
        max_body_bytes: aggregate.max_body_bytes,
    })
}

fn check_limits(aggregate: &AggregateConfig, base: &str, errors: &mut Vec<ConfigError>) {
    let limits = [
        (
            "max_in_flight",
            aggregate.max_in_flight,
            "use at least 1; 6 matches the connection limit of a Cloudflare Worker",
        ),
        (
            "max_depth",
            aggregate.max_depth,
            "use at least 1, where 1 allows only calls that use no other call",
        ),
        (
            "max_body_bytes",
            aggregate.max_body_bytes,
            "use at least 1, such as 1048576 for 1 MiB",
        ),
    ];
    for (field, value, hint) in limits {
        if value == 0 {
            errors.push(
                ConfigError::new(format!("{base}.{field}"), "must be at least 1").with_hint(hint),
            );
        }
    }
}

fn check_call_name<'c>(
    call: &'c AggregateCallConfig,
    index: usize,
    path: &str,
    names: &mut HashMap<&'c str, usize>,
    errors: &mut Vec<ConfigError>,
) {
    let valid = !call.name.is_empty()
        && call
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        errors.push(
            ConfigError::new(
                format!("{path}.name"),
                format!("invalid call name {:?}", call.name),
            )
            .with_hint(
                "use letters, digits and '_', because other calls refer to it as {NAME:/pointer}",
            ),
        );
    }
    if let Some(first) = names.insert(&call.name, index) {
        names.insert(&call.name, first);
        errors.push(
            ConfigError::new(
                format!("{path}.name"),
                format!("duplicate call name {:?}", call.name),
            )
            .with_hint(format!(
                "calls[{first}] has the same name, so give each call a distinct name"
            )),
        );
    }
}

/// Reports a `key` that another call already fills, or that is the `errors` member.
fn check_key<'c>(
    call: &'c AggregateCallConfig,
    index: usize,
    path: &str,
    keys: &mut HashMap<&'c str, usize>,
    errors: &mut Vec<ConfigError>,
) {
    if call.key.is_some() && call.merge != CallMerge::Key {
        errors.push(
            ConfigError::new(format!("{path}.key"), "key is set but merge is not \"key\"")
                .with_hint("remove key, or set merge = \"key\" to put the body under it"),
        );
        return;
    }
    if call.merge != CallMerge::Key {
        return;
    }
    let key = call.key.as_deref().unwrap_or(&call.name);
    let field = if call.key.is_some() { "key" } else { "name" };
    if key == ERRORS_MEMBER {
        errors.push(
            ConfigError::new(
                format!("{path}.{field}"),
                "the key \"errors\" is where failed optional calls are listed",
            )
            .with_hint("choose another key"),
        );
        return;
    }
    if let Some(first) = keys.insert(key, index) {
        keys.insert(key, first);
        errors.push(
            ConfigError::new(
                format!("{path}.{field}"),
                format!("duplicate key {key:?}: calls[{first}] already puts its body there"),
            )
            .with_hint("set key to a member name that no other call uses"),
        );
    }
}

fn compile_call(
    route: &RouteConfig,
    call: &AggregateCallConfig,
    path: &str,
    upstreams: &[(&String, &UpstreamConfig)],
    errors: &mut Vec<ConfigError>,
) -> Option<CompiledCall> {
    let upstream = upstreams
        .iter()
        .position(|(name, _)| **name == call.upstream);
    if upstream.is_none() {
        errors.push(super::super::compile::undefined_reference(
            format!("{path}.upstream"),
            "upstream",
            "upstreams",
            &call.upstream,
            upstreams.iter().map(|(name, _)| name.as_str()),
        ));
    }
    let method = match Method::from_bytes(call.method.as_bytes()) {
        Ok(method) => Some(method),
        Err(_) => {
            errors.push(
                ConfigError::new(
                    format!("{path}.method"),
                    format!("invalid method {:?}", call.method),
                )
                .with_hint("use a method token such as \"GET\""),
            );
            None
        }
    };
    let template = match CallTemplate::parse(&call.path, route.matcher.path_template.as_deref()) {
        Ok(template) => Some(template),
        Err(problems) => {
            for problem in problems {
                errors.push(
                    ConfigError::new(format!("{path}.path"), problem.message)
                        .with_hint(problem.hint),
                );
            }
            None
        }
    };
    if call.timeout.is_some_and(|timeout| timeout.get().is_zero()) {
        errors.push(
            ConfigError::new(format!("{path}.timeout"), "must be greater than zero").with_hint(
                "use a duration such as \"2s\", or remove it to use the upstream's timeouts",
            ),
        );
    }

    let upstream = upstream?;
    let defaults = route
        .timeouts
        .as_deref()
        .copied()
        .unwrap_or(upstreams[upstream].1.timeouts);
    Some(CompiledCall {
        name: call.name.clone(),
        upstream,
        upstream_name: call.upstream.clone(),
        method: method?,
        template: template?,
        timeouts: call_timeouts(defaults, call.timeout),
        on_error: call.on_error,
        merge: call.merge,
        key: call.key.clone().unwrap_or_else(|| call.name.clone()),
        uses: Vec::new(),
    })
}

/// Returns the timeouts of a call: its `timeout` bounds each attempt and the whole
/// call, and the connect timeout never exceeds it.
fn call_timeouts(defaults: TimeoutsConfig, timeout: Option<ConfigDuration>) -> TimeoutsConfig {
    let Some(timeout) = timeout else {
        return defaults;
    };
    TimeoutsConfig {
        connect: defaults.connect.min(timeout),
        per_try: timeout,
        total: timeout,
    }
}

/// Resolves the calls each call's path uses to their indexes, reporting unknown names.
fn resolve_uses(
    calls: &[CompiledCall],
    names: &HashMap<&str, usize>,
    base: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<Vec<usize>> {
    let defined: Vec<&str> = calls.iter().map(|call| call.name.as_str()).collect();
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let mut uses = Vec::new();
            for name in call.template.calls_used() {
                match names.get(name) {
                    Some(used) if !uses.contains(used) => uses.push(*used),
                    Some(_) => {}
                    None => {
                        let error = ConfigError::new(
                            format!("{base}.calls[{index}].path"),
                            format!("uses a field of call {name:?}, which is not defined"),
                        );
                        let hint = match crate::config::closest_name(name, &defined) {
                            Some(candidate) => format!("did you mean {candidate:?}?"),
                            None => format!("calls of this route: {}", defined.join(", ")),
                        };
                        errors.push(error.with_hint(hint));
                    }
                }
            }
            uses
        })
        .collect()
}

/// Reports cycles among the calls and chains longer than `max_depth`.
fn check_depth(
    calls: &[CompiledCall],
    uses: &[Vec<usize>],
    max_depth: usize,
    base: &str,
    errors: &mut Vec<ConfigError>,
) {
    let mut chains: Vec<Option<Vec<usize>>> = vec![None; calls.len()];
    for index in 0..calls.len() {
        let mut stack = Vec::new();
        if let Err(cycle) = longest_chain(index, uses, &mut chains, &mut stack) {
            // Each cycle found is reported once, at its call with the lowest index. A
            // cycle reached only through another one shows once that one is fixed.
            if cycle.iter().min() != Some(&index) {
                continue;
            }
            let names: Vec<&str> = cycle
                .iter()
                .chain(cycle.first())
                .map(|call| calls[*call].name.as_str())
                .collect();
            errors.push(
                ConfigError::new(
                    format!("{base}.calls[{index}].path"),
                    format!(
                        "calls use each other's fields in a cycle: {}",
                        names.join(" -> ")
                    ),
                )
                .with_hint(
                    "remove one of these references, so that some call in the cycle uses no other",
                ),
            );
            continue;
        }
        let Some(chain) = &chains[index] else {
            continue;
        };
        // A longer chain through a call that uses this one is reported instead.
        let used = uses.iter().any(|used| used.contains(&index));
        if chain.len() > max_depth && !used {
            let names: Vec<&str> = chain
                .iter()
                .rev()
                .map(|call| calls[*call].name.as_str())
                .collect();
            errors.push(
                ConfigError::new(
                    format!("{base}.calls[{index}].path"),
                    format!(
                        "the chain of calls {} has depth {}, over max_depth = {max_depth}",
                        names.join(" -> "),
                        chain.len()
                    ),
                )
                .with_hint(format!(
                    "set {base}.max_depth = {}, or use fewer calls in sequence, because each level waits for the previous one",
                    chain.len()
                )),
            );
        }
    }
}

/// Computes the longest chain that starts at call `index` and follows `uses`, as
/// call indexes from `index` to a call that uses none. Returns the calls of a cycle
/// when there is one.
fn longest_chain(
    index: usize,
    uses: &[Vec<usize>],
    chains: &mut [Option<Vec<usize>>],
    stack: &mut Vec<usize>,
) -> Result<Vec<usize>, Vec<usize>> {
    if let Some(chain) = &chains[index] {
        return Ok(chain.clone());
    }
    if let Some(start) = stack.iter().position(|call| *call == index) {
        return Err(stack[start..].to_vec());
    }
    stack.push(index);
    let mut longest: Vec<usize> = Vec::new();
    for used in &uses[index] {
        let chain = longest_chain(*used, uses, chains, stack)?;
        if chain.len() > longest.len() {
            longest = chain;
        }
    }
    stack.pop();
    let mut chain = vec![index];
    chain.extend(longest);
    chains[index] = Some(chain.clone());
    Ok(chain)
}

/// Reports the route keys that an aggregate route does not use.
pub(crate) fn check_unused_route_keys(
    route: &RouteConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    const NAMED_BY_CALLS: &str = "remove it; each call names its upstream and path";
    const NOT_AGGREGATED: &str =
        "remove it, or proxy the route to one upstream with dispatch = \"proxy\"";
    let unused = [
        ("upstream", !route.upstream.is_empty(), NAMED_BY_CALLS),
        ("strip_prefix", route.strip_prefix.is_some(), NAMED_BY_CALLS),
        ("rewrite", route.rewrite.is_some(), NAMED_BY_CALLS),
        ("websocket", route.websocket.is_some(), NOT_AGGREGATED),
        ("grpc_web", route.grpc_web, NOT_AGGREGATED),
    ];
    for (field, set, hint) in unused {
        if set {
            errors.push(
                ConfigError::new(
                    format!("{path}.{field}"),
                    format!("{field} is not used by a route with dispatch = \"aggregate\""),
                )
                .with_hint(hint),
            );
        }
    }
}
