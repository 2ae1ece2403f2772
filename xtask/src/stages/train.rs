//! Stage train: build the trainer, train on the reference data (or, where
//! the reference data is absent, on a generated sample) and apply the
//! pipeline's quality gate. The artifact and metrics land in `artifacts/`,
//! where the build stage and CI's job artifacts pick them up.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::effects::process::{self, cmd};
use crate::effects::{deps, paths};
use crate::stages::artifacts;

/// The quality gate on the reference data: the bar for held-out R².
pub const MIN_R2_REFERENCE: f64 = 0.77;
/// The quality gate on the generated sample. The generator's fares follow
/// the meter with traffic noise, and a correct fit reaches R² ≈ 0.90 on it;
/// 0.85 leaves room for sampling noise and still fails a broken fit.
pub const MIN_R2_SAMPLE: f64 = 0.85;
/// Rows of the generated sample: enough for stable metrics, seconds to make.
pub const SAMPLE_ROWS: u64 = 200_000;
/// The trainer's exit code for a failed quality gate.
const EXIT_QUALITY_GATE: i32 = 3;

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Training data [default: ../shared/data/uber.csv when present, else a
    /// generated sample in artifacts/].
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Fail the stage when the held-out R² is below this [default: 0.77 on
    /// the reference data, 0.85 on the generated sample].
    #[arg(long)]
    pub min_r2: Option<f64>,
    /// Train on the generated sample even when the reference data exists.
    #[arg(long, conflicts_with = "csv")]
    pub sample: bool,
    /// Rows of the generated sample.
    #[arg(long, default_value_t = SAMPLE_ROWS)]
    pub sample_rows: u64,
    /// Seed of the train/test split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The pipeline's defaults (the same as the command line's).
impl Default for TrainArgs {
    fn default() -> Self {
        TrainArgs { csv: None, min_r2: None, sample: false, sample_rows: SAMPLE_ROWS, seed: 42 }
    }
}

/// What the stage produced.
#[derive(Debug, Clone)]
pub struct TrainOutput {
    pub model: PathBuf,
    /// The data trained on.
    pub data: PathBuf,
    /// Held-out R² and RMSE from metrics.json.
    pub r2: f64,
    pub rmse: f64,
}

/// Builds the release trainer and returns its path.
pub fn build_trainer() -> Result<PathBuf> {
    deps::ensure(deps::TRAINER)?;
    process::run(cmd("cargo", ["build", "--release", "--quiet", "--package", "trainer"]))?;
    let binary = paths::cargo_target().join("release").join("trainer");
    if !binary.is_file() {
        bail!("the trainer was built but {} is missing", binary.display());
    }
    Ok(binary)
}

/// Writes `rows` synthetic trips to `path` with the trainer, unless a file
/// made with the same rows and seed is already there (the name says both).
pub fn ensure_synthetic(trainer: &Path, path: &Path, rows: u64, seed: u64) -> Result<()> {
    if path.is_file() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut c = Command::new(trainer);
    c.args(["synth", "--rows", &rows.to_string(), "--seed", &seed.to_string(), "--output"])
        .arg(path);
    process::run(c)
}

pub fn run(args: &TrainArgs) -> Result<TrainOutput> {
    let trainer = build_trainer()?;
    let out_dir = artifacts::dir();
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let reference = if args.sample { None } else { paths::reference_csv() };
    let (data, default_gate) = match (&args.csv, reference) {
        (Some(csv), _) => {
            // The trainer runs from the workspace root; keep a relative
            // path relative to where it was given.
            let csv =
                std::path::absolute(csv).with_context(|| format!("resolving {}", csv.display()))?;
            eprintln!("train: on {} (given)", csv.display());
            (csv, MIN_R2_REFERENCE)
        }
        (None, Some(reference)) => {
            eprintln!("train: on the reference data {}", reference.display());
            (reference, MIN_R2_REFERENCE)
        }
        (None, None) => {
            let sample = out_dir.join(format!("sample-{}-rows.csv", args.sample_rows));
            let why = if args.sample { "as asked" } else { "no ../shared/data/uber.csv" };
            eprintln!(
                "train: on a generated sample of {} trips ({why}): {}",
                args.sample_rows,
                sample.display()
            );
            ensure_synthetic(&trainer, &sample, args.sample_rows, 1)?;
            (sample, MIN_R2_SAMPLE)
        }
    };
    let min_r2 = args.min_r2.unwrap_or(default_gate);
    let model = artifacts::model_path();
    let metrics = artifacts::metrics_path();

    let mut c = Command::new(&trainer);
    c.arg("train")
        .arg("--csv")
        .arg(&data)
        .arg("--output")
        .arg(&model)
        .arg("--metrics")
        .arg(&metrics)
        .args(["--seed", &args.seed.to_string(), "--min-r2", &min_r2.to_string()])
        .current_dir(paths::root());
    eprintln!("$ {} train --csv {} … --min-r2 {min_r2}", trainer.display(), data.display());
    let status = c.status().with_context(|| format!("cannot start {}", trainer.display()))?;
    match status.code() {
        Some(0) => {}
        Some(EXIT_QUALITY_GATE) => bail!(
            "quality gate: the model's held-out R² is below {min_r2} (see the report above; \
             the rejected artifact is {}.rejected, metrics in {})",
            model.display(),
            metrics.display()
        ),
        _ => bail!("the trainer failed ({status})"),
    }
    let scores = artifacts::read_metrics(&metrics)?.model;
    let (r2, rmse) = (scores.r2, scores.rmse);
    eprintln!(
        "train: held-out R² {r2:.4}, RMSE {rmse:.3} (gate R² >= {min_r2}); wrote {} and {}",
        model.display(),
        metrics.display()
    );
    Ok(TrainOutput { model, data, r2, rmse })
}
