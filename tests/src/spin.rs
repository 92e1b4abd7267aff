//! The Spin target: the gatehouse Spin component served by `gatehouse-spin-host`, a
//! small wasmtime-based host (`tests/spin-host`) that provides `wasi:http` 0.2 and
//! Spin's variables, key-value and outbound Redis interfaces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{GatewayProcess, Launcher, temporary_path};

/// Start of the line the host prints once its listener is bound, followed by
/// `http://IP:PORT`.
pub const READY_PREFIX: &str = "gatehouse-spin-host: serving ";

/// Environment variable through which the host receives the Spin variable
/// `gatehouse_config`, as with Spin's environment variable provider.
pub const CONFIG_ENV: &str = "SPIN_VARIABLE_GATEHOUSE_CONFIG";

/// Time for the host to become ready. The first start after a build compiles the
/// component, which takes several seconds on a busy machine; later starts load the
/// compiled copy.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts the host with the prebuilt component, passing each scenario's config in the
/// `gatehouse_config` Spin variable.
#[derive(Debug, Clone)]
pub struct SpinLauncher {
    host: PathBuf,
    component: PathBuf,
}

impl SpinLauncher {
    /// Creates a launcher for the host binary at `host` serving `component`.
    pub fn new(host: &Path, component: &Path) -> Self {
        Self {
            host: host.to_owned(),
            component: component.to_owned(),
        }
    }
}

impl Launcher for SpinLauncher {
    fn name(&self) -> &'static str {
        "spin"
    }

    fn launch(&self, config: &str) -> Result<GatewayProcess, String> {
        self.launch_with_secrets(config, &BTreeMap::new())
    }

    /// Passes `secrets` as Spin variables, named in lowercase as the Spin adapter
    /// reads them.
    fn launch_with_secrets(
        &self,
        config: &str,
        secrets: &BTreeMap<String, String>,
    ) -> Result<GatewayProcess, String> {
        let mut command = Command::new(&self.host);
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(variable_args(secrets))
            .arg(&self.component)
            .env(CONFIG_ENV, config);
        GatewayProcess::spawn_with_timeout(command, READY_PREFIX, Vec::new(), START_TIMEOUT)
    }

    /// Writes `key_value` to a seed file that the host loads into its `default`
    /// key-value store, the store a component opens with the default
    /// `key_value.spin_store`.
    fn launch_with_key_value(
        &self,
        config: &str,
        secrets: &BTreeMap<String, String>,
        key_value: &BTreeMap<String, String>,
    ) -> Result<GatewayProcess, String> {
        if key_value.is_empty() {
            return self.launch_with_secrets(config, secrets);
        }
        let seed = temporary_path("json");
        let text = serde_json::to_string(key_value)
            .map_err(|error| format!("failed to write the key-value seed: {error}"))?;
        std::fs::write(&seed, text)
            .map_err(|error| format!("failed to write {}: {error}", seed.display()))?;
        let mut command = Command::new(&self.host);
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--key-value-seed")
            .arg(&seed)
            .args(variable_args(secrets))
            .arg(&self.component)
            .env(CONFIG_ENV, config);
        GatewayProcess::spawn_with_timeout(command, READY_PREFIX, vec![seed], START_TIMEOUT)
    }
}

/// Returns `--var name=value` arguments of the test host for `secrets`.
fn variable_args(secrets: &BTreeMap<String, String>) -> Vec<String> {
    secrets
        .iter()
        .flat_map(|(name, value)| {
            [
                "--var".to_owned(),
                format!("{}={value}", name.to_ascii_lowercase()),
            ]
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests report failures by panicking")]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::process::temporary_path;

    #[test]
    fn launch_passes_config_and_reads_ready_line() {
        let script = temporary_path("sh");
        std::fs::write(
            &script,
            "#!/bin/sh\n\
             [ \"$1 $2 $3\" = '--listen 127.0.0.1:0 app.wasm' ] || exit 3\n\
             [ \"$SPIN_VARIABLE_GATEHOUSE_CONFIG\" = '[server]' ] || exit 4\n\
             echo 'gatehouse-spin-host: serving http://127.0.0.1:4568'\n\
             exec sleep 30\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let launcher = SpinLauncher::new(&script, Path::new("app.wasm"));
        let process = launcher.launch("[server]").unwrap();
        assert_eq!(process.address, "127.0.0.1:4568".parse().unwrap());
        drop(process);
        std::fs::remove_file(script).unwrap();
    }
}
