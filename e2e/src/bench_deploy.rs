//! `cargo xtask bench deploy`: what clients through nginx see while the
//! controller deploys, rolls back, and parts of the stack are killed.
//!
//! With the stack as the end-to-end tests start it, a bounded load (keep-
//! alive and per-request clients, loopback only) runs through the edge
//! while the controller performs good deploys (alternating colors) and
//! level-1 and level-2 rollbacks; then, each under its own load, the
//! faults: a replica of two SIGKILLed, the only replica SIGKILLed, the
//! router nginx SIGKILLed, the controller SIGKILLed mid-rollout. It prints
//! a table per deploy and per fault. Figures, not assertions: the test of
//! the same promise is the e2e scenario "under load".

use std::fs;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use xtask::api;
use xtask::effects::compose::Tool;
use xtask::effects::paths::live_manifest;
use xtask::effects::{docker, registry};
use xtask::rollout::{self, Finished, StepName, Verdict as Result_};
use xtask::stack;
use xtask::stages::artifacts::Built;

use crate::fixture::{self, Fixture};
use crate::images::{self, GOOD_A, GOOD_B, NO_MODEL, WRONG_PORT};
use crate::load::{self, Connection, Load, Report};

/// Clients through nginx during deploys, rollbacks and faults.
#[derive(clap::Parser, Debug)]
#[command(bin_name = "xtask bench deploy")]
pub struct BenchDeployArgs {
    /// Good deploys (alternating colors).
    #[arg(long, default_value_t = 10)]
    pub good: usize,
    /// Level-1 rollbacks (an image that never turns healthy).
    #[arg(long, default_value_t = 3)]
    pub level1: usize,
    /// Level-2 rollbacks (healthy, unreachable through nginx).
    #[arg(long, default_value_t = 3)]
    pub level2: usize,
    /// Clients on kept-alive connections.
    #[arg(long, default_value_t = 8)]
    pub keep_alive: usize,
    /// Clients opening a connection per request.
    #[arg(long, default_value_t = 4)]
    pub per_request: usize,
    /// Skip the faults.
    #[arg(long)]
    pub no_faults: bool,
    /// Instead of the above: the Swarm table, on a swarm of this many
    /// nodes (this Engine and namespaced dockerds): good deploys at each
    /// of `--swarm-replicas`, side by side.
    #[arg(long)]
    pub swarm_nodes: Option<u32>,
    /// The replicas of each color in the Swarm table.
    #[arg(long, value_delimiter = ',', default_value = "1,6")]
    pub swarm_replicas: Vec<u32>,
    /// Good deploys per row of the Swarm table.
    #[arg(long, default_value_t = 3)]
    pub swarm_deploys: usize,
}

/// The bound on any one load: every thread stops by itself after it.
const BOUND: Duration = Duration::from_secs(30 * 60);

struct Row {
    label: String,
    done: Finished,
    window: (Duration, Duration),
    switch_at: Option<Duration>,
}

pub fn run(args: &BenchDeployArgs) -> Result<()> {
    docker::ensure_running()?;
    let tool = Tool::ensure()?;
    let built = Built::last()?.context("no build recorded: run `cargo xtask build` first")?;
    let registry = registry::ensure_running()?;
    images::prepare(&built)?;
    let fx = Fixture { tool, built };
    let outcome = match args.swarm_nodes {
        Some(nodes) => {
            fixture::use_platform(xtask::stack::Platform::Swarm, nodes);
            swarm_table(&fx, args)
        }
        None => measure(&fx, args),
    };
    let mut cleared = fx.clear();
    if args.swarm_nodes.is_some() {
        cleared = cleared.and(xtask::stack::swarm::leave_if_ours().map(drop));
    }
    drop(registry);
    outcome?;
    cleared
}

/// Good deploys on Swarm at each replica count, under load: the median
/// healthy → switched and whole rollout, and the requests that failed.
fn swarm_table(fx: &Fixture, args: &BenchDeployArgs) -> Result<()> {
    let body = api::documented_request();
    let mut rows = Vec::new();
    for &replicas in &args.swarm_replicas {
        fx.fresh(GOOD_A)?;
        let live = live_manifest();
        // The first deploy brings the replica count; it is not measured.
        fs::write(&live, fixture::manifest(GOOD_B, replicas)?)?;
        let before = rollout::newest_revision(&fx.status()?);
        rollout::follow(GOOD_B, before, Duration::from_secs(300))?;
        let load = Load::start(&stack::front(), &body, args.keep_alive, args.per_request, BOUND);
        let (mut switched, mut whole) = (Vec::new(), Vec::new());
        for i in 0..args.swarm_deploys {
            let tag = if i % 2 == 0 { GOOD_A } else { GOOD_B };
            let done = fx.deploy(tag)?;
            println!("  {replicas} replicas: {}", rollout::describe(&done));
            anyhow::ensure!(done.result == Result_::Succeeded, "{}", rollout::describe(&done));
            switched.extend(done.healthy_to_switched_ms);
            whole.push(done.summary.steps.iter().map(|s| s.ms).sum::<u64>());
        }
        let report = load.stop();
        rows.push((replicas, median(&mut switched), median(&mut whole), report));
    }
    let nodes = args.swarm_nodes.unwrap_or(1);
    println!();
    println!(
        "{:<24} {:>14} {:>12} {:>8} {:>7} {:>8} {:>9}",
        "swarm", "healthy→sw ms", "rollout ms", "× first", "sent", "failed", "p99 ms"
    );
    let first = rows.first().map(|r| r.2.max(1)).unwrap_or(1);
    for (replicas, switched, whole, report) in &rows {
        let (sent, ok, ..) = report.counts(None);
        let (_, p99, _) = report.latency(None, None);
        println!(
            "{:<24} {:>14} {:>12} {:>8.2} {:>7} {:>8} {:>9}",
            format!("{replicas} replicas, {nodes} nodes"),
            switched,
            whole,
            *whole as f64 / first as f64,
            sent,
            sent - ok,
            ms(p99)
        );
    }
    println!("(medians of {} good deploys per row; the load through the edge)", args.swarm_deploys);
    Ok(())
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn plan(args: &BenchDeployArgs) -> Vec<(String, &'static str)> {
    let mut plan = Vec::new();
    let (mut l1, mut l2) = (0, 0);
    for i in 0..args.good {
        let tag = if i % 2 == 0 { GOOD_B } else { GOOD_A };
        plan.push((format!("good #{}", i + 1), tag));
        if i % 3 == 2 && l1 < args.level1 {
            l1 += 1;
            plan.push((format!("level 1 #{l1}"), NO_MODEL));
        }
        if i % 3 == 2 && l2 < args.level2 {
            l2 += 1;
            plan.push((format!("level 2 #{l2}"), WRONG_PORT));
        }
    }
    plan.extend((l1..args.level1).map(|i| (format!("level 1 #{}", i + 1), NO_MODEL)));
    plan.extend((l2..args.level2).map(|i| (format!("level 2 #{}", i + 1), WRONG_PORT)));
    plan
}

fn measure(fx: &Fixture, args: &BenchDeployArgs) -> Result<()> {
    fx.fresh(GOOD_A)?;
    let expected = fx.expected_answer()?;
    let body = api::documented_request();
    let load_wall = SystemTime::now();
    let load = Load::start(&stack::front(), &body, args.keep_alive, args.per_request, BOUND);
    let mut rows = Vec::new();
    for (label, tag) in plan(args) {
        let from = load.elapsed();
        let done = fx.deploy(tag)?;
        let to = load.elapsed();
        let switch_at = switch_instant(&done, load_wall);
        println!("  {label}: {}", rollout::describe(&done));
        rows.push(Row { label, done, window: (from, to), switch_at });
    }
    let report = load.stop();
    print_deploys(&report, &rows, &expected);
    if !args.no_faults {
        faults(fx, args, &body)?;
    }
    Ok(())
}

/// When nginx was reloaded on the new color (or, for a level-2 rollback,
/// back on the old one), as an offset into the load.
fn switch_instant(done: &Finished, load_wall: SystemTime) -> Option<Duration> {
    let started = std::time::UNIX_EPOCH + Duration::from_millis(done.summary.started_at.0);
    let until_switched: u64 = done
        .summary
        .steps
        .iter()
        .take_while(|s| s.step != StepName::Verify && s.step != StepName::Rollback)
        .map(|s| s.ms)
        .sum();
    let at = started + Duration::from_millis(until_switched);
    at.duration_since(load_wall).ok()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn print_deploys(report: &Report, rows: &[Row], expected: &(String, f64)) {
    println!();
    println!(
        "{:<11} {:<15} {:<24} {:>7} {:>6} {:>8} {:>8} {:>8}  {:<22} {:<22} {:>9} {:>9}",
        "deploy",
        "tag",
        "result",
        "sent",
        "failed",
        "p50 ms",
        "p99 ms",
        "max ms",
        "served before",
        "served after",
        "healthy→",
        "failed→"
    );
    println!("{:>150}", "switched restored");
    for row in rows {
        let window = Some(row.window);
        let in_window: Vec<_> = report
            .samples
            .iter()
            .filter(|s| s.at >= row.window.0 && s.at <= row.window.1)
            .collect();
        let failed =
            in_window.iter().filter(|s| !matches!(s.outcome, load::Outcome::Ok { .. })).count();
        let around = row.switch_at.map(|t| {
            (t.saturating_sub(Duration::from_millis(500)), t + Duration::from_millis(500))
        });
        let (p50, p99, max) = report.latency(around.or(window), None);
        let (before, _) = report.served_around(row.window.0);
        let (_, after) = report.served_around(row.window.1);
        let result = match (row.done.result, row.done.level) {
            (Result_::Succeeded, _) => format!("succeeded → {}", row.done.summary.color),
            (_, Some(l)) => format!("rolled back, level {l}"),
            _ => "rolled back".into(),
        };
        let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        println!(
            "{:<11} {:<15} {:<24} {:>7} {:>6} {:>8} {:>8} {:>8}  {:<22} {:<22} {:>9} {:>9}",
            row.label,
            row.done.tag,
            result,
            in_window.len(),
            failed,
            ms(p50),
            ms(p99),
            ms(max),
            truncate(&before, 22),
            truncate(&after, 22),
            opt(row.done.healthy_to_switched_ms),
            opt(row.done.failed_to_restored_ms),
        );
    }
    println!("(latencies: the second around the switch; sent/failed: the whole rollout)");
    println!();
    summary("all deploys", report, expected);
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn summary(what: &str, report: &Report, expected: &(String, f64)) {
    println!(
        "{:<28} {:<12} {:>7} {:>7} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
        what,
        "connections",
        "sent",
        "2xx",
        "non-2xx",
        "conn err",
        "timeout",
        "p50 ms",
        "p99 ms",
        "max ms",
        "wrong ans"
    );
    for (name, kind) in [
        ("keep-alive", Some(Connection::KeepAlive)),
        ("per request", Some(Connection::PerRequest)),
        ("all", None),
    ] {
        let (sent, ok, bad, conn, timeout) = report.counts(kind);
        let (p50, p99, max) = report.latency(None, kind);
        let wrong = if kind.is_none() {
            report.wrong_answers(std::slice::from_ref(expected)).len().to_string()
        } else {
            String::new()
        };
        println!(
            "{:<28} {:<12} {:>7} {:>7} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
            "",
            name,
            sent,
            ok,
            bad,
            conn,
            timeout,
            ms(p50),
            ms(p99),
            ms(max),
            wrong
        );
    }
}

/// One fault under its own load: what clients saw.
fn fault(
    name: &str,
    args: &BenchDeployArgs,
    body: &str,
    act: impl FnOnce() -> Result<String>,
) -> Result<()> {
    let load = Load::start(&stack::front(), body, args.keep_alive, args.per_request, BOUND);
    sleep(Duration::from_secs(2));
    let what = act()?;
    // Long enough for Docker's restart policy and the health check.
    sleep(Duration::from_secs(10));
    let report = load.stop();
    let (sent, ok, ..) = report.counts(None);
    println!("{name:<44} {sent:>7} {:>7} {:>10}  {what}", sent - ok, ms(report.longest_outage()));
    Ok(())
}

fn faults(fx: &Fixture, args: &BenchDeployArgs, body: &str) -> Result<()> {
    println!();
    println!(
        "{:<44} {:>7} {:>7} {:>10}  what happened",
        "fault (under load)", "sent", "failed", "outage ms"
    );
    let live = live_manifest();
    fs::write(&live, fixture::manifest(GOOD_B, 2)?)?;
    let before = rollout::newest_revision(&fx.status()?);
    rollout::follow(GOOD_B, before, Duration::from_secs(120))?;
    fault("SIGKILL one of 2 live replicas", args, body, || {
        fx.kill_process_of("taxi-fare_app_green_1")?;
        Ok("Docker restarts it (unless-stopped); nginx retries on the other replica".into())
    })?;
    fs::write(&live, fixture::manifest(GOOD_A, 1)?)?;
    let before = rollout::newest_revision(&fx.status()?);
    rollout::follow(GOOD_A, before, Duration::from_secs(120))?;
    fault("SIGKILL the only live replica", args, body, || {
        fx.kill_process_of("taxi-fare_app_blue_1")?;
        Ok("outage until Docker restarts it and the controller has nginx resolve its new address"
            .into())
    })?;
    fault("SIGKILL the router nginx", args, body, || {
        fx.kill_process_of("taxi-fare_nginx_1")?;
        Ok("the edge answers 503 JSON until Docker restarts the router".into())
    })?;
    fault("SIGKILL the controller mid-rollout", args, body, || {
        fx.set_tag(GOOD_B)?;
        fx.wait_for_step(StepName::Health)?;
        fx.kill_controller()?;
        let done = rollout::follow(GOOD_B, 0, Duration::from_secs(120))?;
        Ok(format!("restarted; {}", rollout::describe(&done)))
    })?;
    Ok(())
}
