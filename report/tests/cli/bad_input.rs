//! Bad input: one line on stderr naming the file or expression, exit 2, no panic, and no
//! report written (not even half a one).

use std::path::Path;

use crate::common::{self, CellSpec};
use crate::{bin, p, stderr};

fn one_cell_run(dir: &Path) {
    let mut s = CellSpec::new("only", Some(100), "off");
    s.seconds = 4;
    common::write_run(dir, "bad", &[s]);
}

/// `report render` fails with exit 2 and one line containing every `needle`; nothing of
/// the report exists afterwards.
fn render_fails(dir: &Path, needles: &[&str]) {
    let o = bin(&["render", p(dir)]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{err:?} lacks {n:?}");
    }
    assert!(!dir.join("report.html").exists(), "a report was written");
    assert!(!dir.join("summary.md").exists(), "a summary was written");
    assert!(!dir.join("plots").exists(), "plots were written");
    let tmp: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn missing_run_json() {
    let dir = tempfile::tempdir().unwrap();
    render_fails(dir.path(), &["run.json", "No such file"]);
}

#[test]
fn truncated_run_json() {
    let dir = tempfile::tempdir().unwrap();
    one_cell_run(dir.path());
    let f = dir.path().join("run.json");
    let text = std::fs::read(&f).unwrap();
    std::fs::write(&f, &text[..text.len() / 2]).unwrap();
    render_fails(dir.path(), &["run.json", "not a valid run.json"]);
}

#[test]
fn corrupt_run_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("run.json"), b"\x00\xffnot json at all").unwrap();
    render_fails(dir.path(), &["run.json", "not a valid run.json"]);
}

#[test]
fn run_json_of_the_wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("run.json"),
        br#"{"schema_version": 1, "cells": 3}"#,
    )
    .unwrap();
    render_fails(dir.path(), &["run.json", "not a valid run.json"]);
}

#[test]
fn unknown_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    one_cell_run(dir.path());
    let f = dir.path().join("run.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    v["schema_version"] = 7.into();
    std::fs::write(&f, v.to_string()).unwrap();
    render_fails(dir.path(), &["run.json", "schema version 7"]);
}

#[test]
fn missing_hlog() {
    let dir = tempfile::tempdir().unwrap();
    one_cell_run(dir.path());
    std::fs::remove_file(dir.path().join("cell-0.hlog")).unwrap();
    render_fails(dir.path(), &["cell-0.hlog", "No such file"]);
}

#[test]
fn truncated_hlog() {
    let dir = tempfile::tempdir().unwrap();
    one_cell_run(dir.path());
    let f = dir.path().join("cell-0.hlog");
    let bytes = std::fs::read(&f).unwrap();
    // cut in the middle of the last interval line
    std::fs::write(&f, &bytes[..bytes.len() - 40]).unwrap();
    render_fails(dir.path(), &["cell-0.hlog", "not a valid interval log"]);
}

#[test]
fn hlog_cut_before_any_interval() {
    let dir = tempfile::tempdir().unwrap();
    one_cell_run(dir.path());
    let f = dir.path().join("cell-0.hlog");
    let text = std::fs::read_to_string(&f).unwrap();
    let header: String = text
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&f, header).unwrap();
    render_fails(dir.path(), &["cell-0.hlog", "no intervals"]);
}

#[test]
fn corrupt_histogram_in_hlog() {
    let dir = tempfile::tempdir().unwrap();
    one_cell_run(dir.path());
    let f = dir.path().join("cell-0.hlog");
    let text = std::fs::read_to_string(&f).unwrap();
    // keep the line structure, garble the encoded histogram of the first interval
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let i = lines.iter().position(|l| l.starts_with("Tag=")).unwrap();
    let (head, _) = lines[i].rsplit_once(',').unwrap();
    lines[i] = format!("{head},HISTFAAAACR4nJNpmSzMwMDAxMAAAAnqAS8=garbage");
    std::fs::write(&f, lines.join("\n") + "\n").unwrap();
    render_fails(dir.path(), &["cell-0.hlog", "interval 1"]);
}

#[test]
fn binary_garbage_as_hlog() {
    let dir = tempfile::tempdir().unwrap();
    one_cell_run(dir.path());
    std::fs::write(
        dir.path().join("cell-0.hlog"),
        [0xffu8, 0x00, 0x13, 0x37, b'\n', 0x80],
    )
    .unwrap();
    render_fails(dir.path(), &["cell-0.hlog"]);
}

#[test]
fn an_existing_report_survives_a_failed_render() {
    let dir = tempfile::tempdir().unwrap();
    one_cell_run(dir.path());
    report::render(dir.path()).unwrap();
    let before = std::fs::read(dir.path().join("report.html")).unwrap();
    std::fs::write(
        dir.path().join("cell-0.hlog"),
        b"Tag=corrected,0.0,1.0,1.0,@@@",
    )
    .unwrap();
    let o = bin(&["render", p(dir.path())]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        std::fs::read(dir.path().join("report.html")).unwrap(),
        before
    );
}

#[test]
fn bad_expressions_and_arguments_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    one_cell_run(dir.path());
    let d = p(dir.path());
    for (args, needle) in [
        (vec!["gate", d, "--slo", "p99<50"], "SLO 'p99<50'"),
        (vec!["gate", d, "--slo", "p97<5ms"], "unknown metric 'p97'"),
        (vec!["gate", d, "--slo", "errors<0.1"], "percentage"),
        (
            vec!["gate", d, "--baseline", d, "--max-regression", "p99+10%"],
            "max-regression 'p99+10%'",
        ),
        (
            vec!["gate", d, "--max-regression", "p99=+10%"],
            "needs --baseline",
        ),
        (vec!["gate", d], "nothing to gate"),
        (
            vec!["gate", d, "--baseline", "/nonexistent/base"],
            "/nonexistent/base/run.json",
        ),
        (
            vec!["compare", d, "/nonexistent/x"],
            "/nonexistent/x/run.json",
        ),
        (
            vec!["merge", "/tmp/never.hlog", "/nonexistent.hlog"],
            "/nonexistent.hlog",
        ),
        (vec!["fleet", "/nonexistent.json"], "/nonexistent.json"),
    ] {
        let o = bin(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
    assert!(!Path::new("/tmp/never.hlog").exists());
}

#[test]
fn an_slo_in_run_json_that_does_not_parse_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    one_cell_run(dir.path());
    let f = dir.path().join("run.json");
    let mut run = meshbench_schema::read_run(&f).unwrap();
    run.slo = vec!["p99 < fast".into()];
    meshbench_schema::write_json_atomic(&f, &run).unwrap();
    let o = bin(&["gate", p(dir.path())]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        err.contains("run.json") && err.contains("p99 < fast"),
        "{err}"
    );
}
