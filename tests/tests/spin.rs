//! Runs every conformance scenario against the Spin component served by
//! `gatehouse-spin-host`.
//!
//! Both are built by `scripts/build-spin.sh` (and so by `scripts/test.sh`), not by
//! Cargo here: the component needs the `wasm32-wasip2` target and the host is its own
//! workspace. When either is missing the test prints why and passes, unless
//! `GATEHOUSE_REQUIRE_SPIN=1` is set, as the test script does, which turns the skip
//! into a failure.

use std::path::{Path, PathBuf};

/// The workspace root, one level above this crate.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Returns the path in environment variable `name`, or `default` under the workspace.
fn path_from_env(name: &str, default: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(default))
}

#[test]
fn scenarios_pass_against_spin_component() {
    let component = path_from_env(
        "GATEHOUSE_SPIN_COMPONENT",
        "target/wasm32-wasip2/spin-release/gatehouse_edge.wasm",
    );
    let host = path_from_env(
        "GATEHOUSE_SPIN_HOST",
        "tests/spin-host/target/release/gatehouse-spin-host",
    );
    let missing: Vec<String> = [&component, &host]
        .into_iter()
        .filter(|path| !path.exists())
        .map(|path| path.display().to_string())
        .collect();
    if !missing.is_empty() {
        let message = format!(
            "the Spin conformance run needs {}; run scripts/build-spin.sh to build them",
            missing.join(" and ")
        );
        assert!(
            std::env::var_os("GATEHOUSE_REQUIRE_SPIN").is_none_or(|value| value != "1"),
            "{message}"
        );
        println!("SKIP the Spin target: {message}");
        return;
    }
    let report = gatehouse_conformance::run_spin(&host, &component);
    report.assert_all_passed();
}
