//! TLS to upstreams: the rustls client configuration of an upstream's `tls` table.
//!
//! Without `ca_files`, endpoints are verified with the operating system's trusted
//! roots, read through rustls-native-certs. The system store is what operators already
//! maintain for internal CAs and what a container image updates with its CA package,
//! while a compiled-in list such as webpki-roots would only trust public CAs and change
//! only with a rebuild.

use std::sync::{Arc, OnceLock};

use gatehouse_core::config::{ConfigError, UpstreamTlsConfig};
use rustls::{ClientConfig, RootCertStore};

use super::pem::{read_certificates, read_private_key};
use super::provider;

/// Builds the client configuration of an upstream's `tls` table, reading its files.
/// `path` is the table's config path, such as `upstreams.api.tls`, for errors.
///
/// ALPN is left to the connector, which offers `h2` for `protocol = "h2"` and
/// `http/1.1` otherwise.
pub fn client_config(
    tls: &UpstreamTlsConfig,
    path: &str,
) -> Result<ClientConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let roots = if tls.ca_files.is_empty() {
        system_roots()
    } else {
        let mut roots = RootCertStore::empty();
        for (index, file) in tls.ca_files.iter().enumerate() {
            let file_path = format!("{path}.ca_files[{index}]");
            match read_certificates(file, &file_path) {
                Ok(certificates) => {
                    let (_, ignored) = roots.add_parsable_certificates(certificates);
                    if ignored > 0 {
                        errors.push(
                            ConfigError::new(
                                file_path,
                                format!("{ignored} certificate(s) in {file:?} could not be parsed as trust anchors"),
                            )
                            .with_hint("list only PEM files of valid X.509 CA certificates"),
                        );
                    }
                }
                Err(error) => errors.push(error),
            }
        }
        Arc::new(roots)
    };

    let client_identity = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = read_certificates(cert_file, &format!("{path}.client_cert_file"));
            let key = read_private_key(key_file, &format!("{path}.client_key_file"));
            match (chain, key) {
                (Ok(chain), Ok(key)) => Some((chain, key)),
                (chain, key) => {
                    errors.extend(chain.err());
                    errors.extend(key.err());
                    None
                }
            }
        }
        _ => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }

    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| {
            vec![ConfigError::new(
                path,
                format!("the TLS provider cannot be used: {error}"),
            )]
        })?
        .with_root_certificates(roots);
    match client_identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|error| {
            let message = match error {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the private key in {:?} does not match the certificate in {:?}",
                    tls.client_key_file.as_deref().unwrap_or_default(),
                    tls.client_cert_file.as_deref().unwrap_or_default()
                ),
                other => format!("the client certificate cannot be used: {other}"),
            };
            vec![
                ConfigError::new(format!("{path}.client_key_file"), message)
                    .with_hint("configure the key the client certificate was issued for"),
            ]
        }),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Returns the operating system's trusted roots, read once per process. Certificates
/// that fail to parse are skipped and counted in a debug log line.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(%error, "failed to read part of the system's trusted root certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
        if added == 0 {
            tracing::warn!(
                "no trusted root certificates found on this system; upstreams with tls and \
                 no ca_files cannot be verified (install the CA certificates package or set \
                 ca_files)"
            );
        } else {
            tracing::debug!(
                added,
                ignored,
                "loaded the system's trusted root certificates"
            );
        }
        Arc::new(roots)
    }))
}
