//! The scenarios, each from a clean stack, each asserting what traffic
//! through nginx saw, which containers exist and what /status says.

use std::fs;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Result, ensure};
use xtask::api;
use xtask::effects::http::Request;
use xtask::effects::paths::live_manifest;
use xtask::effects::poll::{self, Poll};
use xtask::rollout::{self, Finished, Phase, StepName, Verdict};
use xtask::stack;

use crate::fixture::{Fixture, Traffic, manifest};
use crate::hostile;
use crate::images::{
    GOLDEN_MISMATCH, GOOD_A, GOOD_B, NEVER_BUILT, NO_MODEL, SHORT_TIMEOUT, WORSE_MODEL, WRONG_PORT,
};
use crate::load::{Connection, Load};

pub use crate::fixture::Scenario;

pub const ALL: &[Scenario] = &[
    ("good deploy", good_deploy),
    ("second deploy, back to the first color", back_to_first_color),
    ("level 1: never healthy", level_1_never_healthy),
    ("level 2: unreachable through nginx", level_2_unreachable),
    ("tag not in the registry", tag_not_in_registry),
    ("malformed manifest, then its fix", malformed_manifest),
    ("SIGKILL after starting the new color", crash_after_start),
    ("SIGKILL while waiting for health", kill_during_health),
    ("SIGKILL after writing upstream.conf, before the reload", crash_before_reload),
    ("SIGKILL after the reload, before the probe", crash_before_probe),
    ("SIGKILL during scale-down", kill_during_scale_down),
    ("tag change during a rollout", tag_change_during_rollout),
    ("controller rollback", rollback),
    ("replicas 2", replicas_2),
    ("under load: deploys and rollbacks lose no request", under_load),
    ("SIGKILL of the only live replica: served again", replica_killed),
    ("live replicas stopped, killed, removed, scaled: kept in place", live_kept_in_place),
    ("router killed, edge stopped: brought back, Degraded meanwhile", traffic_tier_brought_back),
    ("a re-pushed tag and another repository deploy", crate::identity::repushed_tag),
    ("gate: golden trips mismatch", golden_mismatch),
    ("gate: a worse model", worse_model),
    ("gate: a good model's diff is recorded", good_model_diff),
    ("analysis: 5xx under live traffic rolls back at level 3", level_3_under_traffic),
    (
        "analysis: a flood of large batches does not roll a good release back",
        crate::flood::flood_during_analysis,
    ),
    ("pause, preview on 8081, promote", pause_promote_scenario),
    ("pause, abort", pause_abort),
    ("status page: paused and rolled back, drawn by headless Chromium", crate::page::status_page),
    (
        "webhook: every rollout event reaches a receiver, in order",
        crate::notifications::events_in_order,
    ),
    ("app network reaching the controller's API: refused", crate::privilege::app_network_refused),
    ("prometheus: every target up, a rollback alert fires", crate::prometheus::targets_and_alerts),
    (
        "50 concurrent set-image calls: a valid manifest, one rollout at a time",
        crate::privilege::concurrent_set_image,
    ),
    ("app containers run with the manifest's memory and pids limits", crate::privilege::limits),
    (
        "hostile image: a 1 GiB answer is refused at level 1, the controller stays small",
        hostile::huge_answer,
    ),
    (
        "hostile image: a color that never answers is refused within its deadline, the loop stays responsive",
        hostile::silent_color,
    ),
    ("canary: 10% → 50% → 100% under sticky load", crate::canary::canary_steps),
    ("shadow: matching answers promoted", crate::canary::shadow_promotes),
    ("shadow: a model $3 off refused, users saw stable fares", crate::canary::shadow_refuses),
];

fn rolled_back(f: &Finished, level: u8, reason_has: &str) -> Result<()> {
    ensure!(
        f.result == Verdict::RolledBack && f.level.map(|l| l.number()) == Some(level),
        "expected a level-{level} rollback, got {f:?}"
    );
    let reason = f.reason.clone().unwrap_or_default();
    ensure!(reason.contains(reason_has), "the reason {reason:?} does not mention {reason_has:?}");
    Ok(())
}

fn switch_ms(f: &Finished) -> String {
    f.healthy_to_switched_ms.map_or("-".into(), |ms| format!("{ms} ms"))
}

fn good_deploy(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let traffic = Traffic::start();
    let done = fx.deploy_ok(GOOD_B)?;
    let sent = traffic.expect_only(&[("blue", GOOD_A), ("green", GOOD_B)])?;
    fx.expect_live("green", GOOD_B, 1)?;
    let s = fx.status()?;
    ensure!(s.phase == Phase::Healthy, "phase {}", s.phase);
    ensure!(s.last.as_ref() == Some(&done) && s.history.len() == 2, "history {:?}", s.history);
    Ok(format!("green live, {sent} requests all 200, healthy → switched {}", switch_ms(&done)))
}

fn back_to_first_color(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    fx.deploy_ok(GOOD_B)?;
    let traffic = Traffic::start();
    let done = fx.deploy_ok(GOOD_A)?;
    let sent = traffic.expect_only(&[("green", GOOD_B), ("blue", GOOD_A)])?;
    fx.expect_live("blue", GOOD_A, 1)?;
    ensure!(done.summary.color.to_string() == "blue", "went to {}", done.summary.color);
    Ok(format!("blue live again, {sent} requests all 200, healthy → switched {}", switch_ms(&done)))
}

/// After a failed rollout: the old color serves, the new one is gone, the
/// phase is Degraded, and the tag is not retried.
fn expect_refused(fx: &Fixture, tag: &str) -> Result<()> {
    fx.expect_live("blue", GOOD_A, 1)?;
    let s = fx.status()?;
    ensure!(s.phase == Phase::Degraded, "phase {} after a rollback", s.phase);
    ensure!(s.desired.tag.as_deref() == Some(tag), "desired {:?}", s.desired.tag);
    let rollouts = s.history.len();
    // Longer than the controller's resync: no retry of the failed tag.
    sleep(Duration::from_secs(6));
    let s = fx.status()?;
    ensure!(
        s.history.len() == rollouts && s.rollout.is_none(),
        "the failed tag was retried: {:?}",
        s.rollout
    );
    Ok(())
}

fn level_1_never_healthy(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let traffic = Traffic::start();
    let done = fx.deploy(NO_MODEL)?;
    let sent = traffic.expect_only(&[("blue", GOOD_A)])?;
    rolled_back(&done, 1, "healthy")?;
    expect_refused(fx, NO_MODEL)?;
    Ok(format!("level 1 ({}); {sent} requests all served by blue", done.reason.unwrap_or_default()))
}

fn level_2_unreachable(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let done = fx.deploy(WRONG_PORT)?;
    rolled_back(&done, 2, "probe")?;
    ensure!(fx.upstream()?.contains("app_blue"), "upstream.conf was not restored");
    expect_refused(fx, WRONG_PORT)?;
    Ok(format!("level 2 ({})", done.reason.unwrap_or_default()))
}

fn tag_not_in_registry(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let traffic = Traffic::start();
    let done = fx.deploy(NEVER_BUILT)?;
    let sent = traffic.expect_only(&[("blue", GOOD_A)])?;
    rolled_back(&done, 1, "pull")?;
    expect_refused(fx, NEVER_BUILT)?;
    Ok(format!("level 1 ({}); {sent} requests all served by blue", done.reason.unwrap_or_default()))
}

fn malformed_manifest(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let live = live_manifest();
    let mut seen = Vec::new();
    for (broken, field) in [
        (format!("{}\nspec: [unclosed\n", fs::read_to_string(&live)?), "manifest"),
        (manifest(GOOD_B, 1)?.replace("replicas: 1", "replicas: 0"), "spec.replicas"),
        (manifest(GOOD_B, 1)?.replace("replicas: 1", "replica: 1"), "unknown field"),
    ] {
        fs::write(&live, broken)?;
        let previous = seen.last().cloned();
        let error = poll::until(Duration::from_secs(15), Duration::from_millis(100), || {
            let s = fx.status()?;
            Ok(match s.desired.error {
                Some(e) if e.contains(field) && Some(&e) != previous.as_ref() => Poll::Ready(e),
                other => Poll::Pending(format!("desired.error {other:?}")),
            })
        })?;
        // The last valid desired state stays; traffic is untouched.
        let s = fx.status()?;
        ensure!(s.desired.tag.as_deref() == Some(GOOD_A), "desired became {:?}", s.desired.tag);
        fx.expect_live("blue", GOOD_A, 1)?;
        seen.push(error);
    }
    fs::write(&live, manifest(GOOD_B, 1)?)?;
    let before = fx.status()?.history.len() as u64;
    let done = rollout::follow(GOOD_B, before, Duration::from_secs(90))?;
    ensure!(done.result == Verdict::Succeeded, "the fixed manifest's rollout: {done:?}");
    ensure!(fx.status()?.desired.error.is_none(), "the error stayed after the fix");
    fx.expect_live("green", GOOD_B, 1)?;
    Ok(format!("refused with: {}", seen.join(" | ")))
}

/// A rollout of GOOD_B that the controller's death interrupted converges:
/// green serves, blue is gone, the history keeps the rollout with the
/// restart.
fn expect_converged(fx: &Fixture, restarts_before: u32) -> Result<String> {
    let before = 0;
    let done = rollout::follow(GOOD_B, before, Duration::from_secs(90))?;
    ensure!(done.result == Verdict::Succeeded, "{done:?}");
    ensure!(done.summary.restarts >= 1, "the history does not show the restart: {done:?}");
    ensure!(fx.restart_count()? > restarts_before, "the controller was not restarted");
    fx.expect_live("green", GOOD_B, 1)?;
    ensure!(fx.status()?.phase == Phase::Healthy, "not Healthy after converging");
    Ok(format!(
        "converged after {} restart(s); rollout took {} ms",
        done.summary.restarts, done.duration_ms
    ))
}

fn crash_point(fx: &Fixture, point: &str) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let restarts = fx.restart_count()?;
    fx.crash_at(point)?;
    fx.set_tag(GOOD_B)?;
    fx.wait_restarted(restarts)?;
    expect_converged(fx, restarts)
}

fn crash_after_start(fx: &Fixture) -> Result<String> {
    crash_point(fx, "after_start")
}

fn crash_before_reload(fx: &Fixture) -> Result<String> {
    crash_point(fx, "after_upstream_write")
}

fn crash_before_probe(fx: &Fixture) -> Result<String> {
    crash_point(fx, "after_reload")
}

fn kill_during_health(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let restarts = fx.restart_count()?;
    fx.set_tag(GOOD_B)?;
    fx.wait_for_step(StepName::Health)?;
    fx.kill_controller()?;
    expect_converged(fx, restarts)
}

fn kill_during_scale_down(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let restarts = fx.restart_count()?;
    fx.set_tag(GOOD_B)?;
    fx.wait_for_step(StepName::ScaleDown)?;
    fx.kill_controller()?;
    expect_converged(fx, restarts)
}

fn tag_change_during_rollout(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    fx.set_tag(NO_MODEL)?;
    fx.wait_for_step(StepName::Health)?;
    let done = fx.deploy_ok(GOOD_B)?;
    let s = fx.status()?;
    let superseded = s.history.iter().find(|f| f.tag == NO_MODEL);
    match superseded {
        Some(f) => rolled_back(f, 1, "superseded")?,
        None => anyhow::bail!("the interrupted rollout is not in the history: {:?}", s.history),
    }
    fx.expect_live(&done.summary.color.to_string(), GOOD_B, 1)?;
    Ok(format!("{NO_MODEL} superseded at level 1, then {GOOD_B} live in {}", done.summary.color))
}

fn rollback(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    fx.deploy_ok(GOOD_B)?;
    let before = fx.status()?.history.len() as u64;
    let said = fx.cli(&["rollback"])?;
    ensure!(said.contains(GOOD_A), "`controller rollback` said {said:?}");
    let done = rollout::follow(GOOD_A, before, Duration::from_secs(90))?;
    ensure!(done.result == Verdict::Succeeded, "{done:?}");
    fx.expect_live("blue", GOOD_A, 1)?;
    let history = fx.cli(&["history"])?;
    ensure!(history.lines().count() >= 3, "`controller history` printed {history:?}");
    Ok(format!("`controller rollback` went back to {GOOD_A} in blue"))
}

fn replicas_2(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let before = fx.status()?.history.len() as u64;
    fs::write(live_manifest(), manifest(GOOD_B, 2)?)?;
    let traffic = Traffic::start();
    let done = rollout::follow(GOOD_B, before, Duration::from_secs(90))?;
    let sent = traffic.expect_only(&[("blue", GOOD_A), ("green", GOOD_B)])?;
    ensure!(done.result == Verdict::Succeeded, "{done:?}");
    fx.expect_live("green", GOOD_B, 2)?;
    let upstream = fx.upstream()?;
    for n in 1..=2 {
        let server = format!("taxi-fare_app_green_{n}:");
        ensure!(upstream.contains(&server), "upstream.conf lacks {server}: {upstream}");
    }
    Ok(format!("2 green replicas behind nginx, {sent} requests all 200"))
}

/// Keep-alive and per-request clients through nginx while two good
/// deploys, a level-2 and a level-1 rollback happen: not one request may
/// fail, and every answer is the built model's.
fn under_load(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let expected = fx.expected_answer()?;
    let load =
        Load::start(&stack::front(), &api::documented_request(), 4, 2, Duration::from_secs(240));
    let steps = (|| -> Result<()> {
        fx.deploy_ok(GOOD_B)?;
        rolled_back(&fx.deploy(WRONG_PORT)?, 2, "probe")?;
        fx.deploy_ok(GOOD_A)?;
        rolled_back(&fx.deploy(NO_MODEL)?, 1, "healthy")
    })();
    let report = load.stop();
    steps?;
    let failures = report.failures();
    ensure!(
        failures.is_empty(),
        "{} of {} requests failed; the first: {:?}",
        failures.len(),
        report.samples.len(),
        failures.iter().take(3).collect::<Vec<_>>()
    );
    let wrong = report.wrong_answers(&[expected]);
    ensure!(wrong.is_empty(), "{} answers were not the model's: {:?}", wrong.len(), wrong.first());
    let (kept, ..) = report.counts(Some(Connection::KeepAlive));
    let (fresh, ..) = report.counts(Some(Connection::PerRequest));
    let (_, p99, max) = report.latency(None, None);
    Ok(format!(
        "{kept} keep-alive + {fresh} per-request POSTs, 0 failed, p99 {:.1} ms, max {:.0} ms",
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    ))
}

/// Docker's restart policy brings a killed replica back (with a new
/// address), and the controller has nginx resolve it again: traffic
/// returns without a rollout.
fn replica_killed(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let rollouts = fx.status()?.history.len();
    let killed = std::time::Instant::now();
    fx.kill_process_of("taxi-fare_app_blue_1")?;
    fx.wait_served_by("blue", Duration::from_secs(60))?;
    let outage = killed.elapsed();
    fx.expect_live("blue", GOOD_A, 1)?;
    ensure!(fx.status()?.history.len() == rollouts, "a rollout was started instead");
    Ok(format!("served again {:.1} s after the kill, no rollout", outage.as_secs_f64()))
}

/// The live color is kept whole in place, as a ReplicaSet would, under
/// load: a replica stopped, one `docker kill`ed and one removed are each
/// put back with no rollout and no failed request; `spec.replicas` alone
/// scales 1 → 2 → 3 → 1 in place; a deploy right after succeeds.
fn live_kept_in_place(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let rollouts = fx.status()?.history.len();
    let scale = |replicas: u32| -> Result<Duration> {
        let asked = std::time::Instant::now();
        fs::write(live_manifest(), manifest(GOOD_A, replicas)?)?;
        fx.wait_whole("blue", GOOD_A, replicas as usize)?;
        Ok(asked.elapsed())
    };
    let up = scale(2)?;
    let expected = fx.expected_answer()?;
    let load =
        Load::start(&stack::front(), &api::documented_request(), 2, 2, Duration::from_secs(120));
    let faults = (|| -> Result<Vec<(&str, Duration)>> {
        let mut back = Vec::new();
        for (what, args) in [
            ("stopped", &["stop", "taxi-fare_app_blue_1"][..]),
            ("killed", &["kill", "taxi-fare_app_blue_2"]),
            ("removed", &["rm", "-f", "taxi-fare_app_blue_1"]),
        ] {
            // Both replicas serve before each fault.
            fx.wait_whole("blue", GOOD_A, 2)?;
            let at = std::time::Instant::now();
            xtask::effects::process::run(xtask::effects::docker::docker(args.iter().copied()))?;
            sleep(Duration::from_millis(500));
            fx.wait_whole("blue", GOOD_A, 2)?;
            back.push((what, at.elapsed()));
        }
        Ok(back)
    })();
    let report = load.stop();
    let faults = faults?;
    let failures = report.failures();
    ensure!(
        failures.is_empty(),
        "{} of {} requests failed; the first: {:?}",
        failures.len(),
        report.samples.len(),
        failures.iter().take(3).collect::<Vec<_>>()
    );
    let wrong = report.wrong_answers(&[expected]);
    ensure!(wrong.is_empty(), "{} answers were not the model's: {:?}", wrong.len(), wrong.first());
    let up3 = scale(3)?;
    let down = scale(1)?;
    ensure!(fx.status()?.history.len() == rollouts, "a rollout was started instead");
    let done = fx.deploy_ok(GOOD_B)?;
    fx.expect_live("green", GOOD_B, 1)?;
    let times: Vec<String> =
        faults.iter().map(|(what, t)| format!("{what} back in {:.1} s", t.as_secs_f64())).collect();
    Ok(format!(
        "{}; {} requests, 0 failed; scaled to 2 in {:.1} s, 3 in {:.1} s, 1 in {:.1} s, no rollout; then {} in {} ms",
        times.join(", "),
        report.samples.len(),
        up.as_secs_f64(),
        up3.as_secs_f64(),
        down.as_secs_f64(),
        done.tag,
        done.duration_ms
    ))
}

/// The traffic tier is watched too: the router `docker kill`ed and the
/// edge `docker stop`ped (neither is restarted by Docker's policy then)
/// are each brought back, /status says Degraded while the front cannot
/// answer, and no rollout is started.
fn traffic_tier_brought_back(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let rollouts = fx.status()?.history.len();
    let mut said = Vec::new();
    for (what, args) in [
        ("router killed", ["kill", "taxi-fare_nginx_1"]),
        ("edge stopped", ["stop", "taxi-fare_edge_1"]),
    ] {
        let at = std::time::Instant::now();
        xtask::effects::process::run(xtask::effects::docker::docker(args))?;
        let reason = poll::until(Duration::from_secs(20), Duration::from_millis(50), || {
            let s = fx.status()?;
            Ok(match (s.phase, s.reason) {
                (Phase::Degraded, Some(r)) => Poll::Ready(r),
                (p, r) => Poll::Pending(format!("{p} {r:?}")),
            })
        })?;
        fx.wait_served_by("blue", Duration::from_secs(30))?;
        let back = at.elapsed();
        poll::until(Duration::from_secs(10), Duration::from_millis(100), || {
            let s = fx.status()?;
            Ok(if s.phase == Phase::Healthy {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("{} {:?}", s.phase, s.reason))
            })
        })?;
        said.push(format!("{what}: back in {:.1} s, /status said {reason:?}", back.as_secs_f64()));
    }
    fx.expect_live("blue", GOOD_A, 1)?;
    ensure!(fx.status()?.history.len() == rollouts, "a rollout was started instead");
    Ok(said.join("; "))
}

fn golden_mismatch(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let done = fx.deploy(GOLDEN_MISMATCH)?;
    rolled_back(&done, 1, "golden trip 0")?;
    let reason = done.reason.clone().unwrap_or_default();
    ensure!(reason.contains("promises"), "the reason does not give both values: {reason}");
    expect_refused(fx, GOLDEN_MISMATCH)?;
    Ok(format!("refused: {reason}"))
}

fn worse_model(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let done = fx.deploy(WORSE_MODEL)?;
    rolled_back(&done, 1, "quality gate")?;
    let reason = done.reason.clone().unwrap_or_default();
    ensure!(reason.contains("% above the live model's"), "the reason gives no figures: {reason}");
    expect_refused(fx, WORSE_MODEL)?;
    Ok(format!("refused: {reason}"))
}

fn good_model_diff(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let done = fx.deploy_ok(GOOD_B)?;
    let diff = done.summary.diff.ok_or_else(|| anyhow::anyhow!("no diff recorded: {done:?}"))?;
    // The same model in both tags: nothing changes for users.
    ensure!(diff.trips > 0 && diff.max_abs == 0.0, "{diff:?}");
    ensure!(
        fx.status()?.last.and_then(|l| l.summary.diff) == Some(diff),
        "/status does not show the diff"
    );
    Ok(format!("switched; diff over {} golden trips: max change ${:.2}", diff.trips, diff.max_abs))
}

/// A new color that passes its gates, then answers large batches with 503
/// (its request timeout is too short): the analysis after the switch sees
/// it in the new color's own metrics and puts traffic back.
fn level_3_under_traffic(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let rows = vec![model::DOCUMENTED_TRIP; 10_000];
    let body = api::predict_body(&rows);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let front = stack::front();
    let senders: Vec<_> = (0..3)
        .map(|_| {
            let (stop, body, front) = (stop.clone(), body.clone(), front.clone());
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(120)
                {
                    let _ = Request::post_json("/api/predict/", body.as_bytes())
                        .timeout(Duration::from_secs(10))
                        .send(&front);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let done = fx.deploy(SHORT_TIMEOUT);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        let _ = s.join();
    }
    let done = done?;
    rolled_back(&done, 3, "5xx")?;
    let figures =
        done.summary.analysis.ok_or_else(|| anyhow::anyhow!("no figures recorded: {done:?}"))?;
    fx.expect_live("blue", GOOD_A, 1)?;
    ensure!(fx.status()?.phase == Phase::Degraded, "not Degraded after a level-3 rollback");
    Ok(format!(
        "level 3 ({}); figures: {:.0} requests, {:.0}% 5xx",
        done.reason.unwrap_or_default(),
        figures.requests,
        figures.error_rate * 100.0
    ))
}

/// A rollout with `autoPromote: false` of GOOD_B over GOOD_A, paused: the
/// preview port serves the new color while port 80 serves the old.
fn paused(fx: &Fixture) -> Result<()> {
    fx.fresh(GOOD_A)?;
    fx.pause(GOOD_B)?;
    let preview = poll::until(Duration::from_secs(15), Duration::from_millis(100), || {
        Ok(match fx.preview() {
            Ok(a) if a.color.as_deref() == Some("green") => Poll::Ready(a),
            Ok(a) => Poll::Pending(format!("preview answers {a:?}")),
            Err(e) => Poll::Pending(format!("preview: {e:#}")),
        })
    })?;
    ensure!(preview.version.as_deref() == Some(GOOD_B), "the preview serves {preview:?}");
    let front = fx.front()?;
    ensure!(
        front.color.as_deref() == Some("blue"),
        "port 80 moved before the promotion: {front:?}"
    );
    Ok(())
}

/// After a paused rollout ends, the preview port serves nothing.
fn expect_no_preview(fx: &Fixture) -> Result<()> {
    poll::until(Duration::from_secs(15), Duration::from_millis(100), || {
        Ok(match fx.preview() {
            Err(_) => Poll::Ready(()),
            Ok(a) => Poll::Pending(format!("the preview still answers {a:?}")),
        })
    })
}

fn pause_promote(fx: &Fixture) -> Result<()> {
    paused(fx)?;
    let before = fx.status()?.history.len() as u64;
    let said = fx.cli(&["promote"])?;
    ensure!(said.contains(GOOD_B), "`controller promote` said {said:?}");
    let done = rollout::follow(GOOD_B, before, Duration::from_secs(90))?;
    ensure!(done.result == Verdict::Succeeded, "{done:?}");
    fx.expect_live("green", GOOD_B, 1)?;
    expect_no_preview(fx)
}

fn pause_promote_scenario(fx: &Fixture) -> Result<String> {
    pause_promote(fx)
        .map(|()| "paused with green on 8081 and blue on 80; promoted: green live".into())
}

fn pause_abort(fx: &Fixture) -> Result<String> {
    paused(fx)?;
    let before = fx.status()?.history.len() as u64;
    fx.cli(&["abort"])?;
    let done = rollout::follow(GOOD_B, before, Duration::from_secs(90))?;
    rolled_back(&done, 1, "aborted by the operator")?;
    fx.expect_live("blue", GOOD_A, 1)?;
    expect_no_preview(fx)?;
    Ok("paused, aborted: green removed, blue kept, preview empty".into())
}
