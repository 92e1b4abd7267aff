//! The compiled route table: which route serves a request, and which path it
//! forwards.
//!
//! # Matching
//!
//! A route matches when all of its conditions hold:
//!
//! - `hosts`: an exact host (`api.example.com`) or a wildcard (`*.example.com`, which
//!   matches one or more labels before `.example.com` but not `example.com` itself).
//!   Hosts compare case-insensitively. An empty list matches any host.
//! - `methods`: one of the listed methods. An empty list matches any method.
//! - At most one path condition, compared with the normalized path
//!   ([`crate::path::normalize`]). `path` must be equal. `path_prefix` must be a
//!   prefix ending at a segment boundary: `/api` matches `/api`, `/api/` and
//!   `/api/x` but not `/apis`. `/api/` matches `/api/` and `/api/x` but not `/api`,
//!   and `/` matches every path. `path_template` must have the same segments, where
//!   `{name}` matches exactly one non-empty segment. Without a path condition every
//!   path matches.
//! - `headers`: the header is present and, when a value is given, one of its field
//!   lines equals it. Names compare case-insensitively.
//! - `query`: the parameter is present and, when a value is given, one of its
//!   occurrences equals it after percent-decoding (`+` decodes to a space). Names
//!   compare case-sensitively.
//!
//! # Precedence
//!
//! When several routes match, the most specific one wins. The criteria apply in
//! this order, each deciding only between routes that tie on all earlier ones:
//!
//! 1. Host: an exact host beats a wildcard, a wildcard with a longer suffix beats one
//!    with a shorter suffix, and a route without hosts comes last. A route with
//!    several hosts ranks by the most specific one that matches.
//! 2. Path: `path` beats `path_template`, which beats `path_prefix`, which beats no
//!    path condition. Among templates, more literal (non-parameter) segments win.
//!    Among prefixes, the longer one wins.
//! 3. A route with `methods` beats one without.
//! 4. More header conditions win.
//! 5. More query conditions win.
//! 6. The route declared first wins.
//!
//! # Lookup
//!
//! [`RouteTable::find`] allocates nothing. The table keeps one segment trie per host
//! pattern and visits the tries in host precedence order, so the first trie with a
//! matching route decides. Within a trie, a depth-first search follows the literal
//! child (a hash map lookup) and the parameter child of each node, and checks the
//! remaining conditions of the routes that end at the visited nodes. It keeps only
//! the best route so far by a precedence key computed when the table is built.

mod build;
mod call_template;
mod conditions;
mod forward;
mod host;
mod path_pattern;
mod trie;

#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod validation_tests;

use std::borrow::Cow;
use std::cmp::Reverse;
use std::fmt;

use http::{HeaderMap, Method};

use crate::config::{ConfigError, RouteConfig};
pub use call_template::{CallTemplate, TemplateProblem};
use conditions::Conditions;
use forward::Forward;
use host::HostIndex;
use path_pattern::PathKind;
use trie::Search;

/// The request properties routes match on.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Host without port, lowercase.
    pub host: &'a str,
    /// Request method.
    pub method: &'a Method,
    /// Normalized path.
    pub path: &'a str,
    /// Raw query string without `?`.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// An immutable table of routes, compiled from the `routes` of the config.
///
/// Routes are identified by their index in the config, which [`RouteTable::find`]
/// returns and the other methods take.
pub struct RouteTable {
    /// Routes in config order.
    routes: Vec<Route>,
    hosts: HostIndex,
}

/// A compiled route.
#[derive(Debug)]
struct Route {
    /// The configured name, or `routes[INDEX]`.
    name: String,
    conditions: Conditions,
    forward: Forward,
    precedence: Precedence,
}

/// The precedence of a route within the routes of one host pattern, where a greater
/// key wins. Field order is comparison order because `Ord` is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    path_kind: PathKind,
    /// Literal segments of a template, bytes of a prefix, and 0 for other kinds.
    path_rank: usize,
    has_methods: bool,
    header_count: usize,
    query_count: usize,
    /// The config index, reversed so that the route declared first wins.
    declaration: Reverse<usize>,
}

impl RouteTable {
    /// Validates and compiles the routes.
    ///
    /// # Errors
    ///
    /// Returns every problem found in any route, in config order, each with its path
    /// (such as `routes[3].match.path_prefix`) and a hint.
    pub fn build(routes: &[RouteConfig]) -> Result<Self, Vec<ConfigError>> {
        let compiled = build::compile_routes(routes)?;
        let mut hosts = HostIndex::default();
        let mut table_routes = Vec::with_capacity(compiled.len());
        for (index, compiled) in compiled.into_iter().enumerate() {
            if compiled.hosts.is_empty() {
                hosts.trie_mut(None).insert(&compiled.path, index);
            }
            for host in &compiled.hosts {
                hosts.trie_mut(Some(host)).insert(&compiled.path, index);
            }
            table_routes.push(compiled.route);
        }
        for trie in hosts.tries_mut() {
            trie.sort(&table_routes);
        }
        Ok(Self {
            routes: table_routes,
            hosts,
        })
    }

    /// Returns the config index of the route that serves `request`, or `None` when no
    /// route matches. Allocates nothing.
    ///
    /// `request.path` must be normalized. A path that does not start with `/` matches
    /// no route.
    pub fn find(&self, request: &RequestView<'_>) -> Option<usize> {
        let rest = request.path.strip_prefix('/')?;
        for trie in self.hosts.tries(request.host) {
            let mut search = Search::new(&self.routes, request);
            search.visit(trie, Some(rest));
            if search.best.is_some() {
                return search.best;
            }
        }
        None
    }

    /// Returns the path to forward for a request with normalized `path` that route
    /// `index` matched.
    ///
    /// With `strip_prefix = "/api"`, `/api/users` becomes `/users` and `/api` becomes
    /// `/`. With `rewrite = "/v2/users/{id}"`, the path becomes the rewrite with each
    /// `{name}` replaced by the path segment that the template parameter matched,
    /// which allocates. Otherwise the path is returned unchanged.
    ///
    /// # Panics
    ///
    /// Panics if `index` is not a route index of this table.
    pub fn upstream_path<'p>(&self, index: usize, path: &'p str) -> Cow<'p, str> {
        self.routes[index].forward.apply(path)
    }

    /// Returns the name of route `index` for logs: its `name`, or `routes[INDEX]`.
    ///
    /// # Panics
    ///
    /// Panics if `index` is not a route index of this table.
    pub fn name(&self, index: usize) -> &str {
        &self.routes[index].name
    }

    /// Returns the number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Returns whether the table has no routes, so that no request can match.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

// Shows the route count only, because a table can have thousands of routes.
impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}
