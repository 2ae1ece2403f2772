//! nginx's side of a switch: upstream.conf in the directory nginx mounts,
//! replaced atomically, then `nginx -t` and `nginx -s reload` run inside
//! the nginx container through the Docker API. Only IO.

use std::path::{Path, PathBuf};

use bluegreen::{Color, NGINX_RELOAD, NGINX_TEST, Upstream};
use controller_core::clock::Timestamp;

use super::docker::Engine;
use crate::local_file;
use crate::platform::{PlatformError, Result};

const FILE: &str = "upstream.conf";
const PREVIEW: &str = "preview.conf";

#[derive(Clone)]
pub struct Nginx {
    engine: Engine,
    dir: PathBuf,
}

impl Nginx {
    pub fn new(engine: Engine, dir: PathBuf) -> Nginx {
        Nginx { engine, dir }
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

    /// The color preview.conf shows, if any (an unreadable file: none).
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
        self.replace(FILE, &next, Upstream::render_none()).await
    }

    /// Shows `to` on the preview port (nothing when `None`).
    pub async fn show_preview(&self, to: Option<(Color, u32)>) -> Result<()> {
        let none = Upstream::render_preview(None);
        self.replace(PREVIEW, &Upstream::render_preview(to), &none).await
    }

    /// Replaces a file of ours, tests and reloads; on a refused
    /// configuration or a failed reload the previous file is put back.
    async fn replace(&self, name: &str, next: &str, missing: &str) -> Result<()> {
        let nginx = self.engine.nginx().await?;
        let path = self.dir.join(name);
        let previous = match local_file::read(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.to_owned(),
            Err(source) => return Err(upstream_error(&path, source)),
        };
        self.write(&path, next).await?;
        crate::crash::point("after_upstream_write");
        let (code, out) = self.engine.exec(&nginx, &NGINX_TEST).await?;
        if code != 0 {
            self.write(&path, &previous).await?;
            return Err(PlatformError::Refused(format!("`nginx -t` refused it: {out}")));
        }
        let (code, out) = self.engine.exec(&nginx, &NGINX_RELOAD).await?;
        if code != 0 {
            self.write(&path, &previous).await?;
            return Err(PlatformError::Refused(format!("`nginx -s reload` failed: {out}")));
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
