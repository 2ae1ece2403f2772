//! The deterministic train/test split.
//!
//! Each data record is assigned by a hash of (seed, its line number in the
//! file), so the split needs no memory, no second pass and no shuffle, and a
//! record's side does not depend on which other records were dropped as dirty. The same
//! file and seed always give the same split, on any machine.

/// Which side of the split a record falls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Train,
    Test,
}

/// Assigns records to train or test.
#[derive(Debug, Clone, Copy)]
pub struct Splitter {
    seed_hash: u64,
    /// Records whose 53-bit hash fraction is below this go to test.
    test_fraction: f64,
}

impl Splitter {
    /// `test_fraction` must lie in (0, 1); the caller validates it.
    pub fn new(seed: u64, test_fraction: f64) -> Splitter {
        Splitter { seed_hash: splitmix64(seed), test_fraction }
    }

    /// The side of the record identified by `key` (its line number).
    pub fn side(&self, key: u64) -> Side {
        if unit_interval(splitmix64(self.seed_hash ^ key)) < self.test_fraction {
            Side::Test
        } else {
            Side::Train
        }
    }
}

/// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The top 53 bits of `x` as a uniform fraction in [0, 1).
pub fn unit_interval(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_count(s: &Splitter, n: u64) -> u64 {
        (0..n).filter(|&i| s.side(i) == Side::Test).count() as u64
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = Splitter::new(42, 0.2);
        let b = Splitter::new(42, 0.2);
        assert!((0..10_000).all(|i| a.side(i) == b.side(i)));
    }

    #[test]
    fn seeds_give_different_splits() {
        let a = Splitter::new(42, 0.2);
        let b = Splitter::new(43, 0.2);
        let differ = (0..10_000).filter(|&i| a.side(i) != b.side(i)).count();
        // Independent 20% splits disagree on 2 * 0.2 * 0.8 = 32% of records.
        assert!((2_900..3_500).contains(&differ), "{differ}");
    }

    #[test]
    fn near_the_requested_fraction() {
        let n = 200_000;
        for fraction in [0.05, 0.2, 0.5, 0.9] {
            let got = test_count(&Splitter::new(7, fraction), n) as f64 / n as f64;
            // Four binomial standard deviations at n = 200k is under 0.5%.
            assert!((got - fraction).abs() < 0.005, "{fraction}: {got}");
        }
    }

    #[test]
    fn splitmix_reference_values() {
        // The first outputs of the SplitMix64 generator seeded with 0 are the
        // finaliser applied to multiples of the golden gamma.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }
}
