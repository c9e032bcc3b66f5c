//! `[matrix]` and the cells it expands into: sidecar CPU limit x access-log mode (embedded
//! mesh) x rate x connections. Every cell's id is built here and nowhere else.

use super::load::MAX_CONNECTIONS;
use super::mesh::at;
use crate::scenario::{MatrixSection, RawQuantity, Source, SpecError};
use meshbench_schema::units::{format_cpu_millis, parse_cpu_millis};
use meshbench_schema::{CellSettings, LoadMode};
use serde::Serialize;
use sidecar::AccessLogMode;

/// Most cells one run may have.
pub const MAX_CELLS: usize = 1000;

/// A sidecar CPU limit: as written, and in millicores (`None`: no limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuLimit {
    pub text: String,
    pub millis: Option<u64>,
}

/// The validated `[matrix]`. The sidecar axes have at least one entry; an empty `rate` or
/// `connections` means the `[load]` value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matrix {
    pub sidecar_cpu: Vec<CpuLimit>,
    pub access_log: Vec<AccessLogMode>,
    pub rate: Vec<f64>,
    pub connections: Vec<u32>,
}

/// The sidecar settings of one cell of the embedded mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SidecarCell {
    pub cpu: CpuLimit,
    pub access_log: AccessLogMode,
    pub memory_bytes: Option<u64>,
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
}

impl CellPlan {
    /// The settings as run.json records them (limits not applied until the target says).
    pub fn settings(&self) -> CellSettings {
        let s = self.sidecar.as_ref();
        CellSettings {
            sidecar_cpu: s.and_then(|s| s.cpu.millis.map(|_| s.cpu.text.clone())),
            sidecar_cpu_millis: s.and_then(|s| s.cpu.millis),
            cpu_limit_applied: false,
            cpu_limit_note: None,
            sidecar_memory_bytes: s.and_then(|s| s.memory_bytes),
            access_log: s.map(|s| s.access_log.as_str().to_string()),
            rate: self.rate,
            connections: self.connections,
        }
    }
}

impl Matrix {
    /// The cells in run order: CPU limit outermost, then access log, rate, connections.
    /// `sidecar`: the embedded mesh's memory limit (`Some(None)`: a mesh without one;
    /// `None`: no sidecar, so the sidecar axes are not part of the cells).
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
                .sidecar_cpu
                .iter()
                .flat_map(|cpu| {
                    self.access_log.iter().map(move |log| {
                        Some(SidecarCell {
                            cpu: cpu.clone(),
                            access_log: *log,
                            memory_bytes,
                        })
                    })
                })
                .collect(),
        };
        let mut out = Vec::new();
        for sc in &sidecars {
            for r in &rates {
                for c in &conns {
                    let mut id = Vec::new();
                    if let Some(s) = sc {
                        id.push(format!("cpu={}", s.cpu.text));
                        id.push(format!("log={}", s.access_log.as_str()));
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
                    });
                }
            }
        }
        out
    }

    /// How many cells [`Matrix::cells`] makes, without making them.
    pub fn cell_count(&self, with_sidecar: bool) -> usize {
        let side = if with_sidecar {
            self.sidecar_cpu.len() * self.access_log.len()
        } else {
            1
        };
        side.saturating_mul(self.rate.len().max(1))
            .saturating_mul(self.connections.len().max(1))
    }
}

/// Validate `[matrix]`. Absent axes default to one cell: CPU "none", access log "off".
pub(super) fn matrix(src: &Source, raw: &MatrixSection) -> Result<Matrix, SpecError> {
    let mut sidecar_cpu = Vec::new();
    match &raw.sidecar_cpu {
        None => sidecar_cpu.push(CpuLimit {
            text: "none".into(),
            millis: None,
        }),
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
                    "none" | "unlimited" => CpuLimit {
                        text: "none".into(),
                        millis: None,
                    },
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
                        }
                    }
                };
                if sidecar_cpu
                    .iter()
                    .any(|c: &CpuLimit| c.millis == limit.millis)
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
    let mut rate = Vec::new();
    if let Some(list) = &raw.rate {
        if list.get_ref().is_empty() {
            return Err(at(
                src,
                list.span(),
                "matrix.rate",
                "must list at least one rate (or be left out)",
            ));
        }
        for r in list.get_ref() {
            let v = super::load::rate(src, r, "matrix.rate")?;
            rate.push(v);
        }
    }
    let mut connections = Vec::new();
    if let Some(list) = &raw.connections {
        if list.get_ref().is_empty() {
            return Err(at(
                src,
                list.span(),
                "matrix.connections",
                "must list at least one count (or be left out)",
            ));
        }
        for c in list.get_ref() {
            let v = *c.get_ref();
            if !(1..=MAX_CONNECTIONS).contains(&v) {
                return Err(at(
                    src,
                    c.span(),
                    "matrix.connections",
                    format!("{v} connections: must be between 1 and {MAX_CONNECTIONS}"),
                ));
            }
            connections.push(v as u32);
        }
    }
    Ok(Matrix {
        sidecar_cpu,
        access_log,
        rate,
        connections,
    })
}
