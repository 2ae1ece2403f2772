//! The narrow interface between the decisions and the world. Another
//! platform (a Kubernetes Service selector over two Deployments, say)
//! could implement it without touching [`crate::reconcile`].

use std::future::Future;
use std::path::PathBuf;

use bluegreen::Color;
use model::{ModelArtifact, Trip};

use crate::docker::Engine;
use crate::error::Error;
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
    /// The model artifact the image of `color` carries.
    fn artifact(&self, color: Color) -> impl Future<Output = Result<ModelArtifact>> + Send;
    /// Prices `trips` on `color` directly, not through nginx: the fares
    /// and the model version that answered.
    fn predict(
        &self,
        color: Color,
        trips: &[Trip],
    ) -> impl Future<Output = Result<(Vec<f64>, String)>> + Send;
    /// Shows `to`'s replicas on the preview port (`None`: nothing).
    fn preview(&self, to: Option<(Color, u32)>) -> impl Future<Output = Result<()>> + Send;
    /// The Prometheus text of each running replica of `color`.
    fn metrics(&self, color: Color) -> impl Future<Output = Result<Vec<String>>> + Send;
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

/// Where the service image keeps its model when `MODEL_PATH` is unset.
const DEFAULT_MODEL_PATH: &str = "/model/model.json";

impl DockerNginx {
    /// The first running replica of a color.
    async fn first_replica(&self, color: Color) -> Result<String> {
        let mut of: Vec<_> = self
            .engine
            .app_containers()
            .await?
            .into_iter()
            .filter(|c| c.color == color && c.is_running())
            .collect();
        of.sort_by_key(|c| c.replica);
        of.into_iter()
            .next()
            .map(|c| c.id)
            .ok_or_else(|| Error::Model { color, message: "no running container".into() })
    }
}

impl Platform for DockerNginx {
    async fn observe(&self) -> Result<Observed> {
        let containers = self.engine.app_containers().await?;
        let upstream = self.nginx.upstream().await;
        let backup = upstream.as_ref().ok().and_then(|u| u.backup);
        let preview = self.nginx.preview().await;
        Ok(Observed { containers, live: upstream.map(|u| u.live), backup, preview })
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

    async fn artifact(&self, color: Color) -> Result<ModelArtifact> {
        let model_error = |message: String| Error::Model { color, message };
        let first = self.first_replica(color).await?;
        let (_, path) = self.engine.address_and_env(&first, "MODEL_PATH").await?;
        let path = path.unwrap_or_else(|| DEFAULT_MODEL_PATH.to_owned());
        let bytes = self.engine.read_file(&first, &path).await?;
        let text = String::from_utf8(bytes)
            .map_err(|e| model_error(format!("{path} is not text: {e}")))?;
        ModelArtifact::from_json(&text).map_err(|e| model_error(format!("{path}: {e}")))
    }

    async fn predict(&self, color: Color, trips: &[Trip]) -> Result<(Vec<f64>, String)> {
        let first = self.first_replica(color).await?;
        // Directly at the port the container itself listens on: what nginx
        // proxies to is the probe's business, not the model's.
        let (address, port) = self.engine.address_and_env(&first, "PORT").await?;
        let port = port.and_then(|p| p.parse::<u16>().ok()).unwrap_or(bluegreen::APP_PORT);
        let address = address.ok_or_else(|| Error::Model {
            color,
            message: format!("{first} has no address on {}", bluegreen::NETWORK),
        })?;
        probe::predict_direct(&self.http, &format!("http://{address}:{port}"), trips)
            .await
            .map_err(|message| Error::Model { color, message })
    }

    async fn preview(&self, to: Option<(Color, u32)>) -> Result<()> {
        self.nginx.show_preview(to).await
    }

    async fn metrics(&self, color: Color) -> Result<Vec<String>> {
        let mut texts = Vec::new();
        for c in self.engine.app_containers().await? {
            if c.color != color || !c.is_running() {
                continue;
            }
            let (address, port) = self.engine.address_and_env(&c.id, "PORT").await?;
            let port = port.and_then(|p| p.parse::<u16>().ok()).unwrap_or(bluegreen::APP_PORT);
            let Some(address) = address else { continue };
            let url = format!("http://{address}:{port}/metrics");
            let text = async { self.http.get(&url).send().await?.error_for_status()?.text().await };
            texts.push(
                text.await
                    .map_err(|e| Error::Model { color, message: format!("GET {url}: {e}") })?,
            );
        }
        Ok(texts)
    }

    async fn probe(&self, color: Color, tag: &str, probe: &Probe) -> Result<()> {
        probe::through_proxy(&self.http, &self.proxy_url, color, tag, probe).await
    }
}
