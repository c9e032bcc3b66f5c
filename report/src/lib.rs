//! `report`: plots, a self-contained HTML report and a markdown summary of a meshbench run;
//! run comparison, noise-aware CI regression gates, interval-log merging and fleet tables
//! of probe reports.
//!
//! Everything here reads through `meshbench-schema` (run.json, probe reports) and the
//! standard HdrHistogram interval logs next to run.json; every output is written
//! atomically. The library keeps no global state except the embedded font, registered
//! once with plotters.
#![forbid(unsafe_code)]

pub mod canary;
pub mod capacity;
pub mod cli;
pub mod compare;
pub mod error;
pub mod fleet;
pub mod format;
pub mod gate;
pub mod html;
pub mod junit;
pub mod load;
pub mod markdown;
pub mod merge;
pub mod meshcost;
pub mod plot;
pub mod runmerge;
pub mod stats;

use std::path::{Path, PathBuf};

pub use error::ReportError;

/// File name of the HTML report inside the run directory.
pub const REPORT_HTML: &str = "report.html";
/// File name of the markdown summary inside the run directory.
pub const SUMMARY_MD: &str = "summary.md";
/// Directory (inside the run directory) holding the charts.
pub const PLOTS_DIR: &str = "plots";

/// What [`render`] wrote.
#[derive(Debug, Clone)]
pub struct RenderOutput {
    pub report_html: PathBuf,
    pub summary_md: PathBuf,
    /// Every chart, as written (SVG and PNG of each).
    pub plots: Vec<PathBuf>,
    /// Charts that were not drawn, with the reason (also shown in the report).
    pub not_drawn: Vec<String>,
    /// One sentence per capacity search (also in the report and summary.md).
    pub capacity: Vec<String>,
}

/// Render the report of the run in `run_dir`: `report.html`, `summary.md` and
/// `plots/<chart>.{svg,png}`, all written into the run directory, each file atomically.
///
/// Everything is read and checked before anything is written, so bad input leaves the
/// directory as it was.
pub fn render(run_dir: &Path) -> Result<RenderOutput, ReportError> {
    let run = load::load_run(run_dir)?;
    let charts = plot::build_charts(&run);
    let rendered = plot::render_all(&charts, &run_dir.join(PLOTS_DIR))?;
    let html = html::report_html(&run, &rendered);
    let summary = markdown::summary_md(&run, &rendered);
    let report_html = run_dir.join(REPORT_HTML);
    let summary_md = run_dir.join(SUMMARY_MD);
    meshbench_schema::write_atomic(&summary_md, summary.as_bytes())?;
    meshbench_schema::write_atomic(&report_html, html.as_bytes())?;
    Ok(RenderOutput {
        report_html,
        summary_md,
        plots: rendered
            .charts
            .iter()
            .flat_map(|c| [c.svg_path.clone(), c.png_path.clone()])
            .collect(),
        not_drawn: rendered.not_drawn.clone(),
        capacity: capacity::sentences(&run.run),
    })
}
