//! `cargo xtask bench train`: the trainer against the original stack
//! (pandas + scikit-learn LinearRegression, with the same cleaning and the
//! same features computed in numpy), side by side in one run, on the
//! reference data and on synthetic trips. Each command is timed from spawn
//! to exit (the best of `--repeat` runs; Python's imports count, as they do
//! for a user), and its CPU time and peak RSS are read from GNU time. Both report their
//! held-out R² and RMSE, to show that they fit the same model. A last table
//! trains on 1M and 10M synthetic rows to show that the trainer's peak
//! memory does not grow with the row count.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::effects::{deps, paths, python};
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

/// The original stack, written out for the run: the same cleaning rules
/// and features as the trainer (model crate), pandas to read, scikit-learn
/// to split, fit and score. Prints one JSON line.
const REFERENCE_SCRIPT: &str = r#"
import json, sys, time
started = time.perf_counter()
import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
imported = time.perf_counter() - started

path, seed, test_fraction = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lean = sys.argv[4] == "usecols"
cols = ["pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude",
        "passenger_count", "fare_amount"]
df = pd.read_csv(path, on_bad_lines="skip", usecols=cols if lean else None)
read = len(df)
for c in cols:
    df[c] = pd.to_numeric(df[c], errors="coerce")
df = df.dropna(subset=cols)
plat, plon, dlat, dlon, pc, fare = (df[c].to_numpy(dtype=float) for c in cols)

R = 6371.0088
def hav(la1, lo1, la2, lo2):
    la1, la2 = np.radians(la1), np.radians(la2)
    dla, dlo = la2 - la1, np.radians(lo2 - lo1)
    h = np.sin(dla / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin(dlo / 2) ** 2
    return 2 * R * np.arcsin(np.minimum(np.sqrt(h), 1.0))

keep = (plat != 0) & (plon != 0) & (dlat != 0) & (dlon != 0)
keep &= (pc >= 1) & (pc <= 6) & (pc == np.floor(pc))
keep &= (plat >= 40.40) & (plat <= 41.10) & (dlat >= 40.40) & (dlat <= 41.10)
keep &= (plon >= -74.50) & (plon <= -72.80) & (dlon >= -74.50) & (dlon <= -72.80)
keep &= (fare >= 2.5) & (fare <= 100)
dist = hav(plat, plon, dlat, dlon)
keep &= dist >= 0.05
plat, plon, dlat, dlon, pc, fare, dist = (a[keep] for a in (plat, plon, dlat, dlon, pc, fare, dist))

airports = [(40.6413, -73.7781), (40.7769, -73.8740), (40.6895, -74.1745)]
columns = [dist, np.sqrt(dist), np.abs(plat - dlat) * 111.2 + np.abs(plon - dlon) * 84.2]
for lat, lon in airports:
    columns += [hav(plat, plon, lat, lon), hav(dlat, dlon, lat, lon)]
columns.append(pc)
X = np.column_stack(columns)

X_train, X_test, y_train, y_test = train_test_split(
    X, fare, test_size=test_fraction, random_state=seed)
model = LinearRegression().fit(X_train, y_train)
predicted = np.maximum(model.predict(X_test), 0.0)
print(json.dumps({
    "r2": r2_score(y_test, predicted),
    "rmse": mean_squared_error(y_test, predicted) ** 0.5,
    "mae": mean_absolute_error(y_test, predicted),
    "read": read, "used": int(len(fare)), "import_seconds": imported,
}))
"#;

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
            .env("RUST_LOG", "warn");
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

/// Runs the trainer; returns what it cost and scored, and the rows it read.
fn run_trainer(trainer: &Path, csv: &Path, repeat: u32, scratch: &Path) -> Result<(Measured, u64)> {
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
    Ok((Measured { cost, r2: scores.r2, rmse: scores.rmse }, reported.rows.read))
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

fn run_python(
    python: &Path,
    script: &Path,
    csv: &Path,
    reading: Reading,
    repeat: u32,
    scratch: &Path,
) -> Result<Measured> {
    let mode = match reading {
        Reading::AllColumns => "all",
        Reading::UsedColumns => "usecols",
    };
    let args = vec![
        script.display().to_string(),
        csv.display().to_string(),
        "42".into(),
        "0.2".into(),
        mode.into(),
    ];
    let (cost, stdout) = measure(python, &args, repeat, scratch)?;
    let line = stdout.lines().last().unwrap_or_default();
    let parsed: Value = serde_json::from_str(line)
        .with_context(|| format!("the reference script printed {stdout:?}"))?;
    let get = |k: &str| parsed[k].as_f64().unwrap_or(f64::NAN);
    Ok(Measured { cost, r2: get("r2"), rmse: get("rmse") })
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
    let python = python::venv("bench-train", &["pandas", "scikit-learn"])?;
    let scratch = paths::target().join("bench-train");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let script = scratch.join("original_stack.py");
    std::fs::write(&script, REFERENCE_SCRIPT)?;

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
        let (rust, rows) = run_trainer(&trainer, csv, args.repeat, &scratch)?;
        for (label, reading) in
            [("all columns", Reading::AllColumns), ("used columns", Reading::UsedColumns)]
        {
            let py = run_python(&python, &script, csv, reading, args.repeat, &scratch)?;
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
