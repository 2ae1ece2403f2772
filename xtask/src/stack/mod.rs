//! `cargo xtask up` and `down`: the local production stack.
//!
//! `up` takes a fresh machine (Rust and Docker) to a serving stack: it
//! installs the Debian packages it needs, trains the model, builds and
//! pushes the images, starts the registry (left running for the
//! deployment controller) and the compose stack with one color live, and
//! waits until a prediction answers 200 through nginx. Running it again
//! converges on the same state. `down` removes every container of the
//! compose project (including those the controller created) and stops the
//! registry `up` started.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use bluegreen::{Color, NETWORK, PROJECT, REGISTRY_ADDR, Upstream, label};

use crate::api;
use crate::effects::compose::Tool;
use crate::effects::docker::{self, docker};
use crate::effects::http::Request;
use crate::effects::poll::{self, Poll};
use crate::effects::process::{output, run};
use crate::effects::{deps, paths, registry};
use crate::stages::artifacts::{self, Built};
use crate::stages::build::{self, BuildArgs};
use crate::stages::integration;
use crate::stages::train;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Reuse the model artifact already in artifacts/ instead of training.
    #[arg(long)]
    pub no_train: bool,
    /// How long to wait for the live color and nginx to become healthy and
    /// for the first prediction through nginx, in seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_S, env = "TAXI_UP_TIMEOUT")]
    pub timeout: u64,
    #[command(flatten)]
    pub build: BuildArgs,
}

const DEFAULT_TIMEOUT_S: u64 = 120;

/// The command line's defaults.
impl Default for UpArgs {
    fn default() -> Self {
        UpArgs { no_train: false, timeout: DEFAULT_TIMEOUT_S, build: BuildArgs::default() }
    }
}

/// The host ports of the stack: nginx's front and the two slots.
const PORTS: [(u16, &str); 3] = [(8080, "nginx"), (5001, "app_blue"), (5002, "app_green")];
/// nginx's published port.
const FRONT: &str = "127.0.0.1:8080";

/// The runtime directory bind-mounted into nginx as /etc/nginx/upstream.
pub fn upstream_dir() -> PathBuf {
    paths::target().join("stack/upstream")
}

pub fn up(args: &UpArgs) -> Result<()> {
    let started = Instant::now();
    // Up front (the registry and the nginx base would also install theirs
    // on demand), so a fresh machine gets every package in one go.
    deps::ensure(&[deps::REGISTRY, deps::NGINX_ROOTFS].concat())?;
    docker::ensure_running()?;
    let tool = Tool::ensure()?;
    check_ports()?;
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

    let live = prepare_upstream()?;
    let timeout = Duration::from_secs(args.timeout);
    compose_up(tool, &built, live.service())?;
    docker::wait_healthy(&container_of(tool, live.service())?, timeout)?;
    compose_up(tool, &built, "nginx")?;
    let nginx = container_of(tool, "nginx")?;
    docker::wait_healthy(&nginx, timeout)?;
    // nginx resolves the live color's address when it loads its
    // configuration: reload it in case that container was just recreated.
    run(docker(["exec", &nginx, "nginx", "-t", "-q"]))?;
    run(docker(["exec", &nginx, "nginx", "-s", "reload"]))?;
    wait_for_prediction(timeout)?;

    println!();
    println!(
        "The stack is up ({:.0} s), {} live:",
        started.elapsed().as_secs_f64(),
        live.service()
    );
    println!("  front (nginx)   http://localhost:8080/");
    println!("  app_blue        http://127.0.0.1:5001/");
    println!(
        "  app_green       http://127.0.0.1:5002/   (started by the controller for a rollout)"
    );
    println!("  registry        http://{}/v2/", REGISTRY_ADDR);
    println!("  image           {}", built.service);
    println!("Try:");
    println!(
        "  curl -X POST localhost:8080/api/predict/ -H 'Content-Type: application/json' -d '{}'",
        api::documented_request()
    );
    println!("Stop everything with `cargo xtask down`.");
    Ok(())
}

/// Fails, naming the port, when a port of the stack is taken by anything
/// but this stack's own containers.
fn check_ports() -> Result<()> {
    let ours = output(docker([
        "ps",
        "--filter",
        &format!("label={}={PROJECT}", label::PROJECT),
        "--format",
        "{{.Ports}}",
    ]))?;
    for (port, what) in PORTS {
        if ours.contains(&format!(":{port}->")) {
            continue;
        }
        if TcpListener::bind(("0.0.0.0", port)).is_err() {
            bail!(
                "port {port} (the stack's {what}) is taken by another program; stop it, or find it \
                 with `ss -ltnp 'sport = :{port}'`"
            );
        }
    }
    Ok(())
}

/// Creates the runtime upstream directory unless it already holds an
/// upstream.conf that names a live color (the controller may have switched
/// colors since); a file that names none (the tracked nginx/upstream.conf
/// has no color live) is replaced by blue's. Returns the live color.
fn prepare_upstream() -> Result<Color> {
    let dir = upstream_dir();
    let live_file = dir.join("upstream.conf");
    let live = match fs::read_to_string(&live_file) {
        Ok(text) => {
            Upstream::parse(&text)
                .with_context(|| {
                    format!("cannot read the live color from {}", live_file.display())
                })?
                .live
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", live_file.display())),
    };
    if let Some(color) = live {
        return Ok(color);
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::write(&live_file, Upstream::render(Color::Blue, 1))
        .with_context(|| format!("cannot write {}", live_file.display()))?;
    Ok(Color::Blue)
}

fn compose_env(c: &mut std::process::Command, built: &Built) {
    c.env("APP_BLUE_IMAGE", &built.service)
        .env("APP_GREEN_IMAGE", &built.service)
        .env("APP_BLUE_VERSION", &built.tag)
        .env("APP_GREEN_VERSION", &built.tag)
        .env("NGINX_IMAGE", &built.nginx)
        .env("UPSTREAM_DIR", upstream_dir());
}

fn compose_up(tool: Tool, built: &Built, service: &str) -> Result<()> {
    let mut c = tool.command(["up", "-d", "--no-deps", service]);
    compose_env(&mut c, built);
    run(c)
}

fn container_of(tool: Tool, service: &str) -> Result<String> {
    let id = output(tool.command(["ps", "-q", service]))?;
    id.lines()
        .next()
        .map(str::to_owned)
        .with_context(|| format!("compose started no {service} container"))
}

fn wait_for_prediction(timeout: Duration) -> Result<()> {
    let documented = api::documented_request();
    poll::until(timeout, Duration::from_millis(500), || {
        let answer = Request::post_json("/api/predict/", documented.as_bytes())
            .timeout(Duration::from_secs(5))
            .send(FRONT);
        Ok(match answer {
            Ok(r) if r.status == 200 => Poll::Ready(()),
            Ok(r) => Poll::Pending(format!("answering {}: {}", r.status, r.text())),
            Err(e) => Poll::Pending(format!("failing ({e:#})")),
        })
    })
    .with_context(|| format!("POST http://{FRONT}/api/predict/ through nginx"))
}

pub fn down() -> Result<()> {
    let mut problems = Vec::new();
    match docker::ensure_running() {
        Ok(_) => {
            if let Err(e) = remove_stack() {
                problems.push(format!("{e:#}"));
            }
        }
        Err(e) => problems.push(format!("{e:#}")),
    }
    match registry::stop() {
        Ok(true) => eprintln!("stopped the registry"),
        Ok(false) => {}
        Err(e) => problems.push(format!("cannot stop the registry: {e:#}")),
    }
    paths::remove_dir_if_present(&paths::target().join("stack"))?;
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    println!("The stack is down: no container of project {} is left.", PROJECT);
    Ok(())
}

/// Removes every container of the project (compose's and the
/// controller's, which carry the same label) and then the network.
fn remove_stack() -> Result<()> {
    let ours = format!("label={}={PROJECT}", label::PROJECT);
    docker::remove_containers(&docker::containers(&ours)?)?;
    // Strays of an interrupted integration run.
    let strays = docker::containers(&format!("label={}", integration::ROLE_LABEL))?;
    docker::remove_containers(&strays)?;
    match Tool::detect() {
        Some(tool) => run(tool.command(["down", "--remove-orphans"]))?,
        None => {
            let _ = output(docker(["network", "rm", NETWORK]));
        }
    }
    let left = docker::containers(&ours)?;
    if !left.is_empty() {
        bail!("containers of project {} are still there: {}", PROJECT, left.join(" "));
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
        assert_eq!(services, ["app_blue", "app_green", "nginx"]);
        let config = output(tool.command(["config"])).unwrap();
        assert!(config.contains("5001"), "{config}");
        assert!(config.contains("/etc/nginx/upstream"), "{config}");
    }
}
