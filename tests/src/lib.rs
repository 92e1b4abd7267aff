//! The gatehouse conformance suite: scenarios written once as data and run against
//! every target.
//!
//! A scenario (see [`scenario`]) gives a gateway config, the behaviour of test
//! upstreams and requests with the responses they must get. A [`target::Target`] runs
//! the gateway: [`run_in_process`] drives the core directly with a hand-driven clock,
//! and [`run_native`] starts the `gatehouse` binary and talks to it over sockets.

pub mod behaviour;
pub mod check;
pub mod clock;
pub mod in_process;
pub mod report;
pub mod scenario;
pub mod suite;
pub mod target;

pub use report::SuiteReport;

/// Runs every scenario against the core in this process.
pub fn run_in_process() -> SuiteReport {
    suite::run_all(&mut in_process::InProcessTarget)
}
