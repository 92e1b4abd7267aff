//! The `gatehouse` command line: `run`, `check` (also against a Spin manifest),
//! `schema`, `demo` and `dev`, the local edge simulator.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gatehouse_core::config::Config;

use crate::cache_store::RedisResponseCaches;
use crate::config_file::{ConfigFileError, load_gateway, summary};
use crate::counters::NativeCounters;
use crate::demo::DemoUpstream;
use crate::key_value_seed;
use crate::logging::{self, LogFormat};
use crate::operations;
use crate::platform::NativePlatform;
use crate::server::Server;
use crate::spin_manifest;

/// Exit status of `check` when the config has problems, and of any command that fails
/// at run time.
pub(crate) const EXIT_FAILURE: u8 = 1;

/// Exit status of `run` and `demo` when the config file is missing, unreadable or
/// invalid.
pub(crate) const EXIT_INVALID_CONFIG: u8 = 2;

/// Time given to blocking tasks, such as DNS lookups, to end after the server stops.
pub(crate) const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// gatehouse: an API gateway and load balancer.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version)]
pub struct Cli {
    /// Format of log lines on stderr. Access-log lines are JSON in both formats; set
    /// RUST_LOG to choose levels (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Threads that serve requests with `run`, `demo` and `dev`. With 1, every task runs on
    /// the main thread and never crosses threads, which serves the most requests per
    /// core. Default: the number of CPUs this process may run on (its affinity mask).
    #[arg(long, global = true, value_name = "N")]
    pub workers: Option<NonZeroUsize>,

    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGTERM or Ctrl-C. SIGHUP reloads the config file.
    Run {
        /// Config file; a name ending in `.json` is read as JSON, any other as TOML.
        #[arg(long, short, default_value = "gatehouse.toml")]
        config: PathBuf,
        /// JSON file of entries loaded into the in-memory key-value store at start: an
        /// object from key to value, such as `{"api-key:SHA256": {"name": "acme"}}`.
        #[arg(long, value_name = "FILE")]
        key_value_seed: Option<PathBuf>,
    },
    /// Check a config file, print every problem in it and exit 1 if there are any.
    Check {
        /// Config file; a name ending in `.json` is read as JSON, any other as TOML.
        file: PathBuf,
        /// Platform the config is deployed to. `spin` also checks that every upstream
        /// endpoint is in the Spin manifest's `allowed_outbound_hosts`.
        #[arg(long, value_enum, default_value_t = CheckTarget::Native)]
        target: CheckTarget,
        /// Spin manifest checked with `--target spin`.
        #[arg(long, default_value = "spin.toml")]
        manifest: PathBuf,
    },
    /// Print the JSON Schema of the config file, for editors.
    Schema,
    /// Run the gateway with a demo upstream on every loopback endpoint of the config.
    ///
    /// Each demo upstream responds with JSON describing the request it received.
    Demo {
        /// Config file; a name ending in `.json` is read as JSON, any other as TOML.
        #[arg(long, short, default_value = "examples/gatehouse.toml")]
        config: PathBuf,
    },
    /// Run the config as several simulated edge locations in one process, until
    /// SIGTERM or Ctrl-C, then print a report per location.
    ///
    /// Each location serves every listener on its port plus the location's index,
    /// with its own gateway state and response cache. The locations share a
    /// key-value store with a propagation delay and a counter coordinator. See
    /// `[simulator]` in docs/configuration.md.
    Dev {
        /// Config file; a name ending in `.json` is read as JSON, any other as TOML.
        #[arg(long, short, default_value = "gatehouse.toml")]
        config: PathBuf,
        /// Comma-separated location names, such as `fra,iad,sin`; replaces
        /// `[simulator] locations`.
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        locations: Option<Vec<String>>,
        /// Also start a demo upstream on every loopback endpoint of the config, as
        /// `gatehouse demo` does.
        #[arg(long)]
        demo: bool,
        /// JSON file of entries loaded into the shared key-value store at start,
        /// visible in every location at once; the format of `run --key-value-seed`.
        #[arg(long, value_name = "FILE")]
        key_value_seed: Option<PathBuf>,
    },
}

/// A platform that `check` can check a config for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckTarget {
    /// The native `gatehouse` binary: the config alone.
    Native,
    /// A Spin component: the config and the Spin manifest.
    Spin,
}

/// Parses the command line, runs the command and returns the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            key_value_seed,
        } => serve(
            &config,
            key_value_seed.as_deref(),
            cli.log_format,
            cli.workers,
            false,
        ),
        Command::Check {
            file,
            target,
            manifest,
        } => match target {
            CheckTarget::Native => check(&file),
            CheckTarget::Spin => check_spin(&file, &manifest),
        },
        Command::Schema => schema(),
        Command::Demo { config } => serve(&config, None, cli.log_format, cli.workers, true),
        Command::Dev {
            config,
            locations,
            demo,
            key_value_seed,
        } => crate::simulator::cli::dev(
            &config,
            &crate::simulator::cli::DevOptions {
                locations,
                demo,
                key_value_seed,
            },
            cli.log_format,
            cli.workers,
        ),
    }
}

fn check(path: &Path) -> ExitCode {
    match load_gateway(path) {
        Ok(gateway) => {
            print_stdout(&format!("config OK: {}", summary(&gateway)));
            ExitCode::SUCCESS
        }
        Err(error) => {
            for problem in error.problems() {
                print_stdout(&problem);
            }
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Checks the config, then that the Spin manifest allows every upstream endpoint and
/// Redis store.
fn check_spin(path: &Path, manifest: &Path) -> ExitCode {
    let gateway = match load_gateway(path) {
        Ok(gateway) => gateway,
        Err(error) => {
            for problem in error.problems() {
                print_stdout(&problem);
            }
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let unsupported =
        gatehouse_core::config::check_store_support(gateway.config(), "Spin", &["redis"]);
    if !unsupported.is_empty() {
        for problem in &unsupported {
            print_stdout(&problem.to_string());
        }
        return ExitCode::from(EXIT_FAILURE);
    }
    let report = match spin_manifest::check_file(gateway.config(), manifest) {
        Ok(report) => report,
        Err(error) => {
            print_stdout(&error);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    for note in &report.unchecked {
        print_stdout(&format!("note: {note}"));
    }
    let warnings = spin_manifest::stateful_balancer_warnings(gateway.config())
        .into_iter()
        .chain(spin_manifest::failure_handling_warnings(gateway.config()))
        .chain(spin_manifest::discovery_warnings(gateway.config()))
        .chain(spin_manifest::protocol_warnings(gateway.config()));
    for warning in warnings {
        print_stdout(&format!("warning: {warning}"));
    }
    for missing in &report.missing {
        print_stdout(&missing.to_string());
    }
    if !report.missing.is_empty() {
        return ExitCode::from(EXIT_FAILURE);
    }
    print_stdout(&format!(
        "config OK for Spin: {}; {} allows every upstream endpoint and Redis store",
        summary(&gateway),
        manifest.display()
    ));
    ExitCode::SUCCESS
}

fn schema() -> ExitCode {
    let schema = gatehouse_core::config::json_schema();
    match serde_json::to_string_pretty(&schema) {
        Ok(text) => {
            print_stdout(&text);
            ExitCode::SUCCESS
        }
        Err(error) => {
            print_stderr(&format!("failed to serialize the JSON Schema: {error}"));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn serve(
    path: &Path,
    key_value_seed: Option<&Path>,
    log_format: LogFormat,
    workers: Option<NonZeroUsize>,
    with_demo: bool,
) -> ExitCode {
    logging::init(log_format);
    let gateway = match load_gateway(path) {
        Ok(gateway) => gateway,
        Err(error @ ConfigFileError::Read { .. }) => {
            print_stderr(&error.to_string());
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
        Err(error @ ConfigFileError::Invalid(_)) => {
            let problems = error.problems();
            print_stderr(&format!(
                "invalid config {}: {} problem{}",
                path.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            ));
            for problem in problems {
                print_stderr(&format!("  {problem}"));
            }
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    crate::memory::release_freed_memory();

    let platform = NativePlatform::with_key_value(&gateway.config().key_value);
    if let Some(seed) = key_value_seed {
        match key_value_seed::load(seed, platform.memory_key_value()) {
            Ok(count) => {
                tracing::info!(entries = count, file = %seed.display(), "key-value store seeded");
            }
            Err(message) => {
                print_stderr(&format!("invalid --key-value-seed: {message}"));
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
        }
    }

    let runtime = match build_runtime(workers) {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "failed to start the Tokio runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let status = runtime.block_on(async move {
        // The demo upstreams must outlive the server, so they are held here.
        let _demo_upstreams = if with_demo {
            start_demo_upstreams(gateway.config()).await
        } else {
            Vec::new()
        };
        let counters = match NativeCounters::from_config(&gateway.config().stores) {
            Ok(counters) => counters,
            Err(error) => {
                tracing::error!(%error, "failed to set up the rate-limit stores");
                print_stderr(&format!("gatehouse: {error}"));
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
        };
        let caches = match RedisResponseCaches::from_config(&gateway.config().stores) {
            Ok(caches) => caches,
            Err(error) => {
                tracing::error!(%error, "failed to set up the response cache stores");
                print_stderr(&format!("gatehouse: {error}"));
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
        };
        let platform = platform
            .with_counters(counters)
            .with_response_caches(caches);
        let server = match Server::bind(gateway, platform).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(%error, "failed to start");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        // Installed before the listeners are announced, so that a supervisor may stop
        // the process as soon as it sees them.
        let shutdown = shutdown_signal();
        for listener in server.listeners() {
            tracing::info!(listener = listener.name(), address = %listener.address(), "listening");
            let scheme = if listener.is_tls() { "https" } else { "http" };
            print_stdout(&format!(
                "gatehouse: listener {} on {scheme}://{}",
                listener.name(),
                listener.address()
            ));
        }
        let served = operations::serve(server, path, shutdown, |address| {
            print_stdout(&format!("gatehouse: admin on http://{address}"));
        })
        .await;
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "failed to start");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    status
}

/// Builds the runtime that serves requests: one thread runs everything when `workers`
/// is 1, or when it is unset and this process may run on one CPU only; otherwise a
/// work-stealing runtime with one thread per worker.
pub(crate) fn build_runtime(workers: Option<NonZeroUsize>) -> io::Result<tokio::runtime::Runtime> {
    let workers = workers
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

/// Starts a demo upstream on each distinct loopback endpoint address. An address that
/// cannot be bound is logged and skipped, since a real server may already be there.
pub(crate) async fn start_demo_upstreams(config: &Config) -> Vec<DemoUpstream> {
    let addresses: BTreeSet<SocketAddr> = config
        .upstreams
        .values()
        .flat_map(|upstream| &upstream.endpoints)
        .filter_map(|endpoint| loopback_address(&endpoint.address))
        .collect();
    let mut upstreams = Vec::with_capacity(addresses.len());
    for address in addresses {
        match DemoUpstream::bind(address).await {
            Ok(upstream) => {
                tracing::info!(address = %upstream.address(), "demo upstream started");
                upstreams.push(upstream);
            }
            Err(error) => {
                tracing::warn!(%address, %error, "failed to start a demo upstream; skipping it");
            }
        }
    }
    upstreams
}

/// Returns the socket address of an endpoint on loopback: an IP literal in
/// 127.0.0.0/8 or `::1`, or `localhost:PORT` (bound as 127.0.0.1).
fn loopback_address(endpoint: &str) -> Option<SocketAddr> {
    if let Ok(address) = endpoint.parse::<SocketAddr>() {
        return address.ip().is_loopback().then_some(address);
    }
    let (host, port) = endpoint.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    host.eq_ignore_ascii_case("localhost")
        .then_some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Listens for Ctrl-C (SIGINT) and SIGTERM from the moment it is called, and completes
/// when either arrives. Call it before the gateway reports ready: a signal that arrives
/// before its handler is installed ends the process at once, without draining.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::SignalKind;
        let interrupt = listen_for(SignalKind::interrupt(), "Ctrl-C");
        let terminate = listen_for(SignalKind::terminate(), "SIGTERM");
        async move {
            tokio::select! {
                () = interrupt => tracing::info!("received Ctrl-C"),
                () = terminate => tracing::info!("received SIGTERM"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("received Ctrl-C"),
            Err(error) => {
                tracing::error!(%error, "failed to listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Installs the handler of one signal now and returns a future that completes when the
/// signal arrives, or never when the handler could not be installed.
#[cfg(unix)]
fn listen_for(
    kind: tokio::signal::unix::SignalKind,
    name: &'static str,
) -> impl Future<Output = ()> + Send + 'static {
    let installed = tokio::signal::unix::signal(kind);
    async move {
        match installed {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, signal = name, "failed to listen for a stop signal");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Writes a line to stdout and flushes it, so a parent process reading the listener
/// lines sees each one at once. A closed stdout is ignored, since there is no one left
/// to tell.
pub(crate) fn print_stdout(line: &str) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Writes a line to stderr, ignoring a closed stderr.
pub(crate) fn print_stderr(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_found() {
        assert_eq!(
            loopback_address("127.0.0.1:9001"),
            Some(SocketAddr::from(([127, 0, 0, 1], 9001)))
        );
        assert_eq!(
            loopback_address("localhost:9002"),
            Some(SocketAddr::from(([127, 0, 0, 1], 9002)))
        );
        assert!(loopback_address("[::1]:9003").is_some());
        assert_eq!(loopback_address("10.0.0.5:80"), None);
        assert_eq!(loopback_address("users.internal:80"), None);
        assert_eq!(loopback_address("localhost:http"), None);
    }

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
