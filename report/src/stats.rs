//! The statistics report uses, from statrs: the Mann-Whitney U test of the regression gates
//! (is the per-second series of one run shifted against another's beyond the noise?) and
//! the median of a series.

use statrs::stats_tests::mannwhitneyu::{mannwhitneyu, MannWhitneyUMethod};
use statrs::stats_tests::Alternative;

/// Two-sided Mann-Whitney U test of `a` against `b`: (U of `a`, p-value), by the normal
/// approximation with tie and continuity correction (as scipy's `asymptotic`). `None` when
/// a sample is empty or every value is tied (no evidence either way).
///
/// statrs' exact method is not used: in statrs 0.19.1 its two-sided p-value for two
/// series of equal length is the complement (1 - 1/252 doubled and clamped to 1 for 1..5
/// against 6..10, where scipy's exact test gives 2/252), and `Automatic` picks it whenever
/// either series has at most 8 values, enumerating C(n1 + n2, min(n1, n2)) arrangements
/// (a 3-second baseline against a 3000-second run would not finish).
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    if a.is_empty() || b.is_empty() || a.iter().chain(b).any(|v| !v.is_finite()) {
        return None;
    }
    let first = a[0];
    if a.iter().chain(b).all(|&v| v == first) {
        return None;
    }
    mannwhitneyu(
        a,
        b,
        MannWhitneyUMethod::AsymptoticInclContinuityCorrection,
        Alternative::TwoSided,
    )
    .ok()
    .filter(|(_, p)| p.is_finite())
}

/// The median of a series (NaN when it is empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hand_computed_case() {
        // a = 1..5, b = 6..10: U_a = 0, mu = 12.5, sigma = sqrt(25*11/12) = 4.787,
        // z = (0 - 12.5 + 0.5) / 4.787 = -2.507, p = 0.0122
        let a: Vec<f64> = (1..=5).map(f64::from).collect();
        let b: Vec<f64> = (6..=10).map(f64::from).collect();
        let (u, p) = mann_whitney(&a, &b).unwrap();
        assert_eq!(u, 0.0);
        assert!((p - 0.01218).abs() < 1e-4, "{p}");
        // identical samples: no evidence at all
        let (_, p) = mann_whitney(&a, &a).unwrap();
        assert!(p > 0.9, "{p}");
        assert!(mann_whitney(&[1.0, 1.0], &[1.0]).is_none());
        assert!(mann_whitney(&[], &[1.0]).is_none());
    }

    #[test]
    fn long_series_use_the_normal_approximation_and_finish() {
        // 20 vs 20, fully separated: z = (0 - 200 + 0.5) / sqrt(20*20*41/12) = -5.397,
        // p = 6.8e-8 (normal approximation with continuity correction).
        let a: Vec<f64> = (1..=20).map(f64::from).collect();
        let b: Vec<f64> = (21..=40).map(f64::from).collect();
        let (_, p) = mann_whitney(&a, &b).unwrap();
        assert!((p - 6.7956e-8).abs() < 1e-11, "{p}");
        // a short baseline against a long run without ties (statrs' `Automatic` would
        // enumerate C(3003, 3) = 4.5e9 arrangements) is answered at once, and a shift
        // is seen
        let long: Vec<f64> = (0..3000).map(f64::from).collect();
        let (_, p) = mann_whitney(&[5000.0, 5001.0, 5002.0], &long).unwrap();
        assert!(p < 0.05, "{p}");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
