//! Chart 4: requests per subset of one cell against the counts its weights expect, with
//! the verdict of the canary-split check.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    category_labels, color, draw_legend, draw_mesh, frame, half_bar, headroom, legend_box, pe,
    Chart, Ticked,
};
use crate::format::slug;
use crate::load::LoadedCell;
use meshbench_schema::{CheckStatus, RunResult};

/// Name of the check whose verdict the chart shows.
pub const SPLIT_CHECK: &str = "canary_split";

pub struct SplitChart {
    pub index: usize,
    pub cell_id: String,
    /// (subset, observed count, expected count when weights were declared).
    pub subsets: Vec<(String, u64, Option<f64>)>,
    /// "passed", "FAILED", "skipped" or "no check".
    pub verdict: String,
}

pub(crate) fn status_word(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Passed => "passed",
        CheckStatus::Failed => "FAILED",
        CheckStatus::Skipped => "skipped",
    }
}

impl SplitChart {
    pub fn from_cell(index: usize, cell: &LoadedCell, run: &RunResult) -> Option<Self> {
        let c = &cell.result;
        if c.subsets.is_empty() {
            return None;
        }
        // as f64: counts from run.json may be anything, a u64 sum could overflow
        let total: f64 = c.subsets.iter().map(|s| s.count as f64).sum();
        let check = c
            .checks
            .iter()
            .chain(&run.checks)
            .find(|k| k.name == SPLIT_CHECK);
        Some(SplitChart {
            index,
            cell_id: c.id.clone(),
            subsets: c
                .subsets
                .iter()
                .map(|s| (s.name.clone(), s.count, s.expected_share.map(|e| e * total)))
                .collect(),
            verdict: check
                .map(|k| status_word(k.status).to_string())
                .unwrap_or_else(|| "no check".into()),
        })
    }
}

const OBSERVED: &str = "observed requests";
const EXPECTED: &str = "expected from weights";

impl Chart for SplitChart {
    fn id(&self) -> String {
        format!("subsets-{:02}-{}", self.index + 1, slug(&self.cell_id))
    }

    fn title(&self) -> String {
        format!(
            "Requests per subset — {} — {SPLIT_CHECK}: {}",
            self.cell_id, self.verdict
        )
    }

    fn series_labels(&self) -> Vec<String> {
        let mut v = vec![OBSERVED.to_string()];
        if self.subsets.iter().any(|s| s.2.is_some()) {
            v.push(EXPECTED.to_string());
        }
        v
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let n = self.subsets.len();
        let max = self
            .subsets
            .iter()
            .map(|s| (s.1 as f64).max(s.2.unwrap_or(0.0)))
            .fold(0.0, f64::max);
        let names: Vec<String> = self.subsets.iter().map(|s| s.0.clone()).collect();
        let x_fmt = category_labels(names);
        let mut chart = frame(area, &self.title(), 80)
            .build_cartesian_2d(Ticked::categories(n), 0f64..headroom(max)?)
            .map_err(pe)?;
        draw_mesh(
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&|v| format!("{v:.0}"))
                .x_desc("subset")
                .y_desc("requests"),
            14,
        )?;
        let (o, e) = (color(0), color(7));
        chart
            .draw_series(
                self.subsets
                    .iter()
                    .enumerate()
                    .map(|(i, s)| half_bar(i, true, s.1 as f64, o)),
            )
            .map_err(pe)?
            .label(OBSERVED)
            .legend(legend_box(o));
        if self.subsets.iter().any(|s| s.2.is_some()) {
            chart
                .draw_series(
                    self.subsets
                        .iter()
                        .enumerate()
                        .filter_map(|(i, s)| s.2.map(|v| half_bar(i, false, v, e))),
                )
                .map_err(pe)?
                .label(EXPECTED)
                .legend(legend_box(e));
        }
        draw_legend(&mut chart, 14, SeriesLabelPosition::UpperRight)
    }
}
