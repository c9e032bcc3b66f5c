//! Chart 1: latency by percentile of one cell on the "nines" scale
//! (x = -log10(1 - q): 0 %, 50 %, 90 %, 99 %, ... 99.999 %), corrected and uncorrected,
//! as HdrHistogram's percentile plotter draws it.

use hdrhistogram::Histogram;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    color, draw_legend, draw_line, draw_mesh, frame, headroom, pe, Chart, Ticked, PALETTE,
};
use crate::format::slug;
use crate::load::LoadedCell;

/// Rightmost point of the nines axis: 99.999 %.
pub const MAX_NINES: f64 = 5.0;
/// Tick positions: 0 %, 50 %, 90 %, 99 %, 99.9 %, 99.99 %, 99.999 %.
pub const TICKS: [f64; 7] = [0.0, std::f64::consts::LOG10_2, 1.0, 2.0, 3.0, 4.0, 5.0];

/// x position of quantile `q` on the nines scale, capped at 99.999 %.
pub fn nines(q: f64) -> f64 {
    if q >= 1.0 {
        return MAX_NINES;
    }
    (-(1.0 - q).log10()).clamp(0.0, MAX_NINES)
}

/// Label of a nines-scale position ("99.9%").
pub fn nines_label(x: f64) -> String {
    let pct = (1.0 - 10f64.powf(-x)) * 100.0;
    let s = format!("{pct:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Points (nines x, latency ms) of a histogram of µs values.
pub fn points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = h
        .iter_quantiles(5)
        .map(|v| {
            (
                nines(v.quantile_iterated_to()),
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .collect();
    pts.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    pts
}

pub struct PercentileChart {
    pub index: usize,
    pub cell_id: String,
    pub corrected: Vec<(f64, f64)>,
    pub uncorrected: Vec<(f64, f64)>,
    /// True when the curve comes from run.json's summary percentiles (no interval log).
    pub from_summary: bool,
}

impl PercentileChart {
    pub fn from_cell(index: usize, cell: &LoadedCell) -> Self {
        let summary = |p: &meshbench_schema::Percentiles| {
            if p.count == 0 {
                return Vec::new();
            }
            [
                (0.0, p.min_us),
                (0.5, p.p50_us),
                (0.9, p.p90_us),
                (0.99, p.p99_us),
                (0.999, p.p999_us),
                (0.9999, p.p9999_us),
                (1.0, p.max_us),
            ]
            .iter()
            .map(|&(q, v)| (nines(q), v / 1000.0))
            .collect()
        };
        let lat = &cell.result.latency;
        match (&cell.corrected, &cell.uncorrected) {
            (Some(c), u) => PercentileChart {
                index,
                cell_id: cell.result.id.clone(),
                corrected: points(c),
                uncorrected: u.as_ref().map(points).unwrap_or_default(),
                from_summary: false,
            },
            (None, _) => PercentileChart {
                index,
                cell_id: cell.result.id.clone(),
                corrected: summary(&lat.corrected),
                uncorrected: summary(&lat.uncorrected),
                from_summary: true,
            },
        }
    }
}

const CORRECTED: &str = "corrected (from intended send time)";
const UNCORRECTED: &str = "uncorrected (service time)";

impl Chart for PercentileChart {
    fn id(&self) -> String {
        format!("percentiles-{:02}-{}", self.index + 1, slug(&self.cell_id))
    }

    fn title(&self) -> String {
        let src = if self.from_summary {
            " (summary points)"
        } else {
            ""
        };
        format!("Latency by percentile — {}{src}", self.cell_id)
    }

    fn series_labels(&self) -> Vec<String> {
        let mut v = vec![CORRECTED.to_string()];
        if !self.uncorrected.is_empty() {
            v.push(UNCORRECTED.to_string());
        }
        v
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let max = self
            .corrected
            .iter()
            .chain(&self.uncorrected)
            .map(|p| p.1)
            .fold(0.0, f64::max);
        let mut chart = nines_chart(area, &self.title(), max)?;
        let c = color(0).stroke_width(3);
        draw_line(&mut chart, &self.corrected, c, CORRECTED, false)?;
        if !self.uncorrected.is_empty() {
            let u = color(1).stroke_width(2);
            draw_line(&mut chart, &self.uncorrected, u, UNCORRECTED, false)?;
        }
        draw_legend(&mut chart, 14, SeriesLabelPosition::UpperLeft)
    }
}

/// A chart with the nines x axis (0 % .. 99.999 %) and latency in ms up to `max`.
fn nines_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    max: f64,
) -> Result<ChartContext<'a, DB, Cartesian2d<Ticked, RangedCoordf64>>, String> {
    let mut chart = frame(area, title, 72)
        .margin_right(48)
        .build_cartesian_2d(
            Ticked::new(0.0..MAX_NINES, TICKS.to_vec()),
            0f64..headroom(max)?,
        )
        .map_err(pe)?;
    draw_mesh(
        chart
            .configure_mesh()
            .x_label_formatter(&|x| nines_label(*x))
            .x_desc("percentile")
            .y_desc("latency (ms)"),
        14,
    )?;
    Ok(chart)
}

/// All cells' corrected curves on one nines-scale chart (runs with more than one cell).
pub struct PercentileOverlay {
    /// (cell id, corrected curve).
    pub cells: Vec<(String, Vec<(f64, f64)>)>,
}

impl PercentileOverlay {
    pub fn from_cells(cells: &[LoadedCell]) -> Option<Self> {
        if cells.len() < 2 {
            return None;
        }
        let curves: Vec<(String, Vec<(f64, f64)>)> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    c.result.id.clone(),
                    PercentileChart::from_cell(i, c).corrected,
                )
            })
            .filter(|(_, pts)| !pts.is_empty())
            .collect();
        (curves.len() >= 2).then_some(PercentileOverlay { cells: curves })
    }
}

impl Chart for PercentileOverlay {
    fn id(&self) -> String {
        "percentiles-all-cells".into()
    }

    fn title(&self) -> String {
        "Latency by percentile, every cell (corrected)".into()
    }

    fn series_labels(&self) -> Vec<String> {
        self.cells.iter().map(|(id, _)| id.clone()).collect()
    }

    fn size(&self) -> (u32, u32) {
        (960, 600)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let max = self
            .cells
            .iter()
            .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        let mut chart = nines_chart(area, &self.title(), max)?;
        for (i, (id, pts)) in self.cells.iter().enumerate() {
            // past the palette, curves repeat its colours dashed
            let style = color(i).stroke_width(2);
            draw_line(&mut chart, pts, style, id.as_str(), i >= PALETTE.len())?;
        }
        draw_legend(&mut chart, 13, SeriesLabelPosition::UpperLeft)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_scale_positions() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(1.0), MAX_NINES);
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(TICKS[1]), "50%");
        assert_eq!(nines_label(0.0), "0%");
    }

    #[test]
    fn curve_follows_the_histogram() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 10).unwrap();
        }
        let pts = points(&h);
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let last = pts.last().unwrap();
        assert!((last.1 - h.max() as f64 / 1000.0).abs() < 1e-9);
    }
}
