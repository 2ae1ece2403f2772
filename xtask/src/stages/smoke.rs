//! Stage smoke: the real service binary, on a real loopback socket, answers
//! with no model (alive, not ready, predict refused with 503) and with the
//! stub model (ready, the documented request predicted). The stub is the
//! one mock the original pipeline prescribes: made-up coefficients, clearly
//! named, never deployed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use model::{Lineage, ModelArtifact, N_FEATURES};

use crate::api;
use crate::effects::http::Request;
use crate::effects::local_server::{LocalServer, free_port};
use crate::effects::paths;
use crate::effects::process::{self, cmd};

/// The `model_version` of the stub artifact.
pub const STUB_VERSION: &str = "smoke-stub-not-for-production";

const STARTUP: Duration = Duration::from_secs(10);

pub fn run() -> Result<()> {
    let binary = build_service()?;
    no_model(&binary).context("smoke: the service without a model")?;
    let stub = paths::target().join("smoke").join("stub-model.json");
    write_stub(&stub)?;
    stub_model(&binary, &stub).context("smoke: the service with the stub model")?;
    println!("smoke: ok");
    Ok(())
}

/// Builds the service (debug profile, shared with the unit stage) and
/// returns the binary's path.
pub fn build_service() -> Result<PathBuf> {
    let mut c = cmd("cargo", ["build", "--quiet", "-p", "service"]);
    c.current_dir(paths::root());
    process::run(c)?;
    let binary = paths::cargo_target().join("debug").join("service");
    ensure!(binary.is_file(), "cargo built no {}", binary.display());
    Ok(binary)
}

/// A stub artifact: the real schema, made-up coefficients.
pub fn stub_artifact() -> ModelArtifact {
    let mut coefficients = [0.0; N_FEATURES];
    coefficients[0] = 2.0; // USD per haversine km
    ModelArtifact::new(
        STUB_VERSION,
        coefficients,
        2.5,
        Lineage::hand_made("none (stub for the smoke stage)"),
    )
}

pub fn write_stub(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, stub_artifact().to_json()?)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn start(binary: &Path, name: &str, model: Option<&Path>) -> Result<LocalServer> {
    let port = free_port()?;
    let mut c = Command::new(binary);
    c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env_remove("MODEL_PATH")
        .env_remove("PORT")
        .env_remove("HOST");
    if let Some(model) = model {
        c.arg("--model").arg(model);
    }
    let mut server = LocalServer::spawn(name, c, port)?;
    let took = server.wait_for("/", 200, STARTUP)?;
    println!("smoke: {name}: answering / {took:.1?} after start on port {port}");
    Ok(server)
}

fn no_model(binary: &Path) -> Result<()> {
    let server = start(binary, "smoke-no-model", None)?;
    let at = server.authority();
    let live = Request::get("/").send(&at)?;
    ensure!(live.status == 200, "GET / answered {}", live.status);
    let body = live.json()?;
    ensure!(body["status"] == "ok", "GET / status is {}", body["status"]);
    ensure!(body["model_loaded"] == false, "GET / says a model is loaded: {body}");
    check_status(&at, Request::get("/ready"), 503)?;
    let documented = api::documented_request();
    check_status(&at, Request::post_json("/api/predict/", documented.as_bytes()), 503)?;
    check_healthcheck(binary, server.port, false)?;
    println!("smoke: no model: / 200 (model_loaded=false), /ready 503, predict 503, healthcheck 1");
    Ok(())
}

fn stub_model(binary: &Path, stub: &Path) -> Result<()> {
    let server = start(binary, "smoke-stub-model", Some(stub))?;
    let at = server.authority();
    check_status(&at, Request::get("/ready"), 200)?;
    let live = Request::get("/").send(&at)?.json()?;
    ensure!(live["model_version"] == STUB_VERSION, "GET / reports model {}", live["model_version"]);
    let documented = api::documented_request();
    let predicted = Request::post_json("/api/predict/", documented.as_bytes()).send(&at)?;
    ensure!(predicted.status == 200, "predict answered {}: {}", predicted.status, predicted.text());
    let body = predicted.json()?;
    let fares = body["predictions"].as_array().context("no predictions array")?;
    let [fare] = fares.as_slice() else {
        bail!("expected one prediction, got {body}");
    };
    let fare = fare
        .as_f64()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .with_context(|| format!("prediction is not a fare: {body}"))?;
    ensure!(body["model_version"] == STUB_VERSION, "answered by {}", body["model_version"]);
    check_healthcheck(binary, server.port, true)?;
    println!(
        "smoke: stub model: /ready 200, documented request 200 with one prediction ({:.2}), healthcheck 0",
        fare
    );
    Ok(())
}

fn check_status(at: &str, request: Request<'_>, want: u16) -> Result<()> {
    let answer = request.send(at)?;
    ensure!(
        answer.status == want,
        "{} {} answered {}, expected {want}: {}",
        request.method,
        request.path,
        answer.status,
        answer.text()
    );
    Ok(())
}

fn check_healthcheck(binary: &Path, port: u16, ready: bool) -> Result<()> {
    let status = Command::new(binary)
        .args(["healthcheck", "--port", &port.to_string()])
        .env_remove("PORT")
        .output()
        .context("cannot run service healthcheck")?
        .status;
    ensure!(status.success() == ready, "`service healthcheck` exited {status} (ready: {ready})");
    Ok(())
}
