//! The native target: the `gatehouse` binary started as `gatehouse run --config FILE`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{GatewayProcess, Launcher, temporary_path};

/// Name of the listener added to every scenario config.
const LISTENER_NAME: &str = "conformance";

/// Start of the line the binary prints once its listener is bound, followed by
/// `http://IP:PORT`.
// NOTE: checked only against a stand-in script so far, because the native binary does
// not exist on this branch yet.
pub const READY_PREFIX: &str = "gatehouse: listener conformance on ";

/// Starts the native binary with the scenario config plus one listener on a free port.
#[derive(Debug, Clone)]
pub struct NativeLauncher {
    binary: PathBuf,
}

impl NativeLauncher {
    /// Creates a launcher for the binary at `binary`.
    pub fn new(binary: &Path) -> Self {
        Self {
            binary: binary.to_owned(),
        }
    }
}

impl Launcher for NativeLauncher {
    fn name(&self) -> &'static str {
        "native"
    }

    fn launch(&self, config: &str) -> Result<GatewayProcess, String> {
        self.launch_with_secrets(config, &std::collections::BTreeMap::new())
    }

    /// Passes `secrets` as environment variables, which is where the native platform
    /// reads secrets from.
    fn launch_with_secrets(
        &self,
        config: &str,
        secrets: &std::collections::BTreeMap<String, String>,
    ) -> Result<GatewayProcess, String> {
        self.launch_with_key_value(config, secrets, &std::collections::BTreeMap::new())
    }

    /// Writes `key_value` to a seed file that `gatehouse run --key-value-seed` loads
    /// into the in-memory store.
    fn launch_with_key_value(
        &self,
        config: &str,
        secrets: &std::collections::BTreeMap<String, String>,
        key_value: &std::collections::BTreeMap<String, String>,
    ) -> Result<GatewayProcess, String> {
        let mut files = Vec::new();
        let mut command = Command::new(&self.binary);
        command.arg("run");
        if !key_value.is_empty() {
            let seed = temporary_path("json");
            let text = serde_json::to_string(key_value)
                .map_err(|error| format!("failed to write the key-value seed: {error}"))?;
            std::fs::write(&seed, text)
                .map_err(|error| format!("failed to write {}: {error}", seed.display()))?;
            command.arg("--key-value-seed").arg(&seed);
            files.push(seed);
        }

        let path = temporary_path("toml");
        // Port 0 lets the kernel pick a free port, which the ready line then reports.
        let text = format!(
            "{config}\n\n[[listeners]]\nname = \"{LISTENER_NAME}\"\naddress = \"127.0.0.1:0\"\n"
        );
        files.push(path.clone());
        if let Err(error) = std::fs::write(&path, text) {
            for file in &files {
                let _ = std::fs::remove_file(file);
            }
            return Err(format!("failed to write {}: {error}", path.display()));
        }

        command.arg("--config").arg(&path).envs(secrets);
        GatewayProcess::spawn(command, READY_PREFIX, files)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests report failures by panicking")]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Writes a shell script that replaces the binary: it checks its arguments,
    /// prints the ready line, and waits to be killed.
    fn fake_binary(body: &str) -> PathBuf {
        let path = temporary_path("sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn launch_reads_ready_line() {
        let script = fake_binary(
            "[ \"$1 $2\" = 'run --config' ] || exit 3\n\
             grep -q 'name = \"conformance\"' \"$3\" || exit 4\n\
             echo 'gatehouse: loading'\n\
             echo 'gatehouse: listener conformance on http://127.0.0.1:4567'\n\
             exec sleep 30",
        );
        let process = NativeLauncher::new(&script).launch("[server]\n").unwrap();
        assert_eq!(process.address, "127.0.0.1:4567".parse().unwrap());
        drop(process);
        std::fs::remove_file(script).unwrap();
    }

    #[test]
    fn launch_reports_early_exit() {
        let script = fake_binary("echo 'invalid config: 1 problem' >&2\nexit 1");
        let error = NativeLauncher::new(&script).launch("").unwrap_err();
        assert!(error.contains("did not become ready"), "{error}");
        std::fs::remove_file(script).unwrap();
    }
}
