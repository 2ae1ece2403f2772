//! The reconcile loop against an in-memory platform: a whole rollout, and
//! each rollback level, carried out step by step by the real loop, the
//! real decision and the real record, with no Docker and no nginx.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluegreen::Color;
use controller::clock::Timestamp;
use controller::controller::{Reconciler, Shared};
use controller::error::{Error, Result};
use controller::manifest::Probe;
use controller::observed::{Container, Health, Observed};
use controller::platform::Platform;
use controller::record::{Finished, Operator, Outcome, Record};
use controller::status::{self, ManifestState};
use controller::store::Store;
use model::{ModelArtifact, Trip};
use tokio::sync::{mpsc, watch};

/// What the fake world holds, and how it misbehaves.
#[derive(Default)]
struct World {
    containers: Vec<Container>,
    live: Option<Color>,
    /// Observations until a started container turns healthy; `None`:
    /// it turns unhealthy instead.
    healthy_after: Option<u32>,
    probe_fails: bool,
    /// The artifact each image carries, by tag, and what the image really
    /// computes (its fares differ from the artifact's by this much).
    models: std::collections::HashMap<String, (ModelArtifact, f64)>,
    nginx_test_fails: bool,
    /// Every call, for the assertions.
    calls: Vec<String>,
    /// The color on the preview port.
    preview: Option<Color>,
    /// Reads of /metrics so far.
    metric_reads: u32,
    /// How many times each starting container has been observed.
    seen: std::collections::HashMap<String, u32>,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Platform for Fake {
    async fn observe(&self) -> Result<Observed> {
        let mut guard = self.world();
        let w = &mut *guard;
        for c in &mut w.containers {
            if c.health == Health::Starting {
                let seen = w.seen.entry(c.id.clone()).or_default();
                *seen += 1;
                match w.healthy_after {
                    Some(n) if *seen >= n => c.health = Health::Healthy,
                    None if *seen >= 2 => c.health = Health::Unhealthy,
                    _ => {}
                }
            }
        }
        Ok(Observed {
            containers: w.containers.clone(),
            live: Ok(w.live),
            backup: None,
            preview: w.preview,
        })
    }

    async fn start_color(
        &self,
        color: Color,
        _image: &str,
        tag: &str,
        replicas: u32,
    ) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("start {color} {tag}"));
        w.containers.retain(|c| c.color != color);
        w.seen.clear();
        for replica in 1..=replicas {
            w.containers.push(Container {
                id: format!("{color}-{replica}"),
                name: bluegreen::container_name(color, replica),
                color,
                replica,
                tag: tag.to_owned(),
                state: "running".into(),
                health: Health::Starting,
                exit_code: None,
                started_at: None,
            });
        }
        Ok(())
    }

    async fn remove_color(&self, color: Color, graceful: bool) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("remove {color} graceful={graceful}"));
        w.containers.retain(|c| c.color != color);
        Ok(())
    }

    async fn switch_traffic(
        &self,
        to: Option<Color>,
        _replicas: u32,
        backup: Option<(Color, u32)>,
    ) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("switch {to:?} backup {:?}", backup.map(|b| b.0)));
        if w.nginx_test_fails && to != w.live {
            return Err(Error::NginxTest("host not found in upstream".into()));
        }
        w.live = to;
        Ok(())
    }

    async fn artifact(&self, color: Color) -> Result<ModelArtifact> {
        let w = self.world();
        let tag = w
            .containers
            .iter()
            .find(|c| c.color == color)
            .map(|c| c.tag.clone())
            .unwrap_or_default();
        w.models
            .get(&tag)
            .map(|(a, _)| a.clone())
            .ok_or(Error::Model { color, message: "no model".into() })
    }

    async fn predict(&self, color: Color, trips: &[Trip]) -> Result<(Vec<f64>, String)> {
        let w = self.world();
        let tag = w
            .containers
            .iter()
            .find(|c| c.color == color)
            .map(|c| c.tag.clone())
            .unwrap_or_default();
        let (a, skew) =
            w.models.get(&tag).ok_or(Error::Model { color, message: "no model".into() })?;
        Ok((trips.iter().map(|t| a.predict(t) + skew).collect(), a.model_version.clone()))
    }

    async fn preview(&self, to: Option<(Color, u32)>) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("preview {:?}", to.map(|t| t.0)));
        w.preview = to.map(|t| t.0);
        Ok(())
    }

    async fn metrics(&self, color: Color) -> Result<Vec<String>> {
        let mut w = self.world();
        let tag = w
            .containers
            .iter()
            .find(|c| c.color == color)
            .map(|c| c.tag.clone())
            .unwrap_or_default();
        w.metric_reads += 1;
        let n = w.metric_reads;
        // Every read sees 30 more predictions; `flaky` answers half with 503.
        let errors = if tag == "flaky" { 15 * n } else { 0 };
        Ok(vec![format!(
            "http_requests_total{{route=\"/api/predict/\",method=\"POST\",status=\"200\"}} {}\n\
             http_requests_total{{route=\"/api/predict/\",method=\"POST\",status=\"503\"}} {errors}\n",
            30 * n - errors
        )])
    }

    async fn probe(&self, color: Color, tag: &str, _probe: &Probe) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("probe {color} {tag}"));
        if w.probe_fails { Err(Error::Probe("502 through nginx".into())) } else { Ok(()) }
    }
}

const MANIFEST: &str = "apiVersion: deploy.taxi-fare.io/v1\nkind: Rollout\nmetadata:\n  name: t\nspec:\n  \
    image:\n    repository: localhost:5000/taxi/service\n    tag: TAG\n  healthTimeout: 5s\n  \
    scaleDownDelay: 0s\n  gates:\n    maxRmseIncrease: 5%\n  analysis:\n    window: 2s\n    minRequests: 10\n";

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
    ]
    .into_iter()
    .map(|(t, m)| (t.to_owned(), m))
    .collect()
}

/// Runs the loop on a fake world until a rollout of `tag` has finished.
async fn roll_out(world: World, tag: &str) -> (Finished, Fake) {
    roll_out_with(world, tag, None).await
}

/// The same with `autoPromote: false` and an operator's word once the
/// rollout is paused.
async fn roll_out_with(world: World, tag: &str, operator: Option<Operator>) -> (Finished, Fake) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("rollout.yaml");
    let mut text = MANIFEST.replace("TAG", tag);
    if operator.is_some() {
        text.push_str("  autoPromote: false\n");
    }
    std::fs::write(&manifest, text).unwrap();
    let source = manifest.display().to_string();
    let initial = status::build(
        &ManifestState { desired: None, error: None, source: &source },
        None,
        &Record::default(),
        None,
        Timestamp::now(),
    );
    let (triggers, trigger_rx) = mpsc::channel(8);
    let (status_tx, mut status_rx) = watch::channel(initial);
    let shared = Shared::new(status_tx, manifest, triggers, "t".into());
    let fake = Fake(Arc::new(Mutex::new(world)));
    let reconciler = Reconciler::new(
        fake.clone(),
        shared.clone(),
        Store::new(dir.path()),
        Duration::from_millis(20),
    )
    .unwrap();
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(reconciler.run(trigger_rx, stopped));
    if let Some(op) = operator {
        tokio::time::timeout(Duration::from_secs(20), async {
            while status_rx.borrow().phase != "Paused" || fake.world().preview.is_none() {
                status_rx.changed().await.unwrap();
            }
        })
        .await
        .expect("the rollout did not pause");
        assert_eq!(fake.world().live, Some(Color::Blue), "traffic moved before the promotion");
        *shared.operator.lock().unwrap() = Some(op);
        shared.triggers.try_send(controller::controller::Trigger::Command("test")).unwrap();
    }
    let done = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let finished = status_rx.borrow().history.iter().find(|f| f.tag == tag).cloned();
            if let Some(f) = finished {
                return f;
            }
            status_rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the rollout did not finish");
    stop.send(true).unwrap();
    running.await.unwrap();
    drop(dir);
    (done, fake)
}

fn blue_live_on(tag: &str) -> World {
    World {
        containers: vec![Container {
            id: "blue-1".into(),
            name: bluegreen::container_name(Color::Blue, 1),
            color: Color::Blue,
            replica: 1,
            tag: tag.into(),
            state: "running".into(),
            health: Health::Healthy,
            exit_code: None,
            started_at: None,
        }],
        live: Some(Color::Blue),
        healthy_after: Some(2),
        models: models(),
        ..World::default()
    }
}

#[tokio::test]
async fn a_good_rollout_switches_probes_and_scales_down() {
    let (done, fake) = roll_out(blue_live_on("v1"), "v2").await;
    assert_eq!((done.result, done.color, done.level), (Outcome::Succeeded, Color::Green, None));
    let w = fake.world();
    assert_eq!(w.live, Some(Color::Green));
    assert!(w.containers.iter().all(|c| c.color == Color::Green && c.tag == "v2"));
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
    let steps: Vec<&str> = done.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, ["prepare", "health", "gates", "switch", "verify", "scale_down"]);
    let diff = done.diff.expect("the diff is recorded");
    assert_eq!(diff.trips, 2);
    assert!((diff.max_abs - 0.5).abs() < 1e-9, "{diff:?}");
    assert!(done.healthy_to_switched_ms.is_some());
}

#[tokio::test]
async fn an_unhealthy_color_is_rolled_back_at_level_1() {
    let world = World { healthy_after: None, ..blue_live_on("v1") };
    let (done, fake) = roll_out(world, "v2").await;
    assert_eq!((done.result, done.level), (Outcome::RolledBack, Some(1)));
    assert!(done.reason.as_deref().unwrap_or("").contains("unhealthy"), "{done:?}");
    let w = fake.world();
    assert_eq!(w.live, Some(Color::Blue));
    assert!(w.containers.iter().all(|c| c.color == Color::Blue));
    assert!(!w.calls.iter().any(|c| c.starts_with("switch")), "{:?}", w.calls);
}

#[tokio::test]
async fn a_refused_configuration_is_level_1() {
    let world = World { nginx_test_fails: true, ..blue_live_on("v1") };
    let (done, fake) = roll_out(world, "v2").await;
    assert_eq!((done.result, done.level), (Outcome::RolledBack, Some(1)));
    assert!(done.reason.as_deref().unwrap_or("").contains("nginx -t"), "{done:?}");
    assert_eq!(fake.world().live, Some(Color::Blue));
}

#[tokio::test]
async fn a_failed_probe_restores_traffic_at_level_2() {
    let world = World { probe_fails: true, ..blue_live_on("v1") };
    let (done, fake) = roll_out(world, "v2").await;
    assert_eq!((done.result, done.level), (Outcome::RolledBack, Some(2)));
    assert!(done.failed_to_restored_ms.is_some(), "{done:?}");
    let w = fake.world();
    assert_eq!(w.live, Some(Color::Blue));
    assert!(w.containers.iter().all(|c| c.color == Color::Blue));
    assert!(w.calls.iter().any(|c| c == "switch Some(Blue) backup None"), "{:?}", w.calls);
}

#[tokio::test]
async fn a_first_deploy_goes_to_blue_from_nothing() {
    let world = World { healthy_after: Some(1), models: models(), ..World::default() };
    let (done, fake) = roll_out(world, "v1").await;
    assert_eq!((done.result, done.color), (Outcome::Succeeded, Color::Blue));
    assert_eq!(fake.world().live, Some(Color::Blue));
}

#[tokio::test]
async fn an_image_serving_other_fares_than_its_artifact_is_refused() {
    let (done, fake) = roll_out(blue_live_on("v1"), "skewed").await;
    assert_eq!((done.result, done.level), (Outcome::RolledBack, Some(1)));
    let reason = done.reason.unwrap_or_default();
    assert!(reason.contains("golden trip 0") && reason.contains("promises"), "{reason}");
    assert_eq!(fake.world().live, Some(Color::Blue));
}

#[tokio::test]
async fn a_worse_model_is_refused_with_figures() {
    let (done, fake) = roll_out(blue_live_on("v1"), "worse").await;
    assert_eq!((done.result, done.level), (Outcome::RolledBack, Some(1)));
    let reason = done.reason.unwrap_or_default();
    assert!(reason.contains("10.0% above") && reason.contains("at most 5.0%"), "{reason}");
    assert_eq!(fake.world().live, Some(Color::Blue));
}

#[tokio::test]
async fn errors_after_the_switch_roll_back_at_level_3() {
    let (done, fake) = roll_out(blue_live_on("v1"), "flaky").await;
    assert_eq!((done.result, done.level), (Outcome::RolledBack, Some(3)));
    let reason = done.reason.unwrap_or_default();
    assert!(reason.contains("50.0% of") && reason.contains("5xx"), "{reason}");
    let figures = done.analysis.expect("the figures that triggered it");
    assert_eq!(figures.error_rate, 0.5);
    let w = fake.world();
    assert_eq!(w.live, Some(Color::Blue));
    assert!(w.containers.iter().all(|c| c.color == Color::Blue));
}

#[tokio::test]
async fn a_paused_rollout_shows_a_preview_and_switches_when_promoted() {
    let (done, fake) = roll_out_with(blue_live_on("v1"), "v2", Some(Operator::Promote)).await;
    assert_eq!((done.result, done.color), (Outcome::Succeeded, Color::Green));
    let w = fake.world();
    assert_eq!((w.live, w.preview), (Some(Color::Green), None));
    assert!(w.calls.iter().any(|c| c == "preview Some(Green)"), "{:?}", w.calls);
    let steps: Vec<&str> = done.steps.iter().map(|s| s.step.as_str()).collect();
    assert!(steps.contains(&"paused"), "{steps:?}");
}

#[tokio::test]
async fn an_aborted_rollout_removes_the_new_color() {
    let (done, fake) = roll_out_with(blue_live_on("v1"), "v2", Some(Operator::Abort)).await;
    assert_eq!((done.result, done.level), (Outcome::RolledBack, Some(1)));
    assert_eq!(done.reason.as_deref(), Some("aborted by the operator"));
    let w = fake.world();
    assert_eq!((w.live, w.preview), (Some(Color::Blue), None));
    assert!(w.containers.iter().all(|c| c.color == Color::Blue));
}
