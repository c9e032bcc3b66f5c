//! The headline charts of a matrix run, against the sidecar CPU limit ("no limit" last),
//! one colour per mesh mode and access-log mode:
//!
//! - added latency (`added-latency-vs-cpu-limit`): p90 / p99 of a cell minus its baseline
//!   cell's, when the run has a baseline (what the mesh costs);
//! - absolute latency (`latency-vs-cpu-limit`): p50 / p99 / p99.9, with the baseline's p99
//!   as a flat reference line.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    category_labels, color, draw_legend, draw_line, draw_mesh, frame, headroom, pe, Chart, Ticked,
};
use crate::format::cpu_label;
use crate::load::LoadedRun;
use meshbench_schema::CellResult;

/// What a matrix chart plots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Absolute,
    Added,
}

impl Measure {
    /// The percentiles drawn, with their line width and dash.
    fn percentiles(self) -> &'static [(&'static str, u32, bool)] {
        match self {
            Measure::Absolute => &[("p50", 1, true), ("p99", 3, false), ("p99.9", 2, true)],
            Measure::Added => &[("p90", 1, true), ("p99", 3, false)],
        }
    }

    /// The value of percentile `p` of `c` in ms, if it has one.
    fn value(self, c: &CellResult, p: &str) -> Option<f64> {
        let us = match self {
            Measure::Absolute => c.latency.corrected.get(p),
            Measure::Added => c.mesh_cost.as_ref()?.added.as_ref()?.get(p),
        }?;
        Some(us / 1000.0).filter(|v| v.is_finite())
    }
}

/// Per line (mesh mode and access-log mode): per percentile name: (CPU category index,
/// ms).
pub type Lines = BTreeMap<String, BTreeMap<&'static str, Vec<(usize, f64)>>>;

pub struct MatrixChart {
    pub measure: Measure,
    /// Cells left out because another cell already has their CPU limit and line.
    pub left_out: Vec<String>,
    /// CPU categories in axis order: (label, typical millicores or None for "no limit").
    pub cpu: Vec<(String, Option<f64>)>,
    pub lines: Lines,
    /// The absolute chart: the baseline's p99 (ms), drawn flat across the categories.
    pub baseline_p99: Option<f64>,
}

pub(crate) fn is_baseline(c: &CellResult) -> bool {
    c.settings.mesh_mode.as_deref() == Some("baseline")
}

/// The category of a cell's CPU setting: as written (so a relative limit like "0.8x",
/// resolved per cell, is one category).
pub(crate) fn category(c: &CellResult) -> String {
    cpu_label(
        c.settings.sidecar_cpu_millis,
        c.settings.sidecar_cpu.as_deref(),
    )
}

/// A line's name: the mesh mode (when the run has modes) and the access-log mode.
pub(crate) fn line_name(c: &CellResult) -> String {
    let log = format!("log={}", c.settings.access_log.as_deref().unwrap_or("n/a"));
    match c.settings.mesh_mode.as_deref() {
        Some(m) => format!("{m} {log}"),
        None => log,
    }
}

/// The CPU categories of `cells` in axis order: (label, mean millicores of its cells, or
/// None for "no limit"), ascending, "no limit" last.
pub(crate) fn cpu_categories(cells: &[&CellResult]) -> Vec<(String, Option<f64>)> {
    // categories with the mean millicores of their cells, "no limit" last
    let mut cats: Vec<(String, Option<f64>, usize)> = Vec::new();
    for c in cells {
        let label = category(c);
        let m = c.settings.sidecar_cpu_millis.map(|m| m as f64);
        match cats.iter_mut().find(|(l, _, _)| *l == label) {
            Some((_, sum, n)) => {
                if let (Some(s), Some(m)) = (sum.as_mut(), m) {
                    *s += m;
                }
                *n += 1;
            }
            None => cats.push((label, m, 1)),
        }
    }
    let mut cpu: Vec<(String, Option<f64>)> = cats
        .into_iter()
        .map(|(l, s, n)| (l, s.map(|s| s / n as f64)))
        .collect();
    cpu.sort_by(|a, b| match (a.1, b.1) {
        (None, None) => a.0.cmp(&b.0),
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (Some(x), Some(y)) => x.total_cmp(&y),
    });
    cpu
}

impl MatrixChart {
    /// The chart, or the reason it is not drawn (fewer than two CPU settings; for the added
    /// chart also: no cell with added latency).
    pub fn from_run(run: &LoadedRun, measure: Measure) -> Result<Self, String> {
        let what = match measure {
            Measure::Absolute => "latency vs sidecar CPU limit",
            Measure::Added => "added latency vs sidecar CPU limit",
        };
        let cells: Vec<&CellResult> = run
            .run
            .cells
            .iter()
            .filter(|c| c.measured() && !is_baseline(c))
            .collect();
        let cpu = cpu_categories(&cells);
        if cpu.len() < 2 {
            let only = cpu
                .first()
                .map(|(l, _)| l.clone())
                .unwrap_or_else(|| "none".into());
            return Err(format!(
                "{what}: not drawn, the run has a single CPU setting ({only}); it needs at least two"
            ));
        }
        let mut lines: Lines = BTreeMap::new();
        let mut left_out = Vec::new();
        for c in &cells {
            if c.latency.corrected.count == 0 {
                continue;
            }
            let label = category(c);
            let idx = cpu.iter().position(|(l, _)| *l == label).unwrap_or(0);
            let line = line_name(c);
            let by_p = lines.entry(line.clone()).or_default();
            if by_p
                .get("p99")
                .is_some_and(|pts| pts.iter().any(|(i, _)| *i == idx))
            {
                left_out.push(format!(
                    "{what}: cell '{}' is not drawn, an earlier cell has the same CPU limit and {line}",
                    c.id
                ));
                continue;
            }
            for (p, _, _) in measure.percentiles() {
                let Some(v) = measure.value(c, p) else {
                    continue;
                };
                let pts = by_p.entry(p).or_default();
                let drawable = match measure {
                    // log axis-free, but a latency is positive
                    Measure::Absolute => v > 0.0,
                    Measure::Added => true,
                };
                if drawable && !pts.iter().any(|(i, _)| *i == idx) {
                    pts.push((idx, v));
                }
            }
        }
        lines.retain(|_, by_p| {
            by_p.retain(|_, pts| !pts.is_empty());
            !by_p.is_empty()
        });
        for by_p in lines.values_mut() {
            for pts in by_p.values_mut() {
                pts.sort_by_key(|(i, _)| *i);
            }
        }
        if lines.is_empty() {
            return Err(match measure {
                Measure::Absolute => format!("{what}: not drawn, no cell has latency data"),
                Measure::Added => format!(
                    "{what}: not drawn, no cell has a baseline to compare with (add \"baseline\" to [matrix] mode)"
                ),
            });
        }
        let baseline_p99 = match measure {
            Measure::Absolute => run
                .run
                .cells
                .iter()
                .find(|c| is_baseline(c) && c.latency.corrected.count > 0)
                .map(|c| c.latency.corrected.p99_us / 1000.0),
            Measure::Added => None,
        };
        Ok(MatrixChart {
            measure,
            left_out,
            cpu,
            lines,
            baseline_p99,
        })
    }
}

impl Chart for MatrixChart {
    fn id(&self) -> String {
        match self.measure {
            Measure::Absolute => "latency-vs-cpu-limit".into(),
            Measure::Added => "added-latency-vs-cpu-limit".into(),
        }
    }

    fn title(&self) -> String {
        match self.measure {
            Measure::Absolute => "Latency vs sidecar CPU limit, by mode and access-log mode".into(),
            Measure::Added => {
                "Added latency (vs no-mesh baseline) vs sidecar CPU limit, by mode and access-log mode"
                    .into()
            }
        }
    }

    fn series_labels(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .lines
            .iter()
            .flat_map(|(line, by_p)| by_p.keys().map(move |p| format!("{line} {p}")))
            .collect();
        if self.baseline_p99.is_some() {
            v.push("baseline p99".into());
        }
        v
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let mut values: Vec<f64> = self
            .lines
            .values()
            .flat_map(|m| m.values().flatten().map(|p| p.1))
            .collect();
        values.extend(self.baseline_p99);
        let hi = values.iter().copied().fold(0.0, f64::max);
        let lo = values.iter().copied().fold(0.0, f64::min);
        let lo = if lo < 0.0 { -headroom(-lo)? } else { 0.0 };
        let n = self.cpu.len();
        let ticks: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let labels: Vec<String> = self.cpu.iter().map(|(l, _)| l.clone()).collect();
        let x_fmt = category_labels(labels);
        let mut chart = frame(area, &self.title(), 72)
            .build_cartesian_2d(
                Ticked::new(-0.4..(n as f64 - 0.6), ticks),
                lo..headroom(hi)?,
            )
            .map_err(pe)?;
        let y_desc = match self.measure {
            Measure::Absolute => "latency (ms)",
            Measure::Added => "added latency (ms)",
        };
        draw_mesh(
            chart
                .configure_mesh()
                .x_label_formatter(&x_fmt)
                .x_desc("sidecar CPU limit (millicores, or a factor of the measured need)")
                .y_desc(y_desc),
            14,
        )?;
        for (mi, (line, by_p)) in self.lines.iter().enumerate() {
            let c = color(mi);
            for &(p, width, dashed) in self.measure.percentiles() {
                let Some(pts) = by_p.get(p) else { continue };
                let pts: Vec<(f64, f64)> = pts.iter().map(|&(i, v)| (i as f64, v)).collect();
                let style = c.stroke_width(width);
                draw_line(&mut chart, &pts, style, format!("{line} {p}"), dashed)?;
                chart
                    .draw_series(
                        pts.iter()
                            .map(|&pt| Circle::new(pt, 3 + width as i32, c.filled())),
                    )
                    .map_err(pe)?;
            }
        }
        if let Some(b) = self.baseline_p99 {
            let pts = [(-0.4, b), (n as f64 - 0.6, b)];
            draw_line(
                &mut chart,
                &pts,
                BLACK.stroke_width(1),
                "baseline p99",
                true,
            )?;
        }
        draw_legend(&mut chart, 13, SeriesLabelPosition::UpperRight)
    }
}
