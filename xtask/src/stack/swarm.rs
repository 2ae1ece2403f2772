//! `cargo xtask up --platform swarm` and the Swarm half of `down`: the
//! stack of `manifests/swarm.yaml` (edge, router, the controller with
//! `--platform swarm`) on a one-node swarm of this Engine.
//!
//! The stack goes on with `docker stack deploy` rather than services made
//! one by one from here: the file is declarative, reviewable beside
//! `compose.yaml`, and a second deploy converges on it. Never with
//! `--prune`: the colors' services carry the stack's namespace label (the
//! controller makes them so `docker stack ps` lists them) but are not in
//! the file, and a prune would remove the live color. For the same reason
//! `docker stack rm` at `down` takes them too, which is what `down` wants.
//!
//! The swarm itself: `up` initialises one (`--advertise-addr 127.0.0.1`:
//! nothing leaves this machine) only when the Engine is in none, and says
//! so in a marker file under target/stack/; `down` leaves the swarm only
//! when that marker is there, so a swarm someone else made outlives us.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use bluegreen::{CONTROLLER_PORT, PROJECT, SWARM_NETWORK as NETWORK, label};

use super::{ControllerUser, Notify, PREVIEW_PORT, front_port};
use crate::effects::docker::{self, docker};
use crate::effects::paths::{self, live_manifest, stack_dir};
use crate::effects::poll::{self, Poll};
use crate::effects::process::{output, run};
use crate::rollout;
use crate::stages::artifacts::Built;

/// The stack file.
pub fn stack_file() -> PathBuf {
    paths::root().join("manifests/swarm.yaml")
}

/// The controller's service (its tasks' containers are named after it).
pub fn controller_service() -> String {
    format!("{PROJECT}_{}", bluegreen::CONTROLLER_SERVICE)
}

/// The marker that says `up` initialised this Engine's swarm.
fn marker() -> PathBuf {
    stack_dir().join("swarm-initialised-by-up")
}

/// How long Swarm may take to stop a stack's tasks (the controller's stop
/// grace is 45 s, the router's 30 s) before `down` removes what is left.
const REMOVAL: Duration = Duration::from_secs(75);

/// The Engine's swarm state (`inactive`, `active`, `pending`, …).
pub fn state() -> Result<String> {
    output(docker(["info", "--format", "{{.Swarm.LocalNodeState}}"]))
}

/// Makes this Engine a swarm's manager unless it is in a swarm already
/// (then it must be a manager: the controller creates services). With
/// more than one node the manager advertises its address on the nodes'
/// bridge ([`nodes`]), else loopback: nothing leaves this machine.
pub fn ensure_swarm(nodes: u32) -> Result<()> {
    let advertise = if nodes > 1 {
        super::nodes::ensure_bridge()?;
        super::nodes::manager_address()
    } else {
        "127.0.0.1".to_owned()
    };
    match state()?.as_str() {
        "inactive" => {
            fs::create_dir_all(stack_dir())?;
            // The marker first: an init that half-succeeds is still ours.
            fs::write(marker(), format!("docker swarm init --advertise-addr {advertise}\n"))
                .context("cannot write the swarm marker")?;
            run(docker(["swarm", "init", "--advertise-addr", &advertise]))?;
        }
        "active" => {
            let manager = output(docker(["info", "--format", "{{.Swarm.ControlAvailable}}"]))?;
            if manager != "true" {
                bail!("this Engine is a swarm worker: run `up --platform swarm` on a manager");
            }
            let addr = output(docker(["info", "--format", "{{.Swarm.NodeAddr}}"]))?;
            if nodes > 1 && addr != advertise {
                bail!(
                    "this Engine's swarm advertises {addr}, which the nodes cannot reach: \
                     `cargo xtask down` first (it leaves a swarm `up` made)"
                );
            }
        }
        other => bail!("this Engine's swarm is {other}: wait for it, or leave it"),
    }
    if nodes > 1 {
        super::nodes::add(nodes)?;
    }
    Ok(())
}

/// Fails, naming the port, when a port the swarm stack publishes is taken
/// by anything but this stack's own tasks.
pub fn check_ports() -> Result<()> {
    let ports =
        [(front_port(), "edge"), (PREVIEW_PORT, "preview"), (CONTROLLER_PORT, "controller")];
    super::check_ports_free(
        label::STACK,
        &ports,
        "another program (compose's stack? `cargo xtask down` first); stop it",
    )
}

/// The runtime directory and live manifest as compose's `launch` lays
/// them out, the swarm, the stack deployed, then the controller's first
/// rollout of `built`'s tag followed to its end.
pub fn launch(built: &Built, timeout: Duration, notify: &Notify, nodes: u32) -> Result<()> {
    super::prepare_dir()?;
    let user = super::controller_user()?;
    super::check_owned(user)?;
    rollout::set_tag(&live_manifest(), &built.tag)?;
    ensure_swarm(nodes)?;
    deploy(built, user, notify)?;
    for tier in [bluegreen::NGINX_SERVICE, bluegreen::EDGE_SERVICE] {
        wait_running(&format!("{PROJECT}_{tier}"), timeout)?;
    }
    rollout::deploy(&built.tag, timeout)
}

/// `docker stack deploy` of the stack file with `built`'s images. Local
/// images are not in any registry: `--resolve-image never` keeps Swarm
/// from asking one for their digests.
pub fn deploy(built: &Built, user: ControllerUser, notify: &Notify) -> Result<()> {
    let file = stack_file();
    let mut c = docker(["stack", "deploy", "--resolve-image", "never", "-c"]);
    c.arg(&file).arg(PROJECT);
    let stack = std::path::absolute(stack_dir()).context("cannot make target/stack absolute")?;
    c.env("NGINX_IMAGE", &built.nginx)
        .env("CONTROLLER_IMAGE", &built.controller)
        .env("STACK_DIR", stack)
        .env("FRONT_PORT", front_port().to_string())
        .env("PREVIEW_PORT", PREVIEW_PORT.to_string())
        .env("CONTROLLER_PORT", CONTROLLER_PORT.to_string())
        .env("CONTROLLER_UID", user.uid.to_string())
        .env("DOCKER_GID", user.docker_gid.to_string())
        .env("CONTROLLER_WEBHOOK", notify.webhook.as_deref().unwrap_or(""))
        .env("CONTROLLER_WEBHOOK_FORMAT", &notify.webhook_format);
    run(c)
}

/// Waits until a service's task that Swarm means to run is running (for
/// a service with a health check, Swarm says so only once it is healthy).
pub fn wait_running(service: &str, timeout: Duration) -> Result<()> {
    poll::until(timeout, Duration::from_millis(500), || {
        let states = output(docker([
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.CurrentState}} {{.Error}}",
        ]))?;
        Ok(if states.lines().any(|l| l.starts_with("Running")) {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("{service}: {}", states.replace('\n', "; ")))
        })
    })
    .with_context(|| format!("waiting for {service} to run"))
}

/// The running container of a service's current task, if any.
pub fn container_of(service: &str) -> Result<Option<String>> {
    let ids = output(docker([
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.swarm.service.name={service}"),
    ]))?;
    Ok(ids.lines().next().map(str::to_owned))
}

/// Removes the swarm stack (its file's services, the colors the
/// controller made, the overlay network) and waits for their containers
/// to go; nothing to do when the Engine is in no swarm.
pub fn remove_stack() -> Result<()> {
    if state()? != "active" {
        return Ok(());
    }
    let filter = format!("label={}={PROJECT}", label::STACK);
    // The controller first, and gone before the rest: it owns the colors,
    // and one still running would put back a color removed under it.
    let controller = controller_service();
    if !output(docker(["service", "ls", "-q", "--filter", &format!("name={controller}")]))?
        .is_empty()
    {
        run(docker(["service", "rm", &controller]))?;
    }
    poll::until(REMOVAL, Duration::from_millis(500), || {
        Ok(match container_of(&controller)? {
            None => Poll::Ready(()),
            Some(id) => Poll::Pending(format!("the controller's container {id} still runs")),
        })
    })
    .context("waiting for the controller to stop")?;
    let services = output(docker(["service", "ls", "-q", "--filter", &filter]))?;
    if !services.is_empty() {
        let ids: Vec<&str> = services.lines().collect();
        run(docker(["service", "rm"].iter().chain(&ids)))?;
    }
    // Containers go with their tasks, after the stop grace; one Swarm
    // still keeps after that (a dead task's, seen after a kill -9) is
    // removed here, its service being gone.
    let waited = poll::until(REMOVAL, Duration::from_millis(500), || {
        let left = output(docker([
            "ps",
            "-a",
            "--filter",
            &filter,
            "--format",
            "{{.Names}} ({{.Status}})",
        ]))?;
        Ok(if left.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("containers of the stack: {}", left.replace('\n', ", ")))
        })
    });
    if let Err(e) = waited {
        eprintln!("{e:#}; removing them");
        docker::remove_containers(&docker::containers(&filter)?)?;
        let left = docker::containers(&filter)?;
        if !left.is_empty() {
            bail!("containers of the swarm stack are still there: {}", left.join(" "));
        }
    }
    // The network, once no endpoint uses it (Swarm frees them a moment
    // after the containers).
    poll::until(Duration::from_secs(30), Duration::from_millis(500), || {
        let present =
            output(docker(["network", "ls", "-q", "--filter", &format!("name=^{NETWORK}$")]))?;
        if present.is_empty() {
            return Ok(Poll::Ready(()));
        }
        Ok(match output(docker(["network", "rm", NETWORK])) {
            Ok(_) => Poll::Ready(()),
            Err(e) => Poll::Pending(format!("{e:#}")),
        })
    })
    .with_context(|| format!("removing the network {NETWORK}"))
}

/// Leaves the swarm when `up` made it (the marker), after taking the
/// extra nodes away (whoever made the swarm: only `up` makes nodes), and
/// removes the
/// `docker_gwbridge` network Docker leaves behind; `ingress` goes with the
/// swarm. Returns whether it left.
pub fn leave_if_ours() -> Result<bool> {
    super::nodes::remove()?;
    if !marker().exists() {
        return Ok(false);
    }
    if state()? == "active" {
        run(docker(["swarm", "leave", "--force"]))?;
    }
    poll::until(Duration::from_secs(30), Duration::from_millis(500), || {
        let present =
            output(docker(["network", "ls", "-q", "--filter", "name=^docker_gwbridge$"]))?;
        if present.is_empty() {
            return Ok(Poll::Ready(()));
        }
        Ok(match output(docker(["network", "rm", "docker_gwbridge"])) {
            Ok(_) => Poll::Ready(()),
            Err(e) => Poll::Pending(format!("{e:#}")),
        })
    })
    .context("removing docker_gwbridge")?;
    fs::remove_file(marker()).context("cannot remove the swarm marker")?;
    Ok(true)
}

/// Empties the runtime directory but for the swarm marker: a fresh stack
/// on the swarm `up` made must still leave it at the end.
pub fn clear_dir() -> Result<()> {
    let ours = fs::read_to_string(marker()).ok();
    paths::remove_dir_if_present(&stack_dir())?;
    if let Some(text) = ours {
        fs::create_dir_all(stack_dir())?;
        fs::write(marker(), text).context("cannot write the swarm marker")?;
    }
    Ok(())
}
