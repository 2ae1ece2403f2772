//! The analysis after a switch: the new color's own /metrics, read while
//! the old color still runs, turned into an error rate and a p99 of the
//! predict routes since the switch, and judged against the manifest's
//! thresholds. Pure: parsing and judging only.

use serde::{Deserialize, Serialize};

use crate::manifest::Analysis;

/// The predict routes' counters at one moment, summed over replicas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub requests: f64,
    pub errors: f64,
    /// Cumulative latency buckets: (upper bound in seconds, count).
    pub buckets: Vec<(f64, f64)>,
}

impl Sample {
    /// Adds another replica's counters.
    pub fn add(&mut self, other: &Sample) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (le, count) in &other.buckets {
            match self.buckets.iter_mut().find(|(b, _)| b == le) {
                Some((_, c)) => *c += count,
                None => self.buckets.push((*le, *count)),
            }
        }
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
}

/// What the window has shown so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub requests: f64,
    pub error_rate: f64,
    /// The upper bound of the bucket holding the 99th percentile.
    pub p99_seconds: f64,
}

fn is_predict(labels: &str) -> bool {
    labels.contains("route=\"/api/predict")
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    labels[start..].split('"').next()
}

/// Reads the service's `http_requests_total` and
/// `http_request_duration_seconds_bucket` for the predict routes.
pub fn parse(text: &str) -> Sample {
    let mut sample = Sample::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        if !is_predict(labels) {
            continue;
        }
        match name {
            "http_requests_total" => {
                sample.requests += value;
                if label(labels, "status").is_some_and(|s| s.starts_with('5')) {
                    sample.errors += value;
                }
            }
            "http_request_duration_seconds_bucket" => {
                // +Inf as the largest finite number: the record that keeps a
                // baseline is JSON, which has no infinity.
                let le = match label(labels, "le") {
                    Some("+Inf") => f64::MAX,
                    Some(v) => v.parse().unwrap_or(f64::MAX),
                    None => continue,
                };
                match sample.buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, count)) => *count += value,
                    None => sample.buckets.push((le, value)),
                }
            }
            _ => {}
        }
    }
    sample.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    sample
}

/// The figures between `baseline` and `now`.
pub fn figures(baseline: &Sample, now: &Sample) -> Figures {
    let requests = (now.requests - baseline.requests).max(0.0);
    let errors = (now.errors - baseline.errors).max(0.0);
    let before = |le: f64| baseline.buckets.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c);
    let deltas: Vec<(f64, f64)> =
        now.buckets.iter().map(|(le, c)| (*le, (c - before(*le)).max(0.0))).collect();
    let total = deltas.last().map_or(0.0, |(_, c)| *c);
    let p99_seconds =
        deltas.iter().find(|(_, c)| total > 0.0 && *c >= 0.99 * total).map_or(0.0, |(le, _)| *le);
    Figures {
        requests,
        error_rate: if requests > 0.0 { errors / requests } else { 0.0 },
        p99_seconds,
    }
}

/// Whether the figures cross the thresholds; only once enough requests
/// were seen to judge.
pub fn judge(limits: &Analysis, f: &Figures) -> Result<(), String> {
    if f.requests < limits.min_requests as f64 {
        return Ok(());
    }
    if f.error_rate > limits.max_error_rate {
        return Err(format!(
            "analysis: {:.1}% of {} predictions since the switch answered 5xx (at most {:.1}% allowed)",
            f.error_rate * 100.0,
            f.requests,
            limits.max_error_rate * 100.0
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
            "analysis: p99 of {} predictions since the switch is {p99} (at most {:.0} ms allowed)",
            f.requests,
            max_p99 * 1e3
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const METRICS: &str = r#"# HELP http_requests Total
http_requests_total{route="/api/predict/",method="POST",status="200"} 90
http_requests_total{route="/api/predict/",method="POST",status="503"} 10
http_requests_total{route="/",method="GET",status="500"} 7
http_request_duration_seconds_bucket{route="/api/predict/",method="POST",status="200",le="0.001"} 80
http_request_duration_seconds_bucket{route="/api/predict/",method="POST",status="200",le="0.1"} 90
http_request_duration_seconds_bucket{route="/api/predict/",method="POST",status="200",le="+Inf"} 90
http_request_duration_seconds_bucket{route="/api/predict/",method="POST",status="503",le="0.001"} 0
http_request_duration_seconds_bucket{route="/api/predict/",method="POST",status="503",le="0.1"} 0
http_request_duration_seconds_bucket{route="/api/predict/",method="POST",status="503",le="+Inf"} 10
"#;

    fn limits() -> Analysis {
        Analysis {
            window: Duration::from_secs(60),
            max_error_rate: 0.01,
            max_p99: Duration::from_millis(500),
            min_requests: 20,
        }
    }

    #[test]
    fn reads_the_predict_routes_only() {
        let s = parse(METRICS);
        assert_eq!((s.requests, s.errors), (100.0, 10.0));
        assert_eq!(s.buckets, vec![(0.001, 80.0), (0.1, 90.0), (f64::MAX, 100.0)]);
        // A baseline survives the JSON record.
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), s);
    }

    #[test]
    fn judges_what_happened_since_the_baseline() {
        let now = parse(METRICS);
        let f = figures(&Sample::default(), &now);
        assert_eq!((f.requests, f.error_rate), (100.0, 0.1));
        assert_eq!(f.p99_seconds, f64::MAX);
        let e = judge(&limits(), &f).unwrap_err();
        assert!(e.contains("10.0% of 100") && e.contains("at most 1.0%"), "{e}");
        // Nothing new since the baseline: nothing to judge.
        assert_eq!(judge(&limits(), &figures(&now, &now)), Ok(()));
        let slow = Figures { requests: 50.0, error_rate: 0.0, p99_seconds: 1.6 };
        assert!(judge(&limits(), &slow).unwrap_err().contains("1600 ms"));
        let few = Figures { requests: 5.0, error_rate: 1.0, p99_seconds: 9.0 };
        assert_eq!(judge(&limits(), &few), Ok(()));
    }
}
