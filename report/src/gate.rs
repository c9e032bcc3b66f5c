//! CI gates: absolute SLOs (k6-style thresholds) and noise-aware regression against a
//! baseline run, with criterion's three-way verdict (Regressed / NonSignificant /
//! Improved).
//!
//! Noise: for each matched cell, the gated percentile is computed for every second of
//! both runs from their interval logs; a two-sided Mann-Whitney U test (normal
//! approximation with tie correction) says whether the two per-second series differ
//! beyond the run-to-run noise. The size of the change is the whole-cell percentile of
//! the current run against the baseline's. A metric is `Regressed` only when the change
//! exceeds the allowed regression AND the difference is significant; `Improved` when it is
//! significantly better by more than the same margin; otherwise `NonSignificant`.

use std::fmt::Write as _;

use statrs::distribution::{ContinuousCDF, Normal};

use crate::compare::ratio;
use crate::format::{change, md, us};
use crate::load::{LoadedCell, LoadedRun};
use crate::ReportError;

/// Default significance level of the regression test.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Regression threshold used when a baseline is given without `--max-regression`.
pub const DEFAULT_MAX_REGRESSION: &str = "p99=+10%";
/// Fewest per-second points per run for the noise test to mean anything.
pub const MIN_SECONDS: usize = 3;

/// Latency percentiles a gate may name.
const LATENCY: [&str; 7] = ["p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn holds(self, v: f64, t: f64) -> bool {
        match self {
            Op::Lt => v < t,
            Op::Le => v <= t,
            Op::Gt => v > t,
            Op::Ge => v >= t,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SloMetric {
    /// A corrected-latency percentile by name; threshold in µs.
    Latency(&'static str),
    /// Failed requests / requests; threshold as a fraction.
    Errors,
    /// Achieved requests per second.
    Rate,
}

/// An absolute threshold such as `p99<50ms`, `errors<0.1%`, `rate>=190`.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    pub expr: String,
    pub metric: SloMetric,
    pub op: Op,
    pub threshold: f64,
}

fn expr_err(kind: &'static str, expr: &str, msg: impl Into<String>) -> ReportError {
    ReportError::Expr {
        kind,
        expr: expr.to_string(),
        msg: msg.into(),
    }
}

/// Parse a duration with its unit ("50ms", "1.5 s", "800us", "800µs") into µs.
pub fn parse_duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let k = match unit.trim() {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return None,
    };
    (v.is_finite() && v >= 0.0).then_some(v * k)
}

/// Parse an SLO expression.
pub fn parse_slo(expr: &str) -> Result<Slo, ReportError> {
    const KIND: &str = "SLO";
    let e = expr.trim();
    let pos = e.find(['<', '>']).ok_or_else(|| {
        expr_err(
            KIND,
            expr,
            "expected METRIC<VALUE or METRIC>VALUE, e.g. p99<50ms",
        )
    })?;
    let (name, rest) = e.split_at(pos);
    let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
        (Op::Le, v)
    } else if let Some(v) = rest.strip_prefix(">=") {
        (Op::Ge, v)
    } else if let Some(v) = rest.strip_prefix('<') {
        (Op::Lt, v)
    } else {
        (Op::Gt, &rest[1..])
    };
    let name = name.trim();
    let value = value.trim();
    if let Some(&p) = LATENCY.iter().find(|&&p| p == name) {
        let t = parse_duration_us(value).ok_or_else(|| {
            expr_err(
                KIND,
                expr,
                format!("'{value}' is not a duration with a unit (us, ms, s)"),
            )
        })?;
        return Ok(Slo {
            expr: e.to_string(),
            metric: SloMetric::Latency(p),
            op,
            threshold: t,
        });
    }
    match name {
        "errors" => {
            let pct = value
                .strip_suffix('%')
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    expr_err(KIND, expr, "give errors as a percentage, e.g. errors<0.1%")
                })?;
            Ok(Slo {
                expr: e.to_string(),
                metric: SloMetric::Errors,
                op,
                threshold: pct / 100.0,
            })
        }
        "rate" => {
            let v = value
                .strip_suffix("/s")
                .unwrap_or(value)
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| expr_err(KIND, expr, "give a rate in requests/s, e.g. rate>190"))?;
            Ok(Slo {
                expr: e.to_string(),
                metric: SloMetric::Rate,
                op,
                threshold: v,
            })
        }
        _ => Err(expr_err(
            KIND,
            expr,
            format!(
                "unknown metric '{name}' (known: {}, errors, rate)",
                LATENCY.join(", ")
            ),
        )),
    }
}

/// A regression limit such as `p99=+10%`.
#[derive(Debug, Clone, PartialEq)]
pub struct MaxRegression {
    pub expr: String,
    /// p50, p90, p99, p99.9 or max.
    pub metric: &'static str,
    /// Allowed relative increase (0.10 for +10 %).
    pub max: f64,
}

pub fn parse_max_regression(expr: &str) -> Result<MaxRegression, ReportError> {
    const KIND: &str = "max-regression";
    let e = expr.trim();
    let (name, value) = e
        .split_once('=')
        .ok_or_else(|| expr_err(KIND, expr, "expected METRIC=+PERCENT%, e.g. p99=+10%"))?;
    let name = name.trim();
    let metric = crate::compare::METRICS
        .iter()
        .find(|&&m| m == name)
        .copied()
        .ok_or_else(|| {
            expr_err(
                KIND,
                expr,
                format!(
                    "unknown metric '{name}' (known: {})",
                    crate::compare::METRICS.join(", ")
                ),
            )
        })?;
    let v = value.trim();
    let pct = v
        .strip_suffix('%')
        .map(|p| p.trim().trim_start_matches('+'))
        .and_then(|p| p.parse::<f64>().ok())
        .filter(|p| p.is_finite() && *p >= 0.0)
        .ok_or_else(|| {
            expr_err(
                KIND,
                expr,
                format!("'{v}' is not a percentage such as +10%"),
            )
        })?;
    Ok(MaxRegression {
        expr: e.to_string(),
        metric,
        max: pct / 100.0,
    })
}

/// Outcome of one gate on one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// SLO met.
    Passed,
    /// SLO violated, or no data to judge it.
    Failed,
    /// Slower beyond the allowed regression, and significant against the noise.
    Regressed,
    /// Not distinguishable from noise, or within the allowed regression.
    NonSignificant,
    /// Significantly faster by more than the regression margin.
    Improved,
    /// A baseline cell that the current run does not have.
    Missing,
    /// A current cell without a baseline: nothing to compare (reported, passes).
    NoBaseline,
}

impl Verdict {
    pub fn fails(self) -> bool {
        matches!(
            self,
            Verdict::Failed | Verdict::Regressed | Verdict::Missing
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Passed => "Passed",
            Verdict::Failed => "Failed",
            Verdict::Regressed => "Regressed",
            Verdict::NonSignificant => "NonSignificant",
            Verdict::Improved => "Improved",
            Verdict::Missing => "Missing",
            Verdict::NoBaseline => "NoBaseline",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GateResult {
    /// The gate's expression (`p99<50ms`, `p99=+10%`, `baseline`).
    pub gate: String,
    pub cell: String,
    pub verdict: Verdict,
    /// One or two sentences with the figures that decided it.
    pub explanation: String,
    /// For regression gates: relative change and p-value.
    pub change: Option<f64>,
    pub p_value: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct GateOptions {
    pub slos: Vec<Slo>,
    pub regressions: Vec<MaxRegression>,
    pub alpha: f64,
}

/// Two-sided Mann-Whitney U test, normal approximation with tie correction and
/// continuity correction. Returns (U of `a`, z, p-value); None when a sample is empty or
/// every value is tied.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&v| (v, true))
        .chain(b.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let mut rank_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_a += all[i..=j].iter().filter(|x| x.1).count() as f64 * avg_rank;
        tie_term += t * t * t - t;
        i = j + 1;
    }
    let u = rank_a - n1 * (n1 + 1.0) / 2.0;
    let mu = n1 * n2 / 2.0;
    let nf = n as f64;
    let var = n1 * n2 / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    if var <= 0.0 {
        return None;
    }
    let diff = u - mu;
    let corrected = if diff.abs() <= 0.5 {
        0.0
    } else {
        diff - 0.5 * diff.signum()
    };
    let z = corrected / var.sqrt();
    let normal = Normal::new(0.0, 1.0).ok()?;
    let p = (2.0 * (1.0 - normal.cdf(z.abs()))).clamp(0.0, 1.0);
    Some((u, z, p))
}

fn median(v: &[f64]) -> f64 {
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

/// Whole-cell percentile: from the interval log's histogram when there is one, else from
/// run.json.
fn whole(cell: &LoadedCell, metric: &str) -> f64 {
    if let Some(h) = &cell.corrected {
        let q = match metric {
            "p50" => Some(0.5),
            "p90" => Some(0.9),
            "p99" => Some(0.99),
            "p99.9" => Some(0.999),
            _ => None,
        };
        return match q {
            Some(q) => h.value_at_quantile(q) as f64,
            None => h.max() as f64,
        };
    }
    cell.result
        .latency
        .corrected
        .get(metric)
        .unwrap_or(f64::NAN)
}

fn slo_on_cell(slo: &Slo, cell: &LoadedCell) -> GateResult {
    let c = &cell.result;
    let (value, shown) = match slo.metric {
        SloMetric::Latency(p) => {
            if c.latency.corrected.count == 0 {
                (None, String::new())
            } else {
                let v = c.latency.corrected.get(p).unwrap_or(f64::NAN);
                (Some(v), us(v))
            }
        }
        SloMetric::Errors => {
            if c.requests == 0 {
                (None, String::new())
            } else {
                let v = c.errors.total() as f64 / c.requests as f64;
                (
                    Some(v),
                    format!(
                        "{:.3} % ({} of {})",
                        v * 100.0,
                        c.errors.total(),
                        c.requests
                    ),
                )
            }
        }
        SloMetric::Rate => (Some(c.achieved_rate), format!("{:.1}/s", c.achieved_rate)),
    };
    let (verdict, explanation) = match value {
        None => (
            Verdict::Failed,
            "no completed requests in this cell, so the SLO cannot be met".to_string(),
        ),
        Some(v) if slo.op.holds(v, slo.threshold) => (
            Verdict::Passed,
            format!("measured {shown}: within `{}`", slo.expr),
        ),
        Some(_) => (
            Verdict::Failed,
            format!("measured {shown}: violates `{}`", slo.expr),
        ),
    };
    GateResult {
        gate: slo.expr.clone(),
        cell: c.id.clone(),
        verdict,
        explanation,
        change: None,
        p_value: None,
    }
}

/// Judge one regression gate on a matched pair of cells.
pub fn regression_on_cell(
    gate: &MaxRegression,
    base: &LoadedCell,
    cur: &LoadedCell,
    alpha: f64,
) -> GateResult {
    let series = |c: &LoadedCell| -> Vec<f64> {
        c.seconds
            .iter()
            .filter_map(|s| s.get(gate.metric))
            .collect()
    };
    let (bs, cs) = (series(base), series(cur));
    let (bw, cw) = (whole(base, gate.metric), whole(cur, gate.metric));
    let ch = ratio(bw, cw);
    let m = gate.metric;
    let figures = format!(
        "{m} {} → {} ({}), allowed +{:.1} %",
        us(bw),
        us(cw),
        change(ch),
        gate.max * 100.0
    );
    let mut result = GateResult {
        gate: gate.expr.clone(),
        cell: cur.result.id.clone(),
        verdict: Verdict::NonSignificant,
        explanation: String::new(),
        change: Some(ch),
        p_value: None,
    };
    if bs.len() < MIN_SECONDS || cs.len() < MIN_SECONDS {
        result.explanation = format!(
            "{figures}; only {} / {} per-second intervals (baseline / current), too few to tell a change from noise (need {MIN_SECONDS})",
            bs.len(),
            cs.len()
        );
        return result;
    }
    let test = mann_whitney(&cs, &bs);
    let p = test.map(|t| t.2).unwrap_or(1.0);
    result.p_value = Some(p);
    let (bm, cm) = (median(&bs), median(&cs));
    let noise = format!(
        "per-second {m} median {} → {} over {} / {} s, Mann-Whitney p = {}",
        us(bm),
        us(cm),
        bs.len(),
        cs.len(),
        if p >= 0.001 {
            format!("{p:.3}")
        } else {
            format!("{p:.1e}")
        }
    );
    let significant = p < alpha;
    result.verdict = if !ch.is_finite() {
        Verdict::NonSignificant
    } else if significant && ch > gate.max && cm > bm {
        Verdict::Regressed
    } else if significant && ch < -gate.max && cm < bm {
        Verdict::Improved
    } else {
        Verdict::NonSignificant
    };
    let why = match result.verdict {
        Verdict::Regressed => {
            format!("slower beyond the allowed regression and significant (p < {alpha})")
        }
        Verdict::Improved => {
            format!("faster by more than the margin and significant (p < {alpha})")
        }
        _ if !significant => format!("not significant against the run-to-run noise (p ≥ {alpha})"),
        _ => "significant but within the allowed regression".to_string(),
    };
    result.explanation = format!("{figures}; {noise}: {why}");
    result
}

/// Evaluate every gate on every cell of `current`.
pub fn evaluate(
    current: &LoadedRun,
    baseline: Option<&LoadedRun>,
    opts: &GateOptions,
) -> Vec<GateResult> {
    let mut out = Vec::new();
    for cell in &current.cells {
        for slo in &opts.slos {
            out.push(slo_on_cell(slo, cell));
        }
        if let Some(base) = baseline {
            match base.cell(&cell.result.id) {
                Some(b) => {
                    for g in &opts.regressions {
                        out.push(regression_on_cell(g, b, cell, opts.alpha));
                    }
                }
                None => out.push(GateResult {
                    gate: "baseline".into(),
                    cell: cell.result.id.clone(),
                    verdict: Verdict::NoBaseline,
                    explanation: format!(
                        "the baseline {} has no cell with this id: nothing to compare",
                        base.dir.display()
                    ),
                    change: None,
                    p_value: None,
                }),
            }
        }
    }
    if let Some(base) = baseline {
        for b in &base.run.cells {
            if current.cell(&b.id).is_none() {
                out.push(GateResult {
                    gate: "baseline".into(),
                    cell: b.id.clone(),
                    verdict: Verdict::Missing,
                    explanation: "the baseline has this cell but the current run does not".into(),
                    change: None,
                    p_value: None,
                });
            }
        }
    }
    out
}

/// Markdown explanation of every verdict.
pub fn markdown(
    current: &LoadedRun,
    baseline: Option<&LoadedRun>,
    results: &[GateResult],
) -> String {
    let failed = results.iter().filter(|r| r.verdict.fails()).count();
    let mut s = format!(
        "## Gate: {} — {}\n\n",
        md(&current.run.scenario),
        if failed == 0 {
            "✅ all gates passed".to_string()
        } else {
            format!("❌ {failed} of {} gate(s) failed", results.len())
        }
    );
    let _ = writeln!(
        s,
        "Current `{}`{}.\n",
        md(&current.dir.display().to_string()),
        baseline
            .map(|b| format!(", baseline `{}`", md(&b.dir.display().to_string())))
            .unwrap_or_default()
    );
    s.push_str("| cell | gate | verdict | explanation |\n|---|---|---|---|\n");
    for r in results {
        let mark = if r.verdict.fails() { "❌" } else { "✅" };
        let _ = writeln!(
            s,
            "| `{}` | `{}` | {mark} {} | {} |",
            md(&r.cell),
            md(&r.gate),
            r.verdict.name(),
            md(&r.explanation)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slo_expressions_parse() {
        let s = parse_slo("p99<50ms").unwrap();
        assert_eq!(s.metric, SloMetric::Latency("p99"));
        assert_eq!(s.op, Op::Lt);
        assert_eq!(s.threshold, 50_000.0);
        let s = parse_slo(" p99.9 <= 1.5s ").unwrap();
        assert_eq!((s.op, s.threshold), (Op::Le, 1_500_000.0));
        let s = parse_slo("errors<0.1%").unwrap();
        assert!((s.threshold - 0.001).abs() < 1e-12);
        let s = parse_slo("rate>=190/s").unwrap();
        assert_eq!(
            (s.metric, s.op, s.threshold),
            (SloMetric::Rate, Op::Ge, 190.0)
        );
        for bad in [
            "p99<50",
            "p98<5ms",
            "errors<0.1",
            "p99",
            "rate>fast",
            "p99<-3ms",
        ] {
            let e = parse_slo(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn regression_expressions_parse() {
        let r = parse_max_regression("p99=+10%").unwrap();
        assert_eq!((r.metric, r.max), ("p99", 0.10));
        assert_eq!(parse_max_regression("p99.9=5%").unwrap().max, 0.05);
        for bad in ["p99+10%", "p99=10", "p42=+10%", "p99=+x%"] {
            assert!(parse_max_regression(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mann_whitney_matches_a_hand_computed_case() {
        // a = 1..5, b = 6..10: U_a = 0, mu = 12.5, sigma = sqrt(25*11/12) = 4.787,
        // z = (0 - 12.5 + 0.5) / 4.787 = -2.507, p = 0.0122
        let a: Vec<f64> = (1..=5).map(f64::from).collect();
        let b: Vec<f64> = (6..=10).map(f64::from).collect();
        let (u, z, p) = mann_whitney(&a, &b).unwrap();
        assert_eq!(u, 0.0);
        assert!((z + 2.5067).abs() < 1e-3, "{z}");
        assert!((p - 0.01218).abs() < 1e-4, "{p}");
        // identical samples: no evidence at all
        let (_, _, p) = mann_whitney(&a, &a).unwrap();
        assert!(p > 0.9);
        assert!(mann_whitney(&[1.0, 1.0], &[1.0]).is_none());
    }
}
