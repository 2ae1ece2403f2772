//! A release is its digest, not its tag: the same tag pushed again with
//! another image deploys, and so does the same tag from another
//! repository; /status and the history name the digest each runs.

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bluegreen::{SERVICE_REPOSITORY, label, service_image};
use xtask::effects::docker::{self, docker};
use xtask::effects::paths::live_manifest;
use xtask::effects::poll::{self, Poll};
use xtask::effects::process::run;
use xtask::rollout::{self, Finished, Verdict};

use crate::fixture::{Fixture, manifest};
use crate::images::{GOOD_A, RELABELLED};

/// The tag the scenario pushes twice.
const TAG: &str = "e2e-repushed";
/// Another repository of the same registry, with the same tag.
const MIRROR: &str = "localhost:5000/taxi/e2e-mirror";

/// Pushes the image of `from` under `to`.
fn push_as(from: &str, to: &str) -> Result<()> {
    run(docker(["tag", from, to]))?;
    docker::push(to)
}

/// Waits for a succeeded rollout of TAG newer than `after`.
fn next_success(fx: &Fixture, after: u64) -> Result<Finished> {
    poll::until(Duration::from_secs(120), Duration::from_millis(200), || {
        let s = fx.status()?;
        Ok(match s.history.iter().find(|f| f.summary.revision > after && f.tag == TAG) {
            Some(f) if f.result == Verdict::Succeeded => Poll::Ready(f.clone()),
            Some(f) => Poll::Pending(format!("it ended {}", rollout::describe(f))),
            None => Poll::Pending(format!("phase {}, digest {:?}", s.phase, s.desired.digest)),
        })
    })
}

/// The label the live app container carries.
fn live_label(name: &str) -> Result<String> {
    let format = format!("{{{{index .Config.Labels \"{name}\"}}}}");
    docker::inspect(&bluegreen::container_name(bluegreen::Color::Green, 1), &format)
}

pub fn repushed_tag(fx: &Fixture) -> Result<String> {
    push_as(&service_image(GOOD_A), &service_image(TAG))?;
    fx.fresh(TAG)?;
    let first = fx.status()?;
    let old = first.active.digest.clone().context("/status names no digest for the live color")?;
    // Another image under the same tag.
    push_as(&service_image(RELABELLED), &service_image(TAG))?;
    let pushed = std::time::Instant::now();
    let done = next_success(fx, rollout::newest_revision(&first))?;
    let new = done.summary.digest.clone().context("the rollout recorded no digest")?;
    ensure!(new != old, "the re-pushed tag deployed the old digest {old}");
    let s = fx.status()?;
    ensure!(s.active.digest.as_deref() == Some(new.as_str()), "/status: {:?}", s.active);
    ensure!(live_label(label::DIGEST)? == new, "the container does not run {new}");
    let repushed_in = pushed.elapsed();
    // The same tag from another repository.
    push_as(&service_image(TAG), &format!("{MIRROR}:{TAG}"))?;
    let before = rollout::newest_revision(&s);
    let text = manifest(TAG, 1)?.replace(SERVICE_REPOSITORY, MIRROR);
    fs::write(live_manifest(), text)?;
    let moved = next_success(fx, before)?;
    ensure!(moved.summary.color == bluegreen::Color::Blue, "{}", rollout::describe(&moved));
    let image = docker::inspect(
        &bluegreen::container_name(bluegreen::Color::Blue, 1),
        &format!("{{{{index .Config.Labels \"{}\"}}}}", label::IMAGE),
    )?;
    ensure!(image == MIRROR, "the live container came from {image}, not {MIRROR}");
    Ok(format!(
        "re-pushed tag deployed {} → {} in {:.1} s; another repository deployed too",
        short(&old),
        short(&new),
        repushed_in.as_secs_f64()
    ))
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}
