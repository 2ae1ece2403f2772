//! Feature engineering: the one place a trip becomes a feature vector.
//!
//! The trainer and the service both call [`features`]; the artifact records
//! [`FEATURE_SET`] and the feature names, and an artifact trained on another
//! feature set is refused at load time rather than silently mispredicting.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::geo::{EWR, JFK, LGA, Point, Radians, km_of_haversine, manhattan_km};
use crate::trip::Trip;

/// Identifies the feature definitions below; bump it whenever any changes.
pub const FEATURE_SET: &str = "nyc-distance-v1";

/// How many features [`features`] returns.
pub const N_FEATURES: usize = 10;

/// Feature names, in vector order.
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "haversine_km",
    "sqrt_haversine_km",
    "manhattan_km",
    "pickup_jfk_km",
    "dropoff_jfk_km",
    "pickup_lga_km",
    "dropoff_lga_km",
    "pickup_ewr_km",
    "dropoff_ewr_km",
    "passenger_count",
];

const DESCRIPTIONS: [&str; N_FEATURES] = [
    "great-circle (haversine) distance between pickup and drop-off, km",
    "square root of haversine_km: fares rise fastest over the first kilometres",
    "L1 distance on a flat projection at NYC latitude (111.2 km/deg lat, 84.2 km/deg lon)",
    "haversine distance from pickup to JFK airport (40.6413, -73.7781), km",
    "haversine distance from drop-off to JFK airport, km",
    "haversine distance from pickup to LaGuardia airport (40.7769, -73.8740), km",
    "haversine distance from drop-off to LaGuardia airport, km",
    "haversine distance from pickup to Newark airport (40.6895, -74.1745), km",
    "haversine distance from drop-off to Newark airport, km",
    "passenger_count as given",
];

/// A feature's name and how it is computed, as written into the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    pub name: String,
    pub description: String,
}

/// The interval a feature spans: over the training rows in an artifact, or
/// over every valid trip in [`feature_domain`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FeatureRange {
    pub min: f64,
    pub max: f64,
}

impl FeatureRange {
    /// The range of no values, the identity of [`FeatureRange::merge`].
    pub const EMPTY: FeatureRange = FeatureRange { min: f64::INFINITY, max: f64::NEG_INFINITY };

    pub fn include(&mut self, x: f64) {
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    pub fn merge(&mut self, other: &FeatureRange) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Whether this is a proper, finite interval.
    pub fn is_valid(&self) -> bool {
        self.min.is_finite() && self.max.is_finite() && self.min <= self.max
    }

    /// `x` moved into the interval (the interval must be valid).
    pub fn clamp(&self, x: f64) -> f64 {
        x.max(self.min).min(self.max)
    }
}

/// The values each feature can take for any valid trip: a range that
/// clamps nothing, for models that were not fitted to data.
pub fn feature_domain() -> [FeatureRange; N_FEATURES] {
    let half_earth = std::f64::consts::PI * crate::geo::EARTH_RADIUS_KM;
    let distance = FeatureRange { min: 0.0, max: half_earth };
    let manhattan = crate::geo::manhattan_km(
        Point { lat: -90.0, lon: -180.0 },
        Point { lat: 90.0, lon: 180.0 },
    );
    [
        distance,
        FeatureRange { min: 0.0, max: half_earth.sqrt() },
        FeatureRange { min: 0.0, max: manhattan },
        distance,
        distance,
        distance,
        distance,
        distance,
        distance,
        FeatureRange { min: 0.0, max: f64::from(crate::trip::MAX_PASSENGERS) },
    ]
}

/// The specs of this build's feature set.
pub fn feature_specs() -> Vec<FeatureSpec> {
    FEATURE_NAMES
        .iter()
        .zip(DESCRIPTIONS)
        .map(|(name, description)| FeatureSpec {
            name: (*name).to_owned(),
            description: description.to_owned(),
        })
        .collect()
}

/// The airports in [`Radians`] form, computed once per process (`sin_cos`
/// is not a `const fn`), in the order JFK, LGA, EWR.
static AIRPORTS: LazyLock<[Radians; 3]> =
    LazyLock::new(|| [Radians::of(JFK), Radians::of(LGA), Radians::of(EWR)]);

/// The feature vector of one trip.
///
/// Each distance is [`crate::geo::haversine_km`] to the bit; each end of
/// the trip and each airport is converted to [`Radians`] once rather than
/// once per distance.
///
/// The seven haversines are all computed before the first `asin`, so that
/// only they (not the four points' values) are kept across its calls: the
/// same operations on the same values as one distance after the other,
/// with fewer spills.
pub fn features(trip: &Trip) -> [f64; N_FEATURES] {
    let (p, d) = (trip.pickup(), trip.dropoff());
    let (rp, rd) = (Radians::of(p), Radians::of(d));
    let [jfk, lga, ewr] = &*AIRPORTS;
    let h = [
        rp.haversine(&rd),
        rp.haversine(jfk),
        rd.haversine(jfk),
        rp.haversine(lga),
        rd.haversine(lga),
        rp.haversine(ewr),
        rd.haversine(ewr),
    ];
    let [dist, pickup_jfk, dropoff_jfk, pickup_lga, dropoff_lga, pickup_ewr, dropoff_ewr] =
        h.map(km_of_haversine);
    [
        dist,
        dist.sqrt(),
        manhattan_km(p, d),
        pickup_jfk,
        dropoff_jfk,
        pickup_lga,
        dropoff_lga,
        pickup_ewr,
        dropoff_ewr,
        f64::from(trip.passenger_count),
    ]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_domain_holds_every_feature_of_extreme_trips() {
        let domain = feature_domain();
        let corners = [-90.0, 0.0, 90.0];
        let lons = [-180.0, -73.9, 0.0, 180.0];
        for &a in &corners {
            for &b in &lons {
                for &c in &corners {
                    for &d in &lons {
                        let t = Trip::from_values([a, b, c, d, 9.0]).unwrap();
                        for (x, r) in features(&t).iter().zip(&domain) {
                            assert!(r.is_valid() && r.clamp(*x) == *x, "{x} outside {r:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn ranges_include_merge_and_clamp() {
        let mut r = FeatureRange::EMPTY;
        assert!(!r.is_valid());
        r.include(3.0);
        r.include(-1.0);
        assert_eq!(r, FeatureRange { min: -1.0, max: 3.0 });
        let mut s = FeatureRange::EMPTY;
        s.merge(&r);
        s.merge(&FeatureRange { min: 0.0, max: 7.0 });
        assert_eq!(s, FeatureRange { min: -1.0, max: 7.0 });
        assert_eq!((s.clamp(-5.0), s.clamp(2.0), s.clamp(9.0)), (-1.0, 2.0, 7.0));
    }

    #[test]
    fn names_and_specs_agree() {
        let specs = feature_specs();
        assert_eq!(specs.len(), N_FEATURES);
        for (s, n) in specs.iter().zip(FEATURE_NAMES) {
            assert_eq!(s.name, n);
            assert!(!s.description.is_empty());
        }
    }

    #[test]
    fn a_jfk_trip() {
        let t = Trip::from_values([JFK.lat, JFK.lon, 40.7580, -73.9855, 2.0]).unwrap();
        let f = features(&t);
        assert!((f[0] - 21.8).abs() < 0.5, "{f:?}");
        assert_eq!(f[1], f[0].sqrt());
        assert!(f[2] > f[0], "L1 exceeds the straight line");
        assert_eq!(f[3], 0.0);
        assert_eq!(f[4], f[0]);
        assert_eq!(f[9], 2.0);
        assert!(f.iter().all(|v| v.is_finite()));
    }

    /// Random valid trips: anywhere on the globe, in and around New York,
    /// a few metres long, and with both ends at one point.
    pub(crate) fn random_trips(n: usize) -> impl Iterator<Item = Trip> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |lo: f64, hi: f64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            lo + (hi - lo) * (x >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n).map(move |i| {
            let (a, b) = match i % 4 {
                0 => (next(-90.0, 90.0), next(-180.0, 180.0)),
                _ => (next(40.4, 41.1), next(-74.5, -72.8)),
            };
            let (c, d) = match i % 4 {
                0 | 1 => (next(-90.0, 90.0), next(-180.0, 180.0)),
                2 => (a + next(-1e-4, 1e-4), b + next(-1e-4, 1e-4)),
                _ => (a, b),
            };
            let passengers = (next(0.0, 10.0) as u8).min(crate::trip::MAX_PASSENGERS);
            Trip::from_values([
                a,
                b,
                c.clamp(-90.0, 90.0),
                d.clamp(-180.0, 180.0),
                passengers.into(),
            ])
            .expect("every generated trip is valid")
        })
    }

    /// `features` as it was before the haversines were computed ahead of
    /// the `asin` calls, frozen: one distance after the other.
    fn features_before(trip: &Trip) -> [f64; N_FEATURES] {
        fn haversine_km(a: &[f64; 5], b: &[f64; 5]) -> f64 {
            let [a_sin_lat, a_cos_lat, a_sin_lon, a_cos_lon, a_cos] = *a;
            let [b_sin_lat, b_cos_lat, b_sin_lon, b_cos_lon, b_cos] = *b;
            let half_dlat = b_sin_lat * a_cos_lat - b_cos_lat * a_sin_lat;
            let half_dlon = b_sin_lon * a_cos_lon - b_cos_lon * a_sin_lon;
            let h = half_dlat * half_dlat + a_cos * b_cos * half_dlon * half_dlon;
            2.0 * crate::geo::EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
        }
        fn radians(p: Point) -> [f64; 5] {
            let (sin_half_lat, cos_half_lat) = (p.lat.to_radians() / 2.0).sin_cos();
            let (sin_half_lon, cos_half_lon) = (p.lon.to_radians() / 2.0).sin_cos();
            let cos_lat = (cos_half_lat - sin_half_lat) * (cos_half_lat + sin_half_lat);
            [sin_half_lat, cos_half_lat, sin_half_lon, cos_half_lon, cos_lat]
        }
        let (p, d) = (trip.pickup(), trip.dropoff());
        let (rp, rd) = (radians(p), radians(d));
        let [jfk, lga, ewr] = [radians(JFK), radians(LGA), radians(EWR)];
        let dist = haversine_km(&rp, &rd);
        [
            dist,
            dist.sqrt(),
            (p.lat - d.lat).abs() * 111.2 + (p.lon - d.lon).abs() * 84.2,
            haversine_km(&rp, &jfk),
            haversine_km(&rd, &jfk),
            haversine_km(&rp, &lga),
            haversine_km(&rd, &lga),
            haversine_km(&rp, &ewr),
            haversine_km(&rd, &ewr),
            f64::from(trip.passenger_count),
        ]
    }

    /// Computing the haversines first changes no bit of any feature.
    #[test]
    fn features_are_the_frozen_formulas_to_the_bit() {
        for trip in random_trips(200_000) {
            let (got, want) = (features(&trip), features_before(&trip));
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{trip:?}");
        }
    }

    /// The features are defined by `haversine_km` on the plain points; the
    /// precomputed form must agree to the bit, or models would shift.
    #[test]
    fn distances_are_haversine_km_to_the_bit() {
        use crate::geo::haversine_km;
        let trips = [
            [40.7614, -73.9776, 40.6413, -73.7781, 1.0],
            [40.4, -74.5, 41.1, -72.8, 6.0],
            [40.75, -73.99, 40.75, -73.99, 2.0],
            crate::trip::DOCUMENTED_TRIP,
            [-89.9, 179.9, 89.9, -179.9, 0.0],
        ];
        for v in trips {
            let t = Trip::from_values(v).unwrap();
            let (p, d) = (t.pickup(), t.dropoff());
            let f = features(&t);
            let want = |a: Point, b: Point| haversine_km(a, b).to_bits();
            assert_eq!(f[0].to_bits(), want(p, d));
            for (i, airport) in [JFK, LGA, EWR].into_iter().enumerate() {
                assert_eq!(f[3 + 2 * i].to_bits(), want(p, airport), "{v:?}");
                assert_eq!(f[4 + 2 * i].to_bits(), want(d, airport), "{v:?}");
            }
        }
    }
}
