//! Matching, precedence and forwarding tests, and the helpers the other route test
//! modules share.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{RequestView, RouteTable};
use crate::config::{RouteConfig, ValueMatch};

/// A route config built field by field.
pub(super) struct RouteBuilder(RouteConfig);

/// Starts a route to upstream `backend` with no conditions.
pub(super) fn route() -> RouteBuilder {
    RouteBuilder(RouteConfig {
        name: None,
        matcher: Default::default(),
        upstream: "backend".to_owned(),
        dispatch: Default::default(),
        aggregate: None,
        strip_prefix: None,
        rewrite: None,
        policies: Vec::new(),
        timeouts: None,
        grpc_web: false,
        websocket: None,
    })
}

impl RouteBuilder {
    pub(super) fn name(mut self, name: &str) -> Self {
        self.0.name = Some(name.to_owned());
        self
    }

    pub(super) fn host(mut self, host: &str) -> Self {
        self.0.matcher.hosts.push(host.to_owned());
        self
    }

    pub(super) fn method(mut self, method: &str) -> Self {
        self.0.matcher.methods.push(method.to_owned());
        self
    }

    pub(super) fn path(mut self, path: &str) -> Self {
        self.0.matcher.path = Some(path.to_owned());
        self
    }

    pub(super) fn prefix(mut self, prefix: &str) -> Self {
        self.0.matcher.path_prefix = Some(prefix.to_owned());
        self
    }

    pub(super) fn template(mut self, template: &str) -> Self {
        self.0.matcher.path_template = Some(template.to_owned());
        self
    }

    pub(super) fn header(mut self, name: &str, value: Option<&str>) -> Self {
        self.0.matcher.headers.push(value_match(name, value));
        self
    }

    pub(super) fn query(mut self, name: &str, value: Option<&str>) -> Self {
        self.0.matcher.query.push(value_match(name, value));
        self
    }

    pub(super) fn strip_prefix(mut self, prefix: &str) -> Self {
        self.0.strip_prefix = Some(prefix.to_owned());
        self
    }

    pub(super) fn rewrite(mut self, rewrite: &str) -> Self {
        self.0.rewrite = Some(rewrite.to_owned());
        self
    }

    pub(super) fn done(self) -> RouteConfig {
        self.0
    }
}

fn value_match(name: &str, value: Option<&str>) -> ValueMatch {
    ValueMatch {
        name: name.to_owned(),
        value: value.map(str::to_owned),
    }
}

/// An owned request that lends a [`RequestView`].
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub(super) host: String,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: Option<String>,
    pub(super) headers: HeaderMap,
}

/// Starts a GET request for `host` and normalized `path`.
pub(super) fn request(host: &str, path: &str) -> Request {
    Request {
        host: host.to_owned(),
        method: Method::GET,
        path: path.to_owned(),
        query: None,
        headers: HeaderMap::new(),
    }
}

impl Request {
    pub(super) fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    pub(super) fn query(mut self, query: &str) -> Self {
        self.query = Some(query.to_owned());
        self
    }

    pub(super) fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        self
    }

    pub(super) fn view(&self) -> RequestView<'_> {
        RequestView {
            host: &self.host,
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
        }
    }
}

/// Builds a table, panicking with every problem if the routes are invalid.
pub(super) fn table(routes: Vec<RouteBuilder>) -> RouteTable {
    let configs: Vec<RouteConfig> = routes.into_iter().map(RouteBuilder::done).collect();
    match RouteTable::build(&configs) {
        Ok(table) => table,
        Err(errors) => panic!("invalid routes: {errors:#?}"),
    }
}

fn find(table: &RouteTable, request: &Request) -> Option<usize> {
    table.find(&request.view())
}

#[test]
fn empty_table_matches_nothing() {
    let table = table(vec![]);
    assert!(table.is_empty());
    assert_eq!(find(&table, &request("a.com", "/")), None);
}

#[test]
fn route_without_conditions_matches_everything() {
    let table = table(vec![route()]);
    assert_eq!(find(&table, &request("a.com", "/")), Some(0));
    assert_eq!(find(&table, &request("", "/x/y/")), Some(0));
}

#[test]
fn unmatched_request_finds_nothing() {
    let table = table(vec![route().host("a.com").prefix("/api")]);
    assert_eq!(find(&table, &request("b.com", "/api")), None);
    assert_eq!(find(&table, &request("a.com", "/web")), None);
}

#[test]
fn path_without_leading_slash_matches_nothing() {
    let table = table(vec![route()]);
    assert_eq!(find(&table, &request("a.com", "api")), None);
}

#[test]
fn exact_host_ignores_config_case() {
    let table = table(vec![route().host("API.Example.COM")]);
    assert_eq!(find(&table, &request("api.example.com", "/")), Some(0));
    assert_eq!(find(&table, &request("www.example.com", "/")), None);
}

#[test]
fn wildcard_host_matches_subdomains() {
    let table = table(vec![route().host("*.Example.com")]);
    assert_eq!(find(&table, &request("a.example.com", "/")), Some(0));
    assert_eq!(find(&table, &request("a.b.example.com", "/")), Some(0));
    assert_eq!(find(&table, &request("example.com", "/")), None);
    assert_eq!(find(&table, &request("badexample.com", "/")), None);
    assert_eq!(find(&table, &request(".example.com", "/")), None);
    assert_eq!(find(&table, &request("example.com.evil", "/")), None);
}

#[test]
fn ipv6_host_matches_exactly() {
    let table = table(vec![route().host("[2001:DB8::1]")]);
    assert_eq!(find(&table, &request("[2001:db8::1]", "/")), Some(0));
    assert_eq!(find(&table, &request("[2001:db8::2]", "/")), None);
}

#[test]
fn exact_path_matches_whole_path() {
    let table = table(vec![
        route().path("/a/b"),
        route().path("/a/b/"),
        route().path("/"),
    ]);
    assert_eq!(find(&table, &request("h", "/a/b")), Some(0));
    assert_eq!(find(&table, &request("h", "/a/b/")), Some(1));
    assert_eq!(find(&table, &request("h", "/")), Some(2));
    assert_eq!(find(&table, &request("h", "/a")), None);
    assert_eq!(find(&table, &request("h", "/a/b/c")), None);
}

#[test]
fn prefix_matches_at_segment_boundary() {
    let table = table(vec![route().prefix("/api")]);
    for path in ["/api", "/api/", "/api/x", "/api/x/y/"] {
        assert_eq!(find(&table, &request("h", path)), Some(0), "{path}");
    }
    for path in ["/apis", "/ap", "/", "/x/api"] {
        assert_eq!(find(&table, &request("h", path)), None, "{path}");
    }
}

#[test]
fn prefix_with_trailing_slash_needs_segment() {
    let table = table(vec![route().prefix("/api/")]);
    assert_eq!(find(&table, &request("h", "/api/")), Some(0));
    assert_eq!(find(&table, &request("h", "/api/x")), Some(0));
    assert_eq!(find(&table, &request("h", "/api")), None);
    assert_eq!(find(&table, &request("h", "/apis/")), None);
}

#[test]
fn root_prefix_matches_every_path() {
    let table = table(vec![route().prefix("/")]);
    for path in ["/", "/a", "/a/", "/a/b/c"] {
        assert_eq!(find(&table, &request("h", path)), Some(0), "{path}");
    }
}

#[test]
fn template_param_matches_one_segment() {
    let table = table(vec![route().template("/users/{id}/posts/{post}")]);
    assert_eq!(find(&table, &request("h", "/users/7/posts/9")), Some(0));
    assert_eq!(find(&table, &request("h", "/users/7/posts/")), None);
    assert_eq!(find(&table, &request("h", "/users/7/posts")), None);
    assert_eq!(find(&table, &request("h", "/users/7/8/posts/9")), None);
    assert_eq!(find(&table, &request("h", "/users/7/posts/9/x")), None);
    assert_eq!(find(&table, &request("h", "/users/7/comments/9")), None);
}

#[test]
fn template_with_trailing_slash() {
    let table = table(vec![route().template("/users/{id}/")]);
    assert_eq!(find(&table, &request("h", "/users/7/")), Some(0));
    assert_eq!(find(&table, &request("h", "/users/7")), None);
}

#[test]
fn methods_restrict_route() {
    let table = table(vec![route().method("get").method("POST"), route()]);
    assert_eq!(find(&table, &request("h", "/")), Some(0));
    let post = request("h", "/").method(Method::POST);
    assert_eq!(find(&table, &post), Some(0));
    let delete = request("h", "/").method(Method::DELETE);
    assert_eq!(find(&table, &delete), Some(1));
}

#[test]
fn extension_method_matches() {
    let table = table(vec![route().method("purge")]);
    let purge = Method::from_bytes(b"PURGE").expect("PURGE is a valid token");
    assert_eq!(find(&table, &request("h", "/").method(purge)), Some(0));
    assert_eq!(find(&table, &request("h", "/")), None);
}

#[test]
fn header_presence_and_value() {
    let table = table(vec![
        route().header("X-Tenant", Some("acme")),
        route().header("x-debug", None),
    ]);
    let tenant = request("h", "/").header("x-tenant", "acme");
    assert_eq!(find(&table, &tenant), Some(0));
    let other_tenant = request("h", "/").header("x-tenant", "other");
    assert_eq!(find(&table, &other_tenant), None);
    let debug = request("h", "/").header("x-debug", "");
    assert_eq!(find(&table, &debug), Some(1));
    let value_case = request("h", "/").header("x-tenant", "ACME");
    assert_eq!(find(&table, &value_case), None);
}

#[test]
fn repeated_header_any_value_matches() {
    let table = table(vec![route().header("x-tenant", Some("acme"))]);
    let request = request("h", "/")
        .header("x-tenant", "other")
        .header("x-tenant", "acme");
    assert_eq!(find(&table, &request), Some(0));
}

#[test]
fn query_presence_and_value() {
    let table = table(vec![
        route().query("version", Some("2")),
        route().query("debug", None),
    ]);
    let cases = [
        ("version=2", Some(0)),
        ("a=1&version=2&b", Some(0)),
        ("version=1&version=2", Some(0)),
        ("version=3", None),
        ("debug", Some(1)),
        ("debug=", Some(1)),
        ("x=1&debug=0", Some(1)),
        ("Version=2", None),
        ("versions=2", None),
        ("", None),
    ];
    for (query, expected) in cases {
        let request = request("h", "/").query(query);
        assert_eq!(find(&table, &request), expected, "{query}");
    }
    assert_eq!(find(&table, &request("h", "/")), None);
}

#[test]
fn query_values_are_percent_decoded() {
    let table = table(vec![route().query("q", Some("a b/é"))]);
    for query in ["q=a%20b%2F%C3%A9", "q=a+b/%c3%a9", "%71=a+b%2f%C3%A9"] {
        let request = request("h", "/").query(query);
        assert_eq!(find(&table, &request), Some(0), "{query}");
    }
    let table = RouteTable::build(&[route().query("q", Some("100%")).done()]).expect("valid route");
    let invalid_escape = request("h", "/").query("q=100%");
    assert_eq!(find(&table, &invalid_escape), Some(0));
}

#[test]
fn exact_host_beats_wildcard() {
    let table = table(vec![
        route().host("*.example.com"),
        route().host("api.example.com"),
    ]);
    assert_eq!(find(&table, &request("api.example.com", "/")), Some(1));
    assert_eq!(find(&table, &request("www.example.com", "/")), Some(0));
}

#[test]
fn longer_wildcard_beats_shorter() {
    let table = table(vec![
        route().host("*.example.com"),
        route().host("*.eu.example.com"),
    ]);
    assert_eq!(find(&table, &request("api.eu.example.com", "/")), Some(1));
    assert_eq!(find(&table, &request("api.us.example.com", "/")), Some(0));
    assert_eq!(find(&table, &request("eu.example.com", "/")), Some(0));
}

#[test]
fn wildcard_host_beats_any_host() {
    let table = table(vec![route(), route().host("*.example.com")]);
    assert_eq!(find(&table, &request("a.example.com", "/")), Some(1));
    assert_eq!(find(&table, &request("other.org", "/")), Some(0));
}

#[test]
fn host_outranks_path() {
    let table = table(vec![
        route().path("/users").method("GET").header("x-a", None),
        route().host("api.example.com").prefix("/"),
    ]);
    let request = request("api.example.com", "/users").header("x-a", "1");
    assert_eq!(find(&table, &request), Some(1));
}

#[test]
fn route_with_several_hosts() {
    let table = table(vec![
        route().host("a.example.com").prefix("/"),
        route()
            .host("*.example.com")
            .host("b.example.com")
            .prefix("/"),
    ]);
    assert_eq!(find(&table, &request("a.example.com", "/")), Some(0));
    assert_eq!(find(&table, &request("b.example.com", "/")), Some(1));
    assert_eq!(find(&table, &request("c.example.com", "/")), Some(1));
}

#[test]
fn falls_back_to_less_specific_host() {
    let table = table(vec![
        route().host("*.example.com").prefix("/"),
        route().host("api.example.com").prefix("/admin"),
    ]);
    assert_eq!(
        find(&table, &request("api.example.com", "/admin/x")),
        Some(1)
    );
    assert_eq!(
        find(&table, &request("api.example.com", "/public")),
        Some(0)
    );
}

#[test]
fn exact_path_beats_template() {
    let table = table(vec![
        route().template("/users/{id}"),
        route().path("/users/me"),
    ]);
    assert_eq!(find(&table, &request("h", "/users/me")), Some(1));
    assert_eq!(find(&table, &request("h", "/users/7")), Some(0));
}

#[test]
fn template_beats_prefix() {
    let table = table(vec![
        route().prefix("/users/7"),
        route().template("/users/{id}"),
    ]);
    assert_eq!(find(&table, &request("h", "/users/7")), Some(1));
    assert_eq!(find(&table, &request("h", "/users/7/x")), Some(0));
}

#[test]
fn more_literal_template_wins() {
    let table = table(vec![
        route().template("/{kind}/{id}/posts"),
        route().template("/users/{id}/{section}"),
        route().template("/users/{id}/posts"),
    ]);
    assert_eq!(find(&table, &request("h", "/users/7/posts")), Some(2));
    assert_eq!(find(&table, &request("h", "/users/7/likes")), Some(1));
    assert_eq!(find(&table, &request("h", "/teams/7/posts")), Some(0));
}

#[test]
fn equal_templates_go_to_first_declared() {
    let table = table(vec![route().template("/{a}/x"), route().template("/x/{b}")]);
    assert_eq!(find(&table, &request("h", "/x/x")), Some(0));
}

#[test]
fn longer_prefix_wins() {
    let table = table(vec![
        route().prefix("/"),
        route().prefix("/api"),
        route().prefix("/api/"),
        route().prefix("/api/v1"),
    ]);
    assert_eq!(find(&table, &request("h", "/api/v1/users")), Some(3));
    assert_eq!(find(&table, &request("h", "/api/v2")), Some(2));
    assert_eq!(find(&table, &request("h", "/api")), Some(1));
    assert_eq!(find(&table, &request("h", "/web")), Some(0));
}

#[test]
fn prefix_beats_no_path_condition() {
    let table = table(vec![route(), route().prefix("/")]);
    assert_eq!(find(&table, &request("h", "/x")), Some(1));
}

#[test]
fn path_outranks_methods() {
    let table = table(vec![
        route().prefix("/users").method("GET"),
        route().path("/users/7"),
    ]);
    assert_eq!(find(&table, &request("h", "/users/7")), Some(1));
}

#[test]
fn methods_beat_no_methods() {
    let table = table(vec![
        route().prefix("/api"),
        route().prefix("/api").method("GET"),
    ]);
    assert_eq!(find(&table, &request("h", "/api")), Some(1));
    let post = request("h", "/api").method(Method::POST);
    assert_eq!(find(&table, &post), Some(0));
}

#[test]
fn methods_outrank_headers() {
    let table = table(vec![
        route().header("x-a", None).header("x-b", None),
        route().method("GET"),
    ]);
    let request = request("h", "/").header("x-a", "1").header("x-b", "1");
    assert_eq!(find(&table, &request), Some(1));
}

#[test]
fn more_headers_win() {
    let table = table(vec![
        route().header("x-a", None),
        route().header("x-a", None).header("x-b", Some("1")),
    ]);
    let both = request("h", "/").header("x-a", "1").header("x-b", "1");
    assert_eq!(find(&table, &both), Some(1));
    let one = request("h", "/").header("x-a", "1");
    assert_eq!(find(&table, &one), Some(0));
}

#[test]
fn headers_outrank_query() {
    let table = table(vec![
        route().query("a", None).query("b", None),
        route().header("x-a", None),
    ]);
    let request = request("h", "/").header("x-a", "1").query("a&b");
    assert_eq!(find(&table, &request), Some(1));
}

#[test]
fn more_query_conditions_win() {
    let table = table(vec![
        route().query("a", None),
        route().query("a", None).query("b", None),
    ]);
    assert_eq!(find(&table, &request("h", "/").query("a&b")), Some(1));
    assert_eq!(find(&table, &request("h", "/").query("a")), Some(0));
}

#[test]
fn ties_go_to_first_declared() {
    let table = table(vec![
        route().prefix("/api").header("x-a", None),
        route().prefix("/api").header("x-b", None),
    ]);
    let both = request("h", "/api").header("x-a", "1").header("x-b", "1");
    assert_eq!(find(&table, &both), Some(0));
    let second = request("h", "/api").header("x-b", "1");
    assert_eq!(find(&table, &second), Some(1));
}

#[test]
fn failed_conditions_fall_through() {
    let table = table(vec![
        route().prefix("/"),
        route().template("/users/{id}"),
        route().path("/users/7").method("POST"),
    ]);
    assert_eq!(find(&table, &request("h", "/users/7")), Some(1));
    let post = request("h", "/users/7").method(Method::POST);
    assert_eq!(find(&table, &post), Some(2));
    assert_eq!(find(&table, &request("h", "/users")), Some(0));
}

#[test]
fn find_does_not_allocate() {
    let table = table(vec![
        route()
            .host("*.example.com")
            .prefix("/api")
            .header("x-tenant", Some("a")),
        route()
            .host("api.example.com")
            .template("/users/{id}")
            .query("v", Some("a b")),
        route().path("/health").method("GET"),
    ]);
    let requests = [
        request("api.example.com", "/users/7").query("x=1&v=a+b"),
        request("www.example.com", "/api/x").header("x-tenant", "a"),
        request("other.org", "/health"),
        request("a.b.c.d.example.com", "/nothing"),
    ];
    for request in &requests {
        let view = request.view();
        let info = allocation_counter::measure(|| {
            std::hint::black_box(table.find(std::hint::black_box(&view)));
        });
        assert_eq!(info.count_total, 0, "{request:?}");
    }
}

#[test]
fn table_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RouteTable>();
}

#[test]
fn strip_prefix_removes_segments() {
    let table = table(vec![route().prefix("/api").strip_prefix("/api")]);
    let cases = [
        ("/api/users", "/users"),
        ("/api", "/"),
        ("/api/", "/"),
        ("/api/a/b/", "/a/b/"),
    ];
    for (path, expected) in cases {
        let upstream = table.upstream_path(0, path);
        assert_eq!(upstream, expected, "{path}");
        assert!(matches!(upstream, Cow::Borrowed(_)), "{path}");
    }
}

#[test]
fn strip_prefix_with_trailing_slash() {
    let table = table(vec![
        route().prefix("/api/").strip_prefix("/api/"),
        route().prefix("/v1").strip_prefix("/"),
    ]);
    assert_eq!(table.upstream_path(0, "/api/users"), "/users");
    assert_eq!(table.upstream_path(0, "/api/"), "/");
    assert_eq!(table.upstream_path(1, "/v1/x"), "/v1/x");
}

#[test]
fn strip_prefix_of_template_and_path() {
    let table = table(vec![
        route().template("/api/users/{id}").strip_prefix("/api"),
        route().path("/api/health").strip_prefix("/api/health"),
    ]);
    assert_eq!(table.upstream_path(0, "/api/users/7"), "/users/7");
    assert_eq!(table.upstream_path(1, "/api/health"), "/");
}

#[test]
fn rewrite_substitutes_template_params() {
    let table = table(vec![
        route()
            .template("/users/{id}/posts/{post}")
            .rewrite("/v2/posts/{post}/by-{id}/{id}"),
        route().template("/{a}").rewrite("/{a}{a}/x/"),
    ]);
    assert_eq!(
        table.upstream_path(0, "/users/7/posts/9"),
        "/v2/posts/9/by-7/7"
    );
    assert_eq!(table.upstream_path(1, "/ab"), "/abab/x/");
}

#[test]
fn rewrite_without_params_replaces_path() {
    let table = table(vec![route().prefix("/old").rewrite("/new")]);
    assert_eq!(table.upstream_path(0, "/old/x"), "/new");
}

#[test]
fn unchanged_path_is_borrowed() {
    let table = table(vec![route().prefix("/api")]);
    let upstream = table.upstream_path(0, "/api/x");
    assert_eq!(upstream, "/api/x");
    assert!(matches!(upstream, Cow::Borrowed(_)));
}

#[test]
fn name_defaults_to_config_path() {
    let table = table(vec![route().name("users"), route()]);
    assert_eq!(table.name(0), "users");
    assert_eq!(table.name(1), "routes[1]");
    assert_eq!(table.len(), 2);
}
