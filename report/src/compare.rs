//! `report compare BASE CURRENT`: per cell (matched by id) and percentile, base, current
//! and change in %. Cells present in only one run are listed, not dropped.

use std::fmt::Write as _;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};

use crate::format::{change, md, us};
use crate::load::LoadedRun;

/// The latency metrics compared, by conventional name.
pub const METRICS: [&str; 5] = meshbench_schema::TABLE_STATS;

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub metric: String,
    pub base: f64,
    pub current: f64,
    /// current / base - 1 (NaN when base is 0).
    pub change: f64,
    /// "µs" for latency, "/s" for rate, "%" for the error rate.
    pub unit: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CellComparison {
    pub id: String,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub base: String,
    pub current: String,
    pub cells: Vec<CellComparison>,
    pub only_in_base: Vec<String>,
    pub only_in_current: Vec<String>,
}

pub fn ratio(base: f64, current: f64) -> f64 {
    if base > 0.0 {
        current / base - 1.0
    } else if current == base {
        0.0
    } else {
        f64::NAN
    }
}

fn error_pct(c: &meshbench_schema::CellResult) -> f64 {
    if c.requests == 0 {
        0.0
    } else {
        c.errors.total() as f64 * 100.0 / c.requests as f64
    }
}

pub fn compare(base: &LoadedRun, current: &LoadedRun) -> Comparison {
    let mut cells = Vec::new();
    let mut only_in_current = Vec::new();
    // a cell that was not measured (its settings could not be applied) compares as absent
    for cur in current.run.cells.iter().filter(|c| c.measured()) {
        let Some(b) = base
            .run
            .cells
            .iter()
            .find(|b| b.measured() && b.id == cur.id)
        else {
            only_in_current.push(cur.id.clone());
            continue;
        };
        let mut rows: Vec<Row> = METRICS
            .iter()
            .map(|m| {
                let bv = b.latency.corrected.get(m).unwrap_or(f64::NAN);
                let cv = cur.latency.corrected.get(m).unwrap_or(f64::NAN);
                Row {
                    metric: m.to_string(),
                    base: bv,
                    current: cv,
                    change: ratio(bv, cv),
                    unit: "µs",
                }
            })
            .collect();
        rows.push(Row {
            metric: "rate".into(),
            base: b.achieved_rate,
            current: cur.achieved_rate,
            change: ratio(b.achieved_rate, cur.achieved_rate),
            unit: "/s",
        });
        let (be, ce) = (error_pct(b), error_pct(cur));
        rows.push(Row {
            metric: "errors".into(),
            base: be,
            current: ce,
            change: ratio(be, ce),
            unit: "%",
        });
        cells.push(CellComparison {
            id: cur.id.clone(),
            rows,
        });
    }
    let only_in_base = base
        .run
        .cells
        .iter()
        .filter(|b| b.measured())
        .filter(|b| {
            !current
                .run
                .cells
                .iter()
                .any(|c| c.measured() && c.id == b.id)
        })
        .map(|b| b.id.clone())
        .collect();
    Comparison {
        base: base.dir.display().to_string(),
        current: current.dir.display().to_string(),
        cells,
        only_in_base,
        only_in_current,
    }
}

fn value(v: f64, unit: &str) -> String {
    match unit {
        "µs" => us(v),
        "/s" => format!("{v:.1}/s"),
        "%" => format!("{v:.3} %"),
        _ => format!("{v}"),
    }
}

/// A plain-text table for the terminal.
pub fn table(c: &Comparison) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["cell", "metric", "base", "current", "change"]);
    for cell in &c.cells {
        for r in &cell.rows {
            t.add_row(vec![
                Cell::new(&cell.id),
                Cell::new(&r.metric),
                Cell::new(value(r.base, r.unit)).set_alignment(CellAlignment::Right),
                Cell::new(value(r.current, r.unit)).set_alignment(CellAlignment::Right),
                Cell::new(change(r.change)).set_alignment(CellAlignment::Right),
            ]);
        }
    }
    let mut s = format!("base:    {}\ncurrent: {}\n{t}\n", c.base, c.current);
    for id in &c.only_in_base {
        let _ = writeln!(s, "cell {id}: only in base (missing from current)");
    }
    for id in &c.only_in_current {
        let _ = writeln!(s, "cell {id}: only in current (no baseline)");
    }
    s
}

/// The same as markdown.
pub fn markdown(c: &Comparison) -> String {
    let mut s = format!(
        "## Comparison\n\nbase `{}` → current `{}`; latency corrected.\n\n| cell | metric | base | current | change |\n|---|---|---:|---:|---:|\n",
        md(&c.base),
        md(&c.current)
    );
    for cell in &c.cells {
        for r in &cell.rows {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {} |",
                md(&cell.id),
                r.metric,
                value(r.base, r.unit),
                value(r.current, r.unit),
                change(r.change)
            );
        }
    }
    if !c.only_in_base.is_empty() || !c.only_in_current.is_empty() {
        s.push('\n');
    }
    for id in &c.only_in_base {
        let _ = writeln!(
            s,
            "- cell `{}`: only in base (missing from current)",
            md(id)
        );
    }
    for id in &c.only_in_current {
        let _ = writeln!(s, "- cell `{}`: only in current (no baseline)", md(id));
    }
    s
}
