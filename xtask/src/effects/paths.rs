//! Where things are: the workspace root, build outputs, the reference data,
//! the local stack's runtime files. (What the stages hand each other in
//! `artifacts/` is `stages::artifacts`.)

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The reference data set, `../shared/data/uber.csv`, when this checkout
/// sits beside a `shared/` folder.
pub fn reference_csv() -> Option<PathBuf> {
    // Canonical, so reports and the artifact's lineage name the file plainly.
    root().join("../shared/data/uber.csv").canonicalize().ok().filter(|p| p.is_file())
}

/// Scratch space of the stages (image build contexts, the registry's
/// storage, the stack's runtime files): under the workspace's `target/`,
/// which git ignores and `cargo clean` wipes.
pub fn target() -> PathBuf {
    root().join("target")
}

/// The local stack's runtime directory: the live manifest, upstream.conf
/// and the controller's state, bind-mounted into nginx and the controller.
pub fn stack_dir() -> PathBuf {
    target().join("stack")
}

/// The live manifest the controller watches (a copy of
/// manifests/rollout.yaml, so a deploy never touches a tracked file).
pub fn live_manifest() -> PathBuf {
    stack_dir().join("manifests/rollout.yaml")
}

/// Cargo's target directory, where `cargo build` puts binaries:
/// `CARGO_TARGET_DIR` when set, else [`target`].
pub fn cargo_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(target)
}

/// Removes a directory tree; one that is not there is no error.
pub fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
}
