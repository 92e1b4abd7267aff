//! Runs every conformance scenario against the `gatehouse` binary of this package.

use std::path::Path;

#[test]
fn scenarios_pass_against_native_binary() {
    let report = gatehouse_conformance::run_native(Path::new(env!("CARGO_BIN_EXE_gatehouse")));
    report.assert_all_passed();
}
