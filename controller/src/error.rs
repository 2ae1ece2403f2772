//! The runtime's own error: the record on disk. What the platform refuses
//! is a `platform::PlatformError`; what the manifest refuses, a
//! `controller_core::manifest::ManifestError`. Every kind has a metric
//! label, so /metrics counts reconcile errors by what went wrong.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state file {path}: {message}")]
    Store { path: String, message: String },
}

impl Error {
    /// The label /metrics counts this kind of error under.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Store { .. } => "state_file",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
