//! Targets that run the gateway as a separate process and reach it over HTTP.
//!
//! A [`Launcher`] starts one kind of gateway process for a config. The
//! [`ProcessTarget`] around it starts the socket upstreams, renders the config and
//! sends the requests. The native binary and the Worker under `wrangler dev` are
//! launchers; the Spin component is meant to be another.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;

use crate::client;
use crate::scenario::{Scenario, WebSocketAction, render_config};
use crate::target::{Exchange, Instance, Target, WebSocketExchange};
use crate::upstream::{SocketUpstreams, unused_port};

/// Maximum time from starting a gateway process to its ready line.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of process output kept for failure reports.
const OUTPUT_LINES_KEPT: usize = 40;

/// Starts one kind of gateway process.
pub trait Launcher {
    /// Name of the target, the key of a scenario's `skip` table.
    fn name(&self) -> &'static str;

    /// Starts a gateway serving `config` (the rendered scenario config) and returns it
    /// once it accepts requests.
    fn launch(&self, config: &str) -> Result<GatewayProcess, String>;

    /// Starts a gateway like [`Launcher::launch`] whose platform also returns
    /// `secrets`. Launchers that cannot pass secrets keep this default, which fails
    /// for a scenario that has any.
    fn launch_with_secrets(
        &self,
        config: &str,
        secrets: &BTreeMap<String, String>,
    ) -> Result<GatewayProcess, String> {
        if secrets.is_empty() {
            self.launch(config)
        } else {
            Err(format!(
                "the {} target cannot pass platform secrets yet; skip this scenario there",
                self.name()
            ))
        }
    }

    /// Starts a gateway like [`Launcher::launch_with_secrets`] whose key-value store
    /// also contains `key_value` (key to stored text). Launchers that cannot load entries
    /// keep this default, which fails for a scenario that has any.
    fn launch_with_key_value(
        &self,
        config: &str,
        secrets: &BTreeMap<String, String>,
        key_value: &BTreeMap<String, String>,
    ) -> Result<GatewayProcess, String> {
        if key_value.is_empty() {
            self.launch_with_secrets(config, secrets)
        } else {
            Err(format!(
                "the {} target cannot load key-value entries; skip this scenario there",
                self.name()
            ))
        }
    }
}

/// Runs scenarios against gateway processes started by a [`Launcher`].
#[derive(Debug)]
pub struct ProcessTarget<L> {
    launcher: L,
    runtime: tokio::runtime::Runtime,
}

impl<L: Launcher> ProcessTarget<L> {
    /// Creates the target with its own Tokio runtime, which serves the test upstreams
    /// and runs the client.
    pub fn new(launcher: L) -> Result<Self, String> {
        // Two workers, because the upstreams must keep serving while the client waits.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|error| format!("failed to start a Tokio runtime: {error}"))?;
        Ok(Self { launcher, runtime })
    }
}

impl<L: Launcher> Target for ProcessTarget<L> {
    fn name(&self) -> &'static str {
        self.launcher.name()
    }

    fn start(&mut self, scenario: &Scenario) -> Result<Box<dyn Instance + '_>, String> {
        let upstreams = self
            .runtime
            .block_on(SocketUpstreams::start(&scenario.upstreams))?;
        let unused_port = unused_port()?;
        let config = render_config(&scenario.config, upstreams.addresses(), unused_port)?;
        let key_value = scenario.key_value_entries(upstreams.addresses(), unused_port)?;
        let gateway =
            self.launcher
                .launch_with_key_value(&config, &scenario.secrets, &key_value)?;
        Ok(Box::new(ProcessInstance {
            runtime: &self.runtime,
            gateway,
            upstreams: Some(upstreams),
        }))
    }
}

struct ProcessInstance<'r> {
    runtime: &'r tokio::runtime::Runtime,
    gateway: GatewayProcess,
    /// Always `Some` until dropped; an option so `Drop` can stop the servers inside
    /// the runtime.
    upstreams: Option<SocketUpstreams>,
}

impl Instance for ProcessInstance<'_> {
    fn send(
        &mut self,
        request: &Request<Bytes>,
        count: usize,
        concurrent: bool,
    ) -> Vec<Result<Exchange, String>> {
        let address = self.gateway.address;
        self.runtime.block_on(async {
            if concurrent {
                let tasks: Vec<_> = (0..count)
                    .map(|_| tokio::spawn(client::send(address, request.clone())))
                    .collect();
                let mut outcomes = Vec::with_capacity(count);
                for task in tasks {
                    outcomes.push(
                        task.await
                            .unwrap_or_else(|error| Err(format!("client task failed: {error}"))),
                    );
                }
                outcomes
            } else {
                let mut outcomes = Vec::with_capacity(count);
                for _ in 0..count {
                    outcomes.push(client::send(address, request.clone()).await);
                }
                outcomes
            }
        })
    }

    fn websocket(
        &mut self,
        request: &Request<Bytes>,
        actions: &[WebSocketAction],
    ) -> Result<WebSocketExchange, String> {
        let address = self.gateway.address;
        self.runtime
            .block_on(client::websocket(address, request.clone(), actions))
    }

    fn upstream_requests(&self) -> BTreeMap<String, usize> {
        self.upstreams
            .as_ref()
            .map(SocketUpstreams::requests)
            .unwrap_or_default()
    }

    /// Sleeps, because the gateway in the other process reads the real clock.
    fn wait(&mut self, duration: std::time::Duration) -> Result<(), String> {
        std::thread::sleep(duration);
        Ok(())
    }

    fn upstream_connections(&self) -> BTreeMap<String, usize> {
        self.upstreams
            .as_ref()
            .map(SocketUpstreams::connections)
            .unwrap_or_default()
    }

    fn diagnostics(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "last lines of {} output:",
            self.gateway.description
        )];
        lines.extend(
            self.gateway
                .output_tail()
                .into_iter()
                .map(|line| format!("  | {line}")),
        );
        lines
    }
}

impl Drop for ProcessInstance<'_> {
    fn drop(&mut self) {
        // The servers' tasks belong to the runtime, so abort them from inside it.
        let upstreams = self.upstreams.take();
        self.runtime.block_on(async move { drop(upstreams) });
    }
}

/// A running gateway process. Dropping it kills the process group it leads and
/// removes its temporary files.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    /// Address the gateway listens on.
    pub address: SocketAddr,
    description: String,
    output: Arc<Mutex<Vec<String>>>,
    temporary_files: Vec<PathBuf>,
}

impl GatewayProcess {
    /// Spawns `command` and waits until a line of its standard output starts with
    /// `ready_prefix` and continues with `http://IP:PORT`. Standard output and error are
    /// kept (the last lines) for failure reports. `temporary_files` (files or
    /// folders) are removed when the process is dropped, including when it fails to
    /// start.
    pub fn spawn(
        command: Command,
        ready_prefix: &str,
        temporary_files: Vec<PathBuf>,
    ) -> Result<Self, String> {
        Self::spawn_with_timeout(command, ready_prefix, temporary_files, START_TIMEOUT)
    }

    /// Spawns `command` like [`GatewayProcess::spawn`], waiting up to `start_timeout`
    /// for the ready line.
    ///
    /// The process leads a new process group, so that dropping it also stops the
    /// processes it started itself, such as the `workerd` servers of `wrangler dev`.
    pub fn spawn_with_timeout(
        mut command: Command,
        ready_prefix: &str,
        temporary_files: Vec<PathBuf>,
        start_timeout: Duration,
    ) -> Result<Self, String> {
        let description = format!("{:?}", command.get_program());
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let spawned = command.spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                remove_files(&temporary_files);
                return Err(format!("failed to start {description}: {error}"));
            }
        };

        let output = Arc::new(Mutex::new(Vec::new()));
        let (ready_sender, ready_receiver) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            forward_lines(stdout, Arc::clone(&output), Some(ready_sender));
        }
        if let Some(stderr) = child.stderr.take() {
            forward_lines(stderr, Arc::clone(&output), None);
        }

        let mut process = Self {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            description,
            output,
            temporary_files,
        };
        match wait_for_ready(&ready_receiver, ready_prefix, start_timeout) {
            Ok(address) => {
                process.address = address;
                Ok(process)
            }
            Err(error) => {
                let tail = process.output_tail().join("\n  | ");
                Err(format!(
                    "{} did not become ready: {error}; its output:\n  | {tail}",
                    process.description
                ))
            }
        }
    }

    /// Returns the last lines the process printed.
    pub fn output_tail(&self) -> Vec<String> {
        self.output
            .lock()
            .map(|lines| lines.clone())
            .unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        // The group id is the child's process id (see `process_group(0)` above), so
        // this signals exactly the processes this one started. The `kill` program
        // sends it because this crate forbids the unsafe code a direct call needs.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // `Child::kill` signals exactly this process id, in case `kill` is missing;
        // waiting reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_files(&self.temporary_files);
    }
}

/// Reads lines from a pipe on a thread until it closes, keeping the last ones and
/// sending each to `ready` while someone listens. Reading to the end also keeps the
/// child from blocking on a full pipe.
fn forward_lines(
    pipe: impl Read + Send + 'static,
    output: Arc<Mutex<Vec<String>>>,
    ready: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(ready) = &ready {
                let _ = ready.send(line.clone());
            }
            if let Ok(mut lines) = output.lock() {
                if lines.len() == OUTPUT_LINES_KEPT {
                    lines.remove(0);
                }
                lines.push(line);
            }
        }
    });
}

fn wait_for_ready(
    lines: &mpsc::Receiver<String>,
    ready_prefix: &str,
    start_timeout: Duration,
) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + start_timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(remaining) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "no line starting with {ready_prefix:?} within {} s",
                    start_timeout.as_secs()
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("it closed its standard output (exited?)".to_owned());
            }
        };
        if let Some(rest) = line.strip_prefix(ready_prefix) {
            let address = rest.trim().strip_prefix("http://").unwrap_or(rest.trim());
            return address
                .trim_end_matches('/')
                .parse()
                .map_err(|_| format!("the ready line {line:?} does not end with http://IP:PORT"));
        }
    }
}

/// Returns a path for a temporary file that no other run of this process uses.
pub fn temporary_path(extension: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let sequence = COUNTER.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!(
        "gatehouse-conformance-{}-{sequence}.{extension}",
        std::process::id()
    ))
}

fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        if path.is_dir() {
            let _ = std::fs::remove_dir_all(path);
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
}
