//! The trip schema shared by the API and the trainer, and the rules every
//! trip must satisfy before a fare is predicted for it.

use serde::{Deserialize, Serialize};

use crate::geo::{Point, SERVICE_AREA};

/// The five request fields, in the order the original API documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    PickupLatitude,
    PickupLongitude,
    DropoffLatitude,
    DropoffLongitude,
    PassengerCount,
}

impl Field {
    pub const ALL: [Field; 5] = [
        Field::PickupLatitude,
        Field::PickupLongitude,
        Field::DropoffLatitude,
        Field::DropoffLongitude,
        Field::PassengerCount,
    ];

    /// The JSON (and CSV column) name.
    pub const fn name(self) -> &'static str {
        match self {
            Field::PickupLatitude => "pickup_latitude",
            Field::PickupLongitude => "pickup_longitude",
            Field::DropoffLatitude => "dropoff_latitude",
            Field::DropoffLongitude => "dropoff_longitude",
            Field::PassengerCount => "passenger_count",
        }
    }

    /// Inclusive bounds a value of this field must lie in.
    pub const fn bounds(self) -> (f64, f64) {
        match self {
            Field::PickupLatitude | Field::DropoffLatitude => (-90.0, 90.0),
            Field::PickupLongitude | Field::DropoffLongitude => (-180.0, 180.0),
            Field::PassengerCount => (0.0, MAX_PASSENGERS as f64),
        }
    }

    /// Checks one value of this field against the schema.
    pub fn check(self, value: f64) -> Result<(), Violation> {
        if !value.is_finite() {
            return Err(Violation::new(self, ViolationKind::NotFinite));
        }
        if self == Field::PassengerCount && value.fract() != 0.0 {
            return Err(Violation::new(self, ViolationKind::NotInteger));
        }
        let (lo, hi) = self.bounds();
        if !(lo..=hi).contains(&value) {
            return Err(Violation::new(self, ViolationKind::OutOfRange));
        }
        Ok(())
    }
}

/// The largest passenger count the API accepts.
pub const MAX_PASSENGERS: u8 = 9;

/// The trip of the API's documented request (DESIGN.md), in
/// [`Field::ALL`] order: valid, and far outside New York, so it must be
/// predicted (and flagged), never refused. The service's OpenAPI example,
/// the pipeline's smoke and integration checks and `up` all send it.
pub const DOCUMENTED_TRIP: [f64; 5] = [70.15, -40.22, 70.83, -1.0, 2.0];

/// Why a value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    NotFinite,
    NotInteger,
    OutOfRange,
}

impl ViolationKind {
    /// A stable, FastAPI-style error type string.
    pub const fn code(self) -> &'static str {
        match self {
            ViolationKind::NotFinite => "value_error.number.not_finite",
            ViolationKind::NotInteger => "value_error.number.not_integer",
            ViolationKind::OutOfRange => "value_error.number.out_of_range",
        }
    }
}

/// One refused value: which field, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub field: Field,
    pub kind: ViolationKind,
}

impl Violation {
    pub const fn new(field: Field, kind: ViolationKind) -> Self {
        Violation { field, kind }
    }

    /// A human-readable message naming the accepted range.
    pub fn message(&self) -> String {
        let (lo, hi) = self.field.bounds();
        match self.kind {
            ViolationKind::NotFinite => "value must be a finite number".to_owned(),
            ViolationKind::NotInteger => "value must be a whole number".to_owned(),
            ViolationKind::OutOfRange => format!("value must be between {lo} and {hi}"),
        }
    }
}

/// A validated trip: every value finite and within [`Field::bounds`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Trip {
    pub pickup_latitude: f64,
    pub pickup_longitude: f64,
    pub dropoff_latitude: f64,
    pub dropoff_longitude: f64,
    pub passenger_count: u8,
}

impl Trip {
    /// Builds a trip from values in [`Field::ALL`] order, returning every
    /// violation rather than just the first, so a caller can report them all.
    pub fn from_values(values: [f64; 5]) -> Result<Trip, Vec<Violation>> {
        if let Some(trip) = Trip::checked(values) {
            return Ok(trip);
        }
        let violations: Vec<Violation> =
            Field::ALL.iter().zip(values).filter_map(|(f, v)| f.check(v).err()).collect();
        Err(violations)
    }

    /// The trip when every value passes [`Field::check`], else `None`: the
    /// same rules without naming the violations, in a few comparisons (no
    /// `fract`, a libm call), for callers that only need to know — the
    /// service's scanner, which leaves a refused row to the parser that
    /// words the errors. Tested against [`Field::check`].
    #[inline(always)]
    pub fn checked(values: [f64; 5]) -> Option<Trip> {
        let mut in_bounds = true;
        for (field, value) in Field::ALL.into_iter().zip(values) {
            let (lo, hi) = field.bounds();
            // False for NaN and for the infinities, which are out of bounds.
            in_bounds &= (lo..=hi).contains(&value);
        }
        let [pickup_latitude, pickup_longitude, dropoff_latitude, dropoff_longitude, passengers] =
            values;
        // Within 0..=MAX_PASSENGERS, `as u8` truncates: it gives the value
        // back exactly when the value is a whole number.
        let passenger_count = passengers as u8;
        let whole = f64::from(passenger_count) == passengers;
        (in_bounds && whole).then_some(Trip {
            pickup_latitude,
            pickup_longitude,
            dropoff_latitude,
            dropoff_longitude,
            passenger_count,
        })
    }

    /// Checks an already-typed trip (for instance one deserialised directly).
    pub fn validate(&self) -> Result<(), Vec<Violation>> {
        Trip::from_values(self.values()).map(|_| ())
    }

    /// The values in [`Field::ALL`] order.
    pub fn values(&self) -> [f64; 5] {
        [
            self.pickup_latitude,
            self.pickup_longitude,
            self.dropoff_latitude,
            self.dropoff_longitude,
            f64::from(self.passenger_count),
        ]
    }

    pub fn pickup(&self) -> Point {
        Point { lat: self.pickup_latitude, lon: self.pickup_longitude }
    }

    pub fn dropoff(&self) -> Point {
        Point { lat: self.dropoff_latitude, lon: self.dropoff_longitude }
    }

    /// Whether both ends lie in the area the model was trained on; outside
    /// it a prediction is an extrapolation and callers may flag it.
    pub fn in_service_area(&self) -> bool {
        SERVICE_AREA.contains(self.pickup()) && SERVICE_AREA.contains(self.dropoff())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(values: [f64; 5], expected: &[(Field, ViolationKind)]) {
        match Trip::from_values(values) {
            Ok(_) => assert!(expected.is_empty(), "{values:?} accepted, expected {expected:?}"),
            Err(v) => {
                let got: Vec<_> = v.iter().map(|v| (v.field, v.kind)).collect();
                assert_eq!(got, expected, "{values:?}");
            }
        }
    }

    #[test]
    fn validation_table() {
        use Field::*;
        use ViolationKind::*;
        check([40.7, -73.9, 40.8, -73.95, 1.0], &[]);
        check(DOCUMENTED_TRIP, &[]);
        check([90.0, 180.0, -90.0, -180.0, 0.0], &[]);
        check([40.7, -73.9, 40.8, -73.95, 9.0], &[]);
        check([90.1, -73.9, 40.8, -73.95, 1.0], &[(PickupLatitude, OutOfRange)]);
        check(
            [40.0, -180.5, 40.8, 181.0, 1.0],
            &[(PickupLongitude, OutOfRange), (DropoffLongitude, OutOfRange)],
        );
        check(
            [f64::NAN, -73.9, 40.8, f64::INFINITY, 1.0],
            &[(PickupLatitude, NotFinite), (DropoffLongitude, NotFinite)],
        );
        check([40.7, -73.9, 40.8, -73.95, -1.0], &[(PassengerCount, OutOfRange)]);
        check([40.7, -73.9, 40.8, -73.95, 1.5], &[(PassengerCount, NotInteger)]);
        check([40.7, -73.9, 40.8, -73.95, 10.0], &[(PassengerCount, OutOfRange)]);
    }

    /// `checked` accepts exactly what every field's `check` accepts, and
    /// builds the same trip as the rules spelled out one by one.
    #[test]
    fn checked_is_the_rules_of_check() {
        let edges = [
            0.0,
            -0.0,
            0.5,
            1.0,
            2.0,
            8.999_999_999_999_998,
            9.0,
            9.000_000_000_000_002,
            9.5,
            10.0,
            -1.0,
            -0.5,
            89.999,
            90.0,
            90.000_000_000_000_01,
            -90.0,
            -90.000_000_000_000_01,
            180.0,
            -180.0,
            180.000_000_000_000_03,
            255.0,
            256.0,
            1e300,
            -1e300,
            f64::MIN_POSITIVE,
            5e-324,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let values: [f64; 5] = std::array::from_fn(|_| match next() % 4 {
                0 => edges[(next() % edges.len() as u64) as usize],
                1 => f64::from_bits(next()),
                2 => (next() % 4000) as f64 / 10.0 - 200.0,
                _ => (next() % 24) as f64 / 2.0 - 1.0,
            });
            let by_check = Field::ALL.iter().zip(values).all(|(f, v)| f.check(v).is_ok());
            let trip = Trip::checked(values);
            assert_eq!(trip.is_some(), by_check, "{values:?}");
            if let Some(trip) = trip {
                let bits = |v: [f64; 5]| v.map(f64::to_bits);
                let mut want = values;
                want[4] = values[4].trunc().abs();
                assert_eq!(bits(trip.values()), bits(want), "{values:?}");
                assert_eq!(Trip::from_values(values), Ok(trip));
            } else {
                assert!(Trip::from_values(values).is_err_and(|v| !v.is_empty()), "{values:?}");
            }
        }
    }

    #[test]
    fn documented_request_is_valid_but_outside_the_service_area() {
        let t = Trip::from_values(DOCUMENTED_TRIP).unwrap();
        assert!(!t.in_service_area());
        assert!(t.validate().is_ok());
    }

    #[test]
    fn messages_name_the_range() {
        let v = Violation::new(Field::PickupLongitude, ViolationKind::OutOfRange);
        assert_eq!(v.message(), "value must be between -180 and 180");
    }
}
