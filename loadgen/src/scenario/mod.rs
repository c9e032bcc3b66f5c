//! The scenario language, as written: every TOML section is a raw serde struct here
//! (`deny_unknown_fields`; values that are checked later are `Spanned`, so their errors
//! carry a position), [`Source`] applies `--set` overrides and places spans, and
//! [`SpecError`] is the one error type (`file:line:col: message`, or `--set key: ...`).
//!
//! Validation and defaults are [`crate::plan`]'s: it turns a [`Scenario`] into a typed
//! plan. A new section is a new `Option<...>` field of [`Scenario`] here and a function
//! in `plan/` that validates it.
//!
//! ```toml
//! name = "canary"
//! slo = ["p99<50ms"]
//! [target]          # url, method, path, headers, body, protocol, timeouts, [target.tls]
//! [load]            # mode, rate, connections, duration, requests, warmup, ...
//! [load.profile]    # kind = "ramp" (from, to, over) or "steps" (steps = [{rate, duration}])
//! [search]          # slo, min, max, resolution, step: the capacity of every cell
//! [app]             # the built-in app server, in-process
//! [mesh]            # the embedded mesh: service, subsets (weights), sidecar settings
//! [matrix]          # sidecar_cpu, access_log, rate, connections
//! [checks]          # canary weights, confidence, strict_mtls
//! ```

mod source;

pub use source::{Origin, Source};

use meshbench_schema::units::Dur;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use toml::Spanned;

/// A scenario error: one line, with the place it came from.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `file:line:col: message` or `--set key.path: message`.
    #[error("{location}: {message}")]
    At { location: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The whole scenario as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Defaults to the file stem.
    pub name: Option<Spanned<String>>,
    pub description: Option<String>,
    #[serde(default)]
    pub target: TargetSection,
    #[serde(default)]
    pub load: LoadSection,
    /// The built-in app server, started in-process for the run (see `loadgen serve`).
    pub app: Option<Spanned<AppSection>>,
    /// Service-level objectives, e.g. `["p99<50ms", "errors<0.1%"]`.
    #[serde(default)]
    pub slo: Vec<Spanned<String>>,
    /// The embedded mesh (apps + sidecar).
    pub mesh: Option<Spanned<MeshSection>>,
    /// The settings matrix: sidecar CPU limits x access-log modes (x rates x connections).
    pub matrix: Option<Spanned<MatrixSection>>,
    /// Canary-split weights and STRICT mTLS, for the embedded or a real mesh.
    pub checks: Option<Spanned<ChecksSection>>,
    /// How a real mesh gets each cell's settings (`[target] url` with a `[matrix]`).
    pub driver: Option<Spanned<DriverSection>>,
    /// A capacity search per cell: the highest rate that meets an SLO.
    pub search: Option<Spanned<SearchSection>>,
}

/// `[driver]`: applies each cell's sidecar CPU limit and access logging to a real mesh,
/// verifies them, and restores what it changed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverSection {
    /// "command" (any mesh: your scripts) or "istio" (built in, through kubectl).
    pub kind: Spanned<String>,
    /// "continue" (default): a cell whose settings could not be applied or verified is
    /// recorded as failed and the run goes on; "stop": the run stops there.
    pub on_failure: Option<Spanned<String>>,
    /// command: shell commands (`sh -c`, run in the scenario's directory).
    pub apply: Option<Spanned<String>>,
    pub verify: Option<Spanned<String>>,
    pub after: Option<Spanned<String>>,
    pub restore: Option<Spanned<String>>,
    /// command: the longest any one of them may take (default 60s).
    pub timeout: Option<Spanned<Dur>>,
    /// istio: the namespace and the workloads to change (`deployment/checkout-v1`, ...).
    pub namespace: Option<Spanned<String>>,
    pub workloads: Option<Spanned<Vec<Spanned<String>>>>,
    /// istio: the kubectl binary (default "kubectl"), kubeconfig and context.
    pub kubectl: Option<Spanned<String>>,
    pub kubeconfig: Option<Spanned<String>>,
    pub context: Option<Spanned<String>>,
    /// istio: how long a rollout may take (default 5m) and how long to wait after it
    /// (default 10s).
    pub rollout_timeout: Option<Spanned<Dur>>,
    pub settle: Option<Spanned<Dur>>,
    /// istio: the sidecar's CPU request to set beside the limit (`sidecar.istio.io/proxyCPU`).
    pub cpu_request: Option<Spanned<RawQuantity>>,
    /// istio: "telemetry" (default; a Telemetry resource) or "configmap" (the mesh-wide
    /// `accessLogFile` of the `istio` ConfigMap, Istio 1.7 era).
    pub access_log_method: Option<Spanned<String>>,
    /// istio, method "configmap": the ConfigMap's namespace (default "istio-system").
    pub istio_namespace: Option<Spanned<String>>,
}

/// `[target]`: where the load goes and what each request is.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    /// `http://host:port/path` or `https://...`; omitted when `[app]` or `[mesh]`
    /// provides the target.
    pub url: Option<Spanned<String>>,
    pub method: Option<Spanned<String>>,
    /// Overrides the path (and query) of `url`.
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    pub body: Option<String>,
    pub protocol: Option<ProtocolRaw>,
    /// Per-request timeout (default 5s).
    pub timeout: Option<Spanned<Dur>>,
    /// TCP connect + TLS handshake timeout (default: the request timeout).
    pub connect_timeout: Option<Spanned<Dur>>,
    /// Response header whose value names the subset that answered (e.g. `x-version`).
    pub subset_header: Option<Spanned<String>>,
    pub tls: Option<Spanned<TlsSection>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolRaw {
    Http1,
    Http2,
    Auto,
}

/// `[target.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA bundle (PEM) that verifies the server; default: the system bundle.
    pub ca: Option<Spanned<String>>,
    /// Client certificate chain (PEM), for mTLS.
    pub cert: Option<Spanned<String>>,
    /// Client private key (PEM), for mTLS.
    pub key: Option<Spanned<String>>,
    /// Name sent in SNI and verified against the certificate (default: the URL host).
    pub server_name: Option<Spanned<String>>,
    /// A SAN the server certificate must carry: a URI (`spiffe://...`) or a DNS name.
    pub expected_identity: Option<Spanned<String>>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeRaw {
    Open,
    Closed,
}

/// `[load]`: how hard and how long.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSection {
    pub mode: Option<ModeRaw>,
    /// Requests per second (open loop; required there).
    pub rate: Option<Spanned<f64>>,
    /// Keep-alive connections (default 4).
    pub connections: Option<Spanned<i64>>,
    /// Measured duration (warmup excluded).
    pub duration: Option<Spanned<Dur>>,
    /// Measured request count (warmup excluded).
    pub requests: Option<Spanned<i64>>,
    pub warmup: Option<Spanned<Dur>>,
    /// Closed loop: pause between a response and the next request on a connection.
    pub think_time: Option<Spanned<Dur>>,
    /// HTTP/2: concurrent streams per connection (default 16). HTTP/1.1 always uses 1.
    pub max_in_flight: Option<Spanned<i64>>,
    /// Engine worker threads (default 1), each with its own connections.
    pub threads: Option<Spanned<i64>>,
    /// How the engine waits for open-loop send times: "spin", "hybrid" (default), "sleep".
    pub idle: Option<Spanned<String>>,
    /// CPUs to pin the engine's worker threads to (worker i on `cpus[i mod len]`).
    pub cpus: Option<Spanned<Vec<Spanned<i64>>>>,
    /// `[load.profile]`: a rate that changes over the window (open loop).
    pub profile: Option<Spanned<ProfileSection>>,
}

/// `[load.profile]`: `kind = "constant"` (the default: `load.rate`), `"ramp"` (`from`, `to`,
/// `over`) or `"steps"` (`steps = [{ rate = 100, duration = "10s" }, ...]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSection {
    pub kind: Option<Spanned<String>>,
    pub from: Option<Spanned<f64>>,
    pub to: Option<Spanned<f64>>,
    pub over: Option<Spanned<Dur>>,
    pub steps: Option<Spanned<Vec<Spanned<StepRaw>>>>,
}

/// One step of a `steps` profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRaw {
    pub rate: Spanned<f64>,
    pub duration: Spanned<Dur>,
}

/// `[search]`: per cell, the highest constant rate that meets `slo`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSection {
    /// The objectives every step must meet, e.g. `["p99<10ms", "errors<0.1%"]`.
    pub slo: Option<Spanned<Vec<Spanned<String>>>>,
    /// Lowest and highest rate tried, requests/s.
    pub min: Option<Spanned<f64>>,
    pub max: Option<Spanned<f64>>,
    /// How close the last pass and the first fail must be, e.g. "5%".
    pub resolution: Option<Spanned<String>>,
    /// Each step's measured window.
    pub step: Option<Spanned<Dur>>,
    /// Each step's warmup (default: load.warmup).
    pub warmup: Option<Spanned<Dur>>,
    /// Most steps per cell.
    pub max_steps: Option<Spanned<i64>>,
}

/// `[app]`: the built-in app server as the target.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    pub service_time: Option<Dur>,
    pub service_time_dist: Option<app::ServiceTimeDist>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body_bytes: Option<Spanned<i64>>,
    pub stall: Option<Dur>,
    pub stall_every: Option<Dur>,
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
    pub fn text(&self) -> String {
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
pub struct MeshSection {
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
    pub subsets: Option<Spanned<Vec<SubsetSection>>>,
}

/// `[[mesh.subset]]`: a DestinationRule subset with its VirtualService weight.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetSection {
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
pub struct MatrixSection {
    /// Embedded mesh topologies: "baseline", "server", "both".
    pub mode: Option<Spanned<Vec<Spanned<String>>>>,
    pub sidecar_cpu: Option<Spanned<Vec<Spanned<RawQuantity>>>>,
    pub access_log: Option<Spanned<Vec<Spanned<String>>>>,
    /// Sidecar worker threads (Envoy's `--concurrency`).
    pub concurrency: Option<Spanned<Vec<Spanned<i64>>>>,
    pub rate: Option<Spanned<Vec<Spanned<f64>>>>,
    pub connections: Option<Spanned<Vec<Spanned<i64>>>>,
}

/// `[checks]`: what the run verifies (for a real mesh, the weights it must see).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksSection {
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
    /// Fail a cell whose send lateness p99 exceeds this: a duration ("50us") or a share of
    /// the time between two requests ("10%").
    pub max_send_lag: Option<Spanned<String>>,
}
