//! Regression quality: RMSE, MAE and R², computed in one streaming pass so
//! the trainer can score millions of held-out rows without holding them.

use serde::{Deserialize, Serialize};

/// Regression quality on a set of rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub rmse: f64,
    pub mae: f64,
    pub r2: f64,
}

impl Scores {
    /// Scores predictions against truth. Empty input gives NaNs.
    pub fn compute(truth: &[f64], predicted: &[f64]) -> Scores {
        let mut acc = ScoreAccumulator::default();
        truth.iter().zip(predicted).for_each(|(t, p)| acc.push(*t, *p));
        acc.finish()
    }
}

/// Accumulates RMSE, MAE and R² over (truth, prediction) pairs.
#[derive(Debug, Clone, Default)]
pub struct ScoreAccumulator {
    n: u64,
    /// Welford mean and centred sum of squares of the truth, for R².
    mean: f64,
    sst: f64,
    sse: f64,
    sae: f64,
}

impl ScoreAccumulator {
    pub fn push(&mut self, truth: f64, predicted: f64) {
        self.n += 1;
        let d = truth - self.mean;
        self.mean += d / self.n as f64;
        self.sst += d * (truth - self.mean);
        let e = truth - predicted;
        self.sse += e * e;
        self.sae += e.abs();
    }

    /// The scores; NaN when no pair was pushed (as `Scores::compute`).
    pub fn finish(&self) -> Scores {
        let n = self.n as f64;
        Scores { rmse: (self.sse / n).sqrt(), mae: self.sae / n, r2: 1.0 - self.sse / self.sst }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_mean_predictions() {
        let y = [1.0, 2.0, 3.0, 4.0];
        let s = Scores::compute(&y, &y);
        assert_eq!((s.rmse, s.mae, s.r2), (0.0, 0.0, 1.0));
        let m = Scores::compute(&y, &[2.5; 4]);
        assert_eq!(m.r2, 0.0);
        assert_eq!(m.mae, 1.0);
        assert!((m.rmse - 1.25f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn streaming_matches_the_two_pass_definition() {
        let truth: Vec<f64> = (0..1000).map(|i| 5.0 + (f64::from(i) * 0.7).sin() * 4.0).collect();
        let pred: Vec<f64> =
            truth.iter().enumerate().map(|(i, t)| t + (i % 7) as f64 - 3.0).collect();
        let s = Scores::compute(&truth, &pred);
        let n = truth.len() as f64;
        let mean = truth.iter().sum::<f64>() / n;
        let sse: f64 = truth.iter().zip(&pred).map(|(t, p)| (t - p) * (t - p)).sum();
        let sst: f64 = truth.iter().map(|t| (t - mean) * (t - mean)).sum();
        let sae: f64 = truth.iter().zip(&pred).map(|(t, p)| (t - p).abs()).sum();
        for (x, y) in [(s.rmse, (sse / n).sqrt()), (s.mae, sae / n), (s.r2, 1.0 - sse / sst)] {
            assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "{x} {y}");
        }
    }

    #[test]
    fn empty_is_nan() {
        let s = ScoreAccumulator::default().finish();
        assert!(s.rmse.is_nan() && s.mae.is_nan() && s.r2.is_nan());
    }
}
