//! TLS termination: the certificates of each listener, chosen by SNI, and their
//! reload without a restart.
//!
//! Each TLS listener reads its settings from an [`ArcSwap`] when it accepts a
//! connection. A reload builds the whole new certificate set of every listener first
//! and swaps them only when all of them loaded, so a bad file leaves the old
//! certificates serving.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use gatehouse_core::config::{Config, ConfigError, ListenerTlsConfig};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, ResolvesServerCertUsingSni};
use rustls::sign::CertifiedKey;

use super::pem::{read_certificates, read_private_key};
use super::provider;
use crate::server::SharedGateway;

/// ALPN protocols offered to clients, HTTP/2 first so that clients that speak both
/// use it.
const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Interval at which certificate and key files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Wait after a change is seen before the files are read, so that a certificate and
/// its key replaced one after the other are read together.
const WATCH_SETTLE: Duration = Duration::from_millis(500);

/// The TLS settings a listener applies to each new connection.
#[derive(Debug)]
pub struct ListenerTls {
    /// The rustls configuration, with the certificate resolver and ALPN.
    pub config: Arc<ServerConfig>,
    /// Maximum time from accepting a connection to the end of its handshake.
    pub handshake_timeout: Duration,
}

/// Loads the certificates of a listener and builds its TLS settings. `path` is the
/// config path of `tls`, such as `listeners[0].tls`, for errors.
pub fn load(tls: &ListenerTlsConfig, path: &str) -> Result<ListenerTls, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut set = CertificateSet {
        exact: HashMap::new(),
        wildcard: HashMap::new(),
        default: None,
    };
    for (index, certificate) in tls.certificates.iter().enumerate() {
        let certificate_path = format!("{path}.certificates[{index}]");
        let key = match load_certified_key(
            &certificate.cert_file,
            &certificate.key_file,
            &certificate_path,
        ) {
            Ok(key) => key,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        for (name_index, name) in certificate.server_names.iter().enumerate() {
            if let Err(error) = check_name(&key, name) {
                errors.push(
                    ConfigError::new(
                        format!("{certificate_path}.server_names[{name_index}]"),
                        format!(
                            "the certificate in {:?} is not valid for {name:?}: {error}",
                            certificate.cert_file
                        ),
                    )
                    .with_hint("list only names from the certificate's subject alternative names"),
                );
                continue;
            }
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(parent) => set.wildcard.insert(parent.to_owned(), Arc::clone(&key)),
                None => set.exact.insert(name, Arc::clone(&key)),
            };
        }
        if set.default.is_none() && !tls.reject_unknown_sni {
            set.default = Some(key);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| {
            vec![ConfigError::new(
                path,
                format!("the TLS provider cannot be used: {error}"),
            )]
        })?;
    let mut config = builder
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(set));
    config.alpn_protocols = ALPN_PROTOCOLS
        .iter()
        .map(|protocol| protocol.to_vec())
        .collect();
    Ok(ListenerTls {
        config: Arc::new(config),
        handshake_timeout: tls.handshake_timeout.get(),
    })
}

fn load_certified_key(
    cert_file: &str,
    key_file: &str,
    path: &str,
) -> Result<Arc<CertifiedKey>, ConfigError> {
    let chain = read_certificates(cert_file, &format!("{path}.cert_file"))?;
    let key = read_private_key(key_file, &format!("{path}.key_file"))?;
    match CertifiedKey::from_der(chain, key, &provider()) {
        Ok(key) => Ok(Arc::new(key)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(ConfigError::new(
            format!("{path}.key_file"),
            format!(
                "the private key in {key_file:?} does not match the certificate in {cert_file:?}"
            ),
        )
        .with_hint("configure the key the certificate was issued for")),
        Err(error) => Err(ConfigError::new(
            format!("{path}.key_file"),
            format!("the private key in {key_file:?} cannot be used: {error}"),
        )
        .with_hint("use an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key")),
    }
}

/// Checks that the certificate is valid for `name`. A wildcard name is checked with a
/// sample name under it.
fn check_name(key: &CertifiedKey, name: &str) -> Result<(), rustls::Error> {
    let sample = match name.strip_prefix("*.") {
        Some(parent) => format!("wildcard-check.{parent}"),
        None => name.to_owned(),
    };
    ResolvesServerCertUsingSni::new().add(&sample, key.clone())
}

/// The certificates of one listener by server name.
#[derive(Debug)]
struct CertificateSet {
    /// Exact names, lowercase.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Wildcard names by the part after `*.`, lowercase.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The certificate for clients without SNI or with an unknown name; `None` when
    /// such handshakes are rejected.
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertificateSet {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = client_hello.server_name() else {
            return self.default.clone();
        };
        // rustls passes the name lowercased.
        if let Some(key) = self.exact.get(name) {
            return Some(Arc::clone(key));
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(key) = self.wildcard.get(parent)
        {
            return Some(Arc::clone(key));
        }
        if self.default.is_none() {
            tracing::debug!(
                server_name = name,
                "TLS handshake rejected: no certificate for the server name"
            );
        }
        self.default.clone()
    }
}

/// The TLS settings of every TLS listener, by listener name, swapped on reload.
#[derive(Debug, Default)]
pub struct TlsListeners {
    listeners: HashMap<String, Arc<ArcSwap<ListenerTls>>>,
    /// Serializes reloads from the config reload and the file watch.
    reloading: Mutex<()>,
}

impl TlsListeners {
    /// Loads the TLS settings of every TLS listener in `config`.
    pub fn load(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let prepared = prepare(config)?;
        let listeners = prepared
            .into_iter()
            .map(|(name, tls)| (name, Arc::new(ArcSwap::from_pointee(tls))))
            .collect();
        Ok(Self {
            listeners,
            reloading: Mutex::new(()),
        })
    }

    /// Returns the swappable TLS settings of the listener `name`, or `None` for a
    /// cleartext listener.
    pub fn get(&self, name: &str) -> Option<Arc<ArcSwap<ListenerTls>>> {
        self.listeners.get(name).cloned()
    }

    /// Returns whether no listener uses TLS.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// Checks that the TLS listeners of `config` can load their certificates, without
    /// installing them. A reload calls this before it swaps the gateway.
    pub fn check(&self, config: &Config) -> Result<(), Vec<ConfigError>> {
        prepare(config).map(drop)
    }

    /// Loads the certificates of `config` and installs them on the bound listeners of
    /// the same name, all or none. Listeners added to or removed from `config` since
    /// start are skipped, because binding or unbinding a socket needs a restart.
    pub fn reload(&self, config: &Config) -> Result<usize, Vec<ConfigError>> {
        let _reloading = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let prepared = prepare(config)?;
        let mut installed = 0;
        for (name, tls) in prepared {
            if let Some(current) = self.listeners.get(&name) {
                current.store(Arc::new(tls));
                installed += 1;
            }
        }
        Ok(installed)
    }

    /// Checks the certificate and key files of the serving config every
    /// [`WATCH_INTERVAL`] and reloads the certificates when any file changed. A set
    /// that fails to load is logged and the old certificates keep serving. Runs until
    /// dropped.
    pub async fn watch(self: Arc<Self>, gateway: SharedGateway) {
        if self.is_empty() {
            return;
        }
        let mut stamps = file_stamps(&gateway.load().config().listeners);
        let mut interval = tokio::time::interval(WATCH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if file_stamps(&gateway.load().config().listeners) == stamps {
                continue;
            }
            tokio::time::sleep(WATCH_SETTLE).await;
            let config = gateway.load_full();
            stamps = file_stamps(&config.config().listeners);
            let listeners = Arc::clone(&self);
            let reloaded =
                tokio::task::spawn_blocking(move || listeners.reload(config.config())).await;
            match reloaded {
                Ok(Ok(count)) => tracing::info!(
                    listeners = count,
                    "certificate files changed; TLS certificates reloaded"
                ),
                Ok(Err(problems)) => tracing::error!(
                    problems = ?problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "certificate files changed but failed to load; the previous certificates keep serving"
                ),
                Err(error) => tracing::error!(%error, "the certificate reload task failed"),
            }
        }
    }
}

/// Loads the TLS settings of every TLS listener of `config`, collecting every problem.
fn prepare(config: &Config) -> Result<Vec<(String, ListenerTls)>, Vec<ConfigError>> {
    let mut prepared = Vec::new();
    let mut errors = Vec::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        let Some(tls) = &listener.tls else {
            continue;
        };
        match load(tls, &format!("listeners[{index}].tls")) {
            Ok(loaded) => prepared.push((listener.name.clone(), loaded)),
            Err(problems) => errors.extend(problems),
        }
    }
    if errors.is_empty() {
        Ok(prepared)
    } else {
        Err(errors)
    }
}

type FileStamp = Option<(SystemTime, u64)>;

/// Reads the modification time and size of every certificate and key file.
fn file_stamps(listeners: &[gatehouse_core::config::ListenerConfig]) -> Vec<FileStamp> {
    listeners
        .iter()
        .filter_map(|listener| listener.tls.as_ref())
        .flat_map(ListenerTlsConfig::files)
        .map(|file| {
            let metadata = std::fs::metadata(Path::new(file)).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
}
