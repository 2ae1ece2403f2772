//! `ci`: the whole pipeline on this machine, what `.ci/run` runs.
//!
//! The CI jobs in their order (lint → smoke → unit → train → build & push
//! → integration → deploy), plus what a CI runner has and this machine
//! lacks: after integration, the Swarm backend's engine test on the
//! images just built (`swarm-engine`); before deploy, the production stack (`up`, reusing the trained
//! model), so the deploy stage meets a running controller as the CI job
//! does; after it, the controller's end-to-end tests, on compose and then
//! on a one-node swarm (`e2e-swarm`). The stack is torn
//! down at the end whatever happened, and a table of each step's duration
//! is printed, also on a failure, ending with the pass/fail count CI
//! reads. It sits above the stages, the stack and e2e, which it runs;
//! `pipeline` (tests only) holds `.gitflic-ci.yaml` to its list of steps.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use crate::effects::process::{self, cmd};
use crate::stages::artifacts::Built;
use crate::stages::{build, deploy, integration, lint, smoke, train, unit};
use crate::{e2e, stack};

#[cfg(test)]
mod pipeline;

/// One step of `ci`: a CI job's stage, or local setup around them.
pub struct Step {
    pub name: &'static str,
    /// Whether `.gitflic-ci.yaml` has it as a job of the same name (the
    /// pipeline test holds the two to the same list and order).
    pub job: bool,
    pub run: fn() -> Result<()>,
}

/// Every step, in order. `down` is not one: it runs after them always.
pub fn steps() -> Vec<Step> {
    let job = |name, run| Step { name, job: true, run };
    let local = |name, run| Step { name, job: false, run };
    vec![
        job("lint", lint::run),
        job("smoke", smoke::run),
        job("unit", unit::run),
        job("train", || train::run(&train::TrainArgs::default()).map(drop)),
        job("build", || build::build(&build::BuildArgs::default()).map(drop)),
        job("integration", || integration::run(&integration::IntegrationArgs::default())),
        // The Swarm backend against this engine, on the images just built.
        local("swarm-engine", swarm_engine),
        // The runner's production stack, serving the tag just built.
        local("up", || stack::up(&stack::UpArgs { no_train: true, ..Default::default() })),
        // That tag is live: deploy checks the registry and the controller
        // and finds the rollout done.
        job("deploy", || deploy::run(&deploy::DeployArgs::default())),
        // The controller's scenarios (rollbacks, crashes, zero downtime);
        // each starts from a clean stack of its own.
        local("e2e", || e2e::scenarios(&[])),
        // The scenarios that make sense on Swarm, on a one-node swarm of
        // this engine (the three-node ones run apart: `e2e --platform
        // swarm --swarm-nodes 3`, which would take this past 30 minutes).
        local("e2e-swarm", || e2e::scenarios(&["--platform".into(), "swarm".into()])),
    ]
}

/// `controller/tests/swarm.rs` (ignored by the unit stage, which has no
/// Docker): a one-node swarm of its own, the Swarm backend driving the
/// last build's service and nginx images, everything it made removed.
fn swarm_engine() -> Result<()> {
    let built = Built::last()?.ok_or_else(|| {
        anyhow!("no build recorded in artifacts/images.json: run `cargo xtask build` first")
    })?;
    let mut test = cmd("cargo", ["test", "-p", "controller", "--test", "swarm", "--", "--ignored"]);
    test.env("SWARMTEST_APP_IMAGE", &built.service).env("SWARMTEST_NGINX_IMAGE", &built.nginx);
    process::run(test)
}

/// What one step came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    /// Not run: an earlier step failed.
    Skipped,
}

/// The steps run so far and how long each took.
#[derive(Debug, Default)]
struct Report {
    rows: Vec<(&'static str, Outcome, Duration)>,
}

impl Report {
    fn add(&mut self, name: &'static str, outcome: Outcome, took: Duration) {
        self.rows.push((name, outcome, took));
    }

    fn count(&self, outcome: &Outcome) -> usize {
        self.rows.iter().filter(|(_, o, _)| o == outcome).count()
    }

    /// The table of durations, then the count on the last line.
    fn render(&self) -> String {
        let mut s = String::from("step           result    seconds\n");
        for (name, outcome, took) in &self.rows {
            let (result, secs) = match outcome {
                Outcome::Passed => ("ok", format!("{:>7.1}", took.as_secs_f64())),
                Outcome::Failed => ("FAILED", format!("{:>7.1}", took.as_secs_f64())),
                Outcome::Skipped => ("skipped", format!("{:>7}", "-")),
            };
            s.push_str(&format!("{name:<14} {result:<8} {secs}\n"));
        }
        let total: Duration = self.rows.iter().map(|(_, _, d)| *d).sum();
        s.push_str(&format!("{:<14} {:<8} {:>7.1}\n", "total", "", total.as_secs_f64()));
        s.push_str(&format!(
            "ci: {} steps, {} passed, {} failed",
            self.rows.len(),
            self.count(&Outcome::Passed),
            self.count(&Outcome::Failed)
        ));
        if self.count(&Outcome::Skipped) > 0 {
            s.push_str(&format!(", {} skipped", self.count(&Outcome::Skipped)));
        }
        s
    }
}

/// Runs the steps in order until one fails, then `down` always; prints the
/// table. Fails with the first failure (or down's, when all else passed).
pub fn run() -> Result<()> {
    let mut report = Report::default();
    let first_failure = run_steps(steps(), &mut report);

    println!("\n=== ci: down (always) ===");
    let started = Instant::now();
    let down = stack::down();
    let outcome = if down.is_ok() { Outcome::Passed } else { Outcome::Failed };
    report.add("down", outcome, started.elapsed());
    if let Err(e) = &down {
        eprintln!("ci: down failed: {e:#}");
    }

    println!("\n{}", report.render());
    match (first_failure, down) {
        (Some((name, e)), _) => Err(e.context(format!("ci: step {name} failed"))),
        (None, Err(e)) => Err(e.context("ci: tearing the stack down failed")),
        (None, Ok(())) => Ok(()),
    }
}

/// Runs `steps` in order, recording each; after the first failure the rest
/// are recorded as skipped. Returns that failure.
fn run_steps(steps: Vec<Step>, report: &mut Report) -> Option<(&'static str, anyhow::Error)> {
    let mut failure = None;
    for step in steps {
        if failure.is_some() {
            report.add(step.name, Outcome::Skipped, Duration::ZERO);
            continue;
        }
        let kind = if step.job { "pipeline stage" } else { "local" };
        println!("\n=== ci: {} ({kind}) ===", step.name);
        let started = Instant::now();
        // A panicking step is a failed step: the stack still comes down.
        let result = std::panic::catch_unwind(step.run)
            .unwrap_or_else(|_| Err(anyhow!("the step panicked")));
        match result {
            Ok(()) => report.add(step.name, Outcome::Passed, started.elapsed()),
            Err(e) => {
                eprintln!("ci: {} failed: {e:#}", step.name);
                report.add(step.name, Outcome::Failed, started.elapsed());
                failure = Some((step.name, e));
            }
        }
    }
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_skips_the_rest_and_is_returned() {
        let steps = vec![
            Step { name: "a", job: true, run: || Ok(()) },
            Step { name: "b", job: true, run: || Err(anyhow!("broken")) },
            Step { name: "c", job: false, run: || panic!("must not run after a failure") },
        ];
        let mut report = Report::default();
        let (name, e) = run_steps(steps, &mut report).unwrap();
        assert_eq!((name, e.to_string()), ("b", "broken".to_owned()));
        let outcomes: Vec<_> = report.rows.iter().map(|(n, o, _)| (*n, o.clone())).collect();
        assert_eq!(
            outcomes,
            [("a", Outcome::Passed), ("b", Outcome::Failed), ("c", Outcome::Skipped)]
        );
    }

    #[test]
    fn a_panicking_step_is_a_failure() {
        let steps = vec![Step { name: "p", job: true, run: || panic!("boom") }];
        let mut report = Report::default();
        let (name, e) = run_steps(steps, &mut report).unwrap();
        assert_eq!(name, "p");
        assert!(e.to_string().contains("panicked"), "{e:#}");
        assert_eq!(report.count(&Outcome::Failed), 1);
    }

    #[test]
    fn the_table_has_every_step_and_ends_with_the_count() {
        let mut report = Report::default();
        report.add("lint", Outcome::Passed, Duration::from_millis(12_340));
        report.add("smoke", Outcome::Failed, Duration::from_millis(2_000));
        report.add("unit", Outcome::Skipped, Duration::ZERO);
        report.add("down", Outcome::Passed, Duration::from_millis(500));
        let table = report.render();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 7, "{table}");
        assert!(lines[1].starts_with("lint") && lines[1].ends_with("12.3"), "{table}");
        assert!(lines[2].contains("FAILED") && lines[2].ends_with("2.0"), "{table}");
        assert!(lines[3].contains("skipped") && lines[3].ends_with('-'), "{table}");
        assert!(lines[5].starts_with("total") && lines[5].ends_with("14.8"), "{table}");
        assert_eq!(lines[6], "ci: 4 steps, 2 passed, 1 failed, 1 skipped");
    }

    #[test]
    fn every_pipeline_stage_runs_in_order_and_the_stack_is_up_before_deploy() {
        let names: Vec<&str> = steps().iter().map(|s| s.name).collect();
        let position = |n| names.iter().position(|x| *x == n).unwrap();
        assert!(position("integration") < position("up"), "{names:?}");
        assert!(position("up") < position("deploy"), "{names:?}");
        assert!(position("deploy") < position("e2e"), "{names:?}");
        assert!(!names.contains(&"down"), "down runs after the steps, always: {names:?}");
    }
}
