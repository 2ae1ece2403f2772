//! `metrics.json`: what a training run reports to machines — the pipeline's
//! quality gate, CI's job artifacts and the benchmarks. The trainer writes
//! it and xtask reads it through this one type, so the two cannot disagree
//! on a key.
//!
//! Everything in it but the condition number is also in the artifact's
//! lineage; the file exists so a reader need not load (or trust) a model
//! to see how it scored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::artifact::ModelArtifact;
use crate::features::FEATURE_NAMES;
use crate::scores::Scores;

/// `metrics.json`: the DESIGN shape (`model`, `baseline`, `rows`) plus the
/// model's identity and its fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Held-out scores of the model.
    pub model: Scores,
    /// Held-out scores of predicting the training mean fare.
    pub baseline: Scores,
    pub rows: Rows,
    pub model_version: String,
    pub data_file: String,
    pub data_sha256: String,
    pub split_seed: u64,
    pub test_fraction: f64,
    /// Of the scaled normal equations the fit solved.
    pub condition_number: f64,
    pub intercept: f64,
    /// By feature name.
    pub coefficients: BTreeMap<String, f64>,
}

/// What became of the data records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    /// Data records in the CSV.
    pub read: u64,
    /// Records that survived cleaning (train + test).
    pub used: u64,
    pub train: u64,
    pub test: u64,
    /// Records dropped, by the name of their first failing reason.
    pub dropped: BTreeMap<String, u64>,
}

impl Metrics {
    /// The metrics of a trained artifact whose fit had `condition_number`.
    pub fn of(artifact: &ModelArtifact, condition_number: f64) -> Metrics {
        let l = &artifact.lineage;
        Metrics {
            model: l.metrics,
            baseline: l.baseline,
            rows: Rows {
                read: l.rows_read,
                used: l.rows_used,
                train: l.rows_train,
                test: l.rows_test,
                dropped: l.rows_dropped.clone(),
            },
            model_version: artifact.model_version.clone(),
            data_file: l.data_file.clone(),
            data_sha256: l.data_sha256.clone(),
            split_seed: l.split_seed,
            test_fraction: l.test_fraction,
            condition_number,
            intercept: artifact.intercept,
            coefficients: FEATURE_NAMES
                .iter()
                .zip(&artifact.coefficients)
                .map(|(n, c)| ((*n).to_owned(), *c))
                .collect(),
        }
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    pub fn from_json(text: &str) -> Result<Metrics, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::Lineage;
    use crate::features::N_FEATURES;

    #[test]
    fn reads_back_what_it_writes_in_the_documented_shape() {
        let mut coefficients = [0.0; N_FEATURES];
        coefficients[0] = 2.0;
        let mut artifact = ModelArtifact::new("m1", coefficients, 2.5, Lineage::hand_made("x"));
        artifact.lineage.rows_read = 10;
        artifact.lineage.rows_used = 8;
        artifact.lineage.rows_dropped.insert("zero_coordinates".into(), 2);
        let metrics = Metrics::of(&artifact, 740.0);
        let text = metrics.to_json().unwrap();
        assert_eq!(Metrics::from_json(&text).unwrap(), metrics);

        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["rows"]["read"], 10);
        assert_eq!(v["rows"]["dropped"]["zero_coordinates"], 2);
        assert_eq!(v["coefficients"][FEATURE_NAMES[0]], 2.0);
        assert_eq!(v["condition_number"], 740.0);
        assert!(v["model"]["r2"].is_number() && v["baseline"]["rmse"].is_number());
    }

    #[test]
    fn refuses_a_file_without_the_scores() {
        assert!(Metrics::from_json(r#"{"rows":{"read":1}}"#).is_err());
    }
}
