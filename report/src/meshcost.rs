//! What the mesh costs, in words: one sentence per mesh mode and access-log mode (added
//! p99 per CPU limit against the run's baseline, and the sidecars' CPU per 1000 req/s),
//! for the terminal summary, summary.md and the HTML report; and a cell's "added p99".

use meshbench_schema::{CellResult, RunResult};

use crate::format::cpu_label;

pub use meshbench_schema::text::signed_us;

/// Whether any cell of the run carries a mesh mode (the embedded mesh's matrix).
pub fn has_modes(run: &RunResult) -> bool {
    run.cells.iter().any(|c| c.settings.mesh_mode.is_some())
}

/// A cell's added p99 for a table: `+1.2 ms`, `baseline`, or `-` (none to compare with).
pub fn added_p99_brief(c: &CellResult) -> String {
    if c.settings.mesh_mode.as_deref() == Some("baseline") {
        return "baseline".into();
    }
    match c.mesh_cost.as_ref().and_then(|m| m.added.as_ref()) {
        Some(a) => signed_us(a.p99_us),
        None => "-".into(),
    }
}

/// How a mode is said in a sentence.
fn mode_phrase(mode: &str) -> (&'static str, &'static str) {
    match mode {
        "both" => ("client and server sidecars", "add"),
        "server" => ("the server-side sidecar", "adds"),
        _ => ("the mesh", "adds"),
    }
}

/// One sentence per (mode, access-log mode, rate, connections) with the added p99 at each
/// CPU limit, the sidecars' vCPU per 1000 req/s, and a line when there is no baseline.
pub fn sentences(run: &RunResult) -> Vec<String> {
    if !has_modes(run) {
        return vec![];
    }
    let mesh_cells: Vec<&CellResult> = run
        .cells
        .iter()
        .filter(|c| matches!(c.settings.mesh_mode.as_deref(), Some("server" | "both")))
        .collect();
    if mesh_cells.is_empty() {
        return vec![];
    }
    let has_baseline = run
        .cells
        .iter()
        .any(|c| c.settings.mesh_mode.as_deref() == Some("baseline"));
    let several_loads = {
        let mut loads: Vec<(Option<u64>, u32)> = mesh_cells
            .iter()
            .map(|c| (c.settings.rate.map(f64::to_bits), c.settings.connections))
            .collect();
        loads.sort();
        loads.dedup();
        loads.len() > 1
    };
    // groups in first-seen order
    type Key = (String, String, Option<u64>, u32);
    let mut groups: Vec<(Key, Vec<&CellResult>)> = Vec::new();
    for c in &mesh_cells {
        let k: Key = (
            c.settings.mesh_mode.clone().unwrap_or_default(),
            c.settings
                .access_log
                .clone()
                .unwrap_or_else(|| "n/a".into()),
            c.settings.rate.map(f64::to_bits),
            c.settings.connections,
        );
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(c),
            None => groups.push((k, vec![c])),
        }
    }
    let mut out = Vec::new();
    if !has_baseline {
        out.push(
            "What the mesh adds is not known: the run has no baseline cell (add \"baseline\" to [matrix] mode).".to_string(),
        );
    }
    for ((mode, log, rate, conns), cells) in groups {
        let (who, verb) = mode_phrase(&mode);
        let load = if several_loads {
            format!(
                " at {} over {conns} connections",
                rate.map(|r| format!("{} req/s", f64::from_bits(r)))
                    .unwrap_or_else(|| "closed loop".into())
            )
        } else {
            String::new()
        };
        let parts: Vec<String> = cells
            .iter()
            .filter_map(|c| {
                let a = c.mesh_cost.as_ref()?.added.as_ref()?;
                let cpu = cpu_label(
                    c.settings.sidecar_cpu_millis,
                    c.settings.sidecar_cpu.as_deref(),
                );
                let resolved = match (
                    &c.settings.cpu_limit_calibration,
                    c.settings.sidecar_cpu_millis,
                ) {
                    (Some(_), Some(m)) => format!(" (={m}m)"),
                    _ => String::new(),
                };
                Some(format!("{} at {cpu}{resolved}", signed_us(a.p99_us)))
            })
            .collect();
        let vcpu: Vec<String> = cells
            .iter()
            .filter(|c| c.settings.sidecar_cpu_millis.is_none())
            .filter_map(|c| c.mesh_cost.as_ref()?.vcpu_per_1k_rps)
            .map(|v| format!("{v:.2}"))
            .collect();
        let vcpu = match vcpu.first() {
            Some(v) => format!("; with no CPU limit the sidecars use {v} vCPU per 1000 req/s"),
            None => String::new(),
        };
        if parts.is_empty() {
            if has_baseline {
                out.push(format!(
                    "{} (log {log}){load}: no added latency could be computed{vcpu}.",
                    capitalise(who)
                ));
            }
            continue;
        }
        out.push(format!(
            "{} {verb} {} at p99 with access log {log}{load}{vcpu}.",
            capitalise(who),
            parts.join(", ")
        ));
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
