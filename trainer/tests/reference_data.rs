//! The quality bar on the reference data set (`../shared/data/uber.csv`,
//! beside the workspace; it is not part of the repository). CI always has
//! it, so a checkout without it fails here, naming the file, rather than
//! passing without checking the bar.

use std::path::PathBuf;

use trainer::train::{TrainConfig, train};

fn reference_csv() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/uber.csv");
    assert!(
        p.is_file(),
        "the reference data {} is missing: put the shared data set beside the workspace \
         (see shared/data/README.md)",
        p.display()
    );
    p
}

#[test]
fn held_out_quality_on_the_reference_data() {
    let cfg = TrainConfig {
        csv: reference_csv(),
        seed: 42,
        test_fraction: 0.2,
        threads: 2,
        progress: false,
    };
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
