//! Tests of the problems that [`RouteTable::build`] reports.

use super::RouteTable;
use super::tests::{RouteBuilder, route};
use crate::config::RouteConfig;

/// Returns every problem reported for `routes`, formatted as `path: message (hint)`.
fn problems(routes: Vec<RouteBuilder>) -> Vec<String> {
    let configs: Vec<RouteConfig> = routes.into_iter().map(RouteBuilder::done).collect();
    match RouteTable::build(&configs) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Checks that each route alone is reported with exactly the expected problem.
fn assert_single_problems(cases: Vec<(RouteBuilder, &str)>) {
    for (route, expected) in cases {
        assert_eq!(problems(vec![route]), [expected]);
    }
}

#[test]
fn problem_has_path_message_and_hint() {
    let configs = [route().prefix("api").done()];
    let errors = match RouteTable::build(&configs) {
        Ok(_) => panic!("a prefix without '/' was accepted"),
        Err(errors) => errors,
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "routes[0].match.path_prefix");
    assert_eq!(
        errors[0].message,
        "invalid path \"api\": must start with '/'"
    );
    assert_eq!(errors[0].hint.as_deref(), Some("write \"/api\""));
}

#[test]
fn reports_several_path_conditions() {
    let hint = "keep only one of them, or split the route into one route per path condition";
    assert_single_problems(vec![
        (
            route().path("/a").prefix("/b"),
            &format!(
                "routes[0].match: path and path_prefix are set, but a route takes at most one path condition ({hint})"
            ),
        ),
        (
            route().path("/a").prefix("/b").template("/{c}"),
            &format!(
                "routes[0].match: path, path_prefix and path_template are set, but a route takes at most one path condition ({hint})"
            ),
        ),
    ]);
}

#[test]
fn reports_each_invalid_path_of_conflict() {
    let problems = problems(vec![route().path("a").template("/{")]);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].starts_with("routes[0].match.path: "),
        "{problems:#?}"
    );
    assert!(
        problems[1].starts_with("routes[0].match.path_template: "),
        "{problems:#?}"
    );
    assert!(
        problems[2].starts_with("routes[0].match: "),
        "{problems:#?}"
    );
}

#[test]
fn reports_path_without_leading_slash() {
    assert_single_problems(vec![
        (
            route().path("users"),
            "routes[0].match.path: invalid path \"users\": must start with '/' (write \"/users\")",
        ),
        (
            route().prefix(""),
            "routes[0].match.path_prefix: invalid path \"\": must start with '/' (write \"/\")",
        ),
        (
            route().template("{id}"),
            "routes[0].match.path_template: invalid path \"{id}\": must start with '/' (write \"/{id}\")",
        ),
    ]);
}

#[test]
fn reports_path_not_in_normal_form() {
    let hint = "because request paths are normalized before matching";
    assert_single_problems(vec![
        (
            route().path("/a//b"),
            &format!(
                "routes[0].match.path: path \"/a//b\" is not in normal form (write \"/a/b\", {hint})"
            ),
        ),
        (
            route().prefix("/a/./b/.."),
            &format!(
                "routes[0].match.path_prefix: path \"/a/./b/..\" is not in normal form (write \"/a/\", {hint})"
            ),
        ),
        (
            route().path("/%61pi/%3a"),
            &format!(
                "routes[0].match.path: path \"/%61pi/%3a\" is not in normal form (write \"/api/%3A\", {hint})"
            ),
        ),
        (
            route().template("/{id}/."),
            &format!(
                "routes[0].match.path_template: path \"/{{id}}/.\" is not in normal form (write \"/{{id}}/\", {hint})"
            ),
        ),
    ]);
}

#[test]
fn reports_path_that_requests_cannot_have() {
    let hint = "remove or fix it, because requests with such a path are rejected before routing";
    assert_single_problems(vec![
        (
            route().prefix("/a%2Fb"),
            &format!(
                "routes[0].match.path_prefix: invalid path \"/a%2Fb\": encoded slash (%2F) is not allowed at byte 2 (\"%2F\") ({hint})"
            ),
        ),
        (
            route().path("/a\\b"),
            &format!(
                "routes[0].match.path: invalid path \"/a\\\\b\": backslash is not allowed at byte 2 (\"\\\\b\") ({hint})"
            ),
        ),
        (
            route().path("/a/../.."),
            &format!(
                "routes[0].match.path: invalid path \"/a/../..\": '..' climbs above the root ({hint})"
            ),
        ),
        (
            route().prefix("/%zz"),
            &format!(
                "routes[0].match.path_prefix: invalid path \"/%zz\": invalid percent-encoding at byte 1 (\"%zz\") ({hint})"
            ),
        ),
    ]);
}

#[test]
fn reports_braces_in_literal_path() {
    let hint = "use path_template for parameters, or write a literal brace as %7B or %7D";
    assert_single_problems(vec![
        (
            route().path("/users/{id}"),
            &format!(
                "routes[0].match.path: invalid path \"/users/{{id}}\": contains '{{' or '}}' ({hint})"
            ),
        ),
        (
            route().prefix("/a}"),
            &format!(
                "routes[0].match.path_prefix: invalid path \"/a}}\": contains '{{' or '}}' ({hint})"
            ),
        ),
    ]);
}

#[test]
fn reports_malformed_templates() {
    let field = "routes[0].match.path_template";
    let braces = "write parameters as {name}";
    assert_single_problems(vec![
        (
            route().template("/a/{id"),
            &format!("{field}: invalid path template \"/a/{{id\": '{{' is not closed ({braces})"),
        ),
        (
            route().template("/a/id}"),
            &format!(
                "{field}: invalid path template \"/a/id}}\": '}}' without a matching '{{' ({braces})"
            ),
        ),
        (
            route().template("/a/{}"),
            &format!(
                "{field}: invalid path template \"/a/{{}}\": empty parameter name (name the parameter, as in {{id}})"
            ),
        ),
        (
            route().template("/{a}{b}"),
            &format!(
                "{field}: invalid path template \"/{{a}}{{b}}\": segment \"{{a}}{{b}}\" has more than one parameter (a parameter matches one whole segment, so use one parameter per segment)"
            ),
        ),
        (
            route().template("/v{n}"),
            &format!(
                "{field}: invalid path template \"/v{{n}}\": segment \"v{{n}}\" mixes text and a parameter (make the parameter the whole segment, as in /{{n}})"
            ),
        ),
        (
            route().template("/{a-b}"),
            &format!(
                "{field}: invalid path template \"/{{a-b}}\": invalid parameter name \"a-b\" (a parameter name contains only letters, digits and '_')"
            ),
        ),
        (
            route().template("/{id}/x/{id}"),
            &format!(
                "{field}: invalid path template \"/{{id}}/x/{{id}}\": duplicate parameter name \"id\" (give each parameter a distinct name)"
            ),
        ),
    ]);
}

#[test]
fn reports_every_template_segment() {
    let problems = problems(vec![route().template("/{a}/{}/x{b}/{a}")]);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].contains("empty parameter name"),
        "{problems:#?}"
    );
    assert!(
        problems[1].contains("mixes text and a parameter"),
        "{problems:#?}"
    );
    assert!(
        problems[2].contains("duplicate parameter name \"a\""),
        "{problems:#?}"
    );
}

#[test]
fn reports_invalid_hosts() {
    let field = "routes[0].match.hosts[0]";
    let wildcard = "write a wildcard as *.example.com";
    let label = "remove the extra '.', because a host has no leading, trailing or doubled dots";
    let characters =
        "a host contains only letters, digits, '-', '_' and '.', without a scheme or port";
    let ipv6 = "write an IPv6 address in brackets without a port, as in [2001:db8::1]";
    assert_single_problems(vec![
        (
            route().host(""),
            &format!(
                "{field}: empty host (remove it, because an empty hosts list already matches any host)"
            ),
        ),
        (
            route().host("*"),
            &format!("{field}: host \"*\" has no suffix (leave hosts empty to match any host)"),
        ),
        (
            route().host("a.*.com"),
            &format!(
                "{field}: invalid host \"a.*.com\": '*' is allowed only as the whole first label ({wildcard})"
            ),
        ),
        (
            route().host("*example.com"),
            &format!(
                "{field}: invalid host \"*example.com\": '*' is allowed only as the whole first label ({wildcard})"
            ),
        ),
        (
            route().host("*.*.com"),
            &format!(
                "{field}: invalid host \"*.*.com\": '*' is allowed only as the whole first label ({wildcard})"
            ),
        ),
        (
            route().host("a..com"),
            &format!("{field}: invalid host \"a..com\": empty label ({label})"),
        ),
        (
            route().host("example.com."),
            &format!("{field}: invalid host \"example.com.\": empty label ({label})"),
        ),
        (
            route().host("*."),
            &format!("{field}: invalid host \"*.\": empty label ({label})"),
        ),
        (
            route().host("a.com:8080"),
            &format!("{field}: invalid host \"a.com:8080\": invalid character ':' ({characters})"),
        ),
        (
            route().host("https://a.com"),
            &format!(
                "{field}: invalid host \"https://a.com\": invalid character ':' ({characters})"
            ),
        ),
        (
            route().host("[::1"),
            &format!("{field}: invalid host \"[::1\": invalid IPv6 address ({ipv6})"),
        ),
        (
            route().host("[::1]:80"),
            &format!("{field}: invalid host \"[::1]:80\": invalid IPv6 address ({ipv6})"),
        ),
    ]);
}

#[test]
fn accepts_valid_hosts() {
    let hosts = [
        "API.Example.com",
        "*.example.com",
        "localhost",
        "my_host-1.internal",
        "[::1]",
    ];
    for host in hosts {
        assert_eq!(
            problems(vec![route().host(host)]),
            Vec::<String>::new(),
            "{host}"
        );
    }
}

#[test]
fn reports_invalid_methods() {
    let hint = "a method is a token such as GET, POST or PURGE, without spaces";
    let problems = problems(vec![route().method("GET").method("GE T").method("")]);
    assert_eq!(
        problems,
        [
            format!("routes[0].match.methods[1]: invalid method \"GE T\" ({hint})"),
            format!("routes[0].match.methods[2]: invalid method \"\" ({hint})"),
        ]
    );
}

#[test]
fn reports_invalid_header_condition() {
    let name_hint = "a header name is a token such as x-tenant, without spaces or ':'";
    let value_hint = "a header value cannot contain control characters such as line breaks";
    let problems = problems(vec![
        route().header("x-ok", Some("v")).header("x y", None),
        route().header("x-tenant:", Some("a\nb")),
    ]);
    assert_eq!(
        problems,
        [
            format!("routes[0].match.headers[1].name: invalid header name \"x y\" ({name_hint})"),
            format!(
                "routes[1].match.headers[0].name: invalid header name \"x-tenant:\" ({name_hint})"
            ),
            format!(
                "routes[1].match.headers[0].value: invalid header value \"a\\nb\" ({value_hint})"
            ),
        ]
    );
}

#[test]
fn reports_empty_query_name() {
    assert_single_problems(vec![(
        route().query("", Some("1")),
        "routes[0].match.query[0].name: empty query parameter name (set the parameter name, as in name = \"version\")",
    )]);
}

#[test]
fn reports_invalid_strip_prefix() {
    let boundary = "strip_prefix must equal whole leading segments of the path condition, as /api does for /api/users";
    assert_single_problems(vec![
        (
            route().prefix("/api").strip_prefix("api"),
            "routes[0].strip_prefix: invalid path \"api\": must start with '/' (write \"/api\")",
        ),
        (
            route().prefix("/api").strip_prefix("/api//"),
            "routes[0].strip_prefix: path \"/api//\" is not in normal form (write \"/api/\", because request paths are normalized before matching)",
        ),
        (
            route().prefix("/apis").strip_prefix("/api"),
            &format!(
                "routes[0].strip_prefix: strip_prefix \"/api\" is not a prefix of the route's path_prefix \"/apis\" ({boundary})"
            ),
        ),
        (
            route().path("/api").strip_prefix("/api/v1"),
            &format!(
                "routes[0].strip_prefix: strip_prefix \"/api/v1\" is not a prefix of the route's path \"/api\" ({boundary})"
            ),
        ),
        (
            route().template("/{version}/users").strip_prefix("/v1"),
            &format!(
                "routes[0].strip_prefix: strip_prefix \"/v1\" is not a prefix of the route's path_template \"/{{version}}/users\" ({boundary})"
            ),
        ),
        (
            route().strip_prefix("/api"),
            "routes[0].strip_prefix: strip_prefix \"/api\" needs a path condition that starts with it (add match.path_prefix = \"/api\")",
        ),
    ]);
}

#[test]
fn reports_strip_prefix_with_rewrite() {
    assert_single_problems(vec![(
        route().prefix("/api").strip_prefix("/api").rewrite("/v2"),
        "routes[0].rewrite: strip_prefix and rewrite are both set (remove strip_prefix, because rewrite replaces the whole path)",
    )]);
}

#[test]
fn reports_invalid_rewrite() {
    assert_single_problems(vec![
        (
            route().prefix("/api").rewrite("v2"),
            "routes[0].rewrite: invalid path \"v2\": must start with '/' (write \"/v2\")",
        ),
        (
            route().template("/users/{id}").rewrite("/v2/{id"),
            "routes[0].rewrite: invalid rewrite \"/v2/{id\": '{' is not closed (write parameters as {name})",
        ),
        (
            route().template("/users/{id}/{tab}").rewrite("/v2/{user}"),
            "routes[0].rewrite: rewrite uses {user}, which the route's path_template does not define (use one of the template's parameters: id, tab)",
        ),
        (
            route().prefix("/users").rewrite("/v2/{id}"),
            "routes[0].rewrite: rewrite uses {id}, which the route's path_template does not define (capture it with match.path_template, as in /users/{id})",
        ),
    ]);
}

#[test]
fn reports_duplicate_route_names() {
    let problems = problems(vec![
        route().name("users"),
        route().name("routes[2]"),
        route(),
        route().name("users"),
        route().name(""),
    ]);
    assert_eq!(
        problems,
        [
            "routes[2].name: duplicate route name \"routes[2]\" (routes[1] has the same name, so give each route a distinct name)",
            "routes[3].name: duplicate route name \"users\" (routes[0] has the same name, so give each route a distinct name)",
            "routes[4].name: empty route name (remove name to use the default, routes[4])",
        ]
    );
}

#[test]
fn collects_every_problem() {
    let problems = problems(vec![
        route().host("a..com").method("G T").prefix("x"),
        route().prefix("/ok"),
        route()
            .header("bad name", None)
            .query("", None)
            .rewrite("/{id}"),
    ]);
    let paths: Vec<&str> = problems
        .iter()
        .map(|problem| problem.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        paths,
        [
            "routes[0].match.hosts[0]",
            "routes[0].match.methods[0]",
            "routes[0].match.path_prefix",
            "routes[2].match.headers[0].name",
            "routes[2].match.query[0].name",
            "routes[2].rewrite",
        ]
    );
}
