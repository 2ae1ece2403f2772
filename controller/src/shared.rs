//! What the reconcile loop shares with the API and the tasks beside it:
//! the status document it publishes, the metrics, the manifest's path, the
//! way in for triggers, and the API token.

use std::path::PathBuf;
use std::sync::Arc;

use controller_core::record::{Operator, Record};
use controller_core::status::{self, ManifestState, Status};
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::metrics::Metrics;

/// Why a reconcile runs. Only logged — the reconcile assumes nothing —
/// except an operator's word, which the record takes first.
#[derive(Debug, Clone)]
pub enum Trigger {
    Manifest,
    Command(&'static str),
    Operator(Operator),
}

/// What the loop shares with the API.
pub struct Shared {
    pub status: watch::Sender<Status>,
    pub metrics: Metrics,
    /// The manifest file the controller watches and edits.
    pub manifest: PathBuf,
    pub triggers: mpsc::Sender<Trigger>,
    pub token: String,
}

impl Shared {
    /// What the loop and the API share, with empty metrics and the status
    /// of a controller that has read nothing yet.
    pub fn new(manifest: PathBuf, triggers: mpsc::Sender<Trigger>, token: String) -> Arc<Shared> {
        let source = manifest.display().to_string();
        let initial = status::build(
            &ManifestState { desired: None, error: None, source: &source },
            None,
            &Record::default(),
            None,
            clock::now(),
        );
        Arc::new(Shared {
            status: watch::channel(initial).0,
            metrics: Metrics::default(),
            manifest,
            triggers,
            token,
        })
    }
}
