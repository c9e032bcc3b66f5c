//! `run.json`: what one `loadgen run` measured ([`RunResult`]), cell by cell.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the `run.json` layout. Bump on any incompatible change.
pub const RUN_SCHEMA_VERSION: u32 = 1;
/// File name of a run's result inside its run directory.
pub const RUN_FILE: &str = "run.json";

/// The latency percentiles every table, chart and gate shows, with their quantiles.
pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// The statistics tables show per cell (loadgen's summary, `report compare`, summary.md)
/// and regression limits may name.
pub const TABLE_STATS: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

/// Every latency statistic an SLO, a gate or a comparison may name.
pub const LATENCY_STATS: [&str; 8] = ["p50", "p90", "p99", "p99.9", "p99.99", "max", "min", "mean"];

/// The quantile of a percentile name (`p99` -> 0.99); `None` for max, min, mean.
pub fn quantile_of(name: &str) -> Option<f64> {
    PERCENTILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, q)| *q)
}

/// Identifies the tool build that wrote a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
}

impl ToolInfo {
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_string(),
            version: version.to_string(),
        }
    }
}

/// Facts about the machine that generated the load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    pub kernel: String,
    pub cpus: u32,
    #[serde(default)]
    pub cpu_model: String,
    /// "v1", "v2" or absent when no cgroup filesystem was found.
    #[serde(default)]
    pub cgroup_version: Option<String>,
    /// The wall clock over the run (what a distributed run's shared start and merged
    /// seconds rely on); absent in runs of loadgen versions before it was recorded.
    #[serde(default)]
    pub clock: Option<ClockFacts>,
}

/// The host's wall clock during a run: the kernel's NTP state at the start (`adjtimex`,
/// read-only) and the steps and drift seen while the run went on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClockFacts {
    /// The kernel held the clock synchronised by an NTP client (no `STA_UNSYNC`).
    #[serde(default)]
    pub synchronised: Option<bool>,
    /// The NTP client's estimate of the clock's offset from true time (`esterror`), µs:
    /// how far off this host's timestamps (and its idea of a shared start) probably are.
    #[serde(default)]
    pub est_error_us: Option<i64>,
    /// Its bound (`maxerror`), µs.
    #[serde(default)]
    pub max_error_us: Option<i64>,
    /// Discontinuous sets of the wall clock seen during the run (up to the last write of
    /// run.json).
    #[serde(default)]
    pub steps: Option<u64>,
    /// CLOCK_REALTIME against CLOCK_MONOTONIC_RAW over the run, ppm (steps included).
    #[serde(default)]
    pub drift_ppm: Option<f64>,
    /// How long the clock was watched, seconds.
    #[serde(default)]
    pub watched_s: Option<f64>,
    /// What could not be read, and why.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Above this estimated error a worker's wall clock can shift its seconds against the
/// other workers' in a merged interval log by a visible part of an interval, µs.
pub const CLOCK_EST_ERROR_LIMIT_US: i64 = 10_000;

impl ClockFacts {
    /// What about this clock makes a distributed run's shared start and merged seconds
    /// doubtful, one line each (empty when nothing does).
    pub fn concerns(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.synchronised == Some(false) {
            out.push("its clock was not synchronised (kernel: STA_UNSYNC): its offset from the other workers is unknown".to_string());
        }
        if let Some(e) = self.est_error_us.filter(|&e| e > CLOCK_EST_ERROR_LIMIT_US) {
            out.push(format!(
                "its clock's estimated error was {:.1} ms (above {} ms): its seconds may sit that far from the other workers'",
                e as f64 / 1000.0,
                CLOCK_EST_ERROR_LIMIT_US / 1000
            ));
        }
        if let Some(n) = self.steps.filter(|&n| n > 0) {
            out.push(format!(
                "its wall clock was stepped {n} time(s) during the run: its start times and interval timestamps moved with it"
            ));
        }
        out.extend(self.notes.iter().map(|n| format!("its clock: {n}")));
        out
    }
}

/// The whole result of one `loadgen run`: what `run.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub schema_version: u32,
    pub tool: ToolInfo,
    /// Scenario name (from the scenario file, or its file stem).
    pub scenario: String,
    /// Path of the scenario file as given on the command line.
    #[serde(default)]
    pub scenario_file: Option<String>,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// RFC 3339 UTC; absent when the run was cut short before it could be set.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// True when SIGINT/SIGTERM stopped the run: what was measured up to then is kept.
    #[serde(default)]
    pub interrupted: bool,
    /// The resolved plan, as loadgen defines it (every default filled in).
    pub plan: serde_json::Value,
    pub host: HostFacts,
    /// Service-level objectives declared in the scenario, e.g. `p99<50ms`, `errors<0.1%`.
    #[serde(default)]
    pub slo: Vec<String>,
    /// Noteworthy conditions the reader must see (e.g. "server certificate verification
    /// was disabled"). Nothing is silently skipped: anything not applied is said here.
    #[serde(default)]
    pub warnings: Vec<String>,
    pub cells: Vec<CellResult>,
    /// Run-level checks (e.g. STRICT mTLS refused plaintext).
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    /// The ids of every cell the plan had, in run order. run.json is first written before
    /// the first cell, so a run killed half-way shows here what it never measured.
    #[serde(default)]
    pub planned_cells: Vec<String>,
    /// The run-level checks the plan asked for (e.g. `strict_mtls`).
    #[serde(default)]
    pub planned_checks: Vec<String>,
    /// A real mesh driven cell by cell (`[driver]`): the cluster, and what was restored.
    #[serde(default)]
    pub driver: Option<DriverRun>,
    /// One worker's share of a distributed run (`loadgen run --worker I/N`).
    #[serde(default)]
    pub worker: Option<WorkerShare>,
    /// A run merged by `report merge` from its workers' run directories.
    #[serde(default)]
    pub merged_from: Vec<MergedWorker>,
}

/// Which share of a distributed run this is: worker `index` of `count` (0-based), and the
/// shared start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerShare {
    pub index: u32,
    pub count: u32,
    /// The shared start of the first cell (RFC 3339); later cells start `cell_slot_s`
    /// apart.
    #[serde(default)]
    pub start_at: Option<String>,
    #[serde(default)]
    pub cell_slot_s: Option<f64>,
}

/// One worker of a merged run, as its run.json had it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MergedWorker {
    pub index: u32,
    pub dir: String,
    pub host: String,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub interrupted: bool,
    /// The cells it has a result for.
    pub cells: Vec<String>,
    /// The latest it started any cell's schedule after the shared start, seconds.
    #[serde(default)]
    pub max_start_late_s: Option<f64>,
    /// Its wall clock over its run, as its run.json had it.
    #[serde(default)]
    pub clock: Option<ClockFacts>,
}

/// When a worker's cell started against the shared start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStart {
    /// The cell's intended start (RFC 3339, microseconds).
    pub at: String,
    /// How late the schedule started after it (0 when on time), seconds.
    pub late_s: f64,
}

/// What a `[driver]` did over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriverRun {
    /// "command" or "istio".
    pub driver: String,
    /// istio: kubectl's context and kubeconfig as used, and the versions it reported.
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub kubeconfig: Option<String>,
    #[serde(default)]
    pub kubectl_client_version: Option<String>,
    #[serde(default)]
    pub kubernetes_server_version: Option<String>,
    /// istio: the workloads' settings before the first cell (what restore puts back).
    #[serde(default)]
    pub originals: serde_json::Value,
    /// What restore ran, and whether it worked (empty when nothing was changed).
    #[serde(default)]
    pub restored: Vec<String>,
    #[serde(default)]
    pub restore_error: Option<String>,
    /// Where every command's output was kept, relative to the run directory.
    #[serde(default)]
    pub log_dir: Option<String>,
}

/// What a `[driver]` did for one cell: what it changed, how long until the change was
/// live, and what it verified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriverEvidence {
    /// The commands / patches run, as run.
    #[serde(default)]
    pub applied: Vec<String>,
    /// Seconds from the first change until it was verified live (rollout and settle
    /// included).
    #[serde(default)]
    pub apply_s: f64,
    /// What was verified (the verify command's stdout; istio: a summary).
    #[serde(default)]
    pub verified: Option<String>,
    /// istio: the pods measured, as verified.
    #[serde(default)]
    pub pods: Vec<PodFacts>,
    /// After the cell (the `after` command's stdout; istio: the access-log check).
    #[serde(default)]
    pub after: Option<String>,
}

/// One pod of a driven workload, as the istio driver verified it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodFacts {
    pub name: String,
    #[serde(default)]
    pub workload: String,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub proxy_image: Option<String>,
    /// The istio-proxy container's `resources.limits.cpu` as the API server has it.
    #[serde(default)]
    pub proxy_cpu_limit: Option<String>,
    pub ready: bool,
    /// Access-log lines its istio-proxy wrote during the cell (after the cell).
    #[serde(default)]
    pub access_log_lines: Option<u64>,
}

impl RunResult {
    /// True when every check of the run and of every cell passed (or was skipped).
    pub fn checks_passed(&self) -> bool {
        self.missing_checks().is_empty()
            && self
                .checks
                .iter()
                .chain(self.cells.iter().flat_map(|c| c.checks.iter()))
                .all(|c| c.status != CheckStatus::Failed)
    }

    /// Planned cells that have no result.
    pub fn missing_cells(&self) -> Vec<&str> {
        self.planned_cells
            .iter()
            .filter(|id| !self.cells.iter().any(|c| &c.id == *id))
            .map(String::as_str)
            .collect()
    }

    /// Planned run-level checks that have no result.
    pub fn missing_checks(&self) -> Vec<&str> {
        self.planned_checks
            .iter()
            .filter(|n| !self.checks.iter().any(|c| &c.name == *n))
            .map(String::as_str)
            .collect()
    }

    /// Why this run is not a complete measurement of its plan (empty when it is): it
    /// did not finish (killed: no `finished_at`), was interrupted, or lacks planned cells
    /// or checks.
    pub fn incomplete(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.finished_at.is_none() {
            why.push(
                "the run did not finish (run.json has no finished_at: the process was killed or is still running)"
                    .to_string(),
            );
        } else if self.interrupted {
            why.push("the run was interrupted".to_string());
        }
        let missing = self.missing_cells();
        if !missing.is_empty() {
            why.push(format!(
                "{} of {} planned cells were not measured: {}",
                missing.len(),
                self.planned_cells.len(),
                missing.join(", ")
            ));
        }
        for c in self.cells.iter().filter(|c| !c.measured()) {
            why.push(format!(
                "cell {} was not measured: {}",
                c.id,
                crate::text::one_line(c.failed.as_deref().unwrap_or_default())
            ));
        }
        let checks = self.missing_checks();
        if !checks.is_empty() {
            why.push(format!(
                "run-level check{} {} did not run",
                if checks.len() == 1 { "" } else { "s" },
                checks.join(", ")
            ));
        }
        why
    }
}

/// Load-generation model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// Constant-rate schedule; latency measured from the intended send time.
    Open,
    /// Each connection sends its next request when the previous one completes.
    Closed,
}

/// Settings that distinguish one cell of the matrix from another.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CellSettings {
    /// Sidecar CPU limit as written in the scenario (Kubernetes quantity, e.g. "100m"),
    /// or absent for "no limit".
    #[serde(default)]
    pub sidecar_cpu: Option<String>,
    /// The same limit in millicores.
    #[serde(default)]
    pub sidecar_cpu_millis: Option<u64>,
    /// Whether the CPU limit was really applied through a cgroup. False with a note when
    /// it could not be (e.g. `--no-cpu-limits`).
    #[serde(default)]
    pub cpu_limit_applied: bool,
    #[serde(default)]
    pub cpu_limit_note: Option<String>,
    /// Sidecar memory limit in bytes, when one was set.
    #[serde(default)]
    pub sidecar_memory_bytes: Option<u64>,
    /// Access-log mode: "off", "buffered", "sync"; absent when there is no sidecar.
    #[serde(default)]
    pub access_log: Option<String>,
    /// Target rate in requests/s (open loop).
    #[serde(default)]
    pub rate: Option<f64>,
    pub connections: u32,
    /// The embedded mesh's topology: "baseline" (no sidecar), "server" (an inbound
    /// sidecar) or "both" (client and server sidecars); absent without an embedded mesh.
    #[serde(default)]
    pub mesh_mode: Option<String>,
    /// Sidecar worker threads (Envoy's `--concurrency`), when the cell has sidecars.
    #[serde(default)]
    pub sidecar_concurrency: Option<u32>,
    /// How a relative CPU limit (`"0.8x"`) was turned into millicores: the sidecar CPU the
    /// calibration measured at this cell's load with no limit.
    #[serde(default)]
    pub cpu_limit_calibration: Option<CpuCalibration>,
    /// A rate profile (`[load.profile]`): the offered rate changed over the window; `rate`
    /// is then its mean.
    #[serde(default)]
    pub profile: Option<crate::profile::RateProfile>,
}

/// A relative CPU limit, resolved: `factor` x the most CPU one sidecar needed (millicores)
/// in a short calibration at the cell's load with no limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuCalibration {
    pub factor: f64,
    pub need_millis: f64,
    pub limit_millis: u64,
    /// The calibration's measured window, seconds.
    pub duration_s: f64,
}

/// Latency percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub stdev_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    /// The percentiles of a histogram of µs (zeros when it is empty): the one place that
    /// turns histograms into these numbers.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let q = |q: f64| h.value_at_quantile(q) as f64;
        Percentiles {
            count: h.len(),
            min_us: h.min_nz() as f64,
            mean_us: h.mean(),
            stdev_us: h.stdev(),
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            p9999_us: q(0.9999),
            max_us: h.max() as f64,
        }
    }

    /// Look a statistic up by its conventional name (see [`LATENCY_STATS`]; `p999` and
    /// `p9999` are accepted for `p99.9` and `p99.99`).
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "p50" => self.p50_us,
            "p90" => self.p90_us,
            "p99" => self.p99_us,
            "p99.9" | "p999" => self.p999_us,
            "p99.99" | "p9999" => self.p9999_us,
            "max" => self.max_us,
            "min" => self.min_us,
            "mean" => self.mean_us,
            _ => return None,
        })
    }
}

/// Corrected (from intended send time) and uncorrected (service time) latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub corrected: Percentiles,
    pub uncorrected: Percentiles,
}

/// Failures by class. Failures never stop a run; they are counted here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    pub connect_refused: u64,
    pub connect_timeout: u64,
    /// TLS handshake failures, including a missing or untrusted client certificate that
    /// TLS 1.3 reports on first I/O, and a server identity that did not match.
    pub tls: u64,
    pub request_timeout: u64,
    pub connection_reset: u64,
    pub http_4xx: u64,
    pub http_5xx: u64,
    /// Anything else (protocol errors, unexpected EOF, ...).
    pub other: u64,
}

impl ErrorCounts {
    /// Add `other`'s counts, class by class (merging recorders, workers or cells).
    pub fn add(&mut self, other: &ErrorCounts) {
        self.connect_refused += other.connect_refused;
        self.connect_timeout += other.connect_timeout;
        self.tls += other.tls;
        self.request_timeout += other.request_timeout;
        self.connection_reset += other.connection_reset;
        self.http_4xx += other.http_4xx;
        self.http_5xx += other.http_5xx;
        self.other += other.other;
    }

    pub fn total(&self) -> u64 {
        self.by_class()
            .iter()
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n))
    }

    /// (class name, count) pairs in a fixed order, for printers and charts.
    pub fn by_class(&self) -> [(&'static str, u64); 8] {
        [
            ("connect_refused", self.connect_refused),
            ("connect_timeout", self.connect_timeout),
            ("tls", self.tls),
            ("request_timeout", self.request_timeout),
            ("connection_reset", self.connection_reset),
            ("http_4xx", self.http_4xx),
            ("http_5xx", self.http_5xx),
            ("other", self.other),
        ]
    }
}

/// Requests answered by one subset (the value of the subset response header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetResult {
    pub name: String,
    pub count: u64,
    /// Observed share of successful responses, 0..=1.
    pub share: f64,
    /// Expected share from the scenario's weights, 0..=1, when weights were declared.
    #[serde(default)]
    pub expected_share: Option<f64>,
    pub latency: Latency,
}

/// The sidecar's cgroup `cpu.stat` over the cell (differences, not absolute counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStat {
    pub usage_usec: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
}

/// What a sidecar did during a cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SidecarStats {
    /// "server" (the one inbound sidecar of `server` mode), "client" and "server-<subset>"
    /// (mode `both`); "all" for a cell's sum over its sidecars.
    #[serde(default)]
    pub name: String,
    /// "inbound" or "outbound".
    #[serde(default)]
    pub direction: Option<String>,
    /// The subsets whose requests pass through it.
    #[serde(default)]
    pub subsets: Vec<String>,
    /// Requests it carried in the measured window (from the cell's subset counts).
    #[serde(default)]
    pub requests: Option<u64>,
    /// CPU per 1000 requests/s through it, in vCPU (Istio's published unit): cores used
    /// over the measured window / (its requests per second / 1000).
    #[serde(default)]
    pub vcpu_per_1k_rps: Option<f64>,
    #[serde(default)]
    pub cpu_stat: Option<CpuStat>,
    #[serde(default)]
    pub memory_peak_bytes: Option<u64>,
    #[serde(default)]
    pub access_log_lines: Option<u64>,
    /// Per second of the measured window: throttled time in that second (µs), from
    /// cpu.stat sampled once a second; index 0 is the first measured second.
    #[serde(default)]
    pub throttled_usec_per_second: Vec<u64>,
    /// Per second of the measured window: CPU time used in that second (µs).
    #[serde(default)]
    pub cpu_usec_per_second: Vec<u64>,
}

/// What the load generator itself did in a cell: how it waited for send times, what CPU it
/// used, and (open loop) how late it sent requests after their intended times, which is
/// part of every corrected latency of the cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorStats {
    /// "spin", "hybrid" or "sleep".
    pub idle: String,
    /// Engine worker threads.
    pub threads: u32,
    /// The CPUs the workers were pinned to (`[load] cpus`); empty: not pinned.
    #[serde(default)]
    pub cpus: Vec<usize>,
    /// CPU time of the engine threads over the cell, seconds ...
    pub cpu_s: f64,
    /// ... and per second of the cell: cores in use (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Open loop: send lateness (intended time to send), µs.
    #[serde(default)]
    pub send_lag: Option<Percentiles>,
    /// The lateness p99 the cell is held to, µs: `[checks] max_send_lag` when set, else
    /// 10 % of the time between two requests.
    #[serde(default)]
    pub lag_limit_us: Option<f64>,
    /// False when the lateness p99 exceeded that limit: the cell's corrected latency holds
    /// a delay of the generator's own and is not a measurement of the target alone.
    #[serde(default = "yes")]
    pub trusted: bool,
}

fn yes() -> bool {
    true
}

/// One cell of the settings matrix: one configuration, measured once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// Stable identifier, e.g. `cpu=100m,log=off`; unique within a run.
    pub id: String,
    pub settings: CellSettings,
    pub mode: LoadMode,
    /// "http1" or "http2" as negotiated / configured.
    pub protocol: String,
    /// Length of the measured window (warmup excluded), seconds.
    pub duration_s: f64,
    /// Requests whose outcome is known in the measured window (successes and failures).
    pub requests: u64,
    /// Requests answered with a non-error status.
    pub ok: u64,
    /// Completed requests per second over the measured window.
    pub achieved_rate: f64,
    pub errors: ErrorCounts,
    /// Counts by status class ("2xx", "3xx", "4xx", "5xx").
    #[serde(default)]
    pub status_classes: BTreeMap<String, u64>,
    /// Latency of every response of each status class ("2xx", "5xx", ...): a fast 503
    /// and a slow 200 are told apart here, while `latency` holds successful responses only.
    #[serde(default)]
    pub status_latency: BTreeMap<String, Latency>,
    pub latency: Latency,
    #[serde(default)]
    pub subsets: Vec<SubsetResult>,
    /// File name (relative to the run directory) of this cell's interval log.
    #[serde(default)]
    pub hlog: Option<String>,
    /// The cell's sidecars together (name "all": counters summed, memory summed); one
    /// sidecar's own figures are in `sidecars`.
    #[serde(default)]
    pub sidecar: Option<SidecarStats>,
    /// Each sidecar of the cell (none in `baseline` mode).
    #[serde(default)]
    pub sidecars: Vec<SidecarStats>,
    /// A real mesh: what the `[driver]` applied and verified for this cell.
    #[serde(default)]
    pub driver: Option<DriverEvidence>,
    /// Why the cell was not measured (its settings could not be applied or verified).
    #[serde(default)]
    pub failed: Option<String>,
    /// A distributed run: the cell's shared start and how late this worker was; merged:
    /// the latest worker.
    #[serde(default)]
    pub worker_start: Option<WorkerStart>,
    /// Whole-window latency histograms per status class and subset
    /// (`cell-<index>.parts.hlog`, one interval per tag), so that `report merge` merges them
    /// exactly.
    #[serde(default)]
    pub parts_hlog: Option<String>,
    /// What the mesh adds over the no-mesh baseline of the same load (added latency), and
    /// what it costs in CPU per request path.
    #[serde(default)]
    pub mesh_cost: Option<MeshCost>,
    /// The load generator's own part: its CPU and, in open loop, its send lateness.
    #[serde(default)]
    pub generator: Option<GeneratorStats>,
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    /// True when this cell was cut short by an interrupt.
    #[serde(default)]
    pub interrupted: bool,
    /// A capacity search (`[search]`): every step, and the capacity found. The cell's own
    /// figures are then those of its last step.
    #[serde(default)]
    pub search: Option<crate::search::SearchResult>,
}

/// What the mesh costs in one cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeshCost {
    /// The sidecars' CPU per 1000 requests/s of the cell, summed over the sidecars a
    /// request passes (`both`: client + server side), in vCPU.
    #[serde(default)]
    pub vcpu_per_1k_rps: Option<f64>,
    /// Corrected latency minus the baseline cell's, per percentile; absent (with `note`)
    /// when the run has no baseline cell of the same load.
    #[serde(default)]
    pub added: Option<AddedLatency>,
    #[serde(default)]
    pub note: Option<String>,
}

/// Latency a cell adds over its baseline cell (µs; negative when it was faster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddedLatency {
    /// The id of the baseline cell it is compared with.
    pub baseline: String,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

impl CellResult {
    /// Whether the cell was measured (false when its settings could not be applied or
    /// verified, see `failed`).
    pub fn measured(&self) -> bool {
        self.failed.is_none()
    }
}

impl AddedLatency {
    /// The added value of a latency statistic by name ("p50", "p90", "p99", "p99.9").
    pub fn get(&self, stat: &str) -> Option<f64> {
        match stat {
            "p50" => Some(self.p50_us),
            "p90" => Some(self.p90_us),
            "p99" => Some(self.p99_us),
            "p99.9" | "p999" => Some(self.p999_us),
            _ => None,
        }
    }
}

/// Fill every cell's added latency against the baseline cell of the same load (mode,
/// rate, connections) in `cells`; cells of mode `baseline` get none. Run after every
/// cell and after a merge, so it always reflects the cells at hand.
pub fn fill_added_latency(cells: &mut [CellResult]) {
    let key = |c: &CellResult| {
        (
            c.mode,
            c.settings.rate.map(f64::to_bits),
            c.settings.connections,
        )
    };
    let baselines: Vec<(_, String, Percentiles)> = cells
        .iter()
        .filter(|c| c.settings.mesh_mode.as_deref() == Some("baseline") && c.ok > 0)
        .map(|c| (key(c), c.id.clone(), c.latency.corrected))
        .collect();
    let any_mode = cells.iter().any(|c| c.settings.mesh_mode.is_some());
    for c in cells.iter_mut() {
        let Some(mode) = c.settings.mesh_mode.clone() else {
            continue;
        };
        if mode == "baseline" {
            continue;
        }
        let k = key(c);
        let (ok, l) = (c.ok, c.latency.corrected);
        let cost = c.mesh_cost.get_or_insert_with(MeshCost::default);
        match baselines.iter().find(|(bk, _, _)| *bk == k) {
            Some((_, id, b)) if ok > 0 => {
                cost.added = Some(AddedLatency {
                    baseline: id.clone(),
                    p50_us: l.p50_us - b.p50_us,
                    p90_us: l.p90_us - b.p90_us,
                    p99_us: l.p99_us - b.p99_us,
                    p999_us: l.p999_us - b.p999_us,
                });
                cost.note = None;
            }
            Some(_) => {
                cost.added = None;
                cost.note = Some("no successful responses to compare".into());
            }
            None => {
                cost.added = None;
                cost.note = Some(if any_mode && !baselines.is_empty() {
                    "no baseline cell of the same rate and connections in this run".into()
                } else {
                    "no baseline cell in this run (add \"baseline\" to [matrix] mode)".into()
                });
            }
        }
    }
}

/// Outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passed,
    Failed,
    /// Not run, with the reason in the summary. Never used to hide a failure.
    Skipped,
}

/// A pass/fail check carried in run.json (canary split, STRICT mTLS, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Machine name, e.g. `canary_split`, `strict_mtls`.
    pub name: String,
    pub status: CheckStatus,
    /// One human sentence with the figures that decided it.
    pub summary: String,
    /// Structured evidence (observed counts, p-value, confidence, ...).
    #[serde(default)]
    pub details: serde_json::Value,
}
