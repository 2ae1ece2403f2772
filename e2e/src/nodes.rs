//! The scenarios of a swarm of several nodes (`cargo xtask e2e --platform
//! swarm --swarm-nodes 3`): this Engine and two more, each a dockerd in a
//! network namespace of its own (`xtask::stack::nodes`). Replicas spread
//! over every node; a node lost under load while its replicas serve; a
//! rollout while a node is down. The load goes to the front on loopback
//! only; the node is "lost" by killing every process in its namespace.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use xtask::api;
use xtask::effects::docker::docker;
use xtask::effects::paths::live_manifest;
use xtask::effects::poll::{self, Poll};
use xtask::effects::process::output;
use xtask::rollout::{self, Verdict};
use xtask::stack::{self, nodes};

use crate::fixture::Scenario;
use crate::fixture::{Fixture, manifest};
use crate::images::{GOOD_A, GOOD_B};
use crate::load::{Load, Report};

/// The replicas of each color in these scenarios: one per node.
const REPLICAS: u32 = 3;
/// The node that is lost.
const LOST: u32 = 3;

pub const ALL: &[Scenario] = &[
    ("nodes: replicas spread over every node", spread),
    ("nodes: a node lost under load, traffic kept by the others", node_lost),
    ("nodes: a rollout while a node is down", rollout_node_down),
];

/// Each running task of a color's service: its node id.
fn task_nodes(color: &str) -> Result<Vec<String>> {
    let service = format!("{}_app_{color}", bluegreen::PROJECT);
    let ids =
        output(docker(["service", "ps", "-q", "--filter", "desired-state=running", &service]))?;
    let mut nodes = Vec::new();
    for id in ids.lines() {
        let line = output(docker(["inspect", "--format", "{{.NodeID}} {{.Status.State}}", id]))?;
        if let Some((node, "running")) = line.split_once(' ') {
            nodes.push(node.to_owned());
        }
    }
    Ok(nodes)
}

/// The swarm's node ids by address (this Engine's is the manager's).
fn node_ids() -> Result<BTreeMap<String, String>> {
    let mut by_address = BTreeMap::new();
    for id in output(docker(["node", "ls", "-q"]))?.lines() {
        let addr = output(docker(["node", "inspect", id, "--format", "{{.Status.Addr}}"]))?;
        by_address.insert(addr, id.to_owned());
    }
    Ok(by_address)
}

fn lost_node_id() -> Result<String> {
    let address =
        format!("{}.{LOST}", nodes::manager_address().rsplit_once('.').map_or("", |p| p.0));
    node_ids()?.remove(&address).with_context(|| format!("no node at {address}"))
}

/// A fresh stack with `tag` live in blue, then `next` rolled out to green
/// with [`REPLICAS`] replicas, under load; what the load saw.
fn three_replicas(fx: &Fixture, next: &str) -> Result<Report> {
    fx.fresh(GOOD_A)?;
    let load = start_load(2, 1);
    let deployed = deploy(fx, next);
    let report = load.stop();
    deployed?;
    Ok(report)
}

fn start_load(keep_alive: usize, per_request: usize) -> Load {
    Load::start(
        &stack::front(),
        &api::documented_request(),
        keep_alive,
        per_request,
        Duration::from_secs(300),
    )
}

/// Rolls `tag` out with [`REPLICAS`] replicas; it must succeed.
fn deploy(fx: &Fixture, tag: &str) -> Result<()> {
    let before = rollout::newest_revision(&fx.status()?);
    fs::write(live_manifest(), manifest(tag, REPLICAS)?)?;
    let done = rollout::follow(tag, before, Duration::from_secs(180))?;
    ensure!(done.result == Verdict::Succeeded, "{}", rollout::describe(&done));
    Ok(())
}

/// Waits until Swarm calls node `id` down.
fn until_down(id: &str) -> Result<Duration> {
    let started = Instant::now();
    poll::until(Duration::from_secs(60), Duration::from_millis(250), || {
        let state = output(docker(["node", "inspect", id, "--format", "{{.Status.State}}"]))?;
        Ok(if state == "down" { Poll::Ready(()) } else { Poll::Pending(state) })
    })
    .context("waiting for Swarm to see the node down")?;
    Ok(started.elapsed())
}

/// Waits until the controller shows `color` with every replica healthy
/// and the front answering with it, none of its tasks on node `lost`.
fn whole_again(fx: &Fixture, color: &str, lost: &str, within: Duration) -> Result<Duration> {
    let started = Instant::now();
    poll::until(within, Duration::from_millis(250), || {
        let s = fx.status()?;
        let of = if color == "blue" { &s.colors.blue } else { &s.colors.green };
        let healthy = of
            .as_ref()
            .map_or(0, |cs| cs.iter().filter(|c| c.health == rollout::Health::Healthy).count());
        let on = task_nodes(color)?;
        let upstream = fx.upstream()?;
        let routed = upstream.lines().filter(|l| l.trim_start().starts_with("server")).count();
        Ok(
            if healthy == REPLICAS as usize
                && on.len() == REPLICAS as usize
                && !on.iter().any(|n| n == lost)
                && routed == REPLICAS as usize
            {
                Poll::Ready(())
            } else {
                Poll::Pending(format!(
                    "{healthy} healthy, {} tasks running, {routed} servers routed",
                    on.len()
                ))
            },
        )
    })?;
    Ok(started.elapsed())
}

fn failures_line(report: &Report) -> String {
    let failed = report.failures();
    format!(
        "{} of {} requests failed (longest outage {:.0} ms)",
        failed.len(),
        report.samples.len(),
        report.longest_outage().as_secs_f64() * 1e3
    )
}

fn spread(fx: &Fixture) -> Result<String> {
    let report = three_replicas(fx, GOOD_B)?;
    let on = task_nodes("green")?;
    let distinct: std::collections::BTreeSet<_> = on.iter().collect();
    let swarm = node_ids()?.len();
    ensure!(
        distinct.len() == swarm && on.len() == REPLICAS as usize,
        "green's {} tasks run on {} of the {swarm} nodes: {on:?}",
        on.len(),
        distinct.len()
    );
    ensure!(report.failures().is_empty(), "{}", failures_line(&report));
    Ok(format!("3 replicas on 3 nodes; {}", failures_line(&report)))
}

fn node_lost(fx: &Fixture) -> Result<String> {
    three_replicas(fx, GOOD_B)?;
    let lost = lost_node_id()?;
    ensure!(task_nodes("green")?.contains(&lost), "no replica of green runs on node {LOST}");
    let load = start_load(4, 2);
    std::thread::sleep(Duration::from_secs(3));
    let outcome = (|| -> Result<(Duration, Duration)> {
        let killed = Instant::now();
        nodes::kill(LOST)?;
        // Swarm marks the node down and starts its task elsewhere; the
        // controller routes to the new task.
        until_down(&lost)?;
        let down = killed.elapsed();
        whole_again(fx, "green", &lost, Duration::from_secs(120))?;
        let back = killed.elapsed();
        std::thread::sleep(Duration::from_secs(3));
        Ok((down, back))
    })();
    let report = load.stop();
    let revived = nodes::revive(LOST);
    let (down, back) = outcome?;
    revived?;
    let answer = fx.front()?;
    ensure!(
        answer.color.as_deref() == Some("green") && answer.version.as_deref() == Some(GOOD_B),
        "the front answers {answer:?} after the node came back"
    );
    let failed = report.failures();
    let line = format!(
        "{}; Swarm saw the node down after {:.1} s, 3 replicas healthy and routed again after {:.1} s",
        failures_line(&report),
        down.as_secs_f64(),
        back.as_secs_f64()
    );
    ensure!(failed.is_empty(), "{line}; the first: {:?}", failed.first());
    Ok(line)
}

fn rollout_node_down(fx: &Fixture) -> Result<String> {
    three_replicas(fx, GOOD_B)?;
    let lost = lost_node_id()?;
    nodes::kill(LOST)?;
    let outcome = (|| -> Result<String> {
        until_down(&lost)?;
        // Swarm moves green's task off the lost node; then the rollout.
        whole_again(fx, "green", &lost, Duration::from_secs(120))?;
        let load = start_load(2, 1);
        let started = Instant::now();
        let deployed = deploy(fx, GOOD_A);
        let report = load.stop();
        deployed?;
        let on = task_nodes("blue")?;
        ensure!(on.len() == REPLICAS as usize, "blue runs {} tasks", on.len());
        ensure!(!on.contains(&lost), "a task of blue was placed on the lost node");
        ensure!(report.failures().is_empty(), "{}", failures_line(&report));
        Ok(format!(
            "rolled out in {:.1} s on the 2 nodes left; {}",
            started.elapsed().as_secs_f64(),
            failures_line(&report)
        ))
    })();
    let revived = nodes::revive(LOST);
    let line = outcome?;
    revived?;
    Ok(line)
}
