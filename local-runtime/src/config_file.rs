//! Reading a config file and building the gateway from it.

use std::fmt;
use std::path::{Path, PathBuf};

use gatehouse_core::Gateway;
use gatehouse_core::config::{ConfigError, Format};

use crate::tls;

/// Why a config file could not become a gateway: the file could not be read, or it
/// has problems, each with its path in the document.
#[derive(Debug)]
pub enum ConfigFileError {
    /// The file could not be read.
    Read {
        /// The file's path.
        path: PathBuf,
        /// The I/O error from reading.
        source: std::io::Error,
    },
    /// The document is invalid; never empty.
    Invalid(Vec<ConfigError>),
}

impl ConfigFileError {
    /// Returns one line per problem, ready to print.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Read { path, source } => {
                vec![format!("failed to read {}: {source}", path.display())]
            }
            Self::Invalid(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems().join("\n"))
    }
}

impl std::error::Error for ConfigFileError {}

/// Reads `path` (JSON when the name ends in `.json`, TOML otherwise) and compiles it
/// into a gateway, collecting every problem, including unreadable TLS files.
pub fn load_gateway(path: &Path) -> Result<Gateway, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let format = Format::from_file_name(&path.to_string_lossy());
    gateway_from_text(&text, format).map_err(ConfigFileError::Invalid)
}

/// Compiles a config document into a gateway and reads the TLS files it names,
/// collecting the problems of both.
pub fn gateway_from_text(text: &str, format: Format) -> Result<Gateway, Vec<ConfigError>> {
    match Gateway::from_text(text, format) {
        Ok(gateway) => {
            let problems = tls::check_files(gateway.config());
            if problems.is_empty() {
                Ok(gateway)
            } else {
                Err(problems)
            }
        }
        Err(errors) => {
            let mut problems = errors.0;
            // The files are still checked when the document parses, so that one run
            // of `gatehouse check` lists every problem.
            if let Ok(config) = gatehouse_core::config::load(text, format) {
                problems.extend(tls::check_files(&config));
            }
            Err(problems)
        }
    }
}

/// Describes a valid config in one line: `3 routes, 2 upstreams, 1 listener`.
pub fn summary(gateway: &Gateway) -> String {
    let config = gateway.config();
    format!(
        "{}, {}, {}",
        count(config.routes.len(), "route"),
        count(config.upstreams.len(), "upstream"),
        count(config.listeners.len(), "listener")
    )
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_uses_plural() {
        assert_eq!(count(0, "route"), "0 routes");
        assert_eq!(count(1, "route"), "1 route");
        assert_eq!(count(3, "route"), "3 routes");
    }
}
