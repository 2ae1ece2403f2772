//! nginx's side of a switch, for every Docker backend: upstream.conf in
//! the directory nginx mounts, replaced atomically, then `nginx -t` and
//! `nginx -s reload` run inside each nginx container that mounts it,
//! through the Docker API. Which containers those are is the backend's
//! word ([`Instances`]: compose's one nginx container, or every task of
//! the Swarm router service on this node). Only IO.

use std::future::Future;
use std::path::{Path, PathBuf};

use bluegreen::{Color, NGINX_RELOAD, NGINX_TEST, Upstream};
use controller_core::clock::Timestamp;
use controller_core::observed::{Capabilities, Traffic};
use tracing::warn;

use super::docker::Engine;
use crate::local_file;
use crate::platform::{PlatformError, Result};

/// The nginx containers that load the directory: a change is tested and
/// reloaded in each.
pub trait Instances: Send + Sync {
    /// Their ids, read now; an error when none runs.
    fn containers(&self) -> impl Future<Output = Result<Vec<String>>> + Send;
}

const FILE: &str = "upstream.conf";
const PREVIEW: &str = "preview.conf";
const MIRROR: &str = "mirror.conf";

#[derive(Clone)]
/// upstream.conf as last read: the live color it names, or why it
/// cannot be read.
pub struct ReadBack {
    upstream: std::result::Result<Upstream, String>,
}

impl ReadBack {
    /// The live color the file names, if it could be read and names one.
    pub fn live(&self) -> Option<Color> {
        self.upstream.as_ref().ok().and_then(|u| u.live)
    }
}

pub struct Nginx<I> {
    engine: Engine,
    instances: I,
    dir: PathBuf,
}

impl<I: Instances> Nginx<I> {
    pub fn new(engine: Engine, instances: I, dir: PathBuf) -> Nginx<I> {
        Nginx { engine, instances, dir }
    }

    /// The containers this nginx runs in, as the backend names them.
    pub fn instances(&self) -> &I {
        &self.instances
    }

    /// The Engine the containers run on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// When nginx last took in an upstream.conf of ours: the file is
    /// written just before every reload, so its modification time stands
    /// for the reload's, and survives a restart of the controller.
    pub async fn loaded_at(&self) -> Option<Timestamp> {
        let meta = tokio::fs::metadata(self.dir.join(FILE)).await.ok()?;
        meta.modified().ok().map(Timestamp::from_system)
    }

    /// What a file of ours says; a missing file sends traffic nowhere.
    async fn read(&self, name: &str) -> std::result::Result<Upstream, String> {
        let path = self.dir.join(name);
        match local_file::read(&path).await {
            Ok(text) => Upstream::parse(&text).map_err(|e| e.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Upstream { live: None, replicas: 0, backup: None })
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// What upstream.conf says.
    pub async fn upstream(&self) -> std::result::Result<Upstream, String> {
        self.read(FILE).await
    }

    /// The hosts upstream.conf's live servers name (`Upstream::live_hosts`;
    /// a missing file names none).
    pub async fn upstream_hosts(&self) -> std::result::Result<Vec<String>, String> {
        let path = self.dir.join(FILE);
        match local_file::read(&path).await {
            Ok(text) => Ok(Upstream::live_hosts(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// The color preview.conf shows, if any (an unreadable file: none).
    /// What upstream.conf says, read once for [`Nginx::traffic`].
    pub async fn read_back(&self) -> ReadBack {
        ReadBack { upstream: self.upstream().await }
    }

    /// The router read back, as the core sees it: `read`'s file, the
    /// preview, whether the backend must route again (`stale`) and which
    /// parts of its tier are down — a tier that cannot be listed is not
    /// called down: the next observation tries again.
    pub async fn traffic(
        &self,
        read: ReadBack,
        stale: bool,
        down: Result<Vec<String>>,
        capabilities: Capabilities,
    ) -> Traffic {
        let down = down.unwrap_or_else(|e| {
            warn!(error = %e, "cannot list the traffic tier");
            Vec::new()
        });
        let upstream = read.upstream;
        Traffic {
            fallback: upstream.as_ref().ok().and_then(|u| u.backup),
            servers: upstream.as_ref().map_or(0, |u| u.replicas),
            live: upstream.map(|u| u.live),
            preview: self.preview().await,
            down,
            stale,
            capabilities,
        }
    }

    pub async fn preview(&self) -> Option<Color> {
        self.read(PREVIEW).await.ok().and_then(|u| u.live)
    }

    /// Points nginx at replicas `live` of `to` (no color when `None`),
    /// with replicas `backup` of another color as backup servers. Always
    /// reloads, even when the file already says so: a controller that died
    /// between the write and the reload left nginx on the old file.
    pub async fn switch(
        &self,
        to: Option<Color>,
        live: &[u32],
        backup: Option<(Color, &[u32])>,
    ) -> Result<()> {
        let next = match to {
            Some(color) => Upstream::render_servers(color, live, backup),
            None => Upstream::render_none().to_owned(),
        };
        self.set_upstream(&next).await
    }

    /// Shows `to` on the preview port (nothing when `None`).
    pub async fn show_preview(&self, to: Option<(Color, u32)>) -> Result<()> {
        self.set_preview(&Upstream::render_preview(to)).await
    }

    /// Replaces upstream.conf with `text` (rendered by the caller), tests
    /// and reloads it as [`Nginx::switch`] does.
    pub async fn set_upstream(&self, text: &str) -> Result<()> {
        self.replace(FILE, text, Upstream::render_none()).await
    }

    /// Replaces mirror.conf with `text` (rendered by the caller:
    /// `Upstream::render_mirror`), tests and reloads it.
    pub async fn set_mirror(&self, text: &str) -> Result<()> {
        let none = Upstream::render_mirror(None);
        self.replace(MIRROR, text, &none).await
    }

    /// The color mirror.conf copies predictions to, if any (an unreadable
    /// or missing file: none).
    pub async fn mirrored(&self) -> Option<Color> {
        let text = local_file::read(&self.dir.join(MIRROR)).await.ok()?;
        Upstream::mirrored(&text)
    }

    /// Replaces preview.conf with `text`, tests and reloads it.
    pub async fn set_preview(&self, text: &str) -> Result<()> {
        let none = Upstream::render_preview(None);
        self.replace(PREVIEW, text, &none).await
    }

    /// Replaces a file of ours, tests it in every nginx container, then
    /// reloads each. A change reaches every container or none: when one
    /// refuses it (`nginx -t`), nothing was reloaded and the previous file
    /// is put back; when a reload fails, the previous file is put back and
    /// the containers already reloaded are reloaded again onto it (one
    /// that fails that too is logged: the next switch or heal reloads
    /// it), so no two serve different colors for longer than the call.
    /// A failure to reach a container (exec) counts as a refusal here.
    async fn replace(&self, name: &str, next: &str, missing: &str) -> Result<()> {
        let containers = self.instances.containers().await?;
        let path = self.dir.join(name);
        let previous = match local_file::read(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.to_owned(),
            Err(source) => return Err(upstream_error(&path, source)),
        };
        self.write(&path, next).await?;
        crate::crash::point("after_upstream_write");
        for nginx in &containers {
            if let Err(e) = self.run(nginx, &NGINX_TEST, "`nginx -t` refused it").await {
                self.write(&path, &previous).await?;
                return Err(e);
            }
        }
        for (done, nginx) in containers.iter().enumerate() {
            if let Err(e) = self.run(nginx, &NGINX_RELOAD, "`nginx -s reload` failed").await {
                self.write(&path, &previous).await?;
                for back in &containers[..done] {
                    if let Err(again) = self.run(back, &NGINX_RELOAD, "reload").await {
                        warn!(container = %back, error = %again, "cannot reload nginx onto the previous file");
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Runs an nginx command in one container: a non-zero exit is a
    /// refusal, with nginx's own words.
    async fn run(&self, container: &str, cmd: &[&str], what: &str) -> Result<()> {
        let (code, out) = self.engine.exec(container, cmd).await?;
        if code != 0 {
            return Err(PlatformError::Refused(format!("{what}: {out}")));
        }
        Ok(())
    }

    async fn write(&self, path: &Path, text: &str) -> Result<()> {
        let text = text.to_owned();
        let target = path.to_owned();
        tokio::task::spawn_blocking(move || manifest_file::replace(&target, text.as_bytes()))
            .await
            .map_err(|e| upstream_error(path, e))?
            .map_err(|e| upstream_error(path, e))
    }
}

fn upstream_error(path: &Path, e: impl std::fmt::Display) -> PlatformError {
    PlatformError::Unavailable { backend: "nginx", message: format!("{}: {e}", path.display()) }
}
