//! The app containers and the nginx container, through the Docker Engine
//! API (bollard). Only IO: what to do is decided elsewhere. Errors leave
//! as the platform's neutral kinds. The connection, its deadlines, pulls
//! and exec are the shared [`Engine`]'s (`platform::docker`).
//!
//! Containers are found by label, never by remembered IDs. Idempotent
//! outcomes (304 already started/stopped, 404 already gone, 409 already
//! being removed) count as success.

use std::collections::HashMap;

use bluegreen::{Color, label};
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, EndpointSettings, EventMessage, HostConfig,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use futures_util::{Stream, TryStreamExt};

use controller_core::clock::Timestamp;
use controller_core::observed::{Replica, State};

use crate::platform::docker::{CALL, STOP_GRACE, health_of, is_status, within};
pub use crate::platform::docker::{Engine, reference_of};
use crate::platform::{PlatformError, Resources, Result, Spec};

/// Docker's word for a container's state, in the platform's.
fn state(s: Option<ContainerStateStatusEnum>) -> State {
    match s {
        Some(ContainerStateStatusEnum::RUNNING) => State::Running,
        Some(ContainerStateStatusEnum::RESTARTING) => State::Restarting,
        Some(ContainerStateStatusEnum::PAUSED) => State::Paused,
        Some(ContainerStateStatusEnum::EXITED) => State::Exited,
        Some(ContainerStateStatusEnum::DEAD) => State::Dead,
        Some(ContainerStateStatusEnum::REMOVING) => State::Removing,
        _ => State::Created,
    }
}

fn project_filter(extra: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{}={}", label::PROJECT, bluegreen::PROJECT)];
    labels.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
    HashMap::from([("label".to_owned(), labels)])
}

impl Engine {
    /// Every app container of the project, with its Docker health.
    pub async fn app_containers(&self) -> Result<Vec<Replica>> {
        within("listing the app containers", CALL, self.list_app_containers()).await
    }

    async fn list_app_containers(&self) -> Result<Vec<Replica>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(project_filter(&[(label::ROLE, label::ROLE_APP)])),
            ..Default::default()
        };
        let mut found = Vec::new();
        for summary in self.docker.list_containers(Some(options)).await? {
            let Some(id) = summary.id else { continue };
            let labels = summary.labels.unwrap_or_default();
            let Some(color) = labels.get(label::COLOR).and_then(|c| c.parse::<Color>().ok()) else {
                continue;
            };
            let inspect =
                match self.docker.inspect_container(&id, None::<InspectContainerOptions>).await {
                    Ok(i) => i,
                    // Removed between the list and the inspect.
                    Err(e) if is_status(&e, &[404]) => continue,
                    Err(e) => return Err(e.into()),
                };
            let state = inspect.state.unwrap_or_default();
            let health = health_of(&state);
            let started_at = state.started_at.as_deref().and_then(Timestamp::parse);
            let status = self::state(state.status);
            let running = status == State::Running;
            found.push(Replica {
                name: inspect.name.unwrap_or_default().trim_start_matches('/').to_owned(),
                id,
                color,
                replica: labels.get(label::NUMBER).and_then(|n| n.parse().ok()).unwrap_or(1),
                tag: labels.get(label::TAG).cloned().unwrap_or_default(),
                image: labels.get(label::IMAGE).cloned(),
                digest: labels.get(label::DIGEST).cloned(),
                exit_code: if running { None } else { state.exit_code },
                state: status,
                health,
                started_at,
            });
        }
        Ok(found)
    }

    /// Creates (if missing) and starts replica `replica` of `color`
    /// running `spec.image`; a container of that name running another tag
    /// is replaced.
    pub async fn start_replica(&self, color: Color, replica: u32, spec: &Spec) -> Result<()> {
        let what = format!("starting {}", bluegreen::container_name(color, replica));
        within(&what, CALL, self.start_one(color, replica, spec)).await
    }

    async fn start_one(&self, color: Color, replica: u32, spec: &Spec) -> Result<()> {
        let name = bluegreen::container_name(color, replica);
        match self.docker.inspect_container(&name, None::<InspectContainerOptions>).await {
            Ok(existing) => {
                let labels = existing.config.and_then(|c| c.labels).unwrap_or_default();
                let other_digest = match (labels.get(label::DIGEST), &spec.digest) {
                    (Some(have), Some(want)) => have != want,
                    _ => false,
                };
                if labels.get(label::TAG) != Some(&spec.tag) || other_digest {
                    self.remove(&name, false).await?;
                    self.create(color, replica, spec).await?;
                }
            }
            Err(e) if is_status(&e, &[404]) => self.create(color, replica, spec).await?,
            Err(e) => return Err(e.into()),
        }
        match self.docker.start_container(&name, None).await {
            Err(e) if !is_status(&e, &[304]) => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn create(&self, color: Color, replica: u32, spec: &Spec) -> Result<()> {
        let name = bluegreen::container_name(color, replica);
        let tag = spec.tag.as_str();
        let labels = HashMap::from([
            (label::PROJECT.to_owned(), bluegreen::PROJECT.to_owned()),
            (label::SERVICE.to_owned(), color.service().to_owned()),
            (label::NUMBER.to_owned(), replica.to_string()),
            (label::ONEOFF.to_owned(), "False".to_owned()),
            (label::ROLE.to_owned(), label::ROLE_APP.to_owned()),
            (label::COLOR.to_owned(), color.as_str().to_owned()),
            (label::TAG.to_owned(), tag.to_owned()),
            (label::IMAGE.to_owned(), spec.repository().to_owned()),
        ]);
        let mut labels = labels;
        // The image by digest where known: exactly the release, whatever
        // the tag names by now.
        let image = match &spec.digest {
            Some(digest) => {
                labels.insert(label::DIGEST.to_owned(), digest.clone());
                reference_of(spec.repository(), digest)
            }
            None => spec.image.clone(),
        };
        // The first replica is published on loopback, so an operator can
        // reach a color without nginx.
        let port_bindings = (replica == 1).then(|| {
            HashMap::from([(
                format!("{}/tcp", bluegreen::APP_PORT),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(bluegreen::published_port(color).to_string()),
                }]),
            )])
        });
        let body = ContainerCreateBody {
            image: Some(image),
            env: Some(vec![format!("COLOR={color}"), format!("VERSION={tag}")]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                network_mode: Some(bluegreen::NETWORK.to_owned()),
                readonly_rootfs: Some(true),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                port_bindings,
                ..limits(&spec.resources)
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    bluegreen::NETWORK.to_owned(),
                    EndpointSettings {
                        aliases: Some(vec![color.service().to_owned(), name.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions { name: Some(name), ..Default::default() };
        self.docker.create_container(Some(options), body).await?;
        Ok(())
    }

    /// Removes a container; `graceful` first stops it with SIGTERM and a
    /// grace period, so it finishes the requests it holds.
    pub async fn remove(&self, id: &str, graceful: bool) -> Result<()> {
        let limit = if graceful { STOP_GRACE + CALL } else { CALL };
        within(&format!("removing {id}"), limit, self.remove_one(id, graceful)).await
    }

    async fn remove_one(&self, id: &str, graceful: bool) -> Result<()> {
        if graceful {
            let options =
                StopContainerOptions { t: Some(STOP_GRACE.as_secs() as i32), ..Default::default() };
            match self.docker.stop_container(id, Some(options)).await {
                Err(e) if !is_status(&e, &[304, 404]) => return Err(e.into()),
                _ => {}
            }
        }
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(id, Some(options)).await {
            Err(e) if !is_status(&e, &[404, 409]) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// A container's address on the stack's network and an environment
    /// variable of its configuration.
    pub async fn address_and_env(
        &self,
        container: &str,
        name: &str,
    ) -> Result<(Option<String>, Option<String>)> {
        let inspect = within(&format!("inspecting {container}"), CALL, async {
            Ok(self.docker.inspect_container(container, None::<InspectContainerOptions>).await?)
        })
        .await?;
        let address = inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(bluegreen::NETWORK))
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty());
        let prefix = format!("{name}=");
        let env = inspect.config.and_then(|c| c.env).and_then(|env| {
            env.into_iter().find_map(|e| e.strip_prefix(&prefix).map(str::to_owned))
        });
        Ok((address, env))
    }

    /// The traffic tier's containers (the router and the edge) that are
    /// down for good — exited, dead or never started — by name and id.
    pub async fn tier_down(&self) -> Result<Vec<(String, String)>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(project_filter(&[])),
            ..Default::default()
        };
        let list = within("listing the traffic tier", CALL, async {
            Ok(self.docker.list_containers(Some(options)).await?)
        })
        .await?;
        let tier = [bluegreen::NGINX_SERVICE, bluegreen::EDGE_SERVICE];
        Ok(list
            .into_iter()
            .filter(|c| {
                let service = c.labels.as_ref().and_then(|l| l.get(label::SERVICE));
                service.is_some_and(|s| tier.contains(&s.as_str()))
            })
            .filter(|c| {
                let state = c.state.as_ref().map(|s| s.to_string()).unwrap_or_default();
                matches!(state.as_str(), "exited" | "dead" | "created")
            })
            .filter_map(|c| {
                let name = c.names.and_then(|n| n.into_iter().next()).unwrap_or_default();
                Some((name.trim_start_matches('/').to_owned(), c.id?))
            })
            .collect())
    }

    /// Starts a container that is down (304, already started, is success).
    pub async fn start_container(&self, id: &str) -> Result<()> {
        within(&format!("starting {id}"), CALL, async {
            match self.docker.start_container(id, None).await {
                Err(e) if !is_status(&e, &[304]) => Err(e.into()),
                _ => Ok(()),
            }
        })
        .await
    }

    /// The running nginx container of the project.
    pub async fn nginx(&self) -> Result<String> {
        let options = ListContainersOptions {
            filters: Some(project_filter(&[(label::SERVICE, bluegreen::NGINX_SERVICE)])),
            ..Default::default()
        };
        let list = within("finding nginx", CALL, async {
            Ok(self.docker.list_containers(Some(options)).await?)
        })
        .await?;
        list.into_iter().find_map(|c| c.id).ok_or_else(|| PlatformError::Unavailable {
            backend: "nginx",
            message: format!("no running nginx container of project {}", bluegreen::PROJECT),
        })
    }

    /// The project's container events (health_status, die, destroy,
    /// start), from `since` (Unix seconds) on. The stream ends when the
    /// daemon restarts: the caller reconnects and resyncs.
    pub fn events(&self, since: Option<i64>) -> impl Stream<Item = Result<EventMessage>> + use<> {
        let mut filters = project_filter(&[]);
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert(
            "event".into(),
            ["health_status", "die", "destroy", "start"].map(String::from).to_vec(),
        );
        let options = EventsOptions {
            since: since.map(|s| s.to_string()),
            until: None,
            filters: Some(filters),
        };
        self.docker.events(Some(options)).map_err(PlatformError::from)
    }
}

/// The engine's limits for an app container: memory with no swap on top
/// (`memory_swap` equal to `memory`), processes, and the CPU quota if
/// any. Values past `i64` cannot come from a validated manifest; they
/// saturate rather than wrap.
fn limits(r: &Resources) -> HostConfig {
    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let memory = signed(r.memory_bytes);
    HostConfig {
        memory: Some(memory),
        memory_swap: Some(memory),
        pids_limit: Some(i64::from(r.pids)),
        nano_cpus: r.nano_cpus.map(signed),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_carry_the_manifests_resources() {
        let r = Resources { memory_bytes: 256 << 20, pids: 64, nano_cpus: Some(500_000_000) };
        let h = limits(&r);
        assert_eq!((h.memory, h.memory_swap), (Some(256 << 20), Some(256 << 20)));
        assert_eq!((h.pids_limit, h.nano_cpus), (Some(64), Some(500_000_000)));
        let h = limits(&Resources::default());
        assert_eq!((h.pids_limit, h.nano_cpus), (Some(256), None));
    }
}
