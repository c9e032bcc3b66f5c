//! `summary.md`: a markdown summary sized for a CI job summary — one row per cell with
//! p50 / p90 / p99 / p99.9, achieved rate, errors and checks; warnings first.

use std::fmt::Write as _;

use meshbench_schema::{CellResult, CheckResult, CheckStatus, RunResult};

use crate::format::{cpu_label, md, rate, us};
use crate::load::LoadedRun;
use crate::plot::Rendered;

/// Everything the reader must see before the numbers: interruption, the run's warnings,
/// CPU limits that were not applied, cells cut short.
pub fn notices(run: &RunResult) -> Vec<String> {
    let mut v = Vec::new();
    let why = run.incomplete();
    if why
        .iter()
        .any(|w| !w.starts_with("the run was interrupted"))
    {
        v.push(format!(
            "INCOMPLETE RUN: {}. The figures below cover only what was measured.",
            why.join("; ")
        ));
    }
    if run.interrupted {
        v.push(
            "The run was interrupted: the figures cover only what was measured until then."
                .to_string(),
        );
    }
    // a failed cell's warning is already in the INCOMPLETE line
    v.extend(
        run.warnings
            .iter()
            .filter(|w| {
                !run.cells.iter().any(|c| {
                    !c.measured() && w.starts_with(&format!("cell {}: not measured", c.id))
                })
            })
            .cloned(),
    );
    if let Some(d) = &run.driver {
        if let Some(e) = &d.restore_error {
            v.push(format!(
                "The {} driver could not restore what it changed: {}. Check the system by hand.",
                d.driver,
                meshbench_schema::text::one_line(e)
            ));
        }
    }
    for c in run.cells.iter().filter(|c| c.measured()) {
        let s = &c.settings;
        if s.sidecar_cpu_millis.is_some() && !s.cpu_limit_applied {
            v.push(format!(
                "Cell {}: the sidecar CPU limit {} was NOT applied{}.",
                c.id,
                cpu_label(s.sidecar_cpu_millis, s.sidecar_cpu.as_deref()),
                s.cpu_limit_note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ));
        } else if let Some(note) = &s.cpu_limit_note {
            v.push(format!("Cell {}: {note}", c.id));
        }
        if c.interrupted {
            v.push(format!("Cell {} was cut short by the interrupt.", c.id));
        }
        if let Some(g) = c.generator.as_ref().filter(|g| !g.trusted) {
            let l = g.send_lag.unwrap_or_default();
            v.push(format!(
                "Cell {}: UNTRUSTED measurement: the load generator sent its requests late (send lag p99 {}, limit {}); its corrected latency includes the generator's own delay.",
                c.id,
                us(l.p99_us),
                us(g.lag_limit_us.unwrap_or(0.0))
            ));
        }
    }
    v
}

/// A cell's send lateness p99, with UNTRUSTED when it is over the cell's limit.
pub fn lag_brief(c: &meshbench_schema::CellResult) -> String {
    match c.generator.as_ref() {
        Some(g) => match g.send_lag {
            Some(l) if g.trusted => us(l.p99_us),
            Some(l) => format!("{} ⚠ UNTRUSTED", us(l.p99_us)),
            None => "-".into(),
        },
        None => "-".into(),
    }
}

/// True when the run or any cell carries a check.
pub fn has_checks(r: &RunResult) -> bool {
    !r.checks.is_empty() || r.cells.iter().any(|c| !c.checks.is_empty())
}

/// Short verdict of a list of checks ("2 passed, 1 FAILED: canary_split").
pub fn checks_brief(checks: &[CheckResult]) -> String {
    if checks.is_empty() {
        return "-".into();
    }
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Failed)
        .map(|c| c.name.as_str())
        .collect();
    let mut out = format!("{} passed", count(CheckStatus::Passed));
    if count(CheckStatus::Skipped) > 0 {
        let _ = write!(out, ", {} skipped", count(CheckStatus::Skipped));
    }
    if !failed.is_empty() {
        let _ = write!(out, ", {} FAILED: {}", failed.len(), failed.join(", "));
    }
    out
}

pub fn status_md(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Passed => "✅ passed",
        CheckStatus::Failed => "❌ FAILED",
        CheckStatus::Skipped => "⚠️ skipped",
    }
}

fn error_brief(c: &CellResult) -> String {
    let total = c.errors.total();
    if total == 0 {
        return "0".into();
    }
    let pct = if c.requests > 0 {
        format!(" ({:.2} %)", total as f64 * 100.0 / c.requests as f64)
    } else {
        String::new()
    };
    let classes: Vec<String> = c
        .errors
        .by_class()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!("{total}{pct}: {}", classes.join(", "))
}

/// The markdown summary of a run.
/// One sentence on how a real mesh's settings were driven: which driver, through which
/// kubectl context and kubeconfig, and whether they were restored.
pub fn driver_line(r: &RunResult) -> Option<String> {
    let d = r.driver.as_ref()?;
    let mut line = format!("Settings applied per cell by the {} driver", d.driver);
    if let Some(c) = &d.context {
        let _ = write!(line, " through kubectl context `{c}`");
    }
    if let Some(k) = &d.kubeconfig {
        let _ = write!(line, " (kubeconfig {k})");
    }
    if let Some(v) = &d.kubernetes_server_version {
        let _ = write!(line, ", Kubernetes {v}");
    }
    match (&d.restore_error, d.restored.is_empty()) {
        (Some(_), _) => line.push_str("; restore FAILED"),
        (None, false) => line.push_str("; restored after the run"),
        (None, true) => line.push_str("; nothing to restore"),
    }
    if let Some(l) = &d.log_dir {
        let _ = write!(line, "; command output in {l}/");
    }
    line.push('.');
    Some(line)
}

/// One sentence on a distributed run: the worker's share, or the workers a merged run
/// came from and how far apart they started.
pub fn workers_line(r: &RunResult) -> Option<String> {
    if let Some(w) = &r.worker {
        return Some(format!(
            "Worker {}/{} of a distributed run{}: merge the workers' run directories with `report merge`.",
            w.index + 1,
            w.count,
            w.start_at
                .as_deref()
                .map(|t| format!(" (shared start {t})"))
                .unwrap_or_default()
        ));
    }
    if r.merged_from.is_empty() {
        return None;
    }
    let late = r
        .merged_from
        .iter()
        .filter_map(|w| w.max_start_late_s)
        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))));
    Some(format!(
        "Merged from {} workers ({}){}.",
        r.merged_from.len(),
        r.merged_from
            .iter()
            .map(|w| format!("{} on {}", w.index + 1, w.host))
            .collect::<Vec<_>>()
            .join(", "),
        late.map(|l| format!(
            "; the latest started {:.1} ms after the shared start",
            l * 1000.0
        ))
        .unwrap_or_default()
    ))
}

pub fn summary_md(run: &LoadedRun, rendered: &Rendered) -> String {
    let r = &run.run;
    let mut s = String::new();
    let _ = writeln!(s, "# meshbench run: {}\n", md(&r.scenario));
    let _ = writeln!(
        s,
        "Started {}{}, host `{}` ({} CPUs), {} {}, {} cell(s).\n",
        r.started_at,
        r.finished_at
            .as_deref()
            .map(|f| format!(", finished {f}"))
            .unwrap_or_default(),
        md(&r.host.hostname),
        r.host.cpus,
        r.tool.name,
        r.tool.version,
        r.cells.len()
    );
    if let Some(line) = driver_line(r) {
        let _ = writeln!(s, "{}\n", md(&line));
    }
    if let Some(line) = workers_line(r) {
        let _ = writeln!(s, "{}\n", md(&line));
    }
    let notes = notices(r);
    if !notes.is_empty() {
        let _ = writeln!(s, "> [!WARNING]");
        for n in &notes {
            let _ = writeln!(s, "> - {}", md(n));
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "Latency is corrected (from the intended send time, no coordinated omission).\n"
    );
    let capacity = crate::capacity::sentences(r);
    if !capacity.is_empty() {
        let _ = writeln!(s, "## Capacity\n");
        for line in &capacity {
            let _ = writeln!(s, "- {}", md(line));
        }
        s.push('\n');
    }
    let modes = crate::meshcost::has_modes(r);
    let searches = crate::capacity::has_searches(r);
    let sentences = crate::meshcost::sentences(r);
    if !sentences.is_empty() {
        let _ = writeln!(s, "## What the mesh costs\n");
        for line in &sentences {
            let _ = writeln!(s, "- {}", md(line));
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "| cell | requests | rate (achieved / target) |{} p50 | p90 | p99 | p99.9 |{} send lag p99 | errors | checks |",
        if searches { " capacity |" } else { "" },
        if modes { " added p99 |" } else { "" }
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|{}---:|---:|---:|---:|{}---:|---|---|",
        if searches { "---:|" } else { "" },
        if modes { "---:|" } else { "" }
    );
    for c in &r.cells {
        if let Some(why) = &c.failed {
            let _ = writeln!(
                s,
                "| `{}` (not measured) | - | - / {} |{} - | - | - | - |{} - | not measured: {} | {} |",
                md(&c.id),
                c.settings.rate.map(rate).unwrap_or_else(|| "closed loop".into()),
                if searches { " - |" } else { "" },
                if modes { " - |" } else { "" },
                md(&meshbench_schema::text::one_line(why)),
                md(&checks_brief(&c.checks)),
            );
            continue;
        }
        let l = &c.latency.corrected;
        let added = if modes {
            format!(" {} |", crate::meshcost::added_p99_brief(c))
        } else {
            String::new()
        };
        let cap = if searches {
            format!(" {} |", md(&crate::capacity::capacity_brief(c)))
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| `{}`{} | {} | {} / {} |{cap} {} | {} | {} | {} |{added} {} | {} | {} |",
            md(&c.id),
            if c.interrupted { " (interrupted)" } else { "" },
            c.requests,
            rate(c.achieved_rate),
            c.settings
                .rate
                .map(rate)
                .unwrap_or_else(|| "closed loop".into()),
            us(l.p50_us),
            us(l.p90_us),
            us(l.p99_us),
            us(l.p999_us),
            lag_brief(c),
            md(&error_brief(c)),
            md(&checks_brief(&c.checks)),
        );
    }
    let sidecar_rows: Vec<String> = r
        .cells
        .iter()
        .flat_map(|c| c.sidecars.iter().map(move |sc| (c, sc)))
        .map(|(c, sc)| {
            let d = c.duration_s.max(1e-9);
            let (used, throttled) = match sc.cpu_stat {
                Some(st) => (
                    format!("{:.0}m", st.usage_usec as f64 / 1000.0 / d),
                    format!("{}/{}", st.nr_throttled, st.nr_periods),
                ),
                None => ("-".into(), "-".into()),
            };
            format!(
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                md(&c.id),
                md(&sc.name),
                cpu_label(
                    c.settings.sidecar_cpu_millis,
                    c.settings.sidecar_cpu.as_deref()
                ),
                used,
                throttled,
                sc.vcpu_per_1k_rps
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "-".into()),
                sc.memory_peak_bytes
                    .map(|b| format!("{:.1}", b as f64 / 1e6))
                    .unwrap_or_else(|| "-".into()),
            )
        })
        .collect();
    if !sidecar_rows.is_empty() {
        let _ = writeln!(s, "\n## Sidecars\n");
        let _ = writeln!(
            s,
            "| cell | sidecar | CPU limit | CPU used | throttled periods | vCPU per 1000 req/s | peak memory (MB) |"
        );
        let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|");
        for row in sidecar_rows {
            let _ = writeln!(s, "{row}");
        }
    }
    let all: Vec<(&str, &CheckResult)> = r
        .checks
        .iter()
        .map(|k| ("run", k))
        .chain(
            r.cells
                .iter()
                .flat_map(|c| c.checks.iter().map(move |k| (c.id.as_str(), k))),
        )
        .collect();
    if !all.is_empty() {
        let _ = writeln!(s, "\n## Checks\n");
        let _ = writeln!(s, "| scope | check | result | evidence |");
        let _ = writeln!(s, "|---|---|---|---|");
        for (scope, k) in all {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                md(scope),
                md(&k.name),
                status_md(k.status),
                md(&k.summary)
            );
        }
    }
    if !rendered.not_drawn.is_empty() {
        let _ = writeln!(s, "\n## Charts not drawn\n");
        for n in &rendered.not_drawn {
            let _ = writeln!(s, "- {}", md(n));
        }
    }
    let _ = writeln!(
        s,
        "\nOverall: {}.",
        if !has_checks(r) {
            "no checks in this run"
        } else if r.checks_passed() {
            "all checks passed"
        } else {
            "**a check FAILED**"
        }
    );
    s
}
