//! What every handler shares: the loaded model (or why there is none), the
//! identity of this deployment, the request limits and the metrics.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bluegreen::Color;
use model::ModelArtifact;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// A model file larger than this is refused unread (a real artifact is a
/// few KiB), so a wrong path cannot make startup read without end.
pub const MAX_MODEL_FILE_BYTES: u64 = 1024 * 1024;

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

/// Bounds on what requests may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch_rows: usize,
    pub max_body_bytes: usize,
    /// Predict requests past their content-type and size checks at once;
    /// one more is shed with 503 before its body is read.
    pub max_concurrent_predictions: usize,
    /// Time for a predict body to arrive once its head has (408 after).
    pub body_timeout: Duration,
    /// Time to price a batch once its body has arrived (503 after).
    pub request_timeout: Duration,
}

impl Limits {
    /// The defaults of the command line (`--max-batch-rows` and friends).
    pub const DEFAULT: Limits = Limits {
        max_batch_rows: 10_000,
        max_body_bytes: 4 * 1024 * 1024,
        max_concurrent_predictions: 16,
        body_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Shared application state.
#[derive(Debug)]
pub struct AppState {
    pub model: ModelSlot,
    pub deployment: Deployment,
    pub limits: Limits,
    pub metrics: Metrics,
    /// One permit per predict request in flight
    /// ([`Limits::max_concurrent_predictions`]).
    pub predictions: Arc<Semaphore>,
    /// Set once shutdown begins: every answer then carries
    /// `Connection: close`, so clients stop reusing the connection.
    pub draining: AtomicBool,
}

impl AppState {
    pub fn new(model: ModelSlot, deployment: Deployment, limits: Limits) -> Arc<AppState> {
        let metrics = Metrics::new(model.artifact());
        let predictions = Arc::new(Semaphore::new(limits.max_concurrent_predictions));
        Arc::new(AppState {
            model,
            deployment,
            limits,
            metrics,
            predictions,
            draining: AtomicBool::new(false),
        })
    }
}
