//! The prediction API's request bodies, as the stages, `up` and the
//! benchmarks send them: built from `model` trips (in [`model::Field::ALL`]
//! order), so field names and the documented example come from the
//! contract, not from strings copied here.

use serde_json::{Map, Value, json};

/// One row of `{"data": [...]}`.
pub fn trip_json(values: [f64; 5]) -> Value {
    let mut row = Map::new();
    for (field, value) in model::Field::ALL.iter().zip(values) {
        let value = match field {
            // An integer on the wire, as the API documents it.
            model::Field::PassengerCount => json!(value as u8),
            _ => json!(value),
        };
        row.insert(field.name().to_owned(), value);
    }
    Value::Object(row)
}

/// `{"data": [rows…]}`.
pub fn predict_body(rows: &[[f64; 5]]) -> String {
    let data: Vec<Value> = rows.iter().map(|r| trip_json(*r)).collect();
    json!({ "data": data }).to_string()
}

/// The documented request (DESIGN.md): one trip far outside New York that
/// must still answer 200.
pub fn documented_request() -> String {
    predict_body(&[model::DOCUMENTED_TRIP])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_request_is_the_one_design_shows() {
        let ours: Value = serde_json::from_str(&documented_request()).unwrap();
        let design: Value = serde_json::from_str(
            r#"{"data":[{"pickup_latitude":70.15,"pickup_longitude":-40.22,"dropoff_latitude":70.83,"dropoff_longitude":-1.0,"passenger_count":2}]}"#,
        )
        .unwrap();
        assert_eq!(ours, design);
    }
}
