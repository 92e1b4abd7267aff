//! TLS with rustls and its `ring` crypto provider: termination on listeners
//! ([`listener`]) and connections to upstreams ([`upstream`]).
//!
//! Certificate and key files are read while a config is checked, so `gatehouse check`,
//! start-up and every reload report a missing file, an unreadable key or a key that
//! does not match its certificate with the config path of the setting.

pub mod listener;
mod pem;
pub mod upstream;

use std::sync::Arc;

use gatehouse_core::config::{Config, ConfigError};
use rustls::crypto::CryptoProvider;

pub use listener::{ListenerTls, TlsListeners};

/// The crypto provider of every TLS configuration in the process.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate, key and CA file the config names and returns each problem
/// with the path of its setting.
pub fn check_files(config: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        if let Some(tls) = &listener.tls
            && let Err(problems) = listener::load(tls, &format!("listeners[{index}].tls"))
        {
            errors.extend(problems);
        }
    }
    for (name, upstream) in &config.upstreams {
        if let Some(tls) = &upstream.tls
            && let Err(problems) = upstream::client_config(tls, &format!("upstreams.{name}.tls"))
        {
            errors.extend(problems);
        }
    }
    errors
}
