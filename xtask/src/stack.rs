//! `cargo xtask up` and `down`: the local production stack.
//!
//! `up` takes a fresh machine (Rust and Docker) to a serving stack: it
//! installs the Debian packages it needs, trains the model, builds and
//! pushes the images, starts the registry (left running: the controller
//! pulls from it), then nginx, the deployment controller and Prometheus
//! (with its nginx exporters) with compose,
//! writes the built tag into the live manifest and follows the controller
//! until that tag serves through nginx. The controller, not `up`, starts
//! the app slots: it is their one owner. Running `up` again converges on
//! the same state. `down` removes every container of the compose project
//! (the controller's slots included) and stops the registry `up` started.
//!
//! `up --platform swarm` runs the same parts as Swarm services instead
//! ([`swarm`]); `down` removes whichever of the two stacks is up.

pub mod nodes;
pub mod swarm;

use std::fs;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use bluegreen::{CONTROLLER_PORT, NETWORK, PROJECT, REGISTRY_ADDR, label, published_port};

use crate::api;
use crate::effects::compose::Tool;
use crate::effects::docker::{self, docker};
use crate::effects::http::Request;
use crate::effects::paths::{self, live_manifest, stack_dir};
use crate::effects::poll::{self, Poll};
use crate::effects::process::{output, run};
use crate::effects::{deps, registry};
use crate::images::prometheus;
use crate::rollout;
use crate::stages::artifacts::{self, Built};
use crate::stages::build::{self, BuildArgs};
use crate::stages::integration;
use crate::stages::train;

/// Where the stack runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Platform {
    /// Containers of the compose project `taxi-fare` (manifests/compose.yaml).
    #[default]
    Compose,
    /// Services of the Swarm stack `taxi-fare` (manifests/swarm.yaml) on a
    /// one-node swarm of this Engine, the controller run with
    /// `--platform swarm`.
    Swarm,
}

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where the stack runs: compose, or Docker Swarm.
    #[arg(long, value_enum, default_value_t = Platform::Compose)]
    pub platform: Platform,
    /// Swarm only: the nodes of the swarm, this Engine included; each
    /// one more is a dockerd in a network namespace of its own on this
    /// machine, joined as a worker (see ARCHITECTURE.md, "Swarm nodes").
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// Reuse the model artifact already in artifacts/ instead of training.
    #[arg(long)]
    pub no_train: bool,
    /// How long to wait for nginx to become healthy and for the
    /// controller to roll the built tag out, in seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_S, env = "TAXI_UP_TIMEOUT")]
    pub timeout: u64,
    #[command(flatten)]
    pub notify: Notify,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// Where the stack's controller sends rollout events.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Notify {
    /// A webhook for rollout events (started, paused, promoted, succeeded,
    /// rolled back), as the controller's container reaches it: e.g. a
    /// Slack incoming webhook, or a receiver on the stack's `monitoring`
    /// network.
    #[arg(long, env = "TAXI_WEBHOOK")]
    pub webhook: Option<String>,
    /// The webhook body's shape: `json` (the history's fields) or `slack`.
    #[arg(long, default_value = "json", env = "TAXI_WEBHOOK_FORMAT")]
    pub webhook_format: String,
}

const DEFAULT_TIMEOUT_S: u64 = 180;

/// The command line's defaults.
impl Default for UpArgs {
    fn default() -> Self {
        UpArgs {
            platform: Platform::Compose,
            nodes: 1,
            no_train: false,
            timeout: DEFAULT_TIMEOUT_S,
            notify: Notify { webhook: None, webhook_format: "json".into() },
            build: BuildArgs::default(),
        }
    }
}

/// nginx's published port: 80, as the original, unless `TAXI_FRONT_PORT`
/// says otherwise (a machine where 80 is taken).
pub fn front_port() -> u16 {
    std::env::var("TAXI_FRONT_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(80)
}

/// The preview port of a paused rollout.
pub const PREVIEW_PORT: u16 = 8081;

/// Prometheus' port, on 127.0.0.1 only.
pub const PROMETHEUS_PORT: u16 = 9090;

/// The compose services of the monitoring: Prometheus and the exporters
/// of the two nginx tiers.
pub const MONITORING_SERVICES: [&str; 3] = ["prometheus", "nginx_exporter", "edge_exporter"];

/// The network only Prometheus and the controller share.
pub const MONITORING_NETWORK: &str = "taxi-fare_monitoring";

/// nginx's front as a loopback address.
pub fn front() -> String {
    format!("127.0.0.1:{}", front_port())
}

pub fn up(args: &UpArgs) -> Result<()> {
    let started = Instant::now();
    // Up front (the registry and the nginx base would also install theirs
    // on demand), so a fresh machine gets every package in one go.
    deps::ensure(&[deps::REGISTRY, deps::NGINX_ROOTFS].concat())?;
    docker::ensure_running()?;
    if args.nodes != 1 && args.platform != Platform::Swarm {
        bail!("--nodes is for --platform swarm: compose runs on one Engine");
    }
    let tool = match args.platform {
        Platform::Compose => {
            let tool = Tool::ensure()?;
            check_ports()?;
            Some(tool)
        }
        Platform::Swarm => {
            swarm::check_ports()?;
            None
        }
    };
    // Started (and kept) first: a taken port 5000 fails before any work,
    // the build's push finds it running, and it stays for the controller.
    registry::ensure_running()?.keep();

    let mut build = args.build.clone();
    if args.no_train {
        artifacts::load_model(&build.model.clone().unwrap_or_else(artifacts::model_path))?;
    } else {
        let trained = train::run(&train::TrainArgs::default())?;
        println!(
            "model trained on {}: held-out R² {:.3}, RMSE {:.2} USD",
            trained.data.display(),
            trained.r2,
            trained.rmse
        );
        build.model = Some(trained.model);
    }
    let built = build::build(&build)?;

    let timeout = Duration::from_secs(args.timeout);
    match tool {
        Some(tool) => launch(tool, &built, timeout, &args.notify)?,
        None => swarm::launch(&built, timeout, &args.notify, args.nodes)?,
    }
    wait_for_prediction(timeout)?;

    let s = rollout::status()?;
    let live = s.active.color.map_or("-".into(), |c| c.service().to_owned());
    println!();
    println!("The stack is up ({:.0} s), {live} live:", started.elapsed().as_secs_f64());
    println!("  front (nginx)   http://localhost:{}/", front_port());
    println!("  controller      http://{}/status", rollout::ADDR);
    if args.platform == Platform::Compose {
        println!("  app_blue        http://127.0.0.1:{}/", published_port(bluegreen::Color::Blue));
        println!("  app_green       http://127.0.0.1:{}/", published_port(bluegreen::Color::Green));
    } else {
        println!("  services        docker stack services {PROJECT}");
    }
    println!("  registry        http://{REGISTRY_ADDR}/v2/");
    if args.platform == Platform::Compose {
        println!("  prometheus      http://127.0.0.1:{PROMETHEUS_PORT}/targets");
    }
    println!("  status page     http://{}/", rollout::ADDR);
    if let Some(url) = &args.notify.webhook {
        println!("  webhook         {url} ({})", args.notify.webhook_format);
    }
    println!("  image           {}", built.service);
    println!("Try:");
    println!(
        "  curl -X POST localhost:{}/api/predict/ -H 'Content-Type: application/json' -d '{}'",
        front_port(),
        api::documented_request()
    );
    println!("  cargo run -q -p controller -- status");
    println!("Stop everything with `cargo xtask down`.");
    Ok(())
}

/// Lays out the runtime directory with `built`'s tag in the live
/// manifest, starts nginx, the controller and the monitoring, follows the
/// controller's rollout of that tag, then waits for Prometheus.
pub fn launch(tool: Tool, built: &Built, timeout: Duration, notify: &Notify) -> Result<()> {
    prepare_dir()?;
    let user = controller_user()?;
    check_owned(user)?;
    // Before the controller starts, so its first rollout is this tag.
    rollout::set_tag(&live_manifest(), &built.tag)?;
    compose_up(tool, built, user, notify, &STACK_SERVICES)?;
    for proxy in [bluegreen::NGINX_SERVICE, bluegreen::EDGE_SERVICE] {
        docker::wait_healthy(&container_of(tool, proxy)?, timeout)?;
    }
    rollout::deploy(&built.tag, timeout)?;
    docker::wait_healthy(&container_of(tool, MONITORING_SERVICES[0])?, timeout)
}

/// Fails, naming the port, when a port of compose's stack is taken by
/// anything but this stack's own containers.
fn check_ports() -> Result<()> {
    let ports = [
        (front_port(), "nginx"),
        (CONTROLLER_PORT, "controller"),
        (PREVIEW_PORT, "preview"),
        (PROMETHEUS_PORT, "prometheus"),
        (published_port(bluegreen::Color::Blue), "app_blue"),
        (published_port(bluegreen::Color::Green), "app_green"),
    ];
    check_ports_free(label::PROJECT, &ports, "another program; stop it")
}

/// Fails, naming the port, when one of `ports` (number, what publishes it)
/// is taken by anything but containers whose label `owner` names the
/// project; `taken_by` says by whom it likely is.
pub(crate) fn check_ports_free(owner: &str, ports: &[(u16, &str)], taken_by: &str) -> Result<()> {
    let ours = output(docker([
        "ps",
        "--filter",
        &format!("label={owner}={PROJECT}"),
        "--format",
        "{{.Ports}}",
    ]))?;
    for (port, what) in ports {
        if ours.contains(&format!(":{port}->")) {
            continue;
        }
        if TcpListener::bind(("0.0.0.0", *port)).is_err() {
            bail!(
                "port {port} (the stack's {what}) is taken by {taken_by}, or find it with \
                 `ss -ltnp 'sport = :{port}'`"
            );
        }
    }
    Ok(())
}

/// The runtime directories under target/stack/, each the controller's to
/// write: upstream.conf, the live manifest, its state, and Prometheus'
/// scrape targets.
const RUNTIME_DIRS: [&str; 4] = ["upstream", "manifests", "controller", "prometheus"];

/// Lays out the runtime directory, keeping what a running stack changed:
/// upstream.conf (no color live until the controller's first rollout),
/// the live manifest (from manifests/rollout.yaml), the state and the
/// scrape targets (none until the controller writes them).
pub fn prepare_dir() -> Result<()> {
    for sub in RUNTIME_DIRS {
        let d = stack_dir().join(sub);
        fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let copies = [
        (paths::root().join("nginx/upstream.conf"), stack_dir().join("upstream/upstream.conf")),
        (paths::root().join("nginx/preview.conf"), stack_dir().join("upstream/preview.conf")),
        (paths::root().join("nginx/mirror.conf"), stack_dir().join("upstream/mirror.conf")),
        (paths::root().join("manifests/rollout.yaml"), live_manifest()),
        // World-readable (the copy keeps the tracked file's mode):
        // Prometheus reads it as its own user.
        (
            paths::root().join("prometheus/targets/targets.json"),
            stack_dir().join("prometheus/targets.json"),
        ),
    ];
    for (from, to) in copies {
        if !to.exists() {
            fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    // An upstream.conf a controller wrote before the router proxied to
    // `$app_route` does not define it, and nginx would refuse to start on
    // it: the plain route is added (the live color stays what it names).
    let upstream = stack_dir().join("upstream/upstream.conf");
    let text = fs::read_to_string(&upstream)
        .with_context(|| format!("cannot read {}", upstream.display()))?;
    if !text.contains("$app_route") {
        let route = "\nmap $host $app_route {\n    default app_live;\n}\n";
        fs::write(&upstream, format!("{text}{route}"))
            .with_context(|| format!("cannot update {}", upstream.display()))?;
    }
    // Prometheus runs as a user of its own image: it must be able to
    // list and read the targets whatever this user's umask.
    use std::os::unix::fs::PermissionsExt;
    let targets = stack_dir().join("prometheus");
    fs::set_permissions(&targets, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} readable", targets.display()))?;
    fs::set_permissions(targets.join("targets.json"), fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot make {}/targets.json readable", targets.display()))?;
    Ok(())
}

/// The Docker socket compose mounts into the controller.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Who the controller runs as: the invoking user and group, who own the
/// runtime directories it writes (the API token in them stays readable
/// by them), with the Docker socket's group added so it can use the
/// socket without root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerUser {
    pub uid: u32,
    pub gid: u32,
    pub docker_gid: u32,
}

impl ControllerUser {
    /// `uid:gid`, as compose's `user:` and `docker inspect` write it.
    pub fn user(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }
}

pub fn controller_user() -> Result<ControllerUser> {
    use std::os::unix::fs::MetadataExt;
    // A process's /proc directory belongs to its effective user and group.
    let me = fs::metadata("/proc/self").context("cannot read /proc/self to learn who runs this")?;
    let socket = fs::metadata(DOCKER_SOCKET).with_context(|| {
        format!("cannot stat {DOCKER_SOCKET}, which compose gives the controller")
    })?;
    Ok(ControllerUser { uid: me.uid(), gid: me.gid(), docker_gid: socket.gid() })
}

/// Fails, naming the file, unless everything the controller writes is the
/// user's: it has no capability to write what another user owns (a
/// directory left by a run as someone else, say).
pub(crate) fn check_owned(user: ControllerUser) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for sub in RUNTIME_DIRS {
        let dir = stack_dir().join(sub);
        let mut paths = vec![dir.clone()];
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            paths.push(entry?.path());
        }
        for path in paths {
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("cannot stat {}", path.display()))?;
            if meta.uid() != user.uid {
                bail!(
                    "{} belongs to uid {}, but the controller runs as uid {} (this user) and may \
                     write only its own files: remove {} (`cargo xtask down`) or run as uid {}",
                    path.display(),
                    meta.uid(),
                    user.uid,
                    stack_dir().display(),
                    meta.uid()
                );
            }
        }
    }
    Ok(())
}

/// The services `up` starts (compose never starts the app slots).
const STACK_SERVICES: [&str; 6] = [
    bluegreen::NGINX_SERVICE,
    bluegreen::EDGE_SERVICE,
    bluegreen::CONTROLLER_SERVICE,
    MONITORING_SERVICES[0],
    MONITORING_SERVICES[1],
    MONITORING_SERVICES[2],
];

/// Recreates the running stack's controller with `notify` (its state and
/// the rollout in flight carry over, as across any restart).
pub fn restart_controller(tool: Tool, built: &Built, notify: &Notify) -> Result<()> {
    let user = controller_user()?;
    compose_up(tool, built, user, notify, &[bluegreen::CONTROLLER_SERVICE])
}

fn compose_up(
    tool: Tool,
    built: &Built,
    user: ControllerUser,
    notify: &Notify,
    services: &[&str],
) -> Result<()> {
    let mut c = tool.command(["up", "-d", "--no-deps"].iter().chain(services));
    // Compose passes an empty value for an unset one; the controller
    // takes an empty webhook for none.
    c.env("CONTROLLER_WEBHOOK", notify.webhook.as_deref().unwrap_or(""))
        .env("CONTROLLER_WEBHOOK_FORMAT", &notify.webhook_format);
    c.env("NGINX_IMAGE", &built.nginx)
        .env("PROMETHEUS_IMAGE", prometheus::beside(&built.nginx))
        .env("CONTROLLER_IMAGE", &built.controller)
        .env("STACK_DIR", stack_dir())
        .env("FRONT_PORT", front_port().to_string())
        .env("CONTROLLER_UID", user.uid.to_string())
        .env("CONTROLLER_GID", user.gid.to_string())
        .env("DOCKER_GID", user.docker_gid.to_string());
    run(c)
}

fn container_of(tool: Tool, service: &str) -> Result<String> {
    let id = output(tool.command(["ps", "-q", service]))?;
    id.lines()
        .next()
        .map(str::to_owned)
        .with_context(|| format!("compose started no {service} container"))
}

pub fn wait_for_prediction(timeout: Duration) -> Result<()> {
    let documented = api::documented_request();
    let front = front();
    poll::until(timeout, Duration::from_millis(500), || {
        let answer = Request::post_json("/api/predict/", documented.as_bytes())
            .timeout(Duration::from_secs(5))
            .send(&front);
        Ok(match answer {
            Ok(r) if r.status == 200 => Poll::Ready(()),
            Ok(r) => Poll::Pending(format!("answering {}: {}", r.status, r.text())),
            Err(e) => Poll::Pending(format!("failing ({e:#})")),
        })
    })
    .with_context(|| format!("POST http://{front}/api/predict/ through nginx"))
}

pub fn down() -> Result<()> {
    let mut problems = Vec::new();
    let mut left_swarm = Ok(false);
    match docker::ensure_running() {
        Ok(_) => {
            // Swarm's first: its tasks are containers too, and compose's
            // removal does not know them.
            if let Err(e) = swarm::remove_stack() {
                problems.push(format!("{e:#}"));
            }
            if let Err(e) = remove_stack() {
                problems.push(format!("{e:#}"));
            }
            left_swarm = swarm::leave_if_ours();
        }
        Err(e) => problems.push(format!("{e:#}")),
    }
    match registry::stop() {
        Ok(true) => eprintln!("stopped the registry"),
        Ok(false) => {}
        Err(e) => problems.push(format!("cannot stop the registry: {e:#}")),
    }
    match left_swarm {
        Ok(true) => eprintln!("left the swarm `up` made"),
        Ok(false) => {}
        // The marker stays, so the next `down` leaves it.
        Err(e) => problems.push(format!("cannot leave the swarm `up` made: {e:#}")),
    }
    swarm::clear_dir()?;
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    println!("The stack is down: no container of project {} is left.", PROJECT);
    Ok(())
}

/// Removes every container of the project (compose's and the
/// controller's, which carry the same label) and then the network.
pub fn remove_stack() -> Result<()> {
    let ours = format!("label={}={PROJECT}", label::PROJECT);
    docker::remove_containers(&docker::containers(&ours)?)?;
    // Strays of an interrupted integration run.
    let strays = docker::containers(&format!("label={}", integration::ROLE_LABEL))?;
    docker::remove_containers(&strays)?;
    match Tool::detect() {
        Some(tool) => {
            if let Err(e) = run(tool.command(["down", "--remove-orphans"])) {
                networks_stuck().map_err(|why| e.context(why))?;
            }
        }
        None => {
            for network in [NETWORK, MONITORING_NETWORK] {
                let _ = output(docker(["network", "rm", network]));
            }
        }
    }
    let left = docker::containers(&ours)?;
    if !left.is_empty() {
        bail!("containers of project {} are still there: {}", PROJECT, left.join(" "));
    }
    Ok(())
}

/// After a failed `compose down`: Ok when what is left is only networks
/// of ours that no container uses but that the Engine still refuses to
/// remove for "active endpoints" — its endpoint count leaked (an Engine
/// bug: no endpoint is listed, and only a daemon restart clears it). They
/// are left, said so, and the next `compose up` reuses them. Anything
/// else is the error.
fn networks_stuck() -> Result<()> {
    for network in [NETWORK, MONITORING_NETWORK] {
        let Ok(attached) =
            output(docker(["network", "inspect", "--format", "{{len .Containers}}", network]))
        else {
            continue; // gone
        };
        if attached != "0" {
            bail!("{attached} containers are still on {network}");
        }
        match output(docker(["network", "rm", network])) {
            Ok(_) => {}
            Err(e) if format!("{e:#}").contains("has active endpoints") => eprintln!(
                "warning: the Engine will not remove {network}, which no container uses \
                 (its endpoint count leaked; a daemon restart clears it): left for the next \
                 stack to reuse"
            ),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_command_line() {
        let parsed: UpArgs = crate::parse_empty_command_line();
        let default = UpArgs::default();
        assert_eq!((parsed.no_train, parsed.timeout), (default.no_train, default.timeout));
        assert!(default.timeout > 0);
    }

    #[test]
    fn the_compose_file_is_valid_for_this_machines_compose() {
        let tool =
            Tool::detect().expect("no Compose on this machine (docker compose or docker-compose)");
        let out = output(tool.command(["config", "--services"])).unwrap();
        let mut services: Vec<&str> = out.lines().collect();
        services.sort_unstable();
        assert_eq!(
            services,
            [
                "app_blue",
                "app_green",
                "controller",
                "edge",
                "edge_exporter",
                "nginx",
                "nginx_exporter",
                "prometheus"
            ]
        );
        let mut config = tool.command(["config"]);
        config.env("STACK_DIR", "/stack");
        let config = output(config).unwrap();
        assert!(config.contains("/stack/upstream"), "{config}");
        // Prometheus: loopback only, the targets the controller writes.
        assert!(config.contains("127.0.0.1:9090:9090"), "{config}");
        assert!(config.contains("/stack/prometheus:/etc/prometheus/targets:ro"), "{config}");
        assert!(config.contains("/prometheus/targets.json"), "{config}");
        assert!(config.contains("/var/run/docker.sock"), "{config}");
        // Without `up`'s variables (a plain `docker-compose up`): root,
        // capabilities dropped all the same.
        assert!(config.contains("0:0") && config.contains("read_only: true"), "{config}");
        assert!(config.contains("no-new-privileges:true"), "{config}");
        let mut config = tool.command(["config"]);
        config.env("CONTROLLER_UID", "1000").env("CONTROLLER_GID", "1001").env("DOCKER_GID", "105");
        let config = output(config).unwrap();
        assert!(config.contains("1000:1001"), "{config}");
        assert!(
            config.contains("'105'") || config.contains("\"105\"") || config.contains("- 105"),
            "{config}"
        );
    }
}
