//! `cargo xtask bench train`: the trainer against the original stack
//! (pandas + scikit-learn LinearRegression, with the same cleaning and the
//! same features computed in numpy: `xtask/python/bench_train.py`), side by
//! side in one run, on the reference data and on synthetic trips. Each
//! command is timed from spawn to exit (the best of `--repeat` runs;
//! Python's imports count, as they do for a user), and its CPU time and
//! peak RSS are read from GNU time.
//!
//! A faster number must not be a different answer, so the run fails unless
//! both sides keep the same rows, the script's features give the model
//! crate's predictions for the trips it kept, and the two fits score alike
//! on held-out data. A last table trains on 1M and 10M synthetic rows to
//! show that the trainer's peak memory does not grow with the row count.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::python;
use crate::effects::venv;
use crate::effects::{deps, paths};
use crate::stages::{artifacts, train};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchTrainArgs {
    /// Synthetic rows for the side-by-side comparison.
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    /// Runs per measurement; the fastest wall time and the largest peak RSS
    /// are reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Skip the 1M/10M-row memory scaling table (it writes a 1 GB file).
    #[arg(long)]
    pub no_scaling: bool,
}

/// One command's cost and the quality it reported.
#[derive(Debug, Clone, Copy)]
struct Measured {
    cost: Cost,
    r2: f64,
    rmse: f64,
}

/// What running a command took: the fastest wall time and CPU time (user +
/// system) of the runs, and the largest peak RSS.
#[derive(Debug, Clone, Copy)]
struct Cost {
    wall: f64,
    cpu: f64,
    peak_mib: f64,
}

/// Runs a command under GNU time `repeat` times; returns its cost and the
/// last run's stdout. CPU time is reported beside wall time because it is
/// the steadier of the two on a shared machine.
fn measure(program: &Path, args: &[String], repeat: u32, scratch: &Path) -> Result<(Cost, String)> {
    let usage_file = scratch.join("usage.txt");
    let mut cost = Cost { wall: f64::INFINITY, cpu: f64::INFINITY, peak_mib: 0.0 };
    let mut stdout = String::new();
    for _ in 0..repeat.max(1) {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%U %S %M", "-o"])
            .arg(&usage_file)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            // Older OpenBLAS builds need these on some CPUs; they slow a
            // current numpy, so the comparison runs without them.
            .env_remove("OPENBLAS_CORETYPE")
            .env_remove("OPENBLAS_L2_SIZE")
            .env("RUST_LOG", "warn")
            .env(python::CONSTANTS_ENV, python::constants());
        let started = Instant::now();
        let out = c.output().with_context(|| format!("cannot run {}", program.display()))?;
        let wall = started.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "{} {} failed ({}): {}",
                program.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let usage = std::fs::read_to_string(&usage_file)
            .with_context(|| format!("reading {}", usage_file.display()))?;
        let fields: Vec<f64> = usage
            .lines()
            .last()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [user, system, kib] = fields[..] else {
            bail!("GNU time wrote {usage:?}, expected user, system and peak RSS");
        };
        cost.wall = cost.wall.min(wall);
        cost.cpu = cost.cpu.min(user + system);
        cost.peak_mib = cost.peak_mib.max(kib / 1024.0);
        stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    Ok((cost, stdout))
}

/// Runs the trainer; returns what it cost and scored, and its metrics.
/// Its model is left in `scratch/model.json`.
fn run_trainer(
    trainer: &Path,
    csv: &Path,
    repeat: u32,
    scratch: &Path,
) -> Result<(Measured, model::Metrics)> {
    let metrics = scratch.join("metrics.json");
    let args: Vec<String> = vec![
        "train".into(),
        "--csv".into(),
        csv.display().to_string(),
        "--output".into(),
        scratch.join("model.json").display().to_string(),
        "--metrics".into(),
        metrics.display().to_string(),
    ];
    let (cost, _) = measure(trainer, &args, repeat, scratch)?;
    let reported = artifacts::read_metrics(&metrics)?;
    let scores = reported.model;
    Ok((Measured { cost, r2: scores.r2, rmse: scores.rmse }, reported))
}

/// How the original stack reads the CSV.
#[derive(Debug, Clone, Copy)]
enum Reading {
    /// `pd.read_csv(path)`: every column, as a plain pandas script does.
    AllColumns,
    /// `pd.read_csv(path, usecols=…)`: only the six columns used, the
    /// strongest fair version of the original.
    UsedColumns,
}

/// Trips of the script's sample compared with the model crate.
const SAMPLE: usize = 1000;

fn run_python(
    python: &Path,
    scripts: &Path,
    csv: &Path,
    reading: Reading,
    repeat: u32,
    scratch: &Path,
) -> Result<(Measured, python::TrainReport)> {
    let mode = match reading {
        Reading::AllColumns => "all",
        Reading::UsedColumns => "usecols",
    };
    let args = vec![
        scripts.join(python::BENCH_TRAIN).display().to_string(),
        csv.display().to_string(),
        "42".into(),
        "0.2".into(),
        mode.into(),
        scratch.join("model.json").display().to_string(),
        SAMPLE.to_string(),
    ];
    let (cost, stdout) = measure(python, &args, repeat, scratch)?;
    let report = python::TrainReport::parse(&stdout)?;
    Ok((Measured { cost, r2: report.r2, rmse: report.rmse }, report))
}

/// Held-out R² of two fits on different random 80 % of the same rows
/// differ by sampling noise only; more means they fit different models.
const R2_TOLERANCE: f64 = 0.02;

/// Fails unless the original stack agrees with the trainer: the same rows
/// kept by cleaning, the model crate's predictions (under the trainer's
/// model) for the trips it kept, and the same quality of fit.
fn check_agreement(
    rust: &model::Metrics,
    rust_r2: f64,
    artifact: &model::ModelArtifact,
    py: &python::TrainReport,
) -> Result<()> {
    ensure!(
        rust.rows.used == py.used,
        "the rows kept disagree: the trainer keeps {} of {}, {} keeps {} \
         (a cleaning rule differs: compare trainer/src/clean.rs with xtask/python/)",
        rust.rows.used,
        rust.rows.read,
        python::BENCH_TRAIN,
        py.used
    );
    let sample = &py.sample;
    ensure!(
        sample.trips.len() == sample.predictions.len()
            && sample.trips.len() == SAMPLE.min(py.used as usize),
        "{} returned {} trips and {} predictions, expected {}",
        python::BENCH_TRAIN,
        sample.trips.len(),
        sample.predictions.len(),
        SAMPLE.min(py.used as usize)
    );
    for (values, theirs) in sample.trips.iter().zip(&sample.predictions) {
        let trip = model::Trip::from_values(*values).map_err(|v| {
            anyhow!("{} kept an invalid trip {values:?}: {v:?}", python::BENCH_TRAIN)
        })?;
        let ours = artifact.predict(&trip);
        ensure!(
            (ours - theirs).abs() <= 1e-6 + 1e-9 * ours.abs(),
            "for {values:?} the model crate predicts {ours}, {} {theirs} \
             (a feature differs: compare model/src/features.rs with xtask/python/nyc_features.py)",
            python::BENCH_TRAIN
        );
    }
    ensure!(
        (rust_r2 - py.r2).abs() <= R2_TOLERANCE,
        "held-out R² {rust_r2:.4} (trainer) and {:.4} (scikit-learn) differ by more than \
         {R2_TOLERANCE}: the two fit different models",
        py.r2
    );
    Ok(())
}

/// The 1-minute load average, as text ("?" where unavailable).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

pub fn run(args: &BenchTrainArgs) -> Result<()> {
    deps::ensure(deps::BENCH_TRAIN)?;
    let trainer = train::build_trainer()?;
    let venv = venv::python("bench-train", &["pandas", "scikit-learn"])?;
    let scratch = paths::target().join("bench-train");
    let scripts = scratch.join("python");
    python::install(&scripts)?;

    let mut datasets: Vec<(String, PathBuf)> = Vec::new();
    match paths::reference_csv() {
        Some(reference) => datasets.push(("reference uber.csv".into(), reference)),
        None => eprintln!("bench: no ../shared/data/uber.csv; comparing on synthetic data only"),
    }
    let synthetic = scratch.join(format!("synth-{}.csv", args.rows));
    train::ensure_synthetic(&trainer, &synthetic, args.rows, 1)?;
    datasets.push(("synthetic".into(), synthetic));

    let load_before = load_average();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<18} {:>8} {:<13}| {:>7} {:>7} {:>6} | {:>7} {:>7} {:>6} | {:>7} {:>7} {:>6} | {:>15} | {:>13}",
        "data",
        "rows",
        "original",
        "rust s",
        "orig s",
        "wall",
        "rust",
        "orig",
        "CPU",
        "rust",
        "orig",
        "RSS",
        "R² rust/orig",
        "RMSE rust/orig"
    );
    let _ = writeln!(
        table,
        "{:<18} {:>8} {:<13}| {:>7} {:>7} {:>6} | {:>7} {:>7} {:>6} | {:>7} {:>7} {:>6} |",
        "", "", "reads", "wall", "wall", "ratio", "CPU s", "CPU s", "ratio", "MiB", "MiB", "ratio"
    );
    for (name, csv) in &datasets {
        eprintln!("bench: {name} ({})", csv.display());
        let (rust, metrics) = run_trainer(&trainer, csv, args.repeat, &scratch)?;
        let artifact = artifacts::load_model(&scratch.join("model.json"))?;
        let rows = metrics.rows.read;
        for (label, reading) in
            [("all columns", Reading::AllColumns), ("used columns", Reading::UsedColumns)]
        {
            let (py, report) = run_python(&venv, &scripts, csv, reading, args.repeat, &scratch)?;
            check_agreement(&metrics, rust.r2, &artifact, &report)
                .with_context(|| format!("bench train on {name}, {label}"))?;
            eprintln!(
                "bench: {name}, {label}: both keep {} rows; {} trips predicted alike",
                report.used,
                report.sample.trips.len()
            );
            let (r, p) = (rust.cost, py.cost);
            let _ = writeln!(
                table,
                "{:<18} {:>8} {:<13}| {:>7.3} {:>7.3} {:>5.1}× | {:>7.3} {:>7.3} {:>5.1}× | \
                 {:>7.1} {:>7.1} {:>5.1}× | {:>7.4}/{:<7.4} | {:>6.3}/{:<6.3}",
                name,
                rows,
                label,
                r.wall,
                p.wall,
                p.wall / r.wall,
                r.cpu,
                p.cpu,
                p.cpu / r.cpu,
                r.peak_mib,
                p.peak_mib,
                p.peak_mib / r.peak_mib,
                rust.r2,
                py.r2,
                rust.rmse,
                py.rmse
            );
        }
    }

    if !args.no_scaling {
        let _ = writeln!(table, "\ntrainer peak memory against row count (synthetic)");
        let _ = writeln!(
            table,
            "{:>12} | {:>9} | {:>9} | {:>9} | {:>9}",
            "rows", "wall s", "CPU s", "peak MiB", "rows/s"
        );
        for rows in [1_000_000u64, 10_000_000] {
            let csv = scratch.join(format!("synth-{rows}.csv"));
            train::ensure_synthetic(&trainer, &csv, rows, 1)?;
            eprintln!("bench: trainer on {rows} rows");
            let m = run_trainer(&trainer, &csv, 1, &scratch)?.0.cost;
            let _ = writeln!(
                table,
                "{:>12} | {:>9.3} | {:>9.3} | {:>9.1} | {:>9.2e}",
                rows,
                m.wall,
                m.cpu,
                m.peak_mib,
                rows as f64 / m.wall
            );
        }
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let _ = writeln!(
        table,
        "\n{cores} cores; 1-minute load average {load_before} before, {} after \
         (other work on the machine inflates wall times: compare the CPU columns too)",
        load_average()
    );
    println!("\n{table}");
    Ok(())
}
