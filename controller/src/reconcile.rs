//! The reconcile decision: from the desired state, the observed world and
//! the record, the one next step. No IO, no clock: `now` is given.
//!
//! Reconciler rules, which every branch below keeps:
//! - Assume nothing about why a reconcile started: a manifest edit, a
//!   Docker event, a resync and an operator command all lead here alike.
//! - Assume the last reconcile died at any point: every step is safe to
//!   repeat, and the record's stage says only what to do next, never
//!   what the world is.
//! - Never remember what you can observe: containers, their tags and
//!   health, and the live color are read fresh each time.
//! - Check each property of the world on its own, and change one thing per
//!   step; the shell observes again before the next.
//!
//! A desired tag that changes during a rollout: before the switch the
//! rollout is abandoned (level 1, "superseded") and the new tag rolls on
//! from a clean idle color; after the switch the rollout runs to its end,
//! skipping the scale-down delay, and the new tag rolls on after it. So
//! there is never more than one rollout, nor more than two colors.

use bluegreen::Color;

use crate::clock::Timestamp;
use crate::manifest::Desired;
use crate::observed::{Health, Observed};
use crate::record::{Operator, Record, Rollout, Stage};

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing, until a trigger or `until`.
    Wait { until: Option<Timestamp> },
    /// Record a new rollout of the desired state into `color`.
    Begin { color: Color, from: Option<(Color, String, u32)> },
    /// Remove every container of a color.
    Remove { color: Color, why: Removal },
    /// Pull the image and start the color's replicas (idempotent).
    Start { color: Color, image: String, tag: String, replicas: u32 },
    /// Every replica is healthy: record it.
    Healthy,
    /// Run the model gates on `color` against the live color, if any.
    Gates { color: Color, live: Option<Color> },
    /// Point nginx at `to` (`None`: no color), with `backup` taking what
    /// `to` refuses.
    Switch { to: Option<Color>, replicas: u32, backup: Option<(Color, u32)> },
    /// Ask through nginx which color and tag answer.
    Probe { color: Color, tag: String },
    /// Show `to` on the preview port (`None`: nothing).
    Preview { to: Option<(Color, u32)> },
    /// An operator promoted the paused rollout: switch.
    Promote,
    /// Read the new color's metrics for the analysis after the switch.
    Analyze { color: Color },
    /// Give the rollout up.
    Fail { level: u8, reason: String },
    /// Put the rollout in the history.
    Finish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Leftovers of an idle color.
    Stale,
    /// The old color, after a switch.
    ScaleDown,
    /// The new color of a failed rollout.
    Failed,
}

pub fn decide(
    desired: Option<&Desired>,
    observed: &Observed,
    record: &Record,
    now: Timestamp,
) -> Step {
    if let Some(rollout) = &record.rollout {
        return decide_rollout(rollout, desired, observed, now);
    }
    let Some(desired) = desired else { return Step::Wait { until: None } };
    // An unreadable upstream.conf: nothing can be decided about traffic.
    let Ok(live) = observed.live.clone() else { return Step::Wait { until: None } };
    if observed.preview.is_some() {
        return Step::Preview { to: None };
    }
    if let Some(live) = live {
        let of = observed.of(live);
        let steady =
            of.len() == desired.replicas as usize && of.iter().all(|c| c.tag == desired.tag);
        if steady {
            if !observed.of(live.other()).is_empty() {
                return Step::Remove { color: live.other(), why: Removal::Stale };
            }
            // Docker restarted a live container (its restart policy, after
            // a crash) with a new address: nginx resolves names only when
            // it loads its configuration.
            let restarted = of.iter().any(|c| {
                c.is_running()
                    && matches!((c.started_at, record.last_reload_at), (Some(s), Some(r)) if s > r)
            });
            if restarted {
                return Step::Switch { to: Some(live), replicas: desired.replicas, backup: None };
            }
            return Step::Wait { until: None };
        }
    }
    if record.failed.as_ref().is_some_and(|f| f.fingerprint == desired.fingerprint()) {
        return Step::Wait { until: None };
    }
    let from = live.and_then(|c| {
        let tag = observed.live_tag()?.to_owned();
        Some((c, tag, observed.of(c).len() as u32))
    });
    Step::Begin { color: live.map_or(Color::Blue, Color::other), from }
}

fn decide_rollout(r: &Rollout, desired: Option<&Desired>, o: &Observed, now: Timestamp) -> Step {
    let superseded = desired
        .filter(|d| d.tag != r.tag || d.replicas != r.desired.replicas)
        .map(|d| format!("superseded by tag {} before the switch", d.tag));
    let fail = |reason: String| Step::Fail { level: 1, reason };
    let new = o.of(r.color);
    match &r.stage {
        Stage::Prepare | Stage::Start | Stage::Health { .. } | Stage::Gates | Stage::Paused
            if superseded.is_some() =>
        {
            fail(superseded.unwrap_or_default())
        }
        Stage::Prepare if !new.is_empty() => Step::Remove { color: r.color, why: Removal::Stale },
        Stage::Prepare | Stage::Start => Step::Start {
            color: r.color,
            image: r.desired.image(),
            tag: r.tag.clone(),
            replicas: r.desired.replicas,
        },
        Stage::Health { deadline } => {
            if new.len() < r.desired.replicas as usize {
                return fail(format!(
                    "{} of {} replicas of {} exist: a container was removed",
                    new.len(),
                    r.desired.replicas,
                    r.color.service()
                ));
            }
            for c in &new {
                if c.tag != r.tag {
                    return fail(format!("{} runs tag {}, not {}", c.name, c.tag, r.tag));
                }
                if !c.is_running() {
                    let code = c.exit_code.map(|x| format!(" with code {x}")).unwrap_or_default();
                    return fail(format!("{} is {}{code} instead of healthy", c.name, c.state));
                }
                if c.health == Health::Unhealthy {
                    return fail(format!("{} is unhealthy", c.name));
                }
            }
            if new.iter().all(|c| c.health == Health::Healthy) {
                return Step::Healthy;
            }
            if now >= *deadline {
                return fail(format!(
                    "{} not healthy within {}",
                    r.color.service(),
                    humantime::format_duration(r.desired.health_timeout)
                ));
            }
            Step::Wait { until: Some(*deadline) }
        }
        // The previous color stays as backup until the new one is proven:
        // a new color that refuses connections costs no request.
        Stage::Paused => match r.operator {
            Some(Operator::Promote) => Step::Promote,
            Some(Operator::Abort) => fail("aborted by the operator".to_owned()),
            None if o.preview != Some(r.color) => {
                Step::Preview { to: Some((r.color, r.desired.replicas)) }
            }
            None => Step::Wait { until: None },
        },
        // The preview names containers that may go: it is cleared first.
        _ if o.preview.is_some() => Step::Preview { to: None },
        Stage::Gates => Step::Gates {
            color: r.color,
            live: r.from.filter(|c| *c != r.color && !o.of(*c).is_empty()),
        },
        Stage::Switch => Step::Switch {
            to: Some(r.color),
            replicas: r.desired.replicas,
            backup: r
                .from
                .filter(|c| *c != r.color && !o.of(*c).is_empty())
                .map(|c| (c, r.from_replicas.max(1))),
        },
        Stage::Verify => Step::Probe { color: r.color, tag: r.tag.clone() },
        Stage::ScaleDown { .. }
            if r.watch.as_ref().is_some_and(|w| now < w.until) && superseded.is_none() =>
        {
            match &r.watch {
                Some(w) if now < w.next_at => Step::Wait { until: Some(w.next_at) },
                _ => Step::Analyze { color: r.color },
            }
        }
        Stage::ScaleDown { not_before } => match r.from {
            Some(old) if old != r.color && !o.of(old).is_empty() => {
                if now < *not_before && superseded.is_none() {
                    Step::Wait { until: Some(*not_before) }
                } else if o.backup.is_some() {
                    // nginx stops naming the old color before it goes.
                    Step::Switch { to: Some(r.color), replicas: r.desired.replicas, backup: None }
                } else {
                    Step::Remove { color: old, why: Removal::ScaleDown }
                }
            }
            _ if o.backup.is_some() && o.live_color() == Some(r.color) => {
                Step::Switch { to: Some(r.color), replicas: r.desired.replicas, backup: None }
            }
            _ => Step::Finish,
        },
        Stage::Rollback { .. } => {
            if o.live_color() == Some(r.color) {
                // Back to the previous color while it still exists.
                let back = r.from.filter(|c| *c != r.color && !o.of(*c).is_empty());
                Step::Switch { to: back, replicas: r.from_replicas.max(1), backup: None }
            } else if !new.is_empty() {
                Step::Remove { color: r.color, why: Removal::Failed }
            } else {
                Step::Finish
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{container, desired, observed};
    use Color::{Blue, Green};
    use Health::{Healthy, Starting, Unhealthy};

    const T0: Timestamp = Timestamp(1_000_000);

    fn at(ms: u64) -> Timestamp {
        Timestamp(T0.0 + ms)
    }

    /// A record with a rollout of `tag` into green (blue live on v1) at `stage`.
    fn rolling(tag: &str, stage: Stage) -> Record {
        let mut r = Record::default();
        r.begin(&desired(tag), Green, Some((Blue, "v1".into(), 1)), T0);
        r.enter(stage, T0);
        r
    }

    fn check(d: &Desired, o: &Observed, r: &Record, now: Timestamp, expected: Step) {
        assert_eq!(decide(Some(d), o, r, now), expected);
    }

    #[test]
    fn nothing_to_do_without_a_valid_manifest() {
        let o = observed(None, vec![]);
        assert_eq!(decide(None, &o, &Record::default(), T0), Step::Wait { until: None });
    }

    #[test]
    fn a_first_deploy_goes_to_blue() {
        let o = observed(None, vec![]);
        check(&desired("v1"), &o, &Record::default(), T0, Step::Begin { color: Blue, from: None });
    }

    #[test]
    fn a_new_tag_goes_to_the_idle_color() {
        let o = observed(Some(Blue), vec![container(Blue, 1, "v1", Healthy)]);
        let from = Some((Blue, "v1".to_owned(), 1));
        check(&desired("v2"), &o, &Record::default(), T0, Step::Begin { color: Green, from });
    }

    #[test]
    fn steady_state_waits_and_removes_stale_idle_containers() {
        let live = container(Blue, 1, "v1", Healthy);
        let o = observed(Some(Blue), vec![live.clone()]);
        check(&desired("v1"), &o, &Record::default(), T0, Step::Wait { until: None });
        let o = observed(Some(Blue), vec![live, container(Green, 1, "old", Starting)]);
        check(
            &desired("v1"),
            &o,
            &Record::default(),
            T0,
            Step::Remove { color: Green, why: Removal::Stale },
        );
    }

    #[test]
    fn a_live_container_restarted_after_the_last_reload_is_resolved_again() {
        let mut restarted = container(Blue, 1, "v1", Healthy);
        restarted.started_at = Some(at(500));
        let o = observed(Some(Blue), vec![restarted]);
        let mut r = Record { last_reload_at: Some(at(100)), ..Default::default() };
        check(
            &desired("v1"),
            &o,
            &r,
            at(600),
            Step::Switch { to: Some(Blue), replicas: 1, backup: None },
        );
        r.last_reload_at = Some(at(700));
        check(&desired("v1"), &o, &r, at(800), Step::Wait { until: None });
    }

    #[test]
    fn a_replica_count_change_is_a_rollout() {
        let o = observed(Some(Blue), vec![container(Blue, 1, "v1", Healthy)]);
        let mut d = desired("v1");
        d.replicas = 2;
        check(
            &d,
            &o,
            &Record::default(),
            T0,
            Step::Begin { color: Green, from: Some((Blue, "v1".into(), 1)) },
        );
    }

    #[test]
    fn a_failed_desired_state_is_not_retried_until_it_changes() {
        let o = observed(Some(Blue), vec![container(Blue, 1, "v1", Healthy)]);
        let mut r = rolling("bad", Stage::Rollback { level: 1, reason: "unhealthy".into() });
        r.finish(T0);
        check(&desired("bad"), &o, &r, T0, Step::Wait { until: None });
        let mut changed = desired("bad");
        changed.health_timeout *= 2;
        assert!(matches!(decide(Some(&changed), &o, &r, T0), Step::Begin { color: Green, .. }));
    }

    #[test]
    fn prepare_removes_leftovers_then_starts() {
        let blue = container(Blue, 1, "v1", Healthy);
        let r = rolling("v2", Stage::Prepare);
        let o = observed(Some(Blue), vec![blue.clone(), container(Green, 1, "x", Unhealthy)]);
        check(&desired("v2"), &o, &r, T0, Step::Remove { color: Green, why: Removal::Stale });
        let o = observed(Some(Blue), vec![blue]);
        let start = Step::Start {
            color: Green,
            image: "localhost:5000/taxi/service:v2".into(),
            tag: "v2".into(),
            replicas: 1,
        };
        check(&desired("v2"), &o, &r, T0, start.clone());
        // Interrupted while starting: start again (it is idempotent).
        check(&desired("v2"), &o, &rolling("v2", Stage::Start), T0, start);
    }

    #[test]
    fn health_waits_then_switches() {
        let r = rolling("v2", Stage::Health { deadline: at(5000) });
        let blue = container(Blue, 1, "v1", Healthy);
        let o = observed(Some(Blue), vec![blue.clone(), container(Green, 1, "v2", Starting)]);
        check(&desired("v2"), &o, &r, at(100), Step::Wait { until: Some(at(5000)) });
        let o = observed(Some(Blue), vec![blue, container(Green, 1, "v2", Healthy)]);
        check(&desired("v2"), &o, &r, at(100), Step::Healthy);
    }

    #[test]
    fn every_replica_must_be_healthy() {
        let mut d = desired("v2");
        d.replicas = 2;
        let mut r = Record::default();
        r.begin(&d, Green, Some((Blue, "v1".into(), 1)), T0);
        r.enter(Stage::Health { deadline: at(5000) }, T0);
        let one = observed(Some(Blue), vec![container(Green, 1, "v2", Healthy)]);
        assert!(matches!(decide(Some(&d), &one, &r, T0), Step::Fail { level: 1, .. }));
        let two = observed(
            Some(Blue),
            vec![container(Green, 1, "v2", Healthy), container(Green, 2, "v2", Starting)],
        );
        check(&d, &two, &r, T0, Step::Wait { until: Some(at(5000)) });
    }

    #[test]
    fn level_1_on_unhealthy_exit_or_timeout() {
        let r = rolling("v2", Stage::Health { deadline: at(5000) });
        let d = desired("v2");
        let fails = |c, now| match decide(Some(&d), &observed(Some(Blue), vec![c]), &r, now) {
            Step::Fail { level: 1, reason } => reason,
            other => panic!("expected a level-1 failure, got {other:?}"),
        };
        assert!(fails(container(Green, 1, "v2", Unhealthy), at(1)).contains("unhealthy"));
        let mut exited = container(Green, 1, "v2", Starting);
        exited.state = "exited".into();
        exited.exit_code = Some(1);
        assert!(fails(exited, at(1)).contains("exited with code 1"));
        assert!(
            fails(container(Green, 1, "v2", Starting), at(5000)).contains("not healthy within")
        );
    }

    #[test]
    fn gates_run_against_the_live_color_before_the_switch() {
        let both = observed(
            Some(Blue),
            vec![container(Blue, 1, "v1", Healthy), container(Green, 1, "v2", Healthy)],
        );
        check(
            &desired("v2"),
            &both,
            &rolling("v2", Stage::Gates),
            T0,
            Step::Gates { color: Green, live: Some(Blue) },
        );
        let first = observed(None, vec![container(Green, 1, "v2", Healthy)]);
        check(
            &desired("v2"),
            &first,
            &rolling("v2", Stage::Gates),
            T0,
            Step::Gates { color: Green, live: None },
        );
        assert!(matches!(
            decide(Some(&desired("v3")), &both, &rolling("v2", Stage::Gates), T0),
            Step::Fail { level: 1, .. }
        ));
    }

    #[test]
    fn a_paused_rollout_previews_then_waits_for_the_operator() {
        let d = desired("v2");
        let both = observed(
            Some(Blue),
            vec![container(Blue, 1, "v1", Healthy), container(Green, 1, "v2", Healthy)],
        );
        let mut r = rolling("v2", Stage::Paused);
        check(&d, &both, &r, T0, Step::Preview { to: Some((Green, 1)) });
        let mut previewing = both.clone();
        previewing.preview = Some(Green);
        check(&d, &previewing, &r, T0, Step::Wait { until: None });
        r.rollout.as_mut().unwrap().operator = Some(Operator::Promote);
        check(&d, &previewing, &r, T0, Step::Promote);
        r.rollout.as_mut().unwrap().operator = Some(Operator::Abort);
        check(
            &d,
            &previewing,
            &r,
            T0,
            Step::Fail { level: 1, reason: "aborted by the operator".into() },
        );
        // Once past the pause, the preview is cleared before anything else.
        check(&d, &previewing, &rolling("v2", Stage::Switch), T0, Step::Preview { to: None });
        check(&d, &previewing, &Record::default(), T0, Step::Preview { to: None });
    }

    #[test]
    fn switch_probe_and_scale_down() {
        let d = desired("v2");
        let both = observed(
            Some(Green),
            vec![container(Blue, 1, "v1", Healthy), container(Green, 1, "v2", Healthy)],
        );
        check(
            &d,
            &both,
            &rolling("v2", Stage::Switch),
            T0,
            Step::Switch { to: Some(Green), replicas: 1, backup: Some((Blue, 1)) },
        );
        check(
            &d,
            &both,
            &rolling("v2", Stage::Verify),
            T0,
            Step::Probe { color: Green, tag: "v2".into() },
        );
        let r = rolling("v2", Stage::ScaleDown { not_before: at(3000) });
        check(&d, &both, &r, at(10), Step::Wait { until: Some(at(3000)) });
        check(&d, &both, &r, at(3000), Step::Remove { color: Blue, why: Removal::ScaleDown });
        let green = observed(Some(Green), vec![container(Green, 1, "v2", Healthy)]);
        check(&d, &green, &r, at(3000), Step::Finish);
    }

    #[test]
    fn the_backup_is_dropped_before_the_old_color_goes() {
        let d = desired("v2");
        let mut both = observed(
            Some(Green),
            vec![container(Blue, 1, "v1", Healthy), container(Green, 1, "v2", Healthy)],
        );
        both.backup = Some(Blue);
        let r = rolling("v2", Stage::ScaleDown { not_before: at(3000) });
        check(&d, &both, &r, at(10), Step::Wait { until: Some(at(3000)) });
        let unlisted = Step::Switch { to: Some(Green), replicas: 1, backup: None };
        check(&d, &both, &r, at(3000), unlisted.clone());
        // The old color already gone (a crash), the backup line still there.
        let mut green = observed(Some(Green), vec![container(Green, 1, "v2", Healthy)]);
        green.backup = Some(Blue);
        check(&d, &green, &r, at(3000), unlisted);
    }

    #[test]
    fn level_2_restores_traffic_then_removes_the_new_color() {
        let d = desired("v2");
        let r = rolling("v2", Stage::Rollback { level: 2, reason: "probe".into() });
        let blue = container(Blue, 1, "v1", Healthy);
        let green = container(Green, 1, "v2", Healthy);
        let o = observed(Some(Green), vec![blue.clone(), green.clone()]);
        check(&d, &o, &r, T0, Step::Switch { to: Some(Blue), replicas: 1, backup: None });
        let o = observed(Some(Blue), vec![blue.clone(), green]);
        check(&d, &o, &r, T0, Step::Remove { color: Green, why: Removal::Failed });
        let o = observed(Some(Blue), vec![blue]);
        check(&d, &o, &r, T0, Step::Finish);
    }

    #[test]
    fn a_failed_first_deploy_restores_no_color() {
        let mut r = Record::default();
        r.begin(&desired("v1"), Blue, None, T0);
        r.enter(Stage::Rollback { level: 2, reason: "probe".into() }, T0);
        let o = observed(Some(Blue), vec![container(Blue, 1, "v1", Healthy)]);
        check(&desired("v1"), &o, &r, T0, Step::Switch { to: None, replicas: 1, backup: None });
    }

    #[test]
    fn a_new_tag_before_the_switch_supersedes_the_rollout() {
        let o = observed(
            Some(Blue),
            vec![container(Blue, 1, "v1", Healthy), container(Green, 1, "v2", Starting)],
        );
        for stage in [Stage::Prepare, Stage::Start, Stage::Health { deadline: at(9000) }] {
            match decide(Some(&desired("v3")), &o, &rolling("v2", stage), T0) {
                Step::Fail { level: 1, reason } => assert!(reason.contains("superseded by tag v3")),
                other => panic!("expected superseded, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_new_tag_after_the_switch_finishes_the_rollout_first() {
        let both = observed(
            Some(Green),
            vec![container(Blue, 1, "v1", Healthy), container(Green, 1, "v2", Healthy)],
        );
        let d3 = desired("v3");
        check(
            &d3,
            &both,
            &rolling("v2", Stage::Switch),
            T0,
            Step::Switch { to: Some(Green), replicas: 1, backup: Some((Blue, 1)) },
        );
        check(
            &d3,
            &both,
            &rolling("v2", Stage::Verify),
            T0,
            Step::Probe { color: Green, tag: "v2".into() },
        );
        // The scale-down delay is cut short.
        let r = rolling("v2", Stage::ScaleDown { not_before: at(60_000) });
        check(&d3, &both, &r, T0, Step::Remove { color: Blue, why: Removal::ScaleDown });
    }

    #[test]
    fn an_unreadable_upstream_blocks_new_rollouts() {
        let mut o = observed(None, vec![]);
        o.live = Err("names both colors".into());
        check(&desired("v1"), &o, &Record::default(), T0, Step::Wait { until: None });
    }

    #[test]
    fn a_rollback_interrupted_before_the_restore_restores_first() {
        // Crash after upstream.conf was written for a level-1 failure's
        // color but before it was restored: traffic is put back first.
        let r = rolling("v2", Stage::Rollback { level: 1, reason: "nginx -t".into() });
        let o = observed(
            Some(Green),
            vec![container(Blue, 1, "v1", Healthy), container(Green, 1, "v2", Healthy)],
        );
        check(
            &desired("v2"),
            &o,
            &r,
            T0,
            Step::Switch { to: Some(Blue), replicas: 1, backup: None },
        );
    }
}
