//! The gatehouse conformance suite: scenarios written once as data and run against
//! every target.
//!
//! A scenario (see [`scenario`]) gives a gateway config, the behaviour of test
//! upstreams and requests with the responses they must get. A [`target::Target`] runs
//! the gateway: [`run_in_process`] drives the core directly with a hand-driven clock,
//! [`run_native`] starts the `gatehouse` binary, [`run_worker`] the Cloudflare Worker
//! under `wrangler dev`, and [`run_spin`] the Spin component in a wasmtime-based host;
//! each is reached over sockets.

pub mod behaviour;
pub mod check;
pub mod client;
pub mod clock;
pub mod in_process;
pub mod native;
pub mod process;
pub mod redis;
pub mod report;
pub mod scenario;
pub mod spin;
pub mod suite;
pub mod target;
pub mod upstream;
pub mod worker;

use std::path::Path;

pub use report::SuiteReport;

/// Runs every scenario against the core in this process.
pub fn run_in_process() -> SuiteReport {
    suite::run_all(&mut in_process::InProcessTarget)
}

/// Runs every scenario against the native binary at `binary`, one gateway process per
/// scenario, with the test upstreams on 127.0.0.1.
pub fn run_native(binary: &Path) -> SuiteReport {
    run_process(native::NativeLauncher::new(binary))
}

/// Runs every scenario against the prebuilt Cloudflare Worker that `launcher` found,
/// one `wrangler dev` per scenario, with the test upstreams on 127.0.0.1.
pub fn run_worker(launcher: worker::WorkerLauncher) -> SuiteReport {
    run_process(launcher)
}

fn run_process<L: process::Launcher>(launcher: L) -> SuiteReport {
    let name = launcher.name();
    match process::ProcessTarget::new(launcher) {
        Ok(mut target) => suite::run_all(&mut target),
        Err(error) => SuiteReport {
            target: name.to_owned(),
            results: Vec::new(),
            load_problems: vec![error],
        },
    }
}

/// Runs every scenario against the Spin component at `component`, served by the
/// `gatehouse-spin-host` binary at `host`, one host process per scenario.
pub fn run_spin(host: &Path, component: &Path) -> SuiteReport {
    let launcher = spin::SpinLauncher::new(host, component);
    match process::ProcessTarget::new(launcher) {
        Ok(mut target) => suite::run_all(&mut target),
        Err(error) => SuiteReport {
            target: "spin".to_owned(),
            results: Vec::new(),
            load_problems: vec![error],
        },
    }
}
