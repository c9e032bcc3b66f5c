//! The embedded service mesh of meshbench.
//!
//! On a machine with no cluster, `loadgen run` measures a mesh it starts itself, per cell
//! of the settings matrix:
//!
//! - [`pki`]: a mesh CA and SPIFFE workload certificates (as istiod issues them), as PEM
//!   files in the run directory;
//! - [`process`] / [`mesh`]: one app process per subset (`loadgen serve`) and the sidecar
//!   process (`loadgen mesh-sidecar`) in its own [`cgroup`] with the cell's CFS quota;
//! - [`sidecar`]: the proxy itself (STRICT mTLS, weighted subsets, access log);
//! - [`checks`]: the canary-split and STRICT mTLS checks;
//! - [`scenario`]: the `[mesh]`, `[matrix]` and `[checks]` scenario sections;
//! - [`quantity`]: Kubernetes CPU and memory quantities and the CFS mapping.
//!
//! Everything started is stopped, reaped and removed on [`RunningMesh::down`], on drop
//! (errors, panics unwinding) and therefore on an interrupted run.
#![deny(unsafe_code)]

pub mod cgroup;
pub mod checks;
mod live;
pub mod mesh;
pub mod pki;
pub mod process;
pub mod quantity;
pub mod scenario;
pub mod sidecar;

pub use live::emergency_cleanup;
pub use mesh::{CellMeshSettings, Mesh, RunningMesh};
pub use scenario::{ChecksSpec, MatrixSpec, MeshSpec};
pub use sidecar::{sidecar_main, sidecar_main_code, AccessLogMode, SidecarConfig};

use std::path::PathBuf;

/// Errors bringing the mesh up or down. Each names the file, process or cgroup concerned.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("cannot start {what} ({exe}): {source}")]
    Spawn {
        what: String,
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    NotReady { what: String, reason: String },
    /// cgroups could not be created or written: the message names the path and errno.
    #[error("cgroup: {0}")]
    Cgroup(String),
}
