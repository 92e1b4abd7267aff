//! Reading PEM certificate and key files into rustls types, with config errors that
//! name the setting and the fix.

use gatehouse_core::config::ConfigError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Reads every certificate in the PEM file `file`, the setting at `path`.
pub(crate) fn read_certificates(
    file: &str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(file, path)?;
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certificates {
        Ok(certificates) if !certificates.is_empty() => Ok(certificates),
        Ok(_) => Err(
            ConfigError::new(path, format!("{file:?} contains no PEM certificate"))
                .with_hint("the file must contain \"-----BEGIN CERTIFICATE-----\" sections"),
        ),
        Err(error) => Err(ConfigError::new(
            path,
            format!("{file:?} is not a valid PEM file: {error}"),
        )
        .with_hint("the file must contain \"-----BEGIN CERTIFICATE-----\" sections")),
    }
}

/// Reads the first private key in the PEM file `file`, the setting at `path`. The
/// error never quotes the file's contents.
pub(crate) fn read_private_key(
    file: &str,
    path: &str,
) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let bytes = read(file, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| {
        let message = match error {
            rustls_pki_types::pem::Error::NoItemsFound => {
                format!("{file:?} contains no PEM private key")
            }
            other => format!("{file:?} is not a valid PEM private key file: {other}"),
        };
        ConfigError::new(path, message).with_hint(
            "use a PKCS#8 (\"BEGIN PRIVATE KEY\"), PKCS#1 (\"BEGIN RSA PRIVATE KEY\") or SEC1 \
             (\"BEGIN EC PRIVATE KEY\") key without a passphrase",
        )
    })
}

fn read(file: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(file).map_err(|error| {
        let hint = if error.kind() == std::io::ErrorKind::NotFound {
            "check the path; a relative path is relative to the working directory"
        } else {
            "check that the gateway's user can read the file"
        };
        ConfigError::new(path, format!("failed to read {file:?}: {error}")).with_hint(hint)
    })
}
