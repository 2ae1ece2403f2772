//! Reading real-world CSV files: any column order, with or without the
//! index column, broken lines, and files that cannot be trained on at all.

use std::io::Write;
use std::path::{Path, PathBuf};

use trainer::TrainError;
use trainer::clean::DropReason;
use trainer::train::{TrainConfig, Trained, fit, train};

/// A trip that survives cleaning, varied by `i` so the design has full rank.
fn good_row(i: u64) -> [String; 6] {
    let t = i as f64;
    let plat = 40.70 + (t * 0.37).sin().abs() * 0.08;
    let plon = -74.01 + (t * 0.91).cos().abs() * 0.05;
    // At least 0.005° (half a kilometre) north of the pickup.
    let dlat = plat + 0.005 + (t * 1.31).cos().abs() * 0.03;
    let dlon = -74.01 + (t * 0.53).sin().abs() * 0.05;
    let passengers = 1 + i % 6;
    let fare = 2.5
        + 1.6 * ((plat - dlat).abs() * 111.0 + (plon - dlon).abs() * 84.0)
        + (t * 2.7).sin().abs();
    [plat, plon, dlat, dlon, passengers as f64, fare].map(|v| v.to_string())
}

/// The reference layout: index, key, fare, time, lon/lat pairs, passengers.
fn reference_line(i: u64, v: &[String; 6]) -> String {
    format!(
        "{i},k{i},{},2015-01-01 00:00:00 UTC,{},{},{},{},{}",
        v[5], v[1], v[0], v[3], v[2], v[4]
    )
}

const REFERENCE_HEADER: &str = ",key,fare_amount,pickup_datetime,pickup_longitude,pickup_latitude,\
                                dropoff_longitude,dropoff_latitude,passenger_count";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}

fn config(csv: PathBuf, threads: usize) -> TrainConfig {
    TrainConfig { csv, seed: 42, test_fraction: 0.2, threads, progress: false }
}

fn run(csv: PathBuf) -> Trained {
    train(&config(csv, 2), None).unwrap()
}

fn reference_file(rows: u64) -> String {
    let mut text = format!("{REFERENCE_HEADER}\n");
    for i in 0..rows {
        text.push_str(&reference_line(i, &good_row(i)));
        text.push('\n');
    }
    text
}

#[test]
fn column_order_and_the_index_column_do_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let reference = write(dir.path(), "reference.csv", &reference_file(300));
    // Same rows, on the same lines: no index, no key, columns shuffled.
    let mut shuffled = String::from(
        "passenger_count,dropoff_longitude,fare_amount,pickup_latitude,dropoff_latitude,pickup_longitude\n",
    );
    for i in 0..300 {
        let v = good_row(i);
        shuffled.push_str(&format!("{},{},{},{},{},{}\n", v[4], v[3], v[5], v[0], v[2], v[1]));
    }
    let shuffled = write(dir.path(), "shuffled.csv", &shuffled);
    let (a, b) = (run(reference), run(shuffled));
    assert_eq!(a.rows, b.rows);
    assert_eq!(a.rows.used(), 300);
    let bits =
        |t: &Trained| t.artifact.coefficients.iter().map(|c| c.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(a.artifact.intercept.to_bits(), b.artifact.intercept.to_bits());
    assert_ne!(a.artifact.lineage.data_sha256, b.artifact.lineage.data_sha256);
}

#[test]
fn malformed_lines_are_counted_with_their_line_numbers() {
    // Unix line ends take the fast scanner, Windows ones the csv crate:
    // both must name the same lines.
    for line_end in ["\n", "\r\n"] {
        malformed_lines_with(line_end);
    }
}

fn malformed_lines_with(line_end: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = vec![REFERENCE_HEADER.to_owned()];
    for i in 0..200 {
        lines.push(reference_line(i, &good_row(i)));
    }
    // File lines are 1-based and the header is line 1, so row i is on line i + 2.
    lines[10] = "9,k9,7.5,2015-01-01 00:00:00 UTC,-73.99".to_owned(); // cut short
    lines[20] = format!("{},extra", lines[20]); // one field too many
    lines[30] = lines[30].replacen("-7", "N/A", 1); // unparsable longitude
    let (kept, _) = lines[40].rsplit_once(',').unwrap();
    lines[40] = format!("{kept},"); // empty passenger_count
    lines[50] = "\u{1}\u{2}\u{3}".to_owned(); // binary junk
    lines[60] = "1,k,7.5,2015,-73.9@,40.7,-73.95,40.75,1".to_owned();
    let mut bytes = lines.join(line_end).into_bytes();
    bytes.extend_from_slice(line_end.as_bytes());
    // Not UTF-8 at all.
    let at = bytes.iter().position(|&b| b == b'@').unwrap();
    bytes[at] = 0xff;
    let path = dir.path().join("broken.csv");
    std::fs::write(&path, &bytes).unwrap();
    let fitted = fit(&config(path, 2)).unwrap();
    let rows = &fitted.first.rows;
    assert_eq!(rows.read, 200);
    assert_eq!(rows.dropped.get(DropReason::Unparsable), 5, "{rows:?}");
    assert_eq!(rows.dropped.total(), 6, "{rows:?}");
    assert_eq!(rows.dropped.get(DropReason::MissingValue), 1, "{rows:?}");
    assert_eq!(rows.examples[&DropReason::Unparsable], vec![11, 21, 31], "{line_end:?}");
    assert_eq!(rows.examples[&DropReason::MissingValue], vec![41], "{line_end:?}");
    assert_eq!(rows.used(), 194);
    assert_eq!(rows.used() + rows.dropped.total(), rows.read);
}

#[test]
fn dirty_rows_are_dropped_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = reference_file(100);
    let dirty = [
        ("0", "0", "40.75", "-73.98", "1", "5"), // zero_coordinates
        ("40.75", "-73.99", "40.76", "-73.98", "0", "5"), // passenger_count_out_of_range
        ("91", "-73.99", "40.76", "-73.98", "1", "5"), // invalid_trip
        ("51.5", "-0.12", "51.6", "-0.10", "1", "5"), // outside_area
        ("40.75", "-73.99", "40.76", "-73.98", "1", "350"), // fare_out_of_range
        ("40.75", "-73.99", "40.75", "-73.99", "1", "5"), // same_location
    ];
    for (i, d) in dirty.iter().enumerate() {
        let v = [d.0, d.1, d.2, d.3, d.4, d.5].map(str::to_owned);
        text.push_str(&reference_line(1000 + i as u64, &v));
        text.push('\n');
    }
    let trained = run(write(dir.path(), "dirty.csv", &text));
    let dropped = trained.artifact.lineage.rows_dropped.clone();
    for reason in [
        "zero_coordinates",
        "passenger_count_out_of_range",
        "invalid_trip",
        "outside_area",
        "fare_out_of_range",
        "same_location",
    ] {
        assert_eq!(dropped[reason], 1, "{reason}: {dropped:?}");
    }
    assert_eq!(dropped["unparsable"] + dropped["missing_value"], 0);
    assert_eq!(trained.artifact.lineage.rows_used, 100);
}

fn error_of(dir: &Path, name: &str, text: &str) -> (TrainError, String) {
    let path = write(dir, name, text);
    let err = fit(&config(path, 1)).err().expect("training should fail");
    let message = err.to_string();
    (err, message)
}

#[test]
fn unusable_files_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (err, msg) = error_of(dir.path(), "empty.csv", "");
    assert!(matches!(err, TrainError::Empty { .. }), "{msg}");
    assert!(msg.contains("empty.csv is empty"), "{msg}");

    let (err, msg) = error_of(dir.path(), "header.csv", &format!("{REFERENCE_HEADER}\n"));
    assert!(matches!(err, TrainError::NoRows { .. }), "{msg}");
    assert!(msg.contains("header.csv: no data rows"), "{msg}");

    let no_fare = REFERENCE_HEADER.replace("fare_amount", "fare");
    let (_, msg) = error_of(dir.path(), "nofare.csv", &format!("{no_fare}\n1,2,3\n"));
    assert!(msg.contains("nofare.csv: missing column `fare_amount`"), "{msg}");

    let (_, msg) = error_of(dir.path(), "tiny.csv", &reference_file(5));
    assert!(msg.contains("tiny.csv: only"), "{msg}");

    let missing = dir.path().join("no-such-file.csv");
    let err = fit(&config(missing, 1)).err().unwrap().to_string();
    assert!(err.contains("cannot open") && err.contains("no-such-file.csv"), "{err}");
}

#[test]
fn a_constant_column_is_refused_as_rank_deficient() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!("{REFERENCE_HEADER}\n");
    for i in 0..200 {
        let mut v = good_row(i);
        v[4] = "1".to_owned();
        text.push_str(&reference_line(i, &v));
        text.push('\n');
    }
    let (_, msg) = error_of(dir.path(), "one-passenger.csv", &text);
    assert!(msg.contains("rank-deficient"), "{msg}");
    assert!(msg.contains("`passenger_count` is constant"), "{msg}");
}

#[test]
fn retraining_is_bit_identical_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synth.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    // Enough rows for several blocks, so the parallel merge order matters.
    trainer::synth::write_trips(&mut f, 60_000, 5).unwrap();
    drop(f);
    let runs: Vec<Trained> =
        [1, 2, 3, 1].iter().map(|&t| train(&config(path.clone(), t), None).unwrap()).collect();
    let first = &runs[0];
    for other in &runs[1..] {
        let bits = |t: &Trained| {
            let mut b: Vec<u64> = t.artifact.coefficients.iter().map(|c| c.to_bits()).collect();
            b.push(t.artifact.intercept.to_bits());
            b.push(t.artifact.lineage.metrics.rmse.to_bits());
            b.push(t.artifact.lineage.metrics.mae.to_bits());
            b
        };
        assert_eq!(bits(first), bits(other));
        assert_eq!(first.rows, other.rows);
    }
    // The split is near the requested fraction, and a new seed changes it.
    let used = first.rows.used() as f64;
    assert!((first.rows.test as f64 / used - 0.2).abs() < 0.01, "{:?}", first.rows);
    let other_seed = train(&TrainConfig { seed: 7, ..config(path.clone(), 2) }, None).unwrap();
    assert_ne!(other_seed.rows.test, first.rows.test);
    assert_ne!(other_seed.artifact.coefficients, first.artifact.coefficients);
}
