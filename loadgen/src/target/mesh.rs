//! The embedded mesh as the run's target: a fresh mesh per cell (apps + sidecar under the
//! cell's CPU quota), the sidecar's cgroup measured, the canary split checked per cell and
//! STRICT mTLS once per run; `--no-cpu-limits` runs every cell without a cgroup and says so.

use super::{BoxError, CellTarget};
use crate::checks::MtlsTarget;
use crate::engine::ResolvedTarget;
use crate::plan::{CellPlan, Plan, TlsPlan};
use meshbench_schema::{CellResult, CheckResult, RunResult};
use std::path::PathBuf;
use testbed::{CellMeshSettings, Mesh, RunningMesh};

/// Whether any cell of `plan` asks for a sidecar CPU or memory limit.
pub fn needs_cgroups(plan: &Plan) -> bool {
    plan.cells.iter().any(|c| {
        c.sidecar
            .as_ref()
            .is_some_and(|s| s.cpu.millis.is_some() || s.memory_bytes.is_some())
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

/// The embedded mesh as the run's target: a fresh mesh per cell.
pub struct MeshTarget {
    exe: PathBuf,
    run_dir: PathBuf,
    no_cpu_limits: bool,
    mesh: Option<Mesh>,
    running: Option<RunningMesh>,
    strict: Option<CheckResult>,
}

impl MeshTarget {
    /// `exe` is the loadgen binary (for `mesh-app` and `mesh-sidecar`); `run_dir` where the
    /// PKI and per-cell files go.
    pub fn new(run_dir: PathBuf, exe: PathBuf, no_cpu_limits: bool) -> Self {
        MeshTarget {
            exe,
            run_dir,
            no_cpu_limits,
            mesh: None,
            running: None,
            strict: None,
        }
    }

    async fn teardown(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = tokio::task::spawn_blocking(move || drop(r)).await;
        }
    }
}

impl CellTarget for MeshTarget {
    async fn prepare(&mut self, plan: &Plan, cell: &CellPlan) -> Result<ResolvedTarget, BoxError> {
        let spec = plan.mesh().ok_or("the scenario has no [mesh] section")?;
        self.teardown().await;
        let mut m = match self.mesh.take() {
            Some(m) => m,
            None => {
                let (spec, dir, exe) = (spec.clone(), self.run_dir.clone(), self.exe.clone());
                tokio::task::spawn_blocking(move || Mesh::prepare(&spec, &dir, &exe)).await??
            }
        };
        let sidecar = cell
            .sidecar
            .as_ref()
            .ok_or("a mesh cell without sidecar settings")?;
        let settings = CellMeshSettings {
            cpu_millis: sidecar.cpu.millis,
            memory_bytes: sidecar.memory_bytes,
            access_log: sidecar.access_log,
            concurrency: spec.concurrency,
            apply_limits: !self.no_cpu_limits,
        };
        let tag = cell.id.clone();
        let (m, up) = tokio::task::spawn_blocking(move || {
            let r = m.up(&settings, &tag);
            (m, r)
        })
        .await?;
        self.mesh = Some(m);
        let mut running = up?;
        running.begin_measurement_after(plan.load.warmup.0);
        let path = plan
            .request
            .path
            .as_ref()
            .map_or_else(|| "/".to_string(), |p| p.to_string());
        if self.strict.is_none() && plan.checks.as_ref().is_some_and(|c| c.strict_mtls) {
            self.strict = Some(
                crate::checks::strict_mtls(&MtlsTarget {
                    addr: running.addr,
                    server_name: &running.pki.server_name,
                    ca: &running.pki.ca_cert,
                    client: Some((&running.pki.client_cert, &running.pki.client_key)),
                    path: &path,
                })
                .await,
            );
        }
        let resolved = ResolvedTarget {
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
        };
        self.running = Some(running);
        Ok(resolved)
    }

    async fn finish(
        &mut self,
        plan: &Plan,
        cell: &CellPlan,
        result: &mut CellResult,
    ) -> Result<(), BoxError> {
        if let Some(running) = self.running.take() {
            let applied = running.cpu_limit_applied();
            let note = running.note.clone();
            let stats = tokio::task::spawn_blocking(move || running.down()).await??;
            result.settings.cpu_limit_applied = applied;
            result.settings.cpu_limit_note = if self.no_cpu_limits {
                Some(match cell.settings().sidecar_cpu {
                    Some(q) => format!("CPU limit not applied: --no-cpu-limits (the {q} limit was not enforced; no cgroup, so no cpu.stat)"),
                    None => "CPU limit not applied: --no-cpu-limits (no cgroup, so no cpu.stat)".into(),
                })
            } else {
                note
            };
            result.sidecar = Some(stats);
        }
        crate::checks::canary::add_to_cell(plan.checks.as_ref(), result);
        Ok(())
    }

    async fn finish_run(&mut self, _plan: &Plan, run: &mut RunResult) -> Result<(), BoxError> {
        self.teardown().await;
        if let Some(s) = self.strict.take() {
            run.checks.push(s);
        }
        if self.no_cpu_limits {
            run.warnings.push(
                "--no-cpu-limits: sidecar CPU limits were NOT applied; every cell is marked \"CPU limit not applied\"".into(),
            );
        }
        Ok(())
    }
}
