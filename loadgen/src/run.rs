//! The run loop: [`run`] picks the target the plan names; for each cell of the plan,
//! [`run_plan`] asks the [`CellTarget`] where to send load
//! (bringing up whatever the cell needs), run the engine, build the [`CellResult`], let the
//! target add what it observed, and write `run.json` (after every cell, atomically, so an
//! interrupted run keeps what it measured).

use crate::distributed::Distributed;
use crate::engine::{self, CellLoad, EngineError, HlogSpec, Progress, Share, Target};
use crate::plan::{CellPlan, Plan, TargetKind, TlsPlan};
use crate::target::{self, CellTarget, TargetOptions};
use meshbench_schema::{
    CellResult, CheckResult, CheckStatus, ClockFacts, GeneratorStats, HostFacts, RunResult,
    SubsetResult, ToolInfo, WorkerStart, RUN_FILE, RUN_SCHEMA_VERSION,
};
use probe::checks::timesync::ClockWatch;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cell {cell}: {message}")]
    Target { cell: String, message: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Schema(#[from] meshbench_schema::SchemaError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Dir { path: PathBuf, msg: String },
}

/// What the run loop tells its caller (the CLI renders it; the engine never prints).
#[derive(Debug, Clone)]
pub enum Event<'a> {
    CellStarted {
        cell: &'a CellPlan,
        of: usize,
    },
    Progress {
        cell: &'a CellPlan,
        progress: &'a Progress,
    },
    CellFinished {
        cell: &'a CellPlan,
        result: &'a CellResult,
    },
    /// A step of a capacity search ended.
    SearchStep {
        cell: &'a CellPlan,
        step: &'a meshbench_schema::search::SearchStep,
    },
}

pub struct RunOptions {
    /// The run directory (see [`default_run_dir`]).
    pub dir: PathBuf,
    pub stop: watch::Receiver<bool>,
    /// This machine's share of a distributed run (`--worker I/N`, `--start-at`).
    pub worker: Option<Distributed>,
}

pub struct RunOutput {
    pub dir: PathBuf,
    pub result: RunResult,
}

/// `results/<scenario>-<UTC timestamp>/`, the run directory when `--out` is not given
/// (see [`create_run_dir`] for what happens when it exists).
pub fn default_run_dir(name: &str, at: SystemTime) -> PathBuf {
    PathBuf::from("results").join(format!("{name}-{}", compact_utc(at)))
}

/// Files and directories a run writes into its directory.
const RUN_ARTIFACTS: [&str; 5] = [RUN_FILE, "report.html", "summary.md", "plots", "mesh"];

fn dir_err(path: &Path, msg: impl Into<String>) -> RunError {
    RunError::Dir {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Make the run directory, so that no two runs ever share one.
///
/// - `out: None`: `default` is created exclusively (`mkdir`, never reused); when it
///   exists (another run started in the same second), `-2`, `-3`, ... are tried.
/// - `out: Some(dir)`: created when missing. An existing one that holds another run's
///   results (its run.json or cell logs) or that is a symbolic link is refused unless
///   `force`; with `force` the old run's files (run.json, logs, report, plots, mesh) are
///   removed first, so its results cannot mix with the new ones.
///
/// Temp files left by a killed loadgen (`.NAME.<pid>.tmp` of a pid that no longer runs)
/// are removed either way.
pub fn create_run_dir(
    out: Option<&Path>,
    default: &Path,
    force: bool,
) -> Result<PathBuf, RunError> {
    let dir = match out {
        None => {
            if let Some(parent) = default.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| dir_err(parent, e.to_string()))?;
            }
            let mut n = 1;
            loop {
                let candidate = if n == 1 {
                    default.to_path_buf()
                } else {
                    let name = default.file_name().unwrap_or_default().to_string_lossy();
                    default.with_file_name(format!("{name}-{n}"))
                };
                match std::fs::create_dir(&candidate) {
                    Ok(()) => break candidate,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                    Err(e) => return Err(dir_err(&candidate, e.to_string())),
                }
            }
        }
        Some(dir) => {
            match std::fs::symlink_metadata(dir) {
                Ok(m) if m.file_type().is_symlink() && !force => {
                    return Err(dir_err(
                        dir,
                        "--out is a symbolic link; pass --force to write through it",
                    ))
                }
                Ok(m) if !m.is_dir() && !m.file_type().is_symlink() => {
                    return Err(dir_err(dir, "--out exists and is not a directory"))
                }
                Ok(_) => {
                    // a run's own marks: its run.json (written before its first cell) and
                    // its interval logs
                    let found: Vec<&str> = [RUN_FILE]
                        .into_iter()
                        .filter(|a| dir.join(a).symlink_metadata().is_ok())
                        .chain(has_cell_logs(dir).then_some("cell-N.hlog"))
                        .collect();
                    if !found.is_empty() {
                        if !force {
                            return Err(dir_err(
                                dir,
                                format!("--out holds another run's results ({}); pass --force to replace them, or choose another directory", found.join(", ")),
                            ));
                        }
                        remove_run_artifacts(dir)?;
                    }
                }
                Err(_) => std::fs::create_dir_all(dir).map_err(|e| dir_err(dir, e.to_string()))?,
            }
            dir.to_path_buf()
        }
    };
    remove_stale_temp_files(&dir);
    Ok(dir)
}

fn has_cell_logs(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("cell-") && n.ends_with(".hlog")
        })
    })
}

fn remove_run_artifacts(dir: &Path) -> Result<(), RunError> {
    let rd = std::fs::read_dir(dir).map_err(|e| dir_err(dir, e.to_string()))?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = RUN_ARTIFACTS.contains(&name.as_str())
            || (name.starts_with("cell-") && name.ends_with(".hlog"));
        if !ours {
            continue;
        }
        let p = e.path();
        let r = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
        r.map_err(|err| dir_err(&p, format!("cannot remove the old run's file: {err}")))?;
    }
    Ok(())
}

/// Remove `.NAME.<pid>.tmp` files (interval logs and run.json being written) of processes
/// that no longer run: what a SIGKILLed loadgen leaves.
pub fn remove_stale_temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(|n| n.rsplit('.').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && std::fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// `20261127T215500Z` from a time.
pub fn compact_utc(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

/// The generator's own figures for a cell, and the `send_lag` check when the plan sets
/// `[checks] max_send_lag`.
fn generator_stats(
    plan: &Plan,
    cell: &CellPlan,
    rate: Option<f64>,
    m: &engine::CellMeasurement,
) -> (GeneratorStats, Option<CheckResult>) {
    let g = &m.generator;
    let cpu_s = g.cpu.as_secs_f64();
    let wall = g.wall.as_secs_f64();
    let open = cell.mode == meshbench_schema::LoadMode::Open;
    let lag =
        (open && !m.rec.send_lag.is_empty()).then(|| crate::record::percentiles(&m.rec.send_lag));
    let configured = plan.checks.as_ref().and_then(|c| c.max_send_lag);
    let limit = rate.map(|rate| {
        configured
            .unwrap_or(crate::plan::LagLimit::ShareOfInterval(
                crate::plan::checks::DEFAULT_LAG_SHARE,
            ))
            .micros(rate)
    });
    let trusted = match (lag, limit) {
        (Some(l), Some(lim)) => l.p99_us <= lim,
        _ => true,
    };
    let check = match (configured, lag, limit) {
        (Some(_), Some(l), Some(lim)) => Some(CheckResult {
            name: crate::checks::SEND_LAG.into(),
            status: if trusted {
                CheckStatus::Passed
            } else {
                CheckStatus::Failed
            },
            summary: format!(
                "send lateness p99 {:.0} µs (max {:.0} µs) {} checks.max_send_lag = {:.0} µs",
                l.p99_us,
                l.max_us,
                if trusted { "within" } else { "EXCEEDS" },
                lim
            ),
            details: serde_json::json!({"p99_us": l.p99_us, "max_us": l.max_us, "limit_us": lim}),
        }),
        _ => None,
    };
    (
        GeneratorStats {
            idle: g.idle.as_str().into(),
            threads: g.workers,
            cpus: g.cpus.clone(),
            cpu_s,
            cpu_cores: if wall > 0.0 { cpu_s / wall } else { 0.0 },
            send_lag: lag,
            lag_limit_us: limit,
            trusted,
        },
        check,
    )
}

/// Facts about this machine (procfs-core reads /proc/cpuinfo).
pub fn host_facts() -> HostFacts {
    use procfs_core::FromRead;
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let cpu_model = procfs_core::CpuInfo::from_file("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.model_name(0).map(str::to_string))
        .unwrap_or_default();
    let cgroup_version = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Some("v2".to_string())
    } else if Path::new("/sys/fs/cgroup/cpu").exists() {
        Some("v1".to_string())
    } else {
        None
    };
    HostFacts {
        hostname: read("/proc/sys/kernel/hostname"),
        kernel: read("/proc/sys/kernel/osrelease"),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        cpu_model,
        cgroup_version,
        clock: None,
    }
}

/// The host's wall clock: the kernel's NTP state now, and a watch of its steps and drift
/// for the rest of the run (what a distributed run's shared start relies on).
fn clock_start() -> (ClockFacts, Option<ClockWatch>) {
    let mut f = ClockFacts::default();
    match probe::checks::timesync::ntp_state() {
        Ok(n) => {
            f.synchronised = Some(!n.unsynchronised);
            f.est_error_us = Some(n.est_error_us);
            f.max_error_us = Some(n.max_error_us);
        }
        Err(e) => f.notes.push(format!("NTP state not read: {e}")),
    }
    let watch = match ClockWatch::start() {
        Ok(w) => Some(w),
        Err(e) => {
            f.notes.push(format!("steps not watched: {e}"));
            None
        }
    };
    (f, watch)
}

/// Write run.json, with the clock's steps and drift up to now.
fn save_run(
    file: &Path,
    run: &mut RunResult,
    watch: Option<&ClockWatch>,
) -> Result<(), meshbench_schema::SchemaError> {
    if let (Some(w), Some(c)) = (watch, run.host.clock.as_mut()) {
        let r = w.reading();
        c.steps = Some(r.steps);
        // over less than a second the drift is the reading's own noise
        c.drift_ppm = (r.watched >= std::time::Duration::from_secs(1)).then_some(r.drift_ppm);
        c.watched_s = Some(r.watched.as_secs_f64());
        const STOPPED: &str = "step counting stopped on an error: later steps were not counted";
        if !r.counting && !c.notes.iter().any(|n| n == STOPPED) {
            c.notes.push(STOPPED.to_string());
        }
    }
    meshbench_schema::write_json_atomic(file, run)
}

/// Run every cell of `plan` against the target its [`TargetKind`] names.
pub async fn run(
    plan: &Plan,
    targets: &TargetOptions,
    opts: RunOptions,
    on_event: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<RunOutput, RunError> {
    match &plan.target {
        TargetKind::Url { .. } => {
            let checked = target::checked::Checked::new(target::url::UrlTarget);
            match &plan.driver {
                Some(d) => {
                    let driver = crate::driver::Driver::new(d, &opts.dir, opts.stop.clone());
                    let mut t = target::driven::Driven::new(checked, driver);
                    run_plan(plan, &mut t, opts, on_event).await
                }
                None => {
                    let mut t = checked;
                    run_plan(plan, &mut t, opts, on_event).await
                }
            }
        }
        TargetKind::App(_) => {
            run_plan(plan, &mut target::app::AppTarget::default(), opts, on_event).await
        }
        TargetKind::Mesh(_) => {
            let exe = match &targets.exe {
                Some(e) => e.clone(),
                None => std::env::current_exe().map_err(|source| RunError::Io {
                    path: PathBuf::from("/proc/self/exe"),
                    source,
                })?,
            };
            let mut t = target::mesh::MeshTarget::new(
                opts.dir.clone(),
                exe,
                targets.no_cpu_limits,
                opts.stop.clone(),
            );
            run_plan(plan, &mut t, opts, on_event).await
        }
    }
}

/// Run every cell of `plan` against `target`.
pub async fn run_plan<T: CellTarget>(
    plan: &Plan,
    target: &mut T,
    opts: RunOptions,
    on_event: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<RunOutput, RunError> {
    let started = SystemTime::now();
    let dir = opts.dir.clone();
    std::fs::create_dir_all(&dir).map_err(|source| RunError::Io {
        path: dir.clone(),
        source,
    })?;
    remove_stale_temp_files(&dir);
    let (clock_facts, clock_watch) = clock_start();
    let save = |run: &mut RunResult| save_run(&dir.join(RUN_FILE), run, clock_watch.as_ref());
    let mut warnings = Vec::new();
    if plan.url_tls().is_some_and(|t| t.insecure_skip_verify) {
        warnings.push(
            "server certificate verification was disabled (target.tls.insecure_skip_verify)"
                .to_string(),
        );
    }
    let mut run = RunResult {
        schema_version: RUN_SCHEMA_VERSION,
        tool: ToolInfo::new("loadgen", env!("CARGO_PKG_VERSION")),
        scenario: plan.name.clone(),
        scenario_file: plan.scenario_file.as_ref().map(|p| p.display().to_string()),
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        finished_at: None,
        interrupted: false,
        plan: serde_json::to_value(plan).unwrap_or(serde_json::Value::Null),
        host: HostFacts {
            clock: Some(clock_facts),
            ..host_facts()
        },
        slo: plan.slo.iter().map(|s| s.expr.clone()).collect(),
        warnings,
        cells: vec![],
        checks: vec![],
        planned_cells: plan.cells.iter().map(|c| c.id.clone()).collect(),
        planned_checks: plan
            .checks
            .as_ref()
            .filter(|c| c.strict_mtls)
            .map(|_| vec![crate::checks::STRICT_MTLS.to_string()])
            .unwrap_or_default(),
        driver: None,
        worker: opts.worker.as_ref().map(|w| meshbench_schema::WorkerShare {
            index: w.index,
            count: w.count,
            start_at: w
                .start_at
                .map(|t| humantime::format_rfc3339_micros(t).to_string()),
            cell_slot_s: Distributed::cell_slot(plan).map(|d| d.as_secs_f64()),
        }),
        merged_from: vec![],
    };
    // First written before any cell: a run killed half-way is recognisable (no
    // finished_at, cells missing from planned_cells).
    save(&mut run)?;
    let mut tls_cache: Option<(TlsPlan, Arc<rustls::ClientConfig>)> = None;
    let mut result = Ok(());
    for cell in &plan.cells {
        if *opts.stop.borrow() {
            run.interrupted = true;
            break;
        }
        on_event(Event::CellStarted {
            cell,
            of: plan.cells.len(),
        });
        if let Err(f) = target.apply(plan, cell).await {
            let mut r = failed_cell(cell, &f.reason);
            target.failed(plan, cell, &mut r).await;
            run.warnings.push(format!(
                "cell {}: not measured: {}",
                cell.id,
                meshbench_schema::text::one_line(&f.reason)
            ));
            on_event(Event::CellFinished { cell, result: &r });
            run.cells.push(r);
            save(&mut run)?;
            if f.stop {
                run.interrupted |= *opts.stop.borrow();
                break;
            }
            continue;
        }
        match run_one(plan, cell, target, &dir, &opts, &mut tls_cache, on_event).await {
            Ok((cell_result, warns)) => {
                run.interrupted |= cell_result.interrupted;
                run.warnings.extend(warns);
                on_event(Event::CellFinished {
                    cell,
                    result: &cell_result,
                });
                run.cells.push(cell_result);
                meshbench_schema::fill_added_latency(&mut run.cells);
                save(&mut run)?;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        if run.interrupted {
            break;
        }
    }
    if let Err(e) = target.finish_run(plan, &mut run).await {
        run.warnings.push(format!("target teardown: {e}"));
    }
    run.finished_at = Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
    save(&mut run)?;
    result?;
    Ok(RunOutput { dir, result: run })
}

/// The result of a cell whose settings could not be applied: nothing measured, the reason
/// as its `failed` and as a failed `driver` check.
fn failed_cell(cell: &CellPlan, reason: &str) -> CellResult {
    CellResult {
        id: cell.id.clone(),
        settings: cell.settings(),
        mode: cell.mode,
        protocol: String::new(),
        duration_s: 0.0,
        requests: 0,
        ok: 0,
        achieved_rate: 0.0,
        errors: Default::default(),
        status_classes: Default::default(),
        status_latency: Default::default(),
        latency: Default::default(),
        subsets: vec![],
        hlog: None,
        sidecar: None,
        sidecars: vec![],
        driver: None,
        failed: Some(reason.to_string()),
        worker_start: None,
        parts_hlog: None,
        mesh_cost: None,
        generator: None,
        checks: vec![CheckResult {
            name: crate::target::driven::DRIVER_CHECK.into(),
            status: CheckStatus::Failed,
            summary: format!(
                "FAILED: the cell's settings were not applied, it was not measured: {reason}"
            ),
            details: serde_json::Value::Null,
        }],
        interrupted: false,
        search: None,
    }
}

async fn run_one<T: CellTarget>(
    plan: &Plan,
    cell: &CellPlan,
    target: &mut T,
    dir: &Path,
    opts: &RunOptions,
    tls_cache: &mut Option<(TlsPlan, Arc<rustls::ClientConfig>)>,
    on_event: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<(CellResult, Vec<String>), RunError> {
    let terr = |message: String| RunError::Target {
        cell: cell.id.clone(),
        message,
    };
    let resolved = target
        .prepare(plan, cell)
        .await
        .map_err(|e| terr(e.to_string()))?;
    let https = resolved.url.starts_with("https://");
    let tls_config = if https {
        match tls_cache {
            Some((k, c)) if *k == resolved.tls => Some(c.clone()),
            _ => {
                let c = tls::client_config(&resolved.tls.client(), plan.request.protocol.alpn())
                    .map_err(EngineError::from)?;
                *tls_cache = Some((resolved.tls.clone(), c.clone()));
                Some(c)
            }
        }
    } else {
        None
    };
    let engine_target = Arc::new(Target::new(&resolved, &plan.request, tls_config).await?);
    let w = opts.worker.as_ref();
    let closed = cell.mode == meshbench_schema::LoadMode::Closed;
    let load = CellLoad {
        mode: cell.mode,
        rate: cell.rate,
        connections: w.map_or(cell.connections, |w| w.part(cell.connections.into()) as u32),
        max_in_flight: plan.load.max_in_flight,
        duration: plan.load.duration.map(|d| d.0),
        requests: match (w, plan.load.requests) {
            (Some(w), Some(n)) if closed => Some(w.part(n)),
            (_, n) => n,
        },
        warmup: plan.load.warmup.0,
        think_time: plan.load.think_time.0,
        threads: plan.load.threads,
        idle: plan.load.idle,
        cpus: plan.load.cpus.clone(),
        share: w.map_or(Share::default(), |w| Share {
            index: w.index.into(),
            count: w.count.into(),
        }),
        start_at: w.and_then(|w| {
            let slot = Distributed::cell_slot(plan)?;
            Some(w.start_at? + slot * cell.index as u32)
        }),
        profile: cell.profile.clone(),
    };
    let hlog_name = format!("cell-{}.hlog", cell.index);
    let (mut result, mut warnings) = match &plan.search {
        None => {
            let (r, w, _) = measure(
                plan,
                cell,
                dir,
                opts,
                engine_target,
                &load,
                hlog_name,
                on_event,
            )
            .await?;
            (r, w)
        }
        Some(search) => {
            crate::search::run(
                plan,
                search,
                cell,
                target,
                dir,
                opts,
                engine_target,
                load,
                on_event,
            )
            .await?
        }
    };
    if let Err(e) = target.finish(plan, cell, &mut result).await {
        warnings.push(format!("cell {}: target: {e}", cell.id));
    }
    Ok((result, warnings))
}

/// What a measurement saw beyond its [`CellResult`].
pub(crate) struct MeasureExtra {
    /// Scheduled measured requests never sent.
    pub unsent: u64,
    /// When the measured window started.
    pub window_start: SystemTime,
}

/// Run the engine for one cell (or one step of a search) with `load`, writing its interval
/// log to `hlog_name` in `dir`, and build its [`CellResult`] (no target-side figures yet).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn measure(
    plan: &Plan,
    cell: &CellPlan,
    dir: &Path,
    opts: &RunOptions,
    engine_target: Arc<Target>,
    load: &CellLoad,
    hlog_name: String,
    on_event: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<(CellResult, Vec<String>, MeasureExtra), RunError> {
    let hlog = HlogSpec {
        path: dir.join(&hlog_name),
        comment: format!(
            "meshbench loadgen: scenario {}, cell {}",
            plan.name, cell.id
        ),
    };
    let mut progress = |p: &Progress| on_event(Event::Progress { cell, progress: p });
    let m = engine::run_cell(
        engine_target,
        load,
        Some(hlog),
        opts.stop.clone(),
        &mut progress,
    )
    .await?;
    let rec = &m.rec;
    let parts_name = format!("cell-{}.parts.hlog", cell.index);
    let parts_hlog = crate::record::write_parts(
        &dir.join(&parts_name),
        &m.rec,
        m.started_at + load.warmup,
        m.duration_s,
    )
    .map_err(EngineError::from)?
    .then_some(parts_name);
    let subsets = rec
        .subsets
        .iter()
        .map(|(name, pair)| SubsetResult {
            name: name.clone(),
            count: pair.corrected.len(),
            share: if rec.ok == 0 {
                0.0
            } else {
                pair.corrected.len() as f64 / rec.ok as f64
            },
            expected_share: None,
            latency: pair.latency(),
        })
        .collect();
    let mut warnings = Vec::new();
    if m.unsent > 0 && !m.interrupted {
        warnings.push(format!(
            "cell {}: {} scheduled requests were never sent: the target could not keep up with {}",
            cell.id,
            m.unsent,
            match &load.profile {
                Some(p) => p.label(),
                None => format!("{} req/s", load.rate.unwrap_or(0.0)),
            }
        ));
    }
    // a profile's lateness limit is that of its highest rate (the shortest interval)
    let lag_rate = load.profile.as_ref().map(|p| p.peak_rate()).or(load.rate);
    let (generator, lag_check) = generator_stats(plan, cell, lag_rate, &m);
    if !generator.trusted && lag_check.is_none() {
        let lag = generator.send_lag.unwrap_or_default();
        warnings.push(format!(
            "cell {}: UNTRUSTED: the load generator itself sent requests late (p99 {:.0} µs, max {:.0} µs after the intended time; more than {:.0} µs, 10 % of the time between requests): its corrected latency includes the generator's own delay (idle = \"{}\"; set [checks] max_send_lag to fail such a cell)",
            cell.id,
            lag.p99_us,
            lag.max_us,
            generator.lag_limit_us.unwrap_or(0.0),
            generator.idle
        ));
    }
    for (class, msg) in &rec.error_samples {
        warnings.push(format!("cell {}: {class} error: {msg}", cell.id));
    }
    let mut result = CellResult {
        id: cell.id.clone(),
        settings: cell.settings(),
        mode: cell.mode,
        protocol: if rec.saw_h2 { "http2" } else { "http1" }.into(),
        duration_s: m.duration_s,
        requests: rec.requests,
        ok: rec.ok,
        achieved_rate: if m.duration_s > 0.0 {
            rec.requests as f64 / m.duration_s
        } else {
            0.0
        },
        errors: rec.errors,
        status_classes: rec
            .by_class
            .iter()
            .map(|(k, (n, _))| (k.to_string(), *n))
            .collect(),
        status_latency: rec
            .by_class
            .iter()
            .map(|(k, (_, pair))| (k.to_string(), pair.latency()))
            .collect(),
        latency: rec.total.latency(),
        subsets,
        hlog: Some(hlog_name),
        sidecar: None,
        sidecars: vec![],
        driver: None,
        failed: None,
        worker_start: load
            .start_at
            .zip(m.start_late)
            .map(|(at, late)| WorkerStart {
                at: humantime::format_rfc3339_micros(at).to_string(),
                late_s: late.as_secs_f64(),
            }),
        parts_hlog,
        mesh_cost: None,
        generator: Some(generator),
        checks: lag_check.into_iter().collect(),
        interrupted: m.interrupted,
        search: None,
    };
    result.settings.rate = load.rate;
    Ok((
        result,
        warnings,
        MeasureExtra {
            unsent: m.unsent,
            window_start: m.started_at + load.warmup,
        },
    ))
}
