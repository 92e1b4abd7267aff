//! Runs every conformance scenario against the Spin component served by
//! `gatehouse-spin-host`, and checks the component's own config override.
//!
//! Both are built by `scripts/build-spin.sh` (and so by `scripts/test.sh`), not by
//! Cargo here: the component needs the `wasm32-wasip2` target and the host is its own
//! workspace. When either is missing the tests print why and pass, unless
//! `GATEHOUSE_REQUIRE_SPIN=1` is set, as the test script does, which turns the skip
//! into a failure.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use gatehouse_conformance::process::Launcher;
use gatehouse_conformance::spin::SpinLauncher;

/// Returns the workspace root, one level above this crate.
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

/// Returns the host binary and the component, or `None` after printing why the test
/// is skipped.
fn built_host_and_component() -> Option<(PathBuf, PathBuf)> {
    let host = path_from_env(
        "GATEHOUSE_SPIN_HOST",
        "tests/spin-host/target/release/gatehouse-spin-host",
    );
    let component = path_from_env(
        "GATEHOUSE_SPIN_COMPONENT",
        "target/wasm32-wasip2/spin-release/gatehouse_edge.wasm",
    );
    let missing: Vec<String> = [&host, &component]
        .into_iter()
        .filter(|path| !path.exists())
        .map(|path| path.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((host, component));
    }
    let message = format!(
        "the Spin tests need {}; run scripts/build-spin.sh to build them",
        missing.join(" and ")
    );
    assert!(
        std::env::var_os("GATEHOUSE_REQUIRE_SPIN").is_none_or(|value| value != "1"),
        "{message}"
    );
    println!("SKIP the Spin target: {message}");
    None
}

#[test]
fn scenarios_pass_against_spin_component() {
    let Some((host, component)) = built_host_and_component() else {
        return;
    };
    let report = gatehouse_conformance::run_spin(&host, &component);
    report.assert_all_passed();
}

#[test]
fn invalid_config_variable_is_a_500_problem() {
    let Some((host, component)) = built_host_and_component() else {
        return;
    };
    let config = "[[routes]]\nupstream = \"missing\"\n\n[upstreams.api]\nendpoints = []\n";
    let gateway = SpinLauncher::new(&host, &component)
        .launch(config)
        .expect("the host starts even when the config variable is invalid");
    let request = http::Request::builder()
        .uri("/anything")
        .header("host", "localhost")
        .body(Bytes::new())
        .expect("valid request");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("Tokio runtime");
    let exchange = runtime
        .block_on(gatehouse_conformance::client::send(
            gateway.address,
            request,
        ))
        .expect("the component answers");

    assert_eq!(exchange.status, 500);
    assert_eq!(
        exchange
            .headers
            .get("content-type")
            .map(|value| value.as_bytes()),
        Some(&b"application/problem+json"[..])
    );
    let problem: serde_json::Value =
        serde_json::from_slice(&exchange.body).expect("a JSON problem body");
    assert_eq!(problem["type"], "urn:gatehouse:problem:internal");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("gatehouse_config is invalid (2 problems)"),
        "{detail}"
    );
    assert!(detail.contains("routes[0].upstream: "), "{detail}");
    assert!(detail.contains("upstreams.api.endpoints: "), "{detail}");
}
