//! The state machine's tests: what `decide` picks in each situation, and
//! one table over every stage and outcome of `apply`.

use std::time::Duration;

use super::*;
use crate::analysis::{Own, Sample};
use crate::fixtures::{desired, observed, replica};
use crate::record::{StepName, Verdict};
use Color::{Blue, Green};
use Health::{Healthy, Starting, Unhealthy};

const T0: Timestamp = Timestamp(1_000_000);

fn at(ms: u64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

fn blue_v1() -> Option<Origin> {
    Some(Origin { color: Blue, tag: "v1".into(), replicas: 1 })
}

/// A record with a rollout of `d` into green (blue live on v1) at `stage`.
fn rolling_with(d: &Desired, stage: Stage) -> Record {
    let mut r = Record::default();
    r.begin(d, Green, blue_v1(), T0);
    r.enter(stage, T0);
    r
}

fn rolling(tag: &str, stage: Stage) -> Record {
    rolling_with(&desired(tag), stage)
}

fn check(d: &Desired, o: &Observed, r: &Record, now: Timestamp, expected: Step) {
    assert_eq!(decide(Some(d), o, r, now), expected);
}

fn both(live: Color) -> Observed {
    observed(Some(live), vec![replica(Blue, 1, "v1", Healthy), replica(Green, 1, "v2", Healthy)])
}

/// The step that starts `replicas` of `color` on the service image `tag`.
fn start_of(color: Color, tag: &str, replicas: u32) -> Step {
    let image = format!("{}:{tag}", bluegreen::SERVICE_REPOSITORY);
    Step::Start { color, image, tag: tag.into(), replicas, digest: None }
}

fn verify() -> Stage {
    Stage::Verify { deadline: at(5000), next_at: T0 }
}

fn l1(reason: &str) -> Stage {
    Stage::Rollback { level: Level::BeforeSwitch, reason: reason.into() }
}

#[test]
fn nothing_to_do_without_a_valid_manifest() {
    let o = observed(None, vec![]);
    assert_eq!(decide(None, &o, &Record::default(), T0), Step::Wait { until: None });
}

#[test]
fn a_traffic_tier_down_is_healed_first_at_any_stage() {
    let mut o = observed(Some(Blue), vec![replica(Blue, 1, "v1", Healthy)]);
    o.traffic.down = vec!["taxi-fare_nginx_1".into()];
    let heal = Step::Heal { down: vec!["taxi-fare_nginx_1".into()] };
    check(&desired("v1"), &o, &Record::default(), T0, heal.clone());
    check(&desired("v2"), &o, &rolling("v2", Stage::Switch), T0, heal.clone());
    let mut r = rolling("v2", Stage::Switch);
    assert_eq!(apply(&mut r, &heal, Outcome::Done, T0), Applied::Moved);
    assert_eq!(r.rollout.as_ref().unwrap().stage, Stage::Switch);
}

#[test]
fn a_first_deploy_goes_to_blue() {
    let o = observed(None, vec![]);
    let d = desired("v1");
    let begin = Step::Begin { desired: Box::new(d.clone()), color: Blue, from: None, digest: None };
    check(&d, &o, &Record::default(), T0, begin);
}

#[test]
fn a_new_tag_goes_to_the_idle_color() {
    let o = observed(Some(Blue), vec![replica(Blue, 1, "v1", Healthy)]);
    let d = desired("v2");
    let begin =
        Step::Begin { desired: Box::new(d.clone()), color: Green, from: blue_v1(), digest: None };
    check(&d, &o, &Record::default(), T0, begin);
}

#[test]
fn steady_state_waits_and_removes_stale_idle_replicas() {
    let live = replica(Blue, 1, "v1", Healthy);
    let o = observed(Some(Blue), vec![live.clone()]);
    check(&desired("v1"), &o, &Record::default(), T0, Step::Wait { until: None });
    let o = observed(Some(Blue), vec![live, replica(Green, 1, "old", Starting)]);
    let remove = Step::Remove { color: Green, why: Removal::Stale };
    check(&desired("v1"), &o, &Record::default(), T0, remove);
}

#[test]
fn a_stale_router_is_refreshed_in_steady_state() {
    let mut o = observed(Some(Blue), vec![replica(Blue, 1, "v1", Healthy)]);
    o.traffic.stale = true;
    let refresh = Step::Route { to: Some(Blue), replicas: 1, fallback: None };
    check(&desired("v1"), &o, &Record::default(), T0, refresh);
}

#[test]
fn a_replica_count_change_alone_scales_in_place() {
    let mut d = desired("v1");
    d.replicas = 2;
    let start = start_of(Blue, "v1", 2);
    let one = observed(Some(Blue), vec![replica(Blue, 1, "v1", Healthy)]);
    check(&d, &one, &Record::default(), T0, start);
    // The new replica is named once it serves.
    let mut two = observed(
        Some(Blue),
        vec![replica(Blue, 1, "v1", Healthy), replica(Blue, 2, "v1", Starting)],
    );
    check(&d, &two, &Record::default(), T0, Step::Wait { until: None });
    two.replicas[1].health = Healthy;
    let route = Step::Route { to: Some(Blue), replicas: 2, fallback: None };
    check(&d, &two, &Record::default(), T0, route);
    two.traffic.servers = 2;
    check(&d, &two, &Record::default(), T0, Step::Wait { until: None });
    // Down to one: the router first, then the replica.
    d.replicas = 1;
    let route = Step::Route { to: Some(Blue), replicas: 1, fallback: None };
    check(&d, &two, &Record::default(), T0, route);
    two.traffic.servers = 1;
    let start = start_of(Blue, "v1", 1);
    check(&d, &two, &Record::default(), T0, start);
}

#[test]
fn a_live_replica_down_for_good_is_started_again_without_a_rollout() {
    let d = desired("v1");
    let start = start_of(Blue, "v1", 1);
    for state in [crate::observed::State::Exited, crate::observed::State::Dead] {
        let mut o = observed(Some(Blue), vec![replica(Blue, 1, "v1", Unhealthy)]);
        o.replicas[0].state = state;
        check(&d, &o, &Record::default(), T0, start.clone());
    }
    // Docker's restart policy at work: left to it.
    let mut o = observed(Some(Blue), vec![replica(Blue, 1, "v1", Starting)]);
    o.replicas[0].state = crate::observed::State::Restarting;
    check(&d, &o, &Record::default(), T0, Step::Wait { until: None });
    // A replica removed: put back.
    let mut two = desired("v1");
    two.replicas = 2;
    let mut o = observed(Some(Blue), vec![replica(Blue, 2, "v1", Healthy)]);
    o.traffic.servers = 2;
    let start = start_of(Blue, "v1", 2);
    check(&two, &o, &Record::default(), T0, start);
}

#[test]
fn a_failed_desired_state_is_not_retried_until_it_changes() {
    let o = observed(Some(Blue), vec![replica(Blue, 1, "v1", Healthy)]);
    let mut r = rolling("bad", l1("unhealthy"));
    r.finish(T0);
    check(&desired("bad"), &o, &r, T0, Step::Wait { until: None });
    let mut changed = desired("bad");
    changed.health_timeout *= 2;
    assert!(matches!(decide(Some(&changed), &o, &r, T0), Step::Begin { color: Green, .. }));
}

#[test]
fn prepare_removes_leftovers_then_starts() {
    let blue = replica(Blue, 1, "v1", Healthy);
    let r = rolling("v2", Stage::Prepare);
    let o = observed(Some(Blue), vec![blue.clone(), replica(Green, 1, "x", Unhealthy)]);
    check(&desired("v2"), &o, &r, T0, Step::Remove { color: Green, why: Removal::Stale });
    let o = observed(Some(Blue), vec![blue]);
    let start = start_of(Green, "v2", 1);
    check(&desired("v2"), &o, &r, T0, start.clone());
    // Interrupted while starting: start again (it is idempotent).
    check(&desired("v2"), &o, &rolling("v2", Stage::Start), T0, start);
}

#[test]
fn health_waits_then_reports_healthy() {
    let r = rolling("v2", Stage::Health { deadline: at(5000) });
    let blue = replica(Blue, 1, "v1", Healthy);
    let o = observed(Some(Blue), vec![blue.clone(), replica(Green, 1, "v2", Starting)]);
    check(&desired("v2"), &o, &r, at(100), Step::Wait { until: Some(at(5000)) });
    let o = observed(Some(Blue), vec![blue, replica(Green, 1, "v2", Healthy)]);
    check(&desired("v2"), &o, &r, at(100), Step::Healthy { digest: None });
}

#[test]
fn every_replica_must_be_healthy() {
    let mut d = desired("v2");
    d.replicas = 2;
    let r = rolling_with(&d, Stage::Health { deadline: at(5000) });
    let one = observed(Some(Blue), vec![replica(Green, 1, "v2", Healthy)]);
    assert!(matches!(decide(Some(&d), &one, &r, T0), Step::Fail { .. }));
    let two = observed(
        Some(Blue),
        vec![replica(Green, 1, "v2", Healthy), replica(Green, 2, "v2", Starting)],
    );
    check(&d, &two, &r, T0, Step::Wait { until: Some(at(5000)) });
}

#[test]
fn level_1_on_unhealthy_exit_or_timeout() {
    let r = rolling("v2", Stage::Health { deadline: at(5000) });
    let d = desired("v2");
    let fails = |c, now| match decide(Some(&d), &observed(Some(Blue), vec![c]), &r, now) {
        Step::Fail { level: Level::BeforeSwitch, reason } => reason,
        other => panic!("expected a level-1 failure, got {other:?}"),
    };
    assert!(fails(replica(Green, 1, "v2", Unhealthy), at(1)).contains("unhealthy"));
    let mut exited = replica(Green, 1, "v2", Starting);
    exited.state = crate::observed::State::Exited;
    exited.exit_code = Some(1);
    assert!(fails(exited, at(1)).contains("exited with code 1"));
    assert!(fails(replica(Green, 1, "v2", Starting), at(5000)).contains("not healthy within"));
}

#[test]
fn gates_run_against_the_live_color_before_the_switch() {
    let gates = |live| Step::Gates { color: Green, live, golden: true };
    check(&desired("v2"), &both(Blue), &rolling("v2", Stage::Gates), T0, gates(Some(Blue)));
    let first = observed(None, vec![replica(Green, 1, "v2", Healthy)]);
    check(&desired("v2"), &first, &rolling("v2", Stage::Gates), T0, gates(None));
    assert!(matches!(
        decide(Some(&desired("v3")), &both(Blue), &rolling("v2", Stage::Gates), T0),
        Step::Supersede { .. }
    ));
}

#[test]
fn the_warm_up_is_a_stage_that_a_new_tag_interrupts() {
    let trip = crate::gates::KNOWN_TRIP;
    let stage = Stage::WarmUp { deadline: at(30_000), next_at: at(500), trip };
    let r = rolling("v2", stage);
    check(&desired("v2"), &both(Blue), &r, at(100), Step::Wait { until: Some(at(500)) });
    let burst = Step::WarmUp { color: Green, trip, requests: WARM_UP_REQUESTS };
    check(&desired("v2"), &both(Blue), &r, at(500), burst);
    // Between two bursts, a new tag is acted on at once.
    match decide(Some(&desired("v3")), &both(Blue), &r, at(100)) {
        Step::Supersede { reason } => assert!(reason.contains("superseded by tag v3"), "{reason}"),
        other => panic!("expected superseded, got {other:?}"),
    }
}

#[test]
fn a_paused_rollout_previews_then_waits_for_the_operator() {
    let d = desired("v2");
    let mut r = rolling("v2", Stage::Paused);
    check(&d, &both(Blue), &r, T0, Step::Preview { to: Some((Green, 1)) });
    let mut previewing = both(Blue);
    previewing.traffic.preview = Some(Green);
    check(&d, &previewing, &r, T0, Step::Wait { until: None });
    assert_eq!(command(&mut r, Operator::Promote), Ok(()));
    check(&d, &previewing, &r, T0, Step::Promote);
    assert_eq!(command(&mut r, Operator::Abort), Ok(()));
    let aborted =
        Step::Fail { level: Level::BeforeSwitch, reason: "aborted by the operator".into() };
    check(&d, &previewing, &r, T0, aborted);
    // Once past the pause, the preview is cleared before anything else.
    check(&d, &previewing, &rolling("v2", Stage::Switch), T0, Step::Preview { to: None });
    check(&d, &previewing, &Record::default(), T0, Step::Preview { to: None });
    // The operator's word needs a paused rollout.
    let mut switching = rolling("v2", Stage::Switch);
    assert!(command(&mut switching, Operator::Promote).is_err());
    assert!(command(&mut Record::default(), Operator::Abort).is_err());
}

#[test]
fn a_router_without_preview_or_fallback_is_used_as_it_is() {
    let d = desired("v2");
    let mut o = both(Blue);
    o.traffic.capabilities = crate::observed::Capabilities::NONE;
    check(&d, &o, &rolling("v2", Stage::Paused), T0, Step::Wait { until: None });
    let route = Step::Route { to: Some(Green), replicas: 1, fallback: None };
    check(&d, &o, &rolling("v2", Stage::Switch), T0, route);
}

#[test]
fn switch_probe_and_scale_down() {
    let d = desired("v2");
    let route = Step::Route { to: Some(Green), replicas: 1, fallback: Some((Blue, 1)) };
    check(&d, &both(Green), &rolling("v2", Stage::Switch), T0, route);
    let probe = Step::Probe { color: Green, tag: "v2".into(), probe: d.probe.clone() };
    check(&d, &both(Green), &rolling("v2", verify()), T0, probe);
    let waiting = Stage::Verify { deadline: at(5000), next_at: at(100) };
    check(&d, &both(Green), &rolling("v2", waiting), T0, Step::Wait { until: Some(at(100)) });
    let r = rolling("v2", Stage::ScaleDown { not_before: at(3000) });
    check(&d, &both(Green), &r, at(10), Step::Wait { until: Some(at(3000)) });
    check(&d, &both(Green), &r, at(3000), Step::Remove { color: Blue, why: Removal::ScaleDown });
    let green = observed(Some(Green), vec![replica(Green, 1, "v2", Healthy)]);
    check(&d, &green, &r, at(3000), Step::Finish);
}

#[test]
fn the_fallback_is_dropped_before_the_old_color_goes() {
    let d = desired("v2");
    let mut o = both(Green);
    o.traffic.fallback = Some(Blue);
    let r = rolling("v2", Stage::ScaleDown { not_before: at(3000) });
    check(&d, &o, &r, at(10), Step::Wait { until: Some(at(3000)) });
    let unlisted = Step::Route { to: Some(Green), replicas: 1, fallback: None };
    check(&d, &o, &r, at(3000), unlisted.clone());
    // The old color already gone (a crash), the fallback still listed.
    let mut green = observed(Some(Green), vec![replica(Green, 1, "v2", Healthy)]);
    green.traffic.fallback = Some(Blue);
    check(&d, &green, &r, at(3000), unlisted);
}

/// What a window of 30 good predictions shows.
fn thirty_good() -> crate::analysis::Figures {
    crate::analysis::Figures {
        requests: 30.0,
        shed: 0.0,
        error_rate: 0.0,
        p99_seconds: 0.01,
        own: 0,
    }
}

#[test]
fn the_analysis_window_reads_the_new_color_every_second() {
    let mut r = rolling("v2", Stage::ScaleDown { not_before: at(60_000) });
    let watch = Watch::opening(at(60_000), at(1000));
    r.rollout.as_mut().unwrap().watch = Some(watch);
    let d = desired("v2");
    check(&d, &both(Green), &r, at(10), Step::Wait { until: Some(at(1000)) });
    // No baseline yet: no request of the controller's own, it would be in it.
    check(
        &d,
        &both(Green),
        &r,
        at(1000),
        Step::Analyze { color: Green, own: None, queries: vec![] },
    );
    // The window over without a single judgement: it fails closed.
    let unread = Step::Fail {
        level: Level::AfterAnalysis,
        reason: "analysis: the new color's figures could not be read during the window".into(),
    };
    check(&d, &both(Green), &r, at(60_000), unread);
    let figures = thirty_good();
    r.rollout.as_mut().unwrap().summary.analysis = Some(figures);
    check(&d, &both(Green), &r, at(60_000), Step::Remove { color: Blue, why: Removal::ScaleDown });
    // Mostly shed: too few judged by the end never passes either.
    let shed = crate::analysis::Figures { shed: 25.0, ..figures };
    r.rollout.as_mut().unwrap().summary.analysis = Some(shed);
    let Step::Fail { level: Level::AfterAnalysis, reason } =
        decide(Some(&d), &both(Green), &r, at(60_000))
    else {
        panic!("too few judged predictions passed")
    };
    assert!(reason.contains("only 5 predictions"), "{reason}");
    // A new tag after the switch ends the window early: nothing to judge.
    r.rollout.as_mut().unwrap().summary.analysis = None;
    let remove = Step::Remove { color: Blue, why: Removal::ScaleDown };
    check(&desired("v3"), &both(Green), &r, at(10), remove);
}

#[test]
fn the_manifests_queries_judge_too_and_an_unanswered_one_never_passes() {
    let mut d = desired("v2");
    d.analysis.window = Duration::from_secs(60);
    d.analysis.min_requests = 0;
    d.analysis.queries = vec![crate::manifest::Query {
        name: "errors".into(),
        query: "rate(errors{color=\"{{color}}\",tag=\"{{tag}}\"}[1m])".into(),
        min: None,
        max: Some(0.5),
    }];
    let mut r = rolling_with(&d, Stage::ScaleDown { not_before: at(60_000) });
    let watch = Watch { baseline: Some(Sample::default()), ..Watch::opening(at(60_000), T0) };
    r.rollout.as_mut().unwrap().watch = Some(watch);
    let Step::Analyze { queries, .. } = decide(Some(&d), &both(Green), &r, T0) else {
        panic!("no reading")
    };
    assert_eq!(
        queries,
        vec![("errors".into(), "rate(errors{color=\"green\",tag=\"v2\"}[1m])".into())]
    );
    let step = Step::Analyze { color: Green, own: None, queries };
    let reading = |value: Result<f64, String>| {
        let sample = Sample { requests: 30.0, ..Default::default() };
        Outcome::Sampled(Ok(Reading {
            sample,
            own: Own::default(),
            queries: vec![("errors".into(), value)],
        }))
    };
    // Nothing to answer with: inconclusive; at the window's end, no pass.
    let mut quiet = r.clone();
    apply(&mut quiet, &step, reading(Err("returned nothing".into())), T0);
    let Step::Fail { level: Level::AfterAnalysis, reason } =
        decide(Some(&d), &both(Green), &quiet, at(60_000))
    else {
        panic!("an unanswered query passed")
    };
    assert!(
        reason.contains("query errors was inconclusive") && reason.contains("returned nothing"),
        "{reason}"
    );
    // Within its bound: conclusive, and the window passes.
    let mut good = r.clone();
    apply(&mut good, &step, reading(Ok(0.1)), T0);
    let removal = Step::Remove { color: Blue, why: Removal::ScaleDown };
    check(&d, &both(Green), &good, at(60_000), removal);
    // Past it: level 3 at once.
    apply(&mut r, &step, reading(Ok(0.9)), T0);
    let Stage::Rollback { level, reason } = &r.rollout.as_ref().unwrap().stage else { panic!() };
    assert_eq!(*level, Level::AfterAnalysis);
    assert!(reason.contains("query errors is 0.9, above 0.5"), "{reason}");
}

#[test]
fn a_quiet_window_is_filled_with_known_answer_requests() {
    let mut r = rolling("v2", Stage::ScaleDown { not_before: at(60_000) });
    let watch = Watch {
        baseline: Some(crate::analysis::Sample::default()),
        ..Watch::opening(at(60_000), at(1000))
    };
    r.rollout.as_mut().unwrap().watch = Some(watch);
    let known = Known { trip: crate::gates::KNOWN_TRIP, fare: Some(52.5), model_version: None };
    r.rollout.as_mut().unwrap().known = Some(known.clone());
    let d = desired("v2");
    // 59 readings left, 20 predictions needed by the middle of the window.
    let own = Some((known, 1));
    check(&d, &both(Green), &r, at(1000), Step::Analyze { color: Green, own, queries: vec![] });
    // Live traffic brought enough: none.
    let figures = thirty_good();
    r.rollout.as_mut().unwrap().summary.analysis = Some(figures);
    check(
        &d,
        &both(Green),
        &r,
        at(1000),
        Step::Analyze { color: Green, own: None, queries: vec![] },
    );
    // What the requests met is kept in the window, and unanswered ones
    // count as faults.
    let step = Step::Analyze { color: Green, own: None, queries: vec![] };
    let sample = crate::analysis::Sample { requests: 40.0, ..Default::default() };
    let own = Own { sent: 3, failed: 3, wrong: None };
    apply(&mut r, &step, Outcome::Sampled(Ok(Reading { sample, own, queries: vec![] })), at(1000));
    let rollout = r.rollout.as_ref().unwrap();
    let w = rollout.watch.as_ref().unwrap();
    assert_eq!((w.own, w.own_failed), (3, 3));
    let f = rollout.summary.analysis.unwrap();
    assert_eq!((f.requests, f.own), (43.0, 3));
}

#[test]
fn level_2_restores_traffic_then_removes_the_new_color() {
    let d = desired("v2");
    let r = rolling("v2", Stage::Rollback { level: Level::AfterProbe, reason: "probe".into() });
    let blue = replica(Blue, 1, "v1", Healthy);
    let green = replica(Green, 1, "v2", Healthy);
    let o = observed(Some(Green), vec![blue.clone(), green.clone()]);
    check(&d, &o, &r, T0, Step::Route { to: Some(Blue), replicas: 1, fallback: None });
    let o = observed(Some(Blue), vec![blue.clone(), green]);
    check(&d, &o, &r, T0, Step::Remove { color: Green, why: Removal::Failed });
    let o = observed(Some(Blue), vec![blue]);
    check(&d, &o, &r, T0, Step::Finish);
}

#[test]
fn a_failed_first_deploy_restores_no_color() {
    let mut r = Record::default();
    r.begin(&desired("v1"), Blue, None, T0);
    r.enter(Stage::Rollback { level: Level::AfterProbe, reason: "probe".into() }, T0);
    let o = observed(Some(Blue), vec![replica(Blue, 1, "v1", Healthy)]);
    check(&desired("v1"), &o, &r, T0, Step::Route { to: None, replicas: 1, fallback: None });
}

#[test]
fn transient_failures_are_retried_with_backoff_then_fail_before_the_switch() {
    let d = desired("v2");
    let mut r = rolling("v2", Stage::Start);
    let o = observed(Some(Blue), vec![replica(Blue, 1, "v1", Healthy)]);
    let start = decide(Some(&d), &o, &r, T0);
    assert!(matches!(start, Step::Start { .. }), "{start:?}");
    let mut now = T0;
    for (i, wait) in [1000, 2000, 4000, 8000].into_iter().enumerate() {
        let applied = apply(&mut r, &start, Outcome::Unavailable("registry down".into()), now);
        assert_eq!(applied, Applied::Moved);
        // Backing off, the next try after `wait`; a new tag still acts.
        check(&d, &o, &r, now, Step::Wait { until: Some(Timestamp(now.0 + wait)) });
        assert!(matches!(decide(Some(&desired("v3")), &o, &r, now), Step::Supersede { .. }));
        now = Timestamp(now.0 + wait);
        assert_eq!(decide(Some(&d), &o, &r, now), start, "try {}", i + 2);
    }
    apply(&mut r, &start, Outcome::Unavailable("registry down".into()), now);
    let rollout = r.rollout.as_ref().unwrap();
    let Stage::Rollback { level: Level::BeforeSwitch, reason } = &rollout.stage else {
        panic!("{:?}", rollout.stage)
    };
    assert!(reason.contains("start failed 5 times: registry down"), "{reason}");
    let retries = &rollout.summary.retries;
    assert_eq!((retries[0].step, retries[0].count), (StepName::Start, 5));
    // After the switch the bound does not apply: the old color is live
    // traffic's way back, and removing it may wait.
    let mut after = rolling("v2", Stage::ScaleDown { not_before: T0 });
    let remove = Step::Remove { color: Blue, why: Removal::ScaleDown };
    for _ in 0..8 {
        apply(&mut after, &remove, Outcome::Unavailable("engine".into()), T0);
    }
    assert_eq!(after.rollout.as_ref().unwrap().stage.name(), StepName::ScaleDown);
}

#[test]
fn a_rollback_with_nothing_to_go_back_to_keeps_what_serves() {
    let r = rolling("v2", Stage::Rollback { level: Level::AfterAnalysis, reason: "5xx".into() });
    let green = replica(Green, 1, "v2", Healthy);
    let mut blue_down = replica(Blue, 1, "v1", Unhealthy);
    blue_down.state = crate::observed::State::Exited;
    // The old color exited: going back would send traffic nowhere.
    let o = observed(Some(Green), vec![blue_down, green.clone()]);
    check(&desired("v2"), &o, &r, T0, Step::Finish);
    // The old color gone altogether: the same.
    let o = observed(Some(Green), vec![green.clone()]);
    check(&desired("v2"), &o, &r, T0, Step::Finish);
    // A way back that keeps failing is overtaken by a new tag.
    let o = observed(Some(Green), vec![replica(Blue, 1, "v1", Healthy), green]);
    check(&desired("v2"), &o, &r, T0, Step::Route { to: Some(Blue), replicas: 1, fallback: None });
    check(&desired("v3"), &o, &r, T0, Step::Finish);
}

fn at_digest(mut r: crate::observed::Replica, digest: &str) -> crate::observed::Replica {
    r.image = Some(bluegreen::SERVICE_REPOSITORY.to_owned());
    r.digest = Some(digest.to_owned());
    r
}

#[test]
fn identity_is_the_digest_a_re_pushed_tag_or_another_repository_deploys() {
    let d = desired("v1");
    let live = at_digest(replica(Blue, 1, "v1", Healthy), "sha256:aaa");
    let mut o = observed(Some(Blue), vec![live.clone()]);
    // Nothing resolved (the registry down): the tag alone, nothing to do.
    check(&d, &o, &Record::default(), T0, Step::Wait { until: None });
    o.resolved = Some(crate::observed::Resolved { image: d.image(), digest: "sha256:aaa".into() });
    check(&d, &o, &Record::default(), T0, Step::Wait { until: None });
    // The tag pushed again: a rollout of what it names now.
    o.resolved = Some(crate::observed::Resolved { image: d.image(), digest: "sha256:bbb".into() });
    let Step::Begin { digest, color: Green, .. } = decide(Some(&d), &o, &Record::default(), T0)
    else {
        panic!("a re-pushed tag did not deploy")
    };
    assert_eq!(digest.as_deref(), Some("sha256:bbb"));
    let mut r = Record::default();
    let begin = decide(Some(&d), &o, &r, T0);
    apply(&mut r, &begin, Outcome::Done, T0);
    let Step::Start { digest, .. } = decide(Some(&d), &o, &r, T0) else { panic!("no start") };
    assert_eq!(digest.as_deref(), Some("sha256:bbb"));
    // It failed: not retried while the tag names it, retried once it
    // names another image again.
    r.enter(Stage::Rollback { level: Level::BeforeSwitch, reason: "gates".into() }, T0);
    r.finish(T0);
    assert_eq!(r.failed.as_ref().and_then(|f| f.digest.as_deref()), Some("sha256:bbb"));
    check(&d, &o, &r, T0, Step::Wait { until: None });
    o.resolved = Some(crate::observed::Resolved { image: d.image(), digest: "sha256:ccc".into() });
    assert!(matches!(decide(Some(&d), &o, &r, T0), Step::Begin { .. }));
    // Another repository, the same tag.
    let mut moved = d.clone();
    moved.repository = "registry.example/taxi/service".into();
    let o = observed(Some(Blue), vec![live.clone()]);
    assert!(matches!(decide(Some(&moved), &o, &Record::default(), T0), Step::Begin { .. }));
    // A live replica put back keeps the digest the color runs.
    let mut down = live;
    down.state = crate::observed::State::Exited;
    let o = observed(Some(Blue), vec![down]);
    let Step::Start { digest, .. } = decide(Some(&d), &o, &Record::default(), T0) else {
        panic!("not started again")
    };
    assert_eq!(digest.as_deref(), Some("sha256:aaa"));
}

#[test]
fn a_new_tag_before_the_switch_supersedes_the_rollout() {
    let o = observed(
        Some(Blue),
        vec![replica(Blue, 1, "v1", Healthy), replica(Green, 1, "v2", Starting)],
    );
    for stage in [Stage::Prepare, Stage::Start, Stage::Health { deadline: at(9000) }] {
        let mut r = rolling("v2", stage);
        match decide(Some(&desired("v3")), &o, &r, T0) {
            Step::Supersede { reason } => assert!(reason.contains("superseded by tag v3")),
            other => panic!("expected superseded, got {other:?}"),
        }
        // No verdict on the release: asked for again, it is rolled out.
        let step = decide(Some(&desired("v3")), &o, &r, T0);
        apply(&mut r, &step, Outcome::Done, T0);
        r.finish(T0);
        assert_eq!(r.failed, None, "a superseded rollout marked its tag failed");
        let live = observed(Some(Blue), vec![replica(Blue, 1, "v1", Healthy)]);
        assert!(matches!(decide(Some(&desired("v2")), &live, &r, T0), Step::Begin { .. }));
    }
}

#[test]
fn a_new_tag_after_the_switch_finishes_the_rollout_first() {
    let d3 = desired("v3");
    let route = Step::Route { to: Some(Green), replicas: 1, fallback: Some((Blue, 1)) };
    check(&d3, &both(Green), &rolling("v2", Stage::Switch), T0, route);
    let probe = Step::Probe { color: Green, tag: "v2".into(), probe: d3.probe.clone() };
    check(&d3, &both(Green), &rolling("v2", verify()), T0, probe);
    // The scale-down delay is cut short.
    let r = rolling("v2", Stage::ScaleDown { not_before: at(60_000) });
    check(&d3, &both(Green), &r, T0, Step::Remove { color: Blue, why: Removal::ScaleDown });
}

#[test]
fn an_unreadable_router_blocks_new_rollouts() {
    let mut o = observed(None, vec![]);
    o.traffic.live = Err("names both colors".into());
    check(&desired("v1"), &o, &Record::default(), T0, Step::Wait { until: None });
}

#[test]
fn a_rollback_interrupted_before_the_restore_restores_first() {
    // Crash after the router was pointed at a failed rollout's color but
    // before it was restored: traffic is put back first.
    let r = rolling("v2", l1("refused"));
    let route = Step::Route { to: Some(Blue), replicas: 1, fallback: None };
    check(&desired("v2"), &both(Green), &r, T0, route);
}

// ---------------------------------------------------------------------
// apply: every stage × outcome, as one table.

/// What a row expects of the record after `apply`.
#[derive(Debug, PartialEq)]
enum Then {
    /// The rollout is at this stage.
    At(StepName),
    /// The rollout is rolled back at this level, the reason containing
    /// the text.
    Back(Level, &'static str),
    /// The rollout ended with this verdict.
    Ended(Verdict),
    /// `apply` asks for a retry; the record is unchanged.
    Retried,
}

fn evidence(rmse: f64, skew: f64) -> Outcome {
    let mut lineage = model::Lineage::hand_made("test");
    lineage.metrics = model::Scores { rmse, mae: 1.0, r2: 0.8 };
    let mut a = model::ModelArtifact::new("m2", [0.1; model::N_FEATURES], 3.0, lineage);
    let trip = crate::gates::KNOWN_TRIP;
    a.golden = vec![model::GoldenTrip { trip, fare: a.predict(&trip) }];
    let mut live = a.clone();
    live.lineage.metrics.rmse = 4.0;
    let fares = vec![a.golden[0].fare + skew];
    Outcome::Evidence(Ok(Box::new(Evidence {
        new_fares: Some((fares.clone(), "m2".into())),
        live_fares: Some(fares),
        new: a,
        live: Some(live),
    })))
}

fn ms(n: &[u64]) -> Outcome {
    Outcome::Burst(Ok(n.iter().map(|m| Duration::from_millis(*m)).collect()))
}

fn sample(requests: f64, errors: f64) -> Outcome {
    let sample = Sample { requests, errors, shed: 0.0, buckets: vec![(0.01, requests)] };
    Outcome::Sampled(Ok(Reading { sample, own: Own::default(), queries: vec![] }))
}

fn sample_with(shed: f64, own: Own) -> Outcome {
    let sample = Sample { requests: 100.0, errors: shed, shed, buckets: vec![(0.01, 100.0)] };
    Outcome::Sampled(Ok(Reading { sample, own, queries: vec![] }))
}

/// The stage each row starts from, with the knobs it needs.
fn start_at(stage: StepName, d: &Desired) -> Record {
    let trip = crate::gates::KNOWN_TRIP;
    let s = match stage {
        StepName::Prepare => Stage::Prepare,
        StepName::Start => Stage::Start,
        StepName::Health => Stage::Health { deadline: at(5000) },
        StepName::Gates => Stage::Gates,
        StepName::WarmUp => Stage::WarmUp { deadline: at(5000), next_at: T0, trip },
        StepName::Paused => Stage::Paused,
        StepName::Switch => Stage::Switch,
        StepName::Verify => verify(),
        StepName::ScaleDown => Stage::ScaleDown { not_before: at(3000) },
        StepName::Rollback => l1("before"),
        StepName::Shadow => Stage::Shadow { until: Some(at(3000)) },
        StepName::Canary => {
            Stage::Canary { index: 0, weight: 0, at: CanaryAt::SetWeight { to: 10 } }
        }
    };
    let mut r = rolling_with(d, s);
    if stage == StepName::ScaleDown {
        let baseline = Some(Sample::default());
        r.rollout.as_mut().unwrap().watch =
            Some(Watch { baseline, ..Watch::opening(at(60_000), T0) });
    }
    r
}

#[test]
fn the_record_keeps_what_each_gate_that_ran_measured() {
    use crate::gates::Gate;
    let mut d = desired("v2");
    d.gates.min_r2 = Some(0.5);
    d.gates.latency_budget = Some(Duration::from_millis(50));
    let gates = Step::Gates { color: Green, live: Some(Blue), golden: true };
    let readings = |r: &Record| -> Vec<(Gate, bool)> {
        r.rollout.as_ref().unwrap().summary.gates.iter().map(|g| (g.gate, g.passed)).collect()
    };
    // A wrong golden fare: the quality gate after it has no reading.
    let mut refused = start_at(StepName::Gates, &d);
    apply(&mut refused, &gates, evidence(4.0, 1.0), T0);
    assert_eq!(readings(&refused), [(Gate::Golden, false)]);
    // All pass; the warm-up's reading is the last burst's.
    let mut passed = start_at(StepName::Gates, &d);
    apply(&mut passed, &gates, evidence(4.0, 0.0), T0);
    assert_eq!(readings(&passed), [(Gate::Golden, true), (Gate::MinR2, true)]);
    let warm = Step::WarmUp { color: Green, trip: crate::gates::KNOWN_TRIP, requests: 40 };
    apply(&mut passed, &warm, ms(&[80; 40]), T0);
    apply(&mut passed, &warm, ms(&[5; 40]), T0);
    let r = passed.rollout.as_ref().unwrap();
    assert_eq!(r.stage, Stage::Switch);
    let last = r.summary.gates.last().unwrap();
    assert_eq!((last.gate, last.passed, last.measured), (Gate::LatencyBudget, true, Some(0.005)));
    assert_eq!(r.summary.gates.len(), 3);
}

#[test]
fn apply_over_every_stage_and_outcome() {
    use Level::*;
    use StepName as S;
    use Then::*;
    let trip = crate::gates::KNOWN_TRIP;
    let mut budget = desired("v2");
    budget.gates.latency_budget = Some(Duration::from_millis(50));
    budget.gates.max_rmse_increase = Some(0.05);
    let mut manual = desired("v2");
    manual.auto_promote = false;
    let mut analysed = desired("v2");
    analysed.analysis.window = Duration::from_secs(60);
    analysed.analysis.min_requests = 10;
    let plain = desired("v2");
    let probe = plain.probe.clone();
    let route = Step::Route { to: Some(Green), replicas: 1, fallback: Some((Blue, 1)) };
    let back = Step::Route { to: Some(Blue), replicas: 1, fallback: None };
    let start = Step::Start {
        color: Green,
        image: "i".into(),
        tag: "v2".into(),
        replicas: 1,
        digest: None,
    };
    let gates = Step::Gates { color: Green, live: Some(Blue), golden: true };
    let warm = Step::WarmUp { color: Green, trip, requests: WARM_UP_REQUESTS };
    let probe_step = Step::Probe { color: Green, tag: "v2".into(), probe };
    let analyze = Step::Analyze { color: Green, own: None, queries: vec![] };
    let wrong =
        Own { sent: 1, failed: 0, wrong: Some("a known-answer request was priced at 3".into()) };
    let fail = Step::Supersede { reason: "superseded by tag v3".into() };
    let remove = |why| Step::Remove { color: Green, why };
    let shadowed = with_shadow(desired("v2"));
    let canaried = six_steps();
    let answers_step = Step::Answers { stable: Blue, canary: Green };
    let split = Step::Split { stable: (Blue, 1), canary: (Green, 1), weight: 10 };
    #[rustfmt::skip]
    let table: Vec<(StepName, &Desired, Step, Outcome, Timestamp, Then)> = vec![
        (S::Prepare,   &plain,    remove(Removal::Stale), Outcome::Done, T0, At(S::Prepare)),
        (S::Prepare,   &plain,    start.clone(), Outcome::Done,                      T0, At(S::Health)),
        (S::Prepare,   &plain,    fail.clone(),  Outcome::Done,                      T0, Back(BeforeSwitch, "superseded")),
        (S::Start,     &plain,    start.clone(), Outcome::Done,                      T0, At(S::Health)),
        (S::Start,     &plain,    start.clone(), Outcome::Refused("cannot pull i".into()), T0, Back(BeforeSwitch, "cannot pull")),
        (S::Start,     &plain,    start.clone(), Outcome::Unavailable("registry down".into()), T0, At(S::Start)),
        (S::Health,    &plain,    Step::Healthy { digest: None }, Outcome::Done,                      T0, At(S::Gates)),
        (S::Health,    &plain,    Step::Fail { level: BeforeSwitch, reason: "unhealthy".into() }, Outcome::Done, T0, Back(BeforeSwitch, "unhealthy")),
        (S::Gates,     &plain,    gates.clone(), evidence(4.0, 0.0),                 T0, At(S::Switch)),
        (S::Gates,     &manual,   gates.clone(), evidence(4.0, 0.0),                 T0, At(S::Paused)),
        (S::Gates,     &budget,   gates.clone(), evidence(4.0, 0.0),                 T0, At(S::WarmUp)),
        (S::Gates,     &plain,    gates.clone(), evidence(4.0, 1.0),                 T0, Back(BeforeSwitch, "golden trip 0")),
        (S::Gates,     &budget,   gates.clone(), evidence(4.4, 0.0),                 T0, Back(BeforeSwitch, "quality gate")),
        (S::Gates,     &plain,    gates.clone(), Outcome::Evidence(Err("cannot read the new model".into())), T0, Back(BeforeSwitch, "cannot read")),
        (S::WarmUp,    &budget,   warm.clone(),  ms(&[5; 40]),                       T0, At(S::Switch)),
        (S::WarmUp,    &budget,   warm.clone(),  ms(&[80; 40]),                      T0, At(S::WarmUp)),
        (S::WarmUp,    &budget,   warm.clone(),  ms(&[80; 40]),                      at(5000), Back(BeforeSwitch, "until the health timeout")),
        (S::WarmUp,    &budget,   warm.clone(),  Outcome::Burst(Err("refused".into())), T0, Back(BeforeSwitch, "latency budget: refused")),
        (S::WarmUp,    &budget,   fail.clone(),  Outcome::Done,                      T0, Back(BeforeSwitch, "superseded")),
        (S::Paused,    &manual,   Step::Preview { to: Some((Green, 1)) }, Outcome::Done, T0, At(S::Paused)),
        (S::Paused,    &manual,   Step::Promote, Outcome::Done,                      T0, At(S::Switch)),
        (S::Paused,    &manual,   Step::Fail { level: BeforeSwitch, reason: "aborted by the operator".into() }, Outcome::Done, T0, Back(BeforeSwitch, "aborted")),
        (S::Switch,    &plain,    route.clone(), Outcome::Done,                      T0, At(S::Verify)),
        (S::Switch,    &plain,    route.clone(), Outcome::Refused("the router refused".into()), T0, Back(BeforeSwitch, "refused")),
        (S::Switch,    &plain,    Step::Preview { to: None }, Outcome::Refused("unreachable".into()), T0, Retried),
        (S::Verify,    &plain,    probe_step.clone(), Outcome::Probed(Ok(())),       T0, At(S::ScaleDown)),
        (S::Verify,    &plain,    probe_step.clone(), Outcome::Probed(Err("502".into())), T0, At(S::Verify)),
        (S::Verify,    &plain,    probe_step.clone(), Outcome::Probed(Err("502".into())), at(5000), Back(AfterProbe, "probe through the front")),
        (S::ScaleDown, &analysed, analyze.clone(), sample(100.0, 0.0),               T0, At(S::ScaleDown)),
        (S::ScaleDown, &analysed, analyze.clone(), sample(100.0, 50.0),              T0, Back(AfterAnalysis, "5xx")),
        (S::ScaleDown, &analysed, analyze.clone(), sample(5.0, 5.0),                 T0, At(S::ScaleDown)),
        (S::ScaleDown, &analysed, analyze.clone(), sample_with(90.0, Own::default()), T0, At(S::ScaleDown)),
        (S::ScaleDown, &analysed, analyze.clone(), sample_with(0.0, wrong),          T0, Back(AfterAnalysis, "known-answer")),
        (S::ScaleDown, &analysed, analyze.clone(), Outcome::Sampled(Err("no answer".into())), T0, Retried),
        (S::ScaleDown, &plain,    Step::Remove { color: Blue, why: Removal::ScaleDown }, Outcome::Done, T0, At(S::ScaleDown)),
        (S::ScaleDown, &plain,    Step::Route { to: Some(Green), replicas: 1, fallback: None }, Outcome::Done, T0, At(S::ScaleDown)),
        (S::ScaleDown, &plain,    Step::Finish,  Outcome::Done,                      T0, Ended(Verdict::Succeeded)),
        (S::Rollback,  &plain,    back.clone(),  Outcome::Done,                      T0, Back(BeforeSwitch, "before")),
        (S::Rollback,  &plain,    back.clone(),  Outcome::Refused("unreachable".into()), T0, Retried),
        (S::Rollback,  &plain,    remove(Removal::Failed), Outcome::Done,            T0, Back(BeforeSwitch, "before")),
        (S::Rollback,  &plain,    Step::Finish,  Outcome::Done,                      T0, Ended(Verdict::RolledBack)),
        (S::Shadow,    &shadowed, answers_step.clone(), answered(0.0),               at(3000), At(S::Switch)),
        (S::Shadow,    &shadowed, answers_step.clone(), answered(3.0),               at(3000), Back(BeforeSwitch, "shadow: 300 of 300")),
        (S::Shadow,    &shadowed, answers_step.clone(), Outcome::Answered(Err("gone".into())), at(3000), Back(BeforeSwitch, "could not be collected")),
        (S::Shadow,    &shadowed, Step::Mirror { to: None }, Outcome::Done,          T0, At(S::Shadow)),
        (S::Canary,    &canaried, split.clone(), Outcome::Done,                      T0, At(S::Canary)),
        (S::Canary,    &canaried, split.clone(), Outcome::Refused("no split".into()), T0, Back(BeforeSwitch, "refused 10%")),
        (S::Canary,    &canaried, split.clone(), Outcome::Unavailable("engine".into()), T0, At(S::Canary)),
        (S::Canary,    &canaried, Step::CanaryNext { from: 0, full: true }, Outcome::Done, T0, At(S::Switch)),
        (S::Canary,    &canaried, Step::CanaryNext { from: 3, full: true }, Outcome::Done, T0, At(S::Canary)),
    ];
    for name in StepName::ALL {
        assert!(table.iter().any(|row| row.0 == name), "no row starts at {name}");
    }
    for (i, (from, d, step, outcome, now, then)) in table.into_iter().enumerate() {
        let mut record = start_at(from, d);
        let before = record.clone();
        let applied = apply(&mut record, &step, outcome, now);
        let got = match (&applied, &record.rollout) {
            (Applied::Retry(_), _) => {
                assert_eq!(record, before, "row {i}: a retry must leave the record as it was");
                Retried
            }
            (Applied::Finished(f), None) => Ended(f.result),
            (_, Some(r)) => match &r.stage {
                Stage::Rollback { level, reason } => {
                    let Back(_, text) = then else {
                        panic!("row {i} ({from} {step:?}): rolled back: {reason}")
                    };
                    assert!(reason.contains(text), "row {i}: reason {reason:?} lacks {text:?}");
                    Back(*level, text)
                }
                s => At(s.name()),
            },
            (Applied::Moved, None) => panic!("row {i}: the rollout vanished"),
        };
        assert_eq!(got, then, "row {i}: from {from} by {step:?}");
    }
}

#[test]
fn apply_keeps_what_each_stage_promises() {
    // The deadline of the health stage comes from the manifest.
    let d = desired("v2");
    let mut r = start_at(StepName::Start, &d);
    let start = Step::Start {
        color: Green,
        image: "i".into(),
        tag: "v2".into(),
        replicas: 1,
        digest: None,
    };
    apply(&mut r, &start, Outcome::Done, at(10));
    let deadline = at(10).plus(d.health_timeout);
    assert_eq!(r.rollout.as_ref().unwrap().stage, Stage::Health { deadline });
    // A missed warm-up schedules the next burst, half a second on.
    let mut budget = desired("v2");
    budget.gates.latency_budget = Some(Duration::from_millis(1));
    let mut r = start_at(StepName::WarmUp, &budget);
    let warm =
        Step::WarmUp { color: Green, trip: crate::gates::KNOWN_TRIP, requests: WARM_UP_REQUESTS };
    apply(&mut r, &warm, ms(&[9; 40]), at(100));
    match &r.rollout.as_ref().unwrap().stage {
        Stage::WarmUp { next_at, .. } => assert_eq!(*next_at, at(600)),
        other => panic!("{other:?}"),
    }
    // The gates' diff lands in the rollout and then in the history.
    let mut r = start_at(StepName::Gates, &d);
    let gates = Step::Gates { color: Green, live: Some(Blue), golden: true };
    apply(&mut r, &gates, evidence(4.0, 0.0), T0);
    assert_eq!(r.rollout.as_ref().unwrap().summary.diff.map(|d| d.trips), Some(1));
    // A level-2 restore is timed.
    let mut r = start_at(StepName::Rollback, &d);
    let back = Step::Route { to: Some(Blue), replicas: 1, fallback: None };
    apply(&mut r, &back, Outcome::Done, at(40));
    assert_eq!(r.rollout.as_ref().unwrap().restored_at, Some(at(40)));
    // A begin starts at prepare, with the next revision.
    let mut r = Record::default();
    let begin =
        Step::Begin { desired: Box::new(d.clone()), color: Green, from: blue_v1(), digest: None };
    apply(&mut r, &begin, Outcome::Done, T0);
    let rollout = r.rollout.as_ref().unwrap();
    assert_eq!((rollout.stage.name(), rollout.summary.revision), (StepName::Prepare, 1));
    assert_eq!(rollout.summary.from_tag.as_deref(), Some("v1"));
}

// ---------------------------------------------------------------------
// The canary and the shadow.

use crate::analysis::Sample as Counters;
use crate::manifest::strategy::{CanaryStep, Comparison, Shadow, Strategy};
use crate::record::CanaryAt;
use crate::shadow::Answer;

const S30: Duration = Duration::from_secs(30);

fn canary_of(steps: Vec<CanaryStep>) -> Desired {
    let mut d = desired("v2");
    d.strategy = Strategy::Canary { steps };
    d
}

/// 10% → pause 30 s → analysis 30 s → 50% → pause for promote → 100%.
fn six_steps() -> Desired {
    canary_of(vec![
        CanaryStep::SetWeight(10),
        CanaryStep::Pause { duration: Some(S30) },
        CanaryStep::Analysis(Comparison::defaults(S30)),
        CanaryStep::SetWeight(50),
        CanaryStep::Pause { duration: None },
        CanaryStep::SetWeight(100),
    ])
}

fn with_shadow(mut d: Desired) -> Desired {
    d.shadow = Some(Shadow {
        duration: S30,
        min_requests: 200,
        tolerance: 0.5,
        max_changed: Some(0.01),
        max_psi: None,
        max_mean_change: None,
    });
    d
}

fn stage_of(r: &Record) -> Stage {
    r.rollout.as_ref().unwrap().stage.clone()
}

fn canary_at(index: usize, weight: u8, at: CanaryAt) -> Stage {
    Stage::Canary { index, weight, at }
}

/// `requests` predictions of which `faults` failed, all small batches
/// answered within 10 ms.
fn counters(requests: f64, faults: f64) -> Counters {
    Counters { requests, errors: faults, shed: 0.0, buckets: vec![(0.01, requests - faults)] }
}

fn compared(stable: Counters, canary: Counters) -> Outcome {
    Outcome::Compared(Ok(Pair { stable, canary }))
}

/// 300 requests both colors answered, the new color's fares `shift`
/// dollars off.
fn answered(shift: f64) -> Outcome {
    let answer = |i: usize, d: f64| Answer {
        request_id: format!("r{i}"),
        fares: vec![10.0 + (i % 40) as f64 + d],
    };
    Outcome::Answered(Ok(Box::new(Answers {
        stable: (0..300).map(|i| answer(i, 0.0)).collect(),
        canary: (0..300).map(|i| answer(i, shift)).collect(),
    })))
}

/// A canary of `d` at `stage`, with the router last told `split`.
fn canarying(d: &Desired, stage: Stage, split: Option<u8>) -> Record {
    let mut r = rolling_with(d, stage);
    r.rollout.as_mut().unwrap().split = split;
    r
}

/// Carries out what `decide` picks with `outcome`, and returns the step.
fn take(d: &Desired, o: &Observed, r: &mut Record, now: Timestamp, outcome: Outcome) -> Step {
    let step = decide(Some(d), o, r, now);
    apply(r, &step, outcome, now);
    step
}

#[test]
fn a_canary_walks_its_steps_then_switches() {
    let d = six_steps();
    let o = both(Blue);
    let mut r = rolling_with(&d, Stage::Gates);
    let gates = Step::Gates { color: Green, live: Some(Blue), golden: true };
    apply(&mut r, &gates, evidence(4.0, 0.0), T0);
    assert_eq!(stage_of(&r), canary_at(0, 0, CanaryAt::SetWeight { to: 10 }));
    // 10%: the split, the stable color keeping the rest.
    let split = Step::Split { stable: (Blue, 1), canary: (Green, 1), weight: 10 };
    assert_eq!(take(&d, &o, &mut r, T0, Outcome::Done), split);
    assert_eq!(r.rollout.as_ref().unwrap().split, Some(10));
    // A timed pause.
    assert_eq!(stage_of(&r), canary_at(1, 10, CanaryAt::Pause { until: Some(at(30_000)) }));
    check(&d, &o, &r, at(10), Step::Wait { until: Some(at(30_000)) });
    let next = Step::CanaryNext { from: 1, full: false };
    assert_eq!(take(&d, &o, &mut r, at(30_000), Outcome::Done), next);
    // The analysis: a baseline, then a reading a second, both colors.
    let compare = Step::Compare { stable: Blue, canary: Green };
    let zero = || compared(counters(0.0, 0.0), counters(0.0, 0.0));
    assert_eq!(take(&d, &o, &mut r, at(30_000), zero()), compare);
    check(&d, &o, &r, at(30_500), Step::Wait { until: Some(at(31_000)) });
    let good = || compared(counters(1000.0, 2.0), counters(100.0, 0.0));
    assert_eq!(take(&d, &o, &mut r, at(31_000), good()), compare);
    let c = &r.rollout.as_ref().unwrap().summary.comparisons;
    assert_eq!((c.len(), c[0].step, c[0].weight, c[0].decision), (1, 2, 10, Decision::Passed));
    // A second passing reading replaces the first: one per step.
    take(&d, &o, &mut r, at(32_000), good());
    assert_eq!(r.rollout.as_ref().unwrap().summary.comparisons.len(), 1);
    // The interval over, passed: 50%.
    let next = Step::CanaryNext { from: 2, full: false };
    assert_eq!(take(&d, &o, &mut r, at(60_000), Outcome::Done), next);
    let split = Step::Split { stable: (Blue, 1), canary: (Green, 1), weight: 50 };
    assert_eq!(take(&d, &o, &mut r, at(60_000), Outcome::Done), split);
    // Waiting for the operator, who promotes: 100% is the switch.
    assert_eq!(stage_of(&r), canary_at(4, 50, CanaryAt::Pause { until: None }));
    check(&d, &o, &r, at(99_000_000), Step::Wait { until: None });
    assert_eq!(command(&mut r, Operator::Promote), Ok(()));
    let next = Step::CanaryNext { from: 4, full: false };
    assert_eq!(take(&d, &o, &mut r, at(61_000), Outcome::Done), next);
    assert_eq!(r.rollout.as_ref().unwrap().operator, None, "the word is used up");
    assert_eq!(stage_of(&r), Stage::Switch);
    let route = Step::Route { to: Some(Green), replicas: 1, fallback: Some((Blue, 1)) };
    assert_eq!(take(&d, &o, &mut r, at(61_000), Outcome::Done), route);
    let rollout = r.rollout.as_ref().unwrap();
    assert_eq!((rollout.stage.name(), rollout.split), (StepName::Verify, None));
    let ms: Vec<StepName> = rollout.summary.steps.iter().map(|s| s.step).collect();
    assert!(ms.contains(&StepName::Canary), "{ms:?}");
}

#[test]
fn promote_skips_a_step_and_promote_full_skips_them_all() {
    let d = six_steps();
    let o = both(Blue);
    let pause = canary_at(1, 10, CanaryAt::Pause { until: Some(at(30_000)) });
    let mut r = canarying(&d, pause.clone(), Some(10));
    command(&mut r, Operator::Promote).unwrap();
    let next = Step::CanaryNext { from: 1, full: false };
    assert_eq!(take(&d, &o, &mut r, at(10), Outcome::Done), next);
    assert!(matches!(stage_of(&r), Stage::Canary { index: 2, .. }));
    // Repeated (a crash before the record was saved): no second skip.
    apply(&mut r, &next, Outcome::Done, at(10));
    assert!(matches!(stage_of(&r), Stage::Canary { index: 2, .. }));
    // --full: straight to the switch, from any step.
    let mut r = canarying(&d, pause, Some(10));
    command(&mut r, Operator::PromoteFull).unwrap();
    let full = Step::CanaryNext { from: 1, full: true };
    assert_eq!(take(&d, &o, &mut r, at(10), Outcome::Done), full);
    assert_eq!(stage_of(&r), Stage::Switch);
    // A promote never skips setting a weight: the weight is set first and
    // the word moves the step after it on.
    let mut r = canarying(&d, canary_at(0, 0, CanaryAt::SetWeight { to: 10 }), None);
    command(&mut r, Operator::Promote).unwrap();
    assert!(matches!(take(&d, &o, &mut r, T0, Outcome::Done), Step::Split { weight: 10, .. }));
    let next = Step::CanaryNext { from: 1, full: false };
    check(&d, &o, &r, T0, next);
}

#[test]
fn a_failed_comparison_gives_the_traffic_back_at_level_4_with_its_figures() {
    let d = six_steps();
    let o = both(Blue);
    let analysis =
        CanaryAt::Analysis { until: at(30_000), next_at: T0, baseline: Some(Pair::default()) };
    let mut r = canarying(&d, canary_at(2, 10, analysis), Some(10));
    // The new color fails 20% of its predictions, the stable one none.
    let step = take(&d, &o, &mut r, T0, compared(counters(1000.0, 0.0), counters(100.0, 20.0)));
    assert_eq!(step, Step::Compare { stable: Blue, canary: Green });
    let Stage::Rollback { level: Level::Canary, reason } = stage_of(&r) else {
        panic!("{:?}", stage_of(&r))
    };
    assert!(reason.contains("fault rate is 20.00% of 100"), "{reason}");
    // The split is undone first, then the new color goes.
    let back = Step::Route { to: Some(Blue), replicas: 1, fallback: None };
    assert_eq!(take(&d, &o, &mut r, T0, Outcome::Done), back);
    assert_eq!(r.rollout.as_ref().unwrap().split, None);
    let remove = Step::Remove { color: Green, why: Removal::Failed };
    assert_eq!(take(&d, &o, &mut r, T0, Outcome::Done), remove);
    let blue = observed(Some(Blue), vec![replica(Blue, 1, "v1", Healthy)]);
    check(&d, &blue, &r, T0, Step::Finish);
    let Applied::Finished(f) = apply(&mut r, &Step::Finish, Outcome::Done, T0) else { panic!() };
    assert_eq!((f.result, f.level), (Verdict::RolledBack, Some(Level::Canary)));
    let c = &f.summary.comparisons[0];
    assert_eq!((c.step, c.weight, c.decision), (2, 10, Decision::Failed));
    let errors = c.checks.iter().find(|k| k.criterion == compare::Criterion::ErrorRate).unwrap();
    assert_eq!((errors.measured, errors.limit, errors.passed), (Some(0.2), 0.01, false));
    let json = serde_json::to_value(&*f).unwrap();
    assert_eq!(json["level"], 4);
    assert_eq!(json["comparisons"][0]["checks"][1]["criterion"], "error_rate");
    assert_eq!(r.failed.as_ref().map(|f| f.level), Some(Level::Canary));
}

#[test]
fn an_analysis_that_could_not_judge_never_passes() {
    let d = six_steps();
    let o = both(Blue);
    let over = CanaryAt::Analysis { until: at(30_000), next_at: T0, baseline: None };
    // Never read: fails closed when the interval ends.
    let r = canarying(&d, canary_at(2, 10, over.clone()), Some(10));
    let Step::Fail { level: Level::Canary, reason } = decide(Some(&d), &o, &r, at(30_000)) else {
        panic!("an unread interval passed")
    };
    assert!(reason.contains("could not be read"), "{reason}");
    // Read, but too few predictions of the new color: inconclusive, fails.
    let mut r = canarying(&d, canary_at(2, 10, over), Some(10));
    let zero = compared(counters(0.0, 0.0), counters(0.0, 0.0));
    take(&d, &o, &mut r, T0, zero);
    take(&d, &o, &mut r, at(1000), compared(counters(1000.0, 0.0), counters(5.0, 0.0)));
    assert_eq!(r.rollout.as_ref().unwrap().summary.comparisons[0].decision, Decision::Inconclusive);
    assert!(matches!(stage_of(&r), Stage::Canary { index: 2, .. }), "inconclusive waits");
    let Step::Fail { level: Level::Canary, reason } = decide(Some(&d), &o, &r, at(30_000)) else {
        panic!("an inconclusive interval passed")
    };
    assert!(reason.contains("only 5 judged predictions"), "{reason}");
    // A reading that failed is retried, the record untouched.
    let before = r.clone();
    let step = Step::Compare { stable: Blue, canary: Green };
    let applied = apply(&mut r, &step, Outcome::Compared(Err("no answer".into())), at(2000));
    assert!(matches!(applied, Applied::Retry(_)) && r == before);
    // A platform that cannot compare refuses: level 4 at once.
    apply(&mut r, &step, Outcome::Refused("not here".into()), at(2000));
    assert!(matches!(stage_of(&r), Stage::Rollback { level: Level::Canary, .. }));
}

#[test]
fn abort_at_any_step_gives_the_traffic_back() {
    let d = six_steps();
    let o = both(Blue);
    for (stage, split, level) in [
        (canary_at(0, 0, CanaryAt::SetWeight { to: 10 }), None, Level::BeforeSwitch),
        (canary_at(1, 10, CanaryAt::Pause { until: Some(at(30_000)) }), Some(10), Level::Canary),
        (
            canary_at(2, 10, CanaryAt::Analysis { until: at(30_000), next_at: T0, baseline: None }),
            Some(10),
            Level::Canary,
        ),
        (canary_at(4, 50, CanaryAt::Pause { until: None }), Some(50), Level::Canary),
    ] {
        let mut r = canarying(&d, stage, split);
        assert_eq!(command(&mut r, Operator::Abort), Ok(()));
        let Step::Fail { level: got, reason } = take(&d, &o, &mut r, T0, Outcome::Done) else {
            panic!("no abort")
        };
        assert_eq!(got, level);
        assert!(reason.contains("aborted by the operator at canary step"), "{reason}");
        let expected = match split {
            Some(_) => Step::Route { to: Some(Blue), replicas: 1, fallback: None },
            None => Step::Remove { color: Green, why: Removal::Failed },
        };
        check(&d, &o, &r, T0, expected);
    }
}

#[test]
fn a_new_tag_mid_canary_sets_the_weight_back_first_then_rolls_on() {
    let d3 = desired("v3");
    let o = both(Blue);
    let pause = canary_at(4, 50, CanaryAt::Pause { until: None });
    let mut r = canarying(&six_steps(), pause, Some(50));
    let Step::Supersede { reason } = take(&d3, &o, &mut r, T0, Outcome::Done) else {
        panic!("not superseded")
    };
    assert!(reason.contains("superseded by tag v3"), "{reason}");
    assert!(matches!(stage_of(&r), Stage::Rollback { level: Level::Canary, .. }));
    // Weight back to 0 before anything else, even superseded.
    let back = Step::Route { to: Some(Blue), replicas: 1, fallback: None };
    assert_eq!(take(&d3, &o, &mut r, T0, Outcome::Done), back);
    // Then the rollout ends with no verdict, and v3 rolls on.
    let Applied::Finished(f) = apply(&mut r, &Step::Finish, Outcome::Done, T0) else { panic!() };
    assert_eq!(f.level, Some(Level::Canary));
    assert_eq!(r.failed, None, "a superseded canary marked its tag failed");
    assert!(matches!(decide(Some(&d3), &o, &r, T0), Step::Begin { color: Green, .. }));
}

#[test]
fn a_refused_split_is_level_1_first_and_level_4_once_traffic_moved() {
    let d = six_steps();
    let o = both(Blue);
    let mut first = canarying(&d, canary_at(0, 0, CanaryAt::SetWeight { to: 10 }), None);
    take(&d, &o, &mut first, T0, Outcome::Refused("canary routing is not here".into()));
    let Stage::Rollback { level: Level::BeforeSwitch, reason } = stage_of(&first) else {
        panic!("{:?}", stage_of(&first))
    };
    assert!(reason.contains("refused 10%") && reason.contains("not here"), "{reason}");
    // Nothing moved: no route back, the new color goes.
    check(&d, &o, &first, T0, Step::Remove { color: Green, why: Removal::Failed });
    let mut later = canarying(&d, canary_at(3, 10, CanaryAt::SetWeight { to: 50 }), Some(10));
    take(&d, &o, &mut later, T0, Outcome::Refused("no".into()));
    assert!(matches!(stage_of(&later), Stage::Rollback { level: Level::Canary, .. }));
    check(&d, &o, &later, T0, Step::Route { to: Some(Blue), replicas: 1, fallback: None });
    // The final switch refused after a split: level 4 too.
    let mut switch = canarying(&d, Stage::Switch, Some(50));
    take(&d, &o, &mut switch, T0, Outcome::Refused("no".into()));
    assert!(matches!(stage_of(&switch), Stage::Rollback { level: Level::Canary, .. }));
}

#[test]
fn both_colors_are_watched_through_the_canary() {
    let d = six_steps();
    let pause = canary_at(1, 10, CanaryAt::Pause { until: Some(at(30_000)) });
    // The stable color gone: the new one takes all the traffic, and the
    // rollout ends rolled back, still serving.
    let green = observed(Some(Blue), vec![replica(Green, 1, "v2", Healthy)]);
    let mut r = canarying(&d, pause.clone(), Some(10));
    let Step::Fail { level: Level::Canary, reason } = take(&d, &green, &mut r, T0, Outcome::Done)
    else {
        panic!("the stable color's loss went unseen")
    };
    assert!(reason.contains("stable color blue has no running replica"), "{reason}");
    let all = Step::Route { to: Some(Green), replicas: 1, fallback: None };
    assert_eq!(take(&d, &green, &mut r, T0, Outcome::Done), all);
    let served = observed(Some(Green), vec![replica(Green, 1, "v2", Healthy)]);
    check(&d, &served, &r, T0, Step::Finish);
    // A new replica unhealthy: the traffic goes back.
    let sick = observed(
        Some(Blue),
        vec![replica(Blue, 1, "v1", Healthy), replica(Green, 1, "v2", Unhealthy)],
    );
    let r = canarying(&d, pause, Some(10));
    let Step::Fail { level: Level::Canary, reason } = decide(Some(&d), &sick, &r, T0) else {
        panic!("an unhealthy canary went on")
    };
    assert!(reason.contains("unhealthy"), "{reason}");
}

#[test]
fn a_canary_on_a_first_deploy_switches() {
    let d = six_steps();
    let mut r = Record::default();
    r.begin(&d, Blue, None, T0);
    r.enter(Stage::Gates, T0);
    let gates = Step::Gates { color: Blue, live: None, golden: true };
    apply(&mut r, &gates, evidence(4.0, 0.0), T0);
    assert_eq!(stage_of(&r), Stage::Switch);
}

#[test]
fn the_shadow_mirrors_compares_then_stops_the_mirror_before_the_switch() {
    let d = with_shadow(desired("v2"));
    let o = both(Blue);
    let mut r = rolling_with(&d, Stage::Gates);
    let gates = Step::Gates { color: Green, live: Some(Blue), golden: true };
    apply(&mut r, &gates, evidence(4.0, 0.0), T0);
    assert_eq!(stage_of(&r), Stage::Shadow { until: None });
    let mirror = Step::Mirror { to: Some((Green, 1)) };
    assert_eq!(take(&d, &o, &mut r, T0, Outcome::Done), mirror);
    assert!(r.rollout.as_ref().unwrap().mirroring);
    assert_eq!(stage_of(&r), Stage::Shadow { until: Some(at(30_000)) });
    check(&d, &o, &r, at(10), Step::Wait { until: Some(at(30_000)) });
    let collect = Step::Answers { stable: Blue, canary: Green };
    assert_eq!(take(&d, &o, &mut r, at(30_000), answered(0.0)), collect);
    let judged = r.rollout.as_ref().unwrap().summary.shadow.clone().unwrap();
    assert!(judged.passed && judged.compared == 300, "{judged:?}");
    assert_eq!(stage_of(&r), Stage::Switch);
    // The mirror goes first, then the switch.
    assert_eq!(take(&d, &o, &mut r, at(30_000), Outcome::Done), Step::Mirror { to: None });
    assert!(!r.rollout.as_ref().unwrap().mirroring);
    assert!(matches!(decide(Some(&d), &o, &r, at(30_000)), Step::Route { to: Some(Green), .. }));
    // With a canary, the shadow comes before its first step; with a
    // manual promotion, before the pause.
    for (d, then) in [
        (with_shadow(six_steps()), canary_at(0, 0, CanaryAt::SetWeight { to: 10 })),
        (with_shadow(Desired { auto_promote: false, ..desired("v2") }), Stage::Paused),
    ] {
        let mut r = rolling_with(&d, Stage::Shadow { until: Some(at(30_000)) });
        r.rollout.as_mut().unwrap().mirroring = true;
        apply(&mut r, &collect, answered(0.0), at(30_000));
        assert_eq!(stage_of(&r), then);
        check(&d, &o, &r, at(30_000), Step::Mirror { to: None });
    }
}

#[test]
fn a_shadow_that_sees_answers_change_is_refused_before_traffic_moves() {
    let d = with_shadow(desired("v2"));
    let o = both(Blue);
    let mut r = rolling_with(&d, Stage::Shadow { until: Some(at(30_000)) });
    r.rollout.as_mut().unwrap().mirroring = true;
    let collect = Step::Answers { stable: Blue, canary: Green };
    apply(&mut r, &collect, answered(3.0), at(30_000));
    let Stage::Rollback { level: Level::BeforeSwitch, reason } = stage_of(&r) else {
        panic!("a $3 shift passed")
    };
    assert!(reason.contains("300 of 300 answers"), "{reason}");
    // The mirror goes, then the new color; the figures stay in the history.
    assert_eq!(take(&d, &o, &mut r, at(30_000), Outcome::Done), Step::Mirror { to: None });
    check(&d, &o, &r, at(30_000), Step::Remove { color: Green, why: Removal::Failed });
    let f = r.finish(at(30_000)).unwrap();
    let judged = f.summary.shadow.unwrap();
    assert_eq!((judged.changed, judged.passed), (300, false));
    // Too few requests, a router that cannot mirror, answers that cannot
    // be had: refused too, never passed.
    let mut few = rolling_with(&d, Stage::Shadow { until: Some(at(30_000)) });
    let short = Outcome::Answered(Ok(Box::default()));
    apply(&mut few, &collect, short, at(30_000));
    assert!(matches!(stage_of(&few), Stage::Rollback { level: Level::BeforeSwitch, .. }));
    let mut refused = rolling_with(&d, Stage::Shadow { until: None });
    let mirror = Step::Mirror { to: Some((Green, 1)) };
    apply(&mut refused, &mirror, Outcome::Refused("no mirror here".into()), T0);
    let Stage::Rollback { reason, .. } = stage_of(&refused) else { panic!() };
    assert!(reason.contains("cannot mirror: no mirror here"), "{reason}");
    assert!(!refused.rollout.as_ref().unwrap().mirroring);
}

#[test]
fn a_shadow_is_aborted_or_superseded_but_never_skipped() {
    let d = with_shadow(desired("v2"));
    let o = both(Blue);
    let mut r = rolling_with(&d, Stage::Shadow { until: Some(at(30_000)) });
    r.rollout.as_mut().unwrap().mirroring = true;
    assert!(command(&mut r, Operator::Promote).is_err());
    assert!(command(&mut r, Operator::PromoteFull).is_err());
    let mut aborted = r.clone();
    command(&mut aborted, Operator::Abort).unwrap();
    let Step::Fail { level: Level::BeforeSwitch, reason } = decide(Some(&d), &o, &aborted, T0)
    else {
        panic!("no abort")
    };
    assert!(reason.contains("aborted"), "{reason}");
    // A new tag: superseded, the mirror stopped before the rollout ends.
    let d3 = with_shadow(desired("v3"));
    assert!(matches!(take(&d3, &o, &mut r, T0, Outcome::Done), Step::Supersede { .. }));
    assert_eq!(take(&d3, &o, &mut r, T0, Outcome::Done), Step::Mirror { to: None });
    check(&d3, &o, &r, T0, Step::Finish);
    // No live color to compare with: no shadow.
    let mut first = Record::default();
    first.begin(&d, Blue, None, T0);
    first.enter(Stage::Gates, T0);
    let gates = Step::Gates { color: Blue, live: None, golden: true };
    apply(&mut first, &gates, evidence(4.0, 0.0), T0);
    assert_eq!(stage_of(&first), Stage::Switch);
}

#[test]
fn operators_words_are_taken_at_canary_steps() {
    let d = six_steps();
    for stage in [
        canary_at(0, 0, CanaryAt::SetWeight { to: 10 }),
        canary_at(4, 50, CanaryAt::Pause { until: None }),
    ] {
        for word in [Operator::Promote, Operator::PromoteFull, Operator::Abort] {
            assert_eq!(command(&mut rolling_with(&d, stage.clone()), word), Ok(()));
        }
    }
    assert!(
        command(
            &mut rolling_with(&d, Stage::Verify { deadline: T0, next_at: T0 }),
            Operator::Abort
        )
        .is_err()
    );
    // `--full` on a blue-green pause promotes as promote does.
    let mut paused = rolling("v2", Stage::Paused);
    command(&mut paused, Operator::PromoteFull).unwrap();
    let mut previewing = both(Blue);
    previewing.traffic.preview = Some(Green);
    check(&desired("v2"), &previewing, &paused, T0, Step::Promote);
}

#[test]
fn a_canary_record_survives_json_and_a_blue_green_one_keeps_its_form() {
    let analysis = CanaryAt::Analysis {
        until: at(30_000),
        next_at: T0,
        baseline: Some(Pair { stable: counters(10.0, 0.0), canary: counters(1.0, 0.0) }),
    };
    let mut r = canarying(&six_steps(), canary_at(2, 10, analysis), Some(10));
    r.rollout.as_mut().unwrap().mirroring = true;
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    let plain = serde_json::to_string(&rolling("v2", Stage::Switch)).unwrap();
    for key in ["split", "mirroring", "comparisons", "shadow", "strategy"] {
        assert!(!plain.contains(key), "{key} in {plain}");
    }
}
