//! `report fleet`: probe reports of several nodes side by side.

use std::path::{Path, PathBuf};

use meshbench_schema::*;

use crate::{bin, p, stdout};

fn finding(check: &str, verdict: Verdict, value: &str, ms: Vec<(&str, f64, &str)>) -> Finding {
    Finding {
        check: check.into(),
        title: check.into(),
        verdict,
        value: value.into(),
        threshold: String::new(),
        remedy: None,
        reason: None,
        measurements: ms
            .into_iter()
            .map(|(n, v, u)| Measurement {
                name: n.into(),
                value: MeasuredValue::Number(v),
                unit: u.into(),
            })
            .collect(),
    }
}

fn write_probe(dir: &Path, node: &str, findings: Vec<Finding>) -> PathBuf {
    let r = ProbeReport {
        schema_version: PROBE_SCHEMA_VERSION,
        tool: ToolInfo::new("probe", "0.1.0"),
        node: node.into(),
        root: "/".into(),
        started_at: "2026-11-27T21:00:00Z".into(),
        duration_s: 5.0,
        profile: "mesh-node".into(),
        counts: ProbeReport::count(&findings),
        findings,
    };
    let path = dir.join(format!("{node}.json"));
    write_json_atomic(&path, &r).unwrap();
    path
}

#[test]
fn fleet_table_names_failing_checks_per_node_and_charts_steal_and_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_probe(
        dir.path(),
        "node-a",
        vec![
            finding(
                "cpu.steal",
                Verdict::Pass,
                "0.10 %",
                vec![("steal_pct", 0.1, "%"), ("cpu0_steal_pct", 0.1, "%")],
            ),
            finding(
                "disk.fsync",
                Verdict::Pass,
                "2.1 ms",
                vec![
                    ("fdatasync_p50_ms", 1.0, "ms"),
                    ("fdatasync_p99_ms", 2.1, "ms"),
                ],
            ),
            finding("mesh.modules", Verdict::Pass, "all present", vec![]),
        ],
    );
    let bad = write_probe(
        dir.path(),
        "node-b",
        vec![
            finding(
                "cpu.steal",
                Verdict::Fail,
                "4.20 %",
                vec![("steal_pct", 4.2, "%")],
            ),
            finding(
                "disk.fsync",
                Verdict::Warn,
                "14.0 ms",
                vec![("fdatasync_p99_ms", 14.0, "ms")],
            ),
            finding("virtio.nic", Verdict::Fail, "e1000", vec![]),
        ],
    );
    // a node whose I/O test was skipped: no fsync measurement at all
    let partial = write_probe(
        dir.path(),
        "node-c",
        vec![finding(
            "cpu.steal",
            Verdict::Warn,
            "0.80 %",
            vec![("steal_pct", 0.8, "%")],
        )],
    );
    let out = dir.path().join("fleet");
    let o = bin(&["fleet", p(&good), p(&bad), p(&partial), "--out", p(&out)]);
    let table = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "a node failed a check: {table}");
    let row = |node: &str| {
        table
            .lines()
            .find(|l| l.contains(node))
            .unwrap()
            .to_string()
    };
    assert!(row("node-b").contains("cpu.steal, virtio.nic") && row("node-b").contains("4.20 %"));
    assert!(row("node-b").contains("14.00 ms") && row("node-b").contains("disk.fsync"));
    assert!(row("node-a").contains("2.10 ms"));
    assert!(row("node-c").contains("n/a"));
    assert!(table.contains("3 node(s), 1 with a failed check"));

    let md = std::fs::read_to_string(out.join("fleet.md")).unwrap();
    assert!(
        md.contains("| node-b | 4.20 % | 14.00 ms | ❌ FAIL 4.20 % |"),
        "{md}"
    );
    assert!(
        md.contains("virtio.nic")
            && md
                .lines()
                .any(|l| l.starts_with("| node-a") && l.ends_with("- |"))
    );
    let svg = std::fs::read_to_string(out.join("fleet.svg")).unwrap();
    for label in [
        "CPU steal (%, left axis)",
        "fdatasync p99 (ms, right axis)",
        "node-a",
        "node-c",
    ] {
        assert!(svg.contains(label), "{label}");
    }
    assert_eq!(
        svg.matches(">\nn/a\n<").count(),
        1,
        "node-c's missing fsync is marked"
    );
    assert!(out.join("fleet.png").exists());
    let html = std::fs::read_to_string(out.join("fleet.html")).unwrap();
    assert!(html.contains("<svg") && !html.contains("<script") && !html.contains("https://"));

    // all nodes healthy: exit 0
    let o = bin(&["fleet", p(&good), "--out", p(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn a_probe_report_of_an_unknown_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_probe(dir.path(), "n", vec![]);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    v["schema_version"] = 2.into();
    std::fs::write(&f, v.to_string()).unwrap();
    let o = bin(&["fleet", p(&f), "--out", p(&dir.path().join("o"))]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("n.json") && err.contains("schema version 2"),
        "{err}"
    );
    assert!(!dir.path().join("o").exists());
}

#[test]
fn a_measurement_near_f64_max_is_refused_with_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_probe(
        dir.path(),
        "n",
        vec![finding(
            "cpu.steal",
            Verdict::Pass,
            "huge",
            vec![("steal_pct", f64::MAX, "%")],
        )],
    );
    let t0 = std::time::Instant::now();
    let o = bin(&["fleet", p(&f), "--out", p(&dir.path().join("o"))]);
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("chart fleet") && err.contains("outside any axis"),
        "{err}"
    );
}

/// The DaemonSet leaves one `<node>.json` per node in a directory: `report fleet DIR` reads
/// them all (and only them), in name order; an empty directory is an error.
#[test]
fn a_directory_of_node_reports_is_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    for node in ["node-b", "node-a"] {
        write_probe(
            &reports,
            node,
            vec![finding(
                "cpu.steal",
                Verdict::Pass,
                "0.1 %",
                vec![("steal_pct", 0.1, "%")],
            )],
        );
    }
    write_probe(
        &reports,
        "node-c",
        vec![finding(
            "disk.fsync",
            Verdict::Fail,
            "30 ms",
            vec![("fdatasync_p99_ms", 30.0, "ms")],
        )],
    );
    std::fs::write(reports.join("notes.txt"), "not a report").unwrap();
    let out = dir.path().join("out");
    let o = bin(&["fleet", p(&reports), "--out", p(&out)]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("3 node(s), 1 with a failed check"), "{text}");
    let (a, b, c) = (
        text.find("node-a").unwrap(),
        text.find("node-b").unwrap(),
        text.find("node-c").unwrap(),
    );
    assert!(a < b && b < c, "{text}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = bin(&["fleet", p(&empty), "--out", p(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no probe reports"));
}
