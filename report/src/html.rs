//! `report.html`: one self-contained file — inline CSS and inline SVG charts, no script,
//! and no reference to anything outside itself (no fonts, images, links or URLs).

use std::fmt::Write as _;

use meshbench_schema::{CellResult, CheckResult, CheckStatus, Percentiles};

use crate::format::{cpu_label, html as esc, rate, us};
use crate::load::LoadedRun;
use crate::markdown::{checks_brief, has_checks, notices};
use crate::plot::{Placement, Rendered, RenderedChart};

const CSS: &str = "
body{font-family:'DejaVu Sans',Verdana,Arial,sans-serif;margin:0 auto;max-width:1100px;padding:1em 1.5em;color:#222;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}h3{margin-top:1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f2f2f2}
.meta{color:#555}
.warn{background:#fff4d6;border:1px solid #e0b84a;padding:.5em 1em;margin:1em 0}
.interrupted{background:#fde2e1;border:1px solid #d9534f;padding:.5em 1em;margin:1em 0;font-weight:bold}
.passed{color:#1d7a2e;font-weight:bold}.failed{color:#c0392b;font-weight:bold}.skipped{color:#a66d00;font-weight:bold}
figure.chart{margin:1em 0;padding:0}
figure.chart svg{display:block;max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em;margin-top:.3em}
.note{color:#555;font-style:italic}
";

fn status_html(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Passed => "<span class=\"passed\">passed</span>",
        CheckStatus::Failed => "<span class=\"failed\">FAILED</span>",
        CheckStatus::Skipped => "<span class=\"skipped\">skipped</span>",
    }
}

/// The chart's SVG without any XML prologue, ready to sit inside HTML.
pub(crate) fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

fn figure(s: &mut String, c: &RenderedChart) {
    // screen readers announce the chart by its title
    let svg = inline_svg(&c.svg).replacen(
        "<svg ",
        &format!("<svg role=\"img\" aria-label=\"{}\" ", esc(&c.title)),
        1,
    );
    let _ = writeln!(
        s,
        "<figure class=\"chart\" id=\"chart-{id}\" data-chart=\"{id}\">\n{svg}\n<figcaption>{title} — series: {labels}. Also as plots/{id}.svg and plots/{id}.png.</figcaption>\n</figure>",
        id = esc(&c.id),
        title = esc(&c.title),
        labels = esc(&c.series_labels.join(", ")),
    );
}

fn checks_table(s: &mut String, checks: &[CheckResult]) {
    if checks.is_empty() {
        return;
    }
    s.push_str("<table><tr><th>check</th><th>result</th><th>evidence</th></tr>\n");
    for k in checks {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&k.name),
            status_html(k.status),
            esc(&k.summary)
        );
    }
    s.push_str("</table>\n");
}

fn latency_row(s: &mut String, name: &str, p: &Percentiles) {
    let _ = write!(s, "<tr><th>{name}</th><td class=\"num\">{}</td>", p.count);
    for v in [
        p.min_us, p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.p9999_us, p.max_us, p.mean_us,
    ] {
        let _ = write!(s, "<td class=\"num\">{}</td>", us(v));
    }
    s.push_str("</tr>\n");
}

/// What a `[driver]` applied and verified for the cell (a real mesh).
fn driver_evidence(s: &mut String, c: &CellResult) {
    let Some(d) = &c.driver else { return };
    let _ = writeln!(
        s,
        "<p>Driver: applied and live in {:.1} s{}{}.</p>",
        d.apply_s,
        d.verified
            .as_deref()
            .map(|v| format!("; verified: {}", esc(&meshbench_schema::text::one_line(v))))
            .unwrap_or_default(),
        d.after
            .as_deref()
            .map(|v| format!(
                "; after the cell: {}",
                esc(&meshbench_schema::text::one_line(v))
            ))
            .unwrap_or_default()
    );
    if !d.pods.is_empty() {
        s.push_str("<table><tr><th>pod</th><th>workload</th><th>node</th><th>istio-proxy CPU limit</th><th>ready</th><th>access-log lines</th></tr>\n");
        for p in &d.pods {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                esc(&p.name),
                esc(&p.workload),
                esc(p.node.as_deref().unwrap_or("-")),
                esc(p.proxy_cpu_limit.as_deref().unwrap_or("none")),
                if p.ready { "yes" } else { "NO" },
                p.access_log_lines.map(|n| n.to_string()).unwrap_or_else(|| "-".into())
            );
        }
        s.push_str("</table>\n");
    }
}

/// A searched cell: what it found, and every step with its verdict.
fn search_steps(s: &mut String, c: &CellResult) {
    let Some(search) = &c.search else { return };
    if let Some(line) = crate::capacity::sentence(c) {
        let _ = writeln!(
            s,
            "<p class=\"search\">Capacity search ({}, outcome {}): {}</p>",
            esc(&search.slo.join(", ")),
            search.outcome.as_str(),
            esc(&line)
        );
    }
    s.push_str("<table class=\"steps\"><tr><th>step</th><th>phase</th><th>offered</th><th>achieved</th><th>p50</th><th>p99</th><th>errors</th><th>sidecar cores</th><th>throttled</th><th>vCPU per 1000 req/s</th><th>verdict</th></tr>\n");
    for st in &search.steps {
        let opt =
            |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            st.index + 1,
            st.phase.as_str(),
            rate(st.rate),
            rate(st.achieved_rate),
            us(st.latency.p50_us),
            us(st.latency.p99_us),
            st.errors,
            opt(st.sidecar_cores, &|v| format!("{v:.2}")),
            opt(st.throttled_share, &|v| format!("{:.1} %", v * 100.0)),
            opt(st.vcpu_per_1k_rps, &|v| format!("{v:.3}")),
            if st.passed {
                "<span class=\"passed\">passed</span>".to_string()
            } else {
                format!(
                    "<span class=\"failed\">failed</span> {}",
                    esc(&st.reasons.join("; "))
                )
            }
        );
    }
    s.push_str("</table>\n");
}

fn cell_section(s: &mut String, c: &CellResult, charts: &[&RenderedChart]) {
    let st = &c.settings;
    let _ = writeln!(
        s,
        "<section class=\"cell\" id=\"cell-{}\"><h2>Cell {}{}</h2>",
        esc(&crate::format::slug(&c.id)),
        esc(&c.id),
        if c.interrupted {
            " <span class=\"failed\">(interrupted)</span>"
        } else {
            ""
        }
    );
    if let Some(why) = &c.failed {
        let _ = writeln!(
            s,
            "<p class=\"failed\">Not measured: {}</p>",
            esc(&meshbench_schema::text::one_line(why))
        );
        driver_evidence(s, c);
        s.push_str("</section>\n");
        return;
    }
    let _ = writeln!(
        s,
        "<table><tr><th>sidecar CPU</th><th>applied</th><th>access log</th><th>mode</th><th>protocol</th><th>connections</th><th>target rate</th><th>achieved</th><th>window</th><th>requests</th><th>ok</th><th>errors</th></tr>\n<tr><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1} s</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></table>",
        esc(&cpu_label(st.sidecar_cpu_millis, st.sidecar_cpu.as_deref())),
        if st.sidecar_cpu_millis.is_none() {
            "n/a".to_string()
        } else if st.cpu_limit_applied {
            "yes".to_string()
        } else {
            format!(
                "<span class=\"failed\">NO</span> {}",
                esc(st.cpu_limit_note.as_deref().unwrap_or(""))
            )
        },
        esc(st.access_log.as_deref().unwrap_or("n/a")),
        c.mode,
        esc(&c.protocol),
        st.connections,
        st.rate.map(rate).unwrap_or_else(|| "closed loop".into()),
        rate(c.achieved_rate),
        c.duration_s,
        c.requests,
        c.ok,
        c.errors.total()
    );
    s.push_str("<table><tr><th>latency</th><th>count</th><th>min</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th><th>mean</th></tr>\n");
    latency_row(s, "corrected", &c.latency.corrected);
    latency_row(s, "uncorrected", &c.latency.uncorrected);
    s.push_str("</table>\n");
    if c.errors.total() > 0 {
        s.push_str("<table><tr><th>error class</th><th>count</th></tr>\n");
        for (k, n) in c.errors.by_class().iter().filter(|(_, n)| *n > 0) {
            let _ = writeln!(s, "<tr><td>{k}</td><td class=\"num\">{n}</td></tr>");
        }
        s.push_str("</table>\n");
    }
    if !c.subsets.is_empty() {
        s.push_str("<table><tr><th>subset</th><th>requests</th><th>share</th><th>expected</th><th>p99</th></tr>\n");
        for sub in &c.subsets {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.2} %</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&sub.name),
                sub.count,
                sub.share * 100.0,
                sub.expected_share
                    .map(|e| format!("{:.2} %", e * 100.0))
                    .unwrap_or_else(|| "-".into()),
                us(sub.latency.corrected.p99_us)
            );
        }
        s.push_str("</table>\n");
    }
    driver_evidence(s, c);
    if let Some(p) = &st.profile {
        let _ = writeln!(
            s,
            "<p>Load profile: {} (the target rate above is its mean).</p>",
            esc(&p.label())
        );
    }
    search_steps(s, c);
    if let Some(sc) = &c.sidecar {
        let mut parts = Vec::new();
        if let Some(cs) = &sc.cpu_stat {
            parts.push(format!(
                "CPU used {:.2} s, throttled in {} of {} periods ({:.2} s)",
                cs.usage_usec as f64 / 1e6,
                cs.nr_throttled,
                cs.nr_periods,
                cs.throttled_usec as f64 / 1e6
            ));
        }
        if let Some(m) = sc.memory_peak_bytes {
            parts.push(format!("memory peak {:.1} MiB", m as f64 / 1048576.0));
        }
        if let Some(n) = sc.access_log_lines {
            parts.push(format!("{n} access-log lines"));
        }
        if !parts.is_empty() {
            let _ = writeln!(s, "<p>Sidecar: {}.</p>", esc(&parts.join("; ")));
        }
    }
    checks_table(s, &c.checks);
    for ch in charts {
        figure(s, ch);
    }
    s.push_str("</section>\n");
}

/// The whole HTML report.
pub fn report_html(run: &LoadedRun, rendered: &Rendered) -> String {
    let r = &run.run;
    let mut s = String::with_capacity(
        64 * 1024 + rendered.charts.iter().map(|c| c.svg.len()).sum::<usize>(),
    );
    let _ = writeln!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>meshbench: {}</title>\n<style>{CSS}</style></head><body>",
        esc(&r.scenario)
    );
    let _ = writeln!(s, "<h1>meshbench run: {}</h1>", esc(&r.scenario));
    if let Some(line) = crate::markdown::workers_line(r) {
        let _ = writeln!(s, "<p class=\"meta\">{}</p>", esc(&line));
    }
    if let Some(line) = crate::markdown::driver_line(r) {
        let _ = writeln!(s, "<p class=\"meta\">{}</p>", esc(&line));
    }
    let _ = writeln!(
        s,
        "<p class=\"meta\">Started {}{} · host {} ({} CPUs{}) · {} {} · {} cell(s){}</p>",
        esc(&r.started_at),
        r.finished_at
            .as_deref()
            .map(|f| format!(" · finished {}", esc(f)))
            .unwrap_or_default(),
        esc(&r.host.hostname),
        r.host.cpus,
        r.host
            .cgroup_version
            .as_deref()
            .map(|v| format!(", cgroup {}", esc(v)))
            .unwrap_or_default(),
        esc(&r.tool.name),
        esc(&r.tool.version),
        r.cells.len(),
        r.scenario_file
            .as_deref()
            .map(|f| format!(" · scenario file {}", esc(f)))
            .unwrap_or_default()
    );
    if r.interrupted {
        s.push_str("<div class=\"interrupted\" id=\"interrupted\">INTERRUPTED: the run was stopped early; the figures cover what was measured until then.</div>\n");
    }
    let notes = notices(r);
    let notes: Vec<&String> = notes.iter().skip(usize::from(r.interrupted)).collect();
    if !notes.is_empty() {
        s.push_str("<div class=\"warn\" id=\"warnings\"><strong>Warnings</strong><ul>\n");
        for n in notes {
            let _ = writeln!(s, "<li>{}</li>", esc(n));
        }
        s.push_str("</ul></div>\n");
    }
    let _ = writeln!(
        s,
        "<p>Overall: {}. Latency is measured from the intended send time (corrected); the uncorrected service time is shown beside it.</p>",
        if !has_checks(r) {
            "no checks in this run"
        } else if r.checks_passed() {
            "<span class=\"passed\">all checks passed</span>"
        } else {
            "<span class=\"failed\">a check FAILED</span>"
        }
    );
    let capacity = crate::capacity::sentences(r);
    if !capacity.is_empty() {
        s.push_str("<h2>Capacity</h2>\n<ul id=\"capacity\">\n");
        for line in &capacity {
            let _ = writeln!(s, "<li>{}</li>", esc(line));
        }
        s.push_str("</ul>\n");
    }
    let sentences = crate::meshcost::sentences(r);
    if !sentences.is_empty() {
        s.push_str("<h2>What the mesh costs</h2>\n<ul id=\"mesh-cost\">\n");
        for line in &sentences {
            let _ = writeln!(s, "<li>{}</li>", esc(line));
        }
        s.push_str("</ul>\n");
    }
    let modes = crate::meshcost::has_modes(r);
    let searches = crate::capacity::has_searches(r);
    let _ = writeln!(
        s,
        "<h2>Summary</h2>\n<table><tr><th>cell</th><th>requests</th><th>achieved</th>{}<th>p50</th><th>p90</th><th>p99</th><th>p99.9</th>{}<th>send lag p99</th><th>errors</th><th>checks</th></tr>",
        if searches { "<th>capacity</th>" } else { "" },
        if modes { "<th>added p99</th>" } else { "" }
    );
    for c in &r.cells {
        if let Some(why) = &c.failed {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td colspan=\"{}\" class=\"failed\">not measured: {}</td><td>{}</td></tr>",
                esc(&c.id),
                8 + usize::from(modes) + usize::from(searches),
                esc(&meshbench_schema::text::one_line(why)),
                esc(&checks_brief(&c.checks))
            );
            continue;
        }
        let l = &c.latency.corrected;
        let added = if modes {
            format!(
                "<td class=\"num\">{}</td>",
                esc(&crate::meshcost::added_p99_brief(c))
            )
        } else {
            String::new()
        };
        let cap = if searches {
            format!(
                "<td class=\"num\">{}</td>",
                esc(&crate::capacity::capacity_brief(c))
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "<tr><td><a href=\"#cell-{}\">{}</a></td><td class=\"num\">{}</td><td class=\"num\">{}</td>{cap}<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>{added}<td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&crate::format::slug(&c.id)),
            esc(&c.id),
            c.requests,
            rate(c.achieved_rate),
            us(l.p50_us),
            us(l.p90_us),
            us(l.p99_us),
            us(l.p999_us),
            esc(&crate::markdown::lag_brief(c)),
            c.errors.total(),
            esc(&checks_brief(&c.checks))
        );
    }
    s.push_str("</table>\n");
    if !r.checks.is_empty() {
        s.push_str("<h2>Run checks</h2>\n");
        checks_table(&mut s, &r.checks);
    }
    let run_charts: Vec<&RenderedChart> = rendered
        .charts
        .iter()
        .filter(|c| c.placement == Placement::Run)
        .collect();
    if !run_charts.is_empty() || !rendered.not_drawn.is_empty() {
        s.push_str("<h2>Across cells</h2>\n");
    }
    for c in run_charts {
        figure(&mut s, c);
    }
    if !rendered.not_drawn.is_empty() {
        s.push_str("<ul class=\"note\" id=\"not-drawn\">\n");
        for n in &rendered.not_drawn {
            let _ = writeln!(s, "<li>{}</li>", esc(n));
        }
        s.push_str("</ul>\n");
    }
    for c in &r.cells {
        let charts: Vec<&RenderedChart> = rendered
            .charts
            .iter()
            .filter(|ch| ch.placement == Placement::Cell(c.id.clone()))
            .collect();
        cell_section(&mut s, c, &charts);
    }
    s.push_str("</body></html>\n");
    s
}
