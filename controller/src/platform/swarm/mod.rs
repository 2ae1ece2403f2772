//! The Swarm backend: each color is a replicated Swarm service
//! (`<stack>_app_blue`, `<stack>_app_green`) on an overlay network with
//! DNS round robin, its replicas the service's tasks ([`services`] for the
//! IO, [`spec`] for the pure mapping both ways); the router is nginx run
//! as a Swarm service (`<stack>_nginx`) whose tasks are pinned to the
//! manager and bind-mount the upstream directory from it, so the
//! controller, on that manager, writes upstream.conf once and tests and
//! reloads it in every router task's container ([`crate::platform::nginx`],
//! the same code as compose's).
//!
//! The file names the live color's tasks by overlay address, not by DNS
//! name: a reload never fails on a name, and a task Swarm replaced (a new
//! address) makes the router stale until it is routed again.

pub mod services;
pub mod spec;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bluegreen::{Color, Upstream};
use bollard::models::{Service, Task, TaskState};
use controller_core::observed::{Capabilities, Replica, State, Traffic};
use tokio::sync::mpsc;
use tracing::warn;

use self::services::Services;
use self::spec::{Layout, Local};
use super::docker::{CALL, Engine, PULL, STOP_GRACE, forward_events, is_for_good};
use super::nginx::{Instances, Nginx};
use super::{AppRange, PlatformError, Result, Router, Spec, Workloads};

/// How often `start` and `remove` look at the tasks while they wait for
/// Swarm to start or stop them.
const POLL: Duration = Duration::from_millis(500);
/// How long `route` waits for a task's overlay address to accept the
/// router's connections: Swarm calls a task running (and healthy, which
/// its own loopback check decides) up to a few seconds (3.3 s measured)
/// before the overlay delivers to it from the router, and a switch to an
/// address nobody answers yet is a failed probe. Past the wait the switch
/// goes on: a color that is healthy but unreachable through the router
/// is the probe's to find (a level-2 rollback), not this wait's.
const REACHABLE: Duration = Duration::from_secs(10);
/// Between two checks of the addresses not reachable yet.
const REACH_EVERY: Duration = Duration::from_millis(250);
/// A script, run in a router task, that prints each address given after
/// the port that does not accept a TCP connection within a second
/// (bash's /dev/tcp: the router's image has no other client). The
/// addresses come from Docker and are passed as arguments, never spliced
/// into the script.
const UNREACHABLE: &str = r#"port=$1; shift; for a; do timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$a" "$port" 2>/dev/null || echo "$a"; done"#;

/// Where the Swarm backend's parts are.
#[derive(Debug, Clone)]
pub struct Config {
    /// The stack its services are named in (`taxi-fare`).
    pub stack: String,
    /// The overlay network the colors and the router share.
    pub network: String,
    /// The upstream directory the router's tasks bind-mount from this node.
    pub upstream_dir: PathBuf,
    /// The front's URL as the controller reaches it.
    pub front: String,
}

pub struct Swarm {
    services: Services,
    layout: Layout,
    /// This manager's node id: where the router's tasks run, and whose
    /// containers the local Engine can inspect.
    node: String,
    /// The traffic tier's services: the router (reloaded at a switch) and
    /// the edge (only watched).
    tier: [String; 2],
    nginx: Nginx<RouterTasks>,
    front: String,
}

impl Swarm {
    /// The backend on `engine`, which must be a manager of an active
    /// swarm: refused otherwise, before the controller starts.
    pub async fn new(engine: Engine, config: Config) -> Result<Swarm> {
        let services = Services::new(engine.clone());
        let node = services.manager_node().await?;
        let router = format!("{}_{}", config.stack, bluegreen::NGINX_SERVICE);
        let edge = format!("{}_{}", config.stack, bluegreen::EDGE_SERVICE);
        let tasks =
            RouterTasks { services: services.clone(), service: router.clone(), node: node.clone() };
        let nginx = Nginx::new(engine, tasks, config.upstream_dir);
        let layout = Layout { stack: config.stack, network: config.network };
        Ok(Swarm { services, layout, node, tier: [router, edge], nginx, front: config.front })
    }

    /// The current task of each slot of `color`'s service (none when the
    /// service does not exist), with what this node's Engine says of the
    /// task's container where it runs here.
    async fn tasks_of(&self, color: Color) -> Result<Vec<Seen>> {
        let Some(service) = self.services.service(&self.layout.service(color)).await? else {
            return Ok(Vec::new());
        };
        let Some(id) = service.id else { return Ok(Vec::new()) };
        let mut seen = Vec::new();
        for task in spec::current(self.services.tasks(&id).await?) {
            let container = match container_id(&task) {
                Some(c) if task.node_id.as_deref() == Some(self.node.as_str()) => {
                    self.services.container(&c, &self.layout.network).await?
                }
                _ => None,
            };
            seen.push(Seen { task, container });
        }
        Ok(seen)
    }

    /// The tasks of `color` that serve (Swarm says `running`: started and
    /// past their first health check), as `(slot, address)` in slot order;
    /// at most `count` of them when given.
    async fn serving(&self, color: Color, count: Option<u32>) -> Result<Vec<(u32, String)>> {
        let seen = self.tasks_of(color).await?;
        let mut remote = None;
        let mut found = Vec::new();
        for s in seen.iter().filter(|s| state_of(&s.task) == Some(TaskState::RUNNING)) {
            let Some(slot) = s.task.slot.and_then(|n| u32::try_from(n).ok()) else { continue };
            let address = match s.container.as_ref().and_then(|c| c.address.clone()) {
                Some(a) => Some(a),
                None => {
                    if remote.is_none() {
                        remote = Some(self.services.task_addresses(&self.layout.network).await?);
                    }
                    let id = s.task.id.clone().unwrap_or_default();
                    remote.as_ref().and_then(|r| r.get(&id).cloned())
                }
            };
            if let Some(address) = address {
                found.push((slot, address));
            }
        }
        found.sort();
        if let Some(count) = count {
            found.truncate(count.max(1) as usize);
        }
        Ok(found)
    }

    /// Waits, within [`REACHABLE`], until every one of `tasks`' addresses
    /// accepts a connection from a router task (the first one, on this
    /// node: every router task shares the overlay with it); past the
    /// wait, says which do not and returns. An error only when the check
    /// itself cannot be run.
    async fn reachable(&self, tasks: &[(u32, String)]) -> Result<()> {
        let port = bluegreen::APP_PORT.to_string();
        let deadline = tokio::time::Instant::now() + REACHABLE;
        let mut left: Vec<&str> = tasks.iter().map(|(_, a)| a.as_str()).collect();
        while !left.is_empty() {
            let router = self.nginx.instances().containers().await?;
            let Some(router) = router.first() else { break };
            let mut cmd = vec!["bash", "-c", UNREACHABLE, "reachable", port.as_str()];
            cmd.extend(left.iter().copied());
            let (code, out) = self.nginx.engine().exec(router, &cmd).await?;
            if code != 0 {
                return Err(PlatformError::Unavailable {
                    backend: "nginx",
                    message: format!("cannot check the tasks' addresses from {router}: {out}"),
                });
            }
            let unreachable: Vec<&str> = out.split_whitespace().collect();
            left.retain(|a| unreachable.contains(a));
            if !left.is_empty() && tokio::time::Instant::now() + REACH_EVERY > deadline {
                warn!(
                    addresses = %left.join(", "),
                    port = %port,
                    "the router cannot reach these tasks yet; routing to them all the same"
                );
                break;
            }
            if !left.is_empty() {
                tokio::time::sleep(REACH_EVERY).await;
            }
        }
        Ok(())
    }

    /// Waits until Swarm has started every replica of `image` (each task
    /// of it past `ready`: its container runs, or ended), as compose's
    /// start returns once its containers run: the loop's health stage
    /// takes a replica that is not running yet for a failure. The node's
    /// pull is part of it, hence the pull's deadline. A task refused for
    /// an image the registry does not have fails at once.
    async fn started(&self, color: Color, image: &str, replicas: u32) -> Result<()> {
        let name = self.layout.service(color);
        let wait = async {
            loop {
                let Some(id) = self.services.service(&name).await?.and_then(|s| s.id) else {
                    return Err(PlatformError::Unavailable {
                        backend: "swarm",
                        message: format!("the service {name} went away while it started"),
                    });
                };
                let tasks = self.services.tasks(&id).await?;
                if let Some(message) = tasks
                    .iter()
                    .filter(|t| image_of(t) == Some(image))
                    .filter_map(|t| t.status.as_ref().and_then(|s| s.err.clone()))
                    .find(|e| is_for_good(e))
                {
                    return Err(PlatformError::Image { image: image.to_owned(), message });
                }
                let started = spec::current(tasks)
                    .iter()
                    .filter(|t| image_of(t) == Some(image) && spec::is_wanted(t))
                    .filter(|t| !matches!(spec::task_state(state_of(t)).0, State::Created))
                    .count();
                if started >= replicas as usize {
                    return Ok(());
                }
                tokio::time::sleep(POLL).await;
            }
        };
        match tokio::time::timeout(PULL, wait).await {
            Ok(result) => result,
            Err(_) => Err(PlatformError::Unavailable {
                backend: "swarm",
                message: format!("the tasks of {name} did not start within 10m"),
            }),
        }
    }

    /// The traffic tier's services with a slot Swarm no longer means to
    /// run (its restart policy gave up): nothing brings those back by
    /// itself. A task Swarm is restarting is not down; a tier service that
    /// does not exist is not either (the stack, not the controller, makes
    /// it).
    async fn tier_down(&self) -> Result<Vec<Service>> {
        let mut down = Vec::new();
        for name in &self.tier {
            let Some(service) = self.services.service(name).await? else { continue };
            let want = service
                .spec
                .as_ref()
                .and_then(|s| s.mode.as_ref())
                .and_then(|m| m.replicated.as_ref())
                .and_then(|r| r.replicas)
                .unwrap_or(0);
            let Some(id) = service.id.clone() else { continue };
            let wanted = spec::current(self.services.tasks(&id).await?)
                .iter()
                .filter(|t| spec::is_wanted(t))
                .count();
            if (wanted as i64) < want {
                down.push(service);
            }
        }
        Ok(down)
    }
}

/// A task, and its container where it runs on this node.
struct Seen {
    task: Task,
    container: Option<services::Container>,
}

fn state_of(task: &Task) -> Option<TaskState> {
    task.status.as_ref().and_then(|s| s.state)
}

fn image_of(task: &Task) -> Option<&str> {
    task.spec.as_ref()?.container_spec.as_ref()?.image.as_deref()
}

fn container_id(task: &Task) -> Option<String> {
    task.status.as_ref()?.container_status.as_ref()?.container_id.clone().filter(|c| !c.is_empty())
}

/// The router's running tasks on this manager: where a change is tested
/// and reloaded. A router task on another node cannot see this node's
/// upstream directory, so a switch refuses to go on without it; one that
/// is not running yet loads the file itself when it starts.
#[derive(Clone)]
pub struct RouterTasks {
    services: Services,
    service: String,
    node: String,
}

impl Instances for RouterTasks {
    async fn containers(&self) -> Result<Vec<String>> {
        let unavailable =
            |message: String| PlatformError::Unavailable { backend: "nginx", message };
        let Some(id) = self.services.service(&self.service).await?.and_then(|s| s.id) else {
            return Err(unavailable(format!("no router service {}", self.service)));
        };
        let mut here = Vec::new();
        for task in spec::current(self.services.tasks(&id).await?) {
            if state_of(&task) != Some(TaskState::RUNNING) || !spec::is_wanted(&task) {
                continue;
            }
            let Some(container) = container_id(&task) else { continue };
            match task.node_id.as_deref() {
                Some(node) if node == self.node => here.push(container),
                other => {
                    return Err(unavailable(format!(
                        "a task of {} runs on node {}, not on this manager: it cannot read \
                         this node's upstream.conf (constrain it to node.role==manager)",
                        self.service,
                        other.unwrap_or("?")
                    )));
                }
            }
        }
        if here.is_empty() {
            return Err(unavailable(format!("no running task of {}", self.service)));
        }
        Ok(here)
    }
}

impl Workloads for Swarm {
    async fn replicas(&self) -> Result<Vec<Replica>> {
        let mut all = Vec::new();
        for color in Color::ALL {
            let service = self.layout.service(color);
            for s in self.tasks_of(color).await? {
                let local: Option<&Local> = s.container.as_ref().map(|c| &c.local);
                all.extend(spec::replica(&service, color, &s.task, local));
            }
        }
        Ok(all)
    }

    /// Creates the color's service, or updates it (at the version it was
    /// read at) when it runs another image, tag or replica count; then
    /// waits for Swarm to start its tasks. Swarm's nodes pull the image
    /// themselves (and use the one they have when the registry is down).
    async fn start(&self, color: Color, spec: Spec) -> Result<()> {
        let name = self.layout.service(color);
        let wanted = spec::service_spec(&self.layout, color, &spec, self.services.engine().api());
        match self.services.service(&name).await? {
            None => self.services.create(wanted).await?,
            Some(existing) => {
                let runs = existing.spec.as_ref().is_some_and(|s| spec::runs(s, &wanted));
                if !runs {
                    let version = existing.version.and_then(|v| v.index).unwrap_or(0);
                    self.services.update(&name, version, wanted).await?;
                }
            }
        }
        self.started(color, &spec::image_of(&spec), spec.replicas).await
    }

    /// `graceful`: scales the service to zero first and waits (its stop
    /// grace period and a call's time) until its tasks have stopped, so
    /// each finishes the requests it holds; then removes the service.
    async fn remove(&self, color: Color, graceful: bool) -> Result<()> {
        let name = self.layout.service(color);
        let Some(service) = self.services.service(&name).await? else { return Ok(()) };
        if graceful && let (Some(mut spec), Some(id)) = (service.spec.clone(), service.id.clone()) {
            if let Some(replicated) = spec.mode.as_mut().and_then(|m| m.replicated.as_mut()) {
                replicated.replicas = Some(0);
            }
            let version = service.version.and_then(|v| v.index).unwrap_or(0);
            self.services.update(&name, version, spec).await?;
            let stopped = async {
                loop {
                    let tasks = self.services.tasks(&id).await?;
                    let running = tasks.iter().any(|t| {
                        matches!(state_of(t), Some(TaskState::RUNNING | TaskState::STARTING))
                    });
                    if !running {
                        return Ok::<(), PlatformError>(());
                    }
                    tokio::time::sleep(POLL).await;
                }
            };
            if tokio::time::timeout(STOP_GRACE + CALL, stopped).await.is_err() {
                warn!(service = %name, "its tasks did not stop in time; removing it anyway");
            }
        }
        self.services.delete(&name).await?;
        // Swarm stops and removes the containers after the service is
        // gone: wait for that on this node, as compose's remove returns
        // with its containers gone, so a removed color serves nothing.
        let gone = async {
            while self.services.local_containers(&name).await? > 0 {
                tokio::time::sleep(POLL).await;
            }
            Ok::<(), PlatformError>(())
        };
        match tokio::time::timeout(STOP_GRACE + CALL, gone).await {
            Ok(result) => result,
            Err(_) => Err(PlatformError::Unavailable {
                backend: "swarm",
                message: format!("the containers of {name} were still there after its removal"),
            }),
        }
    }

    /// Each running task's own address and port. A task just started on
    /// another node is listed in the manager's view of the network a
    /// moment after Swarm calls it running: waited for, within
    /// [`REACHABLE`], since leaving it out would read as a replica gone.
    async fn endpoints(&self, color: Color) -> Result<Vec<String>> {
        let deadline = tokio::time::Instant::now() + REACHABLE;
        loop {
            let seen = self.tasks_of(color).await?;
            let mut remote = None;
            let mut urls = Vec::new();
            let mut unknown = None;
            for s in &seen {
                if !matches!(state_of(&s.task), Some(TaskState::RUNNING | TaskState::STARTING)) {
                    continue;
                }
                // The port the container itself listens on, as compose's
                // endpoints: what the router proxies to is the probe's
                // business. A task elsewhere: the app's port.
                let (address, port) = match &s.container {
                    Some(c) => (c.address.clone(), c.port),
                    None => {
                        if remote.is_none() {
                            remote =
                                Some(self.services.task_addresses(&self.layout.network).await?);
                        }
                        let id = s.task.id.clone().unwrap_or_default();
                        (remote.as_ref().and_then(|r| r.get(&id).cloned()), None)
                    }
                };
                match address {
                    Some(address) => urls
                        .push(format!("http://{address}:{}", port.unwrap_or(bluegreen::APP_PORT))),
                    None => unknown = s.task.id.clone(),
                }
            }
            let Some(task) = unknown else { return Ok(urls) };
            if tokio::time::Instant::now() + REACH_EVERY > deadline {
                return Err(PlatformError::Unavailable {
                    backend: "swarm",
                    message: format!(
                        "the overlay address of task {task} of {color} is not known after {}s",
                        REACHABLE.as_secs()
                    ),
                });
            }
            tokio::time::sleep(REACH_EVERY).await;
        }
    }

    async fn resolve(&self, image: &str) -> Result<String> {
        self.services.engine().resolve(image).await
    }

    /// The overlay's ranges, and `docker_gwbridge`'s: a task reaches the
    /// host (and a controller listening on it) through the gateway bridge,
    /// from an address of that bridge; the bridge's gateway is the host's
    /// own side and stays allowed.
    async fn app_network(&self) -> Result<Vec<AppRange>> {
        let engine = self.services.engine();
        let mut ranges = engine.network_ranges(&self.layout.network).await?;
        ranges.extend(engine.network_ranges("docker_gwbridge").await?);
        Ok(ranges)
    }

    fn events(&self, hints: mpsc::Sender<String>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let services = self.services.clone();
        let stack = self.layout.stack.clone();
        Box::pin(forward_events(move |since| services.events(&stack, since), hints))
    }
}

impl Router for Swarm {
    /// Both, as compose: the old color's tasks as `backup` servers, and
    /// preview.conf on the router's preview port (the same nginx image
    /// and nginx.conf).
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    /// The file, as compose reads it. Stale: the file names a live server
    /// that is not the address of a serving task of the live color (Swarm
    /// replaced a task, which has a new address, or the file names
    /// replicas by container name, as compose writes it): routing again
    /// names the tasks that serve now. Fewer servers than serving tasks
    /// is not stale: `servers` says so, and the core routes once they
    /// serve. The backup servers are not compared (they only take what
    /// the live color refuses, while a switch is verified).
    async fn read(&self, _replicas: &[Replica]) -> Traffic {
        let read = self.nginx.read_back().await;
        let stale = match read.live() {
            Some(color) => {
                match (self.nginx.upstream_hosts().await, self.serving(color, None).await) {
                    (Ok(named), Ok(serving)) => {
                        named.iter().any(|host| !serving.iter().any(|(_, address)| address == host))
                    }
                    (Err(e), _) => {
                        warn!(error = %e, "cannot read upstream.conf's servers");
                        false
                    }
                    (_, Err(e)) => {
                        warn!(error = %e, "cannot list the live color's tasks");
                        false
                    }
                }
            }
            None => false,
        };
        let down = self
            .tier_down()
            .await
            .map(|d| d.into_iter().filter_map(|s| s.spec.and_then(|s| s.name)).collect());
        self.nginx.traffic(read, stale, down, self.capabilities()).await
    }

    /// Names the serving tasks of `to` (at most `replicas`, by slot) and
    /// of the fallback by address, and tests and reloads the file in every
    /// router task (see `Nginx`: all or none). A task not serving yet is
    /// left out, as compose leaves out a replica that does not run.
    async fn route(
        &self,
        to: Option<Color>,
        replicas: u32,
        fallback: Option<(Color, u32)>,
    ) -> Result<()> {
        let text = match to {
            Some(color) => {
                let live = self.serving(color, Some(replicas)).await?;
                self.reachable(&live).await?;
                let backup = match fallback {
                    Some((c, n)) => Some((c, self.serving(c, Some(n)).await?)),
                    None => None,
                };
                Upstream::render_addresses(color, &live, backup.as_ref().map(|(c, a)| (*c, &a[..])))
            }
            None => Upstream::render_none().to_owned(),
        };
        self.nginx.set_upstream(&text).await
    }

    async fn preview(&self, to: Option<(Color, u32)>) -> Result<()> {
        let text = match to {
            Some((color, n)) => {
                let shown = self.serving(color, Some(n)).await?;
                Upstream::render_preview_addresses(Some((color, &shown)))
            }
            None => Upstream::render_preview(None),
        };
        self.nginx.set_preview(&text).await
    }

    /// `docker service update --force` of each tier service that `read`
    /// called down: Swarm replaces its tasks. (A task that merely failed
    /// is restarted by Swarm itself, under the service's restart policy;
    /// only one it gave up on is down.)
    async fn heal(&self) -> Result<()> {
        for service in self.tier_down().await? {
            let (Some(mut spec), Some(name)) =
                (service.spec.clone(), service.spec.as_ref().and_then(|s| s.name.clone()))
            else {
                continue;
            };
            warn!(service = %name, "the traffic tier is down; forcing Swarm to replace its tasks");
            if let Some(task) = spec.task_template.as_mut() {
                task.force_update = Some(task.force_update.unwrap_or(0).wrapping_add(1));
            }
            let version = service.version.and_then(|v| v.index).unwrap_or(0);
            self.services.update(&name, version, spec).await?;
        }
        Ok(())
    }

    fn front(&self) -> &str {
        &self.front
    }

    /// A canary's file, naming both colors' serving tasks by address (as
    /// `route` does), the new color's checked reachable first.
    async fn split(&self, stable: (Color, u32), canary: (Color, u32), weight: u8) -> Result<()> {
        let old = self.serving(stable.0, Some(stable.1)).await?;
        let new = self.serving(canary.0, Some(canary.1)).await?;
        self.reachable(&new).await?;
        let text = Upstream::render_split_addresses((stable.0, &old), (canary.0, &new), weight)
            .map_err(|e| PlatformError::Refused(e.to_string()))?;
        self.nginx.set_upstream(&text).await
    }

    /// Only the empty mirror: a mirror.conf names its servers by container
    /// name, which a Swarm task has not (a shadow is refused here, at
    /// level 1, before any traffic moves).
    async fn mirror(&self, to: Option<(Color, u32)>) -> Result<()> {
        match to {
            Some(_) => Err(PlatformError::Unsupported("mirror traffic to a Swarm color yet")),
            None => self.nginx.set_mirror(&Upstream::render_mirror(None)).await,
        }
    }
}
