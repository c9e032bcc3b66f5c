//! Terminal output: the live progress bar (only on a TTY), the summary table and the
//! `--json` summary. Reads results; never touches sockets.

use crate::run::Event;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use meshbench_schema::{Percentiles, RunResult};
use std::io::IsTerminal;
use std::path::Path;

/// `1.23ms`, `850µs`, `2.1s` from microseconds.
pub fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2}s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}µs")
    }
}

/// The progress bar; inert when stderr is not a terminal or when disabled.
pub struct Live {
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl Live {
    pub fn new(wanted: bool) -> Self {
        Live {
            enabled: wanted && std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    pub fn event(&mut self, e: Event<'_>) {
        if !self.enabled {
            return;
        }
        match e {
            Event::CellStarted { cell, of } => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len}s {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(format!("cell {}/{} {}", cell.index + 1, of, cell.id));
                bar.set_message("warming up");
                self.bar = Some(bar);
            }
            Event::Progress { progress: p, .. } => {
                if let Some(bar) = &self.bar {
                    if let Some(pl) = p.planned {
                        bar.set_length(pl.as_secs_f64().ceil() as u64);
                    }
                    bar.set_position(p.elapsed.as_secs());
                    bar.set_message(format!(
                        "{:.0} req/s  p99 {}  errors {}",
                        p.rate,
                        fmt_us(p.p99_us),
                        p.errors
                    ));
                }
            }
            Event::CellFinished { .. } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// The summary table printed at the end of a run.
pub fn summary_table(run: &RunResult) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "cell",
        "proto",
        "requests",
        "rate/s",
        "target/s",
        "errors",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "p99 uncorr.",
    ]);
    let row = |name: String,
               proto: &str,
               req: u64,
               rate: String,
               target: String,
               errs: String,
               l: &Percentiles,
               u: &Percentiles| {
        let mut r = vec![
            Cell::new(name),
            Cell::new(proto),
            Cell::new(req).set_alignment(CellAlignment::Right),
            Cell::new(rate).set_alignment(CellAlignment::Right),
            Cell::new(target).set_alignment(CellAlignment::Right),
            Cell::new(errs).set_alignment(CellAlignment::Right),
        ];
        for v in [l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, u.p99_us] {
            r.push(Cell::new(fmt_us(v)).set_alignment(CellAlignment::Right));
        }
        r
    };
    for c in &run.cells {
        let errs = c.errors.total();
        let err_text = if errs == 0 {
            "0".to_string()
        } else {
            let classes: Vec<String> = c
                .errors
                .by_class()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            format!("{errs} ({})", classes.join(" "))
        };
        t.add_row(row(
            c.id.clone(),
            &c.protocol,
            c.requests,
            format!("{:.1}", c.achieved_rate),
            c.settings
                .rate
                .map(|r| format!("{r}"))
                .unwrap_or_else(|| "closed".into()),
            err_text,
            &c.latency.corrected,
            &c.latency.uncorrected,
        ));
        for s in &c.subsets {
            t.add_row(row(
                format!("  {}={} ({:.1}%)", "subset", s.name, s.share * 100.0),
                "",
                s.count,
                String::new(),
                String::new(),
                String::new(),
                &s.latency.corrected,
                &s.latency.uncorrected,
            ));
        }
    }
    let mut out = t.to_string();
    out.push('\n');
    out.push_str("latency is corrected (from the intended send time) unless marked uncorr.\n");
    if run.interrupted {
        out.push_str("INTERRUPTED: results cover the part of the run that completed\n");
    }
    out.push_str(&crate::mesh_target::sidecar_summary(run));
    let run_checks = run.checks.iter().map(|c| (None, c));
    let cell_checks = run
        .cells
        .iter()
        .flat_map(|cell| cell.checks.iter().map(move |c| (Some(&cell.id), c)));
    for (cell, c) in run_checks.chain(cell_checks) {
        let scope = cell.map(|id| format!(" [{id}]")).unwrap_or_default();
        out.push_str(&format!(
            "check {}{scope}: {:?}: {}\n",
            c.name, c.status, c.summary
        ));
    }
    out
}

/// The `--json` summary: where the results are and the headline figures per cell.
pub fn summary_json(dir: &Path, run: &RunResult) -> serde_json::Value {
    let cells: Vec<_> = run
        .cells
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "protocol": c.protocol,
                "requests": c.requests,
                "ok": c.ok,
                "achieved_rate": c.achieved_rate,
                "target_rate": c.settings.rate,
                "errors_total": c.errors.total(),
                "errors": c.errors,
                "latency_us": c.latency,
                "subsets": c.subsets.iter().map(|s| serde_json::json!({
                    "name": s.name, "count": s.count, "share": s.share,
                })).collect::<Vec<_>>(),
                "interrupted": c.interrupted,
            })
        })
        .collect();
    serde_json::json!({
        "run_dir": dir.display().to_string(),
        "run_json": dir.join(meshbench_schema::RUN_FILE).display().to_string(),
        "scenario": run.scenario,
        "interrupted": run.interrupted,
        "checks_passed": run.checks_passed(),
        "warnings": run.warnings,
        "cells": cells,
    })
}
