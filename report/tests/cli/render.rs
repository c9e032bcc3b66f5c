use std::collections::BTreeSet;

use crate::common::{self, CellSpec};
use crate::{bin, p, small_matrix, stdout};

#[test]
fn every_chart_exists_as_svg_and_png_with_its_series_labels() {
    let dir = tempfile::tempdir().unwrap();
    let run = small_matrix(dir.path());
    let out = report::render(dir.path()).unwrap();
    let plots = dir.path().join("plots");
    let mut expected = vec![
        (
            "latency-vs-cpu-limit".to_string(),
            vec!["log=off p99", "log=sync p99.9", "log=sync p50"],
        ),
        (
            "errors-by-class".to_string(),
            vec!["request_timeout", "http_5xx"],
        ),
    ];
    let ids: Vec<&str> = run.cells.iter().map(|c| c.id.as_str()).collect();
    expected.push(("percentiles-all-cells".to_string(), ids));
    for (i, c) in run.cells.iter().enumerate() {
        let slug = report::format::slug(&c.id);
        expected.push((
            format!("percentiles-{:02}-{slug}", i + 1),
            vec![
                "corrected (from intended send time)",
                "uncorrected (service time)",
            ],
        ));
        let mut timeline = vec!["p99 per second, corrected"];
        if c.settings.sidecar_cpu_millis == Some(100) {
            timeline.push("sidecar CPU throttled");
        }
        expected.push((format!("p99-over-time-{:02}-{slug}", i + 1), timeline));
        expected.push((
            format!("send-lag-{:02}-{slug}", i + 1),
            vec![
                "p99 per second, corrected (ms, left axis)",
                "send lag p99 per second (µs, right axis)",
                "send lag limit",
            ],
        ));
        expected.push((
            format!("subsets-{:02}-{slug}", i + 1),
            vec![
                "observed requests",
                "expected from weights",
                "canary_split: passed",
            ],
        ));
    }
    for (id, labels) in &expected {
        let svg = std::fs::read_to_string(plots.join(format!("{id}.svg")))
            .unwrap_or_else(|e| panic!("{id}.svg: {e}"));
        assert!(svg.contains("<svg"), "{id}");
        for l in labels {
            assert!(svg.contains(l), "{id}.svg lacks the label {l:?}");
        }
        assert!(
            svg.contains("DejaVu Sans, sans-serif"),
            "{id}: font family with fallback"
        );
        let png = std::fs::read(plots.join(format!("{id}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{id}.png is a PNG");
        assert!(
            png.len() > 5000,
            "{id}.png has content ({} bytes)",
            png.len()
        );
    }
    // exactly these files, nothing else (no temp files left behind)
    let on_disk: BTreeSet<String> = std::fs::read_dir(&plots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = expected
        .iter()
        .flat_map(|(id, _)| [format!("{id}.svg"), format!("{id}.png")])
        .collect();
    assert_eq!(on_disk, want);
    assert_eq!(out.plots.len(), want.len());
    assert!(out.not_drawn.is_empty(), "{:?}", out.not_drawn);
}

#[test]
fn report_html_holds_every_chart_inline_and_references_nothing_outside() {
    let dir = tempfile::tempdir().unwrap();
    small_matrix(dir.path());
    let o = bin(&["render", p(dir.path())]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("report.html"));
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    let svgs = std::fs::read_dir(dir.path().join("plots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "svg"))
        .collect::<Vec<_>>();
    assert_eq!(svgs.len(), 3 + 4 * 4);
    for svg in &svgs {
        let id = svg.file_stem().unwrap().to_str().unwrap();
        assert!(
            html.contains(&format!("data-chart=\"{id}\"")),
            "{id} not inline"
        );
        let body = std::fs::read_to_string(svg).unwrap();
        // the inline copy gains role/aria-label in its opening tag; the drawing is the same
        let start = body.find("<svg").unwrap();
        let drawing = start + body[start..].find('>').unwrap() + 1;
        assert!(
            html.contains(&body[drawing..body.len().min(drawing + 2000)]),
            "{id}: inline copy differs"
        );
    }
    assert_eq!(html.matches("<svg").count(), svgs.len());
    assert_eq!(
        html.matches("<svg role=\"img\" aria-label=").count(),
        svgs.len()
    );
    let lower = html.to_lowercase();
    for bad in [
        "http://", "https://", "src=", "url(", "<script", "<link", "@import", "<img", "<iframe",
    ] {
        // the only URL allowed is the SVG namespace identifier, which is not fetched
        let count = lower.matches(bad).count();
        let allowed = if bad == "http://" {
            lower
                .matches("xmlns=\"http://www.w3.org/2000/svg\"")
                .count()
        } else {
            0
        };
        assert_eq!(count, allowed, "report.html contains {bad}");
    }
    for (i, _) in lower.match_indices("href=\"") {
        assert_eq!(&lower[i + 6..i + 7], "#", "only in-page links");
    }
    // tables per cell, checks with verdicts
    for id in ["cpu=100m,log=off", "cpu=none,log=sync"] {
        assert!(html.contains(&format!("Cell {id}")), "{id}");
    }
    assert!(html.contains("strict_mtls") && html.contains("canary_split"));
    assert!(html.contains("class=\"passed\""));
}

#[test]
fn summary_md_has_one_row_per_cell_with_percentiles_rate_errors_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let run = small_matrix(dir.path());
    report::render(dir.path()).unwrap();
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.contains("| cell | requests | rate (achieved / target) | p50 | p90 | p99 | p99.9 | send lag p99 | errors | checks |"));
    for c in &run.cells {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| `{}`", c.id)))
            .unwrap_or_else(|| panic!("no row for {}", c.id));
        let p99 = report::format::us(c.latency.corrected.p99_us);
        assert!(row.contains(&p99), "{row} lacks p99 {p99}");
        assert!(row.contains("1 passed"), "{row}");
    }
    // the cell with errors names its classes
    assert!(
        md.contains("17 (") && md.contains("request_timeout 12, http_5xx 5"),
        "{md}"
    );
    assert!(md.contains("| run | strict_mtls | ✅ passed |"));
    assert!(md.contains("Overall: all checks passed."));
}

#[test]
fn a_single_cpu_setting_says_so_instead_of_drawing_the_headline() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = CellSpec::new("log=off", Some(500), "off");
    a.seconds = 5;
    let mut b = CellSpec::new("log=sync", Some(500), "sync");
    b.seconds = 5;
    common::write_run(dir.path(), "one-cpu", &[a, b]);
    let out = report::render(dir.path()).unwrap();
    assert_eq!(out.not_drawn.len(), 1, "{:?}", out.not_drawn);
    assert!(out.not_drawn[0].contains("single CPU setting (500m)"));
    assert!(!dir.path().join("plots/latency-vs-cpu-limit.svg").exists());
    // no errors in this run: no errors chart either
    assert!(!dir.path().join("plots/errors-by-class.svg").exists());
    let html = std::fs::read_to_string(&out.report_html).unwrap();
    assert!(html.contains("single CPU setting (500m)"));
    let md = std::fs::read_to_string(&out.summary_md).unwrap();
    assert!(md.contains("## Charts not drawn") && md.contains("single CPU setting"));
}

#[test]
fn warnings_unapplied_limits_failed_checks_and_interruption_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = CellSpec::new("cpu=100m", Some(100), "off");
    a.seconds = 4;
    a.cpu_applied = false;
    a.subsets = vec![("v1".into(), 90.0), ("v2".into(), 10.0)];
    a.split_passed = false;
    let mut b = CellSpec::new("cpu=none", None, "off");
    b.seconds = 4;
    let mut run = common::write_run(dir.path(), "warned", &[a, b]);
    run.interrupted = true;
    run.finished_at = None;
    run.cells[1].interrupted = true;
    run.warnings = vec!["server certificate verification was disabled".into()];
    meshbench_schema::write_json_atomic(&dir.path().join("run.json"), &run).unwrap();
    report::render(dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("id=\"interrupted\""));
    assert!(html.contains("server certificate verification was disabled"));
    assert!(html.contains("sidecar CPU limit 100m was NOT applied (--no-cpu-limits)"));
    assert!(html.contains("Cell cpu=none was cut short"));
    assert!(html.contains("a check FAILED"));
    let svg = std::fs::read_to_string(dir.path().join("plots/subsets-01-cpu_100m.svg")).unwrap();
    assert!(svg.contains("canary_split: FAILED"));
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.contains("> [!WARNING]") && md.contains("interrupted"));
    assert!(md.contains("❌ FAILED") && md.contains("1 FAILED: canary_split"));
    assert!(md.contains("**a check FAILED**"));
}

#[test]
fn a_cell_without_interval_log_is_drawn_from_its_summary_and_the_gap_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = CellSpec::new("a", Some(100), "off");
    a.seconds = 3;
    let mut b = CellSpec::new("b", None, "off");
    b.seconds = 3;
    let mut run = common::write_run(dir.path(), "nolog", &[a, b]);
    run.cells[0].hlog = None;
    meshbench_schema::write_json_atomic(&dir.path().join("run.json"), &run).unwrap();
    let out = report::render(dir.path()).unwrap();
    assert!(out
        .not_drawn
        .iter()
        .any(|n| n.contains("'a'") && n.contains("no interval log")));
    let svg = std::fs::read_to_string(dir.path().join("plots/percentiles-01-a.svg")).unwrap();
    assert!(svg.contains("summary points"));
}

#[test]
fn cells_sharing_cpu_and_log_mode_are_named_when_left_off_the_headline() {
    let dir = tempfile::tempdir().unwrap();
    let mut specs = vec![
        CellSpec::new("h1,cpu=100m", Some(100), "off"),
        CellSpec::new("h2,cpu=100m", Some(100), "off"),
        CellSpec::new("h1,cpu=none", None, "off"),
    ];
    for s in &mut specs {
        s.seconds = 3;
    }
    common::write_run(dir.path(), "dup", &specs);
    let out = report::render(dir.path()).unwrap();
    assert_eq!(out.not_drawn.len(), 1, "{:?}", out.not_drawn);
    assert!(out.not_drawn[0].contains("cell 'h2,cpu=100m' is not drawn"));
    assert!(dir.path().join("plots/latency-vs-cpu-limit.svg").exists());
}

#[test]
fn a_cell_that_measured_nothing_renders_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let mut empty = CellSpec::new("empty", Some(100), "off");
    empty.seconds = 3;
    empty.rate = 0; // intervals exist, every histogram is empty
    let mut zero = CellSpec::new("zero-seconds", None, "off");
    zero.seconds = 0; // no interval at all, no request either
    let mut run = common::write_run(dir.path(), "empty", &[empty, zero]);
    run.cells[1].interrupted = true;
    meshbench_schema::write_json_atomic(&dir.path().join("run.json"), &run).unwrap();
    let o = bin(&["render", p(dir.path())]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.contains("| `empty` | 0 |"), "{md}");
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(
        html.contains("p99 over time for cell &#39;empty&#39;: not drawn, its interval log has no second with a completed request"),
        "{html}"
    );
    // and a gate on it fails for want of data, it does not pass silently
    let o = bin(&["gate", p(dir.path()), "--slo", "p99<1s"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("no completed requests"));
}

#[test]
fn subset_counts_near_u64_max_render_without_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = CellSpec::new("c", None, "off");
    s.seconds = 3;
    s.subsets = vec![("v1".into(), 50.0), ("v2".into(), 50.0)];
    let mut r = common::write_run(dir.path(), "huge", &[s]);
    for sub in &mut r.cells[0].subsets {
        sub.count = u64::MAX;
    }
    meshbench_schema::write_json_atomic(&dir.path().join("run.json"), &r).unwrap();
    let o = bin(&["render", p(dir.path())]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(dir.path().join("plots/subsets-01-c.svg").exists());
}

/// A real-mesh run whose first cell's settings could not be applied: the cell is shown as
/// not measured (never as zero latency), left off every chart, fails the gate even with no
/// SLO given, and compares as absent.
#[test]
fn a_cell_whose_settings_were_not_applied_is_shown_gated_and_never_charted() {
    let dir = tempfile::tempdir().unwrap();
    let mut specs = common::matrix(&[Some(100), Some(500), None], &["off"]);
    for s in &mut specs {
        s.seconds = 3;
    }
    let mut run = common::write_run(dir.path(), "driven", &specs);
    let reason = "apply: `sh -c 'sh apply.sh'` exited with status 1: quota rejected";
    let c = &mut run.cells[0];
    c.failed = Some(reason.into());
    c.hlog = None;
    c.requests = 0;
    c.ok = 0;
    c.latency = Default::default();
    c.subsets.clear();
    c.sidecar = None;
    c.sidecars.clear();
    c.checks = vec![meshbench_schema::CheckResult {
        name: "driver".into(),
        status: meshbench_schema::CheckStatus::Failed,
        summary: format!("FAILED: not applied: {reason}"),
        details: serde_json::Value::Null,
    }];
    run.cells[1].driver = Some(meshbench_schema::DriverEvidence {
        applied: vec!["sh apply.sh".into()],
        apply_s: 1.5,
        verified: Some("quota=50000/100000".into()),
        ..Default::default()
    });
    run.driver = Some(meshbench_schema::DriverRun {
        driver: "command".into(),
        restored: vec!["sh restore.sh".into()],
        log_dir: Some("driver".into()),
        ..Default::default()
    });
    meshbench_schema::write_json_atomic(&dir.path().join("run.json"), &run).unwrap();
    let failed_id = run.cells[0].id.clone();
    let out = report::render(dir.path()).unwrap();
    assert!(out
        .not_drawn
        .iter()
        .any(|n| n.contains(&failed_id) && n.contains("not measured")));
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(
        md.contains("INCOMPLETE RUN") && md.contains("quota rejected"),
        "{md}"
    );
    let row = md
        .lines()
        .find(|l| l.contains(&format!("`{failed_id}`")))
        .unwrap();
    assert!(
        row.contains("(not measured)") && !row.contains("0 µs"),
        "{row}"
    );
    assert!(
        md.contains("by the command driver; restored after the run; command output in driver/"),
        "{md}"
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("Not measured: apply:"));
    assert!(html.contains("verified: quota=50000/100000"));
    // the headline chart has the measured CPU limits only
    let svg = std::fs::read_to_string(dir.path().join("plots/latency-vs-cpu-limit.svg")).unwrap();
    let label = |l: &str| svg.lines().any(|line| line.trim() == l);
    assert!(
        !label("100m") && label("500m"),
        "the failed 100m cell was drawn: {svg}"
    );
    for f in std::fs::read_dir(dir.path().join("plots"))
        .unwrap()
        .flatten()
    {
        let name = f.file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains("-01-"),
            "a chart for the unmeasured cell: {name}"
        );
    }
    // gated: fails with no SLO given, and names the reason
    let o = bin(&["gate", p(dir.path())]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    let g = text
        .lines()
        .find(|l| l.contains(&format!("`{failed_id}`")))
        .unwrap();
    assert!(
        g.contains("`complete`") && g.contains("not measured: apply:"),
        "{g}"
    );
    // an SLO is judged on the measured cells only, and the failed one fails as not measured
    let o = bin(&["gate", p(dir.path()), "--slo", "p99<10s"]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(!text.contains("no completed requests"), "{text}");
    // compared with itself: the unmeasured cell is absent from both sides
    let o = bin(&["compare", p(dir.path()), p(dir.path())]);
    let text = stdout(&o);
    assert!(
        !text.contains(&format!("cell {failed_id}:")) || text.contains("only in"),
        "{text}"
    );
}
