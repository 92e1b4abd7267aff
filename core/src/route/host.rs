//! Host patterns, and the index that yields the path tries for a request host in
//! host precedence order.

use std::net::Ipv6Addr;

use super::build::Problem;
use super::trie::{Node, SegmentMap};

/// A parsed entry of `match.hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HostPattern {
    /// A lowercase host compared whole.
    Exact(String),
    /// `*.suffix`, which matches one or more labels followed by `.suffix`. Stores the
    /// lowercase suffix without `*.`.
    Wildcard(String),
}

const HOST_HINT: &str =
    "a host contains only letters, digits, '-', '_' and '.', without a scheme or port";

/// Parses a host pattern, lowercasing it.
pub(super) fn parse_host(text: &str) -> Result<HostPattern, Problem> {
    let host = text.to_ascii_lowercase();
    if host.is_empty() {
        return Err(Problem::new(
            "empty host",
            "remove it, because an empty hosts list already matches any host",
        ));
    }
    if host == "*" {
        return Err(Problem::new(
            "host \"*\" has no suffix",
            "leave hosts empty to match any host",
        ));
    }
    if host.starts_with('[') {
        return parse_ipv6_literal(text, host);
    }
    let (name, pattern) = match host.strip_prefix("*.") {
        Some(suffix) => (suffix, HostPattern::Wildcard(suffix.to_owned())),
        None => (host.as_str(), HostPattern::Exact(host.clone())),
    };
    for label in name.split('.') {
        check_label(text, label)?;
    }
    Ok(pattern)
}

fn check_label(text: &str, label: &str) -> Result<(), Problem> {
    if label.is_empty() {
        return Err(Problem::new(
            format!("invalid host {text:?}: empty label"),
            "remove the extra '.', because a host has no leading, trailing or doubled dots",
        ));
    }
    if label.contains('*') {
        return Err(Problem::new(
            format!("invalid host {text:?}: '*' is allowed only as the whole first label"),
            "write a wildcard as *.example.com",
        ));
    }
    let invalid = label
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    if let Some(invalid) = invalid {
        return Err(Problem::new(
            format!("invalid host {text:?}: invalid character {invalid:?}"),
            HOST_HINT,
        ));
    }
    Ok(())
}

/// Accepts a bracketed IPv6 address, the form it takes in a `Host` header.
fn parse_ipv6_literal(text: &str, host: String) -> Result<HostPattern, Problem> {
    let address = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'));
    match address.map(str::parse::<Ipv6Addr>) {
        Some(Ok(_)) => Ok(HostPattern::Exact(host)),
        _ => Err(Problem::new(
            format!("invalid host {text:?}: invalid IPv6 address"),
            "write an IPv6 address in brackets without a port, as in [2001:db8::1]",
        )),
    }
}

/// The path tries of a route table, one per distinct host pattern.
#[derive(Debug, Default)]
pub(super) struct HostIndex {
    /// Routes with an exact host, keyed by that host.
    exact: SegmentMap<Node>,
    /// Routes with a wildcard host, keyed by the suffix after `*.`.
    wildcard: SegmentMap<Node>,
    /// Routes without host conditions.
    any: Node,
}

impl HostIndex {
    /// Returns the trie for routes with `host`, or for routes with any host.
    pub(super) fn trie_mut(&mut self, host: Option<&HostPattern>) -> &mut Node {
        match host {
            None => &mut self.any,
            Some(HostPattern::Exact(host)) => self.exact.entry(host.as_str().into()).or_default(),
            Some(HostPattern::Wildcard(suffix)) => {
                self.wildcard.entry(suffix.as_str().into()).or_default()
            }
        }
    }

    /// Returns every trie, for finishing them after all routes are inserted.
    pub(super) fn tries_mut(&mut self) -> impl Iterator<Item = &mut Node> {
        self.exact
            .values_mut()
            .chain(self.wildcard.values_mut())
            .chain(std::iter::once(&mut self.any))
    }

    /// Yields the tries whose host pattern matches `host`, most specific first: the
    /// exact host, then wildcards from the longest suffix to the shortest, then the
    /// routes without host conditions. Allocates nothing.
    pub(super) fn tries<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Node> {
        // A wildcard needs at least one label before its suffix, so a dot at offset 0
        // (an empty first label) starts no suffix.
        let wildcards = host
            .match_indices('.')
            .filter(|&(offset, _)| offset > 0)
            .filter_map(move |(offset, _)| self.wildcard.get(&host[offset + 1..]));
        self.exact
            .get(host)
            .into_iter()
            .chain(wildcards)
            .chain(std::iter::once(&self.any))
    }
}
