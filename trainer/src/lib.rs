//! The trainer: from a trips CSV to a model artifact.
//!
//! A run streams the file once ([`train`]): each record is read and hashed
//! ([`source`]), cleaned ([`clean`]), assigned to train or test by a hash of
//! its index ([`split`]), and folded into streaming least-squares sums
//! ([`ols`]); held-out rows are spooled and scored afterwards with the
//! artifact's own `predict` ([`scores`]). Memory does not grow with the row
//! count. [`synth`] writes synthetic trips for samples and scale tests.
//!
//! Features come only from [`model::features`] and predictions only from
//! [`model::ModelArtifact::predict`], so the metrics are those of the
//! service that will load the artifact.

pub mod civil;
pub mod clean;
pub mod error;
pub mod lineage;
pub mod ols;
pub mod output;
pub mod progress;
pub mod report;
pub mod source;
pub mod split;
pub mod synth;
pub mod train;

pub use error::TrainError;
