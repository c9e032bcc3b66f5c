//! Sweeps, as Istio's benchmark harness plots them: when a run's cells differ in the
//! number of connections, or in the constant rate (cells with a capacity search or a rate
//! profile are not a constant rate and are left out), one series per group of the other
//! settings (mesh mode, access log, CPU limit, and the other load dimension), with the
//! swept value on the x axis in its own unit:
//!
//! - `latency-vs-connections`: corrected p50 / p90 / p99 against connections;
//! - `latency-vs-rate`: corrected p50 / p90 / p99 against the target rate (req/s);
//! - `sidecar-cpu-vs-rate`: the sidecars' CPU (cpu.stat usage_usec / 1e6 / the measured
//!   window, cores) against the target rate, when measured.
//!
//! A sweep is drawn only when some group has at least two values of its dimension.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{color, draw_legend, draw_line, draw_mesh, frame, headroom, pe, Chart};
use crate::format::cpu_label;
use crate::load::LoadedRun;
use meshbench_schema::CellResult;

/// What a sweep varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Connections,
    Rate,
}

/// What a sweep chart shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepMeasure {
    Latency,
    SidecarCpu,
}

/// The percentiles a latency sweep draws: name, line width, dashed.
const PERCENTILES: [(&str, u32, bool); 3] = [("p50", 1, true), ("p90", 2, true), ("p99", 3, false)];

/// Per group: per series name: (x, y) points.
pub type Groups = BTreeMap<String, BTreeMap<&'static str, Vec<(f64, f64)>>>;

pub struct SweepChart {
    pub dim: Dimension,
    pub measure: SweepMeasure,
    /// Per group (the other settings): per series name ("p99", or "cores"): (x, y), x
    /// ascending; latency in ms, CPU in cores.
    pub groups: Groups,
    /// Cells left out because another cell of their group has the same value.
    pub left_out: Vec<String>,
}

impl Dimension {
    fn value(self, c: &CellResult) -> Option<f64> {
        match self {
            Dimension::Connections => Some(c.settings.connections as f64),
            Dimension::Rate => c.settings.rate.filter(|r| r.is_finite() && *r > 0.0),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dimension::Connections => "connections",
            Dimension::Rate => "rate",
        }
    }
}

/// The settings a cell shares with the others of its series: every setting but `dim`.
fn group_parts(c: &CellResult, dim: Dimension) -> Vec<(&'static str, String)> {
    let st = &c.settings;
    let mut v = vec![
        ("mode", st.mesh_mode.clone().unwrap_or_default()),
        ("log", st.access_log.clone().unwrap_or_default()),
        (
            "cpu",
            if st.mesh_mode.as_deref() == Some("baseline") {
                String::new()
            } else {
                cpu_label(st.sidecar_cpu_millis, st.sidecar_cpu.as_deref())
            },
        ),
        ("protocol", c.protocol.clone()),
    ];
    match dim {
        Dimension::Connections => v.push((
            "rate",
            st.rate
                .map(|r| format!("{r}/s"))
                .unwrap_or_else(|| "closed".into()),
        )),
        Dimension::Rate => v.push(("conns", st.connections.to_string())),
    }
    v
}

/// The cells a sweep takes: measured, at a constant rate (no search, no profile), with
/// latency data.
fn sweep_cells(run: &LoadedRun) -> Vec<&CellResult> {
    run.run
        .cells
        .iter()
        .filter(|c| c.measured() && c.search.is_none() && c.settings.profile.is_none())
        .collect()
}

/// Which sweeps a run has: the dimensions in which some group of cells (equal in every
/// other setting) takes at least two values.
pub fn dimensions(run: &LoadedRun) -> Vec<Dimension> {
    let cells = sweep_cells(run);
    [Dimension::Connections, Dimension::Rate]
        .into_iter()
        .filter(|&dim| {
            let mut by_group: BTreeMap<Vec<(&str, String)>, Vec<u64>> = BTreeMap::new();
            for c in &cells {
                if let Some(x) = dim.value(c) {
                    let xs = by_group.entry(group_parts(c, dim)).or_default();
                    if !xs.contains(&x.to_bits()) {
                        xs.push(x.to_bits());
                    }
                }
            }
            by_group.values().any(|xs| xs.len() >= 2)
        })
        .collect()
}

impl SweepChart {
    /// The sweep of `dim` showing `measure`; `None` when no cell has a value for it.
    pub fn from_run(run: &LoadedRun, dim: Dimension, measure: SweepMeasure) -> Option<Self> {
        let cells = sweep_cells(run);
        let parts: Vec<Vec<(&str, String)>> = cells.iter().map(|c| group_parts(c, dim)).collect();
        // a group is named by the settings that differ between groups
        let varies: Vec<bool> = (0..parts.first().map_or(0, Vec::len))
            .map(|i| parts.iter().any(|p| p[i].1 != parts[0][i].1))
            .collect();
        let name = |p: &[(&str, String)]| -> String {
            let named: Vec<String> = p
                .iter()
                .zip(&varies)
                .filter(|(_, v)| **v)
                .map(|((k, v), _)| format!("{k}={}", if v.is_empty() { "-" } else { v }))
                .collect();
            if named.is_empty() {
                "all cells".into()
            } else {
                named.join(" ")
            }
        };
        let mut groups: Groups = BTreeMap::new();
        let mut left_out = Vec::new();
        let mut seen: Vec<(String, u64)> = Vec::new();
        for (c, p) in cells.iter().zip(&parts) {
            let Some(x) = dim.value(c) else { continue };
            let g = name(p);
            if seen.contains(&(g.clone(), x.to_bits())) {
                left_out.push(format!(
                    "{} sweep: cell '{}' is not drawn, an earlier cell of {g} has the same {}",
                    dim.name(),
                    c.id,
                    dim.name()
                ));
                continue;
            }
            seen.push((g.clone(), x.to_bits()));
            match measure {
                SweepMeasure::Latency => {
                    if c.latency.corrected.count == 0 {
                        continue;
                    }
                    let by_p = groups.entry(g).or_default();
                    for (pname, _, _) in PERCENTILES {
                        if let Some(v) = c.latency.corrected.get(pname).filter(|v| v.is_finite()) {
                            by_p.entry(pname).or_default().push((x, v / 1000.0));
                        }
                    }
                }
                SweepMeasure::SidecarCpu => {
                    let Some(st) = c.sidecar.as_ref().and_then(|s| s.cpu_stat) else {
                        continue;
                    };
                    if c.duration_s <= 0.0 {
                        continue;
                    }
                    let cores = st.usage_usec as f64 / 1e6 / c.duration_s;
                    groups
                        .entry(g)
                        .or_default()
                        .entry("cores")
                        .or_default()
                        .push((x, cores));
                }
            }
        }
        for by in groups.values_mut() {
            for pts in by.values_mut() {
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
        if groups.is_empty() {
            return None;
        }
        Some(SweepChart {
            dim,
            measure,
            groups,
            left_out,
        })
    }
}

impl Chart for SweepChart {
    fn id(&self) -> String {
        match (self.measure, self.dim) {
            (SweepMeasure::Latency, Dimension::Connections) => "latency-vs-connections".into(),
            (SweepMeasure::Latency, Dimension::Rate) => "latency-vs-rate".into(),
            (SweepMeasure::SidecarCpu, Dimension::Connections) => {
                "sidecar-cpu-vs-connections".into()
            }
            (SweepMeasure::SidecarCpu, Dimension::Rate) => "sidecar-cpu-vs-rate".into(),
        }
    }

    fn title(&self) -> String {
        let over = match self.dim {
            Dimension::Connections => "connections",
            Dimension::Rate => "target rate",
        };
        match self.measure {
            SweepMeasure::Latency => format!("Latency (p50, p90, p99) vs {over}"),
            SweepMeasure::SidecarCpu => format!("Sidecar CPU vs {over}"),
        }
    }

    fn series_labels(&self) -> Vec<String> {
        self.groups
            .iter()
            .flat_map(|(g, by)| {
                by.keys().map(move |k| match self.measure {
                    SweepMeasure::Latency => format!("{g} {k}"),
                    SweepMeasure::SidecarCpu => format!("{g} sidecar cores"),
                })
            })
            .collect()
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let all = || self.groups.values().flat_map(|b| b.values().flatten());
        let x_max = all().map(|p| p.0).fold(0.0, f64::max);
        let y_max = all().map(|p| p.1).fold(0.0, f64::max);
        let x_desc = match self.dim {
            Dimension::Connections => "connections",
            Dimension::Rate => "target rate (requests/s)",
        };
        let y_desc = match self.measure {
            SweepMeasure::Latency => "corrected latency (ms)",
            SweepMeasure::SidecarCpu => "sidecar CPU (cores: usage / measured window)",
        };
        let mut chart = frame(area, &self.title(), 72)
            .build_cartesian_2d(0.0..headroom(x_max)?, 0.0..headroom(y_max)?)
            .map_err(pe)?;
        draw_mesh(
            chart
                .configure_mesh()
                .x_label_formatter(&|v: &f64| format!("{v:.0}"))
                .x_desc(x_desc)
                .y_desc(y_desc),
            14,
        )?;
        for (gi, (g, by)) in self.groups.iter().enumerate() {
            let c = color(gi);
            for (k, pts) in by {
                let (width, dashed) = PERCENTILES
                    .iter()
                    .find(|(p, _, _)| p == k)
                    .map_or((2, false), |&(_, w, d)| (w, d));
                let label = match self.measure {
                    SweepMeasure::Latency => format!("{g} {k}"),
                    SweepMeasure::SidecarCpu => format!("{g} sidecar cores"),
                };
                draw_line(&mut chart, pts, c.stroke_width(width), label, dashed)?;
                chart
                    .draw_series(
                        pts.iter()
                            .map(|&p| Circle::new(p, 2 + width as i32, c.filled())),
                    )
                    .map_err(pe)?;
            }
        }
        draw_legend(&mut chart, 13, SeriesLabelPosition::UpperLeft)
    }
}
