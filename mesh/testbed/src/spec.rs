//! What the embedded mesh is asked to be: the typed input of [`crate::Mesh::prepare`]
//! (built by loadgen's plan from the scenario's `[mesh]` section) and of
//! [`crate::Mesh::up`] (one matrix cell's sidecar settings).

use app::ServiceTimeDist;
use meshbench_schema::units::Dur;
use serde::Serialize;
use sidecar::AccessLogMode;
use std::path::PathBuf;

/// One subset: a DestinationRule subset with its VirtualService weight, served by one app.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubsetSpec {
    pub name: String,
    pub weight: u32,
    pub service_time: Dur,
    pub service_time_dist: ServiceTimeDist,
}

/// The embedded mesh: one service, its subsets behind one sidecar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeshSpec {
    pub service: String,
    pub namespace: String,
    pub service_account: String,
    /// Response header naming the subset that answered.
    pub subset_header: String,
    /// Sidecar worker threads (Envoy's `--concurrency`).
    pub concurrency: usize,
    pub sidecar_memory_bytes: Option<u64>,
    /// Response body size of the apps; `None`: the app's default.
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

/// The topology of a cell, as Istio's benchmark harness has them (istio/tools
/// perf/benchmark: no_istio, serversidecar, bothsidecar).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MeshMode {
    /// No sidecar: the load generator calls the apps directly (plaintext) and splits the
    /// requests over the subsets by weight itself.
    Baseline,
    /// One inbound sidecar terminates STRICT mTLS from the load generator and routes to
    /// the apps.
    #[default]
    Server,
    /// The Istio data path: plaintext to a client-side (outbound) sidecar that routes by
    /// weight and originates mTLS with its workload identity to one server-side (inbound)
    /// sidecar per subset, each in front of its app.
    Both,
}

impl MeshMode {
    pub fn parse(s: &str) -> Option<MeshMode> {
        match s {
            "baseline" => Some(MeshMode::Baseline),
            "server" => Some(MeshMode::Server),
            "both" => Some(MeshMode::Both),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MeshMode::Baseline => "baseline",
            MeshMode::Server => "server",
            MeshMode::Both => "both",
        }
    }
}

/// The sidecar settings of one matrix cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellMeshSettings {
    pub mode: MeshMode,
    /// CPU limit in millicores; `None`: no quota (usage still measured in a cgroup).
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub access_log: AccessLogMode,
    /// Sidecar worker threads (Envoy's `--concurrency`).
    pub concurrency: usize,
    /// False with `--no-cpu-limits`: no cgroup at all, limits not applied.
    pub apply_limits: bool,
}
