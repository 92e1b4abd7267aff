#![allow(clippy::unwrap_used, reason = "tests report failures by panicking")]

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::Format;
use crate::health::Outcome;
use crate::key_value::MemoryKeyValue;
use crate::platform::Clock;

#[derive(Debug, Clone, Default)]
struct HandClock(Rc<Cell<u64>>);

impl Clock for HandClock {
    fn unix_millis(&self) -> u64 {
        self.0.get()
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.0.get())
    }

    async fn sleep(&self, _duration: Duration) {}
}

const P2C_CONFIG: &str = r#"
[upstreams.api]
balancer = "p2c_ewma"
endpoints = [{ address = "10.0.0.1:80" }, { address = "10.0.0.2:80" }]

[[routes]]
upstream = "api"
"#;

fn endpoints(addresses: &[&str]) -> Vec<EndpointConfig> {
    addresses
        .iter()
        .map(|address| EndpointConfig {
            address: (*address).to_owned(),
            weight: 1,
            zone: None,
            priority: 0,
        })
        .collect()
}

fn change(upstream: &str, addresses: &[&str]) -> BTreeMap<String, Vec<EndpointConfig>> {
    BTreeMap::from([(upstream.to_owned(), endpoints(addresses))])
}

fn problems(text: &str) -> Vec<String> {
    match Gateway::from_text(text, Format::Toml) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn upstream_with_discovery_needs_no_endpoints() {
    let text = r#"
[upstreams.api]
discovery.dns = "api.internal:8080"

[[routes]]
upstream = "api"
"#;
    let gateway = Gateway::from_text(text, Format::Toml).unwrap();
    assert!(gateway.endpoint_health(Duration::ZERO).is_empty());
    let discovered: Vec<&str> = gateway
        .discovered_upstreams()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(discovered, ["api"]);
}

#[test]
fn discovery_source_count_checked() {
    let none = problems("[upstreams.api.discovery]\nmin_ttl = \"1s\"\n");
    assert_eq!(none.len(), 1, "{none:?}");
    assert!(none[0].contains("exactly one of dns, srv, file and key_value, found none"));

    let two = problems("[upstreams.api.discovery]\ndns = \"a:1\"\nfile = \"b.json\"\n");
    assert_eq!(two.len(), 1, "{two:?}");
    assert!(two[0].contains("found dns, file"), "{two:?}");
}

#[test]
fn discovery_values_checked() {
    let text = r#"
[resolver]
nameservers = ["localhost"]
timeout = "0s"

[upstreams.api.discovery]
dns = "api.internal"
min_ttl = "10s"
max_ttl = "5s"
interval = "0s"
"#;
    let problems = problems(text);
    let paths: Vec<&str> = problems
        .iter()
        .map(|problem| problem.split(':').next().unwrap())
        .collect();
    for path in [
        "resolver.nameservers[0]",
        "resolver.timeout",
        "upstreams.api.discovery.dns",
        "upstreams.api.discovery.min_ttl",
        "upstreams.api.discovery.interval",
    ] {
        assert!(paths.contains(&path), "{path} missing from {problems:?}");
    }
}

#[test]
fn ttl_clamped_to_bounds() {
    let discovery = DiscoveryConfig {
        min_ttl: crate::config::ConfigDuration::from_millis(2_000),
        max_ttl: crate::config::ConfigDuration::from_millis(30_000),
        ..DiscoveryConfig::default()
    };
    let clamp = |seconds| discovery.clamp_ttl(Duration::from_secs(seconds)).as_secs();
    assert_eq!(clamp(0), 2);
    assert_eq!(clamp(10), 10);
    assert_eq!(clamp(86_400), 30);
}

#[test]
fn endpoint_list_formats() {
    let json = r#"{"endpoints": [{"address": "10.0.0.1:80", "weight": 3}]}"#;
    let parsed = parse_endpoint_list(json, Format::Json).unwrap();
    assert_eq!(parsed[0].address, "10.0.0.1:80");
    assert_eq!(parsed[0].weight, 3);

    let toml = "endpoints = [{ address = \"10.0.0.2:80\", zone = \"a\" }]\n";
    let parsed = parse_endpoint_list(toml, Format::Toml).unwrap();
    assert_eq!(parsed[0].zone.as_deref(), Some("a"));

    let unknown = parse_endpoint_list(
        r#"{"endpoints": [{"address": "x:1", "wieght": 2}]}"#,
        Format::Json,
    );
    let problem = unknown.unwrap_err();
    assert!(problem.contains("endpoints.0.wieght"), "{problem}");
}

#[test]
fn changed_endpoints_keep_state_of_those_that_stay() {
    let old = Gateway::from_text(P2C_CONFIG, Format::Toml).unwrap();
    let old_upstream = &old.compiled.upstreams[0];
    // One request in flight to 10.0.0.2, and 10.0.0.2 ejected.
    old_upstream.balancer.on_start(1);
    let now = Duration::from_secs(100);
    for _ in 0..5 {
        old_upstream.outlier.record(1, Outcome::Failure, now);
    }
    assert!(old_upstream.outlier.is_ejected(1, now));

    let new = old
        .with_endpoints(&change("api", &["10.0.0.2:80", "10.0.0.3:80"]))
        .unwrap();
    let upstream = &new.compiled.upstreams[0];
    assert_eq!(upstream.endpoints[0].authority, "10.0.0.2:80");
    assert_eq!(upstream.balancer.in_flight(0), Some(1));
    assert_eq!(upstream.balancer.in_flight(1), Some(0));
    assert!(upstream.outlier.is_ejected(0, now));
    assert!(!upstream.outlier.is_ejected(1, now));
    assert!(Arc::ptr_eq(
        &upstream.circuits[0],
        &old_upstream.circuits[1]
    ));
    assert!(Arc::ptr_eq(&upstream.active[0], &old_upstream.active[1]));
    assert!(Arc::ptr_eq(&upstream.budget, &old_upstream.budget));

    // The request that started on the old gateway finishes there and is taken off
    // the shared count.
    old_upstream
        .balancer
        .on_finish(1, Duration::from_millis(5), now);
    assert_eq!(upstream.balancer.in_flight(0), Some(0));
    // The old gateway is unchanged.
    assert_eq!(old.config().upstreams["api"].endpoints.len(), 2);
    assert_eq!(
        old.compiled.upstreams[0].endpoints[0].authority,
        "10.0.0.1:80"
    );
}

#[test]
fn invalid_endpoints_rejected() {
    let old = Gateway::from_text(P2C_CONFIG, Format::Toml).unwrap();
    let duplicate = old.with_endpoints(&change("api", &["10.0.0.9:80", "10.0.0.9:80"]));
    let problems = duplicate.unwrap_err().to_string();
    assert!(problems.contains("duplicate endpoint"), "{problems}");

    let missing = old.with_endpoints(&change("nowhere", &["10.0.0.9:80"]));
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("upstreams.nowhere")
    );
}

const KEY_VALUE_CONFIG: &str = r#"
[upstreams.api]
endpoints = [{ address = "10.0.0.1:80" }]
discovery = { key_value = "upstreams/api", interval = "10s" }

[[routes]]
upstream = "api"
"#;

fn addresses(gateway: &Gateway) -> Vec<String> {
    gateway.config().upstreams["api"]
        .endpoints
        .iter()
        .map(|endpoint| endpoint.address.clone())
        .collect()
}

#[test]
fn key_value_source_read_per_interval() {
    futures::executor::block_on(async {
        let clock = HandClock::default();
        clock.0.set(1_000);
        let store = MemoryKeyValue::new(clock.clone(), 10);
        let discovery = KeyValueDiscovery::new();
        let gateway = Gateway::from_text(KEY_VALUE_CONFIG, Format::Toml).unwrap();

        // A missing key keeps the configured endpoints.
        let (next, reads) = discovery.refresh(&gateway, &store, clock.monotonic()).await;
        assert!(next.is_none());
        assert!(
            matches!(&reads[..], [(name, DiscoveryRead::Failed(why))] if name == "api" && why.contains("not found")),
            "{reads:?}"
        );

        let list = r#"{"endpoints": [{"address": "10.0.0.2:80"}, {"address": "10.0.0.3:80"}]}"#;
        store
            .insert("upstreams/api", Bytes::from(list), None)
            .unwrap();
        // Within the interval the key is not read again.
        clock.0.set(5_000);
        let (next, reads) = discovery.refresh(&gateway, &store, clock.monotonic()).await;
        assert!(next.is_none());
        assert!(reads.is_empty(), "{reads:?}");

        clock.0.set(11_000);
        let (next, reads) = discovery.refresh(&gateway, &store, clock.monotonic()).await;
        assert_eq!(
            reads,
            [("api".to_owned(), DiscoveryRead::Changed { endpoints: 2 })]
        );
        let gateway = next.unwrap();
        assert_eq!(addresses(&gateway), ["10.0.0.2:80", "10.0.0.3:80"]);

        clock.0.set(21_000);
        let (next, reads) = discovery.refresh(&gateway, &store, clock.monotonic()).await;
        assert!(next.is_none());
        assert_eq!(reads, [("api".to_owned(), DiscoveryRead::Unchanged)]);
    });
}

#[test]
fn key_value_bad_entries_keep_last_set() {
    futures::executor::block_on(async {
        let clock = HandClock::default();
        let store = MemoryKeyValue::new(clock.clone(), 10);
        let discovery = KeyValueDiscovery::new();
        let gateway = Gateway::from_text(KEY_VALUE_CONFIG, Format::Toml).unwrap();
        let entries = [
            ("not json", "key \"upstreams/api\""),
            (r#"{"endpoints": []}"#, "no endpoints"),
            (
                r#"{"endpoints": [{"address": "no port"}]}"#,
                "endpoints[0].address",
            ),
        ];
        for (index, (entry, expected)) in entries.into_iter().enumerate() {
            store
                .insert("upstreams/api", Bytes::from(entry), None)
                .unwrap();
            clock.0.set(20_000 * (index as u64 + 1));
            let (next, reads) = discovery.refresh(&gateway, &store, clock.monotonic()).await;
            assert!(next.is_none(), "{entry}");
            let [(_, DiscoveryRead::Failed(why))] = &reads[..] else {
                panic!("{entry}: {reads:?}");
            };
            assert!(why.contains(expected), "{entry}: {why}");
        }
        assert_eq!(addresses(&gateway), ["10.0.0.1:80"]);
    });
}

#[test]
fn key_value_empty_set_when_allowed() {
    futures::executor::block_on(async {
        let clock = HandClock::default();
        let store = MemoryKeyValue::new(clock.clone(), 10);
        let text = KEY_VALUE_CONFIG.replace("interval = \"10s\"", "allow_empty = true");
        let gateway = Gateway::from_text(&text, Format::Toml).unwrap();
        store
            .insert("upstreams/api", Bytes::from(r#"{"endpoints": []}"#), None)
            .unwrap();
        let (next, reads) = KeyValueDiscovery::new()
            .refresh(&gateway, &store, clock.monotonic())
            .await;
        assert_eq!(
            reads,
            [("api".to_owned(), DiscoveryRead::Changed { endpoints: 0 })]
        );
        assert!(addresses(&next.unwrap()).is_empty());
    });
}

#[test]
fn read_log_lines() {
    assert_eq!(DiscoveryRead::Unchanged.log_line("api"), None);
    assert!(!DiscoveryRead::Unchanged.is_failure());

    let changed = DiscoveryRead::Changed { endpoints: 2 };
    assert!(!changed.is_failure());
    assert_eq!(
        changed.log_line("api").unwrap(),
        "gatehouse: discovered endpoints of upstream api changed (2 endpoints)"
    );

    let failed = DiscoveryRead::Failed("key \"k\" not found".to_owned());
    assert!(failed.is_failure());
    let line = failed.log_line("api").unwrap();
    assert!(line.contains("upstream api failed"), "{line}");
    assert!(line.ends_with("key \"k\" not found"), "{line}");
}
