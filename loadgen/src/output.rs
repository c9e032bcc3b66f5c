//! Terminal output: the live progress bar (only on a TTY), the summary table and the
//! `--json` summary. Reads results; never touches sockets.

use crate::run::Event;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use meshbench_schema::{Percentiles, RunResult, TABLE_STATS};
use report::format::us as fmt_us;
use std::io::IsTerminal;
use std::path::Path;

/// The progress bar; inert when stderr is not a terminal or when disabled.
pub struct Live {
    enabled: bool,
    /// One line per capacity-search step on stderr (also without a terminal).
    lines: bool,
    bar: Option<ProgressBar>,
}

impl Live {
    pub fn new(wanted: bool) -> Self {
        Live {
            enabled: wanted && std::io::stderr().is_terminal(),
            lines: wanted,
            bar: None,
        }
    }

    pub fn event(&mut self, e: Event<'_>) {
        if let (Event::SearchStep { cell, step }, true) = (&e, self.lines) {
            let sidecar = match (step.sidecar_cores, step.throttled_share) {
                (Some(c), Some(t)) => format!(
                    ", sidecar {:.0}m throttled in {:.0} % of periods",
                    c * 1000.0,
                    t * 100.0
                ),
                _ => String::new(),
            };
            let line = format!(
                "{} search step {} ({}): {:.0} req/s offered, {:.0} achieved, p99 {}, {} errors{sidecar}: {}",
                cell.id,
                step.index,
                step.phase.as_str(),
                step.rate,
                step.achieved_rate,
                fmt_us(step.latency.p99_us),
                step.errors,
                if step.passed { "holds" } else { "FAILS" }
            );
            match &self.bar {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            }
            return;
        }
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
            Event::SearchStep { .. } => {}
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
    let mut header = vec!["cell", "proto", "requests", "rate/s", "target/s", "errors"];
    header.extend(TABLE_STATS);
    header.push("p99 uncorr.");
    let modes = report::meshcost::has_modes(run);
    if modes {
        header.push("added p99");
    }
    header.push("send lag p99");
    t.set_header(header);
    let row = |name: String,
               proto: &str,
               req: u64,
               rate: String,
               target: String,
               errs: String,
               l: &Percentiles,
               u: &Percentiles,
               added: Option<String>,
               lag: String| {
        let mut r = vec![
            Cell::new(name),
            Cell::new(proto),
            Cell::new(req).set_alignment(CellAlignment::Right),
            Cell::new(rate).set_alignment(CellAlignment::Right),
            Cell::new(target).set_alignment(CellAlignment::Right),
            Cell::new(errs).set_alignment(CellAlignment::Right),
        ];
        let stats = TABLE_STATS.iter().map(|s| l.get(s).unwrap_or(f64::NAN));
        for v in stats.chain([u.p99_us]) {
            r.push(Cell::new(fmt_us(v)).set_alignment(CellAlignment::Right));
        }
        if let Some(a) = added {
            r.push(Cell::new(a).set_alignment(CellAlignment::Right));
        }
        r.push(Cell::new(lag).set_alignment(CellAlignment::Right));
        r
    };
    for c in &run.cells {
        if !c.measured() {
            let mut r = vec![
                Cell::new(&c.id),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new(
                    c.settings
                        .rate
                        .map(|r| format!("{r}"))
                        .unwrap_or_else(|| "closed".into()),
                ),
                Cell::new("NOT MEASURED"),
            ];
            let n = TABLE_STATS.len() + 2 + usize::from(modes);
            r.extend((0..n).map(|_| Cell::new("-")));
            t.add_row(r);
            continue;
        }
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
            modes.then(|| report::meshcost::added_p99_brief(c)),
            lag_text(c),
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
                modes.then(String::new),
                String::new(),
            ));
        }
    }
    let mut out = t.to_string();
    out.push('\n');
    out.push_str("latency is corrected (from the intended send time) unless marked uncorr.; send lag: how late the generator itself sent (part of corrected latency; UNTRUSTED above its limit)\n");
    out.push_str(&generator_summary(run));
    if run.interrupted {
        out.push_str("INTERRUPTED: results cover the part of the run that completed\n");
    }
    out.push_str(&sidecar_summary(run));
    for line in report::meshcost::sentences(run) {
        out.push_str(&format!("mesh cost: {line}\n"));
    }
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

/// The send-lag cell of a row: p99, and UNTRUSTED when over the cell's limit.
fn lag_text(c: &meshbench_schema::CellResult) -> String {
    match c.generator.as_ref() {
        Some(g) => match g.send_lag {
            Some(l) if g.trusted => fmt_us(l.p99_us),
            Some(l) => format!("{} UNTRUSTED", fmt_us(l.p99_us)),
            None => "-".into(),
        },
        None => "-".into(),
    }
}

/// One line per cell on what the generator itself used.
pub fn generator_summary(run: &RunResult) -> String {
    let mut out = String::new();
    for c in &run.cells {
        let Some(g) = &c.generator else { continue };
        let lag = match (g.send_lag, g.lag_limit_us) {
            (Some(l), Some(lim)) => format!(
                ", send lag p50 {} p99 {} max {} (limit {})",
                fmt_us(l.p50_us),
                fmt_us(l.p99_us),
                fmt_us(l.max_us),
                fmt_us(lim)
            ),
            _ => String::new(),
        };
        out.push_str(&format!(
            "generator {}: {} thread(s), idle {}, {:.2} cores of CPU{lag}\n",
            c.id, g.threads, g.idle, g.cpu_cores
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
                "generator": c.generator,
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

fn fmt_bytes(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Summary lines about the sidecars of each cell (CPU, throttling, vCPU per 1000 req/s,
/// memory, access log) and limits that were not applied, for the end-of-run table.
pub fn sidecar_summary(run: &RunResult) -> String {
    let mut out = String::new();
    for c in &run.cells {
        // one line per sidecar; runs written before per-sidecar stats have the one
        let list: Vec<&meshbench_schema::SidecarStats> = if c.sidecars.is_empty() {
            c.sidecar.iter().collect()
        } else {
            c.sidecars.iter().collect()
        };
        for s in list {
            let secs = c.duration_s.max(1e-9);
            let cpu = match &s.cpu_stat {
                Some(st) if c.settings.sidecar_cpu_millis.is_none() => format!(
                    "cpu {:.0}m used (no limit)",
                    st.usage_usec as f64 / 1000.0 / secs
                ),
                Some(st) => format!(
                    "cpu {:.0}m used of {}m, throttled in {}/{} periods ({:.1} ms/s)",
                    st.usage_usec as f64 / 1000.0 / secs,
                    c.settings.sidecar_cpu_millis.unwrap_or(0),
                    st.nr_throttled,
                    st.nr_periods,
                    st.throttled_usec as f64 / 1000.0 / secs
                ),
                None => "cpu.stat not measured".into(),
            };
            let vcpu = s
                .vcpu_per_1k_rps
                .map(|v| format!(", {v:.3} vCPU per 1000 req/s"))
                .unwrap_or_default();
            let mem = s
                .memory_peak_bytes
                .map(fmt_bytes)
                .unwrap_or_else(|| "-".into());
            let log = match (c.settings.access_log.as_deref(), s.access_log_lines) {
                (Some("off"), _) | (None, _) => String::new(),
                (Some(mode), Some(n)) => format!(", access log {mode}: {n} lines"),
                (Some(mode), None) => format!(", access log {mode}"),
            };
            let name = if s.name.is_empty() || s.name == "sidecar" {
                String::new()
            } else {
                format!(" {}", s.name)
            };
            out.push_str(&format!(
                "sidecar {}{name}: {cpu}{vcpu}, peak memory {mem}{log}\n",
                c.id
            ));
        }
        if let Some(cal) = &c.settings.cpu_limit_calibration {
            out.push_str(&format!(
                "  CPU limit {}: {}x the {:.0}m a sidecar needed with no limit (calibrated over {:.0} s) = {}m\n",
                c.settings.sidecar_cpu.as_deref().unwrap_or("?"),
                cal.factor,
                cal.need_millis,
                cal.duration_s,
                cal.limit_millis
            ));
        }
        if let Some(note) = &c.settings.cpu_limit_note {
            out.push_str(&format!("  {note}\n"));
        }
    }
    out
}
