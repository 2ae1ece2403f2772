//! Swarm's services, tasks and nodes through the local Engine (bollard),
//! which must be a manager. Only IO, every call under the shared
//! Engine's deadline; what to do is decided elsewhere. Idempotent
//! outcomes (404 already gone) count as success.

use std::collections::HashMap;

use bollard::models::{EventMessage, Service, ServiceSpec, Task};
use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, InspectNetworkOptions, InspectServiceOptions,
    ListContainersOptions, ListServicesOptions, ListTasksOptions, UpdateServiceOptions,
};
use controller_core::clock::Timestamp;
use futures_util::{Stream, TryStreamExt};

use super::spec::Local;
use crate::platform::docker::{CALL, Engine, health_of, is_status, within};
use crate::platform::{PlatformError, Result};

/// A task's container as this node's Engine sees it.
#[derive(Debug, Clone)]
pub struct Container {
    pub local: Local,
    /// Its address on the overlay network.
    pub address: Option<String>,
    /// Its `PORT`, where its configuration sets one.
    pub port: Option<u16>,
}

#[derive(Clone)]
pub struct Services {
    engine: Engine,
}

fn unavailable(message: String) -> PlatformError {
    PlatformError::Unavailable { backend: "swarm", message }
}

impl Services {
    pub fn new(engine: Engine) -> Services {
        Services { engine }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// This node's id, when it is a manager of an active swarm; an error
    /// otherwise (the backend cannot run services from a worker).
    pub async fn manager_node(&self) -> Result<String> {
        let info = within("reading the Engine's swarm state", CALL, async {
            Ok(self.engine.docker.info().await?)
        })
        .await?;
        let swarm = info.swarm.unwrap_or_default();
        match (swarm.node_id.filter(|n| !n.is_empty()), swarm.control_available) {
            (Some(node), Some(true)) => Ok(node),
            (Some(_), _) => Err(unavailable("this Engine is a swarm worker, not a manager".into())),
            _ => Err(unavailable(
                "this Engine is in no swarm (`docker swarm init` makes it a manager)".into(),
            )),
        }
    }

    /// A service by name; `None` when there is none.
    pub async fn service(&self, name: &str) -> Result<Option<Service>> {
        within(&format!("inspecting the service {name}"), CALL, async {
            let options = InspectServiceOptions { insert_defaults: false };
            match self.engine.docker.inspect_service(name, Some(options)).await {
                Ok(s) => Ok(Some(s)),
                Err(e) if is_status(&e, &[404]) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Every service whose name starts with `prefix` (Swarm's name filter
    /// matches prefixes).
    pub async fn services(&self, prefix: &str) -> Result<Vec<Service>> {
        within("listing the services", CALL, async {
            let filters = HashMap::from([("name".to_owned(), vec![prefix.to_owned()])]);
            let options = ListServicesOptions { filters: Some(filters), status: None };
            Ok(self.engine.docker.list_services(Some(options)).await?)
        })
        .await
    }

    pub async fn create(&self, spec: ServiceSpec) -> Result<()> {
        let name = spec.name.clone().unwrap_or_default();
        within(&format!("creating the service {name}"), CALL, async {
            self.engine.docker.create_service(spec, None).await?;
            Ok(())
        })
        .await
    }

    /// Replaces a service's spec; `version` is the one it was read at, so
    /// a change made meanwhile is refused (and retried) rather than lost.
    pub async fn update(&self, name: &str, version: u64, spec: ServiceSpec) -> Result<()> {
        let version = i32::try_from(version)
            .map_err(|_| unavailable(format!("the service {name} is at version {version}")))?;
        within(&format!("updating the service {name}"), CALL, async {
            let options = UpdateServiceOptions { version, ..Default::default() };
            self.engine.docker.update_service(name, spec, options, None).await?;
            Ok(())
        })
        .await
    }

    /// Removes a service (404, already gone, is success): Swarm stops its
    /// tasks with their stop grace period.
    pub async fn delete(&self, name: &str) -> Result<()> {
        within(&format!("removing the service {name}"), CALL, async {
            match self.engine.docker.delete_service(name).await {
                Err(e) if !is_status(&e, &[404]) => Err(e.into()),
                _ => Ok(()),
            }
        })
        .await
    }

    /// How many containers of a service this node still has, stopped
    /// ones included: a removed service's go a while after the removal.
    pub async fn local_containers(&self, service: &str) -> Result<usize> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("com.docker.swarm.service.name={service}")],
        )]);
        let options =
            ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        within(&format!("listing the containers of {service}"), CALL, async {
            Ok(self.engine.docker.list_containers(Some(options)).await?.len())
        })
        .await
    }

    /// Every task Swarm keeps of a service (its history included), by the
    /// service's id.
    pub async fn tasks(&self, service_id: &str) -> Result<Vec<Task>> {
        within("listing the tasks", CALL, async {
            let filters = HashMap::from([("service".to_owned(), vec![service_id.to_owned()])]);
            let options = ListTasksOptions { filters: Some(filters) };
            Ok(self.engine.docker.list_tasks(Some(options)).await?)
        })
        .await
    }

    /// A task's container on this node: its Docker health, when it last
    /// started, its address on `network` and its `PORT`. `None` when this
    /// Engine has no such container (it runs on another node, or is gone).
    pub async fn container(&self, id: &str, network: &str) -> Result<Option<Container>> {
        let inspect = within(&format!("inspecting {id}"), CALL, async {
            match self.engine.docker.inspect_container(id, None::<InspectContainerOptions>).await {
                Ok(i) => Ok(Some(i)),
                Err(e) if is_status(&e, &[404]) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        let Some(inspect) = inspect else { return Ok(None) };
        let state = inspect.state.unwrap_or_default();
        let health = health_of(&state);
        let started_at = state.started_at.as_deref().and_then(Timestamp::parse);
        let address = inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(network))
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty());
        let port = inspect.config.and_then(|c| c.env).and_then(|env| {
            env.iter().find_map(|e| e.strip_prefix("PORT=").and_then(|p| p.parse().ok()))
        });
        Ok(Some(Container { local: Local { health, started_at }, address, port }))
    }

    /// The overlay addresses of the tasks on `network` as this manager's
    /// view of the network knows them (`GET /networks/{id}?verbose=true`,
    /// its `Services`), by task id: how a task on another node is reached.
    /// Swarm adds a task there once it is healthy (its service binding).
    pub async fn task_addresses(&self, network: &str) -> Result<HashMap<String, String>> {
        let inspect = within(&format!("inspecting the network {network}"), CALL, async {
            let options = InspectNetworkOptions { verbose: true, scope: Some("swarm".into()) };
            Ok(self.engine.docker.inspect_network(network, Some(options)).await?)
        })
        .await?;
        let mut found = HashMap::new();
        for (_, service) in inspect.services.unwrap_or_default() {
            let tasks =
                service.get("Tasks").and_then(|t| t.as_array()).cloned().unwrap_or_default();
            for task in tasks {
                let name = task.get("Name").and_then(|n| n.as_str()).unwrap_or_default();
                let ip = task.get("EndpointIP").and_then(|n| n.as_str()).unwrap_or_default();
                // `<service>.<slot>.<task id>`.
                if let Some((_, id)) = name.rsplit_once('.')
                    && !ip.is_empty()
                {
                    found.insert(id.to_owned(), ip.to_owned());
                }
            }
        }
        Ok(found)
    }

    /// Swarm's and the stack's containers' events, from `since` (Unix
    /// seconds) on: services and nodes created, updated or removed, and
    /// the stack's containers started, dead, destroyed or changing health.
    /// Two streams in one (Docker's filters are an AND across kinds, and a
    /// service's event carries no labels). Either ends when the daemon
    /// restarts: the caller reconnects and resyncs.
    pub fn events(
        &self,
        stack: &str,
        since: Option<i64>,
    ) -> impl Stream<Item = Result<EventMessage>> + use<> {
        let since = since.map(|s| s.to_string());
        let swarm = HashMap::from([
            ("type".to_owned(), vec!["service".to_owned(), "node".to_owned()]),
            ("event".to_owned(), ["create", "update", "remove"].map(String::from).to_vec()),
        ]);
        let containers = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), vec![format!("{}={stack}", bluegreen::label::STACK)]),
            (
                "event".to_owned(),
                ["health_status", "die", "destroy", "start"].map(String::from).to_vec(),
            ),
        ]);
        let stream = |filters| {
            let options =
                EventsOptions { since: since.clone(), until: None, filters: Some(filters) };
            self.engine.docker.events(Some(options)).map_err(PlatformError::from)
        };
        futures_util::stream::select(stream(swarm), stream(containers))
    }
}
