//! Running `manifests/compose.yaml` under the project's fixed name with
//! whichever Compose this machine has: `docker compose` (v2) when present,
//! else Debian's `docker-compose` (1.29), installed on demand.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};
use bluegreen::PROJECT;

use crate::effects::docker::docker;
use crate::effects::process::{cmd, have};
use crate::effects::{deps, paths};

/// The stack's compose file.
pub fn file() -> PathBuf {
    paths::root().join("manifests/compose.yaml")
}

/// The Compose implementations a machine may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// The Docker CLI plugin, `docker compose`.
    Plugin,
    /// The standalone `docker-compose` (Debian ships 1.29).
    Standalone,
}

impl Tool {
    /// The Compose this machine has, if any.
    pub fn detect() -> Option<Tool> {
        let plugin =
            docker(["compose", "version"]).output().map(|o| o.status.success()).unwrap_or(false);
        if plugin {
            Some(Tool::Plugin)
        } else if have("docker-compose") {
            Some(Tool::Standalone)
        } else {
            None
        }
    }

    /// The Compose this machine has, installing Debian's docker-compose
    /// when there is none.
    pub fn ensure() -> Result<Tool> {
        if let Some(tool) = Tool::detect() {
            return Ok(tool);
        }
        deps::ensure(deps::COMPOSE)?;
        match Tool::detect() {
            Some(tool) => Ok(tool),
            None => bail!("no Compose found after installing docker-compose"),
        }
    }

    /// A compose command on the stack's file and project, with `args`.
    pub fn command<I, S>(self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = match self {
            Tool::Plugin => docker(["compose"]),
            Tool::Standalone => cmd("docker-compose", std::iter::empty::<&str>()),
        };
        c.arg("-p").arg(PROJECT).arg("-f").arg(file()).args(args);
        c
    }
}
