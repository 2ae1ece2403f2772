//! The `trainer` binary as scripts and CI use it: exit codes, files written,
//! the metrics.json shape, and metrics that the artifact itself reproduces.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use model::{ModelArtifact, Scores};
use serde_json::Value;
use sha2::{Digest, Sha256};
use trainer::clean::classify;
use trainer::source::Columns;
use trainer::split::{Side, Splitter};

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.args(args).env("GIT_COMMIT", "0123456789abcdef").env("RUST_LOG", "info");
    c
}

fn trainer(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

/// `trainer train` on `csv`, writing the model and the metrics, with `more`.
fn train(csv: &Path, model: &Path, metrics: &Path, more: &[&str]) -> Command {
    let mut c = command(&["train", "--csv", s(csv), "--output", s(model), "--metrics", s(metrics)]);
    c.args(more);
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn synth(dir: &Path, rows: u64) -> PathBuf {
    let csv = dir.join("trips.csv");
    let out = trainer(&["synth", "--rows", &rows.to_string(), "--seed", "3", "--output", s(&csv)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    csv
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn number(v: &Value, path: &[&str]) -> f64 {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_f64().unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

#[test]
fn trains_writes_artifact_and_metrics_in_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let csv = synth(dir.path(), 20_000);
    let (model_path, metrics_path) =
        (dir.path().join("model.json"), dir.path().join("metrics.json"));
    let more = ["--seed", "42", "--test-fraction", "0.2", "--min-r2", "0.5"];
    let out = train(&csv, &model_path, &metrics_path, &more).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // A readable report on stdout; logs but no progress bar on a pipe.
    for needle in ["rows", "dropped", "held-out", "baseline", "haversine_km", "passenger_count"] {
        assert!(stdout.contains(needle), "report lacks {needle}:\n{stdout}");
    }
    assert!(stderr.contains("quality gate passed"), "{stderr}");
    assert!(!stderr.contains("reading [") && !stderr.contains('\r'), "{stderr}");

    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics_path).unwrap()).unwrap();
    for part in ["model", "baseline"] {
        for key in ["rmse", "mae", "r2"] {
            assert!(number(&metrics, &[part, key]).is_finite(), "{part}.{key}");
        }
    }
    let read = number(&metrics, &["rows", "read"]);
    let used = number(&metrics, &["rows", "used"]);
    let (train, test) = (number(&metrics, &["rows", "train"]), number(&metrics, &["rows", "test"]));
    let dropped: f64 =
        metrics["rows"]["dropped"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert_eq!(read, 20_000.0);
    assert_eq!(used, train + test);
    assert_eq!(used + dropped, read);
    assert!(dropped > 0.0, "synthetic data has dirty rows");
    assert!(number(&metrics, &["model", "r2"]) > number(&metrics, &["baseline", "r2"]) + 0.5);

    // The artifact loads, and its lineage pins the data and the run.
    let artifact =
        ModelArtifact::from_json(&std::fs::read_to_string(&model_path).unwrap()).unwrap();
    let l = &artifact.lineage;
    let sha = format!("{:x}", Sha256::digest(std::fs::read(&csv).unwrap()));
    assert_eq!(l.data_sha256, sha);
    assert!(artifact.model_version.starts_with("ols-"));
    assert!(artifact.model_version.ends_with(&sha[..8]), "{}", artifact.model_version);
    assert_eq!(l.git_commit.as_deref(), Some("0123456789abcdef"));
    assert_eq!(l.trainer_version, env!("CARGO_PKG_VERSION"));
    assert_eq!((l.split_seed, l.test_fraction), (42, 0.2));
    assert_eq!(l.created_at.len(), "2026-11-26T22:48:00Z".len());
    assert!(l.created_at.ends_with('Z'));
    assert_eq!(l.metrics.r2, number(&metrics, &["model", "r2"]));
    assert_eq!(l.rows_test as f64, test);

    // Independently: re-read the file, apply the same cleaning and split,
    // predict with the loaded artifact, and score in memory.
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(&csv).unwrap();
    let columns = Columns::from_header(&csv, reader.byte_headers().unwrap()).unwrap();
    let splitter = Splitter::new(42, 0.2);
    let (mut truth, mut predicted) = (Vec::new(), Vec::new());
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).unwrap() {
        let line = reader.position().line();
        if let Ok(row) = classify(columns.values(&record))
            && splitter.side(line) == Side::Test
        {
            truth.push(row.fare);
            predicted.push(artifact.predict(&row.trip));
        }
    }
    assert_eq!(truth.len() as f64, test);
    let expected = Scores::compute(&truth, &predicted);
    for (got, want) in [
        (l.metrics.rmse, expected.rmse),
        (l.metrics.mae, expected.mae),
        (l.metrics.r2, expected.r2),
    ] {
        assert!((got - want).abs() <= 1e-9 * want.abs(), "{got} vs {want}");
    }
}

#[test]
fn the_quality_gate_fails_with_its_own_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let csv = synth(dir.path(), 5_000);
    let model_path = dir.path().join("model.json");
    let metrics_path = dir.path().join("metrics.json");
    std::fs::write(&model_path, "the model in service").unwrap();
    let out = train(&csv, &model_path, &metrics_path, &["--min-r2", "0.9999"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("quality gate failed"), "{stderr}");
    assert!(stderr.contains("below --min-r2 0.9999"), "{stderr}");
    // The model in service is untouched; the rejected one sits beside it.
    assert_eq!(std::fs::read_to_string(&model_path).unwrap(), "the model in service");
    let rejected = std::fs::read_to_string(dir.path().join("model.json.rejected")).unwrap();
    assert!(ModelArtifact::from_json(&rejected).unwrap().lineage.metrics.r2 < 0.9999);
    assert!(metrics_path.is_file());
}

#[test]
fn bad_input_exits_1_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("nofare.csv");
    std::fs::write(&bad, "pickup_latitude,pickup_longitude\n40.7,-73.9\n").unwrap();
    let model_path = dir.path().join("model.json");
    let out = trainer(&["train", "--csv", s(&bad), "--output", s(&model_path)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("nofare.csv: missing column `dropoff_latitude`"), "{stderr}");
    assert!(!model_path.exists());

    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let out = trainer(&["train", "--csv", s(&empty), "--output", s(&model_path)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("empty.csv is empty"), "{}", text(&out.stderr));

    let csv = synth(dir.path(), 100);
    let out =
        trainer(&["train", "--csv", s(&csv), "--output", s(&model_path), "--test-fraction", "1.5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("test-fraction must lie strictly between 0 and 1"));

    // A command-line mistake is clap's exit code 2.
    let out = trainer(&["train", "--csv"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn synth_is_deterministic_by_seed() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let path = dir.path().join(name);
        let out = trainer(&["synth", "--rows", "2000", "--seed", seed, "--output", s(&path)]);
        assert!(out.status.success());
        std::fs::read(path).unwrap()
    };
    let (a, b, c) = (run("a.csv", "8"), run("b.csv", "8"), run("c.csv", "9"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(text(&a).lines().count(), 2001);
}

#[test]
fn a_closed_stdout_keeps_the_model_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let csv = synth(dir.path(), 5_000);
    let (model_path, metrics_path) =
        (dir.path().join("model.json"), dir.path().join("metrics.json"));
    let mut child = train(&csv, &model_path, &metrics_path, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // As `| head -0` would: the reader is gone before the report comes.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}: {}", out.status, text(&out.stderr));
    let artifact = ModelArtifact::from_json(&std::fs::read_to_string(&model_path).unwrap());
    assert!(artifact.is_ok(), "{artifact:?}");
    assert!(metrics_path.is_file());
}
