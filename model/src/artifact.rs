//! The versioned JSON model artifact and prediction.
//!
//! The artifact carries everything needed to predict (feature set,
//! coefficients, intercept) and everything needed to trust the prediction
//! (lineage: data, cleaning, split, metrics, trainer and commit).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::features::{
    FEATURE_NAMES, FEATURE_SET, FeatureRange, FeatureSpec, N_FEATURES, feature_domain, features,
};
use crate::scores::Scores;
use crate::trip::Trip;

/// The artifact layout version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The longest `model_version` (and `trainer_version`) accepted: both are
/// echoed in every response and metric label.
pub const MAX_VERSION_LEN: usize = 128;

/// No prediction may exceed this many dollars in magnitude, whatever the
/// input: an artifact whose coefficients and feature ranges allow more is
/// refused at load (see [`ModelArtifact::prediction_bound`]).
pub const MAX_PREDICTION: f64 = 1e6;

/// A fitted linear fare model with its lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    pub schema_version: u32,
    /// Human-meaningful identity of this model, reported by the service.
    pub model_version: String,
    pub feature_set: String,
    pub features: Vec<FeatureSpec>,
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    /// Where each feature lay over the training rows. `predict` clamps
    /// features into these ranges: a linear model extrapolates wildly (or
    /// below zero) far outside its data, and a trip unlike any trained on
    /// is better priced like the nearest one that was.
    pub feature_ranges: Vec<FeatureRange>,
    pub lineage: Lineage,
    /// Held-out trips with the fares this model predicts for them. A
    /// deployment sends them to the image that carries the artifact and
    /// requires the same fares back: proof that it serves this model with
    /// these features.
    #[serde(default)]
    pub golden: Vec<GoldenTrip>,
}

/// A trip and the fare its model predicts for it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GoldenTrip {
    pub trip: Trip,
    pub fare: f64,
}

/// How many golden trips an artifact may carry.
pub const MAX_GOLDEN: usize = 64;

/// Where a model came from and how good it was on held-out data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    pub data_file: String,
    pub data_sha256: String,
    pub rows_read: u64,
    pub rows_used: u64,
    pub rows_train: u64,
    pub rows_test: u64,
    /// Rows dropped during cleaning, by reason.
    pub rows_dropped: BTreeMap<String, u64>,
    pub split_seed: u64,
    pub test_fraction: f64,
    /// Held-out metrics of this model.
    pub metrics: Scores,
    /// Held-out metrics of predicting the training mean fare.
    pub baseline: Scores,
    pub trainer_version: String,
    pub git_commit: Option<String>,
    /// RFC 3339 UTC timestamp.
    pub created_at: String,
}

/// Why an artifact cannot be used.
#[derive(Debug, Error)]
pub enum ArtifactError {
    #[error("model artifact is not valid JSON for schema version {SCHEMA_VERSION}: {0}")]
    Json(#[from] serde_json::Error),
    #[error("model artifact has schema version {found}, this build reads version {SCHEMA_VERSION}")]
    SchemaVersion { found: u64 },
    #[error("model artifact uses feature set {found:?}, this build computes {FEATURE_SET:?}")]
    FeatureSet { found: String },
    #[error("model artifact features {found:?} differ from this build's {expected:?}")]
    FeatureNames { found: Vec<String>, expected: Vec<String> },
    #[error("model artifact has {found} coefficients for {N_FEATURES} features")]
    CoefficientCount { found: usize },
    #[error("model artifact has {found} feature ranges for {N_FEATURES} features")]
    RangeCount { found: usize },
    #[error("model artifact's range of feature `{feature}` is not a finite interval")]
    InvalidRange { feature: &'static str },
    #[error("model artifact has a non-finite coefficient or intercept")]
    NonFinite,
    #[error("model artifact has an empty model_version")]
    EmptyVersion,
    #[error(
        "model artifact's {field} is {len} bytes or has control characters \
         (at most {MAX_VERSION_LEN} printable bytes)"
    )]
    BadVersion { field: &'static str, len: usize },
    #[error("model artifact's lineage has a non-finite {field}")]
    NonFiniteLineage { field: &'static str },
    #[error(
        "model artifact could predict up to {bound:e} USD for a valid trip \
         (the limit is {MAX_PREDICTION:e}): coefficients or feature ranges out of bounds"
    )]
    PredictionBound { bound: f64 },
    #[error(
        "model artifact's golden trips are unusable ({count} trips, at most {MAX_GOLDEN}; first bad: {bad:?})"
    )]
    Golden { count: usize, bad: Option<usize> },
}

impl Lineage {
    /// The lineage of a hand-made model (a stub or a test fixture): no data,
    /// no split, zero metrics. `description` says what it is and lands in
    /// `data_file`, where an operator looks first.
    pub fn hand_made(description: &str) -> Lineage {
        let zero = Scores { rmse: 0.0, mae: 0.0, r2: 0.0 };
        Lineage {
            data_file: description.to_owned(),
            data_sha256: String::new(),
            rows_read: 0,
            rows_used: 0,
            rows_train: 0,
            rows_test: 0,
            rows_dropped: BTreeMap::new(),
            split_seed: 0,
            test_fraction: 0.0,
            metrics: zero,
            baseline: zero,
            trainer_version: String::new(),
            git_commit: None,
            created_at: "1970-01-01T00:00:00Z".to_owned(),
        }
    }
}

impl ModelArtifact {
    /// An artifact of this build's schema and feature set with the given
    /// parameters and feature ranges that clamp nothing (a fitted model
    /// then sets `feature_ranges` to what its training rows spanned).
    pub fn new(
        model_version: impl Into<String>,
        coefficients: [f64; N_FEATURES],
        intercept: f64,
        lineage: Lineage,
    ) -> ModelArtifact {
        ModelArtifact {
            schema_version: SCHEMA_VERSION,
            model_version: model_version.into(),
            feature_set: FEATURE_SET.to_owned(),
            features: crate::features::feature_specs(),
            coefficients: coefficients.to_vec(),
            intercept,
            feature_ranges: feature_domain().to_vec(),
            lineage,
            golden: Vec::new(),
        }
    }

    /// Parses and validates an artifact. The schema version is read first so
    /// an artifact from another version gets that error, not a field error.
    pub fn from_json(text: &str) -> Result<ModelArtifact, ArtifactError> {
        #[derive(Deserialize)]
        struct Header {
            schema_version: u64,
        }
        let header: Header = serde_json::from_str(text)?;
        if header.schema_version != u64::from(SCHEMA_VERSION) {
            return Err(ArtifactError::SchemaVersion { found: header.schema_version });
        }
        let artifact: ModelArtifact = serde_json::from_str(text)?;
        artifact.validate()?;
        Ok(artifact)
    }

    /// Serialises as pretty JSON (the artifact is meant to be read by people).
    pub fn to_json(&self) -> Result<String, ArtifactError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Checks that this artifact can be used by this build's `predict`.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(ArtifactError::SchemaVersion { found: self.schema_version.into() });
        }
        if self.feature_set != FEATURE_SET {
            return Err(ArtifactError::FeatureSet { found: self.feature_set.clone() });
        }
        let names: Vec<&str> = self.features.iter().map(|f| f.name.as_str()).collect();
        if names != FEATURE_NAMES {
            return Err(ArtifactError::FeatureNames {
                found: names.iter().map(|s| (*s).to_owned()).collect(),
                expected: FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
        if self.coefficients.len() != N_FEATURES {
            return Err(ArtifactError::CoefficientCount { found: self.coefficients.len() });
        }
        if self.feature_ranges.len() != N_FEATURES {
            return Err(ArtifactError::RangeCount { found: self.feature_ranges.len() });
        }
        if let Some((name, _)) =
            FEATURE_NAMES.iter().zip(&self.feature_ranges).find(|(_, r)| !r.is_valid())
        {
            return Err(ArtifactError::InvalidRange { feature: name });
        }
        if !self.intercept.is_finite() || self.coefficients.iter().any(|c| !c.is_finite()) {
            return Err(ArtifactError::NonFinite);
        }
        if self.model_version.trim().is_empty() {
            return Err(ArtifactError::EmptyVersion);
        }
        for (field, value) in [
            ("model_version", &self.model_version),
            ("trainer_version", &self.lineage.trainer_version),
        ] {
            if value.len() > MAX_VERSION_LEN || value.chars().any(char::is_control) {
                return Err(ArtifactError::BadVersion { field, len: value.len() });
            }
        }
        let lineage = &self.lineage;
        let numbers = [
            ("test_fraction", lineage.test_fraction),
            ("metrics.rmse", lineage.metrics.rmse),
            ("metrics.mae", lineage.metrics.mae),
            ("metrics.r2", lineage.metrics.r2),
            ("baseline.rmse", lineage.baseline.rmse),
            ("baseline.mae", lineage.baseline.mae),
            ("baseline.r2", lineage.baseline.r2),
        ];
        if let Some((field, _)) = numbers.iter().find(|(_, v)| !v.is_finite()) {
            return Err(ArtifactError::NonFiniteLineage { field });
        }
        let bad_golden = self.golden.iter().position(|g| {
            g.trip.validate().is_err() || !g.fare.is_finite() || g.fare.abs() > MAX_PREDICTION
        });
        if self.golden.len() > MAX_GOLDEN || bad_golden.is_some() {
            return Err(ArtifactError::Golden { count: self.golden.len(), bad: bad_golden });
        }
        let bound = self.prediction_bound();
        if bound.is_nan() || bound > MAX_PREDICTION {
            return Err(ArtifactError::PredictionBound { bound });
        }
        Ok(())
    }

    /// An upper bound on `|linear_response|` over every input, hence on
    /// every prediction.
    ///
    /// Proof: `predict` clamps feature `i` into `[min_i, max_i]` (finite,
    /// checked above), so `|x_i| <= max(|min_i|, |max_i|) = m_i` — also for
    /// a NaN feature, which `clamp` maps to `min_i` — and
    /// `|intercept + sum c_i x_i| <= |intercept| + sum |c_i| m_i`, the value
    /// returned. When that sum is finite and at most [`MAX_PREDICTION`], no
    /// partial sum can overflow, so every prediction is a finite number
    /// within it.
    pub fn prediction_bound(&self) -> f64 {
        self.coefficients
            .iter()
            .zip(&self.feature_ranges)
            .map(|(c, r)| c.abs() * r.min.abs().max(r.max.abs()))
            .fold(self.intercept.abs(), |acc, term| acc + term)
    }

    /// The linear response for one trip, its features clamped into the
    /// training ranges (may still be negative): [`LinearModel`]'s, when the
    /// artifact has a coefficient and a range per feature (every validated
    /// one), else over the pairs it has.
    pub fn linear_response(&self, trip: &Trip) -> f64 {
        match LinearModel::try_from(self) {
            Ok(linear) => linear.linear_response(trip),
            Err(_) => features(trip)
                .iter()
                .zip(&self.feature_ranges)
                .zip(&self.coefficients)
                .fold(self.intercept, |acc, ((x, r), c)| acc + r.clamp(*x) * c),
        }
    }

    /// The predicted fare in USD: the linear response, floored at zero since
    /// no fare is negative. Trainer metrics use this same function.
    pub fn predict(&self, trip: &Trip) -> f64 {
        self.linear_response(trip).max(0.0)
    }

    /// Predicts a batch, in order.
    pub fn predict_batch(&self, trips: &[Trip]) -> Vec<f64> {
        match LinearModel::try_from(self) {
            Ok(linear) => linear.predict_batch(trips),
            Err(_) => trips.iter().map(|t| self.predict(t)).collect(),
        }
    }
}

/// What [`ModelArtifact::predict`] reads of an artifact, in arrays of one
/// entry per feature: a caller that predicts often (the service) builds it
/// once, and the clamps and the dot product run over fixed-size arrays
/// with no length to check. It computes exactly what the artifact's
/// vectors did: the same clamps, products and sums in the same order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearModel {
    intercept: f64,
    coefficients: [f64; N_FEATURES],
    min: [f64; N_FEATURES],
    max: [f64; N_FEATURES],
}

impl TryFrom<&ModelArtifact> for LinearModel {
    type Error = ArtifactError;

    /// Fails when the artifact has not one coefficient and one range per
    /// feature (which [`ModelArtifact::validate`] refuses).
    fn try_from(artifact: &ModelArtifact) -> Result<LinearModel, ArtifactError> {
        let coefficients: [f64; N_FEATURES] =
            artifact.coefficients.as_slice().try_into().map_err(|_| {
                ArtifactError::CoefficientCount { found: artifact.coefficients.len() }
            })?;
        let ranges: &[FeatureRange; N_FEATURES] = artifact
            .feature_ranges
            .as_slice()
            .try_into()
            .map_err(|_| ArtifactError::RangeCount { found: artifact.feature_ranges.len() })?;
        Ok(LinearModel {
            intercept: artifact.intercept,
            coefficients,
            min: ranges.map(|r| r.min),
            max: ranges.map(|r| r.max),
        })
    }
}

impl LinearModel {
    /// [`ModelArtifact::linear_response`]: the intercept plus each clamped
    /// feature times its coefficient, added in feature order.
    pub fn linear_response(&self, trip: &Trip) -> f64 {
        let x = features(trip);
        // `FeatureRange::clamp` with the same operands; the products in a
        // pass of their own (no order to keep), then the sum in order.
        let terms: [f64; N_FEATURES] = std::array::from_fn(|i| {
            FeatureRange { min: self.min[i], max: self.max[i] }.clamp(x[i]) * self.coefficients[i]
        });
        terms.iter().fold(self.intercept, |acc, term| acc + term)
    }

    /// [`ModelArtifact::predict`].
    pub fn predict(&self, trip: &Trip) -> f64 {
        self.linear_response(trip).max(0.0)
    }

    /// Predicts a batch, in order.
    pub fn predict_batch(&self, trips: &[Trip]) -> Vec<f64> {
        trips.iter().map(|t| self.predict(t)).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small, valid artifact for tests.
    pub(crate) fn sample() -> ModelArtifact {
        let mut lineage = Lineage::hand_made("trips.csv");
        lineage.rows_dropped.insert("zero_coordinates".into(), 1);
        ModelArtifact::new(
            "test-1",
            [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5],
            3.0,
            lineage,
        )
    }

    #[test]
    fn round_trips_through_json() {
        let a = sample();
        let back = ModelArtifact::from_json(&a.to_json().unwrap()).unwrap();
        assert_eq!(a, back);
    }

    #[test]
    fn predicts_the_linear_formula() {
        let a = sample();
        let t = Trip::from_values([40.7, -74.0, 40.7, -74.0, 2.0]).unwrap();
        assert_eq!(a.predict(&t), 3.0 + 0.5 * 2.0);
        let far = Trip::from_values([40.7, -74.0, 40.8, -74.0, 0.0]).unwrap();
        let expected = 3.0 + 2.0 * features(&far)[0];
        assert_eq!(a.predict(&far), expected);
        assert_eq!(a.predict_batch(&[t, far]), vec![4.0, expected]);
    }

    /// `linear_response` as it was before [`LinearModel`], frozen: a fold
    /// over the artifact's vectors.
    fn linear_response_before(a: &ModelArtifact, trip: &Trip) -> f64 {
        features(trip)
            .iter()
            .zip(&a.feature_ranges)
            .zip(&a.coefficients)
            .fold(a.intercept, |acc, ((x, r), c)| acc + x.max(r.min).min(r.max) * c)
    }

    /// The arrays change no bit of any prediction, with ranges that clamp
    /// every feature, some of them or none, and coefficients of every sign
    /// and magnitude.
    #[test]
    fn the_linear_model_is_the_frozen_fold_to_the_bit() {
        let mut fitted = sample();
        fitted.coefficients = vec![2.1, -0.7, 0.35, 1e-3, -2e-3, 0.5, 0.25, -1.5, 3.0, 0.125];
        fitted.intercept = -1.75;
        fitted.feature_ranges = vec![
            FeatureRange { min: 0.05, max: 60.0 },
            FeatureRange { min: 0.2, max: 7.7 },
            FeatureRange { min: 0.0, max: 90.0 },
            FeatureRange { min: 0.5, max: 40.0 },
            FeatureRange { min: 0.5, max: 40.0 },
            FeatureRange { min: -0.0, max: 30.0 },
            FeatureRange { min: 1.0, max: 1.0 },
            FeatureRange { min: 2.0, max: 45.0 },
            FeatureRange { min: 2.0, max: 45.0 },
            FeatureRange { min: 1.0, max: 6.0 },
        ];
        let models = [sample(), fitted];
        for model in &models {
            let linear = LinearModel::try_from(model).unwrap();
            for trip in crate::features::tests::random_trips(200_000) {
                let want = linear_response_before(model, &trip);
                assert_eq!(model.linear_response(&trip).to_bits(), want.to_bits(), "{trip:?}");
                assert_eq!(linear.linear_response(&trip).to_bits(), want.to_bits(), "{trip:?}");
                assert_eq!(linear.predict(&trip).to_bits(), want.max(0.0).to_bits());
            }
        }
        let mut short = sample();
        short.coefficients.pop();
        let trip = Trip::from_values([40.7, -74.0, 40.8, -73.9, 1.0]).unwrap();
        assert!(LinearModel::try_from(&short).is_err());
        assert_eq!(short.linear_response(&trip), linear_response_before(&short, &trip));
    }

    #[test]
    fn floors_negative_fares_at_zero() {
        let mut a = sample();
        a.intercept = -100.0;
        let t = Trip::from_values([40.7, -74.0, 40.7, -74.0, 2.0]).unwrap();
        assert_eq!(a.linear_response(&t), -99.0);
        assert_eq!(a.predict(&t), 0.0);
    }

    #[test]
    fn clamps_features_into_the_training_ranges() {
        let mut a = sample();
        let arctic = Trip::from_values(crate::trip::DOCUMENTED_TRIP).unwrap();
        let raw = features(&arctic);
        assert!(raw[0] > 1000.0, "{raw:?}");
        // Unclamped: the domain holds every trip.
        assert_eq!(a.linear_response(&arctic), 3.0 + 2.0 * raw[0] + 0.5 * 2.0);
        a.feature_ranges[0] = FeatureRange { min: 0.1, max: 60.0 };
        a.feature_ranges[9] = FeatureRange { min: 1.0, max: 6.0 };
        assert_eq!(a.linear_response(&arctic), 3.0 + 2.0 * 60.0 + 0.5 * 2.0);
        let seven = Trip { passenger_count: 9, ..arctic };
        assert_eq!(a.predict(&seven), 3.0 + 2.0 * 60.0 + 0.5 * 6.0);
        // Inside the ranges nothing changes.
        let short = Trip::from_values([40.7, -74.0, 40.75, -74.0, 2.0]).unwrap();
        assert_eq!(a.predict(&short), 3.0 + 2.0 * features(&short)[0] + 1.0);
    }

    #[test]
    fn refuses_broken_artifacts() {
        let good = sample().to_json().unwrap();
        let cases: Vec<(String, &str)> = vec![
            ("{".into(), "not valid JSON"),
            ("[]".into(), "not valid JSON"),
            (good.replace("\"schema_version\": 1", "\"schema_version\": 99"), "schema version 99"),
            (good.replace(FEATURE_SET, "other-v9"), "feature set"),
            (good.replace("\"haversine_km\"", "\"distance\""), "features"),
            (
                good.replace("\"model_version\": \"test-1\"", "\"model_version\": \" \""),
                "empty model_version",
            ),
            (good.replace("\"intercept\": 3.0", "\"intercept\": \"x\""), "not valid JSON"),
        ];
        for (text, want) in cases {
            let err = ModelArtifact::from_json(&text).expect_err(want).to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        let mut short = sample();
        short.coefficients.pop();
        assert!(matches!(short.validate(), Err(ArtifactError::CoefficientCount { found: 9 })));
        let mut ranges = sample();
        ranges.feature_ranges.pop();
        assert!(matches!(ranges.validate(), Err(ArtifactError::RangeCount { found: 9 })));
        let mut empty = sample();
        empty.feature_ranges[2] = FeatureRange::EMPTY;
        let err = empty.validate().expect_err("empty range").to_string();
        assert!(err.contains("manhattan_km"), "{err}");
        let mut nan = sample();
        nan.coefficients[0] = f64::NAN;
        assert!(matches!(nan.validate(), Err(ArtifactError::NonFinite)));
    }

    #[test]
    fn refuses_artifacts_that_could_predict_absurd_fares() {
        // 1e308 is finite, but times a distance it is not.
        let mut huge = sample();
        huge.coefficients[0] = 1e308;
        assert!(matches!(huge.validate(), Err(ArtifactError::PredictionBound { .. })));
        let text = huge.to_json().unwrap();
        let err = ModelArtifact::from_json(&text).expect_err("1e308").to_string();
        assert!(err.contains("could predict up to"), "{err}");
        // A coefficient that could only matter outside the feature range is
        // harmless once features are clamped.
        let mut clamped = sample();
        clamped.coefficients[0] = 1e9;
        clamped.feature_ranges[0] = FeatureRange { min: 0.0, max: 1e-4 };
        assert!(clamped.validate().is_ok());
        assert!(clamped.prediction_bound() <= MAX_PREDICTION);
        let mut far = sample();
        far.feature_ranges[9] = FeatureRange { min: 0.0, max: 1e300 };
        assert!(matches!(far.validate(), Err(ArtifactError::PredictionBound { .. })));
    }

    #[test]
    fn predictions_stay_within_the_bound_for_extreme_trips() {
        let a = sample();
        let bound = a.prediction_bound();
        for values in [
            [90.0, 180.0, -90.0, -180.0, 9.0],
            [-90.0, -180.0, 90.0, 180.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [40.7, -74.0, -40.7, 106.0, 6.0],
        ] {
            let trip = Trip::from_values(values).unwrap();
            let p = a.predict(&trip);
            assert!(p.is_finite() && p.abs() <= bound, "{values:?}: {p} > {bound}");
        }
    }

    #[test]
    fn refuses_long_or_control_versions() {
        let mut long = sample();
        long.model_version = "v".repeat(MAX_VERSION_LEN + 1);
        assert!(matches!(long.validate(), Err(ArtifactError::BadVersion { len: 129, .. })));
        let mut newline = sample();
        newline.model_version = "v1\nx".into();
        assert!(newline.validate().is_err());
        let mut trainer = sample();
        trainer.lineage.trainer_version = "t".repeat(10_000);
        let err = trainer.validate().expect_err("long trainer version").to_string();
        assert!(err.contains("trainer_version"), "{err}");
        let mut ok = sample();
        ok.model_version = "m".repeat(MAX_VERSION_LEN);
        assert!(ok.validate().is_ok());
    }
}
