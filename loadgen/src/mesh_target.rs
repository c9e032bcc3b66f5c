//! The embedded mesh in the run loop, and the mesh checks.
//!
//! - [`plan_mesh`]: the `[mesh]`, `[matrix]` and `[checks]` sections of a scenario (parsed
//!   and validated by `meshbench-mesh`), expanded into the plan's cells;
//! - [`MeshTarget`]: a [`CellTarget`] that brings a fresh embedded mesh up for every cell
//!   (apps + sidecar under the cell's CPU quota), measures the sidecar's cgroup, checks the
//!   canary split per cell and STRICT mTLS once per run, and tears everything down;
//! - [`CheckedTarget`]: the same checks against a real mesh (`target.url` + `[checks]`).
use crate::engine::ResolvedTarget;
use crate::plan::{CellPlan, Plan, TlsPlan};
use crate::run::{BoxError, CellTarget};
use crate::scenario::{Scenario, ScenarioError, Source};
use mesh::checks::{self, MtlsTarget};
use mesh::scenario::{validate_checks, validate_matrix, validate_mesh, RawMatrix, SpecError};
use mesh::{AccessLogMode, CellMeshSettings, ChecksSpec, Mesh, MeshSpec, RunningMesh};
use meshbench_schema::{CellResult, CellSettings, CheckResult, LoadMode, RunResult};
use std::path::PathBuf;

/// The mesh-related parts of a plan.
#[derive(Debug, Default)]
pub struct MeshPlan {
    pub mesh: Option<MeshSpec>,
    pub checks: Option<ChecksSpec>,
    /// Cells from `[matrix]` (or the single cell of an embedded mesh); `None`: the
    /// engine's default cell.
    pub cells: Option<Vec<CellPlan>>,
    /// Subset header the engine must record by (from `[mesh]` or `[checks]`).
    pub subset_header: Option<String>,
}

fn spec_err(src: &Source, e: SpecError) -> ScenarioError {
    let msg = format!("{}: {}", e.field, e.message);
    match e.span {
        Some(span) => src.error_at(span, msg),
        None => src.error_file(msg),
    }
}

/// Validate `[mesh]`, `[matrix]`, `[checks]` and expand the cells. `mode`, `rate` and
/// `connections` are the `[load]` values; `tls_with_ca` says whether a real target is
/// https with a CA file (so STRICT mTLS can be checked there).
pub fn plan_mesh(
    sc: &Scenario,
    src: &Source,
    mode: LoadMode,
    rate: Option<f64>,
    connections: u32,
    tls_with_ca: bool,
) -> Result<MeshPlan, ScenarioError> {
    let mesh = match &sc.mesh {
        Some(m) => {
            if let Some(u) = &sc.target.url {
                return Err(src.error_at(
                    u.span(),
                    "target.url and [mesh] are exclusive: the embedded mesh is the target",
                ));
            }
            if let Some(a) = &sc.app {
                return Err(src.error_at(
                    a.span(),
                    "[app] and [mesh] are exclusive: the mesh starts its own apps",
                ));
            }
            Some(validate_mesh(m.get_ref(), &src.dir()).map_err(|e| spec_err(src, e))?)
        }
        None => None,
    };
    let raw_matrix = sc.matrix.as_ref().map(|m| m.get_ref());
    if mesh.is_none() {
        if let Some(m) = raw_matrix {
            for (field, span) in [
                (
                    "matrix.sidecar_cpu",
                    m.sidecar_cpu.as_ref().map(|v| v.span()),
                ),
                ("matrix.access_log", m.access_log.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = span {
                    return Err(src.error_at(
                        span,
                        format!("{field} needs the embedded mesh (a [mesh] section); the matrix for a real mesh lists only rate and connections"),
                    ));
                }
            }
        }
    }
    let matrix = match raw_matrix {
        Some(m) => Some(validate_matrix(m).map_err(|e| spec_err(src, e))?),
        None if mesh.is_some() => {
            Some(validate_matrix(&RawMatrix::default()).map_err(|e| spec_err(src, e))?)
        }
        None => None,
    };
    if let (Some(m), LoadMode::Closed) = (raw_matrix, mode) {
        if let Some(r) = &m.rate {
            return Err(src.error_at(
                r.span(),
                "matrix.rate applies to open loop only (load.mode = \"closed\")",
            ));
        }
    }
    let checks = if mesh.is_some() || sc.checks.is_some() {
        let c = validate_checks(
            sc.checks.as_ref().map(|c| c.get_ref()),
            mesh.as_ref(),
            tls_with_ca,
        )
        .map_err(|e| spec_err(src, e))?;
        Some(c)
    } else {
        None
    };
    let cells = matrix.map(|m| {
        m.cells()
            .into_iter()
            .enumerate()
            .map(|(index, c)| {
                let mut id = Vec::new();
                if mesh.is_some() {
                    id.push(format!("cpu={}", c.sidecar_cpu.text));
                    id.push(format!("log={}", c.access_log.as_str()));
                }
                if let Some(r) = c.rate {
                    id.push(format!("rate={r}"));
                }
                if let Some(n) = c.connections {
                    id.push(format!("conns={n}"));
                }
                let cell_rate = if mode == LoadMode::Open {
                    c.rate.or(rate)
                } else {
                    None
                };
                let cell_conns = c.connections.unwrap_or(connections);
                CellPlan {
                    index,
                    id: id.join(","),
                    mode,
                    rate: cell_rate,
                    connections: cell_conns,
                    settings: CellSettings {
                        sidecar_cpu: mesh
                            .as_ref()
                            .and(c.sidecar_cpu.millis.map(|_| c.sidecar_cpu.text.clone())),
                        sidecar_cpu_millis: mesh.as_ref().and(c.sidecar_cpu.millis),
                        cpu_limit_applied: false,
                        cpu_limit_note: None,
                        sidecar_memory_bytes: mesh.as_ref().and_then(|m| m.sidecar_memory_bytes),
                        access_log: mesh.as_ref().map(|_| c.access_log.as_str().to_string()),
                        rate: cell_rate,
                        connections: cell_conns,
                    },
                }
            })
            .collect()
    });
    let subset_header = match (&mesh, &checks) {
        (Some(m), _) => Some(m.subset_header.clone()),
        (None, Some(c)) if c.weights.is_some() => Some(c.subset_header.clone()),
        _ => None,
    };
    Ok(MeshPlan {
        mesh,
        checks,
        cells,
        subset_header,
    })
}

/// Whether any cell of `plan` asks for a sidecar CPU or memory limit.
pub fn needs_cgroups(plan: &Plan) -> bool {
    plan.cells.iter().any(|c| {
        c.settings.sidecar_cpu_millis.is_some() || c.settings.sidecar_memory_bytes.is_some()
    })
}

/// Fail early (before anything starts) when the plan needs cgroups that cannot be written.
pub fn check_cgroups(plan: &Plan, no_cpu_limits: bool) -> Result<(), String> {
    if plan.mesh.is_none() || no_cpu_limits || !needs_cgroups(plan) {
        return Ok(());
    }
    mesh::cgroup::Cgroups::detect().map(|_| ()).map_err(|e| {
        format!(
            "sidecar CPU limits cannot be applied: {e}; run as root (or in a delegated cgroup v2 subtree), or pass --no-cpu-limits to measure without limits (cells are then marked \"CPU limit not applied\")"
        )
    })
}

/// The canary-split check of one cell from its per-subset counts; also fills the
/// subsets' expected shares.
fn canary_check(checks: &ChecksSpec, result: &mut CellResult) -> Option<CheckResult> {
    let weights = checks.weights.as_ref()?;
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    for s in &mut result.subsets {
        s.expected_share = Some(
            weights
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|(_, w)| *w as f64 / total.max(1) as f64)
                .unwrap_or(0.0),
        );
    }
    let observed: Vec<(String, u64)> = result
        .subsets
        .iter()
        .map(|s| (s.name.clone(), s.count))
        .collect();
    Some(checks::canary_split(weights, &observed, checks.confidence))
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
    /// `exe` is the loadgen binary (for `serve` and `mesh-sidecar`); `run_dir` where the
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
        let spec = plan
            .mesh
            .as_ref()
            .ok_or("the scenario has no [mesh] section")?;
        self.teardown().await;
        let mut m = match self.mesh.take() {
            Some(m) => m,
            None => {
                let (spec, dir, exe) = (spec.clone(), self.run_dir.clone(), self.exe.clone());
                tokio::task::spawn_blocking(move || Mesh::prepare(&spec, &dir, &exe)).await??
            }
        };
        let settings = CellMeshSettings {
            cpu_millis: cell.settings.sidecar_cpu_millis,
            memory_bytes: cell.settings.sidecar_memory_bytes,
            access_log: cell
                .settings
                .access_log
                .as_deref()
                .and_then(AccessLogMode::parse)
                .unwrap_or(AccessLogMode::Off),
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
        let path = plan.target.path.clone().unwrap_or_else(|| "/".into());
        if self.strict.is_none() && plan.checks.as_ref().is_some_and(|c| c.strict_mtls) {
            self.strict = Some(
                checks::strict_mtls(&MtlsTarget {
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
                Some(match &cell.settings.sidecar_cpu {
                    Some(q) => format!("CPU limit not applied: --no-cpu-limits (the {q} limit was not enforced; no cgroup, so no cpu.stat)"),
                    None => "CPU limit not applied: --no-cpu-limits (no cgroup, so no cpu.stat)".into(),
                })
            } else {
                note
            };
            result.sidecar = Some(stats);
        }
        if let Some(c) = plan.checks.as_ref() {
            if let Some(check) = canary_check(c, result) {
                result.checks.push(check);
            }
        }
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

/// A real mesh at `target.url`, with the `[checks]` of the scenario.
pub struct CheckedTarget<T> {
    pub inner: T,
    strict: Option<CheckResult>,
}

impl<T> CheckedTarget<T> {
    pub fn new(inner: T) -> Self {
        CheckedTarget {
            inner,
            strict: None,
        }
    }
}

impl<T: CellTarget> CellTarget for CheckedTarget<T> {
    async fn prepare(&mut self, plan: &Plan, cell: &CellPlan) -> Result<ResolvedTarget, BoxError> {
        let resolved = self.inner.prepare(plan, cell).await?;
        let strict = plan.checks.as_ref().is_some_and(|c| c.strict_mtls);
        if strict && self.strict.is_none() {
            let uri: http::Uri = resolved.url.parse()?;
            let host = uri
                .host()
                .unwrap_or("localhost")
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let addr = match resolved.connect_to {
                Some(a) => a,
                None => tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .next()
                    .ok_or_else(|| format!("{host}: no address"))?,
            };
            let server_name = resolved.tls.server_name.clone().unwrap_or(host);
            let ca = resolved
                .tls
                .ca
                .clone()
                .ok_or("checks.strict_mtls needs target.tls.ca")?;
            let client = resolved
                .tls
                .cert
                .as_deref()
                .zip(resolved.tls.key.as_deref());
            let path = plan
                .target
                .path
                .clone()
                .unwrap_or_else(|| uri.path().to_string());
            self.strict = Some(
                checks::strict_mtls(&MtlsTarget {
                    addr,
                    server_name: &server_name,
                    ca: &ca,
                    client,
                    path: &path,
                })
                .await,
            );
        }
        Ok(resolved)
    }

    async fn finish(
        &mut self,
        plan: &Plan,
        cell: &CellPlan,
        result: &mut CellResult,
    ) -> Result<(), BoxError> {
        self.inner.finish(plan, cell, result).await?;
        if let Some(c) = plan.checks.as_ref() {
            if let Some(check) = canary_check(c, result) {
                result.checks.push(check);
            }
        }
        Ok(())
    }

    async fn finish_run(&mut self, plan: &Plan, run: &mut RunResult) -> Result<(), BoxError> {
        if let Some(s) = self.strict.take() {
            run.checks.push(s);
        }
        self.inner.finish_run(plan, run).await
    }
}

fn fmt_bytes(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Summary lines about the sidecar of each cell (CPU, throttling, memory, access log) and
/// limits that were not applied, for the end-of-run table.
pub fn sidecar_summary(run: &RunResult) -> String {
    let mut out = String::new();
    for c in &run.cells {
        let Some(s) = &c.sidecar else { continue };
        let cpu = match &s.cpu_stat {
            Some(st) if c.settings.sidecar_cpu_millis.is_none() => format!(
                "cpu {:.0}m used (no limit)",
                st.usage_usec as f64 / 1000.0 / c.duration_s.max(1e-9)
            ),
            Some(st) => {
                let secs = c.duration_s.max(1e-9);
                format!(
                    "cpu {:.0}m used, throttled in {}/{} periods ({:.1} ms/s)",
                    st.usage_usec as f64 / 1000.0 / secs,
                    st.nr_throttled,
                    st.nr_periods,
                    st.throttled_usec as f64 / 1000.0 / secs
                )
            }
            None => "cpu.stat not measured".into(),
        };
        let mem = s
            .memory_peak_bytes
            .map(fmt_bytes)
            .unwrap_or_else(|| "-".into());
        let log = match (c.settings.access_log.as_deref(), s.access_log_lines) {
            (Some("off"), _) | (None, _) => String::new(),
            (Some(mode), Some(n)) => format!(", access log {mode}: {n} lines"),
            (Some(mode), None) => format!(", access log {mode}"),
        };
        out.push_str(&format!(
            "sidecar {}: {cpu}, peak memory {mem}{log}\n",
            c.id
        ));
        if let Some(note) = &c.settings.cpu_limit_note {
            out.push_str(&format!("  {note}\n"));
        }
    }
    out
}
