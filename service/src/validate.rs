//! Turns a predict request body into trips, or into every error it holds.
//!
//! The body is checked field by field, as FastAPI/pydantic would, so a
//! client learns about all its mistakes at once, each with the path to the
//! offending value. Value rules (ranges, whole passenger counts) come from
//! [`model::Field::check`]: the service adds only the JSON shape.
//!
//! A well-formed body takes a typed fast path; only a body that does not
//! fit the expected shape is walked as a generic JSON value to explain why.

use model::{Field, Trip, Violation};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ErrorDetail, LocItem};

/// The expected shape, for the fast path: `{"data": [{five numbers}, …]}`.
/// Unknown keys are ignored, as pydantic does by default.
#[derive(Deserialize)]
struct RawRequest {
    data: Vec<RawTrip>,
}

#[derive(Deserialize)]
struct RawTrip {
    pickup_latitude: f64,
    pickup_longitude: f64,
    dropoff_latitude: f64,
    dropoff_longitude: f64,
    passenger_count: f64,
}

impl RawTrip {
    fn values(&self) -> [f64; 5] {
        [
            self.pickup_latitude,
            self.pickup_longitude,
            self.dropoff_latitude,
            self.dropoff_longitude,
            self.passenger_count,
        ]
    }
}

/// Parses and validates a predict body of at most `max_rows` rows.
pub fn parse_batch(body: &[u8], max_rows: usize) -> Result<Vec<Trip>, Vec<ErrorDetail>> {
    if let Ok(request) = serde_json::from_slice::<RawRequest>(body) {
        check_length(request.data.len(), max_rows)?;
        return check_rows(request.data.iter().map(|row| Ok(row.values())));
    }
    // Not the happy shape: find out exactly why.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(vec![ErrorDetail::new(
            vec![LocItem::Key("body")],
            "Field required",
            "missing",
        )]);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        vec![ErrorDetail::new(
            vec![LocItem::Key("body")],
            format!("JSON decode error: {e}"),
            "json_invalid",
        )]
    })?;
    walk(&value, max_rows)
}

fn walk(value: &Value, max_rows: usize) -> Result<Vec<Trip>, Vec<ErrorDetail>> {
    let body = || vec![LocItem::Key("body")];
    let data_loc = || vec![LocItem::Key("body"), LocItem::Key("data")];
    let Some(object) = value.as_object() else {
        return Err(vec![not_an_object(body())]);
    };
    let Some(data) = object.get("data") else {
        return Err(vec![ErrorDetail::new(data_loc(), "Field required", "missing")]);
    };
    let Some(rows) = data.as_array() else {
        return Err(vec![ErrorDetail::new(
            data_loc(),
            "Input should be a valid list",
            "list_type",
        )]);
    };
    check_length(rows.len(), max_rows)?;
    check_rows(rows.iter().enumerate().map(|(i, row)| row_values(i, row)))
}

fn not_an_object(loc: Vec<LocItem>) -> ErrorDetail {
    ErrorDetail::new(
        loc,
        "Input should be a valid dictionary or object to extract fields from",
        "model_attributes_type",
    )
}

fn check_length(n: usize, max_rows: usize) -> Result<(), Vec<ErrorDetail>> {
    let loc = vec![LocItem::Key("body"), LocItem::Key("data")];
    if n == 0 {
        return Err(vec![ErrorDetail::new(
            loc,
            "List should have at least 1 item after validation, not 0",
            "too_short",
        )]);
    }
    if n > max_rows {
        return Err(vec![ErrorDetail::new(
            loc,
            format!("List should have at most {max_rows} items after validation, not {n}"),
            "too_long",
        )]);
    }
    Ok(())
}

/// The five values of row `index` in [`Field::ALL`] order, or the shape
/// errors that prevent reading them.
fn row_values(index: usize, row: &Value) -> Result<[f64; 5], Vec<ErrorDetail>> {
    let loc = |field: Option<Field>| {
        let mut loc = vec![LocItem::Key("body"), LocItem::Key("data"), LocItem::Index(index)];
        loc.extend(field.map(|f| LocItem::Key(f.name())));
        loc
    };
    let Some(object) = row.as_object() else {
        return Err(vec![not_an_object(loc(None))]);
    };
    let mut values = [0.0; 5];
    let mut errors = Vec::new();
    for (slot, field) in values.iter_mut().zip(Field::ALL) {
        match object.get(field.name()) {
            None => errors.push(ErrorDetail::new(loc(Some(field)), "Field required", "missing")),
            Some(Value::Number(n)) => match n.as_f64().map(|v| (v, field.check(v))) {
                Some((v, Ok(()))) => *slot = v,
                Some((_, Err(violation))) => errors.push(violation_detail(index, &violation)),
                None => errors.push(type_error(loc(Some(field)), field)),
            },
            Some(_) => errors.push(type_error(loc(Some(field)), field)),
        }
    }
    if errors.is_empty() { Ok(values) } else { Err(errors) }
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

/// Applies the schema's value rules to every row, collecting every error.
fn check_rows<I>(rows: I) -> Result<Vec<Trip>, Vec<ErrorDetail>>
where
    I: ExactSizeIterator<Item = Result<[f64; 5], Vec<ErrorDetail>>>,
{
    let mut trips = Vec::with_capacity(rows.len());
    let mut errors = Vec::new();
    for (index, row) in rows.enumerate() {
        match row.map(Trip::from_values) {
            Ok(Ok(trip)) => trips.push(trip),
            Ok(Err(violations)) => {
                errors.extend(violations.iter().map(|v| violation_detail(index, v)));
            }
            Err(shape) => errors.extend(shape),
        }
    }
    if errors.is_empty() { Ok(trips) } else { Err(errors) }
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
}
