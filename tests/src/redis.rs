//! A real `redis-server` for scenarios whose config names `{{redis.url}}`: started on a
//! free loopback port without persistence, and stopped by its PID when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The placeholder of a scenario config that becomes the server's `redis://` URL.
pub const URL_PLACEHOLDER: &str = "redis.url";

/// Environment variable that turns a missing `redis-server` from a skip into a failure.
pub const REQUIRE_ENV: &str = "GATEHOUSE_REQUIRE_REDIS";

/// The scenario secret that, when present, is also the server's password
/// (`requirepass`), so a store can name it with `password = { secret = "..." }`.
pub const PASSWORD_SECRET: &str = "REDIS_PASSWORD";

/// Time for the server to reply to `PING` after it starts.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on 127.0.0.1.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    address: SocketAddr,
    password: Option<String>,
}

/// Why no server was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// `redis-server` is not on `PATH` and not required: the scenario is skipped.
    NotInstalled(String),
    /// The server is required but missing, or failed to start: the scenario fails.
    Failed(String),
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port, requiring `password` when given,
    /// and waits until it replies to `PING`.
    pub fn start(password: Option<&str>) -> Result<Self, Unavailable> {
        let Some(binary) = find_redis_server() else {
            let message = "redis-server is not on PATH; install it with apt-get install \
                           redis-server"
                .to_owned();
            let required = std::env::var(REQUIRE_ENV).is_ok_and(|value| value == "1");
            return Err(if required {
                Unavailable::Failed(format!("{message} ({REQUIRE_ENV}=1)"))
            } else {
                Unavailable::NotInstalled(message)
            });
        };
        let port = free_port().map_err(Unavailable::Failed)?;
        let mut command = Command::new(&binary);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ]);
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                Unavailable::Failed(format!("failed to start {}: {error}", binary.display()))
            })?;
        let server = Self {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            password: password.map(str::to_owned),
        };
        server.wait_until_ready().map_err(Unavailable::Failed)?;
        Ok(server)
    }

    /// Returns the server's URL, database 0.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.address)
    }

    fn wait_until_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if ping(self.address, self.password.as_deref()).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis-server on {} did not answer PING within {STARTUP_TIMEOUT:?}",
            self.address
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `AUTH` when there is a password, then `PING`, and expects `+OK` and `+PONG`.
fn ping(address: SocketAddr, password: Option<&str>) -> Result<(), String> {
    let timeout = Duration::from_millis(200);
    let mut stream =
        TcpStream::connect_timeout(&address, timeout).map_err(|error| error.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|error| error.to_string())?;

    let mut request = Vec::new();
    let mut expected = Vec::new();
    if let Some(password) = password {
        // An array of bulk strings, so any byte of the password is sent as it is.
        request
            .extend_from_slice(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n", password.len()).as_bytes());
        request.extend_from_slice(password.as_bytes());
        request.extend_from_slice(b"\r\n");
        expected.extend_from_slice(b"+OK\r\n");
    }
    request.extend_from_slice(b"PING\r\n");
    expected.extend_from_slice(b"+PONG\r\n");

    stream
        .write_all(&request)
        .map_err(|error| error.to_string())?;
    let mut reply = vec![0_u8; expected.len()];
    stream
        .read_exact(&mut reply)
        .map_err(|error| error.to_string())?;

    if reply == expected {
        Ok(())
    } else {
        Err(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&reply)
        ))
    }
}

fn find_redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// Returns a loopback port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|error| format!("failed to find a free port: {error}"))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|error| format!("failed to find a free port: {error}"))
}
