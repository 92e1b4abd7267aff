//! TLS settings: certificates a listener serves, and how the gateway connects to an
//! upstream over TLS.
//!
//! The core checks the shape of these settings. Reading and parsing the PEM files is
//! the native runtime's work, because edge platforms terminate TLS themselves and the
//! core has no file system.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConfigDuration, ConfigError, UpstreamProtocol};

/// TLS termination on a listener of the native runtime.
///
/// Clients choose a certificate through SNI. A client that sends no server name, or a
/// name no certificate lists, gets the first certificate unless `reject_unknown_sni`
/// is set. HTTP/2 and HTTP/1.1 are offered through ALPN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificate chains with their keys; the first one is the default.
    pub certificates: Vec<CertificateConfig>,
    /// Rejects handshakes without SNI or with a server name no certificate lists,
    /// instead of serving the first certificate.
    #[serde(default)]
    pub reject_unknown_sni: bool,
    /// Maximum time a client has to complete the TLS handshake after connecting.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: ConfigDuration,
}

/// Ten seconds is generous for a handshake over a slow link, and short enough that a
/// client that opens connections and sends nothing cannot pile them up.
fn default_handshake_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(10_000)
}

/// One certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file with the certificate first and then its intermediates. A relative
    /// path is relative to the working directory of the process.
    pub cert_file: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// Server names (SNI) this certificate is served for: exact (`api.example.com`)
    /// or with a wildcard first label (`*.example.com`). Each must be a name the
    /// certificate is valid for.
    pub server_names: Vec<String>,
}

/// TLS from the gateway to an upstream's endpoints (native runtime).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM files of the certificate authorities that verify the endpoints'
    /// certificates. When empty, the operating system's trusted roots verify them.
    pub ca_files: Vec<String>,
    /// The server name sent in SNI and verified in the endpoint's certificate;
    /// defaults to the host of each endpoint address.
    pub server_name: Option<String>,
    /// PEM certificate chain presented to endpoints that require client certificates
    /// (mutual TLS); requires `client_key_file`.
    pub client_cert_file: Option<String>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<String>,
}

impl ListenerTlsConfig {
    /// Returns every certificate and key file path, for watching them.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.certificates.iter().flat_map(|certificate| {
            [
                certificate.cert_file.as_str(),
                certificate.key_file.as_str(),
            ]
        })
    }
}

impl UpstreamTlsConfig {
    /// Returns every file path this config reads.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.ca_files
            .iter()
            .map(String::as_str)
            .chain(self.client_cert_file.as_deref())
            .chain(self.client_key_file.as_deref())
    }

    /// Returns the first setting that only the native runtime applies, for platforms
    /// whose HTTP client verifies with the platform's roots and the endpoint's host.
    pub fn native_only_setting(&self) -> Option<&'static str> {
        if !self.ca_files.is_empty() {
            Some("ca_files")
        } else if self.server_name.is_some() {
            Some("server_name")
        } else if self.client_cert_file.is_some() || self.client_key_file.is_some() {
            Some("client_cert_file")
        } else {
            None
        }
    }
}

/// Checks a listener's TLS settings, except the files themselves.
pub(crate) fn check_listener_tls(
    tls: &ListenerTlsConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    if tls.certificates.is_empty() {
        errors.push(
            ConfigError::new(
                format!("{path}.certificates"),
                "must list at least one certificate",
            )
            .with_hint(
                "add certificates = [{ cert_file = \"cert.pem\", key_file = \"key.pem\", \
                 server_names = [\"example.com\"] }]",
            ),
        );
    }
    if tls.handshake_timeout.get().is_zero() {
        errors.push(
            ConfigError::new(
                format!("{path}.handshake_timeout"),
                "must be longer than zero",
            )
            .with_hint("use a duration such as \"10s\""),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (index, certificate) in tls.certificates.iter().enumerate() {
        let certificate_path = format!("{path}.certificates[{index}]");
        check_file_path(
            &certificate.cert_file,
            &format!("{certificate_path}.cert_file"),
            errors,
        );
        check_file_path(
            &certificate.key_file,
            &format!("{certificate_path}.key_file"),
            errors,
        );
        if certificate.server_names.is_empty() {
            errors.push(
                ConfigError::new(
                    format!("{certificate_path}.server_names"),
                    "must list at least one server name",
                )
                .with_hint("list the DNS names of the certificate, such as [\"api.example.com\"]"),
            );
        }
        for (name_index, name) in certificate.server_names.iter().enumerate() {
            let name_path = format!("{certificate_path}.server_names[{name_index}]");
            if !is_server_name_pattern(name) {
                errors.push(
                    ConfigError::new(&name_path, format!("invalid server name {name:?}"))
                        .with_hint(
                            "use a DNS name such as \"api.example.com\" or \"*.example.com\"",
                        ),
                );
            } else if !seen.insert(name.to_ascii_lowercase()) {
                errors.push(
                    ConfigError::new(&name_path, format!("server name {name:?} is listed twice"))
                        .with_hint("list each server name under one certificate only"),
                );
            }
        }
    }
}

/// Checks an upstream's TLS settings against its protocol, except the files themselves.
pub(crate) fn check_upstream_tls(
    tls: Option<&UpstreamTlsConfig>,
    protocol: UpstreamProtocol,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    match (tls, protocol) {
        (Some(_), UpstreamProtocol::H2c) => errors.push(
            ConfigError::new(
                format!("{path}.protocol"),
                "h2c is HTTP/2 without TLS and cannot be combined with tls",
            )
            .with_hint("use protocol = \"h2\" for HTTP/2 over TLS"),
        ),
        (None, UpstreamProtocol::H2) => errors.push(
            ConfigError::new(format!("{path}.protocol"), "h2 requires tls").with_hint(
                "add a [upstreams.NAME.tls] table, or use protocol = \"h2c\" without TLS",
            ),
        ),
        _ => {}
    }
    let Some(tls) = tls else {
        return;
    };
    let tls_path = format!("{path}.tls");
    for (index, file) in tls.ca_files.iter().enumerate() {
        check_file_path(file, &format!("{tls_path}.ca_files[{index}]"), errors);
    }
    if let Some(name) = &tls.server_name
        && (name.contains('*') || !is_server_name_pattern(name))
        && name.parse::<std::net::IpAddr>().is_err()
    {
        errors.push(
            ConfigError::new(
                format!("{tls_path}.server_name"),
                format!("invalid server name {name:?}"),
            )
            .with_hint("use a DNS name such as \"api.internal\" or an IP address"),
        );
    }
    match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            check_file_path(cert, &format!("{tls_path}.client_cert_file"), errors);
            check_file_path(key, &format!("{tls_path}.client_key_file"), errors);
        }
        (Some(_), None) => errors.push(
            ConfigError::new(
                format!("{tls_path}.client_key_file"),
                "is required with client_cert_file",
            )
            .with_hint("set client_key_file to the PEM file of the client certificate's key"),
        ),
        (None, Some(_)) => errors.push(
            ConfigError::new(
                format!("{tls_path}.client_cert_file"),
                "is required with client_key_file",
            )
            .with_hint("set client_cert_file to the PEM file of the client certificate"),
        ),
        (None, None) => {}
    }
}

fn check_file_path(file: &str, path: &str, errors: &mut Vec<ConfigError>) {
    if file.trim().is_empty() {
        errors.push(
            ConfigError::new(path, "must not be empty").with_hint("give the path of a PEM file"),
        );
    }
}

/// Returns whether `name` is a DNS name, optionally with `*` as its whole first label.
fn is_server_name_pattern(name: &str) -> bool {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_patterns() {
        assert!(is_server_name_pattern("api.example.com"));
        assert!(is_server_name_pattern("*.example.com"));
        assert!(is_server_name_pattern("localhost"));
        assert!(!is_server_name_pattern("*"));
        assert!(!is_server_name_pattern("api.*.com"));
        assert!(!is_server_name_pattern("-bad.example.com"));
        assert!(!is_server_name_pattern("a..b"));
        assert!(!is_server_name_pattern(""));
    }

    #[test]
    fn h2c_with_tls_is_rejected() {
        let mut errors = Vec::new();
        check_upstream_tls(
            Some(&UpstreamTlsConfig::default()),
            UpstreamProtocol::H2c,
            "upstreams.api",
            &mut errors,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "upstreams.api.protocol");
    }

    #[test]
    fn h2_without_tls_is_rejected() {
        let mut errors = Vec::new();
        check_upstream_tls(None, UpstreamProtocol::H2, "upstreams.api", &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "upstreams.api.protocol");
    }

    #[test]
    fn client_cert_needs_key() {
        let tls = UpstreamTlsConfig {
            client_cert_file: Some("client.pem".to_owned()),
            ..UpstreamTlsConfig::default()
        };
        let mut errors = Vec::new();
        check_upstream_tls(
            Some(&tls),
            UpstreamProtocol::Http1,
            "upstreams.api",
            &mut errors,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "upstreams.api.tls.client_key_file");
    }

    #[test]
    fn listener_needs_certificates_and_names() {
        let tls = ListenerTlsConfig {
            certificates: vec![CertificateConfig {
                cert_file: "cert.pem".to_owned(),
                key_file: String::new(),
                server_names: vec!["a.example".to_owned(), "A.example".to_owned()],
            }],
            reject_unknown_sni: false,
            handshake_timeout: default_handshake_timeout(),
        };
        let mut errors = Vec::new();
        check_listener_tls(&tls, "listeners[0].tls", &mut errors);
        let paths: Vec<&str> = errors.iter().map(|error| error.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listeners[0].tls.certificates[0].key_file",
                "listeners[0].tls.certificates[0].server_names[1]"
            ]
        );

        let empty = ListenerTlsConfig {
            certificates: Vec::new(),
            ..tls
        };
        let mut errors = Vec::new();
        check_listener_tls(&empty, "listeners[0].tls", &mut errors);
        assert_eq!(errors[0].path, "listeners[0].tls.certificates");
    }
}
