//! Chart 3: p99 per second over the measured window of one cell (from its interval log),
//! with the sidecar's CPU throttling per second on a second axis where it was captured.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    color, draw_legend, draw_line, draw_mesh, draw_right_axis, frame, headroom, pe, Chart,
};
use crate::format::slug;
use crate::load::LoadedCell;

pub struct TimelineChart {
    pub index: usize,
    pub cell_id: String,
    /// (second, p99 ms), corrected.
    pub p99: Vec<(f64, f64)>,
    /// (second, p99 ms), uncorrected.
    pub p99_uncorrected: Vec<(f64, f64)>,
    /// (second, throttled ms in that second); empty when not captured.
    pub throttled: Vec<(f64, f64)>,
}

const P99: &str = "p99 per second, corrected";
const P99_U: &str = "p99 per second, uncorrected";
const THROTTLED: &str = "sidecar CPU throttled (ms per s, right axis)";

impl TimelineChart {
    pub fn from_cell(index: usize, cell: &LoadedCell) -> Result<Self, String> {
        if cell.seconds.is_empty() {
            return Err(format!(
                "p99 over time for cell '{}': not drawn, {}",
                cell.result.id,
                if cell.hlog_path.is_some() {
                    "its interval log has no second with a completed request"
                } else {
                    "it has no interval log"
                }
            ));
        }
        let throttled = cell
            .result
            .sidecar
            .as_ref()
            .map(|s| {
                s.throttled_usec_per_second
                    .iter()
                    .enumerate()
                    .map(|(i, &us)| (i as f64, us as f64 / 1000.0))
                    .collect()
            })
            .unwrap_or_default();
        Ok(TimelineChart {
            index,
            cell_id: cell.result.id.clone(),
            p99: cell
                .seconds
                .iter()
                .map(|s| (s.t_s, s.p99_us / 1000.0))
                .collect(),
            p99_uncorrected: cell
                .seconds_uncorrected
                .iter()
                .map(|s| (s.t_s, s.p99_us / 1000.0))
                .collect(),
            throttled,
        })
    }
}

impl Chart for TimelineChart {
    fn id(&self) -> String {
        format!(
            "p99-over-time-{:02}-{}",
            self.index + 1,
            slug(&self.cell_id)
        )
    }

    fn title(&self) -> String {
        format!("p99 per second — {}", self.cell_id)
    }

    fn series_labels(&self) -> Vec<String> {
        let mut v = vec![P99.to_string()];
        if !self.p99_uncorrected.is_empty() {
            v.push(P99_U.to_string());
        }
        if !self.throttled.is_empty() {
            v.push(THROTTLED.to_string());
        }
        v
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let t_max = self
            .p99
            .iter()
            .chain(&self.throttled)
            .map(|p| p.0)
            .fold(0.0, f64::max)
            + 1.0;
        let y_max = self
            .p99
            .iter()
            .chain(&self.p99_uncorrected)
            .map(|p| p.1)
            .fold(0.0, f64::max);
        let thr_max = self.throttled.iter().map(|p| p.1).fold(0.0, f64::max);
        let mut chart = frame(area, &self.title(), 72)
            .right_y_label_area_size(if self.throttled.is_empty() { 0 } else { 72 })
            .build_cartesian_2d(0f64..t_max, 0f64..headroom(y_max)?)
            .map_err(pe)?
            .set_secondary_coord(0f64..t_max, 0f64..headroom(thr_max.max(1.0))?);
        draw_mesh(
            chart
                .configure_mesh()
                .x_desc("time in measured window (s)")
                .y_desc("p99 latency (ms)"),
            14,
        )?;
        draw_line(&mut chart, &self.p99, color(0).stroke_width(2), P99, false)?;
        if !self.p99_uncorrected.is_empty() {
            let u = color(1).stroke_width(1);
            draw_line(&mut chart, &self.p99_uncorrected, u, P99_U, false)?;
        }
        if !self.throttled.is_empty() {
            let t = color(3);
            draw_right_axis(
                &mut chart.configure_secondary_axes(),
                "throttled (ms per s)",
            )?;
            chart
                .draw_secondary_series(DashedLineSeries::new(
                    self.throttled.clone(),
                    5,
                    3,
                    t.stroke_width(2),
                ))
                .map_err(pe)?
                .label(THROTTLED)
                .legend(super::legend_dashes(t.stroke_width(2)));
        }
        draw_legend(&mut chart, 14, SeriesLabelPosition::UpperRight)
    }
}
