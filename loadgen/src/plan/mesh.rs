//! `[mesh]`: the embedded mesh, validated into the testbed's [`MeshSpec`].

use crate::scenario::{MeshSection, Source, SpecError};
use app::ServiceTimeDist;
use meshbench_schema::units::{parse_memory_bytes, Dur};
use std::ops::Range;
use std::time::Duration;
use testbed::{MeshSpec, SubsetSpec};
use toml::Spanned;

/// An error at `span` about `field`: `file:line:col: field: message`.
pub(super) fn at(
    src: &Source,
    span: Range<usize>,
    field: impl AsRef<str>,
    message: impl AsRef<str>,
) -> SpecError {
    src.error_at(span, format!("{}: {}", field.as_ref(), message.as_ref()))
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn dns_label(
    src: &Source,
    v: &Option<Spanned<String>>,
    field: &str,
    default: &str,
) -> Result<String, SpecError> {
    match v {
        None => Ok(default.to_string()),
        Some(s) if name_ok(s.get_ref()) => Ok(s.get_ref().clone()),
        Some(s) => Err(at(
            src,
            s.span(),
            field,
            format!(
                "`{}` is not a DNS label (lowercase letters, digits, '-')",
                s.get_ref()
            ),
        )),
    }
}

pub(super) fn header_name(
    src: &Source,
    v: &Option<Spanned<String>>,
    field: &str,
) -> Result<Option<String>, SpecError> {
    match v {
        None => Ok(None),
        Some(s) => {
            let h = s.get_ref().to_ascii_lowercase();
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(at(
                    src,
                    s.span(),
                    field,
                    format!("`{}` is not an HTTP header name", s.get_ref()),
                ));
            }
            Ok(Some(h))
        }
    }
}

/// Check weights: each 0..=100, names unique, at least one subset, sum 100.
pub(super) fn check_weights(
    src: &Source,
    entries: &[(String, i64, Range<usize>)],
    whole: Range<usize>,
    field: &str,
) -> Result<Vec<(String, u32)>, SpecError> {
    if entries.is_empty() {
        return Err(at(src, whole, field, "at least one subset is required"));
    }
    let mut out: Vec<(String, u32)> = Vec::new();
    for (name, w, span) in entries {
        if !(0..=100).contains(w) {
            return Err(at(
                src,
                span.clone(),
                format!("{field}.{name}"),
                format!("weight {w} must be between 0 and 100"),
            ));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(at(
                src,
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
        return Err(at(
            src,
            whole,
            field,
            format!("weights must sum to 100, these sum to {sum} ({list})"),
        ));
    }
    Ok(out)
}

/// Validate `[mesh]`; relative CA paths are resolved against the scenario file's
/// directory (the working directory for `--set`).
pub(super) fn mesh(src: &Source, raw: &MeshSection) -> Result<MeshSpec, SpecError> {
    let service = dns_label(src, &raw.service, "mesh.service", "checkout")?;
    let namespace = dns_label(src, &raw.namespace, "mesh.namespace", "default")?;
    let service_account = dns_label(src, &raw.service_account, "mesh.service_account", &service)?;
    let subset_header = header_name(src, &raw.subset_header, "mesh.subset_header")?
        .unwrap_or_else(|| "x-version".into());
    let concurrency = match &raw.concurrency {
        None => 2,
        Some(c) if (1..=64).contains(c.get_ref()) => *c.get_ref() as usize,
        Some(c) => {
            return Err(at(
                src,
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
                .map_err(|e| at(src, q.span(), "mesh.sidecar_memory", e.0))?,
        ),
    };
    let response_bytes = match &raw.response_bytes {
        None => None,
        Some(b) if (0..=(64 << 20)).contains(b.get_ref()) => Some(*b.get_ref() as u64),
        Some(b) => {
            return Err(at(
                src,
                b.span(),
                "mesh.response_bytes",
                "must be between 0 and 67108864",
            ))
        }
    };
    let ca = match (&raw.ca_cert, &raw.ca_key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((
            src.resolve_path(&c.span(), c.get_ref()),
            src.resolve_path(&k.span(), k.get_ref()),
        )),
        (Some(c), None) => {
            return Err(at(
                src,
                c.span(),
                "mesh.ca_key",
                "ca_cert is given, so ca_key is required",
            ))
        }
        (None, Some(k)) => {
            return Err(at(
                src,
                k.span(),
                "mesh.ca_cert",
                "ca_key is given, so ca_cert is required",
            ))
        }
    };
    let Some(raw_subsets) = &raw.subsets else {
        return Err(
            src.error_file("mesh.subset: at least one [[mesh.subset]] (name, weight) is required")
        );
    };
    let mut subsets = Vec::new();
    let mut entries = Vec::new();
    for (i, s) in raw_subsets.get_ref().iter().enumerate() {
        let field = format!("mesh.subset[{i}]");
        let name = s.name.get_ref();
        if !name_ok(name) {
            return Err(at(
                src,
                s.name.span(),
                format!("{field}.name"),
                format!("`{name}` is not a subset name (lowercase letters, digits, '-')"),
            ));
        }
        let service_time = match &s.service_time {
            None => Duration::ZERO,
            Some(t) => Dur::parse(t.get_ref()).map(|d| d.0).map_err(|e| {
                at(
                    src,
                    t.span(),
                    format!("{field}.service_time"),
                    format!("`{}` is not a duration like \"2ms\": {e}", t.get_ref()),
                )
            })?,
        };
        if service_time > Duration::from_secs(60) {
            return Err(at(
                src,
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
                return Err(at(
                    src,
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
            service_time: Dur(service_time),
            service_time_dist,
        });
    }
    let weights = check_weights(src, &entries, raw_subsets.span(), "mesh.subset")?;
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
