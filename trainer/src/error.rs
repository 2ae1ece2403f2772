//! The trainer's failures, each with the message an operator needs: which
//! file, which line or column, and what to do.

use std::path::PathBuf;

use thiserror::Error;

use crate::ols::FitError;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error("cannot open {path}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{path} is empty: expected a CSV header line and trip rows")]
    Empty { path: PathBuf },
    #[error("{path}: missing column `{column}` (the header has: {found})")]
    MissingColumn { path: PathBuf, column: &'static str, found: String },
    #[error("{path}: line {line}: {message}")]
    Read { path: PathBuf, line: u64, message: String },
    #[error("{path}: no data rows after the header")]
    NoRows { path: PathBuf },
    #[error(
        "{path}: only {train} training and {test} test rows survived cleaning \
         (of {read} read); need at least {min} training rows and 1 test row"
    )]
    TooFewRows { path: PathBuf, read: u64, train: u64, test: u64, min: u64 },
    #[error("cannot fit the model: {0}")]
    Fit(#[from] FitError),
    #[error("test-fraction must lie strictly between 0 and 1, got {0}")]
    TestFraction(f64),
    #[error("scratch file for the held-out rows: {0}")]
    Scratch(std::io::Error),
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("model artifact: {0}")]
    Artifact(#[from] model::ArtifactError),
}
