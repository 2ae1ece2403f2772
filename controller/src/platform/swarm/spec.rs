//! The Swarm backend's pure mapping, no IO: a color's `ServiceSpec` from
//! the platform's [`Spec`], and Swarm's tasks back into the platform's
//! [`Replica`]s.
//!
//! ## Health
//!
//! A task's status carries no health (`ContainerStatus` is the container
//! id, pid and exit code only), so health is read in two ways:
//!
//! - a task whose container runs on this node (the manager the controller
//!   runs on; every task of a one-node swarm) is inspected on the local
//!   Engine: its Docker health, exactly as compose reports it;
//! - a task on another node relies on the Swarm executor's own gate
//!   (moby `daemon/cluster/executor/container/controller.go`, `Start`,
//!   since Docker 1.12): a container with a health check keeps its task
//!   in `starting` until its first `health_status: healthy`, and only then
//!   reports `running` (and adds it to the service's DNS); an `unhealthy`
//!   one is shut down and its task `failed`. So a remote `running` task
//!   counts as healthy, `starting` as starting. That holds for images with
//!   a HEALTHCHECK, which every image this controller deploys has (the
//!   service's runs `service healthcheck`); the spec leaves the check to
//!   the image.

use std::collections::HashMap;

use bluegreen::{Color, label};
use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, Limit, NetworkAttachmentConfig, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecPrivileges, TaskSpecPlacement,
    TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use controller_core::clock::Timestamp;
use controller_core::observed::{Health, Replica, State};

use crate::platform::docker::{STOP_GRACE, reference_of};
use crate::platform::{Resources, Spec};

/// The first Engine API whose services take `NoNewPrivileges` (Docker
/// 25) and `SwapBytes` (Docker 29); an older Engine ignores them, so they
/// are sent only to one that reads them.
const NO_NEW_PRIVILEGES_API: (u32, u32) = (1, 44);
const SWAP_BYTES_API: (u32, u32) = (1, 52);
/// How long Swarm waits before it starts a failed task again: a
/// crash-looping image does not spin.
const RESTART_DELAY_NS: i64 = 5_000_000_000;

/// What a color's service is named and attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The stack: `<stack>_app_blue` is blue's service.
    pub stack: String,
    /// The overlay network the colors and the router share.
    pub network: String,
}

impl Layout {
    pub fn service(&self, color: Color) -> String {
        bluegreen::swarm_service(&self.stack, color)
    }

    /// The color a service of this stack runs, if it is one.
    pub fn color_of(&self, service: &str) -> Option<Color> {
        Color::ALL.into_iter().find(|c| self.service(*c) == service)
    }
}

/// The image a color runs: `repository@digest` where a digest is known
/// (exactly the release, whatever the tag names by then), else the tag.
pub fn image_of(spec: &Spec) -> String {
    match &spec.digest {
        Some(digest) => reference_of(spec.repository(), digest),
        None => spec.image.clone(),
    }
}

/// The labels a color's service and its containers carry: the stack's,
/// and the role, color, tag, repository and digest compose's containers
/// carry.
pub fn labels(layout: &Layout, color: Color, spec: &Spec) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (label::STACK.to_owned(), layout.stack.clone()),
        (label::ROLE.to_owned(), label::ROLE_APP.to_owned()),
        (label::COLOR.to_owned(), color.as_str().to_owned()),
        (label::TAG.to_owned(), spec.tag.clone()),
        (label::IMAGE.to_owned(), spec.repository().to_owned()),
    ]);
    if let Some(digest) = &spec.digest {
        labels.insert(label::DIGEST.to_owned(), digest.clone());
    }
    labels
}

/// The Engine's limits for a task: memory, processes and the CPU quota
/// if any (values past `i64` saturate; a validated manifest has none).
/// No swap on top of the memory only where the Engine takes `SwapBytes`.
fn resources(r: &Resources, api: (u32, u32)) -> TaskSpecResources {
    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let memory = signed(r.memory_bytes);
    TaskSpecResources {
        limits: Some(Limit {
            memory_bytes: Some(memory),
            pids: Some(i64::from(r.pids)),
            nano_cpus: r.nano_cpus.map(signed),
        }),
        swap_bytes: (api >= SWAP_BYTES_API).then_some(0),
        ..Default::default()
    }
}

/// The service that runs `spec` as `color`: `spec.replicas` tasks of the
/// image, spread over the nodes, on the overlay network with DNS round
/// robin (no virtual IP: the ingress mesh and VIPs are not used, the
/// router names tasks by address), with the manifest's limits, a
/// read-only root and no capability, restarted by Swarm when they fail.
/// No port is published: the router reaches the tasks on the overlay.
pub fn service_spec(layout: &Layout, color: Color, spec: &Spec, api: (u32, u32)) -> ServiceSpec {
    let labels = labels(layout, color, spec);
    let container = TaskSpecContainerSpec {
        image: Some(image_of(spec)),
        labels: Some(labels.clone()),
        env: Some(vec![format!("COLOR={color}"), format!("VERSION={}", spec.tag)]),
        read_only: Some(true),
        capability_drop: Some(vec!["ALL".into()]),
        privileges: (api >= NO_NEW_PRIVILEGES_API).then(|| TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(true),
            ..Default::default()
        }),
        stop_grace_period: Some(i64::try_from(STOP_GRACE.as_nanos()).unwrap_or(i64::MAX)),
        // The health check is the image's.
        health_check: None,
        ..Default::default()
    };
    let network = NetworkAttachmentConfig {
        target: Some(layout.network.clone()),
        aliases: Some(vec![color.service().to_owned()]),
        ..Default::default()
    };
    ServiceSpec {
        name: Some(layout.service(color)),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(resources(&spec.resources, api)),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(RESTART_DELAY_NS),
                max_attempts: Some(0),
                window: Some(0),
            }),
            placement: Some(TaskSpecPlacement {
                preferences: Some(vec![TaskSpecPlacementPreferences {
                    spread: Some(TaskSpecPlacementSpread {
                        spread_descriptor: Some("node.id".into()),
                    }),
                }]),
                ..Default::default()
            }),
            networks: Some(vec![network]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::from(spec.replicas)),
            }),
            ..Default::default()
        }),
        // A replica replaced in place (same color, another spec) starts
        // before the old one stops, one at a time.
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec { mode: Some(EndpointSpecModeEnum::DNSRR), ports: None }),
        ..Default::default()
    }
}

/// What an existing service runs, to tell whether `start` must update it.
pub fn runs(existing: &ServiceSpec, wanted: &ServiceSpec) -> bool {
    let image = |s: &ServiceSpec| {
        s.task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
    };
    let replicas = |s: &ServiceSpec| {
        s.mode.as_ref().and_then(|m| m.replicated.as_ref()).and_then(|r| r.replicas)
    };
    let tag = |s: &ServiceSpec| s.labels.as_ref().and_then(|l| l.get(label::TAG).cloned());
    image(existing) == image(wanted)
        && replicas(existing) == replicas(wanted)
        && tag(existing) == tag(wanted)
}

/// Swarm's word for a task's state, in the platform's, with the health
/// that follows from the state alone (see the module's doc): `starting`
/// is a container that runs and has not passed its check yet, `running`
/// one that has; a task not yet started is `created`, one that ended is
/// `exited` (`dead` when Swarm refused or lost it).
pub fn task_state(state: Option<TaskState>) -> (State, Health) {
    match state {
        Some(TaskState::RUNNING) => (State::Running, Health::Healthy),
        Some(TaskState::STARTING) => (State::Running, Health::Starting),
        Some(TaskState::COMPLETE | TaskState::SHUTDOWN | TaskState::FAILED) => {
            (State::Exited, Health::None)
        }
        Some(TaskState::REJECTED | TaskState::ORPHANED) => (State::Dead, Health::None),
        Some(TaskState::REMOVE) => (State::Removing, Health::None),
        _ => (State::Created, Health::None),
    }
}

/// Whether Swarm still means to run a task: its desired state is at most
/// `running` (a replacement waiting out the restart delay is `ready`).
pub fn is_wanted(task: &Task) -> bool {
    matches!(
        task.desired_state,
        Some(
            TaskState::NEW
                | TaskState::PENDING
                | TaskState::ASSIGNED
                | TaskState::ACCEPTED
                | TaskState::PREPARING
                | TaskState::READY
                | TaskState::STARTING
                | TaskState::RUNNING
        )
    )
}

/// Each slot's current task: the newest one Swarm means to run, else the
/// newest of the slot (what became of it). Swarm keeps a few ended tasks
/// per slot as history; they are not replicas.
pub fn current(tasks: Vec<Task>) -> Vec<Task> {
    let mut by_slot: HashMap<i64, Task> = HashMap::new();
    for task in tasks {
        let Some(slot) = task.slot else { continue };
        let better = match by_slot.get(&slot) {
            None => true,
            Some(kept) => (is_wanted(&task), created(&task)) > (is_wanted(kept), created(kept)),
        };
        if better {
            by_slot.insert(slot, task);
        }
    }
    let mut current: Vec<Task> = by_slot.into_values().collect();
    current.sort_by_key(|t| t.slot);
    current
}

fn created(task: &Task) -> String {
    task.created_at.clone().unwrap_or_default()
}

/// What the local Engine says of a task's container, where it runs here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub health: Health,
    pub started_at: Option<Timestamp>,
}

/// A task of `color`'s service as a replica: its number is the task's
/// slot, its tag, repository and digest the labels of the spec it runs.
/// `local` is its container as this node's Engine sees it, if it runs
/// here: its health then is Docker's, not inferred from the state.
pub fn replica(service: &str, color: Color, task: &Task, local: Option<&Local>) -> Option<Replica> {
    let id = task.id.clone()?;
    let slot = u32::try_from(task.slot?).ok()?;
    let labels = task
        .spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let status = task.status.clone().unwrap_or_default();
    let (state, inferred) = task_state(status.state);
    let health = match local {
        Some(local) if state == State::Running => local.health,
        _ => inferred,
    };
    let exit_code = status.container_status.and_then(|c| c.exit_code);
    Some(Replica {
        id,
        name: format!("{service}.{slot}"),
        color,
        replica: slot,
        tag: labels.get(label::TAG).cloned().unwrap_or_default(),
        image: labels.get(label::IMAGE).cloned(),
        digest: labels.get(label::DIGEST).cloned(),
        exit_code: if state == State::Running { None } else { exit_code },
        state,
        health,
        started_at: local
            .and_then(|l| l.started_at)
            .or_else(|| status.timestamp.as_deref().and_then(Timestamp::parse)),
    })
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerStatus, TaskStatus};

    use super::*;

    fn layout() -> Layout {
        Layout { stack: "taxi-fare".into(), network: "taxi-fare_private".into() }
    }

    fn spec(digest: Option<&str>) -> Spec {
        Spec {
            image: "localhost:5000/taxi/service:abc".into(),
            tag: "abc".into(),
            replicas: 2,
            resources: Resources {
                memory_bytes: 256 << 20,
                pids: 64,
                nano_cpus: Some(500_000_000),
            },
            digest: digest.map(str::to_owned),
        }
    }

    #[test]
    fn a_colors_service_runs_the_digest_under_the_manifests_limits() {
        let s = service_spec(&layout(), Color::Green, &spec(Some("sha256:1234")), (1, 41));
        assert_eq!(s.name.as_deref(), Some("taxi-fare_app_green"));
        let task = s.task_template.clone().unwrap_or_default();
        let c = task.container_spec.clone().unwrap_or_default();
        assert_eq!(c.image.as_deref(), Some("localhost:5000/taxi/service@sha256:1234"));
        assert_eq!(c.env, Some(vec!["COLOR=green".to_owned(), "VERSION=abc".to_owned()]));
        assert_eq!((c.read_only, c.capability_drop), (Some(true), Some(vec!["ALL".to_owned()])));
        assert_eq!(c.health_check, None, "the image's own check");
        // Docker 20.10 ignores NoNewPrivileges and SwapBytes: not sent.
        assert_eq!(c.privileges, None);
        let labels = c.labels.unwrap_or_default();
        assert_eq!(labels.get(label::DIGEST).map(String::as_str), Some("sha256:1234"));
        assert_eq!(labels.get(label::COLOR).map(String::as_str), Some("green"));
        assert_eq!(labels.get(label::STACK).map(String::as_str), Some("taxi-fare"));
        assert_eq!(
            labels.get(label::IMAGE).map(String::as_str),
            Some("localhost:5000/taxi/service")
        );
        let limits = task.resources.clone().and_then(|r| r.limits).unwrap_or_default();
        assert_eq!(limits.memory_bytes, Some(256 << 20));
        assert_eq!((limits.pids, limits.nano_cpus), (Some(64), Some(500_000_000)));
        assert_eq!(task.resources.and_then(|r| r.swap_bytes), None);
        let mode = s.endpoint_spec.and_then(|e| e.mode);
        assert_eq!(mode, Some(EndpointSpecModeEnum::DNSRR));
        let replicas = s.mode.and_then(|m| m.replicated).and_then(|r| r.replicas);
        assert_eq!(replicas, Some(2));
        let network = task.networks.unwrap_or_default();
        assert_eq!(network[0].target.as_deref(), Some("taxi-fare_private"));
        let restart = task.restart_policy.and_then(|r| r.condition);
        assert_eq!(restart, Some(TaskSpecRestartPolicyConditionEnum::ANY));
        let spread = task.placement.and_then(|p| p.preferences).unwrap_or_default();
        assert_eq!(
            spread[0].spread.as_ref().and_then(|s| s.spread_descriptor.as_deref()),
            Some("node.id")
        );
    }

    #[test]
    fn a_newer_engine_gets_no_new_privileges_and_no_swap() {
        let s = service_spec(&layout(), Color::Blue, &spec(None), (1, 52));
        let task = s.task_template.unwrap_or_default();
        let c = task.container_spec.unwrap_or_default();
        assert_eq!(c.image.as_deref(), Some("localhost:5000/taxi/service:abc"));
        assert_eq!(c.privileges.and_then(|p| p.no_new_privileges), Some(true));
        assert_eq!(task.resources.and_then(|r| r.swap_bytes), Some(0));
        assert!(!c.labels.unwrap_or_default().contains_key(label::DIGEST));
    }

    #[test]
    fn a_service_that_runs_another_image_or_count_is_updated() {
        let l = layout();
        let want = service_spec(&l, Color::Blue, &spec(Some("sha256:1")), (1, 41));
        assert!(runs(&want, &want));
        assert!(!runs(&service_spec(&l, Color::Blue, &spec(Some("sha256:2")), (1, 41)), &want));
        let three = Spec { replicas: 3, ..spec(Some("sha256:1")) };
        assert!(!runs(&service_spec(&l, Color::Blue, &three, (1, 41)), &want));
    }

    fn task(slot: i64, state: TaskState, desired: TaskState, created: &str) -> Task {
        let spec = service_spec(&layout(), Color::Blue, &spec(Some("sha256:1")), (1, 41));
        Task {
            id: Some(format!("t{slot}{created}")),
            slot: Some(slot),
            created_at: Some(created.to_owned()),
            desired_state: Some(desired),
            spec: spec.task_template,
            status: Some(TaskStatus {
                state: Some(state),
                timestamp: Some("2026-01-01T00:00:00Z".into()),
                container_status: Some(ContainerStatus {
                    exit_code: Some(if state == TaskState::FAILED { 137 } else { 0 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn states_map_to_dockers_words_and_health_follows_swarms_gate() {
        use TaskState as T;
        let check = |s, want: (State, Health)| assert_eq!(task_state(Some(s)), want, "{s:?}");
        check(T::RUNNING, (State::Running, Health::Healthy));
        check(T::STARTING, (State::Running, Health::Starting));
        for s in [T::NEW, T::PENDING, T::ASSIGNED, T::ACCEPTED, T::PREPARING, T::READY] {
            check(s, (State::Created, Health::None));
        }
        check(T::FAILED, (State::Exited, Health::None));
        check(T::REJECTED, (State::Dead, Health::None));
    }

    #[test]
    fn a_slot_is_its_current_task() {
        use TaskState as T;
        let tasks = vec![
            task(1, T::FAILED, T::SHUTDOWN, "2026-01-01T00:00:01Z"),
            task(1, T::STARTING, T::RUNNING, "2026-01-01T00:00:02Z"),
            task(2, T::RUNNING, T::RUNNING, "2026-01-01T00:00:01Z"),
            task(3, T::SHUTDOWN, T::SHUTDOWN, "2026-01-01T00:00:01Z"),
            task(3, T::FAILED, T::SHUTDOWN, "2026-01-01T00:00:03Z"),
        ];
        let current = current(tasks);
        let states: Vec<_> =
            current.iter().map(|t| (t.slot, t.status.clone().and_then(|s| s.state))).collect();
        assert_eq!(
            states,
            [(Some(1), Some(T::STARTING)), (Some(2), Some(T::RUNNING)), (Some(3), Some(T::FAILED))]
        );
        let service = "taxi-fare_app_blue";
        let r: Vec<Replica> =
            current.iter().filter_map(|t| replica(service, Color::Blue, t, None)).collect();
        assert_eq!(r[0].name, "taxi-fare_app_blue.1");
        assert_eq!((r[0].state, r[0].health), (State::Running, Health::Starting));
        assert_eq!((r[1].replica, r[1].health, r[1].tag.as_str()), (2, Health::Healthy, "abc"));
        assert_eq!(r[1].digest.as_deref(), Some("sha256:1"));
        assert_eq!((r[2].state, r[2].exit_code), (State::Exited, Some(137)));
        // A task that runs here: Docker's own word on its health.
        let here = Local { health: Health::Unhealthy, started_at: None };
        let r = replica(service, Color::Blue, &current[1], Some(&here));
        assert_eq!(r.map(|r| r.health), Some(Health::Unhealthy));
        assert_eq!(layout().color_of("taxi-fare_app_green"), Some(Color::Green));
        assert_eq!(layout().color_of("taxi-fare_nginx"), None);
    }
}
