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

/// A point with the parts of the haversine formula that depend on it alone,
/// computed once: the features measure seven distances between four points,
/// and recomputing each latitude's cosine per distance dominated their cost.
///
/// [`Radians::haversine_km`] performs exactly the operations of the
/// textbook formula, in the same order, so it returns the same bits as
/// [`haversine_km`] (which is built on it) whichever way it is reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Radians {
    lat: f64,
    /// Longitude in degrees: the formula converts the difference, not each end.
    lon_deg: f64,
    cos_lat: f64,
}

impl Radians {
    pub(crate) fn of(p: Point) -> Radians {
        let lat = p.lat.to_radians();
        Radians { lat, lon_deg: p.lon, cos_lat: lat.cos() }
    }

    /// Haversine distance in kilometres from `self` to `to`. Not symmetric
    /// in the last bit: keep the argument order of the definition.
    pub(crate) fn haversine_km(&self, to: &Radians) -> f64 {
        let dlat = to.lat - self.lat;
        let dlon = (to.lon_deg - self.lon_deg).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + self.cos_lat * to.cos_lat * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

/// Kilometres per degree of latitude, and of longitude at New York's latitude:
/// the street grid makes the L1 distance a better fare driver than the
/// straight line for short trips.
const KM_PER_DEG_LAT: f64 = 111.2;
const KM_PER_DEG_LON_NYC: f64 = 84.2;

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

    /// The prepared form must not change a single bit: the features (and so
    /// every trained model and prediction) are defined by the plain formula.
    #[test]
    fn prepared_points_give_the_plain_formula_bit_for_bit() {
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
        for _ in 0..20_000 {
            let a = Point { lat: next(40.4, 41.1), lon: next(-74.5, -72.8) };
            let b = Point { lat: next(-90.0, 90.0), lon: next(-180.0, 180.0) };
            for (p, q) in [(a, b), (b, a), (a, JFK), (JFK, a), (a, a)] {
                assert_eq!(haversine_km(p, q).to_bits(), textbook(p, q).to_bits(), "{p:?} {q:?}");
            }
        }
    }

    #[test]
    fn service_area_contains_manhattan_not_the_arctic() {
        assert!(SERVICE_AREA.contains(Point { lat: 40.75, lon: -73.99 }));
        assert!(!SERVICE_AREA.contains(Point { lat: 70.15, lon: -40.22 }));
    }
}
