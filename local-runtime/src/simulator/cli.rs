//! The `gatehouse dev` command.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::SharedKeyValue;
use crate::cli::{
    EXIT_FAILURE, EXIT_INVALID_CONFIG, RUNTIME_SHUTDOWN_TIMEOUT, print_stderr, print_stdout,
    shutdown_signal, start_demo_upstreams,
};
use crate::key_value_seed;
use crate::logging::{self, LogFormat};
use gatehouse_core::Gateway;
use gatehouse_core::config::{Config, Format};

/// The options of `gatehouse dev` besides the config file.
#[derive(Debug, Default)]
pub struct DevOptions {
    /// Location names that replace `[simulator] locations`.
    pub locations: Option<Vec<String>>,
    /// Whether demo upstreams serve the config's loopback endpoints.
    pub demo: bool,
    /// Entries loaded into the shared key-value store at start.
    pub key_value_seed: Option<PathBuf>,
}

/// Runs the simulation of the config at `path` until SIGTERM or Ctrl-C, then prints
/// the report of every location.
pub fn dev(
    path: &Path,
    options: &DevOptions,
    log_format: LogFormat,
    workers: Option<NonZeroUsize>,
) -> ExitCode {
    logging::init(log_format);
    let config = match load_config(path) {
        Ok(config) => config,
        Err(problems) => {
            for problem in problems {
                print_stderr(&format!("invalid config {}: {problem}", path.display()));
            }
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let settings = match super::settings(&config, options.locations.clone()) {
        Ok(settings) => settings,
        Err(problems) => {
            for problem in problems {
                print_stderr(&format!("invalid config {}: {problem}", path.display()));
            }
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let runtime = match crate::cli::build_runtime(workers) {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "failed to start the Tokio runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let status = runtime.block_on(async move {
        // The demo upstreams must outlive the simulation, so they are held here.
        let _demo_upstreams = if options.demo {
            start_demo_upstreams(&config).await
        } else {
            Vec::new()
        };
        let running = match super::start(config, settings).await {
            Ok(running) => running,
            Err(error) => {
                tracing::error!(%error, "failed to start the simulator");
                print_stderr(&format!("gatehouse: {error}"));
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        if let Some(seed) = &options.key_value_seed {
            match seed_key_value(seed, running.key_value()) {
                Ok(count) => {
                    tracing::info!(entries = count, file = %seed.display(), "key-value store seeded");
                }
                Err(message) => {
                    print_stderr(&format!("invalid --key-value-seed: {message}"));
                    running.shutdown().await;
                    return ExitCode::from(EXIT_INVALID_CONFIG);
                }
            }
        }
        let report = running.report();
        print_stdout(&format!(
            "gatehouse: simulating {} locations; key-value writes reach other locations \
             after {} ms; counters are owned by {} (+{} ms from elsewhere)",
            report.locations.len(),
            report.kv_propagation_ms,
            report.coordinator_location,
            report.coordinator_latency_ms
        ));
        // Installed before the listeners are announced, so that a supervisor may stop
        // the process as soon as it sees them.
        let shutdown = shutdown_signal();
        for listener in running.listeners() {
            tracing::info!(
                location = %listener.location,
                listener = %listener.listener,
                address = %listener.address,
                "listening"
            );
            print_stdout(&format!(
                "gatehouse: location {} listener {} on http://{}",
                listener.location, listener.listener, listener.address
            ));
        }
        if let Some(address) = running.admin_address() {
            print_stdout(&format!("gatehouse: admin on http://{address}"));
        }
        shutdown.await;
        let report = running.shutdown().await;
        print_stdout(&format!(
            "gatehouse: simulator report\n{}",
            report.summary()
        ));
        ExitCode::SUCCESS
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    status
}

/// Reads and checks the config at `path` as `gatehouse run` does, except that
/// `durable_object` stores are accepted, because the coordinator simulates them, and
/// TLS files are not read, because the simulator serves cleartext only.
fn load_config(path: &Path) -> Result<Config, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| vec![format!("failed to read {}: {error}", path.display())])?;
    let format = Format::from_file_name(&path.to_string_lossy());
    let folder = path.parent().unwrap_or(Path::new("."));
    let read_file = |file: &str| {
        let file_path = folder.join(file);
        std::fs::read_to_string(&file_path)
            .map_err(|error| format!("failed to read {}: {error}", file_path.display()))
    };
    match Gateway::from_text_with_files(&text, format, &read_file) {
        Ok(gateway) => Ok(gateway.config().clone()),
        Err(errors) => Err(errors.0.iter().map(ToString::to_string).collect()),
    }
}

/// Loads the seed file at `path` into `store`, visible in every location at once.
/// Returns the number of entries.
fn seed_key_value(path: &Path, store: &SharedKeyValue) -> Result<usize, String> {
    let entries = key_value_seed::read(path)?;
    for (key, value) in &entries {
        store.seed(key, value.clone()).map_err(|error| {
            format!(
                "{}: failed to store key {key:?}: {}",
                path.display(),
                error.detail()
            )
        })?;
    }
    Ok(entries.len())
}
