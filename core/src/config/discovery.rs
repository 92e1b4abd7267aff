//! Config of service discovery: where an upstream's endpoints come from when they are
//! not listed in the file, `upstreams.NAME.discovery` and `[resolver]`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConfigDuration, ConfigError, EndpointConfig};

/// The source of an upstream's endpoints and how often it is read again.
///
/// Exactly one source is set. The endpoints listed in `endpoints` serve until the
/// first successful read, and a failed read keeps the last good set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// `host:port` whose A and AAAA records are the endpoints, all on that port
    /// (native runtime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// SRV record name, such as `_http._tcp.api.internal`, whose targets, ports and
    /// weights are the endpoints (native runtime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srv: Option<String>,
    /// File listing the endpoints as `endpoints = [...]` (TOML) or
    /// `{"endpoints": [...]}` (JSON, for a name ending in `.json`), read again when it
    /// changes (native runtime). A relative path is relative to the config file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Key in the platform's key-value store whose value lists the endpoints as JSON,
    /// `{"endpoints": [...]}`, read again every `interval`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_value: Option<String>,
    /// Minimum time a DNS response is kept, whatever its TTL.
    pub min_ttl: ConfigDuration,
    /// Maximum time a DNS response is kept, whatever its TTL.
    pub max_ttl: ConfigDuration,
    /// Time between two checks of `file` or reads of `key_value`, and the wait before
    /// a failed DNS lookup is tried again.
    pub interval: ConfigDuration,
    /// Whether an empty result replaces the endpoints, leaving the upstream with none.
    /// When false, an empty result is treated as a failure and the last set serves.
    pub allow_empty: bool,
}

/// Keeps DNS answers between 1 s and 60 s and reads files and keys every 5 s.
impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            dns: None,
            srv: None,
            file: None,
            key_value: None,
            min_ttl: ConfigDuration::from_millis(1_000),
            max_ttl: ConfigDuration::from_millis(60_000),
            interval: ConfigDuration::from_millis(5_000),
            allow_empty: false,
        }
    }
}

/// The source of one upstream's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoverySource<'a> {
    /// A and AAAA records of `host`, each address on `port`.
    Dns {
        /// The name looked up.
        host: &'a str,
        /// The port of every endpoint.
        port: u16,
    },
    /// SRV records of a name.
    Srv(&'a str),
    /// A file, as written in the config.
    File(&'a str),
    /// A key of the platform's key-value store.
    KeyValue(&'a str),
}

impl DiscoveryConfig {
    /// Returns the configured source, or `None` unless exactly one is set with a
    /// valid value, which compiling the config checks.
    pub fn source(&self) -> Option<DiscoverySource<'_>> {
        match (&self.dns, &self.srv, &self.file, &self.key_value) {
            (Some(dns), None, None, None) => {
                let (host, port) = dns.rsplit_once(':')?;
                let port = port.parse().ok().filter(|port| *port != 0)?;
                (!host.is_empty()).then_some(DiscoverySource::Dns { host, port })
            }
            (None, Some(srv), None, None) => Some(DiscoverySource::Srv(srv)),
            (None, None, Some(file), None) => Some(DiscoverySource::File(file)),
            (None, None, None, Some(key)) => Some(DiscoverySource::KeyValue(key)),
            _ => None,
        }
    }

    /// Clamps a DNS record's TTL to `min_ttl..=max_ttl`.
    pub fn clamp_ttl(&self, ttl: std::time::Duration) -> std::time::Duration {
        ttl.clamp(
            self.min_ttl.get(),
            self.max_ttl.get().max(self.min_ttl.get()),
        )
    }

    /// Checks the settings, reporting problems under `path`.
    pub(crate) fn check(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let set: Vec<&str> = [
            ("dns", self.dns.is_some()),
            ("srv", self.srv.is_some()),
            ("file", self.file.is_some()),
            ("key_value", self.key_value.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if set.len() != 1 {
            errors.push(
                ConfigError::new(
                    path,
                    format!(
                        "must set exactly one of dns, srv, file and key_value, found {}",
                        if set.is_empty() {
                            "none".to_owned()
                        } else {
                            set.join(", ")
                        }
                    ),
                )
                .with_hint("such as dns = \"api.internal:8080\""),
            );
        }
        if let Some(dns) = &self.dns
            && set.len() == 1
            && self.source().is_none()
        {
            errors.push(
                ConfigError::new(format!("{path}.dns"), format!("invalid name {dns:?}"))
                    .with_hint("use HOST:PORT, such as \"api.internal:8080\""),
            );
        }
        for (field, value) in [
            ("srv", &self.srv),
            ("file", &self.file),
            ("key_value", &self.key_value),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                errors.push(ConfigError::new(
                    format!("{path}.{field}"),
                    "must not be empty",
                ));
            }
        }
        if self.min_ttl.get() > self.max_ttl.get() {
            errors.push(
                ConfigError::new(format!("{path}.min_ttl"), "must not be longer than max_ttl")
                    .with_hint("lower min_ttl or raise max_ttl"),
            );
        }
        for (field, value) in [("max_ttl", self.max_ttl), ("interval", self.interval)] {
            if value.get().is_zero() {
                errors.push(ConfigError::new(
                    format!("{path}.{field}"),
                    "must be longer than zero",
                ));
            }
        }
    }
}

/// The DNS resolver of the native runtime's `dns` and `srv` discovery.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct ResolverConfig {
    /// Name servers as `IP:PORT`, queried over UDP, and over TCP for truncated
    /// responses. When empty, the system's resolver settings (`/etc/resolv.conf`) are
    /// used.
    pub nameservers: Vec<String>,
    /// Maximum time for one query; 5 s when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ConfigDuration>,
}

impl ResolverConfig {
    /// Checks the settings, reporting problems under `resolver`.
    pub(crate) fn check(&self, errors: &mut Vec<ConfigError>) {
        for (index, server) in self.nameservers.iter().enumerate() {
            if server.parse::<std::net::SocketAddr>().is_err() {
                errors.push(
                    ConfigError::new(
                        format!("resolver.nameservers[{index}]"),
                        format!("invalid socket address {server:?}"),
                    )
                    .with_hint("use IP:PORT, such as \"127.0.0.1:53\""),
                );
            }
        }
        if self.timeout.is_some_and(|timeout| timeout.get().is_zero()) {
            errors.push(ConfigError::new(
                "resolver.timeout",
                "must be longer than zero",
            ));
        }
    }
}

/// The document a `file` or `key_value` discovery source contains.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointList {
    /// The endpoints, with the same keys as an upstream's `endpoints`.
    pub endpoints: Vec<EndpointConfig>,
}
