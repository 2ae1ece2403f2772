//! nginx's side of a switch: upstream.conf in the directory nginx mounts,
//! replaced atomically, then `nginx -t` and `nginx -s reload` run inside
//! the nginx container through the Docker API. Only IO.

use std::path::{Path, PathBuf};

use bluegreen::{Color, NGINX_RELOAD, NGINX_TEST, Upstream};

use crate::atomic_file;
use crate::docker::Engine;
use crate::error::{Error, Result};

const FILE: &str = "upstream.conf";

#[derive(Clone)]
pub struct Nginx {
    engine: Engine,
    dir: PathBuf,
}

impl Nginx {
    pub fn new(engine: Engine, dir: PathBuf) -> Nginx {
        Nginx { engine, dir }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// What upstream.conf says; a missing file sends traffic nowhere.
    pub async fn upstream(&self) -> std::result::Result<Upstream, String> {
        let path = self.file();
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => Upstream::parse(&text).map_err(|e| e.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Upstream { live: None, replicas: 0, backup: None })
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Points nginx at `to` (no color when `None`), with `backup`'s
    /// replicas as backup servers. Always reloads, even
    /// when the file already says so: a controller that died between the
    /// write and the reload left nginx on the old file. On a refused
    /// configuration or a failed reload the previous file is put back.
    pub async fn switch(
        &self,
        to: Option<Color>,
        replicas: u32,
        backup: Option<(Color, u32)>,
    ) -> Result<()> {
        let nginx = self.engine.nginx().await?;
        let path = self.file();
        let previous = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Upstream::render_none().to_owned()
            }
            Err(source) => return Err(upstream_error(&path, source)),
        };
        let next = match to {
            Some(color) => Upstream::render(color, replicas, backup),
            None => Upstream::render_none().to_owned(),
        };
        self.write(&next).await?;
        crate::crash::point("after_upstream_write");
        let (code, out) = self.engine.exec(&nginx, &NGINX_TEST).await?;
        if code != 0 {
            self.write(&previous).await?;
            return Err(Error::NginxTest(out));
        }
        let (code, out) = self.engine.exec(&nginx, &NGINX_RELOAD).await?;
        if code != 0 {
            self.write(&previous).await?;
            return Err(Error::NginxReload(out));
        }
        Ok(())
    }

    async fn write(&self, text: &str) -> Result<()> {
        let path = self.file();
        let text = text.to_owned();
        let target = path.clone();
        tokio::task::spawn_blocking(move || atomic_file::write(&target, text.as_bytes()))
            .await
            .map_err(|e| upstream_error(&path, std::io::Error::other(e)))?
            .map_err(|e| upstream_error(&path, e))
    }
}

fn upstream_error(path: &Path, source: std::io::Error) -> Error {
    Error::Upstream { path: path.display().to_string(), source }
}
