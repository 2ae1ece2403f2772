//! The controller's API over a real socket: what needs the token, what a
//! mutation does to the manifest, and the refusals.

use std::path::PathBuf;

use controller::reconciler::{Shared, Trigger};
use controller_core::clock::Timestamp;
use controller_core::manifest;
use controller_core::record::{Level, Record, Stage};
use controller_core::status::{self, ManifestState};
use tokio::sync::mpsc;

const MANIFEST: &str = "\
# kept
apiVersion: deploy.taxi-fare.io/v1
kind: Rollout
metadata:
  name: t
spec:
  image:
    repository: localhost:5000/taxi/service
    tag: v2  # CI writes this
";

struct Api {
    base: String,
    manifest: PathBuf,
    triggers: mpsc::Receiver<Trigger>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// An API over a record whose history holds `tags` (oldest first), the
/// last `failed` of them rolled back.
async fn api(tags: &[&str], failed: usize) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollout.yaml");
    std::fs::write(&path, MANIFEST).unwrap();
    let desired = manifest::parse(MANIFEST).unwrap();
    let mut record = Record::default();
    for (i, tag) in tags.iter().enumerate() {
        let mut d = desired.clone();
        d.tag = tag.to_string();
        record.begin(&d, bluegreen::Color::Blue, None, Timestamp(0));
        if i >= tags.len() - failed {
            record.enter(
                Stage::Rollback { level: Level::BeforeSwitch, reason: "x".into() },
                Timestamp(1),
            );
        }
        record.finish(Timestamp(2));
    }
    let source = path.display().to_string();
    let m = ManifestState { desired: Some(&desired), error: None, source: &source };
    let (tx, rx) = mpsc::channel(8);
    let shared = Shared::new(path.clone(), tx, "secret".into());
    shared.status.send_replace(status::build(&m, None, &record, None, Timestamp(3)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, controller::api::router(shared)).await });
    Api { base, manifest: path, triggers: rx, http: reqwest::Client::new(), _dir: dir }
}

impl Api {
    async fn post(&self, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
        let mut r = self.http.post(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_owned());
        }
        let response = r.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    fn tag(&self) -> String {
        manifest::parse(&std::fs::read_to_string(&self.manifest).unwrap()).unwrap().tag
    }
}

#[tokio::test]
async fn reads_need_no_token() {
    let api = api(&["v1"], 0).await;
    let status: serde_json::Value =
        api.http.get(format!("{}/status", api.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["desired"]["tag"], "v2");
    assert_eq!(status["history"][0]["tag"], "v1");
    let metrics =
        api.http.get(format!("{}/metrics", api.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("controller_reconciles_total"), "{metrics}");
    let health = api.http.get(format!("{}/healthz", api.base)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn set_image_needs_the_token_and_edits_in_place() {
    let mut api = api(&[], 0).await;
    let body = Some(r#"{"tag":"v3"}"#);
    assert_eq!(api.post("/api/v1/image", None, body).await.0, 401);
    assert_eq!(api.post("/api/v1/image", Some("wrong"), body).await.0, 401);
    assert_eq!(api.tag(), "v2");
    let (code, text) = api.post("/api/v1/image", Some("secret"), body).await;
    assert_eq!(code, 202, "{text}");
    assert_eq!(
        std::fs::read_to_string(&api.manifest).unwrap(),
        MANIFEST.replace("tag: v2", "tag: v3")
    );
    assert!(matches!(api.triggers.try_recv(), Ok(Trigger::Command("set-image"))));
}

#[tokio::test]
async fn set_image_refuses_bad_tags_and_bodies() {
    let api = api(&[], 0).await;
    let (code, text) =
        api.post("/api/v1/image", Some("secret"), Some(r#"{"tag":"no good"}"#)).await;
    assert_eq!(code, 422, "{text}");
    assert!(text.contains("spec.image.tag"), "{text}");
    assert_eq!(api.post("/api/v1/image", Some("secret"), Some("{")).await.0, 422);
    assert_eq!(api.post("/api/v1/image", Some("secret"), None).await.0, 422);
    assert_eq!(api.tag(), "v2");
}

#[tokio::test]
async fn set_image_checks_the_token_before_the_body_and_bounds_it() {
    let api = api(&[], 0).await;
    let big = format!(r#"{{"tag":"{}"}}"#, "a".repeat(2 << 20));
    let (code, text) = api.post("/api/v1/image", None, Some(&big)).await;
    assert_eq!(code, 401, "{text}");
    let (code, text) = api.post("/api/v1/image", Some("secret"), Some(&big)).await;
    assert_eq!(code, 413, "{text}");
    assert_eq!(api.tag(), "v2");
}

#[tokio::test]
async fn rollback_goes_to_the_newest_good_tag_other_than_the_desired_one() {
    // v1 and v2 succeeded, v3 failed; the desired tag is v2.
    let api = api(&["v1", "v2", "v3"], 1).await;
    assert_eq!(api.post("/api/v1/rollback", None, None).await.0, 401);
    let (code, text) = api.post("/api/v1/rollback", Some("secret"), None).await;
    assert_eq!(code, 202, "{text}");
    assert_eq!(api.tag(), "v1");
}

#[tokio::test]
async fn rollback_with_no_earlier_success_is_a_conflict() {
    let api = api(&["v2", "bad"], 1).await;
    let (code, text) = api.post("/api/v1/rollback", Some("secret"), None).await;
    assert_eq!(code, 409, "{text}");
    assert_eq!(api.tag(), "v2");
}

#[tokio::test]
async fn promote_and_abort_need_a_paused_rollout() {
    let api = api(&["v1"], 0).await;
    assert_eq!(api.post("/api/v1/promote", None, None).await.0, 401);
    let (code, text) = api.post("/api/v1/promote", Some("secret"), None).await;
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("no rollout is paused"), "{text}");
    assert_eq!(api.post("/api/v1/abort", Some("secret"), None).await.0, 409);
}
