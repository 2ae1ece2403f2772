//! Where things are: the workspace root, build outputs, the reference data.

use std::path::{Path, PathBuf};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where stages put what later stages (and CI job artifacts) pick up:
/// `model.json`, `metrics.json`, generated samples, image tags.
pub fn artifacts() -> PathBuf {
    root().join("artifacts")
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
