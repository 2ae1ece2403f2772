//! Held-out metrics computed in one streaming pass, with the same
//! definitions as [`model::Scores::compute`] (which needs the rows in memory).

use model::Scores;

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

    pub fn count(&self) -> u64 {
        self.n
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
    fn agrees_with_the_model_crate() {
        let truth: Vec<f64> = (0..1000).map(|i| 5.0 + (f64::from(i) * 0.7).sin() * 4.0).collect();
        let pred: Vec<f64> =
            truth.iter().enumerate().map(|(i, t)| t + (i % 7) as f64 - 3.0).collect();
        let mut acc = ScoreAccumulator::default();
        truth.iter().zip(&pred).for_each(|(t, p)| acc.push(*t, *p));
        let (a, b) = (acc.finish(), Scores::compute(&truth, &pred));
        assert_eq!(acc.count(), 1000);
        for (x, y) in [(a.rmse, b.rmse), (a.mae, b.mae), (a.r2, b.r2)] {
            assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "{x} {y}");
        }
    }

    #[test]
    fn empty_is_nan() {
        let s = ScoreAccumulator::default().finish();
        assert!(s.rmse.is_nan() && s.mae.is_nan() && s.r2.is_nan());
    }
}
