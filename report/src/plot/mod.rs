//! Charts: one file per chart behind the [`Chart`] trait, each drawn twice (SVG for the
//! HTML report, PNG for everything else) with plotters and an embedded font.
//!
//! Text is laid out with DejaVu Sans (embedded, registered once with plotters' ab_glyph
//! backend); SVG files name the family with a generic fallback and embed nothing.

pub mod capacity;
pub mod errors;
pub mod fleet;
pub mod lag;
pub mod matrix;
pub mod percentile;
pub mod profile;
pub mod search;
pub mod split;
pub mod sweep;
pub mod timeline;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::chart::{MeshStyle, SecondaryMeshStyle};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use crate::load::LoadedRun;
use crate::ReportError;

/// The font family every chart uses; SVG viewers fall back to any sans-serif font.
pub const FONT: &str = "DejaVu Sans, sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Register the embedded font with plotters (once per process).
pub fn ensure_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for name in [FONT, "sans-serif"] {
                for style in [FontStyle::Normal, FontStyle::Bold] {
                    plotters::style::register_font(name, style, FONT_BYTES)
                        .map_err(|_| "the embedded font does not load".to_string())?;
                }
            }
            Ok(())
        })
        .clone()
        .map_err(|msg| ReportError::Plot {
            chart: "(font)".into(),
            msg,
        })
}

/// Colours of series, in order (colour-blind friendly "Tableau 10").
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A linear f64 axis with fixed tick positions (category centres, the nines ticks).
/// Labels come from the chart's own label formatter.
#[derive(Clone)]
pub struct Ticked {
    pub range: std::ops::Range<f64>,
    pub ticks: Vec<f64>,
}

impl Ticked {
    pub fn new(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Self {
        Ticked { range, ticks }
    }

    /// Categories 0..n, each centred on its index.
    pub fn categories(n: usize) -> Self {
        let n = n.max(1);
        Ticked::new(-0.5..n as f64 - 0.5, (0..n).map(|i| i as f64).collect())
    }
}

impl plotters::coord::ranged1d::Ranged for Ticked {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let frac = if span > 0.0 {
            (value - self.range.start) / span
        } else {
            0.0
        };
        limit.0 + (frac * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// A label formatter for [`Ticked::categories`]: the name at each integer position.
pub(crate) fn category_labels(names: Vec<String>) -> impl Fn(&f64) -> String {
    move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    }
}

/// Turn any plotters error into the message of a [`ReportError::Plot`].
pub(crate) fn pe<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// One chart: what it is called, which series it shows, and how it draws itself.
pub trait Chart {
    /// File stem under `plots/`, unique within a report.
    fn id(&self) -> String;
    /// Human title (also the chart's caption).
    fn title(&self) -> String;
    /// The legend labels of the series it draws.
    fn series_labels(&self) -> Vec<String>;
    /// Pixel size.
    fn size(&self) -> (u32, u32) {
        (960, 540)
    }
    /// Draw onto a blank area.
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Every chart kind, so a report can hold a list of them.
pub enum AnyChart {
    Percentile(percentile::PercentileChart),
    PercentileOverlay(percentile::PercentileOverlay),
    Matrix(matrix::MatrixChart),
    Capacity(capacity::CapacityChart),
    SearchSteps(search::SearchStepsChart),
    Profile(profile::ProfileChart),
    Sweep(sweep::SweepChart),
    Timeline(timeline::TimelineChart),
    Lag(lag::LagChart),
    Split(split::SplitChart),
    Errors(errors::ErrorsChart),
    Fleet(fleet::FleetChart),
}

macro_rules! each {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            AnyChart::Percentile($c) => $e,
            AnyChart::PercentileOverlay($c) => $e,
            AnyChart::Matrix($c) => $e,
            AnyChart::Capacity($c) => $e,
            AnyChart::SearchSteps($c) => $e,
            AnyChart::Profile($c) => $e,
            AnyChart::Sweep($c) => $e,
            AnyChart::Timeline($c) => $e,
            AnyChart::Lag($c) => $e,
            AnyChart::Split($c) => $e,
            AnyChart::Errors($c) => $e,
            AnyChart::Fleet($c) => $e,
        }
    };
}

impl AnyChart {
    pub fn id(&self) -> String {
        each!(self, c => c.id())
    }
    pub fn title(&self) -> String {
        each!(self, c => c.title())
    }
    pub fn series_labels(&self) -> Vec<String> {
        each!(self, c => c.series_labels())
    }
    fn render(&self, dir: &Path) -> Result<RenderedChart, ReportError> {
        each!(self, c => render_chart(c, dir))
    }
}

/// Where a chart belongs in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// With the whole run (headline, errors).
    Run,
    /// In the section of the cell with this id.
    Cell(String),
}

/// Charts to draw for a run, plus the ones that were not drawn and why.
pub struct ChartSet {
    pub charts: Vec<(Placement, AnyChart)>,
    pub not_drawn: Vec<String>,
}

/// A chart as written to disk.
#[derive(Debug, Clone)]
pub struct RenderedChart {
    pub id: String,
    pub title: String,
    pub placement: Placement,
    pub series_labels: Vec<String>,
    /// The SVG document (for inlining).
    pub svg: String,
    pub svg_path: PathBuf,
    pub png_path: PathBuf,
}

/// Everything [`render_all`] produced.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub charts: Vec<RenderedChart>,
    pub not_drawn: Vec<String>,
}

/// Decide which charts a run gets.
pub fn build_charts(run: &LoadedRun) -> ChartSet {
    let mut set = ChartSet {
        charts: Vec::new(),
        not_drawn: Vec::new(),
    };
    // The headline: the capacity each search found, when the run searched; what the mesh
    // adds, when the run has mesh modes; then the absolute latency beside them.
    if let Some(c) = capacity::CapacityChart::from_run(run) {
        set.not_drawn.extend(c.left_out.iter().cloned());
        set.charts.push((Placement::Run, AnyChart::Capacity(c)));
    }
    let has_modes = run.run.cells.iter().any(|c| c.settings.mesh_mode.is_some());
    for measure in [matrix::Measure::Added, matrix::Measure::Absolute] {
        if measure == matrix::Measure::Added && !has_modes {
            continue;
        }
        match matrix::MatrixChart::from_run(run, measure) {
            Ok(c) => {
                set.not_drawn.extend(c.left_out.iter().cloned());
                set.charts.push((Placement::Run, AnyChart::Matrix(c)));
            }
            Err(why) => set.not_drawn.push(why),
        }
    }
    // Istio-harness sweeps: cells at constant rates that differ in connections or rate
    for dim in sweep::dimensions(run) {
        let mut measures = vec![sweep::SweepMeasure::Latency];
        if dim == sweep::Dimension::Rate {
            measures.push(sweep::SweepMeasure::SidecarCpu);
        }
        for m in measures {
            if let Some(c) = sweep::SweepChart::from_run(run, dim, m) {
                if m == sweep::SweepMeasure::Latency {
                    set.not_drawn.extend(c.left_out.iter().cloned());
                }
                set.charts.push((Placement::Run, AnyChart::Sweep(c)));
            }
        }
    }
    if let Some(c) = percentile::PercentileOverlay::from_cells(&run.cells) {
        set.charts
            .push((Placement::Run, AnyChart::PercentileOverlay(c)));
    }
    if let Some(c) = errors::ErrorsChart::from_run(run) {
        set.charts.push((Placement::Run, AnyChart::Errors(c)));
    }
    for (i, cell) in run.cells.iter().enumerate() {
        if let Some(why) = &cell.result.failed {
            set.not_drawn.push(format!(
                "cell '{}': no charts, it was not measured: {}",
                cell.result.id,
                meshbench_schema::text::one_line(why)
            ));
            continue;
        }
        let place = Placement::Cell(cell.result.id.clone());
        set.charts.push((
            place.clone(),
            AnyChart::Percentile(percentile::PercentileChart::from_cell(i, cell)),
        ));
        match timeline::TimelineChart::from_cell(i, cell) {
            Ok(c) => set.charts.push((place.clone(), AnyChart::Timeline(c))),
            Err(why) => set.not_drawn.push(why),
        }
        if let Some(c) = search::SearchStepsChart::from_cell(i, cell) {
            set.charts.push((place.clone(), AnyChart::SearchSteps(c)));
        }
        match profile::ProfileChart::latency(i, cell) {
            Ok(Some(c)) => set.charts.push((place.clone(), AnyChart::Profile(c))),
            Ok(None) => {}
            Err(why) => set.not_drawn.push(why),
        }
        if let Some(c) = profile::ProfileChart::sidecar(i, cell) {
            set.charts.push((place.clone(), AnyChart::Profile(c)));
        }
        match profile::ProfileChart::errors(i, cell) {
            Ok(Some(c)) => set.charts.push((place.clone(), AnyChart::Profile(c))),
            Ok(None) => {}
            Err(why) => set.not_drawn.push(why),
        }
        if let Some(c) = lag::LagChart::from_cell(i, cell) {
            set.charts.push((place.clone(), AnyChart::Lag(c)));
        }
        if let Some(c) = split::SplitChart::from_cell(i, cell, &run.run) {
            set.charts.push((place, AnyChart::Split(c)));
        }
    }
    set
}

/// Draw every chart of `set` into `dir` (created if needed) as SVG and PNG.
pub fn render_all(set: &ChartSet, dir: &Path) -> Result<Rendered, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Rendered {
        charts: Vec::with_capacity(set.charts.len()),
        not_drawn: set.not_drawn.clone(),
    };
    for (place, chart) in &set.charts {
        let mut r = chart.render(dir)?;
        r.placement = place.clone();
        out.charts.push(r);
    }
    Ok(out)
}

/// Draw one chart as `dir/<id>.svg` and `dir/<id>.png`, both written atomically.
pub fn render_chart<C: Chart>(chart: &C, dir: &Path) -> Result<RenderedChart, ReportError> {
    ensure_font()?;
    let id = chart.id();
    let size = chart.size();
    let fail = |msg: String| ReportError::Plot {
        chart: id.clone(),
        msg,
    };
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        area.fill(&WHITE).map_err(|e| fail(pe(e)))?;
        chart.draw(&area).map_err(fail)?;
        area.present().map_err(|e| fail(pe(e)))?;
    }
    let svg_path = dir.join(format!("{id}.svg"));
    meshbench_schema::write_atomic(&svg_path, svg.as_bytes())?;

    // The bitmap backend writes the file itself (format from the extension): draw into a
    // temp file beside the target, flush it to disk, then rename, so no reader (and no
    // crash) sees half a PNG.
    let png_path = dir.join(format!("{id}.png"));
    let tmp = dir.join(format!(".{id}.{}.tmp.png", std::process::id()));
    let drawn = (|| {
        let area = BitMapBackend::new(&tmp, size).into_drawing_area();
        area.fill(&WHITE).map_err(pe)?;
        chart.draw(&area)?;
        area.present().map_err(pe)
    })();
    if let Err(msg) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(msg));
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &png_path))
        .map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            ReportError::Io {
                path: png_path.clone(),
                source,
            }
        })?;
    Ok(RenderedChart {
        id,
        title: chart.title(),
        placement: Placement::Run,
        series_labels: chart.series_labels(),
        svg,
        svg_path,
        png_path,
    })
}

/// A short legend marker: a line segment in `style`.
pub(crate) fn legend_line(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style)
}

/// Two dashes: the legend marker of a dashed series.
pub(crate) type Dashes<DB> = plotters::element::ComposedElement<
    (i32, i32),
    DB,
    PathElement<(i32, i32)>,
    PathElement<(i32, i32)>,
>;

/// A short legend marker for a dashed series: two dashes in `style`.
pub(crate) fn legend_dashes<DB: DrawingBackend>(
    style: ShapeStyle,
) -> impl Fn((i32, i32)) -> Dashes<DB> {
    move |(x, y)| {
        EmptyElement::at((x, y))
            + PathElement::new(vec![(0, 0), (7, 0)], style)
            + PathElement::new(vec![(12, 0), (19, 0)], style)
    }
}

/// A short legend marker: a filled box in `color`.
pub(crate) fn legend_box(color: RGBColor) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
}

/// The frame every chart shares: its title as caption, 16 px margins, a 48 px x label
/// area and a left label area `y_labels` wide. Callers add what differs (a wider right
/// margin, a right axis) and build the coordinates.
pub(crate) fn frame<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    y_labels: u32,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(y_labels);
    builder
}

/// Draw the axes configured in `mesh` (descriptions, formatters) in the shared fonts:
/// tick labels `label_size` px, axis descriptions 16 px.
pub(crate) fn draw_mesh<X, Y, DB>(
    mesh: &mut MeshStyle<'_, '_, X, Y, DB>,
    label_size: u32,
) -> Result<(), String>
where
    X: Ranged + ValueFormatter<<X as Ranged>::ValueType>,
    Y: Ranged + ValueFormatter<<Y as Ranged>::ValueType>,
    DB: DrawingBackend,
{
    mesh.label_style((FONT, label_size))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(pe)
}

/// Draw the right-hand y axis of a chart with a secondary coordinate system.
pub(crate) fn draw_right_axis<X, Y, DB>(
    axis: &mut SecondaryMeshStyle<'_, '_, X, Y, DB>,
    desc: &str,
) -> Result<(), String>
where
    X: Ranged + ValueFormatter<<X as Ranged>::ValueType>,
    Y: Ranged + ValueFormatter<<Y as Ranged>::ValueType>,
    DB: DrawingBackend,
{
    axis.y_desc(desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(pe)
}

/// Draw the legend of every labelled series: `label_size` px text on a translucent white
/// box with a black border, at `position`.
pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    label_size: u32,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .label_font((FONT, label_size))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(pe)
}

/// A labelled line series: solid, or dashed (6 px dashes, 4 px gaps) with a dashed legend
/// marker.
pub(crate) fn draw_line<'a, DB: DrawingBackend + 'a, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    points: &[(f64, f64)],
    style: ShapeStyle,
    label: impl Into<String>,
    dashed: bool,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    if dashed {
        chart
            .draw_series(DashedLineSeries::new(points.iter().copied(), 6, 4, style))
            .map_err(pe)?
            .label(label)
            .legend(legend_dashes(style));
    } else {
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(pe)?
            .label(label)
            .legend(legend_line(style));
    }
    Ok(())
}

/// One of the two bars of category `i`: the left one (`i - 0.35 .. i`) or the right one
/// (`i .. i + 0.35`), from 0 up to `value`.
pub(crate) fn half_bar(i: usize, left: bool, value: f64, color: RGBColor) -> Rectangle<(f64, f64)> {
    let x = i as f64;
    let (x0, x1) = if left { (x - 0.35, x) } else { (x, x + 0.35) };
    Rectangle::new([(x0, 0.0), (x1, value)], color.filled())
}

/// Largest value any axis of the report shows (in its unit: µs, ms, %, requests; a u64
/// count is below 1.9e19). A value beyond it, or one that is not a number, cannot come
/// from a measurement: the chart is refused with an error naming the value (with
/// `f64::MAX`, the headroom above the top would be infinite and plotters would not end).
pub(crate) const MAX_AXIS: f64 = 1e100;

/// Upper end of an axis showing values up to `max` (never an empty range).
pub(crate) fn headroom(max: f64) -> Result<f64, String> {
    if max.is_nan() || max > MAX_AXIS {
        return Err(format!(
            "a value of {max:e} is outside any axis this report draws (at most {MAX_AXIS:e}); the input is not a measurement"
        ));
    }
    Ok(if max > 0.0 { max * 1.12 } else { 1.0 })
}
