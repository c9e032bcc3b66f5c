//! CI gates: absolute SLOs (k6-style thresholds) and noise-aware regression against a
//! baseline run, with criterion's three-way verdict (Regressed / NonSignificant /
//! Improved).
//!
//! Noise: for each matched cell, the gated percentile is computed for every second of
//! both runs from their interval logs; a two-sided Mann-Whitney U test ([`crate::stats`])
//! says whether the two per-second series differ
//! beyond the run-to-run noise. The size of the change is the whole-cell percentile of
//! the current run against the baseline's. A metric is `Regressed` only when the change
//! exceeds the allowed regression AND the difference is significant; `Improved` when it is
//! significantly better by more than the same margin; otherwise `NonSignificant`.
//!
//! Capacity (`--max-regression capacity=10%`, opt-in): the capacity each run's search
//! found for the cell. A search's own noise is its bracket, so a drop is `Regressed` only
//! when it exceeds the allowed share AND the current search failed at a rate the
//! baseline's held (its first failing rate at or below the baseline's capacity); a
//! smaller gap is within the searches' resolution (`NonSignificant`). `Improved` is the
//! mirror image: a rise beyond the share, with the baseline failing at or below the
//! current capacity.

mod expr;
mod markdown;

pub use expr::{parse_max_regression, parse_slo, MaxRegression, CAPACITY};
pub use markdown::markdown;
use meshbench_schema::quantile_of;
pub use meshbench_schema::slo::{Op, Slo, SloMetric};

use crate::compare::ratio;
use crate::format::{change, us};
use crate::load::{LoadedCell, LoadedRun};
use crate::stats::{mann_whitney, median};

/// Default significance level of the regression test.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Regression threshold used when a baseline is given without `--max-regression`.
pub const DEFAULT_MAX_REGRESSION: &str = "p99=+10%";
/// Fewest per-second points per run for the noise test to mean anything.
pub const MIN_SECONDS: usize = 3;

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

/// Whole-cell percentile: from the interval log's histogram when there is one, else from
/// run.json.
fn whole(cell: &LoadedCell, metric: &str) -> f64 {
    if let Some(h) = &cell.corrected {
        return match quantile_of(metric) {
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

fn slo_on_cell(slo: &Slo, cell: &LoadedCell) -> Option<GateResult> {
    let c = &cell.result;
    // What the mesh adds is not judged on the baseline itself, nor on a cell without the
    // embedded mesh's modes.
    if slo.metric.is_mesh_cost()
        && matches!(c.settings.mesh_mode.as_deref(), None | Some("baseline"))
        && c.sidecars.is_empty()
    {
        return None;
    }
    let (verdict, explanation) = match slo.judge(c) {
        Ok(line) => (Verdict::Passed, line),
        Err(line) => (Verdict::Failed, line),
    };
    Some(GateResult {
        gate: slo.expr.clone(),
        cell: c.id.clone(),
        verdict,
        explanation,
        change: None,
        p_value: None,
    })
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
    let p = mann_whitney(&cs, &bs).map_or(1.0, |(_, p)| p);
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

/// A search's capacity for the gate: (value req/s, how it is said, its first failing
/// rate), or why there is none. Below the lower bound nothing held: 0, failing at the
/// lower bound.
fn capacity_of(
    s: &meshbench_schema::search::SearchResult,
) -> Result<(f64, String, Option<f64>), String> {
    use meshbench_schema::search::SearchOutcome;
    let mut said = s.capacity_text();
    if s.outcome == SearchOutcome::MaxSteps {
        said.push_str(", unconfirmed: max-steps");
    }
    match (s.outcome, s.capacity_rps) {
        (SearchOutcome::Interrupted, _) => {
            Err("its search was interrupted before it found a capacity".into())
        }
        (SearchOutcome::BelowMin, _) | (_, None) => {
            Ok((0.0, said, s.first_fail_rps.or(Some(s.min_rps))))
        }
        (_, Some(v)) => Ok((v, said, s.first_fail_rps)),
    }
}

/// Judge a capacity regression gate (`capacity=10%`) on a matched pair of cells.
pub fn capacity_regression_on_cell(
    gate: &MaxRegression,
    base: &LoadedCell,
    cur: &LoadedCell,
) -> GateResult {
    let mut result = GateResult {
        gate: gate.expr.clone(),
        cell: cur.result.id.clone(),
        verdict: Verdict::NonSignificant,
        explanation: String::new(),
        change: None,
        p_value: None,
    };
    let (bs, cs) = (base.result.search.as_ref(), cur.result.search.as_ref());
    let (b, c) = match (bs, cs) {
        (None, None) => {
            result.verdict = Verdict::NoBaseline;
            result.explanation =
                "neither run has a capacity search ([search]) for this cell: no capacity to compare"
                    .into();
            return result;
        }
        (None, Some(_)) => {
            result.verdict = Verdict::NoBaseline;
            result.explanation =
                "the baseline's cell ran no capacity search ([search]): nothing to compare".into();
            return result;
        }
        (Some(_), None) => {
            result.verdict = Verdict::Failed;
            result.explanation = "the baseline's cell has a capacity but this cell ran no capacity search ([search]), so a regression cannot be ruled out".into();
            return result;
        }
        (Some(b), Some(c)) => (b, c),
    };
    let (bv, bsaid, bfail) = match capacity_of(b) {
        Ok(v) => v,
        Err(why) => {
            result.verdict = Verdict::NoBaseline;
            result.explanation = format!("the baseline's cell has no capacity: {why}");
            return result;
        }
    };
    let (cv, csaid, cfail) = match capacity_of(c) {
        Ok(v) => v,
        Err(why) => {
            result.verdict = Verdict::Failed;
            result.explanation =
                format!("this cell has no capacity to compare: {why} (baseline {bsaid})");
            return result;
        }
    };
    let ch = ratio(bv, cv);
    result.change = ch.is_finite().then_some(ch);
    let figures = format!(
        "capacity {bsaid} → {csaid} ({}), allowed drop {:.1} %",
        change(ch),
        gate.max * 100.0
    );
    let r = |v: f64| format!("{v:.0} req/s");
    let dropped = cv < bv * (1.0 - gate.max);
    let rose = cv > bv * (1.0 + gate.max);
    let (verdict, why) = if dropped {
        match cfail {
            Some(f) if f <= bv => (
                Verdict::Regressed,
                format!(
                    "the current search failed at {}, a rate the baseline held ({}): a drop beyond the allowed share and beyond the searches' resolution",
                    r(f),
                    r(bv)
                ),
            ),
            Some(f) => (
                Verdict::NonSignificant,
                format!(
                    "a drop beyond the allowed share, but within the searches' resolution: the current search first failed at {}, above the baseline's capacity {}",
                    r(f),
                    r(bv)
                ),
            ),
            None => (
                Verdict::NonSignificant,
                "a drop beyond the allowed share, but within the searches' resolution: the current search failed at no rate (its upper bound held)".into(),
            ),
        }
    } else if rose {
        match bfail {
            Some(f) if f <= cv => (
                Verdict::Improved,
                format!(
                    "the baseline's search failed at {}, a rate the current run held ({}): a rise beyond the margin and beyond the searches' resolution",
                    r(f),
                    r(cv)
                ),
            ),
            Some(f) => (
                Verdict::NonSignificant,
                format!(
                    "a rise beyond the margin, but within the searches' resolution: the baseline's search first failed at {}, above the current capacity {}",
                    r(f),
                    r(cv)
                ),
            ),
            None => (
                Verdict::NonSignificant,
                "a rise beyond the margin, but within the searches' resolution: the baseline's search failed at no rate (its upper bound held)".into(),
            ),
        }
    } else {
        (
            Verdict::NonSignificant,
            "within the allowed drop".to_string(),
        )
    };
    result.verdict = verdict;
    result.explanation = format!("{figures}; {why}");
    result
}

/// Evaluate every gate on every cell of `current`.
pub fn evaluate(
    current: &LoadedRun,
    baseline: Option<&LoadedRun>,
    opts: &GateOptions,
) -> Vec<GateResult> {
    let mut out = Vec::new();
    // a run that is not all of its plan fails, whatever its cells measured
    if current.run.finished_at.is_none() {
        out.push(GateResult {
            gate: "complete".into(),
            cell: "(run)".into(),
            verdict: Verdict::Failed,
            explanation: "the run did not finish (run.json has no finished_at): it was killed or is still running".into(),
            change: None,
            p_value: None,
        });
    }
    for id in current.run.missing_cells() {
        out.push(GateResult {
            gate: "complete".into(),
            cell: id.to_string(),
            verdict: Verdict::Missing,
            explanation: "planned but never measured: the run stopped before this cell".into(),
            change: None,
            p_value: None,
        });
    }
    for c in current.run.cells.iter().filter(|c| !c.measured()) {
        out.push(GateResult {
            gate: "complete".into(),
            cell: c.id.clone(),
            verdict: Verdict::Failed,
            explanation: format!(
                "not measured: {}",
                meshbench_schema::text::one_line(c.failed.as_deref().unwrap_or_default())
            ),
            change: None,
            p_value: None,
        });
    }
    for check in current.run.missing_checks() {
        out.push(GateResult {
            gate: check.to_string(),
            cell: "(run)".into(),
            verdict: Verdict::Failed,
            explanation: format!(
                "the plan asked for the run-level check {check}, but it did not run"
            ),
            change: None,
            p_value: None,
        });
    }
    for cell in current.cells.iter().filter(|c| c.result.measured()) {
        for slo in &opts.slos {
            out.extend(slo_on_cell(slo, cell));
        }
        if let Some(base) = baseline {
            match base.cell(&cell.result.id) {
                Some(b) => {
                    for g in &opts.regressions {
                        out.push(if g.is_capacity() {
                            capacity_regression_on_cell(g, b, cell)
                        } else {
                            regression_on_cell(g, b, cell, opts.alpha)
                        });
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
