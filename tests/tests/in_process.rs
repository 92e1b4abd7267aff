//! Runs every conformance scenario against the core in process.

#[test]
fn scenarios_pass_in_process() {
    let report = gatehouse_conformance::run_in_process();
    report.assert_all_passed();
}
