//! The generator's own lateness beside the latency it measured: corrected p99 per second
//! (left axis, ms) and send lag p99 per second (right axis, µs), for one open-loop cell.
//! When the lag line rises with the p99 line, the host, not the target, made that second
//! slow.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    color, draw_legend, draw_line, draw_mesh, draw_right_axis, frame, headroom, pe, Chart,
};
use crate::format::slug;
use crate::load::LoadedCell;

pub struct LagChart {
    pub index: usize,
    pub cell_id: String,
    /// (second, corrected p99 ms).
    pub p99: Vec<(f64, f64)>,
    /// (second, send lag p99 µs).
    pub lag: Vec<(f64, f64)>,
    /// The cell's lag limit, µs (drawn as a line), when known.
    pub limit_us: Option<f64>,
}

const P99: &str = "p99 per second, corrected (ms, left axis)";
const LAG: &str = "send lag p99 per second (µs, right axis)";
const LIMIT: &str = "send lag limit";

impl LagChart {
    /// `None` for a cell without send-lag intervals (closed loop, or an older log).
    pub fn from_cell(index: usize, cell: &LoadedCell) -> Option<Self> {
        if cell.seconds_lag.is_empty() {
            return None;
        }
        Some(LagChart {
            index,
            cell_id: cell.result.id.clone(),
            p99: cell
                .seconds
                .iter()
                .map(|s| (s.t_s, s.p99_us / 1000.0))
                .collect(),
            lag: cell.seconds_lag.iter().map(|s| (s.t_s, s.p99_us)).collect(),
            limit_us: cell.result.generator.as_ref().and_then(|g| g.lag_limit_us),
        })
    }
}

impl Chart for LagChart {
    fn id(&self) -> String {
        format!("send-lag-{:02}-{}", self.index + 1, slug(&self.cell_id))
    }

    fn title(&self) -> String {
        format!(
            "p99 and the generator's send lag per second — {}",
            self.cell_id
        )
    }

    fn series_labels(&self) -> Vec<String> {
        let mut v = vec![P99.to_string(), LAG.to_string()];
        if self.limit_us.is_some() {
            v.push(LIMIT.to_string());
        }
        v
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let t_max = self
            .p99
            .iter()
            .chain(&self.lag)
            .map(|p| p.0)
            .fold(0.0, f64::max)
            + 1.0;
        let y_max = self.p99.iter().map(|p| p.1).fold(0.0, f64::max);
        let lag_max = self
            .lag
            .iter()
            .map(|p| p.1)
            .chain(self.limit_us)
            .fold(0.0, f64::max);
        let mut chart = frame(area, &self.title(), 72)
            .right_y_label_area_size(72)
            .build_cartesian_2d(0f64..t_max, 0f64..headroom(y_max)?)
            .map_err(pe)?
            .set_secondary_coord(0f64..t_max, 0f64..headroom(lag_max.max(1.0))?);
        draw_mesh(
            chart
                .configure_mesh()
                .x_desc("time in measured window (s)")
                .y_desc("p99 latency (ms)"),
            14,
        )?;
        draw_line(&mut chart, &self.p99, color(0).stroke_width(2), P99, false)?;
        draw_right_axis(&mut chart.configure_secondary_axes(), "send lag p99 (µs)")?;
        let l = color(2);
        chart
            .draw_secondary_series(LineSeries::new(self.lag.clone(), l.stroke_width(2)))
            .map_err(pe)?
            .label(LAG)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], l.stroke_width(2)));
        if let Some(lim) = self.limit_us {
            let c = color(3);
            chart
                .draw_secondary_series(DashedLineSeries::new(
                    vec![(0.0, lim), (t_max, lim)],
                    5,
                    3,
                    c.stroke_width(1),
                ))
                .map_err(pe)?
                .label(LIMIT)
                .legend(super::legend_dashes(c.stroke_width(1)));
        }
        draw_legend(&mut chart, 14, SeriesLabelPosition::UpperRight)
    }
}
