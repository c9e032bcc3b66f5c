//! The gate's markdown: one row per verdict, with the figures that decided it.

use std::fmt::Write as _;

use super::GateResult;
use crate::format::md;
use crate::load::LoadedRun;

/// Markdown explanation of every verdict.
pub fn markdown(
    current: &LoadedRun,
    baseline: Option<&LoadedRun>,
    results: &[GateResult],
) -> String {
    let failed = results.iter().filter(|r| r.verdict.fails()).count();
    let mut s = format!(
        "## Gate: {} — {}\n\n",
        md(&current.run.scenario),
        if failed == 0 {
            "✅ all gates passed".to_string()
        } else {
            format!("❌ {failed} of {} gate(s) failed", results.len())
        }
    );
    let _ = writeln!(
        s,
        "Current `{}`{}.\n",
        md(&current.dir.display().to_string()),
        baseline
            .map(|b| format!(", baseline `{}`", md(&b.dir.display().to_string())))
            .unwrap_or_default()
    );
    s.push_str("| cell | gate | verdict | explanation |\n|---|---|---|---|\n");
    for r in results {
        let mark = if r.verdict.fails() { "❌" } else { "✅" };
        let _ = writeln!(
            s,
            "| `{}` | `{}` | {mark} {} | {} |",
            md(&r.cell),
            md(&r.gate),
            r.verdict.name(),
            md(&r.explanation)
        );
    }
    s
}
