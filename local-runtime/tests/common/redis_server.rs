//! A `redis-server` child for tests of shared stores, started on a free loopback port
//! and stopped by its PID.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for Redis to accept commands after starting it.
const REDIS_STARTUP: Duration = Duration::from_secs(10);

/// A `redis-server` child on a loopback port, without persistence.
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server`, or returns `None` (after printing why) when it is not
    /// installed and `GATEHOUSE_REQUIRE_REDIS` is not `1`.
    pub fn start() -> Option<Self> {
        let Some(binary) = find_redis_server() else {
            let required = std::env::var("GATEHOUSE_REQUIRE_REDIS").is_ok_and(|value| value == "1");
            assert!(
                !required,
                "redis-server is not on PATH and GATEHOUSE_REQUIRE_REDIS=1; install it with apt-get install redis-server"
            );
            eprintln!(
                "skipped: redis-server is not on PATH (install it with apt-get install redis-server)"
            );
            return None;
        };
        let port = free_port();
        Some(Self::start_on(&binary, port))
    }

    fn start_on(binary: &std::path::Path, port: u16) -> Self {
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let server = Self { child, port };
        server.wait_until_ready();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + REDIS_STARTUP;
        let client = redis::Client::open(self.url()).expect("redis url");
        while Instant::now() < deadline {
            if let Ok(mut connection) =
                client.get_connection_with_timeout(Duration::from_millis(200))
            {
                if redis::cmd("PING").query::<String>(&mut connection).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer PING in time",
            self.port
        );
    }

    /// Stops the server by its PID and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, with empty data.
    pub fn restart(&mut self) {
        self.kill();
        let binary = find_redis_server().expect("redis-server was found before");
        *self = Self::start_on(&binary, self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn find_redis_server() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// Returns a loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local address").port()
}
