//! `controller`: the blue-green deployment controller daemon (`run`) and
//! the commands that talk to it.

mod cli;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use controller::api::peers::Range;
use controller::api::{Limits, Peers};
use controller::notify::{Format, Notifier};
use controller::platform::compose::Compose;
use controller::platform::docker::Engine;
use controller::platform::swarm::{self, Swarm};
use controller::platform::{Platform, Workloads};
use controller::reconciler::{Reconciler, Shared};
use controller::scrape_targets::ScrapeTargets;
use controller::store::{self, Store};
use controller::{api, watch};
use tokio::sync::mpsc;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "controller",
    version,
    about = "Blue-green deployment controller for the taxi-fare service",
    long_about = "Blue-green deployment controller for the taxi-fare service.\n\n\
        `controller run` watches a desired-state manifest (spec.image.tag) and takes each new \
        tag to production: it starts the idle color, waits for Docker health, points nginx at \
        it, probes through nginx, and rolls back when any of that fails. The other commands \
        talk to a running controller over its API.\n\n\
        The colors run on a platform (`run --platform`): `compose`, containers on this Docker \
        Engine, or `swarm`, one Swarm service per color on an overlay network, with nginx as \
        a Swarm service on this manager."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ApiArgs {
    /// The running controller's API.
    #[arg(long, env = "CONTROLLER_URL", default_value = "http://127.0.0.1:9300")]
    url: String,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The API token file (`controller run` creates it, mode 0600, in its
    /// state directory).
    #[arg(long, env = "CONTROLLER_TOKEN_FILE", default_value = "target/stack/controller/token")]
    token_file: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller until SIGTERM or SIGINT.
    // Boxed: its flags dwarf every other command's.
    Run(Box<RunArgs>),
    /// Show the controller's status (phase, desired and active tag, colors, last rollout).
    Status {
        /// Print the raw /status JSON document.
        #[arg(long)]
        json: bool,
        /// Redraw as the deployment moves, until it settles; the exit code
        /// says how: 0 healthy, 2 degraded (rolled back, or nothing
        /// healthy serves), 3 paused, 1 an error or the timeout.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
        /// How long `--watch` waits for the deployment to settle.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List finished rollouts, newest first.
    History {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
        /// Only this rollout, whole: digest, steps, gates' diff, analysis
        /// figures, retries.
        #[arg(long)]
        revision: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Deploy an image tag: sets spec.image.tag in the manifest.
    SetImage {
        /// The image tag (the repository is the manifest's).
        tag: String,
        /// Edit this manifest file directly instead of asking the controller.
        #[arg(long)]
        manifest: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Switch traffic to the paused rollout's color (autoPromote: false),
    /// or take a canary on to its next step.
    Promote {
        /// A canary: past every step left, to the full switch.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Give the paused rollout up: its color is removed, traffic stays.
    Abort {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Go back to the newest tag that succeeded before the desired one.
    Rollback {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
}

/// Which backend runs the colors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PlatformKind {
    /// Containers with compose's labels on the stack's bridge network,
    /// nginx as a compose service.
    Compose,
    /// A Swarm service per color on an overlay network (this Engine must
    /// be a swarm manager), nginx as a Swarm service pinned to it.
    Swarm,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The backend: `compose` (containers on this Engine) or `swarm`
    /// (services of a swarm this Engine manages; see `--swarm-stack` and
    /// `--swarm-network`).
    #[arg(long, env = "CONTROLLER_PLATFORM", value_enum, default_value = "compose")]
    platform: PlatformKind,
    /// Swarm: the stack the services are named in: `<stack>_app_blue`,
    /// `<stack>_app_green`, and the router `<stack>_nginx` (its tasks
    /// pinned to this manager, bind-mounting `--upstream-dir`) and the
    /// edge `<stack>_edge` (watched, never reloaded).
    #[arg(long, env = "CONTROLLER_SWARM_STACK", default_value = bluegreen::PROJECT)]
    swarm_stack: String,
    /// Swarm: the overlay network the colors and the router share.
    #[arg(long, env = "CONTROLLER_SWARM_NETWORK", default_value = bluegreen::SWARM_NETWORK)]
    swarm_network: String,
    /// The desired-state manifest to watch (its directory is watched).
    #[arg(long, env = "CONTROLLER_MANIFEST", default_value = "manifests/rollout.yaml")]
    manifest: PathBuf,
    /// Where the record (state.json) and the API token live.
    #[arg(long, env = "CONTROLLER_STATE_DIR", default_value = "target/stack/controller")]
    state_dir: PathBuf,
    /// The directory nginx includes upstream.conf from.
    #[arg(long, env = "CONTROLLER_UPSTREAM_DIR", default_value = "target/stack/upstream")]
    upstream_dir: PathBuf,
    /// nginx's URL as the controller reaches it, for the probe.
    #[arg(long, env = "CONTROLLER_PROXY_URL", default_value = "http://127.0.0.1:80")]
    proxy_url: String,
    /// The API's address; loopback unless told otherwise. On any other
    /// address, connections from the app containers' network are refused.
    #[arg(long, env = "CONTROLLER_LISTEN", default_value = "127.0.0.1:9300")]
    listen: SocketAddr,
    /// How long an API client has to send a request's head, from the
    /// connection or from the head's first byte.
    #[arg(long, env = "CONTROLLER_HEADER_TIMEOUT", default_value = "10s", value_parser = positive)]
    header_timeout: Duration,
    /// How long a kept-alive API connection may wait for its next request.
    #[arg(long, env = "CONTROLLER_IDLE_TIMEOUT", default_value = "60s", value_parser = positive)]
    idle_timeout: Duration,
    /// The most API connections open at once; one more is closed at once.
    #[arg(
        long,
        env = "CONTROLLER_MAX_CONNECTIONS",
        default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..=4096)
    )]
    max_connections: u32,
    /// A webhook that gets every rollout event (started, paused, promoted,
    /// succeeded, rolled back) as a JSON POST; retried with backoff, it
    /// never holds a rollout up.
    #[arg(long, env = "CONTROLLER_WEBHOOK")]
    webhook: Option<String>,
    /// The webhook's body: the history's fields, or Slack's `{"text"}`.
    #[arg(long, env = "CONTROLLER_WEBHOOK_FORMAT", value_enum, default_value = "json")]
    webhook_format: Format,
    /// The Prometheus an analysis' PromQL queries are asked of
    /// (`spec.analysis.queries`); without it such an analysis never passes.
    #[arg(long, env = "CONTROLLER_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// A file of Prometheus scrape targets (`file_sd` JSON) to keep: every
    /// running replica of both colors, rewritten when they change.
    #[arg(long, env = "CONTROLLER_SCRAPE_TARGETS_FILE")]
    scrape_targets_file: Option<PathBuf>,
    /// The periodic resync, a safety net for missed events.
    #[arg(long, env = "CONTROLLER_RESYNC", default_value = "5s", value_parser = humantime::parse_duration)]
    resync: Duration,
}

/// A duration above zero: a zero timer would close every connection.
fn positive(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d > Duration::ZERO => Ok(d),
        Ok(_) => Err("must be longer than zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("controller: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("controller: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Run(args) => run(*args).await,
        Command::Status { watch: true, api, timeout, .. } => {
            let settled = cli::watch(&cli::Client::new(&api.url), timeout).await?;
            std::process::exit(settled as i32);
        }
        Command::Status { json, api, .. } => {
            let status = cli::Client::new(&api.url).status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", cli::summary(&status));
            }
            Ok(())
        }
        Command::History { revision: Some(n), json, api } => {
            let status = cli::Client::new(&api.url).status().await?;
            let Some(f) = status.history.iter().find(|f| f.summary.revision == n) else {
                anyhow::bail!("no finished rollout #{n} in the history");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(f)?);
            } else {
                print!("{}", cli::detail(f));
            }
            Ok(())
        }
        Command::History { json, api, .. } => {
            let status = cli::Client::new(&api.url).status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status.history)?);
            } else if status.history.is_empty() {
                println!("no rollout has finished yet");
            }
            if !json {
                for f in &status.history {
                    println!(
                        "{} (started {})",
                        cli::history_line(f),
                        f.summary.started_at.rfc3339()
                    );
                }
            }
            Ok(())
        }
        Command::SetImage { tag, manifest: Some(path), .. } => {
            manifest_file::write_tag(&path, &tag)?;
            println!("{}: spec.image.tag is now {tag}", path.display());
            Ok(())
        }
        Command::SetImage { tag, manifest: None, api, token } => {
            let token = cli::read_token(&token.token_file)?;
            let accepted = cli::Client::new(&api.url).set_image(&token, &tag).await?;
            println!(
                "{}: spec.image.tag is now {}; follow it with `controller status`",
                accepted.manifest, accepted.tag
            );
            Ok(())
        }
        Command::Promote { full, api, token } => {
            let token = cli::read_token(&token.token_file)?;
            let client = cli::Client::new(&api.url);
            let accepted = if full {
                client.promote_full(&token).await?
            } else {
                client.decide(&token, true).await?
            };
            println!("promoting {}: follow it with `controller status`", accepted.tag);
            Ok(())
        }
        Command::Abort { api, token } => {
            let token = cli::read_token(&token.token_file)?;
            let accepted = cli::Client::new(&api.url).decide(&token, false).await?;
            println!("aborting the rollout of {}", accepted.tag);
            Ok(())
        }
        Command::Rollback { api, token } => {
            let token = cli::read_token(&token.token_file)?;
            let accepted = cli::Client::new(&api.url).rollback(&token).await?;
            println!("rolling back to {} ({})", accepted.tag, accepted.manifest);
            Ok(())
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

async fn run(args: RunArgs) -> Result<()> {
    init_tracing();
    let manifest = absolute(&args.manifest);
    std::fs::create_dir_all(&args.state_dir).with_context(|| {
        format!("cannot create the state directory {}", args.state_dir.display())
    })?;
    let token = store::token(&args.state_dir.join("token"))
        .context("cannot read or create the API token")?;
    controller::crash::arm(&args.state_dir);
    let engine = Engine::connect().await.context("cannot use the Docker Engine")?;
    // The one place that names a backend: the rest is generic over it.
    match args.platform {
        PlatformKind::Compose => {
            let platform = Compose::new(engine, args.upstream_dir.clone(), args.proxy_url.clone());
            run_on(args, platform, manifest, token).await
        }
        PlatformKind::Swarm => {
            let config = swarm::Config {
                stack: args.swarm_stack.clone(),
                network: args.swarm_network.clone(),
                upstream_dir: args.upstream_dir.clone(),
                front: args.proxy_url.clone(),
            };
            let platform = Swarm::new(engine, config)
                .await
                .context("cannot use Docker Swarm (is this Engine a swarm manager?)")?;
            run_on(args, platform, manifest, token).await
        }
    }
}

/// The controller on a backend: the loop, the API and the tasks beside
/// them, the same for every backend.
async fn run_on<P: Platform + 'static>(
    args: RunArgs,
    platform: P,
    manifest: PathBuf,
    token: String,
) -> Result<()> {
    let peers = allowed_peers(&platform, args.listen).await?;

    let (triggers, trigger_rx) = mpsc::channel(64);
    let shared = Shared::new(manifest.clone(), triggers.clone(), token);
    let mut reconciler =
        Reconciler::new(platform, shared.clone(), Store::new(&args.state_dir), args.resync)?;
    if let Some(url) = args.prometheus_url.clone() {
        reconciler = reconciler.prometheus(url);
    }
    // An empty value (compose passes one for an unset variable) is none.
    if let Some(url) = args.webhook.clone().filter(|u| !u.trim().is_empty()) {
        info!(%url, format = ?args.webhook_format, "rollout events go to a webhook");
        reconciler = reconciler.notify(Notifier::webhook(url, args.webhook_format, shared.clone()));
    }
    if let Some(path) = args.scrape_targets_file.clone() {
        info!(path = %path.display(), "scrape targets for Prometheus go to a file");
        reconciler = reconciler.scrape_targets(ScrapeTargets::new(path));
    }
    let _watcher = watch::manifest(&manifest, triggers)
        .with_context(|| format!("cannot watch the directory of {}", manifest.display()))?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut server_stop = stopped.clone();
    let limits = Limits {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections as usize,
        ..Limits::default()
    };
    let server = tokio::spawn(api::serve(listener, shared, limits, peers, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("stopping after the step under way");
        let _ = stop.send(true);
    });
    info!(
        listen = %args.listen,
        manifest = %manifest.display(),
        upstream = %args.upstream_dir.display(),
        proxy = %args.proxy_url,
        platform = ?args.platform,
        "controller running"
    );
    reconciler.run(trigger_rx, stopped).await;
    server.await.context("the API server panicked")?;
    info!("controller stopped");
    Ok(())
}

/// Who may use the API. A loopback listener is out of every container's
/// reach; on any other address the app network's ranges are refused, and
/// the controller does not start without knowing them (fail closed).
async fn allowed_peers<P: Workloads>(platform: &P, listen: SocketAddr) -> Result<Peers> {
    if listen.ip().is_loopback() {
        return Ok(Peers::anyone());
    }
    let reported = platform.app_network().await.context(
        "cannot read the app network's address ranges, which the API must refuse; \
         listen on a loopback address to run without them",
    )?;
    let ranges = reported
        .iter()
        .map(|r| Range::parse(&r.subnet, r.gateway.as_deref()))
        .collect::<Result<Vec<_>, _>>()
        .context("the platform reported an address range that cannot be read")?;
    let named: Vec<String> =
        ranges.iter().map(|r| format!("{} (gateway {})", r.subnet, r.gateway)).collect();
    info!(refused = %named.join(", "), "the API refuses the app network but its gateway");
    Ok(Peers::refusing(ranges))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without handlers the default action (exit) still applies.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
