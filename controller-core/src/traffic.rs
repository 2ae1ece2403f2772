//! The live color's traffic as a series of rates, for the status page's
//! chart: requests, faults (5xx but the shed ones, as the analysis counts
//! them) and shed answers per second, from two readings of each replica's
//! counters. Pure: the runtime reads the counters and keeps the series.

use std::collections::{BTreeMap, VecDeque};

use bluegreen::Color;
use serde::{Deserialize, Serialize};

use crate::analysis::Sample;
use crate::clock::Timestamp;

/// The most points kept: ten minutes at one reading every five seconds.
pub const POINTS: usize = 120;

/// The live color's rates over the interval that ended at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub at: Timestamp,
    pub color: Color,
    pub requests_per_second: f64,
    pub faults_per_second: f64,
    pub shed_per_second: f64,
    /// Replicas read; a replica that could not be read is left out.
    pub replicas: u32,
}

/// One reading: each replica's counters, by the address it was read at.
pub type Counters = BTreeMap<String, Sample>;

/// The rates between two readings `seconds` apart. A replica in both
/// counts what it answered since; one whose counters went down restarted
/// in between and counts what it answered since its start; one that is
/// new counts from its next reading on (its counters hold whatever it
/// answered before it was live, such as the gates' requests).
pub fn rates(before: &Counters, now: &Counters, seconds: f64) -> (f64, f64, f64) {
    if seconds <= 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let (mut requests, mut errors, mut shed) = (0.0, 0.0, 0.0);
    for (at, n) in now {
        let Some(b) = before.get(at) else { continue };
        let restarted = n.requests < b.requests || n.errors < b.errors || n.shed < b.shed;
        let base = if restarted { &Sample::default() } else { b };
        requests += n.requests - base.requests;
        errors += n.errors - base.errors;
        shed += n.shed - base.shed;
    }
    let faults = (errors - shed).max(0.0);
    (requests / seconds, faults / seconds, shed / seconds)
}

/// The series: the last readings and the points made of them.
#[derive(Debug, Clone, Default)]
pub struct Series {
    last: Option<(Timestamp, Color, Counters)>,
    points: VecDeque<Point>,
}

impl Series {
    /// Takes a reading of `color` made at `at`. A reading of another color
    /// than the last (a switch) starts over from it: rates are never
    /// made across two colors.
    pub fn read(&mut self, at: Timestamp, color: Color, counters: Counters) {
        if let Some((then, was, before)) = &self.last
            && *was == color
            && at > *then
        {
            let seconds = at.millis_since(*then) as f64 / 1000.0;
            let (requests, faults, shed) = rates(before, &counters, seconds);
            if self.points.len() == POINTS {
                self.points.pop_front();
            }
            self.points.push_back(Point {
                at,
                color,
                requests_per_second: requests,
                faults_per_second: faults,
                shed_per_second: shed,
                replicas: counters.len() as u32,
            });
        }
        self.last = Some((at, color, counters));
    }

    /// No color is live: the next reading starts over.
    pub fn idle(&mut self) {
        self.last = None;
    }

    /// The points, oldest first.
    pub fn points(&self) -> Vec<Point> {
        self.points.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(of: &[(&str, f64, f64, f64)]) -> Counters {
        of.iter()
            .map(|(at, requests, errors, shed)| {
                let s =
                    Sample { requests: *requests, errors: *errors, shed: *shed, buckets: vec![] };
                (at.to_string(), s)
            })
            .collect()
    }

    #[test]
    fn rates_count_what_each_replica_answered_in_between() {
        let before = counters(&[("a", 100.0, 10.0, 4.0), ("b", 50.0, 0.0, 0.0)]);
        let now = counters(&[("a", 150.0, 20.0, 8.0), ("b", 100.0, 0.0, 0.0)]);
        // 100 requests, 10 5xx of which 4 shed, in 10 s.
        assert_eq!(rates(&before, &now, 10.0), (10.0, 0.6, 0.4));
        assert_eq!(rates(&before, &now, 0.0), (0.0, 0.0, 0.0));
    }

    #[test]
    fn a_restarted_replica_counts_from_zero_and_a_new_one_from_its_next_reading() {
        let before = counters(&[("a", 1000.0, 5.0, 0.0)]);
        let now = counters(&[("a", 30.0, 0.0, 0.0), ("new", 9000.0, 900.0, 0.0)]);
        assert_eq!(rates(&before, &now, 10.0), (3.0, 0.0, 0.0));
    }

    #[test]
    fn the_series_is_bounded_and_never_spans_two_colors() {
        let mut s = Series::default();
        let at = |secs: u64| Timestamp(secs * 1000);
        s.read(at(0), Color::Blue, counters(&[("a", 0.0, 0.0, 0.0)]));
        assert!(s.points().is_empty());
        s.read(at(5), Color::Blue, counters(&[("a", 50.0, 0.0, 0.0)]));
        assert_eq!(s.points()[0].requests_per_second, 10.0);
        // The switch: green's first reading makes no point.
        s.read(at(10), Color::Green, counters(&[("g", 500.0, 0.0, 0.0)]));
        assert_eq!(s.points().len(), 1);
        s.read(at(15), Color::Green, counters(&[("g", 525.0, 0.0, 0.0)]));
        assert_eq!((s.points()[1].color, s.points()[1].requests_per_second), (Color::Green, 5.0));
        s.idle();
        s.read(at(20), Color::Green, counters(&[("g", 600.0, 0.0, 0.0)]));
        assert_eq!(s.points().len(), 2);
        for i in 0..(2 * POINTS as u64) {
            s.read(at(25 + 5 * i), Color::Green, counters(&[("g", 600.0 + i as f64, 0.0, 0.0)]));
        }
        assert_eq!(s.points().len(), POINTS);
        assert!(s.points().windows(2).all(|w| w[0].at < w[1].at));
    }
}
