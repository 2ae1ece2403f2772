//! The images' recipes: the service image ([`service`]), the controller's
//! ([`controller`]), nginx's ([`nginx`]) and Prometheus' ([`prometheus`],
//! on a Debian base as nginx's), the first two from static
//! binaries ([`static_binary`]). Each build context is assembled under `target/images/`
//! from the few files the image needs, never the whole repository.

pub mod controller;
pub mod debian_base;
pub mod nginx;
pub mod prometheus;
pub mod service;
pub mod static_binary;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::effects::paths;

/// An empty build context for the image `name` under `target/images/`,
/// holding `images/<name>/Dockerfile`; the caller adds the other files.
pub fn fresh_context(name: &str) -> Result<PathBuf> {
    let context = paths::target().join("images").join(name);
    paths::remove_dir_if_present(&context)?;
    fs::create_dir_all(&context)?;
    let dockerfile = paths::root().join("images").join(name).join("Dockerfile");
    fs::copy(&dockerfile, context.join("Dockerfile"))
        .with_context(|| format!("cannot copy {}", dockerfile.display()))?;
    Ok(context)
}

/// Copies a file into a build context with the given permission bits.
fn copy_with_mode(from: &Path, to: &Path, mode: u32) -> Result<()> {
    fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}
