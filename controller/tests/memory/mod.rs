//! An in-memory backend: both platform roles over a fake world, and the
//! service's HTTP (`/model`, `/api/predict/`, `/metrics`, `/`) answered
//! by a small server on a real loopback socket for each color and for the
//! front. It is the proof that a backend is one implementation: the real
//! loop, the real core and the real HTTP of the gates run against it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router as Routes};
use bluegreen::Color;
use controller::platform::{PlatformError, Result, Router, Spec, Workloads};
use controller_core::observed::{Capabilities, Health, Replica, State as RunState, Traffic};
use model::{ModelArtifact, Trip};
use tokio::sync::mpsc;

/// What the fake world holds, and how it misbehaves.
#[derive(Default)]
pub struct World {
    pub replicas: Vec<Replica>,
    pub live: Option<Color>,
    /// Observations until a started replica turns healthy; `None`: it
    /// turns unhealthy instead.
    pub healthy_after: Option<u32>,
    pub probe_fails: bool,
    /// The artifact each image carries, by tag, and what the image really
    /// computes (its fares differ from the artifact's by this much).
    pub models: HashMap<String, (ModelArtifact, f64)>,
    pub route_refused: bool,
    /// How long each prediction takes.
    pub predict_takes: Duration,
    /// How long starting a color takes (a slow pull).
    pub start_takes: Duration,
    /// Every call, for the assertions.
    pub calls: Vec<String>,
    /// The color on the preview entry point.
    pub preview: Option<Color>,
    /// How many servers of the live color the router names.
    pub servers: u32,
    /// Predictions each color answered: priced, failed (500), shed (503).
    pub answered: HashMap<Color, [u64; 3]>,
    /// /metrics answers 503.
    pub metrics_fail: bool,
    /// Starts that fail as an unreachable registry would, before one works.
    pub start_fails: u32,
    /// What each tag names in the fake registry.
    pub digests: HashMap<String, String>,
    /// How many times each starting replica has been observed.
    pub seen: HashMap<String, u32>,
}

impl World {
    fn tag_of(&self, color: Color) -> Option<String> {
        self.replicas.iter().find(|c| c.color == color).map(|c| c.tag.clone())
    }
}

#[derive(Clone)]
pub struct Memory {
    world: Arc<Mutex<World>>,
    /// `http://127.0.0.1:port` of the fake service.
    base: String,
    front: String,
}

impl Memory {
    /// The world, and the fake service serving it on a loopback port.
    pub async fn start(world: World) -> Memory {
        let world = Arc::new(Mutex::new(world));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let memory = Memory { world, front: format!("{base}/front"), base };
        let routes = Routes::new()
            .route("/c/{color}/model", get(artifact))
            .route("/c/{color}/api/predict/", post(predict_on))
            .route("/c/{color}/metrics", get(metrics))
            .route("/front/", get(front))
            .route("/front/ready", get(ready))
            .route("/front/api/predict/", post(predict_live))
            .with_state(memory.clone());
        tokio::spawn(async move { axum::serve(listener, routes).await });
        memory
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Workloads for Memory {
    async fn replicas(&self) -> Result<Vec<Replica>> {
        let mut guard = self.world();
        let w = &mut *guard;
        for c in &mut w.replicas {
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
        Ok(w.replicas.clone())
    }

    async fn start(&self, color: Color, spec: Spec) -> Result<()> {
        let (tag, replicas) = (spec.tag.as_str(), spec.replicas);
        let takes = self.world().start_takes;
        tokio::time::sleep(takes).await;
        let mut w = self.world();
        w.calls.push(format!("start {color} {tag}"));
        if w.start_fails > 0 {
            w.start_fails -= 1;
            return Err(controller::platform::PlatformError::Unavailable {
                backend: "registry",
                message: "connection refused".into(),
            });
        }
        w.replicas.retain(|c| c.color != color);
        w.seen.clear();
        // Pulled by tag, a replica runs what the tag names now.
        let digest = spec.digest.clone().or_else(|| w.digests.get(tag).cloned());
        for replica in 1..=replicas {
            w.replicas.push(Replica {
                id: format!("{color}-{replica}"),
                name: bluegreen::container_name(color, replica),
                color,
                replica,
                tag: tag.to_owned(),
                image: Some(spec.repository().to_owned()),
                digest: digest.clone(),
                state: RunState::Running,
                health: Health::Starting,
                exit_code: None,
                started_at: None,
            });
        }
        Ok(())
    }

    async fn resolve(&self, image: &str) -> Result<String> {
        let tag = image.rsplit_once(':').map_or("", |(_, t)| t);
        self.world().digests.get(tag).cloned().ok_or_else(|| {
            controller::platform::PlatformError::Image {
                image: image.to_owned(),
                message: "not in the registry".into(),
            }
        })
    }

    async fn remove(&self, color: Color, graceful: bool) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("remove {color} graceful={graceful}"));
        w.replicas.retain(|c| c.color != color);
        Ok(())
    }

    async fn endpoints(&self, color: Color) -> Result<Vec<String>> {
        let w = self.world();
        let running = w.replicas.iter().any(|c| c.color == color && c.is_running());
        Ok(if running { vec![format!("{}/c/{color}", self.base)] } else { vec![] })
    }

    fn events(&self, _hints: mpsc::Sender<String>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(std::future::pending())
    }
}

impl Router for Memory {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn read(&self, _replicas: &[Replica]) -> Traffic {
        let w = self.world();
        Traffic { preview: w.preview, servers: w.servers, ..Traffic::to(w.live) }
    }

    async fn route(
        &self,
        to: Option<Color>,
        replicas: u32,
        fallback: Option<(Color, u32)>,
    ) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("switch {to:?} backup {:?}", fallback.map(|b| b.0)));
        if w.route_refused && to != w.live {
            return Err(PlatformError::Refused("host not found in upstream".into()));
        }
        w.live = to;
        w.servers = if to.is_some() { replicas } else { 0 };
        Ok(())
    }

    async fn preview(&self, to: Option<(Color, u32)>) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("preview {:?}", to.map(|t| t.0)));
        w.preview = to.map(|t| t.0);
        Ok(())
    }

    fn front(&self) -> &str {
        &self.front
    }
}

fn color(name: &str) -> Option<Color> {
    name.parse().ok()
}

async fn artifact(State(m): State<Memory>, Path(c): Path<String>) -> Response {
    let w = m.world();
    let found = color(&c).and_then(|c| w.tag_of(c)).and_then(|t| w.models.get(&t).cloned());
    match found {
        Some((a, _)) => {
            ([("content-type", "application/json")], serde_json::to_string(&a).unwrap_or_default())
                .into_response()
        }
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct Batch {
    data: Vec<Trip>,
}

async fn price(m: &Memory, color: Option<Color>, batch: Batch) -> Response {
    let (takes, priced) = {
        let w = m.world();
        let found = color.and_then(|c| w.tag_of(c)).and_then(|t| w.models.get(&t).cloned());
        (w.predict_takes, found)
    };
    tokio::time::sleep(takes).await;
    let Some((a, skew)) = priced else { return StatusCode::SERVICE_UNAVAILABLE.into_response() };
    // `flaky` fails every other prediction; `busy` sheds every third.
    let tag = {
        let w = m.world();
        color.and_then(|c| w.tag_of(c)).unwrap_or_default()
    };
    let outcome = {
        let mut w = m.world();
        let counts = w.answered.entry(color.unwrap_or(Color::Blue)).or_default();
        let n: u64 = counts.iter().sum();
        let outcome = match tag.as_str() {
            "flaky" if n % 2 == 1 => 1,
            "busy" if n % 3 == 2 => 2,
            _ => 0,
        };
        counts[outcome] += 1;
        outcome
    };
    match outcome {
        1 => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        2 => return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")]).into_response(),
        _ => {}
    }
    let predictions: Vec<f64> = batch.data.iter().map(|t| a.predict(t) + skew).collect();
    Json(serde_json::json!({ "predictions": predictions, "model_version": a.model_version }))
        .into_response()
}

async fn predict_on(
    State(m): State<Memory>,
    Path(c): Path<String>,
    Json(batch): Json<Batch>,
) -> Response {
    price(&m, color(&c), batch).await
}

async fn predict_live(State(m): State<Memory>, Json(batch): Json<Batch>) -> Response {
    let live = m.world().live;
    price(&m, live, batch).await
}

async fn metrics(State(m): State<Memory>, Path(c): Path<String>) -> Response {
    let w = m.world();
    if w.metrics_fail {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    // The service's own series, from what this color really answered.
    let [ok, failed, shed] =
        color(&c).and_then(|c| w.answered.get(&c).copied()).unwrap_or_default();
    format!(
        "http_requests_total{{route=\"/api/predict/\",method=\"POST\",status=\"200\"}} {ok}\n\
         http_requests_total{{route=\"/api/predict/\",method=\"POST\",status=\"500\"}} {failed}\n\
         http_requests_total{{route=\"/api/predict/\",method=\"POST\",status=\"503\"}} {shed}\n\
         http_request_errors_total{{route=\"/api/predict/\",status=\"503\",kind=\"overloaded\"}} {shed}\n\
         prediction_duration_seconds_bucket{{batch=\"small\",le=\"0.001\"}} {ok}\n\
         prediction_duration_seconds_bucket{{batch=\"small\",le=\"+Inf\"}} {ok}\n"
    )
    .into_response()
}

async fn front(State(m): State<Memory>) -> Response {
    let mut w = m.world();
    let live = w.live;
    let tag = live.and_then(|c| w.tag_of(c));
    let color = live.map(|c| c.to_string());
    w.calls.push(format!(
        "probe {} {}",
        color.as_deref().unwrap_or("-"),
        tag.as_deref().unwrap_or("-")
    ));
    if w.probe_fails {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    Json(serde_json::json!({ "status": "ok", "color": color, "version": tag })).into_response()
}

async fn ready(State(m): State<Memory>) -> StatusCode {
    let w = m.world();
    if w.probe_fails || w.live.is_none() { StatusCode::BAD_GATEWAY } else { StatusCode::OK }
}
