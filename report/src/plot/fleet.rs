//! The fleet chart: CPU steal (%) and fdatasync p99 (ms) per node, side by side, from
//! probe reports. A node without one of the measurements has no bar for it.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    category_labels, color, draw_legend, draw_mesh, draw_right_axis, frame, half_bar, headroom,
    legend_box, pe, Chart, Ticked, FONT,
};

pub struct FleetChart {
    /// (node, steal %, fsync p99 ms).
    pub nodes: Vec<(String, Option<f64>, Option<f64>)>,
}

pub const STEAL: &str = "CPU steal (%, left axis)";
pub const FSYNC: &str = "fdatasync p99 (ms, right axis)";

impl Chart for FleetChart {
    fn id(&self) -> String {
        "fleet".into()
    }

    fn title(&self) -> String {
        "CPU steal and fdatasync p99 per node".into()
    }

    fn series_labels(&self) -> Vec<String> {
        vec![STEAL.into(), FSYNC.into()]
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let n = self.nodes.len().max(1);
        let steal_max = self.nodes.iter().filter_map(|x| x.1).fold(0.0, f64::max);
        let fsync_max = self.nodes.iter().filter_map(|x| x.2).fold(0.0, f64::max);
        let names: Vec<String> = self.nodes.iter().map(|x| x.0.clone()).collect();
        let x_fmt = category_labels(names);
        let x_range = || Ticked::categories(n);
        let mut chart = frame(area, &self.title(), 72)
            .right_y_label_area_size(72)
            .build_cartesian_2d(x_range(), 0f64..headroom(steal_max.max(2.5))?)
            .map_err(pe)?
            .set_secondary_coord(x_range(), 0f64..headroom(fsync_max.max(1.0))?);
        draw_mesh(
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_label_formatter(&x_fmt)
                .x_desc("node")
                .y_desc("CPU steal (%)"),
            14,
        )?;
        draw_right_axis(&mut chart.configure_secondary_axes(), "fdatasync p99 (ms)")?;
        let (s, f) = (color(0), color(1));
        chart
            .draw_series(
                self.nodes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, x)| x.1.map(|v| half_bar(i, true, v, s))),
            )
            .map_err(pe)?
            .label(STEAL)
            .legend(legend_box(s));
        chart
            .draw_secondary_series(
                self.nodes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, x)| x.2.map(|v| half_bar(i, false, v, f))),
            )
            .map_err(pe)?
            .label(FSYNC)
            .legend(legend_box(f));
        // a measurement the report does not have is marked, not left blank
        let na = TextStyle::from((FONT, 13).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        let steal_top = headroom(steal_max.max(2.5))?;
        chart
            .draw_series(self.nodes.iter().enumerate().flat_map(|(i, x)| {
                let c = i as f64;
                let mut v = Vec::new();
                if x.1.is_none() {
                    v.push(Text::new("n/a", (c - 0.175, steal_top * 0.02), na.clone()));
                }
                if x.2.is_none() {
                    v.push(Text::new("n/a", (c + 0.175, steal_top * 0.02), na.clone()));
                }
                v
            }))
            .map_err(pe)?;
        draw_legend(&mut chart, 14, SeriesLabelPosition::UpperLeft)
    }
}
