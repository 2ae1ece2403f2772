//! The webhook on the real stack: a receiver in a container of its own on
//! the stack's monitoring network (the controller's API refuses the app
//! network, and the webhook needs no more), the controller recreated
//! with `--webhook` pointing at it, then a deploy, a paused rollout
//! promoted by the CLI and a level-1 rollback. The receiver must get every
//! event in order, each finished one with the fields of the history, and
//! refuses the first delivery so that a retry is part of it.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use bluegreen::{PROJECT, label};
use xtask::effects::docker::docker;
use xtask::effects::http::Request;
use xtask::effects::poll::{self, Poll};
use xtask::effects::process::{output, run};
use xtask::rollout::{self, Verdict};
use xtask::stack::{self, MONITORING_NETWORK, Notify};

use crate::fixture::Fixture;
use crate::images::{GOOD_A, GOOD_B, NO_MODEL, WEBHOOK_RECEIVER};

/// The receiver's container, named and labelled as the stack's, so that
/// clearing the stack removes it too.
const RECEIVER: &str = "taxi-fare_e2e_webhook";
const PORT: u16 = 8080;
/// How long a delivery may take to arrive: five tries, 1 s doubling.
const ARRIVES: Duration = Duration::from_secs(40);

/// The event bodies the receiver printed, in the order it got them.
fn received() -> Result<Vec<Value>> {
    let printed = output(docker(["logs", RECEIVER]))?;
    printed
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

fn names(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["event"].as_str().unwrap_or("?").to_owned()).collect()
}

/// Waits until the receiver holds `count` events.
fn until_received(count: usize) -> Result<Vec<Value>> {
    poll::until(ARRIVES, Duration::from_millis(200), || {
        let events = received()?;
        Ok(if events.len() >= count {
            Poll::Ready(events)
        } else {
            Poll::Pending(format!("{} events so far: {:?}", events.len(), names(&events)))
        })
    })
    .context("waiting for the webhook's events")
}

/// The history of /status as JSON, newest first.
fn history() -> Result<Vec<Value>> {
    let r = Request::get("/status").timeout(Duration::from_secs(5)).send(rollout::ADDR)?;
    ensure!(r.status == 200, "/status answered {}", r.status);
    let status: Value = serde_json::from_str(&r.text())?;
    Ok(status["history"].as_array().cloned().unwrap_or_default())
}

pub fn events_in_order(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    run(docker([
        "run",
        "-d",
        "--name",
        RECEIVER,
        "--label",
        &format!("{}={PROJECT}", label::PROJECT),
        "--network",
        MONITORING_NETWORK,
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        "-e",
        "REFUSE_FIRST=1",
        WEBHOOK_RECEIVER,
    ]))?;
    let notify = Notify {
        webhook: Some(format!("http://{RECEIVER}:{PORT}/hooks/rollouts")),
        webhook_format: "json".into(),
    };
    stack::restart_controller(fx.tool, &fx.built_as(GOOD_A), &notify)?;
    poll::until(Duration::from_secs(30), Duration::from_millis(200), || {
        Ok(match fx.status() {
            Ok(s) if s.notifications.is_some() => Poll::Ready(()),
            Ok(_) => Poll::Pending("the controller has no webhook".into()),
            Err(e) => Poll::Pending(format!("{e:#}")),
        })
    })
    .context("the recreated controller with its webhook")?;

    fx.deploy_ok(GOOD_B)?;
    fx.pause(GOOD_A)?;
    let before = fx.status()?.history.len() as u64;
    fx.cli(&["promote"])?;
    let promoted = rollout::follow(GOOD_A, before, Duration::from_secs(90))?;
    ensure!(promoted.result == Verdict::Succeeded, "{}", rollout::describe(&promoted));
    let failed = fx.deploy(NO_MODEL)?;
    ensure!(failed.result == Verdict::RolledBack, "{}", rollout::describe(&failed));

    let expected = [
        "started",
        "succeeded",
        "started",
        "paused",
        "promoted",
        "succeeded",
        "started",
        "rolled_back",
    ];
    let events = until_received(expected.len())?;
    ensure!(
        names(&events) == expected,
        "the receiver got {:?}, expected {expected:?}",
        names(&events)
    );
    let tags = [GOOD_B, GOOD_B, GOOD_A, GOOD_A, GOOD_A, GOOD_A, NO_MODEL, NO_MODEL];
    for (e, tag) in events.iter().zip(tags) {
        ensure!(e["tag"] == tag, "event {e} is not of {tag}");
    }
    // Each finished event is the history's entry, field for field.
    let history = history()?;
    for e in events.iter().filter(|e| e["event"] == "succeeded" || e["event"] == "rolled_back") {
        let entry = history
            .iter()
            .find(|h| h["revision"] == e["revision"])
            .with_context(|| format!("no history entry of revision {}", e["revision"]))?;
        let mut fields = e.clone();
        if let Some(map) = fields.as_object_mut() {
            map.remove("event");
        }
        ensure!(&fields == entry, "the event {e} differs from the history's {entry}");
    }
    let last = &events[expected.len() - 1];
    ensure!(last["level"] == 1, "the rollback's event says level {}", last["level"]);
    let reason = last["reason"].as_str().unwrap_or("");
    ensure!(!reason.is_empty(), "the rollback's event has no reason");
    let n = fx.status()?.notifications.context("no notifications on /status")?;
    ensure!(n.sent == expected.len() as u64 && n.failed == 0, "/status says {n:?}");
    Ok(format!(
        "{} events in order ({}), the first delivered on its second try; the rollback's reason: {reason}",
        events.len(),
        names(&events).join(", ")
    ))
}
