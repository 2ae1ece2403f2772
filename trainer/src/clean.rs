//! Cleaning: which rows are fit to train on, and why the others are not.
//!
//! Every row is checked against [`DropReason::ORDER`] and dropped under the
//! first reason that applies, so each dropped row is counted exactly once and
//! the counts add up to `rows_read - rows_used`.

use std::collections::BTreeMap;

use model::Trip;
use model::geo::haversine_km;

/// The smallest fare kept: New York's minimum metered fare in the data's years.
pub const MIN_FARE: f64 = 2.5;
/// The largest fare kept: above it the data holds typos and flat-rate trips
/// to far destinations that a distance model cannot explain.
pub const MAX_FARE: f64 = 100.0;
/// Passenger counts kept: a yellow cab seats at most six.
pub const PASSENGERS: std::ops::RangeInclusive<u8> = 1..=6;
/// Trips shorter than this (in km) start and end at the same place: a
/// cancelled trip, a flat charge, or a GPS fault, not a distance fare.
pub const MIN_DISTANCE_KM: f64 = 0.05;

/// Why a row was dropped. The order of the variants is the order of checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The record is malformed (wrong number of fields, not UTF-8) or a
    /// value is not a finite number.
    Unparsable,
    /// A required value is empty.
    MissingValue,
    /// A coordinate is exactly 0: the data's marker for "no GPS fix".
    ZeroCoordinates,
    /// passenger_count is not a whole number in [`PASSENGERS`].
    PassengerCountOutOfRange,
    /// The values fail the API's trip schema (a latitude beyond ±90, a
    /// longitude beyond ±180): the service would refuse such a trip.
    InvalidTrip,
    /// An end lies outside [`model::geo::SERVICE_AREA`].
    OutsideArea,
    /// fare_amount is outside [`MIN_FARE`]..=[`MAX_FARE`].
    FareOutOfRange,
    /// Pickup and drop-off are less than [`MIN_DISTANCE_KM`] apart.
    SameLocation,
}

impl DropReason {
    /// Every reason, in the order rows are checked.
    pub const ORDER: [DropReason; 8] = [
        DropReason::Unparsable,
        DropReason::MissingValue,
        DropReason::ZeroCoordinates,
        DropReason::PassengerCountOutOfRange,
        DropReason::InvalidTrip,
        DropReason::OutsideArea,
        DropReason::FareOutOfRange,
        DropReason::SameLocation,
    ];

    /// The stable name used in metrics.json and the artifact's lineage.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Unparsable => "unparsable",
            DropReason::MissingValue => "missing_value",
            DropReason::ZeroCoordinates => "zero_coordinates",
            DropReason::PassengerCountOutOfRange => "passenger_count_out_of_range",
            DropReason::InvalidTrip => "invalid_trip",
            DropReason::OutsideArea => "outside_area",
            DropReason::FareOutOfRange => "fare_out_of_range",
            DropReason::SameLocation => "same_location",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Dropped-row counts by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ORDER.len()]);

impl DropCounts {
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn merge(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// Every reason with its count (zeros included, so the set of keys is
    /// stable across runs), keyed by [`DropReason::name`].
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        DropReason::ORDER.iter().map(|r| (r.name().to_owned(), self.get(*r))).collect()
    }
}

/// The values a row provides, as text, in the order of [`model::Field::ALL`]
/// followed by the fare.
pub type RawValues<'a> = [&'a [u8]; 6];

/// A row fit for training: a valid trip and its fare.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanRow {
    pub trip: Trip,
    pub fare: f64,
}

/// Checks one row's values; `None` stands for a malformed record.
pub fn classify(raw: Option<RawValues<'_>>) -> Result<CleanRow, DropReason> {
    let row = classify_before_distance(raw)?;
    check_distance(haversine_km(row.trip.pickup(), row.trip.dropoff()))?;
    Ok(row)
}

/// The last check of [`classify`], on the trip's haversine distance in km.
/// Apart so that training can pass the distance it computes anyway as
/// feature 0 instead of computing it twice.
pub fn check_distance(km: f64) -> Result<(), DropReason> {
    if km < MIN_DISTANCE_KM { Err(DropReason::SameLocation) } else { Ok(()) }
}

/// Every check of [`classify`] but the last, [`check_distance`].
pub fn classify_before_distance(raw: Option<RawValues<'_>>) -> Result<CleanRow, DropReason> {
    let raw = raw.ok_or(DropReason::Unparsable)?;
    let mut values = [0.0; 6];
    let mut missing = false;
    for (slot, text) in values.iter_mut().zip(raw) {
        match parse_number(text) {
            Ok(v) => *slot = v,
            Err(Missing) => missing = true,
            Err(NotANumber) => return Err(DropReason::Unparsable),
        }
    }
    if missing {
        return Err(DropReason::MissingValue);
    }
    let [plat, plon, dlat, dlon, passengers, fare] = values;
    if [plat, plon, dlat, dlon].contains(&0.0) {
        return Err(DropReason::ZeroCoordinates);
    }
    if passengers.fract() != 0.0
        || !(f64::from(*PASSENGERS.start())..=f64::from(*PASSENGERS.end())).contains(&passengers)
    {
        return Err(DropReason::PassengerCountOutOfRange);
    }
    let trip = Trip::from_values([plat, plon, dlat, dlon, passengers])
        .map_err(|_| DropReason::InvalidTrip)?;
    if !trip.in_service_area() {
        return Err(DropReason::OutsideArea);
    }
    if !(MIN_FARE..=MAX_FARE).contains(&fare) {
        return Err(DropReason::FareOutOfRange);
    }
    Ok(CleanRow { trip, fare })
}

use ParseFailure::{Missing, NotANumber};

/// Why a value is not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseFailure {
    /// Empty or blank.
    Missing,
    NotANumber,
}

/// Parses a finite decimal number, allowing surrounding blanks. Returns
/// exactly what `str::parse::<f64>` returns, only faster for the plain
/// decimals the data is made of.
pub fn parse_number(text: &[u8]) -> Result<f64, ParseFailure> {
    if let Some(v) = parse_plain_decimal(text) {
        return Ok(v);
    }
    let text = std::str::from_utf8(text).map_err(|_| NotANumber)?.trim();
    if text.is_empty() {
        return Err(Missing);
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(NotANumber),
    }
}

/// Exact powers of ten: every one up to 10^22 is representable in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The fast path for `[-+]digits[.digits]` (Clinger): when the digits form
/// an integer below 2^53 and there are at most 22 decimals, both the integer
/// and the power of ten are exact, so one IEEE division gives the correctly
/// rounded value, the same as the general algorithm. Anything else
/// (exponents, blanks, long mantissas) returns `None` for the slow path.
fn parse_plain_decimal(text: &[u8]) -> Option<f64> {
    let (negative, digits) = match text.first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    // At most 19 digits and a point: the mantissa stays below 10^19 < 2^64.
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    // Whole digits, then (after a point) decimals: a tight loop each.
    let mut mantissa: u64 = 0;
    let mut i = 0;
    while let Some(d) = digits.get(i).map(|b| b.wrapping_sub(b'0')).filter(|&d| d < 10) {
        mantissa = mantissa * 10 + u64::from(d);
        i += 1;
    }
    let mut decimals = 0;
    if i < digits.len() {
        if digits[i] != b'.' {
            return None;
        }
        let fraction = &digits[i + 1..];
        for &b in fraction {
            let d = b.wrapping_sub(b'0');
            if d >= 10 {
                return None;
            }
            mantissa = mantissa * 10 + u64::from(d);
        }
        decimals = fraction.len();
    }
    // A lone point has no digits; a mantissa of 2^53 or more is inexact.
    if i + decimals == 0 || mantissa >= 1 << 53 {
        return None;
    }
    let v = mantissa as f64 / POW10[decimals];
    Some(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(values: [&str; 6], expected: Result<(), DropReason>) {
        let raw: RawValues<'_> = values.map(str::as_bytes);
        let got = classify(Some(raw)).map(|_| ());
        assert_eq!(got, expected, "{values:?}");
    }

    const GOOD: [&str; 6] = ["40.7383", "-73.9998", "40.7232", "-73.9995", "1", "7.5"];

    fn with(i: usize, v: &'static str) -> [&'static str; 6] {
        let mut row = GOOD;
        row[i] = v;
        row
    }

    #[test]
    fn reasons_table() {
        use DropReason::*;
        check(GOOD, Ok(()));
        check(with(5, " 7.5 "), Ok(()));
        check(with(4, "6"), Ok(()));
        check(with(4, "6.0"), Ok(()));
        check(with(0, ""), Err(MissingValue));
        check(with(0, "abc"), Err(Unparsable));
        check(with(5, "nan"), Err(Unparsable));
        check(with(5, "inf"), Err(Unparsable));
        check(with(1, "0"), Err(ZeroCoordinates));
        check(with(2, "0.0"), Err(ZeroCoordinates));
        check(with(4, "0"), Err(PassengerCountOutOfRange));
        check(with(4, "7"), Err(PassengerCountOutOfRange));
        check(with(4, "1.5"), Err(PassengerCountOutOfRange));
        check(with(4, "208"), Err(PassengerCountOutOfRange));
        check(with(0, "401.2"), Err(InvalidTrip));
        check(with(3, "-181"), Err(InvalidTrip));
        check(with(0, "70.15"), Err(OutsideArea));
        check(with(1, "73.99"), Err(OutsideArea));
        check(with(5, "2.49"), Err(FareOutOfRange));
        check(with(5, "-5"), Err(FareOutOfRange));
        check(with(5, "100.01"), Err(FareOutOfRange));
        check(with(5, "100"), Ok(()));
        check(["40.75", "-73.99", "40.75", "-73.99", "1", "5"], Err(SameLocation));
        assert_eq!(classify(None), Err(Unparsable));
    }

    #[test]
    fn first_failing_reason_wins() {
        use DropReason::*;
        // Missing and unparsable at once: unparsable is checked first.
        check(["", "x", "40.7", "-73.9", "1", "5"], Err(Unparsable));
        // Zero coordinates, passenger 0 and a zero fare: the coordinates win.
        check(["0", "0", "0", "0", "0", "0"], Err(ZeroCoordinates));
        // Outside the area with an absurd fare: the area wins.
        check(["70.15", "-40.22", "70.83", "-1.0", "2", "500"], Err(OutsideArea));
    }

    #[test]
    fn fast_number_parsing_equals_std() {
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "7.5",
            "-73.99981689",
            "40.73835373",
            "+3",
            "12.",
            ".5",
            "-.5",
            "9007199254740991",
            "9007199254740993",
            "0.1",
            "0.30000000000000004",
            "123456789.123456789",
            "1e3",
            "1E-2",
            " 4.5",
            "4.5 ",
            "00012.5000",
            "0.0000000000000000000001",
            "0.00000000000000000000001",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            x = crate::split::splitmix64(x);
            let int = x % 1000;
            let frac = (x >> 20) % 100_000_000;
            let places = 1 + (x >> 50) as usize % 8;
            let sign = if x & 1 == 0 { "-" } else { "" };
            cases.push(format!("{sign}{int}.{:0places$}", frac % 10u64.pow(places as u32)));
        }
        for c in &cases {
            let want = c.trim().parse::<f64>().unwrap();
            let got = parse_number(c.as_bytes()).unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "{c:?}");
        }
        for bad in ["", "  ", "-", ".", "1.2.3", "1-2", "abc", "N/A", "nan", "inf", "1e400"] {
            assert!(parse_number(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(parse_number(b" "), Err(Missing));
        assert_eq!(parse_number(b"x"), Err(NotANumber));
    }

    #[test]
    fn counts_have_every_reason() {
        let mut c = DropCounts::default();
        c.add(DropReason::SameLocation);
        c.add(DropReason::SameLocation);
        c.add(DropReason::Unparsable);
        let mut d = DropCounts::default();
        d.add(DropReason::OutsideArea);
        c.merge(&d);
        assert_eq!(c.total(), 4);
        let map = c.to_map();
        assert_eq!(map.len(), DropReason::ORDER.len());
        assert_eq!(map["same_location"], 2);
        assert_eq!(map["outside_area"], 1);
        assert_eq!(map["fare_out_of_range"], 0);
    }
}
