//! The model gates before a switch, as pure checks: the golden trips (the
//! image serves the model its artifact describes), the quality gate (no
//! worse than the live model by more than a margin, R² above a floor), and
//! the prediction diff users would see. The shell gathers the
//! [`Evidence`] over HTTP; [`judge`] decides.

use model::{ModelArtifact, Scores, Trip};
use serde::{Deserialize, Serialize};

use crate::manifest::Gates;

/// Served fares must equal the artifact's to this (relative) tolerance.
const TOLERANCE: f64 = 1e-9;

/// What users would see change, over the golden trips.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub trips: usize,
    /// Mean and largest absolute change of the fare, in dollars.
    pub mean_abs: f64,
    pub max_abs: f64,
    /// Share of trips whose fare changes by more than a dollar.
    pub over_one_dollar: f64,
}

/// What the gates step gathered from the new color and the live one.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// The artifact the new color serves.
    pub new: ModelArtifact,
    /// The new color's fares for the artifact's golden trips and the
    /// model version that answered.
    pub new_fares: Option<(Vec<f64>, String)>,
    /// The live color's artifact, when a color is live.
    pub live: Option<ModelArtifact>,
    /// The live color's fares for the same trips (the diff).
    pub live_fares: Option<Vec<f64>>,
}

/// A trip every model prices: Midtown to JFK.
pub const KNOWN_TRIP: Trip = Trip {
    pickup_latitude: 40.7614,
    pickup_longitude: -73.9776,
    dropoff_latitude: 40.6413,
    dropoff_longitude: -73.7781,
    passenger_count: 1,
};

impl Evidence {
    /// The trips the new color is asked to price.
    pub fn trips(artifact: &ModelArtifact) -> Vec<Trip> {
        artifact.golden.iter().map(|g| g.trip).collect()
    }

    /// The trip the warm-up bursts send: the first golden trip.
    pub fn warm_up_trip(&self) -> Trip {
        self.new.golden.first().map_or(KNOWN_TRIP, |g| g.trip)
    }

    /// The request whose answer the analysis knows in advance: the first
    /// golden trip with the artifact's fare and version.
    pub fn known(&self) -> Known {
        match self.new.golden.first() {
            Some(g) => Known {
                trip: g.trip,
                fare: Some(g.fare),
                model_version: Some(self.new.model_version.clone()),
            },
            None => Known::unchecked(),
        }
    }
}

/// A prediction whose answer is known in advance, which the analysis sends
/// itself when live traffic is too low to judge the release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Known {
    pub trip: Trip,
    /// The fare it must come back with (none known: any finite fare).
    pub fare: Option<f64>,
    pub model_version: Option<String>,
}

impl Known {
    /// The documented trip, with no answer to hold it to.
    pub fn unchecked() -> Known {
        Known { trip: KNOWN_TRIP, fare: None, model_version: None }
    }

    /// Whether `fare` from `model_version` is the answer.
    pub fn check(&self, fare: f64, model_version: &str) -> Result<(), String> {
        if !fare.is_finite() {
            return Err(format!("a known-answer request was priced at {fare}"));
        }
        if let Some(want) = self.model_version.as_deref().filter(|w| *w != model_version) {
            return Err(format!(
                "a known-answer request was answered by model {model_version}, not {want}"
            ));
        }
        match self.fare {
            Some(want) if (fare - want).abs() > TOLERANCE * want.abs().max(1.0) => Err(format!(
                "a known-answer request ({:?}) was priced at {fare}, the artifact promises {want}",
                self.trip.values()
            )),
            _ => Ok(()),
        }
    }
}

/// A gate of the manifest's `spec.gates`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// `measured`: golden trips priced as the artifact promises; `limit`:
    /// the trips it carries.
    Golden,
    /// `measured`: the new model's held-out R²; `limit`: the floor.
    MinR2,
    /// `measured`: its held-out RMSE's increase over the live model's, as
    /// a share; `limit`: the margin.
    MaxRmseIncrease,
    /// `measured`: the p99 of the last warm-up burst in seconds; `limit`:
    /// the budget.
    LatencyBudget,
}

/// What one gate measured against what it allows: kept for each gate that
/// ran, so that a gate which never ran (an earlier one refused) is never
/// shown as passed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub gate: Gate,
    /// `None` where the figure is not a number (JSON has no NaN).
    pub measured: Option<f64>,
    pub limit: f64,
    pub passed: bool,
}

impl Reading {
    pub fn new(gate: Gate, measured: f64, limit: f64, passed: bool) -> Reading {
        Reading { gate, measured: measured.is_finite().then_some(measured), limit, passed }
    }
}

/// The gates' verdict and the readings of those that ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub readings: Vec<Reading>,
    /// The diff users would see when all passed, or the first refusal.
    pub verdict: Result<Option<Diff>, String>,
}

/// Every gate over the evidence, in order, until one refuses: the golden
/// trips (when `gates.golden`), the quality gate; then the diff users
/// would see, when a color is live.
pub fn judge(gates: &Gates, e: &Evidence) -> Judged {
    let mut readings = Vec::new();
    let verdict = judge_into(gates, e, &mut readings);
    Judged { readings, verdict }
}

fn judge_into(
    gates: &Gates,
    e: &Evidence,
    readings: &mut Vec<Reading>,
) -> Result<Option<Diff>, String> {
    if gates.golden {
        let trips = e.new.golden.len() as f64;
        let Some((fares, version)) = &e.new_fares else {
            readings.push(Reading::new(Gate::Golden, 0.0, trips, false));
            return Err("golden trips: the new color's fares were not read".into());
        };
        let checked = check_golden(&e.new, fares, version);
        let matched = if version == &e.new.model_version {
            e.new.golden.iter().zip(fares).filter(|(g, served)| same_fare(**served, g.fare)).count()
        } else {
            0
        };
        readings.push(Reading::new(Gate::Golden, matched as f64, trips, checked.is_ok()));
        checked?;
    }
    check_quality_into(
        gates,
        &e.new.lineage.metrics,
        e.live.as_ref().map(|a| &a.lineage.metrics),
        readings,
    )?;
    Ok(match (&e.live_fares, &e.new_fares) {
        (Some(old), Some((new, _))) if !old.is_empty() => Some(diff(old, new)),
        _ => None,
    })
}

fn same_fare(served: f64, promised: f64) -> bool {
    (served - promised).abs() <= TOLERANCE * promised.abs().max(1.0)
}

/// The new color answered the golden trips with `fares` from
/// `model_version`: both must be the artifact's.
pub fn check_golden(
    artifact: &ModelArtifact,
    fares: &[f64],
    model_version: &str,
) -> Result<(), String> {
    if artifact.golden.is_empty() {
        return Err("golden trips: the artifact carries none to check the image against".into());
    }
    if model_version != artifact.model_version {
        return Err(format!(
            "golden trips: answered by model {model_version}, the artifact is {}",
            artifact.model_version
        ));
    }
    if fares.len() != artifact.golden.len() {
        return Err(format!(
            "golden trips: {} fares for {} trips",
            fares.len(),
            artifact.golden.len()
        ));
    }
    for (i, (g, served)) in artifact.golden.iter().zip(fares).enumerate() {
        if !same_fare(*served, g.fare) {
            return Err(format!(
                "golden trip {i} ({:?}): served {served}, the artifact promises {}",
                g.trip.values(),
                g.fare
            ));
        }
    }
    Ok(())
}

/// The quality gate: `new` against the live model's `live` held-out
/// scores (when there is a live model).
pub fn check_quality(gates: &Gates, new: &Scores, live: Option<&Scores>) -> Result<(), String> {
    check_quality_into(gates, new, live, &mut Vec::new())
}

fn check_quality_into(
    gates: &Gates,
    new: &Scores,
    live: Option<&Scores>,
    readings: &mut Vec<Reading>,
) -> Result<(), String> {
    if let Some(floor) = gates.min_r2 {
        // NaN is under every floor.
        let passed = new.r2 >= floor;
        readings.push(Reading::new(Gate::MinR2, new.r2, floor, passed));
        if !passed {
            return Err(format!(
                "quality gate: held-out R² {:.4} is under the floor {floor:.4}",
                new.r2
            ));
        }
    }
    if let (Some(margin), Some(live)) = (gates.max_rmse_increase, live) {
        let increase = (new.rmse - live.rmse) / live.rmse;
        let passed = increase <= margin;
        readings.push(Reading::new(Gate::MaxRmseIncrease, increase, margin, passed));
        if !passed {
            return Err(format!(
                "quality gate: held-out RMSE {:.3} is {:.1}% above the live model's {:.3} (at most {:.1}% allowed)",
                new.rmse,
                increase * 100.0,
                live.rmse,
                margin * 100.0
            ));
        }
    }
    Ok(())
}

/// The latency budget: the p99 of a warm-up burst's request times must be
/// within `budget`. Returns the p99 either way.
pub fn check_latency(
    times: &mut [std::time::Duration],
    budget: std::time::Duration,
) -> Result<std::time::Duration, String> {
    let Some(p99) = p99(times) else {
        return Err("latency budget: the warm-up sent nothing".into());
    };
    if p99 <= budget {
        Ok(p99)
    } else {
        Err(format!(
            "latency budget: p99 of a {}-request warm-up is {:.1} ms, over {} ms",
            times.len(),
            p99.as_secs_f64() * 1e3,
            budget.as_millis()
        ))
    }
}

/// The 99th percentile of request times (none of no request).
pub fn p99(times: &mut [std::time::Duration]) -> Option<std::time::Duration> {
    times.sort();
    times.get(times.len().checked_sub(1)? * 99 / 100).copied()
}

/// The change from `live` fares to `new` fares for the same trips.
pub fn diff(live: &[f64], new: &[f64]) -> Diff {
    let changes: Vec<f64> = live.iter().zip(new).map(|(a, b)| (b - a).abs()).collect();
    let n = changes.len();
    if n == 0 {
        return Diff { trips: 0, mean_abs: 0.0, max_abs: 0.0, over_one_dollar: 0.0 };
    }
    Diff {
        trips: n,
        mean_abs: changes.iter().sum::<f64>() / n as f64,
        max_abs: changes.iter().copied().fold(0.0, f64::max),
        over_one_dollar: changes.iter().filter(|c| **c > 1.0).count() as f64 / n as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact() -> ModelArtifact {
        let mut a = ModelArtifact::new(
            "m1",
            [0.5; model::N_FEATURES],
            3.0,
            model::Lineage::hand_made("test"),
        );
        let trip = model::Trip::from_values([40.76, -73.98, 40.64, -73.78, 1.0]).unwrap();
        a.golden = vec![model::GoldenTrip { trip, fare: a.predict(&trip) }];
        a
    }

    #[test]
    fn golden_trips_need_the_same_fares_and_version() {
        let a = artifact();
        let fare = a.golden[0].fare;
        assert_eq!(check_golden(&a, &[fare], "m1"), Ok(()));
        let e = check_golden(&a, &[fare + 0.01], "m1").unwrap_err();
        assert!(e.contains("golden trip 0") && e.contains("promises"), "{e}");
        assert!(check_golden(&a, &[fare], "m2").unwrap_err().contains("answered by model m2"));
        assert!(check_golden(&a, &[], "m1").is_err());
        let mut none = a.clone();
        none.golden.clear();
        assert!(check_golden(&none, &[], "m1").unwrap_err().contains("carries none"));
    }

    #[test]
    fn the_quality_gate_says_by_how_much() {
        let gates = Gates {
            golden: true,
            max_rmse_increase: Some(0.05),
            min_r2: Some(0.7),
            latency_budget: None,
        };
        let live = Scores { rmse: 4.0, mae: 2.0, r2: 0.8 };
        assert_eq!(
            check_quality(&gates, &Scores { rmse: 4.1, mae: 2.0, r2: 0.79 }, Some(&live)),
            Ok(())
        );
        let e = check_quality(&gates, &Scores { rmse: 4.4, mae: 2.0, r2: 0.79 }, Some(&live))
            .unwrap_err();
        assert!(e.contains("10.0% above") && e.contains("at most 5.0%"), "{e}");
        let e = check_quality(&gates, &Scores { rmse: 3.0, mae: 2.0, r2: 0.6 }, None).unwrap_err();
        assert!(e.contains("under the floor"), "{e}");
        assert_eq!(
            check_quality(
                &Gates::default(),
                &Scores { rmse: 99.0, mae: 9.0, r2: -1.0 },
                Some(&live)
            ),
            Ok(())
        );
    }

    #[test]
    fn the_latency_budget_takes_the_p99_of_the_burst() {
        use std::time::Duration;
        let ms = |v: u64| Duration::from_millis(v);
        let mut fast: Vec<Duration> = (0..40).map(|i| ms(1 + i % 3)).collect();
        assert_eq!(check_latency(&mut fast, ms(5)), Ok(ms(3)));
        let mut slow: Vec<Duration> = (0..40).map(|i| if i < 2 { ms(80) } else { ms(2) }).collect();
        let e = check_latency(&mut slow, ms(50)).unwrap_err();
        assert!(e.contains("80.0 ms, over 50 ms"), "{e}");
        assert!(check_latency(&mut [], ms(5)).is_err());
    }

    #[test]
    fn judge_runs_every_gate_and_measures_the_diff() {
        let a = artifact();
        let fare = a.golden[0].fare;
        let mut e = Evidence {
            new: a.clone(),
            new_fares: Some((vec![fare], "m1".into())),
            live: Some(a.clone()),
            live_fares: Some(vec![fare - 2.0]),
        };
        let d = judge(&Gates::default(), &e).verdict.unwrap().unwrap();
        assert_eq!((d.trips, d.max_abs), (1, 2.0));
        assert_eq!(e.warm_up_trip(), a.golden[0].trip);
        e.live_fares = None;
        assert_eq!(judge(&Gates::default(), &e).verdict, Ok(None));
        e.new_fares = None;
        assert!(judge(&Gates::default(), &e).verdict.unwrap_err().contains("were not read"));
        let off = Gates { golden: false, ..Gates::default() };
        assert_eq!(judge(&off, &e).verdict, Ok(None));
        e.new.golden.clear();
        assert_eq!(e.warm_up_trip(), KNOWN_TRIP);
        assert!(model::Trip::from_values(KNOWN_TRIP.values()).is_ok());
    }

    #[test]
    fn readings_are_kept_for_the_gates_that_ran_and_only_those() {
        let a = artifact();
        let fare = a.golden[0].fare;
        let mut live = a.clone();
        live.lineage.metrics.rmse = a.lineage.metrics.rmse / 2.0;
        let gates = Gates {
            golden: true,
            min_r2: Some(-10.0),
            max_rmse_increase: Some(0.05),
            latency_budget: None,
        };
        let e = Evidence {
            new: a.clone(),
            new_fares: Some((vec![fare], "m1".into())),
            live: Some(live),
            live_fares: None,
        };
        let j = judge(&gates, &e);
        assert!(j.verdict.unwrap_err().contains("RMSE"));
        let named: Vec<(Gate, bool)> = j.readings.iter().map(|r| (r.gate, r.passed)).collect();
        assert_eq!(
            named,
            [(Gate::Golden, true), (Gate::MinR2, true), (Gate::MaxRmseIncrease, false)]
        );
        assert_eq!((j.readings[0].measured, j.readings[0].limit), (Some(1.0), 1.0));
        // A wrong fare: the quality gate never ran, so it has no reading.
        let wrong = Evidence { new_fares: Some((vec![fare + 1.0], "m1".into())), ..e.clone() };
        let j = judge(&gates, &wrong);
        assert!(j.verdict.is_err());
        assert_eq!(j.readings.len(), 1);
        assert_eq!((j.readings[0].measured, j.readings[0].passed), (Some(0.0), false));
        // A figure that is not a number is kept as none, and fails.
        let mut nan = e.clone();
        nan.new.lineage.metrics.r2 = f64::NAN;
        let j = judge(&gates, &nan);
        assert!(j.verdict.is_err());
        assert_eq!((j.readings[1].measured, j.readings[1].passed), (None, false));
        let json = serde_json::to_string(&j.readings).unwrap();
        let back: Vec<Reading> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, j.readings);
    }

    #[test]
    fn the_diff_counts_what_users_would_see() {
        let d = diff(&[10.0, 20.0, 30.0, 40.0], &[10.0, 20.5, 32.0, 40.0]);
        assert_eq!(d.trips, 4);
        assert!((d.mean_abs - 0.625).abs() < 1e-12);
        assert_eq!(d.max_abs, 2.0);
        assert_eq!(d.over_one_dollar, 0.25);
        assert_eq!(diff(&[], &[]).trips, 0);
    }
}
