//! A thin wrapper over the `docker` CLI for the stages that build, push,
//! pull and run the project's images.
//!
//! The CLI rather than the Engine API: the stages are scripts at heart, the
//! commands they run are echoed so a failure can be replayed by hand, and
//! the CLI already speaks the Engine's API version (1.41 here). The
//! controller, a long-running daemon, uses the API (bollard) instead.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::effects::poll::{self, Poll};
use crate::effects::process::{cmd, have, output, run};

/// A `docker` command with the given arguments. The legacy builder is the
/// only one here (no buildx): `DOCKER_BUILDKIT=0` says so and silences its
/// deprecation warning.
pub fn docker<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = cmd("docker", args);
    c.env("DOCKER_BUILDKIT", "0");
    c
}

/// Fails with one clear line unless the Docker CLI is installed and its
/// daemon answers; returns the Engine's version.
pub fn ensure_running() -> Result<String> {
    if !have("docker") {
        bail!("the `docker` command is not installed: install Docker Engine (Debian: docker.io)");
    }
    let version = output(docker(["version", "--format", "{{.Server.Version}}"])).context(
        "Docker is not running (or this user may not use it): `docker version` cannot reach \
         the daemon; start it (e.g. `systemctl start docker`) and retry",
    )?;
    if version.is_empty() {
        bail!("`docker version` names no server version: is the daemon running?");
    }
    Ok(version)
}

/// The ID of a local image, or `None` when there is no such image.
pub fn image_id(reference: &str) -> Result<Option<String>> {
    let out = docker(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .context("cannot run `docker image inspect`")?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such image") || err.contains("No such object") {
        return Ok(None);
    }
    bail!("`docker image inspect {reference}` failed: {}", err.trim())
}

/// `docker inspect --format FORMAT OBJECT`.
pub fn inspect(object: &str, format: &str) -> Result<String> {
    output(docker(["inspect", "--format", format, object]))
}

/// IDs of containers (running or not) matching a `docker ps` filter such as
/// `label=com.docker.compose.project=taxi-fare` or `ancestor=IMAGE`.
pub fn containers(filter: &str) -> Result<Vec<String>> {
    let out = output(docker(["ps", "-a", "-q", "--no-trunc", "--filter", filter]))?;
    Ok(out.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
}

/// Force-removes containers; a container already gone is not an error.
pub fn remove_containers(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let out = docker(["rm", "-f", "-v"]).args(ids).output().context("cannot run `docker rm`")?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !err.lines().all(|l| l.contains("No such container")) {
        bail!("`docker rm -f` failed: {}", err.trim());
    }
    Ok(())
}

/// The container's Docker health status (`starting`, `healthy`,
/// `unhealthy`), or its state when it has no health check or has stopped.
pub fn health(container: &str) -> Result<String> {
    inspect(
        container,
        "{{if .State.Running}}{{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}\
         {{else}}{{.State.Status}} (exit code {{.State.ExitCode}}){{end}}",
    )
}

/// The last health-check results, one line each, for failure reports.
pub fn health_log(container: &str) -> String {
    inspect(
        container,
        "{{if .State.Health}}{{range .State.Health.Log}}{{.Start}} exit={{.ExitCode}} \
         {{.Output}}\n{{end}}{{else}}(no health check){{end}}",
    )
    .unwrap_or_else(|e| format!("(cannot read the health log: {e:#})"))
}

/// The container's output (stdout and stderr), for failure reports.
pub fn logs(container: &str) -> String {
    match docker(["logs", "--tail", "200", container]).output() {
        Ok(out) => {
            let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&out.stderr));
            s
        }
        Err(e) => format!("(cannot read the logs: {e})"),
    }
}

/// `docker build -q CONTEXT`, tagged with each of `tags`, with a
/// `--build-arg NAME=VALUE` for each of `build_args`; echoes the command.
pub fn build(context: &Path, tags: &[&str], build_args: &[(&str, String)]) -> Result<()> {
    let mut c = docker(["build", "-q"]);
    for tag in tags {
        c.args(["-t", tag]);
    }
    for (name, value) in build_args {
        c.args(["--build-arg", &format!("{name}={value}")]);
    }
    c.arg(context);
    run(c)
}

/// Pushes an image, echoing the command.
pub fn push(reference: &str) -> Result<()> {
    run(docker(["push", reference]))
}

/// Pulls an image, echoing the command.
pub fn pull(reference: &str) -> Result<()> {
    run(docker(["pull", reference]))
}

/// Waits for Docker's health status `healthy`; on `unhealthy`, an exit or
/// the timeout, fails with the container's log and health log.
pub fn wait_healthy(container: &str, timeout: Duration) -> Result<()> {
    let waited = poll::until(timeout, Duration::from_millis(250), || {
        let status = health(container)?;
        match status.as_str() {
            "healthy" => Ok(Poll::Ready(())),
            "starting" | "running" => Ok(Poll::Pending(status)),
            _ => bail!("{status}"),
        }
    });
    waited.map_err(|reason| {
        anyhow!(
            "container {container} is {reason:#}\n--- its log ---\n{}\n--- its health log ---\n{}",
            logs(container).trim_end(),
            health_log(container).trim_end()
        )
    })
}
