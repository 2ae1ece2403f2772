//! The compose backend: the colors' replicas are Docker containers with
//! compose's labels on the stack's network ([`docker`]), and the router is
//! nginx, whose upstream.conf names the live color (`platform::nginx`).

pub mod docker;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use bluegreen::{Color, Upstream};
use controller_core::observed::{Capabilities, Replica, Traffic};
use tokio::sync::mpsc;
use tracing::warn;

use self::docker::Engine;
use super::docker::forward_events;
use super::nginx::{Instances, Nginx};
use super::{AppRange, PlatformError, Result, Router, Spec, Workloads};

pub struct Compose {
    engine: Engine,
    nginx: Nginx<OneNginx>,
    /// nginx's URL as the controller reaches it.
    front: String,
}

impl Compose {
    pub fn new(engine: Engine, upstream_dir: PathBuf, front: String) -> Compose {
        let nginx = Nginx::new(engine.clone(), OneNginx(engine.clone()), upstream_dir);
        Compose { engine, nginx, front }
    }
}

impl Compose {
    /// The running replicas of a color, by number, at most `count` (at
    /// least 1): nginx refuses a whole file for one name it cannot
    /// resolve, and Docker names only running containers, so a replica
    /// that is down is left out rather than let it block the change.
    async fn running(&self) -> Result<impl Fn(Color, u32) -> Vec<u32> + use<>> {
        let containers = self.engine.app_containers().await?;
        Ok(move |color: Color, count: u32| -> Vec<u32> {
            let mut numbers: Vec<u32> = containers
                .iter()
                .filter(|c| c.color == color && c.is_running() && c.replica <= count.max(1))
                .map(|c| c.replica)
                .collect();
            numbers.sort_unstable();
            numbers
        })
    }
}

/// The stack's one nginx container that routes, found by its compose
/// labels at each change.
#[derive(Clone)]
pub struct OneNginx(Engine);

impl Instances for OneNginx {
    async fn containers(&self) -> Result<Vec<String>> {
        Ok(vec![self.0.nginx().await?])
    }
}

impl Workloads for Compose {
    async fn replicas(&self) -> Result<Vec<Replica>> {
        self.engine.app_containers().await
    }

    async fn start(&self, color: Color, mut spec: Spec) -> Result<()> {
        let repository = spec.repository().to_owned();
        let reference = spec.digest.clone().unwrap_or_else(|| spec.tag.clone());
        let image = docker::reference_of(&repository, &reference);
        if let Err(e) = self.engine.pull(&repository, &reference).await {
            // A replica put back needs no registry when the image is here.
            if !self.engine.has_image(&image).await {
                return Err(e);
            }
            warn!(%image, error = %e, "cannot pull; starting the image this engine has");
        }
        // Pulled by tag (the registry could not say what it names): the
        // digest of what was pulled.
        if spec.digest.is_none() {
            spec.digest = self.engine.local_digest(&repository, &spec.tag).await;
        }
        for container in self.engine.app_containers().await? {
            // Replicas beyond the count go, letting them finish what they
            // hold: the router no longer names them.
            if container.color == color && container.replica > spec.replicas {
                self.engine.remove(&container.id, true).await?;
            }
        }
        for replica in 1..=spec.replicas {
            self.engine.start_replica(color, replica, &spec).await?;
        }
        Ok(())
    }

    async fn remove(&self, color: Color, graceful: bool) -> Result<()> {
        let of: Vec<_> =
            self.engine.app_containers().await?.into_iter().filter(|c| c.color == color).collect();
        let removals = of.iter().map(|c| self.engine.remove(&c.id, graceful));
        for result in futures_util::future::join_all(removals).await {
            result?;
        }
        Ok(())
    }

    async fn endpoints(&self, color: Color) -> Result<Vec<String>> {
        let mut of: Vec<Replica> = self
            .engine
            .app_containers()
            .await?
            .into_iter()
            .filter(|c| c.color == color && c.is_running())
            .collect();
        of.sort_by_key(|c| c.replica);
        let mut urls = Vec::with_capacity(of.len());
        for c in of {
            // The port the container itself listens on: what nginx proxies
            // to is the probe's business, not the model's.
            let (address, port) = self.engine.address_and_env(&c.id, "PORT").await?;
            let port = port.and_then(|p| p.parse::<u16>().ok()).unwrap_or(bluegreen::APP_PORT);
            if let Some(address) = address {
                urls.push(format!("http://{address}:{port}"));
            }
        }
        Ok(urls)
    }

    async fn resolve(&self, image: &str) -> Result<String> {
        self.engine.resolve(image).await
    }

    async fn app_network(&self) -> Result<Vec<AppRange>> {
        self.engine.network_ranges(bluegreen::NETWORK).await
    }

    fn events(&self, hints: mpsc::Sender<String>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let engine = self.engine.clone();
        Box::pin(forward_events(move |since| engine.events(since), hints))
    }
}

impl Router for Compose {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn read(&self, replicas: &[Replica]) -> Traffic {
        let read = self.nginx.read_back().await;
        // nginx resolves container names when it loads its configuration:
        // a live container Docker restarted since has a new address.
        let loaded_at = self.nginx.loaded_at().await;
        let stale = match (read.live(), loaded_at) {
            (Some(color), Some(loaded)) => replicas.iter().any(|c| {
                c.color == color && c.is_running() && c.started_at.is_some_and(|s| s > loaded)
            }),
            _ => false,
        };
        let down = self.engine.tier_down().await.map(|d| d.into_iter().map(|(n, _)| n).collect());
        self.nginx.traffic(read, stale, down, self.capabilities()).await
    }

    async fn route(
        &self,
        to: Option<Color>,
        replicas: u32,
        fallback: Option<(Color, u32)>,
    ) -> Result<()> {
        let running = self.running().await?;
        let live = to.map(|c| running(c, replicas)).unwrap_or_default();
        let backup = fallback.map(|(c, n)| (c, running(c, n)));
        self.nginx.switch(to, &live, backup.as_ref().map(|(c, n)| (*c, &n[..]))).await
    }

    async fn preview(&self, to: Option<(Color, u32)>) -> Result<()> {
        self.nginx.show_preview(to).await
    }

    async fn split(&self, stable: (Color, u32), canary: (Color, u32), weight: u8) -> Result<()> {
        let running = self.running().await?;
        let (s, c) = (running(stable.0, stable.1), running(canary.0, canary.1));
        let text = Upstream::render_split((stable.0, &s), (canary.0, &c), weight)
            .map_err(|e| PlatformError::Refused(e.to_string()))?;
        self.nginx.set_upstream(&text).await
    }

    async fn mirror(&self, to: Option<(Color, u32)>) -> Result<()> {
        let text = match to {
            Some((color, n)) => {
                let numbers = self.running().await?(color, n);
                Upstream::render_mirror(Some((color, &numbers)))
            }
            None => Upstream::render_mirror(None),
        };
        self.nginx.set_mirror(&text).await
    }

    async fn heal(&self) -> Result<()> {
        for (name, id) in self.engine.tier_down().await? {
            warn!(container = %name, "the traffic tier is down; starting it again");
            self.engine.start_container(&id).await?;
        }
        Ok(())
    }

    fn front(&self) -> &str {
        &self.front
    }
}
