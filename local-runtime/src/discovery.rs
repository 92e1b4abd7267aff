//! Service discovery of the native runtime: one background task per upstream with a
//! `discovery` table, reading its endpoints from DNS (A/AAAA or SRV records), a file
//! or the in-memory key-value store and putting each changed set into service through
//! the [`Reloader`].
//!
//! A read that fails, or returns no endpoints while `allow_empty` is false, keeps the
//! last good set serving. It is logged and counted in
//! `gatehouse_discovery_failures_total`, and the source is read again after
//! `interval`, so a lasting failure is logged once per interval. After each reload of
//! the config file every task stops and a new set starts from the new config.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gatehouse_core::config::{
    DiscoveryConfig, DiscoverySource, EndpointConfig, Format, ResolverConfig,
};
use gatehouse_core::discovery::{check_discovered, parse_endpoint_list};
use gatehouse_core::key_value::MemoryKeyValue;
use gatehouse_core::platform::KeyValue;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::platform::NativeClock;
use crate::reload::Reloader;

/// The native runtime's key-value store.
type Store = Arc<MemoryKeyValue<NativeClock>>;

/// Maximum time for one DNS query when `resolver.timeout` is absent.
const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs discovery for the serving config until dropped, restarting it after each
/// reload of the config file.
pub async fn supervise(reloader: Arc<Reloader>, metrics: Arc<Metrics>, key_value: Store) {
    let config_reloaded = reloader.config_reloaded();
    loop {
        let tasks = start(&reloader, &metrics, &key_value);
        if !tasks.is_empty() {
            tracing::debug!(upstreams = tasks.len(), "service discovery started");
        }
        config_reloaded.notified().await;
        for task in tasks {
            task.abort();
        }
    }
}

/// Starts one task per discovered upstream of the serving gateway.
fn start(
    reloader: &Arc<Reloader>,
    metrics: &Arc<Metrics>,
    key_value: &Store,
) -> Vec<JoinHandle<()>> {
    let gateway = reloader.gateway().load_full();
    let resolver_config = &gateway.config().resolver;
    let mut resolver = None;
    let mut tasks = Vec::new();
    for (name, discovery) in gateway.discovered_upstreams() {
        let source = match discovery.source() {
            Some(DiscoverySource::Dns { host, port }) => Source::Dns {
                host: host.to_owned(),
                port,
            },
            Some(DiscoverySource::Srv(name)) => Source::Srv(name.to_owned()),
            Some(DiscoverySource::File(file)) => Source::File(resolve_path(reloader.path(), file)),
            Some(DiscoverySource::KeyValue(key)) => {
                Source::KeyValue(key.to_owned(), Arc::clone(key_value))
            }
            None => continue,
        };
        let resolver = match (&source, &resolver) {
            (Source::File(_) | Source::KeyValue(..), _) => None,
            (_, Some(resolver)) => Some(Arc::clone(resolver)),
            (_, None) => match build_resolver(resolver_config) {
                Ok(built) => {
                    let built = Arc::new(built);
                    resolver = Some(Arc::clone(&built));
                    Some(built)
                }
                Err(error) => {
                    tracing::error!(upstream = name, %error, "failed to set up the DNS resolver");
                    metrics.record_discovery_failure(name);
                    continue;
                }
            },
        };
        let task = UpstreamDiscovery {
            upstream: name.to_owned(),
            discovery: discovery.clone(),
            source,
            resolver,
            reloader: Arc::clone(reloader),
            metrics: Arc::clone(metrics),
        };
        tasks.push(tokio::spawn(task.run()));
    }
    tasks
}

/// A discovery source with its names resolved for the native runtime.
#[derive(Debug)]
enum Source {
    Dns { host: String, port: u16 },
    Srv(String),
    File(PathBuf),
    KeyValue(String, Store),
}

/// Resolves a file name of the config relative to the config file's folder.
fn resolve_path(config_path: &Path, file: &str) -> PathBuf {
    config_path.parent().unwrap_or(Path::new(".")).join(file)
}

/// Builds the resolver of `[resolver]`. Its cache is off, because each task keeps a
/// response for its TTL clamped to the upstream's bounds and must then see the
/// name server's current records.
pub fn build_resolver(config: &ResolverConfig) -> Result<TokioResolver, ResolveError> {
    let (hickory_config, mut options) = if config.nameservers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()?
    } else {
        let mut group = NameServerConfigGroup::new();
        for server in &config.nameservers {
            // The core rejected addresses that do not parse.
            if let Ok(address) = server.parse::<SocketAddr>() {
                group.merge(NameServerConfigGroup::from_ips_clear(
                    &[address.ip()],
                    address.port(),
                    true,
                ));
            }
        }
        (
            HickoryConfig::from_parts(None, Vec::new(), group),
            ResolverOpts::default(),
        )
    };
    options.cache_size = 0;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.timeout = config
        .timeout
        .map_or(DEFAULT_QUERY_TIMEOUT, |timeout| timeout.get());
    options.attempts = 2;
    let builder =
        TokioResolver::builder_with_config(hickory_config, TokioConnectionProvider::default());
    Ok(builder.with_options(options).build())
}

/// The discovery task of one upstream.
struct UpstreamDiscovery {
    upstream: String,
    discovery: DiscoveryConfig,
    source: Source,
    resolver: Option<Arc<TokioResolver>>,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
}

/// One successful read: the endpoints, and how long they may be kept.
struct Read {
    endpoints: Vec<EndpointConfig>,
    /// For DNS, the clamped TTL; for a file, `None`, since it is polled.
    valid_for: Option<Duration>,
}

impl UpstreamDiscovery {
    async fn run(self) {
        let interval = self.discovery.interval.get();
        let mut file_seen: Option<FileStamp> = None;
        loop {
            let wait = match &self.source {
                Source::File(path) => {
                    let stamp = file_stamp(path);
                    // An unchanged file is not read again; a missing one is read so
                    // that the failure is logged, once per interval.
                    if stamp.is_some() && stamp == file_seen {
                        tokio::time::sleep(interval).await;
                        continue;
                    }
                    if self.read_and_apply().await {
                        file_seen = stamp;
                    }
                    interval
                }
                Source::KeyValue(..) => {
                    self.read_and_apply().await;
                    interval
                }
                Source::Dns { .. } | Source::Srv(_) => self.read_and_apply_dns().await,
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Reads a file or key-value source and applies it, returning whether it was
    /// applied.
    async fn read_and_apply(&self) -> bool {
        let endpoints = match &self.source {
            Source::File(path) => read_file(path),
            Source::KeyValue(key, store) => read_key(store, key).await,
            _ => return false,
        };
        let result = endpoints.map(|endpoints| Read {
            endpoints,
            valid_for: None,
        });
        self.apply(result).await.is_some()
    }

    /// Looks the name up and applies the answer, returning the time until the next
    /// lookup: the clamped TTL, or `interval` after a failure.
    async fn read_and_apply_dns(&self) -> Duration {
        let Some(resolver) = &self.resolver else {
            return self.discovery.interval.get();
        };
        let result = match &self.source {
            Source::Dns { host, port } => lookup_addresses(resolver, host, *port).await,
            Source::Srv(name) => lookup_srv(resolver, name).await,
            Source::File(_) | Source::KeyValue(..) => return self.discovery.interval.get(),
        };
        let result = result.map(|(endpoints, ttl)| Read {
            endpoints,
            valid_for: Some(self.discovery.clamp_ttl(ttl)),
        });
        self.apply(result)
            .await
            .flatten()
            .unwrap_or(self.discovery.interval.get())
    }

    /// Puts a read set into service. Returns `None` when the read failed or the set
    /// was rejected, otherwise the set's validity.
    async fn apply(&self, result: Result<Read, String>) -> Option<Option<Duration>> {
        let read = result.and_then(|read| {
            check_discovered(&self.discovery, &read.endpoints)?;
            Ok(read)
        });
        let read = match read {
            Ok(read) => read,
            Err(problem) => {
                self.fail(&problem);
                return None;
            }
        };
        let count = read.endpoints.len();
        let reloader = Arc::clone(&self.reloader);
        let (upstream, discovery) = (self.upstream.clone(), self.discovery.clone());
        let endpoints = read.endpoints;
        // Rebuilding the gateway compiles the whole config, so it runs off the
        // request threads.
        let applied = tokio::task::spawn_blocking(move || {
            reloader.apply_discovered(&upstream, &discovery, endpoints)
        })
        .await
        .unwrap_or_else(|error| Err(format!("the update task failed: {error}")));
        match applied {
            Ok(true) => {
                self.metrics.record_discovery_update(&self.upstream, count);
                tracing::info!(
                    upstream = %self.upstream,
                    endpoints = count,
                    "discovered endpoints changed"
                );
                Some(read.valid_for)
            }
            Ok(false) => Some(read.valid_for),
            Err(problem) => {
                self.fail(&problem);
                None
            }
        }
    }

    fn fail(&self, problem: &str) {
        self.metrics.record_discovery_failure(&self.upstream);
        tracing::warn!(
            upstream = %self.upstream,
            problem,
            retry_in_ms = self.discovery.interval.get().as_millis() as u64,
            "service discovery failed, the last good endpoints keep serving"
        );
    }
}

/// The modification time and size of a file.
type FileStamp = (SystemTime, u64);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Reads an endpoint file. It is small, so it is read on the task's thread.
fn read_file(path: &Path) -> Result<Vec<EndpointConfig>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("failed to read {}: {error}", path.display()))?;
    let format = Format::from_file_name(&path.to_string_lossy());
    parse_endpoint_list(&text, format).map_err(|problem| format!("{}: {problem}", path.display()))
}

/// Reads the endpoints from `key` of the key-value store, as JSON.
async fn read_key(store: &Store, key: &str) -> Result<Vec<EndpointConfig>, String> {
    let value = store
        .get(key)
        .await
        .map_err(|error| format!("reading key {key:?} failed: {error}"))?
        .ok_or_else(|| format!("key {key:?} not found"))?;
    let text =
        std::str::from_utf8(&value).map_err(|_| format!("key {key:?} is not valid UTF-8"))?;
    parse_endpoint_list(text, Format::Json).map_err(|problem| format!("key {key:?}: {problem}"))
}

/// Returns the time left until `valid_until`.
fn remaining(valid_until: Instant) -> Duration {
    valid_until.saturating_duration_since(Instant::now())
}

fn endpoint(ip: IpAddr, port: u16, weight: u32, priority: u32) -> EndpointConfig {
    EndpointConfig {
        address: SocketAddr::new(ip, port).to_string(),
        weight,
        zone: None,
        priority,
    }
}

/// Looks up the A and AAAA records of `host`. A name without records is an empty
/// set, which `allow_empty` decides on; other errors are failures.
async fn lookup_addresses(
    resolver: &TokioResolver,
    host: &str,
    port: u16,
) -> Result<(Vec<EndpointConfig>, Duration), String> {
    match resolver.lookup_ip(host).await {
        Ok(lookup) => {
            let mut ips: Vec<IpAddr> = lookup.iter().collect();
            ips.sort_unstable();
            ips.dedup();
            let endpoints = ips.into_iter().map(|ip| endpoint(ip, port, 1, 0)).collect();
            Ok((endpoints, remaining(lookup.valid_until())))
        }
        Err(error) if error.is_no_records_found() => Ok((Vec::new(), Duration::ZERO)),
        Err(error) => Err(format!("DNS lookup of {host:?} failed: {error}")),
    }
}

/// Looks up the SRV records of `name` and the addresses of their targets. Each
/// address of a target becomes an endpoint with the record's port, its weight (0
/// counts as 1) and its priority as the endpoint's priority tier.
async fn lookup_srv(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<EndpointConfig>, Duration), String> {
    let srv = match resolver.srv_lookup(name).await {
        Ok(srv) => srv,
        Err(error) if error.is_no_records_found() => return Ok((Vec::new(), Duration::ZERO)),
        Err(error) => return Err(format!("SRV lookup of {name:?} failed: {error}")),
    };
    let mut valid_until = srv.as_lookup().valid_until();
    let mut by_address: BTreeMap<String, EndpointConfig> = BTreeMap::new();
    for record in srv.iter() {
        let target = record.target().to_ascii();
        let lookup = resolver
            .lookup_ip(target.as_str())
            .await
            .map_err(|error| format!("DNS lookup of SRV target {target:?} failed: {error}"))?;
        valid_until = valid_until.min(lookup.valid_until());
        let weight = u32::from(record.weight()).max(1);
        let priority = u32::from(record.priority());
        for ip in lookup.iter() {
            let endpoint = endpoint(ip, record.port(), weight, priority);
            by_address
                .entry(endpoint.address.clone())
                .or_insert(endpoint);
        }
    }
    Ok((by_address.into_values().collect(), remaining(valid_until)))
}
