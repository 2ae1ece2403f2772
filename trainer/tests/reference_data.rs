//! The quality bar on the reference data set (`../shared/data/uber.csv`,
//! beside the workspace; it is not part of the repository). CI has it; a
//! checkout without it says that this test was skipped.

use std::path::PathBuf;

use trainer::train::{TrainConfig, train};

fn reference_csv() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/uber.csv");
    p.is_file().then_some(p)
}

#[test]
fn held_out_quality_on_the_reference_data() {
    let Some(csv) = reference_csv() else {
        eprintln!("SKIPPED: ../shared/data/uber.csv is absent; the quality bar was not checked");
        return;
    };
    let cfg = TrainConfig { csv, seed: 42, test_fraction: 0.2, threads: 2, progress: false };
    let trained = train(&cfg, None).unwrap();
    let l = &trained.artifact.lineage;
    eprintln!("reference data: held-out {:?}, baseline {:?}", l.metrics, l.baseline);
    assert_eq!(l.data_sha256, "d81269c44f2cd7761787fe42610b14f47881acebce94d6b87fec01dc86ba5731");
    assert_eq!(l.rows_read, 24_999);
    assert!(l.metrics.r2 >= 0.77, "held-out R² {} < 0.77", l.metrics.r2);
    assert!(l.metrics.rmse <= 4.4, "held-out RMSE {} > 4.4", l.metrics.rmse);
    assert!(l.baseline.r2 < 0.01, "the mean baseline explains nothing: {}", l.baseline.r2);
    // The reference file's known dirt is counted under its reasons.
    assert!(l.rows_dropped["zero_coordinates"] >= 452, "{:?}", l.rows_dropped);
    assert!(l.rows_dropped["passenger_count_out_of_range"] > 0, "{:?}", l.rows_dropped);
}
