//! The platform, split by role: [`Workloads`] runs the colors' replicas
//! and says where they answer, [`Router`] sends traffic to a color and
//! reads back what it does. The loop and the gates speak only these
//! interfaces, in the neutral words of `controller_core::observed`; a
//! backend is one implementation of both (`compose`: Docker containers
//! and nginx; `swarm`: Swarm services and tasks on an overlay network,
//! behind nginx; the tests' in-memory world is another). What both Docker
//! backends share is beside them: the Engine ([`docker`]) and nginx's
//! side of a switch ([`nginx`]).
//!
//! Capabilities a backend may lack (a preview entry point, servers held
//! in reserve) are optional: [`Router::capabilities`] says which it has,
//! and the core decides without them.

pub mod compose;
pub mod docker;
pub mod nginx;
pub mod swarm;

use std::future::Future;
use std::pin::Pin;

use bluegreen::Color;
pub use controller_core::manifest::Resources;
use controller_core::observed::{Capabilities, Observed, Replica, Traffic};
use tokio::sync::mpsc;

/// Why the platform did not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlatformError {
    /// The backend could not be reached or failed on its side: worth
    /// trying again.
    #[error("{backend}: {message}")]
    Unavailable { backend: &'static str, message: String },
    /// The image cannot be had.
    #[error("cannot pull {image}: {message}")]
    Image { image: String, message: String },
    /// The router refused the new configuration and kept the old one:
    /// traffic did not move.
    #[error("the router refused the change: {0}")]
    Refused(String),
    /// The backend has no such capability.
    #[error("this platform cannot {0}")]
    Unsupported(&'static str),
}

impl PlatformError {
    /// The label /metrics counts this kind of error under.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PlatformError::Unavailable { backend, .. } => backend,
            PlatformError::Image { .. } => "pull",
            PlatformError::Refused(_) => "router_refused",
            PlatformError::Unsupported(_) => "unsupported",
        }
    }
}

pub type Result<T, E = PlatformError> = std::result::Result<T, E>;

/// What a color's replicas run: one owned value, so what a start needs
/// can grow without every backend's signature changing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// `repository:tag`.
    pub image: String,
    pub tag: String,
    pub replicas: u32,
    /// The limits each replica runs under.
    pub resources: Resources,
    /// The digest to run (`sha256:…`), where the registry named one: the
    /// replicas run exactly it, whatever the tag names by then.
    pub digest: Option<String>,
}

impl Spec {
    /// The repository, without the tag.
    pub fn repository(&self) -> &str {
        self.image.strip_suffix(&format!(":{}", self.tag)).unwrap_or(&self.image)
    }
}

/// An address range of the network the replicas share, as the backend
/// reports it (unparsed: the API, which refuses it, reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRange {
    /// `172.18.0.0/16`.
    pub subnet: String,
    /// The host's own address in it, where the backend names one.
    pub gateway: Option<String>,
}

/// Runs the replicas of each color.
pub trait Workloads: Send + Sync {
    /// Every replica of both colors, read now. `started_at` is filled in
    /// where the backend knows it.
    fn replicas(&self) -> impl Future<Output = Result<Vec<Replica>>> + Send;
    /// Pulls the image and runs `spec.replicas` replicas of `color` on it
    /// (idempotent: what already runs the tag is kept, under the limits
    /// it was created with).
    fn start(&self, color: Color, spec: Spec) -> impl Future<Output = Result<()>> + Send;
    /// Removes every replica of `color`; `graceful` lets them finish the
    /// requests they hold.
    fn remove(&self, color: Color, graceful: bool) -> impl Future<Output = Result<()>> + Send;
    /// The base URLs (`http://host:port`) at which the controller reaches
    /// each running replica of `color` directly, in replica order.
    fn endpoints(&self, color: Color) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Sends a hint on `hints` whenever a replica may have changed (a
    /// health change, a death); runs until the process ends, reconnecting
    /// by itself. Hints only: the periodic resync catches what is missed.
    fn events(&self, hints: mpsc::Sender<String>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
    /// The digest (`sha256:…`) `image` (`repository:tag`) names in its
    /// registry now, asked of the registry, not of what was pulled.
    fn resolve(&self, image: &str) -> impl Future<Output = Result<String>> + Send {
        let _ = image;
        async { Err(PlatformError::Unsupported("resolve a tag to a digest")) }
    }
    /// The address ranges of the network the replicas are on, read once
    /// at start, so the controller's API can refuse connections from
    /// them: a replica runs whatever image it was given.
    fn app_network(&self) -> impl Future<Output = Result<Vec<AppRange>>> + Send {
        async { Err(PlatformError::Unsupported("name the app network's addresses")) }
    }
}

/// Sends traffic to a color.
pub trait Router: Send + Sync {
    fn capabilities(&self) -> Capabilities;
    /// What the router does now. `replicas` (as just observed) lets a
    /// router that resolves replicas when it loads its configuration say
    /// that it must be refreshed.
    fn read(&self, replicas: &[Replica]) -> impl Future<Output = Traffic> + Send;
    /// Sends traffic to `to` (`None`: to no color), `fallback` taking what
    /// `to` refuses where the router can hold servers in reserve. Safe to
    /// repeat: it always (re)loads.
    fn route(
        &self,
        to: Option<Color>,
        replicas: u32,
        fallback: Option<(Color, u32)>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Shows `to` on the preview entry point (`None`: nothing).
    fn preview(&self, to: Option<(Color, u32)>) -> impl Future<Output = Result<()>> + Send {
        let _ = to;
        async { Err(PlatformError::Unsupported("preview a color")) }
    }
    /// Brings back the parts of the traffic tier that `read` said are down.
    fn heal(&self) -> impl Future<Output = Result<()>> + Send {
        async { Err(PlatformError::Unsupported("bring the traffic tier back")) }
    }
    /// The front's base URL as the controller reaches it: what users reach.
    fn front(&self) -> &str;
    /// A canary: `weight` percent (1 to 99) of live traffic to
    /// `canary`'s replicas by a sticky key, the rest to `stable`'s. Safe
    /// to repeat: it always (re)loads.
    fn split(
        &self,
        stable: (Color, u32),
        canary: (Color, u32),
        weight: u8,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (stable, canary, weight);
        async { Err(PlatformError::Unsupported("split traffic between two colors")) }
    }
    /// Copies live predictions to `to`'s replicas, their answers dropped
    /// (`None`: to nobody). Safe to repeat.
    fn mirror(&self, to: Option<(Color, u32)>) -> impl Future<Output = Result<()>> + Send {
        let _ = to;
        async { Err(PlatformError::Unsupported("mirror traffic to a color")) }
    }
}

/// A backend: both roles.
pub trait Platform: Workloads + Router {}

impl<P: Workloads + Router> Platform for P {}

/// The world, read now.
pub async fn observe<P: Platform>(platform: &P) -> Result<Observed> {
    let replicas = platform.replicas().await?;
    let traffic = platform.read(&replicas).await;
    Ok(Observed { replicas, traffic, front: None, resolved: None })
}
