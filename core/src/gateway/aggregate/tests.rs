//! Config checks of aggregate routes.

use crate::Gateway;
use crate::config::Format;

const UPSTREAMS: &str = r#"
    [upstreams.users]
    endpoints = [{ address = "127.0.0.1:9001" }]

    [upstreams.orders]
    endpoints = [{ address = "127.0.0.1:9002" }]
"#;

/// Returns each problem of the config made of [`UPSTREAMS`] and `routes` as
/// `path: message (hint)`.
fn problems(routes: &str) -> Vec<String> {
    let text = format!("{UPSTREAMS}\n{routes}");
    match Gateway::from_text(&text, Format::Toml) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

fn assert_problem(problems: &[String], path: &str, contains: &str) {
    assert!(
        problems
            .iter()
            .any(|problem| problem.starts_with(path) && problem.contains(contains)),
        "expected {path}: ...{contains}... in {problems:#?}"
    );
}

#[test]
fn valid_aggregate_route_compiles() {
    let found = problems(
        r#"
        [[routes]]
        match.path_template = "/profile/{id}"
        dispatch = "aggregate"
        aggregate.max_in_flight = 2
        aggregate.calls = [
          { name = "user", upstream = "users", path = "/users/{id}" },
          { name = "orders", upstream = "orders", path = "/orders?user={user:/id}", on_error = "optional", timeout = "1s" },
          { name = "extra", upstream = "users", path = "/extra", merge = "deep" },
        ]
        "#,
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn missing_calls_and_unused_keys_reported() {
    let found = problems(
        r#"
        [[routes]]
        dispatch = "aggregate"
        upstream = "users"
        rewrite = "/x"
        grpc_web = true
        websocket = { idle_timeout = "30s" }
        aggregate = { calls = [], max_in_flight = 0 }

        [[routes]]
        dispatch = "aggregate"
        match.path = "/b"

        [[routes]]
        match.path = "/c"
        "#,
    );
    assert_problem(
        &found,
        "routes[0].upstream",
        "not used by a route with dispatch",
    );
    assert_problem(
        &found,
        "routes[0].rewrite",
        "not used by a route with dispatch",
    );
    assert_problem(
        &found,
        "routes[0].websocket",
        "not used by a route with dispatch",
    );
    assert_problem(
        &found,
        "routes[0].grpc_web",
        "not used by a route with dispatch",
    );
    assert_problem(&found, "routes[0].aggregate.calls", "no calls");
    assert_problem(&found, "routes[0].aggregate.max_in_flight", "at least 1");
    assert_problem(&found, "routes[1].aggregate", "aggregate table is missing");
    assert_problem(&found, "routes[2].upstream", "missing upstream");
}

#[test]
fn call_problems_reported_with_paths() {
    let found = problems(
        r#"
        [[routes]]
        match.path_template = "/p/{id}"
        dispatch = "aggregate"
        aggregate.calls = [
          { name = "user", upstream = "user", path = "/users/{uid}" },
          { name = "user", upstream = "orders", path = "/o", method = "G T" },
          { name = "bad name", upstream = "orders", path = "o" },
          { name = "a", upstream = "orders", path = "/a", key = "shared" },
          { name = "b", upstream = "orders", path = "/b", key = "shared" },
          { name = "errors", upstream = "orders", path = "/e" },
          { name = "c", upstream = "orders", path = "/c", merge = "deep", key = "x" },
          { name = "d", upstream = "orders", path = "/d/{nobody:/id}", timeout = "0s" },
        ]
        "#,
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[0].upstream",
        "did you mean \"users\"",
    );
    assert_problem(&found, "routes[0].aggregate.calls[0].path", "{uid}");
    assert_problem(
        &found,
        "routes[0].aggregate.calls[1].name",
        "duplicate call name",
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[1].method",
        "invalid method",
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[2].name",
        "invalid call name",
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[2].path",
        "must start with '/'",
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[4].key",
        "duplicate key \"shared\"",
    );
    assert_problem(&found, "routes[0].aggregate.calls[5].name", "\"errors\"");
    assert_problem(
        &found,
        "routes[0].aggregate.calls[6].key",
        "merge is not \"key\"",
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[7].timeout",
        "greater than zero",
    );
}

#[test]
fn unknown_call_reference_reported() {
    let found = problems(
        r#"
        [[routes]]
        dispatch = "aggregate"
        aggregate.calls = [
          { name = "user", upstream = "users", path = "/u" },
          { name = "team", upstream = "users", path = "/t/{usr:/team}" },
        ]
        "#,
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[1].path",
        "\"usr\", which is not defined",
    );
    assert_problem(
        &found,
        "routes[0].aggregate.calls[1].path",
        "did you mean \"user\"",
    );
}

#[test]
fn cycle_reported_once() {
    let found = problems(
        r#"
        [[routes]]
        dispatch = "aggregate"
        aggregate.calls = [
          { name = "a", upstream = "users", path = "/a/{b:/id}" },
          { name = "b", upstream = "users", path = "/b/{a:/id}" },
          { name = "c", upstream = "users", path = "/c/{c:/id}" },
        ]
        "#,
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(
        &found,
        "routes[0].aggregate.calls[0].path",
        "cycle: a -> b -> a",
    );
    assert_problem(&found, "routes[0].aggregate.calls[2].path", "cycle: c -> c");
}

#[test]
fn chain_over_max_depth_reported() {
    let routes = |max_depth: usize| {
        format!(
            r#"
            [[routes]]
            dispatch = "aggregate"
            aggregate.max_depth = {max_depth}
            aggregate.calls = [
              {{ name = "a", upstream = "users", path = "/a" }},
              {{ name = "b", upstream = "users", path = "/b/{{a:/id}}" }},
              {{ name = "c", upstream = "users", path = "/c/{{b:/id}}?a={{a:/id}}" }},
            ]
            "#
        )
    };
    let found = problems(&routes(2));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(
        &found,
        "routes[0].aggregate.calls[2].path",
        "the chain of calls a -> b -> c has depth 3, over max_depth = 2",
    );
    assert!(found[0].contains("max_depth = 3"), "{found:#?}");
    assert!(problems(&routes(3)).is_empty());
}

#[test]
fn cache_policy_rejected_on_aggregate_route() {
    let found = problems(
        r#"
        [policies.cached.cache]

        [[routes]]
        dispatch = "aggregate"
        policies = ["cached"]
        aggregate.calls = [{ name = "a", upstream = "users", path = "/a" }]
        "#,
    );
    assert_problem(&found, "routes[0].policies", "cache policy");
}

/// A platform whose upstream counts the calls in flight and responds to each with a small
/// JSON body after yielding twice, so that calls started together overlap.
mod in_flight {
    use std::cell::Cell;
    use std::future::Future;
    use std::net::{IpAddr, Ipv4Addr};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::Bytes;
    use futures::executor::block_on;
    use http::{Request, Response};
    use http_body_util::BodyExt as _;

    use crate::body::{Chain, Limit, LocalBody};
    use crate::config::Format;
    use crate::error::Error;
    use crate::platform::{Clock, Platform, Upstream, UpstreamTarget};
    use crate::{ConnectionInfo, Gateway};

    struct StillClock;

    impl Clock for StillClock {
        fn unix_millis(&self) -> u64 {
            1_700_000_000_000
        }

        fn monotonic(&self) -> Duration {
            Duration::from_secs(1)
        }

        // Time never moves, so no timeout fires while the calls overlap.
        async fn sleep(&self, _duration: Duration) {
            std::future::pending::<()>().await;
        }
    }

    /// Returns `Pending` once, waking itself, so other futures get polled.
    struct YieldOnce(bool);

    impl Future for YieldOnce {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            context.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[derive(Default)]
    struct CountingUpstream {
        in_flight: Cell<usize>,
        max_in_flight: Cell<usize>,
        sent: Cell<usize>,
    }

    impl Upstream for CountingUpstream {
        type Body = LocalBody;

        async fn send(
            &self,
            request: Request<LocalBody>,
            _target: &UpstreamTarget<'_>,
        ) -> Result<Response<LocalBody>, Error> {
            self.sent.set(self.sent.get() + 1);
            self.in_flight.set(self.in_flight.get() + 1);
            self.max_in_flight
                .set(self.max_in_flight.get().max(self.in_flight.get()));
            YieldOnce(false).await;
            YieldOnce(false).await;
            self.in_flight.set(self.in_flight.get() - 1);
            let body = format!(r#"{{"path": "{}"}}"#, request.uri().path());
            Ok(Response::new(LocalBody::from(Bytes::from(body))))
        }
    }

    #[derive(Default)]
    struct CountingPlatform {
        upstream: CountingUpstream,
        cache: Option<crate::cache::MemoryResponseCache>,
    }

    impl Platform for CountingPlatform {
        type Body = LocalBody;
        type Clock = StillClock;
        type Upstream = CountingUpstream;
        type KeyValue = crate::platform::NoKeyValue;
        type ResponseCache = crate::cache::MemoryResponseCache;
        type Counters = crate::platform::NoSharedStores;

        fn clock(&self) -> &StillClock {
            &StillClock
        }

        fn upstream(&self) -> &CountingUpstream {
            &self.upstream
        }

        fn limit_body(&self, body: LocalBody, max_bytes: u64) -> LocalBody {
            LocalBody::boxed(Limit::new(body, max_bytes))
        }

        fn chain_body(&self, prefix: Bytes, rest: LocalBody) -> LocalBody {
            LocalBody::boxed(Chain::new(prefix, rest))
        }

        fn response_cache(&self) -> &crate::cache::MemoryResponseCache {
            self.cache.as_ref().expect("the test sets a cache")
        }

        fn counters(&self) -> &crate::platform::NoSharedStores {
            &crate::platform::NoSharedStores
        }

        fn random_u64(&self) -> u64 {
            7
        }
    }

    /// Sends one request to a route with five independent calls and returns the most
    /// calls the upstream saw in flight together, with the response body.
    fn run(max_in_flight: usize) -> (usize, usize, serde_json::Value) {
        let text = format!(
            r#"
            [upstreams.api]
            endpoints = [{{ address = "127.0.0.1:9001" }}]

            [[routes]]
            dispatch = "aggregate"
            aggregate.max_in_flight = {max_in_flight}
            aggregate.calls = [
              {{ name = "a", upstream = "api", path = "/a" }},
              {{ name = "b", upstream = "api", path = "/b" }},
              {{ name = "c", upstream = "api", path = "/c" }},
              {{ name = "d", upstream = "api", path = "/d" }},
              {{ name = "e", upstream = "api", path = "/e{{a:/path}}" }},
            ]
            "#
        );
        let gateway = Gateway::from_text(&text, Format::Toml).expect("valid config");
        let platform = CountingPlatform {
            cache: Some(crate::cache::MemoryResponseCache::new(1 << 10)),
            ..CountingPlatform::default()
        };
        let request = Request::get("/x")
            .header("host", "localhost")
            .body(LocalBody::from(Bytes::new()))
            .expect("valid request");
        let connection = ConnectionInfo {
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            secure: false,
        };
        let handled = block_on(gateway.handle(request, &connection, &platform));
        assert_eq!(handled.response.status(), 200);
        let body = block_on(handled.response.into_body().collect())
            .expect("body")
            .to_bytes();
        let body = serde_json::from_slice(&body).expect("JSON body");
        (
            platform.upstream.max_in_flight.get(),
            platform.upstream.sent.get(),
            body,
        )
    }

    #[test]
    fn max_in_flight_bounds_calls() {
        let (max_seen, sent, body) = run(2);
        assert_eq!(max_seen, 2);
        assert_eq!(sent, 5);
        assert_eq!(body["e"]["path"], "/e%2Fa");

        let (max_seen, sent, _) = run(1);
        assert_eq!(max_seen, 1);
        assert_eq!(sent, 5);
    }

    #[test]
    fn independent_calls_overlap() {
        // e waits for a, so at most four calls are in flight together.
        let (max_seen, sent, body) = run(6);
        assert_eq!(max_seen, 4);
        assert_eq!(sent, 5);
        assert_eq!(body["a"]["path"], "/a");
    }
}
