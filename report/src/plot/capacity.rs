//! The headline of a capacity run (`capacity-vs-cpu-limit`): the capacity each cell's
//! search found against the sidecar CPU limit ("no limit" last, the categories of
//! [`super::matrix`]), one line per mesh mode and access-log mode, with the search's
//! confidence interval (last passing .. first failing rate) as an error bar.
//!
//! Drawn only when some measured cell ran a search. Markers say what the figure is: a
//! filled circle a confirmed capacity, an open circle an unconfirmed one (the step budget
//! ran out), a triangle up "at least" (the upper bound held), a triangle down "below"
//! (the lower bound failed, drawn at the lower bound). An interrupted search has no
//! figure and is left out with a note.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::matrix::{category, cpu_categories, line_name};
use super::{
    category_labels, color, draw_legend, draw_mesh, frame, headroom, legend_line, pe, Chart, Ticked,
};
use crate::load::LoadedRun;
use meshbench_schema::search::SearchOutcome;
use meshbench_schema::CellResult;

/// One cell's capacity on the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityPoint {
    /// CPU category index.
    pub cpu: usize,
    /// The value drawn, req/s (the capacity; the lower bound when it failed).
    pub rps: f64,
    /// The confidence interval (last pass, first fail), when the search has both.
    pub interval: Option<(f64, f64)>,
    pub outcome: SearchOutcome,
}

pub struct CapacityChart {
    /// CPU categories in axis order: (label, typical millicores or None for "no limit").
    pub cpu: Vec<(String, Option<f64>)>,
    /// Per line (mesh mode and access-log mode): its points in CPU order.
    pub lines: BTreeMap<String, Vec<CapacityPoint>>,
    /// Cells left out (another cell has their CPU limit and line; the search was
    /// interrupted), with the reason.
    pub left_out: Vec<String>,
}

const WHAT: &str = "capacity vs sidecar CPU limit";
const CONFIRMED: &str = "● confirmed capacity, bar: last pass .. first fail";
const UNCONFIRMED: &str = "○ unconfirmed (step budget ran out)";
const AT_LEAST: &str = "▲ at least (the upper bound held)";
const BELOW: &str = "▼ below the lower bound (nothing held)";

impl CapacityChart {
    /// The chart, `None` when no measured cell ran a search.
    pub fn from_run(run: &LoadedRun) -> Option<Self> {
        let cells: Vec<&CellResult> = run
            .run
            .cells
            .iter()
            .filter(|c| c.measured() && c.search.is_some())
            .collect();
        if cells.is_empty() {
            return None;
        }
        let cpu = cpu_categories(&cells);
        let mut lines: BTreeMap<String, Vec<CapacityPoint>> = BTreeMap::new();
        let mut left_out = Vec::new();
        for c in &cells {
            let Some(s) = &c.search else { continue };
            let line = line_name(c);
            let idx = cpu.iter().position(|(l, _)| *l == category(c)).unwrap_or(0);
            let rps = match (s.outcome, s.capacity_rps) {
                (SearchOutcome::Interrupted, _) => {
                    left_out.push(format!(
                        "{WHAT}: cell '{}' is not drawn, its search was interrupted before it found a capacity",
                        c.id
                    ));
                    continue;
                }
                (SearchOutcome::BelowMin, _) | (_, None) => s.min_rps,
                (_, Some(v)) => v,
            };
            if !rps.is_finite() {
                continue;
            }
            let pts = lines.entry(line.clone()).or_default();
            if pts.iter().any(|p| p.cpu == idx) {
                left_out.push(format!(
                    "{WHAT}: cell '{}' is not drawn, an earlier cell has the same CPU limit and {line}",
                    c.id
                ));
                continue;
            }
            let interval = match (s.last_pass_rps, s.first_fail_rps) {
                (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() => Some((lo, hi)),
                _ => None,
            };
            pts.push(CapacityPoint {
                cpu: idx,
                rps,
                interval,
                outcome: s.outcome,
            });
        }
        lines.retain(|_, pts| !pts.is_empty());
        for pts in lines.values_mut() {
            pts.sort_by_key(|p| p.cpu);
        }
        Some(CapacityChart {
            cpu,
            lines,
            left_out,
        })
    }

    fn has(&self, f: impl Fn(SearchOutcome) -> bool) -> bool {
        self.lines.values().flatten().any(|p| f(p.outcome))
    }

    /// The marker legends the chart draws (only for outcomes it has).
    fn marker_labels(&self) -> Vec<&'static str> {
        let mut v = vec![CONFIRMED];
        if self.has(|o| o == SearchOutcome::MaxSteps) {
            v.push(UNCONFIRMED);
        }
        if self.has(|o| o == SearchOutcome::AtMax) {
            v.push(AT_LEAST);
        }
        if self.has(|o| o == SearchOutcome::BelowMin) {
            v.push(BELOW);
        }
        v
    }
}

impl Chart for CapacityChart {
    fn id(&self) -> String {
        "capacity-vs-cpu-limit".into()
    }

    fn title(&self) -> String {
        "Capacity (highest rate within the SLO) vs sidecar CPU limit, by mode and access-log mode"
            .into()
    }

    fn series_labels(&self) -> Vec<String> {
        self.lines
            .keys()
            .cloned()
            .chain(self.marker_labels().into_iter().map(String::from))
            .collect()
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let hi = self
            .lines
            .values()
            .flatten()
            .flat_map(|p| [Some(p.rps), p.interval.map(|i| i.1)])
            .flatten()
            .fold(0.0, f64::max);
        let n = self.cpu.len();
        let ticks: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let labels: Vec<String> = self.cpu.iter().map(|(l, _)| l.clone()).collect();
        let x_fmt = category_labels(labels);
        let mut chart = frame(area, &self.title(), 80)
            .build_cartesian_2d(
                Ticked::new(-0.5..(n as f64 - 0.5), ticks),
                0.0..headroom(hi)?,
            )
            .map_err(pe)?;
        draw_mesh(
            chart
                .configure_mesh()
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&|v: &f64| format!("{v:.0}"))
                .x_desc("sidecar CPU limit (millicores; \"no limit\" last)")
                .y_desc("capacity (requests/s)"),
            14,
        )?;
        // lines side by side within a category, so their bars do not hide each other
        let k = self.lines.len().max(1) as f64;
        let spread = (0.5 / k).min(0.12);
        for (li, (line, pts)) in self.lines.iter().enumerate() {
            let c = color(li);
            let dx = (li as f64 - (k - 1.0) / 2.0) * spread;
            let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.cpu as f64 + dx, p.rps)).collect();
            let style = c.stroke_width(2);
            chart
                .draw_series(LineSeries::new(xy.iter().copied(), style))
                .map_err(pe)?
                .label(line.clone())
                .legend(legend_line(style));
            for (p, &(x, y)) in pts.iter().zip(&xy) {
                if let Some((lo, hi)) = p.interval {
                    let w = 0.04;
                    let bar = c.stroke_width(2);
                    chart
                        .draw_series([
                            PathElement::new(vec![(x, lo), (x, hi)], bar),
                            PathElement::new(vec![(x - w, lo), (x + w, lo)], bar),
                            PathElement::new(vec![(x - w, hi), (x + w, hi)], bar),
                        ])
                        .map_err(pe)?;
                }
                match p.outcome {
                    SearchOutcome::AtMax => chart
                        .draw_series([TriangleMarker::new((x, y), 8, c.filled())])
                        .map(|_| ()),
                    // a triangle pointing down: the capacity is below the value drawn
                    SearchOutcome::BelowMin => chart
                        .draw_series([EmptyElement::at((x, y))
                            + Polygon::new(vec![(-7, -6), (7, -6), (0, 6)], c.filled())])
                        .map(|_| ()),
                    SearchOutcome::MaxSteps => chart
                        .draw_series([Circle::new((x, y), 6, c.stroke_width(2))])
                        .map(|_| ()),
                    _ => chart
                        .draw_series([Circle::new((x, y), 6, c.filled())])
                        .map(|_| ()),
                }
                .map_err(pe)?;
            }
        }
        // legend entries for the markers (no data of their own)
        for label in self.marker_labels() {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(pe)?
                .label(label)
                .legend(|(x, y)| Circle::new((x + 10, y), 4, BLACK.filled()));
        }
        draw_legend(&mut chart, 13, SeriesLabelPosition::UpperLeft)
    }
}
