//! Checks a gateway config against a Spin manifest (`spin.toml`, manifest version 2):
//! Spin rejects outbound connections to hosts missing from a component's
//! `allowed_outbound_hosts`, which would otherwise show only in production, as 502s
//! for upstream endpoints and as `on_store_error` for Redis stores.
//!
//! Entries understood: `SCHEME://HOST[:PORT]`, where SCHEME is `http`, `https`,
//! `redis` or `*`, HOST is a name, an IP literal, `*` or `*.SUFFIX`, and PORT is a
//! number, `*` or absent (the scheme's default port: 80, 443 or 6379). Entries with `{{ variable }}` templates depend
//! on values known only at deployment, so they are reported as not checked.

use std::fmt;
use std::path::Path;

use gatehouse_core::config::{BalancerKind, Config, DiscoverySource, StoreConfig};

/// An upstream endpoint or Redis store that no `allowed_outbound_hosts` entry of a
/// component allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingHost {
    /// Config path of the address, such as `upstreams.users.endpoints[0].address` or
    /// `stores.shared.redis.url`.
    pub path: String,
    /// The address, `host:port`.
    pub address: String,
    /// The component of the manifest that lacks the entry.
    pub component: String,
    /// The scheme the component connects with: `http`, `https` (an upstream with
    /// TLS) or `redis`.
    pub scheme: &'static str,
}

impl MissingHost {
    /// Returns the `allowed_outbound_hosts` entry that allows this address.
    pub fn suggested_entry(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }
}

impl fmt::Display for MissingHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} is missing from allowed_outbound_hosts of component {:?}; add \"{}\" to \
             [component.{}] allowed_outbound_hosts",
            self.path,
            self.address,
            self.component,
            self.suggested_entry(),
            self.component
        )
    }
}

/// The result of checking a config against a manifest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ManifestReport {
    /// Endpoints that a component may not reach.
    pub missing: Vec<MissingHost>,
    /// Entries that could not be checked, with the reason.
    pub unchecked: Vec<String>,
    /// Number of components checked.
    pub components: usize,
}

/// Reads the manifest at `path` and checks every upstream endpoint and Redis store of
/// `config` against the `allowed_outbound_hosts` of each component in it.
pub fn check_file(config: &Config, path: &Path) -> Result<ManifestReport, String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        format!(
            "failed to read the Spin manifest {}: {error}",
            path.display()
        )
    })?;
    check_text(config, &text).map_err(|error| format!("{}: {error}", path.display()))
}

/// Checks every upstream endpoint and Redis store of `config` against the manifest
/// text.
pub fn check_text(config: &Config, manifest: &str) -> Result<ManifestReport, String> {
    let document: toml::Table =
        toml::from_str(manifest).map_err(|error| format!("invalid TOML: {error}"))?;
    match document.get("spin_manifest_version") {
        Some(toml::Value::Integer(2)) => {}
        Some(other) => {
            return Err(format!(
                "spin_manifest_version is {other}; only manifest version 2 is supported"
            ));
        }
        None => return Err("spin_manifest_version is missing; expected 2".to_owned()),
    }
    let components = document
        .get("component")
        .and_then(toml::Value::as_table)
        .filter(|components| !components.is_empty())
        .ok_or("the manifest has no [component.NAME] table")?;

    let mut report = ManifestReport {
        components: components.len(),
        ..ManifestReport::default()
    };
    for (name, component) in components {
        let entries = outbound_entries(name, component)?;
        let mut patterns = Vec::new();
        for entry in entries {
            if entry.contains("{{") {
                report.unchecked.push(format!(
                    "component {name:?}: allowed_outbound_hosts entry {entry:?} uses a \
                     template, so it was not checked"
                ));
                continue;
            }
            match HostPattern::parse(&entry) {
                Ok(pattern) => patterns.push(pattern),
                Err(reason) => report.unchecked.push(format!(
                    "component {name:?}: allowed_outbound_hosts entry {entry:?} was not \
                     checked: {reason}"
                )),
            }
        }
        for (upstream_name, upstream) in &config.upstreams {
            let scheme = if upstream.tls.is_some() {
                "https"
            } else {
                "http"
            };
            for (index, endpoint) in upstream.endpoints.iter().enumerate() {
                let allowed = split_address(&endpoint.address).is_some_and(|(host, port)| {
                    patterns
                        .iter()
                        .any(|pattern| pattern.allows(scheme, host, port))
                });
                if !allowed {
                    report.missing.push(MissingHost {
                        path: format!("upstreams.{upstream_name}.endpoints[{index}].address"),
                        address: endpoint.address.clone(),
                        component: name.clone(),
                        scheme,
                    });
                }
            }
        }
        for (store_name, store) in &config.stores {
            let StoreConfig::Redis(redis) = store else {
                continue;
            };
            let Some((host, port)) = redis_host_port(&redis.url) else {
                // The config check rejected URLs without a host.
                continue;
            };
            let allowed = patterns
                .iter()
                .any(|pattern| pattern.allows("redis", &host, port));
            if !allowed {
                let address = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                report.missing.push(MissingHost {
                    path: format!("stores.{store_name}.redis.url"),
                    address,
                    component: name.clone(),
                    scheme: "redis",
                });
            }
        }
    }
    Ok(report)
}

/// Returns the host, without brackets, and the port (6379 when absent) of a
/// `redis://[USER@]HOST[:PORT][/DB]` URL.
fn redis_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("redis://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    let (host, port) = match host_port.rsplit_once(':') {
        // A colon inside brackets belongs to an IPv6 address, not to a port.
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (host_port, REDIS_DEFAULT_PORT),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// The port of `redis://` URLs and `allowed_outbound_hosts` entries that name none.
const REDIS_DEFAULT_PORT: u16 = 6379;

/// Lists the upstreams whose balancer keeps its state in memory between requests.
///
/// Spin creates a new component instance for every request, so such a balancer starts
/// from scratch each time: round robin sends every request to the first endpoint, and
/// least outstanding and P2C see no other requests or latencies.
pub fn stateful_balancer_warnings(config: &Config) -> Vec<String> {
    config
        .upstreams
        .iter()
        .filter(|(_, upstream)| {
            matches!(
                upstream.balancer,
                BalancerKind::RoundRobin
                    | BalancerKind::WeightedRoundRobin
                    | BalancerKind::LeastOutstanding
                    | BalancerKind::P2cEwma
            )
        })
        .map(|(name, upstream)| {
            format!(
                "upstreams.{name}.balancer: {:?} keeps its state between requests, but Spin \
                 creates a new instance for every request, so it cannot spread load as \
                 configured; use \"random\" or \"consistent_hash\" on Spin",
                balancer_name(upstream.balancer)
            )
        })
        .collect()
}

/// Lists the upstreams whose `discovery` source a Spin component does not read (`dns`,
/// `srv` and `file`): it serves their static `endpoints`, if any. A `key_value`
/// source is read on every request.
pub fn discovery_warnings(config: &Config) -> Vec<String> {
    config
        .upstreams
        .iter()
        .filter(|(_, upstream)| {
            upstream.discovery.as_ref().is_some_and(|discovery| {
                !matches!(discovery.source(), Some(DiscoverySource::KeyValue(_)))
            })
        })
        .map(|(name, upstream)| {
            let serves = if upstream.endpoints.is_empty() {
                "has no endpoints and answers 503"
            } else {
                "serves its endpoints list"
            };
            format!(
                "upstreams.{name}.discovery: Spin reads only key_value discovery sources, so \
                 the upstream {serves}"
            )
        })
        .collect()
}

/// Lists the failure-handling settings a Spin component cannot apply: active health
/// checks, which need background tasks, and circuit breakers, whose state a new
/// instance per request loses.
pub fn failure_handling_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, upstream) in &config.upstreams {
        if upstream.health_check.is_some() {
            warnings.push(format!(
                "upstreams.{name}.health_check: a Spin component runs no background tasks, \
                 so active health checks are ignored there; passive health still applies"
            ));
        }
        let circuit = &upstream.circuit;
        if circuit.consecutive_failures > 0
            || circuit.failure_percent > 0
            || circuit.max_requests > 0
        {
            warnings.push(format!(
                "upstreams.{name}.circuit: Spin creates a new instance for every request, so \
                 circuit breakers and request limits never see more than one request there"
            ));
        }
    }
    warnings
}

/// Lists the route options a Spin component rejects with 501: gRPC-Web translation,
/// which needs HTTP/2 with trailers to the upstream, and WebSocket relaying.
pub fn protocol_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for (index, route) in config.routes.iter().enumerate() {
        if route.grpc_web {
            warnings.push(format!(
                "routes[{index}].grpc_web: a Spin component cannot translate gRPC-Web, \
                 so such requests get 501 (UNIMPLEMENTED) there"
            ));
        }
        if route.websocket.is_some() {
            warnings.push(format!(
                "routes[{index}].websocket: a Spin component cannot relay WebSocket \
                 connections, so handshakes get 501 there"
            ));
        }
    }
    warnings
}

fn balancer_name(balancer: BalancerKind) -> &'static str {
    match balancer {
        BalancerKind::RoundRobin => "round_robin",
        BalancerKind::WeightedRoundRobin => "weighted_round_robin",
        BalancerKind::Random => "random",
        BalancerKind::LeastOutstanding => "least_outstanding",
        BalancerKind::P2cEwma => "p2c_ewma",
        BalancerKind::ConsistentHash => "consistent_hash",
    }
}

fn outbound_entries(name: &str, component: &toml::Value) -> Result<Vec<String>, String> {
    let Some(value) = component.get("allowed_outbound_hosts") else {
        return Ok(Vec::new());
    };
    let invalid = || format!("component.{name}.allowed_outbound_hosts must be a list of strings");
    value
        .as_array()
        .ok_or_else(invalid)?
        .iter()
        .map(|entry| entry.as_str().map(str::to_owned).ok_or_else(invalid))
        .collect()
}

/// Splits `host:port` (with `[v6]:port`) into the host, without brackets, and the port.
fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port.parse().ok()?))
}

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    /// The scheme in lowercase, `*` for any.
    scheme: String,
    host: HostMatch,
    port: PortMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    /// `*.example.com`: any subdomain, stored as `.example.com`.
    Subdomains(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortMatch {
    Any,
    /// The port given, or the scheme's default when none is; `*://host` without a port
    /// allows 80 and 443.
    Ports(Vec<u16>),
}

impl HostPattern {
    fn parse(entry: &str) -> Result<Self, String> {
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or("it has no scheme; write it as SCHEME://HOST[:PORT]")?;
        let default_ports = match scheme {
            "http" => vec![80],
            "https" => vec![443],
            "*" => vec![80, 443],
            "redis" => vec![REDIS_DEFAULT_PORT],
            // Other schemes (postgres, mysql, ...) allow nothing the gateway connects to.
            _ => Vec::new(),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            // A colon inside brackets belongs to an IPv6 address, not to a port.
            Some((host, port)) if !port.contains(']') => (host, Some(port)),
            _ => (rest, None),
        };
        let host = host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err("it has no host".to_owned());
        }
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            HostMatch::Subdomains(format!(".{}", suffix.to_ascii_lowercase()))
        } else {
            HostMatch::Exact(host.to_ascii_lowercase())
        };
        let port = match port {
            None => PortMatch::Ports(default_ports),
            Some("*") => PortMatch::Any,
            Some(port) => PortMatch::Ports(vec![
                port.parse()
                    .map_err(|_| format!("the port {port:?} is not a number or *"))?,
            ]),
        };
        Ok(Self {
            scheme: scheme.to_ascii_lowercase(),
            host,
            port,
        })
    }

    /// Returns whether the entry allows connecting to `host:port` with `scheme`.
    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let host_allowed = match &self.host {
            HostMatch::Any => true,
            HostMatch::Subdomains(suffix) => host.ends_with(suffix.as_str()),
            HostMatch::Exact(exact) => *exact == host,
        };
        let port_allowed = match &self.port {
            PortMatch::Any => true,
            PortMatch::Ports(ports) => ports.contains(&port),
        };
        let scheme_allowed = self.scheme == "*" || self.scheme == scheme;
        scheme_allowed && host_allowed && port_allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoints: &[&str]) -> Config {
        let list: Vec<String> = endpoints
            .iter()
            .map(|address| format!("{{ address = \"{address}\" }}"))
            .collect();
        let text = format!(
            "[upstreams.api]\nendpoints = [{}]\n\n[[routes]]\nupstream = \"api\"\n",
            list.join(", ")
        );
        gatehouse_core::Gateway::from_text(&text, gatehouse_core::config::Format::Toml)
            .expect("valid test config")
            .config()
            .clone()
    }

    fn manifest(entries: &[&str]) -> String {
        let list: Vec<String> = entries.iter().map(|entry| format!("{entry:?}")).collect();
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"t\"\n\
             [component.gatehouse]\nsource = \"a.wasm\"\nallowed_outbound_hosts = [{}]\n",
            list.join(", ")
        )
    }

    fn missing_paths(endpoints: &[&str], entries: &[&str]) -> Vec<String> {
        check_text(&config(endpoints), &manifest(entries))
            .expect("valid manifest")
            .missing
            .into_iter()
            .map(|missing| missing.path)
            .collect()
    }

    #[test]
    fn tls_upstream_needs_https_entry() {
        let text = "[upstreams.api]\nendpoints = [{ address = \"api.example.com:443\" }]\n\
                    tls = {}\n\n[[routes]]\nupstream = \"api\"\n";
        let gateway =
            gatehouse_core::Gateway::from_text(text, gatehouse_core::config::Format::Toml)
                .expect("valid test config");
        let http_only = check_text(gateway.config(), &manifest(&["http://api.example.com:443"]))
            .expect("valid manifest");
        assert_eq!(http_only.missing.len(), 1);
        assert_eq!(
            http_only.missing[0].suggested_entry(),
            "https://api.example.com:443"
        );
        let https = check_text(gateway.config(), &manifest(&["https://api.example.com"]))
            .expect("valid manifest");
        assert!(https.missing.is_empty(), "{:?}", https.missing);
    }

    #[test]
    fn exact_entry_allows_endpoint() {
        assert!(missing_paths(&["127.0.0.1:9001"], &["http://127.0.0.1:9001"]).is_empty());
    }

    #[test]
    fn missing_endpoint_is_named_by_path() {
        let paths = missing_paths(
            &["127.0.0.1:9001", "127.0.0.1:9002"],
            &["http://127.0.0.1:9001"],
        );
        assert_eq!(paths, ["upstreams.api.endpoints[1].address"]);
    }

    #[test]
    fn wildcards_allow_endpoints() {
        let endpoints = ["127.0.0.1:9001", "users.internal:8080"];
        assert!(missing_paths(&endpoints, &["*://*:*"]).is_empty());
        assert!(missing_paths(&endpoints, &["http://*:*"]).is_empty());
        assert!(missing_paths(&["127.0.0.1:9001"], &["*://127.0.0.1:*"]).is_empty());
        assert!(missing_paths(&["127.0.0.1:9001"], &["http://*:9001"]).is_empty());
        assert!(missing_paths(&["users.internal:8080"], &["http://*.internal:8080"]).is_empty());
    }

    #[test]
    fn port_and_scheme_must_match() {
        assert_eq!(
            missing_paths(&["127.0.0.1:9001"], &["http://127.0.0.1:9002"]).len(),
            1
        );
        assert_eq!(
            missing_paths(&["127.0.0.1:9001"], &["https://127.0.0.1:9001"]).len(),
            1
        );
        assert_eq!(
            missing_paths(&["127.0.0.1:9001"], &["http://127.0.0.1"]).len(),
            1
        );
        assert!(missing_paths(&["example.com:80"], &["http://example.com"]).is_empty());
        assert_eq!(
            missing_paths(&["internal:8080"], &["http://*.internal:8080"]).len(),
            1
        );
    }

    #[test]
    fn ipv6_entries_are_understood() {
        assert!(missing_paths(&["[::1]:9001"], &["http://[::1]:9001"]).is_empty());
        assert!(missing_paths(&["[::1]:80"], &["http://[::1]"]).is_empty());
    }

    #[test]
    fn template_entries_are_reported_unchecked() {
        let report = check_text(
            &config(&["127.0.0.1:9001"]),
            &manifest(&["http://{{ host }}:9001"]),
        )
        .expect("valid manifest");
        assert_eq!(report.missing.len(), 1);
        assert_eq!(report.unchecked.len(), 1);
        assert!(report.unchecked[0].contains("template"), "{report:?}");
    }

    #[test]
    fn message_suggests_the_entry() {
        let report = check_text(&config(&["127.0.0.1:9001"]), &manifest(&[])).expect("valid");
        assert_eq!(
            report.missing[0].to_string(),
            "upstreams.api.endpoints[0].address: 127.0.0.1:9001 is missing from \
             allowed_outbound_hosts of component \"gatehouse\"; add \"http://127.0.0.1:9001\" \
             to [component.gatehouse] allowed_outbound_hosts"
        );
    }

    fn redis_config(url: &str) -> Config {
        let text = format!("[stores.shared.redis]\nurl = \"{url}\"\n");
        gatehouse_core::Gateway::from_text(&text, gatehouse_core::config::Format::Toml)
            .expect("valid test config")
            .config()
            .clone()
    }

    fn missing_redis(url: &str, entries: &[&str]) -> Vec<String> {
        check_text(&redis_config(url), &manifest(entries))
            .expect("valid manifest")
            .missing
            .into_iter()
            .map(|missing| missing.suggested_entry())
            .collect()
    }

    #[test]
    fn redis_store_needs_redis_entry() {
        let url = "redis://127.0.0.1:6380/0";
        assert!(missing_redis(url, &["redis://127.0.0.1:6380"]).is_empty());
        assert!(missing_redis(url, &["redis://127.0.0.1:*"]).is_empty());
        assert!(missing_redis(url, &["*://*:*"]).is_empty());
        for entries in [
            &["http://127.0.0.1:6380"][..],
            &["redis://127.0.0.1"],
            &["redis://127.0.0.2:6380"],
            &[],
        ] {
            assert_eq!(
                missing_redis(url, entries),
                ["redis://127.0.0.1:6380"],
                "{entries:?}"
            );
        }
    }

    #[test]
    fn redis_default_port_is_6379() {
        assert!(missing_redis("redis://cache.internal", &["redis://cache.internal"]).is_empty());
        assert!(missing_redis("redis://app@[::1]/2", &["redis://[::1]:6379"]).is_empty());
        assert_eq!(
            missing_redis("redis://[::1]/2", &[]),
            ["redis://[::1]:6379"]
        );
    }

    #[test]
    fn redis_store_named_by_url_path() {
        let report = check_text(&redis_config("redis://10.0.0.9"), &manifest(&[])).expect("valid");
        assert_eq!(report.missing.len(), 1);
        assert_eq!(report.missing[0].path, "stores.shared.redis.url");
        assert_eq!(report.missing[0].scheme, "redis");
    }

    #[test]
    fn protocol_options_are_warned_about() {
        let text = r#"
            [upstreams.grpc]
            protocol = "h2c"
            endpoints = [{ address = "127.0.0.1:9001" }]

            [upstreams.chat]
            endpoints = [{ address = "127.0.0.1:9002" }]

            [[routes]]
            match.path_prefix = "/pkg.Svc"
            upstream = "grpc"
            grpc_web = true

            [[routes]]
            match.path = "/chat"
            upstream = "chat"
            websocket = {}
        "#;
        let gateway =
            gatehouse_core::Gateway::from_text(text, gatehouse_core::config::Format::Toml)
                .expect("valid test config");
        let warnings = protocol_warnings(gateway.config());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("routes[0].grpc_web:"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].starts_with("routes[1].websocket:"),
            "{warnings:?}"
        );
    }

    #[test]
    fn stateful_balancers_are_warned_about() {
        let text = "[upstreams.rr]\nendpoints = [{ address = \"127.0.0.1:1\" }]\n\
                    [upstreams.hashed]\nbalancer = \"consistent_hash\"\n\
                    hash_on = { header = \"x-user\" }\n\
                    endpoints = [{ address = \"127.0.0.1:2\" }]\n\
                    [upstreams.spread]\nbalancer = \"random\"\n\
                    endpoints = [{ address = \"127.0.0.1:3\" }]\n";
        let gateway =
            gatehouse_core::Gateway::from_text(text, gatehouse_core::config::Format::Toml)
                .expect("valid test config");
        let warnings = stateful_balancer_warnings(gateway.config());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("upstreams.rr.balancer: \"round_robin\" keeps its state"),
            "{warnings:?}"
        );
    }

    #[test]
    fn failure_handling_is_warned_about() {
        let text = "[upstreams.checked]\nendpoints = [{ address = \"127.0.0.1:1\" }]\n\
                    health_check = { kind = \"tcp\" }\n\
                    circuit = { max_requests = 10 }\n\
                    [upstreams.plain]\nendpoints = [{ address = \"127.0.0.1:2\" }]\n";
        let gateway =
            gatehouse_core::Gateway::from_text(text, gatehouse_core::config::Format::Toml)
                .expect("valid test config");
        let warnings = failure_handling_warnings(gateway.config());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("upstreams.checked.health_check:"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].starts_with("upstreams.checked.circuit:"),
            "{warnings:?}"
        );
    }

    #[test]
    fn manifest_version_is_required() {
        let error = check_text(
            &config(&["127.0.0.1:9001"]),
            "[component.a]\nsource = \"a\"\n",
        )
        .unwrap_err();
        assert!(error.contains("spin_manifest_version"), "{error}");
        let error =
            check_text(&config(&["127.0.0.1:9001"]), "spin_manifest_version = 2\n").unwrap_err();
        assert!(error.contains("[component.NAME]"), "{error}");
    }

    #[test]
    fn discovery_warnings_skip_key_value() {
        let text = "[upstreams.kv]\nendpoints = [{ address = \"127.0.0.1:8080\" }]\n\
                    discovery = { key_value = \"upstreams/kv\" }\n\n\
                    [upstreams.dns]\nendpoints = []\n\
                    discovery = { dns = \"api.internal:8080\" }\n\n\
                    [[routes]]\nupstream = \"kv\"\n";
        let gateway =
            gatehouse_core::Gateway::from_text(text, gatehouse_core::config::Format::Toml)
                .expect("valid test config");
        let warnings = discovery_warnings(gateway.config());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("upstreams.dns.discovery:"),
            "{warnings:?}"
        );
        assert!(
            warnings[0].contains("has no endpoints and answers 503"),
            "{warnings:?}"
        );
    }
}
