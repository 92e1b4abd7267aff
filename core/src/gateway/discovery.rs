//! Endpoint sets that change while the gateway runs: a gateway rebuilt with new
//! endpoints for some upstreams, which keeps the state of the endpoints that stayed,
//! and the reads of `key_value` discovery sources.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::config::{
    ConfigErrors, DiscoveryConfig, DiscoverySource, EndpointConfig, EndpointList, Format,
};
use crate::platform::KeyValue;

use super::Gateway;

/// Maximum endpoints one discovery read may return, so that a runaway source cannot
/// make the gateway build a huge balancer.
pub const MAX_DISCOVERED_ENDPOINTS: usize = 1_000;

/// Parses the endpoint document of a `file` or `key_value` discovery source:
/// `endpoints = [...]` in TOML or `{"endpoints": [...]}` in JSON.
///
/// The endpoints are checked when the gateway is rebuilt with them
/// ([`Gateway::with_endpoints`]), like those of the config file.
pub fn parse_endpoint_list(text: &str, format: Format) -> Result<Vec<EndpointConfig>, String> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let list: EndpointList = match format {
        Format::Toml => {
            let deserializer =
                toml::Deserializer::parse(text).map_err(|error| error.message().to_owned())?;
            serde_ignored::deserialize(deserializer, &mut record)
                .map_err(|error| error.message().to_owned())?
        }
        Format::Json => {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            serde_ignored::deserialize(&mut deserializer, &mut record)
                .map_err(|error| error.to_string())?
        }
    };
    if !unknown.is_empty() {
        return Err(format!("unknown keys: {}", unknown.join(", ")));
    }
    if list.endpoints.len() > MAX_DISCOVERED_ENDPOINTS {
        return Err(format!(
            "lists {} endpoints, more than the maximum of {MAX_DISCOVERED_ENDPOINTS}",
            list.endpoints.len()
        ));
    }
    Ok(list.endpoints)
}

/// Checks a discovered set against `discovery.allow_empty`, returning why it is not
/// used.
pub fn check_discovered(
    discovery: &DiscoveryConfig,
    endpoints: &[EndpointConfig],
) -> Result<(), String> {
    if endpoints.is_empty() && !discovery.allow_empty {
        return Err(
            "the source returned no endpoints; the last set keeps serving \
                    (set allow_empty = true to accept an empty set)"
                .to_owned(),
        );
    }
    Ok(())
}

impl Gateway {
    /// Builds a gateway with this one's config, except that each upstream named in
    /// `changes` has the given endpoints, and takes over this gateway's runtime state
    /// as a reload does ([`Gateway::inherit_state`]).
    ///
    /// Endpoints that stay keep their in-flight counts, latency estimates, ejections,
    /// circuit breakers and active-health verdicts, and requests still running on this
    /// gateway finish on it. Fails, leaving this gateway as it is, when a new
    /// endpoint is invalid (such as a bad address or a duplicate) or an upstream is
    /// not found.
    ///
    /// NOTE: the whole config is compiled again, so state outside the upstreams that
    /// a reload also resets, such as JWKS keys fetched by `jwt` policies, starts over.
    pub fn with_endpoints(
        &self,
        changes: &BTreeMap<String, Vec<EndpointConfig>>,
    ) -> Result<Gateway, ConfigErrors> {
        let mut config = self.config.clone();
        let mut errors = Vec::new();
        for (name, endpoints) in changes {
            match config.upstreams.get_mut(name) {
                Some(upstream) => upstream.endpoints.clone_from(endpoints),
                None => errors.push(crate::config::ConfigError::new(
                    format!("upstreams.{name}"),
                    "not found",
                )),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let mut gateway = Gateway::new(config)?;
        gateway.inherit_state(self);
        Ok(gateway)
    }

    /// Returns the upstreams whose endpoints come from a discovery source, with its
    /// settings, in name order.
    pub fn discovered_upstreams(&self) -> impl Iterator<Item = (&str, &DiscoveryConfig)> {
        self.config
            .upstreams
            .iter()
            .filter_map(|(name, upstream)| Some((name.as_str(), upstream.discovery.as_ref()?)))
    }
}

/// The outcome of reading one upstream's `key_value` discovery source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryRead {
    /// The entry listed the endpoints the upstream already has.
    Unchanged,
    /// The entry listed other endpoints, which the returned gateway uses.
    Changed {
        /// Number of endpoints in the new set.
        endpoints: usize,
    },
    /// The entry was missing, invalid or empty, or the store failed, so the last set
    /// keeps serving. The text contains the reason, without the entry's value.
    Failed(String),
}

impl DiscoveryRead {
    /// Returns whether the read failed, so that the caller logs it as an error.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    /// Formats the log line of this outcome for `upstream`, or returns `None` when
    /// there is nothing to log (the endpoints are unchanged).
    pub fn log_line(&self, upstream: &str) -> Option<String> {
        match self {
            Self::Unchanged => None,
            Self::Changed { endpoints } => Some(format!(
                "gatehouse: discovered endpoints of upstream {upstream} changed \
                 ({endpoints} endpoints)"
            )),
            Self::Failed(problem) => Some(format!(
                "gatehouse: service discovery of upstream {upstream} failed, the last good \
                 endpoints keep serving: {problem}"
            )),
        }
    }
}

/// Reads the `key_value` discovery sources of a gateway at most once per `interval`
/// each, for platforms that run no background tasks: the caller passes every request's
/// gateway through [`KeyValueDiscovery::refresh`] and swaps in the gateway it returns.
#[derive(Debug, Default)]
pub struct KeyValueDiscovery {
    /// Monotonic time of the next read of each upstream's key.
    next_read: Mutex<BTreeMap<String, Duration>>,
}

impl KeyValueDiscovery {
    /// Creates a reader that reads every key on the first call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the key of each upstream with `key_value` discovery whose interval has
    /// passed at monotonic time `now`, and returns a new gateway when any set
    /// changed, with the outcome per upstream read.
    ///
    /// A failed read keeps the upstream's current endpoints and is tried again after
    /// `interval`, so a failure is reported once per interval.
    pub async fn refresh<K: KeyValue>(
        &self,
        gateway: &Gateway,
        key_value: &K,
        now: Duration,
    ) -> (Option<Gateway>, Vec<(String, DiscoveryRead)>) {
        let due = self.take_due(gateway, now);
        let mut reads = Vec::new();
        let mut changes = BTreeMap::new();
        for (name, key) in due {
            let read = read_key(key_value, &key).await;
            let discovery = gateway
                .config
                .upstreams
                .get(&name)
                .and_then(|upstream| upstream.discovery.as_ref());
            let outcome = match (read, discovery) {
                (Err(problem), _) => DiscoveryRead::Failed(problem),
                (Ok(_), None) => continue,
                (Ok(endpoints), Some(discovery)) => match check_discovered(discovery, &endpoints) {
                    Err(problem) => DiscoveryRead::Failed(problem),
                    Ok(()) if gateway.config.upstreams[&name].endpoints == endpoints => {
                        DiscoveryRead::Unchanged
                    }
                    Ok(()) => {
                        let count = endpoints.len();
                        changes.insert(name.clone(), endpoints);
                        DiscoveryRead::Changed { endpoints: count }
                    }
                },
            };
            reads.push((name, outcome));
        }
        if changes.is_empty() {
            return (None, reads);
        }
        match gateway.with_endpoints(&changes) {
            Ok(next) => (Some(next), reads),
            Err(errors) => {
                // The new sets are reported as failed together, because the gateway is
                // built once for all of them.
                let problem = errors.to_string();
                for (name, outcome) in &mut reads {
                    if changes.contains_key(name) {
                        *outcome = DiscoveryRead::Failed(problem.clone());
                    }
                }
                (None, reads)
            }
        }
    }

    /// Returns the upstreams whose key is due at `now` and schedules their next read.
    fn take_due(&self, gateway: &Gateway, now: Duration) -> Vec<(String, String)> {
        let mut next_read = self
            .next_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut due = Vec::new();
        for (name, discovery) in gateway.discovered_upstreams() {
            let Some(DiscoverySource::KeyValue(key)) = discovery.source() else {
                continue;
            };
            let next = next_read.get(name).copied().unwrap_or_default();
            if now >= next {
                next_read.insert(name.to_owned(), now + discovery.interval.get());
                due.push((name.to_owned(), key.to_owned()));
            }
        }
        due
    }
}

async fn read_key<K: KeyValue>(key_value: &K, key: &str) -> Result<Vec<EndpointConfig>, String> {
    let value = key_value
        .get(key)
        .await
        .map_err(|error| format!("reading key {key:?} failed: {error}"))?
        .ok_or_else(|| format!("key {key:?} not found"))?;
    let text =
        std::str::from_utf8(&value).map_err(|_| format!("key {key:?} is not valid UTF-8"))?;
    parse_endpoint_list(text, Format::Json).map_err(|problem| format!("key {key:?}: {problem}"))
}

#[cfg(test)]
#[path = "discovery_tests.rs"]
mod tests;
