//! `[checks]`: what a run verifies: the canary split against its weights (declared, or
//! the embedded mesh's) and STRICT mTLS.

use super::mesh::{at, check_weights, header_name};
use crate::scenario::{ChecksSection, RawQuantity, Source, SpecError};
use serde::Serialize;
use testbed::MeshSpec;

/// Default confidence of the canary-split test.
pub const DEFAULT_CONFIDENCE: f64 = 0.999;

/// The validated `[checks]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChecksSpec {
    /// Expected weights by subset (declared, or from `[mesh]`); `None`: no canary check.
    pub weights: Option<Vec<(String, u32)>>,
    pub subset_header: String,
    pub confidence: f64,
    pub strict_mtls: bool,
    /// The send lateness (p99) a cell may have before it fails.
    pub max_send_lag: Option<LagLimit>,
}

/// How late the generator may send open-loop requests before a cell is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LagLimit {
    /// An absolute lateness, µs.
    Micros(f64),
    /// A share (0..1) of the time between two requests at the cell's rate.
    ShareOfInterval(f64),
}

/// Without `max_send_lag`, a cell whose lateness p99 exceeds this share of the time between
/// two requests is flagged untrusted (a rule proposed for open-loop generators).
pub const DEFAULT_LAG_SHARE: f64 = 0.10;

impl LagLimit {
    /// The limit in µs at `rate` requests/s.
    pub fn micros(self, rate: f64) -> f64 {
        match self {
            LagLimit::Micros(us) => us,
            LagLimit::ShareOfInterval(s) => s * 1e6 / rate,
        }
    }

    fn parse(s: &str) -> Option<LagLimit> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().ok()?;
            return (v > 0.0 && v <= 100.0).then_some(LagLimit::ShareOfInterval(v / 100.0));
        }
        let d = meshbench_schema::units::Dur::parse(t).ok()?;
        (!d.0.is_zero() && d.0 <= std::time::Duration::from_secs(60))
            .then_some(LagLimit::Micros(d.as_us()))
    }
}

/// Validate `[checks]`. `mesh` supplies the default weights and header for an embedded
/// mesh; `tls_target` whether STRICT mTLS can be checked by default.
pub(super) fn checks(
    src: &Source,
    raw: Option<&ChecksSection>,
    mesh: Option<&MeshSpec>,
    tls_target: bool,
) -> Result<ChecksSpec, SpecError> {
    let default = ChecksSection::default();
    let raw = raw.unwrap_or(&default);
    let subset_header = header_name(src, &raw.subset_header, "checks.subset_header")?
        .or_else(|| mesh.map(|m| m.subset_header.clone()))
        .unwrap_or_else(|| "x-version".into());
    let weights = match &raw.weights {
        Some(t) => {
            let mut entries = Vec::new();
            for (name, v) in t.get_ref() {
                let w = v.as_integer().ok_or_else(|| {
                    at(
                        src,
                        t.span(),
                        format!("checks.weights.{name}"),
                        "weight must be an integer",
                    )
                })?;
                entries.push((name.clone(), w, t.span()));
            }
            let w = check_weights(src, &entries, t.span(), "checks.weights")?;
            if let Some(m) = mesh {
                let mut a = w.clone();
                let mut b = m.weights();
                a.sort();
                b.sort();
                if a != b {
                    return Err(at(src,
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
                    return Err(at(
                        src,
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
                return Err(at(
                    src,
                    b.span(),
                    "checks.strict_mtls",
                    "needs a TLS target (https:// URL with a CA) or the embedded mesh",
                ));
            }
            *b.get_ref()
        }
    };
    let max_send_lag = match &raw.max_send_lag {
        None => None,
        Some(v) => Some(LagLimit::parse(v.get_ref()).ok_or_else(|| {
            at(
                src,
                v.span(),
                "checks.max_send_lag",
                format!(
                    "`{}` is not a lateness: a duration up to 60s (\"50us\") or a share of the interval (\"10%\")",
                    v.get_ref()
                ),
            )
        })?),
    };
    Ok(ChecksSpec {
        weights,
        subset_header,
        confidence,
        strict_mtls,
        max_send_lag,
    })
}
