//! The shadow comparison: live predictions mirrored to the new color
//! before any traffic moves; each color keeps, per request id
//! (`X-Request-Id`), the fares it answered; the shell collects both lists
//! and [`judge`] joins them by id and compares what users would have
//! seen change. Pure.
//!
//! A request's answer is a batch of fares, compared element by element;
//! a batch of another length, or a fare that is not a number, counts as
//! changed. The distribution of fares is compared too, as the population
//! stability index over fixed bins ([`BINS`]), so a model that moves
//! every fare a little is seen even when no single one moves past the
//! tolerance.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::compare::{Check, Criterion};
use crate::manifest::strategy::Shadow;

/// The most answers of each color judged: what the shell keeps is
/// bounded, and so is what this reads of it.
pub const MAX_ANSWERS: usize = 10_000;

/// The fare bins of the PSI, in dollars: the lower edges, the last bin
/// open above. Fixed rather than taken from the data, so that two
/// rollouts' figures mean the same; spaced as NYC fares are (most
/// between $5 and $30, the airports' flat fares near $52–70).
pub const BINS: [f64; 12] = [0.0, 5.0, 7.5, 10.0, 12.5, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 75.0];

/// The share an empty bin is taken to hold, so the PSI's logarithm stays
/// finite: one in ten thousand. A bin empty on both sides adds nothing.
pub const EMPTY_BIN: f64 = 1e-4;

/// What one color answered to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub request_id: String,
    pub fares: Vec<f64>,
}

/// Both colors' answers over the same window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Answers {
    /// The live color's.
    pub stable: Vec<Answer>,
    /// The new color's, to the mirrored copies of the same requests.
    pub canary: Vec<Answer>,
}

/// The comparison, kept in the rollout's summary: /status and the
/// history show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// Requests both colors answered.
    pub compared: u32,
    /// Answers of either color with no partner (a mirror lost, a list
    /// cut at its bound).
    pub unmatched: u32,
    /// Compared requests whose answer changed.
    pub changed: u32,
    /// `None` where not a number (nothing compared).
    pub changed_share: Option<f64>,
    /// Mean and largest absolute change of a fare, in dollars, over the
    /// fares both colors gave.
    pub mean_change: Option<f64>,
    pub max_change: Option<f64>,
    pub psi: Option<f64>,
    pub checks: Vec<Check>,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Joins the two colors' answers by request id and judges them against
/// the manifest's thresholds. A request id seen twice on one side keeps
/// its first answer.
pub fn judge(limits: &Shadow, answers: &Answers) -> Judgement {
    let bounded = |list: &Vec<Answer>| list.len().min(MAX_ANSWERS);
    let stable = &answers.stable[..bounded(&answers.stable)];
    let canary = &answers.canary[..bounded(&answers.canary)];
    let mut by_id: HashMap<&str, &[f64]> = HashMap::with_capacity(stable.len());
    for a in stable {
        by_id.entry(a.request_id.as_str()).or_insert(&a.fares);
    }
    let mut seen: HashMap<&str, ()> = HashMap::with_capacity(canary.len());
    let (mut compared, mut changed) = (0u32, 0u32);
    let (mut sum, mut pairs, mut max) = (0.0f64, 0u64, 0.0f64);
    let (mut old_fares, mut new_fares) = (Vec::new(), Vec::new());
    for a in canary {
        let Some(old) = by_id.get(a.request_id.as_str()) else { continue };
        if seen.insert(a.request_id.as_str(), ()).is_some() {
            continue;
        }
        compared += 1;
        let mut moved = old.len() != a.fares.len();
        for (o, n) in old.iter().zip(&a.fares) {
            if !(o.is_finite() && n.is_finite()) {
                moved = true;
                continue;
            }
            let change = (n - o).abs();
            moved |= change > limits.tolerance;
            sum += change;
            pairs += 1;
            max = max.max(change);
            old_fares.push(*o);
            new_fares.push(*n);
        }
        changed += u32::from(moved);
    }
    let unmatched = (stable.len() + canary.len()).saturating_sub(2 * compared as usize);
    let share = f64::from(changed) / f64::from(compared);
    let mean = sum / pairs as f64;
    let psi = psi(&old_fares, &new_fares);
    let finite = |x: f64| x.is_finite().then_some(x);
    let mut checks =
        vec![Check::new(Criterion::Compared, compared.into(), limits.min_requests.into(), true)];
    if let Some(max) = limits.max_changed {
        checks.push(Check::new(Criterion::Changed, share, max, false));
    }
    if let Some(max) = limits.max_mean_change {
        checks.push(Check::new(Criterion::MeanChange, mean, max, false));
    }
    if let Some(max) = limits.max_psi {
        checks.push(Check::new(Criterion::Psi, psi, max, false));
    }
    let reason = checks.iter().find(|c| !c.passed).map(|c| match c.criterion {
        Criterion::Compared => format!(
            "shadow: only {compared} requests were answered by both colors, at least {} needed \
             ({unmatched} answers had no partner)",
            limits.min_requests
        ),
        Criterion::Changed => format!(
            "shadow: {changed} of {compared} answers ({:.2}%) moved by more than ${:.2}, at most \
             {:.2}% allowed (mean change ${mean:.2}, largest ${max:.2})",
            share * 100.0,
            limits.tolerance,
            c.limit * 100.0
        ),
        Criterion::MeanChange => format!(
            "shadow: fares moved by ${mean:.2} on average over {compared} requests, at most \
             ${:.2} allowed",
            c.limit
        ),
        Criterion::Psi => format!(
            "shadow: the fares' population stability index is {psi:.3} over {compared} \
             requests, at most {} allowed",
            c.limit
        ),
        other => format!("shadow: {other:?} failed"),
    });
    Judgement {
        compared,
        unmatched: u32::try_from(unmatched).unwrap_or(u32::MAX),
        changed,
        changed_share: finite(share),
        mean_change: finite(mean),
        max_change: (pairs > 0).then_some(max),
        psi: finite(psi),
        passed: reason.is_none(),
        checks,
        reason,
    }
}

/// The bin of a fare: the last lower edge at or below it (a negative fare,
/// which the service never gives, in the first).
fn bin(fare: f64) -> usize {
    BINS.iter().rposition(|edge| fare >= *edge).unwrap_or(0)
}

/// PSI = Σ (new − old) · ln(new / old) over the bins' shares, an empty
/// bin's share taken as [`EMPTY_BIN`]. NaN when either side has no fare.
pub fn psi(old: &[f64], new: &[f64]) -> f64 {
    if old.is_empty() || new.is_empty() {
        return f64::NAN;
    }
    let shares = |fares: &[f64]| {
        let mut counts = [0u64; BINS.len()];
        for f in fares {
            counts[bin(*f)] += 1;
        }
        counts.map(|c| c as f64 / fares.len() as f64)
    };
    let (o, n) = (shares(old), shares(new));
    o.iter()
        .zip(&n)
        .filter(|(o, n)| **o > 0.0 || **n > 0.0)
        .map(|(o, n)| {
            let (o, n) = (o.max(EMPTY_BIN), n.max(EMPTY_BIN));
            (n - o) * (n / o).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Shadow {
        Shadow {
            duration: Duration::from_secs(30),
            min_requests: 200,
            tolerance: 0.5,
            max_changed: Some(0.01),
            max_psi: Some(0.1),
            max_mean_change: Some(0.25),
        }
    }

    /// `n` requests with fares spread from $5 to $60, as the stable color
    /// answers them, and the new color's after `change`.
    fn answers(n: usize, change: impl Fn(usize, f64) -> Vec<f64>) -> Answers {
        let fare = |i: usize| 5.0 + (i % 110) as f64 * 0.5;
        let answer = |i: usize, fares: Vec<f64>| Answer { request_id: format!("req-{i}"), fares };
        Answers {
            stable: (0..n).map(|i| answer(i, vec![fare(i)])).collect(),
            canary: (0..n).map(|i| answer(i, change(i, fare(i)))).collect(),
        }
    }

    #[test]
    fn identical_answers_pass() {
        let j = judge(&limits(), &answers(300, |_, f| vec![f]));
        assert!(j.passed, "{j:?}");
        assert_eq!((j.compared, j.changed, j.unmatched), (300, 0, 0));
        assert_eq!(
            (j.changed_share, j.mean_change, j.max_change, j.psi),
            (Some(0.0), Some(0.0), Some(0.0), Some(0.0))
        );
        assert!(j.checks.iter().all(|c| c.passed));
        assert_eq!(j.checks.len(), 4);
    }

    #[test]
    fn a_three_dollar_shift_is_refused() {
        let j = judge(&limits(), &answers(300, |_, f| vec![f + 3.0]));
        assert!(!j.passed);
        assert_eq!((j.compared, j.changed), (300, 300));
        assert_eq!(j.changed_share, Some(1.0));
        assert!((j.mean_change.unwrap() - 3.0).abs() < 1e-9);
        assert!(j.psi.unwrap() > 0.1, "{j:?}");
        let why = j.reason.unwrap();
        assert!(why.contains("300 of 300") && why.contains("$0.50"), "{why}");
        // Each threshold alone refuses it too.
        for only in [
            Shadow { max_psi: None, max_mean_change: None, ..limits() },
            Shadow { max_changed: None, max_psi: None, ..limits() },
            Shadow { max_changed: None, max_mean_change: None, ..limits() },
        ] {
            assert!(!judge(&only, &answers(300, |_, f| vec![f + 3.0])).passed, "{only:?}");
        }
    }

    #[test]
    fn small_changes_within_the_tolerance_pass_and_a_few_large_ones_count() {
        let j = judge(&limits(), &answers(300, |_, f| vec![f + 0.1]));
        assert!(j.passed, "{j:?}");
        // 2 of 300 moved by $5: 0.67% changed, within 1%; the mean too.
        let two = |i: usize, f: f64| vec![if i < 2 { f + 5.0 } else { f }];
        let j = judge(&limits(), &answers(300, two));
        assert_eq!(j.changed, 2);
        assert!(j.passed, "{j:?}");
        assert_eq!(j.max_change, Some(5.0));
        // 10 of 300: 3.3%, refused.
        let ten = |i: usize, f: f64| vec![if i < 10 { f + 5.0 } else { f }];
        assert!(!judge(&limits(), &answers(300, ten)).passed);
    }

    #[test]
    fn batches_compare_element_wise_and_a_length_mismatch_changes() {
        let batch = |_: usize, f: f64| vec![f, f + 1.0];
        let mut a = answers(250, batch);
        for s in &mut a.stable {
            s.fares = vec![s.fares[0], s.fares[0] + 1.0];
        }
        assert!(judge(&limits(), &a).passed);
        // One request answered with one fare fewer, one with NaN.
        a.canary[0].fares.pop();
        a.canary[1].fares[1] = f64::NAN;
        let j = judge(&limits(), &a);
        assert_eq!(j.changed, 2);
        assert!(j.mean_change.is_some_and(f64::is_finite));
    }

    #[test]
    fn too_few_compared_requests_never_pass() {
        let j = judge(&limits(), &answers(150, |_, f| vec![f]));
        assert!(!j.passed);
        let c = j.checks[0];
        assert_eq!(
            (c.criterion, c.measured, c.limit, c.passed),
            (Criterion::Compared, Some(150.0), 200.0, false)
        );
        assert!(j.reason.unwrap().contains("only 150 requests"));
        // Nothing at all: no figure is a number, and nothing passes.
        let j = judge(&limits(), &Answers::default());
        assert!(!j.passed);
        assert_eq!((j.changed_share, j.mean_change, j.max_change, j.psi), (None, None, None, None));
        // Answers that do not join (mirrors lost) are counted apart.
        let mut a = answers(300, |_, f| vec![f]);
        for c in &mut a.canary {
            c.request_id.push('x');
        }
        let j = judge(&limits(), &a);
        assert_eq!((j.compared, j.unmatched, j.passed), (0, 600, false));
    }

    #[test]
    fn duplicates_keep_the_first_answer_and_lists_are_bounded() {
        let mut a = answers(300, |_, f| vec![f]);
        let mut again = a.canary[0].clone();
        again.fares[0] += 10.0;
        a.canary.push(again);
        let j = judge(&limits(), &a);
        assert_eq!((j.compared, j.changed), (300, 0));
        let big = answers(MAX_ANSWERS + 10, |_, f| vec![f]);
        assert_eq!(judge(&limits(), &big).compared as usize, MAX_ANSWERS);
    }

    #[test]
    fn the_psi_bins_and_empty_bins() {
        assert_eq!((bin(-1.0), bin(0.0), bin(4.99), bin(5.0), bin(1e6)), (0, 0, 0, 1, 11));
        let same = [6.0, 11.0, 52.0];
        assert_eq!(psi(&same, &same), 0.0);
        // Everything moved from one bin to another: large but finite.
        let p = psi(&[6.0; 10], &[60.0; 10]);
        assert!(p.is_finite() && p > 5.0, "{p}");
        assert!(psi(&[], &same).is_nan());
    }
}
