//! The canary split: do the subsets' shares of successful responses fit the weights?

use crate::plan::ChecksSpec;
use meshbench_schema::{CellResult, CheckResult};
pub use report::canary::canary_split;

/// Add the canary-split check to a cell's result, when the plan declares weights.
pub fn add_to_cell(checks: Option<&ChecksSpec>, result: &mut CellResult) {
    if let Some(check) = checks.and_then(|c| check_cell(c, result)) {
        result.checks.push(check);
    }
}

/// The canary-split check of one cell from its per-subset counts; also fills the
/// subsets' expected shares. `None` when the plan declares no weights.
pub fn check_cell(checks: &ChecksSpec, result: &mut CellResult) -> Option<CheckResult> {
    let weights = checks.weights.as_ref()?;
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    for s in &mut result.subsets {
        s.expected_share = Some(
            weights
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|(_, w)| *w as f64 / total.max(1) as f64)
                .unwrap_or(0.0),
        );
    }
    let observed: Vec<(String, u64)> = result
        .subsets
        .iter()
        .map(|s| (s.name.clone(), s.count))
        .collect();
    Some(canary_split(weights, &observed, checks.confidence))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshbench_schema::CheckStatus;

    fn w(v: &[(&str, u32)]) -> Vec<(String, u32)> {
        v.iter().map(|(n, w)| (n.to_string(), *w)).collect()
    }
    fn o(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    #[test]
    fn binomial_accepts_a_fair_split_and_rejects_a_skewed_one() {
        let weights = w(&[("v1", 90), ("v2", 10)]);
        let ok = canary_split(&weights, &o(&[("v1", 9030), ("v2", 970)]), 0.999);
        assert_eq!(ok.status, CheckStatus::Passed, "{}", ok.summary);
        let p = ok.details["p_value"].as_f64().unwrap();
        assert!(p > 0.3 && p <= 1.0, "{p}");
        let bad = canary_split(&weights, &o(&[("v1", 8000), ("v2", 2000)]), 0.999);
        assert_eq!(bad.status, CheckStatus::Failed, "{}", bad.summary);
        assert!(bad.details["p_value"].as_f64().unwrap() < 1e-10);
        assert!(bad.summary.contains("99.9% confidence"), "{}", bad.summary);
        // exact p-value of a small case: n=10, p=0.5, k=0 → 2 * 0.5^10
        let tiny = canary_split(
            &w(&[("a", 50), ("b", 50)]),
            &o(&[("a", 0), ("b", 10)]),
            0.99,
        );
        let p = tiny.details["p_value"].as_f64().unwrap();
        assert!((p - 2.0 / 1024.0).abs() < 1e-12, "{p}");
        assert_eq!(tiny.status, CheckStatus::Failed);
    }

    #[test]
    fn chi_square_for_three_subsets() {
        let weights = w(&[("a", 50), ("b", 30), ("c", 20)]);
        let ok = canary_split(
            &weights,
            &o(&[("a", 5020), ("b", 2990), ("c", 1990)]),
            0.999,
        );
        assert_eq!(ok.status, CheckStatus::Passed, "{}", ok.summary);
        assert_eq!(ok.details["degrees_of_freedom"], 2);
        let bad = canary_split(
            &weights,
            &o(&[("a", 4000), ("b", 4000), ("c", 2000)]),
            0.999,
        );
        assert_eq!(bad.status, CheckStatus::Failed);
        // chi2 = 1000^2/5000 + 1000^2/3000 + 0 = 200 + 333.3
        let stat = bad.details["chi_square"].as_f64().unwrap();
        assert!((stat - 533.333).abs() < 0.01, "{stat}");
    }

    #[test]
    fn unexpected_or_missing_subsets_fail() {
        let weights = w(&[("v1", 100), ("v2", 0)]);
        let r = canary_split(&weights, &o(&[("v1", 99), ("v2", 1)]), 0.999);
        assert_eq!(r.status, CheckStatus::Failed);
        assert!(r.summary.contains("v2: 1"), "{}", r.summary);
        let r = canary_split(
            &w(&[("v1", 90), ("v2", 10)]),
            &o(&[("v1", 90), ("v3", 10)]),
            0.999,
        );
        assert_eq!(r.status, CheckStatus::Failed);
        let r = canary_split(&w(&[("v1", 90), ("v2", 10)]), &[], 0.999);
        assert_eq!(r.status, CheckStatus::Failed);
        assert!(r.summary.contains("could not be verified"));
        let r = canary_split(&weights, &o(&[("v1", 50)]), 0.999);
        assert_eq!(r.status, CheckStatus::Passed);
    }
}
