//! What a capacity search (`[search]`) found, in words: one sentence per searched cell
//! ("At 500m with access logs buffered the server-side sidecar carries 2900 req/s at
//! p99<10ms, errors<0.1% (2900 held, 3050 failed; 0.42 vCPU per 1000 req/s)."), shared by
//! summary.md, the HTML report and `report render`'s terminal output; and a cell's
//! "capacity" for the tables.
//!
//! Every figure is said as the search's outcome allows: "at least" when the upper bound
//! held, "below" when the lower bound failed, "unconfirmed" when the step budget ran out,
//! and no figure at all when the search was interrupted.

use meshbench_schema::search::{SearchOutcome, SearchResult};
use meshbench_schema::{CellResult, RunResult};

use crate::format::cpu_label;

/// Whether any measured cell of the run ran a capacity search.
pub fn has_searches(run: &RunResult) -> bool {
    run.cells.iter().any(|c| c.measured() && c.search.is_some())
}

/// A cell's capacity for a table: `2900/s`, `≥ 20000/s`, `< 100/s`, `2900/s
/// (unconfirmed)`, `interrupted`, or `-` (no search).
pub fn capacity_brief(c: &CellResult) -> String {
    let Some(s) = &c.search else {
        return "-".into();
    };
    let r = |v: f64| format!("{v:.0}/s");
    match (s.outcome, s.capacity_rps) {
        (SearchOutcome::Interrupted, _) => "interrupted".into(),
        (SearchOutcome::BelowMin, _) | (_, None) => format!("< {}", r(s.min_rps)),
        (SearchOutcome::AtMax, Some(v)) => format!("≥ {}", r(v)),
        (SearchOutcome::MaxSteps, Some(v)) => format!("{} (unconfirmed)", r(v)),
        (SearchOutcome::Converged, Some(v)) => r(v),
    }
}

/// Who carries the load in a cell, and the verb that goes with it.
fn who(c: &CellResult) -> (&'static str, &'static str) {
    match c.settings.mesh_mode.as_deref() {
        Some("both") => ("client and server sidecars", "carry"),
        Some("server") => ("the server-side sidecar", "carries"),
        Some("baseline") => ("the app with no mesh", "carries"),
        _ if c.sidecar.is_some() || !c.sidecars.is_empty() => ("the sidecar", "carries"),
        _ => ("the target", "carries"),
    }
}

/// "at 500m with access logs buffered" (the settings that define a searched cell).
fn setting_phrase(c: &CellResult) -> String {
    let st = &c.settings;
    let cpu = match (st.sidecar_cpu_millis, st.sidecar_cpu.as_deref()) {
        (None, None) => "with no CPU limit".to_string(),
        (m, raw) => {
            let label = cpu_label(m, raw);
            match (&st.cpu_limit_calibration, m) {
                (Some(_), Some(m)) => format!("at {label} (={m}m)"),
                _ => format!("at {label}"),
            }
        }
    };
    let cpu = if st.sidecar_cpu_millis.is_some() && !st.cpu_limit_applied {
        format!("{cpu} (NOT applied)")
    } else {
        cpu
    };
    match st.access_log.as_deref() {
        Some(log) => format!("{cpu} with access logs {log}"),
        None => cpu,
    }
}

/// The figure of a search and what qualifies it: ("2900 req/s", ["2900 held, 3050
/// failed", "0.42 vCPU per 1000 req/s"]), from [`SearchResult::capacity_text`].
fn figure(s: &SearchResult) -> (String, Vec<String>) {
    let mut notes = Vec::new();
    if s.outcome == SearchOutcome::Interrupted {
        let mut what = "interrupted before it found a capacity".to_string();
        match (s.last_pass_rps, s.first_fail_rps) {
            (Some(p), Some(f)) => what.push_str(&format!(" ({p:.0} held, {f:.0} failed so far)")),
            (Some(p), None) => what.push_str(&format!(" ({p:.0} held so far)")),
            (None, Some(f)) => what.push_str(&format!(" ({f:.0} failed so far)")),
            (None, None) => {}
        }
        return (what, notes);
    }
    let text = s.capacity_text();
    let (head, paren) = match text.split_once(" (") {
        Some((h, p)) => (h.to_string(), Some(p.trim_end_matches(')').to_string())),
        None => (text.clone(), None),
    };
    notes.extend(paren);
    if s.outcome == SearchOutcome::MaxSteps {
        notes.push(format!(
            "UNCONFIRMED: the step budget ran out before the bracket narrowed to {:.0} %",
            s.resolution * 100.0
        ));
    }
    if let Some(v) = s.vcpu_per_1k_rps {
        notes.push(format!("{v:.2} vCPU per 1000 req/s"));
    }
    (head, notes)
}

/// One sentence on a searched cell (None for a cell without a search).
pub fn sentence(c: &CellResult) -> Option<String> {
    let s = c.search.as_ref()?;
    let (who, verb) = who(c);
    let slo = if s.slo.is_empty() {
        "its SLO".to_string()
    } else {
        s.slo.join(", ")
    };
    let (head, notes) = figure(s);
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    let body = if s.outcome == SearchOutcome::Interrupted {
        format!("the search of {who} at {slo} was {head}")
    } else {
        format!("{who} {verb} {head} at {slo}{notes}")
    };
    Some(format!("{} {body}.", capitalise(&setting_phrase(c))))
}

/// One sentence per measured searched cell, in run order; when two cells would read the
/// same, each names its cell.
pub fn sentences(run: &RunResult) -> Vec<String> {
    let cells: Vec<&CellResult> = run
        .cells
        .iter()
        .filter(|c| c.measured() && c.search.is_some())
        .collect();
    let phrases: Vec<String> = cells.iter().map(|c| setting_phrase(c)).collect();
    cells
        .iter()
        .zip(&phrases)
        .filter_map(|(c, p)| {
            let line = sentence(c)?;
            if phrases.iter().filter(|q| *q == p).count() > 1 {
                Some(format!("{line} (cell {})", c.id))
            } else {
                Some(line)
            }
        })
        .collect()
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
