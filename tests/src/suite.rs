//! Runs every scenario against a target and collects the results.

use std::time::Duration;

use crate::check::{check_step, check_websocket};
use crate::redis::{PASSWORD_SECRET, RedisServer, Unavailable};
use crate::report::{Outcome, ScenarioResult, SuiteReport};
use crate::scenario::{Scenario, ScenarioFile, load_dir, scenario_dir};
use crate::target::{Target, build_request};

/// Loads the scenario files of this crate and runs them all on `target`.
///
/// Runs every scenario even after failures, so one report lists them all. Set
/// `GATEHOUSE_CONFORMANCE_FILTER` to run only scenarios whose `FILE: NAME` contains it.
pub fn run_all(target: &mut dyn Target) -> SuiteReport {
    let filter = std::env::var("GATEHOUSE_CONFORMANCE_FILTER").ok();
    match load_dir(&scenario_dir()) {
        Ok(files) => run_files(target, &files, filter.as_deref()),
        Err(problems) => SuiteReport {
            target: target.name().to_owned(),
            results: Vec::new(),
            load_problems: problems,
        },
    }
}

/// Runs the scenarios of `files` whose `FILE: NAME` contains `filter` (all without one).
pub fn run_files(
    target: &mut dyn Target,
    files: &[ScenarioFile],
    filter: Option<&str>,
) -> SuiteReport {
    let mut results = Vec::new();
    for file in files {
        for scenario in &file.scenario {
            let label = format!("{}: {}", file.file, scenario.name);
            if filter.is_some_and(|filter| !label.contains(filter)) {
                continue;
            }
            let outcome = run_scenario(target, scenario);
            // Printed as it goes, so a hung scenario shows where the run stopped.
            match &outcome {
                Outcome::Passed => println!("PASS {label}"),
                Outcome::Skipped(reason) => {
                    println!("SKIP {label} (on {}: {reason})", target.name())
                }
                Outcome::Failed(_) => println!("FAIL {label}"),
            }
            results.push(ScenarioResult {
                file: file.file.clone(),
                name: scenario.name.clone(),
                outcome,
            });
        }
    }
    SuiteReport {
        target: target.name().to_owned(),
        results,
        load_problems: Vec::new(),
    }
}

fn run_scenario(target: &mut dyn Target, scenario: &Scenario) -> Outcome {
    if let Some(reason) = scenario.skip.get(target.name()) {
        return Outcome::Skipped(reason.clone());
    }
    // The server lives until the scenario ends, so each scenario counts from empty.
    let (_redis, scenario) = if scenario.uses_redis() {
        let password = scenario.secrets.get(PASSWORD_SECRET).map(String::as_str);
        match RedisServer::start(password) {
            Ok(server) => {
                let rendered = scenario.with_redis_url(&server.url());
                (Some(server), rendered)
            }
            Err(Unavailable::NotInstalled(reason)) => return Outcome::Skipped(reason),
            Err(Unavailable::Failed(error)) => {
                return Outcome::Failed(vec![format!("could not start Redis: {error}")]);
            }
        }
    } else {
        (None, scenario.clone())
    };
    let scenario = &scenario;
    let mut instance = match target.start(scenario) {
        Ok(instance) => instance,
        Err(error) => return Outcome::Failed(vec![format!("could not start: {error}")]),
    };

    let mut differences = Vec::new();
    for (index, step) in scenario.steps.iter().enumerate() {
        let label = format!("step {} ({} {})", index + 1, step.method, step.path);
        let request = match build_request(step) {
            Ok(request) => request,
            Err(error) => {
                differences.push(format!("{label}: {error}"));
                continue;
            }
        };
        if step.wait_ms > 0
            && let Err(error) = instance.wait(Duration::from_millis(step.wait_ms))
        {
            differences.push(format!("{label}: waiting failed: {error}"));
        }
        let step_differences = match &step.websocket {
            Some(actions) => match instance.websocket(&request, actions) {
                Ok(exchange) => {
                    let mut found = check_step(&step.expect, &[Ok(exchange.handshake)]);
                    if let Some(expect) = &step.expect.websocket {
                        found.extend(check_websocket(expect, exchange.session.as_ref()));
                    }
                    found
                }
                Err(error) => vec![format!("WebSocket handshake failed: {error}")],
            },
            None => {
                let outcomes = instance.send(&request, step.repeat, step.concurrent);
                check_step(&step.expect, &outcomes)
            }
        };
        for difference in step_differences {
            differences.push(format!("{label}: {difference}"));
        }
        if let Some(expected) = &step.expect.upstream_requests {
            let received = instance.upstream_requests();
            for (upstream, count) in expected {
                let actual = received.get(upstream).copied().unwrap_or(0);
                if actual != *count {
                    differences.push(format!(
                        "{label}: upstream {upstream:?} received {actual} requests in all, expected {count}"
                    ));
                }
            }
        }
    }
    if differences.is_empty() {
        return Outcome::Passed;
    }
    differences.push(format!(
        "connections accepted per upstream: {:?}",
        instance.upstream_connections()
    ));
    differences.extend(instance.diagnostics());
    Outcome::Failed(differences)
}
