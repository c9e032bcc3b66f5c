//! `[matrix]` and the cells it expands into: mesh mode x sidecar CPU limit x access-log
//! mode x sidecar concurrency (embedded mesh) x rate x connections. A `baseline` cell has
//! no sidecar, so it is one cell per rate x connections. Every cell's id is built here and
//! nowhere else.

use super::load::MAX_CONNECTIONS;
use super::mesh::at;
use crate::scenario::{MatrixSection, RawQuantity, Source, SpecError};
use meshbench_schema::units::{format_cpu_millis, parse_cpu_millis};
use meshbench_schema::{CellSettings, LoadMode};
use serde::Serialize;
use sidecar::AccessLogMode;
use testbed::MeshMode;

/// Most cells one run may have.
pub const MAX_CELLS: usize = 1000;

/// A sidecar CPU limit: as written, and in millicores (`None`: no limit, or a relative
/// limit not yet calibrated).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuLimit {
    pub text: String,
    pub millis: Option<u64>,
    /// `"0.8x"`: this factor times the most CPU one sidecar needs at the cell's load,
    /// measured by a short calibration with no limit before the cell.
    pub relative: Option<f64>,
}

impl CpuLimit {
    fn none() -> CpuLimit {
        CpuLimit {
            text: "none".into(),
            millis: None,
            relative: None,
        }
    }

    /// Whether the cell has a limit (absolute or relative).
    pub fn is_limited(&self) -> bool {
        self.millis.is_some() || self.relative.is_some()
    }
}

/// Largest factor of a relative CPU limit.
pub const MAX_CPU_FACTOR: f64 = 100.0;
/// Most sidecar worker threads.
pub const MAX_CONCURRENCY: i64 = 64;

/// The validated `[matrix]`. The sidecar axes have at least one entry; an empty `rate` or
/// `connections` means the `[load]` value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matrix {
    /// Empty: no mode axis (every cell is `server`, ids without `mode=`).
    pub mode: Vec<MeshMode>,
    pub sidecar_cpu: Vec<CpuLimit>,
    pub access_log: Vec<AccessLogMode>,
    /// Empty: the `[mesh] concurrency` value (ids without `conc=`).
    pub concurrency: Vec<u32>,
    pub rate: Vec<f64>,
    pub connections: Vec<u32>,
    /// A real mesh through a `[driver]`: the access-log settings as written ("off", "on",
    /// ...); empty otherwise.
    pub driven_log: Vec<String>,
}

/// The settings a `[driver]` applies to a real mesh for one cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrivenCell {
    pub cpu: CpuLimit,
    pub access_log: String,
}

/// The embedded mesh's settings of one cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SidecarCell {
    pub mode: MeshMode,
    pub cpu: CpuLimit,
    pub access_log: AccessLogMode,
    pub memory_bytes: Option<u64>,
    /// Sidecar worker threads; `None`: the `[mesh] concurrency` value.
    pub concurrency: Option<u32>,
}

/// One cell of the run: what distinguishes it and how hard to push.
#[derive(Debug, Clone, Serialize)]
pub struct CellPlan {
    pub index: usize,
    /// Stable id, e.g. `default`, `rate=500` or `cpu=100m,log=off`.
    pub id: String,
    pub mode: LoadMode,
    pub rate: Option<f64>,
    pub connections: u32,
    /// The embedded mesh's sidecar settings; `None` for other targets.
    pub sidecar: Option<SidecarCell>,
    /// A real mesh's settings, applied by the `[driver]`; `None` without one.
    pub driven: Option<DrivenCell>,
    /// The run's rate profile (`[load.profile]`), when it has one.
    pub profile: Option<meshbench_schema::profile::RateProfile>,
}

impl CellPlan {
    /// The settings as run.json records them (limits not applied until the target says;
    /// a relative limit gets its millicores when it is calibrated).
    pub fn settings(&self) -> CellSettings {
        if let Some(d) = &self.driven {
            return CellSettings {
                sidecar_cpu: d.cpu.millis.map(|_| d.cpu.text.clone()),
                sidecar_cpu_millis: d.cpu.millis,
                access_log: Some(d.access_log.clone()),
                rate: self.rate,
                connections: self.connections,
                profile: self.profile.clone(),
                ..CellSettings::default()
            };
        }
        let s = self.sidecar.as_ref();
        let with_sidecar = s.filter(|s| s.mode != MeshMode::Baseline);
        CellSettings {
            sidecar_cpu: with_sidecar.and_then(|s| s.cpu.is_limited().then(|| s.cpu.text.clone())),
            sidecar_cpu_millis: with_sidecar.and_then(|s| s.cpu.millis),
            cpu_limit_applied: false,
            cpu_limit_note: None,
            sidecar_memory_bytes: with_sidecar.and_then(|s| s.memory_bytes),
            access_log: with_sidecar.map(|s| s.access_log.as_str().to_string()),
            rate: self.rate,
            connections: self.connections,
            mesh_mode: s.map(|s| s.mode.as_str().to_string()),
            sidecar_concurrency: with_sidecar.and_then(|s| s.concurrency),
            cpu_limit_calibration: None,
            profile: self.profile.clone(),
        }
    }
}

impl Matrix {
    /// The embedded mesh's cell settings in run order: mode outermost (as listed), then
    /// CPU limit, access log, concurrency; a `baseline` mode is one entry (no sidecar).
    fn sidecar_cells(&self, memory_bytes: Option<u64>) -> Vec<SidecarCell> {
        let modes = if self.mode.is_empty() {
            vec![MeshMode::Server]
        } else {
            self.mode.clone()
        };
        let conc: Vec<Option<u32>> = if self.concurrency.is_empty() {
            vec![None]
        } else {
            self.concurrency.iter().copied().map(Some).collect()
        };
        let mut out = Vec::new();
        for mode in modes {
            if mode == MeshMode::Baseline {
                out.push(SidecarCell {
                    mode,
                    cpu: CpuLimit::none(),
                    access_log: AccessLogMode::Off,
                    memory_bytes: None,
                    concurrency: None,
                });
                continue;
            }
            for cpu in &self.sidecar_cpu {
                for log in &self.access_log {
                    for c in &conc {
                        out.push(SidecarCell {
                            mode,
                            cpu: cpu.clone(),
                            access_log: *log,
                            memory_bytes,
                            concurrency: *c,
                        });
                    }
                }
            }
        }
        out
    }

    /// The cells in run order: the sidecar settings outermost (see above), then rate,
    /// connections. `sidecar`: the embedded mesh's memory limit (`Some(None)`: a mesh
    /// without one; `None`: no sidecar, so the sidecar axes are not part of the cells).
    pub fn cells(
        &self,
        sidecar: Option<Option<u64>>,
        mode: LoadMode,
        rate: Option<f64>,
        connections: u32,
    ) -> Vec<CellPlan> {
        let opt = |v: Vec<Option<f64>>| if v.is_empty() { vec![None] } else { v };
        let rates = opt(self.rate.iter().copied().map(Some).collect());
        let conns: Vec<Option<u32>> = if self.connections.is_empty() {
            vec![None]
        } else {
            self.connections.iter().copied().map(Some).collect()
        };
        let sidecars: Vec<Option<SidecarCell>> = match sidecar {
            None => vec![None],
            Some(memory_bytes) => self
                .sidecar_cells(memory_bytes)
                .into_iter()
                .map(Some)
                .collect(),
        };
        let driven: Vec<Option<DrivenCell>> = if self.driven_log.is_empty() {
            vec![None]
        } else {
            self.sidecar_cpu
                .iter()
                .flat_map(|cpu| {
                    self.driven_log.iter().map(move |log| {
                        Some(DrivenCell {
                            cpu: cpu.clone(),
                            access_log: log.clone(),
                        })
                    })
                })
                .collect()
        };
        let mut out = Vec::new();
        for (sc, dc) in sidecars
            .iter()
            .flat_map(|s| driven.iter().map(move |d| (s, d)))
        {
            for r in &rates {
                for c in &conns {
                    let mut id = Vec::new();
                    if let Some(s) = sc {
                        if !self.mode.is_empty() {
                            id.push(format!("mode={}", s.mode.as_str()));
                        }
                        if s.mode != MeshMode::Baseline {
                            id.push(format!("cpu={}", s.cpu.text));
                            id.push(format!("log={}", s.access_log.as_str()));
                            if let Some(n) = s.concurrency {
                                id.push(format!("conc={n}"));
                            }
                        }
                    }
                    if let Some(d) = dc {
                        id.push(format!("cpu={}", d.cpu.text));
                        id.push(format!("log={}", d.access_log));
                    }
                    if let Some(r) = r {
                        id.push(format!("rate={r}"));
                    }
                    if let Some(c) = c {
                        id.push(format!("conns={c}"));
                    }
                    let cell_rate = match mode {
                        LoadMode::Open => r.or(rate),
                        LoadMode::Closed => None,
                    };
                    out.push(CellPlan {
                        index: out.len(),
                        id: if id.is_empty() {
                            "default".into()
                        } else {
                            id.join(",")
                        },
                        mode,
                        rate: cell_rate,
                        connections: c.unwrap_or(connections),
                        sidecar: sc.clone(),
                        driven: dc.clone(),
                        profile: None,
                    });
                }
            }
        }
        out
    }

    /// How many cells [`Matrix::cells`] makes, without making them.
    pub fn cell_count(&self, with_sidecar: bool) -> usize {
        let side = if with_sidecar {
            let per_mode = self
                .sidecar_cpu
                .len()
                .saturating_mul(self.access_log.len())
                .saturating_mul(self.concurrency.len().max(1));
            if self.mode.is_empty() {
                per_mode
            } else {
                self.mode
                    .iter()
                    .map(|m| {
                        if *m == MeshMode::Baseline {
                            1
                        } else {
                            per_mode
                        }
                    })
                    .fold(0usize, |a, n| a.saturating_add(n))
            }
        } else if !self.driven_log.is_empty() {
            self.sidecar_cpu.len().saturating_mul(self.driven_log.len())
        } else {
            1
        };
        side.saturating_mul(self.rate.len().max(1))
            .saturating_mul(self.connections.len().max(1))
    }
}

/// `[matrix] sidecar_cpu`: absolute limits, relative ones (`"0.8x"`) and "none".
fn cpu_list(src: &Source, raw: &MatrixSection) -> Result<Vec<CpuLimit>, SpecError> {
    let mut sidecar_cpu = Vec::new();
    match &raw.sidecar_cpu {
        None => sidecar_cpu.push(CpuLimit::none()),
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(at(
                    src,
                    list.span(),
                    "matrix.sidecar_cpu",
                    "must list at least one CPU limit",
                ));
            }
            for q in list.get_ref() {
                let text = q.get_ref().text();
                let limit = match text.trim() {
                    "none" | "unlimited" => CpuLimit::none(),
                    t if t.ends_with('x') && matches!(q.get_ref(), RawQuantity::Str(_)) => {
                        let f = t[..t.len() - 1]
                            .trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite() && *f > 0.0 && *f <= MAX_CPU_FACTOR)
                            .ok_or_else(|| {
                                at(
                                    src,
                                    q.span(),
                                    "matrix.sidecar_cpu",
                                    format!("`{t}`: a relative limit is a factor above 0 and at most {MAX_CPU_FACTOR} of the measured need, e.g. \"0.8x\""),
                                )
                            })?;
                        CpuLimit {
                            text: t.to_string(),
                            millis: None,
                            relative: Some(f),
                        }
                    }
                    t => {
                        if matches!(q.get_ref(), RawQuantity::Int(i) if *i < 0)
                            || matches!(q.get_ref(), RawQuantity::Float(f) if *f < 0.0 || !f.is_finite())
                        {
                            return Err(at(
                                src,
                                q.span(),
                                "matrix.sidecar_cpu",
                                format!("`{t}` is not a CPU quantity"),
                            ));
                        }
                        let millis = parse_cpu_millis(t)
                            .map_err(|e| at(src, q.span(), "matrix.sidecar_cpu", e.0))?;
                        CpuLimit {
                            text: match q.get_ref() {
                                RawQuantity::Str(s) => s.trim().to_string(),
                                _ => format_cpu_millis(millis),
                            },
                            millis: Some(millis),
                            relative: None,
                        }
                    }
                };
                if sidecar_cpu
                    .iter()
                    .any(|c: &CpuLimit| c.millis == limit.millis && c.relative == limit.relative)
                {
                    return Err(at(
                        src,
                        q.span(),
                        "matrix.sidecar_cpu",
                        format!("`{text}` is listed twice"),
                    ));
                }
                sidecar_cpu.push(limit);
            }
        }
    }
    Ok(sidecar_cpu)
}

/// `[matrix] rate` and `connections` (empty: the `[load]` value).
fn load_lists(src: &Source, raw: &MatrixSection) -> Result<(Vec<f64>, Vec<u32>), SpecError> {
    let mut rate = Vec::new();
    for r in entries(src, &raw.rate, "matrix.rate", "rate")? {
        rate.push(super::load::rate(src, r, "matrix.rate")?);
    }
    let connections = count_list(
        src,
        &raw.connections,
        "matrix.connections",
        ("count", "connections"),
        MAX_CONNECTIONS,
        false,
    )?;
    Ok((rate, connections))
}

/// The entries of a matrix list: none when it is left out; an error placed on it when it is
/// given empty ("must list at least one `what` (or be left out)").
fn entries<'a, T>(
    src: &Source,
    list: &'a Option<toml::Spanned<Vec<T>>>,
    field: &str,
    what: &str,
) -> Result<&'a [T], SpecError> {
    match list {
        None => Ok(&[]),
        Some(l) if l.get_ref().is_empty() => Err(at(
            src,
            l.span(),
            field,
            format!("must list at least one {what} (or be left out)"),
        )),
        Some(l) => Ok(l.get_ref()),
    }
}

/// A matrix list of whole numbers, each 1..=`max` (none given: empty). `what` names one
/// entry and the unit in errors; `unique` refuses an entry listed twice.
fn count_list(
    src: &Source,
    list: &Option<toml::Spanned<Vec<toml::Spanned<i64>>>>,
    field: &str,
    what: (&str, &str),
    max: i64,
    unique: bool,
) -> Result<Vec<u32>, SpecError> {
    let mut out = Vec::new();
    for c in entries(src, list, field, what.0)? {
        let v = *c.get_ref();
        if !(1..=max).contains(&v) {
            return Err(at(
                src,
                c.span(),
                field,
                format!("{v} {}: must be between 1 and {max}", what.1),
            ));
        }
        if unique && out.contains(&(v as u32)) {
            return Err(at(src, c.span(), field, format!("{v} is listed twice")));
        }
        out.push(v as u32);
    }
    Ok(out)
}

/// Validate `[matrix]` for the embedded mesh. Absent axes default to one cell: CPU "none",
/// access log "off".
pub(super) fn matrix(src: &Source, raw: &MatrixSection) -> Result<Matrix, SpecError> {
    let sidecar_cpu = cpu_list(src, raw)?;
    let mut access_log = Vec::new();
    match &raw.access_log {
        None => access_log.push(AccessLogMode::Off),
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(at(
                    src,
                    list.span(),
                    "matrix.access_log",
                    "must list at least one mode",
                ));
            }
            for m in list.get_ref() {
                let mode = AccessLogMode::parse(m.get_ref()).ok_or_else(|| {
                    at(src,
                        m.span(),
                        "matrix.access_log",
                        format!("unknown access-log mode `{}` (expected \"off\", \"buffered\" or \"sync\")", m.get_ref()),
                    )
                })?;
                if access_log.contains(&mode) {
                    return Err(at(
                        src,
                        m.span(),
                        "matrix.access_log",
                        format!("`{}` is listed twice", m.get_ref()),
                    ));
                }
                access_log.push(mode);
            }
        }
    }
    let (rate, connections) = load_lists(src, raw)?;
    let mut mode = Vec::new();
    for m in entries(src, &raw.mode, "matrix.mode", "mode")? {
        let v = MeshMode::parse(m.get_ref()).ok_or_else(|| {
            at(
                src,
                m.span(),
                "matrix.mode",
                format!(
                    "unknown mode `{}` (expected \"baseline\", \"server\" or \"both\")",
                    m.get_ref()
                ),
            )
        })?;
        if mode.contains(&v) {
            return Err(at(
                src,
                m.span(),
                "matrix.mode",
                format!("`{}` is listed twice", m.get_ref()),
            ));
        }
        mode.push(v);
    }
    let concurrency = count_list(
        src,
        &raw.concurrency,
        "matrix.concurrency",
        ("worker count", "workers"),
        MAX_CONCURRENCY,
        true,
    )?;
    Ok(Matrix {
        mode,
        sidecar_cpu,
        access_log,
        concurrency,
        rate,
        connections,
        driven_log: vec![],
    })
}

/// Validate `[matrix]` for a real mesh whose `[driver]` applies each cell: sidecar CPU
/// (absolute limits or "none"; a relative limit needs a calibration only the embedded mesh
/// runs) x access log (the values the driver can set) x rate x connections. The embedded
/// mesh's `mode` and `concurrency` cannot be applied to a real mesh.
pub(super) fn driven(
    src: &Source,
    raw: &MatrixSection,
    driver: &super::DriverPlan,
) -> Result<Matrix, SpecError> {
    for (field, span) in [
        ("matrix.mode", raw.mode.as_ref().map(|v| v.span())),
        (
            "matrix.concurrency",
            raw.concurrency.as_ref().map(|v| v.span()),
        ),
    ] {
        if let Some(span) = span {
            return Err(at(
                src,
                span,
                field,
                format!(
                    "the {} driver cannot apply this to a real mesh (it runs as deployed); it is a dimension of the embedded mesh",
                    driver.name()
                ),
            ));
        }
    }
    let sidecar_cpu = cpu_list(src, raw)?;
    if let Some(list) = &raw.sidecar_cpu {
        if let Some(q) = list
            .get_ref()
            .iter()
            .find(|q| matches!(q.get_ref(), RawQuantity::Str(t) if t.trim().ends_with('x')))
        {
            return Err(at(
                src,
                q.span(),
                "matrix.sidecar_cpu",
                "a relative limit needs the calibration the embedded mesh runs; give the real mesh millicores (\"500m\") or \"none\"",
            ));
        }
    }
    // Kubernetes refuses a container whose CPU request is above its limit
    if let (Some((req_text, req)), Some(list)) = (driver.cpu_request(), &raw.sidecar_cpu) {
        for (q, limit) in list.get_ref().iter().zip(&sidecar_cpu) {
            if let Some(m) = limit.millis.filter(|m| *m < req) {
                return Err(at(
                    src,
                    q.span(),
                    "matrix.sidecar_cpu",
                    format!(
                        "{m}m is below driver.cpu_request `{req_text}`: Kubernetes refuses a CPU request above the limit"
                    ),
                ));
            }
        }
    }
    let allowed = driver.access_log_values();
    let mut driven_log = Vec::new();
    match &raw.access_log {
        None => driven_log.push("off".to_string()),
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(at(
                    src,
                    list.span(),
                    "matrix.access_log",
                    "must list at least one mode",
                ));
            }
            for m in list.get_ref() {
                let v = m.get_ref().trim();
                if !allowed.contains(&v) {
                    return Err(at(
                        src,
                        m.span(),
                        "matrix.access_log",
                        format!(
                            "the {} driver cannot set access logging `{v}` (it sets {})",
                            driver.name(),
                            allowed
                                .iter()
                                .map(|a| format!("\"{a}\""))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                if driven_log.iter().any(|d| d == v) {
                    return Err(at(
                        src,
                        m.span(),
                        "matrix.access_log",
                        format!("`{v}` is listed twice"),
                    ));
                }
                driven_log.push(v.to_string());
            }
        }
    }
    let (rate, connections) = load_lists(src, raw)?;
    Ok(Matrix {
        mode: vec![],
        sidecar_cpu,
        access_log: vec![],
        concurrency: vec![],
        rate,
        connections,
        driven_log,
    })
}
