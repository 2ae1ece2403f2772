//! Drives the stages of pricing a predict body in process, each in a
//! function of its own, so that a profiler can tell them apart: callgrind
//! counts their instructions exactly (`cargo xtask bench profile` runs it
//! under valgrind and prints the breakdown).
//!
//! `batch_profile MODEL BODY ITERATIONS [full]` — `full` takes the full
//! streaming parser and `serde_json::to_vec` of an owned answer (the path
//! before the scanner), for a before/after comparison in one build.

use std::hint::black_box;

use model::{LinearModel, ModelArtifact, Trip};
use service::api::{Answer, PredictResponse};
use service::validate;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, body, iterations, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: batch_profile MODEL BODY ITERATIONS [full]");
    };
    let full = rest.first().is_some_and(|m| m == "full");
    let artifact = ModelArtifact::from_json(&std::fs::read_to_string(model)?)?;
    // Built once, as the service's `LoadedModel` does.
    let linear = LinearModel::try_from(&artifact)?;
    let body = std::fs::read(body)?;
    let iterations: usize = iterations.parse()?;
    let mut bytes = 0;
    for _ in 0..iterations {
        let trips = stage_decode(&body, full);
        let Ok(trips) = trips else { anyhow::bail!("the body is not a valid batch") };
        let predictions = stage_predict(&linear, &trips);
        let out_of_area = stage_out_of_area(&trips);
        let json = stage_encode(&artifact, predictions, out_of_area, full)?;
        bytes += black_box(json).len();
    }
    println!("{iterations} iterations, {} answer bytes each", bytes / iterations.max(1));
    Ok(())
}

/// Each stage keeps its name on both paths, so that the profile lines up.
#[inline(never)]
fn stage_decode(body: &[u8], full: bool) -> Result<Vec<Trip>, Vec<service::error::ErrorDetail>> {
    if full {
        validate::parse_batch_full(body, 10_000)
    } else {
        validate::parse_batch(body, 10_000)
    }
}

#[inline(never)]
fn stage_predict(linear: &LinearModel, trips: &[Trip]) -> Vec<f64> {
    linear.predict_batch(trips)
}

#[inline(never)]
fn stage_out_of_area(trips: &[Trip]) -> Vec<usize> {
    trips.iter().enumerate().filter(|(_, t)| !t.in_service_area()).map(|(i, _)| i).collect()
}

#[inline(never)]
fn stage_encode(
    artifact: &ModelArtifact,
    predictions: Vec<f64>,
    out_of_area: Vec<usize>,
    full: bool,
) -> serde_json::Result<Vec<u8>> {
    if full {
        return serde_json::to_vec(&PredictResponse {
            predictions,
            model_version: artifact.model_version.clone(),
            out_of_area,
        });
    }
    Answer {
        predictions: &predictions,
        model_version: &artifact.model_version,
        out_of_area: &out_of_area,
    }
    .to_json()
}
