//! The local image registry: Debian's `docker-registry` on 127.0.0.1:5000
//! with the project's own `registry/config.yml`.
//!
//! The stages that need it (build pushes, integration pulls, `up` leaves it
//! running for the deployment controller) start it in the background when
//! nothing answers there yet, and a stage stops it again only if that stage
//! started it, so a registry left by `up` (or by an operator) survives a CI
//! run. It runs as one of our [`LocalServer`]s (its log is
//! `target/local-servers/registry.log`); its pid file lives under
//! `target/registry/`, its storage under `target/registry/storage`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use bluegreen::REGISTRY_ADDR;

use crate::effects::http::Request;
use crate::effects::local_server::{self, LocalServer};
use crate::effects::poll::{self, Poll};
use crate::effects::process::{cmd, output};
use crate::effects::{deps, paths};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

fn dir() -> PathBuf {
    paths::target().join("registry")
}

fn pid_file() -> PathBuf {
    dir().join("registry.pid")
}

/// The registry's name among our local servers (its log is
/// `target/local-servers/registry.log`).
const NAME: &str = "registry";

/// What answers on [`REGISTRY_ADDR`].
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// A Docker registry (v2 API) that lets us in.
    Registry,
    /// Nothing listens.
    Nothing,
    /// Something else, described for the error message.
    Other(String),
}

fn probe() -> Probe {
    match Request::get("/v2/").timeout(Duration::from_secs(2)).send(REGISTRY_ADDR) {
        Ok(r) if r.status == 200 && r.header("docker-distribution-api-version").is_some() => {
            Probe::Registry
        }
        Ok(r) if r.status == 401 => Probe::Other(
            "a registry that demands authentication (Debian's docker-registry service with its \
             default config? stop it with `systemctl stop docker-registry`)"
                .to_owned(),
        ),
        Ok(r) => {
            Probe::Other(format!("a server that is not a Docker registry (HTTP {})", r.status))
        }
        Err(e) => {
            let refused = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            });
            if refused { Probe::Nothing } else { Probe::Other(format!("{e:#}")) }
        }
    }
}

/// A registry this process may have started: dropping it stops the
/// registry if (and only if) this guard started it, unless [`keep`] was
/// called.
///
/// [`keep`]: RegistryGuard::keep
#[must_use = "dropping the guard stops a registry it started"]
pub struct RegistryGuard {
    started: Option<LocalServer>,
}

impl RegistryGuard {
    /// Leaves the registry running after this process ends (for `up`).
    pub fn keep(mut self) {
        if let Some(server) = self.started.take() {
            server.keep();
        }
    }
}

impl Drop for RegistryGuard {
    fn drop(&mut self) {
        if let Some(server) = self.started.take() {
            eprintln!("stopping the registry this stage started (pid {})", server.pid());
            drop(server);
            let _ = fs::remove_file(pid_file());
        }
    }
}

/// Makes sure a registry answers on [`REGISTRY_ADDR`], starting Debian's
/// `docker-registry` with `registry/config.yml` if nothing listens there.
pub fn ensure_running() -> Result<RegistryGuard> {
    match probe() {
        Probe::Registry => return Ok(RegistryGuard { started: None }),
        Probe::Other(what) => bail!("port 5000 (the image registry) is taken by {what}"),
        Probe::Nothing => {}
    }
    deps::ensure(deps::REGISTRY)?;
    let port: u16 = REGISTRY_ADDR
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("no port in the registry address {REGISTRY_ADDR}"))?;
    let config = paths::root().join("registry/config.yml");
    let storage = dir().join("storage");
    fs::create_dir_all(&storage).with_context(|| format!("cannot create {}", storage.display()))?;
    let mut command = Command::new("docker-registry");
    command
        .arg("serve")
        .arg(&config)
        .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &storage)
        .env("REGISTRY_HTTP_ADDR", REGISTRY_ADDR)
        // Its own process group: a Ctrl-C meant for the stage does not
        // reach a registry that `up` leaves running.
        .process_group(0);
    // SIGTERM first: a registry cut off mid-push may leave half an upload.
    let mut server = LocalServer::spawn(NAME, command, port)?.with_grace(STOP_TIMEOUT);
    fs::write(pid_file(), server.pid().to_string())
        .with_context(|| format!("cannot write {}", pid_file().display()))?;
    eprintln!(
        "started the registry on {REGISTRY_ADDR} (pid {}, log {})",
        server.pid(),
        local_server::log_path(NAME).display()
    );
    if let Err(e) = server.wait_for("/v2/", 200, START_TIMEOUT) {
        drop(server);
        let _ = fs::remove_file(pid_file());
        return Err(e.context(format!("the registry on {REGISTRY_ADDR} did not start")));
    }
    Ok(RegistryGuard { started: Some(server) })
}

/// Stops the registry recorded in the pid file (started by `up` or a stage
/// of an earlier run). Returns whether one was running; fails, keeping the
/// pid file, while it still runs.
pub fn stop() -> Result<bool> {
    let text = match fs::read_to_string(pid_file()) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", pid_file().display())),
    };
    let pid = text.trim().parse::<u32>().ok().filter(|pid| is_registry(*pid));
    if let Some(pid) = pid {
        terminate(pid)?;
    }
    // Gone (or the file named no live registry): the record goes too.
    let _ = fs::remove_file(pid_file());
    Ok(pid.is_some())
}

/// Whether `pid` is a live `docker-registry` (not a recycled pid).
fn is_registry(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("docker-registry"))
        .unwrap_or(false)
}

/// Whether the registry `pid` has exited (a zombie has: only its exit
/// status is left for its parent to read).
fn gone(pid: u32) -> bool {
    !is_registry(pid) || is_zombie(pid)
}

/// SIGTERM, then wait for the process to go, then SIGKILL; fails unless it
/// is gone.
fn terminate(pid: u32) -> Result<()> {
    let _ = output(cmd("kill", ["-TERM", &pid.to_string()]));
    let wait = |timeout| {
        poll::until(timeout, Duration::from_millis(100), || {
            Ok(if gone(pid) { Poll::Ready(()) } else { Poll::Pending("running".to_owned()) })
        })
    };
    if wait(STOP_TIMEOUT).is_ok() {
        return Ok(());
    }
    eprintln!("the registry (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT:?}; sending SIGKILL");
    let _ = output(cmd("kill", ["-KILL", &pid.to_string()]));
    wait(KILL_TIMEOUT).with_context(|| format!("the registry (pid {pid}) survives SIGKILL"))
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}
