//! The analysis after a switch: the new color's own /metrics, read while
//! the old color still runs, turned into an error rate and a p99 since the
//! switch, and judged against the manifest's thresholds. Pure: parsing and
//! judging only.
//!
//! It judges the release, not the load. An answer the service shed for
//! capacity (503 of kind `overloaded`, refused before any work) is no
//! fault of the release: it is counted apart and left out of the error
//! rate. Work the service accepted and then failed (any other 5xx, a
//! `timeout` included) is. Latency is the p99 of small batches (at most
//! 100 rows, the service's `prediction_duration_seconds{batch="small"}`),
//! a bounded unit of work, so a client posting large batches cannot make a
//! healthy release look slow.

use serde::{Deserialize, Serialize};

use crate::manifest::Analysis;

/// The predict routes' counters at one moment, summed over replicas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub requests: f64,
    /// Every 5xx answer, shed ones included.
    pub errors: f64,
    /// The 503s shed for capacity.
    #[serde(default)]
    pub shed: f64,
    /// Cumulative latency buckets of small batches answered 200:
    /// (upper bound in seconds, count).
    pub buckets: Vec<(f64, f64)>,
}

impl Sample {
    /// Adds another replica's counters.
    pub fn add(&mut self, other: &Sample) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.shed += other.shed;
        for (le, count) in &other.buckets {
            add_bucket(&mut self.buckets, *le, *count);
        }
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
}

fn add_bucket(buckets: &mut Vec<(f64, f64)>, le: f64, count: f64) {
    match buckets.iter_mut().find(|(b, _)| *b == le) {
        Some((_, c)) => *c += count,
        None => buckets.push((le, count)),
    }
}

/// What the window has shown so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Predictions answered since the switch, shed ones included.
    pub requests: f64,
    /// Of those, shed for capacity: not judged.
    #[serde(default)]
    pub shed: f64,
    /// Faults among the judged (not shed) predictions.
    pub error_rate: f64,
    /// The upper bound of the bucket holding the 99th percentile of small
    /// batches (0 while none was seen).
    pub p99_seconds: f64,
    /// Known-answer requests the controller sent itself, traffic being low.
    #[serde(default)]
    pub own: u32,
}

impl Figures {
    /// The predictions the error rate is taken over.
    pub fn judged(&self) -> f64 {
        (self.requests - self.shed).max(0.0)
    }
}

fn is_predict(labels: &str) -> bool {
    labels.contains("route=\"/api/predict")
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    labels[start..].split('"').next()
}

/// Reads the service's `http_requests_total` and `http_request_errors_total`
/// of the predict routes and its `prediction_duration_seconds_bucket` of
/// small batches.
pub fn parse(text: &str) -> Sample {
    let mut sample = Sample::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        if !value.is_finite() {
            continue;
        }
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        match name {
            "http_requests_total" if is_predict(labels) => {
                sample.requests += value;
                if label(labels, "status").is_some_and(|s| s.starts_with('5')) {
                    sample.errors += value;
                }
            }
            "http_request_errors_total"
                if is_predict(labels) && label(labels, "kind") == Some("overloaded") =>
            {
                sample.shed += value;
            }
            "prediction_duration_seconds_bucket" if label(labels, "batch") == Some("small") => {
                // +Inf as the largest finite number: the record that keeps a
                // baseline is JSON, which has no infinity.
                let le = match label(labels, "le") {
                    Some("+Inf") => f64::MAX,
                    Some(v) => v.parse().unwrap_or(f64::MAX),
                    None => continue,
                };
                add_bucket(&mut sample.buckets, le, value);
            }
            _ => {}
        }
    }
    sample.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    sample
}

/// What the controller's own known-answer requests of one reading met.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Own {
    pub sent: u32,
    /// Not answered at all (refused, reset, timed out): faults the new
    /// color's counters do not show.
    pub failed: u32,
    /// An answer that was not the known one, or not a prediction at all.
    pub wrong: Option<String>,
}

/// One reading of the new color: its counters, after the controller's own
/// requests, if any, and the values of the manifest's queries (by name;
/// an error when a query could not be answered with one number).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub sample: Sample,
    pub own: Own,
    pub queries: Vec<(String, Result<f64, String>)>,
}

/// The figures between `baseline` and `now`, with the controller's own
/// requests of the window: `own` sent, `failed` of them never answered.
pub fn figures(baseline: &Sample, now: &Sample, own: u32, failed: u32) -> Figures {
    let failed = f64::from(failed);
    let requests = (now.requests - baseline.requests).max(0.0) + failed;
    let errors = (now.errors - baseline.errors).max(0.0) + failed;
    let shed = (now.shed - baseline.shed).max(0.0).min(errors);
    let before = |le: f64| baseline.buckets.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c);
    let deltas: Vec<(f64, f64)> =
        now.buckets.iter().map(|(le, c)| (*le, (c - before(*le)).max(0.0))).collect();
    let total = deltas.last().map_or(0.0, |(_, c)| *c);
    let p99_seconds =
        deltas.iter().find(|(_, c)| total > 0.0 && *c >= 0.99 * total).map_or(0.0, |(le, _)| *le);
    let judged = (requests - shed).max(0.0);
    Figures {
        requests,
        shed,
        error_rate: if judged > 0.0 { (errors - shed) / judged } else { 0.0 },
        p99_seconds,
        own,
    }
}

/// Whether the figures cross the thresholds; only once enough predictions
/// were judged.
pub fn judge(limits: &Analysis, f: &Figures) -> Result<(), String> {
    let judged = f.judged();
    if judged < limits.min_requests as f64 {
        return Ok(());
    }
    if f.error_rate > limits.max_error_rate {
        return Err(format!(
            "analysis: {:.1}% of {judged} predictions since the switch answered 5xx (at most \
             {:.1}% allowed; {} more shed for capacity, not counted)",
            f.error_rate * 100.0,
            limits.max_error_rate * 100.0,
            f.shed
        ));
    }
    let max_p99 = limits.max_p99.as_secs_f64();
    if f.p99_seconds > max_p99 {
        let p99 = if f.p99_seconds == f64::MAX {
            "above the largest latency bucket".to_owned()
        } else {
            format!("{:.0} ms", f.p99_seconds * 1e3)
        };
        return Err(format!(
            "analysis: p99 of small batches since the switch is {p99} (at most {:.0} ms allowed)",
            max_p99 * 1e3
        ));
    }
    Ok(())
}

/// Whether a window that has ended saw enough to be judged: too few
/// predictions (even with the controller's own) never pass.
pub fn enough(limits: &Analysis, f: &Figures) -> Result<(), String> {
    let judged = f.judged();
    if judged < limits.min_requests as f64 {
        return Err(format!(
            "analysis: only {judged} predictions could be judged during the window ({} of them \
             the controller's own, {} more shed), at least {} needed",
            f.own, f.shed, limits.min_requests
        ));
    }
    Ok(())
}

/// Most known-answer requests sent in one reading.
pub const MAX_OWN_PER_READING: u32 = 50;

/// How many known-answer requests to send with the next reading, so that
/// `min_requests` is reached by the middle of the window even with no
/// traffic at all: none once live traffic has brought enough.
pub fn own_requests(limits: &Analysis, so_far: Option<&Figures>, readings_left: u32) -> u32 {
    let judged = so_far.map_or(0.0, Figures::judged);
    let needed = (limits.min_requests as f64 - judged).max(0.0).ceil() as u32;
    if needed == 0 {
        return 0;
    }
    let readings = (readings_left / 2).max(1);
    needed.div_ceil(readings).clamp(1, MAX_OWN_PER_READING)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const METRICS: &str = r#"# HELP http_requests Total
http_requests_total{route="/api/predict/",method="POST",status="200"} 80
http_requests_total{route="/api/predict/",method="POST",status="503"} 20
http_requests_total{route="/",method="GET",status="500"} 7
http_request_errors_total{route="/api/predict/",status="503",kind="overloaded"} 15
http_request_errors_total{route="/api/predict/",status="503",kind="timeout"} 5
http_request_errors_total{route="/",status="500",kind="internal"} 7
http_request_duration_seconds_bucket{route="/api/predict/",method="POST",status="200",le="+Inf"} 80
prediction_duration_seconds_bucket{batch="small",le="0.001"} 60
prediction_duration_seconds_bucket{batch="small",le="0.1"} 70
prediction_duration_seconds_bucket{batch="small",le="+Inf"} 70
prediction_duration_seconds_bucket{batch="large",le="0.001"} 0
prediction_duration_seconds_bucket{batch="large",le="+Inf"} 10
"#;

    fn limits() -> Analysis {
        Analysis {
            window: Duration::from_secs(60),
            max_error_rate: 0.01,
            max_p99: Duration::from_millis(500),
            min_requests: 20,
            queries: Vec::new(),
        }
    }

    fn judged(requests: f64, error_rate: f64, p99_seconds: f64) -> Figures {
        Figures { requests, shed: 0.0, error_rate, p99_seconds, own: 0 }
    }

    #[test]
    fn reads_the_predict_routes_shed_answers_and_small_batches() {
        let s = parse(METRICS);
        assert_eq!((s.requests, s.errors, s.shed), (100.0, 20.0, 15.0));
        assert_eq!(s.buckets, vec![(0.001, 60.0), (0.1, 70.0), (f64::MAX, 70.0)]);
        // A baseline survives the JSON record.
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), s);
    }

    #[test]
    fn shed_answers_are_capacity_and_a_timeout_is_a_fault() {
        let f = figures(&Sample::default(), &parse(METRICS), 0, 0);
        // 85 judged: the 5 timeouts are faults, the 15 shed are not.
        assert_eq!((f.requests, f.shed, f.judged()), (100.0, 15.0, 85.0));
        assert!((f.error_rate - 5.0 / 85.0).abs() < 1e-12, "{f:?}");
        assert_eq!(f.p99_seconds, 0.1);
        let e = judge(&limits(), &f).unwrap_err();
        assert!(e.contains("5.9% of 85") && e.contains("15 more shed"), "{e}");
        // Only shed: nothing wrong with the release.
        let shed = Sample { requests: 100.0, errors: 60.0, shed: 60.0, buckets: vec![] };
        let f = figures(&Sample::default(), &shed, 0, 0);
        assert_eq!((f.error_rate, f.judged()), (0.0, 40.0));
        assert_eq!(judge(&limits(), &f), Ok(()));
    }

    #[test]
    fn judges_what_happened_since_the_baseline() {
        let now = parse(METRICS);
        // Nothing new since the baseline: nothing to judge.
        assert_eq!(judge(&limits(), &figures(&now, &now, 0, 0)), Ok(()));
        assert!(judge(&limits(), &judged(50.0, 0.0, 1.6)).unwrap_err().contains("1600 ms"));
        assert_eq!(judge(&limits(), &judged(5.0, 1.0, 9.0)), Ok(()));
        // Large batches cannot make it slow: only small ones are timed.
        let mut later = now.clone();
        later.requests += 30.0;
        let f = figures(&now, &later, 0, 0);
        assert_eq!((f.requests, f.p99_seconds), (30.0, 0.0));
        assert_eq!(judge(&limits(), &f), Ok(()));
    }

    #[test]
    fn own_requests_unanswered_are_faults_and_fill_a_quiet_window() {
        let f = figures(&Sample::default(), &Sample::default(), 10, 2);
        assert_eq!((f.requests, f.error_rate, f.own), (2.0, 1.0, 10));
        // Too few at the end of the window never passes.
        let e = enough(&limits(), &judged(5.0, 0.0, 0.0)).unwrap_err();
        assert!(e.contains("only 5 predictions") && e.contains("at least 20"), "{e}");
        assert_eq!(enough(&limits(), &judged(20.0, 0.0, 0.0)), Ok(()));
        // No traffic, 60 readings left: 20 by the middle of the window.
        assert_eq!(own_requests(&limits(), None, 60), 1);
        assert_eq!(own_requests(&limits(), Some(&judged(8.0, 0.0, 0.0)), 4), 6);
        assert_eq!(own_requests(&limits(), Some(&judged(25.0, 0.0, 0.0)), 30), 0);
        let many = Analysis { min_requests: 10_000, ..limits() };
        assert_eq!(own_requests(&many, None, 0), MAX_OWN_PER_READING);
    }
}
