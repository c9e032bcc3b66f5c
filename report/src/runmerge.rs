//! `report merge RUN_DIR... --out DIR`: the run directories of the workers of one
//! distributed run (`loadgen run --worker I/N`) merged into one run directory that every
//! `report` command reads.
//!
//! Per cell: counts, errors and status classes summed; latency (corrected, uncorrected,
//! send lag) from the workers' interval logs merged with `Histogram::add` (so the merged
//! histogram is the histogram of all samples, bucket by bucket); per status class and per
//! subset from their `parts.hlog` the same way; the achieved rate over the union of the
//! workers' windows; the canary split re-tested on the summed counts; checks combined (a
//! failure anywhere fails). What cannot be merged is refused (another scenario, another N,
//! one index twice); what is missing (a worker, a worker's cell, a killed worker) is merged
//! from what there is and marked: the merged run is then incomplete or interrupted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use meshbench_schema::hlog::{parse_part_tag, IntervalReader, TAG_SEND_LAG};
use meshbench_schema::{
    CellResult, CheckResult, CheckStatus, ErrorCounts, GeneratorStats, Latency, MergedWorker,
    Percentiles, RunResult, SubsetResult, WorkerStart, HLOG_TAG_CORRECTED, HLOG_TAG_UNCORRECTED,
};

use crate::load::{add, empty_sum};
use crate::ReportError;

/// What a run merge did.
#[derive(Debug, Clone)]
pub struct RunMerge {
    pub out: PathBuf,
    pub run: RunResult,
    /// Why the merged run is not the whole distributed run (empty when it is).
    pub gaps: Vec<String>,
}

fn invalid(path: &Path, msg: impl Into<String>) -> ReportError {
    ReportError::Invalid {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// The plan as it must agree between workers (the scenario file's path may differ).
fn comparable_plan(run: &RunResult) -> serde_json::Value {
    let mut p = run.plan.clone();
    if let Some(o) = p.as_object_mut() {
        o.remove("scenario_file");
    }
    p
}

/// Every interval of `path` summed per tag.
fn totals(path: &Path) -> Result<BTreeMap<String, Histogram<u64>>, ReportError> {
    let r = IntervalReader::open(path).map_err(|e| ReportError::Hlog {
        path: e.path,
        msg: e.msg,
    })?;
    let mut out: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    for i in r {
        let i = i.map_err(|e| ReportError::Hlog {
            path: e.path,
            msg: e.msg,
        })?;
        let sum = out
            .entry(i.tag.clone().unwrap_or_default())
            .or_insert_with(|| empty_sum(&i.hist));
        add(sum, &i.hist);
    }
    Ok(out)
}

fn add_totals(into: &mut BTreeMap<String, Histogram<u64>>, from: BTreeMap<String, Histogram<u64>>) {
    for (tag, h) in from {
        match into.get_mut(&tag) {
            Some(sum) => add(sum, &h),
            None => {
                into.insert(tag, h);
            }
        }
    }
}

fn percentiles(t: &BTreeMap<String, Histogram<u64>>, tag: &str) -> Percentiles {
    t.get(tag).map(Percentiles::of).unwrap_or_default()
}

fn rank(s: CheckStatus) -> u8 {
    match s {
        CheckStatus::Failed => 2,
        CheckStatus::Passed => 1,
        _ => 0,
    }
}

/// One check from each worker's: the worst status, each worker's summary kept.
fn combine_checks(name: &str, parts: &[(u32, &CheckResult)], count: u32) -> CheckResult {
    let worst = parts
        .iter()
        .max_by_key(|(_, c)| rank(c.status))
        .map(|(_, c)| c.status)
        .unwrap_or(CheckStatus::Skipped);
    let summary = parts
        .iter()
        .map(|(i, c)| format!("worker {}/{count}: {}", i + 1, c.summary))
        .collect::<Vec<_>>()
        .join("; ");
    CheckResult {
        name: name.to_string(),
        status: worst,
        summary,
        details: serde_json::json!({
            "workers": parts.iter().map(|(i, c)| serde_json::json!({"worker": i + 1, "status": c.status, "details": c.details})).collect::<Vec<_>>()
        }),
    }
}

/// Parse an RFC 3339 time as written in run.json.
fn time(s: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// Merge the workers' run directories `inputs` into a new run directory `out`.
pub fn merge_runs(inputs: &[PathBuf], out: &Path) -> Result<RunMerge, ReportError> {
    if inputs.is_empty() {
        return Err(ReportError::Usage(
            "report merge --out DIR needs the workers' run directories".into(),
        ));
    }
    let mut runs: Vec<(PathBuf, RunResult)> = Vec::with_capacity(inputs.len());
    for dir in inputs {
        if !dir.is_dir() {
            return Err(invalid(
                dir,
                "not a run directory (give each worker's run directory)",
            ));
        }
        let run = meshbench_schema::read_run(dir)?;
        if run.worker.is_none() {
            return Err(invalid(
                &dir.join(meshbench_schema::RUN_FILE),
                "not a worker's run (run.json has no `worker`: run it with loadgen run --worker I/N)",
            ));
        }
        runs.push((dir.clone(), run));
    }
    let (first_dir, first) = (runs[0].0.clone(), runs[0].1.clone());
    let first = &first;
    let count = first.worker.as_ref().map_or(1, |w| w.count);
    let mut seen: BTreeMap<u32, PathBuf> = BTreeMap::new();
    for (dir, r) in &runs {
        let w = r.worker.as_ref().expect("checked above");
        if w.count != count {
            return Err(invalid(
                dir,
                format!(
                    "worker {}/{} of a run of {} workers; {} is worker {}/{count}: not one run",
                    w.index + 1,
                    w.count,
                    w.count,
                    first_dir.display(),
                    first.worker.as_ref().map_or(0, |w| w.index) + 1
                ),
            ));
        }
        if r.scenario != first.scenario || comparable_plan(r) != comparable_plan(first) {
            return Err(invalid(
                dir,
                format!(
                    "scenario `{}` with a different plan than {} (scenario `{}`): not one run",
                    r.scenario,
                    first_dir.display(),
                    first.scenario
                ),
            ));
        }
        if w.start_at != first.worker.as_ref().and_then(|f| f.start_at.clone()) {
            return Err(invalid(
                dir,
                format!(
                    "its shared start {} differs from {}'s {}: not one run",
                    w.start_at.as_deref().unwrap_or("(none)"),
                    first_dir.display(),
                    first
                        .worker
                        .as_ref()
                        .and_then(|f| f.start_at.as_deref())
                        .unwrap_or("(none)")
                ),
            ));
        }
        if let Some(other) = seen.insert(w.index, dir.clone()) {
            return Err(invalid(
                dir,
                format!(
                    "worker {}/{count} twice: {} is that worker too",
                    w.index + 1,
                    other.display()
                ),
            ));
        }
    }
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(invalid(
            out,
            "exists and is not empty: give a new directory for the merged run",
        ));
    }
    std::fs::create_dir_all(out).map_err(|source| ReportError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    runs.sort_by_key(|(_, r)| r.worker.as_ref().map_or(0, |w| w.index));
    let mut gaps = Vec::new();
    let missing: Vec<String> = (0..count)
        .filter(|i| !seen.contains_key(i))
        .map(|i| format!("{}/{count}", i + 1))
        .collect();
    if !missing.is_empty() {
        gaps.push(format!(
            "{} {} missing: merged from {} of {count} workers",
            workers(&missing),
            if missing.len() == 1 { "is" } else { "are" },
            runs.len()
        ));
    }
    let index_of = |r: &RunResult| r.worker.as_ref().map_or(0, |w| w.index);
    let mut cells = Vec::new();
    // the interval logs a worker's cell names that its directory lacks (a results archive
    // cut short, a copy that stopped half-way): such a cell is not merged, and said so
    let absent = |d: &Path, c: &CellResult| -> Vec<String> {
        [c.hlog.as_ref(), c.parts_hlog.as_ref()]
            .into_iter()
            .flatten()
            .filter(|f| !d.join(f).is_file())
            .cloned()
            .collect()
    };
    for (pos, id) in first.planned_cells.iter().enumerate() {
        let mut unusable = 0;
        let have: Vec<(&Path, u32, &CellResult)> = runs
            .iter()
            .filter_map(|(d, r)| {
                let c = r.cells.iter().find(|c| &c.id == id && c.measured())?;
                let gone = absent(d, c);
                if gone.is_empty() {
                    return Some((d.as_path(), index_of(r), c));
                }
                unusable += 1;
                gaps.push(format!(
                    "cell {id}: worker {}/{count}: {} missing from {}: not merged",
                    index_of(r) + 1,
                    gone.join(", "),
                    d.display()
                ));
                None
            })
            .collect();
        if have.is_empty() {
            continue;
        }
        let lacking: Vec<String> = runs
            .iter()
            .filter(|(_, r)| !r.cells.iter().any(|c| &c.id == id && c.measured()))
            .map(|(_, r)| format!("{}/{count}", index_of(r) + 1))
            .collect();
        let short = !lacking.is_empty() || !missing.is_empty() || unusable > 0;
        if !lacking.is_empty() {
            gaps.push(format!(
                "cell {id}: {} measured nothing: merged from {} of {count} workers",
                workers(&lacking),
                have.len()
            ));
        }
        cells.push(merge_cell(pos, id, &have, out, first, count, short)?);
    }
    meshbench_schema::fill_added_latency(&mut cells);
    // run-level checks: combined; planned ones a worker lacks stay missing only if all lack
    let mut checks = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (_, r) in &runs {
        for c in &r.checks {
            if !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
    }
    for name in names {
        let parts: Vec<(u32, &CheckResult)> = runs
            .iter()
            .filter_map(|(_, r)| {
                r.checks
                    .iter()
                    .find(|c| c.name == name)
                    .map(|c| (index_of(r), c))
            })
            .collect();
        checks.push(combine_checks(&name, &parts, count));
    }
    let unfinished: Vec<String> = runs
        .iter()
        .filter(|(_, r)| r.finished_at.is_none())
        .map(|(_, r)| format!("{}/{count}", index_of(r) + 1))
        .collect();
    if !unfinished.is_empty() {
        gaps.push(format!(
            "{} did not finish (killed, or still running)",
            workers(&unfinished)
        ));
    }
    // stopped by a signal (a pod deleted, a deadline): finished, but short of its share
    let stopped: Vec<String> = runs
        .iter()
        .filter(|(_, r)| r.finished_at.is_some() && r.interrupted)
        .map(|(_, r)| format!("{}/{count}", index_of(r) + 1))
        .collect();
    if !stopped.is_empty() {
        gaps.push(format!(
            "{} {} interrupted: {} share of the cell then running is partial, of later cells missing",
            workers(&stopped),
            if stopped.len() == 1 { "was" } else { "were" },
            if stopped.len() == 1 { "its" } else { "their" },
        ));
    }
    // a merged cell short of a worker's share makes the whole merged run incomplete
    let interrupted = runs.iter().any(|(_, r)| r.interrupted)
        || !missing.is_empty()
        || cells.iter().any(|c| c.interrupted);
    let mut warnings: Vec<String> = gaps.clone();
    for (_, r) in &runs {
        warnings.extend(
            r.warnings
                .iter()
                .map(|w| format!("worker {}/{count}: {w}", index_of(r) + 1)),
        );
    }
    // a worker's clock that makes the shared start or the merged seconds doubtful
    for (_, r) in &runs {
        if let Some(c) = &r.host.clock {
            warnings.extend(
                c.concerns()
                    .into_iter()
                    .map(|w| format!("worker {}/{count}: {w}", index_of(r) + 1)),
            );
        }
    }
    let merged_from: Vec<MergedWorker> = runs
        .iter()
        .map(|(d, r)| MergedWorker {
            index: index_of(r),
            dir: d.display().to_string(),
            host: r.host.hostname.clone(),
            started_at: r.started_at.clone(),
            finished_at: r.finished_at.clone(),
            interrupted: r.interrupted,
            cells: r
                .cells
                .iter()
                .filter(|c| c.measured() && absent(d, c).is_empty())
                .map(|c| c.id.clone())
                .collect(),
            max_start_late_s: r
                .cells
                .iter()
                .filter_map(|c| c.worker_start.as_ref().map(|s| s.late_s))
                .reduce(f64::max),
            clock: r.host.clock.clone(),
        })
        .collect();
    let mut host = first.host.clone();
    host.hostname = merged_from
        .iter()
        .map(|w| w.host.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    host.cpus = runs.iter().map(|(_, r)| r.host.cpus).sum();
    let run = RunResult {
        schema_version: first.schema_version,
        tool: first.tool.clone(),
        scenario: first.scenario.clone(),
        scenario_file: first.scenario_file.clone(),
        started_at: runs
            .iter()
            .map(|(_, r)| r.started_at.clone())
            .min_by_key(|s| time(s))
            .unwrap_or_default(),
        finished_at: if unfinished.is_empty() {
            runs.iter()
                .filter_map(|(_, r)| r.finished_at.clone())
                .max_by_key(|s| time(s))
        } else {
            None
        },
        interrupted,
        plan: first.plan.clone(),
        host,
        slo: first.slo.clone(),
        warnings,
        cells,
        checks,
        planned_cells: first.planned_cells.clone(),
        planned_checks: first.planned_checks.clone(),
        driver: None,
        worker: None,
        merged_from,
    };
    meshbench_schema::write_json_atomic(&out.join(meshbench_schema::RUN_FILE), &run)?;
    Ok(RunMerge {
        out: out.to_path_buf(),
        run,
        gaps,
    })
}

/// "worker 2/3" or "workers 1/3, 3/3".
fn workers(list: &[String]) -> String {
    format!(
        "worker{} {}",
        if list.len() == 1 { "" } else { "s" },
        list.join(", ")
    )
}

#[allow(clippy::too_many_arguments)]
fn merge_cell(
    pos: usize,
    id: &str,
    have: &[(&Path, u32, &CellResult)],
    out: &Path,
    first: &RunResult,
    count: u32,
    short: bool,
) -> Result<CellResult, ReportError> {
    let base = have[0].2;
    // interval logs: merged second by second into the merged run's, totals per tag
    let logs: Vec<PathBuf> = have
        .iter()
        .filter_map(|(d, _, c)| c.hlog.as_ref().map(|h| d.join(h)))
        .collect();
    let hlog_name = format!("cell-{pos}.hlog");
    let mut whole: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let hlog = if logs.len() == have.len() {
        crate::merge::merge(&out.join(&hlog_name), &logs)?;
        add_totals(&mut whole, totals(&out.join(&hlog_name))?);
        Some(hlog_name)
    } else {
        None
    };
    // parts: per status class and subset
    let mut parts: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut parts_complete = true;
    for (d, _, c) in have {
        match &c.parts_hlog {
            Some(p) => add_totals(&mut parts, totals(&d.join(p))?),
            None => parts_complete = false,
        }
    }
    let parts_hlog = if parts_complete && !parts.is_empty() {
        let name = format!("cell-{pos}.parts.hlog");
        let start = time(&first.started_at).unwrap_or(std::time::UNIX_EPOCH);
        let mut w = meshbench_schema::hlog::HlogWriter::create(
            &out.join(&name),
            start,
            &["meshbench report merge: whole-window latency per status class and subset, summed over the workers"],
        )
        .map_err(|e| ReportError::Hlog { path: e.path, msg: e.msg })?;
        let len = std::time::Duration::from_secs_f64(
            have.iter()
                .map(|(_, _, c)| c.duration_s)
                .fold(0.0, f64::max)
                .max(0.0),
        );
        for (tag, h) in &parts {
            w.write(std::time::Duration::ZERO, len, Some(tag), h)
                .map_err(|e| ReportError::Hlog {
                    path: e.path,
                    msg: e.msg,
                })?;
        }
        w.finish().map_err(|e| ReportError::Hlog {
            path: e.path,
            msg: e.msg,
        })?;
        Some(name)
    } else {
        None
    };
    let part = |kind: &str, name: &str| -> Option<Latency> {
        let find = |which: &str| {
            parts.iter().find_map(|(t, h)| {
                let (k, n, w) = parse_part_tag(t)?;
                (k == kind && n == name && w == which).then(|| Percentiles::of(h))
            })
        };
        Some(Latency {
            corrected: find("corrected")?,
            uncorrected: find("uncorrected").unwrap_or_default(),
        })
    };
    let mut requests = 0;
    let mut ok = 0;
    let mut errors = ErrorCounts::default();
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    let mut subset_counts: BTreeMap<String, (u64, Option<f64>)> = BTreeMap::new();
    for (_, _, c) in have {
        requests += c.requests;
        ok += c.ok;
        errors.add(&c.errors);
        for (k, n) in &c.status_classes {
            *classes.entry(k.clone()).or_default() += n;
        }
        for s in &c.subsets {
            let e = subset_counts
                .entry(s.name.clone())
                .or_insert((0, s.expected_share));
            e.0 += s.count;
        }
    }
    let mut status_latency = BTreeMap::new();
    for k in classes.keys() {
        status_latency.insert(k.clone(), part("status", k).unwrap_or_default());
    }
    let subsets: Vec<SubsetResult> = subset_counts
        .iter()
        .map(|(name, (n, expected))| SubsetResult {
            name: name.clone(),
            count: *n,
            share: if ok == 0 { 0.0 } else { *n as f64 / ok as f64 },
            expected_share: *expected,
            latency: part("subset", name).unwrap_or_default(),
        })
        .collect();
    // the union of the workers' measured windows: each starts at the shared start plus its
    // lateness (all share the warmup)
    let starts: Vec<f64> = have
        .iter()
        .map(|(_, _, c)| c.worker_start.as_ref().map_or(0.0, |s| s.late_s))
        .collect();
    let union = have
        .iter()
        .zip(&starts)
        .map(|((_, _, c), s)| s + c.duration_s)
        .fold(0.0, f64::max)
        - starts.iter().cloned().fold(f64::INFINITY, f64::min);
    let latency = if hlog.is_some() {
        Latency {
            corrected: percentiles(&whole, HLOG_TAG_CORRECTED),
            uncorrected: percentiles(&whole, HLOG_TAG_UNCORRECTED),
        }
    } else {
        Latency::default()
    };
    // checks: the canary split re-tested on the summed counts; others combined
    let mut checks = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (_, _, c) in have {
        for k in &c.checks {
            if !names.contains(&k.name) {
                names.push(k.name.clone());
            }
        }
    }
    for name in names {
        if name == crate::canary::CANARY_SPLIT {
            if let Some((weights, confidence)) = canary_weights(first) {
                let observed: Vec<(String, u64)> =
                    subsets.iter().map(|s| (s.name.clone(), s.count)).collect();
                checks.push(crate::canary::canary_split(&weights, &observed, confidence));
                continue;
            }
        }
        let parts: Vec<(u32, &CheckResult)> = have
            .iter()
            .filter_map(|(_, i, c)| c.checks.iter().find(|k| k.name == name).map(|k| (*i, k)))
            .collect();
        checks.push(combine_checks(&name, &parts, count));
    }
    let generator = base.generator.as_ref().map(|g| GeneratorStats {
        idle: g.idle.clone(),
        threads: have
            .iter()
            .filter_map(|(_, _, c)| c.generator.as_ref().map(|g| g.threads))
            .sum(),
        cpus: vec![],
        cpu_s: have
            .iter()
            .filter_map(|(_, _, c)| c.generator.as_ref().map(|g| g.cpu_s))
            .sum(),
        cpu_cores: have
            .iter()
            .filter_map(|(_, _, c)| c.generator.as_ref().map(|g| g.cpu_cores))
            .sum(),
        send_lag: whole.get(TAG_SEND_LAG).map(Percentiles::of),
        lag_limit_us: g.lag_limit_us,
        trusted: have
            .iter()
            .all(|(_, _, c)| c.generator.as_ref().is_none_or(|g| g.trusted)),
    });
    let worker_start = have
        .iter()
        .filter_map(|(_, _, c)| c.worker_start.clone())
        .max_by(|a, b| a.late_s.total_cmp(&b.late_s))
        .map(|s| WorkerStart {
            at: s.at,
            late_s: s.late_s,
        });
    let settings = base.settings.clone();
    Ok(CellResult {
        id: id.to_string(),
        settings,
        mode: base.mode,
        protocol: base.protocol.clone(),
        duration_s: union.max(0.0),
        requests,
        ok,
        achieved_rate: if union > 0.0 {
            requests as f64 / union
        } else {
            0.0
        },
        errors,
        status_classes: classes,
        status_latency,
        latency,
        subsets,
        hlog,
        sidecar: None,
        sidecars: vec![],
        driver: None,
        failed: None,
        worker_start,
        parts_hlog,
        mesh_cost: None,
        generator,
        checks,
        interrupted: short || have.iter().any(|(_, _, c)| c.interrupted),
        // a search is one machine's (loadgen refuses --worker with [search])
        search: None,
    })
}

/// The canary weights and confidence the workers' plan declared.
fn canary_weights(run: &RunResult) -> Option<(Vec<(String, u32)>, f64)> {
    let c = run.plan.get("checks")?;
    let weights = c
        .get("weights")?
        .as_array()?
        .iter()
        .map(|p| Some((p.get(0)?.as_str()?.to_string(), p.get(1)?.as_u64()? as u32)))
        .collect::<Option<Vec<_>>>()?;
    Some((weights, c.get("confidence")?.as_f64()?))
}
