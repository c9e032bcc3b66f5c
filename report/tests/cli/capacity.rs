//! Capacity searches, rate profiles and sweeps: their charts (capacity vs CPU limit, the
//! steps of each search, latency and sidecar CPU against the offered rate, latency vs
//! connections / rate), the capacity sentences and table column, and the capacity gates
//! (`--slo capacity>N`, `--max-regression capacity=N%`).

use std::path::Path;

use meshbench_schema::profile::RateProfile;
use meshbench_schema::search::{SearchOutcome, SearchResult};
use report::load::load_run;
use report::plot::capacity::CapacityChart;
use report::plot::profile::ProfileChart;
use report::plot::search::SearchStepsChart;
use report::plot::sweep::{Dimension, SweepChart, SweepMeasure};

use crate::common::{self, CellSpec};
use crate::{bin, p, small_matrix, stdout};

/// A cell of the embedded mesh's `server` mode whose search finds `cap` (min 100, max
/// `max`, 5 % resolution, 16 steps at most).
fn searched(id: &str, cpu: Option<u64>, log: &str, cap: f64, max: f64) -> CellSpec {
    let mut s = CellSpec::new(id, cpu, log);
    s.seconds = 3;
    s.mesh_mode = Some("server".into());
    s.search = Some(common::simulate_search(100.0, max, cap, 0.05, 16));
    s
}

fn svg(dir: &Path, id: &str) -> String {
    std::fs::read_to_string(dir.join("plots").join(format!("{id}.svg")))
        .unwrap_or_else(|e| panic!("{id}.svg: {e}"))
}

fn assert_png(dir: &Path, id: &str) {
    let png = std::fs::read(dir.join("plots").join(format!("{id}.png"))).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{id}.png is a PNG");
    assert!(png.len() > 5000, "{id}.png has content");
}

fn search_of(run: &meshbench_schema::RunResult, id: &str) -> SearchResult {
    run.cells
        .iter()
        .find(|c| c.id == id)
        .and_then(|c| c.search.clone())
        .unwrap()
}

#[test]
fn the_simulated_search_brackets_bisects_and_confirms_like_loadgen() {
    let s = common::simulate_search(100.0, 20000.0, 2900.0, 0.05, 16);
    assert_eq!(s.outcome, SearchOutcome::Converged);
    let (cap, fail) = (s.capacity_rps.unwrap(), s.first_fail_rps.unwrap());
    assert!(
        cap <= 2900.0 && fail > 2900.0 && fail / cap - 1.0 <= 0.05,
        "{cap} {fail}"
    );
    assert_eq!(s.last_pass_rps, Some(cap));
    let last = s.steps.last().unwrap();
    assert!(last.passed && last.rate == cap);
    assert_eq!(
        common::simulate_search(100.0, 5000.0, 9999.0, 0.05, 16).outcome,
        SearchOutcome::AtMax
    );
    assert_eq!(
        common::simulate_search(100.0, 5000.0, 50.0, 0.05, 16).outcome,
        SearchOutcome::BelowMin
    );
    assert_eq!(
        common::simulate_search(100.0, 20000.0, 2900.0, 0.05, 7).outcome,
        SearchOutcome::MaxSteps
    );
}

#[test]
fn the_capacity_headline_has_one_line_per_mode_and_log_with_the_search_interval() {
    let dir = tempfile::tempdir().unwrap();
    let specs = vec![
        searched("cpu=100m,log=off", Some(100), "off", 900.0, 20000.0),
        searched(
            "cpu=100m,log=buffered",
            Some(100),
            "buffered",
            700.0,
            20000.0,
        ),
        searched("cpu=500m,log=off", Some(500), "off", 2900.0, 20000.0),
        searched(
            "cpu=500m,log=buffered",
            Some(500),
            "buffered",
            2500.0,
            20000.0,
        ),
        searched("cpu=none,log=off", None, "off", 6000.0, 20000.0),
        // the upper bound holds: "at least 5000"
        searched("cpu=none,log=buffered", None, "buffered", 9999.0, 5000.0),
    ];
    let run = common::write_run(dir.path(), "capacity", &specs);
    let loaded = load_run(dir.path()).unwrap();
    let chart = CapacityChart::from_run(&loaded).expect("a run with searches has the chart");
    let cpus: Vec<&str> = chart.cpu.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(cpus, ["100m", "500m", "no limit"], "no limit last");
    let lines: Vec<&str> = chart.lines.keys().map(String::as_str).collect();
    assert_eq!(lines, ["server log=buffered", "server log=off"]);
    for (line, log) in [
        ("server log=off", "off"),
        ("server log=buffered", "buffered"),
    ] {
        let pts = &chart.lines[line];
        assert_eq!(pts.len(), 3, "{line}");
        for (pt, cpu) in pts.iter().zip(["100m", "500m", "none"]) {
            let s = search_of(&run, &format!("cpu={cpu},log={log}"));
            assert_eq!(Some(pt.rps), s.capacity_rps, "{line} {cpu}");
            assert_eq!(pt.outcome, s.outcome);
            match s.outcome {
                SearchOutcome::AtMax => assert_eq!(pt.interval, None),
                _ => assert_eq!(
                    pt.interval,
                    Some((s.last_pass_rps.unwrap(), s.first_fail_rps.unwrap()))
                ),
            }
        }
    }
    assert_eq!(
        chart.lines["server log=buffered"][2].outcome,
        SearchOutcome::AtMax
    );

    let out = report::render(dir.path()).unwrap();
    let s = svg(dir.path(), "capacity-vs-cpu-limit");
    for label in [
        "server log=off",
        "server log=buffered",
        "confirmed capacity, bar: last pass .. first fail",
        "at least (the upper bound held)",
        "capacity (requests/s)",
    ] {
        assert!(s.contains(label), "capacity chart lacks {label:?}");
    }
    assert!(
        !s.contains("unconfirmed"),
        "no max-steps search in this run"
    );
    assert_png(dir.path(), "capacity-vs-cpu-limit");
    // (the added-latency chart is not drawn: this run has no baseline cell)
    assert!(
        !out.not_drawn.iter().any(|n| n.contains("capacity")),
        "{:?}",
        out.not_drawn
    );
    // the headline comes first, beside the latency chart
    let html = std::fs::read_to_string(&out.report_html).unwrap();
    let at = |id: &str| {
        html.find(&format!("data-chart=\"{id}\""))
            .unwrap_or_else(|| panic!("{id} not in the report"))
    };
    assert!(at("capacity-vs-cpu-limit") < at("latency-vs-cpu-limit"));
    assert!(at("latency-vs-cpu-limit") < at("percentiles-all-cells"));
}

#[test]
fn a_run_without_a_search_has_no_capacity_chart_sentence_or_column() {
    let dir = tempfile::tempdir().unwrap();
    small_matrix(dir.path());
    let loaded = load_run(dir.path()).unwrap();
    assert!(CapacityChart::from_run(&loaded).is_none());
    report::render(dir.path()).unwrap();
    assert!(!dir.path().join("plots/capacity-vs-cpu-limit.svg").exists());
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(
        !md.contains("## Capacity") && !md.contains("| capacity |"),
        "{md}"
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(!html.contains("id=\"capacity\""));
}

#[test]
fn each_search_gets_a_steps_chart_with_passes_fails_and_its_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let mut plain = CellSpec::new("plain", Some(500), "off");
    plain.seconds = 3;
    let specs = vec![
        searched("cpu=500m,log=off", Some(500), "off", 2900.0, 20000.0),
        plain,
    ];
    let run = common::write_run(dir.path(), "capacity", &specs);
    let search = search_of(&run, "cpu=500m,log=off");
    let loaded = load_run(dir.path()).unwrap();
    let chart = SearchStepsChart::from_cell(0, &loaded.cells[0]).unwrap();
    assert_eq!(chart.steps.len(), search.steps.len());
    for (pt, st) in chart.steps.iter().zip(&search.steps) {
        assert_eq!(
            (pt.rate, pt.passed, pt.p99_ms),
            (st.rate, st.passed, st.latency.p99_us / 1000.0)
        );
    }
    assert!(chart.steps.iter().any(|s| s.passed) && chart.steps.iter().any(|s| !s.passed));
    let cap = search.capacity_rps.unwrap();
    assert_eq!(chart.capacity.as_ref().unwrap().0, cap);
    assert_eq!(chart.p99_slo.as_ref().unwrap().0, 10.0, "p99<10ms in ms");
    assert!(SearchStepsChart::from_cell(1, &loaded.cells[1]).is_none());

    report::render(dir.path()).unwrap();
    let id = "search-steps-01-cpu_500m_log_off";
    let s = svg(dir.path(), id);
    for label in [
        "step passed".to_string(),
        "step failed".to_string(),
        format!("capacity {cap:.0} req/s"),
        "SLO p99".to_string(),
        "offered rate of the step (requests/s, log scale)".to_string(),
    ] {
        assert!(s.contains(&label), "{id} lacks {label:?}");
    }
    assert_png(dir.path(), id);
    assert!(!dir.path().join("plots/search-steps-02-plain.svg").exists());
    // the cell's section lists every step with its verdict
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.matches("<tr><td class=\"num\">").count() >= search.steps.len());
    assert!(html.contains("class=\"steps\""));
    assert!(
        html.contains("violates `p99&lt;10ms`"),
        "a failed step's reason"
    );
}

#[test]
fn capacity_sentences_say_each_outcome_honestly_with_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let mut interrupted = searched("interrupted", Some(100), "sync", 900.0, 20000.0);
    if let Some(s) = interrupted.search.as_mut() {
        s.outcome = SearchOutcome::Interrupted;
        s.capacity_rps = None;
        s.vcpu_per_1k_rps = None;
    }
    let mut maxsteps = searched("max-steps", Some(250), "off", 2900.0, 20000.0);
    maxsteps.search = Some(common::simulate_search(100.0, 20000.0, 2900.0, 0.05, 8));
    let specs = vec![
        searched("converged", Some(500), "buffered", 2900.0, 20000.0),
        searched("at-max", None, "off", 9999.0, 5000.0),
        searched("below-min", Some(100), "off", 50.0, 20000.0),
        maxsteps,
        interrupted,
    ];
    let run = common::write_run(dir.path(), "capacity", &specs);
    let conv = search_of(&run, "converged");
    let (cap, fail) = (conv.capacity_rps.unwrap(), conv.first_fail_rps.unwrap());
    let ms = search_of(&run, "max-steps");
    assert_eq!(ms.outcome, SearchOutcome::MaxSteps);
    let want = [
        format!(
            "At 500m with access logs buffered the server-side sidecar carries {cap:.0} req/s at p99<10ms, errors<0.1% ({cap:.0} held, {fail:.0} failed; 0.40 vCPU per 1000 req/s)."
        ),
        "With no CPU limit with access logs off the server-side sidecar carries at least 5000 req/s at p99<10ms, errors<0.1% (the upper bound held; 0.40 vCPU per 1000 req/s).".to_string(),
        "At 100m with access logs off the server-side sidecar carries below 100 req/s at p99<10ms, errors<0.1% (the lower bound failed).".to_string(),
        format!(
            "At 250m with access logs off the server-side sidecar carries {:.0} req/s at p99<10ms, errors<0.1% ({:.0} held, {:.0} failed; UNCONFIRMED: the step budget ran out before the bracket narrowed to 5 %).",
            ms.capacity_rps.unwrap(),
            ms.capacity_rps.unwrap(),
            ms.first_fail_rps.unwrap()
        ),
        "At 100m with access logs sync the search of the server-side sidecar at p99<10ms, errors<0.1% was interrupted before it found a capacity".to_string(),
    ];
    let got = report::capacity::sentences(&run);
    assert_eq!(got.len(), 5, "{got:#?}");
    for (g, w) in got.iter().zip(&want) {
        assert!(g.starts_with(w.as_str()), "\n got: {g}\nwant: {w}");
    }

    let o = bin(&["render", p(dir.path())]);
    assert!(o.status.success(), "{o:?}");
    let term = stdout(&o);
    assert!(term.contains(&format!("capacity: {}", want[0])), "{term}");
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.contains("## Capacity"), "{md}");
    for w in &want {
        assert!(md.contains(w.as_str()), "summary.md lacks: {w}");
    }
    assert!(md.contains("| cell | requests | rate (achieved / target) | capacity | p50 |"));
    for (id, brief) in [
        ("converged", format!("{cap:.0}/s")),
        ("at-max", "≥ 5000/s".to_string()),
        ("below-min", "< 100/s".to_string()),
        (
            "max-steps",
            format!("{:.0}/s (unconfirmed)", ms.capacity_rps.unwrap()),
        ),
        ("interrupted", "interrupted".to_string()),
    ] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| `{id}` |")))
            .unwrap();
        assert!(row.contains(&format!("| {brief} |")), "{row} lacks {brief}");
    }
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("<ul id=\"capacity\">"));
    assert!(
        html.contains(&report::format::html(&want[0])),
        "html lacks the sentence"
    );
    // the interrupted search has no figure on the headline, and says why
    let out = report::render(dir.path()).unwrap();
    assert!(
        out.not_drawn
            .iter()
            .any(|n| n.contains("'interrupted'") && n.contains("interrupted before it found")),
        "{:?}",
        out.not_drawn
    );
    let s = svg(dir.path(), "capacity-vs-cpu-limit");
    for label in ["unconfirmed (step budget ran out)", "below the lower bound"] {
        assert!(s.contains(label), "capacity chart lacks {label:?}");
    }
}

#[test]
fn a_ramp_is_drawn_against_the_rate_offered_in_each_second() {
    let dir = tempfile::tempdir().unwrap();
    let profile = RateProfile::Ramp {
        from: 100.0,
        to: 1000.0,
        duration_s: 10.0,
    };
    let mut s = CellSpec::new("ramp", Some(250), "off");
    s.seconds = 10;
    s.profile = Some(profile.clone());
    // errors begin once the offered rate passes ~600/s, and grow with it
    s.failed_per_second = vec![0, 0, 0, 0, 0, 0, 3, 9, 20, 41];
    let run = common::write_run(dir.path(), "ramp", &[s.clone()]);
    let sc = run.cells[0].sidecar.clone().unwrap();
    assert_eq!(sc.cpu_usec_per_second.len(), 10);
    let curve = profile.curve();
    let loaded = load_run(dir.path()).unwrap();
    let lat = ProfileChart::latency(0, &loaded.cells[0]).unwrap().unwrap();
    assert_eq!(lat.a.len(), 10);
    for (i, (&(x50, _), &(x99, _))) in lat.a.iter().zip(&lat.b).enumerate() {
        let want = curve.offered(i as f64, i as f64 + 1.0);
        assert!(
            (x50 - want).abs() < 1e-9 && x50 == x99,
            "second {i}: {x50} vs {want}"
        );
        assert_eq!(
            lat.b[i].1,
            loaded.cells[0].seconds[i].p99_us / 1000.0,
            "p99 of second {i}"
        );
    }
    assert!(
        lat.b[9].1 > 2.0 * lat.b[0].1,
        "latency grows with the offered rate: {:?}",
        lat.b
    );
    let side = ProfileChart::sidecar(0, &loaded.cells[0]).unwrap();
    for (i, &(x, cores)) in side.a.iter().enumerate() {
        assert_eq!(x, curve.offered(i as f64, i as f64 + 1.0));
        assert_eq!(cores, sc.cpu_usec_per_second[i] as f64 / 1e6);
    }
    assert_eq!(side.b.len(), 10);
    assert_eq!(side.b[0].1, 0.0, "not throttled at 145 req/s");
    assert!(side.b[9].1 > 0.2, "throttled at the peak: {:?}", side.b);
    assert_eq!(side.b[9].1, sc.throttled_usec_per_second[9] as f64 / 1e6);
    let errs = ProfileChart::errors(0, &loaded.cells[0]).unwrap().unwrap();
    assert_eq!(errs.a.len(), 10, "every second, those without errors too");
    for (i, &(x, n)) in errs.a.iter().enumerate() {
        assert_eq!(x, curve.offered(i as f64, i as f64 + 1.0));
        assert_eq!(n, s.failed_per_second[i] as f64, "errors of second {i}");
        let ok = loaded.cells[0].seconds[i].stats.count;
        let share = errs.b[i].1;
        assert!(
            (share - n / (n + ok as f64)).abs() < 1e-12,
            "second {i}: share {share}, {n} failed, {ok} ok"
        );
    }
    assert_eq!(errs.b[0].1, 0.0);
    assert!(errs.b[9].1 > errs.b[7].1);

    report::render(dir.path()).unwrap();
    let l = svg(dir.path(), "profile-latency-01-ramp");
    for label in [
        "p50 of the second, corrected",
        "p99 of the second, corrected",
        "offered rate in that second (requests/s)",
    ] {
        assert!(l.contains(label), "profile-latency lacks {label:?}");
    }
    let sd = svg(dir.path(), "profile-sidecar-01-ramp");
    for label in [
        "sidecar CPU (cores, left axis)",
        "throttled share of the second (throttled µs / 1 s, right axis)",
    ] {
        assert!(sd.contains(label), "profile-sidecar lacks {label:?}");
    }
    assert_png(dir.path(), "profile-latency-01-ramp");
    assert_png(dir.path(), "profile-sidecar-01-ramp");
    let e = svg(dir.path(), "profile-errors-01-ramp");
    for label in [
        "failed requests in the second (left axis)",
        "failed share of the requests completed in that second (right axis)",
    ] {
        assert!(e.contains(label), "profile-errors lacks {label:?}");
    }
    assert_png(dir.path(), "profile-errors-01-ramp");
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("Load profile: ramp 100→1000/s over 10s"));
    // a constant-rate cell gets neither chart
    let mut flat = CellSpec::new("flat", Some(250), "off");
    flat.seconds = 3;
    let dir2 = tempfile::tempdir().unwrap();
    common::write_run(dir2.path(), "flat", &[flat]);
    let l2 = load_run(dir2.path()).unwrap();
    assert!(ProfileChart::latency(0, &l2.cells[0]).unwrap().is_none());
    assert!(ProfileChart::sidecar(0, &l2.cells[0]).is_none());
    assert!(ProfileChart::errors(0, &l2.cells[0]).unwrap().is_none());
    // a profile cell whose log predates the `failed` tag: no errors chart, and why
    let mut old = s.clone();
    old.failed_per_second.clear();
    let dir3 = tempfile::tempdir().unwrap();
    common::write_run(dir3.path(), "old", &[old]);
    let l3 = load_run(dir3.path()).unwrap();
    let why = ProfileChart::errors(0, &l3.cells[0]).unwrap_err();
    assert!(why.contains("no per-second error counts"), "{why}");
}

#[test]
fn a_connections_sweep_draws_latency_against_connections_per_log_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut specs = Vec::new();
    for log in ["off", "sync"] {
        for conns in [2u32, 8, 32] {
            let mut s = CellSpec::new(&format!("conns={conns},log={log}"), Some(500), log);
            s.seconds = 3;
            s.rate = 100;
            s.connections = conns;
            s.median_us = 1000.0 + 50.0 * conns as f64;
            s.seed = conns as u64;
            specs.push(s);
        }
    }
    let run = common::write_run(dir.path(), "conns", &specs);
    let loaded = load_run(dir.path()).unwrap();
    assert_eq!(
        report::plot::sweep::dimensions(&loaded),
        [Dimension::Connections]
    );
    let chart =
        SweepChart::from_run(&loaded, Dimension::Connections, SweepMeasure::Latency).unwrap();
    let groups: Vec<&str> = chart.groups.keys().map(String::as_str).collect();
    assert_eq!(groups, ["log=off", "log=sync"]);
    let p99 = &chart.groups["log=sync"]["p99"];
    let xs: Vec<f64> = p99.iter().map(|p| p.0).collect();
    assert_eq!(xs, [2.0, 8.0, 32.0]);
    let c = run
        .cells
        .iter()
        .find(|c| c.id == "conns=32,log=sync")
        .unwrap();
    assert_eq!(p99[2].1, c.latency.corrected.p99_us / 1000.0);
    report::render(dir.path()).unwrap();
    let s = svg(dir.path(), "latency-vs-connections");
    for label in ["log=off p50", "log=off p90", "log=sync p99", "connections"] {
        assert!(s.contains(label), "latency-vs-connections lacks {label:?}");
    }
    assert_png(dir.path(), "latency-vs-connections");
    assert!(!dir.path().join("plots/latency-vs-rate.svg").exists());
}

#[test]
fn a_rate_sweep_draws_latency_and_sidecar_cpu_against_rate_leaving_searches_and_profiles_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut specs = Vec::new();
    for rate in [50u64, 100, 200] {
        let mut s = CellSpec::new(&format!("rate={rate}"), Some(500), "off");
        s.seconds = 3;
        s.rate = rate;
        s.sidecar_us_per_request = 300.0;
        s.seed = rate;
        specs.push(s);
    }
    // neither a search nor a profile is a constant rate: both stay off the sweep
    specs.push(searched("search", Some(500), "off", 900.0, 20000.0));
    let mut ramp = CellSpec::new("ramp", Some(500), "off");
    ramp.seconds = 4;
    ramp.profile = Some(RateProfile::Ramp {
        from: 400.0,
        to: 800.0,
        duration_s: 4.0,
    });
    specs.push(ramp);
    let run = common::write_run(dir.path(), "rates", &specs);
    let loaded = load_run(dir.path()).unwrap();
    assert_eq!(report::plot::sweep::dimensions(&loaded), [Dimension::Rate]);
    let lat = SweepChart::from_run(&loaded, Dimension::Rate, SweepMeasure::Latency).unwrap();
    assert_eq!(lat.groups.len(), 1, "{:?}", lat.groups.keys());
    let xs: Vec<f64> = lat.groups["all cells"]["p50"].iter().map(|p| p.0).collect();
    assert_eq!(xs, [50.0, 100.0, 200.0]);
    let cpu = SweepChart::from_run(&loaded, Dimension::Rate, SweepMeasure::SidecarCpu).unwrap();
    let cores = &cpu.groups["all cells"]["cores"];
    for (pt, rate) in cores.iter().zip([50u64, 100, 200]) {
        let c = run
            .cells
            .iter()
            .find(|c| c.id == format!("rate={rate}"))
            .unwrap();
        let want =
            c.sidecar.as_ref().unwrap().cpu_stat.unwrap().usage_usec as f64 / 1e6 / c.duration_s;
        assert_eq!(*pt, (rate as f64, want));
        // 300 µs per request: 0.3 cores per 1000 req/s
        assert!(
            (want - rate as f64 * 0.0003).abs() < 0.005,
            "{rate}: {want}"
        );
    }
    report::render(dir.path()).unwrap();
    let s = svg(dir.path(), "latency-vs-rate");
    for label in ["all cells p50", "all cells p99", "target rate (requests/s)"] {
        assert!(s.contains(label), "latency-vs-rate lacks {label:?}");
    }
    let s = svg(dir.path(), "sidecar-cpu-vs-rate");
    assert!(s.contains("all cells sidecar cores"));
    assert_png(dir.path(), "latency-vs-rate");
    assert_png(dir.path(), "sidecar-cpu-vs-rate");
    assert!(!dir.path().join("plots/latency-vs-connections.svg").exists());
}

// --- gates ------------------------------------------------------------------------------

fn gate_row<'a>(out: &'a str, gate: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(&format!("`{gate}`")))
        .unwrap_or_else(|| panic!("no row for {gate} in\n{out}"))
}

/// A one-cell run whose search found `cap`, first failing at `fail`.
fn capacity_run(dir: &Path, cap: f64, fail: f64) {
    let mut s = searched("cpu=500m,log=off", Some(500), "off", cap, 20000.0);
    let r = s.search.as_mut().unwrap();
    r.outcome = SearchOutcome::Converged;
    r.capacity_rps = Some(cap);
    r.last_pass_rps = Some(cap);
    r.first_fail_rps = Some(fail);
    common::write_run(dir, "capacity", &[s]);
}

#[test]
fn a_capacity_slo_passes_and_fails_on_the_capacity_found() {
    let dir = tempfile::tempdir().unwrap();
    capacity_run(dir.path(), 2900.0, 3050.0);
    let o = bin(&["gate", p(dir.path()), "--slo", "capacity>2000"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let row = gate_row(&out, "capacity>2000");
    assert!(
        row.contains("✅ Passed") && row.contains("capacity 2900 req/s (2900 held, 3050 failed)"),
        "{row}"
    );
    let o = bin(&["gate", p(dir.path()), "--slo", "capacity>3000"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let row = gate_row(&out, "capacity>3000");
    assert!(
        row.contains("❌ Failed") && row.contains("violates `capacity>3000`"),
        "{row}"
    );
}

#[test]
fn a_capacity_slo_on_a_cell_without_a_search_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = CellSpec::new("plain", Some(500), "off");
    s.seconds = 3;
    common::write_run(dir.path(), "plain", &[s]);
    let o = bin(&["gate", p(dir.path()), "--slo", "capacity>2000"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let row = gate_row(&out, "capacity>2000");
    assert!(
        row.contains("❌ Failed") && row.contains("ran no capacity search ([search])"),
        "{row}"
    );
}

#[test]
fn a_capacity_slo_says_when_the_search_was_interrupted_or_unconfirmed() {
    // interrupted after 2900 held: no capacity was found, so the gate cannot pass it, and
    // says why rather than calling it "below the lower bound"
    let dir = tempfile::tempdir().unwrap();
    let mut s = searched("cpu=500m,log=off", Some(500), "off", 2900.0, 20000.0);
    let r = s.search.as_mut().unwrap();
    r.outcome = SearchOutcome::Interrupted;
    r.capacity_rps = None;
    common::write_run(dir.path(), "capacity", &[s]);
    let o = bin(&["gate", p(dir.path()), "--slo", "capacity>2000"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let row = gate_row(&out, "capacity>2000");
    assert!(
        row.contains("❌ Failed")
            && row.contains("interrupted before it found a capacity")
            && !row.contains("lower bound"),
        "{row}"
    );
    // the step budget ran out: judged on the last pass, marked unconfirmed
    let dir = tempfile::tempdir().unwrap();
    let mut s = searched("cpu=500m,log=off", Some(500), "off", 2900.0, 20000.0);
    let r = s.search.as_mut().unwrap();
    r.outcome = SearchOutcome::MaxSteps;
    r.capacity_rps = Some(2800.0);
    r.first_fail_rps = Some(3100.0);
    common::write_run(dir.path(), "capacity", &[s]);
    let o = bin(&["gate", p(dir.path()), "--slo", "capacity>2000"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let row = gate_row(&out, "capacity>2000");
    assert!(
        row.contains("✅ Passed") && row.contains("capacity 2800 req/s (2800 held, 3100 failed), unconfirmed: the step budget ran out"),
        "{row}"
    );
}

/// `gate CUR --baseline BASE --max-regression capacity=10%`: (exit code, its row).
fn capacity_gate(base: (f64, f64), cur: (f64, f64)) -> (Option<i32>, String) {
    let (b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    capacity_run(b.path(), base.0, base.1);
    capacity_run(c.path(), cur.0, cur.1);
    let o = bin(&[
        "gate",
        p(c.path()),
        "--baseline",
        p(b.path()),
        "--max-regression",
        "capacity=10%",
    ]);
    let out = stdout(&o);
    (o.status.code(), gate_row(&out, "capacity=10%").to_string())
}

#[test]
fn a_capacity_drop_beyond_the_share_and_the_resolution_is_regressed() {
    // the current run failed at 2100, which the baseline held (3000)
    let (code, row) = capacity_gate((3000.0, 3150.0), (2000.0, 2100.0));
    assert_eq!(code, Some(1), "{row}");
    assert!(row.contains("❌ Regressed"), "{row}");
    assert!(
        row.contains("capacity 3000 req/s (3000 held, 3150 failed) → 2000 req/s (2000 held, 2100 failed) (-33.3 %), allowed drop 10.0 %"),
        "{row}"
    );
    assert!(
        row.contains("failed at 2100 req/s, a rate the baseline held (3000 req/s)"),
        "{row}"
    );
}

#[test]
fn a_capacity_drop_within_the_searches_resolution_is_non_significant() {
    // 13 % lower, but the current search first failed at 3100, above the baseline's 3000
    let (code, row) = capacity_gate((3000.0, 3150.0), (2600.0, 3100.0));
    assert_eq!(code, Some(0), "{row}");
    assert!(row.contains("✅ NonSignificant"), "{row}");
    assert!(row.contains("within the searches' resolution"), "{row}");
    // a drop smaller than the share
    let (code, row) = capacity_gate((3000.0, 3150.0), (2900.0, 3050.0));
    assert_eq!(code, Some(0), "{row}");
    assert!(
        row.contains("✅ NonSignificant") && row.contains("within the allowed drop"),
        "{row}"
    );
}

#[test]
fn a_capacity_rise_beyond_the_share_and_the_resolution_is_improved() {
    let (code, row) = capacity_gate((2000.0, 2100.0), (3000.0, 3150.0));
    assert_eq!(code, Some(0), "{row}");
    assert!(row.contains("✅ Improved"), "{row}");
    assert!(
        row.contains("the baseline's search failed at 2100 req/s"),
        "{row}"
    );
    // a rise the baseline's own bracket explains
    let (code, row) = capacity_gate((2600.0, 3100.0), (3000.0, 3150.0));
    assert_eq!(code, Some(0), "{row}");
    assert!(row.contains("✅ NonSignificant"), "{row}");
}

#[test]
fn capacity_gating_is_opt_in_and_a_lost_search_fails() {
    let (b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    capacity_run(b.path(), 3000.0, 3150.0);
    capacity_run(c.path(), 2000.0, 2100.0);
    // with --baseline alone only the default latency gate runs
    let o = bin(&["gate", p(c.path()), "--baseline", p(b.path())]);
    let out = stdout(&o);
    assert!(
        out.contains("`p99=+10%`") && !out.contains("capacity="),
        "{out}"
    );
    // the current cell lost its search: a regression cannot be ruled out
    let mut s = CellSpec::new("cpu=500m,log=off", Some(500), "off");
    s.seconds = 3;
    common::write_run(c.path(), "capacity", &[s]);
    let o = bin(&[
        "gate",
        p(c.path()),
        "--baseline",
        p(b.path()),
        "--max-regression",
        "capacity=10%",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let row = gate_row(&out, "capacity=10%");
    assert!(
        row.contains("❌ Failed") && row.contains("ran no capacity search"),
        "{row}"
    );
    // a bad capacity limit is a usage error
    let o = bin(&[
        "gate",
        p(c.path()),
        "--baseline",
        p(b.path()),
        "--max-regression",
        "capacity=+10%",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(crate::stderr(&o).contains("capacity regression is a drop"));
}
