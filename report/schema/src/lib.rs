//! The on-disk contract of meshbench.
//!
//! Every file that one meshbench tool writes and another reads is defined here and nowhere
//! else: `run.json` ([`RunResult`]) written by `loadgen`, probe reports ([`ProbeReport`])
//! written by `probe --json`, both read by `report`. Each carries a schema version; readers
//! refuse versions they do not know with an error that names the file.
//!
//! Interval histograms are not JSON: each cell's per-second histograms live in a standard
//! HdrHistogram interval log (`.hlog`, V2 compressed) next to `run.json`, named by
//! [`CellResult::hlog`]; intervals are tagged [`HLOG_TAG_CORRECTED`] or
//! [`HLOG_TAG_UNCORRECTED`]. Values in the logs are microseconds.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

mod probe;
pub use probe::*;

/// Version of the `run.json` layout. Bump on any incompatible change.
pub const RUN_SCHEMA_VERSION: u32 = 1;
/// File name of a run's result inside its run directory.
pub const RUN_FILE: &str = "run.json";
/// Tag of intervals holding latency measured from the intended send time.
pub const HLOG_TAG_CORRECTED: &str = "corrected";
/// Tag of intervals holding latency measured from the actual send time (service time).
pub const HLOG_TAG_UNCORRECTED: &str = "uncorrected";
/// Unit of every value recorded in histograms and interval logs.
pub const HISTOGRAM_UNIT: &str = "us";

/// Errors reading or writing the contract files. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid {what}: {source}")]
    Parse {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: schema version {found} is not supported (this build reads version {supported})"
    )]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
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
}

impl RunResult {
    /// True when every check of the run and of every cell passed (or was skipped).
    pub fn checks_passed(&self) -> bool {
        self.checks
            .iter()
            .chain(self.cells.iter().flat_map(|c| c.checks.iter()))
            .all(|c| c.status != CheckStatus::Failed)
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
    /// Look a percentile up by its conventional name: p50, p90, p99, p99.9, p99.99, max,
    /// min, mean.
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

/// What the sidecar did during a cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SidecarStats {
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
    #[serde(default)]
    pub sidecar: Option<SidecarStats>,
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    /// True when this cell was cut short by an interrupt.
    #[serde(default)]
    pub interrupted: bool,
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

/// Write `bytes` to `path` atomically: a temp file in the same directory, fsync, rename.
/// A reader never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SchemaError> {
    let io = |source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Serialize `value` as pretty JSON and write it atomically.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), SchemaError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| SchemaError::Parse {
        path: path.to_path_buf(),
        what: "JSON value",
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

fn read_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
    supported: u32,
) -> Result<T, SchemaError> {
    let bytes = std::fs::read(path).map_err(|source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parse = |source| SchemaError::Parse {
        path: path.to_path_buf(),
        what,
        source,
    };
    // Check the version before the shape, so a future file says "version" not "field".
    let raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(parse)?;
    let found = raw
        .get("schema_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    if found != supported {
        return Err(SchemaError::Version {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    serde_json::from_value(raw).map_err(parse)
}

/// Read a `run.json` (or a run directory containing one), checking its schema version.
pub fn read_run(path: &Path) -> Result<RunResult, SchemaError> {
    let file = if path.is_dir() {
        path.join(RUN_FILE)
    } else {
        path.to_path_buf()
    };
    read_versioned(&file, "run.json", RUN_SCHEMA_VERSION)
}

/// Read a probe report written by `probe --json`, checking its schema version.
pub fn read_probe(path: &Path) -> Result<ProbeReport, SchemaError> {
    read_versioned(path, "probe report", PROBE_SCHEMA_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_run() -> RunResult {
        RunResult {
            schema_version: RUN_SCHEMA_VERSION,
            tool: ToolInfo::new("loadgen", "0.1.0"),
            scenario: "smoke".into(),
            scenario_file: Some("scenarios/smoke.toml".into()),
            started_at: "2026-11-27T21:00:00Z".into(),
            finished_at: None,
            interrupted: true,
            plan: serde_json::json!({"rate": 100}),
            host: HostFacts::default(),
            slo: vec!["p99<50ms".into()],
            warnings: vec![],
            cells: vec![CellResult {
                id: "cpu=100m,log=off".into(),
                settings: CellSettings::default(),
                mode: LoadMode::Open,
                protocol: "http1".into(),
                duration_s: 1.0,
                requests: 10,
                ok: 9,
                achieved_rate: 10.0,
                errors: ErrorCounts {
                    http_5xx: 1,
                    ..Default::default()
                },
                status_classes: BTreeMap::new(),
                status_latency: BTreeMap::new(),
                latency: Latency::default(),
                subsets: vec![],
                hlog: Some("cell-0.hlog".into()),
                sidecar: None,
                checks: vec![CheckResult {
                    name: "canary_split".into(),
                    status: CheckStatus::Failed,
                    summary: "off".into(),
                    details: serde_json::Value::Null,
                }],
                interrupted: true,
            }],
            checks: vec![],
        }
    }

    #[test]
    fn run_round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let run = sample_run();
        write_json_atomic(&dir.path().join(RUN_FILE), &run).unwrap();
        let back = read_run(dir.path()).unwrap();
        assert_eq!(back, run);
        assert!(!back.checks_passed());
        assert_eq!(back.cells[0].errors.total(), 1);
        // no temp file left beside it
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn unknown_version_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(sample_run()).unwrap();
        v["schema_version"] = 99.into();
        let p = dir.path().join(RUN_FILE);
        std::fs::write(&p, v.to_string()).unwrap();
        let err = read_run(&p).unwrap_err().to_string();
        assert!(err.contains("run.json"), "{err}");
        assert!(err.contains("schema version 99"), "{err}");
    }

    #[test]
    fn truncated_file_is_a_parse_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(RUN_FILE);
        let text = serde_json::to_string(&sample_run()).unwrap();
        std::fs::write(&p, &text[..text.len() / 2]).unwrap();
        let err = read_run(&p).unwrap_err().to_string();
        assert!(err.starts_with(&p.display().to_string()), "{err}");
    }
}
