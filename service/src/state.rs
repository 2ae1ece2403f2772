//! What every handler shares: the loaded model (or why there is none), the
//! identity of this deployment, the request limits and the metrics.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use model::ModelArtifact;

use crate::metrics::Metrics;

/// The model this process serves, or the reason it serves none. Decided
/// once at start: a process never swaps models (a new model is a new
/// deployment).
#[derive(Debug, Clone)]
pub enum ModelSlot {
    Loaded(Arc<ModelArtifact>),
    Unavailable(String),
}

impl ModelSlot {
    /// Reads and validates the artifact at `path`; every failure becomes a
    /// reason naming the file, never an error that stops the process.
    pub fn load(path: Option<&Path>) -> ModelSlot {
        let Some(path) = path else {
            return ModelSlot::Unavailable(
                "no model configured: pass --model PATH or set MODEL_PATH".to_owned(),
            );
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                return ModelSlot::Unavailable(format!(
                    "cannot read model file {}: {e}",
                    path.display()
                ));
            }
        };
        match ModelArtifact::from_json(&text) {
            Ok(artifact) => ModelSlot::Loaded(Arc::new(artifact)),
            Err(e) => ModelSlot::Unavailable(format!("model file {}: {e}", path.display())),
        }
    }

    pub fn artifact(&self) -> Option<&ModelArtifact> {
        match self {
            ModelSlot::Loaded(a) => Some(a),
            ModelSlot::Unavailable(_) => None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            ModelSlot::Loaded(_) => None,
            ModelSlot::Unavailable(reason) => Some(reason),
        }
    }
}

/// Which deployment this process is, as set by the controller.
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    pub color: Option<String>,
    pub version: Option<String>,
}

/// Bounds on what one request may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch_rows: usize,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

impl Limits {
    /// The defaults of the command line (`--max-batch-rows` and friends).
    pub const DEFAULT: Limits = Limits {
        max_batch_rows: 10_000,
        max_body_bytes: 4 * 1024 * 1024,
        request_timeout: Duration::from_secs(10),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Shared, immutable application state.
#[derive(Debug)]
pub struct AppState {
    pub model: ModelSlot,
    pub deployment: Deployment,
    pub limits: Limits,
    pub metrics: Metrics,
}

impl AppState {
    pub fn new(model: ModelSlot, deployment: Deployment, limits: Limits) -> Arc<AppState> {
        let metrics = Metrics::new(model.artifact());
        Arc::new(AppState { model, deployment, limits, metrics })
    }
}
