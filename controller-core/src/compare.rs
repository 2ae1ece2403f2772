//! The canary's analysis step: the new color judged against the stable
//! color on the same traffic over the same interval, Kayenta's way. Each
//! color's figures come from two readings of its counters (see
//! [`crate::analysis`]: shed answers are capacity, not faults; latency is
//! the p99 of small batches); each criterion allows the new color a ratio
//! of the stable color's figure with an absolute floor, so a stable color
//! with no faults at all does not make a single fault a failure:
//!
//! ```text
//! fail if new_fault_rate > max(maxErrorRatio × stable_fault_rate, errorRateFloor)
//! fail if new_p99        > max(maxP99Ratio   × stable_p99,        p99Floor)
//! ```
//!
//! Too few judged predictions on either color, or figures that are not
//! numbers, never pass: the verdict is then inconclusive, and an interval
//! that ends inconclusive fails the step.

use serde::{Deserialize, Serialize};

use crate::analysis::{self, Figures, Sample};
use crate::manifest::strategy::Comparison;

/// Both colors' counters at one moment, read one right after the other.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub stable: Sample,
    pub canary: Sample,
}

/// What a check measured. The shadow's criteria are here too, so that
/// /status and the history read every comparison the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// `measured`: judged predictions of the color that had fewer;
    /// `limit`: `minRequests`.
    MinRequests,
    /// `measured`: the new color's fault rate; `limit`: the larger of the
    /// ratio times the stable color's and the floor.
    ErrorRate,
    /// `measured`: the new color's p99 in seconds; `limit`: likewise.
    P99,
    /// Shadow: `measured` requests both colors answered; `limit`
    /// `minRequests`.
    Compared,
    /// Shadow: the share of compared requests whose answer changed.
    Changed,
    /// Shadow: the mean absolute change of a fare, in dollars.
    MeanChange,
    /// Shadow: the population stability index of the fares.
    Psi,
}

/// One criterion: what was measured against what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub criterion: Criterion,
    /// `None` where the figure is not a number (JSON has no NaN): it fails.
    pub measured: Option<f64>,
    pub limit: f64,
    pub passed: bool,
}

impl Check {
    /// `measured` at most `limit` (at least, with `at_least`).
    pub fn new(criterion: Criterion, measured: f64, limit: f64, at_least: bool) -> Check {
        let measured = measured.is_finite().then_some(measured);
        let passed = measured.is_some_and(|m| if at_least { m >= limit } else { m <= limit });
        Check { criterion, measured, limit, passed }
    }
}

/// How a comparison came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Passed,
    Failed,
    /// Not enough to judge: never a pass.
    Inconclusive,
}

/// One analysis step's latest comparison, kept in the rollout's summary
/// (and so on /status and in the history) with the figures that decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compared {
    /// The step's index in `spec.strategy.canary.steps`, and the new
    /// color's share of traffic during it.
    pub step: usize,
    pub weight: u8,
    pub stable: Figures,
    pub canary: Figures,
    pub checks: Vec<Check>,
    pub decision: Decision,
    /// Why it did not pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Compared {
    pub fn passed(&self) -> bool {
        self.decision == Decision::Passed
    }
}

/// Judges the interval from `baseline` to `now` of step `step` at
/// `weight` percent.
pub fn judge(
    limits: &Comparison,
    step: usize,
    weight: u8,
    baseline: &Pair,
    now: &Pair,
) -> Compared {
    let stable = analysis::figures(&baseline.stable, &now.stable, 0, 0);
    let canary = analysis::figures(&baseline.canary, &now.canary, 0, 0);
    let fewest = stable.judged().min(canary.judged());
    let enough = Check::new(Criterion::MinRequests, fewest, limits.min_requests.into(), true);
    let error_limit = (limits.max_error_ratio * stable.error_rate).max(limits.error_rate_floor);
    let errors = Check::new(Criterion::ErrorRate, canary.error_rate, error_limit, false);
    let p99_limit = (limits.max_p99_ratio * stable.p99_seconds).max(limits.p99_floor.as_secs_f64());
    let p99 = Check::new(Criterion::P99, canary.p99_seconds, p99_limit, false);
    let at = format!("canary analysis (step {step}, {weight}% of traffic)");
    let (decision, reason) = if !enough.passed {
        let why = format!(
            "{at}: only {} judged predictions of the new color and {} of the stable one in the \
             interval, at least {} each needed",
            canary.judged(),
            stable.judged(),
            limits.min_requests
        );
        (Decision::Inconclusive, Some(why))
    } else if !errors.passed {
        let why = format!(
            "{at}: the new color's fault rate is {} of {} predictions, above max({} × the \
             stable color's {}, {}) = {} ({} shed by the new color, not counted)",
            pct(canary.error_rate),
            canary.judged(),
            limits.max_error_ratio,
            pct(stable.error_rate),
            pct(limits.error_rate_floor),
            pct(error_limit),
            canary.shed
        );
        (Decision::Failed, Some(why))
    } else if !p99.passed {
        let why = format!(
            "{at}: the new color's p99 of small batches is {}, above max({} × the stable \
             color's {}, {}) = {}",
            secs(canary.p99_seconds),
            limits.max_p99_ratio,
            secs(stable.p99_seconds),
            secs(limits.p99_floor.as_secs_f64()),
            secs(p99_limit)
        );
        (Decision::Failed, Some(why))
    } else {
        (Decision::Passed, None)
    };
    Compared { step, weight, stable, canary, checks: vec![enough, errors, p99], decision, reason }
}

fn pct(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

fn secs(s: f64) -> String {
    if s >= f64::MAX {
        "above the largest latency bucket".to_owned()
    } else {
        format!("{:.0} ms", s * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Comparison {
        Comparison::defaults(Duration::from_secs(30))
    }

    /// Counters of `requests` predictions, `faults` failed and `shed`
    /// shed, all small batches answered within `seconds`.
    fn sample(requests: f64, faults: f64, shed: f64, seconds: f64) -> Sample {
        let answered = requests - faults - shed;
        Sample {
            requests,
            errors: faults + shed,
            shed,
            buckets: vec![(seconds, answered), (f64::MAX, answered)],
        }
    }

    fn pair(stable: Sample, canary: Sample) -> Pair {
        Pair { stable, canary }
    }

    fn check(c: &Compared, criterion: Criterion) -> Check {
        *c.checks.iter().find(|k| k.criterion == criterion).unwrap()
    }

    #[test]
    fn a_canary_as_good_as_the_stable_color_passes() {
        let now = pair(sample(1000.0, 2.0, 0.0, 0.01), sample(100.0, 0.0, 0.0, 0.01));
        let c = judge(&limits(), 2, 10, &Pair::default(), &now);
        assert_eq!(c.decision, Decision::Passed, "{c:?}");
        assert!(c.checks.iter().all(|k| k.passed), "{c:?}");
        assert_eq!((c.step, c.weight, c.canary.requests), (2, 10, 100.0));
        assert_eq!(c.reason, None);
    }

    #[test]
    fn faults_above_the_ratio_and_the_floor_fail_with_the_figures() {
        // Stable: 1% faults; new: 5%. Limit: max(2 × 1%, 1%) = 2%.
        let now = pair(sample(1000.0, 10.0, 0.0, 0.01), sample(100.0, 5.0, 0.0, 0.01));
        let c = judge(&limits(), 2, 10, &Pair::default(), &now);
        assert_eq!(c.decision, Decision::Failed);
        let e = check(&c, Criterion::ErrorRate);
        assert_eq!((e.measured, e.limit, e.passed), (Some(0.05), 0.02, false));
        let why = c.reason.unwrap();
        assert!(why.contains("5.00% of 100") && why.contains("= 2.00%"), "{why}");
        // Under the floor: one fault when the stable color had none passes.
        let now = pair(sample(1000.0, 0.0, 0.0, 0.01), sample(100.0, 1.0, 0.0, 0.01));
        assert_eq!(judge(&limits(), 2, 10, &Pair::default(), &now).decision, Decision::Passed);
    }

    #[test]
    fn shed_answers_are_not_faults() {
        // 40 of the new color's 100 shed for capacity: no fault at all.
        let now = pair(sample(1000.0, 0.0, 0.0, 0.01), sample(100.0, 0.0, 40.0, 0.01));
        let c = judge(&limits(), 2, 10, &Pair::default(), &now);
        assert_eq!(c.decision, Decision::Passed, "{c:?}");
        assert_eq!((c.canary.judged(), c.canary.error_rate), (60.0, 0.0));
    }

    #[test]
    fn a_slower_canary_fails_past_ratio_and_floor() {
        // Stable p99 100 ms, new 250 ms: limit max(1.5 × 100, 50) = 150 ms.
        let now = pair(sample(1000.0, 0.0, 0.0, 0.1), sample(100.0, 0.0, 0.0, 0.25));
        let c = judge(&limits(), 4, 50, &Pair::default(), &now);
        assert_eq!(c.decision, Decision::Failed);
        let p = check(&c, Criterion::P99);
        assert_eq!((p.measured, p.passed), (Some(0.25), false));
        assert!((p.limit - 0.15).abs() < 1e-12);
        assert!(c.reason.unwrap().contains("250 ms"));
        // Both fast: the floor allows 40 ms against 10 ms.
        let now = pair(sample(1000.0, 0.0, 0.0, 0.01), sample(100.0, 0.0, 0.0, 0.04));
        assert_eq!(judge(&limits(), 4, 50, &Pair::default(), &now).decision, Decision::Passed);
    }

    #[test]
    fn too_few_predictions_or_figures_that_are_no_numbers_never_pass() {
        let now = pair(sample(1000.0, 0.0, 0.0, 0.01), sample(10.0, 0.0, 0.0, 0.01));
        let c = judge(&limits(), 2, 1, &Pair::default(), &now);
        assert_eq!(c.decision, Decision::Inconclusive);
        let m = check(&c, Criterion::MinRequests);
        assert_eq!((m.measured, m.limit, m.passed), (Some(10.0), 50.0, false));
        assert!(c.reason.unwrap().contains("only 10 judged predictions"));
        // Even a bad-looking canary is inconclusive on too little.
        let now = pair(sample(1000.0, 0.0, 0.0, 0.01), sample(10.0, 10.0, 0.0, 0.01));
        assert!(!judge(&limits(), 2, 1, &Pair::default(), &now).passed());
        // Nothing read since the baseline: inconclusive.
        let same = pair(sample(1000.0, 0.0, 0.0, 0.01), sample(100.0, 0.0, 0.0, 0.01));
        assert_eq!(judge(&limits(), 2, 1, &same, &same).decision, Decision::Inconclusive);
        // NaN is no number: the check fails, and says none.
        let nan = Check::new(Criterion::P99, f64::NAN, 1.0, false);
        assert_eq!((nan.measured, nan.passed), (None, false));
    }

    #[test]
    fn judges_only_what_happened_since_the_baseline() {
        // Faults before the interval are not the canary's now.
        let baseline = pair(sample(1000.0, 0.0, 0.0, 0.01), sample(100.0, 50.0, 0.0, 0.01));
        let mut now = baseline.clone();
        now.stable.requests += 500.0;
        now.canary.requests += 100.0;
        for (_, count) in now.stable.buckets.iter_mut() {
            *count += 500.0;
        }
        for (_, count) in now.canary.buckets.iter_mut() {
            *count += 100.0;
        }
        let c = judge(&limits(), 2, 10, &baseline, &now);
        assert_eq!(c.decision, Decision::Passed, "{c:?}");
        assert_eq!(c.canary.error_rate, 0.0);
    }
}
