//! The canary split: do the subsets' shares of successful responses fit the weights?

use super::CANARY_SPLIT;
use crate::plan::ChecksSpec;
use meshbench_schema::{CellResult, CheckResult, CheckStatus};
use serde_json::json;
use statrs::distribution::{Binomial, DiscreteCDF};
use statrs::stats_tests::chisquare::chisquare;

/// Goodness of fit of observed subset counts to configured weights.
///
/// Two subsets with weight: an exact two-sided binomial test on the first subset's count;
/// more: Pearson's chi-square test with k-1 degrees of freedom. The check fails when the
/// p-value is below `1 - confidence`, when a subset with weight 0 (or one not configured)
/// answered, or when nothing answered.
pub fn canary_split(
    weights: &[(String, u32)],
    observed: &[(String, u64)],
    confidence: f64,
) -> CheckResult {
    let alpha = 1.0 - confidence;
    let count_of = |name: &str| {
        observed
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, c)| *c)
            .sum::<u64>()
    };
    let total_w: u32 = weights.iter().map(|(_, w)| w).sum();
    let n: u64 = observed.iter().map(|(_, c)| c).sum();
    let unexpected: Vec<(String, u64)> = observed
        .iter()
        .filter(|(name, c)| *c > 0 && !weights.iter().any(|(w, wt)| w == name && *wt > 0))
        .cloned()
        .collect();
    let rows: Vec<serde_json::Value> = weights
        .iter()
        .map(|(name, w)| {
            let c = count_of(name);
            json!({
                "subset": name,
                "weight": w,
                "observed": c,
                "expected": n as f64 * *w as f64 / total_w.max(1) as f64,
                "observed_share": if n > 0 { c as f64 / n as f64 } else { 0.0 },
                "expected_share": *w as f64 / total_w.max(1) as f64,
            })
        })
        .collect();
    let mut details = json!({
        "confidence": confidence,
        "alpha": alpha,
        "total": n,
        "subsets": rows,
    });
    let shares = weights
        .iter()
        .map(|(name, w)| {
            format!(
                "{name} {:.2}% (weight {w}%)",
                if n > 0 {
                    100.0 * count_of(name) as f64 / n as f64
                } else {
                    0.0
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let fail = |summary: String, details: serde_json::Value| CheckResult {
        name: CANARY_SPLIT.into(),
        status: CheckStatus::Failed,
        summary,
        details,
    };
    if n == 0 {
        return fail(
            "no response named its subset, so the split could not be verified".into(),
            details,
        );
    }
    if !unexpected.is_empty() {
        details["unexpected"] = json!(unexpected);
        let list = unexpected
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect::<Vec<_>>()
            .join(", ");
        return fail(
            format!("responses from subsets with no weight: {list} (of {n})"),
            details,
        );
    }
    let live: Vec<(&str, f64, u64)> = weights
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|(name, w)| (name.as_str(), *w as f64 / total_w as f64, count_of(name)))
        .collect();
    let (test, p_value) = if live.len() < 2 {
        // One live subset: every response came from it (unexpected ones failed above).
        ("all traffic to one subset", 1.0)
    } else if live.len() == 2 {
        let (_, p, k) = live[0];
        let p_value = match Binomial::new(p, n) {
            Ok(b) => {
                // two-sided: twice the smaller tail, capped at 1
                let lower = b.cdf(k);
                let upper = if k == 0 { 1.0 } else { b.sf(k - 1) };
                (2.0 * lower.min(upper)).min(1.0)
            }
            Err(_) => 0.0,
        };
        ("exact binomial test (two-sided)", p_value)
    } else {
        let observed: Vec<usize> = live.iter().map(|(_, _, k)| *k as usize).collect();
        let expected: Vec<f64> = live.iter().map(|(_, p, _)| p * n as f64).collect();
        let (stat, p_value) =
            chisquare(&observed, Some(&expected), None).unwrap_or((f64::NAN, 0.0));
        details["chi_square"] = json!(stat);
        details["degrees_of_freedom"] = json!(live.len() - 1);
        ("Pearson chi-square test", p_value)
    };
    details["test"] = json!(test);
    details["p_value"] = json!(p_value);
    let conf = format!("{}%", trim_float(confidence * 100.0));
    if p_value < alpha {
        fail(
            format!("split differs from the weights at {conf} confidence: {shares}, n={n}, p={p_value:.2e} ({test})"),
            details,
        )
    } else {
        CheckResult {
            name: CANARY_SPLIT.into(),
            status: CheckStatus::Passed,
            summary: format!("split matches the weights at {conf} confidence: {shares}, n={n}, p={p_value:.3} ({test})"),
            details,
        }
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

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
