//! The least-squares solver against answers obtained independently: a
//! problem whose exact solution is known, and LAPACK's SVD-based solver on
//! the full design matrix for random problems.

use ndarray::{Array1, Array2};
use ndarray_linalg::LeastSquaresSvd;
use trainer::ols::{FitError, Moments};
use trainer::synth::Rng;

fn relative_error(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-300)
}

#[test]
fn recovers_an_exact_linear_relation() {
    // y = 1.5 + 2 a - 3 b + 0.25 c holds exactly on a small grid, so the
    // least-squares solution is exactly these numbers.
    let mut m = Moments::<3>::default();
    for a in 0..5 {
        for b in 0..4 {
            for c in [-2.0, 0.5, 7.0] {
                let a = f64::from(a);
                let b = f64::from(b) * 1.5 + a * 0.1;
                m.push(&[a, b, c], 1.5 + 2.0 * a - 3.0 * b + 0.25 * c);
            }
        }
    }
    let fit = m.solve(&["a", "b", "c"]).unwrap();
    for (got, want) in fit.coefficients.iter().zip([2.0, -3.0, 0.25]) {
        assert!(relative_error(*got, want) < 1e-12, "{got} vs {want}");
    }
    assert!(relative_error(fit.intercept, 1.5) < 1e-12, "{}", fit.intercept);
}

#[test]
fn textbook_example_with_residuals() {
    // x = 1..5, y = (2, 4, 5, 4, 5): the classic worked example with slope
    // 0.6 and intercept 2.2, derived by hand from Sxy = 6 and Sxx = 10.
    let mut m = Moments::<1>::default();
    for (x, y) in [(1.0, 2.0), (2.0, 4.0), (3.0, 5.0), (4.0, 4.0), (5.0, 5.0)] {
        m.push(&[x], y);
    }
    let fit = m.solve(&["x"]).unwrap();
    assert!(relative_error(fit.coefficients[0], 0.6) < 1e-12);
    assert!(relative_error(fit.intercept, 2.2) < 1e-12);
}

/// A random problem shaped like ours: features with large offsets and very
/// different scales, correlated with each other, and a noisy target.
fn random_problem<const P: usize>(seed: u64, n: usize) -> (Vec<[f64; P]>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let offsets: Vec<f64> = (0..P).map(|_| rng.uniform(-80.0, 80.0)).collect();
    let scales: Vec<f64> = (0..P).map(|_| 10f64.powf(rng.uniform(-2.0, 2.0))).collect();
    let beta: Vec<f64> = (0..P).map(|_| rng.normal()).collect();
    let mut xs = Vec::with_capacity(n);
    let mut ys = Vec::with_capacity(n);
    for _ in 0..n {
        let common = rng.normal();
        let mut x = [0.0; P];
        for j in 0..P {
            x[j] = offsets[j] + scales[j] * (0.5 * common + rng.normal());
        }
        let y = 3.0 + x.iter().zip(&beta).map(|(a, b)| a * b).sum::<f64>() + rng.normal();
        xs.push(x);
        ys.push(y);
    }
    (xs, ys)
}

#[test]
fn streaming_normal_equations_match_lapack_svd_on_the_full_design() {
    const P: usize = 10;
    let names: [&str; P] = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9"];
    for seed in 1..=5 {
        let n = 3000;
        let (xs, ys) = random_problem::<P>(seed, n);
        let mut streamed = Moments::<P>::default();
        // Fold in uneven blocks, as the trainer does.
        for chunk in xs.iter().zip(&ys).collect::<Vec<_>>().chunks(777) {
            let mut block = Moments::<P>::default();
            chunk.iter().for_each(|(x, y)| block.push(x, **y));
            streamed.merge(&block);
        }
        let fit = streamed.solve(&names).unwrap();

        let design =
            Array2::from_shape_fn((n, P + 1), |(i, j)| if j == 0 { 1.0 } else { xs[i][j - 1] });
        let target = Array1::from(ys.clone());
        let reference = design.least_squares(&target).unwrap();
        assert_eq!(reference.rank, (P + 1) as i32);
        let want = reference.solution;
        assert!(
            relative_error(fit.intercept, want[0]) < 1e-9,
            "seed {seed}: intercept {} vs {}",
            fit.intercept,
            want[0]
        );
        for j in 0..P {
            let (got, w) = (fit.coefficients[j], want[j + 1]);
            assert!(relative_error(got, w) < 1e-9, "seed {seed}, {}: {got} vs {w}", names[j]);
        }
    }
}

#[test]
fn a_feature_that_is_a_combination_of_others_is_refused() {
    let mut rng = Rng::new(11);
    let mut m = Moments::<4>::default();
    for _ in 0..500 {
        let (a, b, d) = (rng.normal(), rng.normal() * 3.0 + 40.0, rng.normal());
        // c = 2a - b exactly: the design has rank 3 (plus the intercept).
        m.push(&[a, b, 2.0 * a - b, d], rng.normal());
    }
    match m.solve(&["a", "b", "c", "d"]) {
        Err(FitError::Collinear { features, condition }) => {
            assert!(condition > 1e12, "{condition}");
            let mut f = features.clone();
            f.sort();
            assert_eq!(f, ["a", "b", "c"], "{features:?}");
        }
        other => panic!("expected a collinearity error, got {other:?}"),
    }
}

#[test]
fn a_constant_feature_is_refused_by_name() {
    let mut m = Moments::<3>::default();
    for i in 0..100 {
        let t = f64::from(i);
        m.push(&[t, 1.0, t.sin()], t);
    }
    let err = m.solve(&["distance", "passenger_count", "wiggle"]).unwrap_err();
    assert_eq!(err, FitError::ConstantFeature { feature: "passenger_count".into() });
    assert!(err.to_string().contains("`passenger_count` is constant"), "{err}");
}
