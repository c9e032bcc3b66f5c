//! Probe reports: what `probe --json` writes and `report fleet` reads.

use serde::{Deserialize, Serialize};

use crate::ToolInfo;

/// Version of the probe report layout. Bump on any incompatible change.
pub const PROBE_SCHEMA_VERSION: u32 = 1;

/// Verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
    /// Could not be evaluated (missing file, not applicable, deselected); the reason says why.
    Skip,
}

/// A measured value with its unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Machine name, e.g. `steal_pct`, `fdatasync_p99_ms`, `cpu3_steal_pct`.
    pub name: String,
    pub value: MeasuredValue,
    /// Unit, e.g. "%", "ms", "IOPS", "MB/s"; empty for facts.
    #[serde(default)]
    pub unit: String,
}

/// A number, or a fact as text (driver name, hypervisor vendor, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MeasuredValue {
    Number(f64),
    Text(String),
    Flag(bool),
}

/// The result of one check on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable check id, e.g. `cpu.steal`, `disk.fsync`, `mesh.modules`.
    pub check: String,
    /// Human title, e.g. "CPU steal".
    pub title: String,
    pub verdict: Verdict,
    /// The headline value as shown in the table, e.g. "0.12 %".
    pub value: String,
    /// The threshold as shown in the table, e.g. "warn > 0.5 %, fail > 2 %".
    #[serde(default)]
    pub threshold: String,
    /// One-line remedy when the verdict is warn or fail.
    #[serde(default)]
    pub remedy: Option<String>,
    /// Why a check was skipped, or extra context.
    #[serde(default)]
    pub reason: Option<String>,
    /// Every value measured, for machines (Prometheus, fleet reports).
    #[serde(default)]
    pub measurements: Vec<Measurement>,
}

/// Counts of verdicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictCounts {
    pub pass: u32,
    pub warn: u32,
    pub fail: u32,
    pub skip: u32,
}

/// Everything one `probe` run found on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub schema_version: u32,
    pub tool: ToolInfo,
    /// The node's name (hostname read under the probe root).
    pub node: String,
    /// The root path every read went through ("/" on a live host).
    pub root: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub duration_s: f64,
    /// Name of the threshold profile in force ("mesh-node" or the --profile file).
    pub profile: String,
    pub findings: Vec<Finding>,
    pub counts: VerdictCounts,
}

impl ProbeReport {
    pub fn count(findings: &[Finding]) -> VerdictCounts {
        let mut c = VerdictCounts::default();
        for f in findings {
            match f.verdict {
                Verdict::Pass => c.pass += 1,
                Verdict::Warn => c.warn += 1,
                Verdict::Fail => c.fail += 1,
                Verdict::Skip => c.skip += 1,
            }
        }
        c
    }
}
