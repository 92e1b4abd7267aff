//! Compiles a loaded [`Config`] into the immutable tables the pipeline reads, checking
//! its meaning and collecting every problem with its path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};

use crate::auth::ConsumerTable;
use crate::balance::Balancer;
use crate::circuit::{Breaker, ConcurrencyLimit};
use crate::client_ip::{self, TrustedProxies};
use crate::config::{
    BalancerKind, Config, ConfigError, Dispatch, HashOn, HealthCheckConfig, HealthCheckKind,
    RouteConfig, ServerConfig, TimeoutsConfig, UpstreamConfig, UpstreamProtocol, UpstreamTlsConfig,
};
use crate::health::{ActiveStatus, OutlierDetector};
use crate::limit::MemoryCounters;
use crate::locality::Locality;
use crate::policy::{self, CompiledPolicy, IpPolicy, PolicySet};
use crate::retry::RetryBudget;
use crate::route::RouteTable;

/// Endpoint weights are bounded so that weighted balancers cannot overflow their sums.
const MAX_WEIGHT: u32 = 10_000;

/// Server settings with names and networks parsed.
#[derive(Debug)]
pub(crate) struct CompiledServer {
    pub trusted_proxies: TrustedProxies,
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub request_id_header: HeaderName,
    pub via: crate::forward::Via,
    pub x_forwarded: bool,
    pub forwarded: bool,
    /// The gateway's zone, unless the platform reports its own location.
    pub zone: Option<String>,
    /// Zones by platform location.
    pub location_zones: std::collections::BTreeMap<String, String>,
}

impl CompiledServer {
    /// Returns the gateway's zone for a request: the zone `location_zones` maps the
    /// platform's `location` to, else `server.zone`, else the location itself.
    pub fn local_zone<'a>(&'a self, location: Option<&'a str>) -> Option<&'a str> {
        let mapped = location.and_then(|location| self.location_zones.get(location));
        mapped
            .or(self.zone.as_ref())
            .map(String::as_str)
            .or(location)
    }
}

#[derive(Debug)]
pub(crate) struct CompiledEndpoint {
    pub authority: String,
    pub socket_addr: Option<SocketAddr>,
}

#[derive(Debug)]
pub(crate) struct CompiledUpstream {
    pub name: Arc<str>,
    pub endpoints: Vec<CompiledEndpoint>,
    /// Runtime state, shared through `Arc` so that a reload can hand it to the next
    /// gateway when the settings it depends on are unchanged.
    pub balancer: Arc<Balancer>,
    pub hash_on: Option<HashOn>,
    pub protocol: UpstreamProtocol,
    pub tls: Option<Arc<UpstreamTlsConfig>>,
    pub host_header: Option<HeaderValue>,
    pub retry: CompiledRetry,
    pub budget: Arc<RetryBudget>,
    pub outlier: Arc<OutlierDetector>,
    /// One breaker per endpoint, in endpoint order, each carried over a reload on its
    /// own while its endpoint stays.
    pub circuits: Vec<Arc<Breaker>>,
    /// The breaker of the whole upstream.
    pub breaker: Arc<Breaker>,
    pub limit: Arc<ConcurrencyLimit>,
    pub locality: Locality,
    /// Active health verdicts per endpoint, written by the runtime's checks.
    pub active: Vec<Arc<ActiveStatus>>,
    pub health_check: Option<HealthCheckConfig>,
}

impl CompiledUpstream {
    /// Takes over the state of `old` whose inputs are equal in `config` and
    /// `old_config`: endpoint indexes must mean the same endpoints, and the settings
    /// that shaped the state must match. Returns whether any state was taken over.
    pub(crate) fn inherit_state(
        &mut self,
        config: &UpstreamConfig,
        old: &CompiledUpstream,
        old_config: &UpstreamConfig,
    ) -> bool {
        let mut inherited = false;
        // Per-endpoint state follows the address, so it survives endpoints being
        // added, removed or reordered around it.
        for (index, endpoint) in config.endpoints.iter().enumerate() {
            let Some(old_index) = old_config
                .endpoints
                .iter()
                .position(|old| old.address == endpoint.address)
            else {
                continue;
            };
            if config.circuit == old_config.circuit
                && let Some(breaker) = old.circuits.get(old_index)
            {
                self.circuits[index] = Arc::clone(breaker);
                inherited = true;
            }
            if let Some(status) = old.active.get(old_index) {
                self.active[index] = Arc::clone(status);
                inherited = true;
            }
            // A fresh detector is not shared yet, so it can take endpoints one by one.
            if config.outlier == old_config.outlier
                && let Some(outlier) = Arc::get_mut(&mut self.outlier)
            {
                outlier.share_endpoint(index, &old.outlier, old_index);
                inherited = true;
            }
            // In-flight counts and latency estimates, likewise on a fresh balancer.
            if config.balancer == old_config.balancer
                && let Some(balancer) = Arc::get_mut(&mut self.balancer)
                && balancer.share_endpoint(index, &old.balancer, old_index)
            {
                inherited = true;
            }
        }
        // The budget's balance depends only on these two settings.
        if config.retries.budget_percent == old_config.retries.budget_percent
            && config.retries.min_retries_per_second == old_config.retries.min_retries_per_second
        {
            self.budget = Arc::clone(&old.budget);
            inherited = true;
        }
        if config.circuit == old_config.circuit {
            self.breaker = Arc::clone(&old.breaker);
            inherited = true;
        }
        if self.limit.limits() == old.limit.limits() {
            self.limit = Arc::clone(&old.limit);
            inherited = true;
        }
        let same_addresses = config.endpoints.len() == old_config.endpoints.len()
            && config
                .endpoints
                .iter()
                .zip(&old_config.endpoints)
                .all(|(new, old)| new.address == old.address);
        if !same_addresses {
            return inherited;
        }
        let same_weights = config
            .endpoints
            .iter()
            .zip(&old_config.endpoints)
            .all(|(new, old)| new.weight == old.weight);
        if same_weights && config.balancer == old_config.balancer {
            self.balancer = Arc::clone(&old.balancer);
            inherited = true;
        }
        if config.outlier == old_config.outlier {
            self.outlier = Arc::clone(&old.outlier);
            inherited = true;
        }
        inherited
    }
}

#[derive(Debug)]
pub(crate) struct CompiledRetry {
    pub max_retries: u32,
    pub on_statuses: Vec<u16>,
    pub backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
}

#[derive(Debug)]
pub(crate) struct CompiledRoute {
    pub name: Arc<str>,
    pub upstream: usize,
    pub timeouts: TimeoutsConfig,
    /// Shared by every route that lists the same policy names, because the set
    /// depends only on those names and `server.policies`.
    pub policies: Arc<PolicySet>,
    /// Whether gRPC-Web requests are translated into gRPC.
    pub grpc_web: bool,
    /// Idle timeout of relayed WebSockets, when the route relays them.
    pub websocket_idle: Option<std::time::Duration>,
    /// The calls of a route with `dispatch = "aggregate"`.
    pub aggregate: Option<Box<super::aggregate::CompiledAggregate>>,
    /// Whether the route purges cached responses (`dispatch = "purge"`).
    pub purge: bool,
}

/// Everything the pipeline needs, built once per config version.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub server: CompiledServer,
    /// `ip` policies of `server.policies`, checked before routing so that a rejected
    /// client learns nothing about the routes.
    pub server_ip: Vec<Arc<IpPolicy>>,
    /// Local rate-limit counters of every `rate_limit` policy.
    pub counters: Arc<MemoryCounters>,
    pub table: RouteTable,
    pub routes: Vec<CompiledRoute>,
    pub upstreams: Vec<CompiledUpstream>,
    /// Cache keys being fetched from upstreams, for request coalescing.
    pub in_flight: Arc<crate::cache::coalesce::InFlight>,
}

pub(crate) fn compile(config: &Config) -> Result<Compiled, Vec<ConfigError>> {
    let mut errors = Vec::new();
    check_listeners(config, &mut errors);
    check_tracing(config, &mut errors);
    check_admin(config, &mut errors);
    check_stores(config, &mut errors);
    let server = compile_server(&config.server, &mut errors);
    config.key_value.check(&mut errors);
    config.resolver.check(&mut errors);

    let upstream_names: Vec<&String> = config.upstreams.keys().collect();
    let upstreams: Vec<CompiledUpstream> = config
        .upstreams
        .iter()
        .map(|(name, upstream)| compile_upstream(name, upstream, &mut errors))
        .collect();

    let consumers = Arc::new(ConsumerTable::compile(&config.consumers, &mut errors));
    let policies =
        policy::compile_policies(&config.policies, &consumers, &config.stores, &mut errors);
    let server_policies = resolve_policies(
        &config.server.policies,
        "server.policies",
        &policies,
        PolicySet::default(),
        &mut errors,
    );
    let routes = compile_routes(
        config,
        &upstream_names,
        &policies,
        &server_policies,
        &mut errors,
    );
    check_route_costs(config, &mut errors);
    let table = match RouteTable::build(&config.routes) {
        Ok(table) => Some(table),
        Err(route_errors) => {
            errors.extend(route_errors);
            None
        }
    };

    match table {
        Some(table) if errors.is_empty() => Ok(Compiled {
            server,
            server_ip: server_policies.ip,
            counters: Arc::new(MemoryCounters::new(config.server.max_rate_limit_keys)),
            table,
            routes,
            upstreams,
            in_flight: Arc::default(),
        }),
        _ => Err(errors),
    }
}

/// Spans held for export beyond this would take more memory than a collector
/// outage is worth.
const MAX_OTLP_QUEUE_SPANS: usize = 1_000_000;

fn check_tracing(config: &Config, errors: &mut Vec<ConfigError>) {
    let Some(otlp) = config
        .tracing
        .as_ref()
        .and_then(|tracing| tracing.otlp.as_ref())
    else {
        return;
    };
    let endpoint_ok = otlp
        .endpoint
        .parse::<http::Uri>()
        .is_ok_and(|uri| uri.scheme_str() == Some("http") && uri.authority().is_some());
    if !endpoint_ok {
        errors.push(
            ConfigError::new(
                "tracing.otlp.endpoint",
                format!("invalid OTLP/HTTP endpoint {:?}", otlp.endpoint),
            )
            .with_hint("use an http:// URL such as \"http://127.0.0.1:4318/v1/traces\""),
        );
    }
    if otlp.service_name.is_empty() {
        errors.push(ConfigError::new(
            "tracing.otlp.service_name",
            "must not be empty",
        ));
    }
    if otlp.timeout.get().is_zero() {
        errors.push(ConfigError::new(
            "tracing.otlp.timeout",
            "must be longer than zero",
        ));
    }
    if !(1..=MAX_OTLP_QUEUE_SPANS).contains(&otlp.max_queue_spans) {
        errors.push(ConfigError::new(
            "tracing.otlp.max_queue_spans",
            format!(
                "must be between 1 and {MAX_OTLP_QUEUE_SPANS}, found {}",
                otlp.max_queue_spans
            ),
        ));
    }
}

fn check_listeners(config: &Config, errors: &mut Vec<ConfigError>) {
    let mut names = HashSet::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        let path = format!("listeners[{index}]");
        if !names.insert(listener.name.as_str()) {
            errors.push(
                ConfigError::new(
                    format!("{path}.name"),
                    format!("duplicate listener name {:?}", listener.name),
                )
                .with_hint("give each listener its own name"),
            );
        }
        if listener.address.parse::<SocketAddr>().is_err() {
            errors.push(
                ConfigError::new(
                    format!("{path}.address"),
                    format!("invalid socket address {:?}", listener.address),
                )
                .with_hint("use IP:PORT, such as \"127.0.0.1:8080\" or \"[::]:8080\""),
            );
        }
        if let Some(tls) = &listener.tls {
            crate::config::check_listener_tls(tls, &format!("{path}.tls"), errors);
        }
    }
}

fn check_admin(config: &Config, errors: &mut Vec<ConfigError>) {
    let Some(admin) = &config.admin else {
        return;
    };
    match admin.address.parse::<SocketAddr>() {
        Err(_) => errors.push(
            ConfigError::new(
                "admin.address",
                format!("invalid socket address {:?}", admin.address),
            )
            .with_hint("use IP:PORT, such as \"127.0.0.1:9901\""),
        ),
        // The admin listener has no authentication, so it must not be reachable from
        // other hosts by accident.
        Ok(address) if !address.ip().is_loopback() && !admin.allow_remote => errors.push(
            ConfigError::new(
                "admin.address",
                format!("{} is not a loopback address", admin.address),
            )
            .with_hint(
                "use 127.0.0.1 or [::1], or set allow_remote = true if only operators can reach it",
            ),
        ),
        Ok(_) => {}
    }
}

fn compile_server(server: &ServerConfig, errors: &mut Vec<ConfigError>) -> CompiledServer {
    let mut networks = Vec::new();
    for (index, entry) in server.trusted_proxies.iter().enumerate() {
        match client_ip::parse_network(entry) {
            Ok(network) => networks.push(network),
            Err(message) => errors.push(
                ConfigError::new(format!("server.trusted_proxies[{index}]"), message).with_hint(
                    "use an address such as \"10.0.0.1\" or a block such as \"10.0.0.0/8\"",
                ),
            ),
        }
    }
    for (field, value) in [
        ("max_uri_bytes", server.max_uri_bytes as u64),
        ("max_header_bytes", server.max_header_bytes as u64),
        ("max_body_bytes", server.max_body_bytes),
    ] {
        if value == 0 {
            errors.push(ConfigError::new(
                format!("server.{field}"),
                "must be greater than 0",
            ));
        }
    }
    let request_id_header = HeaderName::from_bytes(server.request_id_header.as_bytes())
        .unwrap_or_else(|_| {
            errors.push(
                ConfigError::new(
                    "server.request_id_header",
                    format!("invalid header name {:?}", server.request_id_header),
                )
                .with_hint("use a token such as \"x-request-id\""),
            );
            HeaderName::from_static("x-request-id")
        });
    let via_valid = server
        .via
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if !via_valid {
        errors.push(
            ConfigError::new("server.via", format!("invalid pseudonym {:?}", server.via))
                .with_hint("use letters, digits, '-', '_' and '.', or \"\" to omit Via"),
        );
    }
    if server.zone.as_deref().is_some_and(str::is_empty) {
        errors.push(
            ConfigError::new("server.zone", "must not be empty")
                .with_hint("name the zone, such as \"eu-west-1a\", or remove the key"),
        );
    }
    for (location, zone) in &server.location_zones {
        if location.is_empty() || zone.is_empty() {
            errors.push(
                ConfigError::new(
                    format!("server.location_zones.{location}"),
                    "locations and zones must not be empty",
                )
                .with_hint("map a location code to a zone, such as DFW = \"us-central\""),
            );
        }
    }
    CompiledServer {
        trusted_proxies: TrustedProxies::new(networks),
        max_uri_bytes: server.max_uri_bytes,
        max_header_bytes: server.max_header_bytes,
        max_body_bytes: server.max_body_bytes,
        request_id_header,
        via: crate::forward::Via::new(&server.via),
        x_forwarded: server.x_forwarded,
        forwarded: server.forwarded,
        zone: server.zone.clone(),
        location_zones: server.location_zones.clone(),
    }
}

fn compile_upstream(
    name: &str,
    upstream: &UpstreamConfig,
    errors: &mut Vec<ConfigError>,
) -> CompiledUpstream {
    let path = format!("upstreams.{name}");
    if let Some(discovery) = &upstream.discovery {
        discovery.check(&format!("{path}.discovery"), errors);
    }
    if upstream.endpoints.is_empty() && upstream.discovery.is_none() {
        errors.push(
            ConfigError::new(
                format!("{path}.endpoints"),
                "must list at least one endpoint",
            )
            .with_hint("add endpoints = [{ address = \"127.0.0.1:9001\" }] or a discovery table"),
        );
    }
    let mut seen = HashSet::new();
    let mut endpoints = Vec::with_capacity(upstream.endpoints.len());
    for (index, endpoint) in upstream.endpoints.iter().enumerate() {
        let endpoint_path = format!("{path}.endpoints[{index}]");
        if let Err(message) = check_authority(&endpoint.address) {
            errors.push(
                ConfigError::new(format!("{endpoint_path}.address"), message)
                    .with_hint("use HOST:PORT, such as \"10.0.0.5:8080\" or \"users.internal:80\""),
            );
        }
        if !seen.insert(endpoint.address.to_ascii_lowercase()) {
            errors.push(
                ConfigError::new(
                    format!("{endpoint_path}.address"),
                    format!("duplicate endpoint {:?}", endpoint.address),
                )
                .with_hint("list each endpoint once and use weight to give it a larger share"),
            );
        }
        if !(1..=MAX_WEIGHT).contains(&endpoint.weight) {
            errors.push(ConfigError::new(
                format!("{endpoint_path}.weight"),
                format!(
                    "must be between 1 and {MAX_WEIGHT}, found {}",
                    endpoint.weight
                ),
            ));
        }
        if endpoint.zone.as_deref().is_some_and(str::is_empty) {
            errors.push(
                ConfigError::new(format!("{endpoint_path}.zone"), "must not be empty")
                    .with_hint("name the zone, such as \"eu-west-1a\", or remove the key"),
            );
        }
        endpoints.push(CompiledEndpoint {
            authority: endpoint.address.clone(),
            socket_addr: endpoint.address.parse().ok(),
        });
    }

    match (&upstream.balancer, &upstream.hash_on) {
        (BalancerKind::ConsistentHash, None) => errors.push(
            ConfigError::new(format!("{path}.hash_on"), "is required with balancer = \"consistent_hash\"")
                .with_hint("set hash_on = \"client_ip\", \"path\", { header = \"NAME\" } or { cookie = \"NAME\" }"),
        ),
        (kind, Some(_)) if *kind != BalancerKind::ConsistentHash => errors.push(
            ConfigError::new(format!("{path}.hash_on"), "is only used with balancer = \"consistent_hash\"")
                .with_hint("remove hash_on or set balancer = \"consistent_hash\""),
        ),
        _ => {}
    }
    if let Some(HashOn::Header(header)) = &upstream.hash_on
        && HeaderName::from_bytes(header.as_bytes()).is_err()
    {
        errors.push(ConfigError::new(
            format!("{path}.hash_on.header"),
            format!("invalid header name {header:?}"),
        ));
    }

    check_timeouts(&upstream.timeouts, &format!("{path}.timeouts"), errors);
    check_retries_and_outlier(upstream, &path, errors);
    check_circuit_and_locality(upstream, &path, errors);
    if let Some(check) = &upstream.health_check {
        check_health_check(check, &format!("{path}.health_check"), errors);
    }
    crate::config::check_upstream_tls(upstream.tls.as_ref(), upstream.protocol, &path, errors);
    let host_header = upstream.host_header.as_ref().and_then(|host| {
        let value = HeaderValue::from_str(host)
            .ok()
            .filter(|_| check_host(host));
        if value.is_none() {
            errors.push(ConfigError::new(
                format!("{path}.host_header"),
                format!("invalid host {host:?}"),
            ));
        }
        value
    });

    let ids: Vec<(&str, u32)> = upstream
        .endpoints
        .iter()
        .map(|endpoint| {
            (
                endpoint.address.as_str(),
                endpoint.weight.clamp(1, MAX_WEIGHT),
            )
        })
        .collect();
    CompiledUpstream {
        name: Arc::from(name),
        endpoints,
        balancer: Arc::new(Balancer::new(upstream.balancer, &ids)),
        hash_on: upstream.hash_on.clone(),
        protocol: upstream.protocol,
        tls: upstream.tls.clone().map(Arc::new),
        host_header,
        retry: CompiledRetry {
            max_retries: upstream.retries.max_retries,
            on_statuses: upstream.retries.on_statuses.clone(),
            backoff: upstream.retries.backoff.get(),
            max_backoff: upstream.retries.max_backoff.get(),
        },
        budget: Arc::new(RetryBudget::new(&upstream.retries)),
        outlier: Arc::new(OutlierDetector::new(
            upstream.endpoints.len(),
            &upstream.outlier,
        )),
        circuits: upstream
            .endpoints
            .iter()
            .map(|_| Arc::new(Breaker::for_endpoint(&upstream.circuit)))
            .collect(),
        breaker: Arc::new(Breaker::for_upstream(&upstream.circuit)),
        limit: Arc::new(ConcurrencyLimit::new(
            upstream.circuit.max_requests,
            upstream.circuit.max_pending,
        )),
        locality: Locality::new(&upstream.endpoints, &upstream.locality),
        active: upstream
            .endpoints
            .iter()
            .map(|_| Arc::new(ActiveStatus::default()))
            .collect(),
        health_check: upstream.health_check.clone(),
    }
}

/// Overprovisioning above this lets a tier with 1 healthy endpoint in 10 keep all its
/// traffic, which defeats failover.
const MAX_OVERPROVISIONING_PERCENT: u32 = 1_000;

fn check_circuit_and_locality(
    upstream: &UpstreamConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    let circuit = &upstream.circuit;
    if circuit.failure_percent > 100 {
        errors.push(ConfigError::new(
            format!("{path}.circuit.failure_percent"),
            format!(
                "must be a percentage from 0 to 100, found {}",
                circuit.failure_percent
            ),
        ));
    }
    if circuit.half_open_probes == 0 {
        errors.push(
            ConfigError::new(
                format!("{path}.circuit.half_open_probes"),
                "must be at least 1",
            )
            .with_hint("an open breaker closes only after a probe succeeds"),
        );
    }
    for (field, value) in [
        ("open_duration", circuit.open_duration),
        ("window", circuit.window),
    ] {
        if value.get().is_zero() {
            errors.push(ConfigError::new(
                format!("{path}.circuit.{field}"),
                "must be greater than 0",
            ));
        }
    }
    if circuit.max_pending > 0 && circuit.max_requests == 0 {
        errors.push(
            ConfigError::new(
                format!("{path}.circuit.max_pending"),
                "has no effect without max_requests",
            )
            .with_hint("set max_requests, the number of requests in flight before others wait"),
        );
    }
    let locality = &upstream.locality;
    if !(1..=100).contains(&locality.local_min_healthy_percent) {
        errors.push(ConfigError::new(
            format!("{path}.locality.local_min_healthy_percent"),
            format!(
                "must be a percentage from 1 to 100, found {}",
                locality.local_min_healthy_percent
            ),
        ));
    }
    if !(100..=MAX_OVERPROVISIONING_PERCENT).contains(&locality.overprovisioning_percent) {
        errors.push(
            ConfigError::new(
                format!("{path}.locality.overprovisioning_percent"),
                format!(
                    "must be from 100 to {MAX_OVERPROVISIONING_PERCENT}, found {}",
                    locality.overprovisioning_percent
                ),
            )
            .with_hint("100 fails over as soon as one endpoint of a tier is down; 140 is usual"),
        );
    }
}

/// Checks beyond this many consecutive results react too slowly to be useful.
const MAX_HEALTH_THRESHOLD: u32 = 100;

fn check_health_check(check: &HealthCheckConfig, path: &str, errors: &mut Vec<ConfigError>) {
    if check.kind == HealthCheckKind::Http {
        if !check.path.starts_with('/')
            || http::uri::PathAndQuery::try_from(check.path.as_str()).is_err()
        {
            errors.push(
                ConfigError::new(
                    format!("{path}.path"),
                    format!("invalid request path {:?}", check.path),
                )
                .with_hint("use an absolute path such as \"/healthz\""),
            );
        }
        if let Some(host) = &check.host
            && (HeaderValue::from_str(host).is_err() || !check_host(host))
        {
            errors.push(ConfigError::new(
                format!("{path}.host"),
                format!("invalid host {host:?}"),
            ));
        }
        for (index, status) in check.expected_statuses.iter().enumerate() {
            if !(100..=599).contains(status) {
                errors.push(ConfigError::new(
                    format!("{path}.expected_statuses[{index}]"),
                    format!("invalid status {status}"),
                ));
            }
        }
    } else {
        for (field, set) in [
            ("host", check.host.is_some()),
            ("body_contains", check.body_contains.is_some()),
            ("expected_statuses", !check.expected_statuses.is_empty()),
        ] {
            if set {
                errors.push(
                    ConfigError::new(
                        format!("{path}.{field}"),
                        "is only used with kind = \"http\"",
                    )
                    .with_hint(format!("remove {field} or set kind = \"http\"")),
                );
            }
        }
    }
    for (field, value) in [("interval", check.interval), ("timeout", check.timeout)] {
        if value.get().is_zero() {
            errors.push(ConfigError::new(
                format!("{path}.{field}"),
                "must be greater than 0",
            ));
        }
    }
    if check.jitter_percent > 50 {
        errors.push(ConfigError::new(
            format!("{path}.jitter_percent"),
            format!("must be from 0 to 50, found {}", check.jitter_percent),
        ));
    }
    for (field, value) in [
        ("healthy_threshold", check.healthy_threshold),
        ("unhealthy_threshold", check.unhealthy_threshold),
    ] {
        if !(1..=MAX_HEALTH_THRESHOLD).contains(&value) {
            errors.push(ConfigError::new(
                format!("{path}.{field}"),
                format!("must be from 1 to {MAX_HEALTH_THRESHOLD}, found {value}"),
            ));
        }
    }
}

/// Retries beyond this multiply latency without improving the odds on a failing upstream.
const MAX_RETRIES: u32 = 10;

fn check_retries_and_outlier(upstream: &UpstreamConfig, path: &str, errors: &mut Vec<ConfigError>) {
    let retries = &upstream.retries;
    if retries.max_retries > MAX_RETRIES {
        errors.push(ConfigError::new(
            format!("{path}.retries.max_retries"),
            format!(
                "must be at most {MAX_RETRIES}, found {}",
                retries.max_retries
            ),
        ));
    }
    for (index, status) in retries.on_statuses.iter().enumerate() {
        if !(100..=599).contains(status) {
            errors.push(ConfigError::new(
                format!("{path}.retries.on_statuses[{index}]"),
                format!("invalid status {status}"),
            ));
        }
    }
    if retries.backoff > retries.max_backoff {
        errors.push(ConfigError::new(
            format!("{path}.retries.backoff"),
            format!(
                "is longer than max_backoff ({} > {})",
                retries.backoff, retries.max_backoff
            ),
        ));
    }
    let outlier = &upstream.outlier;
    if outlier.base_ejection > outlier.max_ejection {
        errors.push(ConfigError::new(
            format!("{path}.outlier.base_ejection"),
            format!(
                "is longer than max_ejection ({} > {})",
                outlier.base_ejection, outlier.max_ejection
            ),
        ));
    }
    for (field, value) in [
        ("retries.budget_percent", retries.budget_percent),
        ("outlier.max_ejected_percent", outlier.max_ejected_percent),
        (
            "outlier.panic_threshold_percent",
            outlier.panic_threshold_percent,
        ),
    ] {
        if value > 100 {
            errors.push(ConfigError::new(
                format!("{path}.{field}"),
                format!("must be a percentage from 0 to 100, found {value}"),
            ));
        }
    }
}

fn check_timeouts(timeouts: &TimeoutsConfig, path: &str, errors: &mut Vec<ConfigError>) {
    for (field, value) in [
        ("connect", timeouts.connect),
        ("per_try", timeouts.per_try),
        ("total", timeouts.total),
    ] {
        if value.get().is_zero() {
            errors.push(ConfigError::new(
                format!("{path}.{field}"),
                "must be greater than 0",
            ));
        }
    }
    if timeouts.per_try > timeouts.total {
        errors.push(
            ConfigError::new(
                format!("{path}.per_try"),
                format!(
                    "is longer than total ({} > {})",
                    timeouts.per_try, timeouts.total
                ),
            )
            .with_hint("a try can never outlast the whole request; lower per_try or raise total"),
        );
    }
}

/// Checks `host:port` (or `[v6]:port`) with a non-zero port.
fn check_authority(address: &str) -> Result<(), String> {
    let invalid = || format!("invalid endpoint address {address:?}");
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    if port == 0 {
        return Err(format!("endpoint address {address:?} has port 0"));
    }
    let valid_host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        check_host(host) && !host.contains(':')
    };
    if valid_host { Ok(()) } else { Err(invalid()) }
}

/// Checks a DNS name or IPv4 address as written in a Host header.
fn check_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b':' | b'[' | b']')
        })
}

/// Checks that the upstream of a route speaks what its protocol options need:
/// HTTP/2 for gRPC-Web translation, and HTTP/1.1 for WebSocket upgrades, which
/// HTTP/2 does not have.
fn check_protocols(
    route: &RouteConfig,
    upstream_protocol: Option<UpstreamProtocol>,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    if route.grpc_web && upstream_protocol == Some(UpstreamProtocol::Http1) {
        errors.push(
            ConfigError::new(
                format!("{path}.grpc_web"),
                format!(
                    "needs an HTTP/2 upstream, but upstream {:?} speaks HTTP/1.1",
                    route.upstream
                ),
            )
            .with_hint("set protocol = \"h2c\" (or \"h2\" with tls) on the upstream"),
        );
    }
    let Some(websocket) = &route.websocket else {
        return;
    };
    if websocket.idle_timeout.get().is_zero() {
        errors.push(ConfigError::new(
            format!("{path}.websocket.idle_timeout"),
            "must be greater than 0",
        ));
    }
    if matches!(
        upstream_protocol,
        Some(UpstreamProtocol::H2c | UpstreamProtocol::H2)
    ) {
        errors.push(
            ConfigError::new(
                format!("{path}.websocket"),
                format!(
                    "needs an HTTP/1.1 upstream for the upgrade, but upstream {:?} speaks HTTP/2",
                    route.upstream
                ),
            )
            .with_hint("route WebSocket paths to an upstream with protocol = \"http1\""),
        );
    }
}

fn compile_routes(
    config: &Config,
    upstream_names: &[&String],
    policies: &BTreeMap<String, CompiledPolicy>,
    server_policies: &PolicySet,
    errors: &mut Vec<ConfigError>,
) -> Vec<CompiledRoute> {
    // Server-level ip policies run before routing, so routes inherit everything else.
    let inherited = PolicySet {
        ip: Vec::new(),
        ..server_policies.clone()
    };
    let mut shared_sets: HashMap<&[String], Arc<PolicySet>> = HashMap::new();
    let mut routes = Vec::with_capacity(config.routes.len());
    for (index, route) in config.routes.iter().enumerate() {
        let path = format!("routes[{index}]");
        let (upstream, aggregate) = match route.dispatch {
            Dispatch::Proxy => (proxy_upstream(route, &path, upstream_names, errors), None),
            Dispatch::Aggregate => (None, route_aggregate(config, route, &path, errors)),
            Dispatch::Purge => {
                check_purge_route(route, &path, errors);
                (None, None)
            }
        };

        let route_policies = resolve_policies(
            &route.policies,
            &format!("{path}.policies"),
            policies,
            inherited.clone(),
            errors,
        );

        if !route_policies.authorize.is_empty() && route_policies.authenticate.is_none() {
            errors.push(
                ConfigError::new(
                    format!("{path}.policies"),
                    "has an authorize policy but no jwt or api_key policy",
                )
                .with_hint("add the authentication policy whose identity authorize checks"),
            );
        }

        if let Some(cache) = &route_policies.cache
            && cache.authenticated
            && route_policies.authenticate.is_none()
        {
            errors.push(
                ConfigError::new(
                    format!("{path}.policies"),
                    "has a cache policy with authenticated = true but no jwt or api_key policy",
                )
                .with_hint("add the authentication policy whose consumer keys the cache, or set authenticated = false"),
            );
        }

        let upstream_timeouts = upstream
            .and_then(|position| config.upstreams.get(upstream_names[position].as_str()))
            .map(|upstream| upstream.timeouts)
            .unwrap_or_default();
        if let Some(timeouts) = &route.timeouts {
            check_timeouts(timeouts, &format!("{path}.timeouts"), errors);
        }
        let upstream_protocol = upstream
            .and_then(|position| config.upstreams.get(upstream_names[position].as_str()))
            .map(|upstream| upstream.protocol);
        check_protocols(route, upstream_protocol, &path, errors);
        if route.dispatch == Dispatch::Purge {
            check_purge_policies(&route_policies, &path, errors);
        }
        if route.dispatch == Dispatch::Aggregate && route_policies.cache.is_some() {
            errors.push(
                ConfigError::new(
                    format!("{path}.policies"),
                    "has a cache policy, which routes with dispatch = \"aggregate\" do not support",
                )
                .with_hint("remove the cache policy, or cache the responses of the upstreams the calls go to"),
            );
        }
        routes.push(CompiledRoute {
            name: Arc::from(route.name.clone().unwrap_or(path)),
            upstream: upstream.unwrap_or(0),
            timeouts: route
                .timeouts
                .as_deref()
                .copied()
                .unwrap_or(upstream_timeouts),
            policies: share_policy_set(&mut shared_sets, &route.policies, route_policies),
            grpc_web: route.grpc_web,
            websocket_idle: route
                .websocket
                .map(|websocket| websocket.idle_timeout.get()),
            aggregate: aggregate.map(Box::new),
            purge: route.dispatch == Dispatch::Purge,
        });
    }
    routes
}

/// Returns the set already built for the policy names `names`, or stores `set` as
/// that set. Each route's set is still resolved on its own, so that its problems are
/// reported at its path, but only the first one with given names is kept.
fn share_policy_set<'c>(
    shared_sets: &mut HashMap<&'c [String], Arc<PolicySet>>,
    names: &'c [String],
    set: PolicySet,
) -> Arc<PolicySet> {
    Arc::clone(shared_sets.entry(names).or_insert_with(|| Arc::new(set)))
}

/// Reports the settings a route with `dispatch = "purge"` would not use.
fn check_purge_route(route: &RouteConfig, path: &str, errors: &mut Vec<ConfigError>) {
    if !route.upstream.is_empty() {
        errors.push(
            ConfigError::new(
                format!("{path}.upstream"),
                "upstream is set but dispatch is \"purge\", which sends nothing upstream",
            )
            .with_hint("remove upstream from the purge route"),
        );
    }
    if route.aggregate.is_some() {
        errors.push(
            ConfigError::new(
                format!("{path}.aggregate"),
                "aggregate is set but dispatch is \"purge\"",
            )
            .with_hint("remove the aggregate table from the purge route"),
        );
    }
}

/// Requires authentication on a purge route, so that only credentialed clients can
/// empty the cache, and rejects a cache policy on it.
fn check_purge_policies(policies: &PolicySet, path: &str, errors: &mut Vec<ConfigError>) {
    if policies.authenticate.is_none() {
        errors.push(
            ConfigError::new(
                format!("{path}.policies"),
                "a route with dispatch = \"purge\" has no jwt or api_key policy",
            )
            .with_hint("add an api_key or jwt policy, and optionally authorize, so only operators can purge the cache"),
        );
    }
    if policies.cache.is_some() {
        errors.push(
            ConfigError::new(
                format!("{path}.policies"),
                "has a cache policy, which routes with dispatch = \"purge\" do not use",
            )
            .with_hint("remove the cache policy from the purge route"),
        );
    }
}

/// Returns the index of the upstream of a route with `dispatch = "proxy"`, reporting
/// a missing or undefined one and an `aggregate` table it would not use.
fn proxy_upstream(
    route: &RouteConfig,
    path: &str,
    upstream_names: &[&String],
    errors: &mut Vec<ConfigError>,
) -> Option<usize> {
    if route.aggregate.is_some() {
        errors.push(
            ConfigError::new(
                format!("{path}.aggregate"),
                "aggregate is set but dispatch is \"proxy\"",
            )
            .with_hint(
                "set dispatch = \"aggregate\" to send the calls, or remove the aggregate table",
            ),
        );
    }
    if route.upstream.is_empty() {
        errors.push(
            ConfigError::new(format!("{path}.upstream"), "missing upstream")
                .with_hint("name the upstream from [upstreams] that serves this route"),
        );
        return None;
    }
    let upstream = upstream_names
        .iter()
        .position(|name| **name == route.upstream);
    if upstream.is_none() {
        errors.push(undefined_reference(
            format!("{path}.upstream"),
            "upstream",
            "upstreams",
            &route.upstream,
            upstream_names.iter().map(|name| name.as_str()),
        ));
    }
    upstream
}

/// Compiles the calls of a route with `dispatch = "aggregate"`.
fn route_aggregate(
    config: &Config,
    route: &RouteConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<super::aggregate::CompiledAggregate> {
    super::aggregate::check_unused_route_keys(route, path, errors);
    let Some(aggregate) = &route.aggregate else {
        errors.push(
            ConfigError::new(
                format!("{path}.aggregate"),
                "dispatch is \"aggregate\" but the aggregate table is missing",
            )
            .with_hint("add [routes.aggregate] with at least one [[routes.aggregate.calls]]"),
        );
        return None;
    };
    let upstreams: Vec<(&String, &UpstreamConfig)> = config.upstreams.iter().collect();
    super::aggregate::compile_aggregate(
        route,
        aggregate,
        &format!("{path}.aggregate"),
        &upstreams,
        errors,
    )
}

/// Adds the named policies to `set`, reporting names that are not defined.
fn resolve_policies(
    names: &[String],
    path: &str,
    policies: &BTreeMap<String, CompiledPolicy>,
    mut set: PolicySet,
    errors: &mut Vec<ConfigError>,
) -> PolicySet {
    for (index, name) in names.iter().enumerate() {
        let entry_path = format!("{path}[{index}]");
        match policies.get(name) {
            Some(policy) => set.add(policy, &entry_path, errors),
            None => errors.push(undefined_reference(
                entry_path,
                "policy",
                "policies",
                name,
                policies.keys().map(String::as_str),
            )),
        }
    }
    set
}

pub(super) fn undefined_reference<'a>(
    path: String,
    what: &str,
    table: &str,
    name: &str,
    defined: impl Iterator<Item = &'a str>,
) -> ConfigError {
    let defined: Vec<&str> = defined.collect();
    let error = ConfigError::new(path, format!("{what} {name:?} is not defined"));
    match crate::config::closest_name(name, &defined) {
        Some(candidate) => error.with_hint(format!("did you mean {candidate:?}?")),
        None if defined.is_empty() => error.with_hint(format!("define it under [{table}.{name}]")),
        None => error.with_hint(format!("defined in [{table}]: {}", defined.join(", "))),
    }
}

/// Checks `[stores]`: a Redis URL the runtime can connect to, with no password in it.
fn check_stores(config: &Config, errors: &mut Vec<ConfigError>) {
    for (name, store) in &config.stores {
        let redis = match store {
            crate::config::StoreConfig::Redis(redis) => redis,
            crate::config::StoreConfig::DurableObject(object) => {
                check_durable_object_store(name, object, errors);
                continue;
            }
        };
        let path = format!("stores.{name}.redis");
        if let Err((message, hint)) = check_redis_url(&redis.url) {
            errors.push(ConfigError::new(format!("{path}.url"), message).with_hint(hint));
        }
        if redis.pool_size == 0 || redis.pool_size > 64 {
            errors.push(
                ConfigError::new(format!("{path}.pool_size"), "must be from 1 to 64")
                    .with_hint("each connection is multiplexed, so 1 to 4 is usually enough"),
            );
        }
        if redis.async_max_in_flight == 0 {
            errors.push(ConfigError::new(
                format!("{path}.async_max_in_flight"),
                "must be greater than 0",
            ));
        }
        for (field, duration) in [
            ("timeout", redis.timeout),
            ("error_log_interval", redis.error_log_interval),
        ] {
            if duration.get().is_zero() {
                errors.push(ConfigError::new(
                    format!("{path}.{field}"),
                    "must be greater than 0",
                ));
            }
        }
        if redis
            .password
            .as_ref()
            .is_some_and(|password| password.secret.is_empty())
        {
            errors.push(
                ConfigError::new(format!("{path}.password.secret"), "is empty")
                    .with_hint("name the environment variable that holds the password"),
            );
        }
    }
}

/// Checks a `durable_object` store: a binding name and non-zero durations.
fn check_durable_object_store(
    name: &str,
    object: &crate::config::DurableObjectStoreConfig,
    errors: &mut Vec<ConfigError>,
) {
    let path = format!("stores.{name}.durable_object");
    if object.binding.trim().is_empty() {
        errors.push(
            ConfigError::new(format!("{path}.binding"), "is empty").with_hint(format!(
                "name the Durable Object binding of wrangler.toml, such as {:?}",
                crate::config::DEFAULT_DURABLE_OBJECT_BINDING
            )),
        );
    }
    for (field, duration) in [
        ("timeout", object.timeout),
        ("error_log_interval", object.error_log_interval),
    ] {
        if duration.get().is_zero() {
            errors.push(ConfigError::new(
                format!("{path}.{field}"),
                "must be greater than 0",
            ));
        }
    }
}

/// Checks a Redis URL, returning the problem and its fix. The URL is never echoed,
/// because a rejected one may contain a password.
fn check_redis_url(url: &str) -> Result<(), (&'static str, &'static str)> {
    let Some(rest) = url.strip_prefix("redis://") else {
        return Err((
            "must start with redis://",
            "write redis://HOST:PORT/DB, for example redis://127.0.0.1:6379/0; TLS (rediss://) is not supported",
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            if user_info.contains(':') {
                return Err((
                    "contains a password",
                    "remove it from the URL and set password = { secret = \"NAME\" }, naming an environment variable",
                ));
            }
            host
        }
        None => authority,
    };
    if host.is_empty() {
        return Err(("has no host", "write redis://HOST:PORT/DB"));
    }
    Ok(())
}

/// Checks that the routes of every `route_cost` exist.
fn check_route_costs(config: &Config, errors: &mut Vec<ConfigError>) {
    let route_names: Vec<String> = config
        .routes
        .iter()
        .enumerate()
        .map(|(index, route)| {
            route
                .name
                .clone()
                .unwrap_or_else(|| format!("routes[{index}]"))
        })
        .collect();
    for (policy, settings) in &config.policies {
        let crate::config::PolicyConfig::RateLimit(limit) = settings else {
            continue;
        };
        for route in limit.route_cost.keys() {
            if route_names.contains(route) {
                continue;
            }
            let hint = match crate::config::closest_name(route, &route_names) {
                Some(close) => format!("did you mean {close:?}?"),
                None => {
                    "name a route by its name, or routes[INDEX] for a route without one".to_owned()
                }
            };
            errors.push(
                ConfigError::new(
                    format!("policies.{policy}.rate_limit.route_cost.{route}"),
                    format!("route {route:?} is not defined"),
                )
                .with_hint(hint),
            );
        }
    }
}
