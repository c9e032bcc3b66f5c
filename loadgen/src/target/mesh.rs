//! The embedded mesh as the run's target: a fresh mesh per cell in the cell's mode
//! (baseline: the apps, split by weight by loadgen itself; server: one inbound sidecar;
//! both: a client-side sidecar and one server-side sidecar per subset), every sidecar under
//! the cell's CPU quota and measured, relative CPU limits (`"0.8x"`) calibrated against the
//! measured need, the canary split checked per cell and STRICT mTLS against every
//! server-side sidecar; `--no-cpu-limits` runs every cell without a cgroup and says so.

use super::{BoxError, CellTarget};
use crate::checks::MtlsTarget;
use crate::engine::{self, CellLoad, ResolvedTarget, SplitTo, Target};
use crate::plan::{CellPlan, Plan, SidecarCell, TlsPlan};
use meshbench_schema::{
    CellResult, CheckResult, CheckStatus, CpuCalibration, CpuStat, MeshCost, RunResult,
    SidecarStats,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use testbed::{CellMeshSettings, Mesh, MeshMode, RunningMesh};
use tokio::sync::watch;

/// A calibration's warmup and measured window (a relative CPU limit's need).
pub const CALIBRATION_WARMUP: Duration = Duration::from_secs(1);
pub const CALIBRATION_WINDOW: Duration = Duration::from_secs(3);
/// A cell is "tight" when one of its sidecars was throttled in at least this share of its
/// CFS periods.
pub const TIGHT_SHARE: f64 = 0.10;

/// Whether any cell of `plan` asks for a sidecar CPU or memory limit.
pub fn needs_cgroups(plan: &Plan) -> bool {
    plan.cells.iter().any(|c| {
        c.sidecar.as_ref().is_some_and(|s| {
            s.mode != MeshMode::Baseline && (s.cpu.is_limited() || s.memory_bytes.is_some())
        })
    })
}

/// Fail early (before anything starts) when the plan needs cgroups that cannot be written.
pub fn check_cgroups(plan: &Plan, no_cpu_limits: bool) -> Result<(), String> {
    if plan.mesh().is_none() || no_cpu_limits || !needs_cgroups(plan) {
        return Ok(());
    }
    testbed::cgroup::Cgroups::detect().map(|_| ()).map_err(|e| {
        format!(
            "sidecar CPU limits cannot be applied: {e}; run as root (or in a delegated cgroup v2 subtree), or pass --no-cpu-limits to measure without limits (cells are then marked \"CPU limit not applied\")"
        )
    })
}

/// What a relative limit's calibration is keyed by: the cell's settings except the limit.
type CalibrationKey = (MeshMode, &'static str, Option<u32>, Option<u64>, u32);

/// The embedded mesh as the run's target: a fresh mesh per cell.
pub struct MeshTarget {
    exe: PathBuf,
    run_dir: PathBuf,
    no_cpu_limits: bool,
    stop: watch::Receiver<bool>,
    mesh: Option<Mesh>,
    running: Option<RunningMesh>,
    /// STRICT results per server-side sidecar, by mode checked.
    strict: Vec<(String, CheckResult)>,
    strict_modes: Vec<MeshMode>,
    calibrations: HashMap<CalibrationKey, f64>,
    /// The current cell's resolved relative limit.
    calibration: Option<CpuCalibration>,
}

impl MeshTarget {
    /// `exe` is the loadgen binary (for `mesh-app` and `mesh-sidecar`); `run_dir` where the
    /// PKI and per-cell files go; `stop` ends a calibration early on an interrupt.
    pub fn new(
        run_dir: PathBuf,
        exe: PathBuf,
        no_cpu_limits: bool,
        stop: watch::Receiver<bool>,
    ) -> Self {
        MeshTarget {
            exe,
            run_dir,
            no_cpu_limits,
            stop,
            mesh: None,
            running: None,
            strict: Vec::new(),
            strict_modes: Vec::new(),
            calibrations: HashMap::new(),
            calibration: None,
        }
    }

    async fn teardown(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = tokio::task::spawn_blocking(move || drop(r)).await;
        }
    }

    async fn up(
        &mut self,
        plan: &Plan,
        settings: CellMeshSettings,
        tag: String,
    ) -> Result<RunningMesh, BoxError> {
        let spec = plan.mesh().ok_or("the scenario has no [mesh] section")?;
        let mut m = match self.mesh.take() {
            Some(m) => m,
            None => {
                let (spec, dir, exe) = (spec.clone(), self.run_dir.clone(), self.exe.clone());
                tokio::task::spawn_blocking(move || Mesh::prepare(&spec, &dir, &exe)).await??
            }
        };
        let (m, up) = tokio::task::spawn_blocking(move || {
            let r = m.up(&settings, &tag);
            (m, r)
        })
        .await?;
        self.mesh = Some(m);
        Ok(up?)
    }

    fn settings(&self, plan: &Plan, sc: &SidecarCell, cpu_millis: Option<u64>) -> CellMeshSettings {
        let spec_conc = plan.mesh().map_or(1, |m| m.concurrency);
        CellMeshSettings {
            mode: sc.mode,
            cpu_millis,
            memory_bytes: sc.memory_bytes,
            access_log: sc.access_log,
            concurrency: sc.concurrency.map_or(spec_conc, |c| c as usize),
            apply_limits: !self.no_cpu_limits,
        }
    }

    /// The most CPU (millicores) one sidecar of this cell's settings needs at its load
    /// with no limit: a short run measured from the sidecars' cgroups. Cached per settings.
    async fn calibrate(
        &mut self,
        plan: &Plan,
        cell: &CellPlan,
        sc: &SidecarCell,
    ) -> Result<f64, BoxError> {
        let key: CalibrationKey = (
            sc.mode,
            sc.access_log.as_str(),
            sc.concurrency,
            cell.rate.map(f64::to_bits),
            cell.connections,
        );
        if let Some(n) = self.calibrations.get(&key) {
            return Ok(*n);
        }
        let settings = self.settings(plan, sc, None);
        let mut running = self
            .up(plan, settings, format!("{}-calibration", cell.id))
            .await?;
        running.begin_measurement_after(CALIBRATION_WARMUP);
        let resolved = resolve(&running, sc.mode);
        let target = Arc::new(Target::new(&resolved, &plan.request, None).await?);
        let load = CellLoad {
            mode: cell.mode,
            rate: cell.rate,
            connections: cell.connections,
            max_in_flight: plan.load.max_in_flight,
            duration: Some(CALIBRATION_WINDOW),
            requests: None,
            warmup: CALIBRATION_WARMUP,
            think_time: plan.load.think_time.0,
            threads: plan.load.threads,
            idle: plan.load.idle,
            cpus: plan.load.cpus.clone(),
            share: Default::default(),
            start_at: None,
            profile: None,
        };
        let m = engine::run_cell(target, &load, None, self.stop.clone(), &mut |_| {}).await?;
        let stats = tokio::task::spawn_blocking(move || running.down()).await??;
        let window = m.duration_s.max(1e-3);
        let need = stats
            .iter()
            .filter_map(|s| s.cpu_stat)
            .map(|c| c.usage_usec as f64 / window / 1000.0)
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
            .ok_or("the calibration could not read the sidecars' cpu.stat (no cgroup)")?;
        self.calibrations.insert(key, need);
        Ok(need)
    }
}

/// Where a cell's load goes in `mode`.
fn resolve(running: &RunningMesh, mode: MeshMode) -> ResolvedTarget {
    match mode {
        MeshMode::Server => ResolvedTarget {
            url: running.url.clone(),
            connect_to: Some(running.addr),
            tls: TlsPlan {
                ca: Some(running.pki.ca_cert.clone()),
                cert: Some(running.pki.client_cert.clone()),
                key: Some(running.pki.client_key.clone()),
                server_name: Some(running.pki.server_name.clone()),
                expected_identity: Some(running.pki.server_spiffe_id.clone()),
                insecure_skip_verify: false,
            },
            split: vec![],
        },
        // plaintext to the client-side sidecar, as an app calls through its own sidecar
        MeshMode::Both => ResolvedTarget {
            url: running.url.clone(),
            connect_to: Some(running.addr),
            tls: TlsPlan::default(),
            split: vec![],
        },
        // the apps directly, split by weight by loadgen's own client
        MeshMode::Baseline => ResolvedTarget {
            url: running.url.clone(),
            connect_to: None,
            tls: TlsPlan::default(),
            split: running
                .split
                .iter()
                .map(|(subset, weight, addr)| SplitTo {
                    subset: subset.clone(),
                    weight: *weight,
                    addr: *addr,
                })
                .collect(),
        },
    }
}

/// The requests that passed through sidecar `s` in a cell with these results: all of
/// them for a sidecar that routes every subset, else its subsets' responses.
fn requests_through(s: &SidecarStats, result: &CellResult, all_subsets: usize) -> u64 {
    if s.subsets.len() >= all_subsets {
        result.requests
    } else {
        result
            .subsets
            .iter()
            .filter(|r| s.subsets.contains(&r.name))
            .map(|r| r.count)
            .sum()
    }
}

/// vCPU per 1000 requests/s: CPU seconds per request x 1000.
fn vcpu_per_1k(cpu: Option<CpuStat>, requests: u64) -> Option<f64> {
    let c = cpu?;
    (requests > 0).then(|| c.usage_usec as f64 / 1e6 / requests as f64 * 1000.0)
}

/// The cell's sidecars summed into one ("all").
fn aggregate(sidecars: &[SidecarStats], requests: u64) -> SidecarStats {
    let mut cpu: Option<CpuStat> = None;
    let mut per_second: Vec<u64> = Vec::new();
    let mut cpu_per_second: Vec<u64> = Vec::new();
    for s in sidecars {
        if let Some(c) = s.cpu_stat {
            let a = cpu.get_or_insert_with(CpuStat::default);
            a.usage_usec += c.usage_usec;
            a.nr_periods += c.nr_periods;
            a.nr_throttled += c.nr_throttled;
            a.throttled_usec += c.throttled_usec;
        }
        for (i, v) in s.throttled_usec_per_second.iter().enumerate() {
            if per_second.len() <= i {
                per_second.push(0);
            }
            per_second[i] += v;
        }
        for (i, v) in s.cpu_usec_per_second.iter().enumerate() {
            if cpu_per_second.len() <= i {
                cpu_per_second.push(0);
            }
            cpu_per_second[i] += v;
        }
    }
    let sum = |f: fn(&SidecarStats) -> Option<u64>| -> Option<u64> {
        sidecars
            .iter()
            .map(f)
            .try_fold(0u64, |a, v| v.map(|v| a + v))
    };
    let mut subsets: Vec<String> = sidecars.iter().flat_map(|s| s.subsets.clone()).collect();
    subsets.sort();
    subsets.dedup();
    SidecarStats {
        name: "all".into(),
        direction: None,
        subsets,
        requests: Some(requests),
        vcpu_per_1k_rps: vcpu_per_1k(cpu, requests),
        cpu_stat: cpu,
        memory_peak_bytes: sum(|s| s.memory_peak_bytes),
        access_log_lines: sum(|s| s.access_log_lines),
        throttled_usec_per_second: per_second,
        cpu_usec_per_second: cpu_per_second,
    }
}

impl CellTarget for MeshTarget {
    async fn prepare(&mut self, plan: &Plan, cell: &CellPlan) -> Result<ResolvedTarget, BoxError> {
        self.teardown().await;
        self.calibration = None;
        let sc = cell
            .sidecar
            .clone()
            .ok_or("a mesh cell without sidecar settings")?;
        let mut cpu_millis = sc.cpu.millis;
        if let (Some(factor), MeshMode::Server | MeshMode::Both, false) =
            (sc.cpu.relative, sc.mode, self.no_cpu_limits)
        {
            let need = self.calibrate(plan, cell, &sc).await?;
            let limit = ((factor * need).ceil() as u64).max(1);
            cpu_millis = Some(limit);
            self.calibration = Some(CpuCalibration {
                factor,
                need_millis: need,
                limit_millis: limit,
                duration_s: CALIBRATION_WINDOW.as_secs_f64(),
            });
        }
        let settings = self.settings(plan, &sc, cpu_millis);
        let mut running = self.up(plan, settings, cell.id.clone()).await?;
        running.begin_measurement_after(plan.load.warmup.0);
        let path = plan
            .request
            .path
            .as_ref()
            .map_or_else(|| "/".to_string(), |p| p.to_string());
        let strict = plan.checks.as_ref().is_some_and(|c| c.strict_mtls);
        if strict && sc.mode != MeshMode::Baseline && !self.strict_modes.contains(&sc.mode) {
            self.strict_modes.push(sc.mode);
            for (name, dir, addr) in running.sidecar_addrs() {
                if dir != sidecar::Direction::Inbound {
                    continue;
                }
                let r = crate::checks::strict_mtls(&MtlsTarget {
                    addr,
                    server_name: &running.pki.server_name,
                    ca: &running.pki.ca_cert,
                    client: Some((&running.pki.client_cert, &running.pki.client_key)),
                    path: &path,
                })
                .await;
                self.strict
                    .push((format!("{} {name}", sc.mode.as_str()), r));
            }
        }
        let resolved = resolve(&running, sc.mode);
        self.running = Some(running);
        Ok(resolved)
    }

    fn begin_step(&mut self, warmup: Duration) {
        if let Some(r) = self.running.as_mut() {
            r.begin_measurement_after(warmup);
        }
    }

    fn step_stats(&mut self, result: &CellResult) -> Option<SidecarStats> {
        let running = self.running.as_ref()?;
        let subsets = running.weights.len();
        let mut stats = running.stats();
        if stats.is_empty() {
            return None;
        }
        for s in &mut stats {
            s.requests = Some(requests_through(s, result, subsets));
        }
        Some(aggregate(&stats, result.requests))
    }

    async fn finish(
        &mut self,
        plan: &Plan,
        cell: &CellPlan,
        result: &mut CellResult,
    ) -> Result<(), BoxError> {
        if let Some(running) = self.running.take() {
            let mode = running.settings.mode;
            let applied = running.cpu_limit_applied();
            let note = running.note.clone();
            let subsets = running.weights.len();
            let mut stats = tokio::task::spawn_blocking(move || running.down()).await??;
            if let Some(c) = self.calibration.take() {
                result.settings.sidecar_cpu_millis = Some(c.limit_millis);
                result.settings.cpu_limit_calibration = Some(c);
            }
            result.settings.cpu_limit_applied = applied;
            result.settings.cpu_limit_note = if mode == MeshMode::Baseline {
                None
            } else if self.no_cpu_limits {
                Some(match cell.settings().sidecar_cpu {
                    Some(q) => format!("CPU limit not applied: --no-cpu-limits (the {q} limit was not enforced; no cgroup, so no cpu.stat)"),
                    None => "CPU limit not applied: --no-cpu-limits (no cgroup, so no cpu.stat)".into(),
                })
            } else {
                note
            };
            for s in &mut stats {
                let n = requests_through(s, result, subsets);
                s.requests = Some(n);
                s.vcpu_per_1k_rps = vcpu_per_1k(s.cpu_stat, n);
            }
            if !stats.is_empty() {
                let all = aggregate(&stats, result.requests);
                result.mesh_cost = Some(MeshCost {
                    vcpu_per_1k_rps: all.vcpu_per_1k_rps,
                    ..result.mesh_cost.take().unwrap_or_default()
                });
                result.sidecar = Some(all);
            }
            result.sidecars = stats;
        }
        crate::checks::canary::add_to_cell(plan.checks.as_ref(), result);
        Ok(())
    }

    async fn finish_run(&mut self, _plan: &Plan, run: &mut RunResult) -> Result<(), BoxError> {
        self.teardown().await;
        if !self.strict.is_empty() {
            run.checks
                .push(combine_strict(std::mem::take(&mut self.strict)));
        }
        if self.no_cpu_limits {
            run.warnings.push(
                "--no-cpu-limits: sidecar CPU limits were NOT applied; every cell is marked \"CPU limit not applied\"".into(),
            );
        } else if let Some(w) = no_tight_limit(&run.cells) {
            run.warnings.push(w);
        }
        Ok(())
    }
}

/// One STRICT result for the run from one per server-side sidecar: failed if any failed.
fn combine_strict(results: Vec<(String, CheckResult)>) -> CheckResult {
    if results.len() == 1 {
        return results.into_iter().next().map(|(_, r)| r).expect("one");
    }
    let failed = results.iter().any(|(_, r)| r.status == CheckStatus::Failed);
    let summary = results
        .iter()
        .map(|(who, r)| format!("{who}: {}", r.summary))
        .collect::<Vec<_>>()
        .join(" | ");
    let details = serde_json::Value::Object(
        results
            .iter()
            .map(|(who, r)| (who.clone(), r.details.clone()))
            .collect(),
    );
    CheckResult {
        name: crate::checks::STRICT_MTLS.into(),
        status: if failed {
            CheckStatus::Failed
        } else {
            CheckStatus::Passed
        },
        summary: format!("{} server-side sidecars checked: {summary}", results.len()),
        details,
    }
}

/// When the matrix had CPU limits and none of them throttled a sidecar in at least
/// [`TIGHT_SHARE`] of its periods: a warning with the most CPU a sidecar needed.
pub fn no_tight_limit(cells: &[CellResult]) -> Option<String> {
    let limited: Vec<&CellResult> = cells
        .iter()
        .filter(|c| c.settings.cpu_limit_applied && c.settings.sidecar_cpu_millis.is_some())
        .collect();
    if limited.is_empty() {
        return None;
    }
    let tight = limited.iter().any(|c| {
        c.sidecars.iter().any(|s| {
            s.cpu_stat.is_some_and(|st| {
                st.nr_periods > 0 && st.nr_throttled as f64 >= TIGHT_SHARE * st.nr_periods as f64
            })
        })
    });
    if tight {
        return None;
    }
    let need = cells
        .iter()
        .flat_map(|c| {
            let d = c.duration_s.max(1e-3);
            c.sidecars.iter().filter_map(move |s| {
                s.cpu_stat
                    .map(|st| (st.usage_usec as f64 / d / 1000.0, c.id.as_str()))
            })
        })
        .fold(None, |a: Option<(f64, &str)>, v| match a {
            Some(a) if a.0 >= v.0 => Some(a),
            _ => Some(v),
        });
    let tightest = limited
        .iter()
        .filter_map(|c| c.settings.sidecar_cpu_millis)
        .min()
        .unwrap_or(0);
    Some(match need {
        Some((n, id)) => format!(
            "no CPU limit in this matrix was tight: a sidecar needed at most {n:.0}m (cell {id}) and the tightest limit was {tightest}m, so no cell was throttled in {:.0} % of its periods; the chart shows no CPU-limit effect. Add a limit below the need (e.g. \"0.8x\", a factor of the measured need) to see throttling",
            TIGHT_SHARE * 100.0
        ),
        None => format!(
            "no CPU limit in this matrix was tight: no cell was throttled in {:.0} % of its periods (the tightest limit was {tightest}m)",
            TIGHT_SHARE * 100.0
        ),
    })
}
