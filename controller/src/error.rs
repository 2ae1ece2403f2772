//! The controller's one error type. Every kind has a metric label, so
//! /metrics counts reconcile errors by what went wrong.

use crate::manifest::ManifestError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("Docker Engine API {found} is too old: {required} or later is needed")]
    DockerTooOld { found: String, required: String },
    #[error("cannot pull {image}: {message}")]
    Pull { image: String, message: String },
    #[error("no running nginx container of project {0}")]
    NginxMissing(&'static str),
    #[error("`nginx -t` refused the new upstream.conf: {0}")]
    NginxTest(String),
    #[error("`nginx -s reload` failed: {0}")]
    NginxReload(String),
    #[error("upstream.conf at {path}: {source}")]
    Upstream { path: String, source: std::io::Error },
    #[error("probe through nginx: {0}")]
    Probe(String),
    #[error("model of {color}: {message}")]
    Model { color: bluegreen::Color, message: String },
    #[error("state file {path}: {message}")]
    Store { path: String, message: String },
    #[error("manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("manifest file {path}: {source}")]
    ManifestIo { path: String, source: std::io::Error },
}

impl Error {
    /// The label /metrics counts this kind of error under.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Docker(_) => "docker",
            Error::DockerTooOld { .. } => "docker_version",
            Error::Pull { .. } => "pull",
            Error::NginxMissing(_) => "nginx_missing",
            Error::NginxTest(_) => "nginx_test",
            Error::NginxReload(_) => "nginx_reload",
            Error::Upstream { .. } => "upstream_file",
            Error::Probe(_) => "probe",
            Error::Model { .. } => "model",
            Error::Store { .. } => "state_file",
            Error::Manifest(_) => "manifest",
            Error::ManifestIo { .. } => "manifest_file",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
