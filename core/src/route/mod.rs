//! The compiled route table.

use std::borrow::Cow;

use http::{HeaderMap, Method};

use crate::config::{ConfigError, RouteConfig};

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

/// An immutable table of routes.
#[derive(Debug)]
pub struct RouteTable {
    count: usize,
}

impl RouteTable {
    /// Compiles the routes.
    pub fn build(routes: &[RouteConfig]) -> Result<Self, Vec<ConfigError>> {
        Ok(Self {
            count: routes.len(),
        })
    }

    /// Returns the index of the route that matches `request`.
    pub fn find(&self, _request: &RequestView<'_>) -> Option<usize> {
        (self.count > 0).then_some(0)
    }

    /// Returns the path to forward for a request matched by route `index`.
    pub fn upstream_path<'p>(&self, _index: usize, path: &'p str) -> Cow<'p, str> {
        Cow::Borrowed(path)
    }
}
