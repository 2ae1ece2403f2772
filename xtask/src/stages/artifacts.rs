//! What the stages hand to each other (and CI keeps as job artifacts) in
//! `artifacts/`: the model (`model.json`) and its metrics (`metrics.json`),
//! written by train; the record of the images (`images.json`), written by
//! build. Each file is read here through its type, so a stage never digs
//! in another's JSON by key.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::effects::paths;

/// `artifacts/` at the workspace root.
pub fn dir() -> PathBuf {
    paths::root().join("artifacts")
}

/// Where train writes the model artifact and build takes it from.
pub fn model_path() -> PathBuf {
    dir().join("model.json")
}

/// Where train writes the run's metrics.
pub fn metrics_path() -> PathBuf {
    dir().join("metrics.json")
}

/// Where build records what it produced.
pub fn images_path() -> PathBuf {
    dir().join("images.json")
}

/// A model artifact: read, and validated by the `model` crate exactly as
/// the service will.
pub fn load_model(path: &Path) -> Result<model::ModelArtifact> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "no model artifact at {}: run `cargo xtask train` first (or pass --model)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    model::ModelArtifact::from_json(&text)
        .with_context(|| format!("{} is not a usable model artifact", path.display()))
}

/// A trainer run's `metrics.json`.
pub fn read_metrics(path: &Path) -> Result<model::Metrics> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    model::Metrics::from_json(&text)
        .with_context(|| format!("{} is not a trainer's metrics.json", path.display()))
}

/// What a build produced, as `images.json` records it for the stages (and
/// CI jobs) that come after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Built {
    /// `localhost:5000/taxi/service:<sha>[-dirty]`, pushed.
    pub service: String,
    /// `taxi/nginx:<sha>[-dirty]`, local.
    pub nginx: String,
    /// `taxi/controller:<sha>[-dirty]`, local.
    pub controller: String,
    /// The revision tag both carry.
    pub tag: String,
    /// The model version baked into the service image.
    pub model_version: String,
    pub service_bytes: u64,
    pub nginx_bytes: u64,
    pub controller_bytes: u64,
}

impl Built {
    /// Records the build in `images.json`.
    pub fn record(&self) -> Result<()> {
        write_record(&images_path(), self)
    }

    /// What the last build in this workspace produced: `None` when nothing
    /// was built here, an error when the record cannot be read (a stage
    /// must not silently test another image than the one built).
    pub fn last() -> Result<Option<Built>> {
        read_record(&images_path())
    }
}

fn write_record(path: &Path, built: &Built) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(path, serde_json::to_string_pretty(built)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_record(path: &Path) -> Result<Option<Built>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let built = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is corrupt; run `cargo xtask build` again, or name the image with --image",
            path.display()
        )
    })?;
    Ok(Some(built))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_is_named() {
        let err = load_model(Path::new("/nonexistent/model.json")).unwrap_err();
        assert!(format!("{err:#}").contains("cargo xtask train"), "{err:#}");
    }

    #[test]
    fn an_absent_image_record_is_none_and_a_corrupt_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.json");
        assert_eq!(read_record(&path).unwrap(), None);

        let built = Built {
            service: "localhost:5000/taxi/service:abc".into(),
            nginx: "taxi/nginx:abc".into(),
            controller: "taxi/controller:abc".into(),
            tag: "abc".into(),
            model_version: "m1".into(),
            service_bytes: 1,
            nginx_bytes: 2,
            controller_bytes: 3,
        };
        write_record(&path, &built).unwrap();
        assert_eq!(read_record(&path).unwrap(), Some(built));

        fs::write(&path, r#"{"service": "localhost:5000/taxi/service:abc""#).unwrap();
        let err = read_record(&path).unwrap_err();
        assert!(format!("{err:#}").contains("is corrupt"), "{err:#}");
    }

    #[test]
    fn unreadable_metrics_are_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        fs::write(&path, r#"{"model": {"r2": 0.8}}"#).unwrap();
        let err = read_metrics(&path).unwrap_err();
        assert!(format!("{err:#}").contains("metrics.json"), "{err:#}");
    }
}
