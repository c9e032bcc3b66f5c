//! The typed plan: every section of a scenario validated in one place, every default
//! resolved, every error placed at `file:line:col`. Parsing ends here: the engine and the
//! targets take http types, durations, [`Slo`]s and access-log modes as they are.
//!
//! - [`target`]: `[target]` -> the URL, [`RequestPlan`], [`TlsPlan`];
//! - [`load`]: `[load]` -> [`LoadPlan`] (every number bounded to what the engine honours);
//! - [`app`]: `[app]` -> an [`app::AppConfig`];
//! - [`mesh`]: `[mesh]` -> a [`testbed::MeshSpec`];
//! - [`matrix`]: `[matrix]` -> the [`CellPlan`]s (ids built once);
//! - [`checks`]: `[checks]` -> [`ChecksSpec`];
//! - [`driver`]: `[driver]` -> [`DriverPlan`] (how a real mesh gets each cell's settings);
//! - [`profile`]: `[load.profile]` -> a rate profile, `[search]` -> [`SearchPlan`];
//! - `slo = [...]` -> [`Slo`]s (the grammar of `meshbench-schema`, which `report gate` uses).

mod app;
pub mod checks;
pub mod driver;
pub mod load;
pub mod matrix;
mod mesh;
pub mod profile;
mod ser;
pub mod target;

pub use checks::{ChecksSpec, LagLimit};
pub use driver::{DriverKind, DriverPlan, OnFailure};
pub use load::LoadPlan;
pub use matrix::{CellPlan, CpuLimit, DrivenCell, Matrix, SidecarCell};
pub use profile::SearchPlan;
pub use target::{Protocol, RequestPlan, TlsPlan};

use crate::scenario::{MatrixSection, Scenario, Source, SpecError};
use meshbench_schema::slo::Slo;
use meshbench_schema::LoadMode;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What the load goes to.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TargetKind {
    /// A real endpoint at `target.url` (a real mesh, with `[checks]`).
    Url { url: String, tls: TlsPlan },
    /// The built-in app server, started in-process.
    App(::app::AppConfig),
    /// The embedded mesh, brought up per cell.
    Mesh(testbed::MeshSpec),
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    pub description: Option<String>,
    pub scenario_file: Option<PathBuf>,
    pub target: TargetKind,
    pub request: RequestPlan,
    pub load: LoadPlan,
    #[serde(serialize_with = "ser::slos")]
    pub slo: Vec<Slo>,
    /// Canary split / STRICT mTLS checks (embedded mesh, or `[checks]` for a real one).
    pub checks: Option<ChecksSpec>,
    pub matrix: Option<Matrix>,
    pub cells: Vec<CellPlan>,
    /// How each cell's settings reach a real mesh (`target.url` + `[matrix]`).
    pub driver: Option<DriverPlan>,
    /// A capacity search per cell (`[search]`).
    pub search: Option<SearchPlan>,
}

impl Plan {
    /// Read, override, parse and validate a scenario file.
    pub fn load(path: &Path, sets: &[String]) -> Result<Plan, SpecError> {
        let src = Source::load(path, sets)?;
        let sc = src.parse()?;
        Plan::from_scenario(&sc, &src)
    }

    /// Validate a parsed scenario.
    pub fn from_scenario(sc: &Scenario, src: &Source) -> Result<Plan, SpecError> {
        let name = match &sc.name {
            Some(n) => {
                let v = n.get_ref().trim();
                if v.is_empty()
                    || v.len() > 100
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(src.error_at(
                        n.span(),
                        "name must be 1 to 100 letters, digits, '-', '_' or '.'",
                    ));
                }
                v.to_string()
            }
            None => src
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".into()),
        };
        let url = target::url(src, &sc.target)?;
        let target = match (&url, &sc.app, &sc.mesh) {
            (Some(_), Some(a), _) => {
                return Err(src.error_at(
                    a.span(),
                    "[app] and target.url are exclusive: the built-in app server is the target",
                ))
            }
            (Some(_), None, Some(_)) => {
                return Err(src.error_at(
                    sc.target.url.as_ref().map(|u| u.span()).unwrap_or(0..0),
                    "target.url and [mesh] are exclusive: the embedded mesh is the target",
                ))
            }
            (None, Some(a), Some(_)) => {
                return Err(src.error_at(
                    a.span(),
                    "[app] and [mesh] are exclusive: the mesh starts its own apps",
                ))
            }
            (Some((u, https)), None, None) => TargetKind::Url {
                url: u.clone(),
                tls: target::tls(sc, src, Some(*https))?,
            },
            (None, Some(a), None) => TargetKind::App(app::app(src, a)?),
            (None, None, Some(m)) => TargetKind::Mesh(mesh::mesh(src, m.get_ref())?),
            (None, None, None) => {
                return Err(src.error_file(
                    "target.url is required (or an [app] section to run against the built-in app server)",
                ))
            }
        };
        if !matches!(target, TargetKind::Url { .. }) {
            // [target.tls] is only checked for a real endpoint; it must still name files
            // that exist, so a typo does not wait for the day the url is set.
            target::tls(sc, src, None)?;
        }
        let search = sc
            .search
            .as_ref()
            .map(|s| profile::search(src, s))
            .transpose()?;
        let load = load::load(src, &sc.load, search.as_ref())?;
        let slo = sc
            .slo
            .iter()
            .map(|s| Slo::parse(s.get_ref()).map_err(|e| src.error_at(s.span(), e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let mesh_spec = match &target {
            TargetKind::Mesh(m) => Some(m),
            _ => None,
        };
        let tls_with_ca = matches!(&target, TargetKind::Url { url, tls } if url.starts_with("https://") && tls.ca.is_some());
        let checks = if mesh_spec.is_some() || sc.checks.is_some() {
            Some(checks::checks(
                src,
                sc.checks.as_ref().map(|c| c.get_ref()),
                mesh_spec,
                tls_with_ca,
            )?)
        } else {
            None
        };
        let driver = match (&sc.driver, &target) {
            (None, _) => None,
            (Some(d), TargetKind::Url { .. }) => Some(driver::driver(src, d.get_ref())?),
            (Some(d), _) => {
                return Err(src.error_at(
                    d.span(),
                    "[driver] applies each cell's settings to a real mesh at target.url; the embedded mesh and the built-in app apply their own",
                ))
            }
        };
        let raw_matrix = sc.matrix.as_ref().map(|m| m.get_ref());
        if let Some(m) = raw_matrix.filter(|_| driver.is_none()) {
            if mesh_spec.is_none() {
                for (field, span) in [
                    (
                        "matrix.sidecar_cpu",
                        m.sidecar_cpu.as_ref().map(|v| v.span()),
                    ),
                    ("matrix.access_log", m.access_log.as_ref().map(|v| v.span())),
                    ("matrix.mode", m.mode.as_ref().map(|v| v.span())),
                    (
                        "matrix.concurrency",
                        m.concurrency.as_ref().map(|v| v.span()),
                    ),
                ] {
                    if let Some(span) = span {
                        return Err(src.error_at(
                            span,
                            format!("{field} needs the embedded mesh (a [mesh] section), or a [driver] that applies it to the real mesh at target.url; without one the matrix for a real mesh lists only rate and connections"),
                        ));
                    }
                }
            }
            if let (Some(r), true) = (&m.rate, search.is_some() || load.profile.is_some()) {
                return Err(src.error_at(
                    r.span(),
                    if search.is_some() {
                        "matrix.rate and [search] are exclusive: the search finds each cell's rate"
                    } else {
                        "matrix.rate and load.profile are exclusive: the profile sets the rate"
                    },
                ));
            }
            if let (Some(r), LoadMode::Closed) = (&m.rate, load.mode) {
                return Err(src.error_at(
                    r.span(),
                    "matrix.rate applies to open loop only (load.mode = \"closed\")",
                ));
            }
        }
        if let (Some(m), Some(_), LoadMode::Closed) = (raw_matrix, &driver, load.mode) {
            if let Some(r) = &m.rate {
                return Err(src.error_at(
                    r.span(),
                    "matrix.rate applies to open loop only (load.mode = \"closed\")",
                ));
            }
        }
        let matrix = match (raw_matrix, &driver) {
            (Some(m), Some(d)) => Some(matrix::driven(src, m, d)?),
            (None, Some(d)) => Some(matrix::driven(src, &MatrixSection::default(), d)?),
            (Some(m), None) => Some(matrix::matrix(src, m)?),
            (None, None) if mesh_spec.is_some() => {
                Some(matrix::matrix(src, &MatrixSection::default())?)
            }
            (None, None) => None,
        };
        let cells = match &matrix {
            Some(m) => {
                let n = m.cell_count(mesh_spec.is_some());
                if n > matrix::MAX_CELLS {
                    return Err(src.error_at(
                        sc.matrix.as_ref().map(|m| m.span()).unwrap_or(0..0),
                        format!(
                            "the matrix has {n} cells; at most {} are run",
                            matrix::MAX_CELLS
                        ),
                    ));
                }
                m.cells(
                    mesh_spec.map(|s| s.sidecar_memory_bytes),
                    load.mode,
                    load.rate,
                    load.connections,
                )
            }
            None => vec![CellPlan {
                index: 0,
                id: "default".into(),
                mode: load.mode,
                rate: load.rate,
                connections: load.connections,
                sidecar: None,
                driven: None,
                profile: None,
            }],
        };
        let mut cells = cells;
        for c in &mut cells {
            c.profile.clone_from(&load.profile);
        }
        let subset_header = match (mesh_spec, &checks) {
            (Some(m), _) => Some(m.subset_header.clone()),
            (None, Some(c)) if c.weights.is_some() => Some(c.subset_header.clone()),
            _ => None,
        }
        .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok());
        let request = target::request(src, &sc.target, subset_header)?;
        Ok(Plan {
            name,
            description: sc.description.clone(),
            scenario_file: Some(src.path.clone()),
            target,
            request,
            load,
            slo,
            checks,
            matrix,
            cells,
            driver,
            search,
        })
    }

    /// The embedded mesh, when the plan runs against it.
    pub fn mesh(&self) -> Option<&testbed::MeshSpec> {
        match &self.target {
            TargetKind::Mesh(m) => Some(m),
            _ => None,
        }
    }

    /// TLS settings of a real endpoint (default for the others).
    pub fn url_tls(&self) -> Option<&TlsPlan> {
        match &self.target {
            TargetKind::Url { tls, .. } => Some(tls),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
