//! Stage integration: the pushed service image, pulled back from the
//! registry and run as a container with port 32000 published, tested over
//! real HTTP.
//!
//! The checks cover what the image must be (labels, non-root user, Docker
//! health `healthy`) and what the API promises (DESIGN.md, "The prediction
//! API"): liveness, readiness, the documented request, predictions equal
//! to the `model` crate's for the same rows, and refusals of bad input. On a
//! failure the container's log and health log are printed; the container is
//! removed whatever happens.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bluegreen::{REGISTRY_HOST, SERVICE_REPOSITORY};
use serde_json::{Value, json};

use crate::api;
use crate::effects::docker::{self, docker};
use crate::effects::http::{Request, Response};
use crate::effects::process::{self, output};
use crate::effects::registry;
use crate::effects::revision::Revision;
use crate::stages::artifacts::{self, Built};

/// Trips whose predictions are compared with the `model` crate's, as
/// [pickup lat, pickup lon, dropoff lat, dropoff lon, passengers].
const ROWS: [[f64; 5]; 6] = [
    model::DOCUMENTED_TRIP,
    [40.7614, -73.9776, 40.6413, -73.7781, 1.0],
    [40.7128, -74.0060, 40.7306, -73.9352, 3.0],
    [40.7769, -73.8740, 40.7580, -73.9855, 0.0],
    [40.6895, -74.1745, 40.7484, -73.9857, 9.0],
    [40.75, -73.99, 40.75, -73.99, 1.0],
];

/// The label that marks this stage's containers (so `down` can find
/// strays of an interrupted run).
pub const ROLE_LABEL: &str = "io.taxi-fare.role=integration";

#[derive(clap::Args, Debug)]
pub struct IntegrationArgs {
    /// The image to test [default: the one the last `cargo xtask build`
    /// pushed (artifacts/images.json), else this revision's tag].
    #[arg(long, env = "TAXI_SERVICE_IMAGE")]
    pub image: Option<String>,
    /// The model artifact the image carries, for the expected predictions
    /// [default: artifacts/model.json].
    #[arg(long, env = "TAXI_MODEL")]
    pub model: Option<PathBuf>,
    /// The host port the container's port 32000 is published on, on
    /// 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// How long the container may take to become healthy, in seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_S)]
    pub timeout: u64,
}

const DEFAULT_PORT: u16 = 32000;
const DEFAULT_TIMEOUT_S: u64 = 60;

/// The pipeline's defaults (the same as the command line's).
impl Default for IntegrationArgs {
    fn default() -> Self {
        IntegrationArgs { image: None, model: None, port: DEFAULT_PORT, timeout: DEFAULT_TIMEOUT_S }
    }
}

impl IntegrationArgs {
    fn image(&self) -> Result<String> {
        if let Some(image) = &self.image {
            return Ok(image.clone());
        }
        if let Some(built) = Built::last()? {
            return Ok(built.service);
        }
        Ok(format!("{SERVICE_REPOSITORY}:{}", Revision::current()?.tag()))
    }
}

/// Removes the container when dropped, whatever happened.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Err(e) = docker::remove_containers(std::slice::from_ref(&self.0)) {
            eprintln!("warning: cannot remove container {}: {e:#}", self.0);
        }
    }
}

/// Counts and prints named checks.
#[derive(Default)]
struct Checks {
    passed: usize,
    failed: usize,
    skipped: usize,
}

/// A check's verdict when it did not fail.
enum Outcome {
    Pass,
    Skip(String),
}

impl Checks {
    fn run(&mut self, name: &str, check: impl FnOnce() -> Result<Outcome>) -> bool {
        match check() {
            Ok(Outcome::Pass) => {
                self.passed += 1;
                println!("ok    {name}");
                true
            }
            Ok(Outcome::Skip(why)) => {
                self.skipped += 1;
                println!("skip  {name}: {why}");
                true
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL  {name}: {e:#}");
                false
            }
        }
    }

    fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            s.push_str(&format!(", {} skipped", self.skipped));
        }
        s
    }
}

pub fn run(args: &IntegrationArgs) -> Result<()> {
    docker::ensure_running()?;
    let image = args.image()?;
    let model_path = args.model.clone().unwrap_or_else(artifacts::model_path);
    let artifact = artifacts::load_model(&model_path)?;
    let tag = image.rsplit_once(':').map(|(_, t)| t.to_owned()).unwrap_or_default();
    println!("integration: testing {image}");

    let mut checks = Checks::default();
    let registry_guard = registry::ensure_running()?;
    checks.run("the image pulls back from the registry", || pull_back(&image));

    let published = if args.port == 0 {
        "127.0.0.1::32000".to_owned()
    } else {
        format!("127.0.0.1:{}:32000", args.port)
    };
    let name = format!("taxi-fare-integration-{}", std::process::id());
    let id = output(docker([
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        ROLE_LABEL,
        "-e",
        "COLOR=blue",
        "-e",
        &format!("VERSION={tag}"),
        "-p",
        &published,
        &image,
    ]))
    .with_context(|| format!("cannot start a container of {image}"))?;
    let container = ContainerGuard(id);
    let addr = output(docker(["port", &container.0, "32000/tcp"]))?
        .lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .map(str::to_owned)
        .context("the container's port 32000 is not published on 127.0.0.1")?;

    checks.run("the image is labelled and runs as a non-root user", || {
        image_metadata(&image, &tag, &artifact)
    });
    let timeout = Duration::from_secs(args.timeout);
    let healthy = checks.run("the container becomes healthy", || {
        docker::wait_healthy(&container.0, timeout).map(|()| Outcome::Pass)
    });
    if healthy {
        api_checks(&mut checks, &addr, &tag, &artifact);
    }

    if checks.failed > 0 {
        println!("--- container log ---\n{}", docker::logs(&container.0).trim_end());
        println!("--- health log ---\n{}", docker::health_log(&container.0).trim_end());
    }
    drop(container);
    drop(registry_guard);
    // The plain closing line CI reads: last.
    println!("{}", checks.summary());
    if checks.failed > 0 {
        bail!("integration: {} of {} checks failed", checks.failed, checks.passed + checks.failed);
    }
    Ok(())
}

/// Removes every local copy of the image, pulls it from the registry and
/// checks the same image came back. Skipped (with the reason) while a
/// container still uses the image, since Docker then keeps its layers.
fn pull_back(image: &str) -> Result<Outcome> {
    let before = docker::image_id(image)?;
    if let Some(id) = &before {
        let users = docker::containers(&format!("ancestor={id}"))?;
        if !users.is_empty() {
            return Ok(Outcome::Skip(format!(
                "{} container(s) use the image (`cargo xtask down` frees it)",
                users.len()
            )));
        }
        // By ID, with -f: every tag of it goes (a :latest alias included),
        // so the pull below has to fetch the layers again.
        process::run(docker(["image", "rm", "-f", id]))?;
        ensure!(docker::image_id(image)?.is_none(), "the local copy is still there after removal");
    }
    docker::pull(image)?;
    let after = docker::image_id(image)?.context("no local image after the pull")?;
    if let Some(before) = before {
        ensure!(before == after, "pulled image {after} differs from the pushed {before}");
    }
    let digests = docker::inspect(image, "{{range .RepoDigests}}{{.}} {{end}}")?;
    ensure!(
        digests.contains(&format!("{SERVICE_REPOSITORY}@sha256:")),
        "the pulled image has no digest from {}: {digests:?}",
        REGISTRY_HOST
    );
    Ok(Outcome::Pass)
}

fn image_metadata(image: &str, tag: &str, artifact: &model::ModelArtifact) -> Result<Outcome> {
    let label =
        |name: &str| docker::inspect(image, &format!("{{{{index .Config.Labels {name:?}}}}}"));
    let version = label("org.opencontainers.image.version")?;
    ensure!(
        version == tag,
        "label org.opencontainers.image.version is {version:?}, tag is {tag:?}"
    );
    let revision = label("org.opencontainers.image.revision")?;
    ensure!(
        tag.starts_with(&revision) && revision.len() == 40,
        "label org.opencontainers.image.revision {revision:?} is not the sha of tag {tag:?}"
    );
    let model_version = label("io.taxi-fare.model.version")?;
    ensure!(
        model_version == artifact.model_version,
        "the image carries model {model_version:?}, the artifact is {:?}",
        artifact.model_version
    );
    let user = docker::inspect(image, "{{.Config.User}}")?;
    let uid = user.split(':').next().unwrap_or("");
    ensure!(!uid.is_empty() && uid != "0" && uid != "root", "the image runs as user {user:?}");
    Ok(Outcome::Pass)
}

fn api_checks(checks: &mut Checks, addr: &str, tag: &str, artifact: &model::ModelArtifact) {
    let get = |path: &str| Request::get(path).send(addr);
    let post = |path: &str, body: &str| Request::post_json(path, body.as_bytes()).send(addr);

    checks.run("GET / reports liveness, the model, the color and the version", || {
        let r = expect_status(get("/")?, 200)?;
        let body = r.json()?;
        ensure!(body["status"] == "ok", "status is {}", body["status"]);
        ensure!(body["model_loaded"] == true, "model_loaded is {}", body["model_loaded"]);
        ensure!(
            body["model_version"] == artifact.model_version.as_str(),
            "model_version is {}",
            body["model_version"]
        );
        ensure!(body["color"] == "blue", "color is {}", body["color"]);
        ensure!(body["version"] == tag, "version is {}", body["version"]);
        Ok(Outcome::Pass)
    });
    checks.run("GET /ready answers 200", || {
        expect_status(get("/ready")?, 200).map(|_| Outcome::Pass)
    });
    let documented = api::documented_request();
    let documented = documented.as_str();
    checks.run("POST /api/predict/ answers the documented request", || {
        let r = expect_status(post("/api/predict/", documented)?, 200)?;
        let body = r.json()?;
        let predictions = body["predictions"].as_array().context("no predictions array")?;
        ensure!(predictions.len() == 1, "{} predictions for 1 row", predictions.len());
        let fare = predictions[0].as_f64().context("the prediction is not a number")?;
        ensure!(fare.is_finite() && fare >= 0.0, "the prediction is {fare}");
        ensure!(
            body["model_version"] == artifact.model_version.as_str(),
            "model_version is {}",
            body["model_version"]
        );
        Ok(Outcome::Pass)
    });
    checks.run("POST /api/predict (no slash) answers too", || {
        expect_status(post("/api/predict", documented)?, 200).map(|_| Outcome::Pass)
    });
    checks.run("predictions equal the model crate's, row for row", || {
        let body = api::predict_body(&ROWS);
        let r = expect_status(post("/api/predict/", &body)?, 200)?;
        let got: Vec<f64> = r.json()?["predictions"]
            .as_array()
            .context("no predictions array")?
            .iter()
            .map(|v| v.as_f64().context("a prediction is not a number"))
            .collect::<Result<_>>()?;
        let expected = expected_predictions(artifact)?;
        ensure!(
            got.len() == expected.len(),
            "{} predictions for {} rows",
            got.len(),
            expected.len()
        );
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            ensure!(
                (g - e).abs() <= 1e-9 * e.abs().max(1.0),
                "row {i}: the service predicts {g}, the model crate {e}"
            );
        }
        Ok(Outcome::Pass)
    });
    checks.run("malformed JSON is refused with 422 or 400", || {
        let r = post("/api/predict/", r#"{"data": [{"pickup_latitude": 40.7,"#)?;
        ensure!(matches!(r.status, 400 | 422), "answered {}: {}", r.status, r.text());
        Ok(Outcome::Pass)
    });
    checks.run("an out-of-range latitude is refused with 422 naming the field", || {
        let mut bad = api::trip_json(ROWS[1]);
        bad["pickup_latitude"] = json!(91.0);
        let body = json!({ "data": [api::trip_json(ROWS[0]), bad] }).to_string();
        let r = expect_status(post("/api/predict/", &body)?, 422)?;
        let detail = r.json()?;
        let locs: Vec<&Value> = detail["detail"]
            .as_array()
            .context("no detail array")?
            .iter()
            .map(|d| &d["loc"])
            .collect();
        let want = json!(["body", "data", 1, "pickup_latitude"]);
        ensure!(locs.contains(&&want), "detail locations {locs:?} lack {want}");
        Ok(Outcome::Pass)
    });
    checks.run("a missing field is refused with 422", || {
        let body = r#"{"data":[{"pickup_latitude":40.7,"pickup_longitude":-73.9,"dropoff_latitude":40.8,"passenger_count":1}]}"#;
        expect_status(post("/api/predict/", body)?, 422).map(|_| Outcome::Pass)
    });
    checks.run("an empty batch is refused with 422", || {
        expect_status(post("/api/predict/", r#"{"data":[]}"#)?, 422).map(|_| Outcome::Pass)
    });
    checks.run("a wrong content type is refused with 415", || {
        let r = Request::post_json("/api/predict/", documented.as_bytes())
            .header("Content-Type", "text/plain")
            .send(addr)?;
        expect_status(r, 415).map(|_| Outcome::Pass)
    });
    checks.run("GET /metrics answers Prometheus text", || {
        let r = expect_status(get("/metrics")?, 200)?;
        ensure!(r.text().contains("# TYPE"), "no metric families in {:?}", r.text());
        Ok(Outcome::Pass)
    });
    checks.run("the service is still healthy after the bad inputs", || {
        expect_status(get("/ready")?, 200).map(|_| Outcome::Pass)
    });
}

fn expect_status(r: Response, status: u16) -> Result<Response> {
    if r.status != status {
        bail!("answered {} (expected {status}): {}", r.status, r.text());
    }
    Ok(r)
}

fn expected_predictions(artifact: &model::ModelArtifact) -> Result<Vec<f64>> {
    ROWS.iter()
        .map(|r| {
            model::Trip::from_values(*r)
                .map(|t| artifact.predict(&t))
                .map_err(|v| anyhow::anyhow!("test row {r:?} is invalid: {v:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_command_line() {
        let parsed: IntegrationArgs = crate::parse_empty_command_line();
        let default = IntegrationArgs::default();
        assert_eq!((parsed.port, parsed.timeout), (default.port, default.timeout));
        assert!(default.timeout > 0);
    }

    #[test]
    fn every_test_row_is_valid() {
        for r in ROWS {
            assert!(model::Trip::from_values(r).is_ok(), "{r:?}");
        }
    }

    #[test]
    fn the_summary_is_the_plain_closing_line() {
        let c = Checks { passed: 12, failed: 0, skipped: 0 };
        assert_eq!(c.summary(), "12 passed, 0 failed");
        let c = Checks { passed: 11, failed: 1, skipped: 1 };
        assert_eq!(c.summary(), "11 passed, 1 failed, 1 skipped");
    }
}
