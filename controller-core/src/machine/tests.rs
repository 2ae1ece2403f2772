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
