//! The canary split's goodness-of-fit test, shared by `loadgen run` (each cell) and
//! `report merge` (re-tested on the workers' summed counts).

use meshbench_schema::{CheckResult, CheckStatus};
use serde_json::json;
use statrs::distribution::{Binomial, DiscreteCDF};
use statrs::stats_tests::chisquare::chisquare;

/// Name of the canary-split check in results.
pub const CANARY_SPLIT: &str = "canary_split";

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
