//! Scenarios with hostile colors ([`images`](crate::images): the
//! `hostile` binary in a copy of the real service image): one answers a
//! prediction with 1 GiB, one accepts connections and never answers. They
//! prove end to end what the controller's `color_http` promises — it reads
//! only so much of an answer and waits only so long for one — and that
//! its loop stays responsive to a new tag and to SIGTERM while it waits.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use xtask::effects::docker::{self, docker};
use xtask::effects::paths::live_manifest;
use xtask::effects::poll::{self, Poll};
use xtask::effects::process::{cmd, run};
use xtask::rollout::{self, Finished, Phase, StepName, Verdict};

use crate::fixture::{CONTROLLER, Fixture, Traffic};
use crate::images::{GOOD_A, GOOD_B, HOSTILE_HUGE, HOSTILE_SILENT};

/// The controller's peak resident set may not pass this, hostile color or
/// not (KiB).
const PEAK_RSS_KIB: u64 = 64 << 10;
/// The cap the controller puts on a prediction's answer, as its reason
/// names it (`color_http`: 256 KiB for anything but an artifact or
/// /metrics).
const CAP_SAID: &str = "larger than 256 KiB";
/// A new tag or SIGTERM is acted on within this at any stage
/// (ARCHITECTURE.md, `reconciler`), plus the granularity of the look.
const RESPONSIVE: Duration = Duration::from_secs(1);
/// How often the scenarios look while they time the controller.
const LOOK_EVERY: Duration = Duration::from_millis(50);
/// What a silent color's rollout may take past the manifest's
/// healthTimeout: pulling, starting and removing it.
const MARGIN: Duration = Duration::from_secs(20);
/// The words of a reason that says the color did not answer in time.
const TOO_LATE: &[&str] = &["timed out", "did not answer", "no answer", "in time"];

/// (a) A new color whose predictions answer 1 GiB: refused at level 1 by
/// the size cap, traffic never leaves GOOD_A, and the controller's peak
/// memory stays small.
pub fn huge_answer(fx: &Fixture) -> Result<String> {
    // `fresh` removes the controller's container and starts a new one, so
    // its peak so far is its start and GOOD_A's rollout only.
    fx.fresh(GOOD_A)?;
    let (pid, restarts) = (controller_pid()?, fx.restart_count()?);
    let before = peak_rss_kib(&pid)?;
    let traffic = Traffic::start();
    let done = fx.deploy(HOSTILE_HUGE);
    // Right after the rollout ended, before anything else runs.
    let peak = peak_rss_kib(&pid);
    let sent = traffic.expect_only(&[("blue", GOOD_A)]);
    let done = done?;
    // A controller killed for its memory and restarted would show the
    // small peak of its new process: that must not pass.
    ensure!(
        fx.restart_count()? == restarts && controller_pid()? == pid,
        "the controller was restarted during the rollout (out of memory?): {}",
        rollout::describe(&done)
    );
    let (peak, sent) = (peak?, sent?);
    rolled_back(&done, 1)?;
    let reason = done.reason.clone().unwrap_or_default();
    ensure!(
        reason.contains(CAP_SAID) && reason.contains("/api/predict"),
        "the reason {reason:?} does not name the prediction's size cap ({CAP_SAID:?})"
    );
    ensure!(
        peak < PEAK_RSS_KIB,
        "the controller's peak RSS is {} (before the deploy {}), over {}",
        mib(peak),
        mib(before),
        mib(PEAK_RSS_KIB)
    );
    refused(fx, HOSTILE_HUGE)?;
    Ok(format!(
        "level 1 ({reason}); controller peak RSS (VmHWM) {} after, {} before the deploy \
         (new process since fresh), under {}; {sent} requests all served by blue",
        mib(peak),
        mib(before),
        mib(PEAK_RSS_KIB)
    ))
}

/// (b) A new color that is Docker-healthy but never answers, in three
/// runs from a fresh stack each: a new tag while the controller waits on
/// it, SIGTERM while it waits, and left alone. Every run is reported; a
/// failed one keeps the controller's last lines (the next run's `fresh`
/// replaces its container) and is cleaned up after.
pub fn silent_color(fx: &Fixture) -> Result<String> {
    type Part = fn(&Fixture) -> Result<String>;
    let parts: [(&str, Part); 3] = [
        ("new tag while waiting", new_tag_while_waiting),
        ("SIGTERM while waiting", sigterm_while_waiting),
        ("left alone", left_alone),
    ];
    let mut said = Vec::new();
    let mut logs = Vec::new();
    for (name, part) in parts {
        match part(fx) {
            Ok(what) => said.push(format!("{name}: {what}")),
            Err(e) => {
                logs.push(format!(
                    "--- the controller's last lines ({name}) ---\n{}",
                    fx.controller_log()
                ));
                let cleanup = match recover(fx) {
                    Ok(()) => String::new(),
                    Err(c) => format!(" (and the cleanup failed: {c:#})"),
                };
                said.push(format!("{name}: FAILED: {e:#}{cleanup}"));
            }
        }
    }
    if !logs.is_empty() {
        bail!("{}\n{}", said.join("; "), logs.join("\n"));
    }
    Ok(said.join("; "))
}

/// (i) A new tag written while the controller waits on the silent color
/// is on /status as its rollout within a second.
fn new_tag_while_waiting(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let before = rollout::newest_revision(&fx.status()?);
    fx.set_tag(HOSTILE_SILENT)?;
    fx.wait_for_step(StepName::Gates)?;
    let written = Instant::now();
    rollout::set_tag(&live_manifest(), GOOD_B)?;
    let mut slowest = Duration::ZERO;
    let mut acted = None;
    let shown = poll::until(RESPONSIVE * 10, LOOK_EVERY, || {
        let asked = Instant::now();
        let s = fx.status()?;
        slowest = slowest.max(asked.elapsed());
        let waiting = s
            .rollout
            .as_ref()
            .is_some_and(|r| r.tag == HOSTILE_SILENT && r.step == StepName::Gates);
        if acted.is_none() && s.desired.tag.as_deref() == Some(GOOD_B) && !waiting {
            acted = Some(written.elapsed());
        }
        Ok(match &s.rollout {
            Some(r) if r.tag == GOOD_B => Poll::Ready(written.elapsed()),
            Some(r) => Poll::Pending(format!("the rollout of {} at step {}", r.tag, r.step)),
            None => Poll::Pending(format!("no rollout in flight, phase {}", s.phase)),
        })
    })
    .context("waiting for the new tag's rollout on /status")?;
    let bound = RESPONSIVE + LOOK_EVERY + slowest;
    let acted = acted.unwrap_or(shown);
    ensure!(
        shown <= bound,
        "the new tag's rollout was on /status {} ms after the write (the manifest was acted on \
         after {} ms), over {} ms",
        shown.as_millis(),
        acted.as_millis(),
        bound.as_millis()
    );
    let done = rollout::follow(GOOD_B, before, Duration::from_secs(90))?;
    ensure!(done.result == Verdict::Succeeded, "{}", rollout::describe(&done));
    let s = fx.status()?;
    match s.history.iter().find(|f| f.tag == HOSTILE_SILENT && f.summary.revision > before) {
        Some(f) => {
            rolled_back(f, 1)?;
            let reason = f.reason.as_deref().unwrap_or_default();
            ensure!(reason.contains("superseded"), "the silent rollout ended with {reason:?}");
        }
        None => bail!("the silent rollout is not in the history: {:?}", s.history),
    }
    fx.expect_live(&done.summary.color.to_string(), GOOD_B, 1)?;
    Ok(format!(
        "the tag acted on after {} ms, its rollout on /status after {} ms (bound {} ms: 1 s, \
         the {} ms look and its slowest /status); then {GOOD_B} live",
        acted.as_millis(),
        shown.as_millis(),
        bound.as_millis(),
        LOOK_EVERY.as_millis()
    ))
}

/// (ii) SIGTERM while the controller waits on the silent color: it exits
/// within a second, Docker's restart policy brings it back, and it ends
/// the rollout it resumed as a level-1 rollback.
///
/// The signal goes to the process (`kill -TERM` of its host pid), not
/// through `docker kill -s TERM`: Docker takes a fatal signal sent by
/// `docker kill` as a deliberate stop and applies no restart policy
/// after it.
fn sigterm_while_waiting(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let before = rollout::newest_revision(&fx.status()?);
    fx.set_tag(HOSTILE_SILENT)?;
    fx.wait_for_step(StepName::Gates)?;
    let restarts = fx.restart_count()?;
    let pid = controller_pid()?;
    let signalled = Instant::now();
    run(cmd("kill", ["-TERM", pid.as_str()]))?;
    let mut slowest = Duration::ZERO;
    let exited = poll::until(Duration::from_secs(30), LOOK_EVERY, || {
        let asked = Instant::now();
        let seen = docker::inspect(CONTROLLER, "{{.State.Running}} {{.State.Pid}}")?;
        slowest = slowest.max(asked.elapsed());
        Ok(match seen.split_once(' ') {
            // The same process still runs.
            Some(("true", now)) if now == pid => Poll::Pending("running".into()),
            // Not running, or already running again as another process:
            // the restart may be quicker than a look.
            _ => Poll::Ready(signalled.elapsed()),
        })
    })
    .context("waiting for the controller to exit after SIGTERM")?;
    fx.wait_restarted(restarts)?;
    let back = signalled.elapsed();
    let bound = RESPONSIVE + LOOK_EVERY + slowest;
    ensure!(
        exited <= bound,
        "the controller ran {} ms after SIGTERM, over {} ms",
        exited.as_millis(),
        bound.as_millis()
    );
    let done = rollout::follow(HOSTILE_SILENT, before, Duration::from_secs(90))?;
    rolled_back(&done, 1)?;
    ensure!(done.summary.restarts >= 1, "the history does not show the restart: {done:?}");
    refused(fx, HOSTILE_SILENT)?;
    Ok(format!(
        "the controller exited {} ms after SIGTERM (bound {} ms), answered again after {} ms; \
         the resumed rollout: level 1 ({})",
        exited.as_millis(),
        bound.as_millis(),
        back.as_millis(),
        done.reason.unwrap_or_default()
    ))
}

/// (iii) Left alone, the silent color is refused at level 1, past Docker's
/// health and at the gates, within the health timeout and a margin, for
/// not answering in time; GOOD_A serves throughout.
fn left_alone(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let limit = health_timeout()? + MARGIN;
    let traffic = Traffic::start();
    let asked = Instant::now();
    let done = fx.deploy(HOSTILE_SILENT);
    let took = asked.elapsed();
    let sent = traffic.expect_only(&[("blue", GOOD_A)]);
    let (done, sent) = (done?, sent?);
    rolled_back(&done, 1)?;
    let reason = done.reason.clone().unwrap_or_default();
    ensure!(
        done.summary.steps.iter().any(|s| s.step == StepName::Gates),
        "the silent color never reached the gates (Docker health stopped it?): {reason}"
    );
    ensure!(
        says_too_late(&reason),
        "the reason {reason:?} does not say the color did not answer in time (none of {TOO_LATE:?})"
    );
    ensure!(
        took <= limit,
        "the silent rollout took {:.1} s, over the health timeout and {} s",
        took.as_secs_f64(),
        MARGIN.as_secs()
    );
    refused(fx, HOSTILE_SILENT)?;
    let gates = done.summary.steps.iter().find(|s| s.step == StepName::Gates).map_or(0, |s| s.ms);
    Ok(format!(
        "level 1 after {:.1} s (limit {:.0} s; gates {gates} ms): {reason}; {sent} requests all \
         served by blue",
        took.as_secs_f64(),
        limit.as_secs_f64()
    ))
}

/// Whether a reason says a color did not answer in time.
fn says_too_late(reason: &str) -> bool {
    let lower = reason.to_lowercase();
    TOO_LATE.iter().any(|w| lower.contains(w))
}

/// A level-`level` rollback (the reason is each scenario's to check).
fn rolled_back(f: &Finished, level: u8) -> Result<()> {
    ensure!(
        f.result == Verdict::RolledBack && f.level.map(|l| l.number()) == Some(level),
        "expected a level-{level} rollback, got {}",
        rollout::describe(f)
    );
    Ok(())
}

/// After a refused rollout of `tag`: GOOD_A serves from blue alone, the
/// phase is Degraded, and the tag is not tried again.
fn refused(fx: &Fixture, tag: &str) -> Result<()> {
    fx.expect_live("blue", GOOD_A, 1)?;
    let s = fx.status()?;
    ensure!(s.phase == Phase::Degraded, "phase {} after a rollback", s.phase);
    ensure!(s.desired.tag.as_deref() == Some(tag), "desired {:?}", s.desired.tag);
    let rollouts = s.history.len();
    // Longer than the controller's resync: no retry of the failed tag.
    std::thread::sleep(Duration::from_secs(6));
    let s = fx.status()?;
    ensure!(
        s.history.len() == rollouts && s.rollout.is_none(),
        "the failed tag was tried again: {:?}",
        s.rollout
    );
    Ok(())
}

/// After a failed run: the controller running and answering (Docker's
/// restart policy may not have brought it back), and no hostile color
/// left — the controller's own rollback given time to remove it, else
/// removed here. The next scenario's `fresh` rebuilds the stack anyway;
/// this keeps the controller (and its log, for the report) there.
fn recover(fx: &Fixture) -> Result<()> {
    if docker::inspect(CONTROLLER, "{{.State.Running}}")? != "true" {
        run(docker(["start", CONTROLLER]))?;
    }
    poll::until(Duration::from_secs(30), Duration::from_millis(200), || {
        Ok(match fx.status() {
            Ok(_) => Poll::Ready(()),
            Err(e) => Poll::Pending(format!("not answering: {e:#}")),
        })
    })?;
    let hostile = || -> Result<Vec<String>> {
        let apps = fx.apps()?;
        Ok(apps.into_iter().filter(|a| a.tag.starts_with("e2e-hostile-")).map(|a| a.name).collect())
    };
    let left = poll::until(Duration::from_secs(60), Duration::from_millis(500), || {
        let left = hostile()?;
        Ok(if left.is_empty() { Poll::Ready(()) } else { Poll::Pending(format!("{left:?}")) })
    });
    if left.is_err() {
        let names = hostile()?;
        if !names.is_empty() {
            run(docker(["rm", "-f"].into_iter().map(str::to_owned).chain(names)))?;
        }
    }
    Ok(())
}

/// The controller's process id on this host (where `docker inspect`
/// reports it and /proc shows it).
fn controller_pid() -> Result<String> {
    let pid = docker::inspect(CONTROLLER, "{{.State.Pid}}")?;
    ensure!(!pid.is_empty() && pid != "0", "{CONTROLLER} is not running");
    Ok(pid)
}

/// A process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib(pid: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path)
        .with_context(|| format!("cannot read {path} (the scenarios run on the Docker host)"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("{path} gives no VmHWM in kB"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The live manifest's `spec.healthTimeout`, in whole seconds as the
/// scenario manifest writes it.
fn health_timeout() -> Result<Duration> {
    let text = fs::read_to_string(live_manifest())?;
    let seconds = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("healthTimeout:"))
        .and_then(|v| v.split('#').next()?.trim().strip_suffix('s')?.parse().ok())
        .context("the live manifest has no healthTimeout in seconds")?;
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_must_say_the_color_was_too_late() {
        // What reqwest's error says of a timeout, without its causes.
        let bare = "cannot read the new model: GET http://172.18.0.5:32000/model: error sending \
                    request for url (http://172.18.0.5:32000/model)";
        assert!(!says_too_late(bare));
        assert!(says_too_late(&format!("{bare}: operation timed out")));
        assert!(says_too_late("GET /model: green did not answer within 5s"));
        assert!(!says_too_late("green not healthy within 40s"));
    }

    #[test]
    fn reads_a_peak_resident_set() {
        let peak = peak_rss_kib(&std::process::id().to_string()).unwrap();
        assert!(peak > 0 && peak < PEAK_RSS_KIB * 64, "{peak} KiB");
        assert!(peak_rss_kib("0").is_err());
    }
}
