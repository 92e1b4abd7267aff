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
    gateway_from_text(&text, format, path).map_err(ConfigFileError::Invalid)
}

/// Compiles the config text of the file at `path` into a gateway, reading the files it
/// names (JSON Schemas relative to the config file's folder, TLS certificates) and
/// collecting the problems of all of them.
pub fn gateway_from_text(
    text: &str,
    format: Format,
    path: &Path,
) -> Result<Gateway, Vec<ConfigError>> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let read_file = |file: &str| {
        let file_path = folder.join(file);
        std::fs::read_to_string(&file_path)
            .map_err(|error| format!("failed to read {}: {error}", file_path.display()))
    };
    match Gateway::from_text_with_files(text, format, &read_file) {
        Ok(gateway) => {
            let mut problems = tls::check_files(gateway.config());
            problems.extend(gatehouse_core::config::check_store_support(
                gateway.config(),
                gatehouse_core::config::NATIVE_PLATFORM,
                &["redis"],
            ));
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

    fn temporary_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gatehouse-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temporary directory");
        dir
    }

    #[test]
    fn durable_object_store_rejected() {
        let text = "[stores.counters.durable_object]\n";
        let problems = gateway_from_text(text, Format::Toml, Path::new("gatehouse.toml"))
            .expect_err("Durable Objects exist only on Workers");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "stores.counters.durable_object");
        assert!(
            problems[0].to_string().contains("native runtime"),
            "{problems:?}"
        );
    }

    const SCHEMA_CONFIG: &str = r#"
        [policies.order.validate]
        json_schema_file = "schemas/order.json"
    "#;

    #[test]
    fn schema_file_read_beside_config() {
        let dir = temporary_dir("schema-file");
        std::fs::create_dir_all(dir.join("schemas")).expect("create schema folder");
        std::fs::write(dir.join("schemas/order.json"), r#"{"type":"object"}"#)
            .expect("write schema");
        let config = dir.join("gatehouse.toml");
        std::fs::write(&config, SCHEMA_CONFIG).expect("write config");
        let loaded = load_gateway(&config);
        std::fs::remove_dir_all(&dir).expect("remove temporary directory");
        assert!(
            loaded.is_ok(),
            "{:?}",
            loaded.err().map(|error| error.problems())
        );
    }

    #[test]
    fn schema_file_problems_named() {
        let dir = temporary_dir("schema-file-missing");
        let config = dir.join("gatehouse.toml");
        std::fs::write(&config, SCHEMA_CONFIG).expect("write config");
        let missing = load_gateway(&config).expect_err("the schema file is missing");
        std::fs::create_dir_all(dir.join("schemas")).expect("create schema folder");
        std::fs::write(dir.join("schemas/order.json"), "{").expect("write schema");
        let invalid = load_gateway(&config).expect_err("the schema file is not JSON");
        std::fs::remove_dir_all(&dir).expect("remove temporary directory");

        let missing = missing.problems();
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].starts_with("policies.order.validate.json_schema_file: failed to read"),
            "{missing:?}"
        );
        let invalid = invalid.problems();
        assert_eq!(invalid.len(), 1, "{invalid:?}");
        assert!(invalid[0].contains("is not valid JSON"), "{invalid:?}");
    }

    #[test]
    fn schema_file_needs_files() {
        let errors = Gateway::from_text(SCHEMA_CONFIG, Format::Toml)
            .expect_err("without files the schema cannot be read");
        let problems: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("cannot be read on this platform"),
            "{problems:?}"
        );
    }

    #[test]
    fn count_uses_plural() {
        assert_eq!(count(0, "route"), "0 routes");
        assert_eq!(count(1, "route"), "1 route");
        assert_eq!(count(3, "route"), "3 routes");
    }
}
