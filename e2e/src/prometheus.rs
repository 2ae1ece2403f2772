//! The stack's Prometheus on the real engine: after a deploy it scrapes
//! the controller, both nginx tiers and every running replica (the ones
//! the controller lists in its targets file), a replica that comes during
//! a rollout is scraped and dropped when it goes, and a level-1 rollback
//! fires an alert.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde::Deserialize;

use xtask::effects::http::Request;
use xtask::effects::poll::{self, Poll};
use xtask::rollout::{self, Verdict};
use xtask::stack::PROMETHEUS_PORT;

use crate::fixture::Fixture;
use crate::images::{GOOD_A, GOOD_B, NO_MODEL};

/// How long Prometheus gets to see a change: the targets file is re-read
/// every 5 s, targets scraped every 2 s, rules evaluated every 2 s.
const SEES: Duration = Duration::from_secs(45);
/// A rollout of the never-healthy image (its health timeout is 40 s).
const ROLLOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Deserialize)]
struct Answer<T> {
    status: String,
    data: T,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Targets {
    active_targets: Vec<Target>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    labels: std::collections::BTreeMap<String, String>,
    scrape_pool: String,
    health: String,
    #[serde(default)]
    last_error: String,
}

impl Target {
    fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

#[derive(Debug, Deserialize)]
struct Alerts {
    alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
struct Alert {
    labels: std::collections::BTreeMap<String, String>,
    state: String,
}

fn get<T: serde::de::DeserializeOwned>(path: &str) -> Result<T> {
    let at = format!("127.0.0.1:{PROMETHEUS_PORT}");
    let r = Request::get(path).timeout(Duration::from_secs(5)).send(&at)?;
    ensure!(r.status == 200, "GET {path} on Prometheus answered {}: {}", r.status, r.text());
    let answer: Answer<T> = r.parse()?;
    ensure!(answer.status == "success", "GET {path} on Prometheus: status {}", answer.status);
    Ok(answer.data)
}

fn targets() -> Result<Vec<Target>> {
    Ok(get::<Targets>("/api/v1/targets?state=active")?.active_targets)
}

/// `(instance, health, last error)` of each target, for messages.
fn describe(targets: &[Target]) -> String {
    let each: Vec<String> = targets
        .iter()
        .map(|t| format!("{}/{} {} {}", t.scrape_pool, t.label("instance"), t.health, t.last_error))
        .collect();
    each.join("; ")
}

/// Waits until the controller, both nginx tiers and exactly the running
/// app containers are up in Prometheus, with their color and tag.
fn wait_all_up(fx: &Fixture) -> Result<usize> {
    poll::until(SEES, Duration::from_millis(500), || {
        let running: BTreeSet<(String, String, String)> = fx
            .apps()?
            .into_iter()
            .filter(|a| a.state == "running")
            .map(|a| (format!("{}:{}", a.name, bluegreen::APP_PORT), a.color, a.tag))
            .collect();
        let targets = targets()?;
        let up = |pool: &'static str| {
            targets.iter().filter(move |t| t.scrape_pool == pool && t.health == "up")
        };
        let apps: BTreeSet<(String, String, String)> = up("app")
            .map(|t| (t.label("instance").into(), t.label("color").into(), t.label("tag").into()))
            .collect();
        let tiers: BTreeSet<&str> = up("nginx").map(|t| t.label("tier")).collect();
        Ok(
            if up("controller").count() == 1
                && tiers == BTreeSet::from(["edge", "router"])
                && !running.is_empty()
                && apps == running
            {
                Poll::Ready(targets.len())
            } else {
                Poll::Pending(format!("running {running:?}, Prometheus has {}", describe(&targets)))
            },
        )
    })
    .context("waiting for every target to be up in Prometheus")
}

/// Waits until an alert named `name` with `labels` fires.
fn wait_firing(name: &str, labels: &[(&str, &str)]) -> Result<()> {
    poll::until(SEES, Duration::from_millis(500), || {
        let alerts = get::<Alerts>("/api/v1/alerts")?.alerts;
        let firing = alerts.iter().any(|a| {
            a.state == "firing"
                && a.labels.get("alertname").map(String::as_str) == Some(name)
                && labels.iter().all(|(k, v)| a.labels.get(*k).map(String::as_str) == Some(*v))
        });
        Ok(if firing {
            Poll::Ready(())
        } else {
            let seen: Vec<String> = alerts
                .iter()
                .map(|a| {
                    format!(
                        "{} {}",
                        a.labels.get("alertname").cloned().unwrap_or_default(),
                        a.state
                    )
                })
                .collect();
            Poll::Pending(format!("alerts: {seen:?}"))
        })
    })
    .with_context(|| format!("waiting for alert {name} {labels:?} to fire"))
}

/// A deploy, every target up; a never-healthy release scraped while it
/// runs, rolled back at level 1, the rollback alert firing, and its
/// replica dropped from the targets.
pub fn targets_and_alerts(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    fx.deploy_ok(GOOD_B)?;
    let after_deploy = wait_all_up(fx)?;

    let before = fx.set_tag(NO_MODEL)?;
    poll::until(ROLLOUT, Duration::from_millis(500), || {
        let targets = targets()?;
        let seen = targets.iter().any(|t| t.scrape_pool == "app" && t.label("tag") == NO_MODEL);
        Ok(if seen {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("no {NO_MODEL} target: {}", describe(&targets)))
        })
    })
    .context("waiting for the new release's replica to be a target")?;
    let done = rollout::follow(NO_MODEL, before, ROLLOUT)?;
    ensure!(
        done.result == Verdict::RolledBack && done.level.map(|l| l.number()) == Some(1),
        "expected a level-1 rollback, got {}",
        rollout::describe(&done)
    );
    wait_firing("RolloutRolledBack", &[("level", "1")])?;
    wait_firing("DeploymentDegraded", &[])?;
    let after_rollback = wait_all_up(fx)?;
    Ok(format!(
        "{after_deploy} targets up after the deploy, {after_rollback} after the rollback; \
         RolloutRolledBack and DeploymentDegraded fired"
    ))
}
