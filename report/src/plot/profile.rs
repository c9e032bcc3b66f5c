//! A rate-profile cell (`settings.profile`: a ramp or steps) against the rate it was
//! offered, second by second (`Curve::offered(s, s + 1)` of the measured window):
//!
//! - `profile-latency-NN-<cell>`: corrected p50 and p99 of each second (from the cell's
//!   interval log);
//! - `profile-sidecar-NN-<cell>`: the sidecars' CPU in each second (cores =
//!   `cpu_usec_per_second` / 1e6) and the share of that second they were throttled
//!   (`throttled_usec_per_second` / 1e6), when the cell captured them;
//! - `profile-errors-NN-<cell>`: the failed requests of each second (the count of the
//!   interval log's `failed` tag) and their share of that second's completed requests
//!   (failed / (failed + successes of the `corrected` tag)). Logs written before the
//!   `failed` tag existed have no such chart, and the report says why.
//!
//! Seconds after the profile's end (a lagging target extends the window) have no offered
//! rate and are left out.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{color, draw_legend, draw_mesh, draw_right_axis, frame, headroom, pe, Chart};
use crate::format::slug;
use crate::load::LoadedCell;
use meshbench_schema::profile::Curve;

/// Which of the two charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    Latency,
    Sidecar,
    Errors,
}

#[derive(Debug)]
pub struct ProfileChart {
    pub kind: ProfileKind,
    pub index: usize,
    pub cell_id: String,
    /// The profile as said ("ramp 100→2000/s over 30s").
    pub profile: String,
    /// Latency: (offered req/s, p50 ms); sidecar: (offered req/s, cores); errors:
    /// (offered req/s, failed requests in the second).
    pub a: Vec<(f64, f64)>,
    /// Latency: (offered req/s, p99 ms); sidecar: (offered req/s, throttled share 0..);
    /// errors: (offered req/s, failed share of the second's completed requests, 0..1).
    pub b: Vec<(f64, f64)>,
    /// The sidecar figures are the sum over more than one sidecar.
    pub summed: bool,
}

pub const P50: &str = "p50 of the second, corrected";
pub const P99: &str = "p99 of the second, corrected";
pub const CORES: &str = "sidecar CPU (cores, left axis)";
pub const THROTTLED: &str = "throttled share of the second (throttled µs / 1 s, right axis)";
pub const FAILED: &str = "failed requests in the second (left axis)";
pub const FAILED_SHARE: &str = "failed share of the requests completed in that second (right axis)";

/// Why `what` vs offered rate is not drawn for `cell`: `why` when it has an interval log.
fn not_drawn(what: &str, cell: &LoadedCell, why: &str) -> String {
    format!(
        "{what} vs offered rate for cell '{}': not drawn, {}",
        cell.result.id,
        if cell.hlog_path.is_some() {
            why
        } else {
            "it has no interval log"
        }
    )
}

/// The offered rate of second `s` of the window, when the profile covers it.
fn offered(curve: &Curve, s: f64) -> Option<f64> {
    (s >= 0.0 && s + 1.0 <= curve.end_s() + 1e-9).then(|| curve.offered(s, s + 1.0))
}

impl ProfileChart {
    /// The latency chart of a profile cell, or why it is not drawn; `Ok(None)` for a cell
    /// without a profile.
    pub fn latency(index: usize, cell: &LoadedCell) -> Result<Option<Self>, String> {
        let Some(p) = &cell.result.settings.profile else {
            return Ok(None);
        };
        let curve = p.curve();
        let mut a = Vec::new();
        let mut b = Vec::new();
        for s in &cell.seconds {
            let Some(x) = offered(&curve, s.t_s.round()) else {
                continue;
            };
            a.push((x, s.p50_us / 1000.0));
            b.push((x, s.p99_us / 1000.0));
        }
        if a.is_empty() {
            return Err(not_drawn(
                "latency",
                cell,
                "its interval log has no second with a completed request inside the profile",
            ));
        }
        Ok(Some(ProfileChart {
            kind: ProfileKind::Latency,
            index,
            cell_id: cell.result.id.clone(),
            profile: p.label(),
            a,
            b,
            summed: false,
        }))
    }

    /// The sidecar chart of a profile cell; `None` without a profile or without per-second
    /// sidecar figures.
    pub fn sidecar(index: usize, cell: &LoadedCell) -> Option<Self> {
        let p = cell.result.settings.profile.as_ref()?;
        let sc = cell.result.sidecar.as_ref()?;
        let curve = p.curve();
        let per = |v: &[u64]| -> Vec<(f64, f64)> {
            v.iter()
                .enumerate()
                .filter_map(|(i, &us)| Some((offered(&curve, i as f64)?, us as f64 / 1e6)))
                .collect()
        };
        let a = per(&sc.cpu_usec_per_second);
        let b = per(&sc.throttled_usec_per_second);
        if a.is_empty() && b.is_empty() {
            return None;
        }
        Some(ProfileChart {
            kind: ProfileKind::Sidecar,
            index,
            cell_id: cell.result.id.clone(),
            profile: p.label(),
            a,
            b,
            summed: cell.result.sidecars.len() > 1,
        })
    }

    /// The errors chart of a profile cell, or why it is not drawn; `Ok(None)` for a cell
    /// without a profile.
    pub fn errors(index: usize, cell: &LoadedCell) -> Result<Option<Self>, String> {
        let Some(p) = &cell.result.settings.profile else {
            return Ok(None);
        };
        let Some(per_second) = &cell.errors_per_second else {
            return Err(not_drawn(
                "errors",
                cell,
                "its interval log has no per-second error counts (no `failed` tag: written by an older loadgen)",
            ));
        };
        let curve = p.curve();
        let ok: std::collections::BTreeMap<i64, u64> = cell
            .seconds
            .iter()
            .map(|s| (s.t_s.round() as i64, s.stats.count))
            .collect();
        let mut a = Vec::new();
        let mut b = Vec::new();
        for &(t, failed) in per_second {
            let Some(x) = offered(&curve, t.round()) else {
                continue;
            };
            a.push((x, failed as f64));
            let done = failed + ok.get(&(t.round() as i64)).copied().unwrap_or(0);
            if done > 0 {
                b.push((x, failed as f64 / done as f64));
            }
        }
        if a.is_empty() {
            return Err(format!(
                "errors vs offered rate for cell '{}': not drawn, its interval log has no second inside the profile",
                cell.result.id
            ));
        }
        Ok(Some(ProfileChart {
            kind: ProfileKind::Errors,
            index,
            cell_id: cell.result.id.clone(),
            profile: p.label(),
            a,
            b,
            summed: false,
        }))
    }

    fn labels(&self) -> (&'static str, &'static str) {
        match self.kind {
            ProfileKind::Latency => (P50, P99),
            ProfileKind::Sidecar => (CORES, THROTTLED),
            ProfileKind::Errors => (FAILED, FAILED_SHARE),
        }
    }
}

impl Chart for ProfileChart {
    fn id(&self) -> String {
        let what = match self.kind {
            ProfileKind::Latency => "profile-latency",
            ProfileKind::Sidecar => "profile-sidecar",
            ProfileKind::Errors => "profile-errors",
        };
        format!("{what}-{:02}-{}", self.index + 1, slug(&self.cell_id))
    }

    fn title(&self) -> String {
        match self.kind {
            ProfileKind::Latency => format!(
                "Latency per second vs offered rate ({}) — {}",
                self.profile, self.cell_id
            ),
            ProfileKind::Sidecar => format!(
                "Sidecar CPU and throttling per second vs offered rate{} — {}",
                if self.summed {
                    " (summed over the sidecars)"
                } else {
                    ""
                },
                self.cell_id
            ),
            ProfileKind::Errors => format!(
                "Failed requests per second vs offered rate ({}) — {}",
                self.profile, self.cell_id
            ),
        }
    }

    fn series_labels(&self) -> Vec<String> {
        let (la, lb) = self.labels();
        let mut v = Vec::new();
        if !self.a.is_empty() {
            v.push(la.to_string());
        }
        if !self.b.is_empty() {
            v.push(lb.to_string());
        }
        v
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let x_max = self
            .a
            .iter()
            .chain(&self.b)
            .map(|p| p.0)
            .fold(0.0, f64::max);
        let x1 = headroom(x_max)?;
        let (la, lb) = self.labels();
        let (ca, cb) = (color(0), color(3));
        match self.kind {
            ProfileKind::Latency => {
                let y_max = self
                    .a
                    .iter()
                    .chain(&self.b)
                    .map(|p| p.1)
                    .fold(0.0, f64::max);
                let mut chart = frame(area, &self.title(), 72)
                    .build_cartesian_2d(0.0..x1, 0.0..headroom(y_max)?)
                    .map_err(pe)?;
                draw_mesh(
                    chart
                        .configure_mesh()
                        .x_label_formatter(&|v: &f64| format!("{v:.0}"))
                        .x_desc("offered rate in that second (requests/s)")
                        .y_desc("latency (ms)"),
                    14,
                )?;
                chart
                    .draw_series(self.a.iter().map(|&p| Circle::new(p, 3, ca.filled())))
                    .map_err(pe)?
                    .label(la)
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, ca.filled()));
                chart
                    .draw_series(
                        self.b
                            .iter()
                            .map(|&p| TriangleMarker::new(p, 5, cb.filled())),
                    )
                    .map_err(pe)?
                    .label(lb)
                    .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 5, cb.filled()));
                draw_legend(&mut chart, 13, SeriesLabelPosition::UpperLeft)
            }
            ProfileKind::Sidecar | ProfileKind::Errors => {
                let (y_desc, right_desc) = if self.kind == ProfileKind::Sidecar {
                    ("sidecar CPU (cores)", "throttled share of the second")
                } else {
                    (
                        "failed requests in the second",
                        "failed share of the second",
                    )
                };
                let cores = self.a.iter().map(|p| p.1).fold(0.0, f64::max);
                let share = self.b.iter().map(|p| p.1).fold(0.0, f64::max);
                let mut chart = frame(area, &self.title(), 72)
                    .right_y_label_area_size(if self.b.is_empty() { 0 } else { 72 })
                    .build_cartesian_2d(0.0..x1, 0.0..headroom(cores)?)
                    .map_err(pe)?
                    .set_secondary_coord(0.0..x1, 0.0..headroom(share.max(0.1))?);
                draw_mesh(
                    chart
                        .configure_mesh()
                        .x_label_formatter(&|v: &f64| format!("{v:.0}"))
                        .x_desc("offered rate in that second (requests/s)")
                        .y_desc(y_desc),
                    14,
                )?;
                if !self.a.is_empty() {
                    chart
                        .draw_series(self.a.iter().map(|&p| Circle::new(p, 3, ca.filled())))
                        .map_err(pe)?
                        .label(la)
                        .legend(move |(x, y)| Circle::new((x + 10, y), 4, ca.filled()));
                }
                if !self.b.is_empty() {
                    draw_right_axis(&mut chart.configure_secondary_axes(), right_desc)?;
                    chart
                        .draw_secondary_series(
                            self.b.iter().map(|&p| Cross::new(p, 4, cb.stroke_width(2))),
                        )
                        .map_err(pe)?
                        .label(lb)
                        .legend(move |(x, y)| Cross::new((x + 10, y), 4, cb.stroke_width(2)));
                }
                draw_legend(&mut chart, 13, SeriesLabelPosition::UpperLeft)
            }
        }
    }
}
