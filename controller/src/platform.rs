//! The narrow interface between the decisions and the world. Another
//! platform (a Kubernetes Service selector over two Deployments, say)
//! could implement it without touching [`crate::reconcile`].

use std::future::Future;
use std::path::PathBuf;

use bluegreen::Color;

use crate::docker::Engine;
use crate::error::Result;
use crate::manifest::Probe;
use crate::nginx::Nginx;
use crate::observed::Observed;
use crate::probe;

pub trait Platform: Send + Sync {
    /// The app containers and the live color, read now.
    fn observe(&self) -> impl Future<Output = Result<Observed>> + Send;
    /// Pulls the image and starts `replicas` containers of `color` on it
    /// (idempotent: what already runs the tag is kept).
    fn start_color(
        &self,
        color: Color,
        image: &str,
        tag: &str,
        replicas: u32,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Removes every container of `color`; `graceful` lets them finish
    /// the requests they hold.
    fn remove_color(&self, color: Color, graceful: bool)
    -> impl Future<Output = Result<()>> + Send;
    /// Sends traffic to `to` (`None`: to no color).
    fn switch_traffic(
        &self,
        to: Option<Color>,
        replicas: u32,
        backup: Option<(Color, u32)>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Checks, through the traffic path, that `color` and `tag` serve.
    fn probe(
        &self,
        color: Color,
        tag: &str,
        probe: &Probe,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Docker for the containers, nginx for the traffic.
pub struct DockerNginx {
    pub engine: Engine,
    pub nginx: Nginx,
    /// nginx's URL as the controller reaches it.
    pub proxy_url: String,
    http: reqwest::Client,
}

impl DockerNginx {
    pub fn new(engine: Engine, upstream_dir: PathBuf, proxy_url: String) -> DockerNginx {
        let nginx = Nginx::new(engine.clone(), upstream_dir);
        DockerNginx { engine, nginx, proxy_url, http: probe::client() }
    }
}

impl Platform for DockerNginx {
    async fn observe(&self) -> Result<Observed> {
        let containers = self.engine.app_containers().await?;
        let upstream = self.nginx.upstream().await;
        let backup = upstream.as_ref().ok().and_then(|u| u.backup);
        Ok(Observed { containers, live: upstream.map(|u| u.live), backup })
    }

    async fn start_color(&self, color: Color, image: &str, tag: &str, replicas: u32) -> Result<()> {
        self.engine.pull(image).await?;
        for container in self.engine.app_containers().await? {
            // Replicas beyond the count belong to an earlier rollout.
            if container.color == color && container.replica > replicas {
                self.engine.remove(&container.id, false).await?;
            }
        }
        for replica in 1..=replicas {
            self.engine.start_replica(color, replica, image, tag).await?;
        }
        Ok(())
    }

    async fn remove_color(&self, color: Color, graceful: bool) -> Result<()> {
        let of: Vec<_> =
            self.engine.app_containers().await?.into_iter().filter(|c| c.color == color).collect();
        let removals = of.iter().map(|c| self.engine.remove(&c.id, graceful));
        for result in futures_util::future::join_all(removals).await {
            result?;
        }
        Ok(())
    }

    async fn switch_traffic(
        &self,
        to: Option<Color>,
        replicas: u32,
        backup: Option<(Color, u32)>,
    ) -> Result<()> {
        self.nginx.switch(to, replicas, backup).await
    }

    async fn probe(&self, color: Color, tag: &str, probe: &Probe) -> Result<()> {
        probe::through_proxy(&self.http, &self.proxy_url, color, tag, probe).await
    }
}
