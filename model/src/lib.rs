//! The contract between the trainer and the service.
//!
//! Everything both sides must agree on lives here and only here: the trip
//! schema and its validation rules ([`trip`]), the feature engineering
//! ([`features`]), the versioned JSON artifact ([`artifact`]),
//! [`predict`](artifact::ModelArtifact::predict) and what a training run
//! reports ([`metrics`]).
//!
//! Architecture invariant: this crate does no IO and links no BLAS/LAPACK;
//! its only dependency beyond `thiserror` is serde.

pub mod artifact;
pub mod features;
pub mod geo;
pub mod metrics;
pub mod scores;
pub mod trip;

pub use artifact::{
    ArtifactError, GoldenTrip, Lineage, LinearModel, MAX_GOLDEN, ModelArtifact, SCHEMA_VERSION,
};
pub use features::{
    FEATURE_NAMES, FEATURE_SET, FeatureRange, FeatureSpec, N_FEATURES, feature_domain,
    feature_specs, features,
};
pub use metrics::Metrics;
pub use scores::{ScoreAccumulator, Scores};
pub use trip::{DOCUMENTED_TRIP, Field, Trip, Violation, ViolationKind};
