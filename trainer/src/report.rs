//! What a run tells people and machines: the readable report on stdout and
//! `metrics.json` (the shape the pipeline's quality gate and CI read).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use model::{FEATURE_NAMES, Scores};
use serde::Serialize;

use crate::clean::DropReason;
use crate::train::Trained;

/// `metrics.json`: the DESIGN shape plus identification and the fit.
#[derive(Debug, Serialize)]
pub struct Metrics {
    pub model: Scores,
    pub baseline: Scores,
    pub rows: Rows,
    pub model_version: String,
    pub data_file: String,
    pub data_sha256: String,
    pub split_seed: u64,
    pub test_fraction: f64,
    pub condition_number: f64,
    pub intercept: f64,
    pub coefficients: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct Rows {
    pub read: u64,
    pub used: u64,
    pub train: u64,
    pub test: u64,
    pub dropped: BTreeMap<String, u64>,
}

impl Metrics {
    pub fn of(t: &Trained) -> Metrics {
        let a = &t.artifact;
        let l = &a.lineage;
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
            model_version: a.model_version.clone(),
            data_file: l.data_file.clone(),
            data_sha256: l.data_sha256.clone(),
            split_seed: l.split_seed,
            test_fraction: l.test_fraction,
            condition_number: t.condition,
            intercept: a.intercept,
            coefficients: FEATURE_NAMES
                .iter()
                .zip(&a.coefficients)
                .map(|(n, c)| ((*n).to_owned(), *c))
                .collect(),
        }
    }
}

/// The human-readable report.
pub fn render(t: &Trained) -> String {
    let a = &t.artifact;
    let l = &a.lineage;
    let r = &t.rows;
    let mut s = String::new();
    let pct = |n: u64| if r.read == 0 { 0.0 } else { 100.0 * n as f64 / r.read as f64 };
    let _ =
        writeln!(s, "model {}  (data {}, sha256 {})", a.model_version, l.data_file, l.data_sha256);
    let _ = writeln!(s, "\nrows");
    let _ = writeln!(s, "  read   {:>10}", r.read);
    let _ = writeln!(s, "  used   {:>10}  ({:.1}%)", r.used(), pct(r.used()));
    let _ = writeln!(
        s,
        "  train  {:>10}\n  test   {:>10}  (seed {}, fraction {})",
        r.train, r.test, l.split_seed, l.test_fraction
    );
    let _ = writeln!(s, "  dropped {:>9}  ({:.1}%)", r.dropped.total(), pct(r.dropped.total()));
    for reason in DropReason::ORDER {
        let n = r.dropped.get(reason);
        if n == 0 {
            continue;
        }
        let lines = r.examples.get(&reason).map(|v| {
            let v: Vec<String> = v.iter().map(u64::to_string).collect();
            format!("  e.g. line {}", v.join(", "))
        });
        let _ = writeln!(s, "    {:<30}{n:>8}{}", reason.name(), lines.unwrap_or_default());
    }
    let _ = writeln!(s, "\nheld-out scores      RMSE      MAE       R²");
    for (name, sc) in [("model", l.metrics), ("baseline (mean)", l.baseline)] {
        let _ = writeln!(s, "  {name:<16} {:>8.4} {:>8.4} {:>8.4}", sc.rmse, sc.mae, sc.r2);
    }
    let _ = writeln!(s, "\ncoefficients (condition number {:.3e})", t.condition);
    let _ = writeln!(s, "  {:<20} {:>14.6}", "intercept", a.intercept);
    for (n, c) in FEATURE_NAMES.iter().zip(&a.coefficients) {
        let _ = writeln!(s, "  {n:<20} {c:>14.6}");
    }
    s
}
