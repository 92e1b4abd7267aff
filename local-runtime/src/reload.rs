//! Hot reload: reads the config file again, validates it fully and swaps the new
//! gateway in atomically, keeping the old one when the new config has any problem.
//!
//! Requests already running keep the gateway they started with, because each one
//! keeps its own `Arc` of it. Upstreams whose endpoints and settings did not change
//! keep their balancer, outlier-detection and retry-budget state
//! ([`gatehouse_core::Gateway::inherit_state`]).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_core::config::{
    AdminConfig, Config, DiscoveryConfig, EndpointConfig, Format, ListenerConfig, StoreConfig,
    TracingConfig,
};
use serde::Serialize;

use crate::config_file::{gateway_from_text, summary};
use crate::metrics::{Metrics, ReloadResult};
use crate::server::SharedGateway;
use crate::tls::TlsListeners;

/// Interval at which the file watch checks the config file for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Wait after a change is seen before the file is read, so that an editor that writes
/// a file in several steps is read once, after the last step.
const WATCH_SETTLE: Duration = Duration::from_millis(300);

/// The source of a reload, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// `POST /reload` on the admin listener.
    Admin,
    /// The file watch saw the config file change.
    FileWatch,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "SIGHUP",
            Self::Admin => "admin",
            Self::FileWatch => "file watch",
        }
    }
}

/// The result of a successful reload, returned by `POST /reload`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadSummary {
    /// Counts of routes, upstreams and listeners, such as `3 routes, 2 upstreams, 1
    /// listener`.
    pub summary: String,
    /// Upstreams that kept their runtime state from the previous config.
    pub state_kept: Vec<String>,
    /// Settings that changed in the file but take effect only on restart, such as
    /// `listeners`.
    pub restart_required: Vec<&'static str>,
}

/// A rejected reload. The old config keeps serving.
#[derive(Debug, Clone)]
pub struct ReloadError {
    /// Every problem found, one line each.
    pub problems: Vec<String>,
}

/// The file the gateway was started from and the state needed to reload it.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    gateway: SharedGateway,
    metrics: Arc<Metrics>,
    /// The listeners and admin listener bound at start, which a reload cannot change.
    bound_listeners: Vec<ListenerConfig>,
    bound_admin: Option<AdminConfig>,
    /// The span export settings at start, which a reload cannot change.
    bound_tracing: Option<TracingConfig>,
    /// The shared rate-limit stores connected at start, which a reload cannot change.
    bound_stores: BTreeMap<String, StoreConfig>,
    /// Serializes reloads, so that two triggers at once cannot both build on the same
    /// previous gateway, and stores the hash of the file contents read last.
    last_read: Mutex<u64>,
    /// The file's stamp when the gateway was built from it, where the watch starts.
    initial_stamp: Option<(SystemTime, u64)>,
    /// Notified after each successful reload and each change of a discovered endpoint
    /// set, so that background work tied to the endpoints, such as active health
    /// checks, restarts from the new gateway.
    reloaded: Arc<tokio::sync::Notify>,
    /// Notified after each successful reload of the file only, so that discovery
    /// restarts with the sources of the new config.
    config_reloaded: Arc<tokio::sync::Notify>,
    /// The last good endpoint set of each discovered upstream, with the discovery
    /// settings it was read under. A reloaded config gets the sets whose settings it
    /// did not change, so a reload does not fall back to the file's endpoints.
    discovered: Mutex<BTreeMap<String, (DiscoveryConfig, Vec<EndpointConfig>)>>,
    /// The certificates of the TLS listeners, reloaded with the config.
    tls: Option<Arc<TlsListeners>>,
}

impl Reloader {
    /// Creates a reloader for `path`, whose current contents built `gateway`.
    pub fn new(path: &Path, gateway: SharedGateway, metrics: Arc<Metrics>) -> Self {
        let current = gateway.load();
        let config = current.config();
        let bound_listeners = config.listeners.clone();
        let bound_admin = config.admin.clone();
        let bound_tracing = config.tracing.clone();
        let bound_stores = config.stores.clone();
        // NOTE: the file is read again here rather than passed in, so a change between
        // the first load and this read is taken as already loaded until it changes again.
        let initial_stamp = file_stamp(path);
        let last_read = std::fs::read(path).map_or(0, |bytes| hash(&bytes));
        metrics.set_last_load(unix_seconds());
        Self {
            path: path.to_owned(),
            gateway: Arc::clone(&gateway),
            metrics,
            bound_listeners,
            bound_admin,
            bound_tracing,
            bound_stores,
            last_read: Mutex::new(last_read),
            initial_stamp,
            reloaded: Arc::default(),
            config_reloaded: Arc::default(),
            discovered: Mutex::default(),
            tls: None,
        }
    }

    /// Returns the notification sent after each successful reload. It keeps one
    /// notification for a waiter that is not waiting yet.
    pub fn reloaded(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.reloaded)
    }

    /// Returns the notification sent after each successful reload of the file, but not
    /// after changes of discovered endpoints.
    pub fn config_reloaded(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.config_reloaded)
    }

    /// Returns the serving gateway.
    pub fn gateway(&self) -> &SharedGateway {
        &self.gateway
    }

    /// Returns the config file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts a discovered endpoint set of `upstream` into service, read under the
    /// settings `discovery`, and returns whether the serving endpoints changed.
    ///
    /// The serving gateway is rebuilt with the set ([`gatehouse_core::Gateway::with_endpoints`]),
    /// so endpoints that stay keep their state and requests in flight finish on the
    /// old gateway. A set read under settings the serving config no longer has is
    /// ignored, because its source was replaced by a reload. Fails when the set is
    /// invalid, such as a duplicate address, leaving the serving gateway as it is.
    pub fn apply_discovered(
        &self,
        upstream: &str,
        discovery: &DiscoveryConfig,
        endpoints: Vec<EndpointConfig>,
    ) -> Result<bool, String> {
        // Serialized with reloads, so that neither builds on a gateway the other is
        // about to replace.
        let _swap = self
            .last_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.gateway.load_full();
        let Some(config) = current.config().upstreams.get(upstream) else {
            return Ok(false);
        };
        if config.discovery.as_ref() != Some(discovery) {
            return Ok(false);
        }
        let changed = config.endpoints != endpoints;
        if changed {
            let changes = BTreeMap::from([(upstream.to_owned(), endpoints.clone())]);
            let next = current.with_endpoints(&changes).map_err(|errors| {
                errors
                    .0
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            self.gateway.store(Arc::new(next));
            self.reloaded.notify_one();
        }
        self.discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(upstream.to_owned(), (discovery.clone(), endpoints));
        Ok(changed)
    }

    /// Gives `gateway` the discovered sets whose discovery settings it kept.
    fn with_discovered(&self, gateway: gatehouse_core::Gateway) -> gatehouse_core::Gateway {
        let mut discovered = self
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        discovered.retain(|name, (discovery, _)| {
            gateway
                .config()
                .upstreams
                .get(name)
                .is_some_and(|upstream| upstream.discovery.as_ref() == Some(discovery))
        });
        if discovered.is_empty() {
            return gateway;
        }
        let changes = discovered
            .iter()
            .map(|(name, (_, endpoints))| (name.clone(), endpoints.clone()))
            .collect();
        match gateway.with_endpoints(&changes) {
            Ok(with_sets) => with_sets,
            Err(errors) => {
                tracing::warn!(
                    problems = %errors,
                    "discovered endpoints do not fit the reloaded config; its own endpoints \
                     serve until discovery reads the sources again"
                );
                discovered.clear();
                gateway
            }
        }
    }

    /// Reloads the certificates of `tls` with every config reload.
    pub fn with_tls(mut self, tls: Arc<TlsListeners>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Reads the config file and, when it is valid, makes it the serving config.
    ///
    /// A rejected config is logged once at error level with all its problems and
    /// counted in `gatehouse_config_reloads_total{result="failure"}`.
    pub fn reload(&self, trigger: Trigger) -> Result<ReloadSummary, ReloadError> {
        let mut last_read = self
            .last_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let result = match std::fs::read(&self.path) {
            Ok(bytes) => {
                *last_read = hash(&bytes);
                self.apply(&bytes)
            }
            Err(error) => Err(ReloadError {
                problems: vec![format!("failed to read {}: {error}", self.path.display())],
            }),
        };
        // Parsing freed most of the memory it took, whether or not the config was
        // valid, and the allocator keeps such memory for seconds unless asked to return it.
        crate::memory::release_freed_memory();
        match &result {
            Ok(summary) => {
                self.metrics
                    .record_reload(ReloadResult::Success, unix_seconds());
                tracing::info!(
                    trigger = trigger.as_str(),
                    path = %self.path.display(),
                    config = %summary.summary,
                    state_kept = ?summary.state_kept,
                    "config reloaded"
                );
                for setting in &summary.restart_required {
                    tracing::warn!(
                        setting,
                        "config changed {setting}, which takes effect only after a restart; \
                         the old value stays in use"
                    );
                }
            }
            Err(error) => {
                self.metrics
                    .record_reload(ReloadResult::Failure, unix_seconds());
                // NOTE: a problem may quote the invalid value. Header values, where
                // credentials usually are, are never quoted, but other fields may be.
                tracing::error!(
                    trigger = trigger.as_str(),
                    path = %self.path.display(),
                    problems = ?error.problems,
                    "config reload rejected, the previous config keeps serving"
                );
            }
        }
        result
    }

    fn apply(&self, bytes: &[u8]) -> Result<ReloadSummary, ReloadError> {
        let text = std::str::from_utf8(bytes).map_err(|error| ReloadError {
            problems: vec![format!(
                "{} is not valid UTF-8: {error}",
                self.path.display()
            )],
        })?;
        let format = Format::from_file_name(&self.path.to_string_lossy());
        let previous = self.gateway.load_full();
        let gateway =
            gateway_from_text(text, format, &self.path).map_err(|errors| ReloadError {
                problems: errors.iter().map(ToString::to_string).collect(),
            })?;
        let mut gateway = self.with_discovered(gateway);
        let state_kept = gateway
            .inherit_state(&previous)
            .iter()
            .map(ToString::to_string)
            .collect();
        let summary = ReloadSummary {
            summary: summary(&gateway),
            state_kept,
            restart_required: self.restart_required(gateway.config()),
        };
        // The certificates were read once by `gateway_from_text`; reading them again
        // here installs them. A file that changed in between is checked again, and
        // when it now fails, the reload is rejected as a whole.
        if let Some(tls) = &self.tls {
            tls.reload(gateway.config()).map_err(|errors| ReloadError {
                problems: errors.iter().map(ToString::to_string).collect(),
            })?;
        }
        self.gateway.store(Arc::new(gateway));
        self.reloaded.notify_one();
        self.config_reloaded.notify_one();
        Ok(summary)
    }

    fn restart_required(&self, config: &Config) -> Vec<&'static str> {
        let mut settings = Vec::new();
        // Certificates reload without a restart, so only the sockets and whether they
        // use TLS are compared.
        let sockets = |listeners: &[ListenerConfig]| -> Vec<(String, String, bool)> {
            listeners
                .iter()
                .map(|listener| {
                    (
                        listener.name.clone(),
                        listener.address.clone(),
                        listener.tls.is_some(),
                    )
                })
                .collect()
        };
        if sockets(&config.listeners) != sockets(&self.bound_listeners) {
            settings.push("listeners");
        }
        if config.admin != self.bound_admin {
            settings.push("admin");
        }
        if config.tracing != self.bound_tracing {
            settings.push("tracing");
        }
        if config.stores != self.bound_stores {
            settings.push("stores");
        }
        settings
    }

    /// Polls the config file every [`WATCH_INTERVAL`] and reloads when its contents
    /// change. Runs until dropped.
    ///
    /// A change is seen through the modification time and size, and confirmed by a
    /// hash of the contents, so touching the file does not reload it and a rejected
    /// file is not reported again until it changes.
    pub async fn watch(self: Arc<Self>) {
        let mut stamp = self.initial_stamp;
        let mut interval = tokio::time::interval(WATCH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let current = file_stamp(&self.path);
            if current == stamp {
                continue;
            }
            tokio::time::sleep(WATCH_SETTLE).await;
            stamp = file_stamp(&self.path);
            let Ok(bytes) = std::fs::read(&self.path) else {
                // A file being replaced may be missing for a moment; the next change
                // of its stamp retries.
                continue;
            };
            let unchanged = {
                let last_read = self
                    .last_read
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *last_read == hash(&bytes)
            };
            if !unchanged {
                let reloader = Arc::clone(&self);
                // The outcome is logged and counted by `reload` itself.
                let _ =
                    tokio::task::spawn_blocking(move || reloader.reload(Trigger::FileWatch)).await;
            }
        }
    }
}

/// The modification time and size of a file, or `None` when it cannot be read.
fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use arc_swap::ArcSwap;
    use gatehouse_core::Gateway;

    use super::*;

    const CONFIG: &str = r#"
[[listeners]]
name = "public"
address = "127.0.0.1:0"

[upstreams.api]
endpoints = [{ address = "127.0.0.1:9001" }]

[[routes]]
upstream = "api"
"#;

    fn reloader(dir: &Path, text: &str) -> (Reloader, SharedGateway) {
        let path = dir.join("gatehouse.toml");
        std::fs::write(&path, text).expect("write config");
        let gateway = Gateway::from_text(text, Format::Toml).expect("valid config");
        let shared: SharedGateway = Arc::new(ArcSwap::from_pointee(gateway));
        let reloader = Reloader::new(&path, Arc::clone(&shared), Arc::new(Metrics::new()));
        (reloader, shared)
    }

    fn temporary_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-reload-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("create temporary directory");
        dir
    }

    #[test]
    fn invalid_config_keeps_the_old_one() {
        let dir = temporary_dir("invalid");
        let (reloader, shared) = reloader(&dir, CONFIG);
        let before = shared.load_full();
        std::fs::write(
            dir.join("gatehouse.toml"),
            "[[routes]]\nupstream = \"nowhere\"\nbalancr = 1\n",
        )
        .expect("write config");
        let error = reloader
            .reload(Trigger::Admin)
            .expect_err("config is invalid");
        assert_eq!(error.problems.len(), 2, "{:?}", error.problems);
        assert!(Arc::ptr_eq(&before, &shared.load_full()));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn listener_change_requires_restart() {
        let dir = temporary_dir("listeners");
        let (reloader, shared) = reloader(&dir, CONFIG);
        let changed = CONFIG.replace("127.0.0.1:0", "127.0.0.1:8081")
            + "\n[admin]\naddress = \"127.0.0.1:9901\"\n";
        std::fs::write(dir.join("gatehouse.toml"), &changed).expect("write config");
        let summary = reloader.reload(Trigger::Signal).expect("config is valid");
        assert_eq!(summary.restart_required, ["listeners", "admin"]);
        assert_eq!(summary.state_kept, ["api"]);
        assert_eq!(
            shared.load().config().listeners[0].address,
            "127.0.0.1:8081"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
