//! The reconcile loop against the in-memory backend: a whole rollout,
//! each rollback level, the pause and the warm-up, carried out step by
//! step by the real loop, the real core, the real record and the real
//! HTTP of the gates, with no Docker and no nginx.

mod memory;

use std::time::{Duration, Instant};

use bluegreen::Color;
use controller::notify::{Format, Notifier};
use controller::reconciler::{Reconciler, Shared, Trigger};
use controller::store::Store;
use controller_core::observed::{Health, Replica, State};
use controller_core::record::{Finished, Level, Operator, StepName, Verdict};
use controller_core::status::{Phase, Status};
use memory::{Memory, World};
use model::{ModelArtifact, Trip};
use tokio::sync::{mpsc, watch};

const MANIFEST: &str = "apiVersion: deploy.taxi-fare.io/v1\nkind: Rollout\nmetadata:\n  name: t\nspec:\n  \
    image:\n    repository: localhost:5000/taxi/service\n    tag: TAG\n  healthTimeout: 5s\n  \
    scaleDownDelay: 0s\n  probe:\n    timeout: 1s\n  gates:\n    maxRmseIncrease: 5%\n  analysis:\n    window: 2s\n    minRequests: 10\n";

/// A model with golden trips, an intercept and a held-out RMSE.
fn model(version: &str, intercept: f64, rmse: f64) -> ModelArtifact {
    let mut lineage = model::Lineage::hand_made("test");
    lineage.metrics = model::Scores { rmse, mae: rmse / 2.0, r2: 0.8 };
    let mut a = ModelArtifact::new(version, [0.1; model::N_FEATURES], intercept, lineage);
    let trips = [[40.76, -73.98, 40.64, -73.78, 1.0], [40.71, -74.0, 40.73, -73.93, 2.0]];
    a.golden = trips
        .iter()
        .map(|v| {
            let trip = Trip::from_values(*v).unwrap();
            model::GoldenTrip { trip, fare: a.predict(&trip) }
        })
        .collect();
    a
}

/// Models for v1 (live), v2 (a little different, as good), `skewed`
/// (serves other fares than its artifact) and `worse` (RMSE 10% up).
fn models() -> std::collections::HashMap<String, (ModelArtifact, f64)> {
    [
        ("v1", (model("m1", 3.0, 4.0), 0.0)),
        ("v2", (model("m2", 3.5, 4.1), 0.0)),
        ("skewed", (model("m3", 3.0, 4.0), 0.25)),
        ("worse", (model("m4", 3.0, 4.4), 0.0)),
        ("flaky", (model("m5", 3.0, 4.0), 0.0)),
        ("busy", (model("m6", 3.0, 4.0), 0.0)),
    ]
    .into_iter()
    .map(|(t, m)| (t.to_owned(), m))
    .collect()
}

struct Running {
    memory: Memory,
    shared: std::sync::Arc<Shared>,
    status: watch::Receiver<Status>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    manifest: std::path::PathBuf,
    _watcher: Box<dyn std::any::Any>,
    _dir: tempfile::TempDir,
}

/// A loop running on `world` with the manifest `text`.
async fn start_text(world: World, text: &str) -> Running {
    start_notifying(world, text, None).await
}

/// The same, rollout events going to `webhook`.
async fn start_notifying(world: World, text: &str, webhook: Option<String>) -> Running {
    start_with(world, text, webhook, None).await
}

/// The same, the analysis' queries asked of `prometheus` too.
async fn start_with(
    world: World,
    text: &str,
    webhook: Option<String>,
    prometheus: Option<String>,
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("rollout.yaml");
    std::fs::write(&manifest, text).unwrap();
    let (triggers, trigger_rx) = mpsc::channel(8);
    let shared = Shared::new(manifest.clone(), triggers.clone(), "t".into());
    let memory = Memory::start(world).await;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let reconciler = Reconciler::new(
        memory.clone(),
        shared.clone(),
        Store::new(&state),
        Duration::from_millis(20),
    )
    .unwrap();
    let reconciler = match webhook {
        Some(url) => reconciler.notify(Notifier::webhook(url, Format::Json, shared.clone())),
        None => reconciler,
    };
    let reconciler = match prometheus {
        Some(url) => reconciler.prometheus(url),
        None => reconciler,
    };
    let watcher = controller::watch::manifest(&manifest, triggers).unwrap();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(reconciler.run(trigger_rx, stopped));
    let status = shared.status.subscribe();
    Running { memory, shared, status, stop, task, manifest, _watcher: Box::new(watcher), _dir: dir }
}

impl Running {
    /// Waits (at most 20 s) until `done` holds of the status.
    async fn until<T>(&mut self, what: &str, mut done: impl FnMut(&Status) -> Option<T>) -> T {
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(t) = done(&self.status.borrow()) {
                    return t;
                }
                self.status.changed().await.unwrap();
            }
        });
        waited.await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    async fn finished(&mut self, tag: &str) -> Finished {
        self.until("the rollout to finish", |s| s.history.iter().find(|f| f.tag == tag).cloned())
            .await
    }

    async fn stop(self) -> Memory {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
        self.memory
    }
}

/// Runs the loop on a fake world until a rollout of `tag` has finished.
async fn roll_out(world: World, tag: &str) -> (Finished, Memory) {
    roll_out_with(world, tag, None).await
}

/// The same with `autoPromote: false` and an operator's word once the
/// rollout is paused.
async fn roll_out_with(world: World, tag: &str, operator: Option<Operator>) -> (Finished, Memory) {
    let extra = if operator.is_some() { "  autoPromote: false\n" } else { "" };
    let text = format!("{}{extra}", MANIFEST.replace("TAG", tag));
    let mut run = start_text(world, &text).await;
    if let Some(word) = operator {
        let memory = run.memory.clone();
        run.until("the pause", |s| {
            (s.phase == Phase::Paused && memory.world().preview.is_some()).then_some(())
        })
        .await;
        assert_eq!(
            run.memory.world().live,
            Some(Color::Blue),
            "traffic moved before the promotion"
        );
        run.shared.triggers.send(Trigger::Operator(word)).await.unwrap();
    }
    let done = run.finished(tag).await;
    (done, run.stop().await)
}

fn blue_live_on(tag: &str) -> World {
    World {
        replicas: vec![Replica {
            id: "blue-1".into(),
            name: bluegreen::container_name(Color::Blue, 1),
            color: Color::Blue,
            replica: 1,
            tag: tag.into(),
            image: None,
            digest: None,
            state: State::Running,
            health: Health::Healthy,
            exit_code: None,
            started_at: None,
        }],
        live: Some(Color::Blue),
        servers: 1,
        healthy_after: Some(2),
        models: models(),
        ..World::default()
    }
}

/// The rollout was rolled back at `level` for a reason naming `why`.
fn rolled_back(done: &Finished, level: Level, why: &str) {
    assert_eq!((done.result, done.level), (Verdict::RolledBack, Some(level)));
    assert!(done.reason.as_deref().unwrap_or("").contains(why), "{done:?}");
}

fn steps(f: &Finished) -> Vec<StepName> {
    f.summary.steps.iter().map(|s| s.step).collect()
}

/// A warm-up that never meets its budget (1 ms, predictions take 2 ms)
/// before a long health timeout.
const SLOW_WARM_UP: &str = "  gates:\n    latencyBudget: 1ms\n";

fn with_gates(extra: &str) -> String {
    MANIFEST
        .replace("  gates:\n    maxRmseIncrease: 5%\n", "")
        .replace("healthTimeout: 5s", "healthTimeout: 60s")
        + extra
}

#[tokio::test]
async fn a_new_tag_during_the_warm_up_is_acted_on_within_a_second() {
    let world = World { predict_takes: Duration::from_millis(2), ..blue_live_on("v1") };
    let mut run = start_text(world, &with_gates(SLOW_WARM_UP).replace("TAG", "v2")).await;
    run.until("the warm-up", |s| (s.step == Some(StepName::WarmUp)).then_some(())).await;
    // A burst or two in, the operator deploys another tag.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let edited = Instant::now();
    manifest_file::write_tag(&run.manifest, "v3").unwrap();
    let done = run.finished("v2").await;
    let took = edited.elapsed();
    rolled_back(&done, Level::BeforeSwitch, "superseded by tag v3");
    assert!(took < Duration::from_secs(1), "the new tag was acted on after {took:?}");
    assert!(steps(&done).contains(&StepName::WarmUp), "{:?}", steps(&done));
    // And it rolls on.
    let next = run.finished("v3").await;
    assert_eq!(next.summary.color, Color::Green);
    let memory = run.stop().await;
    assert_eq!(memory.world().live, Some(Color::Blue), "v3 never met its budget either");
}

#[tokio::test]
async fn a_shutdown_during_the_warm_up_stops_the_loop_within_a_second() {
    let world = World { predict_takes: Duration::from_millis(2), ..blue_live_on("v1") };
    let mut run = start_text(world, &with_gates(SLOW_WARM_UP).replace("TAG", "v2")).await;
    run.until("the warm-up", |s| (s.step == Some(StepName::WarmUp)).then_some(())).await;
    let asked = Instant::now();
    run.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), run.task)
        .await
        .expect("the loop did not stop within a second")
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(1));
}

/// How long the loop took to stop once told to, while the rollout of
/// `text` waited at `step`.
async fn shutdown_at(world: World, text: &str, step: StepName) -> Duration {
    let mut run = start_text(world, text).await;
    run.until("the wait", |s| (s.step == Some(step)).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    run.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), run.task)
        .await
        .unwrap_or_else(|_| panic!("the loop did not stop during {step}"))
        .unwrap();
    asked.elapsed()
}

#[tokio::test]
async fn a_shutdown_is_acted_on_within_a_second_whatever_the_rollout_waits_for() {
    let text = MANIFEST.replace("TAG", "v2");
    let slow = |w: World| World { predict_takes: Duration::from_secs(4), ..w };
    let waits = [
        // A pull that takes 30 s.
        (
            StepName::Prepare,
            World { start_takes: Duration::from_secs(30), ..blue_live_on("v1") },
            text.clone(),
        ),
        // Docker health that never comes.
        (
            StepName::Health,
            World { healthy_after: Some(10_000), ..blue_live_on("v1") },
            text.clone(),
        ),
        // A color that takes 4 s to price the golden trips.
        (StepName::Gates, slow(blue_live_on("v1")), text.clone()),
        // Warm-up bursts that never meet their budget.
        (
            StepName::WarmUp,
            World { predict_takes: Duration::from_millis(2), ..blue_live_on("v1") },
            with_gates(SLOW_WARM_UP).replace("TAG", "v2"),
        ),
        // A 30 s analysis window.
        (StepName::ScaleDown, blue_live_on("v1"), text.replace("window: 2s", "window: 30s")),
    ];
    for (step, world, text) in waits {
        let took = shutdown_at(world, &text, step).await;
        println!("shutdown during {step}: {:.2} ms", took.as_secs_f64() * 1e3);
        assert!(took < Duration::from_secs(1), "{step}: the loop stopped after {took:?}");
    }
}

#[tokio::test]
async fn a_new_tag_during_a_slow_pull_is_acted_on_within_a_second() {
    let world = World { start_takes: Duration::from_secs(30), ..blue_live_on("v1") };
    let mut run = start_text(world, &MANIFEST.replace("TAG", "v2")).await;
    run.until("the start", |s| (s.step == Some(StepName::Prepare)).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let edited = Instant::now();
    manifest_file::write_tag(&run.manifest, "v3").unwrap();
    let done = run.finished("v2").await;
    let took = edited.elapsed();
    assert!(done.reason.as_deref().unwrap_or("").contains("superseded by tag v3"), "{done:?}");
    assert!(took < Duration::from_secs(1), "the new tag was acted on after {took:?}");
    run.stop().await;
}

#[tokio::test]
async fn a_shutdown_during_a_slow_pull_stops_the_loop_within_a_second() {
    let world = World { start_takes: Duration::from_secs(30), ..blue_live_on("v1") };
    let mut run = start_text(world, &MANIFEST.replace("TAG", "v2")).await;
    run.until("the start", |s| (s.step == Some(StepName::Prepare)).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    run.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), run.task)
        .await
        .expect("the loop did not stop within a second")
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert!(run.memory.world().calls.is_empty(), "the start was not given up");
}

#[tokio::test]
async fn a_warm_up_within_budget_switches() {
    let world = blue_live_on("v1");
    let text = with_gates("  gates:\n    latencyBudget: 2s\n").replace("TAG", "v2");
    let mut run = start_text(world, &text).await;
    let done = run.finished("v2").await;
    assert_eq!(done.result, Verdict::Succeeded, "{done:?}");
    assert!(steps(&done).contains(&StepName::WarmUp), "{:?}", steps(&done));
    run.stop().await;
}

#[tokio::test]
async fn a_good_rollout_switches_probes_and_scales_down() {
    let (done, fake) = roll_out(blue_live_on("v1"), "v2").await;
    assert_eq!(
        (done.result, done.summary.color, done.level),
        (Verdict::Succeeded, Color::Green, None)
    );
    let w = fake.world();
    assert_eq!(w.live, Some(Color::Green));
    assert!(w.replicas.iter().all(|c| c.color == Color::Green && c.tag == "v2"));
    let calls: Vec<&str> = w.calls.iter().map(String::as_str).collect();
    assert_eq!(
        calls,
        [
            "start green v2",
            "switch Some(Green) backup Some(Blue)",
            "probe green v2",
            "remove blue graceful=true",
        ]
    );
    use StepName::*;
    assert_eq!(steps(&done), [Prepare, Health, Gates, Switch, Verify, ScaleDown]);
    let diff = done.summary.diff.expect("the diff is recorded");
    assert_eq!(diff.trips, 2);
    assert!((diff.max_abs - 0.5).abs() < 1e-9, "{diff:?}");
    assert!(done.healthy_to_switched_ms.is_some());
}

#[tokio::test]
async fn an_unhealthy_color_is_rolled_back_at_level_1() {
    let world = World { healthy_after: None, ..blue_live_on("v1") };
    let (done, fake) = roll_out(world, "v2").await;
    rolled_back(&done, Level::BeforeSwitch, "unhealthy");
    let w = fake.world();
    assert_eq!(w.live, Some(Color::Blue));
    assert!(w.replicas.iter().all(|c| c.color == Color::Blue));
    assert!(!w.calls.iter().any(|c| c.starts_with("switch")), "{:?}", w.calls);
}

#[tokio::test]
async fn a_refused_configuration_is_level_1() {
    let world = World { route_refused: true, ..blue_live_on("v1") };
    let (done, fake) = roll_out(world, "v2").await;
    rolled_back(&done, Level::BeforeSwitch, "host not found");
    assert_eq!(fake.world().live, Some(Color::Blue));
}

#[tokio::test]
async fn a_failed_probe_restores_traffic_at_level_2() {
    let world = World { probe_fails: true, ..blue_live_on("v1") };
    let (done, fake) = roll_out(world, "v2").await;
    assert_eq!((done.result, done.level), (Verdict::RolledBack, Some(Level::AfterProbe)));
    assert!(done.failed_to_restored_ms.is_some(), "{done:?}");
    let w = fake.world();
    assert_eq!(w.live, Some(Color::Blue));
    assert!(w.replicas.iter().all(|c| c.color == Color::Blue));
    assert!(w.calls.iter().any(|c| c == "switch Some(Blue) backup None"), "{:?}", w.calls);
}

#[tokio::test]
async fn a_first_deploy_goes_to_blue_from_nothing() {
    let world = World { healthy_after: Some(1), models: models(), ..World::default() };
    let (done, fake) = roll_out(world, "v1").await;
    assert_eq!((done.result, done.summary.color), (Verdict::Succeeded, Color::Blue));
    assert_eq!(fake.world().live, Some(Color::Blue));
}

#[tokio::test]
async fn an_image_serving_other_fares_than_its_artifact_is_refused() {
    let (done, fake) = roll_out(blue_live_on("v1"), "skewed").await;
    assert_eq!((done.result, done.level), (Verdict::RolledBack, Some(Level::BeforeSwitch)));
    let reason = done.reason.unwrap_or_default();
    assert!(reason.contains("golden trip 0") && reason.contains("promises"), "{reason}");
    assert_eq!(fake.world().live, Some(Color::Blue));
}

#[tokio::test]
async fn a_worse_model_is_refused_with_figures() {
    let (done, fake) = roll_out(blue_live_on("v1"), "worse").await;
    assert_eq!((done.result, done.level), (Verdict::RolledBack, Some(Level::BeforeSwitch)));
    let reason = done.reason.unwrap_or_default();
    assert!(reason.contains("10.0% above") && reason.contains("at most 5.0%"), "{reason}");
    assert_eq!(fake.world().live, Some(Color::Blue));
}

#[tokio::test]
async fn errors_after_the_switch_roll_back_at_level_3() {
    let (done, fake) = roll_out(blue_live_on("v1"), "flaky").await;
    assert_eq!((done.result, done.level), (Verdict::RolledBack, Some(Level::AfterAnalysis)));
    let reason = done.reason.unwrap_or_default();
    assert!(reason.contains("50.0% of 10") && reason.contains("5xx"), "{reason}");
    let figures = done.summary.analysis.expect("the figures that triggered it");
    assert_eq!(figures.error_rate, 0.5);
    let w = fake.world();
    assert_eq!(w.live, Some(Color::Blue));
    assert!(w.replicas.iter().all(|c| c.color == Color::Blue));
}

#[tokio::test]
async fn a_quiet_window_is_judged_by_the_controllers_own_requests() {
    let (done, fake) = roll_out(blue_live_on("v1"), "v2").await;
    assert_eq!(done.result, Verdict::Succeeded, "{done:?}");
    let figures = done.summary.analysis.expect("figures");
    // No client sent a thing: the controller's known-answer requests did.
    assert!(figures.own >= 10 && figures.judged() >= 10.0, "{figures:?}");
    assert_eq!(fake.world().live, Some(Color::Green));
}

#[tokio::test]
async fn answers_shed_for_capacity_do_not_roll_a_good_release_back() {
    let text = MANIFEST.replace("TAG", "busy").replace("window: 2s", "window: 6s");
    let mut run = start_text(blue_live_on("v1"), &text).await;
    let done = run.finished("busy").await;
    let fake = run.stop().await;
    assert_eq!(done.result, Verdict::Succeeded, "{done:?}");
    let figures = done.summary.analysis.expect("figures");
    assert!(figures.shed >= 1.0 && figures.error_rate == 0.0, "{figures:?}");
    assert_eq!(fake.world().live, Some(Color::Green));
}

#[tokio::test]
async fn a_registry_down_for_a_while_is_retried_before_the_rollout_fails() {
    let world = World { start_fails: 2, ..blue_live_on("v1") };
    let (done, _) = roll_out(world, "v2").await;
    assert_eq!(done.result, Verdict::Succeeded, "{done:?}");
    let retries = &done.summary.retries;
    assert_eq!((retries[0].step, retries[0].count), (StepName::Start, 2), "{retries:?}");
    assert!(retries[0].error.contains("connection refused"), "{retries:?}");
    // Down for good: five tries, then level 1.
    let world = World { start_fails: 99, ..blue_live_on("v1") };
    let text = MANIFEST.replace("TAG", "v2");
    let mut run = start_text(world, &text).await;
    let done = tokio::time::timeout(Duration::from_secs(40), run.finished("v2")).await.unwrap();
    rolled_back(&done, Level::BeforeSwitch, "start failed 5 times");
    assert_eq!(run.stop().await.world().live, Some(Color::Blue));
}

#[tokio::test]
async fn a_tag_pushed_again_is_deployed_by_its_digest() {
    let mut world = blue_live_on("v1");
    world.replicas[0].digest = Some("sha256:aaa".into());
    world.digests.insert("v1".into(), "sha256:aaa".into());
    let mut run = start_text(world, &MANIFEST.replace("TAG", "v1")).await;
    run.until("the live tag resolved", |s| {
        (s.desired.digest.as_deref() == Some("sha256:aaa")).then_some(())
    })
    .await;
    assert!(run.shared.status.borrow().history.is_empty(), "the same digest was deployed again");
    run.memory.world().digests.insert("v1".into(), "sha256:bbb".into());
    let done = run.finished("v1").await;
    assert_eq!(done.result, Verdict::Succeeded, "{done:?}");
    assert_eq!(done.summary.digest.as_deref(), Some("sha256:bbb"));
    let status = run.shared.status.borrow().clone();
    assert_eq!(status.active.digest.as_deref(), Some("sha256:bbb"));
    let fake = run.stop().await;
    let w = fake.world();
    assert!(
        w.replicas
            .iter()
            .all(|c| c.color == Color::Green && c.digest.as_deref() == Some("sha256:bbb"))
    );
}

/// A webhook receiver on loopback: the bodies it took, in order; the
/// first `refuse` POSTs are answered 500.
async fn receiver(
    refuse: usize,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use std::sync::{Arc, Mutex};
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (kept, tried) = (got.clone(), tries.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let (kept, tried) = (kept.clone(), tried.clone());
            async move {
                if tried.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < refuse {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                kept.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test]
async fn rollout_events_reach_the_webhook_in_order_retried_when_refused() {
    let (url, got) = receiver(2).await;
    let mut run =
        start_notifying(blue_live_on("v1"), &MANIFEST.replace("TAG", "v2"), Some(url)).await;
    run.finished("v2").await;
    manifest_file::write_tag(&run.manifest, "skewed").unwrap();
    let done = run.finished("skewed").await;
    rolled_back(&done, Level::BeforeSwitch, "golden trip");
    run.until("every event delivered", |s| {
        s.notifications.as_ref().filter(|n| n.sent == 4).cloned()
    })
    .await;
    let events: Vec<(String, String)> = got
        .lock()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or("").to_owned(),
                e["tag"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want =
        [("started", "v2"), ("succeeded", "v2"), ("started", "skewed"), ("rolled_back", "skewed")];
    assert_eq!(events, want.map(|(e, t)| (e.to_owned(), t.to_owned())));
    let last = got.lock().unwrap()[3].clone();
    assert_eq!(last["level"], 1);
    assert!(last["reason"].as_str().unwrap_or("").contains("golden trip"), "{last}");
    let n = run.shared.status.borrow().notifications.clone().unwrap();
    assert_eq!((n.failed, n.dropped, n.error), (0, 0, None));
    run.stop().await;
}

#[tokio::test]
async fn a_webhook_that_is_down_holds_no_rollout_up() {
    // Nothing listens on port 9 of loopback.
    let url = "http://127.0.0.1:9/hook".to_owned();
    let started = Instant::now();
    let mut run =
        start_notifying(blue_live_on("v1"), &MANIFEST.replace("TAG", "v2"), Some(url)).await;
    let done = run.finished("v2").await;
    assert_eq!(done.result, Verdict::Succeeded);
    assert!(started.elapsed() < Duration::from_secs(10), "the rollout waited for the webhook");
    let n = run
        .until("a failed try on /status", |s| s.notifications.clone().filter(|n| n.error.is_some()))
        .await;
    assert!(n.error.unwrap_or_default().contains("cannot be reached"));
    run.stop().await;
}

/// A Prometheus on loopback whose every query answers `value`.
async fn prometheus(value: &'static str) -> String {
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::get(move || async move {
            let result = format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1.0,"{value}"]}}]}}}}"#
            );
            ([("content-type", "application/json")], result)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

const QUERY: &str = "    queries:\n      - name: errors\n        query: rate(errors{color=\"{{color}}\"}[1m])\n        max: 0.5\n";

#[tokio::test]
async fn the_analysis_asks_prometheus_and_an_unanswered_query_never_passes() {
    let text = format!("{}{QUERY}", MANIFEST.replace("TAG", "v2"));
    // Within its bound: the rollout succeeds.
    let mut run = start_with(blue_live_on("v1"), &text, None, Some(prometheus("0.1").await)).await;
    assert_eq!(run.finished("v2").await.result, Verdict::Succeeded);
    run.stop().await;
    // Past it: level 3, naming the query and its value.
    let mut run = start_with(blue_live_on("v1"), &text, None, Some(prometheus("0.9").await)).await;
    rolled_back(&run.finished("v2").await, Level::AfterAnalysis, "query errors is 0.9, above 0.5");
    run.stop().await;
    // No Prometheus to ask: inconclusive, so never a pass.
    let mut run = start_with(blue_live_on("v1"), &text, None, None).await;
    rolled_back(&run.finished("v2").await, Level::AfterAnalysis, "query errors was inconclusive");
    run.stop().await;
}

#[tokio::test]
async fn an_analysis_that_cannot_read_its_figures_rolls_back_at_level_3() {
    let world = World { metrics_fail: true, ..blue_live_on("v1") };
    let (done, fake) = roll_out(world, "v2").await;
    rolled_back(&done, Level::AfterAnalysis, "could not be read");
    assert_eq!(fake.world().live, Some(Color::Blue));
}

#[tokio::test]
async fn a_live_replica_down_is_started_again_and_replicas_scale_in_place() {
    let mut world = blue_live_on("v1");
    world.replicas[0].state = State::Exited;
    world.replicas[0].health = Health::Unhealthy;
    let mut run = start_text(world, &MANIFEST.replace("TAG", "v1")).await;
    let memory = run.memory.clone();
    let serving = |replicas: usize| {
        let memory = memory.clone();
        move |s: &Status| {
            let w = memory.world();
            let healthy = w.replicas.iter().filter(|c| c.health == Health::Healthy).count();
            (s.phase == Phase::Healthy && healthy == replicas && w.servers == replicas as u32)
                .then_some(())
        }
    };
    run.until("the replica started again", serving(1)).await;
    // Up to two, then down to one, all without a rollout.
    let scaled =
        MANIFEST.replace("TAG", "v1").replace("healthTimeout", "replicas: 2\n  healthTimeout");
    std::fs::write(&run.manifest, &scaled).unwrap();
    run.until("two replicas", serving(2)).await;
    std::fs::write(&run.manifest, MANIFEST.replace("TAG", "v1")).unwrap();
    run.until("one replica", serving(1)).await;
    let memory = run.stop().await;
    let w = memory.world();
    assert!(w.replicas.iter().all(|c| c.color == Color::Blue && c.tag == "v1"));
    let calls: Vec<&str> = w.calls.iter().map(String::as_str).collect();
    assert_eq!(
        calls,
        [
            "start blue v1",
            "start blue v1",
            "switch Some(Blue) backup None",
            "switch Some(Blue) backup None",
            "start blue v1"
        ],
    );
}

#[tokio::test]
async fn a_paused_rollout_shows_a_preview_and_switches_when_promoted() {
    let (done, fake) = roll_out_with(blue_live_on("v1"), "v2", Some(Operator::Promote)).await;
    assert_eq!((done.result, done.summary.color), (Verdict::Succeeded, Color::Green));
    let w = fake.world();
    assert_eq!((w.live, w.preview), (Some(Color::Green), None));
    assert!(w.calls.iter().any(|c| c == "preview Some(Green)"), "{:?}", w.calls);
    assert!(steps(&done).contains(&StepName::Paused), "{:?}", steps(&done));
}

#[tokio::test]
async fn an_aborted_rollout_removes_the_new_color() {
    let (done, fake) = roll_out_with(blue_live_on("v1"), "v2", Some(Operator::Abort)).await;
    assert_eq!((done.result, done.level), (Verdict::RolledBack, Some(Level::BeforeSwitch)));
    assert_eq!(done.reason.as_deref(), Some("aborted by the operator"));
    let w = fake.world();
    assert_eq!((w.live, w.preview), (Some(Color::Blue), None));
    assert!(w.replicas.iter().all(|c| c.color == Color::Blue));
}
