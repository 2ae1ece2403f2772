//! `cargo xtask e2e`: the deployment controller's end-to-end scenarios
//! against the real Docker Engine, nginx and registry, run in turn, then a
//! table of their results.
//!
//! They need the images of the last `cargo xtask build`. Each scenario
//! starts from a clean stack (nginx and the controller, as `up` starts
//! them) and deploys images derived from the real service image, tagged
//! `e2e-…` ([`images`]). Everything is removed at the end, also when a
//! scenario fails. Docker is required: without it this fails, never skips.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use xtask::effects::compose::Tool;
use xtask::effects::{docker, registry};
use xtask::stack::{Platform, swarm};
use xtask::stages::artifacts::Built;

use crate::{fixture, images, scenarios};

/// The scenarios run on Swarm (`--platform swarm`), by name: the rollout's
/// main paths and failures, a crash of the controller and the load test.
/// The others stay compose's for now: they name containers, networks or
/// tiers the compose way (`taxi-fare_app_blue_1`, Prometheus, the status
/// page), or test what the Swarm backend shares with compose's.
pub const ON_SWARM: &[&str] = &[
    "good deploy",
    "level 1: never healthy",
    "level 2: unreachable through nginx",
    "tag not in the registry",
    "gate: golden trips mismatch",
    "SIGKILL while waiting for health",
    "controller rollback",
    "under load: deploys and rollbacks lose no request",
];

/// The deployment controller's end-to-end scenarios on the real Docker
/// Engine, nginx and registry (needs `cargo xtask build` first).
#[derive(clap::Parser, Debug)]
#[command(bin_name = "xtask e2e")]
pub struct E2eArgs {
    /// Run only the scenarios whose name contains this text (repeatable).
    #[arg(long)]
    pub only: Vec<String>,
    /// The platform of the stacks: compose, or a one-node Docker Swarm
    /// (the scenarios of `ON_SWARM` only).
    #[arg(long, value_enum, default_value_t = Platform::Compose)]
    pub platform: Platform,
    /// Swarm only: run the scenarios of several nodes (`nodes::ALL`) on
    /// a swarm of this many, this Engine and namespaced dockerds, instead
    /// of the one-node ones.
    #[arg(long, default_value_t = 1)]
    pub swarm_nodes: u32,
}

pub fn run(args: &E2eArgs) -> Result<()> {
    docker::ensure_running()?;
    let tool = Tool::ensure()?;
    let built = Built::last()?
        .context("no build recorded in artifacts/images.json: run `cargo xtask build` first")?;
    let registry = registry::ensure_running()?;
    if args.swarm_nodes != 1 && args.platform != Platform::Swarm {
        bail!("--swarm-nodes is for --platform swarm");
    }
    images::prepare(&built)?;
    fixture::use_platform(args.platform, args.swarm_nodes);
    let fx = fixture::Fixture { tool, built };

    let all = if args.swarm_nodes > 1 { crate::nodes::ALL } else { scenarios::ALL };
    let chosen: Vec<_> = all
        .iter()
        .filter(|(name, _)| {
            args.platform == Platform::Compose || args.swarm_nodes > 1 || ON_SWARM.contains(name)
        })
        .filter(|(name, _)| {
            args.only.is_empty() || args.only.iter().any(|o| name.contains(o.as_str()))
        })
        .collect();
    if args.platform == Platform::Swarm
        && args.swarm_nodes == 1
        && chosen.len() < ON_SWARM.len()
        && args.only.is_empty()
    {
        bail!("a scenario of ON_SWARM was renamed: {ON_SWARM:?}");
    }
    let mut rows = Vec::new();
    for (name, scenario) in &chosen {
        println!("e2e: {name} …");
        let started = Instant::now();
        // A panic is a failure like any other: the stack still goes.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&fx)))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the scenario panicked")));
        let seconds = started.elapsed().as_secs_f64();
        match &outcome {
            Ok(what) => println!("ok    {name} ({seconds:.0} s): {what}"),
            Err(e) => {
                println!("FAIL  {name} ({seconds:.0} s): {e:#}");
                println!("--- the controller's last lines ---\n{}", fx.controller_log());
            }
        }
        rows.push((name, seconds, outcome));
    }
    let mut cleared = fx.clear();
    if args.platform == Platform::Swarm {
        // Left only if `up`'s code made it, as `down` does.
        cleared = cleared.and(swarm::leave_if_ours().map(|_| ()));
    }
    drop(registry);

    println!();
    let width = rows.iter().map(|(name, _, _)| name.chars().count()).max().unwrap_or(8);
    println!("{:<width$} {:>6}  result", "scenario", "s");
    for (name, seconds, outcome) in &rows {
        let result = match outcome {
            Ok(what) => format!("ok: {what}"),
            Err(e) => format!("FAILED: {}", format!("{e:#}").lines().next().unwrap_or("")),
        };
        println!("{name:<width$} {seconds:>6.0}  {result}");
    }
    let failed = rows.iter().filter(|(_, _, o)| o.is_err()).count();
    println!("e2e: {} passed, {failed} failed", rows.len() - failed);
    cleared.context("cannot remove the e2e stack")?;
    if failed > 0 {
        bail!("{failed} end-to-end scenario(s) failed");
    }
    Ok(())
}
