//! Great-circle geometry and the fixed places the features refer to.

/// Mean Earth radius in kilometres (IUGG).
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A point on the globe in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

/// John F. Kennedy International Airport.
pub const JFK: Point = Point { lat: 40.6413, lon: -73.7781 };
/// LaGuardia Airport.
pub const LGA: Point = Point { lat: 40.7769, lon: -73.8740 };
/// Newark Liberty International Airport.
pub const EWR: Point = Point { lat: 40.6895, lon: -74.1745 };

/// The rectangle the fares were collected in (New York City and its
/// airports, generously). Rows outside it are predicted but flagged.
pub const SERVICE_AREA: Area =
    Area { lat_min: 40.40, lat_max: 41.10, lon_min: -74.50, lon_max: -72.80 };

/// A latitude/longitude rectangle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    pub lat_min: f64,
    pub lat_max: f64,
    pub lon_min: f64,
    pub lon_max: f64,
}

impl Area {
    pub fn contains(&self, p: Point) -> bool {
        (self.lat_min..=self.lat_max).contains(&p.lat)
            && (self.lon_min..=self.lon_max).contains(&p.lon)
    }
}

/// Haversine distance in kilometres.
pub fn haversine_km(a: Point, b: Point) -> f64 {
    Radians::of(a).haversine_km(&Radians::of(b))
}

/// A point with every trigonometric value the haversine formula needs of
/// it, computed once: the sine and cosine of half its latitude and half its
/// longitude. The differences of half-angles the formula takes the sine of
/// then follow from the angle-difference identity,
/// sin(b/2 − a/2) = sin(b/2)·cos(a/2) − cos(b/2)·sin(a/2), so the seven
/// distances of the features cost four `sin_cos` and seven `asin` instead
/// of fourteen `sin`. The identity agrees with the textbook formula to a
/// relative ~1e-11 even for the shortest trips kept (tested), and a point's
/// distance to itself stays exactly zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Radians {
    sin_half_lat: f64,
    cos_half_lat: f64,
    sin_half_lon: f64,
    cos_half_lon: f64,
    cos_lat: f64,
}

impl Radians {
    pub(crate) fn of(p: Point) -> Radians {
        let (sin_half_lat, cos_half_lat) = (p.lat.to_radians() / 2.0).sin_cos();
        let (sin_half_lon, cos_half_lon) = (p.lon.to_radians() / 2.0).sin_cos();
        // cos(2x) = cos²x − sin²x: no third trigonometric call.
        let cos_lat = (cos_half_lat - sin_half_lat) * (cos_half_lat + sin_half_lat);
        Radians { sin_half_lat, cos_half_lat, sin_half_lon, cos_half_lon, cos_lat }
    }

    /// Haversine distance in kilometres from `self` to `to`.
    pub(crate) fn haversine_km(&self, to: &Radians) -> f64 {
        km_of_haversine(self.haversine(to))
    }

    /// The haversine of the central angle from `self` to `to`, the part of
    /// [`Radians::haversine_km`] before its `asin`: callers with several
    /// distances compute every one of these first, so that no value is
    /// live across the calls (which clobber every float register).
    #[inline(always)]
    pub(crate) fn haversine(&self, to: &Radians) -> f64 {
        let half_dlat = to.sin_half_lat * self.cos_half_lat - to.cos_half_lat * self.sin_half_lat;
        let half_dlon = to.sin_half_lon * self.cos_half_lon - to.cos_half_lon * self.sin_half_lon;
        half_dlat * half_dlat + self.cos_lat * to.cos_lat * half_dlon * half_dlon
    }
}

/// The distance in kilometres of a haversine `h` ([`Radians::haversine`]).
#[inline(always)]
pub(crate) fn km_of_haversine(h: f64) -> f64 {
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Kilometres per degree of latitude, and of longitude at New York's latitude:
/// the street grid makes the L1 distance a better fare driver than the
/// straight line for short trips.
pub const KM_PER_DEG_LAT: f64 = 111.2;
pub const KM_PER_DEG_LON_NYC: f64 = 84.2;

/// Manhattan (L1) distance in kilometres on a local flat projection.
pub fn manhattan_km(a: Point, b: Point) -> f64 {
    (a.lat - b.lat).abs() * KM_PER_DEG_LAT + (a.lon - b.lon).abs() * KM_PER_DEG_LON_NYC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_known_distances() {
        let p = Point { lat: 40.0, lon: -74.0 };
        assert_eq!(haversine_km(p, p), 0.0);
        // One degree of latitude is about 111.2 km.
        let q = Point { lat: 41.0, lon: -74.0 };
        assert!((haversine_km(p, q) - 111.195).abs() < 0.01);
        // JFK to LGA is about 17 km.
        let d = haversine_km(JFK, LGA);
        assert!((16.0..18.0).contains(&d), "{d}");
        // Antipodes stay finite.
        let a = Point { lat: 0.0, lon: 0.0 };
        let b = Point { lat: 0.0, lon: 180.0 };
        assert!((haversine_km(a, b) - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    }

    /// The half-angle form computes the textbook formula: to a relative
    /// 1e-10 from 50 m (the shortest trip the trainer keeps) to the far side
    /// of the globe, and exactly zero from a point to itself.
    #[test]
    fn the_half_angle_form_agrees_with_the_textbook_formula() {
        fn textbook(a: Point, b: Point) -> f64 {
            let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
            let dlat = la2 - la1;
            let dlon = (b.lon - a.lon).to_radians();
            let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
            2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |lo: f64, hi: f64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            lo + (hi - lo) * (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut worst: f64 = 0.0;
        for _ in 0..20_000 {
            let a = Point { lat: next(40.4, 41.1), lon: next(-74.5, -72.8) };
            let far = Point { lat: next(-90.0, 90.0), lon: next(-180.0, 180.0) };
            // About 50 m to 500 m away, in a random direction.
            let near = Point { lat: a.lat + next(-0.003, 0.003), lon: a.lon + next(-0.004, 0.004) };
            for (p, q) in [(a, far), (far, a), (a, JFK), (JFK, a), (a, near), (near, a)] {
                let (got, want) = (haversine_km(p, q), textbook(p, q));
                if want >= 0.05 {
                    worst = worst.max((got - want).abs() / want);
                }
            }
            assert_eq!(haversine_km(a, a), 0.0);
        }
        assert!(worst < 1e-10, "worst relative error {worst:e}");
    }

    #[test]
    fn service_area_contains_manhattan_not_the_arctic() {
        assert!(SERVICE_AREA.contains(Point { lat: 40.75, lon: -73.99 }));
        assert!(!SERVICE_AREA.contains(Point { lat: 70.15, lon: -40.22 }));
    }
}
