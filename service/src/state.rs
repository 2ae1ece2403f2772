//! What every handler shares: the loaded model (or why there is none), the
//! identity of this deployment, the request limits, the admission of
//! predictions and the metrics.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::body::Bytes;
use bluegreen::Color;
use model::{ArtifactError, LinearModel, ModelArtifact};
use tokio::sync::Semaphore;

use crate::admission::Admission;
use crate::limits::Limits;
use crate::metrics::Metrics;

/// A model file larger than this is refused unread (a real artifact is a
/// few KiB), so a wrong path cannot make startup read without end.
pub const MAX_MODEL_FILE_BYTES: u64 = 1024 * 1024;

/// The model this process serves, or the reason it serves none. Decided
/// once at start: a process never swaps models (a new model is a new
/// deployment).
#[derive(Debug, Clone)]
pub enum ModelSlot {
    Loaded(Arc<LoadedModel>),
    Unavailable(String),
}

/// A validated artifact and the JSON text it was parsed from, kept so that
/// `GET /model` serves the artifact exactly as loaded (a cheap clone per
/// answer): whoever parses that text gets this very artifact. Its
/// [`LinearModel`] is built once here, not per request.
#[derive(Debug)]
pub struct LoadedModel {
    artifact: ModelArtifact,
    linear: LinearModel,
    json: Bytes,
}

impl LoadedModel {
    /// Parses and validates an artifact, keeping its text.
    pub fn from_json(text: String) -> Result<LoadedModel, ArtifactError> {
        let artifact = ModelArtifact::from_json(&text)?;
        let linear = LinearModel::try_from(&artifact)?;
        Ok(LoadedModel { artifact, linear, json: Bytes::from(text) })
    }

    /// An artifact made in memory (a stub, a test fixture), written as the
    /// trainer writes it and read back like a file, so that its served JSON
    /// and the artifact predictions use are one.
    pub fn from_artifact(artifact: &ModelArtifact) -> Result<LoadedModel, ArtifactError> {
        LoadedModel::from_json(artifact.to_json()?)
    }

    pub fn artifact(&self) -> &ModelArtifact {
        &self.artifact
    }

    /// What predictions read of the artifact: they are its `predict`'s.
    pub fn linear(&self) -> &LinearModel {
        &self.linear
    }

    /// The artifact's JSON, byte for byte as loaded.
    pub fn json(&self) -> &Bytes {
        &self.json
    }
}

impl From<LoadedModel> for ModelSlot {
    fn from(loaded: LoadedModel) -> ModelSlot {
        ModelSlot::Loaded(Arc::new(loaded))
    }
}

impl ModelSlot {
    /// Reads and validates the artifact at `path`; every failure becomes a
    /// reason naming the file, never an error that stops the process.
    /// Blocking file IO: call it off the async workers.
    pub fn load(path: Option<&Path>) -> ModelSlot {
        let Some(path) = path else {
            return ModelSlot::Unavailable(
                "no model configured: pass --model PATH or set MODEL_PATH".to_owned(),
            );
        };
        let text = match read_model_file(path) {
            Ok(text) => text,
            Err(e) => {
                return ModelSlot::Unavailable(format!(
                    "cannot read model file {}: {e}",
                    path.display()
                ));
            }
        };
        match LoadedModel::from_json(text) {
            Ok(loaded) => loaded.into(),
            Err(e) => ModelSlot::Unavailable(format!("model file {}: {e}", path.display())),
        }
    }

    pub fn loaded(&self) -> Option<&LoadedModel> {
        match self {
            ModelSlot::Loaded(loaded) => Some(loaded),
            ModelSlot::Unavailable(_) => None,
        }
    }

    pub fn artifact(&self) -> Option<&ModelArtifact> {
        self.loaded().map(LoadedModel::artifact)
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            ModelSlot::Loaded(_) => None,
            ModelSlot::Unavailable(reason) => Some(reason),
        }
    }
}

/// Reads a regular file of at most [`MAX_MODEL_FILE_BYTES`]. Anything else
/// (a directory, `/dev/zero`, a FIFO, a socket) is refused at once: the
/// path is opened non-blocking, so even a FIFO without a writer cannot
/// hold startup, and checked on the opened descriptor.
fn read_model_file(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_MODEL_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than the limit of {MAX_MODEL_FILE_BYTES}",
            meta.len()
        )));
    }
    let mut text = String::new();
    // The file may grow after the check: read one byte past the limit at most.
    file.take(MAX_MODEL_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_MODEL_FILE_BYTES {
        return Err(std::io::Error::other("larger than the limit while being read"));
    }
    Ok(text)
}

/// Which deployment this process is, as set by the controller.
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    pub color: Option<Color>,
    pub version: Option<String>,
}

/// Shared application state.
#[derive(Debug)]
pub struct AppState {
    pub model: ModelSlot,
    pub deployment: Deployment,
    pub limits: Limits,
    pub metrics: Metrics,
    /// The budget predict requests are admitted from, by cost.
    pub admission: Arc<Admission>,
    /// One permit per core: large batches priced at once. More would only
    /// share the cores, making every accepted batch late and starving the
    /// async workers that answer small requests and liveness.
    pub pricing: Arc<Semaphore>,
    /// Set once shutdown begins: every answer then carries
    /// `Connection: close`, so clients stop reusing the connection.
    pub draining: AtomicBool,
}

impl AppState {
    pub fn new(model: ModelSlot, deployment: Deployment, limits: Limits) -> Arc<AppState> {
        let metrics = Metrics::new(model.artifact());
        let admission = Admission::new(&limits, metrics.admission_gauges());
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Arc::new(AppState {
            model,
            deployment,
            limits,
            metrics,
            admission,
            pricing: Arc::new(Semaphore::new(cores)),
            draining: AtomicBool::new(false),
        })
    }
}
