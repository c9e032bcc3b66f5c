//! One cell's capacity search (`search-steps-NN-<cell>`): every step's offered rate
//! (log axis: the bracket doubles) against its corrected p99, passes as filled circles,
//! fails as crosses, each numbered in run order; the capacity found as a vertical line and
//! a p99 objective of the search as a horizontal one.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{color, draw_legend, draw_mesh, frame, headroom, legend_dashes, pe, Chart, Ticked};
use crate::format::slug;
use crate::load::LoadedCell;
use meshbench_schema::search::{SearchOutcome, SearchResult};
use meshbench_schema::slo::{Slo, SloMetric};

/// One step on the chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepPoint {
    pub index: u32,
    pub rate: f64,
    pub p99_ms: f64,
    pub passed: bool,
}

pub struct SearchStepsChart {
    pub index: usize,
    pub cell_id: String,
    pub steps: Vec<StepPoint>,
    /// The capacity found (req/s) and how to say it.
    pub capacity: Option<(f64, String)>,
    /// The search's p99 objective, ms (`p99<10ms`), when it has one.
    pub p99_slo: Option<(f64, String)>,
}

pub const PASSED: &str = "step passed";
pub const FAILED: &str = "step failed";

fn capacity_label(s: &SearchResult, v: f64) -> String {
    match s.outcome {
        SearchOutcome::AtMax => format!("capacity ≥ {v:.0} req/s (upper bound held)"),
        SearchOutcome::MaxSteps => format!("capacity {v:.0} req/s (unconfirmed)"),
        _ => format!("capacity {v:.0} req/s"),
    }
}

impl SearchStepsChart {
    /// The chart of a searched cell (`None` without a search or without a step).
    pub fn from_cell(index: usize, cell: &LoadedCell) -> Option<Self> {
        let s = cell.result.search.as_ref()?;
        let steps: Vec<StepPoint> = s
            .steps
            .iter()
            .filter(|st| st.rate.is_finite() && st.rate > 0.0)
            .map(|st| StepPoint {
                index: st.index,
                rate: st.rate,
                p99_ms: st.latency.p99_us / 1000.0,
                passed: st.passed,
            })
            .collect();
        if steps.is_empty() {
            return None;
        }
        let capacity = match s.outcome {
            SearchOutcome::BelowMin | SearchOutcome::Interrupted => None,
            _ => s.capacity_rps,
        }
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(|v| (v, capacity_label(s, v)));
        let p99_slo = s.slo.iter().find_map(|e| {
            let slo = Slo::parse(e).ok()?;
            (slo.metric == SloMetric::Latency("p99"))
                .then(|| (slo.threshold / 1000.0, format!("SLO {}", slo.expr)))
        });
        Some(SearchStepsChart {
            index,
            cell_id: cell.result.id.clone(),
            steps,
            capacity,
            p99_slo,
        })
    }
}

/// Ticks of a log axis over `lo..hi` (natural-log units): 1, 2, 5 x 10^k inside it.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut v = Vec::new();
    let (a, b) = (lo.exp(), hi.exp());
    let mut decade = 10f64.powf(a.log10().floor());
    while decade <= b {
        for m in [1.0, 2.0, 5.0] {
            let t = m * decade;
            if t >= a && t <= b {
                v.push(t.ln());
            }
        }
        decade *= 10.0;
    }
    if v.len() < 2 {
        v = vec![lo + (hi - lo) * 0.1, (lo + hi) / 2.0, hi - (hi - lo) * 0.1];
    }
    v
}

fn rate_label(x: &f64) -> String {
    let r = x.exp();
    if r >= 10_000.0 {
        format!("{:.0}k", r / 1000.0)
    } else if r >= 10.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

impl Chart for SearchStepsChart {
    fn id(&self) -> String {
        format!("search-steps-{:02}-{}", self.index + 1, slug(&self.cell_id))
    }

    fn title(&self) -> String {
        format!("Capacity search steps — {}", self.cell_id)
    }

    fn series_labels(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.steps.iter().any(|s| s.passed) {
            v.push(PASSED.to_string());
        }
        if self.steps.iter().any(|s| !s.passed) {
            v.push(FAILED.to_string());
        }
        v.extend(self.capacity.as_ref().map(|c| c.1.clone()));
        v.extend(self.p99_slo.as_ref().map(|c| c.1.clone()));
        v
    }

    fn size(&self) -> (u32, u32) {
        (800, 420)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let rates = self
            .steps
            .iter()
            .map(|s| s.rate)
            .chain(self.capacity.as_ref().map(|c| c.0));
        let (lo, hi) = rates.fold((f64::MAX, 0.0f64), |(a, b), r| (a.min(r), b.max(r)));
        let (lo, hi) = ((lo / 1.3).ln(), (hi * 1.3).ln());
        let y_max = self
            .steps
            .iter()
            .map(|s| s.p99_ms)
            .chain(self.p99_slo.as_ref().map(|s| s.0))
            .fold(0.0, f64::max);
        // a failed step can be seconds slow: past 5x the objective the axis stops, and
        // such a step sits on its top edge
        let cap = self
            .p99_slo
            .as_ref()
            .map(|s| s.0 * 5.0)
            .filter(|c| y_max > *c);
        let y1 = headroom(cap.unwrap_or(y_max))?;
        let mut chart = frame(area, &self.title(), 64)
            .build_cartesian_2d(Ticked::new(lo..hi, log_ticks(lo, hi)), 0.0..y1)
            .map_err(pe)?;
        draw_mesh(
            chart
                .configure_mesh()
                .x_label_formatter(&rate_label)
                .x_desc("offered rate of the step (requests/s, log scale)")
                .y_desc(if cap.is_some() {
                    "p99 over the step (ms; cut at 5x the SLO)"
                } else {
                    "p99 over the step (ms)"
                }),
            13,
        )?;
        let pass = color(2);
        let fail = color(3);
        let xy = |s: &StepPoint| (s.rate.ln(), s.p99_ms.min(y1 * 0.97));
        if self.steps.iter().any(|s| s.passed) {
            chart
                .draw_series(
                    self.steps
                        .iter()
                        .filter(|s| s.passed)
                        .map(|s| Circle::new(xy(s), 5, pass.filled())),
                )
                .map_err(pe)?
                .label(PASSED)
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, pass.filled()));
        }
        if self.steps.iter().any(|s| !s.passed) {
            chart
                .draw_series(
                    self.steps
                        .iter()
                        .filter(|s| !s.passed)
                        .map(|s| Cross::new(xy(s), 6, fail.stroke_width(3))),
                )
                .map_err(pe)?
                .label(FAILED)
                .legend(move |(x, y)| Cross::new((x + 10, y), 5, fail.stroke_width(3)));
        }
        // each step's number beside its marker, so the order of the search can be read
        chart
            .draw_series(self.steps.iter().map(|s| {
                EmptyElement::at(xy(s))
                    + Text::new(
                        format!("{}", s.index + 1),
                        (5, -18),
                        (super::FONT, 11).into_font(),
                    )
            }))
            .map_err(pe)?;
        let y0 = 0.0;
        if let Some((v, label)) = &self.capacity {
            let st = color(0).stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(
                    [(v.ln(), y0), (v.ln(), y1)],
                    6,
                    4,
                    st,
                ))
                .map_err(pe)?
                .label(label.clone())
                .legend(legend_dashes(st));
        }
        if let Some((t, label)) = &self.p99_slo {
            let st = BLACK.stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new([(lo, *t), (hi, *t)], 6, 4, st))
                .map_err(pe)?
                .label(label.clone())
                .legend(legend_dashes(st));
        }
        draw_legend(&mut chart, 12, SeriesLabelPosition::UpperLeft)
    }
}
