//! What a run tells people: the readable report on stdout. What it tells
//! machines, `metrics.json`, is [`model::Metrics`].

use std::fmt::Write as _;

use model::FEATURE_NAMES;

use crate::clean::DropReason;
use crate::train::Trained;

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
