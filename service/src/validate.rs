//! Turns a predict request body into trips, or into every error it holds.
//!
//! The body is checked field by field, as FastAPI/pydantic would, so a
//! client learns about all its mistakes at once, each with the path to the
//! offending value. Value rules (ranges, whole passenger counts) come from
//! [`model::Field::check`]: the service adds only the JSON shape.
//!
//! A valid body of the plain shape (`{"data":[...]}`, five numbers a row)
//! is read by [`crate::scan`], a hand-written scanner several times as fast;
//! whatever it does not accept, it leaves to the full parser here, which
//! then reads the body from the start. So errors are always worded here.
//!
//! One streaming pass over the bytes does both jobs: serde visitors read
//! `{"data": [...]}` without building a generic JSON tree, keep at most
//! `max_rows` trips and at most [`MAX_ERRORS`] error details, and skip
//! everything else (unknown keys, rows past the limit, nested junk) with
//! `IgnoredAny`, which allocates nothing. So the memory a body costs is
//! bounded by the batch limit, not by what the client sent: a 4 MiB body of
//! 400,000 empty objects costs what a valid batch does.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use model::{Field, Trip, Violation};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::{ErrorDetail, LocItem};
use crate::scan::{self, Scan};

/// At most this many error details are reported for one body; the rest
/// are counted in one final `too_many_errors` detail.
pub const MAX_ERRORS: usize = 100;

/// How often (in rows) a long parse checks whether its request is gone.
const CANCEL_CHECK_ROWS: usize = 512;

/// The UTF-8 byte order mark, which FastAPI (Python's `json.loads` on the
/// decoded body) accepts before JSON.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The request went away while its body was being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

/// Parses and validates a predict body of at most `max_rows` rows.
pub fn parse_batch(body: &[u8], max_rows: usize) -> Result<Vec<Trip>, Vec<ErrorDetail>> {
    let never = AtomicBool::new(false);
    match parse_batch_until(body, max_rows, &never) {
        Ok(result) => result,
        Err(Cancelled) => unreachable!("the flag is never set"),
    }
}

/// [`parse_batch`] that gives up (every [`CANCEL_CHECK_ROWS`] rows) once
/// `cancelled` is set, so a request that timed out or whose client left
/// stops costing CPU.
pub fn parse_batch_until(
    body: &[u8],
    max_rows: usize,
    cancelled: &AtomicBool,
) -> Result<Result<Vec<Trip>, Vec<ErrorDetail>>, Cancelled> {
    let body = body.strip_prefix(BOM).unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Err(vec![missing_body()]));
    }
    // The plain shape of a valid batch takes the scanner; every other body,
    // and so every error answer, takes the full parser below.
    match scan::scan(body, max_rows, CANCEL_CHECK_ROWS, cancelled) {
        Scan::Trips(trips) => return Ok(Ok(trips)),
        Scan::Cancelled => return Err(Cancelled),
        Scan::Other => {}
    }
    parse_full(body, max_rows, cancelled)
}

/// The full streaming parser alone, without the scanner's fast path: the
/// reference the scanner is tested and profiled against.
pub fn parse_batch_full(body: &[u8], max_rows: usize) -> Result<Vec<Trip>, Vec<ErrorDetail>> {
    let body = body.strip_prefix(BOM).unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(vec![missing_body()]);
    }
    match parse_full(body, max_rows, &AtomicBool::new(false)) {
        Ok(result) => result,
        Err(Cancelled) => unreachable!("the flag is never set"),
    }
}

fn missing_body() -> ErrorDetail {
    ErrorDetail::new(vec![LocItem::Key("body")], "Field required", "missing")
}

/// The streaming parser over a body that is not all whitespace.
fn parse_full(
    body: &[u8],
    max_rows: usize,
    cancelled: &AtomicBool,
) -> Result<Result<Vec<Trip>, Vec<ErrorDetail>>, Cancelled> {
    let mut batch = Batch::new(max_rows, cancelled);
    let mut de = serde_json::Deserializer::from_slice(body);
    let read = BodySeed(&mut batch).deserialize(&mut de).and_then(|()| de.end());
    if batch.cancelled {
        return Err(Cancelled);
    }
    if let Err(e) = read {
        return Ok(Err(vec![ErrorDetail::new(
            vec![LocItem::Key("body")],
            format!("JSON decode error: {e}"),
            "json_invalid",
        )]));
    }
    Ok(batch.finish())
}

/// What the body held, as far as the shape goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    NotAnObject,
    NoData,
    DataNotAList,
    Rows(usize),
}

/// Error details, at most [`MAX_ERRORS`] kept; the rest only counted.
#[derive(Default)]
struct Errors {
    kept: Vec<ErrorDetail>,
    dropped: usize,
}

impl Errors {
    fn push(&mut self, detail: ErrorDetail) {
        if self.kept.len() < MAX_ERRORS {
            self.kept.push(detail);
        } else {
            self.dropped += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    fn into_details(mut self) -> Vec<ErrorDetail> {
        if self.dropped > 0 {
            self.kept.push(ErrorDetail::new(
                vec![LocItem::Key("body"), LocItem::Key("data")],
                format!("{} more errors not listed (at most {MAX_ERRORS} are)", self.dropped),
                "too_many_errors",
            ));
        }
        self.kept
    }
}

/// The state of one parse: the trips and errors of the latest `data` key
/// (a duplicate key replaces the earlier one, as in a JSON object).
struct Batch<'a> {
    max_rows: usize,
    cancelled_flag: &'a AtomicBool,
    cancelled: bool,
    shape: Shape,
    trips: Vec<Trip>,
    errors: Errors,
}

impl<'a> Batch<'a> {
    fn new(max_rows: usize, cancelled_flag: &'a AtomicBool) -> Self {
        Batch {
            max_rows,
            cancelled_flag,
            cancelled: false,
            shape: Shape::NoData,
            trips: Vec::new(),
            errors: Errors::default(),
        }
    }

    fn reset(&mut self, shape: Shape) {
        self.shape = shape;
        self.trips = Vec::new();
        self.errors = Errors::default();
    }

    fn finish(self) -> Result<Vec<Trip>, Vec<ErrorDetail>> {
        let data_loc = || vec![LocItem::Key("body"), LocItem::Key("data")];
        let n = match self.shape {
            Shape::NotAnObject => return Err(vec![not_an_object(vec![LocItem::Key("body")])]),
            Shape::NoData => {
                return Err(vec![ErrorDetail::new(data_loc(), "Field required", "missing")]);
            }
            Shape::DataNotAList => {
                return Err(vec![ErrorDetail::new(
                    data_loc(),
                    "Input should be a valid list",
                    "list_type",
                )]);
            }
            Shape::Rows(n) => n,
        };
        if n == 0 {
            return Err(vec![ErrorDetail::new(
                data_loc(),
                "List should have at least 1 item after validation, not 0",
                "too_short",
            )]);
        }
        if n > self.max_rows {
            return Err(vec![ErrorDetail::new(
                data_loc(),
                format!(
                    "List should have at most {} items after validation, not {n}",
                    self.max_rows
                ),
                "too_long",
            )]);
        }
        if self.errors.is_empty() { Ok(self.trips) } else { Err(self.errors.into_details()) }
    }

    fn row(&mut self, index: usize, row: Row) {
        match row_trip(index, row) {
            Ok(trip) => {
                if self.errors.is_empty() {
                    self.trips.push(trip);
                }
            }
            Err(details) => {
                // Trips are of no use once the batch is refused.
                self.trips = Vec::new();
                for detail in details {
                    self.errors.push(detail);
                }
            }
        }
    }

    /// Sets `cancelled` when the request is gone; the caller then aborts.
    fn check_cancelled(&mut self) -> bool {
        self.cancelled = self.cancelled_flag.load(Ordering::Relaxed);
        self.cancelled
    }
}

/// One row as read: `None` when it is not an object, else each field's
/// value in [`Field::ALL`] order.
type Row = Option<[Slot; 5]>;

/// A field's value as far as the schema cares.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Missing,
    Number(f64),
    /// Present but not a number (string, bool, null, list, object).
    Wrong,
}

/// The visit methods of a visitor that expects one JSON type: every other
/// type is read to its end (nested values skipped without allocating) and
/// answered with `self.other()`.
macro_rules! anything_else {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(self.other())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(self.other())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(self.other())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(self.other())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(self.other())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(self.other())
        }
    };
}

macro_rules! skip_seq {
    () => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(self.other())
        }
    };
}

macro_rules! skip_map {
    () => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(self.other())
        }
    };
}

/// A seed that is its own visitor, for any JSON type.
macro_rules! seed_of_visitor {
    ($seed:ty, $value:ty) => {
        impl<'de> DeserializeSeed<'de> for $seed {
            type Value = $value;
            fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<$value, D::Error> {
                de.deserialize_any(self)
            }
        }
    };
}

/// The whole body: an object whose `data` key matters.
struct BodySeed<'b, 'a>(&'b mut Batch<'a>);

seed_of_visitor!(BodySeed<'_, '_>, ());

impl<'de> Visitor<'de> for BodySeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            if key.is_data() {
                map.next_value_seed(DataSeed(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
    anything_else!();
    skip_seq!();
}

impl BodySeed<'_, '_> {
    fn other(self) {
        self.0.reset(Shape::NotAnObject);
    }
}

/// The value of `data`: a list of rows.
struct DataSeed<'b, 'a>(&'b mut Batch<'a>);

seed_of_visitor!(DataSeed<'_, '_>, ());

impl<'de> Visitor<'de> for DataSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let batch = self.0;
        batch.reset(Shape::Rows(0));
        let mut n = 0;
        loop {
            if n > 0 && n % CANCEL_CHECK_ROWS == 0 && batch.check_cancelled() {
                return Err(de::Error::custom("request cancelled"));
            }
            // Rows past the limit are only counted, for the error message.
            if n < batch.max_rows {
                match seq.next_element_seed(RowSeed)? {
                    Some(row) => batch.row(n, row),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            n += 1;
        }
        batch.shape = Shape::Rows(n);
        Ok(())
    }
    anything_else!();
    skip_map!();
}

impl DataSeed<'_, '_> {
    fn other(self) {
        self.0.reset(Shape::DataNotAList);
    }
}

/// One row: an object with the five fields.
struct RowSeed;

seed_of_visitor!(RowSeed, Row);

impl<'de> Visitor<'de> for RowSeed {
    type Value = Row;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
        let mut slots = [Slot::Missing; 5];
        while let Some(key) = map.next_key::<Key>()? {
            match key.field() {
                Some(i) => slots[i] = map.next_value::<Slot>()?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(slots))
    }
    anything_else!();
    skip_seq!();
}

impl RowSeed {
    fn other(self) -> Row {
        None
    }
}

/// An object key: its position among `data` and the five fields, if any.
struct Key(Option<usize>);

impl Key {
    const DATA: usize = 5;

    fn is_data(&self) -> bool {
        self.0 == Some(Key::DATA)
    }

    fn field(&self) -> Option<usize> {
        self.0.filter(|i| *i < Key::DATA)
    }
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                if key == "data" {
                    return Ok(Key(Some(Key::DATA)));
                }
                Ok(Key(Field::ALL.iter().position(|f| f.name() == key)))
            }
        }
        de.deserialize_identifier(KeyVisitor)
    }
}

impl<'de> de::Deserialize<'de> for Slot {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Slot, D::Error> {
        struct SlotVisitor;
        impl<'de> Visitor<'de> for SlotVisitor {
            type Value = Slot;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Slot, E> {
                Ok(Slot::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Slot, E> {
                Ok(Slot::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Slot, E> {
                Ok(Slot::Number(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Slot, E> {
                Ok(Slot::Wrong)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Slot, E> {
                Ok(Slot::Wrong)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Slot, E> {
                Ok(Slot::Wrong)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Slot, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Slot::Wrong)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Slot::Wrong)
            }
        }
        de.deserialize_any(SlotVisitor)
    }
}

fn not_an_object(loc: Vec<LocItem>) -> ErrorDetail {
    ErrorDetail::new(
        loc,
        "Input should be a valid dictionary or object to extract fields from",
        "model_attributes_type",
    )
}

/// The trip of row `index`, or every error that prevents it: shape errors
/// in [`Field::ALL`] order, then the value rules.
fn row_trip(index: usize, row: Row) -> Result<Trip, Vec<ErrorDetail>> {
    let loc = |field: Option<Field>| {
        let mut loc = vec![LocItem::Key("body"), LocItem::Key("data"), LocItem::Index(index)];
        loc.extend(field.map(|f| LocItem::Key(f.name())));
        loc
    };
    let Some(slots) = row else {
        return Err(vec![not_an_object(loc(None))]);
    };
    let mut values = [0.0; 5];
    let mut errors = Vec::new();
    for ((value, slot), field) in values.iter_mut().zip(slots).zip(Field::ALL) {
        match slot {
            Slot::Missing => {
                errors.push(ErrorDetail::new(loc(Some(field)), "Field required", "missing"));
            }
            Slot::Wrong => errors.push(type_error(loc(Some(field)), field)),
            Slot::Number(v) => match field.check(v) {
                Ok(()) => *value = v,
                Err(violation) => errors.push(violation_detail(index, &violation)),
            },
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Trip::from_values(values)
        .map_err(|violations| violations.iter().map(|v| violation_detail(index, v)).collect())
}

fn type_error(loc: Vec<LocItem>, field: Field) -> ErrorDetail {
    if field == Field::PassengerCount {
        ErrorDetail::new(loc, "Input should be a valid integer", "int_type")
    } else {
        ErrorDetail::new(loc, "Input should be a valid number", "float_type")
    }
}

fn violation_detail(index: usize, violation: &Violation) -> ErrorDetail {
    ErrorDetail::new(
        vec![
            LocItem::Key("body"),
            LocItem::Key("data"),
            LocItem::Index(index),
            LocItem::Key(violation.field.name()),
        ],
        violation.message(),
        violation.kind.code(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str = r#"{"pickup_latitude":40.7,"pickup_longitude":-73.9,"dropoff_latitude":40.8,"dropoff_longitude":-73.95,"passenger_count":1}"#;

    fn errors(body: &str) -> Vec<(String, String)> {
        match parse_batch(body.as_bytes(), 3) {
            Ok(trips) => panic!("{body} accepted as {trips:?}"),
            Err(e) => {
                e.iter().map(|d| (serde_json::to_string(&d.loc).unwrap(), d.kind.clone())).collect()
            }
        }
    }

    fn check(body: &str, expected: &[(&str, &str)]) {
        let got = errors(body);
        let want: Vec<(String, String)> =
            expected.iter().map(|(l, k)| ((*l).to_owned(), (*k).to_owned())).collect();
        assert_eq!(got, want, "{body}");
    }

    #[test]
    fn accepts_well_formed_rows_in_order() {
        let body = format!(
            r#"{{"data":[{ROW},{{"pickup_latitude":1,"pickup_longitude":2,"dropoff_latitude":3,"dropoff_longitude":4,"passenger_count":2.0,"extra":"ignored"}}]}}"#
        );
        let trips = parse_batch(body.as_bytes(), 3).unwrap();
        assert_eq!(trips.len(), 2);
        assert_eq!(trips[0].pickup_latitude, 40.7);
        assert_eq!(trips[1].values(), [1.0, 2.0, 3.0, 4.0, 2.0]);
    }

    #[test]
    fn duplicate_keys_take_the_slow_path_and_still_parse() {
        let body = format!(r#"{{"data":[{ROW}],"data":[{ROW},{ROW}]}}"#);
        assert_eq!(parse_batch(body.as_bytes(), 3).unwrap().len(), 2);
    }

    #[test]
    fn a_byte_order_mark_is_accepted() {
        let body = format!("\u{feff}{{\"data\":[{ROW}]}}");
        assert_eq!(parse_batch(body.as_bytes(), 3).unwrap().len(), 1);
    }

    #[test]
    fn errors_are_capped_and_the_rest_counted() {
        let rows = vec!["{}"; 1000].join(",");
        let body = format!(r#"{{"data":[{rows}],"x":[{{"a":[]}},{{"a":[]}}]}}"#);
        let details = parse_batch(body.as_bytes(), 1000).unwrap_err();
        assert_eq!(details.len(), MAX_ERRORS + 1);
        let last = details.last().unwrap();
        assert_eq!(last.kind, "too_many_errors");
        assert!(
            last.msg.starts_with(&format!("{} more errors", 5000 - MAX_ERRORS)),
            "{}",
            last.msg
        );
    }

    #[test]
    fn rows_past_the_limit_are_counted_not_kept() {
        let rows = vec![ROW; 50].join(",");
        let body = format!(r#"{{"data":[{rows}]}}"#);
        let details = parse_batch(body.as_bytes(), 3).unwrap_err();
        assert_eq!(details.len(), 1);
        assert!(details[0].msg.ends_with("not 50"), "{}", details[0].msg);
    }

    #[test]
    fn a_cancelled_parse_stops() {
        let rows = vec![ROW; 2 * CANCEL_CHECK_ROWS].join(",");
        let body = format!(r#"{{"data":[{rows}]}}"#);
        let flag = AtomicBool::new(true);
        assert!(matches!(parse_batch_until(body.as_bytes(), 10_000, &flag), Err(Cancelled)));
        flag.store(false, Ordering::Relaxed);
        let trips = parse_batch_until(body.as_bytes(), 10_000, &flag).unwrap().unwrap();
        assert_eq!(trips.len(), 2 * CANCEL_CHECK_ROWS);
    }

    #[test]
    fn shape_errors() {
        check("", &[(r#"["body"]"#, "missing")]);
        check("{", &[(r#"["body"]"#, "json_invalid")]);
        check("[1]", &[(r#"["body"]"#, "model_attributes_type")]);
        check("{}", &[(r#"["body","data"]"#, "missing")]);
        check(r#"{"data":{}}"#, &[(r#"["body","data"]"#, "list_type")]);
        check(r#"{"data":[]}"#, &[(r#"["body","data"]"#, "too_short")]);
        let four = format!(r#"{{"data":[{ROW},{ROW},{ROW},{ROW}]}}"#);
        check(&four, &[(r#"["body","data"]"#, "too_long")]);
        check(r#"{"data":[1]}"#, &[(r#"["body","data",0]"#, "model_attributes_type")]);
        check(r#"{"data":null}"#, &[(r#"["body","data"]"#, "list_type")]);
        check("\"data\"", &[(r#"["body"]"#, "model_attributes_type")]);
        check(r#"{"data":[]} x"#, &[(r#"["body"]"#, "json_invalid")]);
        check(
            r#"{"data":[{"a":[[[{}]]]}]} "#,
            &[
                (r#"["body","data",0,"pickup_latitude"]"#, "missing"),
                (r#"["body","data",0,"pickup_longitude"]"#, "missing"),
                (r#"["body","data",0,"dropoff_latitude"]"#, "missing"),
                (r#"["body","data",0,"dropoff_longitude"]"#, "missing"),
                (r#"["body","data",0,"passenger_count"]"#, "missing"),
            ],
        );
    }

    #[test]
    fn every_row_error_is_reported_with_its_path() {
        let bad = r#"{"pickup_latitude":"40.7","pickup_longitude":-200,"dropoff_latitude":true,"passenger_count":1.5}"#;
        let body = format!(r#"{{"data":[{ROW},{bad}]}}"#);
        check(
            &body,
            &[
                (r#"["body","data",1,"pickup_latitude"]"#, "float_type"),
                (r#"["body","data",1,"pickup_longitude"]"#, "value_error.number.out_of_range"),
                (r#"["body","data",1,"dropoff_latitude"]"#, "float_type"),
                (r#"["body","data",1,"dropoff_longitude"]"#, "missing"),
                (r#"["body","data",1,"passenger_count"]"#, "value_error.number.not_integer"),
            ],
        );
        // Once the shape is right, value rules apply to every row.
        let body = format!(
            r#"{{"data":[{},{ROW},{}]}}"#,
            ROW.replace("-73.9,", "-200,"),
            ROW.replace(r#""passenger_count":1"#, r#""passenger_count":1.5"#)
        );
        check(
            &body,
            &[
                (r#"["body","data",0,"pickup_longitude"]"#, "value_error.number.out_of_range"),
                (r#"["body","data",2,"passenger_count"]"#, "value_error.number.not_integer"),
            ],
        );
        let body = format!(
            r#"{{"data":[{}]}}"#,
            ROW.replace("\"passenger_count\":1", "\"passenger_count\":\"1\"")
        );
        check(&body, &[(r#"["body","data",0,"passenger_count"]"#, "int_type")]);
    }

    /// A xorshift generator: the same bodies on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        fn digits(&mut self, n: usize) -> String {
            (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
        }

        fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
            of[self.below(of.len() as u64) as usize]
        }

        /// A number as JSON may write it, or nearly: every integer and
        /// fraction length up to past the scanner's 19 digits (so that
        /// every lane count of its eight-digit words is met), leading
        /// zeros, exponents, and now and then something that is not a
        /// number at all.
        fn number(&mut self) -> String {
            let sign = self.pick(&["", "", "-"]);
            let integer = match self.below(8) {
                0 => "0".to_owned(),
                1 => {
                    let n = self.below(3) as usize;
                    format!("0{}", self.digits(n))
                }
                2 => {
                    let n = self.below(22) as usize;
                    self.digits(n)
                }
                _ => {
                    let (first, n) = (1 + self.below(9), self.below(3) as usize);
                    format!("{first}{}", self.digits(n))
                }
            };
            let fraction = match self.below(6) {
                0 => String::new(),
                1 => ".".to_owned(),
                2 => {
                    let n = self.below(24) as usize;
                    format!(".{}", self.digits(n))
                }
                _ => {
                    let n = self.below(9) as usize + 1;
                    format!(".{}", self.digits(n))
                }
            };
            let exponent = match self.below(10) {
                0 => format!("e{}", self.below(30)),
                1 => format!("E-{}", self.below(30)),
                2 => {
                    let n = self.below(5) as usize;
                    format!("e+{}", self.digits(n))
                }
                _ => String::new(),
            };
            let junk = match self.below(60) {
                0 => "x",
                1 => "\"",
                2 => "-",
                3 => ".5",
                _ => "",
            };
            format!("{sign}{integer}{fraction}{exponent}{junk}")
        }

        fn space(&mut self) -> &'static str {
            match self.below(12) {
                0 => " ",
                1 => "\n\t",
                2 => "\r\n  ",
                _ => "",
            }
        }
    }

    /// The fast path changes no answer: on every body, valid or not, the
    /// scanner and parser together give exactly what the full parser
    /// alone gives — the same trips to the bit, or the same errors.
    #[test]
    fn the_fast_path_gives_the_full_parsers_answer_on_every_body() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut scanned = 0;
        let bodies = 100_000;
        for _ in 0..bodies {
            let rows = 1 + rng.below(4) as usize;
            let mut body =
                format!("{}{{{}\"data\"{}:{}[", rng.space(), rng.space(), rng.space(), rng.space());
            for row in 0..rows {
                if row > 0 {
                    body.push_str(rng.space());
                    body.push(',');
                }
                let mut fields: Vec<usize> = (0..5).collect();
                for i in (1..5).rev() {
                    fields.swap(i, rng.below(i as u64 + 1) as usize);
                }
                match rng.below(40) {
                    0 => {
                        fields.pop();
                    }
                    1 => fields.push(fields[0]),
                    _ => {}
                }
                body.push_str(rng.space());
                body.push('{');
                for (i, &f) in fields.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    let name = Field::ALL[f].name();
                    let name = match rng.below(80) {
                        0 => &name[..name.len() - 1],
                        1 => "pickup_latitudes",
                        2 => "extra",
                        _ => name,
                    };
                    let value = match (f, rng.below(8)) {
                        (4, 0..=5) => rng.below(11).to_string(),
                        (_, 0) => format!("{}{}", rng.pick(&["", "-"]), rng.below(200)),
                        (_, 1) => rng.number(),
                        // A coordinate as clients write them: every length
                        // of fraction a double prints with.
                        _ => {
                            let (whole, n) = (rng.below(90), 1 + rng.below(17) as usize);
                            format!("{}{whole}.{}", rng.pick(&["", "-"]), rng.digits(n))
                        }
                    };
                    let value = match rng.below(200) {
                        0 => "null".to_owned(),
                        1 => format!("\"{value}\""),
                        _ => value,
                    };
                    body.push_str(&format!(
                        "{}\"{name}\"{}:{}{value}{}",
                        rng.space(),
                        rng.space(),
                        rng.space(),
                        rng.space()
                    ));
                }
                body.push('}');
            }
            body.push_str(&format!("{}]{}}}{}", rng.space(), rng.space(), rng.space()));
            if rng.below(100) == 0 {
                body.truncate(rng.below(body.len() as u64) as usize);
            }
            let fast = parse_batch(body.as_bytes(), 3);
            let full = parse_batch_full(body.as_bytes(), 3);
            let bits =
                |t: &[Trip]| t.iter().map(|t| t.values().map(f64::to_bits)).collect::<Vec<_>>();
            match (&fast, &full) {
                (Ok(a), Ok(b)) => assert_eq!(bits(a), bits(b), "{body}"),
                (Err(a), Err(b)) => assert_eq!(a, b, "{body}"),
                _ => panic!("{body}: {fast:?} against {full:?}"),
            }
            if matches!(
                scan::scan(body.as_bytes(), 3, 512, &AtomicBool::new(false)),
                scan::Scan::Trips(_)
            ) {
                scanned += 1;
            }
        }
        // Enough of them take the fast path for the test to mean something.
        assert!(scanned > bodies / 40, "only {scanned} of {bodies} bodies scanned");
    }

    /// The scanner's trips are the full parser's, to the bit.
    #[test]
    fn trips_are_the_full_parsers_to_the_bit() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut scanned = 0;
        for _ in 0..2000 {
            let mut number = |bound: u64| {
                let whole = next(bound);
                let sign = if next(3) == 0 { "-" } else { "" };
                let digits = next(18) as usize;
                let fraction: String =
                    (0..digits).map(|_| char::from(b'0' + next(10) as u8)).collect();
                let exponent = match next(6) {
                    0 => format!("e{}", next(4)),
                    1 => format!("E-{}", next(3)),
                    _ => String::new(),
                };
                if fraction.is_empty() {
                    format!("{sign}{whole}{exponent}")
                } else {
                    format!("{sign}{whole}.{fraction}{exponent}")
                }
            };
            let row = format!(
                r#"{{"pickup_latitude":{},"pickup_longitude":{},"dropoff_latitude" : {},"dropoff_longitude":{},"passenger_count":{}}}"#,
                number(90),
                number(180),
                number(90),
                number(180),
                next(10)
            );
            let body = format!(r#"{{"data":[{row},{row}]}}"#);
            let full = parse_batch_full(body.as_bytes(), 3);
            match scan::scan(body.as_bytes(), 3, 512, &AtomicBool::new(false)) {
                scan::Scan::Trips(trips) => {
                    scanned += 1;
                    let full = full.unwrap_or_else(|e| panic!("{body}: {e:?}"));
                    let bits = |t: &[Trip]| {
                        t.iter().map(|t| t.values().map(f64::to_bits)).collect::<Vec<_>>()
                    };
                    assert_eq!(bits(&trips), bits(&full), "{body}");
                }
                scan::Scan::Other => {}
                scan::Scan::Cancelled => panic!("never cancelled"),
            }
        }
        assert!(scanned > 500, "only {scanned} bodies scanned");
    }
}
