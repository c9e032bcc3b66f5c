//! Gates against constructed runs: the three-way regression verdict, SLOs, exit codes,
//! JUnit structure.

use std::path::Path;

use quick_xml::events::Event;
use quick_xml::Reader;
use tempfile::TempDir;

use crate::common::{self, CellSpec};
use crate::{bin, p, stdout};

/// One-cell run: 30 s at 200/s, latencies scaled by `scale`, noise from `seed`.
fn run(dir: &Path, scale: f64, seed: u64, seconds: usize) {
    let mut s = CellSpec::new("cpu=500m,log=off", Some(500), "off");
    s.scale = scale;
    s.seed = seed;
    s.seconds = seconds;
    common::write_run(dir, "gate", &[s]);
}

/// A baseline run (scale 1.0, seed 1) and a current run with latencies scaled by `scale`
/// and noise from `seed`, `seconds` each.
fn base_and_current(scale: f64, seed: u64, seconds: usize) -> (TempDir, TempDir) {
    let (base, cur) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(base.path(), 1.0, 1, seconds);
    run(cur.path(), scale, seed, seconds);
    (base, cur)
}

fn gate_row<'a>(out: &'a str, gate: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(&format!("`{gate}`")))
        .unwrap_or_else(|| panic!("no row for {gate} in\n{out}"))
}

#[test]
fn a_30_percent_p99_regression_fails_as_regressed() {
    let (base, cur) = base_and_current(1.3, 2, 30);
    let junit = cur.path().join("junit.xml");
    let o = bin(&[
        "gate",
        p(cur.path()),
        "--baseline",
        p(base.path()),
        "--max-regression",
        "p99=+10%",
        "--junit",
        p(&junit),
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let row = gate_row(&out, "p99=+10%");
    assert!(row.contains("❌ Regressed"), "{row}");
    assert!(row.contains("Mann-Whitney p ="), "{row}");
    assert!(out.contains("❌ 1 of 1 gate(s) failed"));
    let (tests, failures) = junit_counts(&junit);
    assert_eq!((tests, failures), (1, 1));
}

#[test]
fn a_change_within_the_noise_passes_as_non_significant() {
    let (base, cur) = base_and_current(1.0, 2, 30); // same distribution, other noise
    let o = bin(&["gate", p(cur.path()), "--baseline", p(base.path())]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    // the default gate is p99=+10%
    let row = gate_row(&out, "p99=+10%");
    assert!(row.contains("✅ NonSignificant"), "{row}");
}

#[test]
fn a_change_beyond_the_threshold_that_the_noise_explains_is_non_significant() {
    // Very noisy runs (each second scaled by a log-normal factor): two runs of the same
    // system can differ by more than 10 % at p99 by chance. The per-second series overlap,
    // so the test must not call that a regression.
    let dir = tempfile::tempdir().unwrap();
    let noisy = |seed: u64, seconds: usize| {
        let mut s = CellSpec::new("noisy", None, "off");
        s.seed = seed;
        s.seconds = seconds;
        s.jitter = 0.5;
        s.rate = 100;
        s
    };
    let base = dir.path().join("base");
    common::write_run(&base, "noisy", &[noisy(1, 12)]);
    let b = report::load::load_run(&base).unwrap();
    let gate = report::gate::parse_max_regression("p99=+10%").unwrap();
    // the first seed whose whole-run p99 is more than 10 % above the baseline's
    let mut found = None;
    for seed in 2..40 {
        let cur = dir.path().join(format!("cur-{seed}"));
        common::write_run(&cur, "noisy", &[noisy(seed, 12)]);
        let c = report::load::load_run(&cur).unwrap();
        let r = report::gate::regression_on_cell(&gate, &b.cells[0], &c.cells[0], 0.05);
        if r.change.unwrap() > 0.10 {
            found = Some((cur, r));
            break;
        }
        std::fs::remove_dir_all(&cur).unwrap();
    }
    let (cur, r) = found.expect("some seed moves p99 by more than 10 %");
    eprintln!("{}", r.explanation);
    assert!(r.p_value.unwrap() >= 0.05, "{r:?}");
    assert_eq!(r.verdict, report::gate::Verdict::NonSignificant, "{r:?}");
    let o = bin(&["gate", p(&cur), "--baseline", p(&base)]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        gate_row(&out, "p99=+10%").contains("not significant against the run-to-run noise"),
        "{out}"
    );
}

#[test]
fn a_30_percent_improvement_reports_improved() {
    let (base, cur) = base_and_current(0.7, 3, 30);
    let o = bin(&[
        "gate",
        p(cur.path()),
        "--baseline",
        p(base.path()),
        "--max-regression",
        "p99=+10%",
        "--max-regression",
        "p50=+10%",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(gate_row(&out, "p99=+10%").contains("✅ Improved"), "{out}");
    assert!(gate_row(&out, "p50=+10%").contains("✅ Improved"), "{out}");
}

#[test]
fn a_large_change_over_too_few_seconds_is_not_called_a_regression() {
    let (base, cur) = base_and_current(1.3, 2, 2);
    let o = bin(&["gate", p(cur.path()), "--baseline", p(base.path())]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let row = gate_row(&out, "p99=+10%");
    assert!(
        row.contains("NonSignificant") && row.contains("too few"),
        "{row}"
    );
}

#[test]
fn slo_violations_fail_and_met_slos_pass() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 1.0, 1, 10);
    let cur = meshbench_schema::read_run(dir.path()).unwrap();
    let p99_ms = cur.cells[0].latency.corrected.p99_us / 1000.0;
    let above = format!("p99<{:.3}ms", p99_ms * 1.5);
    let below = format!("p99<{:.3}ms", p99_ms * 0.5);
    let o = bin(&[
        "gate",
        p(dir.path()),
        "--slo",
        &above,
        "--slo",
        "errors<0.1%",
        "--slo",
        "rate>150",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(gate_row(&stdout(&o), &above).contains("✅ Passed"));

    let junit = dir.path().join("j.xml");
    let o = bin(&[
        "gate",
        p(dir.path()),
        "--slo",
        &below,
        "--slo",
        "rate>250",
        "--slo",
        "errors<0.1%",
        "--junit",
        p(&junit),
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(gate_row(&out, &below).contains("❌ Failed"), "{out}");
    assert!(
        gate_row(&out, "rate>250").contains("❌ Failed")
            && gate_row(&out, "rate>250").contains("200.0/s")
    );
    assert!(gate_row(&out, "errors<0.1%").contains("✅ Passed"));
    assert_eq!(junit_counts(&junit), (3, 2));
}

#[test]
fn slos_declared_in_the_scenario_travel_in_run_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = CellSpec::new("c", None, "off");
    s.seconds = 5;
    s.errors.http_5xx = 50; // 50 of 1050: 4.8 %
    let mut r = common::write_run(dir.path(), "slo", &[s]);
    r.slo = vec!["errors<1%".into()];
    meshbench_schema::write_json_atomic(&dir.path().join("run.json"), &r).unwrap();
    let o = bin(&["gate", p(dir.path())]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        gate_row(&out, "errors<1%").contains("❌ Failed") && out.contains("4.762 %"),
        "{out}"
    );
}

#[test]
fn unmatched_cells_are_reported_not_ignored() {
    let (base, cur) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = CellSpec::new("shared", None, "off");
    a.seconds = 5;
    let mut old = CellSpec::new("only-in-base", None, "off");
    old.seconds = 5;
    let mut new = CellSpec::new("only-in-current", None, "off");
    new.seconds = 5;
    common::write_run(base.path(), "m", &[a.clone(), old]);
    common::write_run(cur.path(), "m", &[a, new]);
    let junit = cur.path().join("j.xml");
    let o = bin(&[
        "gate",
        p(cur.path()),
        "--baseline",
        p(base.path()),
        "--junit",
        p(&junit),
    ]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a cell that disappeared fails: {out}"
    );
    assert!(
        out.contains("`only-in-base` | `baseline` | ❌ Missing"),
        "{out}"
    );
    assert!(
        out.contains("`only-in-current` | `baseline` | ✅ NoBaseline"),
        "{out}"
    );
    assert!(
        out.contains("`shared` | `p99=+10%` | ✅ NonSignificant"),
        "{out}"
    );
    assert_eq!(junit_counts(&junit), (3, 1));
}

/// Parse the JUnit file back: (tests, failures), checking the testsuites > testsuite >
/// testcase (> failure | system-out) shape and that the counts declared in the
/// attributes agree with the elements.
fn junit_counts(path: &Path) -> (usize, usize) {
    let xml = std::fs::read_to_string(path).unwrap();
    let mut reader = Reader::from_str(&xml);
    let mut stack: Vec<String> = Vec::new();
    let (mut cases, mut failures) = (0, 0);
    let mut declared = None;
    loop {
        let ev = reader.read_event().unwrap();
        let (e, empty) = match &ev {
            Event::Start(e) => (e.clone(), false),
            Event::Empty(e) => (e.clone(), true),
            Event::End(_) => {
                stack.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
        let parent = stack.last().map(String::as_str);
        match name.as_str() {
            "testsuites" => assert_eq!(parent, None),
            "testsuite" => {
                assert_eq!(parent, Some("testsuites"));
                let attr = |k: &str| {
                    e.try_get_attribute(k)
                        .unwrap()
                        .map(|a| a.unescape_value().unwrap().parse::<usize>().unwrap())
                        .unwrap()
                };
                declared = Some((attr("tests"), attr("failures")));
            }
            "testcase" => {
                assert_eq!(parent, Some("testsuite"));
                assert!(e.try_get_attribute("classname").unwrap().is_some());
                assert!(e.try_get_attribute("name").unwrap().is_some());
                cases += 1;
            }
            "failure" => {
                assert_eq!(parent, Some("testcase"));
                assert!(e.try_get_attribute("message").unwrap().is_some());
                failures += 1;
            }
            "system-out" => assert_eq!(parent, Some("testcase")),
            other => panic!("unexpected element {other}"),
        }
        if !empty {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unbalanced: {stack:?}");
    assert_eq!(
        declared,
        Some((cases, failures)),
        "attributes disagree with elements"
    );
    (cases, failures)
}
