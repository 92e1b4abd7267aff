//! Runs every conformance scenario against the Cloudflare Worker under `wrangler dev`.
//!
//! The test needs the bundle and the tools that `scripts/build-worker.sh` installs and
//! builds. Without them it prints why and passes, so that a plain `cargo test` works
//! on a machine without Node. `scripts/test.sh` builds them first and sets
//! `GATEHOUSE_REQUIRE_WORKER=1`, which turns the skip into a failure.

use std::path::Path;

use gatehouse_conformance::worker::WorkerLauncher;

#[test]
fn scenarios_pass_against_worker() {
    let repo_root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the conformance crate is inside the repository");
    let launcher = match WorkerLauncher::find(repo_root) {
        Ok(launcher) => launcher,
        Err(reason) if std::env::var_os("GATEHOUSE_REQUIRE_WORKER").is_some() => {
            panic!("GATEHOUSE_REQUIRE_WORKER is set, but {reason}")
        }
        Err(reason) => {
            eprintln!("skipped the Worker conformance run: {reason}");
            return;
        }
    };
    gatehouse_conformance::run_worker(launcher).assert_all_passed();
}
