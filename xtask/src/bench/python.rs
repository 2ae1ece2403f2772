//! The Python side of the benchmarks: the original stack's scripts
//! (`xtask/python/*.py`, compiled in, so a run uses the scripts of its own
//! build), and the model crate's constants they compute with.
//!
//! The scripts write only formulas; every number the model crate defines
//! (Earth radius, grid factors, airports, service area) reaches them in
//! [`CONSTANTS_ENV`], so it cannot drift. What the formulas give is checked
//! by each benchmark against the model crate before anything is measured.

use std::path::Path;

use anyhow::{Context, Result};
use model::geo::{
    EARTH_RADIUS_KM, EWR, JFK, KM_PER_DEG_LAT, KM_PER_DEG_LON_NYC, LGA, SERVICE_AREA,
};
use serde::Deserialize;
use serde_json::json;

/// The environment variable the scripts read the constants from.
pub const CONSTANTS_ENV: &str = "TAXI_MODEL_CONSTANTS";

/// The scripts, by file name.
const SCRIPTS: [(&str, &str); 3] = [
    ("nyc_features.py", include_str!("../../python/nyc_features.py")),
    ("bench_train.py", include_str!("../../python/bench_train.py")),
    ("original_app.py", include_str!("../../python/original_app.py")),
];

/// The training script's file name, once [`install`]ed.
pub const BENCH_TRAIN: &str = "bench_train.py";
/// The original service's module name (for uvicorn), once [`install`]ed.
pub const ORIGINAL_APP_MODULE: &str = "original_app";

/// Writes the scripts into `dir` (the working directory the benchmark runs
/// them from, where they import each other).
pub fn install(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in SCRIPTS {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The model crate's constants, as the scripts read them.
pub fn constants() -> String {
    let point = |p: model::geo::Point| [p.lat, p.lon];
    json!({
        "earth_radius_km": EARTH_RADIUS_KM,
        "km_per_deg_lat": KM_PER_DEG_LAT,
        "km_per_deg_lon": KM_PER_DEG_LON_NYC,
        "airports": { "jfk": point(JFK), "lga": point(LGA), "ewr": point(EWR) },
        "service_area": {
            "lat_min": SERVICE_AREA.lat_min,
            "lat_max": SERVICE_AREA.lat_max,
            "lon_min": SERVICE_AREA.lon_min,
            "lon_max": SERVICE_AREA.lon_max,
        },
    })
    .to_string()
}

/// What `bench_train.py` prints.
#[derive(Debug, Deserialize)]
pub struct TrainReport {
    pub r2: f64,
    pub rmse: f64,
    /// Rows its cleaning kept.
    pub used: u64,
    pub sample: Sample,
}

/// Kept trips (in file order) and the script's prediction for each under
/// the trainer's model.
#[derive(Debug, Deserialize)]
pub struct Sample {
    pub trips: Vec<[f64; 5]>,
    pub predictions: Vec<f64>,
}

impl TrainReport {
    /// Reads the script's last line of output.
    pub fn parse(stdout: &str) -> Result<TrainReport> {
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line)
            .with_context(|| format!("{BENCH_TRAIN} printed {:?}", truncate(stdout, 400)))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feature_names_the_scripts_compute_are_the_model_crates() {
        // nyc_features.py names airport features pickup_<key>_km and
        // dropoff_<key>_km after the keys of "airports".
        let constants: serde_json::Value = serde_json::from_str(&constants()).unwrap();
        let airports = constants["airports"].as_object().unwrap();
        let mut names = vec!["haversine_km", "sqrt_haversine_km", "manhattan_km"]
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        for key in airports.keys() {
            names.push(format!("pickup_{key}_km"));
            names.push(format!("dropoff_{key}_km"));
        }
        names.push("passenger_count".to_owned());
        let mut ours = model::FEATURE_NAMES.map(str::to_owned).to_vec();
        names.sort();
        ours.sort();
        assert_eq!(names, ours);
        let script = SCRIPTS[0].1;
        for literal in ["haversine_km", "sqrt_haversine_km", "manhattan_km", "passenger_count"] {
            assert!(script.contains(&format!("\"{literal}\"")), "{literal} not in the script");
        }
    }

    #[test]
    fn reads_the_training_scripts_report() {
        let out = "warning: something\n{\"r2\": 0.8, \"rmse\": 4.1, \"mae\": 2.0, \"read\": 10, \
                   \"used\": 9, \"import_seconds\": 1.0, \"sample\": {\"trips\": \
                   [[40.7, -73.9, 40.8, -73.95, 1.0]], \"predictions\": [7.5]}}\n";
        let r = TrainReport::parse(out).unwrap();
        assert_eq!((r.used, r.sample.trips.len(), r.sample.predictions[0]), (9, 1, 7.5));
        assert!(TrainReport::parse("Traceback (most recent call last):").is_err());
    }
}
