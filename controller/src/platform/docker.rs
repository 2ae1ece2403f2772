//! The Docker Engine as every Docker backend uses it (bollard): the
//! connection, the deadline every call runs under, pulls and the
//! registry's digest of a tag, networks' address ranges, and exec. The
//! compose backend adds containers by label (`compose::docker`), the
//! Swarm backend services, tasks and nodes (`swarm::services`). Only IO;
//! errors leave as the platform's neutral kinds.

use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{CreateImageOptions, InspectNetworkOptions};
use futures_util::{StreamExt, TryStreamExt};

use crate::platform::{AppRange, PlatformError, Result};

impl From<BollardError> for PlatformError {
    fn from(e: BollardError) -> PlatformError {
        PlatformError::Unavailable { backend: "docker", message: docker_message(&e) }
    }
}

/// The oldest Engine API the controller speaks (Docker 20.10).
const MIN_API: (u32, u32) = (1, 41);
/// How long a replaced color's containers get to finish their requests
/// after SIGTERM before they are killed.
pub(in crate::platform) const STOP_GRACE: Duration = Duration::from_secs(30);
/// The longest any one call to the Engine may take: none can freeze the
/// loop. A pull may take longer than the rest.
pub(in crate::platform) const CALL: Duration = Duration::from_secs(30);
pub(in crate::platform) const PULL: Duration = Duration::from_secs(600);
/// Asking the registry what a tag names: a registry that does not answer
/// in this time is down for this reconcile.
const RESOLVE: Duration = Duration::from_secs(5);
/// The most kept of a command's output in a container (nginx's word).
const MAX_EXEC_OUTPUT: usize = 64 << 10;

/// `call`, unless it takes longer than `limit`.
pub(in crate::platform) async fn within<T>(
    what: &str,
    limit: Duration,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(PlatformError::Unavailable {
            backend: "docker",
            message: format!("{what} did not finish within {}", humantime::format_duration(limit)),
        }),
    }
}

#[derive(Clone)]
pub struct Engine {
    pub(in crate::platform) docker: Docker,
    /// The Engine API version it speaks (`(1, 41)`): what a request may
    /// carry, since an older Engine ignores fields it does not know.
    api: (u32, u32),
}

pub(in crate::platform) fn is_status(e: &BollardError, codes: &[u16]) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code, .. } if codes.contains(status_code))
}

impl Engine {
    /// Connects to the local Engine (`DOCKER_HOST` or the default socket)
    /// and refuses an Engine older than API 1.41.
    pub async fn connect() -> Result<Engine> {
        let docker = Docker::connect_with_local_defaults()?;
        let version = docker.version().await?;
        let api = version.api_version.unwrap_or_default();
        let mut parts = api.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if found < MIN_API {
            return Err(PlatformError::Unavailable {
                backend: "docker",
                message: format!(
                    "the Engine API {api} is too old: {}.{} or later is needed",
                    MIN_API.0, MIN_API.1
                ),
            });
        }
        Ok(Engine { docker, api: found })
    }

    /// The Engine API version it speaks.
    pub fn api(&self) -> (u32, u32) {
        self.api
    }

    /// Pulls `repository` at `reference` (a tag, or `sha256:…`) from its
    /// registry.
    pub async fn pull(&self, repository: &str, reference: &str) -> Result<()> {
        let image = reference_of(repository, reference);
        within(&format!("pulling {image}"), PULL, self.pull_all(repository, reference)).await
    }

    async fn pull_all(&self, repository: &str, reference: &str) -> Result<()> {
        let options = CreateImageOptions {
            from_image: Some(repository.to_owned()),
            tag: Some(reference.to_owned()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            item.map_err(|e| pull_error(&reference_of(repository, reference), &e))?;
        }
        Ok(())
    }

    /// The digest `repository:tag` names in its registry now.
    pub async fn resolve(&self, image: &str) -> Result<String> {
        let asked = async {
            self.docker.inspect_registry_image(image, None).await.map_err(|e| pull_error(image, &e))
        };
        let found = within(&format!("resolving {image}"), RESOLVE, asked).await?;
        found.descriptor.digest.ok_or_else(|| PlatformError::Unavailable {
            backend: "registry",
            message: format!("the registry named no digest for {image}"),
        })
    }

    /// The digest this engine has for `repository` at `reference` (a tag
    /// or a digest), if it has the image and knows where it came from.
    pub async fn local_digest(&self, repository: &str, reference: &str) -> Option<String> {
        let image = reference_of(repository, reference);
        let found = tokio::time::timeout(CALL, self.docker.inspect_image(&image)).await;
        let Ok(Ok(inspect)) = found else { return None };
        let prefix = format!("{repository}@");
        inspect
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find_map(|d| d.strip_prefix(&prefix).map(str::to_owned))
    }

    /// Whether this engine holds `image` already.
    pub async fn has_image(&self, image: &str) -> bool {
        let found = tokio::time::timeout(CALL, self.docker.inspect_image(image)).await;
        matches!(found, Ok(Ok(_)))
    }

    /// The address ranges of a network and their gateways (the host's
    /// side of a bridge), as the engine reports them.
    pub async fn network_ranges(&self, network: &str) -> Result<Vec<AppRange>> {
        let inspect = within(&format!("inspecting the network {network}"), CALL, async {
            Ok(self.docker.inspect_network(network, None::<InspectNetworkOptions>).await?)
        })
        .await?;
        let ranges: Vec<AppRange> = inspect
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| {
                let subnet = c.subnet.filter(|s| !s.is_empty())?;
                Some(AppRange { subnet, gateway: c.gateway.filter(|g| !g.is_empty()) })
            })
            .collect();
        if ranges.is_empty() {
            return Err(PlatformError::Unavailable {
                backend: "docker",
                message: format!("the network {network} names no subnet"),
            });
        }
        Ok(ranges)
    }

    /// Runs a command in a container; returns its exit code and output.
    pub async fn exec(&self, container: &str, cmd: &[&str]) -> Result<(i64, String)> {
        within(&format!("`{}` in {container}", cmd.join(" ")), CALL, self.exec_once(container, cmd))
            .await
    }

    async fn exec_once(&self, container: &str, cmd: &[&str]) -> Result<(i64, String)> {
        let options = CreateExecOptions {
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self.docker.create_exec(container, options).await?;
        let mut text = String::new();
        if let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec.id, None).await?
        {
            while let Some(chunk) = output.try_next().await? {
                if text.len() < MAX_EXEC_OUTPUT {
                    text.push_str(&chunk.to_string());
                }
            }
            let mut end = text.len().min(MAX_EXEC_OUTPUT);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        let inspect = self.docker.inspect_exec(&exec.id).await?;
        Ok((inspect.exit_code.unwrap_or(-1), text.trim().to_owned()))
    }
}

/// `repository:tag`, or `repository@sha256:…` for a digest.
pub fn reference_of(repository: &str, reference: &str) -> String {
    if reference.starts_with("sha256:") {
        format!("{repository}@{reference}")
    } else {
        format!("{repository}:{reference}")
    }
}

/// A registry's answer that will not change by asking again (the tag or
/// repository does not exist, access is denied) is the image's fault; any
/// other failure (the registry down, a timeout, a 5xx) may pass.
fn pull_error(image: &str, e: &BollardError) -> PlatformError {
    let message = docker_message(e);
    if is_status(e, &[404]) || is_for_good(&message) {
        PlatformError::Image { image: image.to_owned(), message }
    } else {
        PlatformError::Unavailable { backend: "registry", message: format!("{image}: {message}") }
    }
}

/// Whether a message about an image says it cannot be had, whoever
/// reports it (a pull's answer, or a Swarm task refused for its image).
pub(in crate::platform) fn is_for_good(message: &str) -> bool {
    let lower = message.to_lowercase();
    [
        "not found",
        "manifest unknown",
        "does not exist",
        "denied",
        "unauthorized",
        "invalid reference",
        "no such image",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// The daemon's own message, without bollard's wrapping.
fn docker_message(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        BollardError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// Forwards an engine's event stream to `hints` as wake-ups, for as long as
/// the process runs: `open(since)` is asked again, from the last event's
/// time, whenever the stream fails or ends. Hints only: whatever is
/// missed in between is found by the reconcile the reconnection wakes.
pub async fn forward_events<S>(
    open: impl Fn(Option<i64>) -> S,
    hints: tokio::sync::mpsc::Sender<String>,
) where
    S: futures_util::Stream<Item = Result<bollard::models::EventMessage>>,
{
    let mut since: Option<i64> = None;
    loop {
        let mut events = std::pin::pin!(open(since));
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => {
                    since = e.time.or(since);
                    let what = e.action.unwrap_or_default();
                    tracing::debug!(event = %what, "docker event");
                    // A full channel already holds a wake-up.
                    let _ = hints.try_send(what);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the Docker event stream failed; reconnecting");
                    break;
                }
            }
        }
        let _ = hints.try_send("reconnect".into());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A container's Docker health, in the core's words.
pub fn health_of(state: &bollard::models::ContainerState) -> controller_core::observed::Health {
    use bollard::models::HealthStatusEnum;
    use controller_core::observed::Health;
    match state.health.as_ref().and_then(|h| h.status) {
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        _ => Health::None,
    }
}
