//! Stage unit: every crate's unit and in-process tests, then `promtool` on
//! Prometheus' files (`prometheus/`: the configuration, the rules and
//! their unit tests) and on the service's `/metrics` as the real binary
//! serves it. The controller's metrics are linted by its own test
//! (`metrics::tests::promtool_accepts_the_metrics`), required to run here.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::api;
use crate::effects::deps;
use crate::effects::http::Request;
use crate::effects::local_server::{LocalServer, free_port};
use crate::effects::paths;
use crate::effects::process::{self, cmd};
use crate::stages::smoke;

pub fn run() -> Result<()> {
    deps::ensure(deps::TRAINER)?;
    deps::ensure_promtool()?;
    let mut test = cmd("cargo", ["test", "--workspace"]);
    test.env("TAXI_REQUIRE_PROMTOOL", "1");
    process::run(test)?;
    check_prometheus_files()?;
    check_service_metrics().context("promtool check metrics on the service's /metrics")?;
    println!("unit: promtool: ok");
    Ok(())
}

/// `promtool check config`, `check rules` and `test rules` on `prometheus/`.
fn check_prometheus_files() -> Result<()> {
    let dir = paths::root().join("prometheus");
    for args in [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "rules.yml"],
        ["test", "rules", "rules_test.yml"],
    ] {
        let mut c = cmd("promtool", args);
        c.current_dir(&dir);
        process::run(c).with_context(|| format!("promtool {} in prometheus/", args.join(" ")))?;
    }
    Ok(())
}

/// The service with the stub model, after a prediction and an error, so
/// the request counters and histograms have series.
fn check_service_metrics() -> Result<()> {
    let binary = smoke::build_service()?;
    let stub = paths::target().join("unit").join("stub-model.json");
    smoke::write_stub(&stub)?;
    let port = free_port()?;
    let mut c = Command::new(&binary);
    c.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--model"])
        .arg(&stub)
        .env_remove("MODEL_PATH")
        .env_remove("PORT")
        .env_remove("HOST");
    let mut server = LocalServer::spawn("unit-service", c, port)?;
    server.wait_for("/", 200, Duration::from_secs(10))?;
    let at = server.authority();
    let documented = api::documented_request();
    let r = Request::post_json("/api/predict/", documented.as_bytes()).send(&at)?;
    ensure!(r.status == 200, "the documented request answered {}: {}", r.status, r.text());
    let r = Request::post_json("/api/predict/", b"{").send(&at)?;
    ensure!(r.status >= 400, "a broken body answered {}", r.status);
    let metrics = Request::get("/metrics").send(&at)?;
    ensure!(metrics.status == 200, "/metrics answered {}", metrics.status);
    promtool_check_metrics(&metrics.text())
}

/// `promtool check metrics` with `text` on its standard input; any
/// complaint fails.
pub fn promtool_check_metrics(text: &str) -> Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start promtool")?;
    child.stdin.take().context("promtool has no stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || !said.trim().is_empty() {
        bail!("promtool check metrics ({}):\n{said}", out.status);
    }
    Ok(())
}
