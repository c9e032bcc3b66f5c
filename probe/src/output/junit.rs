//! `--junit FILE`: one testsuite, one testcase per finding. fail -> `<failure>`; warn ->
//! `<failure>` only with `--fail-on warn`, else `<system-out>`; skip -> `<skipped/>`.

use meshbench_schema::{ProbeReport, Verdict};
use quick_xml::escape::escape;

pub fn render(report: &ProbeReport, fail_on_warn: bool) -> String {
    let failed = |v: Verdict| v == Verdict::Fail || (fail_on_warn && v == Verdict::Warn);
    let failures = report.findings.iter().filter(|f| failed(f.verdict)).count();
    let skipped = report
        .findings
        .iter()
        .filter(|f| f.verdict == Verdict::Skip)
        .count();
    let tests = report.findings.len();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"probe\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
        report.duration_s
    ));
    x.push_str(&format!(
        "  <testsuite name=\"probe.{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\" timestamp=\"{}\" hostname=\"{}\">\n",
        escape(report.node.as_str()),
        report.duration_s,
        escape(report.started_at.as_str()),
        escape(report.node.as_str()),
    ));
    x.push_str(&format!(
        "    <properties><property name=\"profile\" value=\"{}\"/><property name=\"root\" value=\"{}\"/></properties>\n",
        escape(report.profile.as_str()),
        escape(report.root.as_str())
    ));
    for f in &report.findings {
        let group = f.check.split('.').next().unwrap_or("probe");
        x.push_str(&format!(
            "    <testcase classname=\"probe.{}\" name=\"{}: {}\" time=\"0\">",
            escape(group),
            escape(f.check.as_str()),
            escape(f.title.as_str())
        ));
        let detail = format!(
            "value: {}\nthreshold: {}\nremedy: {}\nnote: {}",
            f.value,
            f.threshold,
            f.remedy.as_deref().unwrap_or("-"),
            f.reason.as_deref().unwrap_or("-")
        );
        match f.verdict {
            Verdict::Skip => x.push_str(&format!(
                "<skipped message=\"{}\"/>",
                escape(f.reason.as_deref().unwrap_or("skipped"))
            )),
            v if failed(v) => x.push_str(&format!(
                "<failure type=\"{}\" message=\"{}\">{}</failure>",
                if v == Verdict::Fail { "fail" } else { "warn" },
                escape(format!("{} (threshold: {})", f.value, f.threshold).as_str()),
                escape(detail.as_str())
            )),
            _ => x.push_str(&format!(
                "<system-out>verdict: {}\n{}</system-out>",
                if f.verdict == Verdict::Warn {
                    "warn"
                } else {
                    "pass"
                },
                escape(detail.as_str())
            )),
        }
        x.push_str("</testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}
