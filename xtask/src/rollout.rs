//! The running controller as the task runner sees it: its /status, a tag
//! written into the live manifest, a rollout followed to its end. The one
//! place xtask (and the `e2e` crate, through it) names the controller's
//! /status types, so `stack`, `stages::deploy` and the scenarios share them.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
pub use controller_core::observed::Health;
pub use controller_core::record::{Finished, Level, StepName, Verdict};
pub use controller_core::status::{Phase, Status};

use crate::effects::http::Request;
use crate::effects::paths;
use crate::effects::poll::{self, Poll};

/// The controller API as `up` publishes it.
pub const ADDR: &str = "127.0.0.1:9300";

/// The controller's /status.
pub fn status() -> Result<Status> {
    let response =
        Request::get("/status").timeout(Duration::from_secs(5)).send(ADDR).with_context(|| {
            format!("the controller does not answer on {ADDR}: is the stack up (`cargo xtask up`)?")
        })?;
    if response.status != 200 {
        bail!("GET http://{ADDR}/status answered {}: {}", response.status, response.text());
    }
    response.parse()
}

/// Writes `tag` into the live manifest (in place, comments kept), as
/// `controller set-image --manifest` does.
pub fn set_tag(manifest: &Path, tag: &str) -> Result<()> {
    manifest_file::write_tag(manifest, tag)
        .with_context(|| format!("cannot set spec.image.tag in {}", manifest.display()))
}

/// A manifest's text with `tag` as its `spec.image.tag`, the rest kept.
pub fn with_tag(manifest: &str, tag: &str) -> Result<String> {
    controller_core::manifest::set_tag(manifest, tag).context("cannot set spec.image.tag")
}

/// Writes `tag` into the live manifest and follows the controller until
/// its rollout has ended; fails, with the level and the reason, when it
/// was rolled back. A tag already live finishes at once.
pub fn deploy(tag: &str, timeout: Duration) -> Result<()> {
    let before = status()
        .or_else(|_| {
            // Just started: give the controller a moment to listen.
            poll::until(Duration::from_secs(30), Duration::from_millis(200), || {
                Ok(match status() {
                    Ok(s) => Poll::Ready(s),
                    Err(e) => Poll::Pending(format!("{e:#}")),
                })
            })
        })
        .context("the controller is not running")?;
    if before.rollout.is_none()
        && before.active.tag.as_deref() == Some(tag)
        && before.desired.tag.as_deref() == Some(tag)
    {
        println!(
            "{tag} is already live in {}",
            before.active.color.map_or("-".into(), |c| c.to_string())
        );
        return Ok(());
    }
    let live = paths::live_manifest();
    set_tag(&live, tag)?;
    println!("deploying {tag}: spec.image.tag set in {}", live.display());
    let finished = follow(tag, newest_revision(&before), timeout)?;
    println!("{}", describe(&finished));
    if finished.result != Verdict::Succeeded {
        bail!("{}", describe(&finished));
    }
    Ok(())
}

/// Follows the controller until a rollout of `tag` that began after
/// `after_revision` has finished, printing each step as it happens, and
/// returns it. Fails when the manifest is refused or nothing finishes
/// within `timeout`.
pub fn follow(tag: &str, after_revision: u64, timeout: Duration) -> Result<Finished> {
    let deadline = Instant::now() + timeout;
    let mut said = String::new();
    let mut refused_since: Option<Instant> = None;
    loop {
        let s = status()?;
        // A refusal that outlasts the controller's next read of the file.
        match (&s.desired.error, refused_since) {
            (Some(error), Some(since)) if since.elapsed() > Duration::from_secs(3) => {
                bail!("the controller refused the manifest: {error}")
            }
            (Some(_), Some(_)) => {}
            (Some(_), None) => refused_since = Some(Instant::now()),
            (None, _) => refused_since = None,
        }
        if let Some(done) =
            s.history.iter().find(|f| f.summary.revision > after_revision && f.tag == tag)
        {
            return Ok(done.clone());
        }
        let now = match &s.rollout {
            Some(r) => format!(
                "rollout #{} of {} into {}: {}",
                r.summary.revision, r.tag, r.summary.color, r.step
            ),
            None => format!("{} (desired {})", s.phase, s.desired.tag.as_deref().unwrap_or("-")),
        };
        if now != said {
            println!("  controller: {now}");
            said = now;
        }
        if Instant::now() >= deadline {
            bail!("no rollout of {tag} finished within {timeout:?}; last seen: {said}");
        }
        sleep(Duration::from_millis(200));
    }
}

/// The newest revision in the history (0 when none has finished).
pub fn newest_revision(s: &Status) -> u64 {
    s.history.first().map_or(0, |f| f.summary.revision)
}

/// One line for a finished rollout.
pub fn describe(f: &Finished) -> String {
    let steps: Vec<String> =
        f.summary.steps.iter().map(|s| format!("{} {} ms", s.step, s.ms)).collect();
    let switched = f
        .healthy_to_switched_ms
        .map(|ms| format!("; healthy → switched {ms} ms"))
        .unwrap_or_default();
    match f.result {
        Verdict::Succeeded => format!(
            "rollout #{} of {} into {} succeeded in {} ms ({}){switched}",
            f.summary.revision,
            f.tag,
            f.summary.color,
            f.duration_ms,
            steps.join(", ")
        ),
        Verdict::RolledBack => format!(
            "rollout #{} of {} into {} was rolled back at level {}: {}",
            f.summary.revision,
            f.tag,
            f.summary.color,
            f.level.map_or(0, |l| l.number()),
            f.reason.as_deref().unwrap_or("no reason given")
        ),
    }
}
