//! `report fleet PROBE_JSON...`: probe reports of many nodes side by side — which nodes
//! fail which checks, CPU steal and fdatasync p99 per node — as a terminal table, a
//! markdown file, a self-contained HTML page and one chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use meshbench_schema::{Finding, MeasuredValue, ProbeReport, Verdict};

use crate::format::{html as esc, md};
use crate::html::inline_svg;
use crate::plot::fleet::FleetChart;
use crate::plot::{render_chart, RenderedChart};
use crate::ReportError;

/// Measurement names the probe uses (schema: `steal_pct`, `fdatasync_p99_ms`).
pub const STEAL_NAME: &str = "steal_pct";
pub const FSYNC_NAMES: [&str; 2] = ["fdatasync_p99_ms", "fsync_p99_ms"];

#[derive(Debug, Clone)]
pub struct NodeRow {
    pub node: String,
    pub file: PathBuf,
    /// check id -> (verdict, shown value).
    pub verdicts: BTreeMap<String, (Verdict, String)>,
    pub steal_pct: Option<f64>,
    pub fsync_p99_ms: Option<f64>,
    pub report: ProbeReport,
}

impl NodeRow {
    pub fn with(&self, v: Verdict) -> Vec<&str> {
        self.report
            .findings
            .iter()
            .filter(|f| f.verdict == v)
            .map(|f| f.check.as_str())
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Fleet {
    pub nodes: Vec<NodeRow>,
    /// Every check id seen, in first-seen order, with its title.
    pub checks: Vec<(String, String)>,
}

impl Fleet {
    pub fn any_failed(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.report.counts.fail > 0 || !n.with(Verdict::Fail).is_empty())
    }
}

fn number(f: &Finding, name: &str) -> Option<(f64, String)> {
    f.measurements
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| match m.value {
            MeasuredValue::Number(v) if v.is_finite() => Some((v, m.unit.clone())),
            _ => None,
        })
}

/// CPU steal %: the `steal_pct` measurement wherever it is.
pub fn steal_of(r: &ProbeReport) -> Option<f64> {
    r.findings
        .iter()
        .find_map(|f| number(f, STEAL_NAME))
        .map(|v| v.0)
}

/// fdatasync p99 in ms: a known measurement name, else any numeric measurement whose name
/// mentions sync and p99 (converted from µs or s when its unit says so).
pub fn fsync_of(r: &ProbeReport) -> Option<f64> {
    let exact = r
        .findings
        .iter()
        .find_map(|f| FSYNC_NAMES.iter().find_map(|n| number(f, n)));
    let found = exact.or_else(|| {
        r.findings.iter().find_map(|f| {
            f.measurements.iter().find_map(|m| match m.value {
                MeasuredValue::Number(v)
                    if v.is_finite() && m.name.contains("sync") && m.name.contains("p99") =>
                {
                    Some((v, m.unit.clone()))
                }
                _ => None,
            })
        })
    })?;
    Some(match found.1.as_str() {
        "us" | "µs" => found.0 / 1000.0,
        "s" => found.0 * 1000.0,
        _ => found.0,
    })
}

/// The report files `paths` name: each file itself, and each directory's `*.json` files
/// in name order (as the probe DaemonSet leaves them: one `<node>.json` per node).
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ReportError> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let io = |source| ReportError::Io {
            path: p.clone(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "json"))
            .collect();
        if files.is_empty() {
            return Err(ReportError::Invalid {
                path: p.clone(),
                msg: "a directory with no probe reports (*.json) in it".into(),
            });
        }
        files.sort();
        out.extend(files);
    }
    Ok(out)
}

/// Read every probe report (schema-checked; errors name the file); a directory stands for
/// its `*.json` files.
pub fn load(paths: &[PathBuf]) -> Result<Fleet, ReportError> {
    let paths = expand(paths)?;
    let mut nodes = Vec::with_capacity(paths.len());
    let mut checks: Vec<(String, String)> = Vec::new();
    for p in &paths {
        let report = meshbench_schema::read_probe(p)?;
        for f in &report.findings {
            if !checks.iter().any(|(c, _)| *c == f.check) {
                checks.push((f.check.clone(), f.title.clone()));
            }
        }
        let mut node = report.node.clone();
        if nodes.iter().any(|n: &NodeRow| n.node == node) {
            node = format!("{node} ({})", p.display());
        }
        nodes.push(NodeRow {
            node,
            file: p.clone(),
            verdicts: report
                .findings
                .iter()
                .map(|f| (f.check.clone(), (f.verdict, f.value.clone())))
                .collect(),
            steal_pct: steal_of(&report),
            fsync_p99_ms: fsync_of(&report),
            report,
        });
    }
    Ok(Fleet { nodes, checks })
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Warn => "WARN",
        Verdict::Fail => "FAIL",
        Verdict::Skip => "skip",
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{v:.2} {unit}"))
        .unwrap_or_else(|| "n/a".into())
}

/// Terminal table: one row per node.
pub fn table(f: &Fleet) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "node",
        "pass",
        "warn",
        "fail",
        "skip",
        "steal",
        "fdatasync p99",
        "failed checks",
        "warnings",
    ]);
    for n in &f.nodes {
        let c = ProbeReport::count(&n.report.findings);
        t.add_row(vec![
            Cell::new(&n.node),
            Cell::new(c.pass).set_alignment(CellAlignment::Right),
            Cell::new(c.warn).set_alignment(CellAlignment::Right),
            Cell::new(c.fail).set_alignment(CellAlignment::Right),
            Cell::new(c.skip).set_alignment(CellAlignment::Right),
            Cell::new(opt(n.steal_pct, "%")).set_alignment(CellAlignment::Right),
            Cell::new(opt(n.fsync_p99_ms, "ms")).set_alignment(CellAlignment::Right),
            Cell::new(n.with(Verdict::Fail).join(", ")),
            Cell::new(n.with(Verdict::Warn).join(", ")),
        ]);
    }
    let failing = f
        .nodes
        .iter()
        .filter(|n| !n.with(Verdict::Fail).is_empty())
        .count();
    format!(
        "{t}\n{} node(s), {failing} with a failed check\n",
        f.nodes.len()
    )
}

/// Markdown: nodes x checks with verdicts, then steal / fsync per node.
pub fn markdown(f: &Fleet) -> String {
    let mut s = String::from("# meshbench fleet\n\n| node | steal | fdatasync p99 |");
    for (id, _) in &f.checks {
        let _ = write!(s, " {} |", md(id));
    }
    s.push_str("\n|---|---:|---:|");
    s.push_str(&"---|".repeat(f.checks.len()));
    s.push('\n');
    for n in &f.nodes {
        let _ = write!(
            s,
            "| {} | {} | {} |",
            md(&n.node),
            opt(n.steal_pct, "%"),
            opt(n.fsync_p99_ms, "ms")
        );
        for (id, _) in &f.checks {
            let cell = match n.verdicts.get(id) {
                Some((v, val)) => {
                    let mark = match v {
                        Verdict::Fail => "❌ ",
                        Verdict::Warn => "⚠️ ",
                        _ => "",
                    };
                    format!("{mark}{} {}", verdict_word(*v), md(val))
                }
                None => "-".into(),
            };
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    s
}

/// Self-contained HTML page with the matrix and the chart inline.
pub fn html(f: &Fleet, chart: &RenderedChart) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>meshbench fleet</title><style>\nbody{font-family:'DejaVu Sans',Verdana,sans-serif;margin:1em 2em;color:#222}table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ccc;padding:.2em .5em}th{background:#f2f2f2}.fail{background:#fde2e1;font-weight:bold}.warn{background:#fff4d6}.skip{color:#777}svg{max-width:100%;height:auto}\n</style></head><body><h1>meshbench fleet</h1>\n<table><tr><th>node</th><th>steal</th><th>fdatasync p99</th>",
    );
    for (id, title) in &f.checks {
        let _ = write!(s, "<th title=\"{}\">{}</th>", esc(title), esc(id));
    }
    s.push_str("</tr>\n");
    for n in &f.nodes {
        let _ = write!(
            s,
            "<tr><th>{}</th><td>{}</td><td>{}</td>",
            esc(&n.node),
            opt(n.steal_pct, "%"),
            opt(n.fsync_p99_ms, "ms")
        );
        for (id, _) in &f.checks {
            match n.verdicts.get(id) {
                Some((v, val)) => {
                    let _ = write!(
                        s,
                        "<td class=\"{}\">{} {}</td>",
                        verdict_word(*v).to_lowercase(),
                        verdict_word(*v),
                        esc(val)
                    );
                }
                None => s.push_str("<td>-</td>"),
            }
        }
        s.push_str("</tr>\n");
    }
    let _ = write!(
        s,
        "</table>\n<figure class=\"chart\" data-chart=\"{}\">{}<figcaption>{}</figcaption></figure></body></html>\n",
        esc(&chart.id),
        inline_svg(&chart.svg),
        esc(&chart.title)
    );
    s
}

/// What `report fleet` wrote.
#[derive(Debug, Clone)]
pub struct FleetOutput {
    pub markdown: PathBuf,
    pub html: PathBuf,
    pub svg: PathBuf,
    pub png: PathBuf,
}

/// Write fleet.md, fleet.html and fleet.{svg,png} into `out_dir`, each atomically.
pub fn write(f: &Fleet, out_dir: &Path) -> Result<FleetOutput, ReportError> {
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let chart = FleetChart {
        nodes: f
            .nodes
            .iter()
            .map(|n| (n.node.clone(), n.steal_pct, n.fsync_p99_ms))
            .collect(),
    };
    let rendered = render_chart(&chart, out_dir)?;
    let md_path = out_dir.join("fleet.md");
    let html_path = out_dir.join("fleet.html");
    meshbench_schema::write_atomic(&md_path, markdown(f).as_bytes())?;
    meshbench_schema::write_atomic(&html_path, html(f, &rendered).as_bytes())?;
    Ok(FleetOutput {
        markdown: md_path,
        html: html_path,
        svg: rendered.svg_path,
        png: rendered.png_path,
    })
}
