//! Scenario sections of the embedded mesh: `[mesh]`, `[matrix]` and `[checks]`.
//!
//! Two steps, as for the rest of a scenario: raw serde structs (`deny_unknown_fields`,
//! values wrapped in [`toml::Spanned`] so errors can point at them), then [`validate_mesh`],
//! [`validate_matrix`] and [`validate_checks`], which resolve defaults and return typed
//! specs or a [`SpecError`] carrying the byte span of the offending value. The scenario
//! loader renders that as `file:line:col: field: message` ([`SpecError::render`]).
//!
//! ```toml
//! [mesh]
//! service = "checkout"
//! namespace = "default"
//! concurrency = 2
//! [[mesh.subset]]
//! name = "v1"
//! weight = 90
//! service_time = "1ms"
//! [[mesh.subset]]
//! name = "v2"
//! weight = 10
//! service_time = "1ms"
//!
//! [matrix]
//! sidecar_cpu = ["100m", "500m", "2000m"]   # or "none"
//! access_log = ["off", "buffered"]
//! ```
use crate::quantity::{format_cpu_millis, parse_cpu_millis, parse_memory_bytes};
use crate::sidecar::AccessLogMode;
use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A validation error in a mesh section: where (byte span in the scenario text), which
/// field (dotted path) and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub span: Option<Range<usize>>,
    pub field: String,
    pub message: String,
}

impl SpecError {
    fn at(span: Range<usize>, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            span: Some(span),
            field: field.into(),
            message: message.into(),
        }
    }

    /// One line: `file:line:col: field: message` (line and column 1-based).
    pub fn render(&self, file: &str, src: &str) -> String {
        match &self.span {
            Some(span) => {
                let (line, col) = line_col(src, span.start);
                format!("{file}:{line}:{col}: {}: {}", self.field, self.message)
            }
            None => format!("{file}: {}: {}", self.field, self.message),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// A number or a string, as TOML allows both for quantities (`2`, `0.5`, `"100m"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum RawQuantity {
    Int(i64),
    Float(f64),
    Str(String),
}

impl RawQuantity {
    fn text(&self) -> String {
        match self {
            RawQuantity::Int(i) => i.to_string(),
            RawQuantity::Float(f) => f.to_string(),
            RawQuantity::Str(s) => s.clone(),
        }
    }
}

/// `[mesh]`: the embedded mesh (one service, subsets behind one sidecar).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMesh {
    /// Service name (DNS SAN `<service>.<namespace>.svc.cluster.local`); default "checkout".
    pub service: Option<Spanned<String>>,
    /// Namespace of the SPIFFE id; default "default".
    pub namespace: Option<Spanned<String>>,
    /// Service account of the SPIFFE id; default: the service name.
    pub service_account: Option<Spanned<String>>,
    /// Response header naming the subset that answered; default "x-version".
    pub subset_header: Option<Spanned<String>>,
    /// Sidecar worker threads (Envoy's `--concurrency`); default 2.
    pub concurrency: Option<Spanned<i64>>,
    /// Sidecar memory limit (Kubernetes quantity); default none.
    pub sidecar_memory: Option<Spanned<RawQuantity>>,
    /// Response body size of the apps in bytes; default: the app server's default.
    pub response_bytes: Option<Spanned<i64>>,
    /// A CA (certificate and key, PEM) to issue the mesh certificates from, instead of a
    /// generated one. Both or neither.
    pub ca_cert: Option<Spanned<String>>,
    pub ca_key: Option<Spanned<String>>,
    #[serde(rename = "subset")]
    pub subsets: Option<Spanned<Vec<RawSubset>>>,
}

/// `[[mesh.subset]]`: a DestinationRule subset with its VirtualService weight.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubset {
    pub name: Spanned<String>,
    pub weight: Spanned<i64>,
    /// The app's service time, e.g. "1ms"; default "0ms".
    pub service_time: Option<Spanned<String>>,
    /// "fixed" (default) or "exp" (exponentially distributed around service_time).
    pub service_time_dist: Option<Spanned<String>>,
}

/// `[matrix]`: the settings every cell combination is run with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatrix {
    pub sidecar_cpu: Option<Spanned<Vec<Spanned<RawQuantity>>>>,
    pub access_log: Option<Spanned<Vec<Spanned<String>>>>,
    pub rate: Option<Spanned<Vec<Spanned<f64>>>>,
    pub connections: Option<Spanned<Vec<Spanned<i64>>>>,
}

/// `[checks]`: what the run verifies (for a real mesh, the weights it must see).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChecks {
    /// Expected weights by subset, e.g. `{ v1 = 90, v2 = 10 }`. For the embedded mesh they
    /// default to the `[[mesh.subset]]` weights.
    pub weights: Option<Spanned<toml::value::Table>>,
    /// Response header naming the subset; default: `[mesh] subset_header` or "x-version".
    pub subset_header: Option<Spanned<String>>,
    /// Confidence of the canary-split test, e.g. 0.999 (the default) or "99.9%".
    pub confidence: Option<Spanned<RawQuantity>>,
    /// Verify STRICT mTLS (plaintext and cert-less TLS refused); default true when the
    /// target is TLS.
    pub strict_mtls: Option<Spanned<bool>>,
}

/// How an app's service time is distributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceTimeDist {
    Fixed,
    Exp,
}

/// A validated subset.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SubsetSpec {
    pub name: String,
    pub weight: u32,
    #[serde(with = "humantime_serde_compat")]
    pub service_time: Duration,
    pub service_time_dist: ServiceTimeDist,
}

/// The validated `[mesh]` section.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MeshSpec {
    pub service: String,
    pub namespace: String,
    pub service_account: String,
    pub subset_header: String,
    pub concurrency: usize,
    pub sidecar_memory_bytes: Option<u64>,
    pub response_bytes: Option<u64>,
    /// User CA (certificate, key) replacing the generated one.
    pub ca: Option<(PathBuf, PathBuf)>,
    pub subsets: Vec<SubsetSpec>,
}

impl MeshSpec {
    /// `spiffe://cluster.local/ns/<namespace>/sa/<service_account>`.
    pub fn spiffe_id(&self) -> String {
        crate::pki::spiffe_id(&self.namespace, &self.service_account)
    }

    /// `<service>.<namespace>.svc.cluster.local`.
    pub fn dns_name(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.service, self.namespace)
    }

    /// (subset, weight) pairs.
    pub fn weights(&self) -> Vec<(String, u32)> {
        self.subsets
            .iter()
            .map(|s| (s.name.clone(), s.weight))
            .collect()
    }
}

/// A sidecar CPU limit: as written, and in millicores (`None`: no limit).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CpuLimit {
    pub text: String,
    pub millis: Option<u64>,
}

/// The validated `[matrix]`. Every axis has at least one entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MatrixSpec {
    pub sidecar_cpu: Vec<CpuLimit>,
    pub access_log: Vec<AccessLogMode>,
    /// Empty: the scenario's load rate.
    pub rate: Vec<f64>,
    /// Empty: the scenario's connection count.
    pub connections: Vec<u32>,
}

/// One combination of the matrix.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MatrixCell {
    /// Stable id, e.g. `cpu=100m,log=off` (plus `,rate=..`/`,conns=..` when those vary).
    pub id: String,
    pub sidecar_cpu: CpuLimit,
    pub access_log: AccessLogMode,
    pub rate: Option<f64>,
    pub connections: Option<u32>,
}

impl MatrixSpec {
    /// Cells in run order: CPU limit outermost, then access log, rate, connections.
    pub fn cells(&self) -> Vec<MatrixCell> {
        let rates: Vec<Option<f64>> = if self.rate.is_empty() {
            vec![None]
        } else {
            self.rate.iter().copied().map(Some).collect()
        };
        let conns: Vec<Option<u32>> = if self.connections.is_empty() {
            vec![None]
        } else {
            self.connections.iter().copied().map(Some).collect()
        };
        let mut out = Vec::new();
        for cpu in &self.sidecar_cpu {
            for log in &self.access_log {
                for rate in &rates {
                    for c in &conns {
                        let mut id = format!("cpu={},log={}", cpu.text, log.as_str());
                        if let Some(r) = rate {
                            id.push_str(&format!(",rate={r}"));
                        }
                        if let Some(c) = c {
                            id.push_str(&format!(",conns={c}"));
                        }
                        out.push(MatrixCell {
                            id,
                            sidecar_cpu: cpu.clone(),
                            access_log: *log,
                            rate: *rate,
                            connections: *c,
                        });
                    }
                }
            }
        }
        out
    }
}

/// The validated `[checks]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChecksSpec {
    /// Expected weights by subset (declared, or from `[mesh]`); `None`: no canary check.
    pub weights: Option<Vec<(String, u32)>>,
    pub subset_header: String,
    pub confidence: f64,
    pub strict_mtls: bool,
}

/// Default confidence of the canary-split test.
pub const DEFAULT_CONFIDENCE: f64 = 0.999;

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn dns_label(v: &Option<Spanned<String>>, field: &str, default: &str) -> Result<String, SpecError> {
    match v {
        None => Ok(default.to_string()),
        Some(s) if name_ok(s.get_ref()) => Ok(s.get_ref().clone()),
        Some(s) => Err(SpecError::at(
            s.span(),
            field,
            format!(
                "`{}` is not a DNS label (lowercase letters, digits, '-')",
                s.get_ref()
            ),
        )),
    }
}

fn header_name(v: &Option<Spanned<String>>, field: &str) -> Result<Option<String>, SpecError> {
    match v {
        None => Ok(None),
        Some(s) => {
            let h = s.get_ref().to_ascii_lowercase();
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(SpecError::at(
                    s.span(),
                    field,
                    format!("`{}` is not an HTTP header name", s.get_ref()),
                ));
            }
            Ok(Some(h))
        }
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// Check weights: each 0..=100, names unique, at least one subset, sum 100.
fn check_weights(
    entries: &[(String, i64, Range<usize>)],
    whole: Range<usize>,
    field: &str,
) -> Result<Vec<(String, u32)>, SpecError> {
    if entries.is_empty() {
        return Err(SpecError::at(
            whole,
            field,
            "at least one subset is required",
        ));
    }
    let mut out: Vec<(String, u32)> = Vec::new();
    for (name, w, span) in entries {
        if !(0..=100).contains(w) {
            return Err(SpecError::at(
                span.clone(),
                format!("{field}.{name}"),
                format!("weight {w} must be between 0 and 100"),
            ));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(SpecError::at(
                span.clone(),
                field,
                format!("subset `{name}` is listed twice"),
            ));
        }
        out.push((name.clone(), *w as u32));
    }
    let sum: u32 = out.iter().map(|(_, w)| w).sum();
    if sum != 100 {
        let list = out
            .iter()
            .map(|(n, w)| format!("{n}={w}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(SpecError::at(
            whole,
            field,
            format!("weights must sum to 100, these sum to {sum} ({list})"),
        ));
    }
    Ok(out)
}

/// Validate `[mesh]`; relative CA paths are resolved against `base_dir` (the scenario
/// file's directory).
pub fn validate_mesh(raw: &RawMesh, base_dir: &Path) -> Result<MeshSpec, SpecError> {
    let service = dns_label(&raw.service, "mesh.service", "checkout")?;
    let namespace = dns_label(&raw.namespace, "mesh.namespace", "default")?;
    let service_account = dns_label(&raw.service_account, "mesh.service_account", &service)?;
    let subset_header = header_name(&raw.subset_header, "mesh.subset_header")?
        .unwrap_or_else(|| "x-version".into());
    let concurrency = match &raw.concurrency {
        None => 2,
        Some(c) if (1..=64).contains(c.get_ref()) => *c.get_ref() as usize,
        Some(c) => {
            return Err(SpecError::at(
                c.span(),
                "mesh.concurrency",
                format!("{} worker threads: must be between 1 and 64", c.get_ref()),
            ))
        }
    };
    let sidecar_memory_bytes = match &raw.sidecar_memory {
        None => None,
        Some(q) => Some(
            parse_memory_bytes(&q.get_ref().text())
                .map_err(|e| SpecError::at(q.span(), "mesh.sidecar_memory", e.0))?,
        ),
    };
    let response_bytes = match &raw.response_bytes {
        None => None,
        Some(b) if (0..=(64 << 20)).contains(b.get_ref()) => Some(*b.get_ref() as u64),
        Some(b) => {
            return Err(SpecError::at(
                b.span(),
                "mesh.response_bytes",
                "must be between 0 and 67108864",
            ))
        }
    };
    let ca = match (&raw.ca_cert, &raw.ca_key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((
            resolve(base_dir, c.get_ref()),
            resolve(base_dir, k.get_ref()),
        )),
        (Some(c), None) => {
            return Err(SpecError::at(
                c.span(),
                "mesh.ca_key",
                "ca_cert is given, so ca_key is required",
            ))
        }
        (None, Some(k)) => {
            return Err(SpecError::at(
                k.span(),
                "mesh.ca_cert",
                "ca_key is given, so ca_cert is required",
            ))
        }
    };
    let Some(raw_subsets) = &raw.subsets else {
        return Err(SpecError {
            span: None,
            field: "mesh.subset".into(),
            message: "at least one [[mesh.subset]] (name, weight) is required".into(),
        });
    };
    let mut subsets = Vec::new();
    let mut entries = Vec::new();
    for (i, s) in raw_subsets.get_ref().iter().enumerate() {
        let field = format!("mesh.subset[{i}]");
        let name = s.name.get_ref();
        if !name_ok(name) {
            return Err(SpecError::at(
                s.name.span(),
                format!("{field}.name"),
                format!("`{name}` is not a subset name (lowercase letters, digits, '-')"),
            ));
        }
        let service_time = match &s.service_time {
            None => Duration::ZERO,
            Some(t) => humantime::parse_duration(t.get_ref()).map_err(|e| {
                SpecError::at(
                    t.span(),
                    format!("{field}.service_time"),
                    format!("`{}` is not a duration like \"2ms\": {e}", t.get_ref()),
                )
            })?,
        };
        if service_time > Duration::from_secs(60) {
            return Err(SpecError::at(
                s.service_time.as_ref().map(|t| t.span()).unwrap_or(0..0),
                format!("{field}.service_time"),
                "must be at most 60s",
            ));
        }
        let service_time_dist = match s
            .service_time_dist
            .as_ref()
            .map(|d| (d.get_ref().as_str(), d.span()))
        {
            None | Some(("fixed", _)) => ServiceTimeDist::Fixed,
            Some(("exp", _)) => ServiceTimeDist::Exp,
            Some((other, span)) => {
                return Err(SpecError::at(
                    span,
                    format!("{field}.service_time_dist"),
                    format!("unknown distribution `{other}` (expected \"fixed\" or \"exp\")"),
                ))
            }
        };
        entries.push((name.clone(), *s.weight.get_ref(), s.weight.span()));
        subsets.push(SubsetSpec {
            name: name.clone(),
            weight: 0,
            service_time,
            service_time_dist,
        });
    }
    let weights = check_weights(&entries, raw_subsets.span(), "mesh.subset")?;
    for (s, (_, w)) in subsets.iter_mut().zip(weights) {
        s.weight = w;
    }
    Ok(MeshSpec {
        service,
        namespace,
        service_account,
        subset_header,
        concurrency,
        sidecar_memory_bytes,
        response_bytes,
        ca,
        subsets,
    })
}

/// Validate `[matrix]`. Absent axes default to one cell: CPU "none", access log "off".
pub fn validate_matrix(raw: &RawMatrix) -> Result<MatrixSpec, SpecError> {
    let mut sidecar_cpu = Vec::new();
    match &raw.sidecar_cpu {
        None => sidecar_cpu.push(CpuLimit {
            text: "none".into(),
            millis: None,
        }),
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(SpecError::at(
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
                            return Err(SpecError::at(
                                q.span(),
                                "matrix.sidecar_cpu",
                                format!("`{t}` is not a CPU quantity"),
                            ));
                        }
                        let millis = parse_cpu_millis(t)
                            .map_err(|e| SpecError::at(q.span(), "matrix.sidecar_cpu", e.0))?;
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
                    return Err(SpecError::at(
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
                return Err(SpecError::at(
                    list.span(),
                    "matrix.access_log",
                    "must list at least one mode",
                ));
            }
            for m in list.get_ref() {
                let mode = AccessLogMode::parse(m.get_ref()).ok_or_else(|| {
                    SpecError::at(
                        m.span(),
                        "matrix.access_log",
                        format!("unknown access-log mode `{}` (expected \"off\", \"buffered\" or \"sync\")", m.get_ref()),
                    )
                })?;
                if access_log.contains(&mode) {
                    return Err(SpecError::at(
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
            return Err(SpecError::at(
                list.span(),
                "matrix.rate",
                "must list at least one rate (or be left out)",
            ));
        }
        for r in list.get_ref() {
            let v = *r.get_ref();
            if !(v.is_finite() && v > 0.0 && v <= 10_000_000.0) {
                return Err(SpecError::at(
                    r.span(),
                    "matrix.rate",
                    format!("rate {v} must be > 0 requests/s"),
                ));
            }
            rate.push(v);
        }
    }
    let mut connections = Vec::new();
    if let Some(list) = &raw.connections {
        if list.get_ref().is_empty() {
            return Err(SpecError::at(
                list.span(),
                "matrix.connections",
                "must list at least one count (or be left out)",
            ));
        }
        for c in list.get_ref() {
            let v = *c.get_ref();
            if !(1..=100_000).contains(&v) {
                return Err(SpecError::at(
                    c.span(),
                    "matrix.connections",
                    format!("{v} connections: must be between 1 and 100000"),
                ));
            }
            connections.push(v as u32);
        }
    }
    Ok(MatrixSpec {
        sidecar_cpu,
        access_log,
        rate,
        connections,
    })
}

/// Validate `[checks]`. `mesh` supplies the default weights and header for an embedded
/// mesh; `tls_target` whether STRICT mTLS can be checked by default.
pub fn validate_checks(
    raw: Option<&RawChecks>,
    mesh: Option<&MeshSpec>,
    tls_target: bool,
) -> Result<ChecksSpec, SpecError> {
    let default = RawChecks::default();
    let raw = raw.unwrap_or(&default);
    let subset_header = header_name(&raw.subset_header, "checks.subset_header")?
        .or_else(|| mesh.map(|m| m.subset_header.clone()))
        .unwrap_or_else(|| "x-version".into());
    let weights = match &raw.weights {
        Some(t) => {
            let mut entries = Vec::new();
            for (name, v) in t.get_ref() {
                let w = v.as_integer().ok_or_else(|| {
                    SpecError::at(
                        t.span(),
                        format!("checks.weights.{name}"),
                        "weight must be an integer",
                    )
                })?;
                entries.push((name.clone(), w, t.span()));
            }
            let w = check_weights(&entries, t.span(), "checks.weights")?;
            if let Some(m) = mesh {
                let mut a = w.clone();
                let mut b = m.weights();
                a.sort();
                b.sort();
                if a != b {
                    return Err(SpecError::at(
                        t.span(),
                        "checks.weights",
                        "differ from the [[mesh.subset]] weights (leave them out for the embedded mesh)",
                    ));
                }
            }
            Some(w)
        }
        None => mesh.map(|m| m.weights()),
    };
    let confidence = match &raw.confidence {
        None => DEFAULT_CONFIDENCE,
        Some(c) => {
            let v = match c.get_ref() {
                RawQuantity::Float(f) => Some(*f),
                RawQuantity::Int(_) => None,
                RawQuantity::Str(s) => s
                    .trim()
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<f64>().ok())
                    .map(|p| p / 100.0),
            };
            match v {
                Some(v) if v > 0.5 && v < 1.0 => v,
                _ => {
                    return Err(SpecError::at(
                        c.span(),
                        "checks.confidence",
                        format!(
                            "`{}` must be a confidence between 0.5 and 1, e.g. 0.999 or \"99.9%\"",
                            c.get_ref().text()
                        ),
                    ))
                }
            }
        }
    };
    let strict_mtls = match &raw.strict_mtls {
        None => tls_target || mesh.is_some(),
        Some(b) => {
            if *b.get_ref() && !tls_target && mesh.is_none() {
                return Err(SpecError::at(
                    b.span(),
                    "checks.strict_mtls",
                    "needs a TLS target (https:// URL with a CA) or the embedded mesh",
                ));
            }
            *b.get_ref()
        }
    };
    Ok(ChecksSpec {
        weights,
        subset_header,
        confidence,
        strict_mtls,
    })
}

/// Serialize `Duration` as humantime text in plans.
mod humantime_serde_compat {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        mesh: Option<RawMesh>,
        matrix: Option<RawMatrix>,
        checks: Option<RawChecks>,
    }

    fn load(src: &str) -> Result<(Option<MeshSpec>, Option<MatrixSpec>, ChecksSpec), String> {
        let doc: Doc = toml::from_str(src).map_err(|e| e.to_string())?;
        let mesh = doc
            .mesh
            .as_ref()
            .map(|m| validate_mesh(m, Path::new("/scn")))
            .transpose()
            .map_err(|e| e.render("x.toml", src))?;
        let matrix = doc
            .matrix
            .as_ref()
            .map(validate_matrix)
            .transpose()
            .map_err(|e| e.render("x.toml", src))?;
        let checks = validate_checks(doc.checks.as_ref(), mesh.as_ref(), false)
            .map_err(|e| e.render("x.toml", src))?;
        Ok((mesh, matrix, checks))
    }

    const MESH: &str = r#"
[mesh]
concurrency = 2
[[mesh.subset]]
name = "v1"
weight = 90
service_time = "1ms"
[[mesh.subset]]
name = "v2"
weight = 10
service_time = "2ms"
service_time_dist = "exp"
"#;

    #[test]
    fn canary_mesh_and_matrix_validate() {
        let src = format!(
            "{MESH}\n[matrix]\nsidecar_cpu = [\"100m\", 0.5, 2, \"none\"]\naccess_log = [\"off\", \"buffered\", \"sync\"]\n"
        );
        let (mesh, matrix, checks) = load(&src).unwrap();
        let mesh = mesh.unwrap();
        assert_eq!(
            mesh.spiffe_id(),
            "spiffe://cluster.local/ns/default/sa/checkout"
        );
        assert_eq!(mesh.dns_name(), "checkout.default.svc.cluster.local");
        assert_eq!(mesh.subsets[1].service_time, Duration::from_millis(2));
        assert_eq!(mesh.subsets[1].service_time_dist, ServiceTimeDist::Exp);
        let matrix = matrix.unwrap();
        let millis: Vec<_> = matrix.sidecar_cpu.iter().map(|c| c.millis).collect();
        assert_eq!(millis, vec![Some(100), Some(500), Some(2000), None]);
        let cells = matrix.cells();
        assert_eq!(cells.len(), 12);
        assert_eq!(cells[0].id, "cpu=100m,log=off");
        assert_eq!(cells[1].id, "cpu=100m,log=buffered");
        assert_eq!(cells[3].id, "cpu=500m,log=off");
        assert_eq!(cells[11].id, "cpu=none,log=sync");
        assert_eq!(
            checks.weights,
            Some(vec![("v1".into(), 90), ("v2".into(), 10)])
        );
        assert_eq!(checks.confidence, DEFAULT_CONFIDENCE);
        assert!(checks.strict_mtls);
    }

    #[test]
    fn bad_cpu_quantity_points_at_the_value() {
        let src = format!("{MESH}\n[matrix]\nsidecar_cpu = [\"100m\", \"lots\"]\n");
        let err = load(&src).unwrap_err();
        let line = src.lines().position(|l| l.contains("lots")).unwrap() + 1;
        assert!(
            err.starts_with(&format!("x.toml:{line}:24: matrix.sidecar_cpu: `lots`")),
            "{err}"
        );
    }

    #[test]
    fn weights_not_summing_to_100_are_refused() {
        let src = MESH.replace("weight = 10", "weight = 20");
        let err = load(&src).unwrap_err();
        assert!(
            err.contains("mesh.subset: weights must sum to 100, these sum to 110"),
            "{err}"
        );
        assert!(err.starts_with("x.toml:"), "{err}");
        let src = format!("{MESH}\n[checks]\nweights = {{ v1 = 50, v2 = 49 }}\n");
        let err = load(&src).unwrap_err();
        let line = src.lines().position(|l| l.starts_with("weights")).unwrap() + 1;
        assert!(
            err.starts_with(&format!(
                "x.toml:{line}:11: checks.weights: weights must sum to 100"
            )),
            "{err}"
        );
    }

    #[test]
    fn unknown_access_log_mode_is_refused() {
        let src = format!("{MESH}\n[matrix]\naccess_log = [\"off\", \"verbose\"]\n");
        let err = load(&src).unwrap_err();
        let line = src.lines().position(|l| l.contains("verbose")).unwrap() + 1;
        assert!(
            err.starts_with(&format!(
                "x.toml:{line}:22: matrix.access_log: unknown access-log mode `verbose`"
            )),
            "{err}"
        );
    }

    #[test]
    fn other_bad_entries() {
        for (bad, want) in [
            ("[matrix]\nsidecar_cpu = [-1]\n", "matrix.sidecar_cpu"),
            ("[matrix]\nsidecar_cpu = []\n", "at least one"),
            ("[matrix]\nrate = [0]\n", "matrix.rate"),
            ("[matrix]\nconnections = [0]\n", "matrix.connections"),
            ("[checks]\nconfidence = 2\n", "checks.confidence"),
            ("[matrix]\ncpu = [\"1\"]\n", "unknown field `cpu`"),
        ] {
            let err = load(&format!("{MESH}\n{bad}")).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
        let err = load(&MESH.replace("\"2ms\"", "\"soon\"")).unwrap_err();
        assert!(err.contains("mesh.subset[1].service_time: `soon`"), "{err}");
        let (_, _, c) = load(&format!("{MESH}\n[checks]\nconfidence = \"99%\"\n")).unwrap();
        assert!((c.confidence - 0.99).abs() < 1e-12);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("x", 0), (1, 1));
    }
}
