//! Helpers shared by the integration tests: start the `gatehouse` binary on a temporary
//! config, run small upstreams in process, and send requests over real sockets.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc as async_mpsc;

pub mod redis_server;

pub use gatehouse::NativeBody;

/// Upper bound for the gateway to print its listener line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A temporary directory removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "gatehouse-test-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&path).expect("create temporary directory");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).expect("write temporary file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A `gatehouse run` child process with its listener address and captured stderr.
pub struct Gatehouse {
    child: Child,
    pub address: SocketAddr,
    stderr: Arc<Mutex<String>>,
    /// Standard output lines after the first listener line.
    stdout: mpsc::Receiver<String>,
    config_path: PathBuf,
    _dir: TempDir,
}

impl Gatehouse {
    /// Starts `gatehouse run` on `config` (TOML) and waits for its listener line.
    pub fn start(config: &str) -> Self {
        Self::start_with_files(config, &[], &[])
    }

    /// Starts `gatehouse run` on `config` (TOML) with more arguments, after writing
    /// `files` (name and contents) next to the config file. An argument that names one
    /// of the files is replaced by its path.
    pub fn start_with_files(config: &str, files: &[(&str, &str)], args: &[&str]) -> Self {
        let dir = TempDir::new();
        let path = dir.write("gatehouse.toml", config);
        for (name, contents) in files {
            dir.write(name, contents);
        }
        let args: Vec<PathBuf> = args
            .iter()
            .map(|arg| {
                if files.iter().any(|(name, _)| name == arg) {
                    dir.path().join(arg)
                } else {
                    PathBuf::from(arg)
                }
            })
            .collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("run")
            .arg("--config")
            .arg(&path)
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the gatehouse binary");

        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || drain_into(stderr_pipe, &sink));

        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });

        let address = match receiver.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) => parse_listener_line(&line)
                .unwrap_or_else(|| panic!("unexpected first stdout line: {line:?}")),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "gatehouse printed no listener line ({error}); stderr:\n{}",
                    stderr.lock().map(|text| text.clone()).unwrap_or_default()
                );
            }
        };
        Self {
            child,
            address,
            stderr,
            stdout: receiver,
            config_path: path,
            _dir: dir,
        }
    }

    /// Returns the config file the process was started with, to rewrite for reloads.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Waits for the `gatehouse: admin on http://IP:PORT` line and returns the address.
    pub fn admin_address(&self) -> SocketAddr {
        loop {
            let line = self
                .stdout
                .recv_timeout(STARTUP_TIMEOUT)
                .unwrap_or_else(|error| {
                    panic!("no admin line ({error}); stderr:\n{}", self.stderr())
                });
            if let Some(url) = line.strip_prefix("gatehouse: admin on http://") {
                return url.parse().expect("admin line has IP:PORT");
            }
        }
    }

    /// Sends `signal` (a name such as `HUP`) to this child, by its PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Waits up to `timeout` for stderr to contain `text`.
    pub fn wait_for_stderr(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.address)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .map(|text| text.clone())
            .unwrap_or_default()
    }

    /// Sends SIGTERM to this child, by its PID.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll child status") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        // Kills only this child, by its PID, if it is still running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn drain_into(mut pipe: impl Read, sink: &Mutex<String>) {
    let mut buffer = [0u8; 4096];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if let Ok(mut text) = sink.lock() {
                    text.push_str(&String::from_utf8_lossy(&buffer[..read]));
                }
            }
        }
    }
}

/// Parses `gatehouse: listener NAME on http://IP:PORT` (or `https://`).
pub fn parse_listener_line(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("gatehouse: listener ")?;
    let (_name, url) = rest.split_once(" on ")?;
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?
        .parse()
        .ok()
}

/// Runs the binary with `args` to completion and returns its status, stdout and stderr.
pub fn run_command(args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the gatehouse binary");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Builds a config with one listener on an ephemeral port and one route to `upstream`.
pub fn config_for(upstream: &str, extra_upstream_settings: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "test"
address = "127.0.0.1:0"

[upstreams.backend]
endpoints = [{{ address = "{upstream}" }}]
{extra_upstream_settings}

[[routes]]
name = "all"
match.path_prefix = "/"
upstream = "backend"
"#
    )
}

/// Returns a loopback address with nothing listening on it.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local address")
    // The listener is dropped here, so connecting is refused.
}

/// Starts a demo upstream on an ephemeral loopback port.
pub async fn demo_upstream() -> gatehouse::demo::DemoUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    gatehouse::demo::DemoUpstream::start(listener).expect("start demo upstream")
}

/// Starts an upstream that reports each request on the returned channel, waits
/// `delay`, then responds 200 with body `slow`.
pub async fn slow_upstream(delay: Duration) -> (SocketAddr, async_mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let (sender, receiver) = async_mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sender = sender.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| {
                    let sender = sender.clone();
                    async move {
                        let _ = sender.send(());
                        tokio::time::sleep(delay).await;
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"slow"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, receiver)
}

/// Releases the requests that a [`held_upstream`] delays.
pub struct UpstreamGate {
    open: tokio::sync::watch::Sender<bool>,
}

impl UpstreamGate {
    /// Lets every delayed request, and every later one, get its response at once.
    pub fn release(&self) {
        self.open.send_replace(true);
    }
}

/// Starts an upstream that reports each request on the returned channel and delays
/// its 200 response (body `held`) until the gate is released. Unlike
/// [`slow_upstream`], how long a request stays in flight does not depend on how fast
/// the machine is.
pub async fn held_upstream() -> (SocketAddr, async_mpsc::UnboundedReceiver<()>, UpstreamGate) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let (sender, receiver) = async_mpsc::unbounded_channel();
    let (open, opened) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sender = sender.clone();
            let opened = opened.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| {
                    let sender = sender.clone();
                    let mut opened = opened.clone();
                    async move {
                        let _ = sender.send(());
                        // An error means the gate was dropped, which ends the test.
                        let _ = opened.wait_for(|open| *open).await;
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"held"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, receiver, UpstreamGate { open })
}

/// Starts an upstream that accepts each connection and closes it at once.
pub async fn closing_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    address
}

/// Starts an HTTP/1.1 upstream that responds to one request per connection with
/// keep-alive framing and closes the connection 50 ms later, like an upstream with a
/// short idle timeout. Returns its address and a count of accepted connections.
pub async fn short_keep_alive_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    (address, accepted)
}

/// Creates an HTTP/1.1 client.
pub fn http1_client() -> Client<HttpConnector, NativeBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Creates an HTTP/2 client with prior knowledge (h2c).
pub fn http2_client() -> Client<HttpConnector, NativeBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// Sends `request` and returns the response head and its whole body.
pub async fn send(
    client: &Client<HttpConnector, NativeBody>,
    request: Request<NativeBody>,
) -> (http::response::Parts, Bytes) {
    let response = client.request(request).await.expect("request to gatehouse");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("read response body").to_bytes();
    (parts, body)
}

/// Parses a response body as JSON.
pub fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|error| panic!("body is not JSON ({error}): {body:?}"))
}

/// Runs `test` with a time limit, so a hang fails the test instead of blocking CI.
pub async fn bounded<F: std::future::Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("test finished within 30 s")
}

/// Returns the path of a file in the repository's `examples/` folder.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join(name)
}
