//! Rollouts as the task runner sees them through the running controller: its /status, a tag
//! written into the live manifest, and a rollout followed to its end.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use controller::record::Finished;
use controller::record::Outcome;
use controller::status::Status;

use crate::effects::http::Request;

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
    controller::manifest_file::write_tag(manifest, tag)
        .with_context(|| format!("cannot set spec.image.tag in {}", manifest.display()))
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
        if let Some(done) = s.history.iter().find(|f| f.revision > after_revision && f.tag == tag) {
            return Ok(done.clone());
        }
        let now = match &s.rollout {
            Some(r) => format!("rollout #{} of {} into {}: {}", r.revision, r.tag, r.color, r.step),
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
    s.history.first().map_or(0, |f| f.revision)
}

/// One line for a finished rollout.
pub fn describe(f: &Finished) -> String {
    let steps: Vec<String> = f.steps.iter().map(|s| format!("{} {} ms", s.step, s.ms)).collect();
    let switched = f
        .healthy_to_switched_ms
        .map(|ms| format!("; healthy → switched {ms} ms"))
        .unwrap_or_default();
    match f.result {
        Outcome::Succeeded => format!(
            "rollout #{} of {} into {} succeeded in {} ms ({}){switched}",
            f.revision,
            f.tag,
            f.color,
            f.duration_ms,
            steps.join(", ")
        ),
        Outcome::RolledBack => format!(
            "rollout #{} of {} into {} was rolled back at level {}: {}",
            f.revision,
            f.tag,
            f.color,
            f.level.unwrap_or(0),
            f.reason.as_deref().unwrap_or("no reason given")
        ),
    }
}
