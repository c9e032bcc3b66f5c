//! `[driver]` -> [`DriverPlan`]: how each cell's sidecar CPU limit and access logging reach
//! a real mesh. Everything a driver will run is known and checked here, so `--dry-run`
//! can print it and a bad entry stops the run before anything is changed.

use super::mesh::at;
use super::target::bounded_dur;
use crate::scenario::{DriverSection, RawQuantity, Source, SpecError};
use meshbench_schema::units::{parse_cpu_millis, Dur};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Longest a driver command or a rollout may take.
pub const MAX_DRIVER_WAIT: Duration = Duration::from_secs(3600);

/// What to do after a cell whose settings could not be applied or verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    Continue,
    Stop,
}

/// The generic driver: the user's commands, the cell's settings in the environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandDriver {
    pub apply: String,
    pub verify: Option<String>,
    pub after: Option<String>,
    pub restore: Option<String>,
    pub timeout: Dur,
    /// Where the commands run (the scenario's directory).
    pub workdir: PathBuf,
}

/// How the istio driver switches access logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogMethod {
    /// A `telemetry.istio.io/v1` Telemetry resource in the namespace.
    Telemetry,
    /// The mesh-wide `accessLogFile` of the `istio` ConfigMap (Istio 1.7 era).
    Configmap,
}

/// The built-in Istio driver (through kubectl).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IstioDriver {
    pub namespace: String,
    /// `kind/name`, e.g. `deployment/checkout-v1`.
    pub workloads: Vec<String>,
    pub kubectl: String,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub rollout_timeout: Dur,
    pub settle: Dur,
    /// `sidecar.istio.io/proxyCPU`, as written and in millicores.
    pub cpu_request: Option<(String, u64)>,
    pub access_log_method: AccessLogMethod,
    pub istio_namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum DriverKind {
    Command(CommandDriver),
    Istio(IstioDriver),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriverPlan {
    pub kind: DriverKind,
    pub on_failure: OnFailure,
}

impl DriverPlan {
    /// The access-log values a `[matrix] access_log` entry may take with this driver.
    pub fn access_log_values(&self) -> &'static [&'static str] {
        match self.kind {
            DriverKind::Command(_) => &["off", "on", "buffered", "sync"],
            DriverKind::Istio(_) => &["off", "on"],
        }
    }

    /// istio: the sidecar CPU request set beside each limit, as written and in millicores.
    pub fn cpu_request(&self) -> Option<(&str, u64)> {
        match &self.kind {
            DriverKind::Istio(i) => i.cpu_request.as_ref().map(|(t, m)| (t.as_str(), *m)),
            DriverKind::Command(_) => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            DriverKind::Command(_) => "command",
            DriverKind::Istio(_) => "istio",
        }
    }
}

/// A Kubernetes name (RFC 1123 label): what a namespace or a workload's name must be.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A workload name: RFC 1123 subdomain (lower-case labels joined by dots).
fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns_label)
}

/// The kinds whose pod template the istio driver patches.
pub const WORKLOAD_KINDS: [&str; 3] = ["deployment", "statefulset", "daemonset"];

pub(super) fn driver(src: &Source, d: &DriverSection) -> Result<DriverPlan, SpecError> {
    let on_failure = match &d.on_failure {
        None => OnFailure::Continue,
        Some(v) => match v.get_ref().as_str() {
            "continue" => OnFailure::Continue,
            "stop" => OnFailure::Stop,
            o => {
                return Err(at(
                    src,
                    v.span(),
                    "driver.on_failure",
                    format!("`{o}`: expected \"continue\" or \"stop\""),
                ))
            }
        },
    };
    // Keys of the other driver are mistakes, not silently ignored.
    let command_keys = [
        ("apply", d.apply.as_ref().map(|v| v.span())),
        ("verify", d.verify.as_ref().map(|v| v.span())),
        ("after", d.after.as_ref().map(|v| v.span())),
        ("restore", d.restore.as_ref().map(|v| v.span())),
        ("timeout", d.timeout.as_ref().map(|v| v.span())),
    ];
    let istio_keys = [
        ("namespace", d.namespace.as_ref().map(|v| v.span())),
        ("workloads", d.workloads.as_ref().map(|v| v.span())),
        ("kubectl", d.kubectl.as_ref().map(|v| v.span())),
        ("kubeconfig", d.kubeconfig.as_ref().map(|v| v.span())),
        ("context", d.context.as_ref().map(|v| v.span())),
        (
            "rollout_timeout",
            d.rollout_timeout.as_ref().map(|v| v.span()),
        ),
        ("settle", d.settle.as_ref().map(|v| v.span())),
        ("cpu_request", d.cpu_request.as_ref().map(|v| v.span())),
        (
            "access_log_method",
            d.access_log_method.as_ref().map(|v| v.span()),
        ),
        (
            "istio_namespace",
            d.istio_namespace.as_ref().map(|v| v.span()),
        ),
    ];
    let refuse = |keys: &[(&str, Option<std::ops::Range<usize>>)], kind: &str| {
        for (k, span) in keys {
            if let Some(span) = span {
                return Err(at(
                    src,
                    span.clone(),
                    format!("driver.{k}"),
                    format!("is not a setting of the {kind} driver"),
                ));
            }
        }
        Ok(())
    };
    let kind = match d.kind.get_ref().as_str() {
        "command" => {
            refuse(&istio_keys, "command")?;
            let apply = d
                .apply
                .as_ref()
                .filter(|a| !a.get_ref().trim().is_empty())
                .ok_or_else(|| {
                    at(
                        src,
                        d.kind.span(),
                        "driver.apply",
                        "the command driver needs an apply command",
                    )
                })?;
            let opt = |v: &Option<toml::Spanned<String>>| {
                v.as_ref()
                    .map(|c| c.get_ref().trim().to_string())
                    .filter(|c| !c.is_empty())
            };
            let timeout = match &d.timeout {
                Some(t) => bounded_dur(src, t, "driver.timeout", MAX_DRIVER_WAIT)?,
                None => Dur(Duration::from_secs(60)),
            };
            DriverKind::Command(CommandDriver {
                apply: apply.get_ref().trim().to_string(),
                verify: opt(&d.verify),
                after: opt(&d.after),
                restore: opt(&d.restore),
                timeout,
                workdir: src.resolve_path(&apply.span(), "."),
            })
        }
        "istio" => {
            refuse(&command_keys, "istio")?;
            let namespace = d.namespace.as_ref().ok_or_else(|| {
                at(
                    src,
                    d.kind.span(),
                    "driver.namespace",
                    "the istio driver needs the namespace of the workloads",
                )
            })?;
            if !dns_label(namespace.get_ref()) {
                return Err(at(
                    src,
                    namespace.span(),
                    "driver.namespace",
                    format!(
                        "`{}` is not a Kubernetes namespace name",
                        namespace.get_ref()
                    ),
                ));
            }
            let workloads = d.workloads.as_ref().ok_or_else(|| {
                at(
                    src,
                    d.kind.span(),
                    "driver.workloads",
                    "the istio driver needs the workloads to change, e.g. [\"deployment/checkout-v1\"]",
                )
            })?;
            if workloads.get_ref().is_empty() {
                return Err(at(
                    src,
                    workloads.span(),
                    "driver.workloads",
                    "must list at least one workload",
                ));
            }
            let mut list = Vec::new();
            for w in workloads.get_ref() {
                let text = w.get_ref().trim();
                let ok = text
                    .split_once('/')
                    .is_some_and(|(k, n)| WORKLOAD_KINDS.contains(&k) && dns_subdomain(n));
                if !ok {
                    return Err(at(
                        src,
                        w.span(),
                        "driver.workloads",
                        format!(
                            "`{text}`: expected KIND/NAME with KIND one of {}",
                            WORKLOAD_KINDS.join(", ")
                        ),
                    ));
                }
                if list.iter().any(|l: &String| l == text) {
                    return Err(at(
                        src,
                        w.span(),
                        "driver.workloads",
                        format!("`{text}` is listed twice"),
                    ));
                }
                list.push(text.to_string());
            }
            let rollout_timeout = match &d.rollout_timeout {
                Some(t) => bounded_dur(src, t, "driver.rollout_timeout", MAX_DRIVER_WAIT)?,
                None => Dur(Duration::from_secs(300)),
            };
            let settle = match &d.settle {
                Some(t) if t.get_ref().0 > MAX_DRIVER_WAIT => {
                    return Err(at(
                        src,
                        t.span(),
                        "driver.settle",
                        format!("must be at most {}", Dur(MAX_DRIVER_WAIT)),
                    ))
                }
                Some(t) => *t.get_ref(),
                None => Dur(Duration::from_secs(10)),
            };
            let cpu_request = match &d.cpu_request {
                None => None,
                Some(q) => {
                    let text = q.get_ref().text();
                    if matches!(q.get_ref(), RawQuantity::Int(i) if *i < 0)
                        || matches!(q.get_ref(), RawQuantity::Float(f) if *f < 0.0 || !f.is_finite())
                    {
                        return Err(at(
                            src,
                            q.span(),
                            "driver.cpu_request",
                            format!("`{text}` is not a CPU quantity"),
                        ));
                    }
                    let m = parse_cpu_millis(text.trim())
                        .map_err(|e| at(src, q.span(), "driver.cpu_request", e.0))?;
                    Some((text.trim().to_string(), m))
                }
            };
            let access_log_method = match &d.access_log_method {
                None => AccessLogMethod::Telemetry,
                Some(m) => match m.get_ref().as_str() {
                    "telemetry" => AccessLogMethod::Telemetry,
                    "configmap" => AccessLogMethod::Configmap,
                    o => {
                        return Err(at(
                            src,
                            m.span(),
                            "driver.access_log_method",
                            format!("`{o}`: expected \"telemetry\" or \"configmap\""),
                        ))
                    }
                },
            };
            let istio_namespace = match &d.istio_namespace {
                None => "istio-system".to_string(),
                Some(n) if dns_label(n.get_ref()) => n.get_ref().clone(),
                Some(n) => {
                    return Err(at(
                        src,
                        n.span(),
                        "driver.istio_namespace",
                        format!("`{}` is not a Kubernetes namespace name", n.get_ref()),
                    ))
                }
            };
            let nonempty = |v: &Option<toml::Spanned<String>>,
                            what: &str|
             -> Result<Option<String>, SpecError> {
                match v {
                    Some(s) if s.get_ref().trim().is_empty() => Err(at(
                        src,
                        s.span(),
                        format!("driver.{what}"),
                        "must not be empty",
                    )),
                    Some(s) => Ok(Some(s.get_ref().trim().to_string())),
                    None => Ok(None),
                }
            };
            DriverKind::Istio(IstioDriver {
                namespace: namespace.get_ref().clone(),
                workloads: list,
                kubectl: nonempty(&d.kubectl, "kubectl")?.unwrap_or_else(|| "kubectl".into()),
                kubeconfig: d
                    .kubeconfig
                    .as_ref()
                    .map(|k| src.resolve_path(&k.span(), k.get_ref())),
                context: nonempty(&d.context, "context")?,
                rollout_timeout,
                settle,
                cpu_request,
                access_log_method,
                istio_namespace,
            })
        }
        other => {
            return Err(at(
                src,
                d.kind.span(),
                "driver.kind",
                format!("unknown driver `{other}` (expected \"command\" or \"istio\")"),
            ))
        }
    };
    Ok(DriverPlan { kind, on_failure })
}
