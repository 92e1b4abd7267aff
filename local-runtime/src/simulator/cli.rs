//! The `gatehouse dev` command.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::{
    EXIT_FAILURE, EXIT_INVALID_CONFIG, RUNTIME_SHUTDOWN_TIMEOUT, print_stderr, print_stdout,
    shutdown_signal,
};
use crate::config_file::load_gateway;
use crate::logging::{self, LogFormat};

/// Runs the simulation of the config at `path` until SIGTERM or Ctrl-C, then prints
/// the report of every location.
pub fn dev(path: &Path, locations: Option<Vec<String>>, log_format: LogFormat) -> ExitCode {
    logging::init(log_format);
    let config = match load_gateway(path) {
        Ok(gateway) => gateway.config().clone(),
        Err(error) => {
            for problem in error.problems() {
                print_stderr(&format!("invalid config {}: {problem}", path.display()));
            }
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let settings = match super::settings(&config, locations) {
        Ok(settings) => settings,
        Err(problems) => {
            for problem in problems {
                print_stderr(&format!("invalid config {}: {problem}", path.display()));
            }
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "failed to start the Tokio runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let status = runtime.block_on(async move {
        let running = match super::start(config, settings).await {
            Ok(running) => running,
            Err(error) => {
                tracing::error!(%error, "failed to start the simulator");
                print_stderr(&format!("gatehouse: {error}"));
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let report = running.report();
        print_stdout(&format!(
            "gatehouse: simulating {} locations; key-value writes reach other locations \
             after {} ms; counters are owned by {} (+{} ms from elsewhere)",
            report.locations.len(),
            report.kv_propagation_ms,
            report.coordinator_location,
            report.coordinator_latency_ms
        ));
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
        shutdown_signal().await;
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
