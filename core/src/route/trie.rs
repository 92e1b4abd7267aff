//! The segment trie of the routes of one host pattern, and its depth-first search.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::path_pattern::{PathPattern, TemplateSegment, path_segments, prefix_segments};
use super::{RequestView, Route};

/// A map keyed by path segments or hosts from the config.
pub(super) type SegmentMap<V> = HashMap<Box<str>, V, BuildHasherDefault<SegmentHasher>>;

/// A hasher that runs one-shot XXH3 over each written slice, which is cheaper than
/// the default SipHash on the short keys of a route table. It is not seeded randomly.
/// That is safe here because only the config inserts keys, and a lookup cannot make
/// the probe sequences of existing keys longer.
#[derive(Debug, Default)]
pub(super) struct SegmentHasher(u64);

impl Hasher for SegmentHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A trie node, reached by the path segments from the root to it.
#[derive(Debug, Default)]
pub(super) struct Node {
    /// Children by literal segment. A trailing slash is an empty literal segment.
    literals: SegmentMap<Node>,
    /// The child for a `{name}` segment, which matches any one non-empty segment.
    param: Option<Box<Node>>,
    /// Exact paths and templates that end here, by precedence, highest first.
    ends: Vec<usize>,
    /// Prefixes that end here, by precedence, highest first. At the root it also
    /// contains the routes without a path condition.
    prefixes: Vec<PrefixEnd>,
}

/// A route whose prefix ends at a node.
#[derive(Debug, Clone, Copy)]
struct PrefixEnd {
    route: usize,
    /// Whether the path needs another segment after this node, because the prefix
    /// ends with `/`: `/api/` matches `/api/` and `/api/x` but not `/api`.
    needs_segment: bool,
}

impl Node {
    /// Adds route `route` with path condition `pattern`.
    pub(super) fn insert(&mut self, pattern: &PathPattern, route: usize) {
        match pattern {
            PathPattern::Any => self.prefixes.push(PrefixEnd {
                route,
                needs_segment: false,
            }),
            PathPattern::Exact(path) => self
                .literal_descendant(path_segments(path))
                .ends
                .push(route),
            PathPattern::Prefix(prefix) => {
                let node = self.literal_descendant(prefix_segments(prefix));
                node.prefixes.push(PrefixEnd {
                    route,
                    needs_segment: prefix.ends_with('/'),
                });
            }
            PathPattern::Template { segments, .. } => {
                let mut node = self;
                for segment in segments {
                    node = match segment {
                        TemplateSegment::Literal(text) => node.literal_child(text),
                        TemplateSegment::Param(_) => node.param.get_or_insert_with(Box::default),
                    };
                }
                node.ends.push(route);
            }
        }
    }

    fn literal_child(&mut self, segment: &str) -> &mut Node {
        self.literals.entry(segment.into()).or_default()
    }

    fn literal_descendant<'s>(&mut self, segments: impl Iterator<Item = &'s str>) -> &mut Node {
        segments.fold(self, |node, segment| node.literal_child(segment))
    }

    /// Sorts the route lists of this node and its descendants by precedence, highest
    /// first, so that a search can stop at the first route of a list that matches.
    pub(super) fn sort(&mut self, routes: &[Route]) {
        let key = |route: usize| std::cmp::Reverse(routes[route].precedence);
        self.ends.sort_by_key(|&route| key(route));
        self.prefixes.sort_by_key(|end| key(end.route));
        for child in self.literals.values_mut() {
            child.sort(routes);
        }
        if let Some(child) = &mut self.param {
            child.sort(routes);
        }
    }
}

/// A depth-first search for the highest-precedence route that matches a request.
/// It keeps only the best route so far, so it allocates nothing.
pub(super) struct Search<'t, 'r> {
    routes: &'t [Route],
    request: &'r RequestView<'r>,
    /// The best matching route found so far.
    pub(super) best: Option<usize>,
}

impl<'t, 'r> Search<'t, 'r> {
    pub(super) fn new(routes: &'t [Route], request: &'r RequestView<'r>) -> Self {
        Self {
            routes,
            request,
            best: None,
        }
    }

    /// Visits `node` with the path segments after it: `rest` is `None` when the path
    /// ends at `node`, and otherwise the remaining segments joined by `/`.
    pub(super) fn visit(&mut self, node: &Node, rest: Option<&str>) {
        match rest {
            Some(rest) => {
                let (segment, next) = match rest.split_once('/') {
                    Some((segment, next)) => (segment, Some(next)),
                    None => (rest, None),
                };
                if let Some(child) = node.literals.get(segment) {
                    self.visit(child, next);
                }
                if let (false, Some(child)) = (segment.is_empty(), &node.param) {
                    self.visit(child, next);
                }
            }
            None => {
                for &route in &node.ends {
                    if self.offer(route) {
                        break;
                    }
                }
            }
        }
        // Prefixes come after the deeper nodes because exact paths and templates
        // outrank them, so a route found below lets `offer` skip these checks.
        for end in &node.prefixes {
            if end.needs_segment && rest.is_none() {
                continue;
            }
            if self.offer(end.route) {
                break;
            }
        }
    }

    /// Makes `route` the best route if it outranks the current one and its other
    /// conditions hold. Returns `true` when the rest of a sorted list can be skipped,
    /// because `route` was taken or is outranked.
    fn offer(&mut self, route: usize) -> bool {
        let candidate = &self.routes[route];
        if let Some(best) = self.best {
            if candidate.precedence < self.routes[best].precedence {
                return true;
            }
        }
        if candidate.conditions.matches(self.request) {
            self.best = Some(route);
            return true;
        }
        false
    }
}
