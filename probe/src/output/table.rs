//! The terminal table: check, value, threshold, verdict, remedy (or the reason of a skip).

use comfy_table::{presets, Attribute, Cell, Color, ContentArrangement, Table};
use meshbench_schema::{ProbeReport, Verdict};

pub fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Warn => "warn",
        Verdict::Fail => "FAIL",
        Verdict::Skip => "skip",
    }
}

/// Render the table; `color` adds ANSI colours to the verdict column (only on a TTY).
pub fn render(report: &ProbeReport, color: bool) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if !color {
        t.force_no_tty();
        if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            // no terminal width to follow: wrap long cells at a readable width
            t.set_width(180);
        }
    } else {
        t.enforce_styling();
    }
    t.set_header(vec![
        "Check",
        "Value",
        "Threshold",
        "Verdict",
        "Remedy / note",
    ]);
    for f in &report.findings {
        let mut v = Cell::new(verdict_word(f.verdict));
        if color {
            v = match f.verdict {
                Verdict::Pass => v.fg(Color::Green),
                Verdict::Warn => v.fg(Color::Yellow).add_attribute(Attribute::Bold),
                Verdict::Fail => v.fg(Color::Red).add_attribute(Attribute::Bold),
                Verdict::Skip => v.fg(Color::DarkGrey),
            };
        }
        let note = match (&f.remedy, &f.reason) {
            (Some(r), _) => r.clone(),
            (None, Some(r)) if f.verdict == Verdict::Skip => r.clone(),
            _ => String::new(),
        };
        t.add_row(vec![
            Cell::new(format!("{} ({})", f.title, f.check)),
            Cell::new(&f.value),
            Cell::new(&f.threshold),
            v,
            Cell::new(note),
        ]);
    }
    let c = &report.counts;
    format!(
        "{t}\nprobe {}: {} pass, {} warn, {} fail, {} skip in {:.1} s (profile {}, root {})\n",
        report.node, c.pass, c.warn, c.fail, c.skip, report.duration_s, report.profile, report.root
    )
}
