//! The outcome of a suite run: every scenario with its result, printed so that each
//! failure names its file and scenario and shows expected versus actual.

use std::fmt;

/// The result of one scenario on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every step met its expectations.
    Passed,
    /// The target cannot run the scenario, for the stated reason.
    Skipped(String),
    /// The differences found, or why the scenario could not run.
    Failed(Vec<String>),
}

/// One scenario's result.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// Scenario file name, such as `routing.toml`.
    pub file: String,
    /// Scenario name.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
}

/// The results of every scenario on one target. Its `Display` lists the skipped and
/// failed scenarios with their differences, then the counts.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    /// Target name, such as `in_process`.
    pub target: String,
    /// Results in file and scenario order.
    pub results: Vec<ScenarioResult>,
    /// Problems that stopped scenarios from loading at all.
    pub load_problems: Vec<String>,
}

impl SuiteReport {
    /// Returns the results that failed.
    pub fn failures(&self) -> impl Iterator<Item = &ScenarioResult> {
        self.results
            .iter()
            .filter(|result| matches!(result.outcome, Outcome::Failed(_)))
    }

    fn count(&self, passed: bool) -> usize {
        self.results
            .iter()
            .filter(|result| (result.outcome == Outcome::Passed) == passed)
            .filter(|result| !matches!(result.outcome, Outcome::Skipped(_)))
            .count()
    }

    /// Returns whether every scenario loaded and none failed.
    pub fn all_passed(&self) -> bool {
        self.load_problems.is_empty() && self.failures().next().is_none()
    }

    /// Panics with the full report unless every scenario loaded and none failed.
    pub fn assert_all_passed(&self) {
        assert!(
            self.all_passed(),
            "conformance failures on {}:\n{self}",
            self.target
        );
    }
}

impl fmt::Display for SuiteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.load_problems {
            writeln!(f, "LOAD ERROR {problem}")?;
        }
        for result in &self.results {
            match &result.outcome {
                Outcome::Passed => {}
                Outcome::Skipped(reason) => writeln!(
                    f,
                    "SKIP {}: {} (on {}: {reason})",
                    result.file, result.name, self.target
                )?,
                Outcome::Failed(differences) => {
                    writeln!(f, "FAIL {}: {}", result.file, result.name)?;
                    for difference in differences {
                        writeln!(f, "    {difference}")?;
                    }
                }
            }
        }
        let skipped = self.results.len() - self.count(true) - self.count(false);
        writeln!(
            f,
            "conformance on {}: {} passed, {} failed, {skipped} skipped",
            self.target,
            self.count(true),
            self.count(false) + usize::from(!self.load_problems.is_empty()),
        )
    }
}
