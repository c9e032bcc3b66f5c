//! Chart 5: failed requests by error class for each cell; drawn only when a cell had
//! errors.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    category_labels, color, draw_legend, draw_mesh, frame, headroom, legend_box, pe, Chart, Ticked,
};
use crate::load::LoadedRun;

pub struct ErrorsChart {
    pub cells: Vec<String>,
    /// (class, count per cell), only classes with at least one error.
    pub classes: Vec<(&'static str, Vec<u64>)>,
}

impl ErrorsChart {
    pub fn from_run(run: &LoadedRun) -> Option<Self> {
        let cells: Vec<&meshbench_schema::CellResult> =
            run.run.cells.iter().filter(|c| c.measured()).collect();
        if cells.iter().all(|c| c.errors.total() == 0) {
            return None;
        }
        let mut classes = Vec::new();
        for (k, (name, _)) in meshbench_schema::ErrorCounts::default()
            .by_class()
            .iter()
            .enumerate()
        {
            let counts: Vec<u64> = cells.iter().map(|c| c.errors.by_class()[k].1).collect();
            if counts.iter().any(|&n| n > 0) {
                classes.push((*name, counts));
            }
        }
        Some(ErrorsChart {
            cells: cells.iter().map(|c| c.id.clone()).collect(),
            classes,
        })
    }
}

impl Chart for ErrorsChart {
    fn id(&self) -> String {
        "errors-by-class".into()
    }

    fn title(&self) -> String {
        "Failed requests by error class".into()
    }

    fn series_labels(&self) -> Vec<String> {
        self.classes.iter().map(|(c, _)| c.to_string()).collect()
    }

    fn size(&self) -> (u32, u32) {
        (960, (160 + 36 * self.cells.len()).max(360) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        // horizontal bars: one band per cell (first cell on top), one bar per class
        let n = self.cells.len();
        let k = self.classes.len().max(1);
        let max = self
            .classes
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .max()
            .unwrap_or(0) as f64;
        let longest = self
            .cells
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(4);
        let mut names = self.cells.clone();
        names.reverse();
        let y_fmt = category_labels(names);
        let mut chart = frame(area, &self.title(), (longest as u32 * 8 + 24).min(420))
            .margin_right(32)
            .build_cartesian_2d(0f64..headroom(max)?, Ticked::categories(n))
            .map_err(pe)?;
        draw_mesh(
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_label_formatter(&y_fmt)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .x_desc("failed requests"),
            13,
        )?;
        let height = 0.8 / k as f64;
        for (j, (class, counts)) in self.classes.iter().enumerate() {
            let c = color(j + 3);
            chart
                .draw_series(
                    counts
                        .iter()
                        .enumerate()
                        .filter(|(_, &v)| v > 0)
                        .map(|(i, &v)| {
                            let band = (n - 1 - i) as f64;
                            let y0 = band + 0.4 - (j + 1) as f64 * height;
                            Rectangle::new([(0.0, y0), (v as f64, y0 + height)], c.filled())
                        }),
                )
                .map_err(pe)?
                .label(*class)
                .legend(legend_box(c));
        }
        draw_legend(&mut chart, 14, SeriesLabelPosition::UpperRight)
    }
}
