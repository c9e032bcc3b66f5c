//! Chart 2, the headline of a matrix run: p50 / p99 / p99.9 against the sidecar CPU limit
//! ("no limit" last), one colour per access-log mode.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    category_labels, color, draw_legend, draw_line, draw_mesh, frame, headroom, pe, Chart, Ticked,
};
use crate::format::cpu_label;
use crate::load::LoadedRun;

/// The percentiles drawn, with their line width and dash.
const PERCENTILES: [(&str, u32, bool); 3] =
    [("p50", 1, true), ("p99", 3, false), ("p99.9", 2, true)];

/// Per access-log mode: per percentile name: (CPU category index, latency ms).
pub type Lines = BTreeMap<String, BTreeMap<&'static str, Vec<(usize, f64)>>>;

pub struct MatrixChart {
    /// Cells left out because another cell already has their CPU limit and log mode.
    pub left_out: Vec<String>,
    /// CPU categories in axis order: (millis or None for "no limit", label).
    pub cpu: Vec<(Option<u64>, String)>,
    /// Per access-log mode: per percentile name: (category index, latency ms).
    pub lines: Lines,
}

/// Sort key putting "no limit" (None) after every limit.
fn cpu_key(m: Option<u64>) -> (bool, u64) {
    (m.is_none(), m.unwrap_or(0))
}

impl MatrixChart {
    /// The chart, or the reason it is not drawn (fewer than two CPU settings).
    pub fn from_run(run: &LoadedRun) -> Result<Self, String> {
        let mut cpu: Vec<(Option<u64>, String)> = Vec::new();
        for c in &run.run.cells {
            let s = &c.settings;
            if !cpu.iter().any(|(m, _)| *m == s.sidecar_cpu_millis) {
                cpu.push((
                    s.sidecar_cpu_millis,
                    cpu_label(s.sidecar_cpu_millis, s.sidecar_cpu.as_deref()),
                ));
            }
        }
        cpu.sort_by_key(|(m, _)| cpu_key(*m));
        if cpu.len() < 2 {
            let only = cpu
                .first()
                .map(|(_, l)| l.clone())
                .unwrap_or_else(|| "none".into());
            return Err(format!(
                "latency vs sidecar CPU limit: not drawn, the run has a single CPU setting ({only}); it needs at least two"
            ));
        }
        let mut lines: Lines = BTreeMap::new();
        let mut left_out = Vec::new();
        for c in &run.run.cells {
            if c.latency.corrected.count == 0 {
                continue;
            }
            let idx = cpu
                .iter()
                .position(|(m, _)| *m == c.settings.sidecar_cpu_millis)
                .unwrap_or(0);
            let mode = format!("log={}", c.settings.access_log.as_deref().unwrap_or("n/a"));
            let by_p = lines.entry(mode.clone()).or_default();
            if by_p
                .get("p99")
                .is_some_and(|pts| pts.iter().any(|(i, _)| *i == idx))
            {
                left_out.push(format!(
                    "latency vs sidecar CPU limit: cell '{}' is not drawn, an earlier cell has the same CPU limit and {mode}",
                    c.id
                ));
                continue;
            }
            for (p, _, _) in PERCENTILES {
                let v = c.latency.corrected.get(p).unwrap_or(f64::NAN) / 1000.0;
                let pts = by_p.entry(p).or_default();
                // one point per CPU setting and mode: the first cell wins
                if v.is_finite() && v > 0.0 && !pts.iter().any(|(i, _)| *i == idx) {
                    pts.push((idx, v));
                }
            }
        }
        for by_p in lines.values_mut() {
            for pts in by_p.values_mut() {
                pts.sort_by_key(|(i, _)| *i);
            }
        }
        if lines.is_empty() {
            return Err("latency vs sidecar CPU limit: not drawn, no cell has latency data".into());
        }
        Ok(MatrixChart {
            left_out,
            cpu,
            lines,
        })
    }
}

impl Chart for MatrixChart {
    fn id(&self) -> String {
        "latency-vs-cpu-limit".into()
    }

    fn title(&self) -> String {
        "Latency vs sidecar CPU limit, by access-log mode".into()
    }

    fn series_labels(&self) -> Vec<String> {
        self.lines
            .iter()
            .flat_map(|(mode, by_p)| by_p.keys().map(move |p| format!("{mode} {p}")))
            .collect()
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let values: Vec<f64> = self
            .lines
            .values()
            .flat_map(|m| m.values().flatten().map(|p| p.1))
            .collect();
        let hi = values.iter().copied().fold(0.0, f64::max);
        let n = self.cpu.len();
        let ticks: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let labels: Vec<String> = self.cpu.iter().map(|(_, l)| l.clone()).collect();
        let x_fmt = category_labels(labels);
        let mut chart = frame(area, &self.title(), 72)
            .build_cartesian_2d(
                Ticked::new(-0.4..(n as f64 - 0.6), ticks),
                0f64..headroom(hi)?,
            )
            .map_err(pe)?;
        draw_mesh(
            chart
                .configure_mesh()
                .x_label_formatter(&x_fmt)
                .x_desc("sidecar CPU limit (millicores)")
                .y_desc("latency (ms)"),
            14,
        )?;
        for (mi, (mode, by_p)) in self.lines.iter().enumerate() {
            let c = color(mi);
            for (p, width, dashed) in PERCENTILES {
                let Some(pts) = by_p.get(p) else { continue };
                let pts: Vec<(f64, f64)> = pts.iter().map(|&(i, v)| (i as f64, v)).collect();
                let style = c.stroke_width(width);
                draw_line(&mut chart, &pts, style, format!("{mode} {p}"), dashed)?;
                chart
                    .draw_series(
                        pts.iter()
                            .map(|&pt| Circle::new(pt, 3 + width as i32, c.filled())),
                    )
                    .map_err(pe)?;
            }
        }
        draw_legend(&mut chart, 13, SeriesLabelPosition::UpperRight)
    }
}
